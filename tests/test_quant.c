/* test_quant.c: int8 quantization (src/compress, src/ops/qelem.c).
 *
 *   1. every int8 kernel on random shapes and values: the fast kernel equals the reference bit
 *      for bit, and the reference is within half an output step (plus a stated slack) of the
 *      float op on the dequantized inputs (strides, padding, groups/depthwise, dilation,
 *      count_include_pad on and off, n-ary add, concat, channel scale, up/down resize);
 *   2. whole networks (small, resnet8, mbv2, two NB201 networks, two nets covering concat, SE
 *      mul, hswish, sigmoid, hsigmoid, resize, standalone BN, zero, id, dropout) with random
 *      weights and real BN statistics: fast executor == reference executor bit for bit;
 *      dequantized logits within a stated fraction of the fp32 logits' range; the model file's
 *      payload equals cost_flash_int8's estimate;
 *   3. the int8 model file: save/load gives identical outputs; truncated, corrupted, crafted
 *      and foreign files are refused with a message (never a crash), an fp32 model is
 *      refused with the hint to quantize it;
 *   4. the formulas QAT mirrors (0.0 exactly representable, weight scales) and calibration
 *      (percentile clips outliers that min/max keeps; MSE has the least quantization error).
 *
 * `test_quant --quantize FP32_MODEL OUT [METHOD [N [DATA]]]` instead writes an int8 model by
 * post-training quantization on N (default 512) training images of DATA (fashion-mnist), for
 * the CLI tests (tests/cli_quant.sh), until `nasc compress` exists.
 */
#include <unistd.h>

#include "../src/compress/quant.h"
#include "../src/cost/cost.h"
#include "check.h"

static Rng rng;

static int rnd(int lo, int hi) { return lo + (int)rng_below(&rng, (uint32_t)(hi - lo + 1)); }
static void rand_i8(int8_t *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (int8_t)rnd(-128, 127);
}
static float rand_scale(void) { return rng_uniformf(&rng, 0.005f, 0.1f); }

/* The worst |got - exact| in output steps, exact = clamp(real / y_scale + y_zp, lo, hi). */
static double step_error(const int8_t *got, const float *real, size_t n, float ys, int32_t yzp, int lo, int hi) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (double)real[i] / ys + yzp;
        want = want < lo ? lo : want > hi ? hi : want;
        double d = fabs((double)got[i] - want);
        if (d > worst) worst = d;
    }
    return worst;
}

/* An output quantization fitted to float values y (n): the range shrunk a little so that some
 * values saturate. */
static void fit_out(const float *y, size_t n, float *ys, int32_t *yzp) {
    float lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++) lo = fminf(lo, y[i]), hi = fmaxf(hi, y[i]);
    quant_act_params(0.9f * lo, 0.9f * hi, ys, yzp);
}

static float *deq(const int8_t *q, size_t n, float s, int32_t zp) {
    float *x = xmalloc(n * sizeof *x);
    dequantize_ref(x, q, n, s, zp);
    return x;
}

/* ------------------------------------------------------------------ 1. kernels */
static void test_quantize(void) {
    for (int t = 0; t < 20; t++) {
        size_t n = (size_t)rnd(1, 300000);
        float *x = xmalloc(n * sizeof *x);
        for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&rng) * 3;
        x[0] = 0.0f;
        float s;
        int32_t zp;
        quant_act_params(-4.0f, rng_uniformf(&rng, 0.5f, 8.0f), &s, &zp);
        int8_t *a = xmalloc(n), *b = xmalloc(n);
        quantize_ref(a, x, n, s, zp);
        quantize(b, x, n, s, zp);
        CHECK(!memcmp(a, b, n), "quantize: fast differs from reference (n %zu)", n);
        CHECK(a[0] == zp, "quantize: 0.0 -> %d, want the zero point %d", a[0], zp);
        float *y = deq(a, n, s, zp);
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            if (x[i] >= s * (-128 - zp) && x[i] <= s * (127 - zp)) worst = fmax(worst, fabs(y[i] - x[i]) / s);
        CHECK(worst <= 0.5 + 1e-4, "quantize: round trip error %.4f steps > 0.5", worst);
        free(x), free(a), free(b), free(y);
    }
}

static void test_qconv(void) {
    double worst = 0;
    for (int t = 0; t < 30; t++) {
        int g = rnd(0, 2) == 0 ? 1 : rnd(1, 3);
        int dw = rnd(0, 3) == 0;
        int cin = dw ? rnd(1, 12) : g * rnd(1, 5), cout = dw ? cin : g * rnd(1, 5);
        if (dw) g = cin;
        ConvDims d = {.n = rnd(1, 3), .cin = cin, .h = rnd(3, 12), .w = rnd(3, 12), .cout = cout, .k = rnd(0, 1) ? 3 : rnd(1, 5),
                      .stride = rnd(1, 2), .dil = rnd(0, 3) ? 1 : 2, .groups = g};
        d.pad = rnd(0, d.k / 2 + 1);
        if (conv_dims_init(&d, NULL) != NASC_OK) continue;
        size_t nx = (size_t)d.n * cin * d.h * d.w, nw = (size_t)cout * (cin / g) * d.k * d.k,
               ny = (size_t)d.n * cout * d.oh * d.ow;
        int8_t *x = xmalloc(nx), *w = xmalloc(nw), *y1 = xmalloc(ny), *y2 = xmalloc(ny);
        rand_i8(x, nx);
        for (size_t i = 0; i < nw; i++) w[i] = (int8_t)rnd(-127, 127);
        float xs = rand_scale();
        int32_t xzp = rnd(-60, 60);
        float *ws = xmalloc((size_t)cout * sizeof *ws);
        int32_t *bias = xmalloc((size_t)cout * sizeof *bias), *mult = xmalloc((size_t)cout * sizeof *mult);
        int8_t *shift = xmalloc((size_t)cout);
        float *xf = deq(x, nx, xs, xzp), *wf = xmalloc(nw * sizeof *wf), *bf = xmalloc((size_t)cout * sizeof *bf);
        for (int c = 0; c < cout; c++) {
            ws[c] = rng_uniformf(&rng, 0.001f, 0.02f);
            bias[c] = rnd(-3000, 3000);
            bf[c] = (float)((double)bias[c] * xs * ws[c]);
            for (size_t k = 0; k < nw / cout; k++) wf[c * (nw / cout) + k] = ws[c] * w[c * (nw / cout) + k];
        }
        float *yf = xmalloc(ny * sizeof *yf);
        conv2d_forward_ref(yf, xf, wf, bf, &d);
        float ys;
        int32_t yzp;
        fit_out(yf, ny, &ys, &yzp);
        for (int c = 0; c < cout; c++) quant_multiplier((double)xs * ws[c] / ys, &mult[c], &shift[c]);
        int relu = rnd(0, 1);
        QConvArgs a = {.d = d, .x_zp = xzp, .y_zp = yzp, .y_min = relu ? yzp : -128, .y_max = 127};
        qconv2d_ref(y1, x, w, bias, mult, shift, &a);
        QConvPacked *p = qconv_pack(w, bias, mult, shift, &a);
        qconv2d(y2, x, p, d.n);
        qconv_free(p);
        CHECK(!memcmp(y1, y2, ny), "qconv: fast (%s) differs from reference (cin %d cout %d g %d k %d s %d p %d d %d)",
              qconv_path(), cin, cout, g, d.k, d.stride, d.pad, d.dil);
        double err = step_error(y1, yf, ny, ys, yzp, a.y_min, 127);
        worst = fmax(worst, err);
        CHECK(err <= 0.51, "qconv: %.3f steps from float (cin %d cout %d g %d k %d)", err, cin, cout, g, d.k);
        free(x), free(w), free(y1), free(y2), free(ws), free(bias), free(mult), free(shift), free(xf), free(wf),
            free(bf), free(yf);
    }
    printf("  qconv: worst %.3f output steps from float (path %s)\n", worst, qconv_path());
}

static void test_qlut(void) {
    int8_t lut[256];
    rand_i8(lut, 256);
    const size_t sizes[] = {200000, 1, 63, 64, 65, 12544, 131073};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        int8_t *x = xmalloc(n), *a = xmalloc(n + 64), *b = xmalloc(n + 64);
        rand_i8(x, n);
        memset(a + n, 7, 64), memset(b + n, 7, 64); /* the masked tail must not write past n */
        qlut_ref(a, x, lut, n);
        qlut(b, x, lut, n);
        CHECK(!memcmp(a, b, n + 64), "qlut: fast differs from reference (n %zu)", n);
        CHECK(a[0] == lut[x[0] + 128] && a[n - 1] == lut[x[n - 1] + 128], "qlut: wrong entry");
        free(x), free(a), free(b);
    }
}

static void test_qpool(void) {
    double worst_avg = 0;
    /* 3x3, stride 1, padding 1 (a kernel of its own): 7x7, 28x28, one row, one column, 19x40 */
    static const int box[][2] = {{7, 7}, {28, 28}, {1, 9}, {13, 1}, {19, 40}, {2, 2}};
    for (int t = 0; t < 52; t++) {
        PoolDims d = {.n = rnd(1, 3), .c = rnd(1, 6), .h = rnd(2, 13), .w = rnd(2, 13), .k = rnd(1, 4)};
        if (t == 0) d.n = 4, d.c = 32, d.h = d.w = 32, d.k = 3; /* large enough for the threaded paths */
        d.stride = t == 0 ? 1 : rnd(1, 3);
        d.pad = rnd(0, d.k / 2);
        if (t >= 36 && t < 40) d.k = 2, d.stride = 2, d.pad = 0; /* the 2x2 / stride 2 path, odd sizes too */
        if (t == 36) d.n = 2, d.c = 16, d.h = d.w = 28;
        if (t >= 40) d.h = box[(t - 40) / 2][0], d.w = box[(t - 40) / 2][1], d.k = 3, d.stride = 1, d.pad = 1;
        d.count_include_pad = t >= 40 ? t % 2 : rnd(0, 1);
        if (pool_dims_init(&d, NULL) != NASC_OK) continue;
        size_t nx = (size_t)d.n * d.c * d.h * d.w, ny = (size_t)d.n * d.c * d.oh * d.ow;
        int8_t *x = xmalloc(nx), *y1 = xmalloc(ny), *y2 = xmalloc(ny);
        rand_i8(x, nx);
        float xs = rand_scale();
        int32_t xzp = rnd(-100, 100);
        float *xf = deq(x, nx, xs, xzp), *yf = xmalloc(ny * sizeof *yf);
        int32_t *am = xmalloc(ny * sizeof *am);
        /* max pool: exact */
        qmaxpool_ref(y1, x, &d);
        qmaxpool(y2, x, &d);
        CHECK(!memcmp(y1, y2, ny), "qmaxpool: fast differs from reference");
        maxpool_forward_ref(yf, am, xf, &d);
        CHECK(step_error(y1, yf, ny, xs, xzp, -128, 127) < 1e-3, "qmaxpool: not the float maximum");
        /* average pool */
        avgpool_forward_ref(yf, xf, &d);
        float ys;
        int32_t yzp;
        fit_out(yf, ny, &ys, &yzp);
        int kk = d.k * d.k;
        int32_t mult[16];
        int8_t shift[16];
        for (int v = 1; v <= kk; v++) quant_multiplier((double)xs / ((double)ys * v), &mult[v - 1], &shift[v - 1]);
        qavgpool_ref(y1, x, &d, xzp, yzp, mult, shift);
        qavgpool(y2, x, &d, xzp, yzp, mult, shift);
        CHECK(!memcmp(y1, y2, ny), "qavgpool: fast differs from reference (k %d s %d p %d cip %d)", d.k, d.stride,
              d.pad, d.count_include_pad);
        double err = step_error(y1, yf, ny, ys, yzp, -128, 127);
        worst_avg = fmax(worst_avg, err);
        CHECK(err <= 0.51, "qavgpool: %.3f steps from float (k %d s %d p %d cip %d)", err, d.k, d.stride, d.pad,
              d.count_include_pad);
        /* global average pool */
        int hw = d.h * d.w;
        size_t ng = (size_t)d.n * d.c;
        gap_forward_ref(yf, xf, d.n, d.c, hw);
        fit_out(yf, ng, &ys, &yzp);
        int32_t m;
        int8_t s;
        quant_multiplier((double)xs / ((double)ys * hw), &m, &s);
        qgap_ref(y1, x, d.n, d.c, hw, xzp, yzp, m, s);
        qgap(y2, x, d.n, d.c, hw, xzp, yzp, m, s);
        CHECK(!memcmp(y1, y2, ng), "qgap: fast differs from reference");
        err = step_error(y1, yf, ng, ys, yzp, -128, 127);
        CHECK(err <= 0.51, "qgap: %.3f steps from float", err);
        free(x), free(y1), free(y2), free(xf), free(yf), free(am);
    }
    printf("  qavgpool: worst %.3f output steps from float\n", worst_avg);
}

static void test_qadd_concat_mul(void) {
    double worst[3] = {0, 0, 0};
    for (int t = 0; t < 30; t++) {
        int nin = rnd(1, 5), n = rnd(1, 3), hw = rnd(1, 50);
        int cs[8], ctot = 0;
        for (int j = 0; j < nin; j++) ctot += cs[j] = rnd(1, 5);
        int c = cs[0];
        size_t sz = (size_t)n * c * hw;
        if (t == 0) sz = 70000, n = 1, c = 700, hw = 100; /* once past the threading threshold */
        if (t == 0) cs[0] = c, ctot = 0;
        if (t == 0)
            for (int j = 0; j < nin; j++) ctot += (cs[j] = c);
        int8_t *xs[8];
        float *xf[8];
        float sc[8];
        int32_t zp[8], mult[8];
        int8_t shift[8];
        size_t cat_sz = (size_t)n * ctot * hw;
        for (int j = 0; j < nin; j++) {
            size_t m = NASC_MAX(sz, (size_t)n * cs[j] * hw);
            xs[j] = xmalloc(m);
            rand_i8(xs[j], m);
            sc[j] = rand_scale();
            zp[j] = rnd(-100, 100);
            xf[j] = deq(xs[j], m, sc[j], zp[j]);
        }
        size_t ymax = NASC_MAX(sz, cat_sz);
        int8_t *y1 = xmalloc(ymax), *y2 = xmalloc(ymax);
        float *yf = xmalloc(ymax * sizeof *yf);
        float ys;
        int32_t yzp;
        /* add (each input has sz values) */
        add_forward_ref(yf, (const float *const *)xf, nin, sz);
        fit_out(yf, sz, &ys, &yzp);
        int32_t m0;
        int8_t s0;
        int relu = rnd(0, 1);
        QAddArgs a = {.nin = nin, .x_zp = zp, .x_scale = sc, .y_scale = ys, .y_zp = yzp, .y_min = relu ? yzp : -128,
                      .y_max = 127};
        qadd_ref(y1, (const int8_t *const *)xs, sz, &a);
        qadd(y2, (const int8_t *const *)xs, sz, &a);
        CHECK(!memcmp(y1, y2, sz), "qadd: fast differs from reference (nin %d, %zu values)", nin, sz);
        double err = step_error(y1, yf, sz, ys, yzp, a.y_min, 127);
        worst[0] = fmax(worst[0], err);
        CHECK(err <= 0.501, "qadd: %.3f steps from float (nin %d)", err, nin); /* float arithmetic: a few ulps */
        /* concat (input j has n * cs[j] * hw values) */
        concat_forward_ref(yf, (const float *const *)xf, cs, nin, n, hw);
        fit_out(yf, cat_sz, &ys, &yzp);
        for (int j = 0; j < nin; j++) {
            /* input 1 sometimes shares the output's quantization: the copy path */
            if (j == 1 && rnd(0, 1)) sc[j] = ys, zp[j] = yzp;
            quant_multiplier((double)sc[j] / ys, &mult[j], &shift[j]);
        }
        for (int j = 0; j < nin; j++) dequantize_ref(xf[j], xs[j], (size_t)n * cs[j] * hw, sc[j], zp[j]);
        concat_forward_ref(yf, (const float *const *)xf, cs, nin, n, hw);
        qconcat_ref(y1, (const int8_t *const *)xs, cs, nin, n, hw, zp, mult, shift, yzp);
        qconcat(y2, (const int8_t *const *)xs, cs, nin, n, hw, zp, mult, shift, yzp);
        CHECK(!memcmp(y1, y2, cat_sz), "qconcat: fast differs from reference");
        err = step_error(y1, yf, cat_sz, ys, yzp, -128, 127);
        worst[1] = fmax(worst[1], err);
        CHECK(err <= 0.51, "qconcat: %.3f steps from float", err);
        /* channel scale: x (n, c, hw) * s (n, c) */
        int8_t *s = xmalloc((size_t)n * c);
        rand_i8(s, (size_t)n * c);
        float ss = rand_scale();
        int32_t szp = rnd(-128, 0);
        float *sf = deq(s, (size_t)n * c, ss, szp);
        dequantize_ref(xf[0], xs[0], sz, sc[0], zp[0]);
        chmul_forward_ref(yf, xf[0], sf, n, c, hw);
        fit_out(yf, sz, &ys, &yzp);
        quant_multiplier((double)sc[0] * ss / ys, &m0, &s0);
        qchmul_ref(y1, xs[0], s, n, c, hw, zp[0], szp, yzp, m0, s0);
        qchmul(y2, xs[0], s, n, c, hw, zp[0], szp, yzp, m0, s0);
        CHECK(!memcmp(y1, y2, sz), "qchmul: fast differs from reference");
        err = step_error(y1, yf, sz, ys, yzp, -128, 127);
        worst[2] = fmax(worst[2], err);
        CHECK(err <= 0.51, "qchmul: %.3f steps from float", err);
        for (int j = 0; j < nin; j++) free(xs[j]), free(xf[j]);
        free(y1), free(y2), free(yf), free(s), free(sf);
    }
    { /* (a + b) / 2 rounds half to even in both forms: 0.5 -> 0, 1.5 -> 2, -1.5 -> -2, -0.5 -> 0 */
        static const int8_t av[6] = {1, -1, 2, -2, 3, -3}, bv[6] = {0, 0, 1, -1, 0, 0};
        static const int8_t want[6] = {0, 0, 2, -2, 2, -2};
        const int8_t *in[3] = {av, bv, bv};
        int8_t got[6], got2[6];
        int32_t z[3] = {0, 0, 0};
        float scl[3] = {1, 1, 0};
        QAddArgs a = {.nin = 2, .x_zp = z, .x_scale = scl, .y_scale = 2, .y_min = -128, .y_max = 127};
        qadd_ref(got, in, 6, &a);
        qadd(got2, in, 6, &a);
        CHECK(!memcmp(got, want, 6) && !memcmp(got2, want, 6), "qadd: (a + b) / 2 rounds half to even (2 inputs)");
        a.nin = 3; /* Sum's form; the third input's scale is 0 */
        qadd_ref(got, in, 6, &a);
        qadd(got2, in, 6, &a);
        CHECK(!memcmp(got, want, 6) && !memcmp(got2, want, 6), "qadd: (a + b) / 2 rounds half to even (Sum)");
    }
    printf("  qadd %.3f, qconcat %.3f, qchmul %.3f: worst output steps from float\n", worst[0], worst[1], worst[2]);
}

/* Exact taps (every unit here is at most 2 * 40): the int8 resize is the real bilinear value,
 * rounded, so within half a step of float (plus float's own rounding); two long axes whose
 * exact unit would exceed 2^QRESIZE_FRAC fall back to that grid, with a bounded extra error. */
static void test_qresize(void) {
    double worst = 0;
    for (int t = 0; t < 32; t++) {
        int nc = rnd(1, 6), h = rnd(1, 20), w = rnd(1, 20), oh = rnd(1, 40), ow = rnd(1, 40);
        if (t == 30) nc = 1, h = 1, w = 3001, oh = 1, ow = 2999; /* unit 5998 -> 2^11 */
        if (t == 31) nc = 2, h = 28, w = 28, oh = 24, ow = 24;   /* unit 12 */
        size_t nx = (size_t)nc * h * w, ny = (size_t)nc * oh * ow;
        int8_t *x = xmalloc(nx), *y1 = xmalloc(ny), *y2 = xmalloc(ny);
        rand_i8(x, nx);
        float xs = rand_scale();
        int32_t xzp = rnd(-100, 100);
        float *xf = deq(x, nx, xs, xzp), *yf = xmalloc(ny * sizeof *yf);
        resize_forward_ref(yf, xf, nc, h, w, oh, ow);
        float ys;
        int32_t yzp;
        fit_out(yf, ny, &ys, &yzp);
        int uh = qresize_unit(h, oh), uw = qresize_unit(w, ow);
        int32_t m;
        int8_t s;
        quant_multiplier((double)xs / ((double)ys * uh * uw), &m, &s);
        qresize_ref(y1, x, nc, h, w, oh, ow, xzp, yzp, m, s);
        qresize(y2, x, nc, h, w, oh, ow, xzp, yzp, m, s);
        CHECK(!memcmp(y1, y2, ny), "qresize: fast differs from reference (%dx%d -> %dx%d)", h, w, oh, ow);
        if (t == 31) CHECK(uh == 12 && uw == 12, "qresize: 28 -> 24 has unit %d x %d, wanted 12 (exact)", uh, uw);
        double slack = 0.001;
        if (t == 30) {
            CHECK(uw == 1 << QRESIZE_FRAC, "qresize: 3001 -> 2999 has unit %d, wanted 2^%d", uw, QRESIZE_FRAC);
            slack = 255 * (double)xs / ys / (1 << QRESIZE_FRAC); /* one axis on the 2^-11 grid */
        }
        double err = step_error(y1, yf, ny, ys, yzp, -128, 127);
        if (t < 30) worst = fmax(worst, err);
        CHECK(err <= 0.5 + slack, "qresize: %.4f steps from float (%dx%d -> %dx%d), allowed %.4f", err, h, w, oh, ow,
              0.5 + slack);
        free(x), free(y1), free(y2), free(xf), free(yf);
    }
    printf("  qresize: worst %.4f output steps from float (exact taps)\n", worst);
}

/* ------------------------------------------------------------------ 4. formulas, calibration */
static void test_formulas(void) {
    const float ranges[][2] = {{-1, 1}, {0, 6}, {0.5f, 3}, {-7, -2}, {0, 0}, {-3.3f, 0.01f}, {-1e-9f, 1e-9f}};
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
        float s;
        int32_t zp;
        quant_act_params(ranges[k][0], ranges[k][1], &s, &zp);
        int8_t q;
        float zero = 0.0f, back;
        quantize_ref(&q, &zero, 1, s, zp);
        dequantize_ref(&back, &q, 1, s, zp);
        CHECK(back == 0.0f && zp >= -128 && zp <= 127 && s > 0, "range [%g, %g]: 0.0 -> %g (scale %g, zp %d)",
              ranges[k][0], ranges[k][1], back, s, zp);
        float lo = fminf(ranges[k][0], 0), hi = fmaxf(ranges[k][1], 0);
        if (hi - lo > 1e-3f)
            CHECK(fabsf(s * (-128 - zp) - lo) <= s && fabsf(s * (127 - zp) - hi) <= s,
                  "range [%g, %g] covered by [%g, %g]", lo, hi, s * (-128 - zp), s * (127 - zp));
    }
    float s;
    int32_t zp;
    quant_act_params(0, 6, &s, &zp);
    CHECK(zp == -128 && fabsf(s - 6.0f / 255) < 1e-9f, "ReLU6 range: scale %g zp %d", s, zp);
    float w[6] = {0.5f, -1.27f, 0.1f, 0, 0, 0};
    float ws[2];
    int8_t q[6];
    quant_weight_scales(ws, w, 2, 3);
    quant_weights(q, w, ws, 2, 3);
    CHECK(fabsf(ws[0] - 0.01f) < 1e-7f && ws[1] == 1.0f, "weight scales %g %g", ws[0], ws[1]);
    CHECK(q[0] == 50 && q[1] == -127 && q[2] == 10 && q[3] == 0, "weights %d %d %d %d", q[0], q[1], q[2], q[3]);
    int32_t m;
    int8_t sh;
    quant_multiplier(0.75, &m, &sh);
    CHECK(q_mulshift(1000, m, sh) == 750, "multiplier 0.75: 1000 -> %d", q_mulshift(1000, m, sh));
    quant_multiplier(1e12, &m, &sh);
    CHECK(m > 0 && sh >= 1, "huge multiplier capped: %d %d", m, sh);
    Err e;
    QCalibMethod meth;
    CHECK(qcalib_parse("mse", &meth, &e) == NASC_OK && meth == QCAL_MSE, "parse mse");
    CHECK(qcalib_parse("kl", &meth, &e) == NASC_ERR && strstr(e.msg, "minmax"), "unknown method refused: %s", e.msg);
}

/* Squared error of quantizing x (n) with the range [lo, hi]. */
static double quant_sse(const float *x, int n, float lo, float hi) {
    float s, y;
    int32_t zp;
    int8_t q;
    quant_act_params(lo, hi, &s, &zp);
    double e = 0;
    for (int i = 0; i < n; i++) {
        quantize_ref(&q, &x[i], 1, s, zp);
        dequantize_ref(&y, &q, 1, s, zp);
        e += ((double)y - x[i]) * ((double)y - x[i]);
    }
    return e;
}

/* A Gaussian with two far outliers through a one-layer net: percentile clips them where
 * min/max keeps them; MSE picks the range with the least quantization error of the three
 * (with 8 bits that keeps isolated outliers: clipping one costs more than the rounding error
 * a narrower step saves). */
static void test_calibration_methods(void) {
    Spec sp;
    Net net;
    Err e;
    CHECK(spec_parse(&sp, "linear", 16, 1, &e) == NASC_OK, "spec");
    CHECK(net_build(&net, &sp, 1, 1, 50, 10, &e) == NASC_OK, "build: %s", e.msg);
    spec_free(&sp);
    int n = 400;
    float *x = xmalloc((size_t)n * 50 * sizeof *x);
    for (int i = 0; i < n * 50; i++) x[i] = (float)rng_normal(&rng);
    x[7] = 40.0f;
    x[99] = -25.0f;
    float lo[3], hi[3];
    double sse[3];
    for (int m = 0; m < QCAL_COUNT; m++) {
        QCalibConfig cfg = {.method = (QCalibMethod)m, .percentile = 99.9};
        QRanges r;
        CHECK(quant_calibrate(&net, x, n, &cfg, &r, &e) == NASC_OK, "calibrate %s: %s", qcalib_name(m), e.msg);
        lo[m] = r.lo[0], hi[m] = r.hi[0];
        sse[m] = quant_sse(x, n * 50, lo[m], hi[m]);
        printf("  calibration %-10s input range [%.3f, %.3f], squared quantization error %.2f\n", qcalib_name(m), lo[m],
               hi[m], sse[m]);
        qranges_free(&r);
    }
    CHECK(lo[0] == -25.0f && hi[0] == 40.0f, "minmax range [%g, %g]", lo[0], hi[0]);
    CHECK(hi[1] > 2.5f && hi[1] < 4.5f && lo[1] < -2.5f && lo[1] > -4.5f, "percentile 99.9 range [%g, %g]", lo[1],
          hi[1]);
    CHECK(lo[2] >= lo[0] && hi[2] <= hi[0], "mse range [%g, %g] outside min/max", lo[2], hi[2]);
    CHECK(sse[2] <= sse[0] * 1.001 && sse[2] <= sse[1], "mse's error %.3f is not the least (minmax %.3f, percentile %.3f)",
          sse[2], sse[0], sse[1]);
    x[3] = NAN;
    QRanges r;
    CHECK(quant_calibrate(&net, x, n, NULL, &r, &e) == NASC_ERR && strstr(e.msg, "NaN"), "NaN input refused: %s",
          e.msg);
    qranges_free(&r);
    free(x);
    net_free(&net);
}

/* ------------------------------------------------------------------ 2. networks */
typedef struct {
    const char *name, *spec;
    int c, h, w, channels;
    double bound; /* max |int8 logit - fp32 logit| / fp32 logit range allowed */
} NetCase;

/* Covers concat, SE mul, hswish, sigmoid, hsigmoid, resize (down), maxpool with padding, a BN
 * after a concat (ReLU6 fused into it), avgpool count_include_pad off and on, grouped and
 * dilated convs, dropout, a BN on a linear's output (folded), a hidden linear with ReLU. */
static const char custom_a[] =
    "resize(s=20);"
    "conv(c=12,k=3,bias=1);bn;hswish;"
    "m=maxpool(k=3,s=2,p=1);"
    "ya=conv(m,c=8,k=1);yb=conv(m,c=8,k=3,d=2,p=2);concat(ya,yb);bn;r=relu6;"
    "pa=avgpool(r,k=3,s=1,p=1,cip=0);"
    "gp=gap(pa);conv(gp,c=4,k=1,bias=1);relu;conv(c=16,k=1,bias=1);sc=hsigmoid;"
    "se=mul(pa,sc);"
    "conv(se,c=16,k=3,g=4,s=2);bn;sigmoid;dropout;"
    "avgpool(k=2,p=1,cip=1);"
    "linear(c=24);bn;relu;linear";

/* A BN on the input (ReLU6 fused into it), a ReLU reading an id (a table), a 3-input add, a
 * zero constant in a concat, max pool, resize (up), sigmoid followed by ReLU6 (two tables),
 * and a bias-free linear with its BN folded as the last node. */
static const char custom_b[] =
    "bn;x0=relu6;"
    "x1=conv(c=8,k=3,s=2,bias=1);"
    "i1=id(x1);r1=relu(i1);"
    "x2=conv(r1,c=8,k=1);"
    "x3=hswish(x1);"
    "s3=add(x1,x2,x3);"
    "z=zero(s3);"
    "cat=concat(s3,z,x1);"
    "mp=maxpool(cat,k=2);"
    "resize(mp,s=7);"
    "conv(c=8,k=3,p=0,bias=1);sigmoid;relu6;"
    "gap;linear(c=10,bias=0);bn";

static const NetCase nets[] = {
    {"small", "small", 1, 28, 28, 16, 0.10},
    {"resnet8", "resnet8", 1, 28, 28, 16, 0.10},
    {"mbv2", "mbv2", 1, 16, 16, 16, 0.15},
    {"nb201 pool+none", "nb201:|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
     1, 16, 16, 8, 0.10},
    {"nb201 convs", "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|", 1,
     16, 16, 8, 0.10},
    {"custom a", custom_a, 1, 28, 28, 16, 0.10},
    {"custom b", custom_b, 3, 16, 16, 16, 0.15},
};

static int build_case(Net *net, const NetCase *t) {
    Err e;
    Spec sp;
    const char *text = zoo_lookup(t->spec) ? zoo_lookup(t->spec) : t->spec;
    if (spec_parse(&sp, text, t->channels, 1, &e) != NASC_OK) {
        CHECK(0, "%s: spec: %s", t->name, e.msg);
        return 0;
    }
    int rc = net_build(net, &sp, t->c, t->h, t->w, 10, &e);
    spec_free(&sp);
    CHECK(rc == NASC_OK, "%s: build: %s", t->name, e.msg);
    return rc == NASC_OK;
}

static float *random_images(const Net *net, int n, uint64_t seed) {
    size_t in = (size_t)net->in_c * net->in_h * net->in_w;
    float *x = xmalloc((size_t)n * in * sizeof *x);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < (size_t)n * in; i++) x[i] = (float)rng_normal(&r);
    return x;
}


static void check_roundtrip(QNet *q, const Net *net, const int8_t *xq, int n, const char *name);

static void test_net(const NetCase *t, QCalibMethod method, int file_checks) {
    Net net;
    if (!build_case(&net, t)) return;
    net_randomize(&net, 1234, 1);
    int ncal = 32, ntest = 8;
    float *xc = random_images(&net, ncal, 5), *xt = random_images(&net, ntest, 6);
    size_t in = (size_t)net.in_c * net.in_h * net.in_w;
    Err e;
    QNet q;
    QCalibConfig cfg = {.method = method};
    if (quant_ptq(&q, &net, xc, ncal, &cfg, &e) != NASC_OK) {
        CHECK(0, "%s: ptq: %s", t->name, e.msg);
        net_free(&net);
        free(xc), free(xt);
        return;
    }
    int k = net.classes;
    float *lf = xmalloc((size_t)ntest * k * sizeof *lf), *lq = xmalloc((size_t)ntest * k * sizeof *lq);
    memcpy(lf, net_forward(&net, xt, ntest, 0), (size_t)ntest * k * sizeof *lf);
    /* int8 level: fast == reference */
    int8_t *xq = xmalloc((size_t)ntest * in), *y1 = xmalloc((size_t)ntest * k), *y2 = xmalloc((size_t)ntest * k);
    quantize_ref(xq, xt, (size_t)ntest * in, q.scale[0], q.zp[0]);
    qnet_forward_int8(&q, xq, ntest, y1, 1);
    qnet_forward_int8(&q, xq, ntest, y2, 0);
    CHECK(!memcmp(y1, y2, (size_t)ntest * k), "%s: fast executor differs from the reference executor", t->name);
    /* batch 1 gives the same as the batch */
    int8_t y1b[64];
    qnet_forward_int8(&q, xq + in, 1, y1b, 0);
    CHECK(!memcmp(y1b, y2 + k, (size_t)k), "%s: batch 1 differs from batch %d", t->name, ntest);
    /* float entry point == dequantized int8 */
    qnet_forward(&q, xt, ntest, lq);
    float *ld = deq(y2, (size_t)ntest * k, qnet_out_scale(&q), qnet_out_zp(&q));
    CHECK(!memcmp(ld, lq, (size_t)ntest * k * sizeof *lq), "%s: qnet_forward differs from the int8 path", t->name);
    /* against fp32 */
    float lo = lf[0], hi = lf[0];
    double err = 0;
    int agree = 0;
    for (int i = 0; i < ntest * k; i++) lo = fminf(lo, lf[i]), hi = fmaxf(hi, lf[i]);
    for (int i = 0; i < ntest * k; i++) err = fmax(err, fabs(lq[i] - lf[i]));
    for (int s = 0; s < ntest; s++) {
        int a = 0, b = 0;
        for (int j = 1; j < k; j++) {
            if (lf[s * k + j] > lf[s * k + a]) a = j;
            if (lq[s * k + j] > lq[s * k + b]) b = j;
        }
        agree += a == b;
    }
    double rel = err / fmax(hi - lo, 1e-6);
    printf("  %-16s %-10s max |int8 - fp32| = %.4f over a logit range of %.3f: %.4f (bound %.2f); top-1 agrees %d/%d;"
           " %d nodes -> %d int8 tensors\n",
           t->name, qcalib_name(method), err, hi - lo, rel, t->bound, agree, ntest, net.spec.n, q.qtensors);
    CHECK(rel <= t->bound, "%s (%s): int8 logits %.4f of the range from fp32, bound %.2f", t->name,
          qcalib_name(method), rel, t->bound);
    /* the file's payload is what the cost model estimates */
    Int8Flash f;
    cost_flash_int8(&net, &f);
    CHECK(f.total == q.payload_bytes + q.table_bytes && f.qtensors == q.qtensors,
          "%s: cost_flash_int8 %zu bytes (%d tensors), the int8 net holds %zu + %zu (%d tensors)", t->name, f.total,
          f.qtensors, q.payload_bytes, q.table_bytes, q.qtensors);
    if (file_checks) check_roundtrip(&q, &net, xq, ntest, t->name);
    qnet_free(&q);
    net_free(&net);
    free(xc), free(xt), free(lf), free(lq), free(xq), free(y1), free(y2), free(ld);
}

/* ------------------------------------------------------------------ 3. files */
static char tmpdir[64];

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    NASC_ASSERT(f);
    fwrite(p, 1, n, f);
    fclose(f);
}

static void fix_crc(uint8_t *d, size_t len) {
    uint32_t c = crc32_update(0, d, len - 4);
    memcpy(d + len - 4, &c, 4);
}

/* Load must fail with a message containing `want` (NULL: any message) and never crash. */
static void expect_refused(const char *path, const char *want, const char *what) {
    QNet q;
    Err e = {{0}};
    int rc = qmodel_load(path, &q, NULL, &e);
    CHECK(rc == NASC_ERR, "%s: loaded", what);
    if (rc == NASC_OK) {
        qnet_free(&q);
        return;
    }
    CHECK(e.msg[0] && (!want || strstr(e.msg, want)), "%s: message '%s', want '%s'", what, e.msg, want ? want : "any");
}

static void check_roundtrip(QNet *q, const Net *net, const int8_t *xq, int n, const char *name) {
    char path[128];
    path_in_tmp(path, sizeof path, "m.q8");
    Err e;
    Norm norm = {1, {0.25f}, {0.5f}};
    CHECK(qmodel_save(path, q, &norm, &e) == NASC_OK, "%s: save: %s", name, e.msg);
    CHECK(qmodel_probe(path) == QMODEL_INT8, "%s: probe says not int8", name);
    QNet b;
    Norm nb;
    if (qmodel_load(path, &b, &nb, &e) != NASC_OK) {
        CHECK(0, "%s: load: %s", name, e.msg);
        return;
    }
    int k = q->classes;
    int8_t *y1 = xmalloc((size_t)n * k), *y2 = xmalloc((size_t)n * k);
    qnet_forward_int8(q, xq, n, y1, 0);
    qnet_forward_int8(&b, xq, n, y2, 0);
    CHECK(!memcmp(y1, y2, (size_t)n * k), "%s: loaded model gives different outputs", name);
    qnet_forward_int8(&b, xq, n, y2, 1);
    CHECK(!memcmp(y1, y2, (size_t)n * k), "%s: loaded model's reference path differs", name);
    CHECK(nb.nchan == 1 && nb.mean[0] == 0.25f && nb.std[0] == 0.5f, "%s: normalization not kept", name);
    CHECK(b.payload_bytes == q->payload_bytes && b.qtensors == q->qtensors && b.params == q->params &&
              b.macs == q->macs,
          "%s: loaded sizes differ", name);
    char *s1 = spec_print(&q->spec), *s2 = spec_print(&b.spec);
    CHECK(!strcmp(s1, s2), "%s: spec changed in the file", name);
    free(s1), free(s2), free(y1), free(y2);
    qnet_free(&b);
    (void)net;
}

/* Damaged files of the small net: every refusal has a message, nothing crashes. */
static void test_files(void) {
    Net net;
    if (!build_case(&net, &nets[0])) return;
    net_randomize(&net, 7, 1);
    float *xc = random_images(&net, 16, 8);
    QNet q;
    Err e;
    CHECK(quant_ptq(&q, &net, xc, 16, NULL, &e) == NASC_OK, "ptq: %s", e.msg);
    char path[128], bad[128], fp[128];
    path_in_tmp(path, sizeof path, "small.q8");
    path_in_tmp(bad, sizeof bad, "bad.q8");
    path_in_tmp(fp, sizeof fp, "small.nasc");
    CHECK(qmodel_save(path, &q, NULL, &e) == NASC_OK, "save: %s", e.msg);
    size_t len;
    uint8_t *d = file_read_all(path, &len, &e);
    NASC_ASSERT(d);
    /* fp32 model to the int8 loader, and the probe */
    CHECK(model_save(fp, &net, NULL, &e) == NASC_OK, "fp32 save: %s", e.msg);
    CHECK(qmodel_probe(fp) == QMODEL_FP32, "probe: fp32 model");
    expect_refused(fp, "is an fp32 model; this needs an int8 model (run nasc compress --quantize int8)", "fp32 model");
    Net back;
    CHECK(model_load(path, &back, NULL, &e) == NASC_ERR, "the fp32 loader took an int8 file");
    path_in_tmp(bad, sizeof bad, "missing.q8");
    CHECK(qmodel_probe(bad) == QMODEL_NONE, "probe: missing file");
    expect_refused(bad, "cannot open", "missing file");
    path_in_tmp(bad, sizeof bad, "bad.q8");
    /* truncations */
    size_t cuts[] = {0, 5, 8, 12, 20, 60, len / 3, len / 2, len - 5, len - 4, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_bytes(bad, d, cuts[k]);
        expect_refused(bad, NULL, "truncated file");
    }
    write_bytes(bad, d, len - 100);
    expect_refused(bad, "corrupted or truncated", "truncated file");
    /* a flipped byte: the checksum */
    uint8_t *c = xmalloc(len);
    memcpy(c, d, len);
    c[len / 2] ^= 0x40;
    write_bytes(bad, c, len);
    expect_refused(bad, "checksum", "flipped byte");
    /* crafted damage with a valid checksum: header, version, node kinds, table, payload */
    memcpy(c, d, len);
    c[0] = 'X';
    write_bytes(bad, c, len);
    CHECK(qmodel_probe(bad) == QMODEL_NONE, "probe: foreign file");
    expect_refused(bad, "bad magic", "foreign file");
    memcpy(c, d, len);
    c[8] = 9;
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "version", "future version");
    /* offsets: after the header (8 + 4 + 16 + 4 + 32), spec and arch, the node count and kinds */
    size_t off = 8 + 4 + 16 + 4 + 32;
    uint32_t slen, alen;
    memcpy(&slen, d + off, 4);
    off += 4 + slen;
    memcpy(&alen, d + off, 4);
    off += 4 + alen;
    size_t kinds = off + 4;
    int n = q.spec.n;
    size_t table = kinds + (size_t)n + 4;
    memcpy(c, d, len);
    c[kinds] = (uint8_t)QX_LUT; /* node 0 is a conv */
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "lowered as", "wrong node kind");
    memcpy(c, d, len);
    c[kinds] = 200;
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "lowered as", "unknown node kind");
    memcpy(c, d, len);
    int32_t zp = 300;
    memcpy(c + table + 4, &zp, 4);
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "zero point", "zero point out of range");
    memcpy(c, d, len);
    float sc = -1;
    memcpy(c + table, &sc, 4);
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "scale", "negative scale");
    size_t payload = table + 8 * (size_t)q.qtensors; /* node 0's counts, then its weights */
    memcpy(c, d, len);
    c[payload + 24] = 0x80; /* weight -128 */
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "weight outside", "weight -128");
    memcpy(c, d, len);
    uint32_t big = 1u << 30;
    memcpy(c + payload, &big, 4);
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "needs", "weight count");
    uint32_t nt = (uint32_t)q.qtensors + 1;
    memcpy(c, d, len);
    memcpy(c + table - 4, &nt, 4);
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "quantized tensors", "tensor count");
    /* the spec text changed so that the payload no longer fits it */
    memcpy(c, d, len);
    char *cpos = memmem(c + 8 + 4 + 16 + 4 + 32 + 4, slen, "c=32", 4);
    NASC_ASSERT(cpos);
    cpos[3] = '3';
    fix_crc(c, len);
    write_bytes(bad, c, len);
    expect_refused(bad, "needs", "spec edited");
    /* random damage after the spec, checksum fixed: refused with a message or loaded and
     * runnable (what a damaged header does is covered above) */
    int loaded = 0;
    float *lg = xmalloc(10 * sizeof *lg);
    for (int t = 0; t < 300; t++) {
        memcpy(c, d, len);
        int flips = rnd(1, 3);
        for (int f = 0; f < flips; f++) c[rnd((int)kinds, (int)len - 5)] = (uint8_t)rnd(0, 255);
        fix_crc(c, len);
        write_bytes(bad, c, len);
        QNet b;
        Err be = {{0}};
        if (qmodel_load(bad, &b, NULL, &be) == NASC_OK) {
            loaded++;
            qnet_forward(&b, xc, 1, lg);
            qnet_free(&b);
        } else {
            CHECK(be.msg[0] != 0, "random damage %d: refused without a message", t);
        }
    }
    printf("  300 randomly damaged files (checksum fixed): %d loaded and ran, %d refused with a message\n", loaded,
           300 - loaded);
    free(lg);
    /* appended bytes */
    uint8_t *longer = xmalloc(len + 4);
    memcpy(longer, d, len - 4);
    memset(longer + len - 4, 0, 4);
    fix_crc(longer, len + 4);
    write_bytes(bad, longer, len + 4);
    expect_refused(bad, "unexpected bytes", "trailing bytes");
    free(longer);
    free(c);
    free(d);
    free(xc);
    qnet_free(&q);
    net_free(&net);
    unlink(path), unlink(bad), unlink(fp);
}

static int quantize_file(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: test_quant --quantize FP32_MODEL OUT [minmax|percentile|mse [N [DATA]]]\n");
        return 2;
    }
    Err e;
    Net net;
    Norm norm;
    QCalibConfig cfg = {.method = QCAL_MINMAX};
    if (argc > 4 && qcalib_parse(argv[4], &cfg.method, &e) != NASC_OK) {
        fprintf(stderr, "test_quant: %s\n", e.msg);
        return 2;
    }
    int n = argc > 5 ? atoi(argv[5]) : 512;
    const char *data = argc > 6 ? argv[6] : "fashion-mnist";
    if (model_load(argv[2], &net, &norm, &e) != NASC_OK) {
        fprintf(stderr, "test_quant: %s\n", e.msg);
        return 2;
    }
    Dataset tr;
    if (dataset_load(&tr, data, SPLIT_TRAIN, &e) != NASC_OK) {
        fprintf(stderr, "test_quant: %s\n", e.msg);
        net_free(&net);
        return 2;
    }
    if (norm.nchan != tr.c) {
        norm.nchan = tr.c;
        dataset_norm_stats(&tr, norm.mean, norm.std);
    }
    float *x = quant_calib_images(&tr, &n, norm.mean, norm.std, 1);
    QNet q;
    int rc = quant_ptq(&q, &net, x, n, &cfg, &e);
    if (rc == NASC_OK) {
        rc = qmodel_save(argv[3], &q, &norm, &e);
        qnet_free(&q);
    }
    if (rc != NASC_OK) fprintf(stderr, "test_quant: %s\n", e.msg);
    else printf("wrote %s (%s calibration on %d images)\n", argv[3], qcalib_name(cfg.method), n);
    free(x);
    dataset_free(&tr);
    net_free(&net);
    return rc == NASC_OK ? 0 : 2;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--quantize")) return quantize_file(argc, argv);
    rng_seed(&rng, 42);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nasc_test_quant_XXXXXX");
    NASC_ASSERT(mkdtemp(tmpdir));
    double t0 = now_seconds();
    printf("kernels\n");
    test_quantize();
    test_qconv();
    test_qlut();
    test_qpool();
    test_qadd_concat_mul();
    test_qresize();
    printf("  (%.2f s)\nformulas and calibration\n", now_seconds() - t0);
    t0 = now_seconds();
    test_formulas();
    test_calibration_methods();
    printf("  (%.2f s)\nnetworks\n", now_seconds() - t0);
    t0 = now_seconds();
    for (size_t k = 0; k < sizeof nets / sizeof nets[0]; k++) test_net(&nets[k], QCAL_MINMAX, 1);
    test_net(&nets[1], QCAL_PERCENTILE, 0);
    test_net(&nets[5], QCAL_MSE, 0);
    printf("  (%.2f s)\nfiles\n", now_seconds() - t0);
    t0 = now_seconds();
    test_files();
    printf("  (%.2f s)\n", now_seconds() - t0);
    char p[128];
    path_in_tmp(p, sizeof p, "m.q8");
    unlink(p);
    rmdir(tmpdir);
    return check_summary("test_quant");
}
