/* test_proxies.c: zero-cost proxies (src/search/proxies.c).
 *   - synflow of conv + BN + ReLU + linear equals its closed form (BN as the eval-mode affine
 *     map of the absolute parameters and statistics);
 *   - naswot: K of a ReLU-on-the-input net by hand (log det 44), identical inputs give a
 *     singular K (-inf), and log|det| of a known matrix;
 *   - gradnorm equals the norm of net->grads after a manual forward, cross-entropy and backward;
 *   - the network's parameters, gradients and BN statistics are unchanged by every proxy, and
 *     every proxy is deterministic;
 *   - a few NB201 cells on Fashion-MNIST-shaped random data give finite scores (a cell that
 *     disconnects input from output: synflow -inf, the others finite);
 *   - unknown names and empty batches are errors with a message.
 */
#include <math.h>

#include "../src/net/net.h"
#include "../src/ops/ops.h"
#include "../src/search/proxies.h"
#include "check.h"

static int build(Net *net, const char *text, int c, int h, int w, int classes) {
    Spec sp;
    Err e = {{0}};
    if (spec_parse(&sp, text, 8, 1, &e) != NASC_OK) {
        fprintf(stderr, "spec '%s': %s\n", text, e.msg);
        return 0;
    }
    int rc = net_build(net, &sp, c, h, w, classes, &e);
    spec_free(&sp);
    if (rc != NASC_OK) fprintf(stderr, "net '%s': %s\n", text, e.msg);
    return rc == NASC_OK;
}

/* Snapshot of everything a proxy must leave alone. */
typedef struct {
    float *p, *g, *b;
} Snap;

static Snap snap_take(const Net *net) {
    Snap s = {xmalloc(net->nparams * 4 + 4), xmalloc(net->nparams * 4 + 4), xmalloc(net->nbuffers * 4 + 4)};
    memcpy(s.p, net->params, net->nparams * 4);
    memcpy(s.g, net->grads, net->nparams * 4);
    memcpy(s.b, net->buffers, net->nbuffers * 4);
    return s;
}

static int snap_same(const Snap *s, const Net *net) {
    return memcmp(s->p, net->params, net->nparams * 4) == 0 && memcmp(s->g, net->grads, net->nparams * 4) == 0 &&
           memcmp(s->b, net->buffers, net->nbuffers * 4) == 0;
}

static void snap_free(Snap *s) {
    free(s->p);
    free(s->g);
    free(s->b);
}

/* ------------------------------------------------------------------ synflow */
static void test_synflow_closed_form(void) {
    const int C = 3, K = 3, H = 5, classes = 4, oh = H - K + 1;
    Net net;
    if (!build(&net, "conv(c=3,k=3,p=0,bias=1); bn; relu; linear", 1, H, H, classes)) {
        CHECK(0, "build");
        return;
    }
    net_init_params(&net, 3);
    const Node *cv = &net.spec.nodes[0], *bn = &net.spec.nodes[1], *li = &net.spec.nodes[3];
    /* signed, non-trivial BN parameters and statistics (beta large so the ReLU stays open) */
    Rng r;
    rng_seed(&r, 9);
    float *g = net.params + bn->param_off, *be = g + C, *rm = net.buffers + bn->buf_off, *rv = rm + C;
    for (int c = 0; c < C; c++) {
        g[c] = rng_uniformf(&r, -2, 2);
        be[c] = (c & 1 ? -1.0f : 1.0f) * rng_uniformf(&r, 2, 3);
        rm[c] = rng_uniformf(&r, -0.2f, 0.2f);
        rv[c] = rng_uniformf(&r, 0.5f, 3);
    }
    net.grads[0] = 0.25f; /* some gradient state the proxy must leave alone */
    /* closed form: z_c = a_c (S_c + |b_c|) + d_c; score = sum_c V_c (a_c S_c + z_c) */
    const float *w = net.params + cv->param_off, *b = w + C * K * K, *v = net.params + li->param_off;
    double want = 0;
    for (int c = 0; c < C; c++) {
        double S = 0, V = 0;
        for (int j = 0; j < K * K; j++) S += fabs(w[c * K * K + j]);
        for (int k = 0; k < classes; k++)
            for (int p = 0; p < oh * oh; p++) V += fabs(v[k * C * oh * oh + c * oh * oh + p]);
        double a = fabs(g[c]) / sqrt(fabs(rv[c]) + 1e-5), d = fabs(be[c]) - fabs(rm[c]) * a;
        double z = a * (S + fabs(b[c])) + d;
        want += V * (a * S + z);
    }
    Snap s0 = snap_take(&net);
    float x[25] = {0};
    double got = 0, again = 1;
    Err e = {{0}};
    CHECK(proxy_score("synflow", &net, x, NULL, 1, &got, &e) == NASC_OK, "synflow: %s", e.msg);
    CHECK_CLOSE(got, log(want), 1e-5, 0, "synflow log score vs closed form");
    CHECK(snap_same(&s0, &net), "synflow changed the network's parameters, gradients or BN statistics");
    CHECK(proxy_synflow(&net, x, 1, &again, &e) == NASC_OK && again == got, "synflow not deterministic");
    snap_free(&s0);
    net_free(&net);
}

/* ------------------------------------------------------------------ naswot */
static void test_naswot_by_hand(void) {
    Net net;
    if (!build(&net, "relu; gap; linear", 1, 2, 2, 3)) {
        CHECK(0, "build");
        return;
    }
    /* codes 1100, 1010, 0001: K = [[4,2,1],[2,4,1],[1,1,4]], det 44 */
    float x[12] = {1, 1, -1, -1, 1, -1, 1, -1, -1, -1, -1, 1};
    double got, again;
    Err e = {{0}};
    CHECK(proxy_naswot(&net, x, 3, &got, &e) == NASC_OK, "naswot: %s", e.msg);
    CHECK_CLOSE(got, log(44.0), 1e-12, 0, "naswot of hand-made codes");
    CHECK(proxy_score("naswot", &net, x, NULL, 3, &again, &e) == NASC_OK && again == got, "naswot not deterministic");
    /* identical inputs: every code equal, K has rank 1 */
    float same[12] = {1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1};
    CHECK(proxy_naswot(&net, same, 3, &got, &e) == NASC_OK && isinf(got) && got < 0,
          "naswot of identical inputs: %g, want -inf", got);
    net_free(&net);
    /* no ReLU: an error */
    if (build(&net, "gap; linear", 1, 2, 2, 3)) {
        CHECK(proxy_naswot(&net, x, 3, &got, &e) == NASC_ERR && strstr(e.msg, "ReLU"), "naswot without ReLU: %s",
              e.msg);
        net_free(&net);
    }
    double a[9] = {2, 1, 0, 1, 3, 1, 0, 1, 4}; /* det 18 */
    CHECK_CLOSE(proxy_logabsdet(a, 3), log(18.0), 1e-12, 0, "logabsdet");
    double neg[4] = {0, 2, 3, 0}; /* det -6: needs a pivot swap */
    CHECK_CLOSE(proxy_logabsdet(neg, 2), log(6.0), 1e-12, 0, "logabsdet with pivoting");
    double sing[4] = {1, 2, 2, 4};
    CHECK(isinf(proxy_logabsdet(sing, 2)), "singular matrix");
}

/* ------------------------------------------------------------------ gradnorm */
static void test_gradnorm_manual(void) {
    Net net;
    if (!build(&net, "conv(c=4,k=3); bn; relu; maxpool(k=2); conv(c=4,k=3,bias=1); bn; relu; gap; linear", 1, 8, 8,
               5)) {
        CHECK(0, "build");
        return;
    }
    net_init_params(&net, 5);
    const int n = 6, k = 5;
    float x[6 * 64];
    int y[6];
    Rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < n * 64; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < n; i++) y[i] = (int)rng_below(&r, k);
    Snap s0 = snap_take(&net);
    double got, again;
    Err e = {{0}};
    CHECK(proxy_score("gradnorm", &net, x, y, n, &got, &e) == NASC_OK, "gradnorm: %s", e.msg);
    CHECK(snap_same(&s0, &net), "gradnorm changed the network");
    CHECK(proxy_gradnorm(&net, x, y, n, &again, &e) == NASC_OK && again == got, "gradnorm not deterministic");
    /* by hand on the network itself */
    net_zero_grad(&net);
    const float *logits = net_forward(&net, x, n, 1);
    float probs[6 * 5], dl[6 * 5] = {0};
    xent_forward_ref(probs, logits, y, n, k, 0);
    xent_backward_ref(dl, probs, y, n, k, 0, 1);
    net_backward(&net, dl);
    double want = 0;
    for (size_t j = 0; j < net.nparams; j++) want += (double)net.grads[j] * net.grads[j];
    want = sqrt(want);
    CHECK(want > 0, "zero gradient");
    CHECK_CLOSE(got, want, 0, 1e-6, "gradnorm vs manual backward");
    /* labels out of range, no labels, empty batch, unknown proxy */
    y[2] = 9;
    CHECK(proxy_gradnorm(&net, x, y, n, &got, &e) == NASC_ERR && strstr(e.msg, "label 9"), "bad label: %s", e.msg);
    CHECK(proxy_gradnorm(&net, x, NULL, n, &got, &e) == NASC_ERR && strstr(e.msg, "labels"), "no labels: %s", e.msg);
    CHECK(proxy_score("synflow", &net, x, NULL, 0, &got, &e) == NASC_ERR && strstr(e.msg, "empty"), "n = 0: %s",
          e.msg);
    CHECK(proxy_score("jacov", &net, x, y, n, &got, &e) == NASC_ERR && strstr(e.msg, "synflow, naswot, gradnorm"),
          "unknown proxy: %s", e.msg);
    snap_free(&s0);
    net_free(&net);
}

/* ------------------------------------------------------------------ NB201 sanity */
static void test_nb201_finite(void) {
    static const char *cells[] = {
        "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
        "nb201:|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
        "nb201:|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|",
        /* disconnected (node 2 is zero): no synaptic flow from input to output */
        "nb201:|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|",
    };
    const int n = 8, px = 28 * 28;
    float *x = xmalloc((size_t)n * px * sizeof *x);
    int y[8];
    Rng r;
    rng_seed(&r, 42);
    for (int i = 0; i < n * px; i++) x[i] = (float)((rng_below(&r, 256) / 255.0 - 0.2860) / 0.3530);
    for (int i = 0; i < n; i++) y[i] = (int)rng_below(&r, 10);
    for (int c = 0; c < 4; c++) {
        Net net;
        if (!build(&net, cells[c], 1, 28, 28, 10)) {
            CHECK(0, "build %s", cells[c]);
            continue;
        }
        net_init_params(&net, 100 + c);
        Snap s0 = snap_take(&net);
        double sc[3];
        const char *names[3] = {"synflow", "naswot", "gradnorm"};
        for (int p = 0; p < 3; p++) {
            Err e = {{0}};
            int rc = proxy_score(names[p], &net, x, y, n, &sc[p], &e);
            if (c < 3 || p != 0)
                CHECK(rc == NASC_OK && isfinite(sc[p]), "%s of %s: %g %s", names[p], cells[c], sc[p], e.msg);
            else
                CHECK(rc == NASC_OK && isinf(sc[p]) && sc[p] < 0, "%s of the disconnected %s: %g, want -inf %s",
                      names[p], cells[c], sc[p], e.msg);
        }
        CHECK(snap_same(&s0, &net), "proxies changed the network of %s", cells[c]);
        printf("%-100s synflow %8.3f  naswot %8.3f  gradnorm %8.4f\n", cells[c], sc[0], sc[1], sc[2]);
        snap_free(&s0);
        net_free(&net);
    }
    free(x);
}

int main(void) {
    threads_set(1);
    test_synflow_closed_form();
    test_naswot_by_hand();
    test_gradnorm_manual();
    test_nb201_finite();
    return check_summary("test_proxies");
}
