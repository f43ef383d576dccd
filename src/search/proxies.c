/* proxies.c: zero-cost proxies (definitions and conventions in proxies.h).
 *
 * Design: every proxy runs on a private copy of the network (net_build from net->spec, then
 * the parameters and BN statistics copied in), so the caller's network, its gradients, BN
 * statistics, activation buffers and dropout generator are untouched, and a proxy cannot
 * leak state into the next one. Dropout is switched off in the copy (p = 0) so scores are
 * deterministic.
 *
 * synflow and BN. Tanaka et al. score the network with every entry of the state dict (weights,
 * biases, BN affine parameters and running statistics) replaced by its absolute value and the
 * model in eval mode, so BN is the fixed affine map y = (x - |mean|) |gamma| / sqrt(|var| + eps)
 * + |beta| and the whole computation stays linear in the flow (ReLUs are the identity on the
 * nonnegative values; saturating activations such as ReLU6 keep their behaviour, as in the
 * reference implementations). nasc's BN has no eval-mode backward, so the copy replaces each BN
 * node by a per-channel affine node that has one: a depthwise 1x1 conv with bias (groups = C)
 * whose weight and bias are exactly that map's scale and shift (eps = 1e-5 as in net.c). The
 * sum is over the weights of the network's own conv and linear nodes (the prunable layers of
 * Tanaka's and Abdelfattah's code), not over biases or the BN stand-ins. The forward and
 * backward run in float (the engine's kernels); the per-weight products are summed in double
 * and the log is reported. A float overflow (inf/NaN anywhere in R or the sum), possible only
 * in very deep, wide networks, is an error rather than a silently wrong score.
 *
 * naswot. ReLU codes are read from the outputs of ReLU and ReLU6 nodes (y > 0 iff x > 0), BN
 * in training mode (batch statistics, the PyTorch default of Mellor's code). Codes are packed
 * 64 to a word; K[i][j] accumulates (units - popcount(code_i xor code_j)) per ReLU node in
 * double, and log|det K| comes from an LU factorization with partial pivoting.
 */
#include "proxies.h"

#include <float.h>
#include <math.h>

#include "../ops/ops.h"

#define PROXY_BN_EPS 1e-5

const char *proxy_names(void) { return "synflow, naswot, gradnorm"; }

/* A copy of net (same spec, parameters and BN statistics), dropout off. With bn_affine, each
 * BN node becomes a depthwise 1x1 conv with bias (its parameter layout, weight (C) then bias
 * (C), matches BN's gamma then beta; values are set by the caller). */
static int proxy_copy(Net *dst, const Net *src, int bn_affine, Err *e) {
    Spec sp = {0};
    sp.n = sp.cap = src->spec.n;
    sp.nodes = xmalloc((size_t)sp.n * sizeof *sp.nodes);
    memcpy(sp.nodes, src->spec.nodes, (size_t)sp.n * sizeof *sp.nodes);
    for (int i = 0; i < sp.n; i++) {
        Node *nd = &sp.nodes[i];
        if (nd->op == OP_DROPOUT) nd->a.drop = 0;
        if (bn_affine && nd->op == OP_BN) {
            OpAttr a = op_default_attr(OP_CONV);
            a.c = src->spec.nodes[i].c;
            a.k = 1, a.s = 1, a.p = 0, a.d = 1, a.g = a.c, a.bias = 1;
            nd->op = OP_CONV;
            nd->a = a;
        }
    }
    int rc = net_build(dst, &sp, src->in_c, src->in_h, src->in_w, src->classes, e);
    free(sp.nodes);
    if (rc != NASC_OK) return NASC_ERR;
    if (!bn_affine) {
        NASC_ASSERT(dst->nparams == src->nparams && dst->nbuffers == src->nbuffers);
        memcpy(dst->params, src->params, src->nparams * sizeof *src->params);
        if (src->nbuffers) memcpy(dst->buffers, src->buffers, src->nbuffers * sizeof *src->buffers);
    }
    return NASC_OK;
}

static int check_batch(const Net *net, const float *x, int n, Err *e) {
    if (!net || net->spec.n < 1 || !net->params) {
        err_set(e, "proxy: no network");
        return NASC_ERR;
    }
    if (!x || n < 1) {
        err_set(e, "proxy: an empty batch (n = %d)", n);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* ------------------------------------------------------------------ synflow */
int proxy_synflow(Net *net, const float *x, int n, double *score, Err *e) {
    if (check_batch(net, x, n, e) != NASC_OK) return NASC_ERR;
    Net c;
    if (proxy_copy(&c, net, 1, e) != NASC_OK) return NASC_ERR;
    NASC_ASSERT(c.nparams == net->nparams); /* BN (2C) and its stand-in (C + C) have the same size */
    for (size_t j = 0; j < net->nparams; j++) c.params[j] = fabsf(net->params[j]);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN) continue;
        const float *g = net->params + nd->param_off, *b = g + nd->c;
        const float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
        float *w = c.params + c.spec.nodes[i].param_off, *bias = w + nd->c;
        for (int ch = 0; ch < nd->c; ch++) {
            double scale = fabs((double)g[ch]) / sqrt(fabs((double)rv[ch]) + PROXY_BN_EPS);
            w[ch] = (float)scale;
            bias[ch] = (float)(fabs((double)b[ch]) - fabs((double)rm[ch]) * scale);
        }
    }
    size_t in = (size_t)net->in_c * net->in_h * net->in_w;
    float *ones = xmalloc(in * sizeof *ones);
    for (size_t j = 0; j < in; j++) ones[j] = 1.0f;
    const float *out = net_forward(&c, ones, 1, 1);
    double R = 0;
    for (int k = 0; k < c.classes; k++) R += out[k];
    float *dl = xmalloc((size_t)c.classes * sizeof *dl);
    for (int k = 0; k < c.classes; k++) dl[k] = 1.0f;
    net_backward(&c, dl);
    double s = 0;
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        size_t nw = nd->nparam - (nd->a.bias ? (size_t)nd->c : 0);
        const float *p = c.params + nd->param_off, *g = c.grads + nd->param_off;
        for (size_t j = 0; j < nw; j++) s += fabs((double)p[j] * (double)g[j]);
    }
    free(ones);
    free(dl);
    net_free(&c);
    if (!isfinite(R) || !isfinite(s)) {
        err_set(e, "synflow: the flow overflowed float range (R = %g); the network is too deep or wide for a float "
                   "synflow", R);
        return NASC_ERR;
    }
    *score = s > 0 ? log(s) : -INFINITY;
    return NASC_OK;
}

/* ------------------------------------------------------------------ naswot */
double proxy_logabsdet(double *a, int n) {
    double amax = 0;
    for (int i = 0; i < n * n; i++) amax = fmax(amax, fabs(a[i]));
    if (!(amax > 0)) return -INFINITY;
    double tol = n * DBL_EPSILON * amax, ld = 0;
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[p * n + k])) p = i;
        if (!(fabs(a[p * n + k]) > tol)) return -INFINITY;
        if (p != k)
            for (int j = 0; j < n; j++) {
                double t = a[k * n + j];
                a[k * n + j] = a[p * n + j];
                a[p * n + j] = t;
            }
        double piv = a[k * n + k];
        ld += log(fabs(piv));
        for (int i = k + 1; i < n; i++) {
            double f = a[i * n + k] / piv;
            if (f == 0) continue;
            for (int j = k + 1; j < n; j++) a[i * n + j] -= f * a[k * n + j];
        }
    }
    return ld;
}

int proxy_naswot(Net *net, const float *x, int n, double *score, Err *e) {
    if (check_batch(net, x, n, e) != NASC_OK) return NASC_ERR;
    Net c;
    if (proxy_copy(&c, net, 0, e) != NASC_OK) return NASC_ERR;
    c.store_outputs = 1; /* the ReLU outputs are read below */
    net_forward(&c, x, n, 1);
    double *K = xcalloc((size_t)n * n, sizeof *K);
    uint64_t *code = NULL;
    size_t code_cap = 0;
    int nrelu = 0;
    for (int i = 0; i < c.spec.n; i++) {
        const Node *nd = &c.spec.nodes[i];
        if (nd->op != OP_RELU && nd->op != OP_RELU6) continue;
        nrelu++;
        size_t units = (size_t)nd->c * nd->h * nd->w, words = (units + 63) / 64;
        if (words * n > code_cap) {
            code_cap = words * n;
            code = xrealloc(code, code_cap * sizeof *code);
        }
        memset(code, 0, words * n * sizeof *code);
        for (int s = 0; s < n; s++) {
            const float *o = c.out[i] + units * s;
            uint64_t *cw = code + words * s;
            for (size_t u = 0; u < units; u++)
                if (o[u] > 0) cw[u >> 6] |= (uint64_t)1 << (u & 63);
        }
        for (int a = 0; a < n; a++)
            for (int b = a; b < n; b++) {
                const uint64_t *ca = code + words * a, *cb = code + words * b;
                size_t ham = 0;
                for (size_t w = 0; w < words; w++) ham += (size_t)__builtin_popcountll(ca[w] ^ cb[w]);
                double agree = (double)(units - ham);
                K[a * n + b] += agree;
                if (b != a) K[b * n + a] += agree;
            }
    }
    free(code);
    net_free(&c);
    if (nrelu == 0) {
        free(K);
        err_set(e, "naswot: the network has no ReLU or ReLU6 activation to read codes from");
        return NASC_ERR;
    }
    *score = proxy_logabsdet(K, n);
    free(K);
    return NASC_OK;
}

/* ------------------------------------------------------------------ gradnorm */
int proxy_gradnorm(Net *net, const float *x, const int *y, int n, double *score, Err *e) {
    if (check_batch(net, x, n, e) != NASC_OK) return NASC_ERR;
    if (!y) {
        err_set(e, "gradnorm: needs the batch's labels");
        return NASC_ERR;
    }
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= net->classes) {
            err_set(e, "gradnorm: label %d of sample %d is outside [0, %d)", y[i], i, net->classes);
            return NASC_ERR;
        }
    Net c;
    if (proxy_copy(&c, net, 0, e) != NASC_OK) return NASC_ERR;
    int k = c.classes;
    const float *logits = net_forward(&c, x, n, 1);
    float *probs = xmalloc((size_t)n * k * sizeof *probs), *dl = xcalloc((size_t)n * k, sizeof *dl);
    xent_forward_ref(probs, logits, y, n, k, 0);
    xent_backward_ref(dl, probs, y, n, k, 0, 1);
    net_backward(&c, dl);
    double s = 0;
    for (size_t j = 0; j < c.nparams; j++) s += (double)c.grads[j] * c.grads[j];
    free(probs);
    free(dl);
    net_free(&c);
    if (!isfinite(s)) {
        err_set(e, "gradnorm: the gradient is not finite");
        return NASC_ERR;
    }
    *score = sqrt(s);
    return NASC_OK;
}

int proxy_score(const char *name, Net *net, const float *x, const int *y, int n, double *score, Err *e) {
    if (name && strcmp(name, "synflow") == 0) return proxy_synflow(net, x, n, score, e);
    if (name && strcmp(name, "naswot") == 0) return proxy_naswot(net, x, n, score, e);
    if (name && strcmp(name, "gradnorm") == 0) return proxy_gradnorm(net, x, y, n, score, e);
    err_set(e, "proxy: unknown proxy '%s' (expected one of: %s)", name ? name : "(none)", proxy_names());
    return NASC_ERR;
}
