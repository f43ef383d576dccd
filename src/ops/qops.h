/* qops.h: int8 inference kernels (forward only).
 *
 * The int8 format, declared once (STYLE 12):
 *   - activations: per-tensor asymmetric int8: real = scale * (q - zp), q and zp in [-128, 127];
 *   - conv/linear weights: per-output-channel symmetric int8 in [-127, 127]: real = wscale[c] * q;
 *   - conv/linear bias: int32 in units of xscale * wscale[c] (zero point not included);
 *   - requantization: a real multiplier r > 0 is stored as (mult, shift) with mult in
 *     [2^30, 2^31) and r ~= mult * 2^-shift. Two arithmetics use it:
 *       - convolutions (and linear layers) and global average pooling requantize as ONNX
 *         Runtime does (MLAS), so that nasc, the generated C and ONNX Runtime agree bit for
 *         bit: the pair stands for the float s = q_conv_scale(mult, shift) (q_multiplier of a
 *         float gives a mult with 24 significant bits, so s is exact), and q_requant_f(acc, s,
 *         ...) computes float(acc) * s in IEEE single precision, rounds half to even and adds
 *         the zero point. Plain IEEE single arithmetic: a microcontroller without an FPU gets
 *         the same bits from its compiler's software float, only slower;
 *       - average pool, concat, channel scale and resize are integer only:
 *             q_mulshift(acc, mult, shift) = (acc * mult + 2^(shift-1)) >> shift   (in int64,
 *         arithmetic shift: round half up).
 *     Multipliers too small to represent give mult = 0. Adds and quantization use no pair:
 *     they compute in float from the scales, as ONNX Runtime does (see qadd and quantize).
 *
 * Each kernel has a plain reference (`*_ref`, obviously correct, single threaded); fast paths
 * (VNNI, AMX, AVX-512) sit beside it, are chosen at run time, and must equal the reference bit
 * for bit (tests/test_qops.c checks on random shapes and values).
 */
#ifndef NASC_QOPS_H
#define NASC_QOPS_H

#include "ops.h"

#include <math.h>

/* round(acc * mult / 2^shift), half up; shift in [1, 62]. */
static inline int32_t q_mulshift(int64_t acc, int32_t mult, int shift) {
    return (int32_t)((acc * (int64_t)mult + ((int64_t)1 << (shift - 1))) >> shift);
}
static inline int32_t q_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The float a convolution's (mult, shift) stands for: the IEEE single whose significand is
 * mult's top 24 bits, times 2^(30 - shift) (mult in [2^30, 2^31), shift in [1, 62]; mult 0
 * gives 0). Built from the bits, so every platform and the generated C get the same float. */
static inline float q_conv_scale(int32_t mult, int shift) {
    if (mult <= 0) return 0.0f;
    uint32_t b = ((uint32_t)(157 - shift) << 23) | (((uint32_t)mult >> 7) & 0x7fffffu);
    float s;
    memcpy(&s, &b, sizeof s);
    return s;
}

/* Convolution requantization, ONNX Runtime's arithmetic (MLAS's requantize output): v =
 * float(acc) * s in IEEE single precision (float(acc) rounds to nearest even), clamped to
 * [lo - zp, hi - zp], rounded half to even, plus zp. Clamping before or after the rounding
 * is the same (the bounds are integers). */
static inline int32_t q_requant_f(int32_t acc, float s, int32_t zp, int32_t lo, int32_t hi) {
    float v = (float)acc * s, flo = (float)(lo - zp), fhi = (float)(hi - zp);
    v = v < flo ? flo : v > fhi ? fhi : v;
    return (int32_t)nearbyintf(v) + zp;
}

/* The (mult, shift) pair for a real multiplier r >= 0 (see above; for a float r, mult has
 * at most 24 significant bits and q_conv_scale gives r back exactly); r = 0 or r < 2^-31 gives
 * mult 0, shift 1; r must be < 2^29. Deterministic (frexp-based), defined in qconv_ref.c. */
void q_multiplier(double r, int32_t *mult, int *shift);

/* ---------------------------------------------------------------- int8 conv2d (qconv.c) */
typedef struct {
    ConvDims d;           /* shapes as for the float conv; d.n is the batch */
    int32_t x_zp;         /* input zero point; padding reads x_zp (it stands for 0.0) */
    int32_t y_zp;         /* output zero point */
    int32_t y_min, y_max; /* output clamp within [-128, 127]: a fused ReLU is [y_zp, 127] */
} QConvArgs;

/* y (N, cout, oh, ow) = q_requant_f(acc, q_conv_scale(mult[co], shift[co]), y_zp, y_min, y_max) with
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

/* ---------------------------------------------------------------- int8 non-conv ops (qelem.c)
 * The same format as above: each int8 tensor has one (scale, zero point); a kernel takes the
 * zero points of its inputs and output and the (mult, shift) pairs standing for the real
 * ratios of scales, computed once when a network is lowered (src/compress). Results saturate
 * to [-128, 127] unless a clamp [y_min, y_max] is given. Every kernel has a plain `*_ref` and
 * a fast one (contiguous inner loops, planes or chunks split over threads_get() threads) that
 * equals it bit for bit; tests/test_quant.c checks both, and the reference against float. */

/* Quantize: q = clamp(nearbyintf(x / scale) + zp, -128, 127) (round half to even, in float, as
 * ONNX's QuantizeLinear defines it and ONNX Runtime computes it); dequantize: x = scale *
 * (float)(q - zp). */
void quantize_ref(int8_t *q, const float *x, size_t n, float scale, int32_t zp);
void dequantize_ref(float *x, const int8_t *q, size_t n, float scale, int32_t zp);
void quantize(int8_t *q, const float *x, size_t n, float scale, int32_t zp);

/* y = lut[x + 128] over n values: any elementwise function of one input quantization into one
 * output quantization (hswish, sigmoid, hsigmoid, unfused ReLU/ReLU6) as a 256-entry table. */
void qlut_ref(int8_t *y, const int8_t *x, const int8_t *lut, size_t n);
void qlut(int8_t *y, const int8_t *x, const int8_t *lut, size_t n);

/* Max pool (PoolDims as for float; padding never wins). y shares x's (scale, zero point):
 * the maximum commutes with a monotonic quantization, so no requantization. */
void qmaxpool_ref(int8_t *y, const int8_t *x, const PoolDims *d);
void qmaxpool(int8_t *y, const int8_t *x, const PoolDims *d);

/* Average pool: y = clamp(y_zp + q_mulshift(S, mult[div - 1], shift[div - 1])) where S is the
 * sum of (x - x_zp) over the window's in-bounds cells (padding stands for 0.0) and div the
 * divisor avgpool_forward_ref uses (k*k with count_include_pad, else the in-bounds count);
 * mult/shift (k*k) tabulate x_scale / (y_scale * div) for div = 1..k*k. */
void qavgpool_ref(int8_t *y, const int8_t *x, const PoolDims *d, int32_t x_zp, int32_t y_zp, const int32_t *mult,
                  const int8_t *shift);
void qavgpool(int8_t *y, const int8_t *x, const PoolDims *d, int32_t x_zp, int32_t y_zp, const int32_t *mult,
              const int8_t *shift);

/* Global average pool, ONNX Runtime's arithmetic (its QLinearGlobalAveragePool): y (N, C) =
 * q_requant_f(sum over hw of (x - x_zp), q_conv_scale(mult, shift), y_zp, -128, 127), the pair
 * standing for the float x_scale / (y_scale * (float)hw) (hw < 2^24); x (N, C, hw). */
void qgap_ref(int8_t *y, const int8_t *x, int n, int c, int hw, int32_t x_zp, int32_t y_zp, int32_t mult, int shift);
void qgap(int8_t *y, const int8_t *x, int n, int c, int hw, int32_t x_zp, int32_t y_zp, int32_t mult, int shift);

/* n-ary add with ONNX Runtime's arithmetic (nasc exports Add for two inputs, Sum for more), in
 * float, each step rounded to float (fma: the correctly rounded fused multiply-add; the
 * generated C computes it as float((double)x * y + z), the same whenever that double sum is
 * exact, as it is for int8 values and ratios of scales >= 2^-14):
 *   - two inputs (ORT's QLinearAdd, its x86 kernel, in uint8 terms u = x + 128): r_j =
 *     x_scale[j] / y_scale, c = (y_zp + 128) - (r_0 (x_zp[0] + 128) + r_1 (x_zp[1] + 128)),
 *     v = fma(u_0, r_0, fma(u_1, r_1, c)) rounded half to even, saturated to [0, 255], - 128
 *     (the order ORT's binary computes, found by matching it on residual nets);
 *   - otherwise (DequantizeLinear, Sum, QuantizeLinear): s = the sum, in input order, of
 *     x_scale[j] * (float)(x_j - x_zp[j]); v = y_zp + (s / y_scale rounded half to even).
 * Then y = clamp(v, y_min, y_max). n values per input; y may alias none. */
typedef struct {
    int nin;
    const int32_t *x_zp;  /* (nin) */
    const float *x_scale; /* (nin) */
    float y_scale;
    int32_t y_zp, y_min, y_max;
} QAddArgs;
void qadd_ref(int8_t *y, const int8_t *const *xs, size_t n, const QAddArgs *a);
void qadd(int8_t *y, const int8_t *const *xs, size_t n, const QAddArgs *a);

/* Channel concat of nin inputs (N, cs[j], hw) into y (N, sum cs, hw), input j requantized to
 * the output: y = clamp(y_zp + q_mulshift(x - x_zp[j], mult[j], shift[j])). */
void qconcat_ref(int8_t *y, const int8_t *const *xs, const int *cs, int nin, int n, int hw, const int32_t *x_zp,
                 const int32_t *mult, const int8_t *shift, int32_t y_zp);
void qconcat(int8_t *y, const int8_t *const *xs, const int *cs, int nin, int n, int hw, const int32_t *x_zp,
             const int32_t *mult, const int8_t *shift, int32_t y_zp);

/* Channel scale (squeeze-excitation): y (N, C, hw) = clamp(y_zp + q_mulshift((x - x_zp) *
 * (s - s_zp), mult, shift)) with s (N, C) and (mult, shift) for x_scale * s_scale / y_scale. */
void qchmul_ref(int8_t *y, const int8_t *x, const int8_t *s, int n, int c, int hw, int32_t x_zp, int32_t s_zp,
                int32_t y_zp, int32_t mult, int shift);
void qchmul(int8_t *y, const int8_t *x, const int8_t *s, int n, int c, int hw, int32_t x_zp, int32_t s_zp,
            int32_t y_zp, int32_t mult, int shift);

/* Bilinear resize of nc planes (h, w) -> (oh, ow), resize_forward_ref's sampling with exact
 * rational taps: along an axis of `in` -> `out` pixels, output o reads source coordinate
 * max(0, (2o + 1) in - out) / (2 out), a multiple of 1/D with D = 2 out / gcd(2 in, in - out,
 * 2 out) (28 -> 24: D = 12; 2x up: D = 4). The axis' unit is U = D, or 2^QRESIZE_FRAC when D is
 * larger (then the taps are rounded down to that grid); with src = max(0, (2o + 1) in - out) U /
 * (2 out), i0 = min(src / U, in - 1), i1 = min(i0 + 1, in - 1), and weights U - f and f, f = src
 * mod U (f = 0 when i0 was clipped). acc = sum of the 4 taps (x - x_zp) wy wx, in units of
 * 1 / (Uh Uw), and y = clamp(y_zp + q_mulshift(acc, mult, shift)) with (mult, shift) for x_scale /
 * (y_scale Uh Uw). Exact taps make the result the rounded real bilinear value, so it agrees with
 * a float Resize followed by QuantizeLinear (ONNX Runtime) except at ties. |acc| <= 255 Uh Uw
 * <= 255 2^22 keeps acc * mult within int64. */
#define QRESIZE_FRAC 11
typedef struct {
    int32_t i0, i1, l0, l1; /* source indices and their weights, l0 + l1 = U */
} QTap;
/* The unit U of an axis in -> out, and its taps into t[out] (returns U). */
int qresize_unit(int in, int out);
int qresize_taps(QTap *t, int in, int out);
void qresize_ref(int8_t *y, const int8_t *x, int nc, int h, int w, int oh, int ow, int32_t x_zp, int32_t y_zp,
                 int32_t mult, int shift);
void qresize(int8_t *y, const int8_t *x, int nc, int h, int w, int oh, int ow, int32_t x_zp, int32_t y_zp,
             int32_t mult, int shift);

#endif
