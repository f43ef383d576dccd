/* depthwise.c: depthwise convolution (groups == cin == cout: one k x k filter per channel),
 * forward and backward, NCHW, float. conv2d_forward and conv2d_backward_ex hand depthwise layers
 * here; the reference is conv2d_*_ref in conv.c.
 *
 * Three implementations; each layer takes the one that measured faster for its shape:
 *
 *   Direct, AVX-512 (3x3 kernels, dilation 1, padding 1, and stride 1, or stride 2 on rows of
 *   at most 32 columns: MobileNet's layers). Each (image, channel) plane is convolved where it
 *   lies, vectorized along its pixels; no layout changes.
 *     Stride 1: the plane is one flat array, 16 pixels a vector whatever the row width (a 7x7
 *     plane is 4 vectors, not 7 rows of 7 lanes). Output pixel p reads input p + (kh-1) w +
 *     (kw-1): each kernel row is a "stream" that loads every vector of the plane once (the next
 *     one is kept for the following step), and its three column taps are that vector and its
 *     lane rotations (valignd) with the previous and next ones, zeroed by two column masks per
 *     vector where they would wrap into the neighbouring row. Three more masks per vector keep
 *     the loads inside the plane (the rows above the first and below the last are the padding).
 *     The masks depend on the plane's shape only and are made once per call. The input gradient
 *     is the same correlation of dy with the kernel turned by 180 degrees; dW is a dot product
 *     per tap.
 *     Stride 2: row by row, one vector per output row; each input row is loaded once and
 *     de-interleaved with permutes into the columns 2ox - 1, 2ox, 2ox + 1 its taps read, and
 *     serves two output rows. dx is built two rows at a time, its even and odd columns from dy
 *     and dy moved by one lane, and interleaved back with permutes.
 *   Direct, portable (when gemm does not run on AVX-512: AVX2 machines, ARM64; the same layers,
 *   stride 2 on rows of any width, planes of 16 output pixels and more): the
 *   same walk in GNU C vectors of 8 floats, the kernels compiled for AVX2 + FMA and for the
 *   baseline (NEON on ARM64). Stride 1 copies each plane into a buffer with a zero row above
 *   and below it, so that its taps are plain loads, masked where they wrap; stride 2 splits
 *   input rows into even and odd columns with shuffles. On AVX2 code it is 3-4 times the blocked
 *   path and most of the AVX-512 direct one (Zen 4, whose 256-bit FMAs have the throughput of
 *   its 512-bit ones; 2 threads, batch 128, forward / backward GFLOP/s, blocked -> portable
 *   (AVX-512 direct)): 96 channels on 28x28, stride 2, 14/10 -> 52/40 (69/51); 144 on 14x14
 *   25/24 -> 100/73 (125/98); 384 on 7x7 24/19 -> 84/56 (91/68); the mbv2 training step, with
 *   NASC_GEMM=avx2, 152 -> 126 ms.
 *   Blocked (every other shape: 5x5 and 7x7 kernels, dilation, other paddings; and without
 *   AVX-512 the smallest planes): blocks of DW_CB = 16 channels are transposed into a
 *   pixel-major layout (one 16-channel vector per pixel, the input zero-padded), so each kernel
 *   tap is one vector multiply-add whatever the stride, padding or dilation, and the padding
 *   needs no tests. The transposes use AVX-512 shuffles when gemm runs on AVX-512 and plain
 *   loops otherwise; the arithmetic is plain C that the compiler vectorizes. For 5x5 and 7x7
 *   kernels it beats direct code (full vectors, no lane rotations).
 *
 * Threads: forward work items are planes (direct) or (channel block, image) pairs (blocked).
 * Backward items are (group of DW_NB images, block of DW_BLOCK (direct) or DW_CB channels),
 * group-major, so a thread walks runs of consecutive planes; each item sums dW and db over its
 * images in order, into its own slot, and the slots are added in a fixed order at the end: the
 * results do not depend on the thread count.
 * Scratch slots: 0 and 1 per thread (blocked path; portable backward: the input or the dx to
 * add, and dy); 2 (calling thread) the direct paths' lane masks and the items' sums; GRAD_SLOT
 * and INPUT_SLOT per thread for an output gradient or an input made on demand (grad_rows,
 * act_rows; INPUT_SLOT also the portable paths' input buffers); OUTPUT_SLOT a run of the
 * output before the eval epilogue.
 */
#include "conv_internal.h"
#include "simd.h"

#include <stdint.h>

#define DW_CB 16    /* channels per block (blocked path) */
#define DW_NB 4     /* images per backward work item */
#define DW_BLOCK 64 /* channels per backward work item (direct path) */
#define DW_RUN_FLOATS 1024 /* values per forward run of planes (direct path) */
/* planes per backward run (direct path, AVX-512) where the input planes have at most
 * DW_BWD_RUN_PIXELS pixels; one plane a run elsewhere (see direct_backward_items) */
#define DW_BWD_RUN 4
#define DW_BWD_RUN_PIXELS 64

/* ------------------------------------------------------------------ blocked path */
#if CONV_X86
/* dst[p*16 + c] = src[c*plane + p] for c < cn (0 above), p < np. */
__attribute__((target("avx512f"))) static void dw_in_avx512(float *dst, const float *src, size_t plane, int np,
                                                            int cn) {
    int p0 = 0;
    if (cn == 16)
        for (; p0 + 16 <= np; p0 += 16) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++) r[c] = _mm512_loadu_ps(src + (size_t)c * plane + p0);
            tr16(r);
#pragma GCC unroll 16
            for (int p = 0; p < 16; p++) _mm512_storeu_ps(dst + (size_t)(p0 + p) * 16, r[p]);
        }
    for (; p0 < np; p0 += 16) {
        int n = NASC_MIN(16, np - p0);
        __mmask16 m = n == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
        __m512 r[16];
        for (int c = 0; c < 16; c++)
            r[c] = c < cn ? _mm512_maskz_loadu_ps(m, src + (size_t)c * plane + p0) : _mm512_setzero_ps();
        tr16(r);
        for (int p = 0; p < n; p++) _mm512_storeu_ps(dst + (size_t)(p0 + p) * 16, r[p]);
    }
}

/* dst[c*plane + p] (+)= src[p*16 + c] for c < cn, p < np. */
__attribute__((target("avx512f"))) static void dw_out_avx512(float *dst, size_t plane, const float *src, int np,
                                                             int cn, int accumulate) {
    int p0 = 0;
    if (cn == 16)
        for (; p0 + 16 <= np; p0 += 16) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int p = 0; p < 16; p++) r[p] = _mm512_loadu_ps(src + (size_t)(p0 + p) * 16);
            tr16(r);
            if (accumulate) {
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) {
                    float *row = dst + (size_t)c * plane + p0;
                    _mm512_storeu_ps(row, _mm512_add_ps(r[c], _mm512_loadu_ps(row)));
                }
            } else {
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) _mm512_storeu_ps(dst + (size_t)c * plane + p0, r[c]);
            }
        }
    for (; p0 < np; p0 += 16) {
        int n = NASC_MIN(16, np - p0);
        __mmask16 m = n == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
        __m512 r[16];
        for (int p = 0; p < 16; p++) r[p] = p < n ? _mm512_loadu_ps(src + (size_t)(p0 + p) * 16) : _mm512_setzero_ps();
        tr16(r);
        for (int c = 0; c < cn; c++) {
            float *row = dst + (size_t)c * plane + p0;
            __m512 v = accumulate ? _mm512_add_ps(r[c], _mm512_maskz_loadu_ps(m, row)) : r[c];
            _mm512_mask_storeu_ps(row, m, v);
        }
    }
}
#endif

static void dw_in(float *dst, const float *src, size_t plane, int np, int cn) {
#if CONV_X86
    if (use_avx512()) {
        dw_in_avx512(dst, src, plane, np, cn);
        return;
    }
#endif
    for (int p = 0; p < np; p++)
        for (int c = 0; c < DW_CB; c++) dst[(size_t)p * DW_CB + c] = c < cn ? src[(size_t)c * plane + p] : 0.0f;
}

static void dw_out(float *dst, size_t plane, const float *src, int np, int cn, int accumulate) {
#if CONV_X86
    if (use_avx512()) {
        dw_out_avx512(dst, plane, src, np, cn, accumulate);
        return;
    }
#endif
    for (int c = 0; c < cn; c++)
        for (int p = 0; p < np; p++) {
            float v = src[(size_t)p * DW_CB + c];
            dst[(size_t)c * plane + p] = accumulate ? dst[(size_t)c * plane + p] + v : v;
        }
}

/* xb (hp, wp, 16): the zero-padded block of channels [c0, c0 + cn) of one image, through tmp
 * (h*w*16 floats). Only the interior is written: the caller zeroes xb once (the border stays
 * zero). */
static void dw_fill(float *xb, float *tmp, const float *x, int cn, const ConvDims *d) {
    const int wp = d->w + 2 * d->pad;
    dw_in(tmp, x, (size_t)d->h * d->w, d->h * d->w, cn);
    for (int iy = 0; iy < d->h; iy++)
        memcpy(xb + ((size_t)(iy + d->pad) * wp + d->pad) * DW_CB, tmp + (size_t)iy * d->w * DW_CB,
               (size_t)d->w * DW_CB * sizeof(float));
}

/* yb (P, 16) = b16 + the taps of w16 (kk, 16) over xb (hp, wp, 16). Four output pixels at a
 * time, so each weight vector is loaded once per four multiply-adds. */
MULTIVERSION static void dw_block_forward(float *yb, const float *xb, const float *w16, const float *b16,
                                          const ConvDims *d) {
    const int k = d->k, s = d->stride, dil = d->dil, ow = d->ow, wp = d->w + 2 * d->pad;
    for (int oy = 0; oy < d->oh; oy++) {
        int ox = 0;
        for (; ox + 4 <= ow; ox += 4) {
            float a0[DW_CB], a1[DW_CB], a2[DW_CB], a3[DW_CB];
            for (int c = 0; c < DW_CB; c++) a0[c] = a1[c] = a2[c] = a3[c] = b16[c];
            for (int kh = 0; kh < k; kh++) {
                const float *xr = xb + ((size_t)(oy * s + kh * dil) * wp + (size_t)ox * s) * DW_CB;
                for (int kw = 0; kw < k; kw++) {
                    const float *xp = xr + (size_t)kw * dil * DW_CB, *wt = w16 + (size_t)(kh * k + kw) * DW_CB;
                    const size_t st = (size_t)s * DW_CB;
                    for (int c = 0; c < DW_CB; c++) {
                        a0[c] += wt[c] * xp[c];
                        a1[c] += wt[c] * xp[st + c];
                        a2[c] += wt[c] * xp[2 * st + c];
                        a3[c] += wt[c] * xp[3 * st + c];
                    }
                }
            }
            float *yo = yb + ((size_t)oy * ow + ox) * DW_CB;
            for (int c = 0; c < DW_CB; c++) {
                yo[c] = a0[c];
                yo[DW_CB + c] = a1[c];
                yo[2 * DW_CB + c] = a2[c];
                yo[3 * DW_CB + c] = a3[c];
            }
        }
        for (; ox < ow; ox++) {
            float a[DW_CB];
            for (int c = 0; c < DW_CB; c++) a[c] = b16[c];
            for (int kh = 0; kh < k; kh++)
                for (int kw = 0; kw < k; kw++) {
                    const float *xp = xb + ((size_t)(oy * s + kh * dil) * wp + (size_t)ox * s + (size_t)kw * dil) * DW_CB;
                    const float *wt = w16 + (size_t)(kh * k + kw) * DW_CB;
                    for (int c = 0; c < DW_CB; c++) a[c] += wt[c] * xp[c];
                }
            float *yo = yb + ((size_t)oy * ow + ox) * DW_CB;
            for (int c = 0; c < DW_CB; c++) yo[c] = a[c];
        }
    }
}

/* For the output gradients dyb (P, 16): db16 += sum of dyb; dw16 (kk, 16) += dyb * input tap;
 * dxb (hp, wp, 16) += w16 * dyb at each tap. NULL outputs are skipped. One tap at a time, so
 * the dW sums stay in registers. */
MULTIVERSION static void dw_block_backward(float *restrict dxb, float *restrict dw16, float *restrict db16,
                                           const float *restrict dyb, const float *restrict xb,
                                           const float *restrict w16, const ConvDims *d) {
    const int k = d->k, s = d->stride, dil = d->dil, oh = d->oh, ow = d->ow, wp = d->w + 2 * d->pad;
    if (db16) {
        float a[DW_CB] = {0};
        for (int p = 0; p < oh * ow; p++)
            for (int c = 0; c < DW_CB; c++) a[c] += dyb[(size_t)p * DW_CB + c];
        for (int c = 0; c < DW_CB; c++) db16[c] += a[c];
    }
    for (int kh = 0; kh < k; kh++)
        for (int kw = 0; kw < k; kw++) {
            const size_t t = (size_t)(kh * k + kw) * DW_CB;
            if (dw16) {
                float a[DW_CB] = {0};
                for (int oy = 0; oy < oh; oy++) {
                    const float *xr = xb + ((size_t)(oy * s + kh * dil) * wp + (size_t)kw * dil) * DW_CB;
                    const float *g = dyb + (size_t)oy * ow * DW_CB;
                    for (int ox = 0; ox < ow; ox++)
                        for (int c = 0; c < DW_CB; c++) a[c] += g[(size_t)ox * DW_CB + c] * xr[(size_t)ox * s * DW_CB + c];
                }
                for (int c = 0; c < DW_CB; c++) dw16[t + c] += a[c];
            }
            if (dxb) {
                float wt[DW_CB];
                for (int c = 0; c < DW_CB; c++) wt[c] = w16[t + c];
                for (int oy = 0; oy < oh; oy++) {
                    float *xr = dxb + ((size_t)(oy * s + kh * dil) * wp + (size_t)kw * dil) * DW_CB;
                    const float *g = dyb + (size_t)oy * ow * DW_CB;
                    for (int ox = 0; ox < ow; ox++)
                        for (int c = 0; c < DW_CB; c++) xr[(size_t)ox * s * DW_CB + c] += wt[c] * g[(size_t)ox * DW_CB + c];
                }
            }
        }
}

/* w16 (kk, 16) and b16 (16) of channels [c0, c0 + cn), zero above cn. */
static void dw_block_weights(float *w16, float *b16, const float *w, const float *b, int c0, int cn, int kk) {
    for (int t = 0; t < kk; t++)
        for (int c = 0; c < DW_CB; c++) w16[(size_t)t * DW_CB + c] = c < cn ? w[(size_t)(c0 + c) * kk + t] : 0.0f;
    if (b16)
        for (int c = 0; c < DW_CB; c++) b16[c] = c < cn && b ? b[c0 + c] : 0.0f;
}

/* Forward of items [lo, hi) (item i = channel block i / n, image i % n), on the calling thread. */
static void block_forward_items(float *y, const ActSrc *xs, const float *w, const float *b, const ConvDims *d,
                                double *row_stats, const BnEval *epi, int lo, int hi) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xbsz = round16((size_t)(d->h + 2 * d->pad) * (d->w + 2 * d->pad) * DW_CB);
    const size_t tsz = round16((size_t)NASC_MAX(P, HW) * DW_CB);
    float *xb = scratch_get(0, (xbsz + tsz + (size_t)(kk + 1) * DW_CB) * sizeof(float));
    float *yb = xb + xbsz, *w16 = yb + tsz, *b16 = w16 + (size_t)kk * DW_CB; /* yb also dw_fill's tmp */
    float *xbuf = xs->saved ? scratch_get(INPUT_SLOT, (size_t)HW * DW_CB * sizeof(float)) : NULL;
    float *ybuf = epi ? scratch_get(OUTPUT_SLOT, (size_t)P * DW_CB * sizeof(float)) : NULL;
    memset(xb, 0, xbsz * sizeof(float));
    int blk_have = -1;
    for (int it = lo; it < hi; it++) {
        int blk = it / d->n, n = it % d->n, c0 = blk * DW_CB, cn = NASC_MIN(DW_CB, C - c0);
        const size_t r0 = (size_t)n * C + c0;
        if (blk != blk_have) dw_block_weights(w16, b16, w, b, c0, cn, kk), blk_have = blk;
        dw_fill(xb, yb, act_rows(xs, xbuf, r0, (size_t)cn), cn, d);
        dw_block_forward(yb, xb, w16, b16, d);
        dw_out(epi ? ybuf : y + r0 * P, (size_t)P, yb, P, cn, 0);
        if (row_stats) bn_row_stats(row_stats, y + r0 * P, r0, (size_t)cn, P);
        if (epi) bn_eval_rows(epi, y + r0 * P, ybuf, r0, (size_t)cn, C, P);
    }
}

/* Backward of items [lo, hi) (item i = image group i / blocks, channel block i % blocks), on
 * the calling thread: dx of each plane; with part, the item's dW taps and dy sums per channel
 * into part (groups, C, kk + 1). */
static void block_backward_items(float *dx, float *part, const GradSrc *dys, const ActSrc *xs, const float *w,
                                 const ConvDims *d, int dx_acc, const BnRowSums *sums, int lo, int hi) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w, wp = d->w + 2 * d->pad;
    const int blocks = (C + DW_CB - 1) / DW_CB;
    const size_t xbsz = round16((size_t)(d->h + 2 * d->pad) * wp * DW_CB), tsz = round16((size_t)HW * DW_CB);
    float *xb = scratch_get(0, (2 * xbsz + tsz + round16((size_t)P * DW_CB)) * sizeof(float));
    float *dxb = xb + xbsz, *tmp = dxb + xbsz, *dyb = tmp + tsz;
    /* the block's weights (kk, 16), then the item's dW (kk, 16) and db (16) sums */
    float *w16 = scratch_get(1, (size_t)(2 * kk + 1) * DW_CB * sizeof(float)), *s16 = w16 + (size_t)kk * DW_CB;
    float *gbuf = dys->k ? scratch_get(GRAD_SLOT, (size_t)P * DW_CB * sizeof(float)) : NULL;
    float *xbuf = part && xs->saved ? scratch_get(INPUT_SLOT, (size_t)HW * DW_CB * sizeof(float)) : NULL;
    if (part) memset(xb, 0, xbsz * sizeof(float));
    int blk_have = -1;
    for (int it = lo; it < hi; it++) {
        const int grp = it / blocks, blk = it % blocks, c0 = blk * DW_CB, cn = NASC_MIN(DW_CB, C - c0);
        const int n0 = grp * DW_NB, n1 = NASC_MIN(d->n, n0 + DW_NB);
        if (blk != blk_have) dw_block_weights(w16, NULL, w, NULL, c0, cn, kk), blk_have = blk;
        memset(s16, 0, (size_t)(kk + 1) * DW_CB * sizeof(float));
        for (int n = n0; n < n1; n++) {
            const size_t img = (size_t)n * C + c0;
            dw_in(dyb, grad_rows(dys, gbuf, img, (size_t)cn), (size_t)P, P, cn);
            if (part) dw_fill(xb, tmp, act_rows(xs, xbuf, img, (size_t)cn), cn, d);
            if (dx) memset(dxb, 0, xbsz * sizeof(float));
            dw_block_backward(dx ? dxb : NULL, part ? s16 : NULL, part ? s16 + (size_t)kk * DW_CB : NULL, dyb, xb,
                              w16, d);
            if (dx) { /* the interior of dxb, compacted, into dx */
                for (int iy = 0; iy < d->h; iy++)
                    memcpy(tmp + (size_t)iy * d->w * DW_CB, dxb + ((size_t)(iy + d->pad) * wp + d->pad) * DW_CB,
                           (size_t)d->w * DW_CB * sizeof(float));
                dw_out(dx + img * HW, (size_t)HW, tmp, HW, cn, dx_acc);
                if (sums) bn_row_sums(sums, dx + img * HW, img, (size_t)cn);
            }
        }
        if (part)
            for (int c = 0; c < cn; c++)
                for (int t = 0; t <= kk; t++) part[((size_t)grp * C + c0 + c) * (kk + 1) + t] = s16[(size_t)t * DW_CB + c];
    }
}

/* ------------------------------------------------------------------ direct path */
typedef enum { DIRECT_NONE, DIRECT_S1, DIRECT_S2 } DirectMode;

/* Portable: the smallest output planes (pixels) for the direct path, stride 1 and 2. Below
 * them the blocked path, 16 channels a vector, costs less than a plane's fixed work (forward +
 * dx + dW, one thread, 4 images of 32 channels, ns a plane, direct vs blocked: stride 1, 3x5
 * 73 vs 60, 4x4 53 vs 61, 7x7 91 vs 158; stride 2, input 8x6 97 vs 93, 7x7 89 vs 98). */
#define DW_S1_MIN 16
#define DW_S2_MIN 16

/* Planes per forward run of the direct paths (about DW_RUN_FLOATS values, at least one). */
static int dw_run(const ConvDims *d) { return NASC_MAX(1, DW_RUN_FLOATS / NASC_MAX(d->h * d->w, d->oh * d->ow)); }

/* A direct-path backward item: the block of DW_BLOCK channels [c0, c0 + cn) of images [n0, n0 +
 * m) (item it = image group it / blocks, block it % blocks); k180 gets the block's kernels
 * turned by 180 degrees (dx's correlation, stride 1). */
typedef struct {
    int c0, cn, n0, m;
} DwItem;

static DwItem dw_item(const ConvDims *d, int it, const float *w, float k180[DW_BLOCK][9]) {
    const int nblk = (d->cin + DW_BLOCK - 1) / DW_BLOCK;
    DwItem t;
    t.c0 = it % nblk * DW_BLOCK, t.cn = NASC_MIN(DW_BLOCK, d->cin - t.c0);
    t.n0 = it / nblk * DW_NB, t.m = NASC_MIN(d->n, t.n0 + DW_NB) - t.n0;
    for (int q = 0; q < t.cn; q++)
        for (int k = 0; k < 9; k++) k180[q][k] = w[(size_t)(t.c0 + q) * 9 + 8 - k];
    return t;
}

typedef struct {
    DirectMode mode;
    int x512;           /* the AVX-512 kernels, else the portable ones */
    int h, w, oh, ow;
    int npix, nvec;     /* pixels of an input plane; AVX-512 stride 1: its vectors */
    /* AVX-512, stride 1: (nvec + 1, 5) lanes of vector v whose column - 1 / + 1 is in the row,
     * and whose pixel in the row above / this row / the row below is in the plane */
    const uint16_t *cm;
    /* portable: lane masks (int32 0 or -1). Stride 1, over the plane's pixels (npix rounded up
     * to 8, 0 past them): ml / mr, the pixel has a left / right neighbour in its row. Stride 2,
     * over an output row's columns j (nch * 8): me j < ow, mo 2j + 1 < w, mr j + 1 < ow. */
    const int32_t *ml, *mr, *me, *mo;
    int nch;            /* portable stride 2: chunks of 8 columns per output row */
    int32_t mlast[8];   /* portable stride 2: the last chunk's lanes that no other chunk has */
} DwDirect;

/* Fills g for d (mode DIRECT_NONE: the blocked path) and builds the lane masks. Returns `extra`
 * floats of scratch (slot 2 of the calling thread, after the masks), NULL if extra == 0. */
static float *direct_init(DwDirect *g, const ConvDims *d, size_t extra) {
    memset(g, 0, sizeof *g);
    g->h = d->h, g->w = d->w, g->oh = d->oh, g->ow = d->ow;
    g->npix = d->h * d->w;
    if (d->k == 3 && d->dil == 1 && d->pad == 1) {
#if CONV_X86
        if (use_avx512()) {
            g->x512 = 1;
            g->mode = d->stride == 1 ? DIRECT_S1 : d->stride == 2 && d->w <= 32 ? DIRECT_S2 : DIRECT_NONE;
        } else
#endif
            g->mode = d->stride == 1 && d->oh * d->ow >= DW_S1_MIN   ? DIRECT_S1
                      : d->stride == 2 && d->oh * d->ow >= DW_S2_MIN ? DIRECT_S2
                                                                     : DIRECT_NONE;
    }
    if (g->mode == DIRECT_NONE) return extra ? scratch_get(2, extra * sizeof(float)) : NULL;
    if (!g->x512) { /* the portable kernels' masks */
        g->nch = (d->ow + 7) / 8;
        const size_t n = g->mode == DIRECT_S1 ? (size_t)(g->npix + 7) / 8 * 8 : (size_t)g->nch * 8;
        const size_t mfloats = round16((g->mode == DIRECT_S1 ? 2 : 3) * n);
        float *buf = scratch_get(2, (mfloats + extra) * sizeof(float));
        int32_t *m = (int32_t *)(void *)buf;
        if (g->mode == DIRECT_S1) {
            for (size_t p = 0; p < n; p++) {
                const int col = (int)(p % (size_t)d->w), in = p < (size_t)g->npix;
                m[p] = in && col > 0 ? -1 : 0;
                m[n + p] = in && col + 1 < d->w ? -1 : 0;
            }
            g->ml = m, g->mr = m + n;
        } else {
            for (size_t j = 0; j < n; j++) {
                m[j] = (int)j < d->ow ? -1 : 0;
                m[n + j] = 2 * (int)j + 1 < d->w ? -1 : 0;
                m[2 * n + j] = (int)j + 1 < d->ow ? -1 : 0;
            }
            g->me = m, g->mo = m + n, g->mr = m + 2 * n;
            for (int l = 0; l < 8; l++) /* the last chunk starts at ow - 8 when there are several */
                g->mlast[l] = g->nch == 1 ? (l < d->ow ? -1 : 0) : (d->ow - 8 + l >= 8 * (g->nch - 1) ? -1 : 0);
        }
        return extra ? buf + mfloats : NULL;
    }
    if (g->mode != DIRECT_S1) return extra ? scratch_get(2, extra * sizeof(float)) : NULL;
    g->nvec = (g->npix + 15) / 16;
    const size_t nm = 5 * ((size_t)g->nvec + 1), mfloats = round16((nm * sizeof(uint16_t) + 3) / 4);
    float *buf = scratch_get(2, (mfloats + extra) * sizeof(float));
    uint16_t *cm = (uint16_t *)(void *)buf;
    memset(cm, 0, nm * sizeof *cm);
    for (int q = 0, col = 0; q < 16 * (g->nvec + 1); q++, col = col + 1 == d->w ? 0 : col + 1) {
        uint16_t bit = (uint16_t)(1u << (q % 16)), *m = cm + 5 * (q / 16);
        if (q < g->npix && col > 0) m[0] |= bit;
        if (q < g->npix && col + 1 < d->w) m[1] |= bit;
        for (int r = 0; r < 3; r++)
            if (q + (r - 1) * d->w >= 0 && q + (r - 1) * d->w < g->npix) m[2 + r] |= bit;
    }
    g->cm = cm;
    return extra ? buf + mfloats : NULL;
}

#if CONV_X86
#define DWV __attribute__((target("avx512f")))
#define DWV_INLINE __attribute__((target("avx512f"), always_inline)) static inline

static const int32_t dw_iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* (Both directions walk the planes in memory order, which the hardware prefetchers follow;
 * prefetching planes ahead as well made them slower: the forward of 96 channels on 28x28,
 * stride 2, made input, batch 128, 2 threads, 1.55 -> 1.24 ms without; 7x7 planes unchanged) */

#define ROT(hi, lo, n, m) \
    _mm512_castsi512_ps(_mm512_maskz_alignr_epi32((m), _mm512_castps_si512(hi), _mm512_castps_si512(lo), (n)))

/* ---------------------------------------------------------------- stride 1 */
/* out[p] (+)= bias + sum over r, j < 3 of k9[3r + j] * src[p + (r - 1) w + j - 1], p < npix,
 * zero outside the plane (src: a plane). add: out += (bias is then 0). */
DWV static void s1_corr(float *out, const float *src, const DwDirect *g, const float *k9, float bias, int add) {
    __m512 W[9], prev[3], cur[3];
    const float *p[3];
    const uint16_t *cm = g->cm;
    for (int t = 0; t < 9; t++) W[t] = _mm512_set1_ps(k9[t]);
    for (int r = 0; r < 3; r++) {
        p[r] = src + (ptrdiff_t)(r - 1) * g->w;
        prev[r] = _mm512_setzero_ps();
        cur[r] = _mm512_maskz_loadu_ps(cm[2 + r], p[r]);
    }
    const __m512 bv = _mm512_set1_ps(bias);
    for (int v = 0; v < g->nvec; v++) {
        const __mmask16 ml = cm[5 * v], mr = cm[5 * v + 1];
        __m512 a[3]; /* one sum per kernel row: short dependency chains */
        for (int r = 0; r < 3; r++) {
            const __m512 nxt = _mm512_maskz_loadu_ps(cm[5 * v + 7 + r], p[r] + (size_t)16 * (v + 1));
            a[r] = _mm512_mul_ps(W[3 * r + 1], cur[r]);
            a[r] = _mm512_fmadd_ps(W[3 * r], ROT(cur[r], prev[r], 15, ml), a[r]);
            a[r] = _mm512_fmadd_ps(W[3 * r + 2], ROT(nxt, cur[r], 1, mr), a[r]);
            prev[r] = cur[r], cur[r] = nxt;
        }
        __m512 s = _mm512_add_ps(_mm512_add_ps(a[0], bv), _mm512_add_ps(a[1], a[2]));
        const __mmask16 m = cm[5 * v + 3];
        float *o = out + (size_t)16 * v;
        if (add) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, o));
        _mm512_mask_storeu_ps(o, m, s);
    }
}

/* acc[3r + j] += sum over p < npix of dy[p] * src[p + (r - 1) w + j - 1]; acc[9] += sum of dy. */
DWV static void s1_dot(__m512 *acc, const float *dy, const float *src, const DwDirect *g) {
    __m512 A[10], prev[3], cur[3];
    const float *p[3];
    const uint16_t *cm = g->cm;
    for (int t = 0; t < 10; t++) A[t] = acc[t];
    for (int r = 0; r < 3; r++) {
        p[r] = src + (ptrdiff_t)(r - 1) * g->w;
        prev[r] = _mm512_setzero_ps();
        cur[r] = _mm512_maskz_loadu_ps(cm[2 + r], p[r]);
    }
    for (int v = 0; v < g->nvec; v++) {
        const __mmask16 ml = cm[5 * v], mr = cm[5 * v + 1];
        const __m512 gv = _mm512_maskz_loadu_ps(cm[5 * v + 3], dy + (size_t)16 * v);
        for (int r = 0; r < 3; r++) {
            const __m512 nxt = _mm512_maskz_loadu_ps(cm[5 * v + 7 + r], p[r] + (size_t)16 * (v + 1));
            A[3 * r] = _mm512_fmadd_ps(gv, ROT(cur[r], prev[r], 15, ml), A[3 * r]);
            A[3 * r + 1] = _mm512_fmadd_ps(gv, cur[r], A[3 * r + 1]);
            A[3 * r + 2] = _mm512_fmadd_ps(gv, ROT(nxt, cur[r], 1, mr), A[3 * r + 2]);
            prev[r] = cur[r], cur[r] = nxt;
        }
        A[9] = _mm512_add_ps(A[9], gv);
    }
    for (int t = 0; t < 10; t++) acc[t] = A[t];
}

/* ------------------------------------------------------------------ stride 2, row by row */
/* 3x3, stride 2, padding 1, dilation 1, rows of at most 32 (MobileNet's downsampling layers):
 * no phase planes. Output row oy is one vector (ow <= 16 lanes); each input row it reads is
 * loaded once (two vectors) and de-interleaved with permutes into its three taps' columns
 * 2ox - 1, 2ox, 2ox + 1, and the middle one of the three input rows of oy is the top one of
 * oy + 1. dx is built a pair of rows at a time, its even and odd columns from dy and dy moved
 * one lane, and interleaved back with permutes. */
typedef struct {
    __m512i is, ie, io; /* de-interleave: columns 2j - 1, 2j, 2j + 1 */
    __m512i il, ih;     /* interleave even / odd lanes: dx columns [0, 16), [16, 32) */
    __mmask16 m0, m1;   /* an input (or dx) row's two vectors */
    __mmask16 mo;       /* an output row */
} S2Ix;

DWV_INLINE S2Ix s2_ix(const DwDirect *g) {
    S2Ix ix;
    const __m512i i = _mm512_loadu_si512(dw_iota), one = _mm512_set1_epi32(1);
    ix.ie = _mm512_slli_epi32(i, 1);
    ix.io = _mm512_add_epi32(ix.ie, one);
    ix.is = _mm512_sub_epi32(ix.ie, one); /* lane 0 (-1) is zeroed by the permute's mask */
    ix.il = _mm512_add_epi32(_mm512_srli_epi32(i, 1), _mm512_slli_epi32(_mm512_and_si512(i, one), 4));
    ix.ih = _mm512_add_epi32(ix.il, _mm512_set1_epi32(8));
    ix.m0 = lane_range(0, 0, g->w), ix.m1 = lane_range(16, 0, g->w), ix.mo = lane_range(0, 0, g->ow);
    return ix;
}

/* t[kw] = input row `row` at columns 2j + kw - 1 (zero outside the plane). */
DWV_INLINE void s2_row(__m512 t[3], const float *x, int row, const DwDirect *g, const S2Ix *ix) {
    if (row < 0 || row >= g->h) {
        t[0] = t[1] = t[2] = _mm512_setzero_ps();
        return;
    }
    const float *xr = x + (size_t)row * g->w;
    const __m512 lo = _mm512_maskz_loadu_ps(ix->m0, xr);
    const __m512 hi = g->w > 16 ? _mm512_maskz_loadu_ps(ix->m1, xr + 16) : _mm512_setzero_ps();
    t[0] = _mm512_maskz_permutex2var_ps(0xFFFE, lo, ix->is, hi);
    t[1] = _mm512_permutex2var_ps(lo, ix->ie, hi);
    t[2] = _mm512_permutex2var_ps(lo, ix->io, hi);
}

/* y (oh, ow) = b + the taps of w (3, 3) over x (h, w): one plane. */
DWV static void s2_forward_plane(float *y, const float *x, const float *w, float b, const DwDirect *g, const S2Ix *ix) {
    __m512 W[9], top[3], mid[3], bot[3];
    for (int t = 0; t < 9; t++) W[t] = _mm512_set1_ps(w[t]);
    s2_row(top, x, -1, g, ix);
    for (int oy = 0; oy < g->oh; oy++) {
        s2_row(mid, x, 2 * oy, g, ix);
        s2_row(bot, x, 2 * oy + 1, g, ix);
        __m512 a0 = _mm512_set1_ps(b), a1 = _mm512_mul_ps(W[3], mid[0]), a2 = _mm512_mul_ps(W[6], bot[0]);
        a0 = _mm512_fmadd_ps(W[0], top[0], a0), a0 = _mm512_fmadd_ps(W[1], top[1], a0), a0 = _mm512_fmadd_ps(W[2], top[2], a0);
        a1 = _mm512_fmadd_ps(W[4], mid[1], a1), a1 = _mm512_fmadd_ps(W[5], mid[2], a1);
        a2 = _mm512_fmadd_ps(W[7], bot[1], a2), a2 = _mm512_fmadd_ps(W[8], bot[2], a2);
        _mm512_mask_storeu_ps(y + (size_t)oy * g->ow, ix->mo, _mm512_add_ps(a0, _mm512_add_ps(a1, a2)));
        top[0] = bot[0], top[1] = bot[1], top[2] = bot[2];
    }
}

/* acc[t] += the dW taps of one plane (t = kh*3 + kw), acc[9] += the sum of dy. */
DWV static void s2_dw_plane(__m512 *acc, const float *dy, const float *x, const DwDirect *g, const S2Ix *ix) {
    __m512 A[10], top[3], mid[3], bot[3];
    for (int t = 0; t < 10; t++) A[t] = acc[t];
    s2_row(top, x, -1, g, ix);
    for (int oy = 0; oy < g->oh; oy++) {
        s2_row(mid, x, 2 * oy, g, ix);
        s2_row(bot, x, 2 * oy + 1, g, ix);
        const __m512 gv = _mm512_maskz_loadu_ps(ix->mo, dy + (size_t)oy * g->ow);
        for (int j = 0; j < 3; j++) {
            A[j] = _mm512_fmadd_ps(gv, top[j], A[j]);
            A[3 + j] = _mm512_fmadd_ps(gv, mid[j], A[3 + j]);
            A[6 + j] = _mm512_fmadd_ps(gv, bot[j], A[6 + j]);
            top[j] = bot[j];
        }
        A[9] = _mm512_add_ps(A[9], gv);
    }
    for (int t = 0; t < 10; t++) acc[t] = A[t];
}

/* A dx row (w <= 32) as two vectors: v[0] columns [0, 16), v[1] [16, 32) (zero past w). */
DWV_INLINE void s2_load_row(__m512 v[2], const float *xr, const DwDirect *g, const S2Ix *ix) {
    v[0] = _mm512_maskz_loadu_ps(ix->m0, xr);
    v[1] = g->w > 16 ? _mm512_maskz_loadu_ps(ix->m1, xr + 16) : _mm512_setzero_ps();
}

/* dx row xr = old + the interleave of its even columns e and odd columns o (old: the row's
 * previous values, or zero). */
DWV_INLINE void s2_put_row(float *xr, const __m512 old[2], __m512 e, __m512 o, const DwDirect *g, const S2Ix *ix) {
    _mm512_mask_storeu_ps(xr, ix->m0, _mm512_add_ps(old[0], _mm512_permutex2var_ps(e, ix->il, o)));
    if (g->w > 16) _mm512_mask_storeu_ps(xr + 16, ix->m1, _mm512_add_ps(old[1], _mm512_permutex2var_ps(e, ix->ih, o)));
}

/* dx (h, w) (+)= the input gradient of one plane. Dx rows 2m and 2m + 1 come from dy rows m
 * and m + 1: the even column 2j is tap column 1 of output column j; the odd column 2j + 1 is
 * tap column 2 of j and tap column 0 of j + 1 (dy moved down one lane). With add, the next
 * pair of dx rows is loaded before this pair is stored: the rows' vectors overlap (masked),
 * and a load behind an overlapping masked store would wait for it to reach the cache. */
DWV static void s2_dx_plane(float *dx, const float *dy, const float *w, const DwDirect *g, const S2Ix *ix, int add) {
    __m512 W[9], cur[2][2], nxt[2][2];
    for (int t = 0; t < 9; t++) W[t] = _mm512_set1_ps(w[t]);
    const __m512i z = _mm512_setzero_si512();
    for (int r = 0; r < 2; r++) {
        nxt[r][0] = nxt[r][1] = _mm512_setzero_ps();
        if (add && r < g->h) s2_load_row(nxt[r], dx + (size_t)r * g->w, g, ix);
    }
    __m512 gn = _mm512_maskz_loadu_ps(ix->mo, dy);
    __m512 sn = _mm512_castsi512_ps(_mm512_alignr_epi32(z, _mm512_castps_si512(gn), 1));
    for (int m = 0; 2 * m < g->h; m++) {
        const __m512 gm = gn, sm = sn;
        gn = m + 1 < g->oh ? _mm512_maskz_loadu_ps(ix->mo, dy + (size_t)(m + 1) * g->ow) : _mm512_setzero_ps();
        sn = _mm512_castsi512_ps(_mm512_alignr_epi32(z, _mm512_castps_si512(gn), 1));
        float *xr = dx + (size_t)2 * m * g->w;
        for (int r = 0; r < 2; r++) {
            cur[r][0] = nxt[r][0], cur[r][1] = nxt[r][1];
            if (add && 2 * m + 2 + r < g->h) s2_load_row(nxt[r], xr + (size_t)(2 + r) * g->w, g, ix);
        }
        s2_put_row(xr, cur[0], _mm512_mul_ps(W[4], gm), _mm512_fmadd_ps(W[3], sm, _mm512_mul_ps(W[5], gm)), g, ix);
        if (2 * m + 1 < g->h) {
            __m512 e = _mm512_fmadd_ps(W[1], gn, _mm512_mul_ps(W[7], gm));
            __m512 o0 = _mm512_fmadd_ps(W[6], sm, _mm512_mul_ps(W[8], gm));
            __m512 o1 = _mm512_fmadd_ps(W[0], sn, _mm512_mul_ps(W[2], gn));
            s2_put_row(xr + g->w, cur[1], e, _mm512_add_ps(o0, o1), g, ix);
        }
    }
}

/* Forward of planes [lo, hi) (plane i = image i / C, channel i % C), on the calling thread, in
 * runs of planes of about DW_RUN_FLOATS values: a made input, the output's row statistics and
 * the eval epilogue take one call a run, so their row walks span the run. One call a plane had
 * cost more than the conv itself on 7x7 planes (made input and statistics, batch 128, 2
 * threads: 384 channels 1.23 -> 0.77 ms, the plain forward 0.51; 144 on 14x14, stride 2, 0.71
 * -> 0.54). Longer runs leave L1 (a run of 28x28 planes is one plane). */
DWV static void direct_forward_items(float *y, const ActSrc *xs, const float *w, const float *b, const ConvDims *d,
                                     const DwDirect *g, double *row_stats, const BnEval *epi, int lo, int hi) {
    const int C = d->cin, P = d->oh * d->ow, HW = d->h * d->w;
    const int run = dw_run(d);
    float *xbuf = xs->saved ? scratch_get(INPUT_SLOT, round16((size_t)run * HW) * sizeof(float)) : NULL;
    float *ybuf = epi ? scratch_get(OUTPUT_SLOT, round16((size_t)run * P) * sizeof(float)) : NULL;
    const S2Ix ix = s2_ix(g);
    for (int r0 = lo; r0 < hi; r0 += run) {
        const int nr = NASC_MIN(run, hi - r0);
        const float *xr = act_rows(xs, xbuf, (size_t)r0, (size_t)nr);
        float *yr = epi ? ybuf : y + (size_t)r0 * P;
        for (int j = 0; j < nr; j++) {
            const int it = r0 + j;
            if (g->mode == DIRECT_S2)
                s2_forward_plane(yr + (size_t)j * P, xr + (size_t)j * HW, w + (size_t)(it % C) * 9,
                                 b ? b[it % C] : 0.0f, g, &ix);
            else
                s1_corr(yr + (size_t)j * P, xr + (size_t)j * HW, g, w + (size_t)(it % C) * 9, b ? b[it % C] : 0.0f, 0);
        }
        if (row_stats) bn_row_stats(row_stats, yr, (size_t)r0, (size_t)nr, P);
        if (epi) bn_eval_rows(epi, y + (size_t)r0 * P, ybuf, (size_t)r0, (size_t)nr, C, P);
    }
}

/* Backward of items [lo, hi) (item i = the block of DW_BLOCK channels i % nblk of the images of
 * group i / nblk), on the calling thread: dx of each plane; with part, each channel's dW taps
 * and dy sum over the group's images into part (groups, C, 10). An item walks its planes image
 * by image, in memory order, which the hardware prefetchers follow (one channel across the
 * group's images at a time, with the next item's planes prefetched, was slower: fused
 * backward, batch 128, 2 threads: 96 channels on 28x28, stride 2, 5.6 -> 3.3 ms; 144 on 14x14
 * 3.3 -> 2.5 ms; 384 on 7x7 2.6 -> 2.5 ms). A made dy, a made input and dx's row sums take one
 * call a run of an image's planes: DW_BWD_RUN planes of at most DW_BWD_RUN_PIXELS pixels, else
 * one (fused backward as above, runs of 1 / 2 / 4 / 8 / 16 planes: 384 channels on 7x7 2.45 /
 * 2.13 / 2.14 / 2.29 / 2.44 ms, 192 on 7x7 1.18 / 1.00 / 0.94 / 0.94 ms; 144 on 14x14, stride
 * 2, 1.56 / 1.54 / 1.58 / 1.60 ms; 96 on 28x28, stride 2, 2.9-3.1 ms with one, 3.9-4.2 with
 * 4-64). */
DWV static void direct_backward_items(float *dx, float *part, const GradSrc *dys, const ActSrc *xs, const float *w,
                                      const ConvDims *d, const DwDirect *g, int dx_acc, const BnRowSums *sums, int lo,
                                      int hi) {
    const int C = d->cin, P = d->oh * d->ow, HW = d->h * d->w, nblk = (C + DW_BLOCK - 1) / DW_BLOCK;
    const int run = HW <= DW_BWD_RUN_PIXELS ? DW_BWD_RUN : 1;
    float *xbuf = part && xs->saved ? scratch_get(INPUT_SLOT, round16((size_t)run * HW) * sizeof(float)) : NULL;
    float *gbuf = dys->k ? scratch_get(GRAD_SLOT, round16((size_t)run * P) * sizeof(float)) : NULL;
    const S2Ix ix = s2_ix(g);
    float k180[DW_BLOCK][9];
    __m512 acc[DW_BLOCK][10];
    for (int it = lo; it < hi; it++) {
        const DwItem item = dw_item(d, it, w, k180);
        const int c0 = item.c0, cn = item.cn, n0 = item.n0, m = item.m;
        for (int q = 0; q < cn; q++)
            for (int k = 0; k < 10; k++) acc[q][k] = _mm512_setzero_ps();
        for (int j = 0; j < m; j++)
            for (int q0 = 0; q0 < cn; q0 += run) {
                const int nr = NASC_MIN(run, cn - q0);
                const size_t pl0 = (size_t)(n0 + j) * C + c0 + q0;
                const float *dyr = grad_rows(dys, gbuf, pl0, (size_t)nr);
                const float *xr = part ? act_rows(xs, xbuf, pl0, (size_t)nr) : NULL;
                for (int i = 0; i < nr; i++) {
                    const int q = q0 + i;
                    const size_t pl = pl0 + (size_t)i;
                    const float *dy = dyr + (size_t)i * P;
                    if (g->mode == DIRECT_S2) {
                        if (part) s2_dw_plane(acc[q], dy, xr + (size_t)i * HW, g, &ix);
                        if (dx) s2_dx_plane(dx + pl * HW, dy, w + (size_t)(c0 + q) * 9, g, &ix, dx_acc);
                    } else {
                        if (part) s1_dot(acc[q], dy, xr + (size_t)i * HW, g);
                        if (dx) s1_corr(dx + pl * HW, dy, g, k180[q], 0.0f, dx_acc);
                    }
                }
                if (dx && sums) bn_row_sums(sums, dx + pl0 * HW, pl0, (size_t)nr);
            }
        if (part)
            for (int q = 0; q < cn; q++)
                for (int t = 0; t < 10; t++)
                    part[((size_t)(it / nblk) * C + c0 + q) * 10 + t] = _mm512_reduce_add_ps(acc[q][t]);
    }
}
#endif

/* ------------------------------------------------------------------ direct path, portable */
/* The direct path where AVX-512 is not in use (AVX2 machines, ARM64, NASC_GEMM=avx2|generic):
 * the same plane-by-plane walk, in GNU C vectors of 8 floats (one AVX2 register, two SSE or
 * NEON registers), the hot functions compiled for AVX2 + FMA and the baseline (MULTIVERSION_FMA).
 * Lanes outside the plane are zeroed by AND with the masks (exact: a wrapped-in inf or NaN is
 * dropped, not multiplied by 0).
 *   Stride 1: the plane is one flat array, as in the AVX-512 kernels, copied to a buffer with a
 *   zero row above and below it so that every tap is a plain load; the column taps that wrap
 *   into the neighbouring row are masked.
 *   Stride 2: row by row, 8 output columns a vector: an input row's 16 values are split into
 *   even and odd columns with two shuffles; each input row is split once and serves two output
 *   rows. dx is built row by row, its even and odd columns from dy and dy moved by one column,
 *   and interleaved with two shuffles. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8fu __attribute__((vector_size(32), aligned(4), may_alias));  /* unaligned */
typedef int32_t v8iu __attribute__((vector_size(32), aligned(4), may_alias));
#define V8(p) ((v8f) * (const v8fu *)(const void *)(p))
#define V8I(p) ((v8i) * (const v8iu *)(const void *)(p))
#define V8_PUT(p, v) (*(v8fu *)(void *)(p) = (v))
#define V8_AND(v, m) ((v8f)((v8i)(v) & (m)))
#define V8_SPLAT(s) ((v8f){(s), (s), (s), (s), (s), (s), (s), (s)})
/* const v8f K0 .. K8: the 9 taps of a 3x3 kernel k9, each in every lane */
#define V8_TAPS(k9)                                                                               \
    const v8f K0 = V8_SPLAT((k9)[0]), K1 = V8_SPLAT((k9)[1]), K2 = V8_SPLAT((k9)[2]),             \
              K3 = V8_SPLAT((k9)[3]), K4 = V8_SPLAT((k9)[4]), K5 = V8_SPLAT((k9)[5]),             \
              K6 = V8_SPLAT((k9)[6]), K7 = V8_SPLAT((k9)[7]), K8 = V8_SPLAT((k9)[8])
/* The kernels (PV): cloned for AVX2 + FMA and the baseline; their copy loops stay loops (made
 * into memcpy calls or rep movs, the copies in and out of dW's ten accumulators alone made
 * stride 2's dW of a 28x28 plane 258 ns instead of 205). Their helpers (PV_INLINE) are inlined
 * into each clone: a call would run the baseline code. */
#define PV MULTIVERSION_FMA __attribute__((optimize("no-tree-loop-distribute-patterns"))) static
#define PV_INLINE static inline __attribute__((always_inline))

/* out[0, n) (+)= lanes [0, n) of the vector v, n <= 8. A macro: a vector whose address is taken
 * is kept in memory. */
#define V8_PUT_N(out, v, n, add)                                                   \
    do {                                                                           \
        float t_[8];                                                               \
        V8_PUT(t_, (v));                                                           \
        for (int l_ = 0; l_ < (n); l_++) (out)[l_] = (add) ? (out)[l_] + t_[l_] : t_[l_]; \
    } while (0)

/* ---------------------------------------------------------------- stride 1 */
/* xe: the plane (h, w) at xe + w + 1, zeros before it and after it (to npix rounded up to 8,
 * plus w + 1): pixel p's tap (r, j) is xe[p + r w + j]. */
static size_t s1_ext_floats(const DwDirect *g) { return round16((size_t)(g->npix + 7) / 8 * 8 + 2 * (size_t)g->w + 2); }

/* The kernels' pointers into xe and the masks, in locals (the stores, which may alias
 * anything, would make the compiler reload them from g). */
typedef struct {
    const float *x0, *x1, *x2; /* xe, xe + w, xe + 2w: the rows above, at, below a pixel */
    const int32_t *ml, *mr;
} S1Ptr;

PV_INLINE S1Ptr s1_ptr(const float *xe, const DwDirect *g) {
    return (S1Ptr){xe, xe + g->w, xe + 2 * (size_t)g->w, g->ml, g->mr};
}

/* dst[0, n) = src[0, n): a plane into the kernels' buffer. */
PV_INLINE void s1_copy(float *restrict dst, const float *restrict src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) V8_PUT(dst + i, V8(src + i));
    if (i < n && n >= 8)
        V8_PUT(dst + n - 8, V8(src + n - 8));
    else
        for (; i < n; i++) dst[i] = src[i];
}

/* out[p] (+)= bias + sum over r, j < 3 of k9[3r + j] xe[p + r w + j], p < npix. add: out +=
 * (bias is then 0). */
PV_INLINE void pv_corr(float *restrict out, const float *restrict xe, const DwDirect *g, const float *k9,
                       float bias, int add) {
    const int np = g->npix;
    const S1Ptr a = s1_ptr(xe, g);
    V8_TAPS(k9);
    const v8f bv = V8_SPLAT(bias);
    /* s = the vector of pixels [p, p + 8), one sum per kernel column (the outer two masked) */
#define S1_VEC(s, p)                                                                                       \
    const float *x0 = a.x0 + (p), *x1 = a.x1 + (p), *x2 = a.x2 + (p);                                      \
    const v8f l = K0 * V8(x0) + K3 * V8(x1) + K6 * V8(x2);                                           \
    const v8f m = K1 * V8(x0 + 1) + K4 * V8(x1 + 1) + K7 * V8(x2 + 1);                               \
    const v8f r = K2 * V8(x0 + 2) + K5 * V8(x1 + 2) + K8 * V8(x2 + 2);                               \
    const v8f s = (V8_AND(l, V8I(a.ml + (p))) + bv) + (m + V8_AND(r, V8I(a.mr + (p))))
    int p = 0;
    if (add)
        for (; p + 8 <= np; p += 8) {
            S1_VEC(s, p);
            V8_PUT(out + p, s + V8(out + p));
        }
    else
        for (; p + 8 <= np; p += 8) {
            S1_VEC(s, p);
            V8_PUT(out + p, s);
        }
    if (p < np) {
        S1_VEC(s, p);
        V8_PUT_N(out + p, s, np - p, add);
    }
#undef S1_VEC
}

/* acc[3r + j] += sum over p < npix of dy[p] xe[p + r w + j] (masked as above); acc[9] += sum
 * of dy. dy: zero from npix to npix rounded up to 8. */
PV_INLINE void pv_dot(v8f *acc, const float *restrict dy, const float *restrict xe, const DwDirect *g) {
    const int np = g->npix;
    const S1Ptr a = s1_ptr(xe, g);
    v8f A[10];
    for (int t = 0; t < 10; t++) A[t] = acc[t];
    for (int p = 0; p < np; p += 8) {
        const v8f gv = V8(dy + p), gl = V8_AND(gv, V8I(a.ml + p)), gr = V8_AND(gv, V8I(a.mr + p));
        const float *x0 = a.x0 + p, *x1 = a.x1 + p, *x2 = a.x2 + p;
        A[0] += gl * V8(x0), A[1] += gv * V8(x0 + 1), A[2] += gr * V8(x0 + 2);
        A[3] += gl * V8(x1), A[4] += gv * V8(x1 + 1), A[5] += gr * V8(x1 + 2);
        A[6] += gl * V8(x2), A[7] += gv * V8(x2 + 1), A[8] += gr * V8(x2 + 2);
        A[9] += gv;
    }
    for (int t = 0; t < 10; t++) acc[t] = A[t];
}

/* nr planes of y (h, w) = b + the taps of w (C, 3, 3) over nr planes of x, of channels c0,
 * c0 + 1, ... (mod C), through the buffers xa and xb in turn: plane j + 1 is copied before
 * plane j is read, as its loads would wait on the stores of a copy just made (they overlap
 * them at other offsets). x NULL: one plane, already in xa. Runs of planes a call, two
 * buffers: 30.3 -> 24.9 ns a 7x7 plane (one thread, an image of 192 channels, in cache). */
PV void pv_s1_forward(float *restrict y, float *xa, float *xb, const float *x, int nr, int c0, int C, const float *w,
                      const float *b, const DwDirect *g) {
    const int np = g->npix, o = g->w + 1;
    if (x) s1_copy(xa + o, x, np);
    for (int j = 0, c = c0; j < nr; j++, c = c + 1 == C ? 0 : c + 1) {
        float *cur = j & 1 ? xb : xa, *next = j & 1 ? xa : xb;
        if (x && j + 1 < nr) s1_copy(next + o, x + (size_t)(j + 1) * np, np);
        pv_corr(y + (size_t)j * np, cur, g, w + (size_t)c * 9, b ? b[c] : 0.0f, 0);
    }
}

/* One plane's backward: dx (NULL: none) (+)= the correlation of dy with k180 (the kernel turned
 * by 180 degrees); acc (NULL: none) += its dW taps and dy sum. dy in ge, x in xe (the kernels'
 * buffers); dsrc, xsrc: NULL, or the planes to copy there first (one call a plane, so the
 * copies are the kernels' own vector loops). On small planes both are copied before dx is
 * made, so that the loads of x do not wait on the copy's stores (one thread, batch 128, dx and
 * dW: 384 channels on 7x7 3.62 -> 3.29 ms); on larger ones x is copied after (144 on 14x14:
 * 3.68 ms that way, 4.07 the other). */
PV void pv_s1_backward(float *restrict dx, v8f *acc, float *restrict ge, const float *dsrc, float *restrict xe,
                       const float *xsrc, const DwDirect *g, const float *k180, int add) {
    const int o = g->w + 1, early = g->npix <= 64;
    if (dsrc) s1_copy(ge + o, dsrc, g->npix);
    if (acc && xsrc && early) s1_copy(xe + o, xsrc, g->npix);
    if (dx) pv_corr(dx, ge, g, k180, 0.0f, add);
    if (acc && xsrc && !early) s1_copy(xe + o, xsrc, g->npix);
    if (acc) pv_dot(acc, ge + o, xe, g);
}

/* ---------------------------------------------------------------- stride 2 */
/* g's fields in locals (the vector stores may alias anything, so fields read through g would
 * be reloaded after each). */
typedef struct {
    int h, w, oh, ow, nch;
    ptrdiff_t nx, ny; /* values of an input plane, of an output plane */
    const int32_t *me, *mo, *mr;
} S2G;

PV_INLINE S2G s2_g(const DwDirect *g) {
    return (S2G){g->h,  g->w,  g->oh, g->ow, g->nch, (ptrdiff_t)g->h * g->w, (ptrdiff_t)g->oh * g->ow,
                 g->me, g->mo, g->mr};
}

/* dy in the kernels' buffer: the plane, then zeros for a row and a vector past it (pv_s2_dx
 * reads row i + 1 with row i). */
static size_t s2_dy_floats(const DwDirect *g) { return round16((size_t)g->oh * g->ow + (size_t)g->ow + 16); }

/* Chunk c of an output row: 8 columns from j0 = 8c; the last one ends at the row's end (ow - 8)
 * when there are several (it overlaps the one before it, so its stores stay in the row). */
PV_INLINE int s2_j0(const S2G *g, int c) { return c + 1 < g->nch || g->nch == 1 ? 8 * c : g->ow - 8; }

/* The even and odd lanes of the 16 values a, b. Two steps on x86 (an in-lane shuffle and a
 * 64-bit permute, as AVX2 has them; one general shuffle becomes three instructions). */
PV_INLINE void s2_split(v8f *e, v8f *o, const v8f *a, const v8f *b) {
#if defined(__x86_64__)
    const v8f te = __builtin_shuffle(*a, *b, (v8i){0, 2, 8, 10, 4, 6, 12, 14});
    const v8f to = __builtin_shuffle(*a, *b, (v8i){1, 3, 9, 11, 5, 7, 13, 15});
    *e = __builtin_shuffle(te, (v8i){0, 1, 4, 5, 2, 3, 6, 7});
    *o = __builtin_shuffle(to, (v8i){0, 1, 4, 5, 2, 3, 6, 7});
#else
    *e = __builtin_shuffle(*a, *b, (v8i){0, 2, 4, 6, 8, 10, 12, 14});
    *o = __builtin_shuffle(*a, *b, (v8i){1, 3, 5, 7, 9, 11, 13, 15});
#endif
}

/* t[kw] = input row r (of x (h, w)) at columns 2j + kw - 1, j in [j0, j0 + 8), zero outside
 * the plane: the row's values [2 j0, 2 j0 + 16) split into even and odd columns; column 2j - 1
 * is the odd one moved by a lane, its first lane the value before the chunk. Reads up to 16
 * values past the plane (s2_input). */
PV_INLINE void s2_taps(v8f t[3], const float *x, int r, int j0, const S2G *g) {
    if (r >= g->h) {
        t[0] = t[1] = t[2] = (v8f){0};
        return;
    }
    const ptrdiff_t off = (ptrdiff_t)r * g->w + 2 * j0;
    const v8f a = V8(x + off), b = V8(x + off + 8);
    v8f e, o;
    s2_split(&e, &o, &a, &b);
    e = V8_AND(e, V8I(g->me + j0)), o = V8_AND(o, V8I(g->mo + j0));
    const float xb = j0 ? x[off - 1] : 0.0f; /* column 2 j0 - 1 */
    t[0] = __builtin_shuffle(o, V8_SPLAT(xb), (v8i){8, 0, 1, 2, 3, 4, 5, 6});
    t[1] = e, t[2] = o;
}

/* Input plane pl for the stride-2 kernels, which read (and mask) up to 16 values past it: in
 * place when those are in the tensor (the next plane's), else copied to xbuf, which has 16
 * zeros past the plane; a made input is made there. */
static const float *s2_input(const ActSrc *xs, float *xbuf, size_t pl, size_t planes) {
    const size_t hw = (size_t)xs->hw;
    if (xs->saved) return act_rows(xs, xbuf, pl, 1);
    if ((pl + 1) * hw + 16 <= planes * hw) return xs->x + pl * hw;
    memcpy(xbuf, xs->x + pl * hw, hw * sizeof(float));
    return xbuf;
}

/* y (oh, ow) = bias + the taps of k9 (3, 3) over x (h, w): one plane, chunk by chunk, each
 * down the rows so that an input row is split once for the two output rows that read it. With
 * one chunk per row, its store runs past the row into the next (overwritten when that row is
 * made), except at the plane's end. */
PV void pv_s2_forward(float *restrict y, const float *restrict x, const DwDirect *gd, const float *k9, float bias) {
    const S2G g = s2_g(gd);
    V8_TAPS(k9);
    const v8f bv = V8_SPLAT(bias);
    for (int c = 0; c < g.nch; c++) {
        const int j0 = s2_j0(&g, c);
        v8f top[3] = {{0}}, mid[3], bot[3];
        for (int oy = 0; oy < g.oh; oy++) {
            s2_taps(mid, x, 2 * oy, j0, &g);
            s2_taps(bot, x, 2 * oy + 1, j0, &g);
            const v8f a0 = bv + K0 * top[0] + K1 * top[1] + K2 * top[2];
            const v8f a1 = K3 * mid[0] + K4 * mid[1] + K5 * mid[2];
            const v8f a2 = K6 * bot[0] + K7 * bot[1] + K8 * bot[2];
            const v8f s = a0 + (a1 + a2);
            const ptrdiff_t off = (ptrdiff_t)oy * g.ow + j0;
            if (off + 8 <= g.ny)
                V8_PUT(y + off, s);
            else
                V8_PUT_N(y + off, s, (int)(g.ny - off), 0);
            top[0] = bot[0], top[1] = bot[1], top[2] = bot[2];
        }
    }
}

/* acc[t] += the dW taps of one plane (t = kh*3 + kw), acc[9] += the sum of dy. dy: padded
 * (s2_dy_floats). The last chunk takes only its lanes past the chunk before it (mlast). */
PV_INLINE void pv_s2_dot(v8f *acc, const float *restrict dy, const float *restrict x, const DwDirect *gd) {
    const S2G g = s2_g(gd);
    v8f A[10];
    for (int t = 0; t < 10; t++) A[t] = acc[t];
    for (int c = 0; c < g.nch; c++) {
        const int j0 = s2_j0(&g, c);
        const v8i gm = c + 1 < g.nch ? (v8i){0} - 1 : V8I(gd->mlast);
        v8f top[3] = {{0}}, mid[3], bot[3];
        for (int oy = 0; oy < g.oh; oy++) {
            s2_taps(mid, x, 2 * oy, j0, &g);
            s2_taps(bot, x, 2 * oy + 1, j0, &g);
            const v8f gv = V8_AND(V8(dy + (ptrdiff_t)oy * g.ow + j0), gm);
            for (int j = 0; j < 3; j++) {
                A[j] += gv * top[j];
                A[3 + j] += gv * mid[j];
                A[6 + j] += gv * bot[j];
            }
            A[9] += gv;
            top[0] = bot[0], top[1] = bot[1], top[2] = bot[2];
        }
    }
    for (int t = 0; t < 10; t++) acc[t] = A[t];
}

/* out + off = the interleave of e (even columns) and o (odd): 16 values, cut at the plane's end
 * (values past a row's end are zero and land on rows written later). */
PV_INLINE void s2_put(float *out, ptrdiff_t off, const v8f *e, const v8f *o, ptrdiff_t nx) {
    const v8f lo = __builtin_shuffle(*e, *o, (v8i){0, 8, 1, 9, 2, 10, 3, 11});
    const v8f hi = __builtin_shuffle(*e, *o, (v8i){4, 12, 5, 13, 6, 14, 7, 15});
    if (off + 16 <= nx) {
        V8_PUT(out + off, lo), V8_PUT(out + off + 8, hi);
    } else {
        float t[16];
        V8_PUT(t, lo), V8_PUT(t + 8, hi);
        for (ptrdiff_t l = 0; off + l < nx; l++) out[off + l] = t[l];
    }
}

/* dx (h, w) (+)= the input gradient of one plane; dy padded (s2_dy_floats). Dx rows 2i and
 * 2i + 1 come from dy rows i and i + 1: the even column 2j is tap column 1 of output column j;
 * the odd column 2j + 1 is tap column 2 of j and tap column 0 of j + 1 (dy moved by a column,
 * zero past the row). The plane is written, never added to, so a chunk's stores may run past
 * its row's end (lanes j >= ow, and column w when w is odd) onto rows written later: with
 * several chunks a row, the last one is moved back to end at the row's end, and with w odd
 * each row is written whole before the next. With add, the plane is made in tmp (h w floats)
 * and added to dx in one flat pass: a load of dx just after the store that ran into it waits
 * for that store (14x14 planes, dx alone, one thread: 208 -> 141 ns a plane). */
PV_INLINE void pv_s2_dx(float *restrict dx, float *restrict tmp, const float *restrict dy, const DwDirect *gd,
                        const float *k9, int add) {
    const S2G g = s2_g(gd);
    V8_TAPS(k9);
    float *out = add ? tmp : dx;
    const int pairs = g.nch == 1 || g.w % 2 == 0; /* rows 2i and 2i + 1 chunk by chunk */
    /* row 2i + 1 of chunk j: kernel rows 2 (dy row i: g0, g1) and 0 (dy row i + 1). A macro, not
     * a single pass over the chunks deciding per chunk which rows to make: that measured 3-8%
     * slower (NASC_GEMM=avx2, 144 channels on 14x14, backward) */
#define S2_ODD_ROW(j, g0, g1, mr)                                                                         \
    do {                                                                                                  \
        const v8f g2 = V8(d1 + (j)), g3 = V8_AND(V8(d1 + (j) + 1), (mr));                                 \
        const v8f e1 = K7 * (g0) + K1 * g2, o1 = (K8 * (g0) + K6 * (g1)) + (K2 * g2 + K0 * g3);           \
        s2_put(out, r1 + 2 * (j), &e1, &o1, g.nx);                                                        \
    } while (0)
    for (int i = 0; i < g.oh; i++) {
        const float *d0 = dy + (ptrdiff_t)i * g.ow, *d1 = d0 + g.ow; /* d1: zeros past dy */
        const ptrdiff_t r0 = (ptrdiff_t)2 * i * g.w, r1 = r0 + g.w;
        const int odd = 2 * i + 1 < g.h;
        for (int c = 0; c < g.nch; c++) {
            const int j = s2_j0(&g, c);
            const v8i mr = V8I(g.mr + j);
            const v8f g0 = V8(d0 + j), g1 = V8_AND(V8(d0 + j + 1), mr);
            const v8f e0 = K4 * g0, o0 = K5 * g0 + K3 * g1;
            s2_put(out, r0 + 2 * j, &e0, &o0, g.nx); /* kernel row 1 */
            if (pairs && odd) S2_ODD_ROW(j, g0, g1, mr);
        }
        if (!pairs && odd) /* each row whole before the next (a second pass over the chunks) */
            for (int c = 0; c < g.nch; c++) {
                const int j = s2_j0(&g, c);
                const v8i mr = V8I(g.mr + j);
                const v8f g0 = V8(d0 + j), g1 = V8_AND(V8(d0 + j + 1), mr);
                S2_ODD_ROW(j, g0, g1, mr);
            }
    }
#undef S2_ODD_ROW
    if (add) {
        ptrdiff_t p = 0;
        for (; p + 8 <= g.nx; p += 8) V8_PUT(dx + p, V8(dx + p) + V8(tmp + p));
        for (; p < g.nx; p++) dx[p] += tmp[p];
    }
}

/* One plane's backward: dx (NULL: none) (+)= its input gradient (tmp: h w floats, for add);
 * acc (NULL: none) += its dW taps and dy sum over the input x (s2_input). dy in ge (padded,
 * s2_dy_floats); dsrc: NULL, or the plane to copy there first. */
PV void pv_s2_backward(float *restrict dx, float *restrict tmp, v8f *acc, float *restrict ge, const float *dsrc,
                       const float *restrict x, const DwDirect *g, const float *k9, int add) {
    if (dsrc) s1_copy(ge, dsrc, g->oh * g->ow);
    if (dx) pv_s2_dx(dx, tmp, ge, g, k9, add);
    if (acc) pv_s2_dot(acc, ge, x, g);
}

/* ---------------------------------------------------------------- work items */
/* Input plane it for the portable kernels, in (or, for stride 2, through) buffer k of xb: stride
 * 1, the plane in xb[k] (s1_ext_floats), made there or copied; stride 2, s2_input. */
static const float *port_input(const ActSrc *xs, float *const xb[2], int k, size_t it, const ConvDims *d,
                               const DwDirect *g) {
    if (g->mode == DIRECT_S2) return s2_input(xs, xb[k], it, (size_t)d->n * d->cin);
    float *in = xb[k] + d->w + 1;
    const float *x = act_rows(xs, in, it, 1);
    if (x != in) memcpy(in, x, (size_t)g->npix * sizeof(float));
    return xb[k];
}

/* Forward of planes [lo, hi) (plane i = image i / C, channel i % C), on the calling thread, in
 * runs of about DW_RUN_FLOATS values for the output's row statistics and the eval epilogue (as
 * direct_forward_items). Inputs go through two buffers, a plane ahead (see pv_s1_forward): a
 * stored one by the kernel for a run of planes (stride 1), a made one by act_rows. */
static void port_forward_items(float *y, const ActSrc *xs, const float *w, const float *b, const ConvDims *d,
                               const DwDirect *g, double *row_stats, const BnEval *epi, int lo, int hi) {
    const int C = d->cin, P = d->oh * d->ow, HW = d->h * d->w;
    const int run = dw_run(d);
    float *ybuf = epi ? scratch_get(OUTPUT_SLOT, round16((size_t)run * P) * sizeof(float)) : NULL;
    /* stride 1: the zero-bordered buffers; stride 2: the made input, or the tensor's last plane,
     * with 16 zeros past it */
    const size_t n = g->mode == DIRECT_S1 ? s1_ext_floats(g) : round16((size_t)HW + 16);
    float *xb[2];
    xb[0] = scratch_get(INPUT_SLOT, 2 * n * sizeof(float)), xb[1] = xb[0] + n;
    memset(xb[0], 0, 2 * n * sizeof(float));
    for (int r0 = lo; r0 < hi; r0 += run) {
        const int nr = NASC_MIN(run, hi - r0);
        float *yr = epi ? ybuf : y + (size_t)r0 * P;
        if (g->mode == DIRECT_S1 && !xs->saved) {
            pv_s1_forward(yr, xb[0], xb[1], xs->x + (size_t)r0 * HW, nr, r0 % C, C, w, b, g);
        } else {
            const float *in = port_input(xs, xb, 0, (size_t)r0, d, g);
            for (int j = 0; j < nr; j++) {
                const int it = r0 + j, c = it % C;
                const float *next = j + 1 < nr ? port_input(xs, xb, (j + 1) & 1, (size_t)it + 1, d, g) : NULL;
                if (g->mode == DIRECT_S2)
                    pv_s2_forward(yr + (size_t)j * P, in, g, w + (size_t)c * 9, b ? b[c] : 0.0f);
                else
                    pv_s1_forward(yr + (size_t)j * P, xb[j & 1], NULL, NULL, 1, c, C, w, b, g);
                in = next;
            }
        }
        if (row_stats) bn_row_stats(row_stats, yr, (size_t)r0, (size_t)nr, P);
        if (epi) bn_eval_rows(epi, y + (size_t)r0 * P, ybuf, (size_t)r0, (size_t)nr, C, P);
    }
}

/* Backward of items [lo, hi), as direct_backward_items (the same items, the same order). */
static void port_backward_items(float *dx, float *part, const GradSrc *dys, const ActSrc *xs, const float *w,
                                const ConvDims *d, const DwDirect *g, int dx_acc, const BnRowSums *sums, int lo,
                                int hi) {
    const int C = d->cin, HW = d->h * d->w, nblk = (C + DW_BLOCK - 1) / DW_BLOCK;
    const int s1 = g->mode == DIRECT_S1;
    float *xe = NULL, *ge = NULL, *xbuf = NULL, *gbuf = NULL, *xtmp = NULL;
    if (s1) { /* the input and dy in zero-bordered buffers (slots 0 and 1) */
        const size_t n = s1_ext_floats(g);
        xe = scratch_get(0, n * sizeof(float)), ge = scratch_get(1, n * sizeof(float));
        memset(xe, 0, n * sizeof(float)), memset(ge, 0, n * sizeof(float));
    } else {
        /* dy in a buffer with zeros past it (slot 1), the made input, dx before it is added */
        const size_t n = s2_dy_floats(g);
        gbuf = scratch_get(1, n * sizeof(float));
        memset(gbuf, 0, n * sizeof(float));
        if (part) {
            const size_t nx = round16((size_t)HW + 16);
            xbuf = scratch_get(INPUT_SLOT, nx * sizeof(float));
            memset(xbuf, 0, nx * sizeof(float));
        }
        if (dx && dx_acc) xtmp = scratch_get(0, round16((size_t)HW) * sizeof(float));
    }
    float k180[DW_BLOCK][9];
    v8f acc[DW_BLOCK][10];
    for (int it = lo; it < hi; it++) {
        const DwItem item = dw_item(d, it, w, k180);
        const int c0 = item.c0, cn = item.cn, n0 = item.n0, m = item.m;
        for (int q = 0; q < cn; q++)
            for (int k = 0; k < 10; k++) acc[q][k] = (v8f){0};
        for (int j = 0; j < m; j++)
            for (int q = 0; q < cn; q++) {
                const size_t pl = (size_t)(n0 + j) * C + c0 + q;
                if (s1) {
                    float *gin = ge + d->w + 1, *in = xe + d->w + 1;
                    const float *dy = grad_rows(dys, gin, pl, 1), *x = part ? act_rows(xs, in, pl, 1) : NULL;
                    pv_s1_backward(dx ? dx + pl * HW : NULL, part ? acc[q] : NULL, ge, dy != gin ? dy : NULL, xe,
                                   x != in ? x : NULL, g, k180[q], dx_acc);
                } else {
                    const float *dy = grad_rows(dys, gbuf, pl, 1);
                    pv_s2_backward(dx ? dx + pl * HW : NULL, xtmp, part ? acc[q] : NULL, gbuf, dy != gbuf ? dy : NULL,
                                   part ? s2_input(xs, xbuf, pl, (size_t)d->n * C) : NULL, g, w + (size_t)(c0 + q) * 9,
                                   dx_acc);
                }
                if (dx && sums) bn_row_sums(sums, dx + pl * HW, pl, 1);
            }
        if (part)
            for (int q = 0; q < cn; q++)
                for (int t = 0; t < 10; t++) {
                    float l[8];
                    memcpy(l, &acc[q][t], sizeof l);
                    part[((size_t)(it / nblk) * C + c0 + q) * 10 + t] =
                        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
                }
    }
}

/* ------------------------------------------------------------------ entry points */
void depthwise_forward(float *y, const ActSrc *x, const float *w, const float *b, const ConvDims *d,
                       double *row_stats, const BnEval *epi) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow;
    DwDirect g;
    direct_init(&g, d, 0);
    const int items = g.mode != DIRECT_NONE ? d->n * C : (C + DW_CB - 1) / DW_CB * d->n;
    const int nt = threads_for(2.0 * d->n * C * P * kk, items);
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        split_range(items, thread_count(), thread_id(), &lo, &hi);
#if CONV_X86
        if (g.x512 && g.mode != DIRECT_NONE)
            direct_forward_items(y, x, w, b, d, &g, row_stats, epi, lo, hi);
        else
#endif
        if (g.mode != DIRECT_NONE)
            port_forward_items(y, x, w, b, d, &g, row_stats, epi, lo, hi);
        else
            block_forward_items(y, x, w, b, d, row_stats, epi, lo, hi);
    }
}

void depthwise_backward(float *dx, float *dw, float *db, const GradSrc *dy, const ActSrc *x, const float *w,
                        const ConvDims *d, int dx_acc, const BnRowSums *sums) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow;
    const int groups = (d->n + DW_NB - 1) / DW_NB, want_wb = dw || db;
    DwDirect g;
    /* part (groups, C, kk + 1): each item's dW taps and dy sum per channel */
    float *part = direct_init(&g, d, want_wb ? (size_t)groups * C * (kk + 1) : 0);
    const int items = groups * (g.mode != DIRECT_NONE ? (C + DW_BLOCK - 1) / DW_BLOCK : (C + DW_CB - 1) / DW_CB);
    const int nt = threads_for(2.0 * ((dx != NULL) + want_wb) * d->n * C * P * kk, items);
#pragma omp parallel num_threads(nt)
    {
        const int T = thread_count(), t = thread_id();
        int lo, hi;
        split_range(items, T, t, &lo, &hi);
#if CONV_X86
        if (g.x512 && g.mode != DIRECT_NONE)
            direct_backward_items(dx, part, dy, x, w, d, &g, dx_acc, sums, lo, hi);
        else
#endif
        if (g.mode != DIRECT_NONE)
            port_backward_items(dx, part, dy, x, w, d, &g, dx_acc, sums, lo, hi);
        else
            block_backward_items(dx, part, dy, x, w, d, dx_acc, sums, lo, hi);
        if (want_wb) {
#pragma omp barrier
            /* dw, db += the items' sums, in group order per channel */
            int c0, c1;
            split_range(C, T, t, &c0, &c1);
            for (int c = c0; c < c1; c++)
                for (int q = 0; q <= kk; q++) {
                    float s = 0.0f;
                    for (int j = 0; j < groups; j++) s += part[((size_t)j * C + c) * (kk + 1) + q];
                    if (q < kk && dw) dw[(size_t)c * kk + q] += s;
                    if (q == kk && db) db[c] += s;
                }
        }
    }
}
