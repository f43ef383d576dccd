/* elem.c: elementwise and channel ops: n-ary add, channel concat, channel scale
 * (squeeze-excitation) and inverted dropout.
 *
 * add sums its inputs in order (x0 + x1 + ...), so the fast kernel gives the same bits as
 * the reference; y may be one of the inputs. Backward accumulates dy into every non-NULL
 * input gradient; if the same tensor appears twice, passing its gradient twice adds 2 dy.
 * Dropout draws its mask from the caller's Rng in element order (one rng_uniform per
 * element when 0 < p < 1), so a seed reproduces it.
 */
#include "ops.h"
#include "simd.h"

/* ------------------------------------------------------------------ reference */

void add_forward_ref(real *y, const real *const *xs, int nin, size_t n) {
    NASC_ASSERT(nin >= 1);
    for (size_t i = 0; i < n; i++) {
        real s = xs[0][i];
        for (int j = 1; j < nin; j++) s += xs[j][i];
        y[i] = s;
    }
}

void add_backward_ref(real *const *dxs, const real *dy, int nin, size_t n) {
    for (int j = 0; j < nin; j++) {
        if (!dxs[j]) continue;
        for (size_t i = 0; i < n; i++) dxs[j][i] += dy[i];
    }
}

void concat_forward_ref(real *y, const real *const *xs, const int *cs, int nin, int n, int hw) {
    int ctot = 0;
    for (int j = 0; j < nin; j++) ctot += cs[j];
    for (int i = 0; i < n; i++) {
        real *yp = y + (size_t)i * ctot * hw;
        for (int j = 0; j < nin; j++) {
            size_t len = (size_t)cs[j] * hw;
            memcpy(yp, xs[j] + (size_t)i * len, len * sizeof(real));
            yp += len;
        }
    }
}

void concat_backward_ref(real *const *dxs, const real *dy, const int *cs, int nin, int n, int hw) {
    int ctot = 0;
    for (int j = 0; j < nin; j++) ctot += cs[j];
    for (int i = 0; i < n; i++) {
        const real *dyp = dy + (size_t)i * ctot * hw;
        for (int j = 0; j < nin; j++) {
            size_t len = (size_t)cs[j] * hw;
            if (dxs[j]) {
                real *dxp = dxs[j] + (size_t)i * len;
                for (size_t t = 0; t < len; t++) dxp[t] += dyp[t];
            }
            dyp += len;
        }
    }
}

void chmul_forward_ref(real *y, const real *x, const real *s, int n, int c, int hw) {
    for (size_t p = 0; p < (size_t)n * c; p++)
        for (int j = 0; j < hw; j++) y[p * hw + j] = x[p * hw + j] * s[p];
}

void chmul_backward_ref(real *dx, real *ds, const real *dy, const real *x, const real *s, int n, int c,
                        int hw) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        if (dx)
            for (int j = 0; j < hw; j++) dx[p * hw + j] += dy[p * hw + j] * s[p];
        if (ds) {
            double acc = 0;
            for (int j = 0; j < hw; j++) acc += (double)dy[p * hw + j] * x[p * hw + j];
            ds[p] += (real)acc;
        }
    }
}

void dropout_forward_ref(real *y, real *mask, const real *x, size_t n, real p, Rng *rng) {
    NASC_ASSERT(p >= 0 && p <= 1);
    if (p == 0 || p == 1) {
        /* Nothing dropped, or everything (PyTorch: p = 1 gives zeros); no draws. */
        real m = p == 0 ? 1 : 0;
        for (size_t i = 0; i < n; i++) {
            mask[i] = m;
            y[i] = x[i] * m;
        }
        return;
    }
    real keep = (real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++) {
        mask[i] = rng_uniform(rng) < (double)p ? 0 : keep;
        y[i] = x[i] * mask[i];
    }
}

void dropout_backward_ref(real *dx, const real *dy, const real *mask, size_t n) {
    if (!dx) return;
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * mask[i];
}

/* ------------------------------------------------------------------ fast float */
#ifndef NASC_REF_ONLY

#define ADD_CHUNK 2048 /* floats per block: a block of the sum stays in L1 */
#define ADD_PAR_MIN 65536
#define ADD_SRC_MAX 64 /* inputs of add_src_forward */

/* One block of len <= ADD_CHUNK values: y = act(sum of the inputs) (act = ACT_COUNT: no
 * activation, else ReLU or ReLU6), through a local buffer (y may alias any input). The sum is
 * the same with or without the activation, so add then act gives the fused output's bits. */
MULTIVERSION static void add_block(ActKind act, float *y, const float *const *xs, int nin, size_t lo, size_t len) {
    float acc[ADD_CHUNK];
    const float *x0 = xs[0] + lo;
#pragma omp simd
    for (size_t i = 0; i < len; i++) acc[i] = x0[i];
    for (int j = 1; j < nin; j++) {
        const float *xj = xs[j] + lo;
#pragma omp simd
        for (size_t i = 0; i < len; i++) acc[i] += xj[i];
    }
    float *yp = y + lo;
    if (act == ACT_RELU) {
#pragma omp simd
        for (size_t i = 0; i < len; i++) yp[i] = acc[i] > 0 ? acc[i] : 0.0f;
    } else if (act == ACT_RELU6) {
#pragma omp simd
        for (size_t i = 0; i < len; i++) yp[i] = acc[i] > 0 ? (acc[i] < 6 ? acc[i] : 6.0f) : 0.0f;
    } else {
#pragma omp simd
        for (size_t i = 0; i < len; i++) yp[i] = acc[i];
    }
}

static void add_forward_core(ActKind act, float *y, const float *const *xs, int nin, size_t n) {
    NASC_ASSERT(nin >= 1);
    long nblocks = (long)((n + ADD_CHUNK - 1) / ADD_CHUNK);
    int par = n >= ADD_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long b = 0; b < nblocks; b++) {
        size_t lo = (size_t)b * ADD_CHUNK;
        add_block(act, y, xs, nin, lo, NASC_MIN((size_t)ADD_CHUNK, n - lo));
    }
}

void add_forward(float *y, const float *const *xs, int nin, size_t n) { add_forward_core(ACT_COUNT, y, xs, nin, n); }

/* add fused with a following ReLU / ReLU6 (a residual join): one pass forward, and the
 * backward writes dy * act'(y) into every input gradient in one pass, so the sum and its
 * gradient are never stored. */
void add_act_forward(ActKind act, float *y, const float *const *xs, int nin, size_t n) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6);
    add_forward_core(act, y, xs, nin, n);
}

void add_src_forward(ActKind act, float *y, const ActSrc *xs, int nin, size_t rows, int hw) {
    NASC_ASSERT(nin >= 1 && nin <= ADD_SRC_MAX && hw >= 1);
    int made = 0;
    for (int j = 0; j < nin; j++) made += xs[j].saved != NULL;
    /* blocks of whole rows, at most ADD_CHUNK values (or one row) */
    const size_t per = hw >= ADD_CHUNK ? 1 : ADD_CHUNK / (size_t)hw;
    const long nblocks = (long)((rows + per - 1) / per);
    const int par = rows * (size_t)hw >= ADD_PAR_MIN;
#pragma omp parallel num_threads(threads_get()) if (par)
    {
        float *buf = made ? scratch_get(0, (size_t)made * per * hw * sizeof(float)) : NULL;
#pragma omp for schedule(static)
        for (long b = 0; b < nblocks; b++) {
            const size_t r0 = (size_t)b * per, nr = NASC_MIN(per, rows - r0), len = nr * hw;
            const float *in[ADD_SRC_MAX];
            for (int j = 0, m = 0; j < nin; j++)
                in[j] = act_rows(&xs[j], xs[j].saved ? buf + (size_t)m++ * per * hw : NULL, r0, nr);
            float *yb = y + r0 * hw;
            for (size_t lo = 0; lo < len; lo += ADD_CHUNK)
                add_block(act, yb, in, nin, lo, NASC_MIN((size_t)ADD_CHUNK, len - lo));
        }
    }
}

void add_backward(float *const *dxs, const float *dy, int nin, size_t n) { add_backward_ex(dxs, dy, nin, n, NULL); }

/* One block of the backward: g = dy, masked by act'(y) with an activation (relu: y > 0, relu6:
 * 0 < y < 6, the conditions on the sum; as act_backward's, 0 + the masked dy), then each
 * non-NULL dx_j (+)= g in input order. */
MULTIVERSION static void add_back_block(ActKind act, float *const *dxs, const float *dy, const float *y, int nin,
                                        const int *accumulate, size_t lo, size_t len) {
    float gbuf[ADD_CHUNK];
    const float *g = dy + lo, *yp = y ? y + lo : NULL;
    if (act == ACT_RELU) {
#pragma omp simd
        for (size_t i = 0; i < len; i++) gbuf[i] = 0.0f + keep_if(g[i], yp[i] > 0);
        g = gbuf;
    } else if (act == ACT_RELU6) {
#pragma omp simd
        for (size_t i = 0; i < len; i++) gbuf[i] = 0.0f + keep_if(g[i], (yp[i] > 0) & (yp[i] < 6));
        g = gbuf;
    }
    for (int j = 0; j < nin; j++) {
        if (!dxs[j]) continue;
        float *dxp = dxs[j] + lo;
        if (accumulate && !accumulate[j]) {
            memcpy(dxp, g, len * sizeof(float));
            continue;
        }
#pragma omp simd
        for (size_t i = 0; i < len; i++) dxp[i] += g[i];
    }
}

static void add_backward_core(ActKind act, float *const *dxs, const float *dy, const float *y, int nin, size_t n,
                              const int *accumulate) {
    int par = n >= ADD_PAR_MIN;
    long nblocks = (long)((n + ADD_CHUNK - 1) / ADD_CHUNK);
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long b = 0; b < nblocks; b++) {
        size_t lo = (size_t)b * ADD_CHUNK;
        add_back_block(act, dxs, dy, y, nin, accumulate, lo, NASC_MIN((size_t)ADD_CHUNK, n - lo));
    }
}

/* Inputs are handled in order within each block, so a gradient passed twice with flags
 * {0, 1} gets dy + dy. */
void add_backward_ex(float *const *dxs, const float *dy, int nin, size_t n, const int *accumulate) {
    add_backward_core(ACT_COUNT, dxs, dy, NULL, nin, n, accumulate);
}

void add_act_backward(ActKind act, float *const *dxs, const float *dy, const float *y, int nin, size_t n,
                      const int *accumulate) {
    NASC_ASSERT(act == ACT_RELU || act == ACT_RELU6);
    add_backward_core(act, dxs, dy, y, nin, n, accumulate);
}

#endif /* NASC_REF_ONLY */
