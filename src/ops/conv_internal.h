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

#if CONV_X86
/* Winograd F(4x4, 3x3)'s transforms in AVX-512, sixteen tiles a vector (conv.c, winograd_batch.c). */
/* bt6: t = B^T d of six vectors (each lane its own tile): t0 = 4d0 - 5d2 + d4,
 * t1,2 = (d4 +- d3) -+ 4(d1 +- d2), t3,4 = (d4 - d2) +- 2(d3 - d1), t5 = 4d1 - 5d3 + d5. */
__attribute__((target("avx512f"))) static inline void bt6(const __m512 d[6], __m512 t[6]) {
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    t[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
    t[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
    t[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
    const __m512 c = _mm512_sub_ps(d[4], d[2]), e = _mm512_sub_ps(d[3], d[1]);
    t[3] = _mm512_fmadd_ps(two, e, c);
    t[4] = _mm512_fnmadd_ps(two, e, c);
    t[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

/* at4: y = A^T m of six vectors: y0 = m0 + (m1 + m2) + (m3 + m4), y1,3 = (m1 - m2) + {2, 8}(m3 - m4)
 * (+ m5 for y3), y2 = (m1 + m2) + 4(m3 + m4). */
__attribute__((target("avx512f"))) static inline void at4(const __m512 m[6], __m512 y[4]) {
    const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
    const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m[5]);
}

/* at4t: s = A r of four vectors (A = (A^T)^T, 6 x 4): s0 = r0, s1,2 = (r0 + r2) +- (r1 + r3),
 * s3,4 = (r0 + 4 r2) +- (2 r1 + 8 r3), s5 = r3. */
__attribute__((target("avx512f"))) static inline void at4t(const __m512 r[4], __m512 s[6]) {
    const __m512 a = _mm512_add_ps(r[0], r[2]), b = _mm512_add_ps(r[1], r[3]);
    const __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), r[2], r[0]);
    const __m512 e = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), r[3], _mm512_add_ps(r[1], r[1]));
    s[0] = r[0];
    s[1] = _mm512_add_ps(a, b);
    s[2] = _mm512_sub_ps(a, b);
    s[3] = _mm512_add_ps(c, e);
    s[4] = _mm512_sub_ps(c, e);
    s[5] = r[3];
}

/* b6: d = B u of six vectors (B = (B^T)^T, the adjoint of bt6): d0 = 4 u0, d1 = -4 (u1 - u2) -
 * 2 (u3 - u4) + 4 u5, d2 = -5 u0 - 4 (u1 + u2) - (u3 + u4), d3 = (u1 - u2) + 2 (u3 - u4) - 5 u5,
 * d4 = u0 + (u1 + u2) + (u3 + u4), d5 = u5. */
__attribute__((target("avx512f"))) static inline void b6(const __m512 u[6], __m512 d[6]) {
    const __m512 p1 = _mm512_sub_ps(u[1], u[2]), q1 = _mm512_add_ps(u[1], u[2]);
    const __m512 p2 = _mm512_sub_ps(u[3], u[4]), q2 = _mm512_add_ps(u[3], u[4]);
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    d[0] = _mm512_mul_ps(four, u[0]);
    d[1] = _mm512_fmadd_ps(four, _mm512_sub_ps(u[5], p1), _mm512_mul_ps(_mm512_set1_ps(-2.0f), p2));
    d[2] = _mm512_fnmadd_ps(five, u[0], _mm512_fnmadd_ps(four, q1, _mm512_sub_ps(_mm512_setzero_ps(), q2)));
    d[3] = _mm512_fnmadd_ps(five, u[5], _mm512_fmadd_ps(_mm512_set1_ps(2.0f), p2, p1));
    d[4] = _mm512_add_ps(_mm512_add_ps(u[0], q1), q2);
    d[5] = u[5];
}

/* The same in AVX2, eight lanes (conv.c's per-image Winograd, winograd_batch.c's eight images a
 * vector), and AVX2's lane helpers. */
#define AVX2_FMA_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

AVX2_FMA_INLINE void bt6_avx2(const __m256 d[6], __m256 t[6]) {
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
    t[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    t[1] = _mm256_fnmadd_ps(four, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4]));
    t[2] = _mm256_fmadd_ps(four, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
    const __m256 c = _mm256_sub_ps(d[4], d[2]), e = _mm256_sub_ps(d[3], d[1]);
    t[3] = _mm256_fmadd_ps(two, e, c);
    t[4] = _mm256_fnmadd_ps(two, e, c);
    t[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

AVX2_FMA_INLINE void at4_avx2(const __m256 m[6], __m256 y[4]) {
    const __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
    const __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
    y[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d34, d12);
    y[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), s34, s12);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d34, d12), m[5]);
}

AVX2_FMA_INLINE void at4t_avx2(const __m256 r[4], __m256 s[6]) {
    const __m256 a = _mm256_add_ps(r[0], r[2]), b = _mm256_add_ps(r[1], r[3]);
    const __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), r[2], r[0]);
    const __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), r[3], _mm256_add_ps(r[1], r[1]));
    s[0] = r[0], s[1] = _mm256_add_ps(a, b), s[2] = _mm256_sub_ps(a, b);
    s[3] = _mm256_add_ps(c, e), s[4] = _mm256_sub_ps(c, e), s[5] = r[3];
}

AVX2_FMA_INLINE void b6_avx2(const __m256 u[6], __m256 d[6]) {
    const __m256 p1 = _mm256_sub_ps(u[1], u[2]), q1 = _mm256_add_ps(u[1], u[2]);
    const __m256 p2 = _mm256_sub_ps(u[3], u[4]), q2 = _mm256_add_ps(u[3], u[4]);
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
    d[0] = _mm256_mul_ps(four, u[0]);
    d[1] = _mm256_fmadd_ps(four, _mm256_sub_ps(u[5], p1), _mm256_mul_ps(_mm256_set1_ps(-2.0f), p2));
    d[2] = _mm256_fnmadd_ps(five, u[0], _mm256_fnmadd_ps(four, q1, _mm256_sub_ps(_mm256_setzero_ps(), q2)));
    d[3] = _mm256_fnmadd_ps(five, u[5], _mm256_fmadd_ps(_mm256_set1_ps(2.0f), p2, p1));
    d[4] = _mm256_add_ps(_mm256_add_ps(u[0], q1), q2);
    d[5] = u[5];
}

/* r (8 rows of 8) transposed in place. */
AVX2_FMA_INLINE void tr8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2)
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    for (int i = 0; i < 8; i += 4) { /* u[i + k]: column k (and k + 4) of rows i..i+3 */
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44), u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44), u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++)
        r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20), r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
}

/* Lanes l of an eight-lane chunk whose element index base + l lies in [lo, hi). */
__attribute__((target("avx2"), always_inline)) static inline __m256i lane_range8(int base, int lo, int hi) {
    const __m256i i = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(base));
    return _mm256_and_si256(_mm256_cmpgt_epi32(i, _mm256_set1_epi32(lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), i));
}

/* made_lanes in AVX2: act_row's float operations on the lanes m of x, the others zero. */
__attribute__((target("avx2"), always_inline)) static inline __m256 made_lanes8(__m256 x, __m256i m,
                                                                                const MadeInput *mi) {
    const float *k = mi->k;
    __m256 c = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_set1_ps(k[0])), _mm256_set1_ps(k[1]));
    __m256 v = _mm256_add_ps(_mm256_mul_ps(c, _mm256_set1_ps(k[2])), _mm256_set1_ps(k[3]));
    if (mi->act == ACT_RELU || mi->act == ACT_RELU6) /* max(NaN, 0) = 0, as _mm512_max_ps */
        v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (mi->act == ACT_RELU6) v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
    return _mm256_and_ps(v, _mm256_castsi256_ps(m));
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
/* conv: Winograd kernels that a region's threads make together and share (the calling
 * thread's) */
#define WEIGHT_SLOT 9

/* dst (cols, rows) = src (rows, cols; rows lds floats apart) transposed, by the gemm path's
 * vectors (conv.c). */
void conv_transpose(float *dst, const float *src, int rows, int cols, size_t lds);

/* n rounded up to a multiple of 16 (floats: a 64-byte line). */
static inline size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* conv.c's Winograd F(4x4, 3x3) kernels, which winograd_batch.c uses too: U (G, 36, cout_g,
 * cin_g) = G g G^T of every kernel of wt (cout, cin_g 9); dwt (cin_g 9, cout_g) += G^T du G of
 * du (36, cin_g, cout_g). */
void winograd_weights(float *U, const float *wt, int G, int cout_g, int cin_g);
/* Thread t of T's share of U (G, 36, rows, cols): as winograd_weights(U, wt, G, rows, cols), or,
 * transposed, of the kernels of wt (cols, rows 9) with the two counts swapped (U's kernel (r, c)
 * is wt's (c, r)). The shares together make all of U; callers then wait at a barrier. */
void winograd_weights_part(float *U, const float *wt, int G, int rows, int cols, int transposed, int t, int T);
void winograd_dw_finish(float *dwt, const float *du, int cin_g, int cout_g);

/* Winograd with sixteen images a vector (winograd_batch.c; AVX-512 only), for 3x3 convs with
 * padding 1 and one group: stride 2 (ws2_*) as F(7x7, 3x3) on the four phases, outputs of whole
 * 7x7 tiles; stride 1 (wb1_*) as F(4x4, 3x3) on each image's own 4x4 tiles. A thread's images go
 * through a group (wb_group_images) at a time.
 * ws2_weights makes kernels [x0, x1) of the WS2_KERNELS transformed kernels (U: WS2_KERNELS x
 * cout x cin, or its kernels transposed; tap: 9 cout cin floats of scratch); stride 1 takes
 * conv.c's winograd_weights (36 kernels). *_forward writes y (image stride ystride) of images
 * [img0, img0 + n) of xs, n at most wb_group_images. *_backward: dx (the images', image stride
 * xstride) = or += (dx_acc) the input gradient, when not NULL, through mask when not NULL
 * (stride 1); du += dL/dU, when not NULL (stride 2: WS2_KERNELS x cout x cin, stride 1: 36 x
 * cin x cout; du_zero: du = instead, its memory not read), which ws2_dw_finish or
 * winograd_dw_finish turns into dW^T (cin 9, cout) once a thread. dy: the images'
 * output gradient (image stride ystride). Ut: U's kernels transposed. */
#define WS2_KERNELS 81
int ws2_shape_ok(const ConvDims *d);
int wb1_shape_ok(const ConvDims *d);
int wb_group_images(const ConvDims *d);
void ws2_weights(float *U, int transposed, const float *w, int cout, int cin, int x0, int x1, float *tap);
void ws2_forward(float *y, size_t ystride, const ActSrc *xs, size_t img0, int n, const float *U, const float *bias,
                 const ConvDims *d);
void wb1_forward(float *y, size_t ystride, const ActSrc *xs, size_t img0, int n, const float *U, const float *bias,
                 const ConvDims *d);
void ws2_backward(float *dx, size_t xstride, int dx_acc, float *du, int du_zero, const float *dy, size_t ystride,
                  const ActSrc *xs, size_t img0, int n, const float *Ut, const ConvDims *d);
void wb1_backward(float *dx, size_t xstride, int dx_acc, const DxMask *mask, float *du, int du_zero, const float *dy,
                  size_t ystride, const ActSrc *xs, size_t img0, int n, const float *Ut, const ConvDims *d);
void ws2_dw_finish(float *dwt, const float *du, int cin, int cout);

/* Depthwise convolution (depthwise.c), with conv2d_forward's and conv2d_backward_ex's contracts:
 * y is overwritten; dw and db accumulate; dx accumulates when dx_acc, else is overwritten. */
void depthwise_forward(float *y, const ActSrc *x, const float *w, const float *b, const ConvDims *d,
                       double *row_stats, const BnEval *epi);
void depthwise_backward(float *dx, float *dw, float *db, const GradSrc *dy, const ActSrc *x, const float *w,
                        const ConvDims *d, int dx_acc, const BnRowSums *sums);

#endif
#endif
