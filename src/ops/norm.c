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
 * The fast float kernels give results that do not depend on the thread count: each row
 * (image, channel) is summed by one thread, and each channel's rows are added in image order
 * in double. The forward reads x twice (statistics, then normalize), a block of channels at a
 * time so the block is still in L2 for the second read; the backward sweeps dy and x twice in
 * memory order (sum g and sum g (x - mean) per row, then dx). Rows are summed in double in the
 * forward (each about its own first value), in float (many vector lanes) in the backward.
 *
 * Parts of both can run inside the neighbouring convs, while the rows are in cache (net.c
 * decides): the forward's row sums (bn_row_stats) and statistics without y
 * (bn_forward_rows; the consumer makes y, act_rows), the backward's first pass
 * (bn_row_sums) and its dx, made chunk by chunk by the conv that consumes it (bn_grad_prepare,
 * grad_rows). Each gives bit for bit what the whole-tensor kernels give.
 *
 * Fused BN + ReLU/ReLU6 (bn_act_*): the forward writes only act(bn(x)) and saves the exact
 * constants it normalized with; the backward recomputes the BN output from x with them to
 * get the activation's derivative (relu: v > 0, relu6: 0 < v < 6), so the mask is the
 * forward's bit for bit without reading the output back, and folds the activation's backward
 * into BN's: neither the BN output nor its gradient is ever stored. The *_ex / bn_act_backward
 * variants can overwrite dx instead of accumulating (accumulate = 0), for the first writer of
 * a gradient.
 */
#include "ops.h"

#include <math.h>

#include "simd.h"

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

/* The activations that can be fused after a batch norm: their derivative is a function of
 * their OUTPUT (relu: y > 0; relu6: 0 < y < 6), so the BN output need not be stored. ACT_COUNT
 * stands for "no activation" inside this file. */
static int fusable(ActKind act) { return act == ACT_RELU || act == ACT_RELU6 || act == ACT_COUNT; }

/* One row of y = act((x - mhi - mlo) * scale + b). The BN expression is the same as the
 * unfused kernel's, so fused and unfused outputs are bitwise equal. */
static inline void bn_row(ActKind act, float *restrict yp, const float *restrict xp, int hw, float mhi, float mlo,
                          float scale, float b) {
    if (act == ACT_RELU) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float v = ((xp[j] - mhi) - mlo) * scale + b;
            yp[j] = v > 0 ? v : 0.0f;
        }
    } else if (act == ACT_RELU6) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float v = ((xp[j] - mhi) - mlo) * scale + b;
            yp[j] = v > 0 ? (v < 6 ? v : 6.0f) : 0.0f;
        }
    } else {
#pragma omp simd
        for (int j = 0; j < hw; j++) yp[j] = ((xp[j] - mhi) - mlo) * scale + b;
    }
}

/* One row of hw values: y = act(bn(x)) with one channel's constants. */
MULTIVERSION static void bn_apply(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                                  float b) {
    bn_row(act, y, x, hw, mhi, mlo, scale, b);
}

/* Sum and sum of squares of x - shift over one row of hw values. */
MULTIVERSION static void bn_sums(double *s1o, double *s2o, const float *xp, int hw, double shift) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int j = 0; j < hw; j++) {
        double d = (double)xp[j] - shift;
        s1 += d;
        s2 += d * d;
    }
    *s1o = s1, *s2o = s2;
}

/* Channels are processed in blocks: a block's rows (n images x its channels) are visited
 * image by image, so each image contributes one contiguous run of block * hw values (the
 * prefetchers follow it; one channel at a time is a 128-way strided walk that waits on memory
 * for every short row), and the block is small enough (BN_BLOCK_FLOATS per image) for its
 * data to stay in L2 between the statistics pass and the pass that uses them. Each channel's
 * rows are still summed in image order by the same per-row loops, so the results do not
 * depend on the block size or the thread count. */
#define BN_BLOCK_FLOATS 512
#define BN_BLOCK_MAX 64

/* Each image's run of a block is only a few KB, too short for the hardware prefetchers to
 * ramp up on before the walk jumps to the next image, so the passes that read from memory
 * prefetch the run BN_PF_AHEAD images ahead (one prefetch per cache line). */
#define BN_PF_AHEAD 2

static int bn_block(int c, int hw) { return NASC_MAX(1, NASC_MIN(NASC_MIN(BN_BLOCK_MAX, c), BN_BLOCK_FLOATS / hw)); }

/* A training forward's outputs besides y, and what it needs to make them. */
typedef struct {
    float *mean, *invstd, *aux; /* aux: mlo then scale (c each), saved for the fused backward */
    const float *gamma, *beta;
    float *running_mean, *running_var;
    int c;
    size_t count;
    float momentum, eps;
} BnStats;

/* Channel ch from its sums s1, s2 of x - shift over count values: mean, invstd, aux, the
 * running statistics, and the constants the forward normalizes with (mhi, mlo, scale, b). */
static void bn_channel(const BnStats *a, int ch, double s1, double s2, double shift, float *mhi, float *mlo,
                       float *scale, float *b) {
    const size_t count = a->count;
    float *running_mean = a->running_mean, *running_var = a->running_var;
    const float momentum = a->momentum;
    double dm = s1 / (double)count;
    double var = s2 / (double)count - dm * dm;
    if (var < 0) var = 0;
    double mu = shift + dm;
    double is = 1.0 / sqrt(var + (double)a->eps);
    a->mean[ch] = (float)mu;
    a->invstd[ch] = (float)is;
    if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mu);
    if (running_var) {
        double unbiased = count > 1 ? var * (double)count / (double)(count - 1) : var;
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
    /* y = (x - mu) * scale + b, subtracting first (and mu as a float pair hi + lo) to keep
     * precision when |mean| >> std: x - hi is exact for x near the mean. */
    *mhi = (float)mu, *mlo = (float)(mu - *mhi);
    *scale = (float)((a->gamma ? (double)a->gamma[ch] : 1.0) * is);
    *b = a->beta ? a->beta[ch] : 0.0f;
    if (a->aux) a->aux[ch] = *mlo, a->aux[a->c + ch] = *scale;
}

/* Each row's sums about its own first value (ops.h): the per-row part of the statistics. */
void bn_row_stats(double *rs, const float *x, size_t r0, size_t nr, int hw) {
    for (size_t r = 0; r < nr; r++) {
        const float *xr = x + r * hw;
        double *o = rs + 3 * (r0 + r);
        bn_sums(&o[0], &o[1], xr, hw, xr[0]);
        o[2] = xr[0];
    }
}

/* Adds a row's sums s1, s2 of x - t (hw values) to a channel's sums of x - shift: the shifts
 * differ by a float difference, so in double the moved sums are exact but for rounding. */
static inline void bn_add_row(double *S1, double *S2, double s1, double s2, double t, double shift, int hw) {
    double dt = t - shift;
    *S1 += s1 + hw * dt;
    *S2 += s2 + 2.0 * dt * s1 + hw * dt * dt;
}

/* y == NULL: statistics only (the output is made on demand, act_rows). row_stats: NULL, or
 * every row's sums as bn_row_stats made them (the conv that wrote x did, while in cache): the
 * statistics then read nothing, and y takes one pass. */
static void bn_train_core(ActKind act, float *y, float *mean, float *invstd, float *aux, const float *x,
                          const float *gamma, const float *beta, float *running_mean, float *running_var, int n, int c,
                          int hw, float momentum, float eps, const double *row_stats) {
    size_t count = (size_t)n * hw, stride = (size_t)c * hw;
    NASC_ASSERT(count > 0 && fusable(act));
    int par = count * (size_t)c >= BN_PAR_MIN && c > 1;
    const BnStats st = {mean, invstd, aux, gamma, beta, running_mean, running_var, c, count, momentum, eps};
    if (row_stats) {
        float *k = y ? xmalloc(4 * (size_t)c * sizeof(float)) : NULL; /* mhi, mlo, scale, b */
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
        for (int ch = 0; ch < c; ch++) {
            const double shift = row_stats[3 * (size_t)ch + 2]; /* image 0's row */
            double S1 = 0, S2 = 0;
            for (int i = 0; i < n; i++) {
                const double *o = row_stats + 3 * ((size_t)i * c + ch);
                bn_add_row(&S1, &S2, o[0], o[1], o[2], shift, hw);
            }
            float mhi, mlo, scale, b;
            bn_channel(&st, ch, S1, S2, shift, &mhi, &mlo, &scale, &b);
            if (k) k[ch] = mhi, k[c + ch] = mlo, k[2 * c + ch] = scale, k[3 * c + ch] = b;
        }
        if (y) { /* rows in memory order, split over the threads */
            const long rows = (long)n * c;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
            for (long r = 0; r < rows; r++) {
                const int ch = (int)(r % c);
                bn_apply(act, y + (size_t)r * hw, x + (size_t)r * hw, hw, k[ch], k[c + ch], k[2 * c + ch],
                         k[3 * c + ch]);
            }
        }
        free(k);
        return;
    }
    /* One pass for sum and sum of squares, shifted by the channel's first value so the variance
     * does not cancel when |mean| >> std. Products of floats are exact in double. Channel blocks
     * (see BN_BLOCK_FLOATS), so the second read finds the block in L2; without y (one read), a
     * sweep in memory order like the backward's measured slower too. */
    int bs = bn_block(c, hw), nblk = (c + bs - 1) / bs;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * bs, c1 = NASC_MIN(c, c0 + bs);
        double s1[BN_BLOCK_MAX], s2[BN_BLOCK_MAX], shift[BN_BLOCK_MAX];
        float mhi[BN_BLOCK_MAX], mlo[BN_BLOCK_MAX], scale[BN_BLOCK_MAX], b[BN_BLOCK_MAX];
        for (int ch = c0; ch < c1; ch++) shift[ch - c0] = x[(size_t)ch * hw], s1[ch - c0] = s2[ch - c0] = 0;
        const size_t run = (size_t)(c1 - c0) * hw;
        for (int i = 0; i < n; i++) {
            if (i + BN_PF_AHEAD < n) prefetch_range(x + (i + BN_PF_AHEAD) * stride + (size_t)c0 * hw, run * sizeof(float), 0);
            for (int ch = c0; ch < c1; ch++) { /* each row about its first value, as bn_row_stats */
                double r1, r2;
                const float *xr = x + i * stride + (size_t)ch * hw;
                bn_sums(&r1, &r2, xr, hw, xr[0]);
                bn_add_row(&s1[ch - c0], &s2[ch - c0], r1, r2, xr[0], shift[ch - c0], hw);
            }
        }
        for (int ch = c0; ch < c1; ch++) {
            int k = ch - c0;
            bn_channel(&st, ch, s1[k], s2[k], shift[k], &mhi[k], &mlo[k], &scale[k], &b[k]);
        }
        for (int i = 0; i < n && y; i++) {
            if (i + BN_PF_AHEAD < n) prefetch_range(y + (i + BN_PF_AHEAD) * stride + (size_t)c0 * hw, run * sizeof(float), 1);
            for (int ch = c0; ch < c1; ch++) {
                int k = ch - c0;
                size_t o = i * stride + (size_t)ch * hw;
                bn_apply(act, y + o, x + o, hw, mhi[k], mlo[k], scale[k], b[k]);
            }
        }
    }
}

static void bn_eval_core(ActKind act, float *y, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, int n, int c, int hw, float eps) {
    NASC_ASSERT(fusable(act));
    size_t stride = (size_t)c * hw;
    int par = (size_t)n * stride >= BN_PAR_MIN && (c > 1 || n > 1);
    if (c == 1 && n > 1) { /* one channel: split the images instead */
        double is = 1.0 / sqrt((double)running_var[0] + (double)eps);
        float scale = (float)((gamma ? (double)gamma[0] : 1.0) * is), b = beta ? beta[0] : 0.0f;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
        for (int i = 0; i < n; i++) bn_apply(act, y + i * stride, x + i * stride, hw, running_mean[0], 0.0f, scale, b);
        return;
    }
    int bs = bn_block(c, hw), nblk = (c + bs - 1) / bs; /* blocks visited image by image (above) */
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * bs, c1 = NASC_MIN(c, c0 + bs);
        float scale[BN_BLOCK_MAX];
        for (int ch = c0; ch < c1; ch++) {
            double is = 1.0 / sqrt((double)running_var[ch] + (double)eps);
            scale[ch - c0] = (float)((gamma ? (double)gamma[ch] : 1.0) * is);
        }
        for (int i = 0; i < n; i++)
            for (int ch = c0; ch < c1; ch++) {
                size_t o = i * stride + (size_t)ch * hw;
                bn_apply(act, y + o, x + o, hw, running_mean[ch], 0.0f, scale[ch - c0], beta ? beta[ch] : 0.0f);
            }
    }
}

/* The upstream gradient g: dy masked by the activation's derivative, which is a function of
 * the BN output v = ((x - mhi) - mlo) * scale + b (relu: v > 0, relu6: 0 < v < 6). v is
 * recomputed from x with the forward's own constants and expression (bn_row), so the mask is
 * exactly the forward's, and the activation's output need not be read back (one stream of
 * memory fewer in both passes). One loop per activation; the mask is a multiply by 0 or 1 (GCC
 * does not if-convert a select feeding a double reduction), so each loop vectorizes. */
#define BN_V (((xp[j] - k->mhi) - k->mlo) * k->scale + k->b)
#define G_RELU (dv * (float)(BN_V > 0))
#define G_RELU6 (dv * (float)((BN_V > 0) & (BN_V < 6)))
#define G_NONE (dv)

/* Over one row of hw values: sum g and sum g (x - mu). The row is summed in float, in many
 * vector lanes (a few dozen terms each), and the rows are then added in double by the caller:
 * the double-precision row sums were the compute bottleneck of the pass. */
MULTIVERSION static void bn_bwd_sums(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp,
                                     int hw, const BnBwdK *k) {
    float sdy = 0, sdyxc = 0, fmu = k->mhi;
#define SUMS(G)                                                                                                     \
    _Pragma("omp simd reduction(+ : sdy, sdyxc)") for (int j = 0; j < hw; j++) {                                   \
        float dv = dyp[j], g = G;                                                                                  \
        sdy += g;                                                                                                  \
        sdyxc += g * (xp[j] - fmu);                                                                                \
    }
    if (act == ACT_RELU) {
        SUMS(G_RELU)
    } else if (act == ACT_RELU6) {
        SUMS(G_RELU6)
    } else {
        SUMS(G_NONE)
    }
#undef SUMS
    *sdyo = sdy, *sdyxco = sdyxc;
}

/* dx (+)= a g + bb (x - mhi) + c0 over one row of hw values. */
MULTIVERSION static void bn_bwd_dx(ActKind act, float *dxp, const float *dyp, const float *xp, int hw,
                                   const BnBwdK *k, int acc) {
#define DX(G, OP)                                                                                                   \
    _Pragma("omp simd") for (int j = 0; j < hw; j++) {                                                             \
        float dv = dyp[j];                                                                                         \
        dxp[j] OP k->a * (G) + k->bb * (xp[j] - k->mhi) + k->c0;                                                   \
    }
    if (act == ACT_RELU) {
        if (acc) {
            DX(G_RELU, +=)
        } else {
            DX(G_RELU, =)
        }
    } else if (act == ACT_RELU6) {
        if (acc) {
            DX(G_RELU6, +=)
        } else {
            DX(G_RELU6, =)
        }
    } else {
        if (acc) {
            DX(G_NONE, +=)
        } else {
            DX(G_NONE, =)
        }
    }
#undef DX
}
#undef BN_V
#undef G_RELU
#undef G_RELU6
#undef G_NONE

/* The forward's constants of each channel (for the mask) into kc. aux (2c floats, mlo then
 * scale, as bn_train_core wrote them) is needed with an activation. */
static void bn_bwd_consts(BnBwdK *kc, const float *mean, const float *aux, const float *beta, int c) {
    for (int ch = 0; ch < c; ch++) {
        BnBwdK *k = &kc[ch];
        k->mhi = mean[ch];
        k->mlo = aux ? aux[ch] : 0.0f;
        k->scale = aux ? aux[c + ch] : 0.0f;
        k->b = beta ? beta[ch] : 0.0f;
    }
}

/* From the row sums rs (rows, 2: sum g, sum g (x - mean)): each channel's rows added in image
 * order (so results do not depend on the thread count or on who summed the rows), dgamma and
 * dbeta (when not NULL) += the channel sums, and kc's constants of dx = a g + bb (x - mean) + c0. */
static void bn_bwd_reduce(BnBwdK *kc, const double *rs, float *dgamma, float *dbeta, const float *gamma,
                          const float *invstd, int n, int c, int hw) {
    const double m = (double)n * hw;
    const int nt = (size_t)n * c >= 4096 ? threads_get() : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        double sdy = 0, sdyxc = 0;
        for (int i = 0; i < n; i++) sdy += rs[2 * ((size_t)i * c + ch)], sdyxc += rs[2 * ((size_t)i * c + ch) + 1];
        double is = invstd[ch];
        if (dbeta) dbeta[ch] += (float)sdy;
        if (dgamma) dgamma[ch] += (float)(sdyxc * is);
        /* a = gamma invstd, bb = -a invstd^2 sum(g (x-mean)) / m, c0 = -a sum(g) / m */
        double gi = (gamma ? (double)gamma[ch] : 1.0) * is;
        kc[ch].a = (float)gi, kc[ch].bb = (float)(-gi * is * is * sdyxc / m), kc[ch].c0 = (float)(-gi * sdy / m);
    }
}

/* The backward's first pass and the constants: kc (c of them) gets the forward's and the
 * backward's constants; dgamma/dbeta accumulate. rs: the row sums when the rows were already
 * summed (bn_row_sums, by the conv that wrote dy), else NULL and this pass sums them. */
static void bn_backward_sums(ActKind act, BnBwdK *kc, const double *rs, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *gamma, const float *beta, const float *mean,
                             const float *invstd, const float *aux, int n, int c, int hw) {
    NASC_ASSERT(fusable(act) && (act == ACT_COUNT || aux));
    size_t rows = (size_t)n * c;
    bn_bwd_consts(kc, mean, aux, beta, c);
    if (!rs) {
        /* The backward sweeps the tensors in memory order, rows (image, channel) split evenly
         * over the threads: this first pass writes each row's sums, the second (the dx pass or
         * grad_rows) writes dx. A linear sweep keeps the hardware prefetchers streaming; with
         * its three streams it measured faster than the forward's channel blocks (which keep a
         * block in L2 between the passes; they win for the forward). */
        double *sums = scratch_get(0, rows * 2 * sizeof(double));
        int nt = rows * hw >= BN_PAR_MIN && rows >= 4 ? threads_get() : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (long r = 0; r < (long)rows; r++)
            bn_bwd_sums(&sums[2 * r], &sums[2 * r + 1], act, dy + (size_t)r * hw, x + (size_t)r * hw, hw, &kc[r % c]);
        rs = sums;
    }
    bn_bwd_reduce(kc, rs, dgamma, dbeta, gamma, invstd, n, c, hw);
}

static void bn_backward_core(ActKind act, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                             const float *gamma, const float *beta, const float *mean, const float *invstd,
                             const float *aux, int n, int c, int hw, int accumulate) {
    BnBwdK *kc = xmalloc((size_t)c * sizeof *kc);
    bn_backward_sums(act, kc, NULL, dgamma, dbeta, dy, x, gamma, beta, mean, invstd, aux, n, c, hw);
    size_t rows = (size_t)n * c;
    int nt = rows * hw >= BN_PAR_MIN && rows >= 4 ? threads_get() : 1;
    if (dx) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (long r = 0; r < (long)rows; r++)
            bn_bwd_dx(act, dx + (size_t)r * hw, dy + (size_t)r * hw, x + (size_t)r * hw, hw, &kc[r % c], accumulate);
    }
    free(kc);
}

/* ------------------------------------------------------------------ gradient made on demand */
static const float *bn_aux(ActKind act, const float *saved, int c) {
    return act == ACT_COUNT ? NULL : saved + 2 * (size_t)c;
}

void bn_grad_prepare(GradSrc *src, BnBwdK *kc, const double *rs, float *dgamma, float *dbeta, ActKind act,
                     const float *dy, const float *x, const float *gamma, const float *beta, const float *saved, int n,
                     int c, int hw) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6 || act == ACT_COUNT);
    bn_backward_sums(act, kc, rs, dgamma, dbeta, dy, x, gamma, beta, saved, saved + c, bn_aux(act, saved, c), n, c,
                     hw);
    *src = (GradSrc){.dy = dy, .x = x, .k = kc, .act = act, .c = c, .hw = hw};
}

void bn_row_sums_init(BnRowSums *s, double *rs, BnBwdK *kc, ActKind act, const float *x, const float *beta,
                      const float *saved, int c, int hw) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6 || act == ACT_COUNT);
    bn_bwd_consts(kc, saved, bn_aux(act, saved, c), beta, c);
    *s = (BnRowSums){.rs = rs, .x = x, .k = kc, .act = act, .c = c, .hw = hw};
}

void bn_row_sums(const BnRowSums *s, const float *dy, size_t r0, size_t nr) {
    const size_t hw = (size_t)s->hw;
    for (size_t r = 0; r < nr; r++) {
        size_t row = r0 + r;
        bn_bwd_sums(&s->rs[2 * row], &s->rs[2 * row + 1], s->act, dy + r * hw, s->x + row * hw, s->hw,
                    &s->k[row % s->c]);
    }
}

const float *grad_rows(const GradSrc *s, float *buf, size_t r0, size_t nr) {
    if (!s->k) return s->dy + r0 * s->hw;
    const size_t hw = (size_t)s->hw;
    for (size_t r = 0; r < nr; r++)
        bn_bwd_dx(s->act, buf + r * hw, s->dy + (r0 + r) * hw, s->x + (r0 + r) * hw, s->hw, &s->k[(r0 + r) % s->c],
                  0);
    return buf;
}

void bn_forward_train(float *y, float *mean, float *invstd, const float *x, const float *gamma,
                      const float *beta, float *running_mean, float *running_var, int n, int c, int hw,
                      float momentum, float eps) {
    bn_train_core(ACT_COUNT, y, mean, invstd, NULL, x, gamma, beta, running_mean, running_var, n, c, hw, momentum,
                  eps, NULL);
}

void bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                     const float *running_mean, const float *running_var, int n, int c, int hw, float eps) {
    bn_eval_core(ACT_COUNT, y, x, gamma, beta, running_mean, running_var, n, c, hw, eps);
}

void bn_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma,
                 const float *mean, const float *invstd, int n, int c, int hw) {
    bn_backward_core(ACT_COUNT, dx, dgamma, dbeta, dy, x, gamma, NULL, mean, invstd, NULL, n, c, hw, 1);
}

void bn_backward_ex(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma,
                    const float *mean, const float *invstd, int n, int c, int hw, int accumulate) {
    bn_backward_core(ACT_COUNT, dx, dgamma, dbeta, dy, x, gamma, NULL, mean, invstd, NULL, n, c, hw, accumulate);
}

void bn_act_forward_train(ActKind act, float *y, float *saved, const float *x, const float *gamma, const float *beta,
                          float *running_mean, float *running_var, int n, int c, int hw, float momentum, float eps) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6);
    bn_train_core(act, y, saved, saved + c, saved + 2 * (size_t)c, x, gamma, beta, running_mean, running_var, n, c, hw,
                  momentum, eps, NULL);
}

void bn_forward_rows(ActKind act, float *y, float *saved, const double *row_stats, const float *x, const float *gamma,
                     const float *beta, float *running_mean, float *running_var, int n, int c, int hw, float momentum,
                     float eps) {
    NASC_ASSERT(fusable(act) && row_stats);
    bn_train_core(act, y, saved, saved + c, saved + 2 * (size_t)c, x, gamma, beta, running_mean, running_var, n, c, hw,
                  momentum, eps, row_stats);
}

void act_consts(const ActSrc *s, int ch, float k[4]) {
    const size_t c = (size_t)s->c;
    k[0] = s->saved[ch], k[1] = s->saved[2 * c + ch], k[2] = s->saved[3 * c + ch];
    k[3] = s->beta ? s->beta[ch] : 0.0f;
}

void act_row(ActKind act, const float k[4], float *y, const float *x, int n) {
    bn_apply(act, y, x, n, k[0], k[1], k[2], k[3]);
}

const float *act_rows(const ActSrc *s, float *buf, size_t r0, size_t nr) {
    if (!s->saved) return s->x + r0 * s->hw;
    const size_t hw = (size_t)s->hw;
    float k[4];
    for (size_t r = 0; r < nr; r++) {
        act_consts(s, (int)((r0 + r) % (size_t)s->c), k);
        act_row(s->act, k, buf + r * hw, s->x + (r0 + r) * hw, s->hw);
    }
    return buf;
}

void bn_act_forward_eval(ActKind act, float *y, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, int n, int c, int hw, float eps) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6);
    bn_eval_core(act, y, x, gamma, beta, running_mean, running_var, n, c, hw, eps);
}

void bn_act_backward(ActKind act, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                     const float *gamma, const float *beta, const float *saved, int n, int c, int hw, int accumulate) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6);
    bn_backward_core(act, dx, dgamma, dbeta, dy, x, gamma, beta, saved, saved + c, saved + 2 * (size_t)c, n, c, hw,
                     accumulate);
}

#endif /* NASC_REF_ONLY */
