/* test_ops_fast.c: the fast float kernels of norm.c, act.c, pool.c and elem.c against their
 * float `_ref` kernels on random shapes (odd sizes, sizes that cross the threading and
 * blocking thresholds), accumulating onto nonzero gradients and with NULL gradients; and
 * the fast kernels' results must not depend on the thread count (bitwise).
 *
 * Arrays are compared entry by entry: |fast - ref| <= rtol |ref| + atol max|ref|.
 */
#include "../src/ops/ops.h"
#include "check.h"

#include <math.h>

static Rng rng;

static float *frand(size_t n, float lo, float hi) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = rng_uniformf(&rng, lo, hi);
    return p;
}

static float *fdup(const float *a, size_t n) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

static double worst_ratio; /* largest |fast - ref| / tolerance seen, printed at the end */

/* Sums: |got - want| <= rtol * cond[i], cond = the sum of the magnitudes of the terms. */
static void check_sums(const float *got, const float *want, const float *cond, size_t n, double rtol,
                       const char *what) {
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = rtol * cond[i], d = fabs((double)got[i] - want[i]);
        if (tol > 0) worst_ratio = fmax(worst_ratio, d / tol);
        if (!(d <= tol)) bad++, worst = i;
    }
    CHECK(bad == 0, "%s: %zu of %zu entries differ, e.g. [%zu] got %.9g want %.9g (terms' magnitude %.3g)", what, bad, n,
          worst, bad ? got[worst] : 0.0, bad ? want[worst] : 0.0, bad ? cond[worst] : 0.0);
}

/* One CHECK per array: reports the worst entry. */
static void check_arrays(const float *got, const float *want, size_t n, double rtol, double atol, const char *what) {
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    size_t bad = 0, worst = 0;
    double worst_excess = -1;
    for (size_t i = 0; i < n; i++) {
        double tol = rtol * fabs(want[i]) + atol * scale, d = fabs((double)got[i] - want[i]);
        if (tol > 0) worst_ratio = fmax(worst_ratio, d / tol);
        if (!(d <= tol)) {
            bad++;
            if (!(d - tol <= worst_excess)) worst_excess = d - tol, worst = i;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu entries differ, worst [%zu] got %.9g want %.9g", what, bad, n, worst,
          bad ? got[worst] : 0.0, bad ? want[worst] : 0.0);
}

static void check_same(const void *a, const void *b, size_t bytes, const char *what) {
    CHECK(memcmp(a, b, bytes) == 0, "%s: not bitwise identical", what);
}

/* ------------------------------------------------------------------ batch norm */

static void test_bn_shape(int n, int c, int hw, float lo, float hi) {
    size_t len = (size_t)n * c * hw;
    char what[128];
    float *x = frand(len, lo, hi), *gamma = frand(c, 0.5f, 1.5f), *beta = frand(c, -1, 1);
    float *rm0 = frand(c, -1, 1), *rv0 = frand(c, 0.5f, 2);
    float *y1 = xmalloc(len * 4), *y2 = xmalloc(len * 4), *m1 = xmalloc(c * 4), *m2 = xmalloc(c * 4);
    float *is1 = xmalloc(c * 4), *is2 = xmalloc(c * 4);
    float *rm1 = fdup(rm0, c), *rv1 = fdup(rv0, c), *rm2 = fdup(rm0, c), *rv2 = fdup(rv0, c);

    bn_forward_train_ref(y1, m1, is1, x, gamma, beta, rm1, rv1, n, c, hw, 0.1f, 1e-5f);
    bn_forward_train(y2, m2, is2, x, gamma, beta, rm2, rv2, n, c, hw, 0.1f, 1e-5f);
    snprintf(what, sizeof what, "bn train (%d,%d,%d) x in [%g,%g]", n, c, hw, lo, hi);
    check_arrays(y2, y1, len, 2e-6, 4e-7, what);
    /* the mean is a sum (rows in float lanes on the AVX-512 path): its error scales with the
     * terms' magnitude, the mean of |x| */
    float *cm = xcalloc(c, 4);
    for (size_t o = 0; o < len; o++) cm[o / hw % c] += fabsf(x[o]) / (float)((size_t)n * hw);
    check_sums(m2, m1, cm, c, 1e-6, "bn train mean");
    free(cm);
    check_arrays(is2, is1, c, 1e-6, 0, "bn train invstd");
    check_arrays(rm2, rm1, c, 2e-7, 1e-7, "bn running mean");
    check_arrays(rv2, rv1, c, 1e-6, 0, "bn running var");

    /* NULL gamma/beta and running stats */
    bn_forward_train_ref(y1, m1, is1, x, NULL, NULL, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    bn_forward_train(y2, m2, is2, x, NULL, NULL, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    check_arrays(y2, y1, len, 2e-6, 4e-7, "bn train, no affine");

    bn_forward_eval_ref(y1, x, gamma, beta, rm0, rv0, n, c, hw, 1e-5f);
    bn_forward_eval(y2, x, gamma, beta, rm0, rv0, n, c, hw, 1e-5f);
    snprintf(what, sizeof what, "bn eval (%d,%d,%d)", n, c, hw);
    check_arrays(y2, y1, len, 2e-6, 4e-7, what);

    /* backward, using the reference forward's saved values, onto nonzero gradients */
    bn_forward_train_ref(y1, m1, is1, x, gamma, beta, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    float *dy = frand(len, -1, 1), *dx0 = frand(len, -1, 1), *dg0 = frand(c, -1, 1), *db0 = frand(c, -1, 1);
    float *dx1 = fdup(dx0, len), *dx2 = fdup(dx0, len), *dg1 = fdup(dg0, c), *dg2 = fdup(dg0, c);
    float *db1 = fdup(db0, c), *db2 = fdup(db0, c);
    bn_backward_ref(dx1, dg1, db1, dy, x, gamma, m1, is1, n, c, hw);
    bn_backward(dx2, dg2, db2, dy, x, gamma, m1, is1, n, c, hw);
    snprintf(what, sizeof what, "bn backward dx (%d,%d,%d) x in [%g,%g]", n, c, hw, lo, hi);
    check_arrays(dx2, dx1, len, 1e-5, 4e-7, what);
    /* dgamma and dbeta are sums (in float within a row, as PyTorch's): their tolerance scales with
     * the sum of the terms' magnitudes, the quantity float summation error is bounded by */
    float *cg = xcalloc(c, 4), *cb = xcalloc(c, 4);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int j = 0; j < hw; j++) {
                size_t o = ((size_t)i * c + ch) * hw + j;
                cg[ch] += fabsf(dy[o] * (x[o] - m1[ch]) * is1[ch]), cb[ch] += fabsf(dy[o]);
            }
    for (int ch = 0; ch < c; ch++) cg[ch] += fabsf(dg0[ch]), cb[ch] += fabsf(db0[ch]);
    check_sums(dg2, dg1, cg, c, 1e-6, "bn backward dgamma");
    check_sums(db2, db1, cb, c, 1e-6, "bn backward dbeta");
    free(cg), free(cb);
    /* NULL gradients: each alone gives the same as all together */
    float *t = fdup(dx0, len);
    bn_backward(t, NULL, NULL, dy, x, gamma, m1, is1, n, c, hw);
    check_same(t, dx2, len * 4, "bn backward dx alone");
    memcpy(t, dg0, c * 4);
    bn_backward(NULL, t, NULL, dy, x, gamma, m1, is1, n, c, hw);
    check_same(t, dg2, c * 4, "bn backward dgamma alone");
    memcpy(t, db0, c * 4);
    bn_backward(NULL, NULL, t, dy, x, gamma, m1, is1, n, c, hw);
    check_same(t, db2, c * 4, "bn backward dbeta alone");

    /* thread count must not change a bit */
    int nt = threads_get();
    threads_set(1);
    float *y3 = xmalloc(len * 4), *m3 = xmalloc(c * 4), *is3 = xmalloc(c * 4), *dx3 = fdup(dx0, len);
    float *dg3 = fdup(dg0, c), *db3 = fdup(db0, c);
    bn_forward_train(y2, m2, is2, x, gamma, beta, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    memcpy(dx2, dx0, len * 4), memcpy(dg2, dg0, c * 4), memcpy(db2, db0, c * 4);
    bn_backward(dx2, dg2, db2, dy, x, gamma, m1, is1, n, c, hw);
    threads_set(3);
    bn_forward_train(y3, m3, is3, x, gamma, beta, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    bn_backward(dx3, dg3, db3, dy, x, gamma, m1, is1, n, c, hw);
    threads_set(nt);
    check_same(y2, y3, len * 4, "bn forward, threads 1 vs 3");
    check_same(is2, is3, c * 4, "bn invstd, threads 1 vs 3");
    check_same(dx2, dx3, len * 4, "bn backward dx, threads 1 vs 3");
    check_same(dg2, dg3, c * 4, "bn backward dgamma, threads 1 vs 3");

    free(x), free(gamma), free(beta), free(rm0), free(rv0), free(y1), free(y2), free(y3), free(m1), free(m2);
    free(m3), free(is1), free(is2), free(is3), free(rm1), free(rv1), free(rm2), free(rv2), free(dy), free(dx0);
    free(dg0), free(db0), free(dx1), free(dx2), free(dx3), free(dg1), free(dg2), free(dg3), free(db1), free(db2);
    free(db3), free(t);
}

static void test_bn(void) {
    static const int shapes[][3] = {{1, 1, 2}, {2, 3, 1}, {3, 5, 7}, {4, 16, 49}, {8, 32, 64},
                                    {2, 7, 33}, {64, 10, 1}, {5, 3, 17}, {3, 33, 169}, {3, 130, 1}, {2, 100, 5},
                                    /* rows past the stream walks' 256 (the row kernels' main loops) */
                                    {2, 5, 784}, {3, 4, 300}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        test_bn_shape(shapes[i][0], shapes[i][1], shapes[i][2], -2, 3);
    test_bn_shape(4, 6, 25, 100, 101); /* |mean| >> std */
    test_bn_shape(8, 32, 64, -1000, -999);
}

/* ------------------------------------------------------------------ activations */

static void test_act(void) {
    static const size_t sizes[] = {1, 7, 1000, 65536 + 13, 200003};
    static const float kinks[] = {-3, 0, 3, 6, -0.0f};
    for (int a = 0; a < ACT_COUNT; a++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            char what[96];
            float *x = frand(n, -8, 8);
            for (size_t i = 0; i < n; i += 5) x[i] = kinks[(i / 5) % 5]; /* exact kink values too */
            float *y1 = xmalloc(n * 4), *y2 = xmalloc(n * 4), *dy = frand(n, -1, 1), *dx0 = frand(n, -1, 1);
            float *dx1 = fdup(dx0, n), *dx2 = fdup(dx0, n);
            act_forward_ref((ActKind)a, y1, x, n);
            act_forward((ActKind)a, y2, x, n);
            snprintf(what, sizeof what, "act %d forward n=%zu", a, n);
            check_arrays(y2, y1, n, 1e-6, 1e-7, what);
            float *yi = fdup(x, n); /* in place */
            act_forward((ActKind)a, yi, yi, n);
            check_same(yi, y2, n * 4, "act forward in place");
            act_backward_ref((ActKind)a, dx1, dy, x, n);
            act_backward((ActKind)a, dx2, dy, x, n);
            snprintf(what, sizeof what, "act %d backward n=%zu", a, n);
            check_arrays(dx2, dx1, n, 1e-6, 1e-7, what);
            act_backward((ActKind)a, NULL, dy, x, n);
            free(x), free(y1), free(y2), free(dy), free(dx0), free(dx1), free(dx2), free(yi);
        }
}

/* ------------------------------------------------------------------ pooling */

static void test_pool_dims(PoolDims d, int ties) {
    char what[128];
    snprintf(what, sizeof what, "(%d,%d,%d,%d) k%d s%d p%d cip%d%s", d.n, d.c, d.h, d.w, d.k, d.stride, d.pad,
             d.count_include_pad, ties ? " ties" : "");
    size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.c * d.oh * d.ow;
    float *x = frand(nx, -1, 1);
    if (ties)
        for (size_t i = 0; i < nx; i++) x[i] = (float)rng_below(&rng, 3);
    float *y1 = xmalloc(ny * 4), *y2 = xmalloc(ny * 4), *dy = frand(ny, -1, 1), *dx0 = frand(nx, -1, 1);
    float *dx1 = fdup(dx0, nx), *dx2 = fdup(dx0, nx);
    int32_t *a1 = xmalloc(ny * 4), *a2 = xmalloc(ny * 4);
    char msg[192];

    maxpool_forward_ref(y1, a1, x, &d);
    maxpool_forward(y2, a2, x, &d);
    snprintf(msg, sizeof msg, "maxpool forward %s", what);
    check_same(y2, y1, ny * 4, msg);
    snprintf(msg, sizeof msg, "maxpool argmax %s", what);
    check_same(a2, a1, ny * 4, msg);
    maxpool_backward_ref(dx1, dy, a1, &d);
    maxpool_backward(dx2, dy, a1, &d);
    snprintf(msg, sizeof msg, "maxpool backward %s", what);
    check_arrays(dx2, dx1, nx, 1e-6, 1e-7, msg);
    maxpool_backward(NULL, dy, a1, &d);

    avgpool_forward_ref(y1, x, &d);
    avgpool_forward(y2, x, &d);
    snprintf(msg, sizeof msg, "avgpool forward %s", what);
    check_arrays(y2, y1, ny, 1e-6, 1e-7, msg);
    memcpy(dx1, dx0, nx * 4), memcpy(dx2, dx0, nx * 4);
    avgpool_backward_ref(dx1, dy, &d);
    avgpool_backward(dx2, dy, &d);
    snprintf(msg, sizeof msg, "avgpool backward %s", what);
    check_arrays(dx2, dx1, nx, 1e-6, 1e-7, msg);
    avgpool_backward(NULL, dy, &d);

    free(x), free(y1), free(y2), free(dy), free(dx0), free(dx1), free(dx2), free(a1), free(a2);
}

static void test_pool(void) {
    Err e;
    int tested = 0;
    while (tested < 60) {
        PoolDims d = {.n = 1 + (int)rng_below(&rng, 3), .c = 1 + (int)rng_below(&rng, 5),
                      .h = 1 + (int)rng_below(&rng, 13), .w = 1 + (int)rng_below(&rng, 13),
                      .k = 1 + (int)rng_below(&rng, 4), .stride = 1 + (int)rng_below(&rng, 3),
                      .count_include_pad = (int)rng_below(&rng, 2)};
        d.pad = (int)rng_below(&rng, d.k / 2 + 1);
        if (pool_dims_init(&d, &e) != NASC_OK) continue;
        test_pool_dims(d, tested % 3 == 0);
        tested++;
    }
    PoolDims big = {.n = 4, .c = 16, .h = 16, .w = 16, .k = 3, .stride = 2, .pad = 1, .count_include_pad = 1};
    pool_dims_init(&big, &e);
    test_pool_dims(big, 0);
    test_pool_dims(big, 1);
    big = (PoolDims){.n = 3, .c = 20, .h = 17, .w = 19, .k = 2, .stride = 2, .pad = 1};
    pool_dims_init(&big, &e);
    test_pool_dims(big, 0);
    /* 2x2, stride 2, no padding (a kernel of its own): odd sizes, rows of several vectors */
    big = (PoolDims){.n = 2, .c = 5, .h = 17, .w = 71, .k = 2, .stride = 2, .pad = 0};
    pool_dims_init(&big, &e);
    test_pool_dims(big, 0);
    test_pool_dims(big, 1);
    big = (PoolDims){.n = 3, .c = 4, .h = 28, .w = 28, .k = 2, .stride = 2, .pad = 0, .count_include_pad = 1};
    pool_dims_init(&big, &e);
    test_pool_dims(big, 0);

    /* 3x3, stride 1, padding 1 (a kernel of its own: a plane as one stream of vectors): planes of
     * one row or column, 7x7, 28x28, wider than a vector, both divisor rules */
    static const int box[][4] = {{2, 3, 28, 28}, {3, 5, 7, 7}, {2, 4, 1, 9}, {2, 2, 13, 1}, {1, 3, 19, 40}, {2, 2, 2, 2}};
    for (size_t i = 0; i < sizeof box / sizeof box[0]; i++)
        for (int cip = 0; cip < 2; cip++) {
            big = (PoolDims){.n = box[i][0], .c = box[i][1], .h = box[i][2], .w = box[i][3], .k = 3, .stride = 1,
                             .pad = 1, .count_include_pad = cip};
            pool_dims_init(&big, &e);
            test_pool_dims(big, (int)i % 2);
        }

    static const int gs[][3] = {{1, 1, 1}, {2, 3, 49}, {3, 5, 1}, {8, 64, 64}, {2, 7, 1023}};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
        int n = gs[i][0], c = gs[i][1], hw = gs[i][2];
        size_t len = (size_t)n * c * hw;
        float *x = frand(len, -1, 2), *y1 = xmalloc(n * c * 4), *y2 = xmalloc(n * c * 4), *dy = frand(n * c, -1, 1);
        float *dx0 = frand(len, -1, 1), *dx1 = fdup(dx0, len), *dx2 = fdup(dx0, len);
        gap_forward_ref(y1, x, n, c, hw);
        gap_forward(y2, x, n, c, hw);
        check_arrays(y2, y1, (size_t)n * c, 1e-6, 1e-7, "gap forward");
        gap_backward_ref(dx1, dy, n, c, hw);
        gap_backward(dx2, dy, n, c, hw);
        check_arrays(dx2, dx1, len, 1e-6, 1e-7, "gap backward");
        /* the overwriting flavour: NaN in dx must not survive; equal to zeroing then adding */
        for (size_t j = 0; j < len; j++) dx1[j] = 0.0f, dx2[j] = NAN;
        gap_backward(dx1, dy, n, c, hw);
        gap_backward_ex(dx2, dy, n, c, hw, 0);
        CHECK(memcmp(dx1, dx2, len * sizeof(float)) == 0, "gap backward overwrite (%d,%d,%d): not bitwise equal", n, c,
              hw);
        gap_backward(NULL, dy, n, c, hw);
        free(x), free(y1), free(y2), free(dy), free(dx0), free(dx1), free(dx2);
    }
}

/* ------------------------------------------------------------------ add */

static void test_add(void) {
    static const size_t sizes[] = {1, 5, 2047, 2048, 2049, 70001};
    for (int nin = 1; nin <= 4; nin++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            float *xs[4], *y1 = xmalloc(n * 4), *y2 = xmalloc(n * 4);
            for (int j = 0; j < nin; j++) xs[j] = frand(n, -1, 1);
            add_forward_ref(y1, (const float *const *)xs, nin, n);
            add_forward(y2, (const float *const *)xs, nin, n);
            check_same(y2, y1, n * 4, "add forward (same order, same bits)");
            /* the output may be any of the inputs */
            float *keep = fdup(xs[nin - 1], n);
            add_forward(xs[nin - 1], (const float *const *)xs, nin, n);
            check_same(xs[nin - 1], y1, n * 4, "add forward in place");
            memcpy(xs[nin - 1], keep, n * 4);
            free(keep);

            float *dy = frand(n, -1, 1), *d1[4], *d2[4];
            for (int j = 0; j < nin; j++) {
                d1[j] = frand(n, -1, 1);
                d2[j] = fdup(d1[j], n);
            }
            if (nin > 1) { /* a NULL gradient is skipped */
                free(d1[1]), free(d2[1]);
                d1[1] = d2[1] = NULL;
            }
            add_backward_ref(d1, dy, nin, n);
            add_backward(d2, dy, nin, n);
            for (int j = 0; j < nin; j++) {
                if (d1[j]) check_same(d2[j], d1[j], n * 4, "add backward");
                free(d1[j]), free(d2[j]);
            }
            for (int j = 0; j < nin; j++) free(xs[j]);
            free(dy), free(y1), free(y2);
        }
}

int main(void) {
    rng_seed(&rng, 7);
    threads_set(2);
    test_bn();
    test_act();
    test_pool();
    test_add();
    printf("largest |fast - ref| / tolerance: %.3f\n", worst_ratio);
    return check_summary("test_ops_fast");
}
