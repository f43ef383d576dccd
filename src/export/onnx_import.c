/* onnx_import.c: the ONNX reader. An ONNX model becomes a nasc Spec plus weights: the graph is
 * walked once in its (topological) node order; each ONNX value is either a nasc node's output
 * (possibly seen as rank 2 or flattened), a constant (initializers, Constant nodes, and small
 * int64 shape computations folded on the fly), or nothing nasc can hold (then an error names
 * the node). Nodes that do not reach the graph output (e.g. the HardSigmoid of an x * hsig(x)
 * pattern, now an hswish) are dropped at the end, so the output is the spec's last node.
 *
 * Recognized (what onnx.c writes, plus the plain forms PyTorch, tf2onnx and others write):
 *   Conv (symmetric pads, square kernels, equal strides/dilations; auto_pad VALID, or SAME
 *   when it is symmetric), BatchNormalization (any epsilon: folded into the scale),
 *   Relu, Clip(0, 6) -> relu6, Clip(0, +inf) -> relu, Sigmoid, HardSigmoid(1/6, 0.5),
 *   HardSwish, x * HardSigmoid(x) -> hswish, MaxPool / AveragePool (ceil_mode only when it
 *   changes nothing), GlobalAveragePool, ReduceMean over H, W, Gemm (any transB, alpha, beta;
 *   after Flatten, Reshape to (N, -1) or directly), MatMul by a constant (+ Add of a constant:
 *   the bias), Add / Sum, Concat on channels, Mul by a per-channel scale (N, C, 1, 1), Mul by 0
 *   (the zero op), Identity, Dropout, Resize (linear, half_pixel or pytorch_half_pixel),
 *   Flatten / Reshape / Squeeze / Unsqueeze that only change the rank, Constant, and the shape
 *   arithmetic exporters write for x.view(N, -1): Shape, Gather, Slice, Unsqueeze, Concat, Cast;
 *   QDQ models (QuantizeLinear/DequantizeLinear, as nasc's int8 export writes them) import as the
 *   float network they approximate: weights dequantized, activation rounding dropped.
 *
 * Robustness: protobuf-c's unpack result is checked; every tensor's dims are bounded and its
 * data size checked against them before use; every index, attribute type and string pointer is
 * checked; shapes are inferred here with the kernels' own conv_dims_init/pool_dims_init, and the
 * result is built with net_build, which checks the spec once more. Malformed input gives a
 * message, never a crash (tests/test_export.c feeds it truncated and corrupted files).
 */
#include "export.h"

#include <math.h>
#include <stdarg.h>

#include "../ops/ops.h"
#include "onnx.pb-c.h"

#define BN_EPS 1e-5f          /* net.c's */
#define SHAPE_UNK INT64_MIN   /* an unknown entry of a shape vector (the batch size) */
#define MAX_DIMS 8
#define MAX_ELEMS ((int64_t)1 << 28)

static const char k_supported[] =
    "Conv, BatchNormalization, Relu, Clip, Sigmoid, HardSigmoid, HardSwish, MaxPool, AveragePool, "
    "GlobalAveragePool, ReduceMean, Gemm, MatMul, Add, Sum, Mul, Concat, Flatten, Reshape, Squeeze, Unsqueeze, "
    "Identity, Dropout, Resize, Constant, Shape, Gather, Slice, Cast, QuantizeLinear, DequantizeLinear";

typedef enum { V_NODE, V_CONST } VKind;

typedef struct {
    const char *name; /* points into the unpacked model */
    VKind kind;
    /* V_NODE: nasc node `node` (-1 = the network input) seen at rank 2 or 4. flat: a
     * (N, C*H*W) view of a node whose H*W > 1, which only Gemm/MatMul and pointwise ops read. */
    int node, rank, flat;
    /* V_CONST: ndims dims; float data f or int64 data i (exactly one is set), n elements. */
    int ndims;
    int64_t dims[MAX_DIMS];
    size_t n;
    float *f;
    int64_t *i;
} Value;

typedef struct {
    OpKind op;
    OpAttr a;
    int in[NODE_MAX_IN], nin;
    int c, h, w;  /* output shape of one sample */
    float *wt;    /* conv (cout, cin/g, k, k) or linear (out, in); owned */
    float *bias;  /* (cout) or NULL; owned */
    float *bn;    /* gamma, beta, mean, var: (4, c); owned */
    const char *oname; /* the ONNX value it was made for */
} INode;

typedef struct {
    Value *vals;
    int nval, capval;
    int *hash; /* open addressing over vals, -1 = empty; hcap a power of two */
    int hcap;
    INode *nodes;
    int n, cap;
    int in_c, in_h, in_w;
    int opset;
    const Onnx__GraphProto *g;
    const Onnx__NodeProto *cur; /* the ONNX node being read (messages) */
    int cur_index;
    Err *e;
} Imp;

static const char *S(const char *s) { return s ? s : ""; }

/* "node NAME: " + message, for the node being read. */
static int fail(Imp *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Imp *im, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (im->cur) {
        const char *nm = S(im->cur->name);
        if (nm[0]) err_set(im->e, "node %.80s (%.40s): %s", nm, S(im->cur->op_type), msg);
        else err_set(im->e, "node #%d (%.40s): %s", im->cur_index + 1, S(im->cur->op_type), msg);
    } else {
        err_set(im->e, "%s", msg);
    }
    return NASC_ERR;
}

/* ------------------------------------------------------------------ value table */
static uint32_t hash_str(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int val_find(const Imp *im, const char *name) {
    if (!im->hcap) return -1;
    for (uint32_t h = hash_str(name) & (uint32_t)(im->hcap - 1);; h = (h + 1) & (uint32_t)(im->hcap - 1)) {
        int k = im->hash[h];
        if (k < 0) return -1;
        if (!strcmp(im->vals[k].name, name)) return k;
    }
}

static void hash_insert(Imp *im, int k) {
    uint32_t h = hash_str(im->vals[k].name) & (uint32_t)(im->hcap - 1);
    while (im->hash[h] >= 0) h = (h + 1) & (uint32_t)(im->hcap - 1);
    im->hash[h] = k;
}

static void value_free(Value *v) {
    free(v->f);
    free(v->i);
    v->f = NULL;
    v->i = NULL;
}

/* Define (or redefine: a later producer of the same name wins) value `name`; takes ownership of
 * v's data. */
static void val_def(Imp *im, const char *name, Value v) {
    v.name = name;
    int k = val_find(im, name);
    if (k >= 0) {
        value_free(&im->vals[k]);
        im->vals[k] = v;
        return;
    }
    if (im->nval == im->capval) {
        im->capval = im->capval ? 2 * im->capval : 64;
        im->vals = xrealloc(im->vals, (size_t)im->capval * sizeof *im->vals);
    }
    im->vals[im->nval++] = v;
    if (2 * im->nval > im->hcap) {
        im->hcap = im->hcap ? 2 * im->hcap : 256;
        free(im->hash);
        im->hash = xmalloc((size_t)im->hcap * sizeof *im->hash);
        for (int j = 0; j < im->hcap; j++) im->hash[j] = -1;
        for (int j = 0; j < im->nval; j++) hash_insert(im, j);
    } else {
        hash_insert(im, im->nval - 1);
    }
}

static Value node_value(int node, int rank, int flat) {
    Value v = {0};
    v.kind = V_NODE;
    v.node = node;
    v.rank = rank;
    v.flat = flat;
    return v;
}

/* ------------------------------------------------------------------ tensors */
/* Decode a TensorProto into a constant value (float or int64 data). */
static int tensor_decode(Imp *im, const Onnx__TensorProto *t, Value *v) {
    memset(v, 0, sizeof *v);
    v->kind = V_CONST;
    const char *nm = S(t->name);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return fail(im, "tensor '%.80s' keeps its data in an external file; nasc imports self-contained models only", nm);
    if (t->segment) return fail(im, "tensor '%.80s' is segmented, which is not supported", nm);
    if (t->n_dims > MAX_DIMS) return fail(im, "tensor '%.80s' has %zu dimensions (at most %d)", nm, t->n_dims, MAX_DIMS);
    int64_t n = 1;
    for (size_t j = 0; j < t->n_dims; j++) {
        if (t->dims[j] < 0 || t->dims[j] > MAX_ELEMS)
            return fail(im, "tensor '%.80s' has dimension %zu = %lld", nm, j, (long long)t->dims[j]);
        n *= t->dims[j];
        if (n > MAX_ELEMS) return fail(im, "tensor '%.80s' is too large (over %lld elements)", nm, (long long)MAX_ELEMS);
        v->dims[j] = t->dims[j];
    }
    v->ndims = (int)t->n_dims;
    v->n = (size_t)n;
    int dt = t->has_data_type ? t->data_type : 0;
    size_t raw = t->has_raw_data ? t->raw_data.len : 0;
    const uint8_t *rd = t->raw_data.data;
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        v->f = xmalloc(v->n ? v->n * sizeof(float) : 1);
        if (t->has_raw_data) {
            if (raw != v->n * sizeof(float)) goto size_mismatch;
            if (raw) memcpy(v->f, rd, raw);
        } else if (t->n_float_data == v->n) {
            if (v->n) memcpy(v->f, t->float_data, v->n * sizeof(float));
        } else {
            goto size_mismatch;
        }
        return NASC_OK;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        v->f = xmalloc(v->n ? v->n * sizeof(float) : 1);
        if (t->has_raw_data) {
            if (raw != v->n * sizeof(double)) goto size_mismatch;
            for (size_t j = 0; j < v->n; j++) {
                double d;
                memcpy(&d, rd + j * sizeof d, sizeof d);
                v->f[j] = (float)d;
            }
        } else if (t->n_double_data == v->n) {
            for (size_t j = 0; j < v->n; j++) v->f[j] = (float)t->double_data[j];
        } else {
            goto size_mismatch;
        }
        return NASC_OK;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        v->i = xmalloc(v->n ? v->n * sizeof(int64_t) : 1);
        if (t->has_raw_data) {
            if (raw != v->n * sizeof(int64_t)) goto size_mismatch;
            if (raw) memcpy(v->i, rd, raw);
        } else if (t->n_int64_data == v->n) {
            if (v->n) memcpy(v->i, t->int64_data, v->n * sizeof(int64_t));
        } else {
            goto size_mismatch;
        }
        return NASC_OK;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
        v->i = xmalloc(v->n ? v->n * sizeof(int64_t) : 1);
        if (t->has_raw_data) {
            if (raw != v->n) goto size_mismatch;
            for (size_t j = 0; j < v->n; j++)
                v->i[j] = dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ? (int64_t)(int8_t)rd[j] : (int64_t)rd[j];
        } else if (t->n_int32_data == v->n) {
            for (size_t j = 0; j < v->n; j++) v->i[j] = t->int32_data[j];
        } else {
            goto size_mismatch;
        }
        return NASC_OK;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
        v->i = xmalloc(v->n ? v->n * sizeof(int64_t) : 1);
        if (t->has_raw_data) {
            if (raw != v->n * sizeof(int32_t)) goto size_mismatch;
            for (size_t j = 0; j < v->n; j++) {
                int32_t x;
                memcpy(&x, rd + j * sizeof x, sizeof x);
                v->i[j] = x;
            }
        } else if (t->n_int32_data == v->n) {
            for (size_t j = 0; j < v->n; j++) v->i[j] = t->int32_data[j];
        } else {
            goto size_mismatch;
        }
        return NASC_OK;
    default:
        return fail(im, "tensor '%.80s' has data type %d; nasc reads float, double, int8, uint8, int32 and int64 tensors",
                    nm, dt);
    }
size_mismatch:
    value_free(v);
    return fail(im, "tensor '%.80s': its data does not match its shape (%zu elements)", nm, v->n);
}

/* ------------------------------------------------------------------ node inputs and attributes */
/* Input j of the current node: its value index, or -1 when absent or "". */
static int arg_opt(Imp *im, const Onnx__NodeProto *nd, size_t j, int *k) {
    *k = -1;
    if (j >= nd->n_input || !nd->input[j] || !nd->input[j][0]) return NASC_OK;
    *k = val_find(im, nd->input[j]);
    if (*k < 0) return fail(im, "input '%.80s' is not produced by an earlier node, an initializer or the graph input",
                            nd->input[j]);
    return NASC_OK;
}

static int arg(Imp *im, const Onnx__NodeProto *nd, size_t j, int *k) {
    if (arg_opt(im, nd, j, k) != NASC_OK) return NASC_ERR;
    if (*k < 0) return fail(im, "input %zu is missing", j + 1);
    return NASC_OK;
}

/* Input j as a nasc node value; flat values only when flat_ok. */
static int arg_node(Imp *im, const Onnx__NodeProto *nd, size_t j, int flat_ok, Value *out) {
    int k;
    if (arg(im, nd, j, &k) != NASC_OK) return NASC_ERR;
    const Value *v = &im->vals[k];
    if (v->kind != V_NODE)
        return fail(im, "input %zu ('%.80s') is a constant; nasc needs a computed tensor there", j + 1, v->name);
    if (v->flat && !flat_ok)
        return fail(im, "input %zu ('%.80s') is a flattened (N, C*H*W) tensor; only Gemm/MatMul may read one", j + 1,
                    v->name);
    *out = *v;
    return NASC_OK;
}

/* Input j as a constant (float or int64). */
static int arg_const(Imp *im, const Onnx__NodeProto *nd, size_t j, const Value **out) {
    int k;
    if (arg(im, nd, j, &k) != NASC_OK) return NASC_ERR;
    if (im->vals[k].kind != V_CONST)
        return fail(im, "input %zu ('%.80s') must be a constant (an initializer), not a computed tensor", j + 1,
                    im->vals[k].name);
    *out = &im->vals[k];
    return NASC_OK;
}

/* A float constant's data (int constants are refused: no weight is an integer). */
static int const_floats(Imp *im, const Value *v, const char *what, size_t n_want) {
    if (!v->f) return fail(im, "%s ('%.80s') must be a float tensor", what, v->name);
    if (n_want && v->n != n_want)
        return fail(im, "%s ('%.80s') has %zu values, expected %zu", what, v->name, v->n, n_want);
    return NASC_OK;
}

static const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *nd, const char *name) {
    for (size_t j = 0; j < nd->n_attribute; j++)
        if (nd->attribute[j] && !strcmp(S(nd->attribute[j]->name), name)) return nd->attribute[j];
    return NULL;
}

static int attr_int(Imp *im, const Onnx__NodeProto *nd, const char *name, int64_t def, int64_t *v) {
    const Onnx__AttributeProto *a = attr_find(nd, name);
    *v = def;
    if (!a) return NASC_OK;
    if ((a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) || !a->has_i)
        return fail(im, "attribute '%s' should be an integer", name);
    *v = a->i;
    return NASC_OK;
}

static int attr_float(Imp *im, const Onnx__NodeProto *nd, const char *name, float def, float *v) {
    const Onnx__AttributeProto *a = attr_find(nd, name);
    *v = def;
    if (!a) return NASC_OK;
    if ((a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) || !a->has_f)
        return fail(im, "attribute '%s' should be a float", name);
    *v = a->f;
    return NASC_OK;
}

/* A string attribute, copied into buf (def when absent). */
static int attr_str(Imp *im, const Onnx__NodeProto *nd, const char *name, const char *def, char *buf, size_t cap) {
    const Onnx__AttributeProto *a = attr_find(nd, name);
    if (!a) {
        snprintf(buf, cap, "%s", def);
        return NASC_OK;
    }
    if ((a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) || !a->has_s)
        return fail(im, "attribute '%s' should be a string", name);
    size_t n = NASC_MIN(a->s.len, cap - 1);
    if (n) memcpy(buf, a->s.data, n);
    buf[n] = 0;
    return NASC_OK;
}

/* An INTS attribute: *n values (0 when absent), at most cap. */
static int attr_ints(Imp *im, const Onnx__NodeProto *nd, const char *name, int64_t *v, int cap, int *n) {
    const Onnx__AttributeProto *a = attr_find(nd, name);
    *n = 0;
    if (!a) return NASC_OK;
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
        return fail(im, "attribute '%s' should be a list of integers", name);
    if (a->n_ints > (size_t)cap) return fail(im, "attribute '%s' has %zu values (at most %d)", name, a->n_ints, cap);
    for (size_t j = 0; j < a->n_ints; j++) v[j] = a->ints[j];
    *n = (int)a->n_ints;
    return NASC_OK;
}

/* An attribute list that must be n_want copies of one value in 1..limit (default def when
 * absent): kernel_shape, strides, dilations, pads. */
static int attr_square(Imp *im, const Onnx__NodeProto *nd, const char *name, int n_want, int def, int lo, int limit,
                       int *out) {
    int64_t v[8];
    int n;
    if (attr_ints(im, nd, name, v, 8, &n) != NASC_OK) return NASC_ERR;
    if (n == 0) {
        *out = def;
        return NASC_OK;
    }
    if (n != n_want) return fail(im, "attribute '%s' has %d values; nasc supports 2-D ops (%d values)", name, n, n_want);
    for (int j = 1; j < n; j++)
        if (v[j] != v[0])
            return fail(im, "attribute '%s' must have equal values (square kernels, equal strides, symmetric pads)",
                        name);
    if (v[0] < lo || v[0] > limit) return fail(im, "attribute '%s' = %lld is out of range", name, (long long)v[0]);
    *out = (int)v[0];
    return NASC_OK;
}

/* ------------------------------------------------------------------ nasc nodes */
static void value_shape(const Imp *im, const Value *v, int *c, int *h, int *w) {
    if (v->node < 0) *c = im->in_c, *h = im->in_h, *w = im->in_w;
    else *c = im->nodes[v->node].c, *h = im->nodes[v->node].h, *w = im->nodes[v->node].w;
}

/* Append a nasc node; returns its index. */
static int inode_add(Imp *im, OpKind op, OpAttr a, const int *in, int nin, int c, int h, int w) {
    if (im->n == im->cap) {
        im->cap = im->cap ? 2 * im->cap : 64;
        im->nodes = xrealloc(im->nodes, (size_t)im->cap * sizeof *im->nodes);
    }
    INode *nd = &im->nodes[im->n];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->a = a;
    nd->nin = nin;
    for (int j = 0; j < nin; j++) nd->in[j] = in[j];
    nd->c = c, nd->h = h, nd->w = w;
    return im->n++;
}

/* A shape-preserving op on x; defines the node's first output. */
static int def_same(Imp *im, const Onnx__NodeProto *nd, OpKind op, const Value *x) {
    int c, h, w;
    value_shape(im, x, &c, &h, &w);
    int k = inode_add(im, op, op_default_attr(op), &x->node, 1, c, h, w);
    val_def(im, nd->output[0], node_value(k, x->rank, x->flat));
    return NASC_OK;
}

/* ------------------------------------------------------------------ op readers */
static int read_conv(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    const Value *wv = NULL, *bv = NULL;
    if (arg_node(im, nd, 0, 0, &x) || arg_const(im, nd, 1, &wv)) return NASC_ERR;
    int bk;
    if (arg_opt(im, nd, 2, &bk)) return NASC_ERR;
    if (bk >= 0) {
        if (im->vals[bk].kind != V_CONST) return fail(im, "the bias must be a constant");
        bv = &im->vals[bk];
    }
    if (x.rank != 4) return fail(im, "the input must be (N, C, H, W)");
    if (const_floats(im, wv, "the weight", 0)) return NASC_ERR;
    if (wv->ndims != 4) return fail(im, "the weight has %d dimensions; nasc supports 2-D convolutions", wv->ndims);
    if (wv->dims[2] != wv->dims[3]) return fail(im, "the kernel is %lldx%lld; nasc supports square kernels",
                                                (long long)wv->dims[2], (long long)wv->dims[3]);
    int64_t group;
    int stride, dil, pad, ks;
    char autopad[32];
    if (attr_int(im, nd, "group", 1, &group) || attr_square(im, nd, "strides", 2, 1, 1, 4096, &stride) ||
        attr_square(im, nd, "dilations", 2, 1, 1, 4096, &dil) || attr_square(im, nd, "pads", 4, 0, 0, 4096, &pad) ||
        attr_square(im, nd, "kernel_shape", 2, (int)wv->dims[2], 1, 4096, &ks) ||
        attr_str(im, nd, "auto_pad", "NOTSET", autopad, sizeof autopad))
        return NASC_ERR;
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    int64_t cout = wv->dims[0], k = wv->dims[2];
    if (ks != k) return fail(im, "kernel_shape %d does not match the weight's %lld", ks, (long long)k);
    if (group < 1 || group > c || wv->dims[1] * group != c || cout < 1 || cout % group || cout > 1000000)
        return fail(im, "weight (%lld, %lld, %lld, %lld) with group %lld does not fit %d input channels",
                    (long long)wv->dims[0], (long long)wv->dims[1], (long long)k, (long long)k, (long long)group, c);
    if (!strcmp(autopad, "VALID")) {
        pad = 0;
    } else if (!strcmp(autopad, "SAME_UPPER") || !strcmp(autopad, "SAME_LOWER")) {
        if (stride != 1 || (dil * (k - 1)) % 2)
            return fail(im, "auto_pad %s pads asymmetrically here (stride %d, kernel %lld); nasc pads symmetrically",
                        autopad, stride, (long long)k);
        pad = (int)(dil * (k - 1) / 2);
    } else if (strcmp(autopad, "NOTSET") != 0) {
        return fail(im, "auto_pad '%s' is not supported", autopad);
    }
    ConvDims d = {.n = 1, .cin = c, .h = h, .w = w, .cout = (int)cout, .k = (int)k, .stride = stride, .pad = pad,
                  .dil = dil, .groups = (int)group};
    Err sub;
    if (conv_dims_init(&d, &sub) != NASC_OK) return fail(im, "%s", sub.msg);
    if (bv && (const_floats(im, bv, "the bias", (size_t)cout))) return NASC_ERR;
    OpAttr a = op_default_attr(OP_CONV);
    a.c = (int)cout, a.k = (int)k, a.s = stride, a.p = pad, a.d = dil, a.g = (int)group, a.bias = bv != NULL;
    int id = inode_add(im, OP_CONV, a, &x.node, 1, d.cout, d.oh, d.ow);
    INode *in = &im->nodes[id];
    in->wt = xmalloc(wv->n * sizeof(float));
    memcpy(in->wt, wv->f, wv->n * sizeof(float));
    if (bv) {
        in->bias = xmalloc((size_t)cout * sizeof(float));
        memcpy(in->bias, bv->f, (size_t)cout * sizeof(float));
    }
    val_def(im, nd->output[0], node_value(id, 4, 0));
    return NASC_OK;
}

static int extra_outputs_used(const Onnx__NodeProto *nd) {
    for (size_t j = 1; j < nd->n_output; j++)
        if (nd->output[j] && nd->output[j][0]) return 1;
    return 0;
}

static int read_bn(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    const Value *p[4];
    if (arg_node(im, nd, 0, 0, &x)) return NASC_ERR;
    for (int j = 0; j < 4; j++)
        if (arg_const(im, nd, (size_t)j + 1, &p[j])) return NASC_ERR;
    int64_t training;
    float eps;
    if (attr_float(im, nd, "epsilon", 1e-5f, &eps) || attr_int(im, nd, "training_mode", 0, &training)) return NASC_ERR;
    if (training || extra_outputs_used(nd)) return fail(im, "training-mode BatchNormalization is not supported");
    if (!(eps >= 0) || eps > 1) return fail(im, "epsilon %g is out of range", eps);
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    static const char *what[4] = {"the scale", "the bias", "the mean", "the variance"};
    for (int j = 0; j < 4; j++)
        if (const_floats(im, p[j], what[j], (size_t)c)) return NASC_ERR;
    int id = inode_add(im, OP_BN, op_default_attr(OP_BN), &x.node, 1, c, h, w);
    float *bn = im->nodes[id].bn = xmalloc(4 * (size_t)c * sizeof(float));
    for (int j = 0; j < c; j++) {
        float var = p[3]->f[j];
        if (!(var >= 0)) return fail(im, "the variance of channel %d is %g", j, var);
        /* nasc's epsilon is 1e-5: scale gamma so that gamma' / sqrt(var + 1e-5) = gamma / sqrt(var + eps). */
        bn[j] = eps == BN_EPS ? p[0]->f[j] : (float)(p[0]->f[j] * sqrt((double)var + BN_EPS) / sqrt((double)var + eps));
        bn[c + j] = p[1]->f[j];
        bn[2 * c + j] = p[2]->f[j];
        bn[3 * c + j] = var;
    }
    val_def(im, nd->output[0], node_value(id, x.rank, 0));
    return NASC_OK;
}

/* A scalar float from an optional constant input (Clip's min/max); *present = 0 when absent. */
static int scalar_input(Imp *im, const Onnx__NodeProto *nd, size_t j, float *v, int *present) {
    int k;
    *present = 0;
    if (arg_opt(im, nd, j, &k)) return NASC_ERR;
    if (k < 0) return NASC_OK;
    const Value *c = &im->vals[k];
    if (c->kind != V_CONST || c->n != 1) return fail(im, "input %zu must be a constant scalar", j + 1);
    *v = c->f ? c->f[0] : (float)c->i[0];
    *present = 1;
    return NASC_OK;
}

static int read_clip(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    if (arg_node(im, nd, 0, 1, &x)) return NASC_ERR;
    float lo = -INFINITY, hi = INFINITY;
    if (im->opset < 11) {
        if (attr_float(im, nd, "min", -INFINITY, &lo) || attr_float(im, nd, "max", INFINITY, &hi)) return NASC_ERR;
    } else {
        int has;
        float v;
        if (scalar_input(im, nd, 1, &v, &has)) return NASC_ERR;
        if (has) lo = v;
        if (scalar_input(im, nd, 2, &v, &has)) return NASC_ERR;
        if (has) hi = v;
    }
    if (lo == 0 && hi == 6) return def_same(im, nd, OP_RELU6, &x);
    if (lo == 0 && hi == INFINITY) return def_same(im, nd, OP_RELU, &x);
    return fail(im, "Clip(min=%g, max=%g) is not supported (only Clip(0, 6) as relu6 and Clip(0, +inf) as relu)", lo,
                hi);
}

static int read_hardsigmoid(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    float alpha, beta;
    if (arg_node(im, nd, 0, 1, &x) || attr_float(im, nd, "alpha", 0.2f, &alpha) ||
        attr_float(im, nd, "beta", 0.5f, &beta))
        return NASC_ERR;
    if (fabsf(alpha - 1.0f / 6.0f) > 1e-6f || fabsf(beta - 0.5f) > 1e-6f)
        return fail(im, "HardSigmoid(alpha=%g, beta=%g) is not supported (only alpha=1/6, beta=0.5, as in "
                        "PyTorch's hardsigmoid)", alpha, beta);
    return def_same(im, nd, OP_HSIGMOID, &x);
}

static int is_zero_const(const Value *v) {
    if (v->kind != V_CONST || v->n != 1) return 0;
    return v->f ? v->f[0] == 0 : v->i[0] == 0;
}

static int read_mul(Imp *im, const Onnx__NodeProto *nd) {
    int ka, kb;
    if (arg(im, nd, 0, &ka) || arg(im, nd, 1, &kb)) return NASC_ERR;
    Value a = im->vals[ka], b = im->vals[kb];
    if (a.kind == V_CONST || b.kind == V_CONST) {
        const Value *x = a.kind == V_CONST ? &b : &a, *c = a.kind == V_CONST ? &a : &b;
        if (x->kind == V_CONST) return fail(im, "Mul of two constants is not supported");
        if (!is_zero_const(c))
            return fail(im, "Mul by a constant is not supported (only by a scalar 0, nasc's zero op; per-channel scales "
                            "must be computed tensors)");
        return def_same(im, nd, OP_ZERO, x);
    }
    /* x * HardSigmoid(x) (1/6, 0.5): hswish. */
    for (int s = 0; s < 2; s++) {
        const Value *x = s ? &b : &a, *g = s ? &a : &b;
        if (g->node >= 0 && im->nodes[g->node].op == OP_HSIGMOID && im->nodes[g->node].in[0] == x->node &&
            g->rank == x->rank && g->flat == x->flat)
            return def_same(im, nd, OP_HSWISH, x);
    }
    if (a.flat || b.flat) return fail(im, "Mul of flattened tensors is not supported");
    if (a.rank != b.rank) return fail(im, "Mul of a rank-%d and a rank-%d tensor is not supported", a.rank, b.rank);
    int ca, ha, wa, cb, hb, wb;
    value_shape(im, &a, &ca, &ha, &wa);
    value_shape(im, &b, &cb, &hb, &wb);
    const Value *x = &a, *sc = &b;
    if (hb * wb > 1) x = &b, sc = &a;
    int cx, hx, wx, cs, hs, ws;
    value_shape(im, x, &cx, &hx, &wx);
    value_shape(im, sc, &cs, &hs, &ws);
    if (cs != cx || hs != 1 || ws != 1)
        return fail(im, "Mul of %dx%dx%d by %dx%dx%d is not supported (nasc's mul scales channels: x (N, C, H, W) "
                        "by s (N, C, 1, 1))", ca, ha, wa, cb, hb, wb);
    int in[2] = {x->node, sc->node};
    int id = inode_add(im, OP_MUL, op_default_attr(OP_MUL), in, 2, cx, hx, wx);
    val_def(im, nd->output[0], node_value(id, x->rank, 0));
    return NASC_OK;
}

/* How many node inputs and graph outputs read value `name` (bias folding needs the MatMul/Conv
 * output to have one reader). */
static int count_uses(const Onnx__GraphProto *g, const char *name) {
    int uses = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *nd = g->node[i];
        for (size_t j = 0; nd && j < nd->n_input; j++)
            if (nd->input[j] && !strcmp(nd->input[j], name)) uses++;
    }
    for (size_t j = 0; j < g->n_output; j++)
        if (g->output[j] && g->output[j]->name && !strcmp(g->output[j]->name, name)) uses++;
    return uses;
}

/* Add/Sum of computed tensors of one shape; Add of a constant as a bias of the MatMul/Conv
 * just before (when nothing else reads that node). */
static int read_add(Imp *im, const Onnx__NodeProto *nd, int sum) {
    if (nd->n_input < 1 || (!sum && nd->n_input != 2)) return fail(im, "needs %s inputs", sum ? "1 or more" : "2");
    if (nd->n_input > NODE_MAX_IN) return fail(im, "has %zu inputs (nasc's add takes at most %d)", nd->n_input, NODE_MAX_IN);
    Value v[NODE_MAX_IN];
    for (size_t j = 0; j < nd->n_input; j++) {
        int k;
        if (arg(im, nd, j, &k)) return NASC_ERR;
        v[j] = im->vals[k];
    }
    if (!sum && (v[0].kind == V_CONST || v[1].kind == V_CONST)) {
        const Value *x = v[0].kind == V_CONST ? &v[1] : &v[0], *c = v[0].kind == V_CONST ? &v[0] : &v[1];
        if (x->kind == V_CONST) return fail(im, "Add of two constants is not supported");
        INode *p = x->node >= 0 ? &im->nodes[x->node] : NULL;
        const char *xname = nd->input[v[0].kind == V_CONST ? 1 : 0];
        if (!p || (p->op != OP_LINEAR && p->op != OP_CONV) || p->a.bias || x->flat || !p->oname ||
            strcmp(p->oname, xname) != 0 || count_uses(im->g, xname) != 1)
            return fail(im, "Add of a constant is not supported (only as the bias of the MatMul or Conv just before)");
        if (const_floats(im, c, "the bias", (size_t)p->c)) return NASC_ERR;
        for (int j = 0; j < c->ndims; j++)
            if (c->dims[j] != 1 && c->dims[j] != p->c) return fail(im, "the bias shape does not broadcast per channel");
        if (p->op == OP_CONV && c->ndims != 3 && !(c->ndims == 4 && c->dims[0] == 1))
            return fail(im, "the bias of a Conv output must be shaped (1, C, 1, 1) or (C, 1, 1)");
        if (p->op == OP_LINEAR && c->ndims > 2) return fail(im, "the bias of a MatMul output must be (C) or (1, C)");
        p->bias = xmalloc((size_t)p->c * sizeof(float));
        memcpy(p->bias, c->f, (size_t)p->c * sizeof(float));
        p->a.bias = 1;
        val_def(im, nd->output[0], *x);
        return NASC_OK;
    }
    int in[NODE_MAX_IN], c0 = 0, h0 = 0, w0 = 0;
    for (size_t j = 0; j < nd->n_input; j++) {
        if (v[j].kind != V_NODE) return fail(im, "input %zu is a constant; Sum of constants is not supported", j + 1);
        if (v[j].flat) return fail(im, "input %zu is a flattened tensor", j + 1);
        if (v[j].rank != v[0].rank) return fail(im, "inputs of rank %d and %d: broadcasting is not supported",
                                                v[0].rank, v[j].rank);
        int c, h, w;
        value_shape(im, &v[j], &c, &h, &w);
        if (!j) c0 = c, h0 = h, w0 = w;
        else if (c != c0 || h != h0 || w != w0)
            return fail(im, "inputs shaped %dx%dx%d and %dx%dx%d: broadcasting is not supported", c0, h0, w0, c, h, w);
        in[j] = v[j].node;
    }
    if (nd->n_input == 1) {
        val_def(im, nd->output[0], v[0]);
        return NASC_OK;
    }
    int id = inode_add(im, OP_ADD, op_default_attr(OP_ADD), in, (int)nd->n_input, c0, h0, w0);
    val_def(im, nd->output[0], node_value(id, v[0].rank, 0));
    return NASC_OK;
}

/* ---- constant folding of int64 vectors (shape arithmetic) */
static Value const_new_i64(size_t n) {
    Value v = {0};
    v.kind = V_CONST;
    v.ndims = 1;
    v.dims[0] = (int64_t)n;
    v.n = n;
    v.i = xmalloc(n ? n * sizeof(int64_t) : 1);
    return v;
}

static Value const_copy(const Value *c) {
    Value v = *c;
    v.name = NULL;
    if (c->f) {
        v.f = xmalloc(c->n ? c->n * sizeof(float) : 1);
        memcpy(v.f, c->f, c->n * sizeof(float));
    }
    if (c->i) {
        v.i = xmalloc(c->n ? c->n * sizeof(int64_t) : 1);
        memcpy(v.i, c->i, c->n * sizeof(int64_t));
    }
    return v;
}

static int read_concat(Imp *im, const Onnx__NodeProto *nd) {
    if (nd->n_input < 1 || nd->n_input > NODE_MAX_IN)
        return fail(im, "has %zu inputs (nasc's concat takes 1 to %d)", nd->n_input, NODE_MAX_IN);
    int64_t axis;
    if (attr_int(im, nd, "axis", 1, &axis)) return NASC_ERR;
    Value v[NODE_MAX_IN];
    int nconst = 0;
    for (size_t j = 0; j < nd->n_input; j++) {
        int k;
        if (arg(im, nd, j, &k)) return NASC_ERR;
        v[j] = im->vals[k];
        nconst += v[j].kind == V_CONST;
    }
    if (nconst == (int)nd->n_input) { /* shape vectors */
        size_t n = 0;
        for (size_t j = 0; j < nd->n_input; j++) {
            if (!v[j].i || v[j].ndims != 1) return fail(im, "Concat of constants is supported for 1-D int64 vectors only");
            n += v[j].n;
        }
        Value r = const_new_i64(n);
        n = 0;
        for (size_t j = 0; j < nd->n_input; j++)
            for (size_t q = 0; q < v[j].n; q++) r.i[n++] = v[j].i[q];
        val_def(im, nd->output[0], r);
        return NASC_OK;
    }
    int in[NODE_MAX_IN], c = 0, h0 = 0, w0 = 0;
    for (size_t j = 0; j < nd->n_input; j++) {
        if (v[j].kind != V_NODE || v[j].flat) return fail(im, "input %zu is a constant or a flattened tensor", j + 1);
        if (v[j].rank != v[0].rank) return fail(im, "inputs of rank %d and %d", v[0].rank, v[j].rank);
        int cj, h, w;
        value_shape(im, &v[j], &cj, &h, &w);
        if (!j) h0 = h, w0 = w;
        else if (h != h0 || w != w0) return fail(im, "inputs of %dx%d and %dx%d cannot be concatenated", h0, w0, h, w);
        c += cj;
        in[j] = v[j].node;
    }
    if (axis < 0) axis += v[0].rank;
    if (axis != 1) return fail(im, "Concat on axis %lld is not supported (only on channels, axis 1)", (long long)axis);
    if (nd->n_input == 1) {
        val_def(im, nd->output[0], v[0]);
        return NASC_OK;
    }
    int id = inode_add(im, OP_CONCAT, op_default_attr(OP_CONCAT), in, (int)nd->n_input, c, h0, w0);
    val_def(im, nd->output[0], node_value(id, v[0].rank, 0));
    return NASC_OK;
}

static int read_pool(Imp *im, const Onnx__NodeProto *nd, int max) {
    Value x;
    if (arg_node(im, nd, 0, 0, &x)) return NASC_ERR;
    if (x.rank != 4) return fail(im, "the input must be (N, C, H, W)");
    if (max && extra_outputs_used(nd)) return fail(im, "MaxPool's Indices output is not supported");
    int k, stride, pad, dil;
    int64_t ceil_mode, cip;
    char autopad[32];
    if (!attr_find(nd, "kernel_shape")) return fail(im, "kernel_shape is missing");
    if (attr_square(im, nd, "kernel_shape", 2, 1, 1, 4096, &k) || attr_square(im, nd, "strides", 2, 1, 1, 4096, &stride) ||
        attr_square(im, nd, "pads", 4, 0, 0, 4096, &pad) || attr_square(im, nd, "dilations", 2, 1, 1, 4096, &dil) ||
        attr_int(im, nd, "ceil_mode", 0, &ceil_mode) || attr_int(im, nd, "count_include_pad", 0, &cip) ||
        attr_str(im, nd, "auto_pad", "NOTSET", autopad, sizeof autopad))
        return NASC_ERR;
    if (dil != 1) return fail(im, "dilated pooling is not supported");
    if (!strcmp(autopad, "VALID")) pad = 0;
    else if (strcmp(autopad, "NOTSET") != 0) return fail(im, "auto_pad '%s' is not supported", autopad);
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    PoolDims d = {.n = 1, .c = c, .h = h, .w = w, .k = k, .stride = stride, .pad = pad, .count_include_pad = (int)cip};
    Err sub;
    if (pool_dims_init(&d, &sub) != NASC_OK) return fail(im, "%s", sub.msg);
    if (ceil_mode) {
        int ch = (h + 2 * pad - k + stride - 1) / stride + 1, cw = (w + 2 * pad - k + stride - 1) / stride + 1;
        if (ch != d.oh || cw != d.ow) return fail(im, "ceil_mode=1 changes the output size here; not supported");
    }
    OpKind op = max ? OP_MAXPOOL : OP_AVGPOOL;
    OpAttr a = op_default_attr(op);
    a.k = k, a.s = stride, a.p = pad, a.cip = max ? 1 : (cip != 0);
    int id = inode_add(im, op, a, &x.node, 1, c, d.oh, d.ow);
    val_def(im, nd->output[0], node_value(id, 4, 0));
    return NASC_OK;
}

static int def_gap(Imp *im, const Onnx__NodeProto *nd, const Value *x, int keepdims) {
    int c, h, w;
    value_shape(im, x, &c, &h, &w);
    int id = inode_add(im, OP_GAP, op_default_attr(OP_GAP), &x->node, 1, c, 1, 1);
    val_def(im, nd->output[0], node_value(id, keepdims ? 4 : 2, 0));
    return NASC_OK;
}

static int read_reducemean(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    if (arg_node(im, nd, 0, 0, &x)) return NASC_ERR;
    if (x.rank != 4) return fail(im, "only ReduceMean over H and W of an (N, C, H, W) tensor is supported");
    int64_t axes[8], keep;
    int n = 0;
    if (attr_int(im, nd, "keepdims", 1, &keep)) return NASC_ERR;
    if (im->opset < 18) {
        if (attr_ints(im, nd, "axes", axes, 8, &n)) return NASC_ERR;
    } else {
        int k;
        if (arg_opt(im, nd, 1, &k)) return NASC_ERR;
        if (k >= 0) {
            const Value *c = &im->vals[k];
            if (c->kind != V_CONST || !c->i || c->n > 8) return fail(im, "axes must be a constant int64 vector");
            n = (int)c->n;
            for (int j = 0; j < n; j++) axes[j] = c->i[j];
        }
    }
    int seen = 0;
    for (int j = 0; j < n; j++) {
        int64_t a = axes[j] < 0 ? axes[j] + 4 : axes[j];
        if (a == 2 || a == 3) seen |= 1 << a;
        else seen = -1;
    }
    if (seen != 12) return fail(im, "only ReduceMean over H and W (axes 2, 3) is supported, as global average pooling");
    return def_gap(im, nd, &x, keep != 0);
}

static int read_gemm(Imp *im, const Onnx__NodeProto *nd, int matmul) {
    Value x;
    const Value *wv = NULL, *bv = NULL;
    if (arg_node(im, nd, 0, 1, &x) || arg_const(im, nd, 1, &wv)) return NASC_ERR;
    int64_t ta = 0, tb = 0;
    float alpha = 1, beta = 1;
    if (!matmul) {
        int bk;
        if (arg_opt(im, nd, 2, &bk)) return NASC_ERR;
        if (bk >= 0) {
            if (im->vals[bk].kind != V_CONST) return fail(im, "C (the bias) must be a constant");
            bv = &im->vals[bk];
        }
        if (attr_int(im, nd, "transA", 0, &ta) || attr_int(im, nd, "transB", 0, &tb) ||
            attr_float(im, nd, "alpha", 1, &alpha) || attr_float(im, nd, "beta", 1, &beta))
            return NASC_ERR;
        if (ta) return fail(im, "transA=1 is not supported");
    }
    if (x.rank != 2) return fail(im, "the input must be 2-D (N, features): Flatten it first");
    if (const_floats(im, wv, "the weight", 0)) return NASC_ERR;
    if (wv->ndims != 2) return fail(im, "the weight must be 2-D");
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    int64_t fin = (int64_t)c * h * w, fout = tb ? wv->dims[0] : wv->dims[1], wfin = tb ? wv->dims[1] : wv->dims[0];
    if (wfin != fin || fout < 1 || fout > 1000000)
        return fail(im, "the weight is %lldx%lld (transB=%lld) but the input has %lld features",
                    (long long)wv->dims[0], (long long)wv->dims[1], (long long)tb, (long long)fin);
    if (bv) {
        if (const_floats(im, bv, "C (the bias)", 0)) return NASC_ERR;
        if (bv->n != 1 && bv->n != (size_t)fout) return fail(im, "C has %zu values; expected 1 or %lld", bv->n, (long long)fout);
        for (int j = 0; j < bv->ndims; j++)
            if (bv->dims[j] != 1 && bv->dims[j] != fout) return fail(im, "C does not broadcast as a bias");
        if (bv->ndims == 2 && bv->dims[0] != 1) return fail(im, "C does not broadcast as a bias");
    }
    OpAttr a = op_default_attr(OP_LINEAR);
    a.c = (int)fout;
    a.bias = bv != NULL;
    int id = inode_add(im, OP_LINEAR, a, &x.node, 1, (int)fout, 1, 1);
    INode *in = &im->nodes[id];
    in->wt = xmalloc((size_t)(fout * fin) * sizeof(float));
    for (int64_t o = 0; o < fout; o++)
        for (int64_t i = 0; i < fin; i++)
            in->wt[o * fin + i] = alpha * (tb ? wv->f[o * fin + i] : wv->f[i * fout + o]);
    if (bv) {
        in->bias = xmalloc((size_t)fout * sizeof(float));
        for (int64_t o = 0; o < fout; o++) in->bias[o] = beta * bv->f[bv->n == 1 ? 0 : o];
    }
    val_def(im, nd->output[0], node_value(id, 2, 0));
    return NASC_OK;
}

/* The target shape of a Reshape (or the axes of Squeeze/Unsqueeze) applied to node value x:
 * only rank changes of the same data are supported. */
static int reshape_to(Imp *im, const Onnx__NodeProto *nd, const Value *x, const int64_t *t, int nt) {
    int c, h, w;
    value_shape(im, x, &c, &h, &w);
    int64_t feat = (int64_t)c * h * w;
    int64_t src[4] = {SHAPE_UNK, x->rank == 4 ? c : feat, h, w};
    int64_t dims[4];
    int infer = -1;
    if (nt != 2 && nt != 4) return fail(im, "Reshape to rank %d is not supported (only to (N, C*H*W) or (N, C, H, W))", nt);
    for (int j = 0; j < nt; j++) {
        int64_t d = t[j];
        if (d == 0 && j < x->rank) d = src[j];
        if (d == -1) {
            if (infer >= 0) return fail(im, "Reshape with two -1 entries");
            infer = j;
        }
        dims[j] = d;
    }
    /* The batch: first entry unknown (a Shape's), 0 (copy), -1 (inferred from the rest) or a fixed
     * size (models exported at batch 1): nasc treats it as the batch. */
    if (dims[0] != SHAPE_UNK && infer != 0 && dims[0] < 1) return fail(im, "Reshape must keep the batch dimension first");
    int64_t known = 1;
    for (int j = 1; j < nt; j++) {
        if (j == infer) continue;
        if (dims[j] < 1) return fail(im, "Reshape with entry %lld is not supported", (long long)dims[j]);
        known *= dims[j];
        if (known > feat) break;
    }
    if (infer > 0) {
        if (known < 1 || feat % known) return fail(im, "Reshape cannot infer a size from %lld features", (long long)feat);
        dims[infer] = feat / known;
    }
    if (nt == 2) {
        if (dims[1] != feat)
            return fail(im, "Reshape to (N, %lld) of a tensor with %lld features", (long long)dims[1], (long long)feat);
        val_def(im, nd->output[0], node_value(x->node, 2, h * w > 1));
        return NASC_OK;
    }
    if (dims[1] != c || dims[2] != h || dims[3] != w)
        return fail(im, "Reshape of %dx%dx%d to %lldx%lldx%lld changes the layout; not supported", c, h, w,
                    (long long)dims[1], (long long)dims[2], (long long)dims[3]);
    val_def(im, nd->output[0], node_value(x->node, 4, 0));
    return NASC_OK;
}

/* Axes of Squeeze/Unsqueeze: an attribute before opset 13, an optional input from 13 on. */
static int read_axes(Imp *im, const Onnx__NodeProto *nd, int64_t *axes, int *n) {
    *n = 0;
    if (im->opset < 13) return attr_ints(im, nd, "axes", axes, 8, n);
    int k;
    if (arg_opt(im, nd, 1, &k)) return NASC_ERR;
    if (k < 0) return NASC_OK;
    const Value *c = &im->vals[k];
    if (c->kind != V_CONST || !c->i || c->n > 8) return fail(im, "axes must be a constant int64 vector");
    for (size_t j = 0; j < c->n; j++) axes[j] = c->i[j];
    *n = (int)c->n;
    return NASC_OK;
}

static int read_squeeze(Imp *im, const Onnx__NodeProto *nd, int unsqueeze) {
    int k;
    if (arg(im, nd, 0, &k)) return NASC_ERR;
    int64_t axes[8];
    int na;
    if (read_axes(im, nd, axes, &na)) return NASC_ERR;
    const Value *x = &im->vals[k];
    if (x->kind == V_CONST) { /* shape arithmetic: the data is unchanged, only the dims */
        int big = 0;
        for (int j = 0; j < x->ndims; j++) big += x->dims[j] != 1;
        if (unsqueeze ? (x->n != 1 || x->ndims + na > MAX_DIMS) : big > 1)
            return fail(im, "%s is supported on single values and vectors (shape arithmetic) only",
                        unsqueeze ? "Unsqueeze" : "Squeeze");
        Value r = const_copy(x);
        if (unsqueeze) {
            r.ndims = x->ndims + na;
            for (int j = 0; j < r.ndims; j++) r.dims[j] = 1;
        } else {
            r.ndims = x->n == 1 ? 0 : 1;
            r.dims[0] = (int64_t)x->n;
        }
        val_def(im, nd->output[0], r);
        return NASC_OK;
    }
    Value v = *x;
    if (v.flat) return fail(im, "%s of a flattened tensor is not supported", unsqueeze ? "Unsqueeze" : "Squeeze");
    int c, h, w;
    value_shape(im, &v, &c, &h, &w);
    int seen = 0;
    for (int j = 0; j < na; j++) {
        int64_t a = axes[j] < 0 ? axes[j] + 4 : axes[j];
        if (a == 2 || a == 3) seen |= 1 << a;
        else seen = -1;
    }
    if (unsqueeze) {
        if (v.rank != 2 || seen != 12) return fail(im, "only Unsqueeze of (N, C) to (N, C, 1, 1) (axes 2, 3) is supported");
        val_def(im, nd->output[0], node_value(v.node, 4, 0));
        return NASC_OK;
    }
    if (v.rank != 4 || h != 1 || w != 1 || (na && seen != 12))
        return fail(im, "only Squeeze of (N, C, 1, 1) to (N, C) is supported");
    val_def(im, nd->output[0], node_value(v.node, 2, 0));
    return NASC_OK;
}

static int read_reshape(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    const Value *s = NULL;
    if (arg_node(im, nd, 0, 1, &x) || arg_const(im, nd, 1, &s)) return NASC_ERR;
    if (!s->i || s->ndims != 1 || s->n > 8) return fail(im, "the shape must be a 1-D int64 constant");
    int64_t allowzero;
    if (attr_int(im, nd, "allowzero", 0, &allowzero)) return NASC_ERR;
    if (allowzero) return fail(im, "allowzero=1 is not supported");
    if (x.flat) x = node_value(x.node, 4, 0); /* the same data: only to (N, C*H*W) or back to the node's shape */
    return reshape_to(im, nd, &x, s->i, (int)s->n);
}

static int read_flatten(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    int64_t axis;
    if (arg_node(im, nd, 0, 1, &x) || attr_int(im, nd, "axis", 1, &axis)) return NASC_ERR;
    if (axis != 1) return fail(im, "Flatten with axis %lld is not supported (only axis 1)", (long long)axis);
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    val_def(im, nd->output[0], node_value(x.node, 2, x.flat || (x.rank == 4 && h * w > 1)));
    return NASC_OK;
}

static int read_resize(Imp *im, const Onnx__NodeProto *nd) {
    if (im->opset < 11)
        return fail(im, "Resize before opset 11 uses asymmetric coordinates; nasc's resize is half_pixel");
    Value x;
    if (arg_node(im, nd, 0, 0, &x)) return NASC_ERR;
    if (x.rank != 4) return fail(im, "the input must be (N, C, H, W)");
    char mode[32], ctm[48];
    int64_t exclude, antialias;
    if (attr_str(im, nd, "mode", "nearest", mode, sizeof mode) ||
        attr_str(im, nd, "coordinate_transformation_mode", "half_pixel", ctm, sizeof ctm) ||
        attr_int(im, nd, "exclude_outside", 0, &exclude) || attr_int(im, nd, "antialias", 0, &antialias))
        return NASC_ERR;
    if (strcmp(mode, "linear") != 0) return fail(im, "Resize mode '%s' is not supported (only linear)", mode);
    if (exclude || antialias) return fail(im, "exclude_outside and antialias are not supported");
    if (attr_find(nd, "axes")) return fail(im, "Resize with axes is not supported");
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    int ks, kz;
    if (arg_opt(im, nd, 2, &ks) || arg_opt(im, nd, 3, &kz)) return NASC_ERR;
    int64_t oh, ow;
    if (kz >= 0) {
        const Value *z = &im->vals[kz];
        if (z->kind != V_CONST || !z->i || z->n != 4) return fail(im, "sizes must be a constant of 4 int64 values");
        oh = z->i[2], ow = z->i[3];
        if ((z->i[0] != SHAPE_UNK && z->i[0] < 1) || (z->i[1] != SHAPE_UNK && z->i[1] != c))
            return fail(im, "sizes must keep the batch and channels");
    } else if (ks >= 0) {
        const Value *s = &im->vals[ks];
        if (s->kind != V_CONST || !s->f || s->n != 4) return fail(im, "scales must be a constant of 4 floats");
        if (s->f[0] != 1 || s->f[1] != 1) return fail(im, "scales must be 1 on the batch and channels");
        if (!(s->f[2] > 0 && s->f[2] < 16384) || !(s->f[3] > 0 && s->f[3] < 16384)) return fail(im, "bad scales");
        oh = (int64_t)(s->f[2] * (float)h);
        ow = (int64_t)(s->f[3] * (float)w);
        /* nasc samples at (o + 0.5) * in / out - 0.5: the scale must be out / in. */
        if (oh < 1 || ow < 1 || fabs(s->f[2] - (double)oh / h) > 1e-6 * s->f[2] ||
            fabs(s->f[3] - (double)ow / w) > 1e-6 * s->f[3])
            return fail(im, "scales (%g, %g) are not output/input size ratios; not supported", s->f[2], s->f[3]);
    } else {
        return fail(im, "neither scales nor sizes is given");
    }
    if (oh != ow || oh < 1 || oh > 16384) return fail(im, "the output is %lldx%lld; nasc's resize is square",
                                                      (long long)oh, (long long)ow);
    if (strcmp(ctm, "half_pixel") != 0 && !(strcmp(ctm, "pytorch_half_pixel") == 0 && oh > 1))
        return fail(im, "coordinate_transformation_mode '%s' is not supported (nasc's resize is half_pixel, "
                        "F.interpolate(align_corners=False))", ctm);
    OpAttr a = op_default_attr(OP_RESIZE);
    a.s = (int)oh;
    int id = inode_add(im, OP_RESIZE, a, &x.node, 1, c, (int)oh, (int)oh);
    val_def(im, nd->output[0], node_value(id, 4, 0));
    return NASC_OK;
}

static int read_constant(Imp *im, const Onnx__NodeProto *nd) {
    const Onnx__AttributeProto *a = nd->n_attribute == 1 ? nd->attribute[0] : NULL;
    if (!a) return fail(im, "needs exactly one attribute");
    const char *an = S(a->name);
    Value v = {0};
    v.kind = V_CONST;
    if (!strcmp(an, "value")) {
        if (!a->t) return fail(im, "attribute 'value' has no tensor");
        if (tensor_decode(im, a->t, &v)) return NASC_ERR;
    } else if (!strcmp(an, "value_float") && a->has_f) {
        v.f = xmalloc(sizeof(float));
        v.f[0] = a->f;
        v.n = 1;
    } else if (!strcmp(an, "value_int") && a->has_i) {
        v.i = xmalloc(sizeof(int64_t));
        v.i[0] = a->i;
        v.n = 1;
    } else if (!strcmp(an, "value_ints") && a->n_ints <= 64) {
        v = const_new_i64(a->n_ints);
        for (size_t j = 0; j < a->n_ints; j++) v.i[j] = a->ints[j];
    } else if (!strcmp(an, "value_floats") && a->n_floats <= (1u << 20)) {
        v.f = xmalloc(a->n_floats ? a->n_floats * sizeof(float) : 1);
        v.n = a->n_floats;
        v.ndims = 1;
        v.dims[0] = (int64_t)a->n_floats;
        if (a->n_floats) memcpy(v.f, a->floats, a->n_floats * sizeof(float));
    } else {
        return fail(im, "Constant with attribute '%.40s' is not supported", an);
    }
    val_def(im, nd->output[0], v);
    return NASC_OK;
}

static int read_shape(Imp *im, const Onnx__NodeProto *nd) {
    Value x;
    if (arg_node(im, nd, 0, 1, &x)) return NASC_ERR;
    int c, h, w;
    value_shape(im, &x, &c, &h, &w);
    int64_t full[4] = {SHAPE_UNK, c, h, w};
    if (x.rank == 2) full[1] = (int64_t)c * h * w;
    int64_t start, end;
    if (attr_int(im, nd, "start", 0, &start) || attr_int(im, nd, "end", x.rank, &end)) return NASC_ERR;
    if (start < 0) start += x.rank;
    if (end < 0) end += x.rank;
    start = NASC_MAX(0, NASC_MIN(start, x.rank));
    end = NASC_MAX(start, NASC_MIN(end, x.rank));
    Value r = const_new_i64((size_t)(end - start));
    for (int64_t j = start; j < end; j++) r.i[j - start] = full[j];
    val_def(im, nd->output[0], r);
    return NASC_OK;
}

static int read_gather(Imp *im, const Onnx__NodeProto *nd) {
    const Value *d = NULL, *ix = NULL;
    int64_t axis;
    if (arg_const(im, nd, 0, &d) || arg_const(im, nd, 1, &ix) || attr_int(im, nd, "axis", 0, &axis)) return NASC_ERR;
    if (!d->i || d->ndims != 1 || !ix->i || ix->ndims > 1 || axis != 0)
        return fail(im, "Gather is supported on 1-D int64 constants (shape vectors) only");
    Value r = const_new_i64(ix->n);
    r.ndims = ix->ndims;
    for (size_t j = 0; j < ix->n; j++) {
        int64_t q = ix->i[j] < 0 ? ix->i[j] + (int64_t)d->n : ix->i[j];
        if (q < 0 || q >= (int64_t)d->n) {
            value_free(&r);
            return fail(im, "index %lld is out of range", (long long)ix->i[j]);
        }
        r.i[j] = d->i[q];
    }
    val_def(im, nd->output[0], r);
    return NASC_OK;
}

static int slice_param(Imp *im, const Onnx__NodeProto *nd, size_t j, const char *attr, int64_t *v, int *present) {
    *present = 0;
    if (im->opset < 10) {
        int n;
        int64_t a[8];
        if (attr_ints(im, nd, attr, a, 8, &n)) return NASC_ERR;
        if (n > 1) return fail(im, "Slice is supported on 1-D int64 constants only");
        if (n == 1) *v = a[0], *present = 1;
        return NASC_OK;
    }
    int k;
    if (arg_opt(im, nd, j, &k)) return NASC_ERR;
    if (k < 0) return NASC_OK;
    const Value *c = &im->vals[k];
    if (c->kind != V_CONST || !c->i || c->n != 1) return fail(im, "Slice is supported on 1-D int64 constants only");
    *v = c->i[0];
    *present = 1;
    return NASC_OK;
}

static int read_slice(Imp *im, const Onnx__NodeProto *nd) {
    const Value *d = NULL;
    if (arg_const(im, nd, 0, &d)) return NASC_ERR;
    if (!d->i || d->ndims != 1) return fail(im, "Slice is supported on 1-D int64 constants (shape vectors) only");
    int64_t n = (int64_t)d->n, start = 0, end = n, axis = 0, step = 1;
    int has;
    if (slice_param(im, nd, 1, "starts", &start, &has) || slice_param(im, nd, 2, "ends", &end, &has) ||
        slice_param(im, nd, 3, "axes", &axis, &has) || slice_param(im, nd, 4, "steps", &step, &has))
        return NASC_ERR;
    if (axis != 0 && axis != -1) return fail(im, "Slice on axis %lld of a vector", (long long)axis);
    if (step != 1) return fail(im, "Slice with step %lld is not supported", (long long)step);
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = NASC_MAX(0, NASC_MIN(start, n));
    end = NASC_MAX(start, NASC_MIN(end, n));
    Value r = const_new_i64((size_t)(end - start));
    for (int64_t j = start; j < end; j++) r.i[j - start] = d->i[j];
    val_def(im, nd->output[0], r);
    return NASC_OK;
}

static int read_cast(Imp *im, const Onnx__NodeProto *nd) {
    int k;
    int64_t to;
    if (arg(im, nd, 0, &k) || attr_int(im, nd, "to", 0, &to)) return NASC_ERR;
    const Value *x = &im->vals[k];
    if (x->kind != V_CONST) {
        if (to != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return fail(im, "Cast of a computed tensor to type %lld", (long long)to);
        val_def(im, nd->output[0], *x);
        return NASC_OK;
    }
    Value r = const_copy(x);
    if (to == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && r.i) {
        r.f = xmalloc(r.n ? r.n * sizeof(float) : 1);
        for (size_t j = 0; j < r.n; j++) r.f[j] = (float)r.i[j];
        free(r.i);
        r.i = NULL;
    } else if (to == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 && r.f) {
        r.i = xmalloc(r.n ? r.n * sizeof(int64_t) : 1);
        for (size_t j = 0; j < r.n; j++) r.i[j] = isfinite(r.f[j]) && fabsf(r.f[j]) < 9e18f ? (int64_t)r.f[j] : 0;
        free(r.f);
        r.f = NULL;
    } else if (to != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && to != ONNX__TENSOR_PROTO__DATA_TYPE__INT64 &&
               to != ONNX__TENSOR_PROTO__DATA_TYPE__INT32) {
        value_free(&r);
        return fail(im, "Cast to type %lld is not supported", (long long)to);
    }
    val_def(im, nd->output[0], r);
    return NASC_OK;
}

/* QDQ models (nasc's int8 export, onnxruntime's quantizer): DequantizeLinear of a constant
 * (int8 weights, int32 biases) is the dequantized float constant; QuantizeLinear and
 * DequantizeLinear of a computed tensor pass it through, so the imported net is the float
 * network the int8 one approximates (activation rounding is not kept). */
static int read_qdq(Imp *im, const Onnx__NodeProto *nd, int dequant) {
    int k;
    const Value *sc = NULL;
    if (arg(im, nd, 0, &k) || arg_const(im, nd, 1, &sc)) return NASC_ERR;
    int kz;
    if (arg_opt(im, nd, 2, &kz)) return NASC_ERR;
    const Value *zp = kz >= 0 ? &im->vals[kz] : NULL;
    if (zp && (zp->kind != V_CONST || !zp->i)) return fail(im, "the zero point must be an integer constant");
    if (!sc->f || sc->n < 1) return fail(im, "the scale must be a float constant");
    if (zp && zp->n != sc->n) return fail(im, "the zero point has %zu values and the scale %zu", zp->n, sc->n);
    for (size_t j = 0; j < sc->n; j++)
        if (!(sc->f[j] > 0) || !isfinite(sc->f[j])) return fail(im, "scale %zu is %g", j, sc->f[j]);
    const Value *x = &im->vals[k];
    if (x->kind == V_NODE) {
        if (sc->n != 1) return fail(im, "per-channel quantization of activations is not supported");
        val_def(im, nd->output[0], *x);
        return NASC_OK;
    }
    if (!dequant) return fail(im, "QuantizeLinear of a constant is not supported");
    if (!x->i) return fail(im, "DequantizeLinear of a float constant");
    int64_t axis;
    if (attr_int(im, nd, "axis", 1, &axis)) return NASC_ERR;
    if (axis < 0) axis += x->ndims;
    size_t outer = 1, ch = 1, inner = 1;
    if (sc->n > 1) {
        if (axis < 0 || axis >= x->ndims || x->dims[axis] != (int64_t)sc->n)
            return fail(im, "%zu scales do not fit axis %lld of the tensor", sc->n, (long long)axis);
        for (int j = 0; j < axis; j++) outer *= (size_t)x->dims[j];
        ch = sc->n;
        for (int j = (int)axis + 1; j < x->ndims; j++) inner *= (size_t)x->dims[j];
    } else {
        inner = x->n;
    }
    Value r = *x;
    r.name = NULL;
    r.i = NULL;
    r.f = xmalloc(x->n ? x->n * sizeof(float) : 1);
    for (size_t o = 0; o < outer; o++)
        for (size_t c = 0; c < ch; c++)
            for (size_t j = 0; j < inner; j++) {
                size_t at = (o * ch + c) * inner + j;
                r.f[at] = (float)((double)(x->i[at] - (zp ? zp->i[c] : 0)) * sc->f[c]);
            }
    val_def(im, nd->output[0], r);
    return NASC_OK;
}

static int read_node(Imp *im, const Onnx__NodeProto *nd) {
    const char *op = S(nd->op_type), *dom = S(nd->domain);
    if (dom[0] && strcmp(dom, "ai.onnx") != 0)
        return fail(im, "op type '%.40s:%.40s' is not supported (supported: %s)", dom, op, k_supported);
    if (nd->n_output < 1 || !nd->output[0] || !nd->output[0][0]) return fail(im, "has no output");
    Value x;
    if (!strcmp(op, "Conv")) return read_conv(im, nd);
    if (!strcmp(op, "BatchNormalization")) return read_bn(im, nd);
    if (!strcmp(op, "Relu")) return arg_node(im, nd, 0, 1, &x) ? NASC_ERR : def_same(im, nd, OP_RELU, &x);
    if (!strcmp(op, "Sigmoid")) return arg_node(im, nd, 0, 1, &x) ? NASC_ERR : def_same(im, nd, OP_SIGMOID, &x);
    if (!strcmp(op, "HardSwish")) return arg_node(im, nd, 0, 1, &x) ? NASC_ERR : def_same(im, nd, OP_HSWISH, &x);
    if (!strcmp(op, "HardSigmoid")) return read_hardsigmoid(im, nd);
    if (!strcmp(op, "Clip")) return read_clip(im, nd);
    if (!strcmp(op, "MaxPool")) return read_pool(im, nd, 1);
    if (!strcmp(op, "AveragePool")) return read_pool(im, nd, 0);
    if (!strcmp(op, "GlobalAveragePool")) {
        if (arg_node(im, nd, 0, 0, &x)) return NASC_ERR;
        if (x.rank != 4) return fail(im, "the input must be (N, C, H, W)");
        return def_gap(im, nd, &x, 1);
    }
    if (!strcmp(op, "ReduceMean")) return read_reducemean(im, nd);
    if (!strcmp(op, "Gemm")) return read_gemm(im, nd, 0);
    if (!strcmp(op, "MatMul")) return read_gemm(im, nd, 1);
    if (!strcmp(op, "Add")) return read_add(im, nd, 0);
    if (!strcmp(op, "Sum")) return read_add(im, nd, 1);
    if (!strcmp(op, "Mul")) return read_mul(im, nd);
    if (!strcmp(op, "Concat")) return read_concat(im, nd);
    if (!strcmp(op, "Flatten")) return read_flatten(im, nd);
    if (!strcmp(op, "Reshape")) return read_reshape(im, nd);
    if (!strcmp(op, "Squeeze")) return read_squeeze(im, nd, 0);
    if (!strcmp(op, "Unsqueeze")) return read_squeeze(im, nd, 1);
    if (!strcmp(op, "Identity") || !strcmp(op, "Dropout")) {
        int k;
        if (arg(im, nd, 0, &k)) return NASC_ERR;
        if (extra_outputs_used(nd)) return fail(im, "Dropout's mask output is not supported");
        Value v = im->vals[k];
        if (v.kind == V_CONST) v = const_copy(&v);
        val_def(im, nd->output[0], v);
        return NASC_OK;
    }
    if (!strcmp(op, "Resize")) return read_resize(im, nd);
    if (!strcmp(op, "Constant")) return read_constant(im, nd);
    if (!strcmp(op, "Shape")) return read_shape(im, nd);
    if (!strcmp(op, "Gather")) return read_gather(im, nd);
    if (!strcmp(op, "Slice")) return read_slice(im, nd);
    if (!strcmp(op, "Cast")) return read_cast(im, nd);
    if (!strcmp(op, "QuantizeLinear")) return read_qdq(im, nd, 0);
    if (!strcmp(op, "DequantizeLinear")) return read_qdq(im, nd, 1);
    return fail(im, "op type '%.40s' is not supported (supported: %s)", op, k_supported);
}

/* ------------------------------------------------------------------ model */
static int read_input(Imp *im, const Onnx__GraphProto *g, const char **name) {
    const Onnx__ValueInfoProto *in = NULL;
    int nin = 0;
    for (size_t j = 0; j < g->n_input; j++) {
        const Onnx__ValueInfoProto *v = g->input[j];
        if (!v || !v->name) return fail(im, "graph input %zu has no name", j + 1);
        int is_init = 0;
        for (size_t q = 0; q < g->n_initializer && !is_init; q++)
            is_init = g->initializer[q] && g->initializer[q]->name && !strcmp(g->initializer[q]->name, v->name);
        if (!is_init) in = v, nin++;
    }
    if (nin != 1) return fail(im, "the graph has %d inputs; nasc networks have one (N, C, H, W) input", nin);
    *name = in->name;
    const Onnx__TypeProto *tp = in->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return fail(im, "the graph input '%.80s' is not a tensor", in->name);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (!tt->has_elem_type || tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return fail(im, "the graph input '%.80s' is not a float tensor", in->name);
    const Onnx__TensorShapeProto *sh = tt->shape;
    if (!sh || sh->n_dim != 4)
        return fail(im, "the graph input '%.80s' must be (N, C, H, W) with known C, H, W (it has %zu dimensions)",
                    in->name, sh ? sh->n_dim : 0);
    int64_t d[3];
    for (int j = 0; j < 3; j++) {
        const Onnx__TensorShapeProto__Dimension *dim = sh->dim[j + 1];
        if (!dim || dim->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE || dim->dim_value < 1 ||
            dim->dim_value > 65536)
            return fail(im, "the graph input '%.80s' must have known C, H and W (dimension %d is not a size)", in->name,
                        j + 2);
        d[j] = dim->dim_value;
    }
    if (d[0] > 4) return fail(im, "the graph input has %lld channels; nasc models take 1 to 4", (long long)d[0]);
    im->in_c = (int)d[0], im->in_h = (int)d[1], im->in_w = (int)d[2];
    return NASC_OK;
}

/* "a,b,c" into v (at most 4 values); -1 when malformed. */
static int parse_floats(const char *s, float *v) {
    int n = 0;
    while (s && *s) {
        if (n == 4) return -1;
        char *end;
        v[n++] = strtof(s, &end);
        if (end == s) return -1;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

static int read_norm(Imp *im, const Onnx__ModelProto *m, Norm *norm) {
    memset(norm, 0, sizeof *norm);
    const char *mean = NULL, *std = NULL;
    for (size_t j = 0; j < m->n_metadata_props; j++) {
        const Onnx__StringStringEntryProto *p = m->metadata_props[j];
        if (!p || !p->key) continue;
        if (!strcmp(p->key, "nasc.norm_mean")) mean = p->value;
        if (!strcmp(p->key, "nasc.norm_std")) std = p->value;
    }
    if (!mean && !std) return NASC_OK;
    int nm = parse_floats(mean, norm->mean), ns = parse_floats(std, norm->std);
    if (nm != im->in_c || ns != im->in_c)
        return fail(im, "metadata nasc.norm_mean/nasc.norm_std must hold %d comma-separated values each", im->in_c);
    for (int j = 0; j < ns; j++)
        if (!(norm->std[j] > 0) || !isfinite(norm->mean[j])) return fail(im, "metadata nasc.norm_std must be positive");
    norm->nchan = im->in_c;
    return NASC_OK;
}

/* Drop the nodes that do not reach node `out` and build the net (out becomes the last node). */
static int build_net(Imp *im, int out, Net *net) {
    int n = im->n;
    int *map = xmalloc((size_t)n * sizeof *map);
    char *live = xcalloc((size_t)n, 1);
    live[out] = 1;
    for (int i = out; i >= 0; i--)
        if (live[i])
            for (int j = 0; j < im->nodes[i].nin; j++)
                if (im->nodes[i].in[j] >= 0) live[im->nodes[i].in[j]] = 1;
    Spec spec = {0};
    for (int i = 0; i <= out; i++) {
        map[i] = -1;
        if (!live[i]) continue;
        INode *nd = &im->nodes[i];
        int in[NODE_MAX_IN];
        for (int j = 0; j < nd->nin; j++) in[j] = nd->in[j] < 0 ? -1 : map[nd->in[j]];
        map[i] = spec_add(&spec, nd->op, nd->a, in, nd->nin, NULL);
    }
    const INode *last = &im->nodes[out];
    int classes = last->c * last->h * last->w;
    Err sub;
    int rc = net_build(net, &spec, im->in_c, im->in_h, im->in_w, classes, &sub);
    if (rc != NASC_OK) {
        err_set(im->e, "the imported network does not build: %s", sub.msg);
    } else { /* the model file stores the printed spec: it must parse back */
        char *text = spec_print(&net->spec);
        Spec again;
        if (spec_parse(&again, text, 16, 1, &sub) != NASC_OK) {
            err_set(im->e, "the imported network's spec does not parse back (%s); please report this", sub.msg);
            net_free(net);
            rc = NASC_ERR;
        } else {
            spec_free(&again);
        }
        free(text);
    }
    if (rc == NASC_OK) {
        for (int i = 0; i <= out; i++) {
            if (map[i] < 0) continue;
            const INode *src = &im->nodes[i];
            const Node *nd = &net->spec.nodes[map[i]];
            float *p = net->params + nd->param_off;
            NASC_ASSERT(nd->c == src->c && nd->h == src->h && nd->w == src->w);
            if (src->op == OP_CONV || src->op == OP_LINEAR) {
                size_t nb = src->a.bias ? (size_t)src->c : 0, nw = nd->nparam - nb;
                memcpy(p, src->wt, nw * sizeof(float));
                if (nb) memcpy(p + nw, src->bias, nb * sizeof(float));
            } else if (src->op == OP_BN) {
                NASC_ASSERT(nd->nparam == 2 * (size_t)src->c && nd->nbuf == 2 * (size_t)src->c);
                memcpy(p, src->bn, 2 * (size_t)src->c * sizeof(float));
                memcpy(net->buffers + nd->buf_off, src->bn + 2 * (size_t)src->c, 2 * (size_t)src->c * sizeof(float));
            }
        }
    }
    spec_free(&spec);
    free(map);
    free(live);
    return rc;
}

static void imp_free(Imp *im) {
    for (int j = 0; j < im->nval; j++) value_free(&im->vals[j]);
    free(im->vals);
    free(im->hash);
    for (int j = 0; j < im->n; j++) {
        free(im->nodes[j].wt);
        free(im->nodes[j].bias);
        free(im->nodes[j].bn);
    }
    free(im->nodes);
}

int onnx_import(const uint8_t *buf, size_t len, Net *net, Norm *norm, Err *e) {
    memset(net, 0, sizeof *net);
    if (len >= 8 && !memcmp(buf, "NASCMDL", 8)) {
        err_set(e, "this is a nasc model file, not an ONNX model");
        return NASC_ERR;
    }
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    if (!m) {
        err_set(e, "not an ONNX model, or a truncated one (the protobuf does not parse)");
        return NASC_ERR;
    }
    Imp im = {0};
    im.e = e;
    im.g = m->graph;
    int rc = NASC_ERR;
    const Onnx__GraphProto *g = m->graph;
    if (!g || !m->has_ir_version || m->n_opset_import == 0) {
        err_set(e, "not an ONNX model (no %s)", !g ? "graph" : !m->has_ir_version ? "IR version" : "opset");
        goto done;
    }
    for (size_t j = 0; j < m->n_opset_import; j++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[j];
        if (o && o->has_version && (!o->domain || !o->domain[0] || !strcmp(o->domain, "ai.onnx")))
            im.opset = (int)NASC_MIN(o->version, 1000);
    }
    if (im.opset < 7) {
        err_set(e, "the model's default opset is %d; nasc reads opset 7 and later", im.opset);
        goto done;
    }
    if (g->n_output != 1 || !g->output[0] || !g->output[0]->name) {
        err_set(e, "the graph has %zu outputs; nasc networks have one (the logits)", g->n_output);
        goto done;
    }
    const char *in_name = NULL;
    if (read_input(&im, g, &in_name)) goto done;
    val_def(&im, in_name, node_value(-1, 4, 0));
    for (size_t j = 0; j < g->n_initializer; j++) {
        const Onnx__TensorProto *t = g->initializer[j];
        if (!t || !t->name || !t->name[0]) {
            err_set(e, "initializer %zu has no name", j + 1);
            goto done;
        }
        Value v;
        if (tensor_decode(&im, t, &v)) goto done;
        val_def(&im, t->name, v);
    }
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *nd = g->node[i];
        if (!nd) continue;
        im.cur = nd;
        im.cur_index = (int)i;
        int before = im.n;
        if (read_node(&im, nd)) goto done;
        for (int k = before; k < im.n; k++) im.nodes[k].oname = nd->output[0];
    }
    im.cur = NULL;
    int k = val_find(&im, g->output[0]->name);
    if (k < 0 || im.vals[k].kind != V_NODE || im.vals[k].node < 0) {
        err_set(e, "the graph output '%.80s' is %s", g->output[0]->name,
                k < 0 ? "not produced by any node" : im.vals[k].kind == V_CONST ? "a constant" : "the graph input");
        goto done;
    }
    Norm nm;
    if (read_norm(&im, m, &nm)) goto done;
    if (build_net(&im, im.vals[k].node, net)) goto done;
    if (norm) *norm = nm;
    rc = NASC_OK;
done:
    imp_free(&im);
    onnx__model_proto__free_unpacked(m, NULL);
    return rc;
}

int onnx_import_file(const char *path, Net *net, Norm *norm, Err *e) {
    size_t len;
    uint8_t *buf = file_read_all(path, &len, e);
    if (!buf) return NASC_ERR;
    Err sub;
    int rc = onnx_import(buf, len, net, norm, &sub);
    if (rc != NASC_OK) err_set(e, "%s: %s", path, sub.msg);
    free(buf);
    return rc;
}
