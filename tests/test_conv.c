/* test_conv.c: the fast conv / gemm / linear kernels against their plain references.
 *
 *   - gemm vs gemm_ref: all transpose combinations, odd and edge sizes, padded and
 *     cache-colliding strides, several alpha/beta (beta = 0 with NaN in C must not read C),
 *     K = 0; gemm_batch bitwise equal to gemm_ex product by product; then everything again
 *     under every gemm path this CPU has and under each conv lowering (the test re-runs itself
 *     with NASC_GEMM=<path> or NASC_CONV=explicit|implicit, since both are chosen once per
 *     process);
 *   - conv2d forward/backward vs the reference on random shapes (kernel 1..5 and 7, stride 1..3,
 *     padding 0..3, dilation 1/2, groups 1/2/4/depthwise, batch 1..5, odd sizes), plus the
 *     layer shapes of the reference networks; 1 to 3 threads; NaN-filled outputs (forward
 *     overwrites), nonzero initial gradients (backward accumulates) or NaN-filled dx (dx
 *     overwritten), NULL gradients and bias;
 *   - depthwise layers: every row width of the direct kernels' range, the blocked kernels'
 *     shapes, the edges of the portable direct kernels (one image, dx overwritten and
 *     accumulated, rows of several vectors, the size thresholds), and dW/db/dx bitwise
 *     independent of the thread count;
 *   - linear forward/backward the same way; conv_dims_init sizes and error cases.
 * Tolerances: |got - want| <= 1e-5 sqrt(terms) + 1e-4 |want|, terms = length of the sums.
 */
#include "../src/ops/ops.h"
#include "../src/ops/gemm_ex.h"
#include "check.h"

#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static void fill(float *p, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) p[i] = rng_uniformf(r, -1.0f, 1.0f);
}

static void fill_nan(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* Compares two arrays as one check (on failure: how many values are off, the first and the worst). */
static void expect_close(const float *got, const float *want, size_t n, double terms, const char *what) {
    double atol = 1e-5 * sqrt(terms > 1 ? terms : 1), worst = 0;
    size_t bad = 0, at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]), lim = atol + 1e-4 * fabs(want[i]);
        if (!(e <= lim)) {
            if (bad++ == 0) at = i;
            if (!(e <= worst)) worst = e;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu values off (first at %zu: got %.8g want %.8g; worst error %.3g)", what, bad, n,
          at, bad ? got[at] : 0.0, bad ? want[at] : 0.0, worst);
}

/* ------------------------------------------------------------------ gemm */
static void gemm_case(Rng *r, int ta, int tb, int M, int N, int K, float alpha, float beta, int pad) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t asz = (size_t)(ta ? K : M) * lda + 1, bsz = (size_t)(tb ? N : K) * ldb + 1, csz = (size_t)M * ldc + 1;
    float *A = xmalloc(asz * sizeof *A), *B = xmalloc(bsz * sizeof *B);
    float *C = xmalloc(csz * sizeof *C), *R = xmalloc(csz * sizeof *R);
    fill(A, asz, r);
    fill(B, bsz, r);
    if (beta == 0.0f)
        fill_nan(C, csz);
    else
        fill(C, csz, r);
    memcpy(R, C, csz * sizeof *C);
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    char what[160];
    snprintf(what, sizeof what, "gemm[%s] ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g pad=%d", gemm_path(), ta, tb, M,
             N, K, alpha, beta, pad);
    /* padding between rows and the element after C must be untouched */
    int pad_ok = C[(size_t)M * ldc] == R[(size_t)M * ldc] || (isnan(C[(size_t)M * ldc]) && isnan(R[(size_t)M * ldc]));
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) {
            size_t at = (size_t)i * ldc + j;
            if (!(C[at] == R[at] || (isnan(C[at]) && isnan(R[at])))) pad_ok = 0;
        }
    CHECK(pad_ok, "%s: wrote outside the N columns", what);
    for (int i = 0; i < M; i++) {
        expect_close(C + (size_t)i * ldc, R + (size_t)i * ldc, (size_t)N, K, what);
        if (check_failed) break;
    }
    free(A), free(B), free(C), free(R);
}

static void test_gemm(Rng *r) {
    static const int sizes[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 48, 49, 50, 63, 97, 130};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    static const float ab[][2] = {{1, 0}, {1, 1}, {0.5f, 1}, {-1.5f, 0.25f}, {2, 0}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (int t = 0; t < 24; t++) {
                int M = sizes[rng_below(r, ns)], N = sizes[rng_below(r, ns)], K = sizes[rng_below(r, ns)];
                int e = (int)rng_below(r, 5), pad = (int)rng_below(r, 3) * 3;
                gemm_case(r, ta, tb, M, N, K, ab[e][0], ab[e][1], pad);
            }
            /* several k blocks, several column blocks, colliding (multiple of 256) strides */
            gemm_case(r, ta, tb, 19, 70, 700, 1, 0, 0);
            gemm_case(r, ta, tb, 9, 2200, 5, 1, 1, 0);
            gemm_case(r, ta, tb, 600, 20, 3, 0.5f, 0.5f, 0);
            gemm_case(r, ta, tb, 40, 56, 200, 1, 1, 256 - 200);
            gemm_case(r, ta, tb, 21, 256, 256, 1, 0, 0);
            /* exactly 64 columns (the 6 x 64 tile): rows past the last whole tile, k blocks */
            gemm_case(r, ta, tb, 577, 64, 300, 1, 1, 0);
            gemm_case(r, ta, tb, 13, 64, 9, -1.5f, 0.25f, 3);
            /* K = 0 scales C by beta; alpha = 0 too */
            gemm_case(r, ta, tb, 5, 6, 0, 1, 0.5f, 0);
            gemm_case(r, ta, tb, 5, 6, 0, 1, 0, 1);
            gemm_case(r, ta, tb, 5, 6, 7, 0, 2, 0);
        }
    /* conv-like shapes */
    gemm_case(r, 0, 0, 16, 784, 144, 1, 0, 0);
    gemm_case(r, 0, 1, 288, 32, 392, 1, 1, 0);
    gemm_case(r, 0, 1, 100, 97, 130, 1, 1, 0); /* B^T packed rather than the NT kernel */
    gemm_case(r, 0, 1, 30, 100, 1000, 1, 0, 3);
    gemm_case(r, 1, 0, 576, 98, 64, 1, 0, 0);
}

/* gemm_batch: each product bitwise gemm_ex's, whether it takes the one-setup path (Winograd's
 * shapes, M x N x K: 16 x 105 x 16, 32 x 64 x 32, 64 x 64 x 32; beta 0 and 1; on the AVX2 path
 * the ragged 105 only because B's rows hold 112) or falls back to gemm_ex (K past a k block, a
 * stride of 256, ragged columns for the NT kernel, M past its table, on AVX2 a ragged panel B's
 * rows do not hold), and the other products' C untouched by each. */
static void gemm_batch_case(Rng *r, int count, int M, int N, int K, int lda, int ldb, int ldc, float beta) {
    const size_t sa = (size_t)M * lda + 16, sb = (size_t)K * ldb + 32, sc = (size_t)M * ldc + 16;
    float *A = xmalloc(count * sa * 4), *B = xmalloc(count * sb * 4), *C = xmalloc(count * sc * 4);
    float *R = xmalloc(count * sc * 4);
    fill(A, count * sa, r), fill(B, count * sb, r), fill(C, count * sc, r);
    memcpy(R, C, count * sc * 4);
    gemm_batch(count, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, sc);
    for (int i = 0; i < count; i++) {
        GemmMat a = {A + i * sa, lda, 0, NULL}, b = {B + i * sb, ldb, 0, NULL};
        gemm_ex(M, N, K, 1.0f, &a, &b, beta, R + i * sc, ldc, 0);
    }
    CHECK(memcmp(C, R, count * sc * 4) == 0,
          "gemm_batch[%s] count=%d M=%d N=%d K=%d lda=%d ldb=%d beta=%g: not gemm_ex's", gemm_path(), count, M, N, K,
          lda, ldb, beta);
    free(A), free(B), free(C), free(R);
}

static void test_gemm_batch(Rng *r) {
    gemm_batch_case(r, 36, 16, 105, 16, 16, 112, 112, 0.0f);
    gemm_batch_case(r, 36, 32, 64, 32, 32, 64, 64, 0.0f);
    gemm_batch_case(r, 4, 64, 64, 32, 112, 64, 64, 1.0f);
    gemm_batch_case(r, 5, 9, 17, 3, 3, 17, 20, 1.0f);
    gemm_batch_case(r, 4, 16, 105, 16, 16, 105, 105, 0.0f); /* AVX2: the ragged panel past B's rows */
    gemm_batch_case(r, 3, 20, 50, 300, 300, 50, 50, 0.0f);  /* K past a k block */
    gemm_batch_case(r, 3, 20, 50, 40, 256, 50, 50, 1.0f);   /* A's stride collides */
    gemm_batch_case(r, 3, 12, 52, 40, 40, 52, 52, 0.0f);    /* 4 ragged columns for the NT kernel */
    gemm_batch_case(r, 2, 300, 20, 16, 16, 20, 20, 0.0f);   /* M past the row table */
}

/* ------------------------------------------------------------------ conv */
/* conv_case's random choices, when >= 0: the gradients wanted (bit 0 dx, 1 dw, 2 db) and
 * whether dx accumulates. */
static int force_mask = -1, force_dx_acc = -1;

static int conv_case(Rng *r, ConvDims d, int threads, const char *tag) {
    Err e;
    if (conv_dims_init(&d, &e) != NASC_OK) return 0;
    threads_set(threads);
    const int cin_g = d.cin / d.groups, kk = d.k * d.k;
    size_t xs = (size_t)d.n * d.cin * d.h * d.w, ys = (size_t)d.n * d.cout * d.oh * d.ow;
    size_t ws = (size_t)d.cout * cin_g * kk;
    float *x = xmalloc(xs * 4), *w = xmalloc(ws * 4), *b = xmalloc((size_t)d.cout * 4);
    /* y 64-byte aligned as in the engine (so large outputs take the streaming stores) */
    float *y = xalloc_aligned(ys * 4), *yr = xmalloc(ys * 4), *dy = xmalloc(ys * 4);
    float *dx = xmalloc(xs * 4), *dxr = xmalloc(xs * 4), *dw = xmalloc(ws * 4), *dwr = xmalloc(ws * 4);
    float *db = xmalloc((size_t)d.cout * 4), *dbr = xmalloc((size_t)d.cout * 4);
    fill(x, xs, r), fill(w, ws, r), fill(b, (size_t)d.cout, r), fill(dy, ys, r);
    fill(dx, xs, r), fill(dw, ws, r), fill(db, (size_t)d.cout, r);
    memcpy(dxr, dx, xs * 4), memcpy(dwr, dw, ws * 4), memcpy(dbr, db, (size_t)d.cout * 4);
    int use_b = rng_below(r, 2), mask = (int)rng_below(r, 8);
    if (mask == 0) mask = 7; /* bit 0: dx, 1: dw, 2: db */
    int dx_acc = rng_below(r, 3) != 0; /* else dx is overwritten: NaN before, zero in the reference */
    if (force_mask >= 0) mask = force_mask;
    if (force_dx_acc >= 0) dx_acc = force_dx_acc;
    if (!dx_acc && (mask & 1)) fill_nan(dx, xs), memset(dxr, 0, xs * 4);
    char what[220];
    snprintf(what, sizeof what,
             "%s n=%d cin=%d %dx%d cout=%d k=%d s=%d p=%d d=%d g=%d bias=%d grads=%d dx_acc=%d threads=%d", tag, d.n,
             d.cin, d.h, d.w, d.cout, d.k, d.stride, d.pad, d.dil, d.groups, use_b, mask, dx_acc, threads);

    fill_nan(y, ys);
    conv2d_forward(y, x, w, use_b ? b : NULL, &d);
    conv2d_forward_ref(yr, x, w, use_b ? b : NULL, &d);
    char w2[260];
    snprintf(w2, sizeof w2, "%s: y", what);
    expect_close(y, yr, ys, (double)cin_g * kk, w2);

    conv2d_backward_ex(mask & 1 ? dx : NULL, mask & 2 ? dw : NULL, mask & 4 ? db : NULL, dy, x, w, &d, dx_acc);
    conv2d_backward_ref(mask & 1 ? dxr : NULL, mask & 2 ? dwr : NULL, mask & 4 ? dbr : NULL, dy, x, w, &d);
    snprintf(w2, sizeof w2, "%s: dx", what);
    expect_close(dx, dxr, xs, (double)d.cout / d.groups * kk, w2);
    snprintf(w2, sizeof w2, "%s: dw", what);
    expect_close(dw, dwr, ws, (double)d.n * d.oh * d.ow, w2);
    snprintf(w2, sizeof w2, "%s: db", what);
    expect_close(db, dbr, (size_t)d.cout, (double)d.n * d.oh * d.ow, w2);
    free(x), free(w), free(b), free(y), free(yr), free(dy), free(dx), free(dxr), free(dw), free(dwr), free(db),
        free(dbr);
    return 1;
}

static ConvDims dims(int n, int cin, int h, int w, int cout, int k, int s, int p, int dil, int g) {
    ConvDims d = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = s, .pad = p, .dil = dil,
                  .groups = g};
    return d;
}

static void test_conv_random(Rng *r, int count) {
    static const int ks[] = {1, 2, 3, 4, 5, 7};
    int done = 0;
    while (done < count) {
        ConvDims d;
        d.n = 1 + (int)rng_below(r, 5);
        d.k = ks[rng_below(r, 6)];
        d.stride = 1 + (int)rng_below(r, 3);
        d.pad = (int)rng_below(r, 4);
        d.dil = 1 + (int)rng_below(r, 2);
        d.h = 1 + (int)rng_below(r, 17);
        d.w = 1 + (int)rng_below(r, 17);
        int gk = (int)rng_below(r, 4); /* 0: 1, 1: 2, 2: 4, 3: depthwise */
        if (gk == 3) {
            d.cin = d.cout = d.groups = 1 + (int)rng_below(r, 12);
        } else {
            d.groups = 1 << gk;
            d.cin = d.groups * (1 + (int)rng_below(r, 6));
            d.cout = d.groups * (1 + (int)rng_below(r, 7));
        }
        done += conv_case(r, d, 1 + (int)rng_below(r, 3), "random");
    }
}

static void test_conv_fixed(Rng *r) {
    /* The reference networks' layers (small batches) and paths: batched gemm (P = 49),
     * columns split (n = 1), direct 1x1, grouped, depthwise with odd strides. */
    conv_case(r, dims(2, 1, 28, 28, 16, 3, 1, 1, 1, 1), 2, "stem");
    conv_case(r, dims(2, 16, 28, 28, 16, 3, 1, 1, 1, 1), 2, "resnet8.b1");
    conv_case(r, dims(2, 16, 28, 28, 32, 3, 2, 1, 1, 1), 2, "resnet8.b2");
    conv_case(r, dims(5, 32, 14, 14, 64, 3, 2, 1, 1, 1), 2, "resnet8.b3");
    conv_case(r, dims(5, 64, 7, 7, 64, 3, 1, 1, 1, 1), 1, "resnet8.b3b");
    conv_case(r, dims(3, 32, 14, 14, 64, 1, 2, 0, 1, 1), 2, "resnet8.short");
    /* strided 1x1 (subsampled im2col, dx put back at every s-th pixel): odd sizes, rows of more
     * than one vector, stride 3, groups */
    for (int i = 0; i < 6; i++) { /* (each case draws dx overwritten or accumulated) */
        conv_case(r, dims(3, 16, 7, 9, 8, 1, 2, 0, 1, 1), 2, "short.odd");
        conv_case(r, dims(2, 4, 9, 70, 8, 1, 2, 0, 1, 1), 1, "short.wide");
        conv_case(r, dims(2, 8, 10, 11, 4, 1, 3, 0, 1, 2), 2, "short.s3");
    }
    conv_case(r, dims(2, 16, 28, 28, 96, 1, 1, 0, 1, 1), 2, "mbv2.expand");
    conv_case(r, dims(5, 64, 7, 7, 96, 1, 1, 0, 1, 1), 2, "mbv2.project");
    /* 1x1 convs whose dW is dy x^T (pw_dw_rows): more output channels than input ones, 32 and
     * more of those; output channels that fill 16-lane vectors worse than the input ones */
    conv_case(r, dims(5, 32, 7, 7, 192, 1, 1, 0, 1, 1), 2, "mbv2.expand7");
    conv_case(r, dims(3, 33, 5, 5, 70, 1, 1, 0, 1, 1), 3, "1x1.dw_rows.odd");
    conv_case(r, dims(3, 96, 14, 14, 24, 1, 1, 0, 1, 1), 2, "mbv2.project14");
    /* 1x1 convs whose W^T rows are spread to a stride off 1 KiB (wt_ld) for dx, two groups */
    for (int i = 0; i < 3; i++) {
        conv_case(r, dims(2, 24, 7, 7, 256, 1, 1, 0, 1, 1), 2, "mbv2.head");
        conv_case(r, dims(2, 8, 6, 6, 512, 1, 2, 0, 1, 2), 2, "wide.short");
    }
    conv_case(r, dims(5, 96, 7, 7, 96, 1, 1, 0, 1, 1), 1, "mbv2.1x1.batched");
    conv_case(r, dims(2, 40, 28, 28, 40, 3, 2, 1, 1, 40), 2, "mbv2.dw.s2");
    conv_case(r, dims(2, 144, 14, 14, 144, 3, 1, 1, 1, 144), 3, "mbv2.dw");
    conv_case(r, dims(1, 16, 28, 28, 32, 3, 1, 1, 1, 1), 2, "batch1.cols");
    conv_case(r, dims(1, 24, 14, 14, 40, 1, 1, 0, 1, 1), 2, "batch1.cols.1x1");
    conv_case(r, dims(1, 8, 30, 30, 12, 3, 1, 1, 1, 2), 3, "batch1.cols.grouped");
    conv_case(r, dims(4, 12, 9, 11, 20, 3, 1, 2, 2, 4), 2, "grouped.dilated");
    conv_case(r, dims(2, 6, 13, 12, 12, 5, 3, 3, 2, 6), 2, "multiplier");
    conv_case(r, dims(3, 10, 15, 13, 10, 7, 3, 3, 2, 10), 2, "dw.k7.s3");
    conv_case(r, dims(2, 7, 9, 9, 7, 5, 2, 0, 1, 7), 1, "dw.k5.s2.p0");
    /* Winograd F(4x4, 3x3) (3x3 stride-1 convs with >= 16 channels a group, planes of 7x7 and
     * more, batches of at least 8; dW too when dx is asked for): even and odd planes, other
     * paddings (its tiles cover the output grid whatever the padding), groups; images side by
     * side (2 of 28x28, 4 of 14x14, 7 of 7x7) and a batch that leaves a thread fewer; the
     * output stored through the map, with and without bias and accumulation (random per case,
     * as the gradients asked for: hence several of the first and the 7x7) */
    for (int i = 0; i < 3; i++) conv_case(r, dims(8, 16, 28, 28, 16, 3, 1, 1, 1, 1), 2, "winograd.16ch.28x28");
    conv_case(r, dims(11, 16, 15, 13, 24, 3, 1, 1, 1, 1), 2, "winograd.odd.images");
    conv_case(r, dims(8, 20, 12, 12, 16, 3, 1, 1, 1, 1), 1, "winograd.12x12");
    for (int i = 0; i < 2; i++) conv_case(r, dims(9, 24, 7, 7, 16, 3, 1, 1, 1, 1), 2, "winograd.7x7");
    /* 11x11: fourteen images side by side fill the vectors best, so a thread's 15 leave a
     * chunk of one, and 13 images (one thread) a grid of 13 */
    conv_case(r, dims(30, 16, 11, 11, 16, 3, 1, 1, 1, 1), 2, "winograd.11x11.rest");
    conv_case(r, dims(13, 16, 11, 11, 24, 3, 1, 1, 1, 1), 1, "winograd.11x11.fewer");
    conv_case(r, dims(8, 32, 14, 14, 32, 3, 1, 1, 1, 1), 2, "winograd.14x14");
    conv_case(r, dims(9, 40, 13, 15, 48, 3, 1, 1, 1, 1), 2, "winograd.13x15");
    conv_case(r, dims(8, 32, 14, 15, 33, 3, 1, 0, 1, 1), 2, "winograd.pad0");
    conv_case(r, dims(8, 36, 12, 13, 32, 3, 1, 2, 1, 1), 1, "winograd.pad2");
    conv_case(r, dims(8, 64, 12, 12, 64, 3, 1, 1, 1, 2), 2, "winograd.grouped");
    /* Winograd F(7x7, 3x3) with stride 2 (winograd_batch.c: 3x3 stride-2 pad-1 convs with whole 7x7
     * output tiles, 16 images a vector, at least 12 images a thread): a thread's last chunk
     * short (20 and 13 images a thread), a chunk of 12 only, odd input planes (13x13), a
     * non-square plane, channels that are not a multiple of 16 (cout 24, cin 8) */
    for (int i = 0; i < 2; i++) conv_case(r, dims(40, 16, 28, 28, 32, 3, 2, 1, 1, 1), 2, "ws2.28x28");
    conv_case(r, dims(40, 16, 28, 28, 32, 3, 2, 1, 1, 1), 3, "ws2.28x28.3threads");
    conv_case(r, dims(24, 32, 14, 14, 64, 3, 2, 1, 1, 1), 2, "ws2.14x14");
    conv_case(r, dims(37, 8, 13, 13, 16, 3, 2, 1, 1, 1), 1, "ws2.13x13");
    conv_case(r, dims(30, 24, 28, 14, 24, 3, 2, 1, 1, 1), 1, "ws2.28x14");
    /* Winograd F(4x4, 3x3) with sixteen images a vector (winograd_batch.c: 3x3 stride-1 pad-1
     * convs, at least 12 images a thread, each image's own tiles): whole tiles (28x28, 12x12),
     * ragged last tiles (14x14, 7x7, 11x11), a non-square plane, 8 channels, a short last chunk */
    conv_case(r, dims(40, 16, 28, 28, 16, 3, 1, 1, 1, 1), 2, "wb1.28x28");
    conv_case(r, dims(26, 32, 14, 14, 32, 3, 1, 1, 1, 1), 2, "wb1.14x14");
    conv_case(r, dims(30, 64, 7, 7, 64, 3, 1, 1, 1, 1), 2, "wb1.7x7");
    conv_case(r, dims(37, 8, 12, 12, 24, 3, 1, 1, 1, 1), 1, "wb1.12x12");
    conv_case(r, dims(28, 16, 28, 14, 24, 3, 1, 1, 1, 1), 1, "wb1.28x14");
    conv_case(r, dims(25, 24, 11, 11, 16, 3, 1, 1, 1, 1), 1, "wb1.11x11");
    /* a 1x1 conv's ragged last column panel done as dot products (7x7 and 14x14 planes) */
    conv_case(r, dims(3, 48, 7, 7, 40, 1, 1, 0, 1, 1), 2, "1x1.ragged49");
    conv_case(r, dims(2, 40, 14, 14, 36, 1, 1, 0, 1, 1), 2, "1x1.ragged196");
    /* dW of 16 output channels a group, 3x3 stride 1 (three channels' taps at a time): one and
     * two channels left over, groups, another padding */
    conv_case(r, dims(3, 8, 12, 12, 16, 3, 1, 1, 1, 1), 2, "dw16.taps3.rem2");
    conv_case(r, dims(2, 10, 10, 9, 32, 3, 1, 2, 1, 2), 2, "dw16.taps3.grouped");
    /* an output over 16 MB: written with streaming stores */
    conv_case(r, dims(2, 1, 512, 512, 9, 1, 1, 0, 1, 1), 2, "streamed");
}

/* dx, dw and db of one depthwise layer must be bitwise the same with 1, 2 and 3 threads. */
static void dw_threads_case(Rng *r, ConvDims d) {
    Err e;
    if (conv_dims_init(&d, &e) != NASC_OK) return;
    size_t xs = (size_t)d.n * d.cin * d.h * d.w, ys = (size_t)d.n * d.cout * d.oh * d.ow;
    size_t ws = (size_t)d.cout * d.k * d.k, gs = xs + ws + (size_t)d.cout;
    float *x = xmalloc(xs * 4), *w = xmalloc(ws * 4), *dy = xmalloc(ys * 4);
    float *got = xmalloc(gs * 4), *want = xmalloc(gs * 4); /* dx, dw, db */
    fill(x, xs, r), fill(w, ws, r), fill(dy, ys, r);
    for (int t = 1; t <= 3; t++) {
        threads_set(t);
        memset(got, 0, gs * 4);
        conv2d_backward(got, got + xs, got + xs + ws, dy, x, w, &d);
        if (t == 1)
            memcpy(want, got, gs * 4);
        else
            CHECK(memcmp(got, want, gs * 4) == 0,
                  "depthwise n=%d c=%d %dx%d k=%d s=%d: the gradients with %d threads differ from 1 thread", d.n, d.cin,
                  d.h, d.w, d.k, d.stride, t);
    }
    free(x), free(w), free(dy), free(got), free(want);
}

/* Depthwise layers. The direct kernels (3x3, padding 1, dilation 1, stride 1 on any plane,
 * stride 2 on rows of up to 32: every width from 1 to 33), ragged and full vectors, odd heights;
 * the blocked kernels (5x5, dilation 2, other paddings, wider stride-2 rows); channel counts off
 * multiples of 16 and more images than a backward work item (4). Then thread-count independence. */
static void test_depthwise(Rng *r) {
    for (int w = 1; w <= 33; w++)
        for (int s = 1; s <= 2; s++) {
            int c = 1 + (int)rng_below(r, 20), h = 1 + (int)rng_below(r, 30), n = 1 + (int)rng_below(r, 6);
            conv_case(r, dims(n, c, h, w, c, 3, s, 1, 1, c), 1 + (int)rng_below(r, 3), "dw.direct");
        }
    static const int sq[] = {7, 14, 28};
    for (int i = 0; i < 3; i++)
        for (int s = 1; s <= 2; s++) conv_case(r, dims(5, 17, sq[i], sq[i], 17, 3, s, 1, 1, 17), 2, "dw.square");
    for (int t = 0; t < 40; t++) {
        int k = rng_below(r, 2) ? 5 : 3, s = 1 + (int)rng_below(r, 2), p = (int)rng_below(r, 3);
        int dil = 1 + (int)rng_below(r, 2), c = 1 + (int)rng_below(r, 20), n = 1 + (int)rng_below(r, 6);
        int h = 1 + (int)rng_below(r, 30), w = 1 + (int)rng_below(r, 30);
        conv_case(r, dims(n, c, h, w, c, k, s, p, dil, c), 1 + (int)rng_below(r, 3), "dw.random");
    }
    /* The portable direct kernels (NASC_GEMM=avx2|generic), every gradient, dx overwritten and
     * accumulated: n, c, h, w, stride. One image; MobileNet's planes; odd sizes; stride-2 rows
     * of one chunk of 8 output columns, of several (the last one moved back to the row's end,
     * odd and even widths), of 16 and 17 chunks; planes on either side of the direct path's
     * smallest (16 output pixels: stride 1, 4x4 vs 3x5; stride 2, 7x7 and 8x8 vs 6x8); one
     * row, one column. */
    static const int edge[][5] = {{1, 3, 7, 7, 1},    {1, 5, 14, 14, 1}, {3, 17, 28, 28, 1}, {2, 3, 13, 11, 1},
                                  {1, 3, 7, 7, 2},    {1, 4, 14, 14, 2}, {3, 17, 28, 28, 2}, {2, 3, 13, 11, 2},
                                  {1, 2, 35, 35, 2},  {1, 2, 9, 33, 2},  {1, 2, 5, 34, 2},   {2, 2, 6, 50, 2},
                                  {1, 1, 3, 256, 2},  {1, 1, 3, 258, 2}, {2, 3, 4, 4, 1},    {2, 3, 3, 5, 1},
                                  {2, 3, 8, 8, 2},    {2, 3, 7, 8, 2},   {2, 3, 6, 8, 2},    {1, 2, 2, 40, 1},
                                  {1, 2, 40, 1, 1},   {1, 2, 1, 64, 2},  {1, 2, 64, 1, 2},   {2, 3, 1, 40, 1}};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
        for (int acc = 0; acc < 2; acc++) {
            const int *e = edge[i];
            force_mask = 7, force_dx_acc = acc;
            conv_case(r, dims(e[0], e[1], e[2], e[3], e[1], 3, e[4], 1, 1, e[1]), 1 + acc, "dw.edge");
            force_mask = force_dx_acc = -1;
        }
    dw_threads_case(r, dims(9, 19, 14, 14, 19, 3, 1, 1, 1, 19));
    dw_threads_case(r, dims(9, 19, 14, 14, 19, 3, 2, 1, 1, 19));
    dw_threads_case(r, dims(9, 19, 13, 13, 19, 5, 1, 2, 1, 19));
    dw_threads_case(r, dims(9, 7, 35, 35, 7, 3, 2, 1, 1, 7));
}

static void test_dims(void) {
    Err e;
    ConvDims d = dims(1, 3, 28, 28, 8, 3, 2, 1, 1, 1);
    CHECK(conv_dims_init(&d, &e) == NASC_OK && d.oh == 14 && d.ow == 14, "28x28 k3 s2 p1 -> 14x14 (got %dx%d)",
          d.oh, d.ow);
    d = dims(1, 3, 7, 9, 8, 3, 1, 1, 2, 1);
    CHECK(conv_dims_init(&d, &e) == NASC_OK && d.oh == 5 && d.ow == 7, "7x9 k3 d2 p1 -> 5x7 (got %dx%d)", d.oh, d.ow);
    d = dims(1, 3, 5, 6, 8, 2, 3, 0, 1, 1);
    CHECK(conv_dims_init(&d, &e) == NASC_OK && d.oh == 2 && d.ow == 2, "5x6 k2 s3 -> 2x2 (got %dx%d)", d.oh, d.ow);
    d = dims(1, 3, 1, 1, 8, 3, 1, 1, 1, 1);
    CHECK(conv_dims_init(&d, &e) == NASC_OK && d.oh == 1 && d.ow == 1, "1x1 k3 p1 -> 1x1");
    static const struct {
        ConvDims d;
        const char *why;
    } bad[] = {
        {{.n = 1, .cin = 6, .h = 8, .w = 8, .cout = 8, .k = 3, .stride = 1, .pad = 1, .dil = 1, .groups = 4},
         "cin not divisible by groups"},
        {{.n = 1, .cin = 8, .h = 8, .w = 8, .cout = 6, .k = 3, .stride = 1, .pad = 1, .dil = 1, .groups = 4},
         "cout not divisible by groups"},
        {{.n = 1, .cin = 3, .h = 3, .w = 8, .cout = 4, .k = 5, .stride = 1, .pad = 0, .dil = 1, .groups = 1},
         "kernel larger than input"},
        {{.n = 1, .cin = 3, .h = 5, .w = 5, .cout = 4, .k = 3, .stride = 1, .pad = 0, .dil = 3, .groups = 1},
         "dilated kernel larger than input"},
        {{.n = 1, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 3, .stride = 0, .pad = 0, .dil = 1, .groups = 1},
         "stride 0"},
        {{.n = 1, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 3, .stride = 1, .pad = -1, .dil = 1, .groups = 1},
         "negative padding"},
        {{.n = 1, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 3, .stride = 1, .pad = 0, .dil = 0, .groups = 1},
         "dilation 0"},
        {{.n = 1, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 0, .stride = 1, .pad = 0, .dil = 1, .groups = 1},
         "kernel 0"},
        {{.n = 0, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 3, .stride = 1, .pad = 0, .dil = 1, .groups = 1},
         "empty batch"},
        {{.n = 1, .cin = 3, .h = 8, .w = 8, .cout = 4, .k = 3, .stride = 1, .pad = 0, .dil = 1, .groups = 0},
         "groups 0"},
        {{.n = 1, .cin = 3, .h = 0, .w = 8, .cout = 4, .k = 1, .stride = 1, .pad = 0, .dil = 1, .groups = 1},
         "zero height"},
        {{.n = 4096, .cin = 1024, .h = 1024, .w = 1024, .cout = 4, .k = 1, .stride = 1, .pad = 0, .dil = 1,
          .groups = 1},
         "too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ConvDims t = bad[i].d;
        e.msg[0] = 0;
        int rc = conv_dims_init(&t, &e);
        CHECK(rc == NASC_ERR && e.msg[0] != 0, "conv_dims_init accepted: %s", bad[i].why);
    }
}

/* ------------------------------------------------------------------ linear */
static void linear_case(Rng *r, int n, int in, int out, int threads) {
    threads_set(threads);
    size_t xs = (size_t)n * in, ys = (size_t)n * out, ws = (size_t)out * in;
    float *x = xmalloc(xs * 4), *w = xmalloc(ws * 4), *b = xmalloc((size_t)out * 4), *dy = xmalloc(ys * 4);
    float *y = xmalloc(ys * 4), *yr = xmalloc(ys * 4), *dx = xmalloc(xs * 4), *dxr = xmalloc(xs * 4);
    float *dw = xmalloc(ws * 4), *dwr = xmalloc(ws * 4), *db = xmalloc((size_t)out * 4), *dbr = xmalloc((size_t)out * 4);
    fill(x, xs, r), fill(w, ws, r), fill(b, (size_t)out, r), fill(dy, ys, r);
    fill(dx, xs, r), fill(dw, ws, r), fill(db, (size_t)out, r);
    memcpy(dxr, dx, xs * 4), memcpy(dwr, dw, ws * 4), memcpy(dbr, db, (size_t)out * 4);
    int use_b = rng_below(r, 2), mask = 1 + (int)rng_below(r, 7);
    char what[160];
    snprintf(what, sizeof what, "linear n=%d in=%d out=%d bias=%d grads=%d threads=%d", n, in, out, use_b, mask,
             threads);
    fill_nan(y, ys);
    linear_forward(y, x, w, use_b ? b : NULL, n, in, out);
    linear_forward_ref(yr, x, w, use_b ? b : NULL, n, in, out);
    expect_close(y, yr, ys, in, what);
    linear_backward(mask & 1 ? dx : NULL, mask & 2 ? dw : NULL, mask & 4 ? db : NULL, dy, x, w, n, in, out);
    linear_backward_ref(mask & 1 ? dxr : NULL, mask & 2 ? dwr : NULL, mask & 4 ? dbr : NULL, dy, x, w, n, in, out);
    expect_close(dx, dxr, xs, out, what);
    expect_close(dw, dwr, ws, n, what);
    expect_close(db, dbr, (size_t)out, n, what);
    free(x), free(w), free(b), free(dy), free(y), free(yr), free(dx), free(dxr), free(dw), free(dwr), free(db),
        free(dbr);
}

static void test_linear(Rng *r) {
    for (int t = 0; t < 12; t++)
        linear_case(r, 1 + (int)rng_below(r, 40), 1 + (int)rng_below(r, 70), 1 + (int)rng_below(r, 30),
                    1 + (int)rng_below(r, 2));
    linear_case(r, 128, 64, 10, 2);
    linear_case(r, 128, 256, 10, 2);
    linear_case(r, 300, 96, 120, 2);
}

/* ------------------------------------------------------------------ variants */
static int cpu_has(const char *path) {
    if (strcmp(path, "generic") == 0) return 1;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (strcmp(path, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(path, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* Runs this program again as `self --child` with one extra environment variable (the gemm
 * path and the conv lowering are chosen once per process); returns its exit status, -1 if it
 * did not run. */
static int run_child(const char *self, const char *var, const char *value) {
    char *argv[] = {(char *)self, "--child", NULL};
    setenv(var, value, 1);
    fflush(stdout);
    pid_t pid;
    int rc = posix_spawn(&pid, self, NULL, NULL, argv, environ);
    unsetenv(var);
    if (rc != 0) return -1;
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

int main(int argc, char **argv) {
    Rng r;
    rng_seed(&r, 20240611);
    if (argc > 1 && strcmp(argv[1], "--child") == 0) {
        /* a forced gemm path must be the one in use */
        const char *want = getenv("NASC_GEMM"), *conv = getenv("NASC_CONV");
        if (want) CHECK(strcmp(gemm_path(), want) == 0, "NASC_GEMM=%s but gemm_path() = %s", want, gemm_path());
        test_gemm(&r);
        test_gemm_batch(&r);
        test_conv_random(&r, 40);
        test_conv_fixed(&r);
        test_depthwise(&r);
        test_linear(&r);
        char name[96];
        snprintf(name, sizeof name, "test_conv[gemm %s, conv %s]", gemm_path(), conv ? conv : "auto");
        return check_summary(name);
    }
    printf("default gemm path: %s\n", gemm_path());
    test_dims();
    test_gemm(&r);
    test_gemm_batch(&r);
    test_conv_random(&r, 120);
    test_conv_fixed(&r);
    test_depthwise(&r);
    test_linear(&r);
    /* every gemm path this CPU has, then each conv lowering forced */
    static const char *const variants[][2] = {{"NASC_GEMM", "generic"}, {"NASC_GEMM", "avx2"},
                                              {"NASC_GEMM", "avx512"},  {"NASC_CONV", "explicit"},
                                              {"NASC_CONV", "implicit"}};
    for (int i = 0; i < 5; i++) {
        const char *var = variants[i][0], *val = variants[i][1];
        if (strcmp(var, "NASC_GEMM") == 0 && !cpu_has(val)) {
            printf("%s=%s: not supported by this CPU, skipped\n", var, val);
            continue;
        }
        int rc = run_child(argv[0], var, val);
        CHECK(rc == 0, "the tests under %s=%s failed (exit status %d)", var, val, rc);
        if (rc == 0) printf("%s=%s: ok\n", var, val);
    }
    return check_summary("test_conv");
}
