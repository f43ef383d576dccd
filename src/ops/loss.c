/* loss.c: softmax cross-entropy with label smoothing, PyTorch's definition.
 *
 * For one row of k logits z with label t and smoothing eps, lse = log sum exp z:
 *     loss = (1 - eps) (lse - z_t) + eps * mean_j (lse - z_j)
 * i.e. cross-entropy against the target (1 - eps) onehot(t) + eps / k. The log-sum-exp
 * subtracts the row maximum and accumulates in double, so large logits neither overflow
 * nor lose the small ones. The forward returns the mean over the n rows and saves the
 * softmax; the backward adds (probs - target) / n * scale.
 *
 * Labels must be in [0, k): the data loaders check them, so a bad one here is a bug.
 */
#include "ops.h"

#include <math.h>

double xent_forward_ref(real *probs, const real *logits, const int *labels, int n, int k, real smoothing) {
    NASC_ASSERT(n >= 1 && k >= 1);
    double eps = smoothing, total = 0;
    for (int i = 0; i < n; i++) {
        const real *z = logits + (size_t)i * k;
        real *pr = probs + (size_t)i * k;
        int t = labels[i];
        NASC_ASSERT(t >= 0 && t < k);
        double m = z[0], zsum = 0;
        for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
        double se = 0;
        for (int j = 0; j < k; j++) {
            se += exp((double)z[j] - m);
            zsum += z[j];
        }
        double lse = m + log(se);
        for (int j = 0; j < k; j++) pr[j] = (real)exp((double)z[j] - lse);
        double nll = lse - (double)z[t];
        double smooth = lse - zsum / k; /* mean over classes of -log p_j */
        total += (1.0 - eps) * nll + eps * smooth;
    }
    return total / n;
}

void xent_backward_ref(real *dlogits, const real *probs, const int *labels, int n, int k, real smoothing,
                       real scale) {
    if (!dlogits) return;
    double off = (double)smoothing / k, on = 1.0 - (double)smoothing + off, f = (double)scale / n;
    for (int i = 0; i < n; i++) {
        const real *pr = probs + (size_t)i * k;
        real *dz = dlogits + (size_t)i * k;
        for (int j = 0; j < k; j++) {
            double target = j == labels[i] ? on : off;
            dz[j] += (real)(((double)pr[j] - target) * f);
        }
    }
}

/* Hinton et al.'s distillation loss for one row, with p = softmax(z / T) (student) and
 * q = softmax(t / T) (teacher): T^2 KL(q || p) = T^2 sum_j q_j (log q_j - log p_j). Its
 * gradient with respect to z is T (p - q). The T^2 keeps the gradient's size independent of
 * T, as in the paper. Log-softmaxes subtract the row maximum and accumulate in double. */
static double log_softmax_row(double *out, const real *z, int k, double inv_t) {
    double m = (double)z[0] * inv_t;
    for (int j = 1; j < k; j++) m = (double)z[j] * inv_t > m ? (double)z[j] * inv_t : m;
    double se = 0;
    for (int j = 0; j < k; j++) se += exp((double)z[j] * inv_t - m);
    double lse = m + log(se);
    for (int j = 0; j < k; j++) out[j] = (double)z[j] * inv_t - lse;
    return lse;
}

double kd_forward_ref(real *ps, real *pt, const real *logits, const real *teacher, int n, int k, real temperature) {
    NASC_ASSERT(n >= 1 && k >= 1 && temperature > 0);
    double inv_t = 1.0 / (double)temperature, total = 0;
    double *ls = xmalloc((size_t)k * sizeof(double)), *lt = xmalloc((size_t)k * sizeof(double));
    for (int i = 0; i < n; i++) {
        log_softmax_row(ls, logits + (size_t)i * k, k, inv_t);
        log_softmax_row(lt, teacher + (size_t)i * k, k, inv_t);
        double kl = 0;
        for (int j = 0; j < k; j++) {
            double q = exp(lt[j]);
            kl += q * (lt[j] - ls[j]);
            ps[(size_t)i * k + j] = (real)exp(ls[j]);
            pt[(size_t)i * k + j] = (real)q;
        }
        total += kl;
    }
    free(ls);
    free(lt);
    return total / n * (double)temperature * (double)temperature;
}

void kd_backward_ref(real *dlogits, const real *ps, const real *pt, int n, int k, real temperature, real scale) {
    if (!dlogits) return;
    double f = (double)temperature * (double)scale / n;
    for (size_t i = 0; i < (size_t)n * k; i++) dlogits[i] += (real)(((double)ps[i] - (double)pt[i]) * f);
}
