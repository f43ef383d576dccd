/* quant.h: int8 post-training quantization, the int8 network (QNet) and its executor, and the
 * int8 model file.
 *
 * The numeric format is qops.h's (per-tensor asymmetric int8 activations, per-output-channel
 * symmetric int8 weights, int32 biases, requantization by (mult, shift): float output scales for
 * convolutions, as in ONNX Runtime, integer multipliers elsewhere). This
 * header adds how a float network becomes one:
 *
 *   1. Ranges: every tensor that becomes int8 (the network input and the values listed below)
 *      gets a float range [lo, hi], from calibration (quant_calibrate: min/max, percentile or
 *      MSE over a histogram of a sample of training images) or from QAT's own observers.
 *      QRanges is a plain array indexed like the tape: [0] is the input, [k + 1] is node k.
 *   2. Lowering (qnet_build), from the Net's own tape, node indices kept:
 *        - a BN reading a conv/linear output that nothing else reads is folded into it
 *          (weights and bias; BN's node is marked absorbed);
 *        - a ReLU/ReLU6 reading the output of a conv/linear (BN folded or not), of a BN or of
 *          an add, that nothing else reads, becomes that op's output clamp (absorbed);
 *        - any other BN is a per-channel int8 affine op, run as a depthwise 1x1 conv whose
 *          weight is +-127 or 0 (sign of gamma / sqrt(var + eps)), with an int32 bias;
 *        - other ReLU/ReLU6, hswish, sigmoid and hsigmoid are 256-entry lookup tables;
 *        - max pool keeps its input's (scale, zp); avg pool / gap sum then requantize (one
 *          multiplier per divisor, so count_include_pad=0 borders are exact); add requantizes
 *          every input to the output scale and rounds once; concat requantizes each input;
 *          mul (SE) multiplies integers and requantizes; resize is fixed-point bilinear
 *          (qops.h states each kernel's integer definition);
 *        - zero is a constant (zero point 0, its input's scale), id and dropout alias their
 *          input (same buffer, same quantization).
 *      Each executed node's output is one int8 value whose (scale, zp) comes from the range
 *      of the last node of its chain (a conv's value is its fused ReLU's output).
 *   3. Execution (qnet_forward): quantize the normalized float input, run the executed nodes
 *      in tape order with the fast kernels (qconv2d and qelem.c's) or the reference ones,
 *      dequantize the logits. No float in between, no allocation once the buffers are sized.
 *
 * Formulas that QAT's fake quantization must mirror (quant_act_params, quant_weight_scales):
 *   activations, from a range [lo, hi] (floats):
 *       lo' = min(lo, 0), hi' = max(hi, 0)                       (0.0 is always in range)
 *       scale = max((hi' - lo') / 255, QUANT_MIN_SCALE)           (float arithmetic)
 *       zp = clamp(-128 - (int)nearbyintf(lo' / scale), -128, 127)
 *       q = clamp(nearbyintf(x * (1.0f / scale)) + zp, -128, 127), x' = scale * (q - zp)
 *     so 0.0 is exactly q = zp. nearbyintf rounds half to even (PyTorch's fake quantization).
 *   weights, per output channel c of a conv/linear (after BN folding):
 *       wscale[c] = max_i |w[c][i]| / 127  (float; 1.0 when the channel is all zero)
 *       q = clamp(nearbyintf(w * (1.0f / wscale[c])), -127, 127), w' = wscale[c] * q
 *   BN folding (double precision, eps = QUANT_BN_EPS as in net.c):
 *       s = gamma / sqrt(var + eps), w' = w * s, b' = (b - mean) * s + beta   (b = 0 if none)
 *   bias: round(b' / (x_scale * wscale[c])), clamped to +-2^30.
 */
#ifndef NASC_QUANT_H
#define NASC_QUANT_H

#include "../cost/cost.h"
#include "../data/data.h"
#include "../net/net.h"
#include "../ops/qops.h"

#define QUANT_MIN_SCALE 1.1920929e-07f /* FLT_EPSILON, PyTorch's observers' floor */
#define QUANT_BN_EPS 1e-5f

/* ------------------------------------------------------------------ formats (quant.c) */
/* Activation (scale, zp) from a float range, as above. */
void quant_act_params(float lo, float hi, float *scale, int32_t *zp);
/* Per-channel symmetric weight scales: wscale (cout) from w (cout, per) as above. */
void quant_weight_scales(float *wscale, const float *w, int cout, size_t per);
/* q (cout, per) = the int8 weights for those scales. */
void quant_weights(int8_t *q, const float *w, const float *wscale, int cout, size_t per);
/* (mult, shift) for a real multiplier r >= 0 via q_multiplier, with r capped at 2^24 (a
 * larger ratio saturates every non-zero input anyway). */
void quant_multiplier(double r, int32_t *mult, int8_t *shift);

/* ------------------------------------------------------------------ ranges and calibration */
typedef struct {
    int n;     /* spec nodes; lo/hi have n + 1 entries */
    float *lo; /* (n + 1): [0] the network input, [k + 1] node k */
    float *hi; /* (n + 1) */
} QRanges;

void qranges_init(QRanges *r, int nnodes);
void qranges_free(QRanges *r);

typedef enum { QCAL_MINMAX, QCAL_PERCENTILE, QCAL_MSE, QCAL_COUNT } QCalibMethod;
const char *qcalib_name(QCalibMethod m);
/* "minmax", "percentile", "mse" -> method; NASC_ERR with a message otherwise. */
int qcalib_parse(const char *name, QCalibMethod *m, Err *e);

typedef struct {
    QCalibMethod method;
    double percentile; /* QCAL_PERCENTILE: kept mass per tail, in percent (default 99.99) */
    int bins;          /* histogram bins for percentile/mse (default 2048) */
    int batch;         /* forward batch (default 32) */
} QCalibConfig;

/* Which ranges qnet_build reads: mask (n + 1), indexed like QRanges, 1 for the input and for
 * each node whose output is an int8 value with its own quantization. */
void quant_tensor_mask(const Net *net, uint8_t *mask);

/* Runs the fp32 net (eval mode) on x (n, in_c, in_h, in_w), already normalized, and fills r
 * (initialized here, free with qranges_free) with the range of every masked tensor by the
 * method (min/max: the extremes; percentile: both tails cut at the percentile of a histogram;
 * mse: the clip range minimizing the expected squared quantization error over the histogram,
 * clipping error outside plus step^2/12 inside). Unmasked entries are 0. cfg may be NULL.
 * NASC_ERR with a message if the net produces NaN or infinity. Overwrites the net's
 * activations. */
int quant_calibrate(Net *net, const float *x, int n, const QCalibConfig *cfg, QRanges *r, Err *e);

/* n images of d drawn without replacement (seeded), normalized with mean/std as the loader
 * does: returns (n, c, h, w) floats, caller frees. n is capped at d->n (in *n). */
float *quant_calib_images(const Dataset *d, int *n, const float *mean, const float *std, uint64_t seed);

/* ------------------------------------------------------------------ the int8 network (qnet.c) */
typedef enum {
    QX_NONE,    /* absorbed into the node executing its chain (folded BN, fused ReLU/ReLU6) */
    QX_ALIAS,   /* id, dropout: its input's value */
    QX_CONV,    /* conv, linear (1x1 conv on (N, in, 1, 1)), unfolded BN (depthwise 1x1) */
    QX_LUT,     /* relu, relu6 (not fused), hswish, sigmoid, hsigmoid */
    QX_MAXPOOL,
    QX_AVGPOOL,
    QX_GAP,
    QX_ADD,
    QX_CONCAT,
    QX_MUL,
    QX_ZERO,
    QX_RESIZE,
    QX_COUNT
} QExecKind;
const char *qexec_name(QExecKind k);

typedef struct {
    uint8_t kind;    /* QExecKind */
    int head;        /* the node that executes this one (itself unless absorbed) */
    int tail;        /* executed nodes: the node whose value the chain produces */
    int bn;          /* QX_CONV heads of a conv/linear: the folded BN node, or -1 */
    int act;         /* QX_CONV and QX_ADD heads: the fused ReLU/ReLU6 node, or -1 */
    int32_t y_min, y_max; /* output clamp (a fused ReLU: [zp, 127]) */
    QConvArgs ca;    /* QX_CONV: shapes (d.n unused), zero points, clamp */
    PoolDims pd;     /* pools: shapes (n unused) */
    /* The payload (views into QNet.payload; counts fixed by the op and shapes): */
    uint32_t nw, nbias, nmult, nshift, nwscale, nlut;
    int8_t *w;       /* QX_CONV: (cout, cin/g, k, k) */
    int32_t *bias;   /* QX_CONV: (cout) or NULL (no bias and no folded BN) */
    int32_t *mult;   /* (nmult): per channel, per divisor, per input, or one */
    int8_t *shift;   /* (nshift) */
    float *wscale;   /* QX_CONV: (cout) weight scales (for dequantizing and export) */
    int8_t *lut;     /* QX_LUT: (256), indexed by q + 128 */
    QConvPacked *packed; /* QX_CONV: the fast path's packed form */
} QNode;

typedef struct {
    Spec spec;                /* the tape, shapes filled (as net_build leaves them) */
    int in_c, in_h, in_w, classes;
    size_t params;            /* the float spec's trainable parameters (net_param_count) */
    double macs;              /* conv/linear MACs per sample (net_macs) */
    QNode *nodes;             /* (spec.n) */
    float *scale;             /* (spec.n + 1): value scales, [0] the input, [k + 1] node k */
    int32_t *zp;              /* (spec.n + 1) */
    void *payload;            /* the one block behind every node's payload */
    size_t payload_bytes;     /* bytes of weights, biases, scales, multipliers, LUTs */
    size_t table_bytes;       /* bytes of the (scale, zp) table: 8 per quantized tensor */
    int qtensors;             /* quantized tensors (the table's entries) */
    /* Activation buffers for batch_cap samples (grown by the forward; batch 1 reuses them). */
    int batch_cap;
    int8_t *arena;
    int8_t **val;             /* (spec.n + 1): value pointers; aliases point at their source */
} QNet;

/* The lowering of net with the ranges r (quant_tensor_mask says which entries are read).
 * Weights, BN statistics and biases are read from net (eval mode). NASC_ERR with a message
 * when a needed range is not finite or lo > hi. Free with qnet_free. */
int qnet_build(QNet *q, const Net *net, const QRanges *r, Err *e);
void qnet_free(QNet *q);

/* Forward a batch x (n, in_c, in_h, in_w), normalized float, into logits (n, classes),
 * dequantized; fast kernels, threads_get() threads. */
void qnet_forward(QNet *q, const float *x, int n, float *logits);
/* The int8 level: x (n, in_c, in_h, in_w) quantized with the input's (scale, zp) (q->scale[0],
 * q->zp[0]) -> y (n, classes) with the output's (qnet_out_scale, qnet_out_zp). ref = 1 runs
 * the reference kernels (qconv2d_ref, qelem's *_ref), ref = 0 the fast ones; both give the
 * same bits. */
void qnet_forward_int8(QNet *q, const int8_t *x, int n, int8_t *y, int ref);
float qnet_out_scale(const QNet *q);
int32_t qnet_out_zp(const QNet *q);
/* The value index (0 = input, k + 1 = node k) holding node k's output; -1 for an absorbed
 * node that is not the end of its chain. */
int qnet_value(const QNet *q, int k);
/* Int8 weights and int32 biases held (the stored parameters). */
size_t qnet_weight_count(const QNet *q);

/* ------------------------------------------------------------------ the whole path (quant.c) */
/* Calibrate net on x (n images, normalized) with cfg, then lower: q is ready to run. */
int quant_ptq(QNet *q, Net *net, const float *x, int n, const QCalibConfig *cfg, Err *e);
/* Accuracy of the int8 net on idx[0..n) of d (all of d when idx is NULL), inputs normalized
 * with mean/std. */
double quant_evaluate(QNet *q, const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                      int batch);
/* Measured batch-1 latency of qnet_forward (float in, float logits out), as latency_measure
 * does for fp32 (cfg may be NULL). */
void qnet_latency(QNet *q, const LatencyConfig *cfg, LatencyStats *out);

/* ------------------------------------------------------------------ int8 model files (qmodel.c) */
typedef enum { QMODEL_NONE, QMODEL_FP32, QMODEL_INT8 } QModelKind;
/* What a path holds, by its magic number: an fp32 model (NASCMDL), an int8 model (NASCQ8) or
 * neither (unreadable, too short, anything else). */
QModelKind qmodel_probe(const char *path);
/* Writes q (and the input normalization) atomically. */
int qmodel_save(const char *path, const QNet *q, const Norm *norm, Err *e);
/* Loads and checks an int8 model (size, magic, version, checksum, every count and value);
 * an fp32 model file is refused with a message saying how to make an int8 one. */
int qmodel_load(const char *path, QNet *q, Norm *norm, Err *e);

#endif
