/* test_qops.c: the int8 kernels (qops.h).
 *
 *   - q_multiplier / q_mulshift: hand-computed cases, the multiplier's range and accuracy,
 *     round-half-up checked exactly (128-bit) on random and extreme accumulators;
 *   - qconv2d on every path this CPU has (NASC_QCONV=generic|avx512|vnni|amx, set in turn)
 *     against qconv2d_ref, bit for bit, on random shapes (kernel 1/3/5/7, stride 1/2, padding,
 *     dilation, groups, depthwise, odd channel counts, batch 1 and more), zero points at the
 *     extremes, fused clamps, extreme weights and inputs, no bias; the network shapes that
 *     the fast kernels special-case (pointwise batching, linear, depthwise, AMX-sized); one
 *     and two threads; and a bias so large that the int32 accumulator would overflow.
 */
#include "../src/ops/qops.h"
#include "check.h"

static Rng rng;

static int irand(int lo, int hi) { return lo + (int)rng_below(&rng, (uint32_t)(hi - lo + 1)); }

/* ------------------------------------------------------------------ requantization */
static void test_multiplier(void) {
    int32_t m;
    int s;
    q_multiplier(0.5, &m, &s);
    CHECK(m == (1 << 30) && s == 31, "q_multiplier(0.5) = (%d, %d), want (2^30, 31)", m, s);
    q_multiplier(1.0, &m, &s);
    CHECK(m == (1 << 30) && s == 30, "q_multiplier(1) = (%d, %d), want (2^30, 30)", m, s);
    q_multiplier(0.75, &m, &s);
    CHECK(m == 1610612736 && s == 31, "q_multiplier(0.75) = (%d, %d), want (1610612736, 31)", m, s);
    q_multiplier(0.1, &m, &s); /* 0.1 = 0.8 * 2^-3: round(0.8 * 2^31) = 1717986918, shift 34 */
    CHECK(m == 1717986918 && s == 34, "q_multiplier(0.1) = (%d, %d), want (1717986918, 34)", m, s);
    q_multiplier(0.0, &m, &s);
    CHECK(m == 0 && s == 1, "q_multiplier(0) = (%d, %d), want (0, 1)", m, s);
    q_multiplier(1e-30, &m, &s);
    CHECK(m == 0 && s == 1, "q_multiplier(1e-30) = (%d, %d), want (0, 1)", m, s);
    q_multiplier(1.0 - 1e-12, &m, &s); /* mantissa rounds up to 1: renormalized */
    CHECK(m == (1 << 30) && s == 30, "q_multiplier(1 - 1e-12) = (%d, %d), want (2^30, 30)", m, s);
    /* range and accuracy over many decades */
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        double r = pow(2.0, -31 + 58 * rng_uniform(&rng));
        q_multiplier(r, &m, &s);
        double back = ldexp((double)m, -s);
        if (m < (1 << 30) || s < 1 || s > 62 || fabs(back - r) > r * ldexp(1.0, -30)) bad++;
    }
    CHECK(bad == 0, "q_multiplier: %d of 2000 multipliers out of range or inaccurate", bad);

    /* Convolution requantization (ONNX Runtime's float arithmetic): a float's pair gives the
     * float back exactly, over many decades; q_requant_f rounds half to even and clamps. */
    bad = 0;
    for (int i = 0; i < 2000; i++) {
        float r = (float)pow(2.0, -30 + 50 * rng_uniform(&rng));
        q_multiplier((double)r, &m, &s);
        if (q_conv_scale(m, s) != r || (m & 127)) bad++;
    }
    CHECK(bad == 0, "q_conv_scale(q_multiplier(r)) != r for %d of 2000 floats", bad);
    CHECK(q_conv_scale(0, 1) == 0.0f, "q_conv_scale of a zero multiplier");
    q_multiplier(0.1f, &m, &s);
    CHECK(q_conv_scale(m, s) == 0.1f, "q_conv_scale(pair of 0.1f) = %.9g", q_conv_scale(m, s));
    static const int32_t racc[] = {5, 7, -5, -7, 1, -1, 3, 1000, -1000, 300};
    static const int32_t rwant[] = {2, 4, -2, -4, 0, 0, 2, 127, -128, 127}; /* x 0.5, zp 0, [-128, 127] */
    for (int i = 0; i < 10; i++) {
        int32_t got = q_requant_f(racc[i], 0.5f, 0, -128, 127);
        CHECK(got == rwant[i], "q_requant_f(%d, 0.5) = %d, want %d", racc[i], got, rwant[i]);
    }
    CHECK(q_requant_f(-7, 0.5f, 10, 10, 127) == 10, "q_requant_f clamps below at y_min (ReLU)");
    CHECK(q_requant_f(5, 0.5f, -3, -128, 127) == -1, "q_requant_f adds the zero point after rounding");
    CHECK(q_requant_f(16777217, 1.0f, 0, -128, 127) == 127, "q_requant_f saturates");
    /* float(acc) rounds first, as a float conversion does: 2^24 + 1 becomes 2^24 */
    CHECK(q_requant_f(16777217, 0x1p-24f, 0, -128, 127) == 1, "q_requant_f converts acc to float first");
    CHECK(q_requant_f(16777217, 0x1p-25f, 0, -128, 127) == 0,
          "q_requant_f: float(2^24 + 1) = 2^24, x 2^-25 = 0.5 exactly, rounds to even 0 (exact: 0.50000003 -> 1)");

    /* q_mulshift rounds half up: hand cases with r = 0.5 (mult 2^30, shift 31) */
    static const int32_t acc[] = {3, -3, 5, -5, 1, -1, 0, 4, -4};
    static const int32_t want[] = {2, -1, 3, -2, 1, 0, 0, 2, -2};
    for (int i = 0; i < 9; i++) {
        int32_t got = q_mulshift(acc[i], 1 << 30, 31);
        CHECK(got == want[i], "q_mulshift(%d, 0.5) = %d, want %d", acc[i], got, want[i]);
    }
    CHECK(q_mulshift(100, 1 << 30, 30) == 100, "q_mulshift by 1");
    CHECK(q_mulshift(7, 0, 1) == 0, "q_mulshift by a zero multiplier");
    /* round(acc * mult / 2^shift) half up, checked exactly: (2q - 1) 2^s <= 2 acc mult < (2q + 1) 2^s */
    bad = 0;
    static const int32_t ext[] = {INT32_MAX, INT32_MIN + 1, 1, -1, 0, 123456789, -987654321};
    for (int i = 0; i < 20000; i++) {
        int32_t a = i < 7 * 4 ? ext[i % 7] : (int32_t)rng_next(&rng);
        int32_t mu = i < 7 * 4 ? (i / 7 == 0 ? INT32_MAX : i / 7 == 1 ? (1 << 30) : i / 7 == 2 ? 0 : 1234567890)
                               : (int32_t)((1u << 30) + rng_below(&rng, 1u << 30));
        int sh = i < 7 * 4 ? (i % 2 ? 62 : 31) : irand(32, 62); /* results fit int32 */
        int32_t q = q_mulshift(a, mu, sh);
        __int128 two = (__int128)2 * a * mu, unit = (__int128)1 << sh;
        __int128 lo = ((__int128)2 * q - 1) * unit, hi = ((__int128)2 * q + 1) * unit;
        if (!(lo <= two && two < hi)) bad++;
    }
    CHECK(bad == 0, "q_mulshift: %d of 20000 results not round-half-up", bad);
    CHECK(q_clamp(200, -128, 127) == 127 && q_clamp(-200, -128, 127) == -128 && q_clamp(5, 0, 6) == 5, "q_clamp");
}

/* ------------------------------------------------------------------ conv vs reference */
typedef struct {
    int n, cin, h, w, cout, k, s, pad, dil, groups;
    int x_zp, y_zp, y_min, y_max;
    int nobias, wext, xext; /* weights / inputs drawn from the extremes */
    int ties;               /* multipliers 2^30 * 2^-shift: exact halves are frequent (rounding) */
    double scale;           /* requantization multiplier (order of magnitude) */
} Case;

static int case_dims(const Case *c, ConvDims *d) {
    ConvDims t = {.n = c->n, .cin = c->cin, .h = c->h, .w = c->w, .cout = c->cout, .k = c->k, .stride = c->s,
                  .pad = c->pad, .dil = c->dil, .groups = c->groups};
    Err e;
    if (conv_dims_init(&t, &e) != NASC_OK) return 0;
    *d = t;
    return 1;
}

static int8_t rand_i8(int ext, int lo) {
    if (ext && rng_below(&rng, 2)) return (int8_t)(rng_below(&rng, 2) ? 127 : lo);
    return (int8_t)irand(lo, 127);
}

static int paths_tested[4];
static const char *const path_names[4] = {"generic", "avx512", "vnni", "amx"};

/* Runs case c on the current path; returns 1 when it matched the reference. */
static int run_case(const Case *c, const char *what) {
    ConvDims d;
    NASC_ASSERT(case_dims(c, &d));
    QConvArgs a = {.d = d, .x_zp = c->x_zp, .y_zp = c->y_zp, .y_min = c->y_min, .y_max = c->y_max};
    size_t nx = (size_t)d.n * d.cin * d.h * d.w, ny = (size_t)d.n * d.cout * d.oh * d.ow;
    size_t nw = (size_t)d.cout * (d.cin / d.groups) * d.k * d.k;
    int8_t *x = xmalloc(nx), *w = xmalloc(nw), *y = xmalloc(ny), *yr = xmalloc(ny);
    int32_t *bias = xmalloc((size_t)d.cout * sizeof *bias), *mult = xmalloc((size_t)d.cout * sizeof *mult);
    int8_t *shift = xmalloc((size_t)d.cout);
    for (size_t i = 0; i < nx; i++) x[i] = rand_i8(c->xext, -128);
    for (size_t i = 0; i < nw; i++) w[i] = rand_i8(c->wext, -127);
    for (int i = 0; i < d.cout; i++) {
        bias[i] = irand(-20000, 20000);
        int m, sh;
        q_multiplier(c->scale * (0.5 + rng_uniform(&rng)), &m, &sh);
        if (c->ties) m = 1 << 30;
        mult[i] = m;
        shift[i] = (int8_t)sh;
    }
    const int32_t *b = c->nobias ? NULL : bias;
    qconv2d_ref(yr, x, w, b, mult, shift, &a);
    QConvPacked *p = qconv_pack(w, b, mult, shift, &a);
    memset(y, 0x55, ny);
    qconv2d(y, x, p, d.n);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < ny; i++)
        if (y[i] != yr[i] && !bad++) first = i;
    CHECK(bad == 0,
          "%s [%s] n%d cin%d %dx%d cout%d k%d s%d p%d d%d g%d xzp%d yzp%d clamp[%d,%d]%s: %zu of %zu differ, "
          "first [%zu] got %d want %d",
          what, qconv_path(), d.n, d.cin, d.h, d.w, d.cout, d.k, d.stride, d.pad, d.dil, d.groups, a.x_zp, a.y_zp,
          a.y_min, a.y_max, b ? "" : " nobias", bad, ny, first, bad ? y[first] : 0, bad ? yr[first] : 0);
    /* a second call on the same packed layer gives the same bits (scratch reuse) */
    if (bad == 0) {
        memset(y, 0x33, ny);
        qconv2d(y, x, p, d.n);
        CHECK(memcmp(y, yr, ny) == 0, "%s [%s]: second call differs", what, qconv_path());
    }
    qconv_free(p);
    free(x), free(w), free(y), free(yr), free(bias), free(mult), free(shift);
    return bad == 0;
}

static Case random_case(void) {
    static const int chans[] = {1, 2, 3, 4, 5, 8, 16, 17, 24, 33};
    static const int zps[] = {-128, 127, 0, -1, 5, -77};
    for (;;) {
        Case c = {0};
        c.k = (int[]){1, 3, 5, 7}[rng_below(&rng, 4)];
        c.s = irand(1, 2);
        c.pad = irand(0, c.k / 2);
        c.dil = rng_below(&rng, 4) ? 1 : 2;
        c.n = rng_below(&rng, 3) ? 1 : irand(2, 3);
        c.h = irand(1, 17);
        c.w = rng_below(&rng, 2) ? c.h : irand(1, 17);
        int kind = irand(0, 5); /* 0-2 dense, 3 groups 2, 4-5 depthwise */
        if (kind >= 4) {
            c.cin = c.cout = c.groups = chans[rng_below(&rng, 10)];
        } else if (kind == 3) {
            c.groups = 2;
            c.cin = 2 * chans[rng_below(&rng, 7)];
            c.cout = 2 * chans[rng_below(&rng, 7)];
        } else {
            c.groups = 1;
            c.cin = chans[rng_below(&rng, 10)];
            c.cout = chans[rng_below(&rng, 10)];
        }
        c.x_zp = zps[rng_below(&rng, 6)];
        c.y_zp = zps[rng_below(&rng, 6)];
        switch (irand(0, 2)) {
        case 0: c.y_min = -128, c.y_max = 127; break;               /* no activation */
        case 1: c.y_min = c.y_zp, c.y_max = 127; break;             /* ReLU */
        default: c.y_min = c.y_zp, c.y_max = NASC_MIN(127, c.y_zp + 60); break; /* ReLU6-like */
        }
        c.nobias = rng_below(&rng, 4) == 0;
        c.ties = rng_below(&rng, 3) == 0;
        c.wext = rng_below(&rng, 4) == 0;
        c.xext = rng_below(&rng, 4) == 0;
        /* shifts from about 29 to 50; sometimes up to 60 (the epilogue's 64-bit branch) */
        c.scale = rng_below(&rng, 5) ? pow(10.0, 0.5 - 5.5 * rng_uniform(&rng)) : pow(10.0, -5 - 4 * rng_uniform(&rng));
        ConvDims d;
        if (!case_dims(&c, &d)) continue;
        if ((double)d.n * d.cout * d.oh * d.ow * (d.cin / d.groups) * d.k * d.k > 4e5) continue; /* keep quick */
        return c;
    }
}

/* Layers of the target networks (28x28 Fashion-MNIST inputs), and shapes the kernels special-case. */
#define NET_CASES 25
static void net_cases(const char *what) {
    static const int L[][8] = {
        /* n, cin, hw, cout, k, s, groups, pad */
        {1, 1, 28, 16, 3, 1, 1, 1},    {1, 16, 28, 16, 3, 1, 1, 1},  {1, 16, 28, 32, 3, 2, 1, 1},
        {1, 32, 14, 64, 3, 2, 1, 1},   {1, 64, 7, 64, 3, 1, 1, 1},   {1, 16, 28, 32, 1, 2, 1, 0},
        {1, 16, 28, 96, 1, 1, 1, 0},   {1, 96, 28, 96, 3, 2, 96, 1}, {1, 144, 14, 144, 3, 1, 144, 1},
        {3, 144, 7, 32, 1, 1, 1, 0},   {5, 32, 7, 192, 1, 1, 1, 0},  {2, 192, 7, 192, 3, 1, 192, 1},
        {7, 64, 1, 10, 1, 1, 1, 0},    {9, 33, 1, 5, 1, 1, 1, 0},    {2, 64, 14, 64, 3, 1, 1, 1},
        {1, 72, 14, 40, 3, 1, 1, 1},   {2, 48, 9, 80, 5, 1, 1, 2},   {1, 130, 6, 20, 3, 1, 2, 1},
        {1, 40, 13, 40, 5, 2, 40, 2},  {1, 24, 11, 24, 7, 1, 24, 3}, {1, 20, 12, 20, 3, 2, 20, 2},
        /* above the threading threshold: linear, depthwise per image and per channel range */
        {3, 512, 1, 700, 1, 1, 1, 0},  {2, 192, 28, 192, 3, 1, 192, 1}, {1, 256, 28, 256, 3, 1, 256, 1},
        {1, 24, 30, 40, 3, 1, 1, 1},
    };
    _Static_assert(sizeof L / sizeof L[0] == NET_CASES, "NET_CASES");
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        Case c = {.n = L[i][0], .cin = L[i][1], .h = L[i][2], .w = L[i][2], .cout = L[i][3], .k = L[i][4],
                  .s = L[i][5], .groups = L[i][6], .pad = L[i][7], .dil = 1, .x_zp = -3, .y_zp = -128,
                  .y_min = -128, .y_max = 127, .scale = 0.003};
        if (i % 3 == 1) c.y_zp = 4, c.y_min = 4, c.x_zp = -128;
        if (i == 20) c.dil = 2;
        if (i == 24) c.y_min = -100, c.y_max = 100;
        run_case(&c, what);
    }
}

/* A bias near INT32_MAX: the int32 accumulator wraps, in every path, as in ONNX Runtime (int32
 * sums); the fast paths must agree with the reference there too. (nasc's own lowering keeps
 * biases within 2^30, far from this.) 2^31 - 5 + 18288 wraps to -2^31 + 18282, times ~1e-9. */
static void overflow_case(void) {
    ConvDims d = {.n = 1, .cin = 8, .h = 5, .w = 5, .cout = 3, .k = 3, .stride = 1, .pad = 1, .dil = 1, .groups = 1};
    Err e;
    NASC_ASSERT(conv_dims_init(&d, &e) == NASC_OK);
    QConvArgs a = {.d = d, .x_zp = -128, .y_zp = 0, .y_min = -128, .y_max = 127};
    int8_t x[200], w[216], y[75], yr[75], shift[3];
    int32_t bias[3] = {INT32_MAX - 5, INT32_MIN + 5, 0}, mult[3];
    for (int i = 0; i < 200; i++) x[i] = 127;
    for (int i = 0; i < 216; i++) w[i] = (int8_t)(i < 144 ? (i < 72 ? 127 : -127) : 3);
    for (int i = 0; i < 3; i++) {
        int m, s;
        q_multiplier(1e-9, &m, &s);
        mult[i] = m, shift[i] = (int8_t)s;
    }
    qconv2d_ref(yr, x, w, bias, mult, shift, &a);
    QConvPacked *p = qconv_pack(w, bias, mult, shift, &a);
    qconv2d(y, x, p, 1);
    CHECK(memcmp(y, yr, sizeof y) == 0, "overflowing accumulator [%s]: differs from the reference", qconv_path());
    CHECK(yr[0] == -2 && yr[25] == 2, "overflowing accumulator: reference gives %d %d, want -2 2 (int32 wraps)",
          yr[0], yr[25]);
    qconv_free(p);
}

int main(void) {
    rng_seed(&rng, 20240605);
    test_multiplier();

    unsetenv("NASC_QCONV");
    const char *best = qconv_path();
    printf("default path: %s\n", best);
    for (int pi = 0; pi < 4; pi++) {
        setenv("NASC_QCONV", path_names[pi], 1);
        if (strcmp(qconv_path(), path_names[pi]) != 0) {
            printf("path %s: not available on this CPU, skipped\n", path_names[pi]);
            continue;
        }
        paths_tested[pi] = 1;
        int ok = 0, total = 0;
        for (int th = 1; th <= 2; th++) {
            threads_set(th);
            for (int i = 0; i < 150; i++) {
                Case c = random_case();
                ok += run_case(&c, "random");
                total++;
            }
            net_cases("net layer");
            overflow_case();
        }
        printf("path %s: %d/%d random shapes bit-exact (plus %d network layers, 1 and 2 threads)\n", path_names[pi],
               ok, total, NET_CASES);
    }
    /* the default path (amx picks vnni kernels for small layers) */
    unsetenv("NASC_QCONV");
    threads_set(2);
    net_cases("net layer (default)");
    CHECK(paths_tested[0], "the generic path must always be available");
    CHECK(strcmp(best, qconv_path()) == 0, "default path changed");
    return check_summary("test_qops");
}
