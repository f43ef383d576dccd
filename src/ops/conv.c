/* conv.c: 2-D convolution (PyTorch's Conv2d: zero padding, dilation, groups), forward and
 * backward, NCHW.
 *
 * conv2d_*_ref are direct loops over every output and kernel tap, in `real`, single-threaded:
 * obviously correct, slow, and also compiled in double for the gradient checker.
 *
 * The fast float kernels lower everything but depthwise convolution to gemm:
 *   forward   y_g (cout_g, P)   = W_g (cout_g, Kc) col_g (Kc, P)         P = oh*ow, Kc = cin_g*k*k
 *   dW        dW_g^T (Kc, cout_g) += col_g (Kc, P) dy_g^T (P, cout_g)
 *   dx        dcol_g (Kc, P)    = W_g^T (Kc, cout_g) dy_g (cout_g, P), then col2im adds it to dx
 * col is im2col of the input. dW is computed transposed so that gemm reads the big col in place
 * and only transposes the small dy. For small outputs (P = 49 at 7x7) several images share one
 * gemm (nb columns blocks side by side in col), so gemm sees N = nb*P; the result is then
 * scattered back to NCHW. A 1x1 stride-1 unpadded conv with nb = 1 needs no im2col at all
 * (x is its own col, and dx is its own dcol).
 *
 * Depthwise convolution (groups == cin == cout) is direct: each input plane is split into
 * `stride` zero-padded phase planes (columns j*stride + q), so every kernel tap is a
 * contiguous, vectorizable row operation for any stride, padding and dilation.
 *
 * Threads: images are split across threads; dW and db go to per-thread partial sums that are
 * reduced at the end (thread 0 writes straight into the caller's buffers). With fewer images
 * than threads the forward splits the output columns instead. Depthwise splits (image,
 * channel) planes forward and channels backward (so dW/db need no reduction).
 * Scratch slots (per thread): 0 col/dcol, 1 gemm output or gathered dy, 2 partial dW/db.
 * Slot 3 belongs to gemm.
 */
#include "ops.h"

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

/* Threads worth using for `flops` of work: a parallel region costs a few microseconds. */
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

/* col rows (ci, kh, kw) of cin_g channels, columns = output pixels [p0, p1) of one image,
 * written at col + row * ldcol + (p - p0). x points at the image's first channel of the group. */
static void im2col(float *col, int ldcol, const float *x, int cin_g, const ConvDims *d, int p0, int p1) {
    const int k = d->k, s = d->stride, ow = d->ow, h = d->h, w = d->w;
    if (k == 1 && s == 1 && d->pad == 0) { /* plain copy of the pixel range */
        for (int c = 0; c < cin_g; c++)
            memcpy(col + (size_t)c * ldcol, x + (size_t)c * h * w + p0, (size_t)(p1 - p0) * sizeof(float));
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
                    if (iy < 0 || iy >= h) {
                        memset(drow + a, 0, (size_t)(b - a) * sizeof(float));
                        continue;
                    }
                    const float *xr = xc + (size_t)iy * w + off;
                    int l = NASC_MAX(a, lo), r = NASC_MIN(b, hi);
                    if (l >= r) {
                        memset(drow + a, 0, (size_t)(b - a) * sizeof(float));
                        continue;
                    }
                    for (int ox = a; ox < l; ox++) drow[ox] = 0.0f;
                    if (s == 1)
                        memcpy(drow + l, xr + l, (size_t)(r - l) * sizeof(float));
                    else
                        for (int ox = l; ox < r; ox++) drow[ox] = xr[(size_t)ox * s];
                    for (int ox = r; ox < b; ox++) drow[ox] = 0.0f;
                }
            }
    }
}

/* dx += col2im(dcol) for one image and group: the adjoint of im2col over all P columns. */
static void col2im_add(float *dx, const float *dcol, int ldcol, int cin_g, const ConvDims *d) {
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

/* Images per gemm: enough that gemm sees ~COLS_TARGET columns. */
#define COLS_TARGET 512
static int images_per_gemm(const ConvDims *d, int images) {
    int P = d->oh * d->ow;
    return NASC_MAX(1, NASC_MIN(images, COLS_TARGET / P));
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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

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

/* Forward of images [i0, i1) on the calling thread. */
static void forward_images(float *y, const float *x, const float *w, const float *b, const ConvDims *d, int i0,
                           int i1) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const int direct = d->k == 1 && d->stride == 1 && d->pad == 0;
    const int nb = images_per_gemm(d, i1 - i0);
    float *col = direct && nb == 1 ? NULL : scratch_get(0, (size_t)Kc * nb * P * sizeof(float));
    float *tmp = nb == 1 ? NULL : scratch_get(1, (size_t)cout_g * nb * P * sizeof(float));
    for (int i = i0; i < i1; i += nb) {
        int m = NASC_MIN(nb, i1 - i), ld = m * P;
        for (int g = 0; g < G; g++) {
            const float *wg = w + (size_t)g * cout_g * Kc;
            if (m == 1) {
                const float *xi = x + ((size_t)i * d->cin + g * cin_g) * HW;
                float *yi = y + ((size_t)i * d->cout + g * cout_g) * P;
                const float *B = xi;
                if (!direct) {
                    im2col(col, P, xi, cin_g, d, 0, P);
                    B = col;
                }
                gemm(0, 0, cout_g, P, Kc, 1.0f, wg, Kc, B, P, 0.0f, yi, P);
                if (b) add_bias(yi, b + g * cout_g, cout_g, P, P);
                continue;
            }
            for (int j = 0; j < m; j++)
                im2col(col + (size_t)j * P, ld, x + ((size_t)(i + j) * d->cin + g * cin_g) * HW, cin_g, d, 0, P);
            gemm(0, 0, cout_g, ld, Kc, 1.0f, wg, Kc, col, ld, 0.0f, tmp, ld);
            for (int j = 0; j < m; j++)
                for (int co = 0; co < cout_g; co++) {
                    float *yr = y + ((size_t)(i + j) * d->cout + g * cout_g + co) * P;
                    const float *tr = tmp + (size_t)co * ld + (size_t)j * P;
                    if (b) {
                        float v = b[g * cout_g + co];
                        for (int p = 0; p < P; p++) yr[p] = tr[p] + v;
                    } else {
                        memcpy(yr, tr, (size_t)P * sizeof(float));
                    }
                }
        }
    }
}

/* Forward of one image's output columns [p0, p1) on the calling thread. */
static void forward_columns(float *y, const float *x, const float *w, const float *b, const ConvDims *d, int p0,
                            int p1) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w, np = p1 - p0;
    const int direct = d->k == 1 && d->stride == 1 && d->pad == 0;
    float *col = direct ? NULL : scratch_get(0, (size_t)Kc * np * sizeof(float));
    for (int g = 0; g < G; g++) {
        const float *xg = x + (size_t)g * cin_g * HW;
        float *yg = y + (size_t)g * cout_g * P + p0;
        if (direct) {
            gemm(0, 0, cout_g, np, Kc, 1.0f, w + (size_t)g * cout_g * Kc, Kc, xg + p0, HW, 0.0f, yg, P);
        } else {
            im2col(col, np, xg, cin_g, d, p0, p1);
            gemm(0, 0, cout_g, np, Kc, 1.0f, w + (size_t)g * cout_g * Kc, Kc, col, np, 0.0f, yg, P);
        }
        if (b) add_bias(yg, b + g * cout_g, cout_g, np, P);
    }
}

void conv2d_forward(float *y, const float *x, const float *w, const float *b, const ConvDims *d) {
    if (d->groups == d->cin && d->cin == d->cout) {
        depthwise_forward(y, x, w, b, d);
        return;
    }
    const int P = d->oh * d->ow;
    double flops = 2.0 * d->n * d->cout * P * (d->cin / d->groups) * d->k * d->k;
    int nt = threads_for(flops, NASC_MAX(d->n, P / 32));
    if (d->n >= nt) {
#pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            split_range(d->n, thread_count(), thread_id(), &lo, &hi);
            forward_images(y, x, w, b, d, lo, hi);
        }
        return;
    }
    /* Fewer images than threads: split each image's columns in multiples of 16. */
    for (int i = 0; i < d->n; i++) {
        const float *xi = x + (size_t)i * d->cin * d->h * d->w;
        float *yi = y + (size_t)i * d->cout * P;
#pragma omp parallel num_threads(nt)
        {
            int lo, hi, chunks = (P + 15) / 16;
            split_range(chunks, thread_count(), thread_id(), &lo, &hi);
            lo *= 16;
            hi = NASC_MIN(hi * 16, P);
            if (lo < hi) forward_columns(yi, xi, w, b, d, lo, hi);
        }
    }
}

/* ------------------------------------------------------------------ backward */
/* Backward of images [i0, i1) on the calling thread. dwt (groups, Kc, cout_g) and db_acc
 * (cout) receive this thread's dW^T and db sums (accumulated, += ). */
static void backward_images(float *dx, float *dwt, float *db_acc, const float *dy, const float *x,
                            const float *w, const ConvDims *d, int i0, int i1) {
    const int G = d->groups, cin_g = d->cin / G, cout_g = d->cout / G;
    const int Kc = cin_g * d->k * d->k, P = d->oh * d->ow, HW = d->h * d->w;
    const int direct = d->k == 1 && d->stride == 1 && d->pad == 0;
    const int nb = images_per_gemm(d, i1 - i0);
    float *col = direct && nb == 1 ? NULL : scratch_get(0, (size_t)Kc * nb * P * sizeof(float));
    float *dyg = nb == 1 ? NULL : scratch_get(1, (size_t)cout_g * nb * P * sizeof(float));
    if (db_acc)
        for (int i = i0; i < i1; i++)
            for (int co = 0; co < d->cout; co++) {
                const float *g = dy + ((size_t)i * d->cout + co) * P;
                float s = 0.0f;
                for (int p = 0; p < P; p++) s += g[p];
                db_acc[co] += s;
            }
    if (!dx && !dwt) return;
    for (int i = i0; i < i1; i += nb) {
        int m = NASC_MIN(nb, i1 - i), ld = m * P;
        for (int g = 0; g < G; g++) {
            const float *wg = w + (size_t)g * cout_g * Kc;
            float *dwg = dwt ? dwt + (size_t)g * Kc * cout_g : NULL;
            const float *G_ = dy + ((size_t)i * d->cout + g * cout_g) * P; /* dy of image i, group g */
            const float *xi = x + ((size_t)i * d->cin + g * cin_g) * HW;
            float *dxi = dx ? dx + ((size_t)i * d->cin + g * cin_g) * HW : NULL;
            if (m == 1) {
                /* col = x itself for a direct 1x1 conv */
                const float *A = xi;
                if (dwg) {
                    if (!direct) {
                        im2col(col, P, xi, cin_g, d, 0, P);
                        A = col;
                    }
                    gemm(0, 1, Kc, cout_g, P, 1.0f, A, P, G_, P, 1.0f, dwg, cout_g);
                }
                if (dxi) {
                    if (direct) {
                        gemm(1, 0, Kc, P, cout_g, 1.0f, wg, Kc, G_, P, 1.0f, dxi, P);
                    } else {
                        gemm(1, 0, Kc, P, cout_g, 1.0f, wg, Kc, G_, P, 0.0f, col, P);
                        col2im_add(dxi, col, P, cin_g, d);
                    }
                }
                continue;
            }
            for (int j = 0; j < m; j++)
                for (int co = 0; co < cout_g; co++)
                    memcpy(dyg + (size_t)co * ld + (size_t)j * P, G_ + ((size_t)j * d->cout + co) * P,
                           (size_t)P * sizeof(float));
            if (dwg) {
                for (int j = 0; j < m; j++)
                    im2col(col + (size_t)j * P, ld, xi + (size_t)j * d->cin * HW, cin_g, d, 0, P);
                gemm(0, 1, Kc, cout_g, ld, 1.0f, col, ld, dyg, ld, 1.0f, dwg, cout_g);
            }
            if (dxi) {
                gemm(1, 0, Kc, ld, cout_g, 1.0f, wg, Kc, dyg, ld, 0.0f, col, ld);
                for (int j = 0; j < m; j++) {
                    float *dxj = dxi + (size_t)j * d->cin * HW;
                    if (direct) {
                        for (int c = 0; c < cin_g; c++) {
                            float *dr = dxj + (size_t)c * HW;
                            const float *sr = col + (size_t)c * ld + (size_t)j * P;
                            for (int p = 0; p < P; p++) dr[p] += sr[p];
                        }
                    } else {
                        col2im_add(dxj, col + (size_t)j * P, ld, cin_g, d);
                    }
                }
            }
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
    const int G = d->groups, cout_g = d->cout / G, Kc = d->cin / G * d->k * d->k;
    const size_t wsize = (size_t)d->cout * Kc;
    double flops = 4.0 * d->n * d->cout * d->oh * d->ow * Kc;
    int nt = threads_for(flops, d->n);
    float *parts[256] = {0};
    if (nt > 256) nt = 256;
#pragma omp parallel num_threads(nt)
    {
        int t = thread_id(), lo, hi;
        int T = thread_count();
        split_range(d->n, T, t, &lo, &hi);
        /* this thread's dW^T (G, Kc, cout_g) then db (cout) */
        float *part = scratch_get(2, (wsize + d->cout) * sizeof(float));
        memset(part, 0, (wsize + d->cout) * sizeof(float));
        parts[t] = part;
        backward_images(dx, dw ? part : NULL, db ? part + wsize : NULL, dy, x, w, d, lo, hi);
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
#endif
