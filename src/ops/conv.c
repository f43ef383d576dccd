/* conv.c: 2-D convolution (PyTorch's Conv2d: zero padding, dilation, groups), forward and
 * backward, NCHW.
 *
 * conv2d_*_ref are direct loops over every output and kernel tap, in `real`, single-threaded:
 * obviously correct, slow, and also compiled in double for the gradient checker.
 *
 * The fast float kernels lower everything but depthwise convolution to gemm (per group;
 * P = oh*ow output pixels, Kc = cin_g*k*k, "col" = the im2col matrix of the input):
 *   forward  y (cout_g, P)       = W (cout_g, Kc) col (Kc, P)
 *   dW       dW^T (Kc, cout_g)  += col (Kc, P) dy^T (P, cout_g)    (dy^T written out for gemm's
 *            main kernel, or gemm's NT kernel: dot products, no packing; some 1x1 convs take
 *            dW (cout, cin) += dy x^T instead, x^T written out: pw_dw_rows)
 *   dx       stride 1: a stride-1 conv of dy with the flipped, transposed kernel (padding
 *            (k-1)*dil - pad), lowered like the forward; stride s > 1: by phases, each of the
 *            s*s phases of dx a stride-1 correlation of dy with the taps that reach it (one
 *            gemm each); otherwise dcol (Kc, P) = W^T dy, scattered back (the adjoint of the
 *            lowering).
 * col is built one of two ways (see "lowering to gemm"): written out by im2col, or read in
 * place by gemm from a zero-padded, phase-split copy of the input through a table of row
 * pointers. Small images are batched: nb images side by side give gemm enough columns. A 1x1
 * stride-1 unpadded conv needs neither: x is its own col and dx its own dcol. An input made
 * on demand (BN + activation, act_rows) is made by the copy into the phase planes.
 * 3x3 stride-1 convs with 16 and more channels a group on planes of 7x7 and more run the
 * forward, dx (the adjoint conv) and dW as Winograd F(4x4, 3x3) on the same phase planes.
 * On AVX-512, batches of 3x3 convs with padding 1 and one group go to winograd_batch.c instead
 * (Winograd with sixteen images a vector; stride 2 as F(7x7, 3x3) on the four phases) when their
 * shape suits and each thread has at least 12 images (use_wb); on AVX2 too, eight images a
 * vector.
 *
 * Outputs too large to stay in cache are written with non-temporal stores.
 *
 * Depthwise convolution (groups == cin == cout) has kernels of its own: depthwise.c.
 *
 * Threads: images are split across threads; dW and db go to per-thread partial sums reduced
 * at the end. With fewer images than threads the forward splits one image's columns (or output
 * channels) instead.
 * Scratch slots (per thread): 0 col or phase planes (+ row table), 1 gemm output or dy copies,
 * 2 partial dW/db, the adjoint or phase kernel and dW's Winograd sums, 7 (WINO_SLOT) Winograd's
 * transforms or dy^T (or x^T), 9 (WEIGHT_SLOT, the calling thread's) the Winograd kernels the
 * region's threads make together and share. Slot 3 belongs to gemm; 4-6 hold a made input or
 * gradient and dy's shared grid, 8 an output before its epilogue (conv_internal.h).
 * winograd_batch.c's convs take slot 1 of the calling thread for the transformed kernels, and 0
 * and 7 for planes and transforms.
 */
#include "conv_internal.h"
#include "gemm_ex.h"
#include "ops.h"
#include "simd.h"

#include <limits.h>
#include <math.h>

/* ------------------------------------------------------------------ dims */
int conv_dims_init(ConvDims *d, Err *e) {
    if (d->n < 1 || d->cin < 1 || d->h < 1 || d->w < 1 || d->cout < 1) {
        err_set(e, "conv: sizes must be positive (n=%d cin=%d h=%d w=%d cout=%d)", d->n, d->cin, d->h, d->w,
                d->cout);
        return NASC_ERR;
    }
    if (d->k < 1 || d->stride < 1 || d->dil < 1 || d->groups < 1 || d->pad < 0) {
        err_set(e, "conv: need kernel >= 1, stride >= 1, dilation >= 1, groups >= 1, padding >= 0 "
                   "(got k=%d s=%d d=%d g=%d p=%d)",
                d->k, d->stride, d->dil, d->groups, d->pad);
        return NASC_ERR;
    }
    if (d->cin % d->groups || d->cout % d->groups) {
        err_set(e, "conv: in channels (%d) and out channels (%d) must both be divisible by groups (%d)", d->cin,
                d->cout, d->groups);
        return NASC_ERR;
    }
    /* PyTorch: out = floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1 */
    long long span = (long long)d->dil * (d->k - 1) + 1;
    long long ih = (long long)d->h + 2LL * d->pad, iw = (long long)d->w + 2LL * d->pad;
    if (ih < span || iw < span) {
        err_set(e, "conv: kernel %d (dilation %d, extent %lld) is larger than the padded input %lldx%lld",
                d->k, d->dil, span, ih, iw);
        return NASC_ERR;
    }
    long long oh = (ih - span) / d->stride + 1, ow = (iw - span) / d->stride + 1;
    long long in_sz = (long long)d->n * d->cin * d->h * d->w, out_sz = (long long)d->n * d->cout * oh * ow;
    long long w_sz = (long long)d->cout * (d->cin / d->groups) * d->k * d->k;
    long long col_sz = (long long)(d->cin / d->groups) * d->k * d->k * oh * ow;
    if (in_sz > INT_MAX || out_sz > INT_MAX || w_sz > INT_MAX || col_sz > INT_MAX) {
        err_set(e, "conv: tensors too large (input %lld, output %lld, weight %lld elements)", in_sz, out_sz, w_sz);
        return NASC_ERR;
    }
    d->oh = (int)oh;
    d->ow = (int)ow;
    return NASC_OK;
}

/* ------------------------------------------------------------------ reference */
void conv2d_forward_ref(real *y, const real *x, const real *w, const real *b, const ConvDims *d) {
    const int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups, k = d->k;
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->cout; co++) {
            int g = co / cout_g;
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    real acc = b ? b[co] : 0;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int kh = 0; kh < k; kh++) {
                            int iy = oy * d->stride - d->pad + kh * d->dil;
                            if (iy < 0 || iy >= d->h) continue;
                            for (int kw = 0; kw < k; kw++) {
                                int ix = ox * d->stride - d->pad + kw * d->dil;
                                if (ix < 0 || ix >= d->w) continue;
                                acc += x[(((size_t)n * d->cin + g * cin_g + ci) * d->h + iy) * d->w + ix] *
                                       w[(((size_t)co * cin_g + ci) * k + kh) * k + kw];
                            }
                        }
                    y[(((size_t)n * d->cout + co) * d->oh + oy) * d->ow + ox] = acc;
                }
        }
}

void conv2d_backward_ref(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w,
                         const ConvDims *d) {
    const int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups, k = d->k;
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->cout; co++) {
            int g = co / cout_g;
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    real g_out = dy[(((size_t)n * d->cout + co) * d->oh + oy) * d->ow + ox];
                    if (db) db[co] += g_out;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int kh = 0; kh < k; kh++) {
                            int iy = oy * d->stride - d->pad + kh * d->dil;
                            if (iy < 0 || iy >= d->h) continue;
                            for (int kw = 0; kw < k; kw++) {
                                int ix = ox * d->stride - d->pad + kw * d->dil;
                                if (ix < 0 || ix >= d->w) continue;
                                size_t xi = (((size_t)n * d->cin + g * cin_g + ci) * d->h + iy) * d->w + ix;
                                size_t wi = (((size_t)co * cin_g + ci) * k + kh) * k + kw;
                                if (dx) dx[xi] += g_out * w[wi];
                                if (dw) dw[wi] += g_out * x[xi];
                            }
                        }
                }
        }
}

#ifndef NASC_REF_ONLY
/* ------------------------------------------------------------------ helpers */
/* (threads_for, split_range, thread_id/count, use_avx512, lane_range, round16: conv_internal.h) */
/* Output columns ox in [lo, hi) read input column ox*s + off, off = kw*dil - pad, inside [0, w). */
static void valid_cols(int ow, int s, int off, int w, int *lo, int *hi) {
    int a = off >= 0 ? 0 : (-off + s - 1) / s;
    int b = w - off <= 0 ? 0 : (w - off - 1) / s + 1;
    *lo = NASC_MIN(a, ow);
    *hi = NASC_MAX(*lo, NASC_MIN(b, ow));
}


static int is_pointwise(const ConvDims *d) { return d->k == 1 && d->stride == 1 && d->pad == 0; }

static int has_phases(const ConvDims *d);

/* A strided 1x1 conv without padding (ResNet's downsampling shortcut) reads pixel (oy s, ox s)
 * for output (oy, ox) and nothing else: its im2col subsamples x, and its dx is dcol = W^T dy
 * put back at those pixels (the others zero, or left as they are when dx accumulates), the one
 * phase of dx that any tap reaches (strides up to PHASE_MAX, as has_phases). */
static int is_strided_pointwise(const ConvDims *d) { return d->k == 1 && d->pad == 0 && has_phases(d); }

/* The row stride of a 1x1 conv's W^T (cin_g rows of cout_g) for its dx: never a multiple of
 * 1 KiB, which gemm would copy away on every call, one per image (mbv2's 96 -> 256 head on
 * 7x7, batch 128, 2 threads: dx 2.0 -> 1.7 ms). */
static int wt_ld(int cout_g) { return cout_g % 256 == 0 ? cout_g + 16 : cout_g; }

#if CONV_X86
/* dst[j] = src[2 j], j < n. */
__attribute__((target("avx512f"))) static void subsample2_avx512(float *dst, const float *src, int n) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int q = 0; q < n; q += 16) {
        const int m = NASC_MIN(16, n - q), ni = 2 * m - 1; /* outputs, inputs read */
        const __m512 a = _mm512_maskz_loadu_ps(lane_range(0, 0, ni), src + 2 * q);
        const __m512 b = _mm512_maskz_loadu_ps(lane_range(16, 0, ni), src + 2 * q + 16);
        _mm512_mask_storeu_ps(dst + q, lane_range(0, 0, m), _mm512_permutex2var_ps(a, even, b));
    }
}
#endif

/* dst[j] = src[j s], j < n. */
static void subsample_row(float *dst, const float *src, int n, int s) {
#if CONV_X86
    if (s == 2 && use_avx512()) {
        subsample2_avx512(dst, src, n);
        return;
    }
#endif
    for (int j = 0; j < n; j++) dst[j] = src[(size_t)j * s];
}

/* The data-movement loops below are compiled for AVX-512 / AVX2 / baseline and picked at load
 * time (MULTIVERSION, simd.h); a few row shuffles are written with AVX-512 intrinsics and run
 * when use_avx512() (conv_internal.h). */

/* col rows (ci, kh, kw) of cin_g channels, columns = output pixels [p0, p1) of one image,
 * written at col + row * ldcol + (p - p0). x points at the image's first channel of the group. */
MULTIVERSION static void im2col(float *col, int ldcol, const float *x, int cin_g, const ConvDims *d, int p0,
                                int p1) {
    const int k = d->k, s = d->stride, ow = d->ow, h = d->h, w = d->w;
    if (is_pointwise(d)) { /* plain copy of the pixel range */
        for (int c = 0; c < cin_g; c++) {
            const float *src = x + (size_t)c * h * w + p0;
            float *dst = col + (size_t)c * ldcol;
            for (int p = 0; p < p1 - p0; p++) dst[p] = src[p];
        }
        return;
    }
    if (is_strided_pointwise(d)) { /* every s-th pixel of every s-th row */
        for (int c = 0; c < cin_g; c++) {
            const float *xc = x + (size_t)c * h * w;
            float *dst = col + (size_t)c * ldcol - p0;
            for (int oy = p0 / ow; oy * ow < p1; oy++) {
                int a = NASC_MAX(p0 - oy * ow, 0), b = NASC_MIN(p1 - oy * ow, ow);
                subsample_row(dst + (size_t)oy * ow + a, xc + (size_t)oy * s * w + (size_t)a * s, b - a, s);
            }
        }
        return;
    }
    for (int c = 0; c < cin_g; c++) {
        const float *xc = x + (size_t)c * h * w;
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                float *dst = col + (size_t)((c * k + kh) * k + kw) * ldcol - p0;
                int off = kw * d->dil - d->pad, lo, hi;
                valid_cols(ow, s, off, w, &lo, &hi);
                for (int oy = p0 / ow; oy * ow < p1; oy++) {
                    int a = NASC_MAX(p0 - oy * ow, 0), b = NASC_MIN(p1 - oy * ow, ow);
                    float *drow = dst + (size_t)oy * ow;
                    int iy = oy * s - d->pad + kh * d->dil;
                    int l = NASC_MAX(a, lo), r = NASC_MIN(b, hi);
                    if (iy < 0 || iy >= h || l >= r) {
                        for (int ox = a; ox < b; ox++) drow[ox] = 0.0f;
                        continue;
                    }
                    const float *xr = xc + (size_t)iy * w + off;
                    for (int ox = a; ox < l; ox++) drow[ox] = 0.0f;
                    if (s == 1)
                        for (int ox = l; ox < r; ox++) drow[ox] = xr[ox];
                    else
                        for (int ox = l; ox < r; ox++) drow[ox] = xr[(size_t)ox * s];
                    for (int ox = r; ox < b; ox++) drow[ox] = 0.0f;
                }
            }
    }
}

/* ------------------------------------------------------------------ lowering to gemm */
/* Two ways to build gemm's (Kc, columns) input matrix for nb images side by side:
 *   LOWER_EXPLICIT  im2col: Kc rows of nb*P columns, written out;
 *   LOWER_IMPLICIT  the input is copied once into zero-padded phase planes (plane (pr, pc)
 *                   holds padded rows i*s + pr and columns j*s + pc); then every im2col row
 *                   (c, kh, kw) is a contiguous run inside one plane, and gemm reads it through
 *                   a table of row pointers. The output grid is oh x (nb * wq): each image has
 *                   wq >= ow columns, the extra ones are junk (computed, never stored).
 * Explicit costs Kc values per output pixel (in short row segments); implicit costs about the
 * input size plus the junk columns' arithmetic. plan_of() picks the cheaper;
 * NASC_CONV=explicit|implicit forces one (for tests and measurements). */
typedef enum { LOWER_EXPLICIT, LOWER_IMPLICIT } Lowering;

typedef struct {
    int s, hq, wq; /* phase planes: hq rows (+ one zero slack row) of wq columns per image */
    int nb, W;     /* images side by side; W = nb * wq columns per row */
    size_t plane;  /* floats per phase plane: (hq + 1) * W, rounded up to a cache line */
    int Q;         /* columns of the output grid: oh * W */
} Grid;

static Grid grid_of(const ConvDims *d, int nb) {
    Grid g;
    g.s = d->stride;
    g.hq = (d->h + 2 * d->pad + g.s - 1) / g.s;
    g.wq = (d->w + 2 * d->pad + g.s - 1) / g.s;
    g.nb = nb;
    g.W = nb * g.wq;
    g.plane = round16((size_t)(g.hq + 1) * g.W); /* planes start on cache lines */
    g.Q = d->oh * g.W;
    return g;
}

/* Floats of the phase planes of `c` channels. */
static size_t grid_floats(const Grid *g, int c) { return round16((size_t)c * g->s * g->s * g->plane); }

typedef struct {
    Lowering how;
    int nb; /* images per gemm */
} Plan;

/* Columns a gemm should see at least (fewer make thin, inefficient panels). */
#define COLS_TARGET 512
/* Outputs larger than this are written with non-temporal stores (they leave the caches anyway). */
#define STREAM_BYTES (16.0 * 1024 * 1024)

/* NASC_CONV: -1 (unset: automatic), LOWER_EXPLICIT, LOWER_IMPLICIT, or CONV_DIRECT (the
 * automatic lowering without Winograd). */
#define CONV_DIRECT 2
static int conv_env(void) {
    static int mode = -2;
    int f = __atomic_load_n(&mode, __ATOMIC_RELAXED);
    if (f == -2) {
        const char *e = getenv("NASC_CONV");
        f = !e                             ? -1
            : strcmp(e, "explicit") == 0   ? LOWER_EXPLICIT
            : strcmp(e, "implicit") == 0   ? LOWER_IMPLICIT
            : strcmp(e, "direct") == 0     ? CONV_DIRECT
                                           : -1;
        __atomic_store_n(&mode, f, __ATOMIC_RELAXED);
    }
    return f;
}

/* The lowering NASC_CONV forces, or -1. */
static int forced_lowering(void) {
    int f = conv_env();
    return f == LOWER_EXPLICIT || f == LOWER_IMPLICIT ? f : -1;
}

static int use_winograd(const ConvDims *d);

/* Images side by side on the output grid (implicit lowering, and the folded dx): as many as
 * fill COLS_TARGET columns (Winograd: its vectors of tiles), at least one, at most `images`. */
static int grid_images(const ConvDims *d, int images) {
    const int wq = grid_of(d, 1).wq;
    if (use_winograd(d)) {
        /* the Winograd transforms take sixteen tiles of a tile row a vector: as many images as
         * fill the vectors best (a 28x28 image's row is 8 tiles, a 14x14's 4, a 7x7's 3), the
         * most that fill one vector when several do as well (more, as in 4 of 28x28 for 30 of
         * 32 lanes, measured slower: resnet8's step 30.0 / 30.7 / 31.8 ms against 32.6 / 33.5 /
         * 33.7 with up to two vectors). All of fewer images: a chunk's dx takes its dy grid whole
         * (forward_images' xph). */
        int best = 1;
        double fill = 0;
        for (int n = 1; n <= 16; n++) {
            int tw = (n * wq + 3) / 4;
            double f = tw / (16.0 * ((tw + 15) / 16));
            if (f > fill + 1e-9 || (f > fill - 1e-9 && tw <= 16)) best = n, fill = f;
        }
        return NASC_MIN(best, images);
    }
    return NASC_MAX(1, NASC_MIN(images, COLS_TARGET / (d->oh * wq)));
}

/* The lowering and images per gemm for a thread that handles `images` images. */
static Plan plan_of(const ConvDims *d, int images) {
    const int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups, Kc = cin_g * d->k * d->k;
    const int P = d->oh * d->ow;
    Grid g = grid_of(d, 1);
    int Qi = d->oh * g.wq;
    /* Per image, in values moved; a value moved costs about as much as 64 flops of gemm, and
     * each short row segment of im2col about 8 values more. */
    double explicit_cost = (double)Kc * P + 8.0 * Kc * d->oh + (double)cout_g * P;
    double implicit_cost = (double)cin_g * g.s * g.s * (g.hq + 1) * g.W + (double)cout_g * (Qi + P) +
                           2.0 * cout_g * Kc * (Qi - P) / 64.0;
    Plan pl;
    pl.how = is_pointwise(d) || explicit_cost <= implicit_cost ? LOWER_EXPLICIT : LOWER_IMPLICIT;
    if (forced_lowering() >= 0 && !is_pointwise(d)) pl.how = (Lowering)forced_lowering();
    pl.nb = pl.how == LOWER_EXPLICIT ? NASC_MAX(1, NASC_MIN(images, COLS_TARGET / P)) : grid_images(d, images);
    /* A 1x1 conv reads x (a strided one its im2col, the subsampled x) and writes y in place one
     * image at a time: that beats batching images side by side (which copies y out) even for
     * 7x7 planes (mbv2's layers, forward and backward; resnet8's stride-2 shortcuts' forward
     * 10-15% faster) */
    if (d->k == 1 && d->pad == 0) pl.nb = 1;
    return pl;
}

/* One input row xr (NULL: a padding row) into its s column-phase rows: dst[pc][q] = padded
 * column q*s + pc, for q < wq. The interior, where every phase is inside the row, is a plain
 * (s = 1) or de-interleaving (s = 2) copy that vectorizes; the edges check bounds. */
static inline void phase_row(float *const *dst, const float *xr, int s, int pad, int w, int wq) {
    if (!xr) {
        for (int pc = 0; pc < s; pc++)
            for (int q = 0; q < wq; q++) dst[pc][q] = 0.0f;
        return;
    }
    int qa = NASC_MIN((pad + s - 1) / s, wq);
    int qb = w + pad - s >= 0 ? NASC_MIN((w + pad - s) / s + 1, wq) : 0;
    if (qb < qa) qb = qa;
    const float *x0 = xr - pad;
    if (s == 1) {
        float *d0 = dst[0];
        for (int q = qa; q < qb; q++) d0[q] = x0[q];
    } else if (s == 2) {
        float *d0 = dst[0], *d1 = dst[1];
        for (int q = qa; q < qb; q++) {
            d0[q] = x0[2 * q];
            d1[q] = x0[2 * q + 1];
        }
    } else {
        for (int pc = 0; pc < s; pc++)
            for (int q = qa; q < qb; q++) dst[pc][q] = x0[(size_t)q * s + pc];
    }
    for (int pc = 0; pc < s; pc++) {
        for (int q = 0; q < qa; q++) {
            int col = q * s + pc - pad;
            dst[pc][q] = col >= 0 && col < w ? xr[col] : 0.0f;
        }
        for (int q = qb; q < wq; q++) {
            int col = q * s + pc - pad;
            dst[pc][q] = col >= 0 && col < w ? xr[col] : 0.0f;
        }
    }
}

#if CONV_X86
/* The AVX-512 plane copies below (grid_fill, grid_fold_add for s = 1, 2) make a row's lane
 * masks (lane_range, conv_internal.h) once per plane; planes with rows wider than this (phase
 * columns) take the plain C path. */
#define PLANE_MAX_WQ 512

/* grid_fill's copy of one channel's rows (padded row s i + pr of each image to row i of its
 * planes; stride 1 or 2) in AVX-512 and in AVX2. A copy's shape: the channel's nb images (xc at
 * image 0, images img_stride apart, h x w), its planes (hq rows of W = nb * wq columns, then one
 * zero slack row each). */
typedef struct {
    const float *xc;
    size_t img_stride;
    int nb, h, w, pad, wq, hq, s, pr;
} PlaneCopy;

/* One image's row into its planes' rows d0 and d1 (d1 NULL: stride 1), xr at the row's column
 * -pad; ctx: the kernel's lane masks. */
typedef void (*PlaneRow)(float *d0, float *d1, const float *xr, const void *ctx);

/* The walk over rows the copies share: padding rows and the slack row are zeros, other rows
 * row(), image by image (inlined into each copy, row a constant: a call a row is then inlined). */
__attribute__((always_inline)) static inline void plane_rows(float *p0, float *p1, const PlaneCopy *pc, PlaneRow row,
                                                             const void *ctx) {
    const size_t W = (size_t)pc->nb * pc->wq;
    for (int i = 0; i < pc->hq + 1; i++) {
        float *d0 = p0 + (size_t)i * W, *d1 = p1 ? p1 + (size_t)i * W : NULL;
        const int iy = pc->s * i + pc->pr - pc->pad;
        if (i == pc->hq || iy < 0 || iy >= pc->h) { /* a padding row, or the slack row */
            memset(d0, 0, W * sizeof(float));
            if (d1) memset(d1, 0, W * sizeof(float));
            continue;
        }
        const float *xr = pc->xc + (size_t)iy * pc->w - pc->pad;
        for (int j = 0; j < pc->nb; j++, xr += pc->img_stride)
            row(d0 + (size_t)j * pc->wq, d1 ? d1 + (size_t)j * pc->wq : NULL, xr, ctx);
    }
}

/* The AVX-512 rows. The lane masks of a row are made once per copy: rows are short (a 28-wide
 * row is two vectors), so per-row setup was most of the copy's cost. Vector v of a plane row
 * holds its phase columns 16 v.., padded columns span v - pad.. (span 16, or 32 with stride 2:
 * their even ones to d0, odd ones to d1). */
typedef struct {
    int nv;
    __mmask16 st[PLANE_MAX_WQ / 16], la[PLANE_MAX_WQ / 16], lb[PLANE_MAX_WQ / 16];
    const MadeInput *mi;
} RowMasks16;

__attribute__((target("avx512f"), always_inline)) static inline void row_s1_avx512(float *d0, float *d1,
                                                                                   const float *xr, const void *ctx) {
    const RowMasks16 *m = ctx;
    const int nv = m->nv;
    const MadeInput *mi = m->mi;
    if (mi)
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(d0 + 16 * v, m->st[v],
                                  made_lanes(_mm512_maskz_loadu_ps(m->la[v], xr + 16 * v), m->la[v], mi));
    else
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(d0 + 16 * v, m->st[v], _mm512_maskz_loadu_ps(m->la[v], xr + 16 * v));
}

__attribute__((target("avx512f"), always_inline)) static inline void row_s2_avx512(float *d0, float *d1,
                                                                                   const float *xr, const void *ctx) {
    const RowMasks16 *m = ctx;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int nv = m->nv;
    const MadeInput *mi = m->mi;
    for (int v = 0; v < nv; v++) {
        __m512 a = _mm512_maskz_loadu_ps(m->la[v], xr + 32 * v), b = _mm512_maskz_loadu_ps(m->lb[v], xr + 32 * v + 16);
        if (mi) a = made_lanes(a, m->la[v], mi), b = made_lanes(b, m->lb[v], mi);
        _mm512_mask_storeu_ps(d0 + 16 * v, m->st[v], _mm512_permutex2var_ps(a, even, b));
        _mm512_mask_storeu_ps(d1 + 16 * v, m->st[v], _mm512_permutex2var_ps(a, odd, b));
    }
}

__attribute__((target("avx512f"))) static void fill_planes_avx512(float *p0, float *p1, const PlaneCopy *pc,
                                                                  const MadeInput *mi) {
    RowMasks16 m;
    const int span = pc->s * 16;
    m.nv = (pc->wq + 15) / 16, m.mi = mi;
    for (int v = 0; v < m.nv; v++) {
        m.st[v] = lane_range(16 * v, 0, pc->wq);
        m.la[v] = lane_range(span * v - pc->pad, 0, pc->w), m.lb[v] = lane_range(span * v + 16 - pc->pad, 0, pc->w);
    }
    if (p1)
        plane_rows(p0, p1, pc, row_s2_avx512, &m);
    else
        plane_rows(p0, NULL, pc, row_s1_avx512, &m);
}

/* The AVX2 rows, for machines without AVX-512 (eight lanes, masked loads): the plain C copy had
 * cost 2.2 times the AVX-512 one (16 -> 32 channels on 28x28, stride 2, forward, one thread:
 * 30% of it against 18%). The same values, bit for bit. The stores are whole vectors: a row's
 * last one runs into the next image's row, or the next row, or the slack row, all written after
 * it (AMD's masked AVX2 stores are slow: with them the copy took 1.4 times the plain C one). */
#define AVX2 __attribute__((target("avx2")))

typedef struct {
    int nv;
    __m256i la[PLANE_MAX_WQ / 8], lb[PLANE_MAX_WQ / 8];
    const MadeInput *mi;
} RowMasks8;

__attribute__((target("avx2"), always_inline)) static inline void row_s1_avx2(float *d0, float *d1, const float *xr,
                                                                              const void *ctx) {
    const RowMasks8 *m = ctx;
    for (int v = 0; v < m->nv; v++) {
        __m256 a = _mm256_maskload_ps(xr + 8 * v, m->la[v]);
        if (m->mi) a = made_lanes8(a, m->la[v], m->mi);
        _mm256_storeu_ps(d0 + 8 * v, a);
    }
}

__attribute__((target("avx2"), always_inline)) static inline void row_s2_avx2(float *d0, float *d1, const float *xr,
                                                                              const void *ctx) {
    const RowMasks8 *m = ctx;
    for (int v = 0; v < m->nv; v++) {
        __m256 a = _mm256_maskload_ps(xr + 16 * v, m->la[v]), b = _mm256_maskload_ps(xr + 16 * v + 8, m->lb[v]);
        if (m->mi) a = made_lanes8(a, m->la[v], m->mi), b = made_lanes8(b, m->lb[v], m->mi);
        /* within 128-bit halves [a0 a2 b0 b2 | a4 a6 b4 b6], then the halves' pairs put in
         * order: a0 a2 a4 a6 b0 b2 b4 b6 (the odd lanes alike) */
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(d0 + 8 * v, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
        _mm256_storeu_ps(d1 + 8 * v, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
    }
}

AVX2 static void fill_planes_avx2(float *p0, float *p1, const PlaneCopy *pc, const MadeInput *mi) {
    RowMasks8 m;
    const int span = pc->s * 8;
    m.nv = (pc->wq + 7) / 8, m.mi = mi;
    for (int v = 0; v < m.nv; v++)
        m.la[v] = lane_range8(span * v - pc->pad, 0, pc->w), m.lb[v] = lane_range8(span * v + 8 - pc->pad, 0, pc->w);
    if (p1)
        plane_rows(p0, p1, pc, row_s2_avx2, &m);
    else
        plane_rows(p0, NULL, pc, row_s1_avx2, &m);
}
#undef AVX2
#endif

/* Copies channels [c0, c1) of nb images (x at image 0's first channel of the group, images
 * img_stride apart) into the phase planes xph. xs: NULL, or the input made on demand (x is
 * then BN's input, and ch0 the group's first channel). */
MULTIVERSION static void grid_fill_planes(float *xph, const float *x, size_t img_stride, int c0, int c1,
                                          const ConvDims *d, const Grid *g, const ActSrc *xs, int ch0) {
    const int s = g->s, pad = d->pad, h = d->h, w = d->w, wq = g->wq, W = g->W;
    float kc[4];
    MadeInput made = {kc, xs ? xs->act : ACT_COUNT}, *mi = xs && xs->saved ? &made : NULL;
#if CONV_X86
    const int simd = (s == 1 || s == 2) && wq <= PLANE_MAX_WQ ? use_avx512() ? 512 : use_avx2() ? 256 : 0 : 0;
    if (simd) {
        for (int c = c0; c < c1; c++) {
            if (mi) act_consts(xs, ch0 + c, kc);
            for (int pr = 0; pr < s; pr++) {
                float *base = xph + (size_t)(c * s + pr) * s * g->plane; /* plane (pr, 0), then (pr, 1) */
                const PlaneCopy pc = {x + (size_t)c * h * w, img_stride, g->nb, h, w, pad, wq, g->hq, s, pr};
                if (simd == 512)
                    fill_planes_avx512(base, s == 2 ? base + g->plane : NULL, &pc, mi);
                else
                    fill_planes_avx2(base, s == 2 ? base + g->plane : NULL, &pc, mi);
            }
        }
        return;
    }
#endif
    float *dst[16];
    float **dp = s <= 16 ? dst : xmalloc((size_t)s * sizeof *dp);
    float *row = mi ? xmalloc((size_t)w * sizeof(float)) : NULL; /* a made input row */
    for (int c = c0; c < c1; c++) {
        if (mi) act_consts(xs, ch0 + c, kc);
        for (int pr = 0; pr < s; pr++) {
            float *base = xph + (size_t)(c * s + pr) * s * g->plane; /* plane (pr, 0) */
            for (int i = 0; i < g->hq; i++) {
                int iy = i * s + pr - pad;
                for (int j = 0; j < g->nb; j++) {
                    for (int pc = 0; pc < s; pc++) dp[pc] = base + pc * g->plane + (size_t)i * W + (size_t)j * wq;
                    const float *xr = iy < 0 || iy >= h ? NULL : x + j * img_stride + ((size_t)c * h + iy) * w;
                    if (xr && mi) {
                        act_row(mi->act, mi->k, row, xr, w);
                        xr = row;
                    }
                    phase_row(dp, xr, s, pad, w, wq);
                }
            }
            for (int pc = 0; pc < s; pc++) {
                float *slack = base + pc * g->plane + (size_t)g->hq * W;
                for (int q = 0; q < W; q++) slack[q] = 0.0f;
            }
        }
    }
    if (dp != dst) free(dp);
    free(row);
}

/* The phase planes of channels [c0, c1) (see grid_fill_planes); stride 1: each plane's tail
 * past its slack row zeroed (the Winograd transforms read a little past a plane). */
static void grid_fill(float *xph, const float *x, size_t img_stride, int c0, int c1, const ConvDims *d,
                      const Grid *g, const ActSrc *xs, int ch0) {
    grid_fill_planes(xph, x, img_stride, c0, c1, d, g, xs, ch0);
    const size_t used = (size_t)(g->hq + 1) * g->W;
    if (g->s == 1 && used < g->plane)
        for (int c = c0; c < c1; c++) memset(xph + (size_t)c * g->plane + used, 0, (g->plane - used) * sizeof(float));
}

/* The adjoint of phase_row: xr[col] += padded column col + pad of the s phase rows src[pc]
 * (src[pc][q] is padded column q*s + pc), for the w columns of the row. */
static inline void fold_row(float *xr, const float *const *src, int s, int pad, int w, int wq) {
    for (int pc = 0; pc < s; pc++) {
        int lo, hi;
        valid_cols(wq, s, pc - pad, w, &lo, &hi);
        float *dd = xr + pc - pad;
        const float *sp = src[pc];
        if (s == 1)
            for (int q = lo; q < hi; q++) dd[q] += sp[q];
        else
            for (int q = lo; q < hi; q++) dd[(size_t)q * s] += sp[q];
    }
}

#if CONV_X86
/* grid_fold_add for one channel plane xc (h rows of w) of image j, s = 1 or 2: fold_row on
 * each row, vectorized, with the lane masks made once (rows are short: per-row setup dominated). */
__attribute__((target("avx512f"))) static void fold_plane_avx512(float *xc, const float *dxph, int c, int j,
                                                                 const ConvDims *d, const Grid *g, int acc) {
    enum { MAXV = PLANE_MAX_WQ / 16 };
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const int s = g->s, pad = d->pad, h = d->h, w = d->w, wq = g->wq, nv = (wq + 15) / 16;
    __mmask16 in[MAXV], m0[MAXV], m1[MAXV];
    for (int v = 0; v < nv; v++) {
        in[v] = lane_range(16 * v, 0, wq);
        m0[v] = s == 1 ? lane_range(16 * v - pad, 0, w) : lane_range(32 * v - pad, 0, w);
        m1[v] = lane_range(32 * v + 16 - pad, 0, w);
    }
    for (int iy = 0; iy < h; iy++) {
        float *xr = xc + (size_t)iy * w;
        int R = iy + pad;
        const float *s0 = dxph + (size_t)(c * s + R % s) * s * g->plane + (size_t)(R / s) * g->W + (size_t)j * wq;
        if (s == 1) {
            for (int v = 0; v < nv; v++) {
                float *dd = xr + 16 * v - pad;
                __m512 t = _mm512_maskz_loadu_ps(in[v], s0 + 16 * v);
                _mm512_mask_storeu_ps(dd, m0[v], acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m0[v], dd), t) : t);
            }
            continue;
        }
        const float *s1 = s0 + g->plane;
        for (int v = 0; v < nv; v++) { /* phase columns 16v.. interleave into padded columns 32v.. */
            __m512 a = _mm512_maskz_loadu_ps(in[v], s0 + 16 * v), b = _mm512_maskz_loadu_ps(in[v], s1 + 16 * v);
            float *d0 = xr + 32 * v - pad, *d1 = d0 + 16;
            __m512 t0 = _mm512_permutex2var_ps(a, lo_idx, b), t1 = _mm512_permutex2var_ps(a, hi_idx, b);
            if (acc) t0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0[v], d0), t0);
            if (acc) t1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1[v], d1), t1);
            _mm512_mask_storeu_ps(d0, m0[v], t0);
            _mm512_mask_storeu_ps(d1, m1[v], t1);
        }
    }
}
#endif

/* dx (nb images, img_stride apart, at the group's first channel) += the interior of the phase
 * planes dxph (acc = 0: dx = it): the adjoint of grid_fill. */
MULTIVERSION static void grid_fold_add(float *dx, size_t img_stride, const float *dxph, int cin_g,
                                       const ConvDims *d, const Grid *g, int acc) {
    const int s = g->s, pad = d->pad, h = d->h, w = d->w;
#if CONV_X86
    if (s <= 2 && g->wq <= PLANE_MAX_WQ && use_avx512()) { /* every dx value is written once: no zeroing */
        for (int j = 0; j < g->nb; j++)
            for (int c = 0; c < cin_g; c++)
                fold_plane_avx512(dx + j * img_stride + (size_t)c * h * w, dxph, c, j, d, g, acc);
        return;
    }
#endif
    if (!acc)
        for (int j = 0; j < g->nb; j++) memset(dx + j * img_stride, 0, (size_t)cin_g * h * w * sizeof(float));
    const float *src[16];
    const float **sp = s <= 16 ? src : xmalloc((size_t)s * sizeof *sp);
    for (int j = 0; j < g->nb; j++)
        for (int c = 0; c < cin_g; c++)
            for (int iy = 0; iy < h; iy++) {
                float *xr = dx + j * img_stride + ((size_t)c * h + iy) * w;
                int R = iy + pad;
                for (int pc = 0; pc < s; pc++)
                    sp[pc] = dxph + ((size_t)(c * s + R % s) * s + pc) * g->plane + (size_t)(R / s) * g->W +
                             (size_t)j * g->wq;
                fold_row(xr, sp, s, pad, w, g->wq);
            }
    if (sp != src) free(sp);
}

/* dst rows[r][q] += src[r*Q + q] for r < n, q < Q (rows may overlap: applied in order). */
MULTIVERSION static void rows_add(float *const *rows, const float *src, int n, int Q) {
    for (int r = 0; r < n; r++) {
        float *dst = rows[r];
        const float *sr = src + (size_t)r * Q;
        for (int q = 0; q < Q; q++) dst[q] += sr[q];
    }
}

/* rows[(c*k + kh)*k + kw] = where im2col row (c, kh, kw) starts inside the phase planes. */
static void grid_rows(const float **rows, const float *xph, int cin_g, const ConvDims *d, const Grid *g) {
    const int k = d->k, s = g->s;
    for (int c = 0; c < cin_g; c++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                int th = kh * d->dil, tw = kw * d->dil;
                rows[(c * k + kh) * k + kw] = xph + ((size_t)(c * s + th % s) * s + tw % s) * g->plane +
                                              (size_t)(th / s) * g->W + tw / s;
            }
}

/* rows rows of n values: dst (row stride ds) = src (row stride ss) + v, or dst += src when
 * accumulate; then dst[n, n + zero_tail) = 0. The unit of every scatter and gather between
 * NCHW planes and the lowered layouts. */
static inline void move_rows(float *dst, size_t ds, const float *src, size_t ss, int rows, int n, float v,
                             int accumulate, int zero_tail) {
    for (int r = 0; r < rows; r++, dst += ds, src += ss) {
        if (accumulate)
            for (int q = 0; q < n; q++) dst[q] += src[q];
        else
            for (int q = 0; q < n; q++) dst[q] = src[q] + v;
        for (int q = n; q < n + zero_tail; q++) dst[q] = 0.0f;
    }
}

#if CONV_X86
__attribute__((target("avx512f"))) static void move_rows_avx512(float *dst, size_t ds, const float *src, size_t ss,
                                                                int rows, int n, float v, int accumulate,
                                                                int zero_tail) {
    const __m512 vv = _mm512_set1_ps(v);
    for (int r = 0; r < rows; r++, dst += ds, src += ss) {
        for (int q = 0; q < n + zero_tail; q += 16) {
            __mmask16 m = lane_range(q, 0, n), z = lane_range(q, n, n + zero_tail);
            __m512 x = _mm512_maskz_loadu_ps(m, src + q);
            x = accumulate ? _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, dst + q)) : _mm512_add_ps(x, vv);
            _mm512_mask_storeu_ps(dst + q, m, x);
            if (z) _mm512_mask_storeu_ps(dst + q, z, _mm512_setzero_ps());
        }
    }
}
#endif

static void move(float *dst, size_t ds, const float *src, size_t ss, int rows, int n, float v, int accumulate,
                 int zero_tail) {
#if CONV_X86
    if (use_avx512()) {
        move_rows_avx512(dst, ds, src, ss, rows, n, v, accumulate, zero_tail);
        return;
    }
#endif
    move_rows(dst, ds, src, ss, rows, n, v, accumulate, zero_tail);
}

/* dyg (cout_g, Q) = dy of nb images (images img_stride apart) on the output grid; the junk
 * columns are zero, so they contribute nothing to dW. */
MULTIVERSION static void grid_dy(float *dyg, const float *dy, size_t img_stride, int cout_g, const ConvDims *d,
                                 const Grid *g) {
    const int ow = d->ow, P = d->oh * ow;
    for (int co = 0; co < cout_g; co++)
        for (int j = 0; j < g->nb; j++)
            move(dyg + (size_t)co * g->Q + (size_t)j * g->wq, (size_t)g->W, dy + j * img_stride + (size_t)co * P,
                 (size_t)ow, d->oh, ow, 0.0f, 0, g->wq - ow);
}

/* y (images j < nb, channels [c0, c1) of the group) = or += res (channels, columns) + bias.
 * res has `ld` columns per row; image j's pixel (oy, ox) is at column oy * W + j * wq + ox
 * (implicit grid: W = nb * wq; explicit batch: W = ow, wq = P). */
static void scatter_out(float *y, size_t img_stride, const float *res, int ld, int c0, int c1, const float *b,
                        int accumulate, int nb, int W, int wq, int oh, int ow) {
    const int P = oh * ow;
    for (int j = 0; j < nb; j++)
        for (int c = c0; c < c1; c++) {
            float *yr = y + j * img_stride + (size_t)c * P;
            const float *src = res + (size_t)c * ld + (size_t)j * wq;
            float v = b ? b[c] : 0.0f;
            if (W == ow) /* rows are contiguous: one run */
                move(yr, 0, src, 0, 1, P, v, accumulate, 0);
            else
                move(yr, (size_t)ow, src, (size_t)W, oh, ow, v, accumulate, 0);
        }
}

/* dyg (cout_g, nb*P) = dy of nb images side by side (explicit batch layout). */
static void gather_dy(float *dyg, const float *dy, size_t img_stride, int cout_g, int nb, int P) {
    for (int co = 0; co < cout_g; co++)
        for (int j = 0; j < nb; j++)
            memcpy(dyg + (size_t)co * nb * P + (size_t)j * P, dy + j * img_stride + (size_t)co * P,
                   (size_t)P * sizeof(float));
}

/* The adjoint of a stride-1 conv: dx = conv(dy, flipped transposed kernel, pad' = (k-1)*dil -
 * pad). Usable when pad' >= 0. */
static int has_adjoint(const ConvDims *d) {
    return d->stride == 1 && !is_pointwise(d) && d->pad <= (d->k - 1) * d->dil;
}

static ConvDims adjoint_dims(const ConvDims *d) {
    ConvDims t = *d;
    t.cin = d->cout, t.h = d->oh, t.w = d->ow;
    t.cout = d->cin, t.oh = d->h, t.ow = d->w;
    t.pad = (d->k - 1) * d->dil - d->pad;
    return t;
}

/* wadj (G, cin_g, cout_g*k*k): wadj[g][ci][(co*k + kh)*k + kw] = w[g*cout_g + co][ci][k-1-kh][k-1-kw]. */
static void adjoint_weights(float *wadj, const float *w, const ConvDims *d) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G, k = d->k, kk = k * k;
    for (int g = 0; g < G; g++)
        for (int co = 0; co < cout_g; co++)
            for (int ci = 0; ci < cin_g; ci++) {
                const float *src = w + ((size_t)(g * cout_g + co) * cin_g + ci) * kk;
                float *dst = wadj + ((size_t)g * cin_g + ci) * cout_g * kk + (size_t)co * kk;
                for (int t = 0; t < kk; t++) dst[t] = src[kk - 1 - t];
            }
}

/* ------------------------------------------------------------------ strided dx by phases */
/* With stride s > 1, dx splits into s x s phases: input row r = t*s + p receives kernel row kh
 * exactly when p + pad - kh*dil is a multiple of s, and then from output row t + off, off =
 * (p + pad - kh*dil) / s (columns alike). So each phase of dx is a small stride-1 correlation of
 * dy: dx_phase (cin_g, hp*wp) = sum over its taps of W_tap^T (cin_g, cout_g) times dy shifted
 * by (offh, offw): one gemm with K = cout_g * taps, reading dy through a row table from a grid
 * with zero margins. Each dx value is written once, with no col2im fold. Kernels and strides up
 * to PHASE_MAX (all real ones) take this path; larger ones the folded one. */
#define PHASE_MAX 16

static int has_phases(const ConvDims *d) { return d->stride > 1 && d->k <= PHASE_MAX && d->stride <= PHASE_MAX; }

/* The kernel rows (or columns) kh[] that reach input phase p, and the output offsets off[]. */
static int phase_taps(const ConvDims *d, int p, int *kh, int *off) {
    int n = 0;
    for (int k = 0; k < d->k; k++) {
        int v = p + d->pad - k * d->dil;
        if (v % d->stride == 0) {
            kh[n] = k;
            off[n++] = v / d->stride;
        }
    }
    return n;
}

/* Input rows (or columns) of phase p among n. */
static int phase_len(int n, int s, int p) { return p < n ? (n - p + s - 1) / s : 0; }

/* dy of nb images on a zero-margined grid: image j's dy pixel (oy, ox) of channel co is at
 * co*cs + (mt + oy)*W + j*wd + ml + ox; everything else is zero. */
typedef struct {
    int mt, ml; /* zero rows above, zero columns left of each image's dy */
    int R, wd;  /* rows per channel, columns per image */
    int nb, W;  /* images side by side; W = nb * wd */
    size_t cs;  /* floats per channel: R * W */
} DyGrid;

/* The grid every phase can read without leaving it, at least wd_min columns per image. */
static DyGrid dy_grid_of(const ConvDims *d, int nb, int wd_min) {
    int lo = 0, hi = 0, kh[PHASE_MAX], off[PHASE_MAX];
    for (int p = 0; p < d->stride; p++)
        for (int i = 0, n = phase_taps(d, p, kh, off); i < n; i++) {
            lo = NASC_MIN(lo, off[i]);
            hi = NASC_MAX(hi, off[i]);
        }
    DyGrid g;
    g.mt = g.ml = -lo;
    g.R = g.mt + NASC_MAX(d->oh, phase_len(d->h, d->stride, 0) + hi);
    g.wd = NASC_MAX(wd_min, g.ml + NASC_MAX(d->ow, phase_len(d->w, d->stride, 0) + hi));
    g.nb = nb;
    g.W = nb * g.wd;
    g.cs = (size_t)g.R * g.W;
    return g;
}

/* Floats of a DyGrid of c channels, with slack for the row table's last reads. */
static size_t dy_grid_floats(const DyGrid *g, int c) { return round16((size_t)c * g->cs + g->W + 16); }

/* Fills the grid from dy (images img_stride apart, at the group's first channel). */
static void dy_grid_fill(float *dyg, const float *dy, size_t img_stride, int cout_g, const ConvDims *d,
                         const DyGrid *g) {
    const int ow = d->ow, P = d->oh * ow, below = g->R - g->mt - d->oh;
    for (int co = 0; co < cout_g; co++) {
        float *gc = dyg + (size_t)co * g->cs;
        memset(gc, 0, (size_t)g->mt * g->W * sizeof(float));
        for (int j = 0; j < g->nb; j++) {
            float *dst = gc + (size_t)g->mt * g->W + (size_t)j * g->wd;
            if (g->ml)
                for (int oy = 0; oy < d->oh; oy++) memset(dst + (size_t)oy * g->W, 0, g->ml * sizeof(float));
            move(dst + g->ml, (size_t)g->W, dy + j * img_stride + (size_t)co * P, (size_t)ow, d->oh, ow, 0.0f, 0,
                 g->wd - g->ml - ow);
        }
        memset(gc + (size_t)(g->mt + d->oh) * g->W, 0, (size_t)below * g->W * sizeof(float));
    }
    memset(dyg + (size_t)cout_g * g->cs, 0, (dy_grid_floats(g, cout_g) - (size_t)cout_g * g->cs) * sizeof(float));
}

/* wph: per group, per phase (ph, pw) in order, that phase's gemm A (cin_g, cout_g * taps):
 * wph[ci][(co * nh + a) * nw + b] = w[co][ci][kh[a]][kw[b]]. Every tap lands in one phase, so
 * wph has as many values as w. */
static void phase_weights(float *wph, const float *w, const ConvDims *d) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G, k = d->k, s = d->stride;
    int kh[PHASE_MAX], kw[PHASE_MAX], off[PHASE_MAX];
    float *dst = wph;
    for (int g = 0; g < G; g++)
        for (int ph = 0; ph < s; ph++) {
            int nh = phase_taps(d, ph, kh, off);
            for (int pw = 0; pw < s; pw++) {
                int nw = phase_taps(d, pw, kw, off);
                for (int ci = 0; ci < cin_g; ci++)
                    for (int co = 0; co < cout_g; co++) {
                        const float *src = w + ((size_t)(g * cout_g + co) * cin_g + ci) * k * k;
                        for (int a = 0; a < nh; a++)
                            for (int b = 0; b < nw; b++) *dst++ = src[kh[a] * k + kw[b]];
                    }
            }
        }
}

/* One input row from its s column phases: dst[u*s + pw] = (or +=) src[pw][u] for u < the
 * phase's length (a NULL phase is zero). */
static void interleave_row(float *dst, const float *const *src, int s, int w, int acc) {
    for (int pw = 0; pw < s; pw++) {
        const float *sp = src[pw];
        int n = phase_len(w, s, pw);
        if (acc) {
            if (sp)
                for (int u = 0; u < n; u++) dst[(size_t)u * s + pw] += sp[u];
        } else {
            for (int u = 0; u < n; u++) dst[(size_t)u * s + pw] = sp ? sp[u] : 0.0f;
        }
    }
}

#if CONV_X86
/* a and b interleaved: *x0 = a0 b0 a1 b1 ... a7 b7, *x1 = a8 b8 ... a15 b15. */
__attribute__((target("avx512f"))) static inline void zip16(__m512 a, __m512 b, __m512 *x0, __m512 *x1) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    *x0 = _mm512_permutex2var_ps(a, lo, b), *x1 = _mm512_permutex2var_ps(a, hi, b);
}

__attribute__((target("avx512f"))) static void interleave_row2_avx512(float *dst, const float *const *src, int w,
                                                                      int acc) {
    const int n0 = (w + 1) / 2, n1 = w / 2;
    for (int q = 0; q < w; q += 32) {
        int u = q / 2;
        __m512 a = src[0] ? _mm512_maskz_loadu_ps(lane_range(u, 0, n0), src[0] + u) : _mm512_setzero_ps();
        __m512 b = src[1] ? _mm512_maskz_loadu_ps(lane_range(u, 0, n1), src[1] + u) : _mm512_setzero_ps();
        __m512 x0, x1;
        zip16(a, b, &x0, &x1);
        __mmask16 m0 = lane_range(q, 0, w), m1 = lane_range(q + 16, 0, w);
        if (acc) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, dst + q));
            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, dst + q + 16));
        }
        _mm512_mask_storeu_ps(dst + q, m0, x0);
        if (m1) _mm512_mask_storeu_ps(dst + q + 16, m1, x1);
    }
}

/* interleave_row2_avx512 in AVX2: eight values of each phase a step, read with masked loads. */
__attribute__((target("avx2"))) static void interleave_row2_avx2(float *dst, const float *const *src, int w, int acc) {
    const int n0 = (w + 1) / 2, n1 = w / 2;
    for (int q = 0; q < w; q += 16) {
        const int u = q / 2;
        __m256 a = src[0] ? _mm256_maskload_ps(src[0] + u, lanes8_mask(n0 - u)) : _mm256_setzero_ps();
        __m256 b = src[1] ? _mm256_maskload_ps(src[1] + u, lanes8_mask(n1 - u)) : _mm256_setzero_ps();
        __m256 lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b); /* a0 b0 a1 b1 a4 b4 a5 b5, ... */
        __m256 x[2] = {_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31)};
        for (int h = 0; h < 2 && q + 8 * h < w; h++) {
            float *d = dst + q + 8 * h;
            const int n = w - q - 8 * h;
            if (acc) x[h] = _mm256_add_ps(x[h], _mm256_maskload_ps(d, lanes8_mask(n)));
            store8_first(d, x[h], n);
        }
    }
}
#endif

/* A dx row from its s column phases (interleave_row), in vectors where the machine has them. */
static void interleave_any(float *dst, const float *const *src, int s, int w, int acc) {
#if CONV_X86
    if (s == 2 && use_avx512()) {
        interleave_row2_avx512(dst, src, w, acc);
        return;
    }
    if (s == 2 && use_avx2()) {
        interleave_row2_avx2(dst, src, w, acc);
        return;
    }
#endif
    interleave_row(dst, src, s, w, acc);
}

/* A strided 1x1 conv's dx for cin_g channels of one image: each dx row s*t is row t of dcol
 * (cin_g, oh * ow) interleaved with zero phases (or added to dx at every s-th column with acc),
 * the other rows zero (or kept): phase (0, 0) of dx_phases, the only one with a tap. */
static void strided_pointwise_dx(float *dx, const float *dcol, int cin_g, const ConvDims *d, int acc) {
    const int s = d->stride, h = d->h, w = d->w, oh = d->oh, ow = d->ow;
    const float *src[PHASE_MAX] = {NULL};
    for (int c = 0; c < cin_g; c++)
        for (int r = 0; r < h; r++) {
            float *dr = dx + ((size_t)c * h + r) * w;
            if (r % s || r / s >= oh) {
                if (!acc) memset(dr, 0, (size_t)w * sizeof(float));
                continue;
            }
            src[0] = dcol + ((size_t)c * oh + r / s) * ow;
            interleave_any(dr, src, s, w, acc);
        }
}

/* dx (images [i0, i1)) = or += the input gradient, by phases; dy starts at image i0. wph: see
 * phase_weights. dyg_in: NULL, or dy of these images already on the grid *gin (G == 1). */
static void dx_phases(float *dx, const float *dy, const float *wph, const ConvDims *d, int i0, int i1, int acc,
                      const float *dyg_in, const DyGrid *gin) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G, s = d->stride;
    const int P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    int kh[PHASE_MAX][PHASE_MAX], offs[PHASE_MAX][PHASE_MAX], nt[PHASE_MAX], maxt = 0;
    for (int p = 0; p < s; p++) {
        nt[p] = phase_taps(d, p, kh[p], offs[p]);
        maxt = NASC_MAX(maxt, nt[p]);
    }
    /* images side by side: as many as give the first (tallest) phase's gemm COLS_TARGET columns */
    const int hpmax = phase_len(d->h, s, 0);
    const int nb = dyg_in ? i1 - i0
                          : NASC_MAX(1, NASC_MIN(i1 - i0, COLS_TARGET / NASC_MAX(1, hpmax * dy_grid_of(d, 1, 0).wd)));
    const DyGrid gmax = dyg_in ? *gin : dy_grid_of(d, nb, 0);
    const size_t tsz = round16((size_t)cin_g * hpmax * gmax.W);
    float *tmp = scratch_get(0, (size_t)s * tsz * sizeof(float) + (size_t)cout_g * maxt * maxt * sizeof(float *));
    const float **rows = (const float **)(void *)(tmp + (size_t)s * tsz);
    float *dyg = dyg_in ? NULL : scratch_get(1, dy_grid_floats(&gmax, cout_g) * sizeof(float));
    const float *res[PHASE_MAX];
    for (int i = i0; i < i1; i += nb) {
        const int m = NASC_MIN(nb, i1 - i);
        const DyGrid gr = dyg_in ? *gin : dy_grid_of(d, m, 0);
        const float *wg = wph;
        for (int g = 0; g < G; g++) {
            const float *grid = dyg_in;
            if (!grid) {
                dy_grid_fill(dyg, dy + (i - i0) * ystride + (size_t)g * cout_g * P, ystride, cout_g, d, &gr);
                grid = dyg;
            }
            float *dxg = dx + i * xstride + (size_t)g * cin_g * HW;
            for (int ph = 0; ph < s; ph++) {
                const int hp = phase_len(d->h, s, ph), N = hp * gr.W;
                for (int pw = 0; pw < s; pw++) {
                    const int K = cout_g * nt[ph] * nt[pw];
                    res[pw] = NULL;
                    if (hp > 0 && phase_len(d->w, s, pw) > 0 && K > 0) {
                        for (int co = 0; co < cout_g; co++)
                            for (int a = 0; a < nt[ph]; a++)
                                for (int b = 0; b < nt[pw]; b++)
                                    rows[(co * nt[ph] + a) * nt[pw] + b] =
                                        grid + (size_t)co * gr.cs + (size_t)(offs[ph][a] + gr.mt) * gr.W +
                                        offs[pw][b] + gr.ml;
                        float *t = tmp + (size_t)pw * tsz;
                        GemmMat A = {wg, K, 0, NULL}, B = {NULL, 0, 0, rows};
                        gemm_ex(cin_g, N, K, 1.0f, &A, &B, 0.0f, t, N, 0);
                        res[pw] = t;
                    }
                    wg += (size_t)cin_g * K;
                }
                int any = 0;
                for (int pw = 0; pw < s; pw++) any |= res[pw] != NULL;
                if (acc && !any) continue; /* no tap reaches these rows: dx += 0 */
                const float *src[PHASE_MAX];
                for (int j = 0; j < m; j++)
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int t = 0; t < hp; t++) {
                            for (int pw = 0; pw < s; pw++)
                                src[pw] = res[pw] ? res[pw] + (size_t)ci * N + (size_t)t * gr.W + (size_t)j * gr.wd
                                                  : NULL;
                            float *dr = dxg + j * xstride + (size_t)ci * HW + (size_t)(t * s + ph) * d->w;
                            interleave_any(dr, src, s, d->w, acc);
                        }
            }
        }
    }
}

/* ------------------------------------------------------------------ Winograd F(4x4, 3x3) */
/* A 3x3 stride-1 conv on the implicit lowering's output grid (the same values, junk columns
 * included, that gemm makes from the phase planes), in 4x4 output tiles (Lavin and Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2016): a tile's 6x6 input patch d
 * becomes B^T d B; each of its 36 positions is multiplied over channels by the transformed
 * kernel U = G g G^T (one gemm per position: (cout, cin) x (cin, tiles)); the 6x6 result m
 * gives the 4x4 outputs A^T m A. 36 multiplications per tile and channel pair instead of 144
 * (F(2x2)'s 16 per 2x2 tile, which this replaced, make 64: 16 -> 16 channels on 28x28, forward,
 * 1.72 ms direct 1.60, F(4x4) 1.19; 32 -> 32 on 14x14 1.22, direct 1.53, F(4x4) 0.98). Points
 * 0, +-1, +-2:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * The results differ from the direct product by roundings of the transforms' larger
 * coefficients (relative errors ~1e-6; test_conv's tolerance scales with the terms). An output
 * that depends on a junk input column or row is itself junk; a valid output's tile may also
 * read junk (rows and columns past the image): finite values, as the transforms cancel them
 * only up to rounding, so the planes' tails and the slack after them are zeros.
 * The transforms are written twice: with AVX-512's shuffles, and in plain C that the compiler
 * vectorizes for the machine (AVX2, NEON, SSE2). With NASC_CONV=direct the gemm lowering runs. */
/* Zero floats kept after the last phase plane of grid g for the Winograd transforms: F(4x4)'s
 * bottom tile row reads up to two rows past a plane (oh + 4 rows from oh + 3, the plane's
 * slack row included), and its last row's loads 81 floats past the row's first tile. Planes
 * whose round16 tail is zeroed (grid_fill) then read only zeros or a next plane's values. */
static size_t wino_slack(const Grid *g) { return round16(2 * (size_t)g->W + 96); }

/* Zeroes the wino_slack floats after the c channels' phase planes of grid g. */
static void zero_wino_slack(float *planes, const Grid *g, int c) {
    memset(planes + grid_floats(g, c), 0, wino_slack(g) * sizeof(float));
}

/* Transformed positions of a tile. */
#define WINO_POINTS 36

/* Images a call needs for the kernel transform (per call: weights change between calls) to
 * pay; batch-1 inference takes the direct path. */
#define WINO_MIN_IMAGES 8

static int use_winograd(const ConvDims *d) {
    if (d->n < WINO_MIN_IMAGES) return 0;
    /* With few channels the transforms cost more than the products save (the retired F(2x2)
     * was no faster than direct at 16). On 7x7 planes 8x8 of tiles cover 7x7 outputs, and the
     * grid's junk columns widen each image to 9: still 64 -> 64 forward 1.84 -> 1.54 ms, dx + dW
     * 3.71 -> 3.04 ms (2 threads, batch 128), resnet8's layer 0.140 -> 0.123 s a profile. The
     * plain C transforms pay from 16 channels too (NASC_GEMM=avx2, batch 128, 2 threads, direct
     * -> Winograd forward / backward GFLOP/s: 16 -> 16 on 28x28 148 / 139 -> 190 / 162, 32 -> 32
     * on 14x14 148 / 147 -> 251 / 229, 64 -> 64 on 7x7 144 / 141 -> 249 / 234; generic: 60 / 58
     * -> 93 / 99, 52 / 50 -> 123 / 112 on 7x7) */
    return d->k == 3 && d->stride == 1 && d->dil == 1 && d->cin / d->groups >= 16 && d->cout / d->groups >= 16 &&
           d->oh >= 7 && d->ow >= 7 && d->groups < d->cin && conv_env() != CONV_DIRECT &&
           forced_lowering() != LOWER_EXPLICIT;
}

/* G r of three values (a column or row of a kernel): its six transformed values. */
#define WINO_G(r0, r1, r2, o0, o1, o2, o3, o4, o5)                                                 \
    do {                                                                                          \
        const float q0_ = 0.25f * (r0), s_ = q0_ + (r2), h_ = 0.5f * (r1);                        \
        (o0) = q0_;                                                                               \
        (o1) = (-1.0f / 6) * ((r0) + (r1) + (r2));                                                \
        (o2) = (-1.0f / 6) * ((r0) - (r1) + (r2));                                                \
        (o3) = (1.0f / 6) * (s_ + h_);                                                            \
        (o4) = (1.0f / 6) * (s_ - h_);                                                            \
        (o5) = (r2);                                                                              \
    } while (0)

/* U (G, 36, cout_g, cin_g) = G g G^T of every kernel g = wt[co][ci] (wt: (cout, cin_g*9)), in
 * float. Sixteen kernels at a time, their taps first gathered so that the arithmetic runs
 * across kernels (vectorized): per call and per backward thread, it had cost 2% of resnet8's
 * step one kernel at a time in double. The region's threads share the blocks of sixteen
 * (winograd_weights_part): made by one thread, or by each for itself, they had kept the others
 * waiting (resnet8, 2 threads: 2.7% of the samples in them, 9% in OpenMP's waits). */
MULTIVERSION void winograd_weights_part(float *U, const float *wt, int G, int rows, int cols, int transposed, int t,
                                        int T) {
    const size_t np = (size_t)rows * cols, nblk = (np + 15) / 16;
    size_t b0 = nblk * G * (size_t)t / (size_t)T, b1 = nblk * G * (size_t)(t + 1) / (size_t)T;
    for (size_t b = b0; b < b1; b++) {
        const size_t g = b / nblk, p0 = b % nblk * 16;
        const int n = (int)NASC_MIN(16, np - p0);
        float k[9][16] = {{0}}, tr[6][3][16], u[36][16];
        for (int j = 0; j < n; j++) {
            const size_t p = p0 + j, src = transposed ? p % cols * rows + p / cols : p;
            for (int tap = 0; tap < 9; tap++) k[tap][j] = wt[(g * np + src) * 9 + tap];
        }
        for (int c = 0; c < 3; c++)
            for (int j = 0; j < 16; j++)
                WINO_G(k[c][j], k[3 + c][j], k[6 + c][j], tr[0][c][j], tr[1][c][j], tr[2][c][j], tr[3][c][j],
                       tr[4][c][j], tr[5][c][j]);
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 16; j++)
                WINO_G(tr[r][0][j], tr[r][1][j], tr[r][2][j], u[r * 6][j], u[r * 6 + 1][j], u[r * 6 + 2][j],
                       u[r * 6 + 3][j], u[r * 6 + 4][j], u[r * 6 + 5][j]);
        for (int x = 0; x < 36; x++) memcpy(U + (g * 36 + x) * np + p0, u[x], (size_t)n * sizeof(float));
    }
}

void winograd_weights(float *U, const float *wt, int G, int cout_g, int cin_g) {
    winograd_weights_part(U, wt, G, cout_g, cin_g, 0, 0, 1);
}

/* A block of whole tile rows [ty0, ty0 + nr) of tw tiles each; transformed values of tile
 * (ty, tx) at column (ty - ty0) * tw + tx of rows ld floats apart. */
typedef struct {
    int ty0, nr, tw;
    size_t ld;
} TileBlock;

/* Floats from one position's transforms (c channels of rows ld floats) to the next: an odd
 * number of cache lines, so that the 36 positions of a tile, which the transforms store or
 * load together, fall in 36 different sets of the L1 cache. With c * ld a multiple of 64
 * lines they fell in four sets (8 ways each) and evicted each other: 16 -> 16 channels on
 * 28x28, two images a block, input transform 12.7 -> 7.3 us a block, output 12.7 -> 11.3;
 * 32 on 14x14 (four images) 14.5 -> 7.6 and 17.2 -> 9.2; resnet8's step 38.0 -> 36.0 ms. */
static size_t wino_ps(int c, size_t ld) {
    const size_t f = (size_t)c * ld;
    return f / 16 % 2 ? f : f + 16;
}

#if CONV_X86

/* d[j] (lanes t) = p[4 t + j], j < 4, the 64 floats from p de-interleaved in two rounds of
 * even/odd permutes; lanes off in m[j] are zero. */
__attribute__((target("avx512f"))) static inline void cols_by4(const float *p, const __mmask16 m[4], __m512 d[4]) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    __m512 v2 = _mm512_loadu_ps(p + 32), v3 = _mm512_loadu_ps(p + 48);
    __m512 e0 = _mm512_permutex2var_ps(v0, even, v1), o0 = _mm512_permutex2var_ps(v0, odd, v1);
    __m512 e1 = _mm512_permutex2var_ps(v2, even, v3), o1 = _mm512_permutex2var_ps(v2, odd, v3);
    d[0] = _mm512_maskz_permutex2var_ps(m[0], e0, even, e1);
    d[1] = _mm512_maskz_permutex2var_ps(m[1], o0, even, o1);
    d[2] = _mm512_maskz_permutex2var_ps(m[2], e0, odd, e1);
    d[3] = _mm512_maskz_permutex2var_ps(m[3], o0, odd, o1);
}

/* The row transform of one patch row for sixteen tiles, p at the first's column: the row's
 * columns 4tx + {0..3} (cols_by4), 4tx + 4 and + 5 the first two shifted by one tile. */
__attribute__((target("avx512f"))) static inline void winograd_row(const float *p, __m512 t[6]) {
    static const __mmask16 all[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
    __m512 d[6];
    cols_by4(p, all, d);
    d[4] = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(_mm512_loadu_ps(p + 64)), _mm512_castps_si512(d[0]), 1));
    d[5] = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(_mm512_loadu_ps(p + 65)), _mm512_castps_si512(d[1]), 1));
    bt6(d, t);
}

/* V[x][c][t] = (B^T d B)[x] of the 6x6 patch of each tile t of the block, for channels [0, c)
 * of the planes (W columns per row), sixteen tiles of a tile row at a time. A tile row's last
 * two patch rows are the next one's first two: their row transforms are kept (rt, in L1). */
__attribute__((target("avx512f"))) static void winograd_input_avx512(float *V, const float *planes, size_t plane, int c,
                                                                int W, const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    __m512 rt[6][6];
    for (int ch = 0; ch < c; ch++) {
        const float *pc = planes + (size_t)ch * plane;
        float *vc = V + (size_t)ch * b->ld;
        for (int tx = 0; tx < b->tw; tx += 16) {
            const __mmask16 m = lane_range(tx, 0, b->tw);
            const float *p = pc + (size_t)4 * b->ty0 * W + 4 * tx;
            winograd_row(p, rt[0]);
            winograd_row(p + W, rt[1]);
            float *dst = vc + tx;
            for (int r = 0; r < b->nr; r++, dst += b->tw) {
                for (int i = 2; i < 6; i++) winograd_row(p + (size_t)i * W, rt[i]);
                p += 4 * (size_t)W;
                for (int j = 0; j < 6; j++) {
                    __m512 col[6] = {rt[0][j], rt[1][j], rt[2][j], rt[3][j], rt[4][j], rt[5][j]}, v[6];
                    bt6(col, v);
                    for (int i = 0; i < 6; i++) _mm512_mask_storeu_ps(dst + (i * 6 + j) * xs, m, v[i]);
                }
                for (int j = 0; j < 6; j++) rt[0][j] = rt[4][j], rt[1][j] = rt[5][j];
            }
        }
    }
}

/* The block's output rows of the output grid (oh rows of W cells) = A^T m A of each tile,
 * m[x] = M[x][ch][t], stored straight into y through map (as gemm_map's: the grid is never
 * written); a tile row's four output columns are interleaved back into pixel order by two
 * rounds of zips. */
__attribute__((target("avx512f"), always_inline)) static inline void
winograd_output_as(const int MASK, const int ACC, const int BIAS, const GemmMap *map, const float *M, int c, int oh,
                   int W, const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    for (int r = 0; r < b->nr; r++)
        for (int tx = 0; tx < b->tw; tx += 16) {
            const int q = 4 * tx, rows = NASC_MIN(4, oh - 4 * (b->ty0 + r));
            MapRun run[4][4][MAP_RUNS]; /* output row k, vector v */
            int nrun[4][4] = {{0}};
            for (int k = 0; k < rows; k++)
                for (int v = 0; v < 4 && q + 16 * v < W; v++)
                    nrun[k][v] = gemm_map_runs(map, (4 * (b->ty0 + r) + k) * W + q + 16 * v,
                                               NASC_MIN(16, W - q - 16 * v), run[k][v]);
            for (int ch = 0; ch < c; ch++) {
                const float *src = M + (size_t)ch * b->ld + (size_t)r * b->tw + tx;
                __m512 a[4][6]; /* A^T m: a[k][j] */
                for (int j = 0; j < 6; j++) {
                    __m512 col[6], y[4];
                    for (int i = 0; i < 6; i++) col[i] = _mm512_loadu_ps(src + (i * 6 + j) * xs);
                    at4(col, y);
                    for (int k = 0; k < 4; k++) a[k][j] = y[k];
                }
                for (int k = 0; k < rows; k++) {
                    __m512 o[4], p0, p1, q0, q1, z[4];
                    at4(a[k], o);
                    zip16(o[0], o[2], &p0, &p1);
                    zip16(o[1], o[3], &q0, &q1);
                    zip16(p0, q0, &z[0], &z[1]);
                    zip16(p1, q1, &z[2], &z[3]);
                    float *yr = map->y + (size_t)ch * map->row_stride;
                    const float *xr = MASK ? map->mask + (size_t)ch * map->row_stride : NULL;
                    const __m512 bv = _mm512_set1_ps(BIAS ? map->bias[ch] : 0.0f);
                    for (int v = 0; v < 4; v++) {
                        const __m512 x = BIAS ? _mm512_add_ps(z[v], bv) : z[v];
                        for (int u = 0; u < nrun[k][v]; u++) {
                            /* the next channel's cells (and mask), one plane on, asked for
                             * now: they arrive while this one is done (16 -> 16 on 28x28,
                             * batch 128, 2 threads: forward 2.10 -> 1.97 ms) */
                            if (ch + 1 < c) {
                                const float *nx = yr + map->row_stride + run[k][v][u].off;
                                __builtin_prefetch(nx, 1, 3), __builtin_prefetch(nx + 15, 1, 3);
                                if (MASK) __builtin_prefetch(xr + map->row_stride + run[k][v][u].off, 0, 3);
                            }
                            float *dst = yr + run[k][v][u].off; /* lane l's cell is dst[l] */
                            const __mmask16 mk = run[k][v][u].lanes;
                            __m512 s = x;
                            if (MASK) { /* 0 + (f'(a) ? x : 0), a the activation's input */
                                const __m512 a = _mm512_maskz_loadu_ps(mk, xr + run[k][v][u].off);
                                __mmask16 on = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
                                if (map->mask_relu6) on &= _mm512_cmp_ps_mask(a, _mm512_set1_ps(6.0f), _CMP_LT_OQ);
                                const __m512 old = ACC ? _mm512_maskz_loadu_ps(mk, dst)
                                                                   : _mm512_setzero_ps();
                                s = _mm512_add_ps(old, _mm512_maskz_mov_ps(on, x));
                            } else if (ACC) {
                                s = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, dst));
                            }
                            _mm512_mask_storeu_ps(dst, mk, s);
                        }
                    }
                }
            }
        }
}

/* winograd_output_as with the map's mask, accumulate and bias fixed, so the stores' loop carries
 * no tests (32 -> 32 channels on 14x14, four images a block: 8.6 -> 7.5 us a block). */
__attribute__((target("avx512f"))) static void winograd_output_avx512(const GemmMap *map, const float *M, int c, int oh,
                                                                 int W, const TileBlock *b) {
    const int mask = map->mask != NULL, acc = map->accumulate != 0;
    if (map->bias)
        winograd_output_as(mask, acc, 1, map, M, c, oh, W, b);
    else if (!mask && !acc)
        winograd_output_as(0, 0, 0, map, M, c, oh, W, b);
    else if (!mask)
        winograd_output_as(0, 1, 0, map, M, c, oh, W, b);
    else if (!acc)
        winograd_output_as(1, 0, 0, map, M, c, oh, W, b);
    else
        winograd_output_as(1, 1, 0, map, M, c, oh, W, b);
}

/* E[x][c][t] = (A e A^T)[x] of each tile t's 4x4 block e of dy on the output grid (the
 * adjoint of winograd_output, for dW): dy rows W columns apart, channels ld apart, junk
 * columns and the rows past the image zero. Grid columns past W (a ragged last tile) read as
 * zero. */
__attribute__((target("avx512f"))) static void winograd_dy_avx512(float *E, const float *dy, size_t ld, int c, int W,
                                                             const TileBlock *b) {
    const __m512i lane4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
    const size_t xs = wino_ps(c, b->ld);
    for (int ch = 0; ch < c; ch++) {
        const float *dc = dy + (size_t)ch * ld;
        float *ec = E + (size_t)ch * b->ld;
        for (int r = 0; r < b->nr; r++)
            for (int tx = 0; tx < b->tw; tx += 16) {
                const __mmask16 m = lane_range(tx, 0, b->tw);
                __mmask16 cm[4]; /* lanes whose column 4 tx' + j is inside the row */
                for (int j = 0; j < 4; j++)
                    cm[j] = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane4, _mm512_set1_epi32(4 * tx + j)),
                                                    _mm512_set1_epi32(W));
                const float *p = dc + (size_t)4 * (b->ty0 + r) * W + 4 * tx;
                __m512 rt[4][6];
                for (int i = 0; i < 4; i++, p += W) {
                    __m512 q[4];
                    cols_by4(p, cm, q);
                    at4t(q, rt[i]);
                }
                float *dst = ec + (size_t)r * b->tw + tx;
                for (int j = 0; j < 6; j++) {
                    __m512 col[4] = {rt[0][j], rt[1][j], rt[2][j], rt[3][j]}, s[6];
                    at4t(col, s);
                    for (int i = 0; i < 6; i++) _mm512_mask_storeu_ps(dst + (i * 6 + j) * xs, m, s[i]);
                }
            }
    }
}
#endif

/* Whether the Winograd transforms run on AVX-512 (else the plain C ones). */
static int wino_avx512(void) {
#if CONV_X86
    return use_avx512();
#else
    return 0;
#endif
}

/* The same transforms in plain C, for machines without AVX-512 (AVX2 through MULTIVERSION's
 * clones, ARM64's NEON, SSE2), sixteen tiles of a tile row at a time as the AVX-512 code takes
 * them: each value of a tile is an array of WINO_LANES floats, one per tile, and every loop runs
 * WINO_LANES times over such arrays (a constant count, no aliasing: the compiler vectorizes them
 * whole for whatever vectors the machine has). A patch row is first split into its four column
 * phases (tile t's columns 4t + j, j < 4, are phase j's element t; its columns 4t + 4 and 4t + 5
 * are phase 0 and 1's element t + 1). Lanes past the tile row are computed on whatever the
 * planes hold there and never stored. The arithmetic is the AVX-512 code's without fused
 * multiply-adds (GCC contracts nothing in ISO C), so the two agree to rounding, not bit for bit. */
#define WINO_LANES 16

/* bt6 over the lanes: t[k][l] = (B^T d)[k] of d[0..5][l]. */
static inline void bt6_lanes(float t[6][WINO_LANES], const float *d0, const float *d1, const float *d2,
                             const float *d3, const float *d4, const float *d5) {
    for (int l = 0; l < WINO_LANES; l++) {
        const float c0 = d4[l] - d2[l], c1 = d3[l] - d1[l];
        t[0][l] = (4.0f * d0[l] - 5.0f * d2[l]) + d4[l];
        t[1][l] = (d3[l] + d4[l]) - 4.0f * (d1[l] + d2[l]);
        t[2][l] = (d4[l] - d3[l]) + 4.0f * (d1[l] - d2[l]);
        t[3][l] = c0 + 2.0f * c1;
        t[4][l] = c0 - 2.0f * c1;
        t[5][l] = (4.0f * d1[l] - 5.0f * d3[l]) + d5[l];
    }
}

/* at4 over the lanes: y[k][l] = (A^T m)[k] of m[0..5][l]. */
static inline void at4_lanes(float y[4][WINO_LANES], const float *m0, const float *m1, const float *m2,
                             const float *m3, const float *m4, const float *m5) {
    for (int l = 0; l < WINO_LANES; l++) {
        const float s12 = m1[l] + m2[l], d12 = m1[l] - m2[l], s34 = m3[l] + m4[l], d34 = m3[l] - m4[l];
        y[0][l] = (m0[l] + s12) + s34;
        y[1][l] = 2.0f * d34 + d12;
        y[2][l] = 4.0f * s34 + s12;
        y[3][l] = (8.0f * d34 + d12) + m5[l];
    }
}

/* at4t over the lanes: s[k][l] = (A r)[k] of r[0..3][l]. */
static inline void at4t_lanes(float s[6][WINO_LANES], const float *r0, const float *r1, const float *r2,
                              const float *r3) {
    for (int l = 0; l < WINO_LANES; l++) {
        const float a = r0[l] + r2[l], b = r1[l] + r3[l];
        const float c = 4.0f * r2[l] + r0[l], e = 8.0f * r3[l] + (r1[l] + r1[l]);
        s[0][l] = r0[l], s[1][l] = a + b, s[2][l] = a - b, s[3][l] = c + e, s[4][l] = c - e, s[5][l] = r3[l];
    }
}

/* dst[x * xs + l] = v[x][l] for rows x < 6 and the block's lanes: all sixteen when the tile
 * row's tiles start the vector (tx == 0), even past its n tiles (they land on the next tile
 * row's, which are written after them, or on the WINO_LANES floats tile_plan adds to a block's
 * row on this path); else the first n (a memcpy each: only rows of more than 16 tiles). A
 * constant count of lanes vectorizes whole; a loop to n, or one that skips lanes past it, had
 * stayed scalar. */
static inline void store6_lanes(float *dst, size_t xs, const float (*v)[WINO_LANES], int tx, int n) {
    for (int x = 0; x < 6; x++)
        if (tx == 0 || n == WINO_LANES)
            for (int l = 0; l < WINO_LANES; l++) dst[(size_t)x * xs + l] = v[x][l];
        else
            memcpy(dst + (size_t)x * xs, v[x], (size_t)n * sizeof(float));
}

MULTIVERSION static void winograd_input_c(float *V, const float *planes, size_t plane, int c, int W,
                                          const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    float e[4][WINO_LANES + 1], rt[6][6][WINO_LANES], v[6][WINO_LANES];
    for (int ch = 0; ch < c; ch++) {
        const float *pc = planes + (size_t)ch * plane;
        float *vc = V + (size_t)ch * b->ld;
        for (int tx = 0; tx < b->tw; tx += WINO_LANES) {
            const int n = NASC_MIN(WINO_LANES, b->tw - tx);
            int slot[6] = {0, 1, 2, 3, 4, 5}; /* patch row i's row transform is rt[slot[i]] */
            for (int r = 0; r < b->nr; r++) {
                /* a tile row's last two patch rows are the next one's first two: kept */
                for (int i = r ? 2 : 0; i < 6; i++) {
                    const float *p = pc + (size_t)(4 * (b->ty0 + r) + i) * W + 4 * tx;
                    for (int t = 0; t <= WINO_LANES; t++)
                        e[0][t] = p[4 * t], e[1][t] = p[4 * t + 1], e[2][t] = p[4 * t + 2], e[3][t] = p[4 * t + 3];
                    float(*o)[WINO_LANES] = rt[slot[i]];
                    bt6_lanes(o, e[0], e[1], e[2], e[3], e[0] + 1, e[1] + 1);
                }
                float *dst = vc + (size_t)r * b->tw + tx;
                for (int j = 0; j < 6; j++) {
                    bt6_lanes(v, rt[slot[0]][j], rt[slot[1]][j], rt[slot[2]][j], rt[slot[3]][j], rt[slot[4]][j],
                              rt[slot[5]][j]);
                    store6_lanes(dst + (size_t)j * xs, 6 * xs, (const float(*)[WINO_LANES])v, tx, n);
                }
                const int s0 = slot[0], s1 = slot[1];
                slot[0] = slot[4], slot[1] = slot[5], slot[4] = s0, slot[5] = s1;
            }
        }
    }
}

/* The runs of grid cells [q0, q1) that a GemmMap keeps (an image's columns ox < ow): cells
 * [at, at + n) of the range go to y + off + oy * ow + channel * row_stride. */
typedef struct {
    int at, n;
    size_t off;
} MapSeg;
#define MAP_SEGS_MAX (4 * WINO_LANES / 5 + 2) /* wq >= 5 */

static int map_segs(const GemmMap *g, int q0, int q1, MapSeg *seg) {
    int ns = 0;
    for (int q = q0; q < q1;) {
        const int j = q / g->wq, ox = q - j * g->wq, end = NASC_MIN(q1, (j + 1) * g->wq);
        const int n = NASC_MIN(end, j * g->wq + g->ow) - q;
        if (n > 0) {
            NASC_ASSERT(ns < MAP_SEGS_MAX);
            seg[ns++] = (MapSeg){q - q0, n, (size_t)j * g->img_stride + (size_t)ox};
        }
        q = end;
    }
    return ns;
}

/* A row of grid cells, v (cells of the runs seg), into output row oy of channel ch through map,
 * as winograd_output_as stores them: the bias, then the mask or the accumulation. Without
 * either, x + 0 (a plain copy loop would become a memcpy call per run: 8% of 16 -> 16
 * channels' forward on 28x28; it only turns a -0 into +0). */
/* A run through a mask: dst = (ACC ? dst : 0) + (f'(a) ? x : 0), x = src (+ bias), branch-free
 * (keep_if) so that it vectorizes where there are no masked stores (AVX2, NEON): written with
 * tests, the masked store had stayed scalar, 15% of an NB201 cell's step with NASC_GEMM=avx2. */
__attribute__((always_inline)) static inline void masked_run(float *dst, const float *src, const float *a, int n,
                                                             float bias, int relu6, const int BIAS, const int ACC) {
    for (int l = 0; l < n; l++) {
        const float x = BIAS ? src[l] + bias : src[l];
        const int on = (a[l] > 0.0f) & (!relu6 | (a[l] < 6.0f));
        dst[l] = (ACC ? dst[l] : 0.0f) + keep_if(x, on);
    }
}

static inline void map_store_row(const GemmMap *g, int ch, int oy, const MapSeg *seg, int ns, const float *v) {
    const float bias = g->bias ? g->bias[ch] : 0.0f;
    const size_t base = (size_t)ch * g->row_stride + (size_t)oy * g->ow;
    for (int i = 0; i < ns; i++) {
        float *dst = g->y + base + seg[i].off;
        const float *src = v + seg[i].at;
        const int n = seg[i].n;
        if (g->mask) {
            const float *a = g->mask + base + seg[i].off; /* 0 + (f'(a) ? x : 0) */
            const int r6 = g->mask_relu6 != 0;
            if (g->bias && g->accumulate)
                masked_run(dst, src, a, n, bias, r6, 1, 1);
            else if (g->bias)
                masked_run(dst, src, a, n, bias, r6, 1, 0);
            else if (g->accumulate)
                masked_run(dst, src, a, n, bias, r6, 0, 1);
            else
                masked_run(dst, src, a, n, bias, r6, 0, 0);
        } else if (g->accumulate) {
            for (int l = 0; l < n; l++) dst[l] = (src[l] + bias) + dst[l];
        } else {
            for (int l = 0; l < n; l++) dst[l] = src[l] + bias;
        }
    }
}

MULTIVERSION static void winograd_output_c(const GemmMap *map, const float *M, int c, int oh, int W,
                                           const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    float a[6][4][WINO_LANES], o[4][WINO_LANES], row[4 * WINO_LANES];
    for (int r = 0; r < b->nr; r++) {
        const int rows = NASC_MIN(4, oh - 4 * (b->ty0 + r));
        for (int tx = 0; tx < b->tw; tx += WINO_LANES) {
            const int n = NASC_MIN(WINO_LANES, b->tw - tx);
            MapSeg seg[MAP_SEGS_MAX];
            const int ns = map_segs(map, 4 * tx, NASC_MIN(W, 4 * (tx + n)), seg);
            for (int ch = 0; ch < c; ch++) {
                /* all sixteen lanes read: past the tile row they hold other tiles' values, or
                 * (the last channel's) the slack after M (winograd_conv) */
                const float *m = M + (size_t)ch * b->ld + (size_t)r * b->tw + tx;
                for (int j = 0; j < 6; j++) /* a[j][k] = (A^T m)[k][j] */
                    at4_lanes(a[j], m + j * xs, m + (6 + j) * xs, m + (12 + j) * xs, m + (18 + j) * xs,
                              m + (24 + j) * xs, m + (30 + j) * xs);
                for (int k = 0; k < rows; k++) {
                    at4_lanes(o, a[0][k], a[1][k], a[2][k], a[3][k], a[4][k], a[5][k]);
                    for (int t = 0; t < WINO_LANES; t++) /* the tiles' four columns back in pixel order */
                        row[4 * t] = o[0][t], row[4 * t + 1] = o[1][t], row[4 * t + 2] = o[2][t],
                                row[4 * t + 3] = o[3][t];
                    map_store_row(map, ch, 4 * (b->ty0 + r) + k, seg, ns, row);
                }
            }
        }
    }
}

MULTIVERSION static void winograd_dy_c(float *E, const float *dy, size_t ld, int c, int W, const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    float q[4][WINO_LANES], rt[4][6][WINO_LANES], v[6][WINO_LANES];
    for (int ch = 0; ch < c; ch++) {
        const float *dc = dy + (size_t)ch * ld;
        float *ec = E + (size_t)ch * b->ld;
        for (int r = 0; r < b->nr; r++)
            for (int tx = 0; tx < b->tw; tx += WINO_LANES) {
                const int n = NASC_MIN(WINO_LANES, b->tw - tx);
                for (int i = 0; i < 4; i++) {
                    const float *p = dc + (size_t)(4 * (b->ty0 + r) + i) * W + 4 * tx;
                    const int cols = NASC_MIN(4 * WINO_LANES, W - 4 * tx); /* inside the row */
                    if (cols == 4 * WINO_LANES)
                        for (int t = 0; t < WINO_LANES; t++)
                            q[0][t] = p[4 * t], q[1][t] = p[4 * t + 1], q[2][t] = p[4 * t + 2], q[3][t] = p[4 * t + 3];
                    else /* a short or ragged last vector: columns past W are zero */
                        for (int t = 0; t < WINO_LANES; t++)
                            for (int j = 0; j < 4; j++) q[j][t] = 4 * t + j < cols ? p[4 * t + j] : 0.0f;
                    at4t_lanes(rt[i], q[0], q[1], q[2], q[3]);
                }
                float *dst = ec + (size_t)r * b->tw + tx;
                for (int j = 0; j < 6; j++) {
                    at4t_lanes(v, rt[0][j], rt[1][j], rt[2][j], rt[3][j]);
                    store6_lanes(dst + (size_t)j * xs, 6 * xs, (const float(*)[WINO_LANES])v, tx, n);
                }
            }
    }
}

#if CONV_X86
/* The input transform in AVX2 for machines without AVX-512, as winograd_input_avx512 with eight
 * tiles a vector: the compiler's AVX2 version of winograd_input_c above, which splits a patch
 * row into column phases through a buffer on the stack, waited on its own stores there. */
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

/* d[j] (lanes t) = p[4 t + j], j < 4: 32 floats of 8 tiles split into their four column phases
 * (the 128-bit halves paired, then a 4 x 4 transpose within each). */
AVX2_INLINE void cols_by4_avx2(const float *p, __m256 d[4]) {
    const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
    const __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
    const __m256 u0 = _mm256_permute2f128_ps(v0, v2, 0x20), u1 = _mm256_permute2f128_ps(v0, v2, 0x31);
    const __m256 u2 = _mm256_permute2f128_ps(v1, v3, 0x20), u3 = _mm256_permute2f128_ps(v1, v3, 0x31);
    const __m256 a = _mm256_unpacklo_ps(u0, u1), b = _mm256_unpackhi_ps(u0, u1);
    const __m256 c = _mm256_unpacklo_ps(u2, u3), e = _mm256_unpackhi_ps(u2, u3);
    d[0] = _mm256_shuffle_ps(a, c, 0x44), d[1] = _mm256_shuffle_ps(a, c, 0xEE);
    d[2] = _mm256_shuffle_ps(b, e, 0x44), d[3] = _mm256_shuffle_ps(b, e, 0xEE);
}

/* The row transform of one patch row for eight tiles (winograd_row): columns 4 tx + {0..3}, and
 * 4 tx + 4, + 5 as the first two phases moved by one tile, the ninth tile's from p[32], p[33]. */
AVX2_INLINE void winograd_row_avx2(const float *p, __m256 t[6]) {
    const __m256i next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    __m256 d[6];
    cols_by4_avx2(p, d);
    d[4] = _mm256_blend_ps(_mm256_permutevar8x32_ps(d[0], next), _mm256_broadcast_ss(p + 32), 0x80);
    d[5] = _mm256_blend_ps(_mm256_permutevar8x32_ps(d[1], next), _mm256_broadcast_ss(p + 33), 0x80);
    bt6_avx2(d, t);
}

__attribute__((target("avx2,fma"))) static void winograd_input_avx2(float *V, const float *planes, size_t plane,
                                                                   int c, int W, const TileBlock *b) {
    const size_t xs = wino_ps(c, b->ld);
    __m256 rt[6][6];
    for (int ch = 0; ch < c; ch++) {
        const float *pc = planes + (size_t)ch * plane;
        float *vc = V + (size_t)ch * b->ld;
        for (int tx = 0; tx < b->tw; tx += 8) {
            /* all eight lanes stored when the tile row has them, or when its tiles start the
             * vector (the rest land on the next tile row's, written after them, or on the slack
             * tile_plan leaves on this path); else the first n through a buffer */
            const int n = NASC_MIN(8, b->tw - tx), whole = n == 8 || tx == 0;
            const float *p = pc + (size_t)4 * b->ty0 * W + 4 * tx;
            winograd_row_avx2(p, rt[0]);
            winograd_row_avx2(p + W, rt[1]);
            float *dst = vc + tx;
            for (int r = 0; r < b->nr; r++, dst += b->tw) {
                for (int i = 2; i < 6; i++) winograd_row_avx2(p + (size_t)i * W, rt[i]);
                p += 4 * (size_t)W;
                for (int j = 0; j < 6; j++) {
                    __m256 col[6] = {rt[0][j], rt[1][j], rt[2][j], rt[3][j], rt[4][j], rt[5][j]}, v[6];
                    bt6_avx2(col, v);
                    for (int i = 0; i < 6; i++) store8_first(dst + (i * 6 + j) * xs, v[i], whole ? 8 : n);
                }
                for (int j = 0; j < 6; j++) rt[0][j] = rt[4][j], rt[1][j] = rt[5][j];
            }
        }
    }
}

/* winograd_dy_avx512 in AVX2, eight tiles a vector (the C version had waited on its own stores
 * to the stack, as the input transform had). */
__attribute__((target("avx2,fma"))) static void winograd_dy_avx2(float *E, const float *dy, size_t ld, int c, int W,
                                                                const TileBlock *b) {
    const __m256i lane4 = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const size_t xs = wino_ps(c, b->ld);
    for (int ch = 0; ch < c; ch++) {
        const float *dc = dy + (size_t)ch * ld;
        float *ec = E + (size_t)ch * b->ld;
        for (int r = 0; r < b->nr; r++)
            for (int tx = 0; tx < b->tw; tx += 8) {
                const int n = NASC_MIN(8, b->tw - tx), whole = n == 8 || tx == 0; /* as the input's */
                __m256 cm[4]; /* lanes whose column 4 tx' + j is inside the row */
                for (int j = 0; j < 4; j++)
                    cm[j] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                        _mm256_set1_epi32(W), _mm256_add_epi32(lane4, _mm256_set1_epi32(4 * tx + j))));
                const float *p = dc + (size_t)4 * (b->ty0 + r) * W + 4 * tx;
                __m256 rt[4][6];
                for (int i = 0; i < 4; i++, p += W) {
                    __m256 q[4];
                    cols_by4_avx2(p, q);
                    for (int j = 0; j < 4; j++) q[j] = _mm256_and_ps(q[j], cm[j]);
                    at4t_avx2(q, rt[i]);
                }
                float *dst = ec + (size_t)r * b->tw + tx;
                for (int j = 0; j < 6; j++) {
                    __m256 col[4] = {rt[0][j], rt[1][j], rt[2][j], rt[3][j]}, v[6];
                    at4t_avx2(col, v);
                    for (int i = 0; i < 6; i++) store8_first(dst + (i * 6 + j) * xs, v[i], whole ? 8 : n);
                }
            }
    }
}
#endif

/* The transforms: the AVX-512 code when gemm runs on AVX-512, else (the input's and dy's on AVX2
 * too) the plain C above. */
static void winograd_input(float *V, const float *planes, size_t plane, int c, int W, const TileBlock *b) {
#if CONV_X86
    if (wino_avx512()) {
        winograd_input_avx512(V, planes, plane, c, W, b);
        return;
    }
    if (use_avx2()) {
        winograd_input_avx2(V, planes, plane, c, W, b);
        return;
    }
#endif
    winograd_input_c(V, planes, plane, c, W, b);
}

static void winograd_output(const GemmMap *map, const float *M, int c, int oh, int W, const TileBlock *b) {
#if CONV_X86
    if (wino_avx512()) {
        winograd_output_avx512(map, M, c, oh, W, b);
        return;
    }
#endif
    winograd_output_c(map, M, c, oh, W, b);
}

static void winograd_dy(float *E, const float *dy, size_t ld, int c, int W, const TileBlock *b) {
#if CONV_X86
    if (wino_avx512()) {
        winograd_dy_avx512(E, dy, ld, c, W, b);
        return;
    }
    if (use_avx2()) {
        winograd_dy_avx2(E, dy, ld, c, W, b);
        return;
    }
#endif
    winograd_dy_c(E, dy, ld, c, W, b);
}

/* Tiles a block aims at: its transformed input and products, 36 (cin + cout) floats a tile,
 * should stay in L2 (at least one tile row a block). Smaller blocks make short gemms: 64 -> 64
 * channels on 7x7 planes got one tile row (16 tiles) a block with 128K floats; resnet8's step
 * 32.0 / 33.4 / 33.1 -> 31.8 / 31.9 / 31.1 ms, an NB201 cell's 76.3 / 74.9 -> 72.6 / 73.3 ms. */
#define WINO_BLOCK_FLOATS (512 * 1024)

/* The blocks of an output grid of W columns and oh rows for transforms of c channels a tile
 * (cin + cout): tw tiles a row, th tile rows, rb of them a block, ld the transforms' row
 * stride (a block's tiles, rounded up to whole lines; on the plain C path WINO_LANES floats
 * more, which its stores may fill with junk, store6_lanes). */
typedef struct {
    int tw, th, rb;
    size_t ld;
} TilePlan;

static TilePlan tile_plan(int W, int oh, int c) {
    TilePlan t;
    t.tw = (W + 3) / 4, t.th = (oh + 3) / 4;
    t.rb = NASC_MAX(1, WINO_BLOCK_FLOATS / (WINO_POINTS * c) / t.tw);
    t.ld = round16((size_t)NASC_MIN(t.rb, t.th) * t.tw + (wino_avx512() ? 0 : WINO_LANES));
    return t;
}

/* The conv on the output grid of planes (cin_g phase planes of the implicit lowering, grid
 * g), stored into y through map; U: this group's (36, cout_g, cin_g). A block of tile rows at
 * a time: input transform, 36 gemms, output transform. */
static void winograd_conv(const GemmMap *map, const float *planes, const float *U, int cin_g, int cout_g, int oh,
                          const Grid *g) {
    const TilePlan tp = tile_plan(g->W, oh, cin_g + cout_g);
    const int tw = tp.tw;
    const size_t ld = tp.ld;
    const size_t vs = wino_ps(cin_g, ld), ms = wino_ps(cout_g, ld);
    float *V = scratch_get(WINO_SLOT, (WINO_POINTS * (vs + ms) + 16) * sizeof(float));
    float *M = V + WINO_POINTS * vs;
    for (int ty0 = 0; ty0 < tp.th; ty0 += tp.rb) {
        TileBlock b = {ty0, NASC_MIN(tp.rb, tp.th - ty0), tw, ld};
        winograd_input(V, planes, g->plane, cin_g, g->W, &b);
        gemm_batch(WINO_POINTS, cout_g, b.nr * tw, cin_g, U, cin_g, (size_t)cout_g * cin_g, V, (int)ld, vs, 0.0f, M,
                   (int)ld, ms);
        winograd_output(map, M, cout_g, oh, g->W, &b);
    }
}

/* ------------------------------------------------------------------ forward */
/* Whether gemm stores the output grid's kept cells straight into y (gemm_map: AVX-512, Kc
 * within one k block, grids of at least 5 columns an image) rather than the grid being written
 * and scattered (scatter_out). */
static int map_out(const Grid *g, int Kc) { return gemm_map_supported(Kc) && g->wq >= 5; }

static void add_bias(float *y, const float *b, int rows, int cols, int ld) {
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ld, v = b[r];
        for (int j = 0; j < cols; j++) yr[j] += v;
    }
}

/* forward_images' flags: y += instead of y =; y is a buffer that stays in cache (a chunk on its
 * way to an epilogue), never written around the caches. */
#define FWD_ACCUMULATE 1
#define FWD_CACHED 2

/* y = conv(x) for the `images` images that x and y start at, on the calling thread, or with
 * FWD_ACCUMULATE: y += conv(x) and no bias (the adjoint conv of the backward uses that). wt is
 * the (cout, Kc) weight matrix. xs: NULL, or x is made on demand from xs (x at BN's input rows;
 * implicit lowering only: the phase planes are filled with the made values). xph: NULL, or
 * the phase planes of all the images, already filled (implicit lowering, one block, G == 1),
 * with wino_slack zero floats after them. wino: NULL, or the Winograd kernels of wt
 * (winograd_weights; implicit lowering). */
static void forward_images(float *y, const float *x, const float *wt, const float *b, const ConvDims *d, int images,
                           int flags, const ActSrc *xs, const float *xph, const float *wino, const DxMask *ym) {
    const int accumulate = (flags & FWD_ACCUMULATE) != 0;
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    const Plan pl = plan_of(d, images);
    const Grid gmax = grid_of(d, pl.nb);
    const int in_place = pl.how == LOWER_EXPLICIT && pl.nb == 1; /* gemm writes y itself */
    NASC_ASSERT(!xs || pl.how == LOWER_IMPLICIT);
    NASC_ASSERT(!xph || (pl.how == LOWER_IMPLICIT && pl.nb >= images && G == 1));
    NASC_ASSERT(!wino || pl.how == LOWER_IMPLICIT);
    /* an output much larger than the caches is written around them */
    const int stream =
        !accumulate && !(flags & FWD_CACHED) && (double)d->n * d->cout * P * sizeof(float) > STREAM_BYTES;
    float *buf = NULL, *tmp = NULL;
    const float **rows = NULL;
    if (pl.how == LOWER_IMPLICIT) {
        size_t xsz = grid_floats(&gmax, cin_g) + wino_slack(&gmax);
        buf = scratch_get(0, xsz * sizeof(float) + (size_t)Kc * sizeof(float *));
        rows = (const float **)(void *)(buf + xsz);
        tmp = scratch_get(1, (size_t)cout_g * gmax.Q * sizeof(float));
    } else {
        if (!is_pointwise(d) || pl.nb > 1) buf = scratch_get(0, (size_t)Kc * pl.nb * P * sizeof(float));
        if (!in_place) tmp = scratch_get(1, (size_t)cout_g * pl.nb * P * sizeof(float));
    }
    for (int i = 0; i < images; i += pl.nb) {
        int m = NASC_MIN(pl.nb, images - i);
        for (int g = 0; g < G; g++) {
            const float *wg = wt + (size_t)g * cout_g * Kc, *bg = b ? b + g * cout_g : NULL;
            const float *xg = x + i * xstride + (size_t)g * cin_g * HW;
            float *yg = y + i * ystride + (size_t)g * cout_g * P;
            if (pl.how == LOWER_IMPLICIT) {
                Grid gr = grid_of(d, m);
                if (!xph) grid_fill(buf, xg, xstride, 0, cin_g, d, &gr, xs, g * cin_g);
                if (wino) {
                    if (!xph) zero_wino_slack(buf, &gr, cin_g);
                    /* the output transform stores into y itself (use_winograd's planes have
                     * wq >= 9, which the map takes) */
                    NASC_ASSERT(gr.wq >= 5);
                    GemmMap mp = {yg, ystride, (size_t)P, gr.W, gr.wq, d->ow, bg, accumulate, NULL, 0};
                    if (ym) {
                        mp.mask = ym->x + i * ystride + (size_t)g * cout_g * P;
                        mp.mask_relu6 = ym->act == ACT_RELU6;
                    }
                    winograd_conv(&mp, xph ? xph : buf, wino + (size_t)g * WINO_POINTS * cout_g * cin_g, cin_g, cout_g,
                                  d->oh, &gr);
                    continue;
                } else {
                    grid_rows(rows, xph ? xph : buf, cin_g, d, &gr);
                    GemmMat A = {wg, Kc, 0, NULL}, B = {NULL, 0, 0, rows};
                    if (map_out(&gr, Kc)) { /* the kernel stores the kept cells into y itself */
                        GemmMap mp = {yg, ystride, (size_t)P, gr.W, gr.wq, d->ow, bg, accumulate, NULL, 0};
                        gemm_map(cout_g, gr.Q, Kc, &A, &B, &mp);
                        continue;
                    }
                    gemm_ex(cout_g, gr.Q, Kc, 1.0f, &A, &B, 0.0f, tmp, gr.Q, 0);
                }
                scatter_out(yg, ystride, tmp, gr.Q, 0, cout_g, bg, accumulate, m, gr.W, gr.wq, d->oh, d->ow);
            } else if (in_place) {
                const float *B = xg;
                if (!is_pointwise(d)) {
                    im2col(buf, P, xg, cin_g, d, 0, P);
                    B = buf;
                }
                GemmMat A = {wg, Kc, 0, NULL}, Bm = {B, P, 0, NULL};
                gemm_ex(cout_g, P, Kc, 1.0f, &A, &Bm, accumulate ? 1.0f : 0.0f, yg, P, stream ? GEMM_STREAM_C : 0);
                if (bg) add_bias(yg, bg, cout_g, P, P);
            } else {
                int ld = m * P;
                for (int j = 0; j < m; j++) im2col(buf + (size_t)j * P, ld, xg + j * xstride, cin_g, d, 0, P);
                gemm(0, 0, cout_g, ld, Kc, 1.0f, wg, Kc, buf, ld, 0.0f, tmp, ld);
                scatter_out(yg, ystride, tmp, ld, 0, cout_g, bg, accumulate, m, d->ow, P, d->oh, d->ow);
            }
        }
    }
}

/* Forward of one image with all threads of the enclosing parallel region. Explicit: each
 * thread lowers and multiplies its own range of output columns. Implicit: the threads fill the
 * shared phase planes (split by channel), then each multiplies its range of output channels.
 * shared_x / shared_out: the implicit path's planes (+ row table) and gemm output. */
static void forward_one_image(float *y, const float *x, const float *w, const float *b, const ConvDims *d,
                              Lowering how, float *shared_x, float *shared_out) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const int t = thread_id(), T = thread_count();
    if (how == LOWER_EXPLICIT) {
        int lo, hi;
        split_range((P + 15) / 16, T, t, &lo, &hi); /* columns in multiples of 16 */
        int p0 = lo * 16, p1 = NASC_MIN(hi * 16, P), np = p1 - p0;
        if (np <= 0) return;
        float *col = is_pointwise(d) ? NULL : scratch_get(0, (size_t)Kc * np * sizeof(float));
        for (int g = 0; g < G; g++) {
            const float *xg = x + (size_t)g * cin_g * HW;
            float *yg = y + (size_t)g * cout_g * P + p0;
            const float *wg = w + (size_t)g * cout_g * Kc;
            if (is_pointwise(d)) {
                gemm(0, 0, cout_g, np, Kc, 1.0f, wg, Kc, xg + p0, HW, 0.0f, yg, P);
            } else {
                im2col(col, np, xg, cin_g, d, p0, p1);
                gemm(0, 0, cout_g, np, Kc, 1.0f, wg, Kc, col, np, 0.0f, yg, P);
            }
            if (b) add_bias(yg, b + g * cout_g, cout_g, np, P);
        }
        return;
    }
    Grid gr = grid_of(d, 1);
    const float **rows = (const float **)(void *)(shared_x + grid_floats(&gr, cin_g));
    int c0, c1, m0, m1;
    split_range(cin_g, T, t, &c0, &c1);
    split_range((cout_g + 7) / 8, T, t, &m0, &m1); /* output channels in multiples of 8 */
    m0 *= 8;
    m1 = NASC_MIN(m1 * 8, cout_g);
    for (int g = 0; g < G; g++) {
        grid_fill(shared_x, x + (size_t)g * cin_g * HW, 0, c0, c1, d, &gr, NULL, 0);
        if (t == 0) grid_rows(rows, shared_x, cin_g, d, &gr);
#pragma omp barrier
        if (m0 < m1) {
            GemmMat A = {w + ((size_t)g * cout_g + m0) * Kc, Kc, 0, NULL}, B = {NULL, 0, 0, rows};
            gemm_ex(m1 - m0, gr.Q, Kc, 1.0f, &A, &B, 0.0f, shared_out + (size_t)m0 * gr.Q, gr.Q, 0);
            scatter_out(y + (size_t)g * cout_g * P, 0, shared_out, gr.Q, m0, m1, b ? b + g * cout_g : NULL, 0, 1,
                        gr.W, gr.wq, d->oh, d->ow);
        }
#pragma omp barrier
    }
}

/* Whether a conv on nt threads runs as Winograd with images across a vector (winograd_batch.c):
 * the AVX-512 or AVX2 path, the automatic lowering, a 3x3 conv with padding 1 of its shapes,
 * and enough images for each thread's vectors. */
static int use_wb(const ConvDims *d, int nt) {
#if CONV_X86
    return (use_avx512() || use_avx2()) && conv_env() == -1 && (ws2_shape_ok(d) || wb1_shape_ok(d)) && d->n >= 12 * nt;
#else
    (void)d, (void)nt;
    return 0;
#endif
}

#if CONV_X86
/* Kernels of a use_wb conv's transform (stride 2: 81, stride 1: 36). */
static int wb_kernels(const ConvDims *d) { return d->stride == 2 ? WS2_KERNELS : WINO_POINTS; }

/* U (or transposed, U^T: dx's) of a use_wb conv, on thread t of T in a region (each a share,
 * then a barrier for all). */
static void wb_weights(float *U, int transposed, const float *w, const ConvDims *d, int t, int T) {
    if (d->stride == 2) {
        const size_t pm = (size_t)d->cout * d->cin;
        float *tap = scratch_get(INPUT_SLOT, 9 * pm * sizeof(float));
        int x0, x1;
        split_range(WS2_KERNELS, T, t, &x0, &x1);
        ws2_weights(U, transposed, w, d->cout, d->cin, x0, x1, tap);
    } else if (transposed) { /* the kernels with cin and cout swapped: G g G^T of each */
        winograd_weights_part(U, w, 1, d->cin, d->cout, 1, t, T);
    } else {
        winograd_weights_part(U, w, 1, d->cout, d->cin, 0, t, T);
    }
#pragma omp barrier
}

/* The forward of use_wb's convs: each thread's images a group at a time, with the row
 * statistics or the epilogue taken while the group's output is in cache. */
static void forward_wb(float *y, const ActSrc *xs, const float *w, const float *b, const ConvDims *d, int nt,
                       double *row_stats, const BnEval *epi) {
    const int P = d->oh * d->ow;
    /* the calling thread's slot 1, which the region's threads do not use (a fresh allocation
     * each call had cost page faults: 11% of small's step) */
    float *U = scratch_get(1, (size_t)wb_kernels(d) * d->cout * d->cin * sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        wb_weights(U, 0, w, d, thread_id(), thread_count());
        split_range(d->n, thread_count(), thread_id(), &lo, &hi);
        const size_t ystride = (size_t)d->cout * P;
        const int step = wb_group_images(d);
        float *ybuf = epi ? scratch_get(OUTPUT_SLOT, (size_t)step * ystride * sizeof(float)) : NULL;
        for (int i = lo; i < hi; i += step) {
            const int m = NASC_MIN(step, hi - i);
            float *yc = epi ? ybuf : y + i * ystride;
            if (d->stride == 2)
                ws2_forward(yc, ystride, xs, (size_t)i, m, U, b, d);
            else
                wb1_forward(yc, ystride, xs, (size_t)i, m, U, b, d);
            if (row_stats) bn_row_stats(row_stats, y + i * ystride, (size_t)i * d->cout, (size_t)m * d->cout, P);
            if (epi) bn_eval_rows(epi, y + i * ystride, ybuf, (size_t)i * d->cout, (size_t)m * d->cout, d->cout, P);
        }
    }
}
#endif

void conv2d_forward(float *y, const float *x, const float *w, const float *b, const ConvDims *d) {
    ActSrc src = {.x = x, .c = d->cin, .hw = d->h * d->w};
    conv2d_forward_src(y, &src, w, b, d, NULL, NULL);
}

void conv2d_forward_src(float *y, const ActSrc *xs, const float *w, const float *b, const ConvDims *d,
                        double *row_stats, const BnEval *epi) {
    NASC_ASSERT(xs->c == d->cin && xs->hw == d->h * d->w && !(row_stats && epi));
    if (d->groups == d->cin && d->cin == d->cout) {
        depthwise_forward(y, xs, w, b, d, row_stats, epi);
        return;
    }
    const int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups, P = d->oh * d->ow;
    double flops = 2.0 * d->n * d->cout * P * cin_g * d->k * d->k;
    int nt = threads_for(flops, NASC_MAX(d->n, P / 32));
#if CONV_X86
    if (use_wb(d, nt)) {
        forward_wb(y, xs, w, b, d, nt, row_stats, epi);
        return;
    }
#endif
    if (d->n >= nt) {
        /* Winograd's kernels: the region's threads make them together (winograd_weights_part) */
        float *wino = use_winograd(d) && plan_of(d, 1).how == LOWER_IMPLICIT
                          ? scratch_get(WEIGHT_SLOT, (size_t)WINO_POINTS * d->cout * cin_g * sizeof(float))
                          : NULL;
#pragma omp parallel num_threads(nt)
        {
            if (wino) {
                winograd_weights_part(wino, w, d->groups, cout_g, cin_g, 0, thread_id(), thread_count());
#pragma omp barrier
            }
            int lo, hi;
            split_range(d->n, thread_count(), thread_id(), &lo, &hi);
            const size_t xstride = (size_t)d->cin * d->h * d->w, ystride = (size_t)d->cout * P;
            if (!xs->saved && !row_stats && !epi) {
                forward_images(y + lo * ystride, xs->x + lo * xstride, w, b, d, hi - lo, 0, NULL, NULL, wino, NULL);
            } else { /* a chunk of images at a time, as forward_images takes them: the input made
                      * on demand (by the copy into the phase planes, or first into a buffer), the
                      * output's row statistics taken, or the epilogue applied, while it is in
                      * cache (with an epilogue the conv's output goes to a buffer that stays
                      * there) */
                const Plan pl = plan_of(d, NASC_MAX(hi - lo, 1));
                const int step = pl.nb, in_fill = pl.how == LOWER_IMPLICIT;
                float *xbuf = xs->saved && !in_fill ? scratch_get(INPUT_SLOT, (size_t)step * xstride * sizeof(float))
                                                    : NULL;
                float *ybuf = epi ? scratch_get(OUTPUT_SLOT, (size_t)step * ystride * sizeof(float)) : NULL;
                for (int i = lo; i < hi; i += step) {
                    int m = NASC_MIN(step, hi - i);
                    float *yc = epi ? ybuf : y + i * ystride;
                    const int fl = epi ? FWD_CACHED : 0;
                    if (in_fill)
                        forward_images(yc, xs->x + i * xstride, w, b, d, m, fl, xs, NULL, wino, NULL);
                    else
                        forward_images(yc, act_rows(xs, xbuf, (size_t)i * d->cin, (size_t)m * d->cin), w, b, d, m, fl,
                                       NULL, NULL, wino, NULL);
                    if (row_stats)
                        bn_row_stats(row_stats, y + i * ystride, (size_t)i * d->cout, (size_t)m * d->cout, P);
                    if (epi)
                        bn_eval_rows(epi, y + i * ystride, ybuf, (size_t)i * d->cout, (size_t)m * d->cout, d->cout, P);
                }
            }
        }
        return;
    }
    /* Fewer images than threads (inference): an input made on demand is made whole first; an
     * epilogue runs on the whole output after the conv (it is in cache). */
    if (epi) {
        float *raw = xmalloc((size_t)d->n * d->cout * P * sizeof(float));
        conv2d_forward_src(raw, xs, w, b, d, NULL, NULL);
        bn_eval_rows(epi, y, raw, 0, (size_t)d->n * d->cout, d->cout, P);
        free(raw);
        return;
    }
    const float *x = xs->x;
    float *made = NULL;
    if (xs->saved) {
        made = xmalloc((size_t)d->n * d->cin * d->h * d->w * sizeof(float));
        x = act_rows(xs, made, 0, (size_t)d->n * d->cin);
    }
    /* Fewer images than threads: all threads on each image. */
    Plan pl = plan_of(d, 1);
    float *shared_x = NULL, *shared_out = NULL;
    if (pl.how == LOWER_IMPLICIT) {
        Grid gr = grid_of(d, 1);
        shared_x = scratch_get(0, grid_floats(&gr, cin_g) * sizeof(float) +
                                      (size_t)cin_g * d->k * d->k * sizeof(float *));
        shared_out = scratch_get(1, (size_t)cout_g * gr.Q * sizeof(float));
    }
    for (int i = 0; i < d->n; i++) {
        const float *xi = x + (size_t)i * d->cin * d->h * d->w;
        float *yi = y + (size_t)i * d->cout * P;
#pragma omp parallel num_threads(nt)
        forward_one_image(yi, xi, w, b, d, pl.how, shared_x, shared_out);
    }
    free(made);
    if (row_stats) bn_row_stats(row_stats, y, 0, (size_t)d->n * d->cout, P);
}

/* ------------------------------------------------------------------ backward */
/* The sum of n floats, in 16 interleaved partial sums: a chain of one addition after another
 * waits out each one's latency, 16 independent ones vectorize without reordering any of them
 * (a 16 -> 96 conv with bias on 28x28, batch 128, 2 threads: backward 9.3 -> 5.8 ms). */
static float sum_floats(const float *g, int n) {
    float a[16] = {0}, s = 0.0f;
    int p = 0;
    for (; p + 16 <= n; p += 16)
        for (int l = 0; l < 16; l++) a[l] += g[p + l];
    for (int l = 0; l < 16; l++) s += a[l];
    for (; p < n; p++) s += g[p];
    return s;
}

/* db (cout) += the sums of the output gradient's rows, images of cout rows of P values each. */
static void add_db(float *db, const float *dy, int images, int cout, int P) {
    for (int j = 0; j < images; j++)
        for (int co = 0; co < cout; co++) db[co] += sum_floats(dy + ((size_t)j * cout + co) * P, P);
}

#if CONV_X86
/* transpose_avx512 (conv_internal.h) in AVX2, eight by eight (the ragged edges element by
 * element): for machines without AVX-512, where dW's dy^T and Winograd's E^T had been a plain
 * loop (16 -> 32 channels on 28x28, stride 2, dx + dW, one thread: 7.4% of it in dw_images'
 * transpose). */
__attribute__((target("avx2"))) static void transpose_avx2(float *dst, const float *src, int rows, int cols,
                                                           size_t lds) {
    int r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        int q0 = 0;
        for (; q0 + 8 <= cols; q0 += 8) {
            __m256 v[8], t[8];
            for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(src + (size_t)(r0 + i) * lds + q0);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) { /* v[i + k]: column k (and k + 4) of rows i..i+3 */
                v[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int k = 0; k < 4; k++) {
                _mm256_storeu_ps(dst + (size_t)(q0 + k) * rows + r0, _mm256_permute2f128_ps(v[k], v[4 + k], 0x20));
                _mm256_storeu_ps(dst + (size_t)(q0 + 4 + k) * rows + r0, _mm256_permute2f128_ps(v[k], v[4 + k], 0x31));
            }
        }
        for (; q0 < cols; q0++)
            for (int i = 0; i < 8; i++) dst[(size_t)q0 * rows + r0 + i] = src[(size_t)(r0 + i) * lds + q0];
    }
    for (; r0 < rows; r0++)
        for (int q = 0; q < cols; q++) dst[(size_t)q * rows + r0] = src[(size_t)r0 * lds + q];
}
#endif

/* dst (cols, rows) = src (rows, cols; rows lds apart) transposed. */
void conv_transpose(float *dst, const float *src, int rows, int cols, size_t lds) {
#if CONV_X86
    if (use_avx512()) {
        transpose_avx512(dst, src, rows, cols, lds);
        return;
    }
    if (use_avx2()) {
        transpose_avx2(dst, src, rows, cols, lds);
        return;
    }
#endif
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++) dst[(size_t)q * rows + r] = src[(size_t)r * lds + q];
}

/* Positions of winograd_dw whose E^T are made before their products are taken together. */
#define WINO_DW_GROUP 4

/* dW by Winograd F(4x4, 3x3), the adjoint of the forward's: with U = G g G^T and a tile's
 * output A^T (U . V) A, dL/dU = sum over tiles of (A e A^T) . V (e the tile's output gradient)
 * and dL/dg = G^T (dL/dU) G. du (36, cin_g, cout_g) += sum over the tiles of the grid of
 * E[x]^T V[x] for each position x, E = A e A^T of dyw (dy on the output grid: rows W apart,
 * channels dy_ld apart, junk columns and the rows past the image zero), V = B^T d B of the
 * phase planes (one gemm per position: (cin, tiles) x (tiles, cout), E transposed for gemm's
 * main kernel). winograd_dw_finish then adds G^T du G to dW^T once per thread. 36 products a
 * tile and channel pair for the 144 of the direct sums. The products go WINO_DW_GROUP positions
 * at a time (gemm_batch), their E^T made first. */
static void winograd_dw(float *du, const float *planes, const float *dyw, size_t dy_ld, int cin_g, int cout_g,
                        int oh, const Grid *g) {
    const TilePlan tp = tile_plan(g->W, oh, cin_g + cout_g);
    const int tw = tp.tw;
    const size_t ld = tp.ld;
    const size_t vs = wino_ps(cin_g, ld), es = wino_ps(cout_g, ld);
    const size_t ts = ld * cout_g; /* floats of one position's E^T */
    float *V = scratch_get(WINO_SLOT, (WINO_POINTS * (vs + es) + WINO_DW_GROUP * ts) * sizeof(float));
    float *E = V + WINO_POINTS * vs, *Et = E + WINO_POINTS * es;
    for (int ty0 = 0; ty0 < tp.th; ty0 += tp.rb) {
        TileBlock b = {ty0, NASC_MIN(tp.rb, tp.th - ty0), tw, ld};
        const int K = b.nr * tw;
        winograd_input(V, planes, g->plane, cin_g, g->W, &b);
        winograd_dy(E, dyw, dy_ld, cout_g, g->W, &b);
        for (int x0 = 0; x0 < WINO_POINTS; x0 += WINO_DW_GROUP) {
            for (int x = x0; x < x0 + WINO_DW_GROUP; x++) conv_transpose(Et + (x - x0) * ts, E + x * es, cout_g, K, ld);
            gemm_batch(WINO_DW_GROUP, cin_g, cout_g, K, V + x0 * vs, (int)ld, vs, Et, cout_g, ts, 1.0f,
                       du + (size_t)x0 * cin_g * cout_g, cout_g, (size_t)cin_g * cout_g);
        }
    }
}

/* dwt (cin_g * 9, cout_g) += G^T du G of every channel pair (du as winograd_dw's), in double,
 * eight output channels at a time (the arithmetic runs across them: vectorized). */
MULTIVERSION void winograd_dw_finish(float *dwt, const float *du, int cin_g, int cout_g) {
    static const double Gm[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    const size_t pairs = (size_t)cin_g * cout_g;
    for (int ci = 0; ci < cin_g; ci++)
        for (int c0 = 0; c0 < cout_g; c0 += 8) {
            const int n = NASC_MIN(8, cout_g - c0);
            double m[36][8] = {{0}}, t[3][6][8], o[9][8];
            for (int x = 0; x < 36; x++)
                for (int l = 0; l < n; l++) m[x][l] = du[(size_t)x * pairs + (size_t)ci * cout_g + c0 + l];
            for (int k = 0; k < 3; k++) /* t = G^T m */
                for (int j = 0; j < 6; j++)
                    for (int l = 0; l < 8; l++) {
                        double s = 0;
                        for (int i = 0; i < 6; i++) s += Gm[i][k] * m[i * 6 + j][l];
                        t[k][j][l] = s;
                    }
            for (int k = 0; k < 3; k++) /* o = t G */
                for (int q = 0; q < 3; q++)
                    for (int l = 0; l < 8; l++) {
                        double s = 0;
                        for (int j = 0; j < 6; j++) s += t[k][j][l] * Gm[j][q];
                        o[k * 3 + q][l] = s;
                    }
            for (int tap = 0; tap < 9; tap++)
                for (int l = 0; l < n; l++) dwt[((size_t)ci * 9 + tap) * cout_g + c0 + l] += (float)o[tap][l];
        }
}

/* dW^T for 16 output channels a group and a 3x3 stride-1 kernel (dilation 1) on the implicit
 * lowering's planes, where gemm's 8 x 16 tile has 8 accumulators for 9 loads a step (its
 * register tile is wide, not tall): dwt (Kc, 16) += col (Kc, Q) dyt (Q, 16), col row (c, kh, kw)
 * = planes[c] + kh W + kw. Three channels' 27 rows at a time are 27 accumulators, addressed from
 * three plane pointers and the row offsets 0, W, 2W (+ 0, 1, 2). Same sums as gemm's kernel
 * (column by column in order, one fused multiply-add each). */
#if CONV_X86
#define TAPS3_MAX 3
__attribute__((target("avx512f"), always_inline)) static inline void taps3_channels(
    const int nc, float *dwt, const float *const *pc, int W, const float *dyt, int Q) {
    __m512 acc[TAPS3_MAX][9];
    for (int j = 0; j < nc; j++)
        for (int t = 0; t < 9; t++) acc[j][t] = _mm512_loadu_ps(dwt + ((size_t)j * 9 + t) * 16);
    const ptrdiff_t W1 = W, W2 = 2 * (ptrdiff_t)W;
    for (int q = 0; q < Q; q++) {
        const __m512 b = _mm512_loadu_ps(dyt + (size_t)q * 16);
        for (int j = 0; j < nc; j++) {
            const float *r = pc[j] + q;
            /* (hides that r[1] now is r[0] next time: GCC's predictive commoning otherwise
             * carries broadcasts across iterations in spilled registers) */
            __asm__("" : "+r"(r));
            acc[j][0] = _mm512_fmadd_ps(_mm512_set1_ps(r[0]), b, acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(_mm512_set1_ps(r[1]), b, acc[j][1]);
            acc[j][2] = _mm512_fmadd_ps(_mm512_set1_ps(r[2]), b, acc[j][2]);
            acc[j][3] = _mm512_fmadd_ps(_mm512_set1_ps(r[W1]), b, acc[j][3]);
            acc[j][4] = _mm512_fmadd_ps(_mm512_set1_ps(r[W1 + 1]), b, acc[j][4]);
            acc[j][5] = _mm512_fmadd_ps(_mm512_set1_ps(r[W1 + 2]), b, acc[j][5]);
            acc[j][6] = _mm512_fmadd_ps(_mm512_set1_ps(r[W2]), b, acc[j][6]);
            acc[j][7] = _mm512_fmadd_ps(_mm512_set1_ps(r[W2 + 1]), b, acc[j][7]);
            acc[j][8] = _mm512_fmadd_ps(_mm512_set1_ps(r[W2 + 2]), b, acc[j][8]);
        }
    }
    for (int j = 0; j < nc; j++)
        for (int t = 0; t < 9; t++) _mm512_storeu_ps(dwt + ((size_t)j * 9 + t) * 16, acc[j][t]);
}

__attribute__((target("avx512f"))) static void dw_taps3_avx512(float *dwt, const float *const *rows, int cin_g, int W,
                                                               const float *dyt, int Q) {
    int c = 0;
    for (; c + 3 <= cin_g; c += 3) {
        const float *pc[3] = {rows[9 * c], rows[9 * (c + 1)], rows[9 * (c + 2)]};
        taps3_channels(3, dwt + (size_t)c * 9 * 16, pc, W, dyt, Q);
    }
    if (cin_g - c == 2) {
        const float *pc[2] = {rows[9 * c], rows[9 * (c + 1)]};
        taps3_channels(2, dwt + (size_t)c * 9 * 16, pc, W, dyt, Q);
    } else if (cin_g - c == 1) {
        const float *pc[1] = {rows[9 * c]};
        taps3_channels(1, dwt + (size_t)c * 9 * 16, pc, W, dyt, Q);
    }
}
#endif

#if CONV_X86
/* dW of this shape by dw_taps3_avx512 (rather than gemm). */
static int dw_by_taps3(const ConvDims *d, Lowering how) {
    return use_avx512() && how == LOWER_IMPLICIT && d->cout / d->groups == 16 && d->k == 3 && d->stride == 1 &&
           d->dil == 1;
}
#endif

/* Whether a 1x1 stride-1 conv takes its dW as dy x^T, x transposed, into dW's own layout (cout,
 * cin), rather than as x dy^T, dy transposed, into dW^T's. gemm's vectors run along the
 * product's columns (cout, resp. cin), so: when one count fills vectors (16 lanes, AVX2's 8)
 * better, that one; when both do as well, x^T if it is the smaller, with 32 input channels or
 * more. Measured (dW alone, batch 128, one thread, task-clock of 150-300 calls, x dy^T -> dy
 * x^T), AVX-512: 144 -> 24 on 14x14 0.71-0.74 -> 0.57-0.67 s, 96 -> 24 0.40-0.41 -> 0.33-0.34 s;
 * 64 -> 384 on 7x7 1.25-1.51 -> 1.06-1.10 s, 32 -> 192 0.29-0.31 -> 0.26 s; and where x dy^T
 * stays: 384 -> 64 on 7x7 0.67-0.69 -> 0.77 s, 192 -> 32 0.18 -> 0.19-0.20 s, 24 -> 144 on 14x14
 * 1.16-1.35 -> 1.24-1.28 s, 16 -> 96 on 28x28 (whose x dy^T takes dot products) 8-10% slower.
 * AVX2 (8 lanes: 24 channels fill them): 144 -> 24 0.65-0.69 -> 0.73-0.78 s, 32 -> 192 0.18-0.26
 * -> 0.15-0.16 s. */
static int pw_dw_rows(const ConvDims *d) {
#if CONV_X86
    if (!is_pointwise(d) || d->groups != 1 || !(use_avx512() || use_avx2())) return 0;
    const long v = use_avx512() ? 16 : 8; /* gemm's vector lanes */
    const long ro = (d->cout + v - 1) / v * v * d->cin, ri = (d->cin + v - 1) / v * v * d->cout;
    return ro > ri || (ro == ri && d->cout > d->cin && d->cin >= 32);
#else
    (void)d;
    return 0;
#endif
}

/* dwt (G, Kc, cout_g) += dW^T of images [i0, i1), on the calling thread; dy and x start at
 * image i0. dyg_in: NULL, or dy already on the implicit lowering's output grid, channels
 * dyg_ld apart, when the images are one block of it and G == 1 (see conv2d_backward_src). */
static void dw_images(float *dwt, const float *dy, const float *x, const ConvDims *d, int i0, int i1,
                      const float *dyg_in, int dyg_ld, const ActSrc *xs, float *du) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    const Plan pl = plan_of(d, i1 - i0);
    const Grid gmax = grid_of(d, pl.nb);
    const int by_rows = pw_dw_rows(d); /* dW (cout, cin) += dy x^T */
    float *buf = NULL, *dyg = NULL, *dyt = NULL;
    const float **rows = NULL;
    if (pl.how == LOWER_IMPLICIT) {
        size_t xsz = grid_floats(&gmax, cin_g) + wino_slack(&gmax);
        buf = scratch_get(0, xsz * sizeof(float) + (size_t)Kc * sizeof(float *));
        rows = (const float **)(void *)(buf + xsz);
        dyg = scratch_get(1, (size_t)cout_g * gmax.Q * sizeof(float));
        dyt = scratch_get(WINO_SLOT, (size_t)cout_g * gmax.Q * sizeof(float));
    } else {
        if (!is_pointwise(d) || pl.nb > 1) buf = scratch_get(0, (size_t)Kc * pl.nb * P * sizeof(float));
        /* dy^T and the main kernel beat dot products along P unless the output channels fit one
         * vector or the rows of col are too few to pay for the transpose (dW, 2 threads: 24 ->
         * 144 on 14x14 20% faster, 64 -> 384 on 7x7 14%; 16 -> 96 on 28x28 8% slower). On AVX2
         * they beat gemm packing B^T (one thread, 2000 dW, task-clock: 24 -> 144 on 14x14 10.2 /
         * 8.7 -> 7.3 / 6.5 s, 96 -> 24 5.3 -> 4.2 s, 144 -> 24 7.9 / 8.3 -> 8.3 / 8.2 s) */
#if CONV_X86
        if (by_rows) /* x^T */
            dyt = scratch_get(WINO_SLOT, (size_t)Kc * pl.nb * P * sizeof(float));
        else if ((use_avx512() || use_avx2()) && cout_g > 16 && Kc > 16)
            dyt = scratch_get(WINO_SLOT, (size_t)cout_g * pl.nb * P * sizeof(float));
#endif
        if (!dyt && pl.nb > 1) dyg = scratch_get(1, (size_t)cout_g * pl.nb * P * sizeof(float));
    }
    for (int i = i0; i < i1; i += pl.nb) {
        int m = NASC_MIN(pl.nb, i1 - i);
        for (int g = 0; g < G; g++) {
            float *dwg = dwt + (size_t)g * Kc * cout_g;
            const float *dyi = dy + (i - i0) * ystride + (size_t)g * cout_g * P;
            const float *xg = x + (i - i0) * xstride + (size_t)g * cin_g * HW;
            if (pl.how == LOWER_IMPLICIT) {
                Grid gr = grid_of(d, m);
                grid_fill(buf, xg, xstride, 0, cin_g, d, &gr, xs, g * cin_g);
                if (du && dyg_in) { /* Winograd (see conv2d_backward_src) */
                    zero_wino_slack(buf, &gr, cin_g);
                    winograd_dw(du, buf, dyg_in, (size_t)dyg_ld, cin_g, cout_g, d->oh, &gr);
                    continue;
                }
                if (!dyg_in) grid_dy(dyg, dyi, ystride, cout_g, d, &gr);
                grid_rows(rows, buf, cin_g, d, &gr);
                /* dW^T (Kc, cout_g) += col (Kc, Q) dy^T (Q, cout_g), with dy^T written out: gemm's
                 * main kernel then runs (broadcasting col, a vector of output channels), faster
                 * than dot products along Q on these shapes (single-thread, col rows offset as
                 * in the planes: 16->16 on 28x28 144 against 109 GFLOP/s, 32->32 on 14x14 187
                 * against 105) */
                conv_transpose(dyt, dyg_in ? dyg_in : dyg, cout_g, gr.Q, dyg_in ? (size_t)dyg_ld : (size_t)gr.Q);
#if CONV_X86
                if (dw_by_taps3(d, pl.how)) {
                    dw_taps3_avx512(dwg, rows, cin_g, gr.W, dyt, gr.Q);
                    continue;
                }
#endif
                GemmMat A = {NULL, 0, 0, rows}, B = {dyt, cout_g, 0, NULL};
                gemm_ex(Kc, cout_g, gr.Q, 1.0f, &A, &B, 1.0f, dwg, cout_g, 0);
            } else if (m == 1) {
                const float *col = xg;
                if (!is_pointwise(d)) {
                    im2col(buf, P, xg, cin_g, d, 0, P);
                    col = buf;
                }
                if (by_rows) { /* x^T written out */
                    conv_transpose(dyt, col, Kc, P, (size_t)P);
                    gemm(0, 0, cout_g, Kc, P, 1.0f, dyi, P, dyt, Kc, 1.0f, dwg, Kc);
                } else if (dyt) { /* as above: dy^T written out, the main kernel */
                    conv_transpose(dyt, dyi, cout_g, P, (size_t)P);
                    gemm(0, 0, Kc, cout_g, P, 1.0f, col, P, dyt, cout_g, 1.0f, dwg, cout_g);
                } else {
                    gemm(0, 1, Kc, cout_g, P, 1.0f, col, P, dyi, P, 1.0f, dwg, cout_g);
                }
            } else {
                int ld = m * P;
                for (int j = 0; j < m; j++) im2col(buf + (size_t)j * P, ld, xg + j * xstride, cin_g, d, 0, P);
                if (dyt) {
                    for (int j = 0; j < m; j++)
                        conv_transpose(dyt + (size_t)j * P * cout_g, dyi + j * ystride, cout_g, P, (size_t)P);
                    gemm(0, 0, Kc, cout_g, ld, 1.0f, buf, ld, dyt, cout_g, 1.0f, dwg, cout_g);
                } else {
                    gather_dy(dyg, dyi, ystride, cout_g, m, P);
                    gemm(0, 1, Kc, cout_g, ld, 1.0f, buf, ld, dyg, ld, 1.0f, dwg, cout_g);
                }
            }
        }
    }
}

/* dx (images [i0, i1)) = or += the input gradient, on the calling thread; dy starts at image
 * i0. wk: the adjoint kernel (adjoint_weights) when has_adjoint(d), the phase kernels
 * (phase_weights) when has_phases(d), W^T (cin_g, cout_g) per group for a 1x1 conv. dyg_in,
 * gin: as dx_phases'. dyph: NULL, or the adjoint conv's phase planes of dy, filled (see
 * conv2d_backward_src). wino: NULL, or the adjoint's Winograd kernel. */
static void dx_images(float *dx, const float *dy, const float *w, const float *wk, const ConvDims *d, int i0,
                      int i1, int acc, const float *dyg_in, const DyGrid *gin, const float *dyph, const float *wino,
                      const DxMask *mask) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    if (has_adjoint(d)) { /* dx += conv(dy) with the adjoint kernel */
        ConvDims t = adjoint_dims(d);
        DxMask m = mask ? (DxMask){mask->x + i0 * xstride, mask->act} : (DxMask){0};
        NASC_ASSERT(!mask || wino);
        forward_images(dx + i0 * xstride, dy, wk, NULL, &t, i1 - i0, acc ? FWD_ACCUMULATE : 0, NULL, dyph, wino,
                       mask ? &m : NULL);
        return;
    }
    if (is_pointwise(d) || is_strided_pointwise(d)) { /* dcol = W^T dy (wk: W^T); stride 1: dx itself */
        const int strided = !is_pointwise(d);
        float *dcol = strided ? scratch_get(0, (size_t)cin_g * P * sizeof(float)) : NULL;
        for (int i = i0; i < i1; i++)
            for (int g = 0; g < G; g++) {
                float *dxg = dx + i * xstride + (size_t)g * cin_g * HW;
                gemm(0, 0, cin_g, P, cout_g, 1.0f, wk + (size_t)g * cin_g * wt_ld(cout_g), wt_ld(cout_g),
                     dy + (i - i0) * ystride + (size_t)g * cout_g * P, P, acc && !strided ? 1.0f : 0.0f,
                     strided ? dcol : dxg, strided ? P : HW);
                if (strided) strided_pointwise_dx(dxg, dcol, cin_g, d, acc);
            }
        return;
    }
    if (has_phases(d)) {
        dx_phases(dx, dy, wk, d, i0, i1, acc, dyg_in, gin);
        return;
    }
    /* dcol = W^T dy on the output grid, added row by row into zeroed phase planes, which are
     * then folded into dx (the adjoint of the implicit lowering) */
    const int nb = grid_images(d, i1 - i0);
    const Grid gmax = grid_of(d, nb);
    const size_t psz = grid_floats(&gmax, cin_g), gsz = round16((size_t)cout_g * gmax.Q);
    float *planes = scratch_get(0, psz * sizeof(float) + (size_t)Kc * sizeof(float *));
    float **rows = (float **)(void *)(planes + psz);
    float *dyg = scratch_get(1, (gsz + (size_t)Kc * gmax.Q) * sizeof(float)), *dcol = dyg + gsz;
    for (int i = i0; i < i1; i += nb) {
        int m = NASC_MIN(nb, i1 - i);
        Grid gr = grid_of(d, m);
        grid_rows((const float **)rows, planes, cin_g, d, &gr);
        for (int g = 0; g < G; g++) {
            const float *wg = w + (size_t)g * cout_g * Kc;
            grid_dy(dyg, dy + (i - i0) * ystride + (size_t)g * cout_g * P, ystride, cout_g, d, &gr);
            gemm(1, 0, Kc, gr.Q, cout_g, 1.0f, wg, Kc, dyg, gr.Q, 0.0f, dcol, gr.Q);
            memset(planes, 0, grid_floats(&gr, cin_g) * sizeof(float));
            rows_add(rows, dcol, Kc, gr.Q);
            grid_fold_add(dx + i * xstride + (size_t)g * cin_g * HW, xstride, planes, cin_g, d, &gr, acc);
        }
    }
}

void conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                     const ConvDims *d) {
    conv2d_backward_ex(dx, dw, db, dy, x, w, d, 1);
}

void conv2d_backward_ex(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        const ConvDims *d, int dx_acc) {
    GradSrc src = {.dy = dy, .c = d->cout, .hw = d->oh * d->ow};
    ActSrc xsrc = {.x = x, .c = d->cin, .hw = d->h * d->w};
    conv2d_backward_src(dx, dw, db, &src, &xsrc, w, d, dx_acc, NULL, NULL);
}

int conv2d_dx_maskable(const ConvDims *d) {
    if (!has_adjoint(d) || (d->groups == d->cin && d->cin == d->cout)) return 0;
    const ConvDims t = adjoint_dims(d);
    return use_winograd(&t) && plan_of(&t, 1).how == LOWER_IMPLICIT;
}

/* The end of a backward's parallel region (after a barrier), on thread t of T: dw (cout, Kc) and
 * db (cout) += the sum over the threads' parts (dW^T (G, Kc, cout_g), then db at G Kc cout_g),
 * split over output channels. */
static void reduce_parts(float *dw, float *db, float *const *parts, const ConvDims *d, int t, int T) {
    const int cout_g = d->cout / d->groups, Kc = d->cin / d->groups * d->k * d->k;
    const size_t wsize = (size_t)d->cout * Kc;
    int c0, c1;
    split_range(d->cout, T, t, &c0, &c1);
    for (int co = c0; co < c1; co++) {
        int g = co / cout_g, cg = co % cout_g;
        if (dw && pw_dw_rows(d)) { /* the parts are in dW's layout */
            float *dr = dw + (size_t)co * Kc;
            for (int u = 0; u < T; u++)
                for (int r = 0; r < Kc; r++) dr[r] += parts[u][(size_t)co * Kc + r];
        } else if (dw) {
            float *dr = dw + (size_t)co * Kc;
            for (int u = 0; u < T; u++) {
                const float *src = parts[u] + (size_t)g * Kc * cout_g + cg;
                for (int r = 0; r < Kc; r++) dr[r] += src[(size_t)r * cout_g];
            }
        }
        if (db)
            for (int u = 0; u < T; u++) db[co] += parts[u][wsize + co];
    }
}

#if CONV_X86
/* The backward of use_wb's convs: each thread's images a group at a time (dy made, db, dW's
 * transformed sums, dx and the BN row sums on it while the group is in cache). */
static void backward_wb(float *dx, float *dw, float *db, const GradSrc *dys, const ActSrc *xs, const float *w,
                        const ConvDims *d, int dx_acc, const BnRowSums *sums, const DxMask *mask, int nt) {
    const int P = d->oh * d->ow, Kc = d->cin * 9, nk = wb_kernels(d);
    const size_t pm = (size_t)d->cout * d->cin, wsize = (size_t)d->cout * Kc;
    float *Ut = dx ? scratch_get(1, nk * pm * sizeof(float)) : NULL; /* as forward_wb's U */
    float *parts[256] = {0};
#pragma omp parallel num_threads(nt)
    {
        const int t = thread_id(), T = thread_count();
        if (Ut) wb_weights(Ut, 1, w, d, t, T);
        int lo, hi;
        split_range(d->n, T, t, &lo, &hi);
        /* this thread's dW^T (Kc, cout), db (cout) and dL/dU (kernels, cin, cout) */
        const size_t psize = wsize + d->cout + (dw ? nk * pm : 0);
        float *part = scratch_get(2, psize * sizeof(float));
        float *du = dw ? part + wsize + d->cout : NULL;
        /* du is overwritten by the first group's products (a memset of it had cost 2.6% of small's
         * step), unless the thread has no images */
        memset(part, 0, (lo < hi ? wsize + d->cout : psize) * sizeof(float));
        parts[t] = part;
        const int step = wb_group_images(d);
        const size_t xstride = (size_t)d->cin * d->h * d->w, ystride = (size_t)d->cout * P;
        float *dybuf = dys->k ? scratch_get(GRAD_SLOT, (size_t)step * ystride * sizeof(float)) : NULL;
        for (int i = lo; i < hi; i += step) {
            const int m = NASC_MIN(step, hi - i);
            const float *dy = grad_rows(dys, dybuf, (size_t)i * d->cout, (size_t)m * d->cout);
            if (db) add_db(part + wsize, dy, m, d->cout, P);
            float *dxi = dx ? dx + i * xstride : NULL;
            if (d->stride == 2 && (dw || dx)) {
                ws2_backward(dxi, xstride, dx_acc, du, i == lo, dy, ystride, xs, (size_t)i, m, Ut, d);
            } else if (dw || dx) {
                DxMask mi;
                if (mask) mi = (DxMask){mask->x + i * xstride, mask->act};
                wb1_backward(dxi, xstride, dx_acc, mask ? &mi : NULL, du, i == lo, dy, ystride, xs, (size_t)i, m, Ut,
                             d);
            }
            if (dx && sums) bn_row_sums(sums, dx + i * xstride, (size_t)i * d->cin, (size_t)m * d->cin);
        }
        if (du && d->stride == 2) ws2_dw_finish(part, du, d->cin, d->cout);
        if (du && d->stride == 1) winograd_dw_finish(part, du, d->cin, d->cout);
        if (dw || db) {
#pragma omp barrier
            reduce_parts(dw, db, parts, d, t, T);
        }
    }
}
#endif

void conv2d_backward_src(float *dx, float *dw, float *db, const GradSrc *dys, const ActSrc *xs, const float *w,
                         const ConvDims *d, int dx_acc, const BnRowSums *sums, const DxMask *mask) {
    if (!dx && !dw && !db) return;
    NASC_ASSERT(!mask || (conv2d_dx_maskable(d) && !sums));
    dx_acc = dx_acc != 0;
    NASC_ASSERT(dys->c == d->cout && dys->hw == d->oh * d->ow && xs->c == d->cin && xs->hw == d->h * d->w);
    if (d->groups == d->cin && d->cin == d->cout) {
        depthwise_backward(dx, dw, db, dys, xs, w, d, dx_acc, sums);
        return;
    }
    const int G = d->groups, cout_g = d->cout / G, Kc = d->cin / G * d->k * d->k, P = d->oh * d->ow;
    const size_t wsize = (size_t)d->cout * Kc;
    double flops = 2.0 * ((dx != NULL) + (dw != NULL)) * d->n * d->cout * P * Kc;
    int nt = NASC_MIN(threads_for(flops, d->n), 256);
#if CONV_X86
    if (use_wb(d, nt)) {
        backward_wb(dx, dw, db, dys, xs, w, d, dx_acc, sums, mask, nt);
        return;
    }
#endif
    const int adj = dx && has_adjoint(d), phased = dx && !adj && has_phases(d) && !is_strided_pointwise(d);
    const ConvDims tadj = adj ? adjoint_dims(d) : *d;
    const int wino_dx = adj && use_winograd(&tadj) && plan_of(&tadj, 1).how == LOWER_IMPLICIT;
    /* the adjoint's Winograd kernel (36 / 9 wsize), which the region's threads make together */
    float *wino = wino_dx ? scratch_get(WEIGHT_SLOT, 4 * wsize * sizeof(float)) : NULL;
    float *parts[256] = {0};
#pragma omp parallel num_threads(nt)
    {
        const int t = thread_id(), T = thread_count();
        int lo, hi;
        split_range(d->n, T, t, &lo, &hi);
        const int wino_dw = dw && use_winograd(d); /* room for dW's Winograd sums (used if `same`) */
        /* this thread's dW^T (G, Kc, cout_g), db (cout), the adjoint or phase kernel (wsize; a
         * 1x1 conv's W^T at its row stride wt_ld, up to 16 cin more) and dW's Winograd sums (36 /
         * 9 wsize, when used) */
        float *part =
            scratch_get(2, ((2 + 4 * (size_t)wino_dw) * wsize + d->cout + 16 * (size_t)d->cin) * sizeof(float));
        float *dwt = dw ? part : NULL, *dbp = db ? part + wsize : NULL, *wk = part + wsize + d->cout;
        if (dw || db) memset(part, 0, (wsize + d->cout) * sizeof(float));
        parts[t] = part;
        if (adj) adjoint_weights(wk, w, d);
        if (dx && (is_pointwise(d) || is_strided_pointwise(d))) {
            /* W^T: gemm reads A rows along k, and can then finish ragged column panels with dot
             * products; its rows then moved apart to wt_ld (from the last: they only move up) */
            for (int g = 0; g < G; g++)
                conv_transpose(wk + (size_t)g * cout_g * Kc, w + (size_t)g * cout_g * Kc, cout_g, Kc, (size_t)Kc);
            if (wt_ld(cout_g) != cout_g)
                for (int r = d->cin - 1; r > 0; r--)
                    memmove(wk + (size_t)r * wt_ld(cout_g), wk + (size_t)r * cout_g, (size_t)cout_g * sizeof(float));
        }
        if (wino) {
            winograd_weights_part(wino, wk, G, d->cin / G, cout_g, 0, t, T);
#pragma omp barrier
        }
        if (phased) phase_weights(wk, w, d);
        /* a few images at a time through db, dW and dx, so dy is still in cache for the latter
         * (and, made on demand, never stored) */
        const Plan pl = plan_of(d, NASC_MAX(hi - lo, 1));
        const int step = pl.nb;
        /* dW (implicit lowering) and dx (by phases) both read dy from a grid: one made for both
         * when the output grid's columns also hold the phases' margins (a stride-2 3x3 pad-1
         * conv's do) */
        const int wq = grid_of(d, 1).wq;
        DyGrid dgs = dy_grid_of(d, step, wq);
        const int share = dwt && phased && G == 1 && pl.how == LOWER_IMPLICIT && dgs.mt == 0 && dgs.ml == 0 &&
                          dgs.wd == wq;
        float *dyg = share ? scratch_get(DYGRID_SLOT, dy_grid_floats(&dgs, cout_g) * sizeof(float)) : NULL;
        /* A stride-1 conv with "same" padding: the adjoint conv's (dx's) zero-padded plane of dy,
         * pad rows down and pad columns in, is dy on dW's output grid, junk columns zero: one
         * copy of dy serves both */
        const int same = dwt && adj && G == 1 && 2 * d->pad == (d->k - 1) * d->dil && pl.how == LOWER_IMPLICIT &&
                         plan_of(&tadj, step).how == LOWER_IMPLICIT;
        float *dyph_buf = NULL, *dyph = NULL;
        /* dW by Winograd from the same copy of dy (its rows past the image are zero) */
        float *du = same && wino_dw ? wk + wsize : NULL;
        if (du) memset(du, 0, 4 * wsize * sizeof(float));
        if (same) {
            Grid ga = grid_of(&tadj, step);
            dyph_buf = scratch_get(DYGRID_SLOT, (grid_floats(&ga, cout_g) + 16 + wino_slack(&ga)) * sizeof(float));
        }
        float *dybuf = dys->k ? scratch_get(GRAD_SLOT, (size_t)step * d->cout * P * sizeof(float)) : NULL;
        /* an input made on demand: by the copy into the phase planes, or first into a buffer */
        const int in_fill = pl.how == LOWER_IMPLICIT;
        const size_t xstride = (size_t)d->cin * d->h * d->w;
        float *xbuf = dwt && xs->saved && !in_fill ? scratch_get(INPUT_SLOT, (size_t)step * xstride * sizeof(float))
                                                   : NULL;
        for (int i = lo; i < hi; i += step) {
            int e = NASC_MIN(hi, i + step);
            const float *dy = grad_rows(dys, dybuf, (size_t)i * d->cout, (size_t)(e - i) * d->cout);
            if (dbp) add_db(dbp, dy, e - i, d->cout, P);
            const float *dyw = dyg; /* dy on dW's output grid, channels dyw_ld apart */
            int dyw_ld = 0;
            if (share) {
                dgs = dy_grid_of(d, e - i, wq);
                dy_grid_fill(dyg, dy, (size_t)d->cout * P, cout_g, d, &dgs);
                dyw_ld = (int)dgs.cs;
            }
            if (same) {
                /* placed so that dW's rows start on cache lines (planes are whole lines) */
                Grid ga = grid_of(&tadj, e - i);
                dyph = dyph_buf + (16 - ((size_t)tadj.pad * ga.W + tadj.pad) % 16) % 16;
                grid_fill(dyph, dy, (size_t)d->cout * P, 0, cout_g, &tadj, &ga, NULL, 0);
                if (wino || du) /* the Winograd transforms read past the planes */
                    zero_wino_slack(dyph, &ga, cout_g);
                dyw = dyph + (size_t)tadj.pad * ga.W + tadj.pad;
                dyw_ld = (int)ga.plane;
            }
            if (dwt && in_fill)
                dw_images(dwt, dy, xs->x + i * xstride, d, i, e, dyw, dyw_ld, xs, du);
            else if (dwt)
                dw_images(dwt, dy, act_rows(xs, xbuf, (size_t)i * d->cin, (size_t)(e - i) * d->cin), d, i, e, dyw,
                          dyw_ld, NULL, NULL);
            if (dx) {
                dx_images(dx, dy, w, wk, d, i, e, dx_acc, dyg, &dgs, dyph, wino, mask);
                if (sums) bn_row_sums(sums, dx + (size_t)i * d->cin * d->h * d->w, (size_t)i * d->cin,
                                      (size_t)(e - i) * d->cin);
            }
        }
        if (du) winograd_dw_finish(dwt, du, d->cin, cout_g);
        if (dw || db) {
#pragma omp barrier
            reduce_parts(dw, db, parts, d, t, T);
        }
    }
}
#endif
