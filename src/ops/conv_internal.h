/* conv_internal.h: private to src/ops. What conv.c and depthwise.c share: the thread and
 * work-splitting helpers, the run-time switch to the AVX-512 code, a 16 x 16 in-register
 * transpose, and the depthwise kernels
 * that conv2d_forward / conv2d_backward_ex hand depthwise layers (groups == cin == cout) to.
 * Not part of the reference build (NASC_REF_ONLY). */
#ifndef NASC_OPS_CONV_INTERNAL_H
#define NASC_OPS_CONV_INTERNAL_H
#ifndef NASC_REF_ONLY

#include "ops.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Threads worth using for `flops` of work split in `items` pieces (a region costs microseconds). */
static inline int threads_for(double flops, int items) {
    int nt = threads_get();
    if (flops < 2e5) nt = 1;
    return NASC_MAX(1, NASC_MIN(nt, items));
}

/* [lo, hi) of `count` items for part `i` of `parts` (contiguous, sizes differ by at most one). */
static inline void split_range(int count, int parts, int i, int *lo, int *hi) {
    int q = count / parts, r = count % parts;
    *lo = i * q + NASC_MIN(i, r);
    *hi = *lo + q + (i < r);
}

/* Code written with AVX-512 intrinsics (compiled with target attributes: the build targets the
 * baseline ISA) runs when gemm runs on its AVX-512 path, so NASC_GEMM=avx2|generic also tests
 * the plain C versions. */
#if defined(__GNUC__) && defined(__x86_64__)
#define CONV_X86 1
#include <immintrin.h>
#else
#define CONV_X86 0
#endif

#if CONV_X86
/* Whether gemm runs on the path called name, the answer kept in *use (-1 until asked). */
static inline int gemm_path_is(int *use, const char *name) {
    int u = __atomic_load_n(use, __ATOMIC_RELAXED);
    if (u < 0) {
        u = strcmp(gemm_path(), name) == 0;
        __atomic_store_n(use, u, __ATOMIC_RELAXED);
    }
    return u;
}

static inline int use_avx512(void) {
    static int use = -1;
    return gemm_path_is(&use, "avx512");
}

/* Whether gemm runs on its AVX2 path (a machine with AVX2 and FMA but not AVX-512, or
 * NASC_GEMM=avx2): the few AVX2 copies of the AVX-512 data movement then run. */
static inline int use_avx2(void) {
    static int use = -1;
    return gemm_path_is(&use, "avx2");
}

/* In-register transpose of the 16 x 16 matrix r (r[i] = row i). */
__attribute__((target("avx512f"), always_inline)) static inline void tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* r[4i + j]: columns j, j+4, j+8, j+12 (by lane) of rows 4i..4i+3 */
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
        r[j + 4] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[j + 12] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
    }
}

/* Lanes l of a 16-lane chunk whose element index base + l lies in [lo, hi). */
static inline __mmask16 lane_range(int base, int lo, int hi) {
    int a = NASC_MAX(lo - base, 0), b = NASC_MIN(hi - base, 16);
    if (b <= a) return 0;
    return (__mmask16)((b == 16 ? 0xFFFFu : (1u << b) - 1) & ~((1u << a) - 1));
}

/* dst (cols, rows) = src (rows, cols; rows lds floats apart) transposed, 16 x 16 blocks in registers. */
__attribute__((target("avx512f"))) static inline void transpose_avx512(float *dst, const float *src, int rows, int cols,
                                                                        size_t lds) {
    for (int r0 = 0; r0 < rows; r0 += 16) {
        const __mmask16 mr = lane_range(r0, 0, rows);
        const int nr = NASC_MIN(16, rows - r0);
        for (int q0 = 0; q0 < cols; q0 += 16) {
            const __mmask16 mq = lane_range(q0, 0, cols);
            __m512 v[16];
            for (int i = 0; i < 16; i++)
                v[i] = i < nr ? _mm512_maskz_loadu_ps(mq, src + (size_t)(r0 + i) * lds + q0) : _mm512_setzero_ps();
            tr16(v);
            for (int j = 0; j < NASC_MIN(16, cols - q0); j++)
                _mm512_mask_storeu_ps(dst + (size_t)(q0 + j) * rows + r0, mr, v[j]);
        }
    }
}

/* AVX2: lanes [0, n) of an 8-lane vector as a load mask (n <= 0: none; n >= 8: all). */
__attribute__((target("avx2"), always_inline)) static inline __m256i lanes8_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* AVX2: v's first n lanes to p, all eight whole (n >= 8), fewer through a buffer: AVX2's masked
 * stores are slow on AMD. */
__attribute__((target("avx2"), always_inline)) static inline void store8_first(float *p, __m256 v, int n) {
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float t[8];
    _mm256_storeu_ps(t, v);
    for (int l = 0; l < n; l++) p[l] = t[l]; /* a loop: memcpy of a variable n is a call */
}
#endif

/* An input made on demand (act_rows) while it is copied: one channel's constants k
 * (act_consts) and the activation (ACT_COUNT: none). */
typedef struct {
    const float *k;
    ActKind act;
} MadeInput;

#if CONV_X86
/* act_row (norm.c) on the lanes m of x, the same float operations; the other lanes are zero. */
__attribute__((target("avx512f"))) static inline __m512 made_lanes(__m512 x, __mmask16 m, const MadeInput *mi) {
    const float *k = mi->k;
    __m512 c = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_set1_ps(k[0])), _mm512_set1_ps(k[1]));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(c, _mm512_set1_ps(k[2])), _mm512_set1_ps(k[3]));
    if (mi->act == ACT_RELU || mi->act == ACT_RELU6) /* max(NaN, 0) = 0, as v > 0 ? v : 0 */
        v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (mi->act == ACT_RELU6) v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
    return _mm512_maskz_mov_ps(m, v);
}
#endif

/* The scratch slots of an output gradient (grad_rows) and an input (act_rows) made on demand
 * in the convs (gemm takes slot 3). */
#define GRAD_SLOT 4
#define INPUT_SLOT 5
/* conv backward: the output gradient on the output grid, shared by dW and dx */
#define DYGRID_SLOT 6
/* conv: Winograd's transformed input and products, or dy^T for dW */
#define WINO_SLOT 7
/* conv forward: a chunk of the output before its epilogue (BnEval) */
#define OUTPUT_SLOT 8

/* n rounded up to a multiple of 16 (floats: a 64-byte line). */
static inline size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* 3x3 stride-2 convs (padding 1, one group, outputs of whole 7x7 tiles) by Winograd F(7x7, 3x3)
 * on the four phases, sixteen images a vector (winograd_s2.c; AVX-512 only). ws2_weights makes
 * kernels [x0, x1) of the WS2_KERNELS transformed kernels (U: WS2_KERNELS x cout x cin, or its
 * kernels transposed; tap: 9 cout cin floats of scratch); ws2_forward writes y (image stride
 * ystride) of images [img0, img0 + n) of xs, n at most ws2_group_images. */
#define WS2_KERNELS 81
int ws2_shape_ok(const ConvDims *d);
int ws2_group_images(const ConvDims *d);
void ws2_weights(float *U, int transposed, const float *w, int cout, int cin, int x0, int x1, float *tap);
void ws2_forward(float *y, size_t ystride, const ActSrc *xs, size_t img0, int n, const float *U, const float *bias,
                 const ConvDims *d);
/* The backward of images [img0, img0 + n) (n at most ws2_group_images): dx (the images', image
 * stride xstride) = or += (dx_acc) the input gradient, when not NULL; du (WS2_KERNELS, cin,
 * cout) += dL/dU, when not NULL, which ws2_dw_finish turns into dW^T (cin 9, cout) once a
 * thread. dy: the images' output gradient (image stride ystride). Ut: U's kernels transposed. */
void ws2_backward(float *dx, size_t xstride, int dx_acc, float *du, const float *dy, size_t ystride, const ActSrc *xs,
                  size_t img0, int n, const float *Ut, const ConvDims *d);
void ws2_dw_finish(float *dwt, const float *du, int cin, int cout);

/* Depthwise convolution (depthwise.c), with conv2d_forward's and conv2d_backward_ex's contracts:
 * y is overwritten; dw and db accumulate; dx accumulates when dx_acc, else is overwritten. */
void depthwise_forward(float *y, const ActSrc *x, const float *w, const float *b, const ConvDims *d,
                       double *row_stats, const BnEval *epi);
void depthwise_backward(float *dx, float *dw, float *db, const GradSrc *dy, const ActSrc *x, const float *w,
                        const ConvDims *d, int dx_acc, const BnRowSums *sums);

#endif
#endif
