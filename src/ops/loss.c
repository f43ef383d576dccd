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
