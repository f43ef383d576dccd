/* qops.h: int8 inference kernels (forward only).
 *
 * The int8 format, declared once (STYLE 12):
 *   - activations: per-tensor asymmetric int8: real = scale * (q - zp), q and zp in [-128, 127];
 *   - conv/linear weights: per-output-channel symmetric int8 in [-127, 127]: real = wscale[c] * q;
 *   - conv/linear bias: int32 in units of xscale * wscale[c] (zero point not included);
 *   - requantization is integer only (no float at inference, so a microcontroller without an
 *     FPU, nasc's fast kernels and the generated C all give the same bits): a real multiplier
 *     r > 0 is stored as (mult, shift) with mult in [2^30, 2^31) and r ~= mult * 2^-shift, and
 *         q_mulshift(acc, mult, shift) = (acc * mult + 2^(shift-1)) >> shift   (in int64,
 *     arithmetic shift: round half up). Multipliers too small to represent give mult = 0.
 *
 * Each kernel has a plain reference (`*_ref`, obviously correct, single threaded); fast paths
 * (VNNI, AMX, AVX-512) sit beside it, are chosen at run time, and must equal the reference bit
 * for bit (tests/test_qops.c checks on random shapes and values).
 */
#ifndef NASC_QOPS_H
#define NASC_QOPS_H

#include "ops.h"

/* round(acc * mult / 2^shift), half up; shift in [1, 62]. */
static inline int32_t q_mulshift(int64_t acc, int32_t mult, int shift) {
    return (int32_t)((acc * (int64_t)mult + ((int64_t)1 << (shift - 1))) >> shift);
}
static inline int32_t q_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The (mult, shift) pair for a real multiplier r >= 0 (see above); r = 0 or r < 2^-31 gives
 * mult 0, shift 1; r must be < 2^29. Deterministic (frexp-based), defined in qconv_ref.c. */
void q_multiplier(double r, int32_t *mult, int *shift);

/* ---------------------------------------------------------------- int8 conv2d (qconv.c) */
typedef struct {
    ConvDims d;           /* shapes as for the float conv; d.n is the batch */
    int32_t x_zp;         /* input zero point; padding reads x_zp (it stands for 0.0) */
    int32_t y_zp;         /* output zero point */
    int32_t y_min, y_max; /* output clamp within [-128, 127]: a fused ReLU is [y_zp, 127] */
} QConvArgs;

/* y (N, cout, oh, ow) = clamp(y_zp + q_mulshift(acc, mult[co], shift[co]), y_min, y_max) with
 *   acc = bias[co] + sum over the group's (ci, ky, kx) of w[co][ci][ky][kx] * (x[...] - x_zp),
 * x (N, cin, h, w) int8, w (cout, cin/groups, k, k) int8, bias (cout) int32 or NULL (zero),
 * mult (cout), shift (cout). Depthwise is groups = cin = cout. A linear layer is a 1x1 conv
 * on (N, in, 1, 1). */
/* Defined in qconv_ref.c. */
void qconv2d_ref(int8_t *y, const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                 const int8_t *shift, const QConvArgs *a);

/* The fast path works from weights packed once per layer (layout private to qconv.c: it may
 * fold x_zp * sum(w) into the bias, reorder for VNNI/AMX, pick depthwise or 1x1 kernels).
 * qconv_pack copies what it needs (the caller may free w, bias, mult, shift afterwards);
 * a->d.n is ignored there and the batch is given to qconv2d. */
typedef struct QConvPacked QConvPacked;
QConvPacked *qconv_pack(const int8_t *w, const int32_t *bias, const int32_t *mult, const int8_t *shift,
                        const QConvArgs *a);
/* Equal bit for bit to qconv2d_ref on the same inputs. Uses threads_get() threads. */
void qconv2d(int8_t *y, const int8_t *x, const QConvPacked *p, int n);
void qconv_free(QConvPacked *p);
/* The kernel family chosen at run time ("amx", "vnni", "avx512", "generic"); NASC_QCONV=generic
 * (or vnni, ...) in the environment forces a path for testing when the CPU has it. */
const char *qconv_path(void);

#endif
