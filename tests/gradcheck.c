/* gradcheck.c: every op's backward against central finite differences, in double.
 *
 * Built with -DNASC_REAL=double -DNASC_REF_ONLY against the double-compiled reference
 * kernels. For each case, with a fixed random r of the output's shape,
 *     L = sum(y * r)        (for the loss: L = loss * r0, r0 = 1 or a random scale)
 * the analytic gradient of every input and parameter (backward with dy = r) is compared
 * entry by entry with the five-point central difference
 *     (8 (L(v+h) - L(v-h)) - (L(v+2h) - L(v-2h))) / 12h,   h = 1e-3,
 * each difference evaluated as sum((y+ - y-) r) so that the unchanged outputs cancel
 * exactly. Its truncation error is O(h^4) (~1e-12) and its rounding error ~1e-16/h, far
 * below what a plain central difference with h = 1e-6 achieves (~1e-7 on the loss). The
 * error of one entry is
 *     |analytic - numeric| / max(|analytic|, |numeric|, 1e-6 * max |numeric| of the tensor)
 * and must stay below 1e-7 everywhere; observed errors are 1e-9 or less, and a gradient off
 * by 0.1% gives 1e-3. Inputs stay more than 2h away from kinks (activations) and ties
 * (max pool values are 0.01 apart), so the differences never cross one.
 *
 * The backward also gets checked for accumulation (gradients start from random values,
 * which are subtracted afterwards) and for NULL gradients (each gradient alone, the others
 * NULL, must give the same values). A self-test corrupts a correct gradient by 0.1% (all
 * entries, then only the largest) and requires the checker to fail it. Hand-computed
 * cases (values from PyTorch 1.13) pin down BN statistics, pooling divisors, argmax ties,
 * activation kinks and cross-entropy.
 */
#include "../src/ops/ops.h"
#include "check.h"

#include <math.h>

#define GC_H 1e-3
#define GC_TOL 1e-7
#define GC_FLOOR 1e-6
#define GC_MAXVAR 6

static Rng rng;

static double urand(double lo, double hi) { return lo + (hi - lo) * rng_uniform(&rng); }

static double *dalloc(size_t n) { return xcalloc(n ? n : 1, sizeof(double)); }

static void fill_uniform(double *v, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) v[i] = urand(lo, hi);
}

/* ------------------------------------------------------------------ the checker */

typedef struct {
    const char *name;
    double *v; /* values, perturbed in place by the checker */
    size_t n;
} Var;

typedef struct Case Case;
struct Case {
    char name[96];
    int nvar;
    Var var[GC_MAXVAR];
    size_t ny;
    int unit_r; /* r = 1 (scalar outputs: L is the output itself) */
    /* y = f(vars); saves what the backward needs in the case's own buffers */
    void (*fwd)(Case *c, double *y);
    /* g[i] += dL/dvar[i] for dL/dy = dy; g[i] may be NULL */
    void (*bwd)(Case *c, double *const *g, const double *dy);
    /* op parameters and saved buffers */
    ConvDims cd;
    PoolDims pd;
    int n, ch, hw, in, out, nin, cs[4], bias, affine;
    ActKind act;
    double p, smoothing;
    uint64_t seed;
    int32_t *argmax;
    int *labels;
    double *mean, *invstd, *rm, *rv, *mask, *probs, *tprobs, *teacher;
};

enum { CORRUPT_NONE, CORRUPT_ALL, CORRUPT_ONE };

static double *case_var(Case *c, const char *name, size_t n, double lo, double hi) {
    NASC_ASSERT(c->nvar < GC_MAXVAR);
    Var *v = &c->var[c->nvar++];
    v->name = name;
    v->n = n;
    v->v = dalloc(n);
    fill_uniform(v->v, n, lo, hi);
    return v->v;
}

static void case_free(Case *c) {
    for (int i = 0; i < c->nvar; i++) free(c->var[i].v);
    free(c->argmax);
    free(c->labels);
    free(c->mean);
    free(c->invstd);
    free(c->rm);
    free(c->rv);
    free(c->mask);
    free(c->probs);
    free(c->tprobs);
    free(c->teacher);
}

/* Runs the check and returns the largest error over all entries (see the file comment);
 * with `corrupt`, the analytic gradient is spoiled by 0.1% first, to prove detection. */
static double case_check(Case *c, int corrupt, int verbose) {
    size_t ny = c->ny;
    double *y0 = dalloc(ny), *yp = dalloc(ny), *ym = dalloc(ny), *r = dalloc(ny);
    for (size_t i = 0; i < ny; i++) r[i] = c->unit_r ? 1.0 : urand(-1, 1);
    double *g0[GC_MAXVAR], *ga[GC_MAXVAR], *gs[GC_MAXVAR], *ptrs[GC_MAXVAR];

    /* Analytic gradients, accumulated onto random starting values. */
    c->fwd(c, y0);
    for (int k = 0; k < c->nvar; k++) {
        g0[k] = dalloc(c->var[k].n);
        ga[k] = dalloc(c->var[k].n);
        fill_uniform(g0[k], c->var[k].n, -1, 1);
        memcpy(ga[k], g0[k], c->var[k].n * sizeof(double));
    }
    c->bwd(c, ga, r);
    for (int k = 0; k < c->nvar; k++)
        for (size_t i = 0; i < c->var[k].n; i++) ga[k][i] -= g0[k][i];

    /* Each gradient alone (the others NULL) must give the same values. */
    for (int k = 0; k < c->nvar; k++) {
        for (int j = 0; j < c->nvar; j++) ptrs[j] = NULL;
        gs[k] = dalloc(c->var[k].n);
        ptrs[k] = gs[k];
        c->bwd(c, ptrs, r);
        double worst = 0;
        for (size_t i = 0; i < c->var[k].n; i++)
            worst = fmax(worst, fabs(gs[k][i] - ga[k][i]) / fmax(1.0, fabs(ga[k][i])));
        CHECK(worst < 1e-12, "%s: d%s computed alone differs from all together by %.3g", c->name,
              c->var[k].name, worst);
        free(gs[k]);
    }

    if (corrupt == CORRUPT_ALL) {
        for (int k = 0; k < c->nvar; k++)
            for (size_t i = 0; i < c->var[k].n; i++) ga[k][i] *= 1.001;
    } else if (corrupt == CORRUPT_ONE) {
        size_t best = 0;
        for (size_t i = 0; i < c->var[0].n; i++)
            if (fabs(ga[0][i]) > fabs(ga[0][best])) best = i;
        ga[0][best] *= 1.001;
    }

    /* Central differences, compared entry by entry. */
    double worst_all = 0;
    for (int k = 0; k < c->nvar; k++) {
        Var *v = &c->var[k];
        double *num = dalloc(v->n), scale = 0;
        for (size_t i = 0; i < v->n; i++) {
            double save = v->v[i], d[2];
            for (int s = 1; s <= 2; s++) { /* d[s-1] = L(v + s h) - L(v - s h) */
                v->v[i] = save + s * GC_H;
                c->fwd(c, yp);
                v->v[i] = save - s * GC_H;
                c->fwd(c, ym);
                d[s - 1] = 0;
                for (size_t j = 0; j < ny; j++) d[s - 1] += (yp[j] - ym[j]) * r[j];
            }
            v->v[i] = save;
            num[i] = (8 * d[0] - d[1]) / (12 * GC_H);
            scale = fmax(scale, fabs(num[i]));
        }
        double worst = 0;
        size_t wi = 0;
        for (size_t i = 0; i < v->n; i++) {
            double den = fmax(fmax(fabs(ga[k][i]), fabs(num[i])), fmax(GC_FLOOR * scale, 1e-12));
            double err = fabs(ga[k][i] - num[i]) / den;
            if (!(err <= worst)) { /* also catches NaN */
                worst = isnan(err) ? INFINITY : err;
                wi = i;
            }
        }
        if (verbose && worst >= GC_TOL)
            fprintf(stderr, "  %s d%s[%zu]: analytic %.12g numeric %.12g (rel err %.3g)\n", c->name, v->name,
                    wi, ga[k][wi], num[wi], worst);
        worst_all = fmax(worst_all, worst);
        free(num);
    }
    c->fwd(c, y0); /* leave the saved buffers of the unperturbed point */

    for (int k = 0; k < c->nvar; k++) {
        free(g0[k]);
        free(ga[k]);
    }
    free(y0);
    free(yp);
    free(ym);
    free(r);
    return worst_all;
}

static double worst_seen;
static int ncases;

static void run_case(Case *c) {
    double err = case_check(c, CORRUPT_NONE, 1);
    CHECK(err < GC_TOL, "%s: gradient error %.3g (tolerance %g)", c->name, err, GC_TOL);
    printf("  %-52s max rel err %.2e\n", c->name, err);
    worst_seen = fmax(worst_seen, err);
    ncases++;
}

/* ------------------------------------------------------------------ conv2d, linear */

static void conv_fwd(Case *c, double *y) {
    conv2d_forward_ref(y, c->var[0].v, c->var[1].v, c->bias ? c->var[2].v : NULL, &c->cd);
}
static void conv_bwd(Case *c, double *const *g, const double *dy) {
    conv2d_backward_ref(g[0], g[1], c->bias ? g[2] : NULL, dy, c->var[0].v, c->var[1].v, &c->cd);
}

static void case_conv(Case *c, int n, int cin, int h, int w, int cout, int k, int s, int p, int dil, int groups,
                      int bias) {
    memset(c, 0, sizeof *c);
    c->cd = (ConvDims){.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = s, .pad = p,
                       .dil = dil, .groups = groups};
    Err e;
    NASC_ASSERT(conv_dims_init(&c->cd, &e) == NASC_OK);
    snprintf(c->name, sizeof c->name, "conv n%d c%d %dx%d -> c%d k%d s%d p%d d%d g%d%s", n, cin, h, w, cout,
             k, s, p, dil, groups, bias ? " bias" : "");
    c->bias = bias;
    case_var(c, "x", (size_t)n * cin * h * w, -1, 1);
    case_var(c, "w", (size_t)cout * (cin / groups) * k * k, -1, 1);
    if (bias) case_var(c, "b", (size_t)cout, -1, 1);
    c->ny = (size_t)n * cout * c->cd.oh * c->cd.ow;
    c->fwd = conv_fwd;
    c->bwd = conv_bwd;
}

static void linear_fwd(Case *c, double *y) {
    linear_forward_ref(y, c->var[0].v, c->var[1].v, c->bias ? c->var[2].v : NULL, c->n, c->in, c->out);
}
static void linear_bwd(Case *c, double *const *g, const double *dy) {
    linear_backward_ref(g[0], g[1], c->bias ? g[2] : NULL, dy, c->var[0].v, c->var[1].v, c->n, c->in, c->out);
}

static void case_linear(Case *c, int n, int in, int out, int bias) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "linear n%d %d -> %d%s", n, in, out, bias ? " bias" : "");
    c->n = n, c->in = in, c->out = out, c->bias = bias;
    case_var(c, "x", (size_t)n * in, -1, 1);
    case_var(c, "w", (size_t)out * in, -1, 1);
    if (bias) case_var(c, "b", (size_t)out, -1, 1);
    c->ny = (size_t)n * out;
    c->fwd = linear_fwd;
    c->bwd = linear_bwd;
}

static void test_conv_linear(void) {
    static const int shapes[][11] = {
        /* n cin  h  w cout k s p d g bias */
        {2, 3, 6, 5, 4, 3, 1, 1, 1, 1, 1}, /* plain 3x3, same padding */
        {2, 3, 7, 7, 2, 3, 2, 0, 1, 1, 0}, /* stride 2, no padding, no bias */
        {1, 2, 8, 7, 3, 3, 1, 2, 2, 1, 1}, /* dilation 2 */
        {2, 4, 5, 6, 6, 3, 1, 1, 1, 2, 1}, /* 2 groups */
        {2, 4, 7, 6, 4, 3, 2, 1, 1, 4, 0}, /* depthwise, stride 2 */
        {1, 3, 5, 5, 6, 3, 1, 1, 1, 3, 1}, /* depthwise with channel multiplier 2 */
        {2, 5, 4, 3, 3, 1, 1, 0, 1, 1, 1}, /* pointwise */
        {1, 2, 9, 8, 2, 5, 3, 2, 1, 1, 1}, /* 5x5, stride 3 */
        {1, 4, 9, 9, 4, 3, 2, 2, 2, 4, 1}, /* depthwise, dilated, stride 2 */
        {2, 6, 5, 4, 4, 2, 2, 1, 1, 2, 0}, /* even kernel, padded, grouped */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        Case c;
        case_conv(&c, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10]);
        run_case(&c);
        case_free(&c);
    }
    Case c;
    case_linear(&c, 3, 5, 4, 1);
    run_case(&c);
    case_free(&c);
    case_linear(&c, 2, 7, 3, 0);
    run_case(&c);
    case_free(&c);
}

/* ------------------------------------------------------------------ batch norm */

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

static void bn_fwd(Case *c, double *y) {
    /* running stats are outputs that do not feed y: fresh copies each call */
    for (int i = 0; i < c->ch; i++) c->rm[i] = 0, c->rv[i] = 1;
    bn_forward_train_ref(y, c->mean, c->invstd, c->var[0].v, c->affine ? c->var[1].v : NULL,
                         c->affine ? c->var[2].v : NULL, c->rm, c->rv, c->n, c->ch, c->hw, BN_MOMENTUM, BN_EPS);
}
static void bn_bwd(Case *c, double *const *g, const double *dy) {
    bn_backward_ref(g[0], c->affine ? g[1] : NULL, c->affine ? g[2] : NULL, dy, c->var[0].v,
                    c->affine ? c->var[1].v : NULL, c->mean, c->invstd, c->n, c->ch, c->hw);
}

static void case_bn(Case *c, int n, int ch, int hw, int affine, double xlo, double xhi) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "bn train n%d c%d hw%d%s x in [%g, %g]", n, ch, hw,
             affine ? "" : " no affine", xlo, xhi);
    c->n = n, c->ch = ch, c->hw = hw, c->affine = affine;
    case_var(c, "x", (size_t)n * ch * hw, xlo, xhi);
    if (affine) {
        case_var(c, "gamma", (size_t)ch, 0.5, 1.5);
        case_var(c, "beta", (size_t)ch, -1, 1);
    }
    c->mean = dalloc(ch), c->invstd = dalloc(ch), c->rm = dalloc(ch), c->rv = dalloc(ch);
    c->ny = (size_t)n * ch * hw;
    c->fwd = bn_fwd;
    c->bwd = bn_bwd;
}

static void test_bn(void) {
    Case c;
    case_bn(&c, 3, 2, 5, 1, -1, 2);
    run_case(&c);
    case_free(&c);
    case_bn(&c, 4, 3, 1, 1, -2, 1); /* BatchNorm1d on (N, C) */
    run_case(&c);
    case_free(&c);
    case_bn(&c, 2, 3, 7, 1, 4, 6); /* mean far from zero */
    run_case(&c);
    case_free(&c);
    case_bn(&c, 2, 2, 4, 0, -1, 1);
    run_case(&c);
    case_free(&c);

    /* Hand-computed (and PyTorch-checked): one channel, x = 1 2 3 6, gamma 2, beta 0.5.
     * mean 3, biased var 3.5, unbiased var 14/3; running: mean 0.1*3, var 0.9 + 0.1*14/3. */
    double x[4] = {1, 2, 3, 6}, y[4], mean, invstd, g = 2, b = 0.5, rm = 0, rv = 1;
    bn_forward_train_ref(y, &mean, &invstd, x, &g, &b, &rm, &rv, 2, 1, 2, 0.1, BN_EPS);
    CHECK_CLOSE(mean, 3.0, 1e-15, 0, "bn mean");
    CHECK_CLOSE(invstd, 1 / sqrt(3.5 + BN_EPS), 1e-15, 1e-14, "bn invstd");
    CHECK_CLOSE(rm, 0.3, 1e-15, 1e-14, "bn running mean");
    CHECK_CLOSE(rv, 0.9 + 0.1 * 14.0 / 3.0, 1e-15, 1e-14, "bn running var (unbiased)");
    static const double ytrain[4] = {-1.6380867958068848, -0.5690433979034424, 0.5, 3.707130193710327};
    for (int i = 0; i < 4; i++) CHECK_CLOSE(y[i], ytrain[i], 1e-6, 1e-6, "bn train y vs PyTorch");
    /* a second step moves the running stats again */
    bn_forward_train_ref(y, &mean, &invstd, x, &g, &b, &rm, &rv, 2, 1, 2, 0.1, BN_EPS);
    CHECK_CLOSE(rm, 0.9 * 0.3 + 0.1 * 3, 1e-15, 1e-14, "bn running mean, step 2");
    CHECK_CLOSE(rv, 0.9 * (0.9 + 0.1 * 14.0 / 3.0) + 0.1 * 14.0 / 3.0, 1e-15, 1e-14, "bn running var, step 2");
    /* eval mode with the running stats after one step (PyTorch's values) */
    double rm1 = 0.3, rv1 = 0.9 + 0.1 * 14.0 / 3.0;
    bn_forward_eval_ref(y, x, &g, &b, &rm1, &rv1, 2, 1, 2, BN_EPS);
    static const double yeval[4] = {1.697554111480713, 3.4083456993103027, 5.119137287139893, 10.251511573791504};
    for (int i = 0; i < 4; i++) {
        CHECK_CLOSE(y[i], 2 * (x[i] - rm1) / sqrt(rv1 + BN_EPS) + 0.5, 1e-14, 1e-14, "bn eval y");
        CHECK_CLOSE(y[i], yeval[i], 1e-6, 1e-6, "bn eval y vs PyTorch");
    }
    /* two channels, interleaved in NCHW: each channel keeps its own statistics */
    double x2[8] = {1, 2, 10, 10, 3, 6, 10, 10}, y2[8], m2[2], is2[2], rm2[2] = {0, 0}, rv2[2] = {1, 1};
    bn_forward_train_ref(y2, m2, is2, x2, NULL, NULL, rm2, rv2, 2, 2, 2, 0.1, BN_EPS);
    CHECK_CLOSE(m2[0], 3.0, 1e-14, 0, "bn 2-channel mean 0");
    CHECK_CLOSE(m2[1], 10.0, 1e-14, 0, "bn 2-channel mean 1");
    CHECK_CLOSE(rv2[1], 0.9, 1e-14, 0, "bn constant channel running var");
    CHECK_CLOSE(y2[2], 0.0, 1e-12, 0, "bn constant channel y");
}

/* ------------------------------------------------------------------ activations */

static void act_fwd(Case *c, double *y) { act_forward_ref(c->act, y, c->var[0].v, c->var[0].n); }
static void act_bwd(Case *c, double *const *g, const double *dy) {
    act_backward_ref(c->act, g[0], dy, c->var[0].v, c->var[0].n);
}

static void test_act(void) {
    static const char *names[ACT_COUNT] = {"relu", "relu6", "hswish", "sigmoid", "hsigmoid"};
    static const double kinks[] = {-3, 0, 3, 6};
    for (int a = 0; a < ACT_COUNT; a++) {
        Case c;
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "act %s", names[a]);
        c.act = (ActKind)a;
        double *x = case_var(&c, "x", 200, -8, 8);
        for (size_t i = 0; i < 200; i++) { /* keep away from every kink */
            int near;
            do {
                near = 0;
                for (size_t k = 0; k < sizeof kinks / sizeof kinks[0]; k++) near |= fabs(x[i] - kinks[k]) < 0.01;
                if (near) x[i] = urand(-8, 8);
            } while (near);
        }
        c.ny = 200;
        c.fwd = act_fwd;
        c.bwd = act_bwd;
        run_case(&c);
        case_free(&c);
    }

    /* Values and derivatives at the kinks, as PyTorch 1.13 gives them. */
    static const struct {
        ActKind k;
        double x, y, d;
    } pts[] = {
        {ACT_RELU, 0, 0, 0},           {ACT_RELU, -0.5, 0, 0},       {ACT_RELU, 2, 2, 1},
        {ACT_RELU6, 0, 0, 0},          {ACT_RELU6, 6, 6, 0},         {ACT_RELU6, 5.9, 5.9, 1},
        {ACT_RELU6, 7, 6, 0},          {ACT_HSWISH, -3, 0, -0.5},    {ACT_HSWISH, 3, 3, 1},
        {ACT_HSWISH, -4, 0, 0},        {ACT_HSWISH, 1, 4.0 / 6, 5.0 / 6}, {ACT_HSWISH, 0, 0, 0.5},
        {ACT_HSIGMOID, -3, 0, 0},      {ACT_HSIGMOID, 3, 1, 0},      {ACT_HSIGMOID, 0, 0.5, 1.0 / 6},
        {ACT_SIGMOID, 0, 0.5, 0.25},   {ACT_SIGMOID, -1000, 0, 0},   {ACT_SIGMOID, 1000, 1, 0},
    };
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        double y, d = 0, one = 1;
        act_forward_ref(pts[i].k, &y, &pts[i].x, 1);
        act_backward_ref(pts[i].k, &d, &one, &pts[i].x, 1);
        char what[64];
        snprintf(what, sizeof what, "act %d at x=%g: value", (int)pts[i].k, pts[i].x);
        CHECK_CLOSE(y, pts[i].y, 1e-15, 1e-15, what);
        snprintf(what, sizeof what, "act %d at x=%g: derivative", (int)pts[i].k, pts[i].x);
        CHECK_CLOSE(d, pts[i].d, 1e-15, 1e-15, what);
    }
}

/* ------------------------------------------------------------------ pooling */

static void maxpool_fwd(Case *c, double *y) { maxpool_forward_ref(y, c->argmax, c->var[0].v, &c->pd); }
static void maxpool_bwd(Case *c, double *const *g, const double *dy) {
    maxpool_backward_ref(g[0], dy, c->argmax, &c->pd);
}
static void avgpool_fwd(Case *c, double *y) { avgpool_forward_ref(y, c->var[0].v, &c->pd); }
static void avgpool_bwd(Case *c, double *const *g, const double *dy) { avgpool_backward_ref(g[0], dy, &c->pd); }
static void gap_fwd(Case *c, double *y) { gap_forward_ref(y, c->var[0].v, c->n, c->ch, c->hw); }
static void gap_bwd(Case *c, double *const *g, const double *dy) { gap_backward_ref(g[0], dy, c->n, c->ch, c->hw); }

static void case_pool(Case *c, int max, int n, int ch, int h, int w, int k, int s, int p, int cip) {
    memset(c, 0, sizeof *c);
    c->pd = (PoolDims){.n = n, .c = ch, .h = h, .w = w, .k = k, .stride = s, .pad = p, .count_include_pad = cip};
    Err e;
    NASC_ASSERT(pool_dims_init(&c->pd, &e) == NASC_OK);
    snprintf(c->name, sizeof c->name, "%s n%d c%d %dx%d k%d s%d p%d%s", max ? "maxpool" : "avgpool", n, ch, h, w,
             k, s, p, max ? "" : cip ? " cip" : " no-cip");
    size_t nx = (size_t)n * ch * h * w;
    double *x = case_var(c, "x", nx, -1, 1);
    if (max) { /* distinct values 0.01 apart: a perturbation of 1e-6 never moves an argmax */
        int *perm = xmalloc(nx * sizeof(int));
        for (size_t i = 0; i < nx; i++) perm[i] = (int)i;
        rng_shuffle_int(&rng, perm, (int)nx);
        for (size_t i = 0; i < nx; i++) x[i] = 0.01 * (perm[i] - (double)nx / 2);
        free(perm);
    }
    c->ny = (size_t)n * ch * c->pd.oh * c->pd.ow;
    c->argmax = xcalloc(c->ny, sizeof(int32_t));
    c->fwd = max ? maxpool_fwd : avgpool_fwd;
    c->bwd = max ? maxpool_bwd : avgpool_bwd;
}

static void test_pool(void) {
    static const int shapes[][6] = {
        /* n c h w k s ; padding 0..k/2 is looped */
        {2, 2, 6, 6, 2, 2}, {1, 3, 7, 5, 3, 2}, {2, 1, 5, 6, 3, 1}, {1, 2, 7, 7, 3, 3}, {1, 1, 8, 7, 4, 2},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        for (int p = 0; p <= s[4] / 2; p++) {
            Case c;
            case_pool(&c, 1, s[0], s[1], s[2], s[3], s[4], s[5], p, 0);
            run_case(&c);
            case_free(&c);
            for (int cip = 0; cip <= 1; cip++) {
                case_pool(&c, 0, s[0], s[1], s[2], s[3], s[4], s[5], p, cip);
                run_case(&c);
                case_free(&c);
            }
        }
    }
    Case c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "gap n2 c3 hw10");
    c.n = 2, c.ch = 3, c.hw = 10;
    case_var(&c, "x", 60, -1, 1);
    c.ny = 6;
    c.fwd = gap_fwd;
    c.bwd = gap_bwd;
    run_case(&c);
    case_free(&c);

    /* pool_dims_init: PyTorch floor mode and its limits. */
    Err e;
    PoolDims d = {.n = 1, .c = 1, .h = 7, .w = 6, .k = 3, .stride = 2, .pad = 1};
    CHECK(pool_dims_init(&d, &e) == NASC_OK && d.oh == 4 && d.ow == 3, "pool dims 7x6 k3 s2 p1: %dx%d", d.oh,
          d.ow);
    d = (PoolDims){.n = 1, .c = 1, .h = 7, .w = 7, .k = 2, .stride = 2};
    CHECK(pool_dims_init(&d, &e) == NASC_OK && d.oh == 3 && d.ow == 3, "pool dims 7x7 k2 s2: %dx%d", d.oh, d.ow);
    d = (PoolDims){.n = 1, .c = 1, .h = 7, .w = 7, .k = 3, .stride = 1, .pad = 2};
    CHECK(pool_dims_init(&d, &e) == NASC_ERR && strstr(e.msg, "padding"), "pad > k/2 must fail");
    d = (PoolDims){.n = 1, .c = 1, .h = 2, .w = 7, .k = 5, .stride = 1, .pad = 1};
    CHECK(pool_dims_init(&d, &e) == NASC_ERR && strstr(e.msg, "empty"), "window larger than input must fail");
    d = (PoolDims){.n = 1, .c = 1, .h = 3, .w = 3, .k = 3, .stride = 0};
    CHECK(pool_dims_init(&d, &e) == NASC_ERR, "stride 0 must fail");

    /* Hand-computed: 3x3 input 1..9, 3x3 window, stride 1, pad 1. At the corner the window
     * holds 1 2 4 5: mean 3 without padding cells, 12/9 with them. */
    double x9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, y9[9];
    d = (PoolDims){.n = 1, .c = 1, .h = 3, .w = 3, .k = 3, .stride = 1, .pad = 1, .count_include_pad = 0};
    pool_dims_init(&d, &e);
    avgpool_forward_ref(y9, x9, &d);
    CHECK_CLOSE(y9[0], 3.0, 1e-15, 0, "avgpool corner, cip off");
    CHECK_CLOSE(y9[4], 5.0, 1e-15, 0, "avgpool centre, cip off");
    CHECK_CLOSE(y9[1], 3.5, 1e-15, 0, "avgpool edge, cip off");
    d.count_include_pad = 1;
    avgpool_forward_ref(y9, x9, &d);
    CHECK_CLOSE(y9[0], 12.0 / 9, 1e-15, 0, "avgpool corner, cip on");
    /* 5x5 input 0..24, k3 s2 p1 (PyTorch's values) */
    double x25[25], y25[9];
    for (int i = 0; i < 25; i++) x25[i] = i;
    static const double want_off[9] = {3, 4.5, 6, 10.5, 12, 13.5, 18, 19.5, 21};
    static const double want_on[9] = {4.0 / 3, 3, 8.0 / 3, 7, 12, 9, 8, 13, 28.0 / 3};
    d = (PoolDims){.n = 1, .c = 1, .h = 5, .w = 5, .k = 3, .stride = 2, .pad = 1, .count_include_pad = 0};
    pool_dims_init(&d, &e);
    avgpool_forward_ref(y25, x25, &d);
    for (int i = 0; i < 9; i++) CHECK_CLOSE(y25[i], want_off[i], 1e-14, 1e-14, "avgpool 5x5 cip off vs PyTorch");
    d.count_include_pad = 1;
    avgpool_forward_ref(y25, x25, &d);
    for (int i = 0; i < 9; i++) CHECK_CLOSE(y25[i], want_on[i], 1e-14, 1e-14, "avgpool 5x5 cip on vs PyTorch");
    /* backward of the cip-off corner: each of its 4 cells gets 1/4 */
    double dx[25] = {0}, dy9[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    d.count_include_pad = 0;
    avgpool_backward_ref(dx, dy9, &d);
    CHECK(dx[0] == 0.25 && dx[1] == 0.25 && dx[5] == 0.25 && dx[6] == 0.25 && dx[2] == 0, "avgpool corner backward");

    /* Max pool: padding is -inf (all-negative input), ties go to the first maximum. */
    double c16[16], y4[4];
    int32_t am[4];
    for (int i = 0; i < 16; i++) c16[i] = -5;
    d = (PoolDims){.n = 1, .c = 1, .h = 4, .w = 4, .k = 3, .stride = 2, .pad = 1};
    pool_dims_init(&d, &e);
    maxpool_forward_ref(y4, am, c16, &d);
    CHECK(y4[0] == -5 && y4[3] == -5, "maxpool treats padding as -inf: %g", y4[0]);
    CHECK(am[0] == 0 && am[1] == 1 && am[2] == 4 && am[3] == 5, "maxpool ties: argmax %d %d %d %d", am[0], am[1],
          am[2], am[3]);
    c16[10] = 7;
    c16[11] = 7; /* two equal maxima in one window: the first (row-major) wins */
    maxpool_forward_ref(y4, am, c16, &d);
    CHECK(y4[3] == 7 && am[3] == 10, "maxpool tie in window: %g at %d", y4[3], am[3]);
}

/* ------------------------------------------------------------------ elementwise */

static void add_fwd(Case *c, double *y) {
    const double *xs[4];
    for (int i = 0; i < c->nin; i++) xs[i] = c->var[i].v;
    add_forward_ref(y, xs, c->nin, c->ny);
}
static void add_bwd(Case *c, double *const *g, const double *dy) { add_backward_ref(g, dy, c->nin, c->ny); }

static void concat_fwd(Case *c, double *y) {
    const double *xs[4];
    for (int i = 0; i < c->nin; i++) xs[i] = c->var[i].v;
    concat_forward_ref(y, xs, c->cs, c->nin, c->n, c->hw);
}
static void concat_bwd(Case *c, double *const *g, const double *dy) {
    concat_backward_ref(g, dy, c->cs, c->nin, c->n, c->hw);
}

static void chmul_fwd(Case *c, double *y) { chmul_forward_ref(y, c->var[0].v, c->var[1].v, c->n, c->ch, c->hw); }
static void chmul_bwd(Case *c, double *const *g, const double *dy) {
    chmul_backward_ref(g[0], g[1], dy, c->var[0].v, c->var[1].v, c->n, c->ch, c->hw);
}

static void dropout_fwd(Case *c, double *y) {
    Rng r; /* the same seed every call: a fixed mask */
    rng_seed(&r, c->seed);
    dropout_forward_ref(y, c->mask, c->var[0].v, c->ny, c->p, &r);
}
static void dropout_bwd(Case *c, double *const *g, const double *dy) {
    dropout_backward_ref(g[0], dy, c->mask, c->ny);
}

static void test_elem(void) {
    Case c;
    for (int nin = 1; nin <= 3; nin++) {
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "add of %d", nin);
        static const char *nm[] = {"x0", "x1", "x2"};
        for (int i = 0; i < nin; i++) case_var(&c, nm[i], 23, -1, 1);
        c.nin = nin, c.ny = 23;
        c.fwd = add_fwd;
        c.bwd = add_bwd;
        run_case(&c);
        case_free(&c);
    }

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "concat c 2+3+1");
    c.nin = 3, c.n = 2, c.hw = 4, c.cs[0] = 2, c.cs[1] = 3, c.cs[2] = 1;
    case_var(&c, "x0", 2 * 2 * 4, -1, 1);
    case_var(&c, "x1", 2 * 3 * 4, -1, 1);
    case_var(&c, "x2", 2 * 1 * 4, -1, 1);
    c.ny = 2 * 6 * 4;
    c.fwd = concat_fwd;
    c.bwd = concat_bwd;
    run_case(&c);
    case_free(&c);

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "chmul n2 c3 hw5");
    c.n = 2, c.ch = 3, c.hw = 5;
    case_var(&c, "x", 30, -1, 1);
    case_var(&c, "s", 6, -1, 1);
    c.ny = 30;
    c.fwd = chmul_fwd;
    c.bwd = chmul_bwd;
    run_case(&c);
    case_free(&c);

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "dropout p0.3 fixed mask");
    c.p = 0.3, c.seed = 1234, c.ny = 50;
    case_var(&c, "x", 50, -1, 1);
    c.mask = dalloc(50);
    c.fwd = dropout_fwd;
    c.bwd = dropout_bwd;
    run_case(&c);
    case_free(&c);

    /* concat layout by hand: n=2, hw=1, inputs of 1 and 2 channels */
    double a[2] = {1, 2}, b[4] = {3, 4, 5, 6}, y[6];
    const double *xs[2] = {a, b};
    int cs[2] = {1, 2};
    concat_forward_ref(y, xs, cs, 2, 2, 1);
    CHECK(y[0] == 1 && y[1] == 3 && y[2] == 4 && y[3] == 2 && y[4] == 5 && y[5] == 6, "concat layout");

    /* dropout mask: values 0 or 1/(1-p), about p dropped, reproducible from the seed, p=0 keeps all */
    size_t n = 20000;
    double *x = dalloc(n), *m1 = dalloc(n), *m2 = dalloc(n), *yy = dalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = 1;
    Rng r;
    rng_seed(&r, 99);
    dropout_forward_ref(yy, m1, x, n, 0.25, &r);
    rng_seed(&r, 99);
    dropout_forward_ref(yy, m2, x, n, 0.25, &r);
    size_t dropped = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        dropped += m1[i] == 0;
        bad += !(m1[i] == 0 || fabs(m1[i] - 1 / 0.75) < 1e-15) || m1[i] != m2[i] || yy[i] != m1[i];
    }
    CHECK(bad == 0, "dropout mask: %zu bad entries", bad);
    CHECK(fabs((double)dropped / n - 0.25) < 0.02, "dropout dropped %.4f, want about 0.25", (double)dropped / n);
    dropout_forward_ref(yy, m1, x, n, 0, &r);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += m1[i] != 1 || yy[i] != 1;
    CHECK(bad == 0, "dropout p=0 must keep everything");
    free(x);
    free(m1);
    free(m2);
    free(yy);
}

/* ------------------------------------------------------------------ loss */

static void xent_fwd(Case *c, double *y) {
    y[0] = xent_forward_ref(c->probs, c->var[0].v, c->labels, c->n, c->ch, c->smoothing);
}
static void xent_bwd(Case *c, double *const *g, const double *dy) {
    xent_backward_ref(g[0], c->probs, c->labels, c->n, c->ch, c->smoothing, dy[0]);
}

static void kd_fwd(Case *c, double *y) {
    y[0] = kd_forward_ref(c->probs, c->tprobs, c->var[0].v, c->teacher, c->n, c->ch, c->p);
}
static void kd_bwd(Case *c, double *const *g, const double *dy) {
    kd_backward_ref(g[0], c->probs, c->tprobs, c->n, c->ch, c->p, dy[0]);
}

static void test_kd(void) {
    static const double temps[] = {1, 4, 10};
    for (int i = 0; i < 3; i++) {
        Case c;
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "distillation n4 k6 T=%g", temps[i]);
        c.n = 4, c.ch = 6, c.p = temps[i], c.unit_r = 1;
        case_var(&c, "logits", 24, -4, 4);
        c.teacher = dalloc(24);
        fill_uniform(c.teacher, 24, -5, 5);
        c.probs = dalloc(24);
        c.tprobs = dalloc(24);
        c.ny = 1;
        c.fwd = kd_fwd;
        c.bwd = kd_bwd;
        run_case(&c);
        case_free(&c);
    }
    /* Known values: PyTorch's F.kl_div(log_softmax(z/T), softmax(t/T), 'batchmean') * T^2, T = 4. */
    double z[6] = {1, 2, 3, 0.5, -1, 2}, t[6] = {0, 1, 4, 2, -2, 1}, ps[6], pt[6], g[6] = {0};
    double l = kd_forward_ref(ps, pt, z, t, 2, 3, 4);
    CHECK_CLOSE(l, 0.6265213555686446, 1e-15, 1e-13, "distillation loss vs PyTorch");
    kd_backward_ref(g, ps, pt, 2, 3, 4, 1);
    static const double g0[6] = {0.1087349196578769,   0.13961840052221353, -0.24835332018009038,
                                 -0.29519075765426717, 0.09470348286204339, 0.20048727479222384};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], g0[i], 1e-15, 1e-13, "distillation gradient vs PyTorch");
    /* A student equal to its teacher has zero loss and zero gradient. */
    memset(g, 0, sizeof g);
    l = kd_forward_ref(ps, pt, t, t, 2, 3, 2);
    CHECK_CLOSE(l, 0, 1e-15, 1e-15, "distillation of the teacher itself");
    kd_backward_ref(g, ps, pt, 2, 3, 2, 1);
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], 0, 1e-15, 1e-15, "distillation gradient of the teacher itself");
}

static void test_loss(void) {
    static const double smooth[] = {0, 0.1, 0.3};
    for (int i = 0; i < 3; i++)
        for (int unit = 0; unit <= 1; unit++) {
            Case c;
            memset(&c, 0, sizeof c);
            snprintf(c.name, sizeof c.name, "xent n5 k7 smoothing %g%s", smooth[i], unit ? "" : " random scale");
            c.n = 5, c.ch = 7, c.smoothing = smooth[i], c.unit_r = unit;
            case_var(&c, "logits", 35, -3, 3);
            c.labels = xmalloc(5 * sizeof(int));
            for (int j = 0; j < 5; j++) c.labels[j] = (int)rng_below(&rng, 7);
            c.probs = dalloc(35);
            c.ny = 1;
            c.fwd = xent_fwd;
            c.bwd = xent_bwd;
            run_case(&c);
            case_free(&c);
        }

    /* Known logits (PyTorch's F.cross_entropy values). */
    double z[6] = {1, 2, 3, 0.5, -1, 2}, p[6], g[6] = {0};
    int t[2] = {2, 0};
    double l = xent_forward_ref(p, z, t, 2, 3, 0);
    CHECK_CLOSE(l, 1.0744586305507688, 1e-15, 1e-14, "xent known logits");
    xent_backward_ref(g, p, t, 2, 3, 0, 1);
    static const double g0[6] = {0.04501528658519022, 0.12236423552739882, -0.1673795221125891,
                                 -0.41235480392998164, 0.019556286635343725, 0.39279851729463794};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], g0[i], 1e-15, 1e-13, "xent gradient vs PyTorch");
    l = xent_forward_ref(p, z, t, 2, 3, 0.1);
    CHECK_CLOSE(l, 1.124458630550769, 1e-15, 1e-14, "xent smoothing 0.1");
    memset(g, 0, sizeof g);
    xent_backward_ref(g, p, t, 2, 3, 0.1, 1);
    static const double g1[6] = {0.02834861991852355, 0.10569756886073216, -0.13404618877925578,
                                 -0.3790214705966483, 0.0028896199686770582, 0.3761318506279713};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], g1[i], 1e-15, 1e-13, "xent smoothing gradient vs PyTorch");
    /* Large logits must not overflow. */
    double zb[3] = {1000, 1001, 1002}, pb[3];
    int tb = 2;
    l = xent_forward_ref(pb, zb, &tb, 1, 3, 0.1);
    CHECK_CLOSE(l, 0.5076059644443804, 1e-14, 1e-13, "xent large logits");
    CHECK(pb[0] > 0 && pb[2] < 1 && isfinite(pb[0]), "xent large logits: probs finite");
}

/* ------------------------------------------------------------------ self-test */

/* A gradient spoiled by 0.1% must fail the check, for ops of every kind. */
static void test_selftest(void) {
    Case c[4];
    case_conv(&c[0], 2, 4, 5, 6, 6, 3, 1, 1, 1, 2, 1);
    case_bn(&c[1], 3, 2, 5, 1, -1, 2);
    case_pool(&c[2], 0, 1, 2, 6, 6, 3, 2, 1, 0);
    memset(&c[3], 0, sizeof c[3]);
    snprintf(c[3].name, sizeof c[3].name, "xent selftest");
    c[3].n = 4, c[3].ch = 5, c[3].smoothing = 0.1, c[3].unit_r = 1;
    case_var(&c[3], "logits", 20, -3, 3);
    c[3].labels = xmalloc(4 * sizeof(int));
    for (int j = 0; j < 4; j++) c[3].labels[j] = j;
    c[3].probs = dalloc(20);
    c[3].ny = 1;
    c[3].fwd = xent_fwd;
    c[3].bwd = xent_bwd;
    for (int i = 0; i < 4; i++) {
        double ok = case_check(&c[i], CORRUPT_NONE, 1);
        double all = case_check(&c[i], CORRUPT_ALL, 0);
        double one = case_check(&c[i], CORRUPT_ONE, 0);
        CHECK(ok < GC_TOL, "selftest %s: correct gradient rejected (%.3g)", c[i].name, ok);
        CHECK(all >= GC_TOL, "selftest %s: all-entries 0.1%% error not detected (%.3g)", c[i].name, all);
        CHECK(one >= GC_TOL, "selftest %s: one-entry 0.1%% error not detected (%.3g)", c[i].name, one);
        CHECK(all > 100 * ok && one > 100 * ok, "selftest %s: margin too small (ok %.3g, corrupt %.3g/%.3g)",
              c[i].name, ok, all, one);
        case_free(&c[i]);
    }
}

static void resize_fwd(Case *c, double *y) {
    resize_forward_ref(y, c->var[0].v, c->n, c->cs[0], c->cs[1], c->cs[2], c->cs[3]);
}
static void resize_bwd(Case *c, double *const *g, const double *dy) {
    resize_backward_ref(g[0], dy, c->n, c->cs[0], c->cs[1], c->cs[2], c->cs[3]);
}

static void test_resize(void) {
    static const int shapes[][5] = {{3, 7, 5, 4, 9}, {2, 6, 6, 12, 12}, {1, 5, 5, 5, 5}, {2, 28, 28, 20, 20}, {1, 3, 4, 1, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        Case c;
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "resize nc%d %dx%d -> %dx%d", s[0], s[1], s[2], s[3], s[4]);
        c.n = s[0];
        for (int j = 0; j < 4; j++) c.cs[j] = s[1 + j];
        case_var(&c, "x", (size_t)s[0] * s[1] * s[2], -1, 1);
        c.ny = (size_t)s[0] * s[3] * s[4];
        c.fwd = resize_fwd;
        c.bwd = resize_bwd;
        run_case(&c);
        case_free(&c);
    }
    /* Values from PyTorch: F.interpolate(x, size, mode="bilinear", align_corners=False) with
     * x = arange(12).reshape(1, 1, 3, 4) ** 1.5. */
    static const double want53[15] = {0.166666666666667, 1.9142135623731,  4.80153153971322, 3.5120226591666,
                                      6.32398380626346,  10.0341345467586, 8.53005664791649, 12.938639172099,
                                      17.8830390573266,  17.4257311581514, 22.7622886493447, 28.5569296300537,
                                      23.3561808316413,  29.3113883008419, 35.6728566785385};
    static const double want22[4] = {2.77254248593737, 7.16136703456371, 21.0078238601759, 29.6917681901163};
    double x[12], y[15];
    for (int i = 0; i < 12; i++) x[i] = pow(i, 1.5);
    resize_forward_ref(y, x, 1, 3, 4, 5, 3);
    for (int i = 0; i < 15; i++) CHECK_CLOSE(y[i], want53[i], 1e-12, 1e-12, "resize 3x4 -> 5x3 vs PyTorch");
    resize_forward_ref(y, x, 1, 3, 4, 2, 2);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(y[i], want22[i], 1e-12, 1e-12, "resize 3x4 -> 2x2 vs PyTorch");
}

int main(void) {
    rng_seed(&rng, 20240611);
    test_resize();
    test_selftest();
    test_conv_linear();
    test_bn();
    test_act();
    test_pool();
    test_elem();
    test_loss();
    test_kd();
    printf("gradcheck: %d gradient cases, largest relative error %.3g (tolerance %g)\n", ncases, worst_seen,
           GC_TOL);
    return check_summary("gradcheck");
}
