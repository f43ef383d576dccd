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
 * memory order (sum g and sum g (x - mean) per row, then dx). Rows are summed about their own
 * first value in the forward (in double by the portable kernel, in float chunks of many vector
 * lanes added in double by the AVX-512 one), in float (many vector lanes) in the backward.
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
#include "conv_internal.h" /* use_avx512, lane_range */

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
MULTIVERSION static void bn_apply_c(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                                  float b) {
    bn_row(act, y, x, hw, mhi, mlo, scale, b);
}

/* Sum and sum of squares of x - shift over one row of hw values. */
MULTIVERSION static void bn_sums_c(double *s1o, double *s2o, const float *xp, int hw, double shift) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int j = 0; j < hw; j++) {
        double d = (double)xp[j] - shift;
        s1 += d;
        s2 += d * d;
    }
    *s1o = s1, *s2o = s2;
}

/* The AVX-512 versions of the row kernels (above: the portable ones). Rows are short (a 7x7
 * plane is 49 values, three vectors and one lane), so what the compiler made of the loops
 * above cost more around the vectors than in them: a scalar epilogue for the ragged lanes and,
 * for the sums, a chain of 16 dependent scalar adds per row. Here a row's last vector is
 * masked and the sums are reduced in a few shuffles. Results: bn_apply and bn_bwd_dx as the
 * portable ones (the same float operations, element by element; a gradient the activation
 * masks off is a zero, not dy times zero, so an infinite dy there gives 0, not NaN, as in
 * PyTorch); the sums differ in rounding only (another summation order, fused multiply-adds).
 * Each kernel is the one place its rows are computed, so the fused and unfused paths still
 * agree bit for bit. */
#if CONV_X86
#define AVX512 __attribute__((target("avx512f")))
#define AVX2F __attribute__((target("avx2,fma")))
#define AVX2F_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
/* The row kernels in AVX2 (with the stream walks, below): for machines without AVX-512, where
 * the compiler's AVX2 versions of the portable loops had left much of them scalar (one thread,
 * a build without the AVX-512 clones: bn_bwd_dx_c and bn_bwd_sums_c 16% of resnet8's step). */
AVX2F static void bn_apply_avx2(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                                float b);
AVX2F static void bn_sums_avx2(double *s1o, double *s2o, const float *xp, int hw, double shift);
AVX2F static void bn_bwd_sums_avx2(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp,
                                   int hw, const BnBwdK *k);
AVX2F static void bn_bwd_dx_avx2(ActKind act, float *dxp, const float *dyp, const float *xp, int hw, const BnBwdK *k,
                                 int acc);

/* fn(ACT_RELU, ...), fn(ACT_RELU6, ...) or fn(ACT_COUNT, ...) as act says: each call a copy of
 * the always-inline kernel fn with its activation a constant (no test per vector). */
#define BY_ACT(act, fn, ...)                                                                                       \
    ((act) == ACT_RELU    ? fn(ACT_RELU, __VA_ARGS__)                                                                 \
     : (act) == ACT_RELU6 ? fn(ACT_RELU6, __VA_ARGS__)                                                                \
                          : fn(ACT_COUNT, __VA_ARGS__))

/* Lanes [0, n) of a vector, n <= 16. */
static inline __mmask16 first_lanes(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* BN's affine part on one vector: ((x - mhi) - mlo) * scale + b, as bn_row (no contraction). */
AVX512 __attribute__((always_inline)) static inline __m512 bn_affine(__m512 x, __m512 mhi, __m512 mlo, __m512 sc,
                                                                      __m512 b) {
    return _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(x, mhi), mlo), sc), b);
}

/* act on one vector: max(v, 0) is v > 0 ? v : 0 exactly (NaN and -0 give +0), min(., 6) the
 * clamp of ReLU6. */
AVX512 __attribute__((always_inline)) static inline __m512 act_vec(ActKind act, __m512 v) {
    if (act == ACT_RELU || act == ACT_RELU6) v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (act == ACT_RELU6) v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
    return v;
}

AVX512 __attribute__((always_inline)) static inline void apply_avx512(const ActKind act, float *y, const float *x,
                                                                       int hw, float mhi, float mlo, float scale,
                                                                       float b) {
    const __m512 vh = _mm512_set1_ps(mhi), vl = _mm512_set1_ps(mlo), vs = _mm512_set1_ps(scale),
                 vb = _mm512_set1_ps(b);
    int j = 0;
    for (; j + 16 <= hw; j += 16)
        _mm512_storeu_ps(y + j, act_vec(act, bn_affine(_mm512_loadu_ps(x + j), vh, vl, vs, vb)));
    if (j < hw) {
        __mmask16 m = first_lanes(hw - j);
        _mm512_mask_storeu_ps(y + j, m, act_vec(act, bn_affine(_mm512_maskz_loadu_ps(m, x + j), vh, vl, vs, vb)));
    }
}

AVX512 static void bn_apply_avx512(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                                   float b) {
    BY_ACT(act, apply_avx512, y, x, hw, mhi, mlo, scale, b);
}

/* The float lanes of a into a double accumulator. */
AVX512 __attribute__((always_inline)) static inline __m512d add_lanes_pd(__m512d acc, __m512 a) {
    __m256 lo = _mm512_castps512_ps256(a);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    return _mm512_add_pd(acc, _mm512_add_pd(_mm512_cvtps_pd(lo), _mm512_cvtps_pd(hi)));
}

/* Values of a row summed in float before the partial sums move to double: each lane then adds
 * at most BN_SUM_CHUNK / 32 terms in float. */
#define BN_SUM_CHUNK 256

/* bn_sums with x - shift in float (shift is a value of the row: the differences are about the
 * spread of the row, and each is within half an ulp of the exact one), summed in float lanes in
 * chunks, the chunks in double. Summing in double throughout, as the portable kernel does,
 * measured 2.5x slower on 14x14 rows; float sums are what PyTorch's BN uses. */
AVX512 static void bn_sums_avx512(double *s1o, double *s2o, const float *xp, int hw, double shift) {
    const __m512 vs = _mm512_set1_ps((float)shift);
    __m512d d1 = _mm512_setzero_pd(), d2 = _mm512_setzero_pd();
    for (int j0 = 0; j0 < hw; j0 += BN_SUM_CHUNK) {
        const int end = NASC_MIN(hw, j0 + BN_SUM_CHUNK);
        __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps();
        int j = j0;
        for (; j + 32 <= end; j += 32) {
            __m512 u = _mm512_sub_ps(_mm512_loadu_ps(xp + j), vs), v = _mm512_sub_ps(_mm512_loadu_ps(xp + j + 16), vs);
            a1 = _mm512_add_ps(a1, u), a2 = _mm512_fmadd_ps(u, u, a2);
            b1 = _mm512_add_ps(b1, v), b2 = _mm512_fmadd_ps(v, v, b2);
        }
        for (; j < end; j += 16) {
            __mmask16 m = first_lanes(end - j);
            __m512 u = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xp + j), vs);
            a1 = _mm512_add_ps(a1, u), a2 = _mm512_fmadd_ps(u, u, a2);
        }
        d1 = add_lanes_pd(d1, _mm512_add_ps(a1, b1));
        d2 = add_lanes_pd(d2, _mm512_add_ps(a2, b2));
    }
    *s1o = _mm512_reduce_add_pd(d1), *s2o = _mm512_reduce_add_pd(d2);
}
#endif

static void bn_apply(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale, float b) {
#if CONV_X86
    if (use_avx512()) {
        bn_apply_avx512(act, y, x, hw, mhi, mlo, scale, b);
        return;
    }
    if (use_avx2()) {
        bn_apply_avx2(act, y, x, hw, mhi, mlo, scale, b);
        return;
    }
#endif
    bn_apply_c(act, y, x, hw, mhi, mlo, scale, b);
}

static void bn_sums(double *s1o, double *s2o, const float *xp, int hw, double shift) {
#if CONV_X86
    if (use_avx512()) {
        bn_sums_avx512(s1o, s2o, xp, hw, shift);
        return;
    }
    if (use_avx2()) {
        bn_sums_avx2(s1o, s2o, xp, hw, shift);
        return;
    }
#endif
    bn_sums_c(s1o, s2o, xp, hw, shift);
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

/* Runs of rows (below, with the backward's kernels). */
static void apply_rows(ActKind act, float *y, const float *x, size_t nr, int hw, int ch0, int c,
                       const float *const k[4]);
static void stats_rows(double *rs, const float *x, size_t r0, size_t nr, int hw);

/* Each row's sums about its own first value (ops.h): the per-row part of the statistics. */
void bn_row_stats(double *rs, const float *x, size_t r0, size_t nr, int hw) {
    stats_rows(rs + 3 * r0, x, r0, nr, hw);
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
            const float *const ks[4] = {k, k + c, k + 2 * (size_t)c, k + 3 * (size_t)c};
#pragma omp parallel num_threads(threads_get()) if (par)
            {
                int lo, hi;
                split_range(n * c, thread_count(), thread_id(), &lo, &hi);
                if (lo < hi)
                    apply_rows(act, y + (size_t)lo * hw, x + (size_t)lo * hw, (size_t)(hi - lo), hw, lo % c, c, ks);
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
        double rs[3 * BN_BLOCK_MAX];
        for (int i = 0; i < n; i++) {
            if (i + BN_PF_AHEAD < n) prefetch_range(x + (i + BN_PF_AHEAD) * stride + (size_t)c0 * hw, run * sizeof(float), 0);
            /* each row about its first value, as bn_row_stats */
            stats_rows(rs, x + i * stride + (size_t)c0 * hw, (size_t)i * c + c0, (size_t)(c1 - c0), hw);
            for (int ch = c0; ch < c1; ch++) {
                const double *o = rs + 3 * (ch - c0);
                bn_add_row(&s1[ch - c0], &s2[ch - c0], o[0], o[1], o[2], shift[ch - c0], hw);
            }
        }
        for (int ch = c0; ch < c1; ch++) {
            int k = ch - c0;
            bn_channel(&st, ch, s1[k], s2[k], shift[k], &mhi[k], &mlo[k], &scale[k], &b[k]);
        }
        const float *const ks[4] = {mhi, mlo, scale, b};
        for (int i = 0; i < n && y; i++) {
            if (i + BN_PF_AHEAD < n) prefetch_range(y + (i + BN_PF_AHEAD) * stride + (size_t)c0 * hw, run * sizeof(float), 1);
            size_t o = i * stride + (size_t)c0 * hw;
            apply_rows(act, y + o, x + o, (size_t)(c1 - c0), hw, 0, c1 - c0, ks);
        }
    }
}

/* Channel ch's eval scale, gamma / sqrt(var + eps), rounded once from double. */
static float eval_scale(const float *gamma, const float *running_var, int ch, float eps) {
    double is = 1.0 / sqrt((double)running_var[ch] + (double)eps);
    return (float)((gamma ? (double)gamma[ch] : 1.0) * is);
}

void bn_eval_scales(float *scale, const float *gamma, const float *running_var, int c, float eps) {
    for (int ch = 0; ch < c; ch++) scale[ch] = eval_scale(gamma, running_var, ch, eps);
}

void bn_eval_rows(const BnEval *k, float *y, const float *x, size_t r0, size_t nr, int c, int hw) {
    NASC_ASSERT(fusable(k->act));
    const float *const ks[4] = {k->mean, NULL, k->scale, k->beta};
    apply_rows(k->act, y, x, nr, hw, (int)(r0 % (size_t)c), c, ks);
}

static void bn_eval_core(ActKind act, float *y, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, int n, int c, int hw, float eps) {
    NASC_ASSERT(fusable(act));
    size_t stride = (size_t)c * hw;
    int par = (size_t)n * stride >= BN_PAR_MIN && (c > 1 || n > 1);
    if (c == 1 && n > 1) { /* one channel: split the images instead */
        float scale = eval_scale(gamma, running_var, 0, eps), b = beta ? beta[0] : 0.0f;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
        for (int i = 0; i < n; i++) bn_apply(act, y + i * stride, x + i * stride, hw, running_mean[0], 0.0f, scale, b);
        return;
    }
    int bs = bn_block(c, hw), nblk = (c + bs - 1) / bs; /* blocks visited image by image (above) */
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * bs, c1 = NASC_MIN(c, c0 + bs);
        float scale[BN_BLOCK_MAX];
        for (int ch = c0; ch < c1; ch++) scale[ch - c0] = eval_scale(gamma, running_var, ch, eps);
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
MULTIVERSION static void bn_bwd_sums_c(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp,
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
MULTIVERSION static void bn_bwd_dx_c(ActKind act, float *dxp, const float *dyp, const float *xp, int hw,
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

#if CONV_X86
/* The activation's derivative mask of one vector: where the forward's BN output v (bn_affine,
 * bit for bit the forward's) passed the activation; all lanes without one. */
AVX512 __attribute__((always_inline)) static inline __mmask16 act_mask(const ActKind act, __m512 x, __m512 vh,
                                                                        __m512 vl, __m512 vs, __m512 vb) {
    if (act != ACT_RELU && act != ACT_RELU6) return (__mmask16)0xFFFF;
    __m512 v = bn_affine(x, vh, vl, vs, vb);
    __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
    if (act == ACT_RELU6) m &= _mm512_cmp_ps_mask(v, _mm512_set1_ps(6.0f), _CMP_LT_OQ);
    return m;
}

AVX512 __attribute__((always_inline)) static inline void bwd_sums_avx512(const ActKind act, double *sdyo,
                                                                          double *sdyxco, const float *dyp,
                                                                          const float *xp, int hw, const BnBwdK *k) {
    const __m512 vh = _mm512_set1_ps(k->mhi), vl = _mm512_set1_ps(k->mlo), vs = _mm512_set1_ps(k->scale),
                 vb = _mm512_set1_ps(k->b);
    __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= hw; j += 32) {
        __m512 x0 = _mm512_loadu_ps(xp + j), x1 = _mm512_loadu_ps(xp + j + 16);
        __m512 g0 = _mm512_maskz_loadu_ps(act_mask(act, x0, vh, vl, vs, vb), dyp + j);
        __m512 g1 = _mm512_maskz_loadu_ps(act_mask(act, x1, vh, vl, vs, vb), dyp + j + 16);
        a1 = _mm512_add_ps(a1, g0), a2 = _mm512_fmadd_ps(g0, _mm512_sub_ps(x0, vh), a2);
        b1 = _mm512_add_ps(b1, g1), b2 = _mm512_fmadd_ps(g1, _mm512_sub_ps(x1, vh), b2);
    }
    for (; j < hw; j += 16) {
        __mmask16 m = first_lanes(hw - j);
        __m512 x0 = _mm512_maskz_loadu_ps(m, xp + j);
        __m512 g0 = _mm512_maskz_loadu_ps(m & act_mask(act, x0, vh, vl, vs, vb), dyp + j);
        a1 = _mm512_add_ps(a1, g0), a2 = _mm512_fmadd_ps(g0, _mm512_sub_ps(x0, vh), a2);
    }
    *sdyo = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    *sdyxco = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
}

AVX512 static void bn_bwd_sums_avx512(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp,
                                      int hw, const BnBwdK *k) {
    BY_ACT(act, bwd_sums_avx512, sdyo, sdyxco, dyp, xp, hw, k);
}

/* dx (+)= (a g + bb (x - mhi)) + c0 on the lanes m of one vector, as bn_bwd_dx_c. */
AVX512 __attribute__((always_inline)) static inline void bwd_dx_vec(const ActKind act, float *dxp, const float *dyp,
                                                                     const float *xp, __mmask16 m, int acc,
                                                                     const __m512 *c) {
    __m512 x = _mm512_maskz_loadu_ps(m, xp);
    __m512 g = _mm512_maskz_loadu_ps(m & act_mask(act, x, c[0], c[1], c[2], c[3]), dyp);
    __m512 r = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(c[4], g), _mm512_mul_ps(c[5], _mm512_sub_ps(x, c[0]))),
                             c[6]);
    if (acc) r = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dxp), r);
    _mm512_mask_storeu_ps(dxp, m, r);
}

AVX512 __attribute__((always_inline)) static inline void bwd_dx_avx512(const ActKind act, float *dxp,
                                                                        const float *dyp, const float *xp, int hw,
                                                                        const BnBwdK *k, int acc) {
    const __m512 c[7] = {_mm512_set1_ps(k->mhi), _mm512_set1_ps(k->mlo), _mm512_set1_ps(k->scale),
                         _mm512_set1_ps(k->b),   _mm512_set1_ps(k->a),   _mm512_set1_ps(k->bb),
                         _mm512_set1_ps(k->c0)};
    int j = 0;
    for (; j + 16 <= hw; j += 16) bwd_dx_vec(act, dxp + j, dyp + j, xp + j, (__mmask16)0xFFFF, acc, c);
    if (j < hw) bwd_dx_vec(act, dxp + j, dyp + j, xp + j, first_lanes(hw - j), acc, c);
}

AVX512 static void bn_bwd_dx_avx512(ActKind act, float *dxp, const float *dyp, const float *xp, int hw,
                                    const BnBwdK *k, int acc) {
    BY_ACT(act, bwd_dx_avx512, dxp, dyp, xp, hw, k, acc);
}
#endif

static void bn_bwd_sums(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp, int hw,
                        const BnBwdK *k) {
#if CONV_X86
    if (use_avx512()) {
        bn_bwd_sums_avx512(sdyo, sdyxco, act, dyp, xp, hw, k);
        return;
    }
    if (use_avx2()) {
        bn_bwd_sums_avx2(sdyo, sdyxco, act, dyp, xp, hw, k);
        return;
    }
#endif
    bn_bwd_sums_c(sdyo, sdyxco, act, dyp, xp, hw, k);
}

static void bn_bwd_dx(ActKind act, float *dxp, const float *dyp, const float *xp, int hw, const BnBwdK *k, int acc) {
#if CONV_X86
    if (use_avx512()) {
        bn_bwd_dx_avx512(act, dxp, dyp, xp, hw, k, acc);
        return;
    }
    if (use_avx2()) {
        bn_bwd_dx_avx2(act, dxp, dyp, xp, hw, k, acc);
        return;
    }
#endif
    bn_bwd_dx_c(act, dxp, dyp, xp, hw, k, acc);
}

/* ------------------------------------------------------------------ runs of rows
 * The kernels above over nr consecutive rows of hw values (rows r at r * hw), row r of channel
 * (ch0 + r) % c. On the AVX-512 and AVX2 paths rows of up to BN_SUM_CHUNK values are walked
 * as one stream of vectors: a vector that straddles two rows takes each lane's constants from its
 * row (a blend), so a 7x7 plane costs about 3 vectors instead of 4 and none of the per-row
 * loop setup; the sums of the two rows' lanes go to their own accumulators. The values are
 * bit for bit the per-row kernels' for apply and dx, and the same sums in the same lanes (so
 * the same results) for the statistics: each row's lanes are summed in its own vectors. */
#if CONV_X86
/* The per-row constants of channel ch as vectors: mhi, mlo, scale, b, then a, bb, c0 (bwd). */
AVX512 __attribute__((always_inline)) static inline void fwd_consts(__m512 v[4], const float *const k[4], int ch) {
    v[0] = _mm512_set1_ps(k[0][ch]), v[1] = _mm512_set1_ps(k[1] ? k[1][ch] : 0.0f);
    v[2] = _mm512_set1_ps(k[2][ch]), v[3] = _mm512_set1_ps(k[3] ? k[3][ch] : 0.0f);
}
AVX512 __attribute__((always_inline)) static inline void bwd_consts(__m512 v[7], const BnBwdK *k) {
    v[0] = _mm512_set1_ps(k->mhi), v[1] = _mm512_set1_ps(k->mlo), v[2] = _mm512_set1_ps(k->scale);
    v[3] = _mm512_set1_ps(k->b), v[4] = _mm512_set1_ps(k->a), v[5] = _mm512_set1_ps(k->bb);
    v[6] = _mm512_set1_ps(k->c0);
}

/* Lanes [a, 16) of a vector. */
static inline __mmask16 lanes_from(int a) { return (__mmask16)~first_lanes(a); }

/* The run's elements are walked in vectors on a fixed grid: rows r span [r hw, (r + 1) hw), a
 * row's inner vectors take its constants, and the vector that straddles a row's end takes
 * each lane's from its own row. For the sums the grid starts `lead` elements before the run (a
 * first vector partly masked off), lead being the run's first element's offset in its tensor
 * modulo 16: each row is then summed in the same lanes and order whichever run it is in, so
 * the fused and the unfused paths agree bit for bit. */
AVX512 __attribute__((always_inline)) static inline void apply_stream(const ActKind act, float *y, const float *x,
                                                                       size_t nr, int hw, int ch0, int c,
                                                                       const float *const k[4]) {
    ptrdiff_t q = 0;
    int ch = ch0;
    __m512 cur[4], nxt[4], kv[4];
    fwd_consts(cur, k, ch);
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 16 <= e; q += 16)
            _mm512_storeu_ps(y + q, act_vec(act, bn_affine(_mm512_loadu_ps(x + q), cur[0], cur[1], cur[2], cur[3])));
        if (r + 1 == nr) { /* the run's last vector: its row only */
            if (q < e) {
                const __mmask16 m = first_lanes((int)(e - q));
                __m512 v = bn_affine(_mm512_maskz_loadu_ps(m, x + q), cur[0], cur[1], cur[2], cur[3]);
                _mm512_mask_storeu_ps(y + q, m, act_vec(act, v));
            }
            break;
        }
        ch = ch + 1 == c ? 0 : ch + 1;
        fwd_consts(nxt, k, ch);
        if (q < e) { /* lanes [e - q, 16) are the next row's */
            for (int i = 0; i < 4; i++) kv[i] = _mm512_mask_blend_ps(lanes_from((int)(e - q)), cur[i], nxt[i]);
            _mm512_storeu_ps(y + q, act_vec(act, bn_affine(_mm512_loadu_ps(x + q), kv[0], kv[1], kv[2], kv[3])));
            q += 16;
        }
        for (int i = 0; i < 4; i++) cur[i] = nxt[i];
    }
}

AVX512 __attribute__((always_inline)) static inline void bwd_dx_stream(const ActKind act, float *dx, const float *dy,
                                                                        const float *x, size_t nr, int hw, int ch0,
                                                                        int c, const BnBwdK *k, int acc) {
    ptrdiff_t q = 0;
    int ch = ch0;
    __m512 cur[7], nxt[7], kv[7];
    bwd_consts(cur, &k[ch]);
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 16 <= e; q += 16) bwd_dx_vec(act, dx + q, dy + q, x + q, (__mmask16)0xFFFF, acc, cur);
        if (r + 1 == nr) { /* the run's last vector: its row only */
            if (q < e) bwd_dx_vec(act, dx + q, dy + q, x + q, first_lanes((int)(e - q)), acc, cur);
            break;
        }
        ch = ch + 1 == c ? 0 : ch + 1;
        bwd_consts(nxt, &k[ch]);
        if (q < e) {
            for (int i = 0; i < 7; i++) kv[i] = _mm512_mask_blend_ps(lanes_from((int)(e - q)), cur[i], nxt[i]);
            bwd_dx_vec(act, dx + q, dy + q, x + q, (__mmask16)0xFFFF, acc, kv);
            q += 16;
        }
        for (int i = 0; i < 7; i++) cur[i] = nxt[i];
    }
}

/* Row statistics (bn_row_stats' layout: sum, sum of squares about the row's first value, that
 * value) of the rows r0.. of a tensor, rows of at most BN_SUM_CHUNK values, in float lanes. */
AVX512 static void stats_stream(double *rs, const float *x, size_t r0, size_t nr, int hw) {
    const ptrdiff_t total = (ptrdiff_t)(nr * (size_t)hw), lead = (ptrdiff_t)(r0 * (size_t)hw % 16);
    ptrdiff_t q = -lead;
    __m512 s1 = _mm512_setzero_ps(), s2 = s1, n1 = s1, n2 = s1;
    __m512 sh = _mm512_set1_ps(x[0]);
    if (lead) { /* the first vector: row 0's lanes only */
        __m512 u = _mm512_maskz_sub_ps(lanes_from((int)lead), _mm512_maskz_loadu_ps(lanes_from((int)lead), x + q), sh);
        s1 = u, s2 = _mm512_mul_ps(u, u);
        q += 16;
    }
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 16 <= e; q += 16) {
            __m512 u = _mm512_sub_ps(_mm512_loadu_ps(x + q), sh);
            s1 = _mm512_add_ps(s1, u), s2 = _mm512_fmadd_ps(u, u, s2);
        }
        __m512 shn = r + 1 < nr ? _mm512_set1_ps(x[e]) : sh;
        n1 = n2 = _mm512_setzero_ps();
        if (q < e) { /* lanes [e - q, 16) are the next row's */
            const __mmask16 m = first_lanes((int)NASC_MIN(16, total - q)), hi = lanes_from((int)(e - q)) & m;
            __m512 v = _mm512_maskz_loadu_ps(m, x + q);
            __m512 u = _mm512_maskz_sub_ps(m & ~hi, v, sh), t = _mm512_maskz_sub_ps(hi, v, shn);
            s1 = _mm512_add_ps(s1, u), s2 = _mm512_fmadd_ps(u, u, s2);
            n1 = t, n2 = _mm512_mul_ps(t, t);
            q += 16;
        }
        double *o = rs + 3 * r;
        o[0] = _mm512_reduce_add_ps(s1), o[1] = _mm512_reduce_add_ps(s2), o[2] = x[e - hw];
        s1 = n1, s2 = n2, sh = shn;
    }
}

/* bn_bwd_sums of the rows r0.. of a tensor, rows of at most BN_SUM_CHUNK values (rs: 2 per
 * row, at row r0's). */
AVX512 __attribute__((always_inline)) static inline void bwd_sums_stream(const ActKind act, double *rs,
                                                                          const float *dy, const float *x, size_t r0,
                                                                          size_t nr, int hw, int c,
                                                                          const BnBwdK *k) {
    const ptrdiff_t lead = (ptrdiff_t)(r0 * (size_t)hw % 16);
    ptrdiff_t q = -lead;
    int ch = (int)(r0 % (size_t)c);
    __m512 cur[7], nxt[7];
    bwd_consts(cur, &k[ch]);
    __m512 s1 = _mm512_setzero_ps(), s2 = s1, n1 = s1, n2 = s1;
    if (lead) {
        const __mmask16 m = lanes_from((int)lead);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + q);
        __m512 g = _mm512_maskz_loadu_ps(m & act_mask(act, xv, cur[0], cur[1], cur[2], cur[3]), dy + q);
        s1 = g, s2 = _mm512_mul_ps(g, _mm512_maskz_sub_ps(m, xv, cur[0]));
        q += 16;
    }
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 16 <= e; q += 16) {
            __m512 xv = _mm512_loadu_ps(x + q);
            __m512 g = _mm512_maskz_loadu_ps(act_mask(act, xv, cur[0], cur[1], cur[2], cur[3]), dy + q);
            s1 = _mm512_add_ps(s1, g), s2 = _mm512_fmadd_ps(g, _mm512_sub_ps(xv, cur[0]), s2);
        }
        const int last = r + 1 == nr; /* (then the vector's lanes past e are past the run) */
        if (!last) ch = ch + 1 == c ? 0 : ch + 1, bwd_consts(nxt, &k[ch]);
        n1 = n2 = _mm512_setzero_ps();
        if (q < e) {
            const __mmask16 lo = first_lanes((int)(e - q)), hi = last ? 0 : (__mmask16)~lo;
            __m512 xv = _mm512_maskz_loadu_ps(lo | hi, x + q);
            __m512 g = _mm512_maskz_loadu_ps(lo & act_mask(act, xv, cur[0], cur[1], cur[2], cur[3]), dy + q);
            s1 = _mm512_add_ps(s1, g), s2 = _mm512_fmadd_ps(g, _mm512_sub_ps(xv, cur[0]), s2);
            if (!last) {
                __m512 h = _mm512_maskz_loadu_ps(hi & act_mask(act, xv, nxt[0], nxt[1], nxt[2], nxt[3]), dy + q);
                n1 = h, n2 = _mm512_mul_ps(h, _mm512_maskz_sub_ps(hi, xv, nxt[0]));
            }
            q += 16;
        }
        rs[2 * r] = _mm512_reduce_add_ps(s1), rs[2 * r + 1] = _mm512_reduce_add_ps(s2);
        s1 = n1, s2 = n2;
        for (int i = 0; i < 7; i++) cur[i] = nxt[i];
    }
}

AVX512 static void apply_stream_avx512(ActKind act, float *y, const float *x, size_t nr, int hw, int ch0, int c,
                                       const float *const k[4]) {
    BY_ACT(act, apply_stream, y, x, nr, hw, ch0, c, k);
}

AVX512 static void bwd_dx_stream_avx512(ActKind act, float *dx, const float *dy, const float *x, size_t nr, int hw,
                                        int ch0, int c, const BnBwdK *k, int acc) {
    BY_ACT(act, bwd_dx_stream, dx, dy, x, nr, hw, ch0, c, k, acc);
}

AVX512 static void bwd_sums_stream_avx512(ActKind act, double *rs, const float *dy, const float *x, size_t r0,
                                          size_t nr, int hw, int c, const BnBwdK *k) {
    BY_ACT(act, bwd_sums_stream, rs, dy, x, r0, nr, hw, c, k);
}
#endif

#if CONV_X86
/* The stream walks in AVX2 + FMA, for machines without AVX-512: the same walks in vectors of 8
 * lanes (the sums' grid at the run's first element's offset in its tensor modulo 8), masks as
 * vectors of all-ones lanes, and each run's last, partial vector stored through a buffer
 * (AVX2's masked stores are slow on AMD). Before them these rows went one call a row through
 * the portable kernels, whose short rows cost more around the vectors than in them (28% of
 * mbv2's training step with NASC_GEMM=avx2 on an AVX-512 machine, where those kernels still ran
 * their AVX-512 clones; batch 128, 2 threads: the step 114.8 -> 106.3 ms). */
/* Lanes [0, n) of a vector as a mask of all-ones lanes (lanes8_mask, conv_internal.h). */
AVX2F_INLINE __m256 lanes8(int n) { return _mm256_castsi256_ps(lanes8_mask(n)); }

/* The horizontal sum of v in a fixed order. */
AVX2F_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* bn_affine and act_vec in 8 lanes (the same operations, so the same values). */
AVX2F_INLINE __m256 bn_affine8(__m256 x, __m256 mhi, __m256 mlo, __m256 sc, __m256 b) {
    return _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(x, mhi), mlo), sc), b);
}
AVX2F_INLINE __m256 act_vec8(ActKind act, __m256 v) {
    if (act == ACT_RELU || act == ACT_RELU6) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == ACT_RELU6) v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
    return v;
}
/* act_mask in 8 lanes: all-ones where the activation passed the forward's output. */
AVX2F_INLINE __m256 act_mask8(const ActKind act, __m256 x, const __m256 *c) {
    if (act != ACT_RELU && act != ACT_RELU6) return _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    __m256 v = bn_affine8(x, c[0], c[1], c[2], c[3]);
    __m256 m = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    if (act == ACT_RELU6) m = _mm256_and_ps(m, _mm256_cmp_ps(v, _mm256_set1_ps(6.0f), _CMP_LT_OQ));
    return m;
}

AVX2F_INLINE void fwd_consts8(__m256 v[4], const float *const k[4], int ch) {
    v[0] = _mm256_set1_ps(k[0][ch]), v[1] = _mm256_set1_ps(k[1] ? k[1][ch] : 0.0f);
    v[2] = _mm256_set1_ps(k[2][ch]), v[3] = _mm256_set1_ps(k[3] ? k[3][ch] : 0.0f);
}
AVX2F_INLINE void bwd_consts8(__m256 v[7], const BnBwdK *k) {
    v[0] = _mm256_set1_ps(k->mhi), v[1] = _mm256_set1_ps(k->mlo), v[2] = _mm256_set1_ps(k->scale);
    v[3] = _mm256_set1_ps(k->b), v[4] = _mm256_set1_ps(k->a), v[5] = _mm256_set1_ps(k->bb);
    v[6] = _mm256_set1_ps(k->c0);
}

AVX2F_INLINE void apply_stream8(const ActKind act, float *y, const float *x, size_t nr, int hw, int ch0, int c,
                                const float *const k[4]) {
    ptrdiff_t q = 0;
    int ch = ch0;
    __m256 cur[4], nxt[4], kv[4];
    fwd_consts8(cur, k, ch);
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 8 <= e; q += 8)
            _mm256_storeu_ps(y + q, act_vec8(act, bn_affine8(_mm256_loadu_ps(x + q), cur[0], cur[1], cur[2], cur[3])));
        if (r + 1 == nr) { /* the run's last vector: its row only */
            if (q < e) {
                const int n = (int)(e - q);
                __m256 v = bn_affine8(_mm256_maskload_ps(x + q, lanes8_mask(n)), cur[0], cur[1], cur[2], cur[3]);
                store8_first(y + q, act_vec8(act, v), n);
            }
            break;
        }
        ch = ch + 1 == c ? 0 : ch + 1;
        fwd_consts8(nxt, k, ch);
        if (q < e) { /* lanes [e - q, 8) are the next row's */
            const __m256 lo = lanes8((int)(e - q));
            for (int i = 0; i < 4; i++) kv[i] = _mm256_blendv_ps(nxt[i], cur[i], lo);
            _mm256_storeu_ps(y + q, act_vec8(act, bn_affine8(_mm256_loadu_ps(x + q), kv[0], kv[1], kv[2], kv[3])));
            q += 8;
        }
        for (int i = 0; i < 4; i++) cur[i] = nxt[i];
    }
}

/* dx (+)= (a g + bb (x - mhi)) + c0 on the first n lanes of one vector, as bwd_dx_vec. */
AVX2F_INLINE void bwd_dx_vec8(const ActKind act, float *dxp, const float *dyp, const float *xp, int n, int acc,
                              const __m256 *c) {
    const __m256i li = lanes8_mask(n);
    __m256 x = n >= 8 ? _mm256_loadu_ps(xp) : _mm256_maskload_ps(xp, li);
    __m256 dv = n >= 8 ? _mm256_loadu_ps(dyp) : _mm256_maskload_ps(dyp, li);
    __m256 g = _mm256_and_ps(dv, act_mask8(act, x, c));
    __m256 r = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(c[4], g), _mm256_mul_ps(c[5], _mm256_sub_ps(x, c[0]))),
                             c[6]);
    if (acc) r = _mm256_add_ps(n >= 8 ? _mm256_loadu_ps(dxp) : _mm256_maskload_ps(dxp, li), r);
    store8_first(dxp, r, n);
}

AVX2F_INLINE void bwd_dx_stream8(const ActKind act, float *dx, const float *dy, const float *x, size_t nr, int hw,
                                 int ch0, int c, const BnBwdK *k, int acc) {
    ptrdiff_t q = 0;
    int ch = ch0;
    __m256 cur[7], nxt[7], kv[7];
    bwd_consts8(cur, &k[ch]);
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 8 <= e; q += 8) bwd_dx_vec8(act, dx + q, dy + q, x + q, 8, acc, cur);
        if (r + 1 == nr) { /* the run's last vector: its row only */
            if (q < e) bwd_dx_vec8(act, dx + q, dy + q, x + q, (int)(e - q), acc, cur);
            break;
        }
        ch = ch + 1 == c ? 0 : ch + 1;
        bwd_consts8(nxt, &k[ch]);
        if (q < e) {
            const __m256 lo = lanes8((int)(e - q));
            for (int i = 0; i < 7; i++) kv[i] = _mm256_blendv_ps(nxt[i], cur[i], lo);
            bwd_dx_vec8(act, dx + q, dy + q, x + q, 8, acc, kv);
            q += 8;
        }
        for (int i = 0; i < 7; i++) cur[i] = nxt[i];
    }
}

/* stats_stream in 8 lanes. */
AVX2F static void stats_stream_avx2(double *rs, const float *x, size_t r0, size_t nr, int hw) {
    const ptrdiff_t total = (ptrdiff_t)(nr * (size_t)hw), lead = (ptrdiff_t)(r0 * (size_t)hw % 8);
    ptrdiff_t q = -lead;
    __m256 s1 = _mm256_setzero_ps(), s2 = s1, n1 = s1, n2 = s1;
    __m256 sh = _mm256_set1_ps(x[0]);
    if (lead) { /* the first vector: row 0's lanes only */
        const __m256 m = _mm256_andnot_ps(lanes8((int)lead), lanes8(8));
        __m256 u = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + q, _mm256_castps_si256(m)), sh), m);
        s1 = u, s2 = _mm256_mul_ps(u, u);
        q += 8;
    }
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 8 <= e; q += 8) {
            __m256 u = _mm256_sub_ps(_mm256_loadu_ps(x + q), sh);
            s1 = _mm256_add_ps(s1, u), s2 = _mm256_fmadd_ps(u, u, s2);
        }
        __m256 shn = r + 1 < nr ? _mm256_set1_ps(x[e]) : sh;
        n1 = n2 = _mm256_setzero_ps();
        if (q < e) { /* lanes [e - q, 8) are the next row's */
            const __m256 m = lanes8((int)NASC_MIN(8, total - q)), lo = lanes8((int)(e - q));
            const __m256 hi = _mm256_andnot_ps(lo, m);
            __m256 v = _mm256_maskload_ps(x + q, _mm256_castps_si256(m));
            __m256 u = _mm256_and_ps(_mm256_sub_ps(v, sh), lo), t = _mm256_and_ps(_mm256_sub_ps(v, shn), hi);
            s1 = _mm256_add_ps(s1, u), s2 = _mm256_fmadd_ps(u, u, s2);
            n1 = t, n2 = _mm256_mul_ps(t, t);
            q += 8;
        }
        double *o = rs + 3 * r;
        o[0] = hsum8(s1), o[1] = hsum8(s2), o[2] = x[e - hw];
        s1 = n1, s2 = n2, sh = shn;
    }
}

/* bwd_sums_stream in 8 lanes. */
AVX2F_INLINE void bwd_sums_stream8(const ActKind act, double *rs, const float *dy, const float *x, size_t r0,
                                   size_t nr, int hw, int c, const BnBwdK *k) {
    const ptrdiff_t lead = (ptrdiff_t)(r0 * (size_t)hw % 8);
    ptrdiff_t q = -lead;
    int ch = (int)(r0 % (size_t)c);
    __m256 cur[7], nxt[7];
    bwd_consts8(cur, &k[ch]);
    __m256 s1 = _mm256_setzero_ps(), s2 = s1, n1 = s1, n2 = s1;
    if (lead) {
        const __m256 m = _mm256_andnot_ps(lanes8((int)lead), lanes8(8));
        const __m256i mi = _mm256_castps_si256(m);
        __m256 xv = _mm256_maskload_ps(x + q, mi);
        __m256 g = _mm256_and_ps(_mm256_maskload_ps(dy + q, mi), _mm256_and_ps(m, act_mask8(act, xv, cur)));
        s1 = g, s2 = _mm256_mul_ps(g, _mm256_and_ps(_mm256_sub_ps(xv, cur[0]), m));
        q += 8;
    }
    for (size_t r = 0; r < nr; r++) {
        const ptrdiff_t e = (ptrdiff_t)((r + 1) * (size_t)hw);
        for (; q + 8 <= e; q += 8) {
            __m256 xv = _mm256_loadu_ps(x + q);
            __m256 g = _mm256_and_ps(_mm256_loadu_ps(dy + q), act_mask8(act, xv, cur));
            s1 = _mm256_add_ps(s1, g), s2 = _mm256_fmadd_ps(g, _mm256_sub_ps(xv, cur[0]), s2);
        }
        const int last = r + 1 == nr; /* (then the vector's lanes past e are past the run) */
        if (!last) ch = ch + 1 == c ? 0 : ch + 1, bwd_consts8(nxt, &k[ch]);
        n1 = n2 = _mm256_setzero_ps();
        if (q < e) {
            const __m256 lo = lanes8((int)(e - q)), hi = last ? _mm256_setzero_ps() : _mm256_andnot_ps(lo, lanes8(8));
            const __m256i mi = _mm256_castps_si256(_mm256_or_ps(lo, hi));
            __m256 xv = _mm256_maskload_ps(x + q, mi), dv = _mm256_maskload_ps(dy + q, mi);
            __m256 g = _mm256_and_ps(dv, _mm256_and_ps(lo, act_mask8(act, xv, cur)));
            s1 = _mm256_add_ps(s1, g), s2 = _mm256_fmadd_ps(g, _mm256_sub_ps(xv, cur[0]), s2);
            if (!last) {
                __m256 h = _mm256_and_ps(dv, _mm256_and_ps(hi, act_mask8(act, xv, nxt)));
                n1 = h, n2 = _mm256_mul_ps(h, _mm256_and_ps(_mm256_sub_ps(xv, nxt[0]), hi));
            }
            q += 8;
        }
        rs[2 * r] = hsum8(s1), rs[2 * r + 1] = hsum8(s2);
        s1 = n1, s2 = n2;
        for (int i = 0; i < 7; i++) cur[i] = nxt[i];
    }
}

AVX2F_INLINE void apply8(const ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                         float b) {
    const __m256 vh = _mm256_set1_ps(mhi), vl = _mm256_set1_ps(mlo), vs = _mm256_set1_ps(scale),
                 vb = _mm256_set1_ps(b);
    int j = 0;
    for (; j + 8 <= hw; j += 8)
        _mm256_storeu_ps(y + j, act_vec8(act, bn_affine8(_mm256_loadu_ps(x + j), vh, vl, vs, vb)));
    if (j < hw)
        store8_first(y + j, act_vec8(act, bn_affine8(_mm256_maskload_ps(x + j, lanes8_mask(hw - j)), vh, vl, vs, vb)),
                     hw - j);
}

AVX2F static void bn_apply_avx2(ActKind act, float *y, const float *x, int hw, float mhi, float mlo, float scale,
                                float b) {
    BY_ACT(act, apply8, y, x, hw, mhi, mlo, scale, b);
}

/* The float lanes of a into a double accumulator. */
AVX2F_INLINE __m256d add_lanes8_pd(__m256d acc, __m256 a) {
    return _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                            _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))));
}

AVX2F_INLINE double hsum4_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* bn_sums_avx512 in 8 lanes. */
AVX2F static void bn_sums_avx2(double *s1o, double *s2o, const float *xp, int hw, double shift) {
    const __m256 vs = _mm256_set1_ps((float)shift);
    __m256d d1 = _mm256_setzero_pd(), d2 = _mm256_setzero_pd();
    for (int j0 = 0; j0 < hw; j0 += BN_SUM_CHUNK) {
        const int end = NASC_MIN(hw, j0 + BN_SUM_CHUNK);
        __m256 a1 = _mm256_setzero_ps(), a2 = a1, b1 = a1, b2 = a1;
        int j = j0;
        for (; j + 16 <= end; j += 16) {
            __m256 u = _mm256_sub_ps(_mm256_loadu_ps(xp + j), vs), v = _mm256_sub_ps(_mm256_loadu_ps(xp + j + 8), vs);
            a1 = _mm256_add_ps(a1, u), a2 = _mm256_fmadd_ps(u, u, a2);
            b1 = _mm256_add_ps(b1, v), b2 = _mm256_fmadd_ps(v, v, b2);
        }
        for (; j < end; j += 8) {
            const __m256 m = lanes8(end - j);
            __m256 u = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(xp + j, _mm256_castps_si256(m)), vs), m);
            a1 = _mm256_add_ps(a1, u), a2 = _mm256_fmadd_ps(u, u, a2);
        }
        d1 = add_lanes8_pd(d1, _mm256_add_ps(a1, b1));
        d2 = add_lanes8_pd(d2, _mm256_add_ps(a2, b2));
    }
    *s1o = hsum4_pd(d1), *s2o = hsum4_pd(d2);
}

/* bwd_sums_avx512 in 8 lanes. */
AVX2F_INLINE void bwd_sums8(const ActKind act, double *sdyo, double *sdyxco, const float *dyp, const float *xp,
                            int hw, const BnBwdK *k) {
    __m256 c[7];
    bwd_consts8(c, k);
    __m256 a1 = _mm256_setzero_ps(), a2 = a1, b1 = a1, b2 = a1;
    int j = 0;
    for (; j + 16 <= hw; j += 16) {
        __m256 x0 = _mm256_loadu_ps(xp + j), x1 = _mm256_loadu_ps(xp + j + 8);
        __m256 g0 = _mm256_and_ps(_mm256_loadu_ps(dyp + j), act_mask8(act, x0, c));
        __m256 g1 = _mm256_and_ps(_mm256_loadu_ps(dyp + j + 8), act_mask8(act, x1, c));
        a1 = _mm256_add_ps(a1, g0), a2 = _mm256_fmadd_ps(g0, _mm256_sub_ps(x0, c[0]), a2);
        b1 = _mm256_add_ps(b1, g1), b2 = _mm256_fmadd_ps(g1, _mm256_sub_ps(x1, c[0]), b2);
    }
    for (; j < hw; j += 8) {
        const __m256 m = lanes8(hw - j);
        const __m256i mi = _mm256_castps_si256(m);
        __m256 x0 = _mm256_maskload_ps(xp + j, mi);
        __m256 g0 = _mm256_and_ps(_mm256_maskload_ps(dyp + j, mi), _mm256_and_ps(m, act_mask8(act, x0, c)));
        a1 = _mm256_add_ps(a1, g0), a2 = _mm256_fmadd_ps(g0, _mm256_sub_ps(x0, c[0]), a2);
    }
    *sdyo = hsum8(_mm256_add_ps(a1, b1));
    *sdyxco = hsum8(_mm256_add_ps(a2, b2));
}

AVX2F static void bn_bwd_sums_avx2(double *sdyo, double *sdyxco, ActKind act, const float *dyp, const float *xp,
                                   int hw, const BnBwdK *k) {
    BY_ACT(act, bwd_sums8, sdyo, sdyxco, dyp, xp, hw, k);
}

AVX2F_INLINE void bwd_dx8(const ActKind act, float *dxp, const float *dyp, const float *xp, int hw, const BnBwdK *k,
                          int acc) {
    __m256 c[7];
    bwd_consts8(c, k);
    int j = 0;
    for (; j + 8 <= hw; j += 8) bwd_dx_vec8(act, dxp + j, dyp + j, xp + j, 8, acc, c);
    if (j < hw) bwd_dx_vec8(act, dxp + j, dyp + j, xp + j, hw - j, acc, c);
}

AVX2F static void bn_bwd_dx_avx2(ActKind act, float *dxp, const float *dyp, const float *xp, int hw, const BnBwdK *k,
                                 int acc) {
    BY_ACT(act, bwd_dx8, dxp, dyp, xp, hw, k, acc);
}

AVX2F static void apply_stream_avx2(ActKind act, float *y, const float *x, size_t nr, int hw, int ch0, int c,
                                    const float *const k[4]) {
    BY_ACT(act, apply_stream8, y, x, nr, hw, ch0, c, k);
}
AVX2F static void bwd_dx_stream_avx2(ActKind act, float *dx, const float *dy, const float *x, size_t nr, int hw,
                                     int ch0, int c, const BnBwdK *k, int acc) {
    BY_ACT(act, bwd_dx_stream8, dx, dy, x, nr, hw, ch0, c, k, acc);
}
AVX2F static void bwd_sums_stream_avx2(ActKind act, double *rs, const float *dy, const float *x, size_t r0,
                                       size_t nr, int hw, int c, const BnBwdK *k) {
    BY_ACT(act, bwd_sums_stream8, rs, dy, x, r0, nr, hw, c, k);
}

/* Rows short enough for the stream walk (and at least 16 values, so a vector meets at most two
 * rows), on the AVX-512 or AVX2 path. */
static int stream_rows(int hw) { return (use_avx512() || use_avx2()) && hw >= 16 && hw <= BN_SUM_CHUNK; }
#endif

/* y = act(bn(x)) over a run of rows; k: the channels' mhi, mlo, scale and b (mlo and b NULL: 0). */
static void apply_rows(ActKind act, float *y, const float *x, size_t nr, int hw, int ch0, int c,
                       const float *const k[4]) {
#if CONV_X86
    if (stream_rows(hw)) {
        if (use_avx512())
            apply_stream_avx512(act, y, x, nr, hw, ch0, c, k);
        else
            apply_stream_avx2(act, y, x, nr, hw, ch0, c, k);
        return;
    }
#endif
    for (size_t r = 0, ch = (size_t)ch0; r < nr; r++, ch = ch + 1 == (size_t)c ? 0 : ch + 1)
        bn_apply(act, y + r * hw, x + r * hw, hw, k[0][ch], k[1] ? k[1][ch] : 0.0f, k[2][ch], k[3] ? k[3][ch] : 0.0f);
}

/* bn_row_stats over the run of rows r0.. (x and rs at row r0's; rs: 3 per row). */
static void stats_rows(double *rs, const float *x, size_t r0, size_t nr, int hw) {
#if CONV_X86
    if (stream_rows(hw)) {
        if (use_avx512())
            stats_stream(rs, x, r0, nr, hw);
        else
            stats_stream_avx2(rs, x, r0, nr, hw);
        return;
    }
#endif
    for (size_t r = 0; r < nr; r++) {
        const float *xr = x + r * hw;
        bn_sums(&rs[3 * r], &rs[3 * r + 1], xr, hw, xr[0]);
        rs[3 * r + 2] = xr[0];
    }
}

/* dx (+)= BN's backward over a run of rows (k: the channels' constants). */
static void bwd_dx_rows(ActKind act, float *dx, const float *dy, const float *x, size_t nr, int hw, int ch0, int c,
                        const BnBwdK *k, int acc) {
#if CONV_X86
    if (stream_rows(hw)) {
        if (use_avx512())
            bwd_dx_stream_avx512(act, dx, dy, x, nr, hw, ch0, c, k, acc);
        else
            bwd_dx_stream_avx2(act, dx, dy, x, nr, hw, ch0, c, k, acc);
        return;
    }
#endif
    for (size_t r = 0, ch = (size_t)ch0; r < nr; r++, ch = ch + 1 == (size_t)c ? 0 : ch + 1)
        bn_bwd_dx(act, dx + r * hw, dy + r * hw, x + r * hw, hw, &k[ch], acc);
}

/* The backward's row sums over the run of rows r0.. (dy, x and rs at row r0's; rs: 2 per row). */
static void bwd_sums_rows(double *rs, ActKind act, const float *dy, const float *x, size_t r0, size_t nr, int hw,
                          int c, const BnBwdK *k) {
#if CONV_X86
    if (stream_rows(hw)) {
        if (use_avx512())
            bwd_sums_stream_avx512(act, rs, dy, x, r0, nr, hw, c, k);
        else
            bwd_sums_stream_avx2(act, rs, dy, x, r0, nr, hw, c, k);
        return;
    }
#endif
    for (size_t r = 0; r < nr; r++)
        bn_bwd_sums(&rs[2 * r], &rs[2 * r + 1], act, dy + r * hw, x + r * hw, hw, &k[(r0 + r) % (size_t)c]);
}

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
#pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            split_range((int)rows, thread_count(), thread_id(), &lo, &hi);
            if (lo < hi)
                bwd_sums_rows(sums + 2 * (size_t)lo, act, dy + (size_t)lo * hw, x + (size_t)lo * hw, (size_t)lo,
                              (size_t)(hi - lo), hw, c, kc);
        }
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
#pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            split_range((int)rows, thread_count(), thread_id(), &lo, &hi);
            if (lo < hi)
                bwd_dx_rows(act, dx + (size_t)lo * hw, dy + (size_t)lo * hw, x + (size_t)lo * hw, (size_t)(hi - lo), hw,
                            lo % c, c, kc, accumulate);
        }
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
    bwd_sums_rows(s->rs + 2 * r0, s->act, dy, s->x + r0 * s->hw, r0, nr, s->hw, s->c, s->k);
}

const float *grad_rows(const GradSrc *s, float *buf, size_t r0, size_t nr) {
    if (!s->k) return s->dy + r0 * s->hw;
    const size_t hw = (size_t)s->hw;
    bwd_dx_rows(s->act, buf, s->dy + r0 * hw, s->x + r0 * hw, nr, s->hw, (int)(r0 % (size_t)s->c), s->c, s->k, 0);
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

/* A made input's per-channel constants, as arrays (apply_rows' k): mhi = the saved mean, mlo
 * and scale (saved after invstd), b = beta (NULL: 0). */
static void act_arrays(const ActSrc *s, const float *k[4]) {
    const size_t c = (size_t)s->c;
    k[0] = s->saved, k[1] = s->saved + 2 * c, k[2] = s->saved + 3 * c, k[3] = s->beta;
}

void act_consts(const ActSrc *s, int ch, float k[4]) {
    const float *ks[4];
    act_arrays(s, ks);
    for (int i = 0; i < 3; i++) k[i] = ks[i][ch];
    k[3] = ks[3] ? ks[3][ch] : 0.0f;
}

void act_row(ActKind act, const float k[4], float *y, const float *x, int n) {
    bn_apply(act, y, x, n, k[0], k[1], k[2], k[3]);
}

const float *act_rows(const ActSrc *s, float *buf, size_t r0, size_t nr) {
    if (!s->saved) return s->x + r0 * s->hw;
    const float *ks[4];
    act_arrays(s, ks);
    apply_rows(s->act, buf, s->x + r0 * s->hw, nr, s->hw, (int)(r0 % (size_t)s->c), s->c, ks);
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
