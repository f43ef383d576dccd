/* conv.c: 2-D convolution (PyTorch's Conv2d: zero padding, dilation, groups), forward and
 * backward, NCHW.
 *
 * conv2d_*_ref are direct loops over every output and kernel tap, in `real`, single-threaded:
 * obviously correct, slow, and also compiled in double for the gradient checker.
 *
 * The fast float kernels lower everything but depthwise convolution to gemm (per group g;
 * P = oh*ow output pixels, Kc = cin_g*k*k, "col" = the im2col matrix of the input):
 *   forward   y (cout_g, P)        = W (cout_g, Kc) col (Kc, P)
 *   dW        dW^T (Kc, cout_g)   += col (Kc, P) dy^T (P, cout_g)     (gemm's NT kernel: no packing)
 *   dx        stride 1: dx = a stride-1 conv of dy with the flipped, transposed kernel
 *             (padding (k-1)*dil - pad), lowered like the forward;
 *             otherwise dcol (Kc, P) = W^T dy, then col2im adds it into dx.
 * col is built one of two ways (see "lowering"): written out by im2col, or read in place by
 * gemm from a zero-padded, phase-split copy of the input through a table of row pointers. Small
 * images are batched: nb images side by side give gemm enough columns. A 1x1 stride-1 unpadded
 * conv needs neither: x is its own col and dx its own dcol.
 *
 * Depthwise convolution (groups == cin == cout) is direct: each input plane is split into
 * `stride` zero-padded column-phase planes, so every kernel tap is a contiguous, vectorizable
 * row operation for any stride, padding and dilation.
 *
 * Threads: images are split across threads; dW and db go to per-thread partial sums reduced at
 * the end. With fewer images than threads the forward splits one image's columns (or output
 * channels) instead. Depthwise splits (image, channel) planes forward and channels backward
 * (so its dW/db need no reduction).
 * Scratch slots (per thread): 0 col or phase planes (+ row table), 1 gemm output or dy copies,
 * 2 partial dW/db and the adjoint kernel. Slot 3 belongs to gemm.
 */
#include "ops.h"
#include "gemm_ex.h"

#include <limits.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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
static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Threads worth using for `flops` of work split in `items` pieces (a region costs microseconds). */
static int threads_for(double flops, int items) {
    int nt = threads_get();
    if (flops < 2e5) nt = 1;
    return NASC_MAX(1, NASC_MIN(nt, items));
}

/* [lo, hi) of `count` items for part `i` of `parts` (contiguous, sizes differ by at most one). */
static void split_range(int count, int parts, int i, int *lo, int *hi) {
    int q = count / parts, r = count % parts;
    *lo = i * q + NASC_MIN(i, r);
    *hi = *lo + q + (i < r);
}

/* Output columns ox in [lo, hi) read input column ox*s + off, off = kw*dil - pad, inside [0, w). */
static void valid_cols(int ow, int s, int off, int w, int *lo, int *hi) {
    int a = off >= 0 ? 0 : (-off + s - 1) / s;
    int b = w - off <= 0 ? 0 : (w - off - 1) / s + 1;
    *lo = NASC_MIN(a, ow);
    *hi = NASC_MAX(*lo, NASC_MIN(b, ow));
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static int is_pointwise(const ConvDims *d) { return d->k == 1 && d->stride == 1 && d->pad == 0; }

/* The data-movement loops below are compiled for AVX-512 / AVX2 / baseline and picked at load
 * time (GCC function multiversioning; off under the sanitizers and on other compilers). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

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

/* dx += col2im(dcol) for one image and group: the adjoint of im2col over all P columns. */
MULTIVERSION static void col2im_add(float *dx, const float *dcol, int ldcol, int cin_g, const ConvDims *d) {
    const int k = d->k, s = d->stride, ow = d->ow, h = d->h, w = d->w;
    for (int c = 0; c < cin_g; c++) {
        float *xc = dx + (size_t)c * h * w;
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                const float *src = dcol + (size_t)((c * k + kh) * k + kw) * ldcol;
                int off = kw * d->dil - d->pad, lo, hi;
                valid_cols(ow, s, off, w, &lo, &hi);
                if (lo >= hi) continue;
                for (int oy = 0; oy < d->oh; oy++) {
                    int iy = oy * s - d->pad + kh * d->dil;
                    if (iy < 0 || iy >= h) continue;
                    float *xr = xc + (size_t)iy * w + off;
                    const float *sr = src + (size_t)oy * ow;
                    if (s == 1)
                        for (int ox = lo; ox < hi; ox++) xr[ox] += sr[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) xr[(size_t)ox * s] += sr[ox];
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
    size_t plane;  /* floats per phase plane: (hq + 1) * W */
    int Q;         /* columns of the output grid: oh * W */
} Grid;

static Grid grid_of(const ConvDims *d, int nb) {
    Grid g;
    g.s = d->stride;
    g.hq = (d->h + 2 * d->pad + g.s - 1) / g.s;
    g.wq = (d->w + 2 * d->pad + g.s - 1) / g.s;
    g.nb = nb;
    g.W = nb * g.wq;
    g.plane = (size_t)(g.hq + 1) * g.W;
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

static int forced_lowering(void) {
    static int forced = -2;
    int f = __atomic_load_n(&forced, __ATOMIC_RELAXED);
    if (f == -2) {
        const char *e = getenv("NASC_CONV");
        f = !e ? -1 : strcmp(e, "explicit") == 0 ? LOWER_EXPLICIT : strcmp(e, "implicit") == 0 ? LOWER_IMPLICIT : -1;
        __atomic_store_n(&forced, f, __ATOMIC_RELAXED);
    }
    return f;
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
    double implicit_cost = (double)cin_g * g.s * g.s * g.plane + (double)cout_g * (Qi + P) +
                           2.0 * cout_g * Kc * (Qi - P) / 64.0;
    Plan pl;
    pl.how = is_pointwise(d) || explicit_cost <= implicit_cost ? LOWER_EXPLICIT : LOWER_IMPLICIT;
    if (forced_lowering() >= 0 && !is_pointwise(d)) pl.how = (Lowering)forced_lowering();
    int cols = pl.how == LOWER_EXPLICIT ? P : Qi;
    pl.nb = NASC_MAX(1, NASC_MIN(images, COLS_TARGET / cols));
    return pl;
}

/* Copies channels [c0, c1) of nb images (x at image 0's first channel of the group, images
 * img_stride apart) into the phase planes xph. */
MULTIVERSION static void grid_fill(float *xph, const float *x, size_t img_stride, int c0, int c1,
                                   const ConvDims *d, const Grid *g) {
    const int s = g->s, pad = d->pad, h = d->h, w = d->w, wq = g->wq, W = g->W;
    for (int c = c0; c < c1; c++)
        for (int pr = 0; pr < s; pr++)
            for (int pc = 0; pc < s; pc++) {
                float *base = xph + ((size_t)(c * s + pr) * s + pc) * g->plane;
                int lo, hi;
                valid_cols(wq, s, pc - pad, w, &lo, &hi);
                for (int i = 0; i < g->hq; i++) {
                    float *dst = base + (size_t)i * W;
                    int iy = i * s + pr - pad;
                    if (iy < 0 || iy >= h) {
                        for (int q = 0; q < W; q++) dst[q] = 0.0f;
                        continue;
                    }
                    for (int j = 0; j < g->nb; j++) {
                        const float *xr = x + j * img_stride + ((size_t)c * h + iy) * w + pc - pad;
                        float *dj = dst + (size_t)j * wq;
                        for (int q = 0; q < lo; q++) dj[q] = 0.0f;
                        if (s == 1)
                            for (int q = lo; q < hi; q++) dj[q] = xr[q];
                        else
                            for (int q = lo; q < hi; q++) dj[q] = xr[(size_t)q * s];
                        for (int q = hi; q < wq; q++) dj[q] = 0.0f;
                    }
                }
                float *slack = base + (size_t)g->hq * W;
                for (int q = 0; q < W; q++) slack[q] = 0.0f;
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

/* dyg (cout_g, Q) = dy of nb images (images img_stride apart) on the output grid; the junk
 * columns are zero, so they contribute nothing to dW. */
MULTIVERSION static void grid_dy(float *dyg, const float *dy, size_t img_stride, int cout_g, const ConvDims *d,
                                 const Grid *g) {
    const int ow = d->ow, P = d->oh * ow;
    for (int co = 0; co < cout_g; co++)
        for (int oy = 0; oy < d->oh; oy++) {
            float *dst = dyg + (size_t)co * g->Q + (size_t)oy * g->W;
            for (int j = 0; j < g->nb; j++) {
                const float *src = dy + j * img_stride + (size_t)co * P + (size_t)oy * ow;
                float *dj = dst + (size_t)j * g->wq;
                for (int q = 0; q < ow; q++) dj[q] = src[q];
                for (int q = ow; q < g->wq; q++) dj[q] = 0.0f;
            }
        }
}

/* y (images j < nb, channels [c0, c1) of the group) = or += res (channels, columns) + bias.
 * res has `ld` columns per row; image j's pixel (oy, ox) is at column oy * W + j * wq + ox
 * (implicit grid: W = nb * wq; explicit batch: W = ow, wq = P). */
MULTIVERSION static void scatter_out(float *y, size_t img_stride, const float *res, int ld, int c0, int c1,
                                     const float *b, int accumulate, int nb, int W, int wq, int oh, int ow) {
    const int P = oh * ow;
    for (int j = 0; j < nb; j++)
        for (int c = c0; c < c1; c++) {
            float *yr = y + j * img_stride + (size_t)c * P;
            float v = b ? b[c] : 0.0f;
            for (int oy = 0; oy < oh; oy++) {
                const float *src = res + (size_t)c * ld + (size_t)oy * W + (size_t)j * wq;
                float *dst = yr + (size_t)oy * ow;
                if (accumulate)
                    for (int ox = 0; ox < ow; ox++) dst[ox] += src[ox];
                else
                    for (int ox = 0; ox < ow; ox++) dst[ox] = src[ox] + v;
            }
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

/* ------------------------------------------------------------------ depthwise */
/* Phase planes of one zero-padded input plane: plane q holds padded columns j*s + q, so a tap
 * at padded column ox*s + kw*dil reads plane (kw*dil) % s at column ox + (kw*dil) / s.
 * Layout: q-major, each plane hp rows of wq columns (wq = ceil(wp / s)). */
typedef struct {
    int hp, wp, wq, s;
} Phases;

static Phases phases_of(const ConvDims *d) {
    Phases ph;
    ph.s = d->stride;
    ph.hp = d->h + 2 * d->pad;
    ph.wp = d->w + 2 * d->pad;
    ph.wq = (ph.wp + ph.s - 1) / ph.s;
    return ph;
}

static void phases_fill(float *xq, const float *x, const ConvDims *d, const Phases *ph) {
    const int s = ph->s, pad = d->pad, w = d->w;
    for (int q = 0; q < s; q++)
        for (int r = 0; r < ph->hp; r++) {
            float *dst = xq + ((size_t)q * ph->hp + r) * ph->wq;
            int iy = r - pad;
            if (iy < 0 || iy >= d->h) {
                memset(dst, 0, (size_t)ph->wq * sizeof(float));
                continue;
            }
            const float *xr = x + (size_t)iy * w;
            for (int j = 0; j < ph->wq; j++) {
                int ix = j * s + q - pad;
                dst[j] = ix >= 0 && ix < w ? xr[ix] : 0.0f;
            }
        }
}

/* dx (one plane) += the interior of phase planes dxq. */
static void phases_fold_add(float *dx, const float *dxq, const ConvDims *d, const Phases *ph) {
    const int s = ph->s, pad = d->pad, w = d->w;
    for (int iy = 0; iy < d->h; iy++) {
        float *dr = dx + (size_t)iy * w;
        for (int q = 0; q < s; q++) {
            const float *src = dxq + ((size_t)q * ph->hp + iy + pad) * ph->wq;
            for (int j = 0; j < ph->wq; j++) {
                int ix = j * s + q - pad;
                if (ix >= 0 && ix < w) dr[ix] += src[j];
            }
        }
    }
}

/* y (oh, ow) = bias + sum over taps of w * phase rows. */
MULTIVERSION static void dw_plane_forward(float *y, const float *xq, const float *wk, float bias,
                                          const ConvDims *d, const Phases *ph) {
    const int k = d->k, ow = d->ow, s = ph->s;
    for (int oy = 0; oy < d->oh; oy++) {
        float *yr = y + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox++) yr[ox] = bias;
        for (int kh = 0; kh < k; kh++) {
            int r = oy * s + kh * d->dil;
            for (int kw = 0; kw < k; kw++) {
                int t = kw * d->dil;
                const float *xr = xq + ((size_t)(t % s) * ph->hp + r) * ph->wq + t / s;
                float wv = wk[kh * k + kw];
                for (int ox = 0; ox < ow; ox++) yr[ox] += wv * xr[ox];
            }
        }
    }
}

/* dxq (phase planes, accumulated) += taps of w * dy; tacc (k*k, ow) += dy * x per tap. */
MULTIVERSION static void dw_plane_backward(float *dxq, float *tacc, const float *dy, const float *xq,
                                           const float *wk, const ConvDims *d, const Phases *ph) {
    const int k = d->k, ow = d->ow, s = ph->s;
    for (int oy = 0; oy < d->oh; oy++) {
        const float *gr = dy + (size_t)oy * ow;
        for (int kh = 0; kh < k; kh++) {
            int r = oy * s + kh * d->dil;
            for (int kw = 0; kw < k; kw++) {
                int t = kw * d->dil;
                size_t at = ((size_t)(t % s) * ph->hp + r) * ph->wq + t / s;
                float wv = wk[kh * k + kw];
                if (dxq) {
                    float *dr = dxq + at;
                    for (int ox = 0; ox < ow; ox++) dr[ox] += wv * gr[ox];
                }
                if (tacc) {
                    const float *xr = xq + at;
                    float *ta = tacc + (size_t)(kh * k + kw) * ow;
                    for (int ox = 0; ox < ow; ox++) ta[ox] += gr[ox] * xr[ox];
                }
            }
        }
    }
}

static void depthwise_forward(float *y, const float *x, const float *w, const float *b, const ConvDims *d) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow;
    const Phases ph = phases_of(d);
    const size_t qsize = (size_t)ph.s * ph.hp * ph.wq;
    int planes = d->n * C;
    int nt = threads_for(2.0 * planes * P * kk, planes);
#pragma omp parallel num_threads(nt)
    {
        float *xq = scratch_get(0, qsize * sizeof(float));
        int lo, hi;
        split_range(planes, thread_count(), thread_id(), &lo, &hi);
        for (int i = lo; i < hi; i++) {
            int c = i % C;
            phases_fill(xq, x + (size_t)i * d->h * d->w, d, &ph);
            dw_plane_forward(y + (size_t)i * P, xq, w + (size_t)c * kk, b ? b[c] : 0.0f, d, &ph);
        }
    }
}

static void depthwise_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const ConvDims *d) {
    const int C = d->cin, kk = d->k * d->k, P = d->oh * d->ow, ow = d->ow;
    const Phases ph = phases_of(d);
    const size_t qsize = (size_t)ph.s * ph.hp * ph.wq;
    int nt = threads_for(4.0 * d->n * C * P * kk, C);
#pragma omp parallel num_threads(nt)
    {
        float *xq = scratch_get(0, qsize * sizeof(float));
        float *dxq = scratch_get(1, qsize * sizeof(float));
        float *tacc = scratch_get(2, (size_t)kk * ow * sizeof(float));
        int lo, hi;
        split_range(C, thread_count(), thread_id(), &lo, &hi);
        for (int c = lo; c < hi; c++) {
            if (dw) memset(tacc, 0, (size_t)kk * ow * sizeof(float));
            double bsum = 0.0;
            for (int n = 0; n < d->n; n++) {
                size_t plane = (size_t)n * C + c;
                const float *g = dy + plane * P;
                if (dw) phases_fill(xq, x + plane * d->h * d->w, d, &ph);
                if (dx) memset(dxq, 0, qsize * sizeof(float));
                dw_plane_backward(dx ? dxq : NULL, dw ? tacc : NULL, g, xq, w + (size_t)c * kk, d, &ph);
                if (dx) phases_fold_add(dx + plane * d->h * d->w, dxq, d, &ph);
                if (db) {
                    float s = 0.0f;
                    for (int p = 0; p < P; p++) s += g[p];
                    bsum += s;
                }
            }
            if (dw)
                for (int t = 0; t < kk; t++) {
                    float s = 0.0f;
                    for (int ox = 0; ox < ow; ox++) s += tacc[(size_t)t * ow + ox];
                    dw[(size_t)c * kk + t] += s;
                }
            if (db) db[c] += (float)bsum;
        }
    }
}

/* ------------------------------------------------------------------ forward */
static void add_bias(float *y, const float *b, int rows, int cols, int ld) {
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ld, v = b[r];
        for (int j = 0; j < cols; j++) yr[j] += v;
    }
}

/* y (images [i0, i1)) = conv(x) on the calling thread, or with accumulate: y += conv(x) and no
 * bias (the adjoint conv of the backward uses that). wt is the (cout, Kc) weight matrix. */
static void forward_images(float *y, const float *x, const float *wt, const float *b, const ConvDims *d, int i0,
                           int i1, int accumulate) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    const Plan pl = plan_of(d, i1 - i0);
    const Grid gmax = grid_of(d, pl.nb);
    const int in_place = pl.how == LOWER_EXPLICIT && pl.nb == 1; /* gemm writes y itself */
    float *buf = NULL, *tmp = NULL;
    const float **rows = NULL;
    if (pl.how == LOWER_IMPLICIT) {
        size_t xsz = grid_floats(&gmax, cin_g);
        buf = scratch_get(0, xsz * sizeof(float) + (size_t)Kc * sizeof(float *));
        rows = (const float **)(void *)(buf + xsz);
        tmp = scratch_get(1, (size_t)cout_g * gmax.Q * sizeof(float));
    } else {
        if (!is_pointwise(d) || pl.nb > 1) buf = scratch_get(0, (size_t)Kc * pl.nb * P * sizeof(float));
        if (!in_place) tmp = scratch_get(1, (size_t)cout_g * pl.nb * P * sizeof(float));
    }
    for (int i = i0; i < i1; i += pl.nb) {
        int m = NASC_MIN(pl.nb, i1 - i);
        for (int g = 0; g < G; g++) {
            const float *wg = wt + (size_t)g * cout_g * Kc, *bg = b ? b + g * cout_g : NULL;
            const float *xg = x + i * xstride + (size_t)g * cin_g * HW;
            float *yg = y + i * ystride + (size_t)g * cout_g * P;
            if (pl.how == LOWER_IMPLICIT) {
                Grid gr = grid_of(d, m);
                grid_fill(buf, xg, xstride, 0, cin_g, d, &gr);
                grid_rows(rows, buf, cin_g, d, &gr);
                GemmMat A = {wg, Kc, 0, NULL}, B = {NULL, 0, 0, rows};
                gemm_ex(cout_g, gr.Q, Kc, 1.0f, &A, &B, 0.0f, tmp, gr.Q);
                scatter_out(yg, ystride, tmp, gr.Q, 0, cout_g, bg, accumulate, m, gr.W, gr.wq, d->oh, d->ow);
            } else if (m == 1 && in_place) {
                const float *B = xg;
                if (!is_pointwise(d)) {
                    im2col(buf, P, xg, cin_g, d, 0, P);
                    B = buf;
                }
                gemm(0, 0, cout_g, P, Kc, 1.0f, wg, Kc, B, P, accumulate ? 1.0f : 0.0f, yg, P);
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
        grid_fill(shared_x, x + (size_t)g * cin_g * HW, 0, c0, c1, d, &gr);
        if (t == 0) grid_rows(rows, shared_x, cin_g, d, &gr);
#pragma omp barrier
        if (m0 < m1) {
            GemmMat A = {w + ((size_t)g * cout_g + m0) * Kc, Kc, 0, NULL}, B = {NULL, 0, 0, rows};
            gemm_ex(m1 - m0, gr.Q, Kc, 1.0f, &A, &B, 0.0f, shared_out + (size_t)m0 * gr.Q, gr.Q);
            scatter_out(y + (size_t)g * cout_g * P, 0, shared_out, gr.Q, m0, m1, b ? b + g * cout_g : NULL, 0, 1,
                        gr.W, gr.wq, d->oh, d->ow);
        }
#pragma omp barrier
    }
}

void conv2d_forward(float *y, const float *x, const float *w, const float *b, const ConvDims *d) {
    if (d->groups == d->cin && d->cin == d->cout) {
        depthwise_forward(y, x, w, b, d);
        return;
    }
    const int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups, P = d->oh * d->ow;
    double flops = 2.0 * d->n * d->cout * P * cin_g * d->k * d->k;
    int nt = threads_for(flops, NASC_MAX(d->n, P / 32));
    if (d->n >= nt) {
#pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            split_range(d->n, thread_count(), thread_id(), &lo, &hi);
            forward_images(y, x, w, b, d, lo, hi, 0);
        }
        return;
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
}

/* ------------------------------------------------------------------ backward */
/* dwt (G, Kc, cout_g) += dW^T of images [i0, i1), on the calling thread. */
static void dw_images(float *dwt, const float *dy, const float *x, const ConvDims *d, int i0, int i1) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    const Plan pl = plan_of(d, i1 - i0);
    const Grid gmax = grid_of(d, pl.nb);
    float *buf = NULL, *dyg = NULL;
    const float **rows = NULL;
    if (pl.how == LOWER_IMPLICIT) {
        size_t xsz = grid_floats(&gmax, cin_g);
        buf = scratch_get(0, xsz * sizeof(float) + (size_t)Kc * sizeof(float *));
        rows = (const float **)(void *)(buf + xsz);
        dyg = scratch_get(1, (size_t)cout_g * gmax.Q * sizeof(float));
    } else {
        if (!is_pointwise(d) || pl.nb > 1) buf = scratch_get(0, (size_t)Kc * pl.nb * P * sizeof(float));
        if (pl.nb > 1) dyg = scratch_get(1, (size_t)cout_g * pl.nb * P * sizeof(float));
    }
    for (int i = i0; i < i1; i += pl.nb) {
        int m = NASC_MIN(pl.nb, i1 - i);
        for (int g = 0; g < G; g++) {
            float *dwg = dwt + (size_t)g * Kc * cout_g;
            const float *dyi = dy + i * ystride + (size_t)g * cout_g * P;
            const float *xg = x + i * xstride + (size_t)g * cin_g * HW;
            if (pl.how == LOWER_IMPLICIT) {
                Grid gr = grid_of(d, m);
                grid_dy(dyg, dyi, ystride, cout_g, d, &gr);
                grid_fill(buf, xg, xstride, 0, cin_g, d, &gr);
                grid_rows(rows, buf, cin_g, d, &gr);
                GemmMat A = {NULL, 0, 0, rows}, B = {dyg, gr.Q, 1, NULL};
                gemm_ex(Kc, cout_g, gr.Q, 1.0f, &A, &B, 1.0f, dwg, cout_g);
            } else if (m == 1) {
                const float *col = xg;
                if (!is_pointwise(d)) {
                    im2col(buf, P, xg, cin_g, d, 0, P);
                    col = buf;
                }
                gemm(0, 1, Kc, cout_g, P, 1.0f, col, P, dyi, P, 1.0f, dwg, cout_g);
            } else {
                int ld = m * P;
                for (int j = 0; j < m; j++) im2col(buf + (size_t)j * P, ld, xg + j * xstride, cin_g, d, 0, P);
                gather_dy(dyg, dyi, ystride, cout_g, m, P);
                gemm(0, 1, Kc, cout_g, ld, 1.0f, buf, ld, dyg, ld, 1.0f, dwg, cout_g);
            }
        }
    }
}

/* dx (images [i0, i1)) += the input gradient, on the calling thread. wadj: the adjoint kernel
 * (see adjoint_weights) when has_adjoint(d). */
static void dx_images(float *dx, const float *dy, const float *w, const float *wadj, const ConvDims *d, int i0,
                      int i1) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const size_t xstride = (size_t)d->cin * HW, ystride = (size_t)d->cout * P;
    if (has_adjoint(d)) { /* dx += conv(dy) with the adjoint kernel */
        ConvDims t = adjoint_dims(d);
        forward_images(dx, dy, wadj, NULL, &t, i0, i1, 1);
        return;
    }
    if (is_pointwise(d)) { /* dx is its own dcol */
        for (int i = i0; i < i1; i++)
            for (int g = 0; g < G; g++)
                gemm(1, 0, cin_g, P, cout_g, 1.0f, w + (size_t)g * cout_g * cin_g, cin_g,
                     dy + i * ystride + (size_t)g * cout_g * P, P, 1.0f, dx + i * xstride + (size_t)g * cin_g * HW,
                     HW);
        return;
    }
    /* dcol = W^T dy, then col2im */
    const int nb = NASC_MAX(1, NASC_MIN(i1 - i0, COLS_TARGET / P));
    float *dcol = scratch_get(0, (size_t)Kc * nb * P * sizeof(float));
    float *dyg = nb > 1 ? scratch_get(1, (size_t)cout_g * nb * P * sizeof(float)) : NULL;
    for (int i = i0; i < i1; i += nb) {
        int m = NASC_MIN(nb, i1 - i), ld = m * P;
        for (int g = 0; g < G; g++) {
            const float *wg = w + (size_t)g * cout_g * Kc, *dyi = dy + i * ystride + (size_t)g * cout_g * P;
            float *dxg = dx + i * xstride + (size_t)g * cin_g * HW;
            if (m > 1) {
                gather_dy(dyg, dyi, ystride, cout_g, m, P);
                dyi = dyg;
            }
            gemm(1, 0, Kc, ld, cout_g, 1.0f, wg, Kc, dyi, ld, 0.0f, dcol, ld);
            for (int j = 0; j < m; j++) col2im_add(dxg + j * xstride, dcol + (size_t)j * P, ld, cin_g, d);
        }
    }
}

void conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                     const ConvDims *d) {
    if (!dx && !dw && !db) return;
    if (d->groups == d->cin && d->cin == d->cout) {
        depthwise_backward(dx, dw, db, dy, x, w, d);
        return;
    }
    const int G = d->groups, cout_g = d->cout / G, Kc = d->cin / G * d->k * d->k, P = d->oh * d->ow;
    const size_t wsize = (size_t)d->cout * Kc;
    const int adj = dx && has_adjoint(d);
    double flops = 2.0 * ((dx != NULL) + (dw != NULL)) * d->n * d->cout * P * Kc;
    int nt = NASC_MIN(threads_for(flops, d->n), 256);
    float *parts[256] = {0};
#pragma omp parallel num_threads(nt)
    {
        const int t = thread_id(), T = thread_count();
        int lo, hi;
        split_range(d->n, T, t, &lo, &hi);
        /* this thread's dW^T (G, Kc, cout_g), db (cout) and the adjoint kernel (wsize) */
        float *part = scratch_get(2, (2 * wsize + d->cout) * sizeof(float));
        float *dwt = dw ? part : NULL, *dbp = db ? part + wsize : NULL, *wadj = part + wsize + d->cout;
        if (dw || db) memset(part, 0, (wsize + d->cout) * sizeof(float));
        parts[t] = part;
        if (adj) adjoint_weights(wadj, w, d);
        if (dbp)
            for (int i = lo; i < hi; i++)
                for (int co = 0; co < d->cout; co++) {
                    const float *g = dy + ((size_t)i * d->cout + co) * P;
                    float s = 0.0f;
                    for (int p = 0; p < P; p++) s += g[p];
                    dbp[co] += s;
                }
        if (dwt && lo < hi) dw_images(dwt, dy, x, d, lo, hi);
        if (dx && lo < hi) dx_images(dx, dy, w, wadj, d, lo, hi);
        if (dw || db) {
#pragma omp barrier
            /* reduce: dw (cout, Kc) += sum over threads of dW^T, split over output channels */
            int c0, c1;
            split_range(d->cout, T, t, &c0, &c1);
            for (int co = c0; co < c1; co++) {
                int g = co / cout_g, cg = co % cout_g;
                if (dw) {
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
    }
}
#endif
