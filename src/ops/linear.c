/* linear.c: fully connected layer, y (N, out) = x (N, in) w^T + b, with w (out, in) as in
 * PyTorch. The reference is plain loops in `real`; the fast path is three gemm calls:
 *   y  = x w^T            gemm(0, 1)  split over rows of the batch across threads
 *   dx += dy w            gemm(0, 0)  split over rows of the batch
 *   dw += dy^T x          gemm(1, 0)  split over output features (rows of dw)
 * Backward accumulates; a NULL gradient is skipped. */
#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void linear_forward_ref(real *y, const real *x, const real *w, const real *b, int n, int in, int out) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            real acc = b ? b[o] : 0;
            for (int k = 0; k < in; k++) acc += x[(size_t)i * in + k] * w[(size_t)o * in + k];
            y[(size_t)i * out + o] = acc;
        }
}

void linear_backward_ref(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w, int n,
                         int in, int out) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            real g = dy[(size_t)i * out + o];
            if (db) db[o] += g;
            for (int k = 0; k < in; k++) {
                if (dx) dx[(size_t)i * in + k] += g * w[(size_t)o * in + k];
                if (dw) dw[(size_t)o * in + k] += g * x[(size_t)i * in + k];
            }
        }
}

#ifndef NASC_REF_ONLY
/* Threads for `flops` of work split into `items` pieces (a parallel region costs microseconds). */
static int linear_threads(double flops, int items) {
    int nt = flops < 4e5 ? 1 : threads_get();
    return NASC_MAX(1, NASC_MIN(nt, items));
}

static void part_of(int count, int *lo, int *hi) {
    int t = 0, T = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    T = omp_get_num_threads();
#endif
    int q = count / T, r = count % T;
    *lo = t * q + NASC_MIN(t, r);
    *hi = *lo + q + (t < r);
}

void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    int nt = linear_threads(2.0 * n * in * out, n);
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        part_of(n, &lo, &hi);
        if (lo < hi) {
            gemm(0, 1, hi - lo, out, in, 1.0f, x + (size_t)lo * in, in, w, in, 0.0f, y + (size_t)lo * out, out);
            if (b)
                for (int i = lo; i < hi; i++)
                    for (int o = 0; o < out; o++) y[(size_t)i * out + o] += b[o];
        }
    }
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int n,
                     int in, int out) {
    if (db)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    if (!dx && !dw) return;
    int nt = linear_threads(4.0 * n * in * out, NASC_MAX(n, out));
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        if (dx) {
            part_of(n, &lo, &hi);
            if (lo < hi)
                gemm(0, 0, hi - lo, in, out, 1.0f, dy + (size_t)lo * out, out, w, in, 1.0f, dx + (size_t)lo * in, in);
        }
        if (dw) {
            part_of(out, &lo, &hi);
            if (lo < hi)
                gemm(1, 0, hi - lo, in, n, 1.0f, dy + lo, out, x, in, 1.0f, dw + (size_t)lo * in, in);
        }
    }
}
#endif
