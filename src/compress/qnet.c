/* qnet.c: the int8 network. Lowering a float Net (its own tape, node indices kept) into
 * executed int8 nodes and absorbed ones, quantizing weights (BN folded), tabulating LUTs and
 * requantization multipliers, and the executor that runs the result with the fast kernels
 * or the reference ones (quant.h states the rules and formulas).
 *
 * Values: index 0 is the network input, k + 1 is node k's output. An executed node writes
 * the value of the last node of its chain (a conv with a folded BN and a fused ReLU writes the
 * ReLU's value); absorbed nodes have no value of their own; aliases (id, dropout) share their
 * input's buffer and quantization. Every materialized value has its own buffer in one arena,
 * sized for the largest batch seen, so repeated batch-1 runs never allocate.
 */
#include <math.h>

#include "qnet_impl.h"

const char *qexec_name(QExecKind k) {
    static const char *names[QX_COUNT] = {"absorbed", "alias", "conv", "lut",  "maxpool", "avgpool",
                                          "gap",      "add",   "concat", "mul", "zero",    "resize"};
    return k < QX_COUNT ? names[k] : "?";
}

static size_t node_size(const Node *nd) { return (size_t)nd->c * nd->h * nd->w; }

/* Shape of input j of node nd (the network input when it is -1). */
static void in_shape(const QNet *q, const Node *nd, int j, int *c, int *h, int *w) {
    int k = nd->in[j];
    if (k < 0) {
        *c = q->in_c, *h = q->in_h, *w = q->in_w;
        return;
    }
    const Node *s = &q->spec.nodes[k];
    *c = s->c, *h = s->h, *w = s->w;
}

/* ------------------------------------------------------------------ planning */
/* The lowering of a tape (quant.h): kinds, chains (head, tail), folded BN, fused activation. */
static void qplan(const Spec *s, QNode *nodes) {
    int n = s->n;
    int *readers = xcalloc((size_t)n, sizeof *readers);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < s->nodes[i].nin; j++)
            if (s->nodes[i].in[j] >= 0) readers[s->nodes[i].in[j]]++;
    for (int i = 0; i < n; i++) {
        QNode *u = &nodes[i];
        u->head = u->tail = i;
        u->bn = u->act = -1;
        switch (s->nodes[i].op) {
        case OP_CONV:
        case OP_LINEAR:
        case OP_BN: u->kind = QX_CONV; break;
        case OP_RELU:
        case OP_RELU6:
        case OP_HSWISH:
        case OP_SIGMOID:
        case OP_HSIGMOID: u->kind = QX_LUT; break;
        case OP_MAXPOOL: u->kind = QX_MAXPOOL; break;
        case OP_AVGPOOL: u->kind = QX_AVGPOOL; break;
        case OP_GAP: u->kind = QX_GAP; break;
        case OP_ADD: u->kind = QX_ADD; break;
        case OP_CONCAT: u->kind = QX_CONCAT; break;
        case OP_MUL: u->kind = QX_MUL; break;
        case OP_ZERO: u->kind = QX_ZERO; break;
        case OP_ID:
        case OP_DROPOUT: u->kind = QX_ALIAS; break;
        case OP_RESIZE: u->kind = QX_RESIZE; break;
        default: NASC_ASSERT(!"unknown op");
        }
    }
    for (int i = 0; i < n; i++) {
        const Node *nd = &s->nodes[i];
        QNode *u = &nodes[i];
        int p = nd->in[0];
        if (p < 0) continue;
        if (nd->op == OP_BN) {
            QNode *src = &nodes[p];
            OpKind sop = s->nodes[p].op;
            if ((sop == OP_CONV || sop == OP_LINEAR) && src->tail == p && readers[p] == 1) {
                u->kind = QX_NONE;
                u->head = p;
                src->bn = i;
                src->tail = i;
            }
        } else if (nd->op == OP_RELU || nd->op == OP_RELU6) {
            if (nodes[p].kind == QX_ALIAS) continue;
            int h = nodes[p].head;
            QNode *hd = &nodes[h];
            if ((hd->kind == QX_CONV || hd->kind == QX_ADD) && hd->tail == p && hd->act < 0 && readers[p] == 1) {
                u->kind = QX_NONE;
                u->head = h;
                hd->act = i;
                hd->tail = i;
            }
        }
    }
    free(readers);
}

static int value_of(const Spec *s, const QNode *nodes, int k) {
    while (k >= 0 && nodes[k].kind == QX_ALIAS) k = s->nodes[k].in[0];
    if (k < 0) return 0;
    return nodes[nodes[k].head].tail == k ? k + 1 : -1;
}

int qnet_value(const QNet *q, int k) { return value_of(&q->spec, q->nodes, k); }

static int has_table_entry(QExecKind k) {
    return k == QX_CONV || k == QX_LUT || k == QX_AVGPOOL || k == QX_GAP || k == QX_ADD || k == QX_CONCAT ||
           k == QX_MUL || k == QX_RESIZE;
}

int qnet_has_table_entry(const QNet *q, int i) { return has_table_entry((QExecKind)q->nodes[i].kind); }

void quant_tensor_mask(const Net *net, uint8_t *mask) {
    int n = net->spec.n;
    QNode *nodes = xcalloc((size_t)n, sizeof *nodes);
    qplan(&net->spec, nodes);
    memset(mask, 0, (size_t)n + 1);
    mask[0] = 1;
    for (int i = 0; i < n; i++)
        if (has_table_entry((QExecKind)nodes[i].kind)) mask[nodes[i].tail + 1] = 1;
    free(nodes);
}

/* ------------------------------------------------------------------ setup */
/* The payload counts of executed node i (fixed by op and shapes). */
static void node_counts(const QNet *q, int i) {
    QNode *u = &q->nodes[i];
    const Node *nd = &q->spec.nodes[i];
    u->nw = u->nbias = u->nmult = u->nshift = u->nwscale = u->nlut = 0;
    int c, h, w;
    switch ((QExecKind)u->kind) {
    case QX_CONV: {
        in_shape(q, nd, 0, &c, &h, &w);
        uint32_t cout = (uint32_t)nd->c;
        if (nd->op == OP_CONV) u->nw = cout * (uint32_t)(c / nd->a.g) * (uint32_t)(nd->a.k * nd->a.k);
        else if (nd->op == OP_LINEAR) u->nw = cout * (uint32_t)(c * h * w);
        else u->nw = cout; /* BN: one weight per channel */
        int has_bias = nd->op == OP_BN || u->bn >= 0 || nd->a.bias;
        u->nbias = has_bias ? cout : 0;
        u->nmult = u->nshift = u->nwscale = cout;
        break;
    }
    case QX_LUT: u->nlut = 256; break;
    case QX_AVGPOOL: u->nmult = u->nshift = (uint32_t)(nd->a.k * nd->a.k); break;
    case QX_GAP:
    case QX_MUL:
    case QX_RESIZE: u->nmult = u->nshift = 1; break;
    case QX_CONCAT: u->nmult = u->nshift = (uint32_t)nd->nin; break;
    default: break;
    }
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

void qnet_setup(QNet *q, const Net *net) {
    memset(q, 0, sizeof *q);
    int n = net->spec.n;
    q->spec.n = q->spec.cap = n;
    q->spec.nodes = xmalloc((size_t)n * sizeof *q->spec.nodes);
    memcpy(q->spec.nodes, net->spec.nodes, (size_t)n * sizeof *q->spec.nodes);
    q->spec.arch = net->spec.arch ? xstrdup(net->spec.arch) : NULL;
    q->in_c = net->in_c, q->in_h = net->in_h, q->in_w = net->in_w, q->classes = net->classes;
    q->params = net_param_count(net);
    q->macs = net_macs(net);
    q->nodes = xcalloc((size_t)n, sizeof *q->nodes);
    q->scale = xcalloc((size_t)n + 1, sizeof *q->scale);
    q->zp = xcalloc((size_t)n + 1, sizeof *q->zp);
    q->val = xcalloc((size_t)n + 1, sizeof *q->val);
    qplan(&q->spec, q->nodes);
    /* The payload: one block, each array 16-byte aligned. */
    size_t total = 0;
    q->qtensors = 1;
    for (int i = 0; i < n; i++) {
        QNode *u = &q->nodes[i];
        if (u->kind == QX_NONE || u->kind == QX_ALIAS) continue;
        node_counts(q, i);
        if (has_table_entry((QExecKind)u->kind)) q->qtensors++;
        total += align16(u->nw) + align16(4 * (size_t)u->nbias) + align16(4 * (size_t)u->nmult) + align16(u->nshift) +
                 align16(4 * (size_t)u->nwscale) + align16(u->nlut);
        q->payload_bytes += u->nw + 4 * (size_t)u->nbias + 4 * (size_t)u->nmult + u->nshift + 4 * (size_t)u->nwscale +
                            u->nlut;
    }
    q->table_bytes = 8 * (size_t)q->qtensors;
    q->payload = xalloc_aligned(total ? total : 16);
    char *p = q->payload;
    for (int i = 0; i < n; i++) {
        QNode *u = &q->nodes[i];
        if (u->kind == QX_NONE || u->kind == QX_ALIAS) continue;
#define TAKE(field, count, size)                                                                                       \
    do {                                                                                                               \
        u->field = (count) ? (void *)p : NULL;                                                                         \
        p += align16((size_t)(count) * (size));                                                                        \
    } while (0)
        TAKE(w, u->nw, 1);
        TAKE(bias, u->nbias, 4);
        TAKE(mult, u->nmult, 4);
        TAKE(shift, u->nshift, 1);
        TAKE(wscale, u->nwscale, 4);
        TAKE(lut, u->nlut, 1);
#undef TAKE
    }
}

void qnet_derive(QNet *q) {
    for (int i = 0; i < q->spec.n; i++) {
        const QNode *u = &q->nodes[i];
        int v = qnet_value(q, q->spec.nodes[i].in[0]);
        if (u->kind == QX_MAXPOOL || u->kind == QX_ALIAS) {
            q->scale[i + 1] = q->scale[v];
            q->zp[i + 1] = q->zp[v];
        } else if (u->kind == QX_ZERO) {
            q->scale[i + 1] = q->scale[v];
            q->zp[i + 1] = 0;
        }
    }
}

/* The fused activation's clamp on value v. */
static void act_clamp(const QNet *q, int act, int v, int32_t *lo, int32_t *hi) {
    *lo = -128, *hi = 127;
    if (act < 0) return;
    *lo = q->zp[v];
    if (q->spec.nodes[act].op == OP_RELU6) {
        float six = nearbyintf(6.0f / q->scale[v]);
        *hi = six >= 255.0f ? 127 : NASC_MIN(127, q->zp[v] + (int32_t)six);
    }
}

void qnet_finish(QNet *q) {
    for (int i = 0; i < q->spec.n; i++) {
        QNode *u = &q->nodes[i];
        const Node *nd = &q->spec.nodes[i];
        if (u->kind == QX_NONE || u->kind == QX_ALIAS) continue;
        int c, h, w;
        in_shape(q, nd, 0, &c, &h, &w);
        int xv = qnet_value(q, nd->in[0]), yv = u->tail + 1;
        u->y_min = -128, u->y_max = 127;
        if (u->kind == QX_CONV || u->kind == QX_ADD) act_clamp(q, u->act, yv, &u->y_min, &u->y_max);
        if (u->kind == QX_CONV) {
            ConvDims d = {.n = 1, .cin = c, .h = h, .w = w, .cout = nd->c, .k = 1, .stride = 1, .pad = 0, .dil = 1,
                          .groups = 1};
            if (nd->op == OP_CONV) {
                d.k = nd->a.k;
                d.stride = nd->a.s;
                d.pad = nd->a.p < 0 ? nd->a.d * (nd->a.k - 1) / 2 : nd->a.p;
                d.dil = nd->a.d;
                d.groups = nd->a.g;
            } else if (nd->op == OP_LINEAR) {
                d.cin = c * h * w;
                d.h = d.w = 1;
            } else {
                d.groups = c;
            }
            NASC_ASSERT(conv_dims_init(&d, NULL) == NASC_OK);
            u->ca = (QConvArgs){.d = d, .x_zp = q->zp[xv], .y_zp = q->zp[yv], .y_min = u->y_min, .y_max = u->y_max};
            if (u->packed) qconv_free(u->packed);
            u->packed = qconv_pack(u->w, u->bias, u->mult, u->shift, &u->ca);
        } else if (u->kind == QX_MAXPOOL || u->kind == QX_AVGPOOL) {
            u->pd = (PoolDims){.n = 1, .c = c, .h = h, .w = w, .k = nd->a.k, .stride = nd->a.s ? nd->a.s : nd->a.k,
                               .pad = nd->a.p < 0 ? 0 : nd->a.p, .count_include_pad = nd->a.cip};
            NASC_ASSERT(pool_dims_init(&u->pd, NULL) == NASC_OK);
        }
    }
}

/* ------------------------------------------------------------------ building from a float net */
static int32_t clamp_bias(double b) {
    const double lim = 1073741824.0; /* 2^30 */
    if (!(b > -lim)) return -(int32_t)1073741824;
    if (b > lim) return (int32_t)1073741824;
    return (int32_t)llround(b);
}

/* Folded float weights wf (cout, per) and bias bf (cout) of QX_CONV head i. */
static void conv_fold(const QNet *q, const Net *net, int i, float *wf, double *bf, size_t per) {
    const QNode *u = &q->nodes[i];
    const Node *nd = &net->spec.nodes[i];
    int cout = nd->c;
    if (nd->op == OP_BN) { /* standalone: y = a x + b per channel */
        const float *g = net->params + nd->param_off, *be = g + cout;
        const float *mean = net->buffers + nd->buf_off, *var = mean + cout;
        for (int c = 0; c < cout; c++) {
            double a = (double)g[c] / sqrt((double)var[c] + (double)QUANT_BN_EPS);
            wf[c] = (float)a;
            bf[c] = (double)be[c] - (double)mean[c] * a;
        }
        return;
    }
    const float *wt = net->params + nd->param_off;
    for (int c = 0; c < cout; c++) bf[c] = nd->a.bias ? (double)wt[(size_t)cout * per + c] : 0.0;
    if (u->bn < 0) {
        memcpy(wf, wt, (size_t)cout * per * sizeof *wf);
        return;
    }
    const Node *bn = &net->spec.nodes[u->bn];
    const float *g = net->params + bn->param_off, *be = g + cout;
    const float *mean = net->buffers + bn->buf_off, *var = mean + cout;
    for (int c = 0; c < cout; c++) {
        double s = (double)g[c] / sqrt((double)var[c] + (double)QUANT_BN_EPS);
        for (size_t k = 0; k < per; k++) wf[c * per + k] = (float)((double)wt[c * per + k] * s);
        bf[c] = (bf[c] - (double)mean[c]) * s + (double)be[c];
    }
}

static void build_conv(QNet *q, const Net *net, int i) {
    QNode *u = &q->nodes[i];
    int cout = q->spec.nodes[i].c;
    size_t per = u->nw / (size_t)cout;
    float *wf = xmalloc(u->nw * sizeof *wf);
    double *bf = xmalloc((size_t)cout * sizeof *bf);
    conv_fold(q, net, i, wf, bf, per);
    quant_weight_scales(u->wscale, wf, cout, per);
    quant_weights(u->w, wf, u->wscale, cout, per);
    double xs = q->scale[qnet_value(q, q->spec.nodes[i].in[0])], ys = q->scale[u->tail + 1];
    for (int c = 0; c < cout; c++) {
        if (u->bias) u->bias[c] = clamp_bias(bf[c] / (xs * (double)u->wscale[c]));
        /* ONNX Runtime's output scale, in float: x_scale * w_scale / y_scale (qops.h). Its 24
         * significant bits fit mult exactly. */
        float r = (float)xs * u->wscale[c] / (float)ys;
        quant_multiplier((double)r, &u->mult[c], &u->shift[c]);
    }
    free(wf);
    free(bf);
}

static ActKind lut_act(OpKind op) {
    switch (op) {
    case OP_RELU: return ACT_RELU;
    case OP_RELU6: return ACT_RELU6;
    case OP_HSWISH: return ACT_HSWISH;
    case OP_SIGMOID: return ACT_SIGMOID;
    default: return ACT_HSIGMOID;
    }
}

static void build_node(QNet *q, const Net *net, int i) {
    QNode *u = &q->nodes[i];
    const Node *nd = &q->spec.nodes[i];
    int xv = qnet_value(q, nd->in[0]), yv = u->tail + 1;
    double xs = q->scale[xv], ys = q->scale[yv];
    int c, h, w;
    in_shape(q, nd, 0, &c, &h, &w);
    switch ((QExecKind)u->kind) {
    case QX_CONV: build_conv(q, net, i); break;
    case QX_LUT:
        for (int v = -128; v <= 127; v++) {
            float x = q->scale[xv] * (float)(v - q->zp[xv]), y;
            act_forward_ref(lut_act(nd->op), &y, &x, 1);
            quantize_ref(&u->lut[v + 128], &y, 1, q->scale[yv], q->zp[yv]);
        }
        break;
    case QX_AVGPOOL:
        for (uint32_t d = 1; d <= u->nmult; d++) quant_multiplier(xs / (ys * d), &u->mult[d - 1], &u->shift[d - 1]);
        break;
    case QX_GAP: { /* ONNX Runtime's float scale (qops.h) */
        float r = (float)xs / ((float)ys * (float)(h * w));
        quant_multiplier((double)r, &u->mult[0], &u->shift[0]);
        break;
    }
    case QX_MUL: quant_multiplier(xs * (double)q->scale[qnet_value(q, nd->in[1])] / ys, &u->mult[0], &u->shift[0]); break;
    case QX_RESIZE:
        quant_multiplier(xs / (ys * qresize_unit(h, nd->h) * qresize_unit(w, nd->w)), &u->mult[0], &u->shift[0]);
        break;
    case QX_CONCAT:
        for (int j = 0; j < nd->nin; j++)
            quant_multiplier((double)q->scale[qnet_value(q, nd->in[j])] / ys, &u->mult[j], &u->shift[j]);
        break;
    default: break;
    }
}

int qnet_build(QNet *q, const Net *net, const QRanges *r, Err *e) {
    NASC_ASSERT(r->n == net->spec.n);
    qnet_setup(q, net);
    int n = net->spec.n;
    /* The table: the input, then every executed node's value that has its own entry. */
    for (int t = 0; t <= n; t++) {
        int needed = t == 0 || (q->nodes[t - 1].kind != QX_NONE && qnet_has_table_entry(q, t - 1));
        if (!needed) continue;
        int v = t == 0 ? 0 : q->nodes[t - 1].tail + 1;
        float lo = r->lo[v], hi = r->hi[v];
        if (!isfinite(lo) || !isfinite(hi) || lo > hi) {
            if (v == 0) err_set(e, "quantization range of the network input is [%g, %g]", lo, hi);
            else
                err_set(e, "quantization range of statement %d (%s) is [%g, %g]: needs finite lo <= hi", v,
                        op_name(q->spec.nodes[v - 1].op), lo, hi);
            qnet_free(q);
            return NASC_ERR;
        }
        quant_act_params(lo, hi, &q->scale[v], &q->zp[v]);
    }
    qnet_derive(q);
    for (int i = 0; i < n; i++)
        if (q->nodes[i].kind != QX_NONE && q->nodes[i].kind != QX_ALIAS) build_node(q, net, i);
    qnet_finish(q);
    return NASC_OK;
}

void qnet_free(QNet *q) {
    if (q->nodes)
        for (int i = 0; i < q->spec.n; i++) qconv_free(q->nodes[i].packed);
    spec_free(&q->spec);
    free(q->nodes);
    free(q->scale);
    free(q->zp);
    free(q->payload);
    free(q->arena);
    free(q->val);
    memset(q, 0, sizeof *q);
}

size_t qnet_weight_count(const QNet *q) {
    size_t s = 0;
    for (int i = 0; i < q->spec.n; i++) s += q->nodes[i].nw + q->nodes[i].nbias;
    return s;
}

/* ------------------------------------------------------------------ executor */
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static void qnet_reserve(QNet *q, int batch) {
    if (batch <= q->batch_cap) return;
    int n = q->spec.n;
    size_t in = (size_t)q->in_c * q->in_h * q->in_w;
    size_t total = round64(in * (size_t)batch);
    for (int i = 0; i < n; i++) {
        const QNode *u = &q->nodes[i];
        if (u->kind == QX_NONE || u->kind == QX_ALIAS) continue;
        total += round64(node_size(&q->spec.nodes[u->tail]) * (size_t)batch);
    }
    free(q->arena);
    q->arena = xalloc_aligned(total);
    int8_t *p = q->arena;
    memset(q->val, 0, ((size_t)n + 1) * sizeof *q->val);
    q->val[0] = p;
    p += round64(in * (size_t)batch);
    for (int i = 0; i < n; i++) {
        const QNode *u = &q->nodes[i];
        if (u->kind == QX_NONE) continue;
        if (u->kind == QX_ALIAS) {
            q->val[i + 1] = q->val[qnet_value(q, i)];
            continue;
        }
        q->val[u->tail + 1] = p;
        p += round64(node_size(&q->spec.nodes[u->tail]) * (size_t)batch);
    }
    q->batch_cap = batch;
}

static void run_node(QNet *q, int i, int n, int ref) {
    const QNode *u = &q->nodes[i];
    const Node *nd = &q->spec.nodes[i];
    int xv = qnet_value(q, nd->in[0]), yv = u->tail + 1;
    const int8_t *x = q->val[xv];
    int8_t *y = q->val[yv];
    int c, h, w;
    in_shape(q, nd, 0, &c, &h, &w);
    size_t out = node_size(nd) * (size_t)n;
    switch ((QExecKind)u->kind) {
    case QX_CONV:
        if (ref) {
            QConvArgs a = u->ca;
            a.d.n = n;
            qconv2d_ref(y, x, u->w, u->bias, u->mult, u->shift, &a);
        } else {
            qconv2d(y, x, u->packed, n);
        }
        break;
    case QX_LUT: (ref ? qlut_ref : qlut)(y, x, u->lut, out); break;
    case QX_MAXPOOL: {
        PoolDims d = u->pd;
        d.n = n;
        (ref ? qmaxpool_ref : qmaxpool)(y, x, &d);
        break;
    }
    case QX_AVGPOOL: {
        PoolDims d = u->pd;
        d.n = n;
        (ref ? qavgpool_ref : qavgpool)(y, x, &d, q->zp[xv], q->zp[yv], u->mult, u->shift);
        break;
    }
    case QX_GAP: (ref ? qgap_ref : qgap)(y, x, n, c, h * w, q->zp[xv], q->zp[yv], u->mult[0], u->shift[0]); break;
    case QX_ADD:
    case QX_CONCAT: {
        const int8_t *xs[NODE_MAX_IN];
        int32_t zps[NODE_MAX_IN];
        int cs[NODE_MAX_IN];
        for (int j = 0; j < nd->nin; j++) {
            int v = qnet_value(q, nd->in[j]);
            xs[j] = q->val[v];
            zps[j] = q->zp[v];
            int hh, ww;
            in_shape(q, nd, j, &cs[j], &hh, &ww);
        }
        if (u->kind == QX_ADD) {
            float xsc[NODE_MAX_IN];
            for (int j = 0; j < nd->nin; j++) xsc[j] = q->scale[qnet_value(q, nd->in[j])];
            QAddArgs a = {.nin = nd->nin, .x_zp = zps, .x_scale = xsc, .y_scale = q->scale[yv], .y_zp = q->zp[yv],
                          .y_min = u->y_min, .y_max = u->y_max};
            (ref ? qadd_ref : qadd)(y, xs, out, &a);
        } else {
            (ref ? qconcat_ref : qconcat)(y, xs, cs, nd->nin, n, nd->h * nd->w, zps, u->mult, u->shift, q->zp[yv]);
        }
        break;
    }
    case QX_MUL: {
        int sv = qnet_value(q, nd->in[1]);
        (ref ? qchmul_ref : qchmul)(y, x, q->val[sv], n, c, h * w, q->zp[xv], q->zp[sv], q->zp[yv], u->mult[0],
                                    u->shift[0]);
        break;
    }
    case QX_ZERO: memset(y, (int)q->zp[yv], out); break;
    case QX_RESIZE:
        (ref ? qresize_ref : qresize)(y, x, n * c, h, w, nd->h, nd->w, q->zp[xv], q->zp[yv], u->mult[0], u->shift[0]);
        break;
    default: NASC_ASSERT(!"not an executed node");
    }
}

static int out_value(const QNet *q) {
    int v = qnet_value(q, q->spec.n - 1);
    NASC_ASSERT(v >= 0);
    return v;
}

float qnet_out_scale(const QNet *q) { return q->scale[out_value(q)]; }
int32_t qnet_out_zp(const QNet *q) { return q->zp[out_value(q)]; }

static void qnet_run(QNet *q, int n, int ref) {
    for (int i = 0; i < q->spec.n; i++) {
        QExecKind k = (QExecKind)q->nodes[i].kind;
        if (k != QX_NONE && k != QX_ALIAS) run_node(q, i, n, ref);
    }
}

void qnet_forward_int8(QNet *q, const int8_t *x, int n, int8_t *y, int ref) {
    qnet_reserve(q, n);
    memcpy(q->val[0], x, (size_t)q->in_c * q->in_h * q->in_w * n);
    qnet_run(q, n, ref);
    memcpy(y, q->val[out_value(q)], (size_t)q->classes * n);
}

void qnet_forward(QNet *q, const float *x, int n, float *logits) {
    qnet_reserve(q, n);
    quantize(q->val[0], x, (size_t)q->in_c * q->in_h * q->in_w * n, q->scale[0], q->zp[0]);
    qnet_run(q, n, 0);
    int v = out_value(q);
    dequantize_ref(logits, q->val[v], (size_t)q->classes * n, q->scale[v], q->zp[v]);
}
