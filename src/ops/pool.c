/* pool.c: max pool, average pool and global average pool over NCHW planes, PyTorch
 * semantics (floor mode, square kernel, symmetric padding <= k/2).
 *
 *   - Max pool treats padding as -inf, so the maximum is always an in-bounds cell; it saves
 *     the flat index (row * w + col within the h*w plane) of each output's maximum. Ties go
 *     to the first maximum in row-major window order and a NaN wins, as in PyTorch.
 *   - Average pool divides by the number of in-bounds cells (count_include_pad = 0) or by
 *     the window's area clipped to the PADDED bounds (count_include_pad = 1, PyTorch's rule;
 *     in floor mode that is always k*k).
 *   - Global average pool: y (N, C) = mean of x (N, C, hw) over hw.
 *
 * Every plane is independent, so the fast kernels split the N*C planes over threads and
 * walk each window over its clipped row/column ranges; average pooling with stride 1 is
 * separable box sums (3x3 with padding 1, NAS-Bench-201's avg_pool_3x3, a plane at a time as
 * one stream of vectors, AVX-512), and 2x2 windows with stride 2 and no padding (NAS-Bench-201's
 * reduction shortcut) are summed a row pair and 16 outputs at a time (AVX-512).
 */
#include "conv_internal.h" /* use_avx512, lane_range */
#include "ops.h"

#include <math.h>
#include <string.h>

int pool_dims_init(PoolDims *d, Err *e) {
    if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1) {
        err_set(e, "pool: input shape (%d, %d, %d, %d) has an empty dimension", d->n, d->c, d->h, d->w);
        return NASC_ERR;
    }
    if (d->k < 1) {
        err_set(e, "pool: kernel size must be at least 1 (got %d)", d->k);
        return NASC_ERR;
    }
    if (d->stride < 1) {
        err_set(e, "pool: stride must be at least 1 (got %d)", d->stride);
        return NASC_ERR;
    }
    if (d->pad < 0 || d->pad > d->k / 2) {
        err_set(e, "pool: padding %d must be between 0 and half the kernel size (k=%d allows up to %d)",
                d->pad, d->k, d->k / 2);
        return NASC_ERR;
    }
    if (d->h + 2 * d->pad < d->k || d->w + 2 * d->pad < d->k) {
        err_set(e, "pool: a %dx%d window (padding %d) does not fit the %dx%d input: output would be empty",
                d->k, d->k, d->pad, d->h, d->w);
        return NASC_ERR;
    }
    d->oh = (d->h + 2 * d->pad - d->k) / d->stride + 1;
    d->ow = (d->w + 2 * d->pad - d->k) / d->stride + 1;
    return NASC_OK;
}

/* Window of output (oy, ox): rows [*h0, *h1) and cols [*w0, *w1) clipped to the input;
 * returns the divisor of average pooling. */
static inline int pool_window(const PoolDims *d, int oy, int ox, int *h0, int *h1, int *w0, int *w1) {
    int hs = oy * d->stride - d->pad, ws = ox * d->stride - d->pad;
    int he = NASC_MIN(hs + d->k, d->h + d->pad), we = NASC_MIN(ws + d->k, d->w + d->pad);
    int padded_area = (he - hs) * (we - ws);
    *h0 = NASC_MAX(hs, 0);
    *w0 = NASC_MAX(ws, 0);
    *h1 = NASC_MIN(he, d->h);
    *w1 = NASC_MIN(we, d->w);
    return d->count_include_pad ? padded_area : (*h1 - *h0) * (*w1 - *w0);
}

/* ------------------------------------------------------------------ reference */

void maxpool_forward_ref(real *y, int32_t *argmax, const real *x, const PoolDims *d) {
    size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const real *xp = x + p * d->h * d->w;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                real best = -INFINITY;
                int bi = -1;
                for (int ky = 0; ky < d->k; ky++)
                    for (int kx = 0; kx < d->k; kx++) {
                        int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        real v = xp[iy * d->w + ix];
                        if (bi < 0 || v > best || isnan(v)) {
                            best = v;
                            bi = iy * d->w + ix;
                        }
                    }
                NASC_ASSERT(bi >= 0);
                size_t o = (p * d->oh + oy) * d->ow + ox;
                y[o] = best;
                argmax[o] = bi;
            }
    }
}

void maxpool_backward_ref(real *dx, const real *dy, const int32_t *argmax, const PoolDims *d) {
    if (!dx) return;
    size_t planes = (size_t)d->n * d->c, ohw = (size_t)d->oh * d->ow;
    for (size_t p = 0; p < planes; p++)
        for (size_t o = 0; o < ohw; o++) dx[p * d->h * d->w + argmax[p * ohw + o]] += dy[p * ohw + o];
}

void avgpool_forward_ref(real *y, const real *x, const PoolDims *d) {
    size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const real *xp = x + p * d->h * d->w;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                int div = pool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                double s = 0;
                for (int ky = 0; ky < d->k; ky++)
                    for (int kx = 0; kx < d->k; kx++) {
                        int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        s += xp[iy * d->w + ix];
                    }
                y[(p * d->oh + oy) * d->ow + ox] = (real)(s / div);
            }
    }
}

void avgpool_backward_ref(real *dx, const real *dy, const PoolDims *d) {
    if (!dx) return;
    size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        real *dxp = dx + p * d->h * d->w;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                int div = pool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                real g = dy[(p * d->oh + oy) * d->ow + ox] / (real)div;
                for (int ky = 0; ky < d->k; ky++)
                    for (int kx = 0; kx < d->k; kx++) {
                        int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        dxp[iy * d->w + ix] += g;
                    }
            }
    }
}

void gap_forward_ref(real *y, const real *x, int n, int c, int hw) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        double s = 0;
        for (int j = 0; j < hw; j++) s += x[p * hw + j];
        y[p] = (real)(s / hw);
    }
}

void gap_backward_ref(real *dx, const real *dy, int n, int c, int hw) {
    if (!dx) return;
    for (size_t p = 0; p < (size_t)n * c; p++) {
        real g = dy[p] / (real)hw;
        for (int j = 0; j < hw; j++) dx[p * hw + j] += g;
    }
}

/* ------------------------------------------------------------------ fast float */
#ifndef NASC_REF_ONLY

#define POOL_PAR_MIN 16384

void maxpool_forward(float *y, int32_t *argmax, const float *x, const PoolDims *d) {
    long planes = (long)d->n * d->c;
    int par = planes > 1 && (size_t)planes * d->h * d->w >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * d->h * d->w;
        float *yp = y + (size_t)p * d->oh * d->ow;
        int32_t *ap = argmax + (size_t)p * d->oh * d->ow;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                pool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                int bi = h0 * d->w + w0;
                float best = xp[bi];
                for (int iy = h0; iy < h1; iy++)
                    for (int ix = w0; ix < w1; ix++) {
                        float v = xp[iy * d->w + ix];
                        if (v > best || isnan(v)) {
                            best = v;
                            bi = iy * d->w + ix;
                        }
                    }
                yp[oy * d->ow + ox] = best;
                ap[oy * d->ow + ox] = bi;
            }
    }
}

void maxpool_backward(float *dx, const float *dy, const int32_t *argmax, const PoolDims *d) {
    if (!dx) return;
    long planes = (long)d->n * d->c;
    size_t ohw = (size_t)d->oh * d->ow;
    int par = planes > 1 && (size_t)planes * d->h * d->w >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        float *dxp = dx + (size_t)p * d->h * d->w;
        const float *dyp = dy + (size_t)p * ohw;
        const int32_t *ap = argmax + (size_t)p * ohw;
        for (size_t o = 0; o < ohw; o++) dxp[ap[o]] += dyp[o];
    }
}

/* Stride-1 average pooling is separable: a box sum along each row (from a zero-padded copy
 * of the row), then a box sum of k rows, then one division per output. The divisor is k*k
 * with count_include_pad (stride 1 with pad <= k/2 never reaches past the padding), else
 * rows(oy) * cols(ox) of the window that lies inside the image. The backward is the same
 * with the window reflected: input i gathers outputs i-q .. i+pad, q = k-1-pad. */
static void avgpool_divisors(const PoolDims *d, float *rdiv, float *cdiv) {
    for (int oy = 0; oy < d->oh; oy++)
        rdiv[oy] = d->count_include_pad ? (float)d->k
                                        : (float)(NASC_MIN(oy - d->pad + d->k, d->h) - NASC_MAX(oy - d->pad, 0));
    for (int ox = 0; ox < d->ow; ox++)
        cdiv[ox] = d->count_include_pad ? (float)d->k
                                        : (float)(NASC_MIN(ox - d->pad + d->k, d->w) - NASC_MAX(ox - d->pad, 0));
}

/* rows[r][j] = sum_{t<k} src_r[j - lead + t] (zero outside 0..len-1), j < outlen. The caller
 * guarantees lead + len <= outlen + k - 1 (the padded row fits in buf). */
static void box_rows(float *rows, const float *src, int nrows, int len, int outlen, int lead, int k, float *buf) {
    int blen = outlen + k - 1;
    for (int j = 0; j < lead; j++) buf[j] = 0.0f;
    for (int j = lead + len; j < blen; j++) buf[j] = 0.0f;
    for (int r = 0; r < nrows; r++) {
        memcpy(buf + lead, src + (size_t)r * len, (size_t)len * sizeof(float));
        float *o = rows + (size_t)r * outlen;
        if (k == 3) {
#pragma omp simd
            for (int j = 0; j < outlen; j++) o[j] = buf[j] + buf[j + 1] + buf[j + 2];
            continue;
        }
        for (int j = 0; j < outlen; j++) o[j] = buf[j];
        for (int t = 1; t < k; t++)
#pragma omp simd
            for (int j = 0; j < outlen; j++) o[j] += buf[j + t];
    }
}

static void avgpool_s1_forward_plane(float *yp, const float *xp, const PoolDims *d, const float *rdiv,
                                     const float *cdiv, float *rows, float *buf) {
    box_rows(rows, xp, d->h, d->w, d->ow, d->pad, d->k, buf);
    for (int oy = 0; oy < d->oh; oy++) {
        int r0 = NASC_MAX(oy - d->pad, 0), r1 = NASC_MIN(oy - d->pad + d->k, d->h);
        float *o = yp + (size_t)oy * d->ow;
        const float *a = rows + (size_t)r0 * d->ow;
        for (int j = 0; j < d->ow; j++) o[j] = a[j];
        for (int r = r0 + 1; r < r1; r++) {
            a = rows + (size_t)r * d->ow;
#pragma omp simd
            for (int j = 0; j < d->ow; j++) o[j] += a[j];
        }
        float rd = rdiv[oy];
#pragma omp simd
        for (int j = 0; j < d->ow; j++) o[j] /= rd * cdiv[j];
    }
}

static void avgpool_s1_backward_plane(float *dxp, const float *dyp, const PoolDims *d, const float *rdiv,
                                      const float *cdiv, float *g, float *rows, float *buf) {
    int q = d->k - 1 - d->pad;
    for (int oy = 0; oy < d->oh; oy++) {
        float rd = rdiv[oy];
#pragma omp simd
        for (int j = 0; j < d->ow; j++) g[(size_t)oy * d->ow + j] = dyp[(size_t)oy * d->ow + j] / (rd * cdiv[j]);
    }
    box_rows(rows, g, d->oh, d->ow, d->w, q, d->k, buf);
    for (int iy = 0; iy < d->h; iy++) {
        int r0 = NASC_MAX(iy - q, 0), r1 = NASC_MIN(iy + d->pad + 1, d->oh);
        float *o = dxp + (size_t)iy * d->w;
        for (int r = r0; r < r1; r++) {
            const float *a = rows + (size_t)r * d->w;
#pragma omp simd
            for (int j = 0; j < d->w; j++) o[j] += a[j];
        }
    }
}

/* Scratch for one thread's stride-1 plane: divisors, the row sums, g (backward), a row. */
static void avgpool_s1_scratch(const PoolDims *d, float **rdiv, float **cdiv, float **rows, float **g,
                               float **buf) {
    size_t hw = (size_t)NASC_MAX(d->h, d->oh) * NASC_MAX(d->w, d->ow), row = (size_t)NASC_MAX(d->w, d->ow) + 2 * d->k;
    float *s = scratch_get(0, (2 * hw + row + d->oh + d->ow + 64) * sizeof(float));
    *rows = s, *g = s + hw, *buf = s + 2 * hw, *rdiv = *buf + row, *cdiv = *rdiv + d->oh;
    avgpool_divisors(d, *rdiv, *cdiv);
}

size_t box3_masks_bytes(int h, int w) {
    const size_t nv = ((size_t)h * w + 15) / 16;
    return (5 * nv * sizeof(uint16_t) + 63) / 64 * 64;
}

void *box3_masks_init(Box3Masks *m, void *mem, int h, int w) {
    const int hw = h * w, nv = (hw + 15) / 16;
    uint16_t *a = mem;
    m->hw = hw, m->w = w, m->nv = nv;
    m->all = a, m->left = a + nv, m->right = a + 2 * nv, m->up = a + 3 * nv, m->down = a + 4 * nv;
    for (int v = 0; v < nv; v++) {
        unsigned all = 0, l = 0, r = 0, u = 0, dn = 0;
        for (int i = 0; i < 16; i++) {
            int p = 16 * v + i;
            if (p >= hw) break;
            int row = p / w, col = p % w;
            all |= 1u << i;
            l |= (unsigned)(col > 0) << i, r |= (unsigned)(col < w - 1) << i;
            u |= (unsigned)(row > 0) << i, dn |= (unsigned)(row < h - 1) << i;
        }
        m->all[v] = (uint16_t)all, m->left[v] = (uint16_t)l, m->right[v] = (uint16_t)r;
        m->up[v] = (uint16_t)u, m->down[v] = (uint16_t)dn;
    }
    return (char *)mem + box3_masks_bytes(h, w);
}

#if CONV_X86
/* 3x3 windows, stride 1, padding 1 (NAS-Bench-201's avg_pool_3x3), AVX-512: a plane is one
 * stream of vectors whatever its width (a 7x7 plane is four vectors, not seven short rows),
 * each cell's neighbours in the plane taken by masked loads at +-1 and +-w. The same sums in
 * the same order as the separable path (row sums with zero padding, then rows r0..r1; the
 * backward adds them to dx one row at a time) and the same divisors, so the results are those
 * of avgpool_s1_*_plane (bitwise, but for the sign of a zero: a missing row adds +0). */
typedef struct {
    Box3Masks m;
    float *div; /* rdiv(row) * cdiv(col) per cell */
} Box3;

static int is_box3(const PoolDims *d) {
    return d->k == 3 && d->stride == 1 && d->pad == 1 && use_avx512() && (size_t)d->h * d->w <= (1u << 20);
}

/* Bytes for the masks and divisors of d's planes (the masks, then hw floats: box3_init). */
static size_t box3_bytes(const PoolDims *d) {
    return box3_masks_bytes(d->h, d->w) + (size_t)d->h * d->w * sizeof(float);
}

static void box3_init(Box3 *b, void *s, const PoolDims *d, const float *rdiv, const float *cdiv) {
    b->div = box3_masks_init(&b->m, s, d->h, d->w);
    for (int p = 0; p < b->m.hw; p++) b->div[p] = rdiv[p / d->w] * cdiv[p % d->w];
}

/* hs = the row sums (left + centre) + right of x's plane. */
__attribute__((target("avx512f"))) static void box3_rows(float *hs, const float *x, const Box3 *b) {
    for (int v = 0; v < b->m.nv; v++) {
        const float *p = x + 16 * v;
        __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(b->m.left[v], p - 1), _mm512_maskz_loadu_ps(b->m.all[v], p));
        _mm512_mask_storeu_ps(hs + 16 * v, b->m.all[v], _mm512_add_ps(s, _mm512_maskz_loadu_ps(b->m.right[v], p + 1)));
    }
}

/* Forward of one plane: y = ((hs above + hs) + hs below) / div. */
__attribute__((target("avx512f"))) static void box3_forward_plane(float *y, const float *x, float *hs,
                                                                  const Box3 *b) {
    box3_rows(hs, x, b);
    for (int v = 0; v < b->m.nv; v++) {
        const float *p = hs + 16 * v;
        __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(b->m.up[v], p - b->m.w), _mm512_maskz_loadu_ps(b->m.all[v], p));
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(b->m.down[v], p + b->m.w));
        _mm512_mask_storeu_ps(y + 16 * v, b->m.all[v],
                              _mm512_div_ps(s, _mm512_maskz_loadu_ps(b->m.all[v], b->div + 16 * v)));
    }
}

/* Backward of one plane: g = dy / div, its row sums, then dx += the row above, the row, the
 * row below, in that order. */
__attribute__((target("avx512f"))) static void box3_backward_plane(float *dx, const float *dy, float *g, float *hs,
                                                                   const Box3 *b) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int v = 0; v < b->m.nv; v++)
        _mm512_mask_storeu_ps(g + 16 * v, b->m.all[v],
                              _mm512_div_ps(_mm512_maskz_loadu_ps(b->m.all[v], dy + 16 * v),
                                            _mm512_mask_loadu_ps(one, b->m.all[v], b->div + 16 * v)));
    box3_rows(hs, g, b);
    for (int v = 0; v < b->m.nv; v++) {
        const float *p = hs + 16 * v;
        __m512 s = _mm512_maskz_loadu_ps(b->m.all[v], dx + 16 * v);
        s = _mm512_mask_add_ps(s, b->m.up[v], s, _mm512_maskz_loadu_ps(b->m.up[v], p - b->m.w));
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(b->m.all[v], p));
        s = _mm512_mask_add_ps(s, b->m.down[v], s, _mm512_maskz_loadu_ps(b->m.down[v], p + b->m.w));
        _mm512_mask_storeu_ps(dx + 16 * v, b->m.all[v], s);
    }
}
#endif

/* Stride 1, all planes: the forward (out = y, in = x) or the backward (out = dx, in = dy). */
static void avgpool_s1(float *out, const float *in, const PoolDims *d, int backward) {
    long planes = (long)d->n * d->c;
    int par = planes > 1 && (size_t)planes * d->h * d->w >= POOL_PAR_MIN;
    size_t xs = (size_t)d->h * d->w, ys = (size_t)d->oh * d->ow;
#if CONV_X86
    if (is_box3(d)) {
#pragma omp parallel num_threads(threads_get()) if (par)
        {
            float *rdiv, *cdiv, *rows, *g, *buf;
            avgpool_s1_scratch(d, &rdiv, &cdiv, &rows, &g, &buf); /* rows, g: hs and g here */
            void *bs = scratch_get(GRAD_SLOT, box3_bytes(d));
            Box3 b;
            box3_init(&b, bs, d, rdiv, cdiv);
#pragma omp for schedule(static)
            for (long p = 0; p < planes; p++) {
                if (backward) box3_backward_plane(out + p * xs, in + p * ys, g, rows, &b);
                else box3_forward_plane(out + p * ys, in + p * xs, rows, &b);
            }
        }
        return;
    }
#endif
#pragma omp parallel num_threads(threads_get()) if (par)
    {
        float *rdiv, *cdiv, *rows, *g, *buf;
        avgpool_s1_scratch(d, &rdiv, &cdiv, &rows, &g, &buf);
#pragma omp for schedule(static)
        for (long p = 0; p < planes; p++) {
            if (backward) avgpool_s1_backward_plane(out + p * xs, in + p * ys, d, rdiv, cdiv, g, rows, buf);
            else avgpool_s1_forward_plane(out + p * ys, in + p * xs, d, rdiv, cdiv, rows, buf);
        }
    }
}

#if CONV_X86
/* 2x2 windows, stride 2, no padding: a row pair's columns 32 at a time, split into even and
 * odd ones with permutes: y = ((x00 + x10) + (x01 + x11)) / 4. */
__attribute__((target("avx512f"))) static void avgpool22_forward_plane(float *yp, const float *xp, const PoolDims *d) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 q = _mm512_set1_ps(0.25f);
    const int ow = d->ow, w = d->w;
    for (int oy = 0; oy < d->oh; oy++) {
        const float *r0 = xp + (size_t)2 * oy * w, *r1 = r0 + w;
        float *yr = yp + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox += 16) {
            const int c = 2 * ox;
            const __mmask16 ma = lane_range(c, 0, 2 * ow), mb = lane_range(c + 16, 0, 2 * ow);
            __m512 a = _mm512_add_ps(_mm512_maskz_loadu_ps(ma, r0 + c), _mm512_maskz_loadu_ps(ma, r1 + c));
            __m512 b = _mm512_add_ps(_mm512_maskz_loadu_ps(mb, r0 + c + 16), _mm512_maskz_loadu_ps(mb, r1 + c + 16));
            __m512 sum = _mm512_add_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
            _mm512_mask_storeu_ps(yr + ox, lane_range(ox, 0, ow), _mm512_mul_ps(sum, q));
        }
    }
}

/* Its backward: each dy / 4 added to the 2x2 cells of its window (every dx cell has at most
 * one window). */
__attribute__((target("avx512f"))) static void avgpool22_backward_plane(float *dxp, const float *dyp,
                                                                        const PoolDims *d) {
    const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __m512 q = _mm512_set1_ps(0.25f); /* dy / 4 exactly */
    const int ow = d->ow, w = d->w;
    for (int oy = 0; oy < d->oh; oy++)
        for (int ox = 0; ox < ow; ox += 16) {
            const __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(lane_range(ox, 0, ow), dyp + (size_t)oy * ow + ox), q);
            const __m512 g0 = _mm512_permutexvar_ps(lo, g), g1 = _mm512_permutexvar_ps(hi, g);
            const int c = 2 * ox;
            const __mmask16 ma = lane_range(c, 0, 2 * ow), mb = lane_range(c + 16, 0, 2 * ow);
            for (int r = 0; r < 2; r++) {
                float *row = dxp + (size_t)(2 * oy + r) * w + c;
                _mm512_mask_storeu_ps(row, ma, _mm512_add_ps(_mm512_maskz_loadu_ps(ma, row), g0));
                if (mb) _mm512_mask_storeu_ps(row + 16, mb, _mm512_add_ps(_mm512_maskz_loadu_ps(mb, row + 16), g1));
            }
        }
}
#endif

#if CONV_X86
/* 2x2 windows, stride 2, no padding, on the AVX-512 path. */
static int is_pool22(const PoolDims *d) { return d->k == 2 && d->stride == 2 && d->pad == 0 && use_avx512(); }
#endif

void avgpool_forward(float *y, const float *x, const PoolDims *d) {
    if (d->stride == 1) {
        avgpool_s1(y, x, d, 0);
        return;
    }
    long planes = (long)d->n * d->c;
    int par = planes > 1 && (size_t)planes * d->h * d->w >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * d->h * d->w;
        float *yp = y + (size_t)p * d->oh * d->ow;
#if CONV_X86
        if (is_pool22(d)) {
            avgpool22_forward_plane(yp, xp, d);
            continue;
        }
#endif
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                int div = pool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                double s = 0;
                for (int iy = h0; iy < h1; iy++)
                    for (int ix = w0; ix < w1; ix++) s += xp[iy * d->w + ix];
                yp[oy * d->ow + ox] = (float)(s / div);
            }
    }
}

void avgpool_backward(float *dx, const float *dy, const PoolDims *d) {
    if (!dx) return;
    if (d->stride == 1) {
        avgpool_s1(dx, dy, d, 1);
        return;
    }
    long planes = (long)d->n * d->c;
    int par = planes > 1 && (size_t)planes * d->h * d->w >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        float *dxp = dx + (size_t)p * d->h * d->w;
        const float *dyp = dy + (size_t)p * d->oh * d->ow;
#if CONV_X86
        if (is_pool22(d)) {
            avgpool22_backward_plane(dxp, dyp, d);
            continue;
        }
#endif
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                int div = pool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                float g = dyp[oy * d->ow + ox] / (float)div;
                for (int iy = h0; iy < h1; iy++)
                    for (int ix = w0; ix < w1; ix++) dxp[iy * d->w + ix] += g;
            }
    }
}

void gap_forward(float *y, const float *x, int n, int c, int hw) {
    long planes = (long)n * c;
    int par = planes > 1 && (size_t)planes * hw >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * hw;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < hw; j++) s += xp[j];
        y[p] = (float)(s / hw);
    }
}

void gap_backward(float *dx, const float *dy, int n, int c, int hw) { gap_backward_ex(dx, dy, n, c, hw, 1); }

void gap_backward_ex(float *dx, const float *dy, int n, int c, int hw, int accumulate) {
    if (!dx) return;
    long planes = (long)n * c;
    int par = planes > 1 && (size_t)planes * hw >= POOL_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        float *dxp = dx + (size_t)p * hw;
        float g = dy[p] / (float)hw;
        if (accumulate) {
#pragma omp simd
            for (int j = 0; j < hw; j++) dxp[j] += g;
        } else {
            const float z = 0.0f + g; /* what zeroing and accumulating would give (-0 as +0) */
#pragma omp simd
            for (int j = 0; j < hw; j++) dxp[j] = z;
        }
    }
}

#endif /* NASC_REF_ONLY */
