/* norm.c: batch normalization over (N, C, hw) tensors, PyTorch's BatchNorm2d semantics
 * (BatchNorm1d on (N, C) is the same with hw = 1).
 *
 * Training mode normalizes each channel with its batch mean and BIASED variance, saves
 * mean and invstd = 1/sqrt(var + eps) for the backward, and moves the running statistics
 * towards the batch ones: r = (1 - momentum) r + momentum stat, where the variance stat is
 * the UNBIASED one (count / (count - 1)), count = n * hw. Eval mode uses the running stats.
 *
 * gamma/beta may be NULL (meaning 1 and 0) and so may running_mean/running_var (no update).
 * With count == 1 the unbiased correction is skipped (PyTorch refuses such a batch).
 *
 * The fast float kernels split the channels over threads; each channel's sums are made by
 * one thread in double accumulators, so results do not depend on the thread count. The
 * forward reads x twice (statistics, then normalize); the backward reads dy and x twice
 * (sum dy and sum dy (x - mean), then dx).
 */
#include "ops.h"

#include <math.h>

/* ------------------------------------------------------------------ reference */

void bn_forward_train_ref(real *y, real *mean, real *invstd, const real *x, const real *gamma,
                          const real *beta, real *running_mean, real *running_var, int n, int c, int hw,
                          real momentum, real eps) {
    size_t count = (size_t)n * hw;
    NASC_ASSERT(count > 0);
    for (int ch = 0; ch < c; ch++) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            const real *xp = x + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) s += xp[j];
        }
        double mu = s / (double)count;
        double ss = 0;
        for (int i = 0; i < n; i++) {
            const real *xp = x + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) ss += ((double)xp[j] - mu) * ((double)xp[j] - mu);
        }
        double var = ss / (double)count;
        double is = 1.0 / sqrt(var + (double)eps);
        double g = gamma ? (double)gamma[ch] : 1.0, b = beta ? (double)beta[ch] : 0.0;
        for (int i = 0; i < n; i++) {
            const real *xp = x + ((size_t)i * c + ch) * hw;
            real *yp = y + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) yp[j] = (real)(((double)xp[j] - mu) * is * g + b);
        }
        mean[ch] = (real)mu;
        invstd[ch] = (real)is;
        if (running_mean) running_mean[ch] = (real)((1.0 - momentum) * running_mean[ch] + momentum * mu);
        if (running_var) {
            double unbiased = count > 1 ? var * (double)count / (double)(count - 1) : var;
            running_var[ch] = (real)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
        }
    }
}

void bn_forward_eval_ref(real *y, const real *x, const real *gamma, const real *beta,
                         const real *running_mean, const real *running_var, int n, int c, int hw, real eps) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            double is = 1.0 / sqrt((double)running_var[ch] + (double)eps);
            double g = gamma ? (double)gamma[ch] : 1.0, b = beta ? (double)beta[ch] : 0.0;
            const real *xp = x + ((size_t)i * c + ch) * hw;
            real *yp = y + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) yp[j] = (real)(((double)xp[j] - running_mean[ch]) * is * g + b);
        }
}

/* With xhat = (x - mean) invstd and m = count:
 *   dbeta = sum dy,  dgamma = sum dy xhat,
 *   dx = gamma invstd / m * (m dy - dbeta - xhat dgamma). */
void bn_backward_ref(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *gamma,
                     const real *mean, const real *invstd, int n, int c, int hw) {
    double m = (double)n * hw;
    for (int ch = 0; ch < c; ch++) {
        double mu = mean[ch], is = invstd[ch];
        double sdy = 0, sdyxh = 0;
        for (int i = 0; i < n; i++) {
            const real *xp = x + ((size_t)i * c + ch) * hw;
            const real *dyp = dy + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) {
                sdy += dyp[j];
                sdyxh += dyp[j] * ((double)xp[j] - mu) * is;
            }
        }
        if (dbeta) dbeta[ch] += (real)sdy;
        if (dgamma) dgamma[ch] += (real)sdyxh;
        if (!dx) continue;
        double g = gamma ? (double)gamma[ch] : 1.0;
        for (int i = 0; i < n; i++) {
            const real *xp = x + ((size_t)i * c + ch) * hw;
            const real *dyp = dy + ((size_t)i * c + ch) * hw;
            real *dxp = dx + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) {
                double xh = ((double)xp[j] - mu) * is;
                dxp[j] += (real)(g * is / m * (m * dyp[j] - sdy - xh * sdyxh));
            }
        }
    }
}

/* ------------------------------------------------------------------ fast float */
#ifndef NASC_REF_ONLY

/* Parallelize over channels only when there is enough work to pay for the threads. */
#define BN_PAR_MIN 16384

void bn_forward_train(float *y, float *mean, float *invstd, const float *x, const float *gamma,
                      const float *beta, float *running_mean, float *running_var, int n, int c, int hw,
                      float momentum, float eps) {
    size_t count = (size_t)n * hw;
    NASC_ASSERT(count > 0);
    int par = count * (size_t)c >= BN_PAR_MIN && c > 1;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        /* One pass for sum and sum of squares, shifted by the channel's first value so the
         * variance does not cancel when |mean| >> std. Products of floats are exact in double. */
        double shift = x[(size_t)ch * hw];
        double s1 = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            const float *xp = x + ((size_t)i * c + ch) * hw;
#pragma omp simd reduction(+ : s1, s2)
            for (int j = 0; j < hw; j++) {
                double d = (double)xp[j] - shift;
                s1 += d;
                s2 += d * d;
            }
        }
        double dm = s1 / (double)count;
        double var = s2 / (double)count - dm * dm;
        if (var < 0) var = 0;
        double mu = shift + dm;
        double is = 1.0 / sqrt(var + (double)eps);
        mean[ch] = (float)mu;
        invstd[ch] = (float)is;
        if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mu);
        if (running_var) {
            double unbiased = count > 1 ? var * (double)count / (double)(count - 1) : var;
            running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
        }
        /* y = (x - mu) * scale + b, subtracting first (and mu as a float pair hi + lo) to keep
         * precision when |mean| >> std: x - hi is exact for x near the mean. */
        float mhi = (float)mu, mlo = (float)(mu - mhi);
        float scale = (float)((gamma ? (double)gamma[ch] : 1.0) * is);
        float b = beta ? beta[ch] : 0.0f;
        for (int i = 0; i < n; i++) {
            const float *xp = x + ((size_t)i * c + ch) * hw;
            float *yp = y + ((size_t)i * c + ch) * hw;
#pragma omp simd
            for (int j = 0; j < hw; j++) yp[j] = ((xp[j] - mhi) - mlo) * scale + b;
        }
    }
}

void bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                     const float *running_mean, const float *running_var, int n, int c, int hw, float eps) {
    size_t planes = (size_t)n * c;
    int par = planes * hw >= BN_PAR_MIN && planes > 1;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (size_t p = 0; p < planes; p++) {
        int ch = (int)(p % (size_t)c);
        double is = 1.0 / sqrt((double)running_var[ch] + (double)eps);
        float fmu = running_mean[ch];
        float scale = (float)((gamma ? (double)gamma[ch] : 1.0) * is);
        float b = beta ? beta[ch] : 0.0f;
        const float *xp = x + p * hw;
        float *yp = y + p * hw;
#pragma omp simd
        for (int j = 0; j < hw; j++) yp[j] = (xp[j] - fmu) * scale + b;
    }
}

void bn_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma,
                 const float *mean, const float *invstd, int n, int c, int hw) {
    size_t count = (size_t)n * hw;
    double m = (double)count;
    int par = count * (size_t)c >= BN_PAR_MIN && c > 1;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        double mu = mean[ch], is = invstd[ch];
        double sdy = 0, sdyxc = 0; /* sum dy, sum dy (x - mean) */
        for (int i = 0; i < n; i++) {
            const float *xp = x + ((size_t)i * c + ch) * hw;
            const float *dyp = dy + ((size_t)i * c + ch) * hw;
#pragma omp simd reduction(+ : sdy, sdyxc)
            for (int j = 0; j < hw; j++) {
                double d = dyp[j];
                sdy += d;
                sdyxc += d * ((double)xp[j] - mu);
            }
        }
        if (dbeta) dbeta[ch] += (float)sdy;
        if (dgamma) dgamma[ch] += (float)(sdyxc * is);
        if (!dx) continue;
        /* dx += a dy + b (x - mean) + c0 with a = gamma invstd, b = -a invstd^2 sum(dy (x-mean)) / m,
         * c0 = -a sum(dy) / m. */
        double gi = (gamma ? (double)gamma[ch] : 1.0) * is;
        float a = (float)gi;
        float b = (float)(-gi * is * is * sdyxc / m);
        float c0 = (float)(-gi * sdy / m);
        float fmu = (float)mu;
        for (int i = 0; i < n; i++) {
            const float *xp = x + ((size_t)i * c + ch) * hw;
            const float *dyp = dy + ((size_t)i * c + ch) * hw;
            float *dxp = dx + ((size_t)i * c + ch) * hw;
#pragma omp simd
            for (int j = 0; j < hw; j++) dxp[j] += a * dyp[j] + b * (xp[j] - fmu) + c0;
        }
    }
}

#endif /* NASC_REF_ONLY */
