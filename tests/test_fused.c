/* test_fused.c: the fused and overwrite paths of the training step against the plain ones.
 *   - bn_act_* (BN + ReLU/ReLU6 in one kernel) against bn_* followed by act_*;
 *   - the overwrite flavours (bn_backward_ex, act_backward_ex, add_backward_ex,
 *     conv2d_backward_ex with accumulate = 0) against zeroing then accumulating, on a
 *     garbage-filled output (they must write every element);
 *   - whole networks (the zoo's small, resnet8, mbv2 and specs with a BN that has two
 *     consumers, an output nothing consumes, an identity, BN outputs made by an add):
 *     net_forward/net_backward with fusion and lazy gradient zeroing against NASC_FUSE=0,
 *     where every node runs alone (the zeroing bookkeeping is the same in both, so it is also
 *     checked against the sum of per-node results through net_node_forward for the forward).
 * Values are compared as floats (so -0 == 0) within a small relative tolerance. tests/run.sh
 * runs it again under NASC_GEMM=avx2 and generic (the portable kernels, depthwise's among
 * them, which an AVX-512 machine does not run otherwise).
 */
#include "../src/net/net.h"
#include "../src/ops/ops.h"
#include "check.h"

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

/* |got - want| <= rtol * max|want| for every entry; one CHECK per array. */
static void close_arrays(const float *got, const float *want, size_t n, double rtol, const char *what) {
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    size_t bad = 0, worst = 0;
    double wd = -1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= rtol * scale)) {
            bad++;
            if (!(d <= wd)) wd = d, worst = i;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu entries differ, worst [%zu] got %.9g want %.9g", what, bad, n, worst,
          bad ? got[worst] : 0.0, bad ? want[worst] : 0.0);
}

/* ------------------------------------------------------------------ kernels */
static void test_bn_act(int n, int c, int hw, ActKind act) {
    size_t len = (size_t)n * c * hw;
    char what[128];
    float *x = frand(len, -2, 9), *gamma = frand(c, 0.5f, 3.0f), *beta = frand(c, -1, 4);
    float *rm1 = frand(c, -1, 1), *rv1 = frand(c, 0.5f, 2), *rm2 = fdup(rm1, c), *rv2 = fdup(rv1, c);
    float *y1 = xmalloc(len * 4), *y2 = xmalloc(len * 4), *t = xmalloc(len * 4);
    float *st1 = xmalloc(2 * c * 4), *st2 = xmalloc(BN_ACT_SAVED * c * 4);
    /* forward, training: bitwise equal */
    bn_forward_train(t, st1, st1 + c, x, gamma, beta, rm1, rv1, n, c, hw, 0.1f, 1e-5f);
    act_forward(act, y1, t, len);
    bn_act_forward_train(act, y2, st2, x, gamma, beta, rm2, rv2, n, c, hw, 0.1f, 1e-5f);
    snprintf(what, sizeof what, "bn_act train (%d,%d,%d) act %d", n, c, hw, act);
    CHECK(memcmp(y1, y2, len * 4) == 0 && memcmp(st1, st2, 2 * c * 4) == 0, "%s: not bitwise equal", what);
    CHECK(memcmp(rm1, rm2, c * 4) == 0 && memcmp(rv1, rv2, c * 4) == 0, "%s: running stats differ", what);
    /* forward, eval */
    bn_forward_eval(t, x, gamma, beta, rm1, rv1, n, c, hw, 1e-5f);
    act_forward(act, y1, t, len);
    bn_act_forward_eval(act, y2, x, gamma, beta, rm1, rv1, n, c, hw, 1e-5f);
    CHECK(memcmp(y1, y2, len * 4) == 0, "bn_act eval (%d,%d,%d): not bitwise equal", n, c, hw);
    /* backward from the fused output y (recompute the training forward) */
    bn_act_forward_train(act, y2, st2, x, gamma, beta, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    bn_forward_train(t, st1, st1 + c, x, gamma, beta, NULL, NULL, n, c, hw, 0.1f, 1e-5f);
    float *dy = frand(len, -1, 1), *dx0 = frand(len, -1, 1), *dg0 = frand(2 * c, -1, 1);
    float *dt = xcalloc(len, 4), *dx1 = fdup(dx0, len), *dx2 = fdup(dx0, len);
    float *dg1 = fdup(dg0, 2 * c), *dg2 = fdup(dg0, 2 * c);
    act_backward(act, dt, dy, t, len);
    bn_backward(dx1, dg1, dg1 + c, dt, x, gamma, st1, st1 + c, n, c, hw);
    bn_act_backward(act, dx2, dg2, dg2 + c, dy, x, gamma, beta, st2, n, c, hw, 1);
    snprintf(what, sizeof what, "bn_act backward dx (%d,%d,%d) act %d", n, c, hw, act);
    close_arrays(dx2, dx1, len, 1e-6, what);
    close_arrays(dg2, dg1, 2 * c, 1e-6, "bn_act backward dgamma, dbeta");
    /* overwrite: dx = the gradient alone, whatever dx held */
    float *dx3 = frand(len, 100, 200), *dx4 = xcalloc(len, 4);
    memcpy(dg1, dg0, 2 * c * 4);
    bn_act_backward(act, dx3, dg1, dg1 + c, dy, x, gamma, beta, st2, n, c, hw, 0);
    bn_act_backward(act, dx4, dg1, dg1 + c, dy, x, gamma, beta, st2, n, c, hw, 1);
    close_arrays(dx3, dx4, len, 0, "bn_act backward, overwrite");
    /* plain BN overwrite */
    for (size_t i = 0; i < len; i++) dx3[i] = 1e3f, dx4[i] = 0;
    bn_backward_ex(dx3, NULL, NULL, dy, x, gamma, st1, st1 + c, n, c, hw, 0);
    bn_backward(dx4, NULL, NULL, dy, x, gamma, st1, st1 + c, n, c, hw);
    close_arrays(dx3, dx4, len, 0, "bn backward, overwrite");
    free(x), free(gamma), free(beta), free(rm1), free(rv1), free(rm2), free(rv2), free(y1), free(y2), free(t);
    free(st1), free(st2), free(dy), free(dx0), free(dg0), free(dt), free(dx1), free(dx2), free(dg1), free(dg2);
    free(dx3), free(dx4);
}

static void test_overwrite_elem(void) {
    static const size_t sizes[] = {1, 37, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = frand(n, -4, 8), *dy = frand(n, -1, 1), *a = frand(n, 50, 60), *b = xcalloc(n, 4);
        for (int k = 0; k < ACT_COUNT; k++) {
            act_backward_ex((ActKind)k, a, dy, x, n, 0);
            memset(b, 0, n * 4);
            act_backward((ActKind)k, b, dy, x, n);
            close_arrays(a, b, n, 0, "act backward, overwrite");
        }
        /* add: the same gradient twice, first overwritten then accumulated: 2 dy */
        float *dxs[3] = {a, a, NULL};
        int acc[3] = {0, 1, 1};
        add_backward_ex(dxs, dy, 3, n, acc);
        for (size_t i = 0; i < n; i++) b[i] = dy[i] + dy[i];
        close_arrays(a, b, n, 0, "add backward, overwrite then accumulate");
        free(x), free(dy), free(a), free(b);
    }
}

static void test_overwrite_conv(int n, int cin, int h, int cout, int k, int s, int p, int g) {
    ConvDims d = {.n = n, .cin = cin, .h = h, .w = h, .cout = cout, .k = k, .stride = s, .pad = p, .dil = 1,
                  .groups = g};
    Err e;
    CHECK(conv_dims_init(&d, &e) == NASC_OK, "conv dims: %s", e.msg);
    size_t xs = (size_t)n * cin * h * h, ys = (size_t)n * cout * d.oh * d.ow, ws = (size_t)cout * (cin / g) * k * k;
    float *x = frand(xs, -1, 1), *w = frand(ws, -1, 1), *dy = frand(ys, -1, 1);
    float *dx1 = frand(xs, 1e3f, 2e3f), *dx2 = xcalloc(xs, 4), *dw = xcalloc(ws, 4);
    conv2d_backward_ex(dx1, dw, NULL, dy, x, w, &d, 0);
    conv2d_backward(dx2, NULL, NULL, dy, x, w, &d);
    char what[128];
    snprintf(what, sizeof what, "conv backward overwrite n=%d %d->%d %dx%d k=%d s=%d p=%d g=%d", n, cin, cout, h, h, k,
             s, p, g);
    close_arrays(dx1, dx2, xs, 1e-6, what);
    free(x), free(w), free(dy), free(dx1), free(dx2), free(dw);
}

/* dx through an activation's mask (DxMask: Winograd's output transform applies it) against the
 * plain dx masked afterwards, (acc ? dx : 0) + (act'(a) ? dx_conv : 0); the activation's input a
 * spans [-3, 9], so ReLU6's upper bound is met (in the networks a BN's output rarely passes 6). */
static void test_dx_mask(int n, int cin, int h, int cout, ActKind act, int acc) {
    ConvDims d = {.n = n, .cin = cin, .h = h, .w = h, .cout = cout, .k = 3, .stride = 1, .pad = 1, .dil = 1,
                  .groups = 1};
    Err e;
    CHECK(conv_dims_init(&d, &e) == NASC_OK, "conv dims: %s", e.msg);
    const int maskable = conv2d_dx_maskable(&d);
    CHECK(maskable, "dx mask: %d->%d %dx%d n=%d is not maskable", cin, cout, h, h, n);
    if (!maskable) return;
    const size_t xs = (size_t)n * cin * h * h, ys = (size_t)n * cout * h * h, ws = (size_t)cout * cin * 9;
    float *x = frand(xs, -1, 1), *w = frand(ws, -1, 1), *dy = frand(ys, -1, 1), *a = frand(xs, -3, 9);
    float *base = frand(xs, -1, 1), *plain = xcalloc(xs, 4), *got = xmalloc(xs * 4), *want = xmalloc(xs * 4);
    memcpy(got, base, xs * 4);
    conv2d_backward_ex(plain, NULL, NULL, dy, x, w, &d, 0);
    for (size_t i = 0; i < xs; i++) {
        const int on = a[i] > 0.0f && (act != ACT_RELU6 || a[i] < 6.0f);
        want[i] = (acc ? base[i] : 0.0f) + (on ? plain[i] : 0.0f);
    }
    const GradSrc src = {.dy = dy, .c = cout, .hw = h * h};
    const ActSrc xsrc = {.x = x, .c = cin, .hw = h * h};
    const DxMask mask = {a, act};
    conv2d_backward_src(got, NULL, NULL, &src, &xsrc, w, &d, acc, NULL, &mask);
    char what[128];
    snprintf(what, sizeof what, "dx through a %s mask, n=%d %d->%d %dx%d acc=%d", act == ACT_RELU6 ? "relu6" : "relu",
             n, cin, cout, h, h, acc);
    close_arrays(got, want, xs, 1e-6, what);
    free(x), free(w), free(dy), free(a), free(base), free(plain), free(got), free(want);
}

/* A conv between two BNs, with what is made on demand against what is stored:
 *   - its input, the output of a BN + act0 before it (bn_act_forward_train with y == NULL, then
 *     act_rows inside the conv), forward and backward;
 *   - its output gradient, from the BN (+ act) after it (bn_grad_prepare, then grad_rows)
 *     against BN's backward writing that gradient and conv2d_backward_ex.
 * Outputs, dx, dW, db and dgamma/dbeta bitwise equal (act == ACT_COUNT: BN alone). */
static void test_made_on_demand(int n, int cin, int h, int cout, int k, int s, int p, int g, ActKind act0,
                                ActKind act) {
    ConvDims d = {.n = n, .cin = cin, .h = h, .w = h, .cout = cout, .k = k, .stride = s, .pad = p, .dil = 1,
                  .groups = g};
    Err e;
    CHECK(conv_dims_init(&d, &e) == NASC_OK, "conv dims: %s", e.msg);
    const int hw = d.oh * d.ow;
    size_t xs = (size_t)n * cin * h * h, ys = (size_t)n * cout * hw, ws = (size_t)cout * (cin / g) * k * k;
    float *z = frand(xs, -1, 2), *g0 = frand(cin, 0.5f, 2), *b0 = frand(cin, -1, 1), *x = xmalloc(xs * 4);
    float *st0 = xmalloc(BN_ACT_SAVED * cin * 4), *st0b = xmalloc(BN_ACT_SAVED * cin * 4);
    bn_act_forward_train(act0, x, st0, z, g0, b0, NULL, NULL, n, cin, h * h, 0.1f, 1e-5f);
    bn_act_forward_train(act0, NULL, st0b, z, g0, b0, NULL, NULL, n, cin, h * h, 0.1f, 1e-5f);
    CHECK(memcmp(st0, st0b, BN_ACT_SAVED * cin * 4) == 0, "bn_act_forward_train without y: saved values differ");
    ActSrc xsrc = {.x = z, .saved = st0, .beta = b0, .act = act0, .c = cin, .hw = h * h};
    float *w = frand(ws, -1, 1), *b = frand(cout, -1, 1), *y = xmalloc(ys * 4), *y2 = xmalloc(ys * 4);
    float *gamma = frand(cout, 0.5f, 2), *beta = frand(cout, -1, 1), *st = xmalloc(BN_ACT_SAVED * cout * 4);
    float *out = xmalloc(ys * 4), *dout = frand(ys, -1, 1), *dy = frand(ys, 1e3f, 2e3f);
    conv2d_forward(y, x, w, b, &d);
    double *rs3 = xmalloc((size_t)n * cout * 3 * sizeof *rs3);
    conv2d_forward_src(y2, &xsrc, w, b, &d, rs3, NULL);
    CHECK(memcmp(y, y2, ys * 4) == 0, "conv forward with its input made on demand, n=%d %d->%d k=%d s=%d g=%d: differs",
          n, cin, cout, k, s, g);
    /* the eval-mode BN (and act) after the conv, applied by the conv to its output (BnEval),
     * against the BN run on the stored output; the conv's input stored and made on demand */
    float *rme = frand(cout, -1, 1), *rve = frand(cout, 0.5f, 2), *sce = xmalloc(cout * 4);
    float *ye = xmalloc(ys * 4), *ye2 = frand(ys, 1e3f, 2e3f);
    if (act == ACT_COUNT)
        bn_forward_eval(ye, y, gamma, beta, rme, rve, n, cout, hw, 1e-5f);
    else
        bn_act_forward_eval(act, ye, y, gamma, beta, rme, rve, n, cout, hw, 1e-5f);
    bn_eval_scales(sce, gamma, rve, cout, 1e-5f);
    BnEval ke = {act, rme, sce, beta};
    ActSrc xstored = {.x = x, .c = cin, .hw = h * h};
    for (int made = 0; made < 2; made++) {
        conv2d_forward_src(ye2, made ? &xsrc : &xstored, w, b, &d, NULL, &ke);
        CHECK(memcmp(ye, ye2, ys * 4) == 0,
              "eval BN applied by the conv (input %s), n=%d %d->%d k=%d s=%d g=%d act %d: not bitwise the BN's own",
              made ? "made" : "stored", n, cin, cout, k, s, g, act);
    }
    free(rme), free(rve), free(sce), free(ye), free(ye2);
    float *rm = frand(cout, -1, 1), *rv = frand(cout, 0.5f, 2), *rm2 = fdup(rm, cout), *rv2 = fdup(rv, cout);
    if (act == ACT_COUNT) {
        bn_forward_train(out, st, st + cout, y, gamma, beta, rm, rv, n, cout, hw, 0.1f, 1e-5f);
    } else {
        bn_act_forward_train(act, out, st, y, gamma, beta, rm, rv, n, cout, hw, 0.1f, 1e-5f);
        /* the BN's statistics from the row sums the conv made as it wrote y */
        float *st2 = xmalloc(BN_ACT_SAVED * cout * 4);
        bn_forward_rows(act, NULL, st2, rs3, y, gamma, beta, rm2, rv2, n, cout, hw, 0.1f, 1e-5f);
        CHECK(memcmp(st, st2, BN_ACT_SAVED * cout * 4) == 0 && memcmp(rm, rm2, cout * 4) == 0 &&
                  memcmp(rv, rv2, cout * 4) == 0,
              "BN statistics from the conv's row sums, n=%d %d->%d k=%d s=%d g=%d: not bitwise its own", n, cin, cout,
              k, s, g);
        free(st2);
    }
    free(rs3), free(rm), free(rv), free(rm2), free(rv2);
    float *dg1 = xcalloc(2 * cout, 4), *dg2 = xcalloc(2 * cout, 4), *dx1 = frand(xs, 1e3f, 2e3f), *dx2 = fdup(dx1, xs);
    float *dw1 = xcalloc(ws + cout, 4), *dw2 = xcalloc(ws + cout, 4);
    if (act == ACT_COUNT)
        bn_backward_ex(dy, dg1, dg1 + cout, dout, y, gamma, st, st + cout, n, cout, hw, 0);
    else
        bn_act_backward(act, dy, dg1, dg1 + cout, dout, y, gamma, beta, st, n, cout, hw, 0);
    conv2d_backward_ex(dx1, dw1, dw1 + ws, dy, x, w, &d, 0);
    GradSrc src;
    BnBwdK *kc = xmalloc((size_t)cout * sizeof *kc);
    bn_grad_prepare(&src, kc, NULL, dg2, dg2 + cout, act, dout, y, gamma, beta, st, n, cout, hw);
    /* the backward of the BN + act0 before the conv: its row sums made by the conv as it
     * writes dx (bn_row_sums) against its own first pass over the finished dx */
    double *rs = xmalloc((size_t)n * cin * 2 * sizeof *rs);
    BnBwdK *k0 = xmalloc((size_t)cin * sizeof *k0), *k0b = xmalloc((size_t)cin * sizeof *k0b);
    BnRowSums sums;
    bn_row_sums_init(&sums, rs, k0, act0, z, b0, st0, cin, h * h);
    conv2d_backward_src(dx2, dw2, dw2 + ws, &src, &xsrc, w, &d, 0, &sums, NULL);
    CHECK(memcmp(dg1, dg2, 2 * cout * 4) == 0 && memcmp(dx1, dx2, xs * 4) == 0 &&
              memcmp(dw1, dw2, (ws + cout) * 4) == 0,
          "gradient made on demand, n=%d %d->%d %dx%d k=%d s=%d p=%d g=%d act %d: not bitwise equal", n, cin, cout, h,
          h, k, s, p, g, act);
    float *dg0 = xcalloc(2 * cin, 4), *dg0b = xcalloc(2 * cin, 4);
    GradSrc s0, s0b;
    bn_grad_prepare(&s0, k0, rs, dg0, dg0 + cin, act0, dx2, z, g0, b0, st0, n, cin, h * h);
    bn_grad_prepare(&s0b, k0b, NULL, dg0b, dg0b + cin, act0, dx2, z, g0, b0, st0, n, cin, h * h);
    CHECK(memcmp(dg0, dg0b, 2 * cin * 4) == 0 && memcmp(k0, k0b, (size_t)cin * sizeof *k0) == 0,
          "BN row sums made by the conv, n=%d %d->%d k=%d s=%d g=%d: not bitwise its own pass", n, cin, cout, k, s, g);
    free(rs), free(k0), free(k0b), free(dg0), free(dg0b);
    /* a stored gradient through GradSrc is conv2d_backward_ex itself */
    GradSrc plain = {.dy = dy, .c = cout, .hw = hw};
    ActSrc xplain = {.x = x, .c = cin, .hw = h * h};
    memset(dw2, 0, (ws + cout) * 4);
    conv2d_backward_src(dx2, dw2, dw2 + ws, &plain, &xplain, w, &d, 0, NULL, NULL);
    CHECK(memcmp(dx1, dx2, xs * 4) == 0 && memcmp(dw1, dw2, (ws + cout) * 4) == 0,
          "stored gradient through GradSrc, %d->%d k=%d g=%d: differs", cin, cout, k, g);
    free(z), free(g0), free(b0), free(x), free(st0), free(st0b), free(y2);
    free(w), free(b), free(y), free(gamma), free(beta), free(st), free(out), free(dout), free(dy);
    free(dg1), free(dg2), free(dx1), free(dx2), free(dw1), free(dw2), free(kc);
}

/* add_act_* against add then act: forward bitwise, backward into garbage (overwrite) and
 * onto existing values (accumulate), one gradient NULL. */
static void test_add_act(int nin, size_t n, ActKind act) {
    float *xs[3], *dx1[3], *dx2[3], *garbage = frand(n, 100, 200);
    for (int j = 0; j < nin; j++) xs[j] = frand(n, -4, 9);
    for (size_t i = 0; i < n; i += 7) xs[0][i] = -xs[nin - 1][i]; /* sums of exactly 0 (relu's kink) */
    float *t = xmalloc(n * 4), *y1 = xmalloc(n * 4), *y2 = xmalloc(n * 4), *dy = frand(n, -1, 1);
    add_forward(t, (const float *const *)xs, nin, n);
    act_forward(act, y1, t, n);
    add_act_forward(act, y2, (const float *const *)xs, nin, n);
    CHECK(memcmp(y1, y2, n * 4) == 0, "add_act forward nin=%d n=%zu act %d: not bitwise equal", nin, n, act);
    int acc[3] = {0, 1, 0};
    for (int j = 0; j < nin; j++) {
        dx1[j] = acc[j] ? frand(n, -1, 1) : xcalloc(n, 4);
        dx2[j] = acc[j] ? fdup(dx1[j], n) : fdup(garbage, n);
    }
    float *dt = xmalloc(n * 4);
    act_backward_ex(act, dt, dy, t, n, 0);
    free(dx1[nin - 1]), free(dx2[nin - 1]);
    dx1[nin - 1] = NULL, dx2[nin - 1] = NULL;
    add_backward(dx1, dt, nin, n);
    add_act_backward(act, dx2, dy, y2, nin, n, acc);
    for (int j = 0; j + 1 < nin; j++) {
        char what[96];
        snprintf(what, sizeof what, "add_act backward nin=%d n=%zu act %d, input %d", nin, n, act, j);
        close_arrays(dx2[j], dx1[j], n, 0, what);
        free(dx1[j]), free(dx2[j]);
    }
    for (int j = 0; j < nin; j++) free(xs[j]);
    free(garbage), free(t), free(y1), free(y2), free(dy), free(dt);
}

/* ------------------------------------------------------------------ whole networks */
typedef struct {
    float *logits; /* training-mode logits of the second step */
    float *grads;  /* parameter gradients after two forward/backward passes */
    float *eval;   /* eval-mode logits, then the running statistics */
    size_t np, ne;
} Run;

static Run run_net(const char *spec, int batch, int fuse) {
    if (fuse) unsetenv("NASC_FUSE");
    else setenv("NASC_FUSE", "0", 1);
    Spec s;
    Net net;
    Err e;
    Run r = {0};
    if (spec_parse(&s, spec, 16, 1, &e) != NASC_OK) {
        CHECK(0, "spec %s: %s", spec, e.msg);
        return r;
    }
    int ok = net_build(&net, &s, 1, 28, 28, 10, &e) == NASC_OK;
    spec_free(&s);
    if (!ok) {
        CHECK(0, "spec %s: %s", spec, e.msg);
        return r;
    }
    net_init_params(&net, 7);
    Rng xr;
    rng_seed(&xr, 11);
    /* BN's gamma and beta away from their initial 1 and 0, so that a made output that drops or
     * misplaces either cannot pass */
    for (int i = 0; i < net.spec.n; i++) {
        const Node *nd = &net.spec.nodes[i];
        if (nd->op != OP_BN) continue;
        for (int ch = 0; ch < nd->c; ch++) {
            net.params[nd->param_off + ch] = rng_uniformf(&xr, 0.5f, 1.5f);
            net.params[nd->param_off + nd->c + ch] = rng_uniformf(&xr, -0.5f, 0.5f);
        }
    }
    float *x = xmalloc((size_t)batch * 784 * sizeof(float)), *dl = xmalloc((size_t)batch * 10 * sizeof(float));
    for (int i = 0; i < batch * 784; i++) x[i] = (float)rng_normal(&xr);
    for (int i = 0; i < batch * 10; i++) dl[i] = rng_uniformf(&xr, -0.1f, 0.1f);
    net_zero_grad(&net);
    for (int step = 0; step < 2; step++) { /* twice: the second pass starts from stale activation gradients */
        const float *lg = net_forward(&net, x, batch, 1);
        if (step == 1) r.logits = fdup(lg, (size_t)batch * 10);
        net_backward(&net, dl);
    }
    r.np = net.nparams;
    r.grads = fdup(net.grads, net.nparams);
    const float *ev = net_forward(&net, x, batch, 0);
    r.ne = (size_t)batch * 10 + net.nbuffers;
    r.eval = xmalloc(r.ne * sizeof(float));
    memcpy(r.eval, ev, (size_t)batch * 10 * sizeof(float));
    memcpy(r.eval + batch * 10, net.buffers, net.nbuffers * sizeof(float));
    free(x), free(dl);
    net_free(&net);
    unsetenv("NASC_FUSE");
    return r;
}

static void test_net(const char *name, const char *spec, int batch) {
    Run a = run_net(spec, batch, 1), b = run_net(spec, batch, 0);
    if (a.logits && b.logits && a.np == b.np && a.ne == b.ne) {
        char what[160];
        snprintf(what, sizeof what, "%s: training logits, fused vs unfused", name);
        close_arrays(a.logits, b.logits, (size_t)batch * 10, 1e-6, what);
        snprintf(what, sizeof what, "%s: parameter gradients, fused vs unfused", name);
        close_arrays(a.grads, b.grads, a.np, 1e-5, what);
        snprintf(what, sizeof what, "%s: eval logits and running stats, fused vs unfused", name);
        close_arrays(a.eval, b.eval, a.ne, 1e-6, what);
    } else {
        CHECK(0, "%s: runs failed or differ in size", name);
    }
    free(a.logits), free(b.logits), free(a.grads), free(b.grads), free(a.eval), free(b.eval);
}

int main(void) {
    rng_seed(&rng, 42);
    static const int bn_shapes[][3] = {{1, 1, 2}, {3, 5, 7}, {4, 16, 49}, {16, 8, 196}, {2, 7, 33}, {64, 10, 1}};
    for (size_t i = 0; i < sizeof bn_shapes / sizeof bn_shapes[0]; i++) {
        test_bn_act(bn_shapes[i][0], bn_shapes[i][1], bn_shapes[i][2], ACT_RELU);
        test_bn_act(bn_shapes[i][0], bn_shapes[i][1], bn_shapes[i][2], ACT_RELU6);
    }
    test_overwrite_elem();
    for (int nin = 2; nin <= 3; nin++)
        for (int a = 0; a < 2; a++) {
            test_add_act(nin, 5, a ? ACT_RELU6 : ACT_RELU);
            test_add_act(nin, 100003, a ? ACT_RELU6 : ACT_RELU);
        }
    /* n, cin, h, cout, k, s, p, g: adjoint (3x3 s1), strided (s2), pointwise, 1x1 s2, depthwise,
     * grouped, the stem, stride-2 Winograd */
    static const int convs[][8] = {{3, 8, 14, 16, 3, 1, 1, 1}, {5, 8, 13, 8, 3, 2, 1, 1}, {2, 16, 7, 24, 1, 1, 0, 1},
                                   {4, 16, 14, 32, 1, 2, 0, 1}, {3, 24, 14, 24, 3, 2, 1, 24},
                                   {2, 32, 9, 32, 3, 1, 1, 32}, {2, 8, 10, 12, 3, 1, 1, 4}, {6, 1, 28, 16, 3, 1, 1, 1},
                                   {26, 16, 14, 32, 3, 2, 1, 1}};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        const int *c = convs[i];
        test_overwrite_conv(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    }
    for (int acc = 0; acc < 2; acc++) {
        test_dx_mask(8, 16, 14, 16, ACT_RELU6, acc); /* Winograd from 8 images */
        test_dx_mask(9, 24, 7, 32, ACT_RELU, acc);
        test_dx_mask(8, 16, 28, 24, ACT_RELU6, acc);
        test_dx_mask(26, 16, 14, 16, ACT_RELU6, acc); /* sixteen images a vector (winograd_batch.c) */
        test_dx_mask(25, 24, 7, 32, ACT_RELU, acc);
    }
    /* the same shapes plus depthwise 3x3 s1/s2 (direct; on 7x7 planes in runs of 20, the last
     * one short; stride 2 on 35x35, rows of three chunks; stride 1 on 4x4, the portable direct
     * path's smallest) and 5x5 (blocked) and one image (all threads on it), each with ReLU,
     * ReLU6 and no activation after the BN, at 1 and 2 threads */
    static const int gconvs[][8] = {{3, 8, 14, 16, 3, 1, 1, 1},  {5, 8, 13, 8, 3, 2, 1, 1},  {2, 16, 7, 24, 1, 1, 0, 1},
                                    {4, 16, 14, 32, 1, 2, 0, 1}, {3, 24, 14, 24, 3, 2, 1, 24}, {2, 32, 9, 32, 3, 1, 1, 32},
                                    {2, 8, 10, 12, 3, 1, 1, 4},  {6, 1, 28, 16, 3, 1, 1, 1}, {3, 20, 11, 20, 5, 1, 2, 20},
                                    {3, 17, 28, 17, 3, 1, 1, 17}, {1, 16, 14, 16, 3, 1, 1, 1},
                                    {3, 36, 7, 36, 3, 1, 1, 36},  {2, 20, 35, 20, 3, 2, 1, 20},
                                    {2, 12, 4, 12, 3, 1, 1, 12},
                                    /* Winograd with sixteen images a vector (winograd_batch.c: 12 and
                                     * more images a thread), stride 2 and 1 */
                                    {26, 16, 28, 32, 3, 2, 1, 1}, {25, 32, 14, 24, 3, 2, 1, 1},
                                    {26, 16, 14, 24, 3, 1, 1, 1}};
    const int threads0 = threads_get();
    for (int t = 1; t <= 2; t++) {
        threads_set(t);
        for (size_t i = 0; i < sizeof gconvs / sizeof gconvs[0]; i++) {
            const int *c = gconvs[i];
            for (int a = 0; a < 3; a++)
                test_made_on_demand(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], a == 1 ? ACT_RELU : ACT_RELU6,
                                    a == 0 ? ACT_RELU : a == 1 ? ACT_RELU6 : ACT_COUNT);
        }
    }
    threads_set(threads0);
    static const char *zoo[] = {"small", "resnet8", "mbv2"};
    for (int i = 0; i < 3; i++) test_net(zoo[i], zoo_lookup(zoo[i]), i == 2 ? 6 : 9);
    test_net("small, batch 26 (Winograd with 16 images a vector)", zoo_lookup("small"), 26);
    /* a BN with two consumers (not fused); an output nothing consumes (its gradient must be
     * zeroed); identities between fused pairs and in front of an add; relu6 after a BN that
     * feeds it through an identity (not fused) */
    test_net("two consumers", "conv(c=8,k=3);b=bn;r=relu;add(r,b);conv(c=8,k=3,s=2);bn;relu6;gap;linear", 5);
    test_net("unconsumed", "a=conv(c=4,k=1);conv(input,c=8,k=3);bn;relu;gap;linear", 4);
    test_net("identities", "conv(c=8,k=3);bn;x=relu;y=id(x);conv(c=8,k=3);bn;i=id;relu6;add(_,y,y);gap;linear", 3);
    test_net("add twice", "conv(c=8,k=3);bn;x=relu;add(x,x);bn;relu;gap;linear", 4);
    /* lone ReLUs made by the conv after them (NAS-Bench-201's ReLU-conv-BN edges, two of them
     * from one node), and a ReLU6 before a 1x1 conv */
    test_net("nb201 cell", "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|", 4);
    test_net("relu6 then 1x1", "conv(c=8,k=3);relu6;conv(c=8,k=1);bn;gap;linear", 3);
    /* the lone activation's backward made by the conv's dx (Winograd: 16 channels and more,
     * batches of 8 and more): an NB201 cell, and a ReLU6 whose input has another consumer (its
     * gradient accumulates) */
    test_net("nb201 cell, batch 9",
             "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|", 9);
    test_net("lone relu6", "conv(c=16,k=3);x=bn;relu6;conv(c=16,k=3);bn;add(_,x);relu;gap;linear", 8);
    test_net("nb201 cell, batch 26 (sixteen images a vector)",
             "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|", 26);
    test_net("lone relu6, batch 26", "conv(c=16,k=3);x=bn;relu6;conv(c=16,k=3);bn;add(_,x);relu;gap;linear", 26);
    /* BN outputs made by the add after them (never stored): two into one add with nothing
     * after it, one behind an identity (not made), one into a three-input add with a ReLU */
    test_net("bn into add", "conv(c=8,k=3);x=relu;conv(c=8,k=3);b=bn;conv(x,c=8,k=1);c=bn;add(b,c);gap;linear", 4);
    test_net("bn, id, add", "conv(c=8,k=3);x=relu;conv(c=8,k=3);b=bn;i=id(b);add(i,x);relu;gap;linear", 3);
    test_net("bn into add3", "conv(c=8,k=3);x=relu;conv(c=8,k=3);b=bn;conv(x,c=8,k=3,s=1);c=bn;add(b,x,c);relu;gap;linear", 5);
    return check_summary("test_fused");
}
