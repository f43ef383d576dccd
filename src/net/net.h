/* net.h: networks as data. A spec (text) parses into a list of nodes; binding the nodes to
 * an input shape and a class count gives a Net: one tape in execution order, whose
 * parameters, gradients and BN statistics each live in one contiguous buffer.
 *
 * Spec language (see spec.c for the grammar):
 *     conv(c=16,k=3); bn; a=relu; conv(c=16,k=3); bn; add(_, a); relu; gap; linear
 *   - statements are separated by ';' or newlines; '#' starts a comment;
 *   - `name=` names a statement's output; `input` is the network input and `_` the
 *     previous statement's output; a call with no tensor arguments takes `_`;
 *   - attributes are key=value: c (out channels), k, s, p, d, g, bias, cip, p (dropout);
 *   - NB201 cells are written in NB201's notation: `nb201:|nor_conv_3x3~0|+|...|`.
 * Printing gives one canonical text; parse(print(net)) prints the same text again.
 */
#ifndef NASC_NET_H
#define NASC_NET_H

#include "../core/common.h"

typedef enum {
    OP_CONV,     /* conv2d: c, k, s, p, d, g, bias */
    OP_BN,       /* batch norm 2d (or 1d on (N, C) inputs) */
    OP_RELU,
    OP_RELU6,
    OP_HSWISH,
    OP_SIGMOID,
    OP_HSIGMOID,
    OP_MAXPOOL,  /* k, s (default k), p */
    OP_AVGPOOL,  /* k, s (default k), p, cip (count_include_pad, default 1) */
    OP_GAP,      /* global average pool: (N, C, H, W) -> (N, C, 1, 1) */
    OP_LINEAR,   /* c (0 = the number of classes), bias (default 1); flattens its input */
    OP_ADD,      /* n-ary elementwise sum */
    OP_CONCAT,   /* n-ary channel concat */
    OP_MUL,      /* x (N, C, H, W) * s (N, C, 1, 1): squeeze-excitation scaling */
    OP_ZERO,     /* zeros shaped like the input (NB201's `none`) */
    OP_ID,       /* identity */
    OP_DROPOUT,  /* p */
    OP_RESIZE,   /* s: output size (square), bilinear like F.interpolate(align_corners=False) */
    OP_COUNT
} OpKind;

typedef struct {
    int c;        /* output channels / features */
    int k;        /* kernel size */
    int s;        /* stride */
    int p;        /* padding; -1 = "same" for stride 1: d*(k-1)/2 */
    int d;        /* dilation */
    int g;        /* groups */
    int bias;     /* has a bias */
    int cip;      /* avgpool count_include_pad */
    float drop;   /* dropout probability */
} OpAttr;

#define NODE_MAX_IN 16
#define NODE_NAME_MAX 32

typedef struct {
    OpKind op;
    OpAttr a;
    char name[NODE_NAME_MAX]; /* "" when the spec gave none */
    int nin;
    int in[NODE_MAX_IN];      /* input node indices; -1 = the network input */
    /* Filled by net_build: */
    int c, h, w;              /* output shape of one sample */
    size_t param_off, nparam; /* this node's parameters in Net.params */
    size_t buf_off, nbuf;     /* this node's running statistics in Net.buffers */
} Node;

/* A parsed spec: nodes in execution order, the last one is the output. */
typedef struct {
    Node *nodes;
    int n, cap;
    char *arch; /* the text it came from when that was a shorthand (e.g. "nb201:|...|"), else NULL */
} Spec;

typedef struct Net Net;
struct Net {
    Spec spec;
    int in_c, in_h, in_w, classes;
    float *params;  /* all trainable values, node by node */
    float *grads;   /* same layout as params */
    size_t nparams;
    float *buffers; /* BN running mean and var, node by node */
    size_t nbuffers;
    /* Activations for the current batch (owned, grown as needed). */
    int batch_cap;
    float **out;   /* out[i]: node i's output (batch, c, h, w) */
    float **dout;  /* dout[i]: gradient of the loss w.r.t. out[i] */
    void **saved;  /* per-node saved values for the backward */
    void *arena;    /* the one block behind out and saved */
    void *grad_arena; /* the block behind dout, laid out by each net_backward */
    size_t grad_cap;  /* its bytes */
    double *row_stats; /* a training forward's BN row sums (FUSE_STATS in net.c) */
    size_t row_stats_cap;
    const float *x; /* the current input */
    int batch;      /* the current batch size */
    int training;
    Rng rng;        /* for dropout */
    /* Set: net_forward stores every node's output. Unset (the default), a training forward
     * leaves out the output of a BN + ReLU/ReLU6 pair whose only consumer is a conv, which
     * makes it as it goes (FUSE_LAZY in net.c): callers that read intermediate outputs after a
     * training forward set it. */
    int store_outputs;
    /* Optional hooks (quantization-aware training, src/compress/qat.c), NULL when unused:
     * hook_fwd(ctx, net, -1) runs at the start of net_forward (it may replace net->x and the
     * weights) and hook_fwd(ctx, net, i) after node i's forward; hook_bwd(ctx, net, i) runs
     * before node i's backward (when dout[i] is complete) and hook_bwd(ctx, net, -1) at the
     * end of net_backward. Fusion is off while hooks are set, so every node's output
     * is materialized. Identity nodes (aliases) are not hooked. */
    void (*hook_fwd)(void *ctx, Net *net, int i);
    void (*hook_bwd)(void *ctx, Net *net, int i);
    void *hook_ctx;
};

/* ---- spec.c */
/* Parse spec text (or an NB201 string "nb201:|...|", expanded with `channels`/`cells`).
 * On error returns NASC_ERR with "line L, column C: ..." in *e. */
int spec_parse(Spec *out, const char *text, int channels, int cells, Err *e);
/* The canonical text of a spec (caller frees). One statement per node, ';' separated. */
char *spec_print(const Spec *s);
void spec_free(Spec *s);
/* Append a node; returns its index. */
int spec_add(Spec *s, OpKind op, OpAttr a, const int *in, int nin, const char *name);
OpAttr op_default_attr(OpKind op);
const char *op_name(OpKind op);

/* ---- nb201.c */
/* Expand an NB201 cell string into `out` (appending to an empty spec). */
int nb201_expand(Spec *out, const char *arch, int channels, int cells, Err *e);

/* ---- net.c */
/* Bind a spec (copied) to an input shape and class count: infers shapes, lays out params.
 * Parameters are zero; call net_init_params. */
int net_build(Net *net, const Spec *spec, int in_c, int in_h, int in_w, int classes, Err *e);
void net_free(Net *net);
/* PyTorch's default initialization (kaiming-uniform a=sqrt(5) for conv/linear weights,
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for biases, BN gamma 1 beta 0, running var 1 mean 0). */
void net_init_params(Net *net, uint64_t seed);
/* A well-normalized random network for tests and benchmarks: net_init_params(seed); with
 * bn_affine != 0 also random BN gammas (U(0.5, 1.5), a fifth of them negated) and betas
 * (N(0, 0.3^2)); then every BN's running mean and variance set to the batch statistics of one
 * training-mode pass over 16 N(0, 1) images. */
void net_randomize(Net *net, uint64_t seed, int bn_affine);
/* Forward a batch x (n, in_c, in_h, in_w); returns the logits (n, classes), owned by net.
 * training != 0: BN uses batch statistics and updates running ones, dropout is active. */
const float *net_forward(Net *net, const float *x, int n, int training);
/* Backward from dlogits (n, classes) of the last forward; ACCUMULATES into net->grads. */
void net_backward(Net *net, const float *dlogits);
void net_zero_grad(Net *net);
/* Run node i's forward alone, reading net->out[] of its inputs (net->x for the network input)
 * and writing net->out[i], with the current net->batch and net->training. For executors that
 * manage activation memory themselves (the peak-memory check, exporters): set net->x, batch,
 * training and the out[] pointers, then call this node by node in any topological order. An
 * identity node copies. Saved values (maxpool argmax, BN statistics) go to net->saved[i],
 * which exists once net_forward has run at a batch at least as large. */
void net_node_forward(Net *net, int i);
/* Counts: trainable parameters; multiply-accumulates of conv and linear layers per sample. */
size_t net_param_count(const Net *net);
double net_macs(const Net *net);

/* ---- zoo.c: named reference networks (small, resnet8, mbv2), as spec text. */
const char *zoo_lookup(const char *name);

/* ---- model.c: model files (spec + weights + BN statistics + normalization). */
typedef struct {
    int nchan;
    float mean[4], std[4];
} Norm;
int model_save(const char *path, const Net *net, const Norm *norm, Err *e);
/* Loads and builds the net. */
int model_load(const char *path, Net *net, Norm *norm, Err *e);

#endif
