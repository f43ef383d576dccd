/* qat.h: quantization-aware training. Fake quantization with a straight-through estimator,
 * plugged into the training engine through the Net's hooks (net.h), so that the ordinary
 * training loop (train_run, with distillation if wanted) trains a network that sees its int8
 * rounding:
 *   - conv and linear weights are replaced by their per-output-channel symmetric int8 values
 *     (max |w| / 127 scales, the same rule as post-training quantization; a BN folded into a
 *     conv later scales each output channel by a factor, which commutes with per-channel
 *     symmetric rounding, so the deployed weights are the ones trained here) for the forward
 *     and the backward; the optimizer updates the float master weights (straight-through);
 *   - every tensor that the int8 network stores (the input and the outputs that quantization
 *     keeps, quant_tensor_mask in quant.h) is rounded to its per-tensor asymmetric int8 grid; the
 *     ranges follow the batch min/max with an exponential moving average (PyTorch's
 *     MovingAverageMinMaxObserver, averaging constant 0.01) while training and stay fixed in
 *     eval mode; gradients pass where the value was inside the range and are zero where it
 *     was clipped.
 * After training, qat_ranges gives the learned ranges to qnet_build (quant.h), which folds
 * BN and builds the int8 network.
 */
#ifndef NASC_QAT_H
#define NASC_QAT_H

#include "../net/net.h"
#include "quant.h"

typedef struct {
    Net *net;
    int n;                   /* nodes */
    unsigned char *point;    /* (n + 1): [0] the input, [i + 1] node i's output is fake-quantized */
    float *lo, *hi;          /* (n + 1) observed ranges */
    unsigned char *seen;     /* (n + 1) the range has been initialized */
    float averaging;         /* EMA constant (0.01) */
    unsigned char **mask;    /* (n) per node: 1 where the value was inside the range (batch, c, h, w) */
    size_t *mask_cap;        /* (n) */
    float *master;           /* (nparams) the float weights while net->params holds the rounded ones */
    int swapped;             /* net->params holds rounded weights */
    float *xq;               /* the fake-quantized input (batch, in_c, in_h, in_w) */
    size_t xq_cap;
} Qat;

/* Attaches fake quantization to net (sets its hooks). The ranges start unseen: the first
 * training batch initializes them. */
void qat_init(Qat *q, Net *net);
/* Puts the float master weights back into net->params (after an eval-mode forward; the
 * training loop's backward does it by itself). */
void qat_restore(Qat *q);
/* The learned ranges, for qnet_build: r is initialized here (free with qranges_free). A
 * tensor never seen in training mode gets [0, 0]. */
void qat_ranges(const Qat *q, QRanges *r);
/* Detaches from the net (master weights back, hooks cleared) and frees. */
void qat_free(Qat *q);
/* Per-tensor fake quantization of n values in place with range [lo, hi] (0 is included);
 * mask (may be NULL) gets 1 where the value was inside the range. */
void qat_fake_quant(float *x, unsigned char *mask, size_t n, float lo, float hi);
/* Per-output-channel symmetric fake quantization of a weight (cout, per) in place. */
void qat_fake_quant_weight(float *w, int cout, size_t per);

#endif
