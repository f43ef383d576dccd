/* qelem.c: the int8 kernels other than convolution (qops.h): quantize/dequantize, lookup
 * tables, max/average/global pooling, n-ary add, concat, channel scale and bilinear resize.
 *
 * The kernels follow ONNX Runtime's arithmetic where nasc's export meets one of its fused int8
 * kernels (global average pool and two-input add, qops.h) or its float evaluation (quantize,
 * the n-ary add); the others are integer only: the real ratios of scales arrive as (mult,
 * shift) pairs and q_mulshift rounds. A microcontroller, these kernels and generated C all give
 * the same bits. The `*_ref` kernels are plain loops
 * over the definition; the fast ones compute the same integers with clipped windows and
 * contiguous inner loops, and split planes (or chunks of a flat array) over threads_get()
 * threads when the work is large enough to pay for it.
 */
#include <math.h>

#include "qops.h"
#include "simd.h"

/* Below this many output values a kernel runs on one thread. */
#define QELEM_PAR_MIN 32768

static inline int8_t sat8(int32_t v) { return (int8_t)q_clamp(v, -128, 127); }

/* ------------------------------------------------------------------ quantize */
#ifdef __FAST_MATH__
#error "qelem.c needs IEEE float arithmetic as written (rounding by adding and subtracting 1.5 * 2^23)"
#endif

/* r rounded half to even for |r| <= 2^22: adding and subtracting 1.5 * 2^23 leaves no fraction
 * bits (default rounding mode; no libm call, so the loops vectorize). */
static inline float rne_small(float r) { return (r + 12582912.0f) - 12582912.0f; }

static inline int8_t quantize1(float x, float scale, int32_t zp) {
    float r = x / scale;
    /* Compare in float first: a huge or NaN x must not reach an int conversion. */
    if (!(r > -1e6f)) r = -1e6f;
    if (r > 1e6f) r = 1e6f;
    return sat8((int32_t)rne_small(r) + zp);
}

void quantize_ref(int8_t *q, const float *x, size_t n, float scale, int32_t zp) {
    for (size_t i = 0; i < n; i++) q[i] = quantize1(x[i], scale, zp);
}

void dequantize_ref(float *x, const int8_t *q, size_t n, float scale, int32_t zp) {
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)((int32_t)q[i] - zp);
}

void quantize(int8_t *q, const float *x, size_t n, float scale, int32_t zp) {
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (n >= 4 * QELEM_PAR_MIN)
    for (size_t i = 0; i < n; i++) q[i] = quantize1(x[i], scale, zp);
}

/* ------------------------------------------------------------------ lookup table */
void qlut_ref(int8_t *y, const int8_t *x, const int8_t *lut, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = lut[(int)x[i] + 128];
}

static void qlut_plain(int8_t *y, const int8_t *x, const int8_t *lut, size_t n) {
    const int8_t *t = lut + 128;
    for (size_t i = 0; i < n; i++) y[i] = t[x[i]];
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define QLUT_VBMI 1
/* 64 lookups per step with AVX-512 VBMI: u = x ^ 0x80 indexes the 256-entry table; two
 * two-register byte permutes cover entries 0-127 and 128-255 (bits 0-6 of u), and u's top bit
 * picks between them. The tail runs masked. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void qlut_vbmi(int8_t *y, const int8_t *x,
                                                                              const int8_t *lut, size_t n) {
    const __m512i t0 = _mm512_loadu_si512(lut), t1 = _mm512_loadu_si512(lut + 64);
    const __m512i t2 = _mm512_loadu_si512(lut + 128), t3 = _mm512_loadu_si512(lut + 192);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (size_t i = 0; i < n; i += 64) {
        __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + i), flip);
        __m512i lo = _mm512_permutex2var_epi8(t0, u, t1), hi = _mm512_permutex2var_epi8(t2, u, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(u), lo, hi));
    }
}
#endif

void qlut(int8_t *y, const int8_t *x, const int8_t *lut, size_t n) {
    void (*f)(int8_t *, const int8_t *, const int8_t *, size_t) = qlut_plain;
#ifdef QLUT_VBMI
    static int vbmi = -1;
    if (vbmi < 0) vbmi = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
    if (vbmi) f = qlut_vbmi;
#endif
    const size_t chunk = 1 << 16;
    long nch = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (n >= 4 * QELEM_PAR_MIN && nch > 1)
    for (long c = 0; c < nch; c++) {
        size_t a = (size_t)c * chunk, len = NASC_MIN(chunk, n - a);
        f(y + a, x + a, lut, len);
    }
}

/* ------------------------------------------------------------------ pooling */
/* The window of output (oy, ox) clipped to the input, and avgpool's divisor (pool.c's rule). */
static inline int qpool_window(const PoolDims *d, int oy, int ox, int *h0, int *h1, int *w0, int *w1) {
    int hs = oy * d->stride - d->pad, ws = ox * d->stride - d->pad;
    int he = NASC_MIN(hs + d->k, d->h + d->pad), we = NASC_MIN(ws + d->k, d->w + d->pad);
    int padded_area = (he - hs) * (we - ws);
    *h0 = NASC_MAX(hs, 0);
    *w0 = NASC_MAX(ws, 0);
    *h1 = NASC_MIN(he, d->h);
    *w1 = NASC_MIN(we, d->w);
    return d->count_include_pad ? padded_area : (*h1 - *h0) * (*w1 - *w0);
}

void qmaxpool_ref(int8_t *y, const int8_t *x, const PoolDims *d) {
    size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const int8_t *xp = x + p * d->h * d->w;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int best = -129;
                for (int ky = 0; ky < d->k; ky++)
                    for (int kx = 0; kx < d->k; kx++) {
                        int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        if (xp[iy * d->w + ix] > best) best = xp[iy * d->w + ix];
                    }
                NASC_ASSERT(best >= -128);
                y[(p * d->oh + oy) * d->ow + ox] = (int8_t)best;
            }
    }
}

void qmaxpool(int8_t *y, const int8_t *x, const PoolDims *d) {
    long planes = (long)d->n * d->c;
    int par = planes > 1 && (size_t)planes * d->oh * d->ow >= QELEM_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        const int8_t *xp = x + (size_t)p * d->h * d->w;
        int8_t *yp = y + (size_t)p * d->oh * d->ow;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                qpool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                int8_t best = -128;
                for (int iy = h0; iy < h1; iy++)
                    for (int ix = w0; ix < w1; ix++) best = xp[iy * d->w + ix] > best ? xp[iy * d->w + ix] : best;
                yp[oy * d->ow + ox] = best;
            }
    }
}

void qavgpool_ref(int8_t *y, const int8_t *x, const PoolDims *d, int32_t x_zp, int32_t y_zp, const int32_t *mult,
                  const int8_t *shift) {
    size_t planes = (size_t)d->n * d->c;
    for (size_t p = 0; p < planes; p++) {
        const int8_t *xp = x + p * d->h * d->w;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int h0, h1, w0, w1;
                int div = qpool_window(d, oy, ox, &h0, &h1, &w0, &w1);
                NASC_ASSERT(div >= 1 && div <= d->k * d->k);
                int32_t s = 0;
                for (int ky = 0; ky < d->k; ky++)
                    for (int kx = 0; kx < d->k; kx++) {
                        int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        s += (int32_t)xp[iy * d->w + ix] - x_zp;
                    }
                y[(p * d->oh + oy) * d->ow + ox] = sat8(y_zp + q_mulshift(s, mult[div - 1], shift[div - 1]));
            }
    }
}

/* The clipped windows along one axis (in -> out, kernel k, stride, pad): outputs read input
 * cells [lo[o], hi[o]); area[o] is the window clipped to the padded bounds (pool.c's rule). */
static void qpool_axis(int *lo, int *hi, int *area, int in, int out, int k, int stride, int pad) {
    for (int o = 0; o < out; o++) {
        int s = o * stride - pad, e = NASC_MIN(s + k, in + pad);
        area[o] = e - s;
        lo[o] = NASC_MAX(s, 0);
        hi[o] = NASC_MIN(e, in);
    }
}

/* Row sums of one plane: hs (h, ow)[iy][ox] = sum of x[iy][cl[ox] .. ch[ox]). Outputs whose
 * window is entirely inside the row take a vectorizable path (a sum of k shifted rows). */
MULTIVERSION static void qpool_rows(int32_t *restrict hs, const int8_t *restrict xp, const PoolDims *d, const int *cl,
                                    const int *ch, int oxa, int oxb) {
    const int stride = d->stride, k = d->k, pad = d->pad;
    for (int iy = 0; iy < d->h; iy++) {
        const int8_t *restrict xr = xp + (size_t)iy * d->w;
        int32_t *restrict hr = hs + (size_t)iy * d->ow;
        for (int ox = 0; ox < d->ow; ox++) {
            if (ox == oxa && oxb > oxa) ox = oxb; /* the interior is done below */
            if (ox >= d->ow) break;
            int32_t t = 0;
            for (int ix = cl[ox]; ix < ch[ox]; ix++) t += xr[ix];
            hr[ox] = t;
        }
        if (oxb > oxa) {
            for (int ox = oxa; ox < oxb; ox++) hr[ox] = 0;
            for (int kx = 0; kx < k; kx++) {
                const int8_t *restrict xs = xr + kx - pad;
                if (stride == 1)
                    for (int ox = oxa; ox < oxb; ox++) hr[ox] += xs[ox];
                else
                    for (int ox = oxa; ox < oxb; ox++) hr[ox] += xs[ox * stride];
            }
        }
    }
}

/* Column sums of the row sums and the requantization of one plane. Along the interior
 * columns [oxa, oxb) of a row the divisor is one value, so that loop has a fixed multiplier. */
MULTIVERSION static void qpool_cols(int8_t *restrict yp, int32_t *restrict acc, const int32_t *hs, const PoolDims *d,
                                    const int *rl, const int *rh, const int *ra, const int *cl, const int *ch,
                                    const int *ca, int oxa, int oxb, int32_t x_zp, int32_t y_zp, const int32_t *mult,
                                    const int8_t *shift) {
    const int ow = d->ow;
    for (int oy = 0; oy < d->oh; oy++) {
        for (int ox = 0; ox < ow; ox++) acc[ox] = 0;
        for (int iy = rl[oy]; iy < rh[oy]; iy++) {
            const int32_t *hr = hs + (size_t)iy * ow;
            for (int ox = 0; ox < ow; ox++) acc[ox] += hr[ox];
        }
        int rows = rh[oy] - rl[oy];
        int8_t *yr = yp + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox++) {
            if (ox == oxa && oxb > oxa) ox = oxb;
            if (ox >= ow) break;
            int cnt = rows * (ch[ox] - cl[ox]);
            int div = d->count_include_pad ? ra[oy] * ca[ox] : cnt;
            yr[ox] = sat8(y_zp + q_mulshift(acc[ox] - x_zp * cnt, mult[div - 1], shift[div - 1]));
        }
        if (oxb > oxa) {
            int cnt = rows * d->k;
            int div = d->count_include_pad ? ra[oy] * d->k : cnt;
            const int64_t m = mult[div - 1], half = (int64_t)1 << (shift[div - 1] - 1);
            const int sh = shift[div - 1];
            const int32_t off = x_zp * cnt;
            for (int ox = oxa; ox < oxb; ox++) {
                int32_t v = y_zp + (int32_t)(((int64_t)(acc[ox] - off) * m + half) >> sh);
                yr[ox] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
            }
        }
    }
}

/* 2x2 windows at stride 2 without padding (NB201's and ResNet-D's shortcut pooling): never
 * clipped, so every divisor is 4. */
MULTIVERSION static void qavgpool_2x2(int8_t *restrict y, const int8_t *restrict x, const PoolDims *d, int32_t x_zp,
                         int32_t y_zp, int32_t mult, int shift) {
    const int32_t zp4 = 4 * x_zp;
    for (int oy = 0; oy < d->oh; oy++) {
        const int8_t *r0 = x + (size_t)2 * oy * d->w, *r1 = r0 + d->w;
        int8_t *yr = y + (size_t)oy * d->ow;
        for (int ox = 0; ox < d->ow; ox++) {
            int32_t s = (int32_t)r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1] - zp4;
            yr[ox] = sat8(y_zp + q_mulshift(s, mult, shift));
        }
    }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* 3x3 windows, stride 1, padding 1 (NAS-Bench-201's avg_pool_3x3), AVX-512F: a plane as one
 * stream of 16 cells, from a copy with a zero margin (so the loads at -1 and +1 stay inside);
 * neighbours outside the plane are masked off, as in pool.c's box3. Per cell: the window's sum
 * minus x_zp times its cell count, then q_mulshift with the cell's divisor's (mult, shift) in
 * 64-bit lanes (even and odd cells apart) and a saturating narrow: the reference's integers. */
typedef struct {
    Box3Masks m;
    int32_t *off, *mult, *shift; /* per cell: x_zp * count, the divisor's multiplier and shift */
} QBox3;

static size_t qbox3_bytes(const PoolDims *d) {
    size_t nv = ((size_t)d->h * d->w + 15) / 16;
    return box3_masks_bytes(d->h, d->w) + 3 * (16 * nv) * sizeof(int32_t);
}

static void qbox3_init(QBox3 *b, void *mem, const PoolDims *d, int32_t x_zp, const int32_t *mult,
                       const int8_t *shift) {
    b->off = box3_masks_init(&b->m, mem, d->h, d->w);
    const int nv = b->m.nv;
    b->mult = b->off + 16 * (size_t)nv, b->shift = b->mult + 16 * (size_t)nv;
    for (int p = 0; p < 16 * nv; p++) {
        int row = p / d->w, col = p % d->w, cnt = 1, div = 1;
        if (p < b->m.hw) {
            cnt = (NASC_MIN(row + 2, d->h) - NASC_MAX(row - 1, 0)) * (NASC_MIN(col + 2, d->w) - NASC_MAX(col - 1, 0));
            div = d->count_include_pad ? 9 : cnt;
        }
        b->off[p] = x_zp * cnt, b->mult[p] = mult[div - 1], b->shift[p] = shift[div - 1];
    }
}

/* q_mulshift of 16 lanes: even and odd lanes as 64-bit products. */
__attribute__((target("avx512f"))) static inline __m512i qbox3_mulshift(__m512i acc, __m512i m, __m512i sh) {
    const __m512i one = _mm512_set1_epi64(1);
    __m512i se = _mm512_and_si512(sh, _mm512_set1_epi64(0xFFFFFFFF)), so = _mm512_srli_epi64(sh, 32);
    __m512i pe = _mm512_mul_epi32(acc, m);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(m, 32));
    pe = _mm512_srav_epi64(_mm512_add_epi64(pe, _mm512_sllv_epi64(one, _mm512_sub_epi64(se, one))), se);
    po = _mm512_srav_epi64(_mm512_add_epi64(po, _mm512_sllv_epi64(one, _mm512_sub_epi64(so, one))), so);
    return _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
}

/* One plane: xc, a copy of it with 16 zero bytes before and after; hs, 16 * nv + 2 w int32. */
__attribute__((target("avx512f"))) static void qbox3_plane(int8_t *y, const int8_t *xc, int32_t *hs, const QBox3 *b,
                                                           int32_t y_zp) {
    int32_t *h = hs + b->m.w; /* row sums, with a row of room either side for the masked loads */
    for (int v = 0; v < b->m.nv; v++) {
        const int8_t *p = xc + 16 * v;
        __m512i c = _mm512_maskz_mov_epi32(b->m.all[v], _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
        __m512i l =
            _mm512_maskz_mov_epi32(b->m.left[v], _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p - 1))));
        __m512i r =
            _mm512_maskz_mov_epi32(b->m.right[v], _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 1))));
        _mm512_storeu_si512(h + 16 * v, _mm512_add_epi32(_mm512_add_epi32(l, c), r));
    }
    const __m512i yz = _mm512_set1_epi32(y_zp);
    for (int v = 0; v < b->m.nv; v++) {
        const int32_t *q = h + 16 * v;
        __m512i s = _mm512_add_epi32(_mm512_maskz_loadu_epi32(b->m.up[v], q - b->m.w), _mm512_loadu_si512(q));
        s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(b->m.down[v], q + b->m.w));
        s = _mm512_sub_epi32(s, _mm512_loadu_si512(b->off + 16 * v));
        __m512i r = qbox3_mulshift(s, _mm512_loadu_si512(b->mult + 16 * v), _mm512_loadu_si512(b->shift + 16 * v));
        _mm512_mask_cvtsepi32_storeu_epi8(y + 16 * v, b->m.all[v], _mm512_add_epi32(r, yz));
    }
}

static int qbox3_ok(const PoolDims *d) {
    return d->k == 3 && d->stride == 1 && d->pad == 1 && (size_t)d->h * d->w <= (1u << 20) &&
           __builtin_cpu_supports("avx512f");
}
#endif

/* 2x2 / stride 2 windows take qavgpool_2x2 and 3x3 / stride 1 / padding 1 ones qbox3_plane
 * (AVX-512; batch 1, one thread: 16 ch 28x28 28.8 -> 8.0 us, 64 ch 7x7 15.8 -> 2.4 us); the
 * rest is separable: row sums over each output column's window, then column sums of those,
 * then one requantization per output; the integers are the reference's. Scratch per thread. */
void qavgpool(int8_t *y, const int8_t *x, const PoolDims *d, int32_t x_zp, int32_t y_zp, const int32_t *mult,
              const int8_t *shift) {
    long planes = (long)d->n * d->c;
    if (d->k == 2 && d->stride == 2 && d->pad == 0) {
        int par = planes > 1 && (size_t)planes * d->oh * d->ow >= QELEM_PAR_MIN / 4;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
        for (long p = 0; p < planes; p++)
            qavgpool_2x2(y + (size_t)p * d->oh * d->ow, x + (size_t)p * d->h * d->w, d, x_zp, y_zp, mult[3], shift[3]);
        return;
    }
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    if (qbox3_ok(d)) {
        const size_t hw = (size_t)d->h * d->w, nv = (hw + 15) / 16;
        int par = planes > 1 && (size_t)planes * hw >= QELEM_PAR_MIN / 4;
#pragma omp parallel num_threads(threads_get()) if (par)
        {
            char *mem =
                scratch_get(0, qbox3_bytes(d) + (16 * nv + 32) + (16 * nv + 2 * (size_t)d->w) * sizeof(int32_t) + 64);
            QBox3 b;
            qbox3_init(&b, mem, d, x_zp, mult, shift);
            int8_t *xc = (int8_t *)mem + qbox3_bytes(d);
            int32_t *hs = (int32_t *)(void *)(xc + ((16 * nv + 32 + 63) / 64) * 64);
            memset(xc, 0, 16 * nv + 32);
#pragma omp for schedule(static)
            for (long p = 0; p < planes; p++) {
                memcpy(xc + 16, x + (size_t)p * hw, hw);
                qbox3_plane(y + (size_t)p * hw, xc + 16, hs, &b, y_zp);
            }
        }
        return;
    }
#endif
    int *ax = scratch_get(0, (size_t)3 * (d->oh + d->ow) * sizeof(int));
    int *rl = ax, *rh = rl + d->oh, *ra = rh + d->oh, *cl = ra + d->oh, *ch = cl + d->ow, *ca = ch + d->ow;
    qpool_axis(rl, rh, ra, d->h, d->oh, d->k, d->stride, d->pad);
    qpool_axis(cl, ch, ca, d->w, d->ow, d->k, d->stride, d->pad);
    /* Outputs whose column window lies inside the row (no clipping): ox in [oxa, oxb). */
    int oxa = 0, oxb = 0;
    while (oxa < d->ow && oxa * d->stride - d->pad < 0) oxa++;
    oxb = oxa;
    while (oxb < d->ow && oxb * d->stride - d->pad + d->k <= d->w) oxb++;
    int par = planes > 1 && (size_t)planes * d->oh * d->ow >= QELEM_PAR_MIN / 4;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        int32_t *hs = scratch_get(1, ((size_t)d->h + 1) * d->ow * sizeof(int32_t));
        int32_t *acc = hs + (size_t)d->h * d->ow;
        qpool_rows(hs, x + (size_t)p * d->h * d->w, d, cl, ch, oxa, oxb);
        qpool_cols(y + (size_t)p * d->oh * d->ow, acc, hs, d, rl, rh, ra, cl, ch, ca, oxa, oxb, x_zp, y_zp, mult, shift);
    }
}

void qgap_ref(int8_t *y, const int8_t *x, int n, int c, int hw, int32_t x_zp, int32_t y_zp, int32_t mult, int shift) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        int32_t s = 0;
        for (int j = 0; j < hw; j++) s += (int32_t)x[p * hw + j] - x_zp;
        y[p] = (int8_t)q_requant_f(s, q_conv_scale(mult, shift), y_zp, -128, 127);
    }
}

/* The plain sum of a plane's int8 values (vectorized by the compiler). */
MULTIVERSION static int32_t sum8(const int8_t *x, int n) {
    int32_t s = 0;
    for (int j = 0; j < n; j++) s += x[j];
    return s;
}

void qgap(int8_t *y, const int8_t *x, int n, int c, int hw, int32_t x_zp, int32_t y_zp, int32_t mult, int shift) {
    long planes = (long)n * c;
    const float sc = q_conv_scale(mult, shift);
    int par = planes > 1 && (size_t)planes * hw >= 4 * QELEM_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        int32_t s = sum8(x + (size_t)p * hw, hw) - x_zp * hw;
        y[p] = (int8_t)q_requant_f(s, sc, y_zp, -128, 127);
    }
}

/* ------------------------------------------------------------------ add, concat, channel scale */
/* The float form's quantization: round half even (s / y_scale), saturated to +-1e6 first. */
static inline int32_t qadd_quant(float s, float y_scale) {
    float r = s / y_scale;
    r = r < -1e6f ? -1e6f : r > 1e6f ? 1e6f : r; /* NaN cannot arise: finite int8 inputs */
    return (int32_t)rne_small(r);
}

/* Two inputs: the constants of ORT's kernel (ratios and its fixed part, uint8 terms). */
typedef struct {
    float r0, r1, c;
} QAdd2;

static QAdd2 qadd2_consts(const QAddArgs *a) {
    QAdd2 k;
    k.r0 = a->x_scale[0] / a->y_scale;
    k.r1 = a->x_scale[1] / a->y_scale;
    float t0 = k.r0 * (float)(a->x_zp[0] + 128), t1 = k.r1 * (float)(a->x_zp[1] + 128);
    k.c = (float)(a->y_zp + 128) - (t0 + t1);
    return k;
}

/* The clamp to [-1, 256] before rounding gives the same result as saturating after it. fmaf is
 * the correctly rounded fused multiply-add (the AVX-512 path below uses the instruction). */
static inline int32_t qadd2_one(int8_t x0, int8_t x1, const QAdd2 *k) {
    float v = fmaf((float)(x0 + 128), k->r0, fmaf((float)(x1 + 128), k->r1, k->c));
    v = v < -1.0f ? -1.0f : v > 256.0f ? 256.0f : v;
    int32_t r = (int32_t)rne_small(v);
    return (r < 0 ? 0 : r > 255 ? 255 : r) - 128;
}

void qadd_ref(int8_t *y, const int8_t *const *xs, size_t n, const QAddArgs *a) {
    if (a->nin == 2) {
        QAdd2 k = qadd2_consts(a);
        for (size_t i = 0; i < n; i++) y[i] = (int8_t)q_clamp(qadd2_one(xs[0][i], xs[1][i], &k), a->y_min, a->y_max);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float s = a->x_scale[0] * (float)((int32_t)xs[0][i] - a->x_zp[0]);
        for (int j = 1; j < a->nin; j++) s += a->x_scale[j] * (float)((int32_t)xs[j][i] - a->x_zp[j]);
        y[i] = (int8_t)q_clamp(a->y_zp + qadd_quant(s, a->y_scale), a->y_min, a->y_max);
    }
}

#ifdef QLUT_VBMI
/* Two inputs, 16 values per step with AVX-512 (F, BW, VL): qadd2_one exactly, the two fused
 * multiply-adds as instructions; the tail runs masked. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void qadd2_avx512(int8_t *y, const int8_t *x0,
                                                                              const int8_t *x1, size_t n,
                                                                              const QAdd2 *k, int32_t lo,
                                                                              int32_t hi) {
    const __m512 r0 = _mm512_set1_ps(k->r0), r1 = _mm512_set1_ps(k->r1), c = _mm512_set1_ps(k->c);
    const __m512 fmin = _mm512_set1_ps(-1.0f), fmax = _mm512_set1_ps(256.0f);
    const __m512i off = _mm512_set1_epi32(128), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i a = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, x0 + i)), off);
        __m512i b = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, x1 + i)), off);
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), r0, _mm512_fmadd_ps(_mm512_cvtepi32_ps(b), r1, c));
        v = _mm512_min_ps(_mm512_max_ps(v, fmin), fmax);
        __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_sub_epi32(_mm512_min_epi32(_mm512_max_epi32(r, zero), top), off);
        r = _mm512_min_epi32(_mm512_max_epi32(r, vlo), vhi);
        _mm_mask_storeu_epi8(y + i, m, _mm512_cvtepi32_epi8(r));
    }
}
#endif

/* One chunk of the fast add: the same operations as the reference, as plain loops over the
 * chunk (each vectorizes). */
#define QADD_CHUNK 1024
MULTIVERSION static void qadd_chunk(int8_t *y, const int8_t *const *xs, size_t off, size_t len, const QAddArgs *a,
                                     const QAdd2 *k2) {
    const int32_t yzp = a->y_zp, lo = a->y_min, hi = a->y_max;
    int8_t *restrict yo = y + off;
    if (a->nin == 2) {
        const QAdd2 k = *k2;
        const int8_t *x0 = xs[0] + off, *x1 = xs[1] + off;
        for (size_t i = 0; i < len; i++) {
            int32_t v = qadd2_one(x0[i], x1[i], &k);
            yo[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
        }
        return;
    }
    float acc[QADD_CHUNK];
    const int8_t *x0 = xs[0] + off;
    const float s0 = a->x_scale[0];
    const int32_t z0 = a->x_zp[0];
    for (size_t i = 0; i < len; i++) acc[i] = s0 * (float)((int32_t)x0[i] - z0);
    for (int j = 1; j < a->nin; j++) {
        const int8_t *x = xs[j] + off;
        const float sj = a->x_scale[j];
        const int32_t zj = a->x_zp[j];
        for (size_t i = 0; i < len; i++) acc[i] += sj * (float)((int32_t)x[i] - zj);
    }
    const float ys = a->y_scale;
    for (size_t i = 0; i < len; i++) {
        int32_t v = yzp + qadd_quant(acc[i], ys);
        yo[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
    }
}

void qadd(int8_t *y, const int8_t *const *xs, size_t n, const QAddArgs *a) {
    NASC_ASSERT(a->nin >= 1);
    QAdd2 k2 = {0};
#ifdef QLUT_VBMI
    int avx512 = 0;
#endif
    if (a->nin == 2) {
        k2 = qadd2_consts(a);
#ifdef QLUT_VBMI
        static int have = -1;
        if (have < 0)
            have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl");
        avx512 = have;
#endif
    }
    long chunks = (long)((n + QADD_CHUNK - 1) / QADD_CHUNK);
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (n >= QELEM_PAR_MIN)
    for (long ch = 0; ch < chunks; ch++) {
        size_t off = (size_t)ch * QADD_CHUNK, len = NASC_MIN((size_t)QADD_CHUNK, n - off);
#ifdef QLUT_VBMI
        if (avx512) {
            qadd2_avx512(y + off, xs[0] + off, xs[1] + off, len, &k2, a->y_min, a->y_max);
            continue;
        }
#endif
        qadd_chunk(y, xs, off, len, a, &k2);
    }
}

void qconcat_ref(int8_t *y, const int8_t *const *xs, const int *cs, int nin, int n, int hw, const int32_t *x_zp,
                 const int32_t *mult, const int8_t *shift, int32_t y_zp) {
    int ctot = 0;
    for (int j = 0; j < nin; j++) ctot += cs[j];
    for (int i = 0; i < n; i++) {
        int8_t *yp = y + (size_t)i * ctot * hw;
        for (int j = 0; j < nin; j++) {
            size_t len = (size_t)cs[j] * hw;
            const int8_t *xp = xs[j] + (size_t)i * len;
            for (size_t t = 0; t < len; t++) yp[t] = sat8(y_zp + q_mulshift((int32_t)xp[t] - x_zp[j], mult[j], shift[j]));
            yp += len;
        }
    }
}

/* Requantize len values (x - x_zp) * r + y_zp; r = 1 and equal zero points is a copy. */
static void requant_run(int8_t *y, const int8_t *x, size_t len, int32_t x_zp, int32_t mult, int shift, int32_t y_zp) {
    if (x_zp == y_zp && mult == (1 << 30) && shift == 30) {
        memcpy(y, x, len);
        return;
    }
    for (size_t t = 0; t < len; t++) y[t] = sat8(y_zp + q_mulshift((int32_t)x[t] - x_zp, mult, shift));
}

void qconcat(int8_t *y, const int8_t *const *xs, const int *cs, int nin, int n, int hw, const int32_t *x_zp,
             const int32_t *mult, const int8_t *shift, int32_t y_zp) {
    int ctot = 0;
    for (int j = 0; j < nin; j++) ctot += cs[j];
    long jobs = (long)n * nin;
    int par = jobs > 1 && (size_t)n * ctot * hw >= QELEM_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long job = 0; job < jobs; job++) {
        int i = (int)(job / nin), j = (int)(job % nin);
        int c0 = 0;
        for (int t = 0; t < j; t++) c0 += cs[t];
        size_t len = (size_t)cs[j] * hw;
        requant_run(y + ((size_t)i * ctot + c0) * hw, xs[j] + (size_t)i * len, len, x_zp[j], mult[j], shift[j], y_zp);
    }
}

void qchmul_ref(int8_t *y, const int8_t *x, const int8_t *s, int n, int c, int hw, int32_t x_zp, int32_t s_zp,
                int32_t y_zp, int32_t mult, int shift) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        int32_t sv = (int32_t)s[p] - s_zp;
        for (int j = 0; j < hw; j++)
            y[p * hw + j] = sat8(y_zp + q_mulshift((int64_t)((int32_t)x[p * hw + j] - x_zp) * sv, mult, shift));
    }
}

void qchmul(int8_t *y, const int8_t *x, const int8_t *s, int n, int c, int hw, int32_t x_zp, int32_t s_zp,
            int32_t y_zp, int32_t mult, int shift) {
    long planes = (long)n * c;
    int par = planes > 1 && (size_t)planes * hw >= QELEM_PAR_MIN;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (long p = 0; p < planes; p++) {
        int32_t sv = (int32_t)s[p] - s_zp;
        const int8_t *xp = x + (size_t)p * hw;
        int8_t *yp = y + (size_t)p * hw;
        for (int j = 0; j < hw; j++) yp[j] = sat8(y_zp + q_mulshift((int64_t)((int32_t)xp[j] - x_zp) * sv, mult, shift));
    }
}

/* ------------------------------------------------------------------ resize */
static int64_t gcd64(int64_t a, int64_t b) {
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int qresize_unit(int in, int out) {
    int64_t d = 2 * (int64_t)out / gcd64(gcd64(2 * (int64_t)in, (int64_t)in - out), 2 * (int64_t)out);
    return d <= (1 << QRESIZE_FRAC) ? (int)d : (1 << QRESIZE_FRAC);
}

int qresize_taps(QTap *t, int in, int out) {
    int64_t u = qresize_unit(in, out);
    for (int o = 0; o < out; o++) {
        int64_t num = (int64_t)(2 * o + 1) * in - out;
        if (num < 0) num = 0;
        int64_t src = num * u / (2 * (int64_t)out);
        int i0 = (int)(src / u);
        int32_t f = (int32_t)(src % u);
        if (i0 > in - 1) i0 = in - 1, f = 0;
        t[o].i0 = i0;
        t[o].i1 = i0 + 1 < in ? i0 + 1 : in - 1;
        t[o].l1 = f;
        t[o].l0 = (int32_t)u - f;
    }
    return (int)u;
}

void qresize_ref(int8_t *y, const int8_t *x, int nc, int h, int w, int oh, int ow, int32_t x_zp, int32_t y_zp,
                 int32_t mult, int shift) {
    QTap *th = xmalloc((size_t)oh * sizeof *th), *tw = xmalloc((size_t)ow * sizeof *tw);
    qresize_taps(th, h, oh);
    qresize_taps(tw, w, ow);
    for (int p = 0; p < nc; p++) {
        const int8_t *xp = x + (size_t)p * h * w;
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                int64_t v00 = (int32_t)xp[(size_t)th[i].i0 * w + tw[j].i0] - x_zp;
                int64_t v01 = (int32_t)xp[(size_t)th[i].i0 * w + tw[j].i1] - x_zp;
                int64_t v10 = (int32_t)xp[(size_t)th[i].i1 * w + tw[j].i0] - x_zp;
                int64_t v11 = (int32_t)xp[(size_t)th[i].i1 * w + tw[j].i1] - x_zp;
                int64_t acc = th[i].l0 * (tw[j].l0 * v00 + tw[j].l1 * v01) + th[i].l1 * (tw[j].l0 * v10 + tw[j].l1 * v11);
                y[((size_t)p * oh + i) * ow + j] = sat8(y_zp + q_mulshift(acc, mult, shift));
            }
    }
    free(th);
    free(tw);
}

/* The fast resize keeps its taps on the stack (the sizes are bounded by the spec's limit on
 * resize outputs, 16384) when they fit, so batch-1 inference does not allocate. */
#define QRESIZE_STACK_TAPS 1024

void qresize(int8_t *y, const int8_t *x, int nc, int h, int w, int oh, int ow, int32_t x_zp, int32_t y_zp,
             int32_t mult, int shift) {
    QTap sh[QRESIZE_STACK_TAPS], sw[QRESIZE_STACK_TAPS];
    QTap *th = oh <= QRESIZE_STACK_TAPS ? sh : xmalloc((size_t)oh * sizeof *th);
    QTap *tw = ow <= QRESIZE_STACK_TAPS ? sw : xmalloc((size_t)ow * sizeof *tw);
    qresize_taps(th, h, oh);
    qresize_taps(tw, w, ow);
    int par = nc > 1 && (size_t)nc * oh * ow >= QELEM_PAR_MIN / 4;
#pragma omp parallel for num_threads(threads_get()) schedule(static) if (par)
    for (int p = 0; p < nc; p++) {
        const int8_t *xp = x + (size_t)p * h * w;
        int8_t *yp = y + (size_t)p * oh * ow;
        for (int i = 0; i < oh; i++) {
            const int8_t *r0 = xp + (size_t)th[i].i0 * w, *r1 = xp + (size_t)th[i].i1 * w;
            int64_t a0 = th[i].l0, a1 = th[i].l1;
            for (int j = 0; j < ow; j++) {
                int64_t top = tw[j].l0 * (int64_t)((int32_t)r0[tw[j].i0] - x_zp) + tw[j].l1 * (int64_t)((int32_t)r0[tw[j].i1] - x_zp);
                int64_t bot = tw[j].l0 * (int64_t)((int32_t)r1[tw[j].i0] - x_zp) + tw[j].l1 * (int64_t)((int32_t)r1[tw[j].i1] - x_zp);
                yp[(size_t)i * ow + j] = sat8(y_zp + q_mulshift(a0 * top + a1 * bot, mult, shift));
            }
        }
    }
    if (th != sh) free(th);
    if (tw != sw) free(tw);
}
