/* onnx.c: the ONNX writer, fp32 (from a Net) and int8 QDQ (from a QNet). The tape becomes an
 * ONNX graph node by node, in execution order (which is a topological order, as ONNX
 * requires), through protobuf-c's generated code for Debian's onnx.proto (built into
 * $(BUILD)/gen by the Makefile). Both forms share the op emitters below; the int8 form wraps
 * every int8 value in QuantizeLinear/DequantizeLinear and takes its weights from the QNet
 * (export.h says how).
 *
 * Mapping at opset 13 (node i's value is tensor "n<i+1>"; the last one is "logits"):
 *   conv      Conv (kernel_shape, strides, pads, dilations, group; bias input when it has one)
 *   bn        BatchNormalization (inference: running mean/var, epsilon 1e-5)
 *   relu      Relu                      relu6     Clip(x, 0, 6) (min/max as scalar inputs)
 *   sigmoid   Sigmoid                   hsigmoid  HardSigmoid(alpha=1/6, beta=0.5)
 *   hswish    x * HardSigmoid(x, alpha=1/6, beta=0.5) (HardSwish itself is opset 14)
 *   maxpool   MaxPool                   avgpool   AveragePool(count_include_pad)
 *   gap       GlobalAveragePool         linear    Flatten(axis=1) + Gemm(transB=1)
 *   add       Add (2 inputs) or Sum     concat    Concat(axis=1)
 *   mul       Mul (x (N,C,H,W) by s (N,C,1,1): numpy broadcasting)
 *   zero      Mul(x, 0) (a scalar 0 initializer "nasc_zero": keeps the shape, ORT and the
 *             checker accept it, and the importer maps a Mul by an all-zero constant back)
 *   id, dropout  Identity
 *   resize    Resize(mode=linear, coordinate_transformation_mode=half_pixel) with scales
 *             (1, 1, s/h, s/w), each nudged up by an ulp when needed so that floor(in * scale)
 *             is exactly s; half_pixel is F.interpolate(align_corners=False), what resize.c does.
 * nasc keeps every activation as (N, C, H, W); ONNX values here are rank 4 except after a
 * Gemm, whose output (N, C) stays rank 2 until an op needs rank 4 (then Unsqueeze axes 2,3).
 * A rank-4 network output is flattened into logits (N, classes). Metadata: nasc.spec (the spec
 * text), nasc.dtype (float32 or int8-qdq), nasc.arch, nasc.norm_mean/nasc.norm_std/nasc.input.
 *
 * Memory: every message, string and array of one export lives in a list of allocations freed
 * at the end; weight tensors point into the net's buffers (raw_data, little-endian), no copy.
 */
#include "export.h"

#include <math.h>
#include <stdarg.h>

#include "onnx.pb-c.h"

#define ONNX_OPSET 13
#define ONNX_IR_VERSION 7
#define BN_EPS 1e-5f /* net.c's */

typedef struct {
    void **allocs;
    size_t nalloc, capalloc;
    Onnx__NodeProto **nodes;
    size_t nnode, capnode;
    Onnx__TensorProto **inits;
    size_t ninit, capinit;
} Writer;

static void *w_alloc(Writer *w, size_t n) {
    void *p = xcalloc(1, n ? n : 1);
    if (w->nalloc == w->capalloc) {
        w->capalloc = w->capalloc ? 2 * w->capalloc : 256;
        w->allocs = xrealloc(w->allocs, w->capalloc * sizeof *w->allocs);
    }
    w->allocs[w->nalloc++] = p;
    return p;
}

static char *w_str(Writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *w_str(Writer *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = w_alloc(w, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void w_free(Writer *w) {
    for (size_t i = 0; i < w->nalloc; i++) free(w->allocs[i]);
    free(w->allocs);
    free(w->nodes);
    free(w->inits);
    memset(w, 0, sizeof *w);
}

#define NODE_MAX_ATTR 8

/* A node with inputs in[0..nin) (names; "" = an omitted optional input) and one output. */
static Onnx__NodeProto *w_node(Writer *w, const char *op, const char *name, const char *const *in, int nin,
                               const char *out) {
    Onnx__NodeProto *nd = w_alloc(w, sizeof *nd);
    onnx__node_proto__init(nd);
    nd->op_type = (char *)op;
    nd->name = (char *)name;
    nd->n_input = (size_t)nin;
    nd->input = w_alloc(w, (size_t)nin * sizeof(char *));
    for (int j = 0; j < nin; j++) nd->input[j] = (char *)in[j];
    nd->n_output = 1;
    nd->output = w_alloc(w, sizeof(char *));
    nd->output[0] = (char *)out;
    nd->attribute = w_alloc(w, NODE_MAX_ATTR * sizeof *nd->attribute);
    if (w->nnode == w->capnode) {
        w->capnode = w->capnode ? 2 * w->capnode : 64;
        w->nodes = xrealloc(w->nodes, w->capnode * sizeof *w->nodes);
    }
    w->nodes[w->nnode++] = nd;
    return nd;
}

static Onnx__AttributeProto *w_attr(Writer *w, Onnx__NodeProto *nd, const char *key,
                                    Onnx__AttributeProto__AttributeType type) {
    NASC_ASSERT(nd->n_attribute < NODE_MAX_ATTR);
    Onnx__AttributeProto *a = w_alloc(w, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = (char *)key;
    a->has_type = 1;
    a->type = type;
    nd->attribute[nd->n_attribute++] = a;
    return a;
}

static void attr_int(Writer *w, Onnx__NodeProto *nd, const char *key, int64_t v) {
    Onnx__AttributeProto *a = w_attr(w, nd, key, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void attr_float(Writer *w, Onnx__NodeProto *nd, const char *key, float v) {
    Onnx__AttributeProto *a = w_attr(w, nd, key, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static void attr_str(Writer *w, Onnx__NodeProto *nd, const char *key, const char *v) {
    Onnx__AttributeProto *a = w_attr(w, nd, key, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.len = strlen(v);
    a->s.data = (uint8_t *)v;
}

/* An INTS attribute of n copies of v (kernel_shape, strides, dilations: 2; pads: 4). */
static void attr_ints_rep(Writer *w, Onnx__NodeProto *nd, const char *key, int64_t v, int n) {
    Onnx__AttributeProto *a = w_attr(w, nd, key, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)n;
    a->ints = w_alloc(w, (size_t)n * sizeof(int64_t));
    for (int j = 0; j < n; j++) a->ints[j] = v;
}

/* An initializer whose raw_data points at `data` (nbytes; not copied: it must outlive the
 * packing). dims (nd values; 0 = a scalar). */
static void w_init(Writer *w, const char *name, int32_t dtype, const int64_t *dims, int nd, const void *data,
                   size_t nbytes) {
    Onnx__TensorProto *t = w_alloc(w, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t)nd;
    t->dims = w_alloc(w, (size_t)(nd ? nd : 1) * sizeof(int64_t));
    if (nd) memcpy(t->dims, dims, (size_t)nd * sizeof(int64_t));
    t->has_raw_data = 1;
    t->raw_data.len = nbytes;
    t->raw_data.data = (uint8_t *)data;
    if (w->ninit == w->capinit) {
        w->capinit = w->capinit ? 2 * w->capinit : 64;
        w->inits = xrealloc(w->inits, w->capinit * sizeof *w->inits);
    }
    w->inits[w->ninit++] = t;
}

static void w_init_f32(Writer *w, const char *name, const int64_t *dims, int nd, const float *data) {
    size_t n = 1;
    for (int j = 0; j < nd; j++) n *= (size_t)dims[j];
    w_init(w, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, nd, data, n * sizeof(float));
}

/* A copy of n floats that lives as long as the writer. */
static const float *w_floats(Writer *w, const float *v, size_t n) {
    float *p = w_alloc(w, n * sizeof(float));
    memcpy(p, v, n * sizeof(float));
    return p;
}

/* A graph input/output: float tensor (dim_param "N", dims[0..nd)). */
static Onnx__ValueInfoProto *w_value_info(Writer *w, const char *name, const int64_t *dims, int nd) {
    Onnx__ValueInfoProto *v = w_alloc(w, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = (char *)name;
    Onnx__TypeProto *tp = w_alloc(w, sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = w_alloc(w, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *sh = w_alloc(w, sizeof *sh);
    onnx__tensor_shape_proto__init(sh);
    sh->n_dim = (size_t)nd + 1;
    sh->dim = w_alloc(w, sh->n_dim * sizeof *sh->dim);
    for (size_t j = 0; j < sh->n_dim; j++) {
        Onnx__TensorShapeProto__Dimension *d = w_alloc(w, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (j == 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = "N";
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[j - 1];
        }
        sh->dim[j] = d;
    }
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->type = tp;
    return v;
}

/* ------------------------------------------------------------------ graph */
static const float k_zero = 0.0f, k_six = 6.0f;
static const int64_t k_axes23[2] = {2, 3};

typedef struct {
    const Spec *spec;
    int in_c, in_h, in_w, classes;
    Writer *w;
    const char *input; /* the value nodes reading the network input read ("input", or its int8 DQ) */
    char **tname;      /* tname[i]: node i's ONNX value (float) */
    int *rank;         /* 2 or 4 */
    char **t4d;        /* node i's value as rank 4 (an Unsqueeze), made once when needed */
    char **tflat;      /* node i's value flattened to (N, C*H*W), made once when needed */
    int have_zero, have_clip, have_axes, have_input_flat;
} Graph;

static void graph_init(Graph *g, Writer *w, const Spec *spec, int in_c, int in_h, int in_w, int classes) {
    memset(g, 0, sizeof *g);
    int n = spec->n;
    g->spec = spec;
    g->in_c = in_c, g->in_h = in_h, g->in_w = in_w, g->classes = classes;
    g->w = w;
    g->input = "input";
    g->tname = w_alloc(w, (size_t)n * sizeof *g->tname);
    g->t4d = w_alloc(w, (size_t)n * sizeof *g->t4d);
    g->tflat = w_alloc(w, (size_t)n * sizeof *g->tflat);
    g->rank = w_alloc(w, (size_t)n * sizeof *g->rank);
}

static int in_rank(const Graph *g, int k) { return k < 0 ? 4 : g->rank[k]; }
static const char *in_name(const Graph *g, int k) { return k < 0 ? g->input : g->tname[k]; }

static void in_shape(const Graph *g, int k, int *c, int *h, int *w) {
    if (k < 0) *c = g->in_c, *h = g->in_h, *w = g->in_w;
    else *c = g->spec->nodes[k].c, *h = g->spec->nodes[k].h, *w = g->spec->nodes[k].w;
}

/* Node k's value as rank 4 (N, C, H, W). */
static const char *as4d(Graph *g, int k) {
    if (in_rank(g, k) == 4) return in_name(g, k);
    if (!g->t4d[k]) {
        if (!g->have_axes) {
            int64_t d = 2;
            w_init(g->w, "nasc_axes23", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &d, 1, k_axes23, sizeof k_axes23);
            g->have_axes = 1;
        }
        g->t4d[k] = w_str(g->w, "%s_4d", g->tname[k]);
        const char *in[2] = {g->tname[k], "nasc_axes23"};
        w_node(g->w, "Unsqueeze", w_str(g->w, "%s_unsqueeze", g->tname[k]), in, 2, g->t4d[k]);
    }
    return g->t4d[k];
}

/* Node k's value as (N, C*H*W). */
static const char *as2d(Graph *g, int k) {
    if (in_rank(g, k) == 2) return in_name(g, k);
    if (k < 0) {
        if (!g->have_input_flat) {
            const char *in[1] = {g->input};
            Onnx__NodeProto *nd = w_node(g->w, "Flatten", "input_flatten", in, 1, "input_flat");
            attr_int(g->w, nd, "axis", 1);
            g->have_input_flat = 1;
        }
        return "input_flat";
    }
    if (!g->tflat[k]) {
        g->tflat[k] = w_str(g->w, "%s_flat", g->tname[k]);
        const char *in[1] = {g->tname[k]};
        Onnx__NodeProto *nd = w_node(g->w, "Flatten", w_str(g->w, "%s_flatten", g->tname[k]), in, 1, g->tflat[k]);
        attr_int(g->w, nd, "axis", 1);
    }
    return g->tflat[k];
}

static void node_rank(Graph *g, int i) {
    const Node *nd = &g->spec->nodes[i];
    switch (nd->op) {
    case OP_LINEAR: g->rank[i] = 2; break;
    case OP_CONV:
    case OP_MAXPOOL:
    case OP_AVGPOOL:
    case OP_GAP:
    case OP_RESIZE: g->rank[i] = 4; break;
    case OP_ADD:
    case OP_CONCAT:
    case OP_MUL:
        g->rank[i] = 2;
        for (int j = 0; j < nd->nin; j++)
            if (in_rank(g, nd->in[j]) == 4) g->rank[i] = 4;
        break;
    default: g->rank[i] = in_rank(g, nd->in[0]); break;
    }
}

/* The inputs of a multi-input node at its rank. */
static void same_rank_inputs(Graph *g, int i, const char **in) {
    const Node *nd = &g->spec->nodes[i];
    for (int j = 0; j < nd->nin; j++) in[j] = g->rank[i] == 4 ? as4d(g, nd->in[j]) : in_name(g, nd->in[j]);
}

static float resize_scale(int in, int out) {
    float s = (float)out / (float)in;
    while ((int64_t)(s * (float)in) < out) s = nextafterf(s, INFINITY);
    return s;
}

static const char *node_label(Graph *g, int i) {
    const Node *nd = &g->spec->nodes[i];
    return nd->name[0] ? w_str(g->w, "%s%d_%s", op_name(nd->op), i + 1, nd->name) : w_str(g->w, "%s%d", op_name(nd->op), i + 1);
}

/* Conv(x, wname[, bname]) -> out. */
static void emit_conv(Graph *g, const char *name, const char *x, const char *wname, const char *bname, int k, int s,
                      int p, int d, int groups, const char *out) {
    const char *in[3] = {x, wname, bname};
    Onnx__NodeProto *on = w_node(g->w, "Conv", name, in, bname ? 3 : 2, out);
    attr_ints_rep(g->w, on, "kernel_shape", k, 2);
    attr_ints_rep(g->w, on, "strides", s, 2);
    attr_ints_rep(g->w, on, "pads", p, 4);
    attr_ints_rep(g->w, on, "dilations", d, 2);
    attr_int(g->w, on, "group", groups);
}

/* Gemm(x, wname[, bname], transB=1) -> out. */
static void emit_gemm(Graph *g, const char *name, const char *x, const char *wname, const char *bname, const char *out) {
    const char *in[3] = {x, wname, bname};
    Onnx__NodeProto *on = w_node(g->w, "Gemm", name, in, bname ? 3 : 2, out);
    attr_int(g->w, on, "transB", 1);
}

/* relu6 as Clip(x, 0, 6). */
static void emit_clip6(Graph *g, const char *name, const char *x, const char *out) {
    if (!g->have_clip) {
        w_init_f32(g->w, "nasc_clip_min", NULL, 0, &k_zero);
        w_init_f32(g->w, "nasc_clip_max", NULL, 0, &k_six);
        g->have_clip = 1;
    }
    const char *in[3] = {x, "nasc_clip_min", "nasc_clip_max"};
    w_node(g->w, "Clip", name, in, 3, out);
}

/* A ReLU or ReLU6 applied to x (a fused activation). */
static void emit_act(Graph *g, OpKind op, const char *name, const char *x, const char *out) {
    const char *in[1] = {x};
    if (op == OP_RELU6) emit_clip6(g, name, x, out);
    else w_node(g->w, "Relu", name, in, 1, out);
}

/* Node i's op without parameters (activations, pools, add, concat, mul, zero, id, dropout,
 * resize), reading its inputs' values, writing out. */
static void emit_plain(Graph *g, int i, const char *name, const char *out) {
    Writer *w = g->w;
    const Node *nd = &g->spec->nodes[i];
    const OpAttr *a = &nd->a;
    int c, h, wd;
    in_shape(g, nd->in[0], &c, &h, &wd);
    const char *in[NODE_MAX_IN + 2];
    Onnx__NodeProto *on;
    switch (nd->op) {
    case OP_RELU:
    case OP_RELU6: emit_act(g, nd->op, name, in_name(g, nd->in[0]), out); break;
    case OP_SIGMOID:
        in[0] = in_name(g, nd->in[0]);
        w_node(w, "Sigmoid", name, in, 1, out);
        break;
    case OP_HSIGMOID:
    case OP_HSWISH: {
        in[0] = in_name(g, nd->in[0]);
        const char *hs = nd->op == OP_HSIGMOID ? out : w_str(w, "%s_hsigmoid", out);
        on = w_node(w, "HardSigmoid", nd->op == OP_HSIGMOID ? name : w_str(w, "%s_hsigmoid", name), in, 1, hs);
        attr_float(w, on, "alpha", 1.0f / 6.0f);
        attr_float(w, on, "beta", 0.5f);
        if (nd->op == OP_HSWISH) {
            in[1] = hs;
            w_node(w, "Mul", name, in, 2, out);
        }
        break;
    }
    case OP_MAXPOOL:
    case OP_AVGPOOL:
        in[0] = as4d(g, nd->in[0]);
        on = w_node(w, nd->op == OP_MAXPOOL ? "MaxPool" : "AveragePool", name, in, 1, out);
        attr_ints_rep(w, on, "kernel_shape", a->k, 2);
        attr_ints_rep(w, on, "strides", a->s ? a->s : a->k, 2);
        attr_ints_rep(w, on, "pads", a->p < 0 ? 0 : a->p, 4);
        if (nd->op == OP_AVGPOOL) attr_int(w, on, "count_include_pad", a->cip ? 1 : 0);
        break;
    case OP_GAP:
        in[0] = as4d(g, nd->in[0]);
        w_node(w, "GlobalAveragePool", name, in, 1, out);
        break;
    case OP_ADD:
        same_rank_inputs(g, i, in);
        w_node(w, nd->nin == 1 ? "Identity" : nd->nin == 2 ? "Add" : "Sum", name, in, nd->nin, out);
        break;
    case OP_CONCAT:
        same_rank_inputs(g, i, in);
        on = w_node(w, "Concat", name, in, nd->nin, out);
        attr_int(w, on, "axis", 1);
        break;
    case OP_MUL:
        same_rank_inputs(g, i, in);
        w_node(w, "Mul", name, in, 2, out);
        break;
    case OP_ZERO:
        if (!g->have_zero) {
            w_init_f32(w, "nasc_zero", NULL, 0, &k_zero);
            g->have_zero = 1;
        }
        in[0] = in_name(g, nd->in[0]);
        in[1] = "nasc_zero";
        w_node(w, "Mul", name, in, 2, out);
        break;
    case OP_ID:
    case OP_DROPOUT:
        in[0] = in_name(g, nd->in[0]);
        w_node(w, "Identity", name, in, 1, out);
        break;
    case OP_RESIZE: {
        float sc[4] = {1.0f, 1.0f, resize_scale(h, nd->h), resize_scale(wd, nd->w)};
        int64_t dim = 4;
        in[0] = as4d(g, nd->in[0]);
        in[1] = "";
        in[2] = w_str(w, "%s.scales", out);
        w_init_f32(w, in[2], &dim, 1, w_floats(w, sc, 4));
        on = w_node(w, "Resize", name, in, 3, out);
        attr_str(w, on, "mode", "linear");
        attr_str(w, on, "coordinate_transformation_mode", "half_pixel");
        break;
    }
    default: NASC_ASSERT(!"an op with parameters");
    }
}

/* fp32: node i of net, with its parameters as float initializers. */
static void emit_fp32(Graph *g, const Net *net, int i) {
    Writer *w = g->w;
    const Node *nd = &net->spec.nodes[i];
    const OpAttr *a = &nd->a;
    const char *out = g->tname[i], *name = node_label(g, i);
    const float *p = net->params + nd->param_off;
    int c, h, wd;
    in_shape(g, nd->in[0], &c, &h, &wd);
    switch (nd->op) {
    case OP_CONV: {
        int64_t wdims[4] = {nd->c, c / a->g, a->k, a->k}, bdim = nd->c;
        const char *wn = w_str(w, "%s.weight", out), *bn = NULL;
        w_init_f32(w, wn, wdims, 4, p);
        if (a->bias) {
            bn = w_str(w, "%s.bias", out);
            w_init_f32(w, bn, &bdim, 1, p + (size_t)nd->c * (c / a->g) * a->k * a->k);
        }
        emit_conv(g, name, as4d(g, nd->in[0]), wn, bn, a->k, a->s, a->p < 0 ? a->d * (a->k - 1) / 2 : a->p, a->d,
                  a->g, out);
        break;
    }
    case OP_BN: {
        int64_t dim = nd->c;
        const float *buf = net->buffers + nd->buf_off;
        const char *in[5] = {in_name(g, nd->in[0]), w_str(w, "%s.scale", out), w_str(w, "%s.shift", out),
                             w_str(w, "%s.running_mean", out), w_str(w, "%s.running_var", out)};
        w_init_f32(w, in[1], &dim, 1, p);
        w_init_f32(w, in[2], &dim, 1, p + nd->c);
        w_init_f32(w, in[3], &dim, 1, buf);
        w_init_f32(w, in[4], &dim, 1, buf + nd->c);
        Onnx__NodeProto *on = w_node(w, "BatchNormalization", name, in, 5, out);
        attr_float(w, on, "epsilon", BN_EPS);
        break;
    }
    case OP_LINEAR: {
        int64_t fin = (int64_t)c * h * wd, wdims[2] = {nd->c, fin}, bdim = nd->c;
        const char *wn = w_str(w, "%s.weight", out), *bn = NULL;
        w_init_f32(w, wn, wdims, 2, p);
        if (a->bias) {
            bn = w_str(w, "%s.bias", out);
            w_init_f32(w, bn, &bdim, 1, p + (size_t)nd->c * (size_t)fin);
        }
        emit_gemm(g, name, as2d(g, nd->in[0]), wn, bn, out);
        break;
    }
    default: emit_plain(g, i, name, out); break;
    }
}

/* ------------------------------------------------------------------ model */
static Onnx__StringStringEntryProto *w_meta(Writer *w, const char *key, const char *value) {
    Onnx__StringStringEntryProto *m = w_alloc(w, sizeof *m);
    onnx__string_string_entry_proto__init(m);
    m->key = (char *)key;
    m->value = (char *)value;
    return m;
}

static char *float_list(Writer *w, const float *v, int n) {
    char buf[256];
    size_t len = 0;
    buf[0] = 0;
    for (int j = 0; j < n; j++) len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%.9g", j ? "," : "", v[j]);
    return w_str(w, "%s", buf);
}

/* The model around g's nodes: input `input`, output `logits`, metadata; packed into *buf. */
static void pack_model(Graph *g, const Norm *norm, const char *kind, uint8_t **buf, size_t *len) {
    Writer *w = g->w;
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    graph.name = "nasc";
    graph.n_node = w->nnode;
    graph.node = w->nodes;
    graph.n_initializer = w->ninit;
    graph.initializer = w->inits;
    int64_t in_dims[3] = {g->in_c, g->in_h, g->in_w}, out_dims[1] = {g->classes};
    Onnx__ValueInfoProto *vin = w_value_info(w, "input", in_dims, 3);
    Onnx__ValueInfoProto *vout = w_value_info(w, "logits", out_dims, 1);
    graph.n_input = graph.n_output = 1;
    graph.input = &vin;
    graph.output = &vout;

    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    opset.domain = "";
    opset.has_version = 1;
    opset.version = ONNX_OPSET;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};

    char *spec = spec_print(g->spec);
    Onnx__StringStringEntryProto *meta[7];
    size_t nmeta = 0;
    meta[nmeta++] = w_meta(w, "nasc.spec", spec);
    meta[nmeta++] = w_meta(w, "nasc.dtype", (char *)kind);
    if (g->spec->arch) meta[nmeta++] = w_meta(w, "nasc.arch", g->spec->arch);
    if (norm && norm->nchan > 0) {
        int nc = NASC_MIN(norm->nchan, 4);
        meta[nmeta++] = w_meta(w, "nasc.norm_mean", float_list(w, norm->mean, nc));
        meta[nmeta++] = w_meta(w, "nasc.norm_std", float_list(w, norm->std, nc));
        meta[nmeta++] = w_meta(w, "nasc.input", "input[n][c][y][x] = (pixel / 255 - norm_mean[c]) / norm_std[c]");
    }

    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    m.has_ir_version = 1;
    m.ir_version = ONNX_IR_VERSION;
    m.n_opset_import = 1;
    m.opset_import = opsets;
    m.producer_name = "nasc";
    m.producer_version = NASC_VERSION;
    m.doc_string = "exported by nasc: input (N, C, H, W) normalized as metadata nasc.input says; output logits (N, classes)";
    m.graph = &graph;
    m.n_metadata_props = nmeta;
    m.metadata_props = meta;

    size_t size = onnx__model_proto__get_packed_size(&m);
    *buf = xmalloc(size ? size : 1);
    *len = onnx__model_proto__pack(&m, *buf);
    NASC_ASSERT(*len == size);
    free(spec);
}

/* The last node's value into "logits" (N, classes): flattened when it is rank 4. */
static void emit_logits(Graph *g) {
    int last = g->spec->n - 1;
    const char *in[1] = {g->tname[last]};
    if (g->rank[last] == 4) {
        Onnx__NodeProto *on = w_node(g->w, "Flatten", "logits_flatten", in, 1, "logits");
        attr_int(g->w, on, "axis", 1);
    } else {
        w_node(g->w, "Identity", "logits_identity", in, 1, "logits");
    }
}

int onnx_export(const Net *net, const Norm *norm, uint8_t **buf, size_t *len, Err *e) {
    int n = net->spec.n;
    Writer w = {0};
    Graph g;
    graph_init(&g, &w, &net->spec, net->in_c, net->in_h, net->in_w, net->classes);
    for (int i = 0; i < n; i++) node_rank(&g, i);
    for (int i = 0; i < n; i++) g.tname[i] = w_str(&w, "n%d", i + 1);
    if (g.rank[n - 1] == 2) g.tname[n - 1] = "logits"; /* else a Flatten makes it */
    for (int i = 0; i < n; i++) emit_fp32(&g, net, i);
    if (g.rank[n - 1] == 4) emit_logits(&g);
    pack_model(&g, norm, "float32", buf, len);
    w_free(&w);
    (void)e;
    return NASC_OK;
}

int onnx_export_file(const char *path, const Net *net, const Norm *norm, Err *e) {
    uint8_t *buf;
    size_t len;
    if (onnx_export(net, norm, &buf, &len, e) != NASC_OK) return NASC_ERR;
    int rc = file_write_atomic(path, buf, len, e);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ int8 (QDQ) */
/* Value v's quantization parameters as scalar initializers "v<v>.scale" (float) and "v<v>.zp"
 * (int8), made once. */
static void q_params(Writer *w, const QNet *q, int v, char **sname, char **zname, char **made) {
    if (!made[v]) {
        made[v] = w_str(w, "v%d", v);
        float *s = w_alloc(w, sizeof *s);
        uint8_t *z = w_alloc(w, 1);
        *s = q->scale[v];
        *z = (uint8_t)(q->zp[v] + 128);
        w_init(w, w_str(w, "v%d.scale", v), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, NULL, 0, s, sizeof *s);
        w_init(w, w_str(w, "v%d.zp", v), ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, NULL, 0, z, 1);
    }
    *sname = w_str(w, "v%d.scale", v);
    *zname = w_str(w, "v%d.zp", v);
}

/* float x -> QuantizeLinear -> DequantizeLinear -> returns the DQ output's name "v<v>". */
static const char *emit_qdq(Graph *g, const QNet *q, int v, const char *x, char **made) {
    char *s, *z;
    q_params(g->w, q, v, &s, &z, made);
    const char *qin[3] = {x, s, z};
    const char *qv = w_str(g->w, "v%d_q", v), *dv = w_str(g->w, "v%d", v);
    w_node(g->w, "QuantizeLinear", w_str(g->w, "v%d_quantize", v), qin, 3, qv);
    const char *din[3] = {qv, s, z};
    w_node(g->w, "DequantizeLinear", w_str(g->w, "v%d_dequantize", v), din, 3, dv);
    return dv;
}

/* Per-channel int8 weights (dims) and int32 bias as DequantizeLinear(axis 0) of initializers;
 * wname and bname get the float outputs (bname NULL without a bias). */
static void emit_qweights(Graph *g, const QNet *q, int i, const int64_t *dims, int nd, const char **wname,
                          const char **bname) {
    Writer *w = g->w;
    const QNode *u = &q->nodes[i];
    int64_t cout = dims[0];
    const char *base = w_str(w, "n%d", i + 1);
    int8_t *wzp = w_alloc(w, (size_t)cout);
    w_init(w, w_str(w, "%s.weight_q", base), ONNX__TENSOR_PROTO__DATA_TYPE__INT8, dims, nd, u->w, u->nw);
    w_init_f32(w, w_str(w, "%s.weight_scale", base), &cout, 1, u->wscale);
    w_init(w, w_str(w, "%s.weight_zp", base), ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &cout, 1, wzp, (size_t)cout);
    const char *in[3] = {w_str(w, "%s.weight_q", base), w_str(w, "%s.weight_scale", base), w_str(w, "%s.weight_zp", base)};
    *wname = w_str(w, "%s.weight", base);
    Onnx__NodeProto *on = w_node(w, "DequantizeLinear", w_str(w, "%s.weight_dequantize", base), in, 3, *wname);
    attr_int(w, on, "axis", 0);
    *bname = NULL;
    if (!u->bias) return;
    float xs = q->scale[qnet_value(q, q->spec.nodes[i].in[0])];
    float *bs = w_alloc(w, (size_t)cout * sizeof *bs);
    int32_t *bzp = w_alloc(w, (size_t)cout * sizeof *bzp);
    for (int64_t c = 0; c < cout; c++) bs[c] = xs * u->wscale[c];
    w_init(w, w_str(w, "%s.bias_q", base), ONNX__TENSOR_PROTO__DATA_TYPE__INT32, &cout, 1, u->bias, 4 * (size_t)cout);
    w_init_f32(w, w_str(w, "%s.bias_scale", base), &cout, 1, bs);
    w_init(w, w_str(w, "%s.bias_zp", base), ONNX__TENSOR_PROTO__DATA_TYPE__INT32, &cout, 1, bzp, 4 * (size_t)cout);
    const char *bin[3] = {w_str(w, "%s.bias_q", base), w_str(w, "%s.bias_scale", base), w_str(w, "%s.bias_zp", base)};
    *bname = w_str(w, "%s.bias", base);
    on = w_node(w, "DequantizeLinear", w_str(w, "%s.bias_dequantize", base), bin, 3, *bname);
    attr_int(w, on, "axis", 0);
}

int onnx_export_qnet(const QNet *q, const Norm *norm, uint8_t **buf, size_t *len, Err *e) {
    int n = q->spec.n;
    Writer w = {0};
    Graph g;
    graph_init(&g, &w, &q->spec, q->in_c, q->in_h, q->in_w, q->classes);
    char **made = w_alloc(&w, ((size_t)n + 1) * sizeof *made);
    for (int i = 0; i < n; i++) node_rank(&g, i);
    g.input = emit_qdq(&g, q, 0, "input", made);
    for (int i = 0; i < n; i++) {
        const QNode *u = &q->nodes[i];
        const Node *nd = &q->spec.nodes[i];
        if (u->kind == QX_ALIAS) { /* the source's value, under its name */
            int v = qnet_value(q, i);
            g.tname[i] = v == 0 ? (char *)g.input : g.tname[v - 1];
            continue;
        }
        if (u->kind == QX_NONE) continue; /* written by its chain's head */
        const char *name = node_label(&g, i), *f = w_str(&w, "n%d_f", u->tail + 1);
        if (u->kind == QX_CONV) {
            int c, h, wd;
            in_shape(&g, nd->in[0], &c, &h, &wd);
            const char *wn, *bn;
            const char *pre = u->act >= 0 ? w_str(&w, "n%d_f", i + 1) : f;
            if (nd->op == OP_CONV) {
                int64_t dims[4] = {nd->c, c / nd->a.g, nd->a.k, nd->a.k};
                emit_qweights(&g, q, i, dims, 4, &wn, &bn);
                const OpAttr *a = &nd->a;
                emit_conv(&g, name, as4d(&g, nd->in[0]), wn, bn, a->k, a->s, a->p < 0 ? a->d * (a->k - 1) / 2 : a->p,
                          a->d, a->g, pre);
            } else if (nd->op == OP_LINEAR) {
                int64_t dims[2] = {nd->c, (int64_t)c * h * wd};
                emit_qweights(&g, q, i, dims, 2, &wn, &bn);
                emit_gemm(&g, name, as2d(&g, nd->in[0]), wn, bn, pre);
            } else { /* a BN that folds into nothing: a depthwise 1x1 conv */
                int64_t dims[4] = {nd->c, 1, 1, 1};
                emit_qweights(&g, q, i, dims, 4, &wn, &bn);
                const char *x = in_name(&g, nd->in[0]);
                if (g.rank[i] == 2) { /* (N, C): through (N, C, 1, 1) and back */
                    const char *x4 = as4d(&g, nd->in[0]), *y4 = w_str(&w, "n%d_4d_f", i + 1);
                    emit_conv(&g, name, x4, wn, bn, 1, 1, 0, 1, nd->c, y4);
                    const char *in[1] = {y4};
                    Onnx__NodeProto *on = w_node(&w, "Flatten", w_str(&w, "n%d_flatten", i + 1), in, 1, pre);
                    attr_int(&w, on, "axis", 1);
                } else {
                    emit_conv(&g, name, x, wn, bn, 1, 1, 0, 1, nd->c, pre);
                }
            }
            if (u->act >= 0) emit_act(&g, q->spec.nodes[u->act].op, node_label(&g, u->act), pre, f);
        } else if (u->kind == QX_ADD && u->act >= 0) {
            const char *pre = w_str(&w, "n%d_f", i + 1);
            emit_plain(&g, i, name, pre);
            emit_act(&g, q->spec.nodes[u->act].op, node_label(&g, u->act), pre, f);
        } else {
            emit_plain(&g, i, name, f);
        }
        g.tname[u->tail] = (char *)emit_qdq(&g, q, u->tail + 1, f, made);
    }
    emit_logits(&g);
    pack_model(&g, norm, "int8-qdq", buf, len);
    w_free(&w);
    (void)e;
    return NASC_OK;
}

int onnx_export_qnet_file(const char *path, const QNet *q, const Norm *norm, Err *e) {
    uint8_t *buf;
    size_t len;
    if (onnx_export_qnet(q, norm, &buf, &len, e) != NASC_OK) return NASC_ERR;
    int rc = file_write_atomic(path, buf, len, e);
    free(buf);
    return rc;
}
