/* qat.c: quantization-aware training through the Net's hooks (see qat.h). */
#include <math.h>

#include "qat.h"
#include "quant.h"

void qat_fake_quant(float *x, unsigned char *mask, size_t n, float lo, float hi) {
    float scale;
    int32_t zp;
    quant_act_params(lo, hi, &scale, &zp);
    float inv = 1.0f / scale;
    for (size_t i = 0; i < n; i++) {
        float r = nearbyintf(x[i] * inv) + (float)zp;
        int inside = r >= -128.0f && r <= 127.0f;
        if (r < -128.0f) r = -128.0f;
        if (r > 127.0f) r = 127.0f;
        if (mask) mask[i] = (unsigned char)inside;
        x[i] = scale * (r - (float)zp);
    }
}

void qat_fake_quant_weight(float *w, int cout, size_t per) {
    float *ws = xmalloc((size_t)cout * sizeof(float));
    int8_t *q = xmalloc((size_t)cout * per);
    quant_weight_scales(ws, w, cout, per);
    quant_weights(q, w, ws, cout, per);
    for (int c = 0; c < cout; c++)
        for (size_t j = 0; j < per; j++) w[(size_t)c * per + j] = ws[c] * (float)q[(size_t)c * per + j];
    free(ws);
    free(q);
}

/* The weights of node i that get rounded: (cout, per) at net->params + param_off. */
static int node_weight(const Net *net, int i, int *cout, size_t *per) {
    const Node *nd = &net->spec.nodes[i];
    if (nd->op != OP_CONV && nd->op != OP_LINEAR) return 0;
    size_t nw = nd->nparam - (nd->a.bias ? (size_t)nd->c : 0);
    *cout = nd->c;
    *per = nw / (size_t)nd->c;
    return 1;
}

static void round_weights(Qat *q) {
    Net *net = q->net;
    if (!q->swapped) memcpy(q->master, net->params, net->nparams * sizeof(float));
    else memcpy(net->params, q->master, net->nparams * sizeof(float));
    for (int i = 0; i < q->n; i++) {
        int cout;
        size_t per;
        if (node_weight(net, i, &cout, &per)) qat_fake_quant_weight(net->params + net->spec.nodes[i].param_off, cout, per);
    }
    q->swapped = 1;
}

/* Updates the range of tensor t (0 = input, i + 1 = node i) from n values in training mode. */
static void observe(Qat *q, int t, const float *x, size_t n) {
    if (!q->net->training) return;
    float mn = x[0], mx = x[0];
    for (size_t i = 1; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (!q->seen[t]) {
        q->lo[t] = mn, q->hi[t] = mx, q->seen[t] = 1;
    } else {
        q->lo[t] += q->averaging * (mn - q->lo[t]);
        q->hi[t] += q->averaging * (mx - q->hi[t]);
    }
}

static void hook_fwd(void *ctx, Net *net, int i) {
    Qat *q = ctx;
    size_t n;
    if (i < 0) {
        round_weights(q);
        if (!q->point[0]) return;
        n = (size_t)net->batch * net->in_c * net->in_h * net->in_w;
        if (n > q->xq_cap) {
            free(q->xq);
            q->xq = xalloc_aligned(n * sizeof(float));
            q->xq_cap = n;
        }
        memcpy(q->xq, net->x, n * sizeof(float));
        observe(q, 0, q->xq, n);
        if (q->seen[0]) qat_fake_quant(q->xq, NULL, n, q->lo[0], q->hi[0]);
        net->x = q->xq;
        return;
    }
    if (!q->point[i + 1]) return;
    const Node *nd = &net->spec.nodes[i];
    n = (size_t)net->batch * nd->c * nd->h * nd->w;
    observe(q, i + 1, net->out[i], n);
    if (!q->seen[i + 1]) return;
    if (n > q->mask_cap[i]) {
        free(q->mask[i]);
        q->mask[i] = xmalloc(n);
        q->mask_cap[i] = n;
    }
    qat_fake_quant(net->out[i], net->training ? q->mask[i] : NULL, n, q->lo[i + 1], q->hi[i + 1]);
}

static void hook_bwd(void *ctx, Net *net, int i) {
    Qat *q = ctx;
    if (i < 0) {
        qat_restore(q);
        return;
    }
    if (!q->point[i + 1] || !q->seen[i + 1] || !q->mask[i]) return;
    const Node *nd = &net->spec.nodes[i];
    size_t n = (size_t)net->batch * nd->c * nd->h * nd->w;
    float *d = net->dout[i];
    const unsigned char *m = q->mask[i];
    for (size_t j = 0; j < n; j++)
        if (!m[j]) d[j] = 0;
}

void qat_init(Qat *q, Net *net) {
    memset(q, 0, sizeof *q);
    q->net = net;
    q->n = net->spec.n;
    q->point = xcalloc((size_t)q->n + 1, 1);
    quant_tensor_mask(net, q->point);
    q->lo = xcalloc((size_t)q->n + 1, sizeof(float));
    q->hi = xcalloc((size_t)q->n + 1, sizeof(float));
    q->seen = xcalloc((size_t)q->n + 1, 1);
    q->averaging = 0.01f;
    q->mask = xcalloc((size_t)q->n, sizeof *q->mask);
    q->mask_cap = xcalloc((size_t)q->n, sizeof *q->mask_cap);
    q->master = xmalloc(net->nparams * sizeof(float));
    net->hook_fwd = hook_fwd;
    net->hook_bwd = hook_bwd;
    net->hook_ctx = q;
}

void qat_ranges(const Qat *q, QRanges *r) {
    qranges_init(r, q->n);
    for (int t = 0; t <= q->n; t++)
        if (q->point[t] && q->seen[t]) r->lo[t] = q->lo[t], r->hi[t] = q->hi[t];
}

void qat_restore(Qat *q) {
    if (!q->swapped) return;
    memcpy(q->net->params, q->master, q->net->nparams * sizeof(float));
    q->swapped = 0;
}

void qat_free(Qat *q) {
    if (!q->net) return;
    qat_restore(q);
    q->net->hook_fwd = NULL;
    q->net->hook_bwd = NULL;
    q->net->hook_ctx = NULL;
    for (int i = 0; i < q->n; i++) free(q->mask[i]);
    free(q->mask);
    free(q->mask_cap);
    free(q->point);
    free(q->lo);
    free(q->hi);
    free(q->seen);
    free(q->master);
    free(q->xq);
    memset(q, 0, sizeof *q);
}
