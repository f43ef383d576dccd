/* proxies.h: training-free scores of a network at initialization (zero-cost proxies), used
 * by the `proxy` search strategy (through StrategyConfig.proxy_score) to rank candidates
 * before any training. Higher is better for all of them.
 *
 *   synflow   (Tanaka et al. 2020, as used for NAS by Abdelfattah et al. 2021): every parameter
 *             and BN statistic replaced by its absolute value, BN as the affine map of eval
 *             mode, input one all-ones sample, R = sum of the logits; score = sum over conv and
 *             linear WEIGHTS (not biases, not BN) of |theta * dR/dtheta|. Reported as
 *             log(score) (natural log; -inf when the flow is 0).
 *   naswot    (Mellor et al. 2021): the binary code (x > 0) of every ReLU / ReLU6 unit over the
 *             batch, K[i][j] = number of units where samples i and j agree (N_A minus the
 *             Hamming distance), summed over all ReLUs; score = log|det K| (-inf when K is
 *             singular, e.g. identical inputs).
 *   gradnorm  (Abdelfattah et al. 2021): the Euclidean norm of the gradient of the mean
 *             cross-entropy over the batch w.r.t. ALL trainable parameters (one vector), BN in
 *             training mode (batch statistics). The plain norm, not its log.
 *
 * The network is never modified: each proxy works on a private copy built from net->spec
 * with net->params and net->buffers copied in, so parameters, gradients, BN statistics and
 * the dropout generator of `net` are exactly as before the call. Every proxy is
 * deterministic (no randomness: dropout is switched off in the copy).
 */
#ifndef NASC_PROXIES_H
#define NASC_PROXIES_H

#include "../net/net.h"

/* Score `net` with the proxy `name` ("synflow", "naswot", "gradnorm") on the batch x
 * (n, in_c, in_h, in_w) normalized images with labels y (n) (synflow only reads the input's
 * shape; gradnorm needs the labels, the others ignore y, which may then be NULL). n >= 1
 * (naswot and gradnorm: n >= 2 recommended). Returns NASC_OK with *score, or NASC_ERR with a
 * message (unknown name, bad batch, a non-finite result such as a float overflow of the
 * synflow forward in a very deep network). */
int proxy_score(const char *name, Net *net, const float *x, const int *y, int n, double *score, Err *e);

int proxy_synflow(Net *net, const float *x, int n, double *score, Err *e);
int proxy_naswot(Net *net, const float *x, int n, double *score, Err *e);
int proxy_gradnorm(Net *net, const float *x, const int *y, int n, double *score, Err *e);

const char *proxy_names(void); /* "synflow, naswot, gradnorm" for messages */

/* log|det A| of the n x n matrix a (row-major, overwritten) by LU with partial pivoting in
 * double; -INFINITY when a pivot is below n * DBL_EPSILON * max|a| (numerically singular). */
double proxy_logabsdet(double *a, int n);

#endif
