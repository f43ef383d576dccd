/* net.c: the tape. net_build infers every node's shape, lays out parameters, gradients and
 * BN statistics in three flat buffers, and checks that the spec makes sense for the input;
 * net_forward walks the nodes in order and net_backward walks them in reverse, through one
 * op table indexed by OpKind.
 *
 * Activations live in one buffer sized for the largest batch seen so far. The identity op
 * costs nothing: its output and gradient alias its input's, and its backward is empty.
 *
 * Some things happen only inside net_forward/net_backward's walk (the per-node semantics, and
 * net_node_forward, stay those of the op table). Most of a training step's time is passes over
 * memory, so the walk avoids storing what the next kernel can make while its data is in cache
 * (fusion_plan; NASC_FUSE=0 in the environment turns all of it off, and tests compare both):
 *   - a BN or an add whose only consumer is the next node, a ReLU or ReLU6, runs with it as
 *     one kernel (bn_act_*, add_act_*): the first node's output and gradient are never stored;
 *   - a conv whose only consumer is a BN gets its output gradient made chunk by chunk from the
 *     BN's (grad_rows), and in training a BN + act pair whose only consumer is a conv has its
 *     output made by that conv, forward and backward (act_rows): neither is ever stored;
 *   - the BN's statistics and the first pass of its backward are summed by the neighbouring
 *     convs as they write the rows (bn_row_stats, bn_row_sums);
 *   - in eval, a conv whose only consumer is a BN applies that BN, and the ReLU/ReLU6 fused with
 *     it, to its output chunk by chunk while the chunk is in cache (BnEval): only the last
 *     node's output is stored (batch 128, 2 threads: small 25.0K -> 36.9K images/s, resnet8
 *     9.5K -> 11.3K, mbv2 3.3K -> 4.4K).
 * What is made on demand is bit for bit what would have been stored (test_fused). Also:
 *   - no zeroing pass over the activation gradients: the backward remembers which gradients
 *     have been written in this pass; the first contributor to one overwrites it (kernels with
 *     an overwrite flavour: conv, BN, activations, add) or zeroes it just before accumulating
 *     (the others), when it is about to be hot in cache anyway;
 *   - gradients that are never live together share a buffer (grad_layout), so the backward
 *     writes memory that is still in cache;
 *   - an add's input whose only consumer is the add uses a buffer that already holds the add's
 *     output gradient instead of receiving a copy (grad_aliases).
 */
#include "net.h"

#include <math.h>

#include "../ops/ops.h"

#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f

/* ------------------------------------------------------------------ op table */
typedef struct OpInfo {
    /* Output shape and parameter/buffer counts for node i; NASC_ERR with a message if the
     * inputs do not fit the op. */
    int (*infer)(Net *net, int i, Err *e);
    void (*forward)(Net *net, int i);
    void (*backward)(Net *net, int i);
    /* Bytes of values saved for the backward at this batch size. */
    size_t (*saved_bytes)(const Net *net, int i, int batch);
} OpInfo;

static const Node *in_node(const Net *net, const Node *nd, int j, int *c, int *h, int *w) {
    int k = nd->in[j];
    if (k < 0) {
        *c = net->in_c, *h = net->in_h, *w = net->in_w;
        return NULL;
    }
    const Node *src = &net->spec.nodes[k];
    *c = src->c, *h = src->h, *w = src->w;
    return src;
}

static float *in_out(Net *net, const Node *nd, int j) {
    int k = nd->in[j];
    return k < 0 ? (float *)net->x : net->out[k];
}

static float *in_grad(Net *net, const Node *nd, int j) {
    int k = nd->in[j];
    return k < 0 ? NULL : net->dout[k];
}

static size_t node_size(const Node *nd) { return (size_t)nd->c * nd->h * nd->w; }

/* ---- gradient bookkeeping of one net_backward call (see the file comment). bw_written[k]:
 * node k's gradient buffer holds a value in this pass. bw_alias[k] >= 0: node k's gradient is
 * node bw_alias[k]'s buffer (grad_aliases). Both NULL outside net_backward. */
static _Thread_local unsigned char *bw_written;
static _Thread_local const int *bw_alias;

/* Node k with identities resolved (an identity's buffers are its input's); -1 for the network
 * input. */
static int id_owner(const Net *net, int k) {
    while (k >= 0 && net->spec.nodes[k].op == OP_ID) k = net->spec.nodes[k].in[0];
    return k;
}

/* The node whose buffers input j of nd really uses: id_owner, and in a backward an add's input
 * may alias a gradient (grad_aliases). */
static int grad_owner(const Net *net, int k) {
    for (k = id_owner(net, k); k >= 0 && bw_alias && bw_alias[k] >= 0;) k = id_owner(net, bw_alias[k]);
    return k;
}

/* Gradient k, zeroed now if nothing has written it yet in this pass. */
static float *grad_ready(Net *net, int k) {
    k = grad_owner(net, k);
    if (k < 0) return NULL;
    if (bw_written && !bw_written[k]) {
        memset(net->dout[k], 0, node_size(&net->spec.nodes[k]) * net->batch * sizeof(float));
        bw_written[k] = 1;
    }
    return net->dout[k];
}

/* Input j's gradient for a kernel that only accumulates. */
static float *in_grad_acc(Net *net, const Node *nd, int j) { return grad_ready(net, nd->in[j]); }

/* Input j's gradient for a kernel that can overwrite: *acc = 0 when this is its first write
 * in this pass (the kernel must then write every element), else 1. */
static float *in_grad_w(Net *net, const Node *nd, int j, int *acc) {
    int k = grad_owner(net, nd->in[j]);
    *acc = 1;
    if (k < 0) return NULL;
    if (bw_written && !bw_written[k]) {
        bw_written[k] = 1;
        *acc = 0;
    }
    return net->dout[k];
}

static size_t no_saved(const Net *net, int i, int batch) { return 0; }

/* in_grad_w for add node nd's input j, or NULL when that input's gradient is an alias of a
 * buffer that holds (or the add writes) the add's output gradient (grad_aliases). */
static float *add_in_grad(Net *net, const Node *nd, int j, int *acc) {
    const int k = id_owner(net, nd->in[j]);
    if (k >= 0 && bw_alias && bw_alias[k] >= 0) {
        *acc = 1;
        return NULL;
    }
    return in_grad_w(net, nd, j, acc);
}

/* ---- conv */
static ConvDims conv_dims(const Net *net, const Node *nd) {
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    ConvDims d = {.n = net->batch, .cin = c, .h = h, .w = w, .cout = nd->a.c, .k = nd->a.k,
                  .stride = nd->a.s, .pad = nd->a.p < 0 ? nd->a.d * (nd->a.k - 1) / 2 : nd->a.p,
                  .dil = nd->a.d, .groups = nd->a.g};
    return d;
}

static int conv_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    ConvDims d = conv_dims(net, nd);
    d.n = 1; /* shapes are per sample */
    if (conv_dims_init(&d, e) != NASC_OK) return NASC_ERR;
    nd->c = d.cout, nd->h = d.oh, nd->w = d.ow;
    nd->nparam = (size_t)d.cout * (d.cin / d.groups) * d.k * d.k + (nd->a.bias ? (size_t)d.cout : 0);
    return NASC_OK;
}

/* Conv node nd's input as stored (conv_input in the walks of net_forward/net_backward may
 * instead make it on demand). */
static ActSrc stored_input(Net *net, const Node *nd) {
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    return (ActSrc){.x = in_out(net, nd, 0), .c = c, .hw = h * w};
}

static ActKind act_kind(OpKind op);

/* Conv node i's forward into y (its output, or with epi a later node's: conv_bn_eval_fwd). */
static void conv_fwd_src(Net *net, int i, const ActSrc *x, double *row_stats, float *y, const BnEval *epi) {
    Node *nd = &net->spec.nodes[i];
    ConvDims d = conv_dims(net, nd);
    conv_dims_init(&d, NULL);
    const float *w = net->params + nd->param_off;
    const float *b = nd->a.bias ? w + (nd->nparam - (size_t)d.cout) : NULL;
    conv2d_forward_src(y, x, w, b, &d, row_stats, epi);
}

/* Conv node i and the eval-mode BN node i + 1 after it (FUSE_EPI), with the activation node i + 2
 * when the BN is fused with it (act): the conv applies the BN (and act) to its output chunk by
 * chunk (BnEval), writing the last node's output; the conv's and a fused BN's outputs are
 * never stored. Returns the last node's index. */
static int conv_bn_eval_fwd(Net *net, int i, const ActSrc *x, int act) {
    const Node *bn = &net->spec.nodes[i + 1];
    const float *g = net->params + bn->param_off, *rm = net->buffers + bn->buf_off;
    float *scale = xmalloc((size_t)bn->c * sizeof(float));
    bn_eval_scales(scale, g, rm + bn->c, bn->c, BN_EPS);
    const int last = act ? i + 2 : i + 1;
    BnEval k = {act ? act_kind(net->spec.nodes[i + 2].op) : ACT_COUNT, rm, scale, g + bn->c};
    conv_fwd_src(net, i, x, NULL, net->out[last], &k);
    free(scale);
    return last;
}

static void conv_fwd(Net *net, int i) {
    ActSrc x = stored_input(net, &net->spec.nodes[i]);
    conv_fwd_src(net, i, &x, NULL, net->out[i], NULL);
}

/* The backward of conv node i with its output gradient from src (the stored one, or one made
 * on demand by the BN after it: bn_grad_bwd) and its input from x. made: NULL, or the lone
 * ReLU/ReLU6 node before the conv (FUSE_MADE), whose backward the conv's dx then makes where
 * it can (conv2d_dx_maskable): dx goes to that node's input gradient. Returns whether it did. */
static int conv_bwd_src(Net *net, int i, const GradSrc *src, const ActSrc *x, const BnRowSums *sums,
                        const Node *made) {
    Node *nd = &net->spec.nodes[i];
    ConvDims d = conv_dims(net, nd);
    conv_dims_init(&d, NULL);
    const float *w = net->params + nd->param_off;
    float *dw = net->grads + nd->param_off;
    float *db = nd->a.bias ? dw + (nd->nparam - (size_t)d.cout) : NULL;
    const Node *through = made && conv2d_dx_maskable(&d) ? made : NULL;
    int acc;
    float *dx = in_grad_w(net, through ? through : nd, 0, &acc);
    DxMask m = {through ? in_out(net, through, 0) : NULL, through ? act_kind(through->op) : ACT_COUNT};
    conv2d_backward_src(dx, dw, db, src, x, w, &d, acc, sums, through && dx ? &m : NULL);
    return through != NULL;
}

/* Node i's output gradient as stored. */
static GradSrc stored_grad(const Net *net, int i) {
    const Node *nd = &net->spec.nodes[i];
    return (GradSrc){.dy = net->dout[i], .c = nd->c, .hw = nd->h * nd->w};
}

static void conv_bwd(Net *net, int i) {
    GradSrc src = stored_grad(net, i);
    ActSrc x = stored_input(net, &net->spec.nodes[i]);
    conv_bwd_src(net, i, &src, &x, NULL, NULL);
}

static ActKind act_kind(OpKind op) {
    switch (op) {
    case OP_RELU: return ACT_RELU;
    case OP_RELU6: return ACT_RELU6;
    case OP_HSWISH: return ACT_HSWISH;
    case OP_SIGMOID: return ACT_SIGMOID;
    default: return ACT_HSIGMOID;
    }
}

/* ---- batch norm */
static int bn_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    nd->nparam = 2 * (size_t)nd->c;
    nd->nbuf = 2 * (size_t)nd->c;
    return NASC_OK;
}

/* mean and invstd per channel, then (fused with an activation) the forward's exact constants */
static size_t bn_saved(const Net *net, int i, int batch) {
    return BN_ACT_SAVED * (size_t)net->spec.nodes[i].c * sizeof(float);
}

static void bn_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
    float *st = net->saved[i];
    if (net->training)
        bn_forward_train(net->out[i], st, st + nd->c, in_out(net, nd, 0), g, b, rm, rv, net->batch, nd->c,
                         nd->h * nd->w, BN_MOMENTUM, BN_EPS);
    else
        bn_forward_eval(net->out[i], in_out(net, nd, 0), g, b, rm, rv, net->batch, nd->c, nd->h * nd->w, BN_EPS);
}

/* bn_fwd in training from the row sums the conv before took (FUSE_STATS); lazy: the statistics
 * and constants only (the add after it makes the output, FUSE_ADDIN). */
static void bn_fwd_rows(Net *net, int i, const double *row_stats, int lazy) {
    Node *nd = &net->spec.nodes[i];
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
    NASC_ASSERT(net->training);
    bn_forward_rows(ACT_COUNT, lazy ? NULL : net->out[i], net->saved[i], row_stats, in_out(net, nd, 0), g, b, rm, rv,
                    net->batch, nd->c, nd->h * nd->w, BN_MOMENTUM, BN_EPS);
}

static void bn_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    NASC_ASSERT(net->training);
    const float *g = net->params + nd->param_off;
    float *dg = net->grads + nd->param_off, *st = net->saved[i];
    int acc;
    float *dx = in_grad_w(net, nd, 0, &acc);
    bn_backward_ex(dx, dg, dg + nd->c, net->dout[i], in_out(net, nd, 0), g, st, st + nd->c, net->batch, nd->c,
                   nd->h * nd->w, acc);
}

/* BN node i and the ReLU/ReLU6 node i + 1 as one kernel: reads BN's input, writes the
 * activation's output (training: and BN's saved statistics; with lazy, only those: the
 * consumer makes the output, conv_input; with row_stats too, from the row sums the conv
 * before made). */
static void bn_act_fwd(Net *net, int i, int lazy, const double *row_stats) {
    Node *nd = &net->spec.nodes[i];
    ActKind act = act_kind(net->spec.nodes[i + 1].op);
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
    float *st = net->saved[i], *y = lazy ? NULL : net->out[i + 1];
    if (net->training && row_stats)
        bn_forward_rows(act, y, st, row_stats, in_out(net, nd, 0), g, b, rm, rv, net->batch, nd->c, nd->h * nd->w,
                        BN_MOMENTUM, BN_EPS);
    else if (net->training)
        bn_act_forward_train(act, y, st, in_out(net, nd, 0), g, b, rm, rv, net->batch, nd->c, nd->h * nd->w,
                             BN_MOMENTUM, BN_EPS);
    else
        bn_act_forward_eval(act, y, in_out(net, nd, 0), g, b, rm, rv, net->batch, nd->c, nd->h * nd->w, BN_EPS);
}

/* The backward of that pair, from the activation's output gradient dout[i + 1]. */
static void bn_act_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    NASC_ASSERT(net->training);
    ActKind act = act_kind(net->spec.nodes[i + 1].op);
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    float *dg = net->grads + nd->param_off, *st = net->saved[i];
    int acc;
    float *dx = in_grad_w(net, nd, 0, &acc);
    bn_act_backward(act, dx, dg, dg + nd->c, net->dout[i + 1], in_out(net, nd, 0), g, b, st, net->batch, nd->c,
                    nd->h * nd->w, acc);
}

/* BN node i (act: fused with the activation node i + 1, whose output gradient it takes) after
 * conv node i - 1, its only consumer: only the BN backward's first pass runs (not even that
 * with rs, the row sums the conv after the pair made: FUSE_SUMS); the conv's backward makes its
 * output gradient from *src as it goes (conv_bwd_src), so that gradient is never stored. kc:
 * room for the node's channels. */
static void bn_grad_bwd(Net *net, int i, ActKind act, GradSrc *src, BnBwdK *kc, const double *rs) {
    Node *nd = &net->spec.nodes[i];
    NASC_ASSERT(net->training && bw_written && grad_owner(net, nd->in[0]) == i - 1);
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    float *dg = net->grads + nd->param_off;
    bn_grad_prepare(src, kc, rs, dg, dg + nd->c, act, net->dout[act == ACT_COUNT ? i : i + 1], in_out(net, nd, 0), g,
                    b, net->saved[i], net->batch, nd->c, nd->h * nd->w);
    bw_written[i - 1] = 1;
}

/* ---- shape-preserving single-input ops */
static int same_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    return NASC_OK;
}

static void act_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    act_forward(act_kind(nd->op), net->out[i], in_out(net, nd, 0), node_size(nd) * net->batch);
}

/* ReLU/ReLU6 keep room for the constants of an identity BN (mean 0, scale 1), with which the
 * conv after a lone activation makes its input on demand (FUSE_MADE in net.c's walk). */
static size_t act_saved(const Net *net, int i, int batch) {
    return BN_ACT_SAVED * (size_t)net->spec.nodes[i].c * sizeof(float);
}

/* Those constants in the layout bn_act_forward_train saves (mean, invstd, mlo, scale). */
static void act_identity(Net *net, int i) {
    const int c = net->spec.nodes[i].c;
    float *st = net->saved[i];
    for (int ch = 0; ch < c; ch++) st[ch] = 0.0f, st[c + ch] = 1.0f, st[2 * c + ch] = 0.0f, st[3 * c + ch] = 1.0f;
}

static void act_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int acc;
    float *dx = in_grad_w(net, nd, 0, &acc);
    if (dx) act_backward_ex(act_kind(nd->op), dx, net->dout[i], in_out(net, nd, 0), node_size(nd) * net->batch, acc);
}

static void zero_fwd(Net *net, int i) {
    memset(net->out[i], 0, node_size(&net->spec.nodes[i]) * net->batch * sizeof(float));
}

static void nothing_bwd(Net *net, int i) {}
static void id_fwd(Net *net, int i) {} /* aliased in net_forward */

static size_t dropout_saved(const Net *net, int i, int batch) {
    return node_size(&net->spec.nodes[i]) * sizeof(float) * (size_t)batch;
}

static void dropout_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    size_t n = node_size(nd) * net->batch;
    if (net->training && nd->a.drop > 0)
        dropout_forward_ref(net->out[i], net->saved[i], in_out(net, nd, 0), n, nd->a.drop, &net->rng);
    else
        memcpy(net->out[i], in_out(net, nd, 0), n * sizeof(float));
}

static void dropout_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    float *dx = in_grad_acc(net, nd, 0);
    size_t n = node_size(nd) * net->batch;
    if (!dx) return;
    if (nd->a.drop > 0)
        dropout_backward_ref(dx, net->dout[i], net->saved[i], n);
    else
        for (size_t j = 0; j < n; j++) dx[j] += net->dout[i][j];
}

/* ---- pooling */
static PoolDims pool_dims(const Net *net, const Node *nd) {
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    PoolDims d = {.n = net->batch, .c = c, .h = h, .w = w, .k = nd->a.k, .stride = nd->a.s ? nd->a.s : nd->a.k,
                  .pad = nd->a.p < 0 ? 0 : nd->a.p, .count_include_pad = nd->a.cip};
    return d;
}

static int pool_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    PoolDims d = pool_dims(net, nd);
    d.n = 1; /* shapes are per sample */
    if (pool_dims_init(&d, e) != NASC_OK) return NASC_ERR;
    nd->c = d.c, nd->h = d.oh, nd->w = d.ow;
    return NASC_OK;
}

static size_t maxpool_saved(const Net *net, int i, int batch) {
    return node_size(&net->spec.nodes[i]) * sizeof(int32_t) * (size_t)batch;
}

static void maxpool_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    PoolDims d = pool_dims(net, nd);
    pool_dims_init(&d, NULL);
    maxpool_forward(net->out[i], net->saved[i], in_out(net, nd, 0), &d);
}

static void maxpool_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    PoolDims d = pool_dims(net, nd);
    pool_dims_init(&d, NULL);
    float *dx = in_grad_acc(net, nd, 0);
    if (dx) maxpool_backward(dx, net->dout[i], net->saved[i], &d);
}

static void avgpool_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    PoolDims d = pool_dims(net, nd);
    pool_dims_init(&d, NULL);
    avgpool_forward(net->out[i], in_out(net, nd, 0), &d);
}

static void avgpool_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    PoolDims d = pool_dims(net, nd);
    pool_dims_init(&d, NULL);
    float *dx = in_grad_acc(net, nd, 0);
    if (dx) avgpool_backward(dx, net->dout[i], &d);
}

static int gap_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    nd->h = nd->w = 1;
    return NASC_OK;
}

static void gap_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    gap_forward(net->out[i], in_out(net, nd, 0), net->batch, c, h * w);
}

static void gap_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    int acc;
    float *dx = in_grad_w(net, nd, 0, &acc);
    if (dx) gap_backward_ex(dx, net->dout[i], net->batch, c, h * w, acc);
}

/* ---- linear */
static int linear_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    nd->c = nd->a.c ? nd->a.c : net->classes;
    nd->h = nd->w = 1;
    nd->nparam = (size_t)nd->c * c * h * w + (nd->a.bias ? (size_t)nd->c : 0);
    return NASC_OK;
}

static void linear_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    int in = c * h * w;
    const float *wt = net->params + nd->param_off;
    linear_forward(net->out[i], in_out(net, nd, 0), wt, nd->a.bias ? wt + (size_t)nd->c * in : NULL, net->batch,
                   in, nd->c);
}

static void linear_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    int in = c * h * w;
    const float *wt = net->params + nd->param_off;
    float *dw = net->grads + nd->param_off;
    linear_backward(in_grad_acc(net, nd, 0), dw, nd->a.bias ? dw + (size_t)nd->c * in : NULL, net->dout[i],
                    in_out(net, nd, 0), wt, net->batch, in, nd->c);
}

/* ---- multi-input ops */
static int add_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    for (int j = 1; j < nd->nin; j++) {
        int c, h, w;
        in_node(net, nd, j, &c, &h, &w);
        if (c != nd->c || h != nd->h || w != nd->w) {
            err_set(e, "node %d (%s): input %d has shape %dx%dx%d but input 1 has %dx%dx%d", i + 1, op_name(nd->op),
                    j + 1, c, h, w, nd->c, nd->h, nd->w);
            return NASC_ERR;
        }
    }
    return NASC_OK;
}

static void add_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    const float *xs[NODE_MAX_IN];
    for (int j = 0; j < nd->nin; j++) xs[j] = in_out(net, nd, j);
    add_forward(net->out[i], xs, nd->nin, node_size(nd) * net->batch);
}

/* Its backward, from the activation's output gradient dout[i + 1]. */
static void add_act_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    float *dxs[NODE_MAX_IN];
    int acc[NODE_MAX_IN];
    for (int j = 0; j < nd->nin; j++) dxs[j] = add_in_grad(net, nd, j, &acc[j]);
    add_act_backward(act_kind(net->spec.nodes[i + 1].op), dxs, net->dout[i + 1], net->out[i + 1], nd->nin,
                     node_size(nd) * net->batch, acc);
}

static void add_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    float *dxs[NODE_MAX_IN];
    int acc[NODE_MAX_IN];
    for (int j = 0; j < nd->nin; j++) dxs[j] = add_in_grad(net, nd, j, &acc[j]);
    add_backward_ex(dxs, net->dout[i], nd->nin, node_size(nd) * net->batch, acc);
}

static int concat_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    for (int j = 1; j < nd->nin; j++) {
        int c, h, w;
        in_node(net, nd, j, &c, &h, &w);
        if (h != nd->h || w != nd->w) {
            err_set(e, "node %d (concat): input %d is %dx%d but input 1 is %dx%d", i + 1, j + 1, h, w, nd->h, nd->w);
            return NASC_ERR;
        }
        nd->c += c;
    }
    return NASC_OK;
}

static void concat_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    const float *xs[NODE_MAX_IN];
    int cs[NODE_MAX_IN], h, w;
    for (int j = 0; j < nd->nin; j++) {
        xs[j] = in_out(net, nd, j);
        in_node(net, nd, j, &cs[j], &h, &w);
    }
    concat_forward_ref(net->out[i], xs, cs, nd->nin, net->batch, nd->h * nd->w);
}

static void concat_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    float *dxs[NODE_MAX_IN];
    int cs[NODE_MAX_IN], h, w;
    for (int j = 0; j < nd->nin; j++) {
        dxs[j] = in_grad_acc(net, nd, j);
        in_node(net, nd, j, &cs[j], &h, &w);
    }
    concat_backward_ref(dxs, net->dout[i], cs, nd->nin, net->batch, nd->h * nd->w);
}

static int mul_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &nd->c, &nd->h, &nd->w);
    in_node(net, nd, 1, &c, &h, &w);
    if (c != nd->c || h != 1 || w != 1) {
        err_set(e, "node %d (mul): the second input must be %dx1x1 (one scale per channel), got %dx%dx%d", i + 1,
                nd->c, c, h, w);
        return NASC_ERR;
    }
    return NASC_OK;
}

static void mul_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    chmul_forward_ref(net->out[i], in_out(net, nd, 0), in_out(net, nd, 1), net->batch, nd->c, nd->h * nd->w);
}

static void mul_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    chmul_backward_ref(in_grad_acc(net, nd, 0), in_grad_acc(net, nd, 1), net->dout[i], in_out(net, nd, 0),
                       in_out(net, nd, 1), net->batch, nd->c, nd->h * nd->w);
}

/* ---- resize */
static int resize_infer(Net *net, int i, Err *e) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    if (nd->a.s > 16384) {
        err_set(e, "resize: output size %d is too large", nd->a.s);
        return NASC_ERR;
    }
    nd->c = c, nd->h = nd->w = nd->a.s;
    return NASC_OK;
}

static void resize_fwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    resize_forward_ref(net->out[i], in_out(net, nd, 0), net->batch * c, h, w, nd->h, nd->w);
}

static void resize_bwd(Net *net, int i) {
    Node *nd = &net->spec.nodes[i];
    int c, h, w;
    in_node(net, nd, 0, &c, &h, &w);
    resize_backward_ref(in_grad_acc(net, nd, 0), net->dout[i], net->batch * c, h, w, nd->h, nd->w);
}

static const OpInfo op_info[OP_COUNT] = {
    [OP_CONV] = {conv_infer, conv_fwd, conv_bwd, no_saved},
    [OP_BN] = {bn_infer, bn_fwd, bn_bwd, bn_saved},
    [OP_RELU] = {same_infer, act_fwd, act_bwd, act_saved},
    [OP_RELU6] = {same_infer, act_fwd, act_bwd, act_saved},
    [OP_HSWISH] = {same_infer, act_fwd, act_bwd, no_saved},
    [OP_SIGMOID] = {same_infer, act_fwd, act_bwd, no_saved},
    [OP_HSIGMOID] = {same_infer, act_fwd, act_bwd, no_saved},
    [OP_MAXPOOL] = {pool_infer, maxpool_fwd, maxpool_bwd, maxpool_saved},
    [OP_AVGPOOL] = {pool_infer, avgpool_fwd, avgpool_bwd, no_saved},
    [OP_GAP] = {gap_infer, gap_fwd, gap_bwd, no_saved},
    [OP_LINEAR] = {linear_infer, linear_fwd, linear_bwd, no_saved},
    [OP_ADD] = {add_infer, add_fwd, add_bwd, no_saved},
    [OP_CONCAT] = {concat_infer, concat_fwd, concat_bwd, no_saved},
    [OP_MUL] = {mul_infer, mul_fwd, mul_bwd, no_saved},
    [OP_ZERO] = {same_infer, zero_fwd, nothing_bwd, no_saved},
    [OP_ID] = {same_infer, id_fwd, nothing_bwd, no_saved},
    [OP_DROPOUT] = {same_infer, dropout_fwd, dropout_bwd, dropout_saved},
    [OP_RESIZE] = {resize_infer, resize_fwd, resize_bwd, no_saved},
};
_Static_assert(sizeof op_info / sizeof op_info[0] == OP_COUNT, "one op_info entry per op");

/* ------------------------------------------------------------------ build */
static void spec_copy(Spec *dst, const Spec *src) {
    memset(dst, 0, sizeof *dst);
    dst->n = dst->cap = src->n;
    dst->nodes = xmalloc((size_t)src->n * sizeof *src->nodes);
    memcpy(dst->nodes, src->nodes, (size_t)src->n * sizeof *src->nodes);
    dst->arch = src->arch ? xstrdup(src->arch) : NULL;
}

int net_build(Net *net, const Spec *spec, int in_c, int in_h, int in_w, int classes, Err *e) {
    memset(net, 0, sizeof *net);
    spec_copy(&net->spec, spec);
    net->in_c = in_c, net->in_h = in_h, net->in_w = in_w, net->classes = classes;
    size_t np = 0, nb = 0;
    for (int i = 0; i < net->spec.n; i++) {
        Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++) NASC_ASSERT(nd->in[j] >= -1 && nd->in[j] < i);
        nd->nparam = nd->nbuf = 0;
        Err sub;
        if (op_info[nd->op].infer(net, i, &sub) != NASC_OK) {
            err_set(e, "spec: statement %d (%s%s%s): %s", i + 1, nd->name, nd->name[0] ? "=" : "", op_name(nd->op),
                    sub.msg);
            net_free(net);
            return NASC_ERR;
        }
        nd->param_off = np;
        nd->buf_off = nb;
        np += nd->nparam;
        nb += nd->nbuf;
    }
    const Node *last = &net->spec.nodes[net->spec.n - 1];
    if (node_size(last) != (size_t)classes) {
        err_set(e, "spec: the network's output has %d values (%dx%dx%d) but the data has %d classes; end the spec with "
                   "`gap; linear` or a linear layer",
                (int)node_size(last), last->c, last->h, last->w, classes);
        net_free(net);
        return NASC_ERR;
    }
    net->nparams = np;
    net->nbuffers = nb;
    net->params = xalloc_aligned(np * sizeof(float));
    net->grads = xalloc_aligned(np * sizeof(float));
    net->buffers = xalloc_aligned((nb ? nb : 1) * sizeof(float));
    int n = net->spec.n;
    net->out = xcalloc((size_t)n, sizeof *net->out);
    net->dout = xcalloc((size_t)n, sizeof *net->dout);
    net->saved = xcalloc((size_t)n, sizeof *net->saved);
    rng_seed(&net->rng, 0x5eed);
    net_init_params(net, 0);
    return NASC_OK;
}

/* The activation arena: per node, output + saved values for batch_cap samples, all in one
 * block (net->arena). Identity nodes get no storage: they alias their input. The gradients
 * live in their own block, laid out by grad_layout at each backward. */
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static void net_reserve(Net *net, int batch) {
    if (batch <= net->batch_cap) return;
    int n = net->spec.n;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_ID) total += round64(node_size(nd) * sizeof(float) * (size_t)batch);
        total += round64(op_info[nd->op].saved_bytes(net, i, batch));
    }
    free(net->arena);
    net->arena = xalloc_aligned(total);
    char *p = net->arena;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        net->out[i] = net->dout[i] = NULL;
        if (nd->op != OP_ID) {
            net->out[i] = (float *)p;
            p += round64(node_size(nd) * sizeof(float) * (size_t)batch);
        }
        size_t sv = op_info[nd->op].saved_bytes(net, i, batch);
        net->saved[i] = sv ? (void *)p : NULL;
        p += round64(sv);
    }
    net->batch_cap = batch;
}

void net_free(Net *net) {
    spec_free(&net->spec);
    free(net->params);
    free(net->grads);
    free(net->buffers);
    free(net->arena);
    free(net->grad_arena);
    free(net->row_stats);
    free(net->out);
    free(net->dout);
    free(net->saved);
    memset(net, 0, sizeof *net);
}

void net_init_params(Net *net, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < net->spec.n; i++) {
        Node *nd = &net->spec.nodes[i];
        float *p = net->params + nd->param_off;
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            size_t nb = nd->a.bias ? (size_t)nd->c : 0;
            size_t nw = nd->nparam - nb;
            double fan_in = (double)nw / nd->c;
            float bound = (float)(1.0 / sqrt(fan_in));
            for (size_t j = 0; j < nw; j++) p[j] = rng_uniformf(&r, -bound, bound);
            for (size_t j = 0; j < nb; j++) p[nw + j] = rng_uniformf(&r, -bound, bound);
        } else if (nd->op == OP_BN) {
            for (int j = 0; j < nd->c; j++) p[j] = 1.0f, p[nd->c + j] = 0.0f;
            float *b = net->buffers + nd->buf_off;
            for (int j = 0; j < nd->c; j++) b[j] = 0.0f, b[nd->c + j] = 1.0f;
        }
    }
}

/* ------------------------------------------------------------------ run */
/* NASC_PROFILE=1: seconds spent per op kind, forward and backward (a fused pair counts as its
 * first node), printed to stderr at exit. For finding where a training step goes; meant for
 * one net trained at a time (bench_train, nasc train): the sums are not thread-safe. */
static double prof_sec[OP_COUNT][2];
static long prof_calls[OP_COUNT][2];
/* NASC_PROFILE=2 adds one line per node (of the last net profiled, its first PROF_NODES). */
#define PROF_NODES 256
static double prof_node[PROF_NODES][2];
static char prof_desc[PROF_NODES][64];
static int prof_nodes;

static void prof_print(void) {
    double tot = 0;
    for (int k = 0; k < OP_COUNT; k++) tot += prof_sec[k][0] + prof_sec[k][1];
    fprintf(stderr, "nasc profile: op, forward s, backward s, share of %.3f s\n", tot);
    for (int k = 0; k < OP_COUNT; k++)
        if (prof_calls[k][0] || prof_calls[k][1])
            fprintf(stderr, "  %-10s %8.3f %8.3f %5.1f%%\n", op_name((OpKind)k), prof_sec[k][0], prof_sec[k][1],
                    100.0 * (prof_sec[k][0] + prof_sec[k][1]) / (tot > 0 ? tot : 1));
    for (int i = 0; i < prof_nodes; i++)
        if (prof_node[i][0] + prof_node[i][1] > 0)
            fprintf(stderr, "  node %3d %-40s %8.3f %8.3f %5.1f%%\n", i, prof_desc[i], prof_node[i][0],
                    prof_node[i][1], 100.0 * (prof_node[i][0] + prof_node[i][1]) / (tot > 0 ? tot : 1));
}

static int prof_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("NASC_PROFILE");
        on = e && (e[0] == '1' || e[0] == '2') ? e[0] - '0' : 0;
        if (on) atexit(prof_print);
    }
    return on;
}

static double prof_start(void) { return prof_on() ? now_seconds() : 0; }

static void prof_stop(const Net *net, int i, int bwd, double t0) {
    if (!prof_on()) return;
    const Node *nd = &net->spec.nodes[i];
    double dt = now_seconds() - t0;
    prof_sec[nd->op][bwd] += dt;
    prof_calls[nd->op][bwd]++;
    if (prof_on() == 2 && i < PROF_NODES) {
        if (net->spec.n != prof_nodes) memset(prof_node, 0, sizeof prof_node);
        prof_nodes = NASC_MIN(net->spec.n, PROF_NODES);
        prof_node[i][bwd] += dt;
        if (nd->op == OP_CONV)
            snprintf(prof_desc[i], sizeof prof_desc[i], "conv k%d s%d g%d -> %dx%dx%d", nd->a.k, nd->a.s, nd->a.g,
                     nd->c, nd->h, nd->w);
        else
            snprintf(prof_desc[i], sizeof prof_desc[i], "%s -> %dx%dx%d", op_name(nd->op), nd->c, nd->h, nd->w);
    }
}

static int fusion_on(void) {
    const char *e = getenv("NASC_FUSE");
    return !(e && e[0] == '0');
}

/* fuse[i] & FUSE_ACT: BN or add node i runs fused with the ReLU/ReLU6 node i + 1 (its only
 * consumer). fuse[i] & FUSE_GRAD: conv node i's only consumer is BN node i + 1, and the
 * backward makes the conv's output gradient on demand (bn_grad_bwd). fuse[i] & FUSE_LAZY (with
 * FUSE_ACT, BN node i, training, !store_outputs): the pair's output has one consumer, a conv,
 * and is never stored: that conv makes it on demand, forward and backward (conv_input).
 * fuse[i] & FUSE_SUMS (with FUSE_LAZY, conv node i - 1 FUSE_GRAD, the consumer conv is node
 * i + 2): that conv's backward also makes the BN backward's row sums (bn_row_sums) from the
 * gradient it writes while it is in cache, so BN node i never reads it. fuse[i] & FUSE_STATS
 * (conv node i FUSE_GRAD, training): the conv's forward also sums the rows of its output for
 * BN node i + 1's statistics (bn_row_stats) while they are in cache, so the BN's forward reads
 * its input once to write its output, or not at all when the output is made on demand.
 * fuse[i] & FUSE_MADE (training, !store_outputs): ReLU/ReLU6 node i, not part of a pair, has
 * one consumer, a conv, which makes the activation on demand from node i's input (as from a
 * BN with mean 0 and scale 1: NAS-Bench-201's ReLU-conv-BN edges); node i's output is never
 * stored, and its backward (which reads its input) runs as usual.
 * fuse[i] & FUSE_ADDIN (training, !store_outputs): BN node i, its statistics summed by the conv
 * before (FUSE_STATS), has one consumer, an add (a residual join, an NB201 cell's sum), which
 * makes the BN's output on demand (add_src_fwd); it is never stored. The backward is unchanged
 * (BN's backward reads its input, not its output).
 * fuse[i] & FUSE_EPI (eval, a batch of more than one, !store_outputs; conv node i FUSE_GRAD): the
 * conv applies BN node i + 1, and the activation after it when the two are fused (FUSE_ACT), to
 * its output while it is in cache (conv_bn_eval_fwd): neither the conv's output nor the BN's is
 * stored. Not at batch 1 (the latency predictor's units, src/cost/predict.c, are those kernels
 * apart).
 * Returns NULL when nothing fuses; the caller frees. */
enum {
    FUSE_ACT = 1,
    FUSE_GRAD = 2,
    FUSE_LAZY = 4,
    FUSE_SUMS = 8,
    FUSE_STATS = 16,
    FUSE_MADE = 32,
    FUSE_ADDIN = 64,
    FUSE_EPI = 128
};

/* add node i in the fused walk (fuse: the plan), with FUSE_ACT and the ReLU/ReLU6 node i + 1
 * as one kernel (a residual join: the sum is never stored); its inputs stored or made on demand
 * from a BN before it (FUSE_ADDIN). */
static void add_src_fwd(Net *net, int i, const unsigned char *fuse) {
    Node *nd = &net->spec.nodes[i];
    ActSrc xs[NODE_MAX_IN];
    for (int j = 0; j < nd->nin; j++) {
        int k = nd->in[j];
        xs[j] = (ActSrc){.x = in_out(net, nd, j), .act = ACT_COUNT, .c = nd->c, .hw = nd->h * nd->w};
        if (k >= 0 && (fuse[k] & FUSE_ADDIN)) {
            const Node *bn = &net->spec.nodes[k];
            xs[j].x = in_out(net, bn, 0);
            xs[j].saved = net->saved[k];
            xs[j].beta = net->params + bn->param_off + bn->c;
        }
    }
    const int act = (fuse[i] & FUSE_ACT) != 0;
    add_src_forward(act ? act_kind(net->spec.nodes[i + 1].op) : ACT_COUNT, net->out[act ? i + 1 : i], xs, nd->nin,
                    (size_t)net->batch * nd->c, nd->h * nd->w);
}

/* Conv node nd's input: stored, or made on demand from the BN + act pair (FUSE_LAZY) or the
 * lone activation (FUSE_MADE) before it. */
static ActSrc conv_input(Net *net, const Node *nd, const unsigned char *fuse) {
    ActSrc s = stored_input(net, nd);
    int k = nd->in[0];
    if (fuse && k >= 0 && (fuse[k] & FUSE_MADE)) { /* a lone ReLU/ReLU6: an identity BN's */
        const Node *act = &net->spec.nodes[k];
        s.x = in_out(net, act, 0);
        s.saved = net->saved[k];
        s.beta = NULL;
        s.act = act_kind(act->op);
    } else if (fuse && k >= 1 && (fuse[k - 1] & FUSE_LAZY)) {
        const Node *bn = &net->spec.nodes[k - 1];
        s.x = in_out(net, bn, 0);
        s.saved = net->saved[k - 1];
        s.beta = net->params + bn->param_off + bn->c;
        s.act = act_kind(net->spec.nodes[k].op);
    }
    return s;
}

/* The index of the conv that takes node k as its (first) input, or 0 when none does (a
 * consumer comes after k, so it is never node 0). */
static int conv_consumes(const Net *net, int k) {
    for (int j = k + 1; j < net->spec.n; j++)
        if (net->spec.nodes[j].op == OP_CONV && net->spec.nodes[j].nin > 0 && net->spec.nodes[j].in[0] == k)
            return j;
    return 0;
}

static unsigned char *fusion_plan(const Net *net) {
    int n = net->spec.n;
    if (!fusion_on() || n < 2 || net->hook_fwd || net->hook_bwd) return NULL;
    int *uses = xcalloc((size_t)n, sizeof *uses);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < net->spec.nodes[i].nin; j++)
            if (net->spec.nodes[i].in[j] >= 0) uses[net->spec.nodes[i].in[j]]++;
    unsigned char *fuse = NULL;
    for (int i = 0; i + 1 < n; i++) {
        const Node *a = &net->spec.nodes[i], *b = &net->spec.nodes[i + 1];
        int f = 0;
        if ((a->op == OP_BN || a->op == OP_ADD) && (b->op == OP_RELU || b->op == OP_RELU6) && b->nin == 1 &&
            b->in[0] == i && uses[i] == 1)
            f = FUSE_ACT;
        if (a->op == OP_CONV && b->op == OP_BN && b->in[0] == i && uses[i] == 1) f = FUSE_GRAD;
        int j = f == FUSE_ACT && a->op == OP_BN && net->training && !net->store_outputs && uses[i + 1] == 1
                    ? conv_consumes(net, i + 1)
                    : 0;
        if (j) {
            f |= FUSE_LAZY;
            if (j == i + 2 && i > 0 && fuse && (fuse[i - 1] & FUSE_GRAD)) f |= FUSE_SUMS;
        }
        if (f) {
            if (!fuse) fuse = xcalloc((size_t)n, 1);
            fuse[i] = (unsigned char)f;
        }
    }
    for (int i = 0; fuse && i + 1 < n; i++) {
        if ((fuse[i] & FUSE_GRAD) && net->training) fuse[i] |= FUSE_STATS;
        if ((fuse[i] & FUSE_GRAD) && !net->training && net->batch > 1 && !net->store_outputs) fuse[i] |= FUSE_EPI;
    }
    for (int i = 1; fuse && i + 1 < n && net->training && !net->store_outputs; i++) {
        if (net->spec.nodes[i].op != OP_BN || uses[i] != 1 || !(fuse[i - 1] & FUSE_STATS) || (fuse[i] & FUSE_ACT))
            continue;
        for (int j = i + 1; j < n; j++) {
            const Node *c = &net->spec.nodes[j];
            int hit = 0;
            for (int k = 0; k < c->nin; k++) hit |= c->in[k] == i;
            if (hit) {
                if (c->op == OP_ADD) fuse[i] |= FUSE_ADDIN;
                break;
            }
        }
    }
    for (int i = 0; i + 1 < n && net->training && !net->store_outputs; i++) {
        const Node *a = &net->spec.nodes[i];
        if ((a->op != OP_RELU && a->op != OP_RELU6) || a->nin != 1 || uses[i] != 1) continue;
        if (i > 0 && fuse && (fuse[i - 1] & FUSE_ACT)) continue; /* the act of a pair */
        if (!conv_consumes(net, i)) continue;
        if (!fuse) fuse = xcalloc((size_t)n, 1);
        fuse[i] |= FUSE_MADE;
    }
    free(uses);
    return fuse;
}

void net_randomize(Net *net, uint64_t seed, int bn_affine) {
    net_init_params(net, seed);
    Rng r;
    rng_seed(&r, seed + 17);
    for (int i = 0; i < net->spec.n && bn_affine; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN) continue;
        float *g = net->params + nd->param_off, *b = g + nd->c;
        for (int c = 0; c < nd->c; c++) {
            g[c] = rng_uniformf(&r, 0.5f, 1.5f) * (rng_uniform(&r) < 0.2 ? -1.0f : 1.0f);
            b[c] = (float)rng_normal(&r) * 0.3f;
        }
    }
    size_t nx = (size_t)16 * net->in_c * net->in_h * net->in_w;
    float *x = xmalloc(nx * sizeof *x);
    rng_seed(&r, seed + 99);
    for (size_t k = 0; k < nx; k++) x[k] = (float)rng_normal(&r);
    net_forward(net, x, 16, 1);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN) continue;
        const float *st = net->saved[i]; /* batch mean, then 1 / sqrt(var + eps) */
        float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
        for (int c = 0; c < nd->c; c++) {
            rm[c] = st[c];
            rv[c] = fmaxf(1.0f / (st[nd->c + c] * st[nd->c + c]) - 1e-5f, 1e-4f);
        }
    }
    free(x);
}

const float *net_forward(Net *net, const float *x, int n, int training) {
    net_reserve(net, n);
    net->x = x;
    net->batch = n;
    net->training = training;
    unsigned char *fuse = fusion_plan(net);
    size_t rsn = 0; /* FUSE_STATS row sums: one conv's at a time */
    for (int i = 0; fuse && i < net->spec.n; i++)
        if (fuse[i] & FUSE_STATS) rsn = NASC_MAX(rsn, 3 * (size_t)n * net->spec.nodes[i].c);
    if (rsn > net->row_stats_cap) {
        free(net->row_stats);
        net->row_stats = xmalloc(rsn * sizeof *net->row_stats);
        net->row_stats_cap = rsn;
    }
    if (net->hook_fwd) net->hook_fwd(net->hook_ctx, net, -1);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op == OP_ID) {
            net->out[i] = in_out(net, nd, 0);
            net->dout[i] = in_grad(net, nd, 0);
            continue;
        }
        double t0 = prof_start();
        if (fuse && (fuse[i] & FUSE_MADE)) { /* the conv after it makes it */
            act_identity(net, i);
            prof_stop(net, i, 0, t0);
            continue;
        }
        if (fuse && (fuse[i] & FUSE_ACT)) {
            if (nd->op == OP_BN)
                bn_act_fwd(net, i, (fuse[i] & FUSE_LAZY) != 0,
                           i > 0 && (fuse[i - 1] & FUSE_STATS) ? net->row_stats : NULL);
            else
                add_src_fwd(net, i, fuse);
            prof_stop(net, i, 0, t0);
            i++;
            continue;
        }
        if (fuse && nd->op == OP_CONV && (fuse[i] & FUSE_EPI)) {
            ActSrc x = conv_input(net, nd, fuse);
            int last = conv_bn_eval_fwd(net, i, &x, (fuse[i + 1] & FUSE_ACT) != 0);
            prof_stop(net, i, 0, t0);
            i = last;
            continue;
        } else if (fuse && nd->op == OP_CONV) {
            ActSrc x = conv_input(net, nd, fuse);
            conv_fwd_src(net, i, &x, (fuse[i] & FUSE_STATS) ? net->row_stats : NULL, net->out[i], NULL);
        } else if (fuse && nd->op == OP_BN && i > 0 && (fuse[i - 1] & FUSE_STATS)) {
            bn_fwd_rows(net, i, net->row_stats, (fuse[i] & FUSE_ADDIN) != 0);
        } else if (fuse && nd->op == OP_ADD) {
            add_src_fwd(net, i, fuse);
        } else {
            op_info[nd->op].forward(net, i);
        }
        prof_stop(net, i, 0, t0);
        if (net->hook_fwd) net->hook_fwd(net->hook_ctx, net, i);
    }
    free(fuse);
    return net->out[net->spec.n - 1];
}

void net_node_forward(Net *net, int i) {
    const Node *nd = &net->spec.nodes[i];
    if (nd->op == OP_ID) {
        memcpy(net->out[i], in_out(net, nd, 0), node_size(nd) * net->batch * sizeof(float));
        return;
    }
    op_info[nd->op].forward(net, i);
}

/* Points dout at gradient buffers in net->grad_arena for this batch. In the backward, gradient
 * k is live from the visit of its last consumer (its first writer; the output's gradient from
 * the start) down to the visit of node k - 2: a BN+act pair reads it at k - 1, and a FUSE_GRAD
 * conv at k - 2. With share, gradients whose live ranges do not overlap share a buffer, and a
 * gradient takes the buffer read most recently: a kernel then writes lines that are still in
 * cache instead of fetching cold ones from memory, and the backward's footprint is a few
 * gradients instead of all of them. Without (hooks may read any gradient), each has its own.
 * Returns `extra` bytes (64-byte aligned) after the gradients, for the walk's own state. */
static char *grad_layout(Net *net, int share, size_t extra) {
    const int n = net->spec.n;
    int *hi = xmalloc((size_t)n * sizeof *hi), *bufof = xmalloc((size_t)n * sizeof *bufof);
    int *last_lo = xmalloc((size_t)n * sizeof *last_lo), nbuf = 0;
    size_t *cap = xcalloc((size_t)n + 1, sizeof *cap);
    int *lo_of = xmalloc((size_t)n * sizeof *lo_of); /* the lowest node using owner k's buffer */
    for (int k = 0; k < n; k++) hi[k] = grad_owner(net, k) == k ? k : -1, lo_of[k] = k;
    for (int k = 0; k < n; k++) {
        int o = grad_owner(net, k);
        if (o >= 0 && net->spec.nodes[k].op != OP_ID) lo_of[o] = NASC_MIN(lo_of[o], k);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < net->spec.nodes[i].nin; j++) {
            int k = grad_owner(net, net->spec.nodes[i].in[j]);
            if (k >= 0) hi[k] = NASC_MAX(hi[k], i);
        }
    int lo = grad_owner(net, n - 1);
    if (lo >= 0) hi[lo] = n;
    /* owners in backward order of their first write (hi descending) */
    for (;;) {
        int k = -1;
        for (int t = 0; t < n; t++)
            if (hi[t] >= 0 && (k < 0 || hi[t] > hi[k])) k = t;
        if (k < 0) break;
        int b = -1;
        for (int u = 0; share && u < nbuf; u++)
            if (last_lo[u] > hi[k] && (b < 0 || last_lo[u] < last_lo[b])) b = u;
        if (b < 0) b = nbuf++;
        bufof[k] = b, last_lo[b] = lo_of[k] - 2;
        cap[b] = NASC_MAX(cap[b], round64(node_size(&net->spec.nodes[k]) * sizeof(float) * (size_t)net->batch));
        hi[k] = -1 - k; /* done; bufof[k] valid */
    }
    size_t total = 0;
    for (int b = 0; b < nbuf; b++) {
        size_t c = cap[b];
        cap[b] = total;
        total += c;
    }
    const size_t extra_off = total;
    total += round64(extra);
    if (total > net->grad_cap) {
        free(net->grad_arena);
        net->grad_arena = xalloc_aligned(total);
        net->grad_cap = total;
    }
    for (int k = 0; k < n; k++) {
        int owner = grad_owner(net, k);
        net->dout[k] = NULL;
        if (owner == k) net->dout[k] = (float *)(void *)((char *)net->grad_arena + cap[bufof[k]]);
    }
    for (int k = 0; k < n; k++) {
        int owner = grad_owner(net, k);
        if (owner != k) net->dout[k] = owner < 0 ? NULL : net->dout[owner];
    }
    free(hi), free(bufof), free(last_lo), free(cap), free(lo_of);
    return (char *)net->grad_arena + extra_off;
}

/* Add inputs whose gradient need not be written (fusion on): an add passes its output gradient
 * g unchanged to every input, so an input k whose only consumer is the add (an NB201 cell's
 * edge, a residual branch's BN) can use, rather than receive a copy of, a buffer that holds
 * g: the add's own gradient (a plain add: it is final once the add is visited), or with the
 * add fused with an activation (g then exists only as written), another input m the add
 * writes first (its last consumer) and nothing else writes before k's readers are done (m's
 * other consumers come before k - 2: k's gradient is read down to the visit of k - 2, as in
 * grad_layout). alias[k] = that node, or -1. Only spec-level owners (identities resolved)
 * alias, each at most once, and an input the add takes twice never. */
static int *grad_aliases(const Net *net, const unsigned char *fuse) {
    const int n = net->spec.n;
    int *alias = xmalloc((size_t)n * sizeof *alias), *uses = xcalloc((size_t)n, sizeof *uses);
    int *last = xmalloc((size_t)n * sizeof *last); /* each owner's last consumer */
    for (int k = 0; k < n; k++) alias[k] = -1, last[k] = -1;
    for (int i = 0; i < n; i++) {
        if (net->spec.nodes[i].op == OP_ID) continue;
        for (int j = 0; j < net->spec.nodes[i].nin; j++) {
            int k = id_owner(net, net->spec.nodes[i].in[j]);
            if (k >= 0) uses[k]++, last[k] = NASC_MAX(last[k], i);
        }
    }
    for (int a = 0; a < n; a++) {
        const Node *nd = &net->spec.nodes[a];
        if (nd->op != OP_ADD) continue;
        int own[NODE_MAX_IN], target = -1;
        for (int j = 0; j < nd->nin; j++) own[j] = id_owner(net, nd->in[j]);
        int cand[NODE_MAX_IN]; /* inputs the add writes first, taken once */
        for (int j = 0; j < nd->nin; j++) {
            int k = own[j], twice = 0;
            for (int q = 0; q < nd->nin; q++) twice |= q != j && own[q] == k;
            cand[j] = k >= 0 && !twice && alias[k] < 0 && last[k] == a;
        }
        if (!(fuse[a] & FUSE_ACT))
            target = a;
        else /* with an activation: an input the add writes first, one that cannot alias if any */
            for (int pass = 0; pass < 2 && target < 0; pass++)
                for (int j = 0; j < nd->nin && target < 0; j++)
                    if (cand[j] && (pass || uses[own[j]] > 1)) target = own[j];
        for (int j = 0; j < nd->nin; j++) {
            int k = own[j];
            if (!cand[j] || uses[k] != 1 || k == target) continue;
            /* the target's other consumers must write it only after k's readers */
            int ok = 1;
            for (int i = k - 2; ok && i < a; i++) {
                if (i < 0 || net->spec.nodes[i].op == OP_ID) continue;
                for (int q = 0; q < net->spec.nodes[i].nin; q++) ok &= id_owner(net, net->spec.nodes[i].in[q]) != target;
            }
            if (ok) alias[k] = target;
        }
    }
    free(uses), free(last);
    return alias;
}

void net_backward(Net *net, const float *dlogits) {
    int n = net->spec.n;
    const Node *last = &net->spec.nodes[n - 1];
    int lo = grad_owner(net, n - 1);
    if (lo < 0) { /* the output is an identity of the input: nothing to learn */
        if (net->hook_bwd) net->hook_bwd(net->hook_ctx, net, -1);
        return;
    }
    unsigned char *fuse = fusion_plan(net);
    /* BN node i's backward constants at kc + koff[i]; rs: a FUSE_SUMS BN's row sums (one at a
     * time: made by node i + 2, taken by node i) */
    size_t *koff = xcalloc((size_t)n, sizeof *koff), nk = 0, rsn = 0;
    for (int i = 0; fuse && i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op == OP_BN) koff[i] = nk, nk += (size_t)nd->c;
        if (fuse[i] & FUSE_SUMS) rsn = NASC_MAX(rsn, (size_t)net->batch * nd->c * 2);
    }
    const size_t kbytes = (nk * sizeof(BnBwdK) + 63) & ~(size_t)63;
    int *alias = fuse && net->training ? grad_aliases(net, fuse) : NULL;
    const int *outer_alias = bw_alias;
    bw_alias = alias;
    char *extra = grad_layout(net, !net->hook_bwd, kbytes + rsn * sizeof(double));
    BnBwdK *kc = (BnBwdK *)(void *)extra;
    double *rs = (double *)(void *)(extra + kbytes);
    GradSrc gsrc = {0};  /* a FUSE_GRAD conv's output gradient, from the BN after it */
    float *dl = net->dout[lo];
    memcpy(dl, dlogits, node_size(last) * net->batch * sizeof(float));
    unsigned char *written = xcalloc((size_t)n, 1);
    unsigned char *outer = bw_written;
    bw_written = written;
    written[lo] = 1;
    unsigned char *folded = xcalloc((size_t)n, 1); /* lone activations done by the conv after them */
    for (int i = n - 1; i >= 0; i--) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op == OP_ID || folded[i]) continue;
        grad_ready(net, i); /* an output nothing consumed: its gradient is zero */
        if (net->hook_bwd) net->hook_bwd(net->hook_ctx, net, i);
        double t0 = prof_start();
        if (i > 0 && fuse && (fuse[i - 1] & FUSE_ACT)) {
            if (net->spec.nodes[i - 1].op != OP_BN)
                add_act_bwd(net, i - 1);
            else if (i > 1 && (fuse[i - 2] & FUSE_GRAD))
                bn_grad_bwd(net, i - 1, act_kind(nd->op), &gsrc, kc + koff[i - 1],
                            (fuse[i - 1] & FUSE_SUMS) ? rs : NULL);
            else
                bn_act_bwd(net, i - 1);
            prof_stop(net, i - 1, 1, t0);
            i--;
            continue;
        }
        if (fuse && nd->op == OP_BN && i > 0 && (fuse[i - 1] & FUSE_GRAD))
            bn_grad_bwd(net, i, ACT_COUNT, &gsrc, kc + koff[i], NULL);
        else if (fuse && nd->op == OP_CONV) {
            GradSrc plain = stored_grad(net, i);
            ActSrc x = conv_input(net, nd, fuse);
            BnRowSums sums;
            int q = nd->in[0] - 1; /* a FUSE_SUMS BN before the activation before this conv */
            if (q >= 0 && (fuse[q] & FUSE_SUMS)) {
                const Node *bn = &net->spec.nodes[q];
                bn_row_sums_init(&sums, rs, kc + koff[q], x.act, x.x, x.beta, x.saved, bn->c, bn->h * bn->w);
            }
            /* a lone ReLU/ReLU6 before it: its backward made by the conv's dx if it can (its
             * visit then skipped) */
            const int k = nd->in[0], lone = k >= 0 && (fuse[k] & FUSE_MADE);
            if (conv_bwd_src(net, i, (fuse[i] & FUSE_GRAD) ? &gsrc : &plain, &x,
                             q >= 0 && (fuse[q] & FUSE_SUMS) ? &sums : NULL, lone ? &net->spec.nodes[k] : NULL))
                folded[k] = 1;
        } else {
            op_info[nd->op].backward(net, i);
        }
        prof_stop(net, i, 1, t0);
    }
    bw_written = outer;
    bw_alias = outer_alias;
    free(folded);
    free(alias);
    free(written);
    free(koff);
    free(fuse);
    if (net->hook_bwd) net->hook_bwd(net->hook_ctx, net, -1);
}

void net_zero_grad(Net *net) { memset(net->grads, 0, net->nparams * sizeof(float)); }

size_t net_param_count(const Net *net) { return net->nparams; }

double net_macs(const Net *net) {
    double macs = 0;
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op == OP_CONV) {
            int c, h, w;
            in_node(net, nd, 0, &c, &h, &w);
            macs += (double)nd->h * nd->w * nd->c * (c / nd->a.g) * nd->a.k * nd->a.k;
        } else if (nd->op == OP_LINEAR) {
            int c, h, w;
            in_node(net, nd, 0, &c, &h, &w);
            macs += (double)c * h * w * nd->c;
        }
    }
    return macs;
}
