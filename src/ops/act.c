/* act.c: elementwise activations, forward and backward.
 *
 *   relu      max(x, 0)                 relu'(x)     = 1 for x > 0, else 0
 *   relu6     min(max(x, 0), 6)         relu6'(x)    = 1 for 0 < x < 6, else 0
 *   hswish    x relu6(x + 3) / 6        hswish'(x)   = 0 for x < -3, (2x + 3)/6 for -3 <= x < 3,
 *                                                      1 for x >= 3
 *   sigmoid   1 / (1 + exp(-x))         sigmoid'(x)  = s (1 - s) = e / (1 + e)^2, e = exp(-|x|)
 *   hsigmoid  relu6(x + 3) / 6          hsigmoid'(x) = 1/6 for -3 < x < 3, else 0
 *
 * The values at the kinks are what PyTorch 1.13 (Debian's python3-torch) returns, checked
 * by evaluating its autograd at x = 0, +-3, 6. The backward takes the forward's INPUT x.
 * The forward may run in place (y == x).
 *
 * The fast kernels pick the activation outside the loop, so each loop is a plain
 * vectorizable one, and split large arrays over threads in contiguous chunks.
 */
#include "ops.h"

#include <math.h>

#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static inline real sigmoid_r(real x) {
    if (x >= 0) return (real)1 / ((real)1 + exp(-x));
    real e = exp(x);
    return e / ((real)1 + e);
}

/* s (1 - s) = e / (1 + e)^2 with e = exp(-|x|): no cancellation in 1 - s when s is near 1. */
static inline real dsigmoid_r(real x) {
    real e = exp(-fabs(x));
    return e / (((real)1 + e) * ((real)1 + e));
}

static real act_f(ActKind kind, real x) {
    switch (kind) {
    case ACT_RELU: return x > 0 ? x : 0;
    case ACT_RELU6: return x > 0 ? (x < 6 ? x : 6) : 0;
    case ACT_HSWISH: return x <= -3 ? 0 : x >= 3 ? x : x * (x + 3) / 6;
    case ACT_SIGMOID: return sigmoid_r(x);
    case ACT_HSIGMOID: return x <= -3 ? 0 : x >= 3 ? 1 : (x + 3) / 6;
    default: NASC_ASSERT(!"unknown activation");
    }
    return 0;
}

static real act_df(ActKind kind, real x) {
    switch (kind) {
    case ACT_RELU: return x > 0 ? 1 : 0;
    case ACT_RELU6: return x > 0 && x < 6 ? 1 : 0;
    case ACT_HSWISH: return x < -3 ? 0 : x < 3 ? (2 * x + 3) / 6 : 1;
    case ACT_SIGMOID: return dsigmoid_r(x);
    case ACT_HSIGMOID: return x > -3 && x < 3 ? (real)1 / 6 : 0;
    default: NASC_ASSERT(!"unknown activation");
    }
    return 0;
}

void act_forward_ref(ActKind kind, real *y, const real *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = act_f(kind, x[i]);
}

void act_backward_ref(ActKind kind, real *dx, const real *dy, const real *x, size_t n) {
    if (!dx) return;
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * act_df(kind, x[i]);
}

/* ------------------------------------------------------------------ fast float */
#ifndef NASC_REF_ONLY

#define ACT_PAR_MIN 65536

static inline float sigmoidf_(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static inline float dsigmoidf_(float x) {
    float e = expf(-fabsf(x));
    return e / ((1.0f + e) * (1.0f + e));
}

MULTIVERSION static void act_forward_chunk(ActKind kind, float *y, const float *x, size_t n) {
    switch (kind) {
    case ACT_RELU:
#pragma omp simd
        for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
        break;
    case ACT_RELU6:
#pragma omp simd
        for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? (x[i] < 6 ? x[i] : 6.0f) : 0.0f;
        break;
    case ACT_HSWISH:
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = v <= -3 ? 0.0f : v >= 3 ? v : v * (v + 3) / 6;
        }
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) y[i] = sigmoidf_(x[i]);
        break;
    case ACT_HSIGMOID:
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = v <= -3 ? 0.0f : v >= 3 ? 1.0f : (v + 3) / 6;
        }
        break;
    default: NASC_ASSERT(!"unknown activation");
    }
}

/* dx (+)= dy f'(x); `acc` is 0 (overwrite) or 1, invariant, so the loops are unswitched. */
#define ACC(i) (acc ? dx[i] : 0.0f)
MULTIVERSION static void act_backward_chunk(ActKind kind, float *dx, const float *dy, const float *x, size_t n, int acc) {
    switch (kind) {
    case ACT_RELU:
#pragma omp simd
        for (size_t i = 0; i < n; i++) dx[i] = ACC(i) + (x[i] > 0 ? dy[i] : 0.0f);
        break;
    case ACT_RELU6:
#pragma omp simd
        for (size_t i = 0; i < n; i++) dx[i] = ACC(i) + ((x[i] > 0) & (x[i] < 6) ? dy[i] : 0.0f);
        break;
    case ACT_HSWISH:
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            dx[i] = ACC(i) + (v < -3 ? 0.0f : v < 3 ? dy[i] * ((2 * v + 3) / 6) : dy[i]);
        }
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) dx[i] = ACC(i) + dy[i] * dsigmoidf_(x[i]);
        break;
    case ACT_HSIGMOID:
#pragma omp simd
        for (size_t i = 0; i < n; i++) dx[i] = ACC(i) + ((x[i] > -3) & (x[i] < 3) ? dy[i] * (1.0f / 6) : 0.0f);
        break;
    default: NASC_ASSERT(!"unknown activation");
    }
}
#undef ACC

/* Contiguous chunks, one per thread. Element i only touches index i of each array, so the
 * forward may run in place and the backward may have dx == dy. */
void act_forward(ActKind kind, float *y, const float *x, size_t n) {
    int nt = n >= ACT_PAR_MIN ? threads_get() : 1;
    if (nt <= 1) {
        act_forward_chunk(kind, y, x, n);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
        int t = 0, tn = 1;
#endif
        size_t lo = n * t / tn, hi = n * (t + 1) / tn;
        act_forward_chunk(kind, y + lo, x + lo, hi - lo);
    }
}

void act_backward(ActKind kind, float *dx, const float *dy, const float *x, size_t n) {
    act_backward_ex(kind, dx, dy, x, n, 1);
}

void act_backward_ex(ActKind kind, float *dx, const float *dy, const float *x, size_t n, int accumulate) {
    if (!dx) return;
    accumulate = accumulate != 0;
    int nt = n >= ACT_PAR_MIN ? threads_get() : 1;
    if (nt <= 1) {
        act_backward_chunk(kind, dx, dy, x, n, accumulate);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
        int t = 0, tn = 1;
#endif
        size_t lo = n * t / tn, hi = n * (t + 1) / tn;
        act_backward_chunk(kind, dx + lo, dy + lo, x + lo, hi - lo, accumulate);
    }
}

#endif /* NASC_REF_ONLY */
