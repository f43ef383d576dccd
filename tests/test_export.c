/* test_export.c: ONNX export and import (src/export).
 *
 *   build/tests/test_export                 in-process tests: every reference net (zoo, NB201
 *       cells, macro-space members, a spec using every op) exported and imported back gives the
 *       same outputs as the original; its int8 (QDQ) export imports back as the float net it
 *       approximates; foreign ONNX graphs written here by an independent
 *       protobuf encoder (PyTorch-like plain forms: Conv+BN(eps 1e-3)+Clip, x.view(N, -1) shape
 *       arithmetic, Gemm transB=0 with alpha/beta, MatMul+Add, Resize by computed sizes, ...)
 *       import; unsupported ops, non-ONNX, truncated and corrupted files give messages, never
 *       crashes (run it under the SAN build).
 *   The helper modes tests/cli_export.sh uses to compare with ONNX Runtime:
 *   build/tests/test_export --make DIR [BATCH]   write DIR/cases.txt ("NAME nasc|foreign" and
 *       "NAME.q8 int8 STEP" lines), and per case DIR/NAME.in.bin (BATCH random inputs, 3 by default) and
 *       either DIR/NAME.nasc (a model with random weights and BN statistics) + DIR/NAME.ref.bin
 *       (nasc's logits), DIR/NAME.q8.nasc (its int8 form, calibrated on random inputs) +
 *       DIR/NAME.q8.ref.bin (the int8 net's dequantized logits; STEP is their scale), or
 *       DIR/NAME.onnx (a foreign graph); also DIR/bad_leakyrelu.onnx (an op nasc lacks);
 *   build/tests/test_export --predict MODEL IN.bin OUT.bin    nasc's logits of a model file (fp32,
 *       or int8: dequantized);
 *   build/tests/test_export --compare GOT.bin WANT.bin TOL NAME   max relative difference, error
 *       |got - want| / max(|want|, rms(want)) per element; exits 1 above TOL;
 *   build/tests/test_export --compare-q GOT.bin WANT.bin STEP NAME   int8 logits: the largest
 *       difference in quantization steps and the share of equal logits; exits 1 above one step.
 * Tensor files: "NTS1", u32 ndim, u32 dims[ndim], f32 data (little-endian).
 */
#include <math.h>
#include <sys/stat.h>

#include "../src/export/export.h"
#include "../src/space/space.h"
#include "check.h"

#define BATCH 3

/* ------------------------------------------------------------------ cases */
typedef struct {
    const char *name;
    const char *spec; /* spec text, zoo name, NB201 cell or "macro" */
    int c, h, w, classes;
    int channels, cells; /* NB201 */
    uint64_t seed;       /* macro: the member */
} Case;

/* Every op, both ranks of values (BN and ReLU after a linear), dilation, groups, strides. */
static const char every_op_spec[] =
    "resize(s=20); conv(c=8,k=3); bn; a=hswish; maxpool(k=3,s=2,p=1); b=conv(c=8,k=3,d=2); "
    "c=avgpool(a,k=3,s=2,p=1,cip=0); d=concat(b,c); conv(c=16,k=1); e=relu6; gap; conv(c=4,k=1,bias=1); relu; "
    "conv(c=16,k=1,bias=1); sigmoid; f=mul(e,_); z=zero(f); g=add(f,z,d); hsigmoid; dropout(p=0.2); h=id; "
    "conv(c=16,k=3,s=2,g=4,bias=1); avgpool(k=2,s=1,p=1); add(_, _); linear(c=12,bias=0); bn; relu; linear";

static const Case cases[] = {
    {"small", "small", 1, 28, 28, 10, 0, 0, 0},
    {"resnet8", "resnet8", 1, 28, 28, 10, 0, 0, 0},
    {"mbv2", "mbv2", 1, 28, 28, 10, 0, 0, 0},
    {"nb201_a", "nb201:|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|", 3, 16,
     16, 10, 8, 1, 0},
    {"nb201_b", "nb201:|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|", 3, 16,
     16, 10, 8, 2, 0},
    {"macro_1", "macro", 1, 28, 28, 10, 0, 0, 11},
    {"macro_2", "macro", 1, 28, 28, 10, 0, 0, 22},
    {"macro_3", "macro", 3, 28, 28, 10, 0, 0, 33},
    {"every_op", every_op_spec, 2, 28, 28, 7, 0, 0, 0},
    {"resize_only", "resize(s=24)", 1, 28, 28, 576, 0, 0, 0}, /* int8: exact taps, equal to ORT bit for bit */
    /* int8: convolutions and adds follow ORT's arithmetic, so lone ones equal ORT bit for bit */
    {"add_only", "a=conv(c=16,k=3); bn; conv(c=16,k=3); bn; add(a,_)", 1, 28, 28, 12544, 0, 0, 0},
    {"conv_only", "conv(c=8,k=3); bn; relu6", 1, 28, 28, 6272, 0, 0, 0},
    {"dw_only", "conv(c=8,k=3); bn; conv(c=8,k=7,g=8); bn", 1, 28, 28, 6272, 0, 0, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static void die(const char *what, const char *msg) {
    fprintf(stderr, "test_export: %s: %s\n", what, msg);
    exit(1);
}

/* Random weights, and BN parameters and statistics far from the identity. */
static void randomize(Net *net, uint64_t seed) {
    net_init_params(net, seed);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN) continue;
        float *p = net->params + nd->param_off, *b = net->buffers + nd->buf_off;
        for (int j = 0; j < nd->c; j++) {
            p[j] = rng_uniformf(&r, 0.5f, 1.5f);
            p[nd->c + j] = rng_uniformf(&r, -0.5f, 0.5f);
            b[j] = rng_uniformf(&r, -0.3f, 0.3f);
            b[nd->c + j] = rng_uniformf(&r, 0.5f, 2.0f);
        }
    }
}

static void case_build(const Case *k, Net *net) {
    Err e = {{0}};
    Spec spec;
    char *text = NULL;
    if (!strcmp(k->spec, "macro")) {
        Space *s = space_open("macro", 0, 0, &e);
        if (!s) die("macro space", e.msg);
        int m[SPACE_MAX_DIMS];
        Rng r;
        rng_seed(&r, k->seed);
        space_sample(s, &r, m);
        text = s->ops->to_spec(s, m, &e);
        if (!text) die(k->name, e.msg);
        space_free(s);
    } else {
        const char *z = zoo_lookup(k->spec);
        text = xstrdup(z ? z : k->spec);
    }
    if (spec_parse(&spec, text, k->channels ? k->channels : 16, k->cells ? k->cells : 1, &e) != NASC_OK)
        die(k->name, e.msg);
    if (net_build(net, &spec, k->c, k->h, k->w, k->classes, &e) != NASC_OK) die(k->name, e.msg);
    randomize(net, 1000 + (uint64_t)(k - cases));
    spec_free(&spec);
    free(text);
}

static float *random_input(int n, uint64_t seed) {
    float *x = xmalloc((size_t)n * sizeof *x);
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    return x;
}

static Norm case_norm(const Case *k) {
    Norm nm = {.nchan = k->c};
    for (int j = 0; j < k->c; j++) nm.mean[j] = 0.25f + 0.1f * j, nm.std[j] = 0.35f - 0.05f * j;
    return nm;
}

/* Max over elements of |got - want| / max(|want|, rms(want)). */
static double rel_diff(const float *got, const float *want, size_t n) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
    double rms = sqrt(ss / (double)(n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), rms > 0 ? rms : 1e-30);
        if (isnan(d)) return INFINITY;
        worst = fmax(worst, d);
    }
    return worst;
}

/* ------------------------------------------------------------------ tensor files */
static void tensor_write(const char *path, const float *x, const int *dims, int nd) {
    size_t n = 1;
    for (int j = 0; j < nd; j++) n *= (size_t)dims[j];
    size_t len = 8 + 4 * (size_t)nd + 4 * n;
    uint8_t *buf = xmalloc(len);
    uint32_t u = (uint32_t)nd;
    memcpy(buf, "NTS1", 4);
    memcpy(buf + 4, &u, 4);
    for (int j = 0; j < nd; j++) {
        u = (uint32_t)dims[j];
        memcpy(buf + 8 + 4 * j, &u, 4);
    }
    memcpy(buf + 8 + 4 * nd, x, 4 * n);
    Err e;
    if (file_write_atomic(path, buf, len, &e) != NASC_OK) die(path, e.msg);
    free(buf);
}

/* Returns the data (caller frees); dims into dims[4], *nd. */
static float *tensor_read(const char *path, int *dims, int *nd, size_t *n) {
    Err e;
    size_t len;
    uint8_t *buf = file_read_all(path, &len, &e);
    if (!buf) die(path, e.msg);
    uint32_t u;
    if (len < 8 || memcmp(buf, "NTS1", 4)) die(path, "not a tensor file");
    memcpy(&u, buf + 4, 4);
    if (u < 1 || u > 4 || len < 8 + 4 * (size_t)u) die(path, "bad tensor header");
    *nd = (int)u;
    *n = 1;
    for (int j = 0; j < *nd; j++) {
        memcpy(&u, buf + 8 + 4 * j, 4);
        dims[j] = (int)u;
        *n *= u;
    }
    if (len != 8 + 4 * (size_t)*nd + 4 * *n) die(path, "tensor size does not match its dims");
    float *x = xmalloc(*n * sizeof(float) + 1);
    memcpy(x, buf + 8 + 4 * *nd, *n * sizeof(float));
    free(buf);
    return x;
}

/* ------------------------------------------------------------------ an independent protobuf encoder */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} Pb;

static void pb_raw(Pb *b, const void *v, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void pb_varint(Pb *b, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        pb_raw(b, &c, 1);
    } while (v);
}
static void pb_key(Pb *b, int field, int wire) { pb_varint(b, ((uint64_t)field << 3) | (uint64_t)wire); }
static void pb_int(Pb *b, int field, int64_t v) {
    pb_key(b, field, 0);
    pb_varint(b, (uint64_t)v);
}
static void pb_float(Pb *b, int field, float f) {
    pb_key(b, field, 5);
    pb_raw(b, &f, 4);
}
static void pb_bytes(Pb *b, int field, const void *v, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_raw(b, v, n);
}
static void pb_str(Pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }
/* Append sub as a length-delimited field and free it. */
static void pb_sub(Pb *b, int field, Pb *sub) {
    pb_bytes(b, field, sub->p, sub->n);
    free(sub->p);
    memset(sub, 0, sizeof *sub);
}

/* Foreign graphs (GraphProto fields: node 1, name 2, initializer 5, input 11, output 12). */
typedef struct {
    Pb g;
} Fg;

/* A node; attrs is an already encoded list of AttributeProto fields (may be NULL). "" inputs are
 * omitted optional inputs. */
static void fg_node(Fg *f, const char *op, const char *name, const char *ins, const char *out, Pb *attrs) {
    Pb n = {0};
    char buf[512];
    snprintf(buf, sizeof buf, "%s", ins);
    for (char *s = buf[0] ? buf : NULL, *t; s; s = t) { /* comma-separated input names */
        t = strchr(s, ',');
        if (t) *t++ = 0;
        pb_str(&n, 1, s);
    }
    pb_str(&n, 2, out);
    pb_str(&n, 3, name);
    pb_str(&n, 4, op);
    if (attrs && attrs->n) pb_raw(&n, attrs->p, attrs->n);
    if (attrs) free(attrs->p), memset(attrs, 0, sizeof *attrs);
    pb_sub(&f->g, 1, &n);
}

/* AttributeProto: name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, type 20 (FLOAT 1, INT 2,
 * STRING 3, TENSOR 4, INTS 7); appended as NodeProto field 5. */
static void at_int(Pb *attrs, const char *name, int64_t v) {
    Pb a = {0};
    pb_str(&a, 1, name);
    pb_int(&a, 3, v);
    pb_int(&a, 20, 2);
    pb_sub(attrs, 5, &a);
}
static void at_float(Pb *attrs, const char *name, float v) {
    Pb a = {0};
    pb_str(&a, 1, name);
    pb_float(&a, 2, v);
    pb_int(&a, 20, 1);
    pb_sub(attrs, 5, &a);
}
static void at_str(Pb *attrs, const char *name, const char *v) {
    Pb a = {0};
    pb_str(&a, 1, name);
    pb_str(&a, 4, v);
    pb_int(&a, 20, 3);
    pb_sub(attrs, 5, &a);
}
static void at_ints(Pb *attrs, const char *name, const int64_t *v, int n) {
    Pb a = {0};
    pb_str(&a, 1, name);
    for (int j = 0; j < n; j++) pb_int(&a, 8, v[j]);
    pb_int(&a, 20, 7);
    pb_sub(attrs, 5, &a);
}

/* TensorProto: dims 1, data_type 2 (FLOAT 1, INT64 7), name 8, raw_data 9. nbytes_cut: bytes of
 * raw data to drop (to make a malformed tensor). */
static void tensor_pb(Pb *t, const char *name, int dtype, const int64_t *dims, int nd, const void *data, size_t nbytes) {
    for (int j = 0; j < nd; j++) pb_int(t, 1, dims[j]);
    pb_int(t, 2, dtype);
    pb_str(t, 8, name);
    pb_bytes(t, 9, data, nbytes);
}
static size_t dims_count(const int64_t *dims, int nd) {
    size_t n = 1;
    for (int j = 0; j < nd; j++) n *= (size_t)dims[j];
    return n;
}
static void fg_init_f(Fg *f, const char *name, const int64_t *dims, int nd, const float *data) {
    Pb t = {0};
    tensor_pb(&t, name, 1, dims, nd, data, dims_count(dims, nd) * 4);
    pb_sub(&f->g, 5, &t);
}
static void fg_init_i64(Fg *f, const char *name, const int64_t *data, int n) {
    Pb t = {0};
    int64_t d = n;
    tensor_pb(&t, name, 7, &d, 1, data, (size_t)n * 8);
    pb_sub(&f->g, 5, &t);
}
/* Random float initializer (uniform in [lo, hi)). */
static void fg_init_rand(Fg *f, const char *name, const int64_t *dims, int nd, float lo, float hi, Rng *r) {
    size_t n = dims_count(dims, nd);
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = rng_uniformf(r, lo, hi);
    fg_init_f(f, name, dims, nd, v);
    free(v);
}
/* A graph input (field 11) or output (12): float, dims[j] < 0 = the symbolic "N". */
static void fg_io(Fg *f, int field, const char *name, const int64_t *dims, int nd) {
    Pb shape = {0}, tt = {0}, tp = {0}, vi = {0};
    for (int j = 0; j < nd; j++) {
        Pb d = {0};
        if (dims[j] < 0) pb_str(&d, 2, "N");
        else pb_int(&d, 1, dims[j]);
        pb_sub(&shape, 1, &d);
    }
    pb_int(&tt, 1, 1);
    pb_sub(&tt, 2, &shape);
    pb_sub(&tp, 1, &tt);
    pb_str(&vi, 1, name);
    pb_sub(&vi, 2, &tp);
    pb_sub(&f->g, field, &vi);
}
/* ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 (domain 1, version 2). */
static uint8_t *fg_model(Fg *f, int opset, size_t *len) {
    Pb m = {0}, os = {0};
    pb_int(&m, 1, 7);
    pb_str(&m, 2, "test_export");
    pb_str(&f->g, 2, "foreign");
    pb_sub(&m, 7, &f->g);
    pb_str(&os, 1, "");
    pb_int(&os, 2, opset);
    pb_sub(&m, 8, &os);
    *len = m.n;
    return m.p;
}

/* PyTorch-like: Conv+bias, BatchNormalization eps 1e-3, Clip(0, 6) with Constant-node bounds,
 * depthwise Conv (no bias, stride 2), Relu, HardSwish (opset 14), Conv, ReduceMean(2,3),
 * x.view(N, -1) as Shape/Gather/Unsqueeze/Concat/Reshape, Gemm transB=0 alpha 0.5 beta 2 with a
 * (1, out) bias, Relu, MatMul + Add (bias), into "out". Input 3x12x12, 5 classes. */
static uint8_t *foreign_torchlike(size_t *len) {
    Fg f = {{0}};
    Rng r;
    rng_seed(&r, 7);
    Pb a = {0};
    int64_t in_dims[4] = {-1, 3, 12, 12}, out_dims[2] = {-1, 5};
    fg_io(&f, 11, "x", in_dims, 4);
    int64_t w1[4] = {8, 3, 3, 3}, c8[1] = {8}, wd[4] = {8, 1, 3, 3}, w3[4] = {16, 8, 1, 1};
    fg_init_rand(&f, "conv1.w", w1, 4, -0.3f, 0.3f, &r);
    fg_init_rand(&f, "conv1.b", c8, 1, -0.2f, 0.2f, &r);
    fg_init_rand(&f, "bn.g", c8, 1, 0.5f, 1.5f, &r);
    fg_init_rand(&f, "bn.b", c8, 1, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "bn.m", c8, 1, -0.2f, 0.2f, &r);
    fg_init_rand(&f, "bn.v", c8, 1, 0.001f, 0.01f, &r); /* small variances make epsilon matter */
    fg_init_rand(&f, "dw.w", wd, 4, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "conv3.w", w3, 4, -0.3f, 0.3f, &r);
    int64_t gw[2] = {16, 6}, gb[2] = {1, 6}, mw[2] = {6, 5}, mb[1] = {5};
    fg_init_rand(&f, "fc1.w", gw, 2, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "fc1.b", gb, 2, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "fc2.w", mw, 2, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "fc2.b", mb, 1, -0.5f, 0.5f, &r);
    int64_t zero_i[1] = {0}, minus1[1] = {-1};
    fg_init_i64(&f, "idx0", zero_i, 1);
    fg_init_i64(&f, "minus1", minus1, 1);

    int64_t p1[4] = {1, 1, 1, 1}, s2[2] = {2, 2}, k3[2] = {3, 3};
    at_ints(&a, "pads", p1, 4);
    at_ints(&a, "kernel_shape", k3, 2);
    fg_node(&f, "Conv", "/conv1/Conv", "x,conv1.w,conv1.b", "t1", &a);
    at_float(&a, "epsilon", 1e-3f);
    at_float(&a, "momentum", 0.9f);
    fg_node(&f, "BatchNormalization", "/bn/BatchNormalization", "t1,bn.g,bn.b,bn.m,bn.v", "t2", &a);
    { /* Constant nodes for Clip's bounds: value tensors (scalars) */
        float lo = 0, hi = 6;
        Pb t = {0}, at = {0};
        tensor_pb(&t, "", 1, NULL, 0, &lo, 4);
        pb_str(&at, 1, "value");
        pb_sub(&at, 5, &t);
        pb_int(&at, 20, 4);
        pb_sub(&a, 5, &at);
        fg_node(&f, "Constant", "/Constant", "", "cmin", &a);
        tensor_pb(&t, "", 1, NULL, 0, &hi, 4);
        pb_str(&at, 1, "value");
        pb_sub(&at, 5, &t);
        pb_int(&at, 20, 4);
        pb_sub(&a, 5, &at);
        fg_node(&f, "Constant", "/Constant_1", "", "cmax", &a);
    }
    fg_node(&f, "Clip", "/act/Clip", "t2,cmin,cmax", "t3", NULL);
    at_ints(&a, "pads", p1, 4);
    at_ints(&a, "strides", s2, 2);
    at_int(&a, "group", 8);
    fg_node(&f, "Conv", "/dw/Conv", "t3,dw.w", "t4", &a);
    fg_node(&f, "Relu", "/relu/Relu", "t4", "t5", NULL);
    fg_node(&f, "HardSwish", "/hs/HardSwish", "t5", "t6", NULL);
    fg_node(&f, "Conv", "/conv3/Conv", "t6,conv3.w", "t7", NULL);
    int64_t axes[2] = {2, 3};
    at_ints(&a, "axes", axes, 2);
    at_int(&a, "keepdims", 1);
    fg_node(&f, "ReduceMean", "/pool/ReduceMean", "t7", "t8", &a);
    fg_node(&f, "Shape", "/Shape", "t8", "sh", NULL);
    at_int(&a, "axis", 0);
    fg_node(&f, "Gather", "/Gather", "sh,idx0", "n0", &a);
    fg_node(&f, "Squeeze", "/Squeeze", "n0", "n1", NULL);
    fg_node(&f, "Unsqueeze", "/Unsqueeze", "n1,idx0", "n2", NULL);
    at_int(&a, "axis", 0);
    fg_node(&f, "Concat", "/Concat", "n2,minus1", "shape", &a);
    fg_node(&f, "Reshape", "/Reshape", "t8,shape", "t9", NULL);
    at_float(&a, "alpha", 0.5f);
    at_float(&a, "beta", 2.0f);
    fg_node(&f, "Gemm", "/fc1/Gemm", "t9,fc1.w,fc1.b", "t10", &a);
    fg_node(&f, "Relu", "/relu2/Relu", "t10", "t11", NULL);
    fg_node(&f, "MatMul", "/fc2/MatMul", "t11,fc2.w", "t12", NULL);
    fg_node(&f, "Add", "/fc2/Add", "t12,fc2.b", "out", NULL);
    fg_io(&f, 12, "out", out_dims, 2);
    return fg_model(&f, 14, len);
}

/* Other plain forms: Resize by sizes computed from Shape/Slice/Concat (pytorch_half_pixel),
 * Conv, MaxPool ceil_mode=1 where it changes nothing, AveragePool with default
 * count_include_pad (0) and padding, Sigmoid, Mul by the per-channel GlobalAveragePool scale,
 * HardSigmoid, Mul(x, HardSigmoid(x)) (hswish), Sum of 3, Concat, GlobalAveragePool, Flatten,
 * Gemm transB=1, Dropout, Identity. Input 1x10x10, 4 classes. */
static uint8_t *foreign_plain(size_t *len) {
    Fg f = {{0}};
    Rng r;
    rng_seed(&r, 8);
    Pb a = {0};
    int64_t in_dims[4] = {-1, 1, 10, 10}, out_dims[2] = {-1, 4};
    fg_io(&f, 11, "image", in_dims, 4);
    int64_t w1[4] = {6, 1, 3, 3}, c6[1] = {6}, gw[2] = {4, 12}, g4[1] = {4};
    fg_init_rand(&f, "w1", w1, 4, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "b1", c6, 1, -0.2f, 0.2f, &r);
    fg_init_rand(&f, "fc.w", gw, 2, -0.5f, 0.5f, &r);
    fg_init_rand(&f, "fc.b", g4, 1, -0.5f, 0.5f, &r);
    int64_t s0[1] = {0}, s2[1] = {2}, hw[2] = {15, 15};
    fg_init_i64(&f, "start", s0, 1);
    fg_init_i64(&f, "end", s2, 1);
    fg_init_i64(&f, "hw", hw, 2);
    fg_node(&f, "Shape", "shape", "image", "sh", NULL);
    fg_node(&f, "Slice", "slice", "sh,start,end", "nc", NULL);
    at_int(&a, "axis", 0);
    fg_node(&f, "Concat", "sizes", "nc,hw", "sz", &a);
    at_str(&a, "mode", "linear");
    at_str(&a, "coordinate_transformation_mode", "pytorch_half_pixel");
    fg_node(&f, "Resize", "up", "image,,,sz", "r", &a);
    int64_t k3[2] = {3, 3}, k2[2] = {2, 2}, p1[4] = {1, 1, 1, 1}, s22[2] = {2, 2};
    at_ints(&a, "kernel_shape", k3, 2);
    fg_node(&f, "Conv", "conv", "r,w1,b1", "c", &a); /* 13x13 */
    at_ints(&a, "kernel_shape", k3, 2);
    at_ints(&a, "strides", s22, 2);
    at_int(&a, "ceil_mode", 1);
    fg_node(&f, "MaxPool", "mp", "c", "m", &a); /* (13-3)/2+1 = 6 either way */
    at_ints(&a, "kernel_shape", k3, 2);
    at_ints(&a, "pads", p1, 4);
    fg_node(&f, "AveragePool", "ap", "m", "p", &a); /* stride 1: 6x6, border windows average fewer cells */
    fg_node(&f, "GlobalAveragePool", "se_pool", "p", "sp", NULL);
    fg_node(&f, "Sigmoid", "se_sig", "sp", "ss", NULL);
    fg_node(&f, "Mul", "se_mul", "p,ss", "q", NULL);
    at_float(&a, "alpha", 1.0f / 6.0f);
    fg_node(&f, "HardSigmoid", "hsig", "q", "hq", &a);
    fg_node(&f, "Mul", "hswish", "hq,q", "u", NULL);
    fg_node(&f, "Sum", "sum3", "u,q,p", "v", NULL);
    at_ints(&a, "kernel_shape", k2, 2);
    at_ints(&a, "strides", s22, 2);
    fg_node(&f, "MaxPool", "mp2", "v", "v2", &a);
    at_int(&a, "axis", 1);
    fg_node(&f, "Concat", "cat", "v2,v2", "cc", &a);
    fg_node(&f, "GlobalAveragePool", "gap", "cc", "g", NULL);
    fg_node(&f, "Flatten", "flat", "g", "fl", NULL);
    at_int(&a, "transB", 1);
    fg_node(&f, "Gemm", "fc", "fl,fc.w,fc.b", "y", &a);
    fg_node(&f, "Dropout", "drop", "y", "y2", NULL);
    fg_node(&f, "Identity", "ident", "y2", "logits", NULL);
    fg_io(&f, 12, "logits", out_dims, 2);
    return fg_model(&f, 13, len);
}

/* A one-node graph: op on x (1x4x4) with the given attributes, output "y" (N, 16). */
static uint8_t *foreign_one(const char *op, Pb *attrs, int opset, size_t *len) {
    Fg f = {{0}};
    int64_t in_dims[4] = {-1, 1, 4, 4}, out_dims[2] = {-1, 16};
    fg_io(&f, 11, "x", in_dims, 4);
    fg_node(&f, op, "the_node", "x", "t", attrs);
    fg_node(&f, "Flatten", "flat", "t", "y", NULL);
    fg_io(&f, 12, "y", out_dims, 2);
    return fg_model(&f, opset, len);
}

/* ------------------------------------------------------------------ in-process tests */
static void check_roundtrip(const Case *k) {
    Net net, back;
    case_build(k, &net);
    Norm nm = case_norm(k), nb;
    uint8_t *buf;
    size_t len;
    Err e = {{0}};
    CHECK(onnx_export(&net, &nm, &buf, &len, &e) == NASC_OK, "%s: export: %s", k->name, e.msg);
    int rc = onnx_import(buf, len, &back, &nb, &e);
    CHECK(rc == NASC_OK, "%s: import(export): %s", k->name, e.msg);
    free(buf);
    if (rc != NASC_OK) {
        net_free(&net);
        return;
    }
    CHECK(back.in_c == net.in_c && back.in_h == net.in_h && back.in_w == net.in_w && back.classes == net.classes,
          "%s: shape %dx%dx%d/%d came back as %dx%dx%d/%d", k->name, net.in_c, net.in_h, net.in_w, net.classes,
          back.in_c, back.in_h, back.in_w, back.classes);
    CHECK(nb.nchan == nm.nchan, "%s: normalization channels %d, want %d", k->name, nb.nchan, nm.nchan);
    for (int j = 0; j < nm.nchan && j < nb.nchan; j++)
        CHECK(nb.mean[j] == nm.mean[j] && nb.std[j] == nm.std[j], "%s: normalization channel %d", k->name, j);
    CHECK(back.nparams == net.nparams, "%s: %zu parameters came back as %zu", k->name, net.nparams, back.nparams);
    size_t nin = (size_t)BATCH * net.in_c * net.in_h * net.in_w;
    float *x = random_input((int)nin, 5);
    const float *y0 = net_forward(&net, x, BATCH, 0);
    const float *y1 = net_forward(&back, x, BATCH, 0);
    double d = rel_diff(y1, y0, (size_t)BATCH * net.classes);
    CHECK(d <= 1e-5, "%s: import(export(m)) differs from m by %.3g (relative)", k->name, d);
    printf("  %-10s %4d nodes -> %4d nodes, %zu params, import(export(m)) vs m: max rel diff %.2e\n", k->name,
           net.spec.n, back.spec.n, net.nparams, d);
    free(x);
    net_free(&net);
    net_free(&back);
}

/* The int8 form: export_qnet(q) passes the protobuf round trip, and imports (as the float
 * network q approximates: dequantized weights, BN folded) with outputs close to q's. */
static void check_int8(const Case *k) {
    Net net, back;
    case_build(k, &net);
    Norm nm = case_norm(k), nb;
    Err e = {{0}};
    QNet q;
    int ncal = 16, nin = net.in_c * net.in_h * net.in_w;
    float *cal = random_input(ncal * nin, 300);
    int rc = quant_ptq(&q, &net, cal, ncal, NULL, &e);
    CHECK(rc == NASC_OK, "%s: quant_ptq: %s", k->name, e.msg);
    free(cal);
    if (rc != NASC_OK) {
        net_free(&net);
        return;
    }
    uint8_t *buf;
    size_t len;
    CHECK(onnx_export_qnet(&q, &nm, &buf, &len, &e) == NASC_OK, "%s: int8 export: %s", k->name, e.msg);
    rc = onnx_import(buf, len, &back, &nb, &e);
    CHECK(rc == NASC_OK, "%s: import(export(int8)): %s", k->name, e.msg);
    if (rc == NASC_OK) {
        float *x = random_input(BATCH * nin, 6), *ql = xmalloc((size_t)BATCH * net.classes * sizeof *ql);
        qnet_forward(&q, x, BATCH, ql);
        const float *y = net_forward(&back, x, BATCH, 0);
        double d = rel_diff(y, ql, (size_t)BATCH * net.classes);
        CHECK(back.classes == net.classes && nb.nchan == nm.nchan && d < 0.2,
              "%s: import(export(int8)) vs int8: %.3g relative", k->name, d);
        printf("  %-10s int8 ONNX %zu bytes; imported as fp32 (%d nodes), vs the int8 net: max rel diff %.2e\n",
               k->name, len, back.spec.n, d);
        free(x);
        free(ql);
        net_free(&back);
    }
    free(buf);
    qnet_free(&q);
    net_free(&net);
}

static void expect_import_error(const uint8_t *buf, size_t len, const char *want, const char *what) {
    Net net;
    Norm nm;
    Err e = {{0}};
    int rc = onnx_import(buf, len, &net, &nm, &e);
    CHECK(rc == NASC_ERR, "%s: import should fail", what);
    if (rc == NASC_OK) net_free(&net);
    else CHECK(strstr(e.msg, want) != NULL, "%s: message '%s' lacks '%s'", what, e.msg, want);
}

static void check_foreign(void) {
    size_t len;
    uint8_t *buf = foreign_torchlike(&len);
    Net net;
    Norm nm;
    Err e = {{0}};
    int rc = onnx_import(buf, len, &net, &nm, &e);
    CHECK(rc == NASC_OK, "torch-like graph: %s", e.msg);
    if (rc == NASC_OK) {
        char *s = spec_print(&net.spec);
        CHECK(strstr(s, "relu6") && strstr(s, "hswish") && strstr(s, "gap") && strstr(s, "g=8"),
              "torch-like graph imports as %s", s);
        CHECK(net.classes == 5 && net.in_c == 3 && nm.nchan == 0, "torch-like: %d classes, %d channels, norm %d",
              net.classes, net.in_c, nm.nchan);
        free(s);
        net_free(&net);
    }
    free(buf);
    buf = foreign_plain(&len);
    rc = onnx_import(buf, len, &net, &nm, &e);
    CHECK(rc == NASC_OK, "plain-forms graph: %s", e.msg);
    if (rc == NASC_OK) {
        char *s = spec_print(&net.spec);
        CHECK(strstr(s, "resize(s=15)") && strstr(s, "cip=0") && strstr(s, "mul(") && strstr(s, "hswish") &&
                  strstr(s, "concat") && !strstr(s, "hsigmoid"),
              "plain-forms graph imports as %s", s);
        free(s);
        net_free(&net);
    }
    free(buf);

    /* Unsupported ops and attributes name the node. */
    Pb a = {0};
    buf = foreign_one("LeakyRelu", NULL, 13, &len);
    expect_import_error(buf, len, "node the_node (LeakyRelu): op type 'LeakyRelu' is not supported (supported: Conv",
                        "LeakyRelu");
    free(buf);
    at_float(&a, "alpha", 0.2f);
    buf = foreign_one("HardSigmoid", &a, 13, &len);
    expect_import_error(buf, len, "HardSigmoid(alpha=0.2, beta=0.5) is not supported", "HardSigmoid 0.2");
    free(buf);
    int64_t k2[2] = {2, 2}, k23[2] = {2, 3};
    at_ints(&a, "kernel_shape", k23, 2);
    buf = foreign_one("MaxPool", &a, 13, &len);
    expect_import_error(buf, len, "must have equal values", "MaxPool 2x3");
    free(buf);
    at_ints(&a, "kernel_shape", k2, 2);
    at_int(&a, "ceil_mode", 1);
    at_ints(&a, "strides", k23, 2);
    buf = foreign_one("MaxPool", &a, 13, &len);
    expect_import_error(buf, len, "strides", "MaxPool strides 2x3");
    free(buf);
    buf = foreign_one("Relu", NULL, 13, &len);
    Net ok;
    rc = onnx_import(buf, len, &ok, &nm, &e);
    CHECK(rc == NASC_OK, "one Relu: %s", e.msg);
    if (rc == NASC_OK) net_free(&ok);
    /* Malformed: truncated, non-ONNX, a nasc model file, a tensor whose data is short. */
    expect_import_error(buf, len / 2, "not an ONNX model", "half a file");
    expect_import_error((const uint8_t *)"hello, world\n", 13, "not an ONNX model", "text");
    expect_import_error((const uint8_t *)"", 0, "not an ONNX model", "empty");
    expect_import_error((const uint8_t *)"NASCMDL\0\1\0\0\0", 12, "nasc model file", "nasc model");
    free(buf);
    {
        Fg f = {{0}};
        int64_t in_dims[4] = {-1, 1, 4, 4}, out_dims[2] = {-1, 2}, wd[2] = {2, 16};
        float w[31] = {0};
        fg_io(&f, 11, "x", in_dims, 4);
        Pb t = {0};
        tensor_pb(&t, "w", 1, wd, 2, w, sizeof w); /* 31 floats for 32 */
        pb_sub(&f.g, 5, &t);
        fg_node(&f, "Flatten", "flat", "x", "fl", NULL);
        at_int(&a, "transB", 1);
        fg_node(&f, "Gemm", "fc", "fl,w", "y", &a);
        fg_io(&f, 12, "y", out_dims, 2);
        buf = fg_model(&f, 13, &len);
        expect_import_error(buf, len, "tensor 'w': its data does not match its shape", "short tensor");
        free(buf);
    }
    {
        Fg f = {{0}};
        int64_t in_dims[4] = {-1, 1, -1, 4}, out_dims[2] = {-1, 16};
        fg_io(&f, 11, "x", in_dims, 4);
        fg_node(&f, "Flatten", "flat", "x", "y", NULL);
        fg_io(&f, 12, "y", out_dims, 2);
        buf = fg_model(&f, 13, &len);
        expect_import_error(buf, len, "must have known C, H and W", "dynamic H");
        free(buf);
    }
}

/* Truncations and corruptions of an exported model: an error or a valid net, never a crash. */
static void check_fuzz(void) {
    Net net, back;
    case_build(&cases[8], &net); /* every op */
    Norm nm = case_norm(&cases[8]), nb;
    uint8_t *buf;
    size_t len;
    Err e;
    CHECK(onnx_export(&net, &nm, &buf, &len, &e) == NASC_OK, "export: %s", e.msg);
    int refused = 0, accepted = 0;
    size_t step = len / 400 + 1;
    for (size_t n = 0; n < len; n += step) {
        if (onnx_import(buf, n, &back, &nb, &e) == NASC_OK) accepted++, net_free(&back);
        else refused++;
    }
    CHECK(refused > 0, "truncations: none refused");
    uint8_t *mut = xmalloc(len);
    Rng r;
    rng_seed(&r, 99);
    float *x = random_input(net.in_c * net.in_h * net.in_w, 3);
    for (int t = 0; t < 600; t++) {
        memcpy(mut, buf, len);
        int flips = 1 + (int)rng_below(&r, 4);
        for (int j = 0; j < flips; j++) {
            size_t at = rng_below(&r, (uint32_t)len);
            mut[at] = t % 3 == 0 ? (uint8_t)rng_below(&r, 256) : (uint8_t)(mut[at] ^ (1u << rng_below(&r, 8)));
        }
        if (onnx_import(mut, len, &back, &nb, &e) == NASC_OK) {
            accepted++;
            net_forward(&back, x, 1, 0); /* whatever it computes, it must run */
            net_free(&back);
        } else {
            refused++;
        }
    }
    printf("  fuzz: %d corrupted or truncated files refused with a message, %d still valid\n", refused, accepted);
    free(x);
    free(mut);
    free(buf);
    net_free(&net);
}

/* ------------------------------------------------------------------ helper modes */
static int mode_make(const char *dir, int batch) {
    char path[1024];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *list = fopen(path, "w");
    if (!list) die(path, "cannot write");
    Err e;
    for (int i = 0; i < NCASES; i++) {
        const Case *k = &cases[i];
        Net net;
        case_build(k, &net);
        Norm nm = case_norm(k);
        snprintf(path, sizeof path, "%s/%s.nasc", dir, k->name);
        if (model_save(path, &net, &nm, &e) != NASC_OK) die(path, e.msg);
        int n = batch * net.in_c * net.in_h * net.in_w;
        float *x = random_input(n, 100 + (uint64_t)i);
        int in_dims[4] = {batch, net.in_c, net.in_h, net.in_w}, out_dims[2] = {batch, net.classes};
        snprintf(path, sizeof path, "%s/%s.in.bin", dir, k->name);
        tensor_write(path, x, in_dims, 4);
        const float *y = net_forward(&net, x, batch, 0);
        snprintf(path, sizeof path, "%s/%s.ref.bin", dir, k->name);
        tensor_write(path, y, out_dims, 2);
        fprintf(list, "%s nasc\n", k->name);
        QNet q;
        int ncal = 16;
        float *cal = random_input(ncal * net.in_c * net.in_h * net.in_w, 300 + (uint64_t)i);
        if (quant_ptq(&q, &net, cal, ncal, NULL, &e) != NASC_OK) die(k->name, e.msg);
        snprintf(path, sizeof path, "%s/%s.q8.nasc", dir, k->name);
        if (qmodel_save(path, &q, &nm, &e) != NASC_OK) die(path, e.msg);
        float *ql = xmalloc((size_t)batch * net.classes * sizeof *ql);
        qnet_forward(&q, x, batch, ql);
        snprintf(path, sizeof path, "%s/%s.q8.ref.bin", dir, k->name);
        tensor_write(path, ql, out_dims, 2);
        snprintf(path, sizeof path, "%s/%s.q8.in.bin", dir, k->name);
        tensor_write(path, x, in_dims, 4);
        fprintf(list, "%s.q8 int8 %.9g\n", k->name, qnet_out_scale(&q));
        free(ql);
        free(cal);
        qnet_free(&q);
        free(x);
        net_free(&net);
    }
    struct {
        const char *name;
        uint8_t *(*make)(size_t *);
        int c, hw;
    } foreign[] = {{"torchlike", foreign_torchlike, 3, 12}, {"plainforms", foreign_plain, 1, 10}};
    for (int i = 0; i < 2; i++) {
        size_t len;
        uint8_t *buf = foreign[i].make(&len);
        snprintf(path, sizeof path, "%s/%s.onnx", dir, foreign[i].name);
        if (file_write_atomic(path, buf, len, &e) != NASC_OK) die(path, e.msg);
        free(buf);
        int dims[4] = {batch, foreign[i].c, foreign[i].hw, foreign[i].hw};
        float *x = random_input(batch * foreign[i].c * foreign[i].hw * foreign[i].hw, 200 + (uint64_t)i);
        snprintf(path, sizeof path, "%s/%s.in.bin", dir, foreign[i].name);
        tensor_write(path, x, dims, 4);
        free(x);
        fprintf(list, "%s foreign\n", foreign[i].name);
    }
    { /* not a case: a graph with an op nasc does not have, for the CLI's error test */
        size_t len;
        uint8_t *buf = foreign_one("LeakyRelu", NULL, 13, &len);
        snprintf(path, sizeof path, "%s/bad_leakyrelu.onnx", dir);
        if (file_write_atomic(path, buf, len, &e) != NASC_OK) die(path, e.msg);
        free(buf);
    }
    fclose(list);
    return 0;
}

/* fp32 or int8 model files (the int8 net's logits dequantized). */
static int mode_predict(const char *model, const char *in, const char *out) {
    Norm nm;
    Err e;
    int dims[4], nd;
    size_t n;
    float *x = tensor_read(in, dims, &nd, &n);
    if (qmodel_probe(model) == QMODEL_INT8) {
        QNet q;
        if (qmodel_load(model, &q, &nm, &e) != NASC_OK) die(model, e.msg);
        if (nd != 4 || dims[1] != q.in_c || dims[2] != q.in_h || dims[3] != q.in_w) die(in, "does not fit the model");
        float *y = xmalloc((size_t)dims[0] * q.classes * sizeof *y);
        qnet_forward(&q, x, dims[0], y);
        int od[2] = {dims[0], q.classes};
        tensor_write(out, y, od, 2);
        free(y);
        qnet_free(&q);
    } else {
        Net net;
        if (model_load(model, &net, &nm, &e) != NASC_OK) die(model, e.msg);
        if (nd != 4 || dims[1] != net.in_c || dims[2] != net.in_h || dims[3] != net.in_w) die(in, "does not fit the model");
        const float *y = net_forward(&net, x, dims[0], 0);
        int od[2] = {dims[0], net.classes};
        tensor_write(out, y, od, 2);
        net_free(&net);
    }
    free(x);
    return 0;
}

static int mode_compare(const char *got, const char *want, double tol, const char *name) {
    int d1[4], d2[4], n1, n2;
    size_t c1, c2;
    float *a = tensor_read(got, d1, &n1, &c1), *b = tensor_read(want, d2, &n2, &c2);
    if (n1 != n2 || c1 != c2 || memcmp(d1, d2, (size_t)n1 * sizeof(int))) {
        fprintf(stderr, "%s: shapes differ (%zu vs %zu values)\n", name, c1, c2);
        return 1;
    }
    double d = rel_diff(a, b, c1), ss = 0;
    for (size_t i = 0; i < c1; i++) ss += (double)b[i] * b[i];
    printf("%s: max rel diff %.3g (tol %.3g; reference rms %.3g)\n", name, d, tol, sqrt(ss / (double)(c1 ? c1 : 1)));
    free(a);
    free(b);
    return d <= tol ? 0 : 1;
}

static int mode_compare_q(const char *got, const char *want, double step, const char *name) {
    int d1[4], d2[4], n1, n2;
    size_t c1, c2;
    float *a = tensor_read(got, d1, &n1, &c1), *b = tensor_read(want, d2, &n2, &c2);
    if (n1 != n2 || c1 != c2 || memcmp(d1, d2, (size_t)n1 * sizeof(int)) || !(step > 0)) {
        fprintf(stderr, "%s: shapes differ (%zu vs %zu values) or bad step\n", name, c1, c2);
        return 1;
    }
    double worst = 0;
    size_t equal = 0, beyond = 0;
    for (size_t i = 0; i < c1; i++) {
        double d = fabs((double)a[i] - b[i]) / step;
        if (isnan(d)) d = INFINITY;
        worst = fmax(worst, d);
        equal += d < 1e-3;
        beyond += d > 1.001;
    }
    printf("%s: int8 logits: max difference %.3g steps, %zu of %zu equal, %zu beyond one step\n", name, worst, equal,
           c1, beyond);
    free(a);
    free(b);
    return worst <= 1.001 ? 0 : 1;
}

int main(int argc, char **argv) {
    threads_set(1); /* small nets, a shared machine: no thread team to wait for */
    if ((argc == 3 || argc == 4) && !strcmp(argv[1], "--make"))
        return mode_make(argv[2], argc == 4 ? NASC_MAX(1, NASC_MIN(atoi(argv[3]), 4096)) : BATCH);
    if (argc == 5 && !strcmp(argv[1], "--predict")) return mode_predict(argv[2], argv[3], argv[4]);
    if (argc == 6 && !strcmp(argv[1], "--compare")) return mode_compare(argv[2], argv[3], atof(argv[4]), argv[5]);
    if (argc == 6 && !strcmp(argv[1], "--compare-q")) return mode_compare_q(argv[2], argv[3], atof(argv[4]), argv[5]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_export [--make DIR [BATCH] | --predict MODEL IN OUT | --compare GOT WANT TOL NAME |\n"
                        "                    --compare-q GOT WANT STEP NAME]\n");
        return 2;
    }
    for (int i = 0; i < NCASES; i++) check_roundtrip(&cases[i]);
    for (int i = 0; i < NCASES; i++) check_int8(&cases[i]);
    check_foreign();
    check_fuzz();
    return check_summary("test_export");
}
