/* gemm.c: single-precision matrix multiply, C (M, N) = alpha * op(A) op(B) + beta * C, row-major.
 *
 * gemm_ref is three plain loops (double accumulation); gemm is the fast path, a cache-blocked
 * scheme in the BLIS style:
 *   for each NC-wide block of columns and KC-deep block of k:
 *     for each MC-high block of rows:
 *       for each NR-wide panel, for each MR-high panel: micro-kernel (MR x NR in registers).
 * The micro-kernel stores alpha * acc + beta * C (beta = 1 after the first k block) and never
 * reads C when beta == 0, so C may then hold garbage (BLAS semantics).
 *
 * Packing costs O(K N) and O(M K) copies, a large share of the work for the thin shapes of
 * small CNNs (M = 16 output channels, N = 49 pixels), so operands are read in place where
 * possible. The kernel reads A through MR row pointers and a k step (a row-major A, a
 * transposed A, packed panels and conv's row tables all fit that form; rows past M repeat the
 * last row and are never stored), and B through one row pointer per k (row-major B or a row
 * table). Packing remains where it pays: a transposed B (into row-major), A or B strides that
 * make a panel's rows collide in the L1 cache, and, for kernels without masked loads, the
 * ragged last column panel (zero-padded, so they never read past N).
 *
 * Three micro-kernels, picked once at run time: AVX-512F (8 x 48), AVX2+FMA (6 x 16) and a
 * portable one (4 x 8, GNU C vector extensions: SSE2 / NEON) that compiles anywhere.
 * NASC_GEMM=generic|avx2|avx512 forces one (a path the CPU lacks falls back to the best
 * available, with a warning; gemm_path() tells which is used). The AVX-512 and AVX2 paths also
 * have "NT" kernels for A B^T with both read along k (dot products, no packing), used for
 * op(B) = B^T when K is long and M or N small (conv's weight gradient, linear's forward) and for
 * the few columns past N's last full panel (a 7x7 plane's 49th).
 *
 * gemm is single-threaded and reentrant; callers parallelize around it. Its buffers come from
 * scratch slot GEMM_SCRATCH_SLOT (3) of the calling thread, so a caller must not hold a
 * pointer from that slot across a gemm call. gemm_ex (gemm_ex.h) is the general entry point.
 */
#include "ops.h"
#include "conv_internal.h" /* lanes8_mask */
#include "gemm_ex.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GEMM_X86 1
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

#define GEMM_SCRATCH_SLOT 3

/* ------------------------------------------------------------------ reference */
void gemm_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                double a = transa ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = transb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = beta == 0.0f ? (float)(alpha * acc) : (float)(alpha * acc + (double)beta * *c);
        }
    }
}

/* ------------------------------------------------------------------ micro-kernels */
/* A tile's place in a GemmMap (gemm_map): its first row and column of C. Kernels other than
 * the AVX-512 one are never given one. */
typedef struct {
    const GemmMap *map;
    int row0, col0;
} GemmMapAt;

/* One MR x NR tile: c (the m x n valid part, row stride ldc) = alpha * A B + beta * c, where
 * A (i, k) = ap[i][k * a_cs] and B (k, j) = bk[k][boff + j] for j < the panel width (n rounded
 * up to the path's granule; the driver guarantees those reads are in bounds). */
typedef void (*GemmKernel)(int kc, const float *const *ap, ptrdiff_t a_cs, const float *const *bk,
                           ptrdiff_t boff, float *c, int ldc, int m, int n, float alpha, float beta, int stream,
                           const GemmMapAt *map);

/* NT tile: c (m x n of NT_MR x NT_NR) = alpha * A B^T + beta * c, A (i, k) = ar[i][k],
 * B^T (k, j) = br[j][k]. */
#define NT_MR 6
#define NT_NR 4
typedef void (*GemmNtKernel)(int kc, const float *const *ar, const float *const *br, float *c, int ldc, int m,
                             int n, float alpha, float beta);
/* NT column: c (m x 1 of NT_COL_MR, column stride ldc) = alpha * A b + beta * c, A (i, k) =
 * ar[i][k], b (k) = b[k]: for the one or two columns an NT tile would otherwise waste. */
#define NT_COL_MR 24
typedef void (*GemmNtColKernel)(int kc, const float *const *ar, const float *b, float *c, int ldc, int m,
                                float alpha, float beta);

typedef struct {
    const char *name;
    int mr, nr;     /* register tile */
    int ng;         /* a ragged last panel is as wide as its columns rounded up to ng (<= nr) */
    int kc, mc, nc; /* cache blocks (mc a multiple of mr, nc of nr) */
    GemmKernel kernel;
    int masked;     /* the kernel reads a ragged panel with masked loads (no packing needed) */
    GemmNtKernel nt; /* optional kernel for A B^T read along rows (NULL: pack B instead) */
    GemmNtColKernel nt_col; /* with nt: one column of it */
} GemmPath;

/* Stores one row of results: c[0, n) = alpha * r + beta * c. */
static inline void store_row(float *c, const float *r, int n, float alpha, float beta) {
    if (beta == 0.0f)
        for (int j = 0; j < n; j++) c[j] = alpha * r[j];
    else
        for (int j = 0; j < n; j++) c[j] = alpha * r[j] + beta * c[j];
}

/* Portable kernel, 4 x 8: two 4-float vectors per row, 8 accumulators. */
#define GEN_MR 4
#define GEN_NR 8
typedef float v4f __attribute__((vector_size(16)));
static void kernel_generic(int kc, const float *const *ap, ptrdiff_t a_cs, const float *const *bk, ptrdiff_t boff,
                           float *c, int ldc, int m, int n, float alpha, float beta, int stream,
                           const GemmMapAt *map) {
    v4f acc[GEN_MR][2];
    memset(acc, 0, sizeof acc);
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += a_cs) {
        const float *b = bk[k] + boff;
        v4f b0, b1;
        memcpy(&b0, b, sizeof b0);
        memcpy(&b1, b + 4, sizeof b1);
        for (int i = 0; i < GEN_MR; i++) {
            float s = ap[i][ka];
            v4f ai = {s, s, s, s};
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    for (int i = 0; i < m; i++) {
        float r[GEN_NR];
        memcpy(r, acc[i], sizeof r);
        store_row(c + (size_t)i * ldc, r, n, alpha, beta);
    }
}

#if GEMM_X86
/* AVX2 + FMA: 6 x 16, 12 accumulators. */
#define AVX2_MR 6
#define AVX2_NR 16
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *const *ap, ptrdiff_t a_cs,
                                                             const float *const *bk, ptrdiff_t boff, float *c,
                                                             int ldc, int m, int n, float alpha, float beta,
                                                             int stream, const GemmMapAt *map) {
    const float *a[AVX2_MR];
    __m256 acc[AVX2_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < AVX2_MR; i++) a[i] = ap[i], acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += a_cs) {
        const float *b = bk[k] + boff;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < AVX2_MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a[i] + ka);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < AVX2_MR; i++) {
        if (i >= m) break;
        float *ci = c + (size_t)i * ldc;
        if (n == AVX2_NR) {
            __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
            }
            _mm256_storeu_ps(ci, r0);
            _mm256_storeu_ps(ci + 8, r1);
        } else {
            float r[AVX2_NR];
            _mm256_storeu_ps(r, acc[i][0]);
            _mm256_storeu_ps(r + 8, acc[i][1]);
            store_row(ci, r, n, alpha, beta);
        }
    }
}

#if GEMM_X86
int gemm_map_runs(const GemmMap *g, int q0, int n, MapRun *run) {
    int oy = q0 / g->W, r = q0 - oy * g->W, j = r / g->wq, ox = r - j * g->wq, nr = 0;
    for (int l = 0; l < n;) {
        if (ox >= g->ow) { /* padding cells: on to the next image's first cell */
            l += g->wq - ox, ox = 0;
            if (++j * g->wq >= g->W) j = 0, oy++;
            continue;
        }
        int cnt = NASC_MIN(g->ow - ox, n - l);
        NASC_ASSERT(nr < MAP_RUNS);
        run[nr].off = (ptrdiff_t)(j * g->img_stride) + (ptrdiff_t)oy * g->ow + ox - l;
        run[nr].lanes = (__mmask16)(((1u << cnt) - 1) << l);
        nr++;
        l += cnt, ox += cnt;
    }
    return nr;
}
#endif

/* AVX-512F: MR rows x 16 * NV columns, MR <= 8, NV <= 4 vectors: 8 x 48 (24 accumulators) in
 * the main case, 6 x 64 for C of 64 columns (below). A ragged last panel uses fewer vectors
 * and masked loads and stores, so B is read in place even there (masked-off lanes are never
 * touched). */
#define AVX512_MR 8
#define AVX512_NR 48
__attribute__((target("avx512f,fma"), always_inline)) static inline void
kernel_avx512_nv(const int MR, const int NV, const int FULL, int kc, const float *const *ap, ptrdiff_t a_cs,
                 const float *const *bk, ptrdiff_t boff, float *c, int ldc, int m, int n, float alpha, float beta,
                 int stream, const GemmMapAt *map) {
    const float *a[AVX512_MR];
    __m512 acc[AVX512_MR][4];
    __mmask16 mask[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        int left = n - 16 * v;
        mask[v] = FULL || left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        a[i] = ap[i];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    }
    /* C's lines asked for before the k loop, so a C not in cache arrives while the tile is
     * multiplied and the stores after it do not wait for memory (batch 128, 2 threads: 1x1 conv
     * 24 -> 144 on 14x14 forward 1.65 -> 1.15 ms, 96 -> 24 backward 2.0 -> 1.65 ms; through a
     * map, the cells of its runs: 3x3 stride-2 conv 16 -> 32 on 28x28 forward 1.60 -> 1.50 ms).
     * A streamed C bypasses the caches. */
    MapRun run[4][MAP_RUNS]; /* through a map: each vector's runs of kept cells */
    int nrun[4] = {0};
    if (map) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            nrun[v] = gemm_map_runs(map->map, map->col0 + 16 * v, NASC_MIN(16, n - 16 * v), run[v]);
        for (int i = 0; i < m && i < MR; i++) {
            const float *yr = map->map->y + (size_t)(map->row0 + i) * map->map->row_stride;
            for (int v = 0; v < NV; v++)
                for (int u = 0; u < nrun[v]; u++)
                    __builtin_prefetch(yr + run[v][u].off, 1, 3), __builtin_prefetch(yr + run[v][u].off + 15, 1, 3);
        }
    } else if (!stream) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            if (i >= m) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) __builtin_prefetch(c + (size_t)i * ldc + 16 * v, 1, 3);
            __builtin_prefetch(c + (size_t)i * ldc + 16 * NV - 1, 1, 3); /* a row's last line */
        }
    }
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += a_cs) {
        const float *b = bk[k] + boff;
        __m512 bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i][ka]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    if (map) { /* through the map: one masked store a run */
        const GemmMap *g = map->map;
        NASC_ASSERT(!g->mask);
        const int acc_y = g->accumulate || beta != 0.0f;
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            if (i >= m) break;
            float *yr = g->y + (size_t)(map->row0 + i) * g->row_stride;
            const __m512 bv = g->bias && beta == 0.0f ? _mm512_set1_ps(g->bias[map->row0 + i]) : _mm512_setzero_ps();
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const __m512 r = _mm512_add_ps(acc[i][v], bv);
                for (int u = 0; u < nrun[v]; u++) {
                    float *dst = yr + run[v][u].off; /* lane l's cell is dst[l] */
                    const __mmask16 mk = run[v][u].lanes;
                    _mm512_mask_storeu_ps(dst, mk, acc_y ? _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, dst)) : r);
                }
            }
        }
        return;
    }
    /* The common cases (C = AB, C += AB, cached stores) without per-vector tests: with a short
     * k loop (small channel counts) the tile's stores are a large share of the kernel. */
    if (alpha == 1.0f && !stream && (beta == 0.0f || beta == 1.0f)) {
        if (beta == 0.0f) {
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                if (i >= m) break;
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(c + (size_t)i * ldc + 16 * v, mask[v], acc[i][v]);
            }
        } else {
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                if (i >= m) break;
                float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    _mm512_mask_storeu_ps(ci + 16 * v, mask[v],
                                          _mm512_add_ps(acc[i][v], _mm512_maskz_loadu_ps(mask[v], ci + 16 * v)));
            }
        }
        return;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 r = acc[i][v];
            if (alpha != 1.0f) r = _mm512_mul_ps(va, r);
            if (beta == 1.0f)
                r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v));
            else if (beta != 0.0f)
                r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
            if (stream && mask[v] == 0xFFFF && ((uintptr_t)(ci + 16 * v) & 63) == 0)
                _mm512_stream_ps(ci + 16 * v, r); /* C is not read again soon: skip the cache */
            else
                _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
        }
    }
}

__attribute__((target("avx512f,fma"))) static void kernel_avx512(int kc, const float *const *ap, ptrdiff_t a_cs,
                                                                 const float *const *bk, ptrdiff_t boff, float *c,
                                                                 int ldc, int m, int n, float alpha, float beta,
                                                                 int stream, const GemmMapAt *map) {
    if (n >= 48) /* a full panel: no masks */
        kernel_avx512_nv(AVX512_MR, 3, 1, kc, ap, a_cs, bk, boff, c, ldc, m, n, alpha, beta, stream, map);
    else if (n > 32)
        kernel_avx512_nv(AVX512_MR, 3, 0, kc, ap, a_cs, bk, boff, c, ldc, m, n, alpha, beta, stream, map);
    else if (n > 16)
        kernel_avx512_nv(AVX512_MR, 2, 0, kc, ap, a_cs, bk, boff, c, ldc, m, n, alpha, beta, stream, map);
    else
        kernel_avx512_nv(AVX512_MR, 1, 0, kc, ap, a_cs, bk, boff, c, ldc, m, n, alpha, beta, stream, map);
}

/* AVX-512F, 6 rows x 64 columns (24 accumulators; 10 loads a step for 24 multiply-adds), the
 * kernel above with 6 rows and 4 vectors: for C of exactly 64 columns, which the 8 x 48 tile
 * covers as 48 + 16, the second panel with 8 accumulators for 9 loads (conv's dW with 64
 * output channels, 576 x 64 x 504 on one thread: 173 / 177 -> 191 / 192 GFLOP/s). */
#define W64_MR 6
__attribute__((target("avx512f,fma"))) static void kernel_avx512_w64(int kc, const float *const *ap, ptrdiff_t a_cs,
                                                                     const float *const *bk, ptrdiff_t boff, float *c,
                                                                     int ldc, int m, int n, float alpha, float beta,
                                                                     int stream, const GemmMapAt *map) {
    kernel_avx512_nv(W64_MR, 4, 1, kc, ap, a_cs, bk, boff, c, ldc, m, n, alpha, beta, stream, map);
}

/* AVX-512F "NT" kernel for C = A B^T with both A (m x K) and B (n x K) read along rows:
 * 6 x 4 dot products, each a 16-lane accumulator summed at the end. No packing at all, which
 * pays when B would otherwise need a transposing pack (conv's dW, linear's forward). */
/* The four horizontal sums of a, b, c, d. */
__attribute__((target("avx512f,fma"))) static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
#define HALVES(v) _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(HALVES(a), HALVES(b)), _mm256_hadd_ps(HALVES(c), HALVES(d)));
#undef HALVES
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

__attribute__((target("avx512f,fma"))) static void
kernel_nt_avx512(int kc, const float *const *ar, const float *const *br, float *c, int ldc, int m, int n,
                 float alpha, float beta) {
    __m512 acc[NT_MR][NT_NR];
#pragma GCC unroll 6
    for (int i = 0; i < NT_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT_NR; j++) acc[i][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 b0 = _mm512_loadu_ps(br[0] + k), b1 = _mm512_loadu_ps(br[1] + k);
        __m512 b2 = _mm512_loadu_ps(br[2] + k), b3 = _mm512_loadu_ps(br[3] + k);
#pragma GCC unroll 6
        for (int i = 0; i < NT_MR; i++) {
            __m512 a = _mm512_loadu_ps(ar[i] + k);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(a, b2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(a, b3, acc[i][3]);
        }
    }
    if (k < kc) {
        __mmask16 mk = (__mmask16)((1u << (kc - k)) - 1);
        __m512 b0 = _mm512_maskz_loadu_ps(mk, br[0] + k), b1 = _mm512_maskz_loadu_ps(mk, br[1] + k);
        __m512 b2 = _mm512_maskz_loadu_ps(mk, br[2] + k), b3 = _mm512_maskz_loadu_ps(mk, br[3] + k);
#pragma GCC unroll 6
        for (int i = 0; i < NT_MR; i++) {
            __m512 a = _mm512_maskz_loadu_ps(mk, ar[i] + k);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(a, b2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(a, b3, acc[i][3]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NT_MR; i++) {
        if (i >= m) break;
        float r[NT_NR], *ci = c + (size_t)i * ldc;
        _mm_storeu_ps(r, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
        for (int j = 0; j < NASC_MIN(n, NT_NR); j++) ci[j] = alpha * r[j] + (beta == 0.0f ? 0.0f : beta * ci[j]);
    }
}
#endif

#if GEMM_X86
__attribute__((target("avx512f,fma"))) static void kernel_nt_col_avx512(int kc, const float *const *ar, const float *b,
                                                                        float *c, int ldc, int m, float alpha,
                                                                        float beta) {
    __m512 acc[NT_COL_MR];
#pragma GCC unroll 24
    for (int i = 0; i < NT_COL_MR; i++) acc[i] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k += 16) {
        const __mmask16 mk = kc - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (kc - k)) - 1);
        const __m512 bv = _mm512_maskz_loadu_ps(mk, b + k);
#pragma GCC unroll 24
        for (int i = 0; i < NT_COL_MR; i++) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, ar[i] + k), bv, acc[i]);
    }
    float r[NT_COL_MR];
#pragma GCC unroll 6
    for (int i = 0; i < NT_COL_MR; i += 4) _mm_storeu_ps(r + i, hsum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        *ci = alpha * r[i] + (beta == 0.0f ? 0.0f : beta * *ci);
    }
}
#endif

#if GEMM_X86
/* The NT kernels in AVX2 + FMA, for machines without AVX-512 (before them the AVX2 path packed
 * B^T, and a ragged column panel took a whole zero-padded panel: 49 columns cost 64). 8-lane
 * accumulators, so an NT_MR x NT_NR tile is done two rows at a time (8 accumulators, four B
 * vectors, two A vectors in AVX2's 16 registers) and an NT column eight rows at a time. The k
 * tail is read with masked loads (only AVX2's masked stores are slow on AMD). One thread,
 * NASC_GEMM=avx2, GFLOP/s before -> after: 64 x 49 x 384 64 -> 82, 384 x 49 x 64 79 -> 99,
 * 24 x 196 x 144 96 -> 106; batch 128, 2 threads: mbv2's training step 124 -> 114 ms, small's
 * 12.8 -> 12.3 ms. */
/* The four horizontal sums of a, b, c, d. */
__attribute__((target("avx2"))) static inline __m128 hsum4_avx2(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

__attribute__((target("avx2,fma"))) static void kernel_nt_avx2(int kc, const float *const *ar, const float *const *br,
                                                               float *c, int ldc, int m, int n, float alpha,
                                                               float beta) {
    const int k8 = kc / 8 * 8;
    const __m256i tail = lanes8_mask(kc - k8);
    for (int i0 = 0; i0 < m && i0 < NT_MR; i0 += 2) {
        const float *a0 = ar[i0], *a1 = ar[i0 + 1];
        __m256 acc[2][NT_NR];
#pragma GCC unroll 4
        for (int j = 0; j < NT_NR; j++) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
        for (int k = 0; k < k8; k += 8) {
            const __m256 x0 = _mm256_loadu_ps(a0 + k), x1 = _mm256_loadu_ps(a1 + k);
#pragma GCC unroll 4
            for (int j = 0; j < NT_NR; j++) {
                const __m256 b = _mm256_loadu_ps(br[j] + k);
                acc[0][j] = _mm256_fmadd_ps(x0, b, acc[0][j]);
                acc[1][j] = _mm256_fmadd_ps(x1, b, acc[1][j]);
            }
        }
        if (k8 < kc) {
            const __m256 x0 = _mm256_maskload_ps(a0 + k8, tail), x1 = _mm256_maskload_ps(a1 + k8, tail);
#pragma GCC unroll 4
            for (int j = 0; j < NT_NR; j++) {
                const __m256 b = _mm256_maskload_ps(br[j] + k8, tail);
                acc[0][j] = _mm256_fmadd_ps(x0, b, acc[0][j]);
                acc[1][j] = _mm256_fmadd_ps(x1, b, acc[1][j]);
            }
        }
        for (int i = i0; i < i0 + 2 && i < m; i++) {
            float r[NT_NR], *ci = c + (size_t)i * ldc;
            const __m256 *q = acc[i - i0];
            _mm_storeu_ps(r, hsum4_avx2(q[0], q[1], q[2], q[3]));
            for (int j = 0; j < NASC_MIN(n, NT_NR); j++) ci[j] = alpha * r[j] + (beta == 0.0f ? 0.0f : beta * ci[j]);
        }
    }
}

__attribute__((target("avx2,fma"))) static void kernel_nt_col_avx2(int kc, const float *const *ar, const float *b,
                                                                   float *c, int ldc, int m, float alpha, float beta) {
    const int k8 = kc / 8 * 8;
    const __m256i tail = lanes8_mask(kc - k8);
    for (int i0 = 0; i0 < m && i0 < NT_COL_MR; i0 += 8) {
        __m256 acc[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
        for (int k = 0; k < k8; k += 8) {
            const __m256 bv = _mm256_loadu_ps(b + k);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(ar[i0 + i] + k), bv, acc[i]);
        }
        if (k8 < kc) {
            const __m256 bv = _mm256_maskload_ps(b + k8, tail);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(ar[i0 + i] + k8, tail), bv, acc[i]);
        }
        float r[8];
        _mm_storeu_ps(r, hsum4_avx2(acc[0], acc[1], acc[2], acc[3]));
        _mm_storeu_ps(r + 4, hsum4_avx2(acc[4], acc[5], acc[6], acc[7]));
        for (int i = i0; i < i0 + 8 && i < m; i++) {
            float *ci = c + (size_t)i * ldc;
            *ci = alpha * r[i - i0] + (beta == 0.0f ? 0.0f : beta * *ci);
        }
    }
}
#endif

/* ------------------------------------------------------------------ paths */
enum { PATH_GENERIC, PATH_AVX2, PATH_AVX512, PATH_COUNT };

static const GemmPath gemm_paths[PATH_COUNT] = {
    [PATH_GENERIC] = {"generic", GEN_MR, GEN_NR, GEN_NR, 256, 128, 2048, kernel_generic, 0, NULL},
#if GEMM_X86
    [PATH_AVX2] = {"avx2", AVX2_MR, AVX2_NR, AVX2_NR, 256, 144, 2048, kernel_avx2, 0, kernel_nt_avx2,
                   kernel_nt_col_avx2},
    [PATH_AVX512] = {"avx512", AVX512_MR, AVX512_NR, 16, 192, 512, 2064, kernel_avx512, 1, kernel_nt_avx512,
                     kernel_nt_col_avx512},
#endif
};

#if GEMM_X86
/* The AVX-512 path for C of exactly 64 columns (kernel_avx512_w64; k blocks of 128 keep a
 * 128 x 64 block of B, 32 KB, in L1). */
static const GemmPath gemm_w64 = {"avx512", W64_MR, 64, 16, 128, 480, 64, kernel_avx512_w64, 0, kernel_nt_avx512,
                                  kernel_nt_col_avx512};
#endif

static int path_supported(int p) {
    if (p == PATH_GENERIC) return 1;
#if GEMM_X86
    __builtin_cpu_init();
    if (p == PATH_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (p == PATH_AVX512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* The path, decided on first use: NASC_GEMM if set and supported, else the best available. */
static const GemmPath *path_get(void) {
    static int chosen = -1;
    int p = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (p >= 0) return &gemm_paths[p];
    p = PATH_GENERIC;
    for (int q = PATH_COUNT - 1; q > PATH_GENERIC; q--)
        if (path_supported(q)) {
            p = q;
            break;
        }
    const char *want = getenv("NASC_GEMM");
    if (want && *want) {
        int q = -1;
        for (int i = 0; i < PATH_COUNT; i++)
            if (gemm_paths[i].name && strcmp(want, gemm_paths[i].name) == 0) q = i;
        if (q >= 0 && path_supported(q))
            p = q;
        else
            fprintf(stderr, "nasc: NASC_GEMM=%s is not available here; using %s\n", want, gemm_paths[p].name);
    }
    __atomic_store_n(&chosen, p, __ATOMIC_RELEASE);
    return &gemm_paths[p];
}

const char *gemm_path(void) { return path_get()->name; }

/* ------------------------------------------------------------------ packing */
/* op(A) rows [0, mc), k [0, kc) (A at the block's first element, not transposed, row stride
 * lda) into MR-high k-major panels (read back with a_cs = mr); rows past mc repeat the last
 * row (their results are never stored). */
static void pack_a(int mc, int kc, const float *A, int lda, int mr, float *dst) {
    for (int i0 = 0; i0 < mc; i0 += mr) {
        int m = NASC_MIN(mr, mc - i0);
        for (int i = 0; i < mr; i++) {
            const float *src = A + (size_t)(i0 + NASC_MIN(i, m - 1)) * lda;
            for (int k = 0; k < kc; k++) dst[(size_t)k * mr + i] = src[k];
        }
        dst += (size_t)mr * kc;
    }
}

/* Row k of the op(B) block [kc x nc], for a B given by rows or row-major. */
static const float *b_row(const GemmMat *B, int k, int j) {
    return B->rows ? B->rows[k] + j : B->p + (size_t)k * B->ld + j;
}

/* op(B) rows [pc, pc + kc), columns [jc, jc + nc) into dst, row-major with row stride ldd;
 * columns nc..ldd-1 are left alone. */
static void pack_b(const GemmMat *B, int pc, int kc, int jc, int nc, float *dst, int ldd) {
    if (!B->trans) {
        for (int k = 0; k < kc; k++) memcpy(dst + (size_t)k * ldd, b_row(B, pc + k, jc), (size_t)nc * sizeof *dst);
        return;
    }
    /* op(B)(k, j) = B[j][k]: 8 x 8 blocks, reading 8 rows of B side by side */
    const float *src = B->p + (size_t)jc * B->ld + pc;
    const size_t ld = (size_t)B->ld;
    for (int j0 = 0; j0 < nc; j0 += 8) {
        int jn = NASC_MIN(8, nc - j0);
        for (int k0 = 0; k0 < kc; k0 += 8) {
            int kn = NASC_MIN(8, kc - k0);
            for (int j = 0; j < jn; j++) {
                const float *s = src + (size_t)(j0 + j) * ld + k0;
                float *d = dst + (size_t)k0 * ldd + j0 + j;
                for (int k = 0; k < kn; k++) d[(size_t)k * ldd] = s[k];
            }
        }
    }
}

/* A row stride (in floats) that maps consecutive rows onto few L1 sets: multiples of 1 KiB. */
static int stride_collides(int ld) { return ld % 256 == 0; }

/* ------------------------------------------------------------------ driver */
static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof *c);
        else
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

static size_t align16(size_t n) { return (n + 15) / 16 * 16; }

/* Ragged columns done by the NT kernel: at most this many, with K at least NT_RAGGED_K. */
#define NT_RAGGED 8
#define NT_RAGGED_K 32

/* A B^T with the NT kernel: k blocks of up to NT_KC, row tiles outer, column tiles inner. */
#define NT_KC 1024

/* ar[0, cnt) = rows i0.. of A (m of them; the rest repeat the last) from column pc on. */
static void nt_rows(const float **ar, const GemmMat *A, int i0, int m, int cnt, int pc) {
    for (int i = 0; i < cnt; i++) {
        int row = i0 + NASC_MIN(i, m - 1);
        ar[i] = (A->rows ? A->rows[row] : A->p + (size_t)row * A->ld) + pc;
    }
}

static void gemm_nt(const GemmPath *p, int M, int N, int K, float alpha, const GemmMat *A, const GemmMat *B,
                    float beta, float *C, int ldc) {
    /* one or two columns past the last whole tile: by the column kernel (a tile would compute
     * four, mbv2's 7x7 planes' 49th column) */
    const int ncol = p->nt_col && N % NT_NR <= 2 ? N % NT_NR : 0, Nt = N - ncol;
    int nkb = (K + NT_KC - 1) / NT_KC, kcb = (K + nkb - 1) / nkb;
    for (int pc = 0; pc < K; pc += kcb) {
        int kc = NASC_MIN(kcb, K - pc);
        float beta_k = pc == 0 ? beta : 1.0f;
        for (int i0 = 0; i0 < M && Nt > 0; i0 += NT_MR) {
            int m = NASC_MIN(NT_MR, M - i0);
            const float *ar[NT_MR];
            nt_rows(ar, A, i0, m, NT_MR, pc);
            for (int j0 = 0; j0 < Nt; j0 += NT_NR) {
                int n = NASC_MIN(NT_NR, Nt - j0);
                const float *br[NT_NR];
                for (int j = 0; j < NT_NR; j++) br[j] = B->p + (size_t)(j0 + NASC_MIN(j, n - 1)) * B->ld + pc;
                p->nt(kc, ar, br, C + (size_t)i0 * ldc + j0, ldc, m, n, alpha, beta_k);
            }
        }
        for (int j = Nt; j < N; j++)
            for (int i0 = 0; i0 < M; i0 += NT_COL_MR) {
                int m = NASC_MIN(NT_COL_MR, M - i0);
                const float *ar[NT_COL_MR];
                nt_rows(ar, A, i0, m, NT_COL_MR, pc);
                p->nt_col(kc, ar, B->p + (size_t)j * B->ld + pc, C + (size_t)i0 * ldc + j, ldc, m, alpha, beta_k);
            }
    }
}

/* Whether gemm_run does the few columns past N's last full panel as dot products (NT kernel). */
static int ragged_by_nt(const GemmPath *p, int N, int K) {
    const int rag = N % p->nr;
    return p->nt && N > p->nr && rag && rag <= NT_RAGGED && K >= NT_RAGGED_K;
}

/* The kernel's A row pointers for rows [ic, ic + mc) of A from column pc, one MR panel after
 * another (rows past the block repeat its last, never stored): into apack's panels when A is
 * packed there (kc columns), else in place. */
static void a_rows(const float **arows, const GemmMat *A, int ic, int mc, int mr, int pc, const float *apack, int kc) {
    for (int ir = 0; ir < mc; ir += mr) {
        const int m = NASC_MIN(mr, mc - ir);
        for (int i = 0; i < mr; i++) {
            const int row = ic + ir + NASC_MIN(i, m - 1);
            const float **ap = arows + ir + i;
            if (apack)
                *ap = apack + (size_t)ir * kc + i;
            else if (A->rows)
                *ap = A->rows[row] + pc;
            else if (A->trans)
                *ap = A->p + (size_t)pc * A->ld + row;
            else
                *ap = A->p + (size_t)row * A->ld + pc;
        }
    }
}

/* gemm_ex, or with map (then C is unused and the columns go through the map; alpha 1, beta
 * 0, A not transposed, B not transposed: gemm_map). */
static void gemm_run(int M, int N, int K, float alpha, const GemmMat *A, const GemmMat *B, float beta, float *C,
                     int ldc, int flags, const GemmMap *map) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        NASC_ASSERT(!map);
        if (beta != 1.0f && C) scale_c(M, N, beta, C, ldc);
        return;
    }
    NASC_ASSERT(!(A->rows && A->trans) && !(B->rows && B->trans));
    const GemmPath *p = path_get();
    /* NT beats the transposing pack when one side is thin (measured on conv's dW shapes) */
    if (!map && p->nt && !A->trans && B->trans && K >= 64 && (N < 48 || M < 48)) {
        gemm_nt(p, M, N, K, alpha, A, B, beta, C, ldc);
        return;
    }
    /* A few columns past the last full panel (a 7x7 plane's 49 = 48 + 1, a 14x14 plane's 196 =
     * 4 * 48 + 4) would take a whole masked panel with most lanes idle: they are gathered into
     * rows and done as dot products with the NT kernel (every lane useful). */
    if (!map && !A->trans && ragged_by_nt(p, N, K)) {
        const int rag = N % p->nr;
        /* the columns as rows along k: a transposed B has them; else gathered */
        GemmMat Bt = {NULL, K, 1, NULL};
        if (B->trans) {
            Bt.p = B->p + (size_t)(N - rag) * B->ld, Bt.ld = B->ld;
        } else {
            float *bt = scratch_get(GEMM_SCRATCH_SLOT, (size_t)rag * K * sizeof(float));
            for (int k = 0; k < K; k++) {
                const float *src = b_row(B, k, N - rag);
                for (int j = 0; j < rag; j++) bt[(size_t)j * K + k] = src[j];
            }
            Bt.p = bt;
        }
        gemm_nt(p, M, rag, K, alpha, A, &Bt, beta, C + (N - rag), ldc);
        N -= rag;
    }
#if GEMM_X86
    if (p == &gemm_paths[PATH_AVX512] && N == 64 && !map) p = &gemm_w64;
#endif
    const int mr = p->mr, nr = p->nr, ng = p->ng;
    const int stream = (flags & GEMM_STREAM_C) && beta == 0.0f && K <= p->kc; /* C written once */
    const int pack_A = !A->rows && !A->trans && M > mr && stride_collides(A->ld);
    const int pack_B = B->trans || (!B->rows && stride_collides(B->ld));
    /* Blocks no larger than needed, the k blocks balanced so the last one is not tiny. */
    int kcb = NASC_MIN(p->kc, K);
    int nkb = (K + kcb - 1) / kcb;
    kcb = (K + nkb - 1) / nkb;
    int mcb = NASC_MIN(p->mc, (M + mr - 1) / mr * mr);
    int ncb = NASC_MIN(p->nc, (N + nr - 1) / nr * nr);
    int ldp = ncb + 16; /* packed B row stride: never a multiple of 1 KiB */
    size_t a_sz = pack_A ? align16((size_t)mcb * kcb) : 0;
    size_t b_sz = pack_B ? align16((size_t)kcb * ldp) : 0;
    size_t e_sz = p->masked ? 0 : align16((size_t)kcb * nr);
    const int mpan = (mcb + mr - 1) / mr * mr; /* A row pointers: one per row of an M block */
    size_t bytes = (a_sz + b_sz + e_sz) * sizeof(float) + (2 * (size_t)kcb + mpan) * sizeof(float *);
    float *apack = scratch_get(GEMM_SCRATCH_SLOT, bytes);
    float *bpack = apack + a_sz, *epack = bpack + b_sz;
    const float **bk = (const float **)(void *)(epack + e_sz), **ek = bk + kcb, **arows = ek + kcb;
    const ptrdiff_t a_cs = pack_A ? mr : A->trans ? A->ld : 1; /* A's column step */

    for (int jc = 0; jc < N; jc += ncb) {
        int nc = NASC_MIN(ncb, N - jc);
        /* columns in full panels; the rest is the ragged panel, which kernels without masked
         * loads get packed and zero-padded */
        int nfull = p->masked ? nc : nc / nr * nr;
        for (int pc = 0; pc < K; pc += kcb) {
            int kc = NASC_MIN(kcb, K - pc);
            float beta_k = pc == 0 ? beta : 1.0f;
            /* B rows of this block: bk[k] + jr is the start of panel jr */
            if (pack_B) {
                pack_b(B, pc, kc, jc, nfull, bpack, ldp);
                for (int k = 0; k < kc; k++) bk[k] = bpack + (size_t)k * ldp;
            } else {
                for (int k = 0; k < kc; k++) bk[k] = b_row(B, pc + k, jc);
            }
            int nrag = nc - nfull, wrag = NASC_MIN(nr, (nrag + ng - 1) / ng * ng);
            if (nrag) {
                pack_b(B, pc, kc, jc + nfull, nrag, epack, wrag);
                for (int k = 0; k < kc; k++) {
                    ek[k] = epack + (size_t)k * wrag;
                    for (int j = nrag; j < wrag; j++) epack[(size_t)k * wrag + j] = 0.0f;
                }
            }
            for (int ic = 0; ic < M; ic += mcb) {
                int mc = NASC_MIN(mcb, M - ic);
                if (pack_A) pack_a(mc, kc, A->p + (size_t)ic * A->ld + pc, A->ld, mr, apack);
                /* the kernel's A row pointers, set once, not once per column panel: with few k
                 * steps that setup cost as much as a tile */
                a_rows(arows, A, ic, mc, mr, pc, pack_A ? apack : NULL, kc);
                /* The tiles column panel by column panel (each B panel reused from L1 by all
                 * the row panels); but a C streamed out after a short k loop row panel by row
                 * panel, so its rows leave in long runs (a 1x1 conv 16 -> 96 on 28x28, batch
                 * 128, 2 threads: forward 3.2 -> 2.6 ms; 32 -> 192 9.1 -> 8.2; 192 -> 128, a
                 * long k loop, 28.3 -> 29.4 ms the other way round) */
                const int ni = (mc + mr - 1) / mr, nj = (nc + nr - 1) / nr, by_rows = stream && kc <= 64;
                for (int u = 0; u < ni * nj; u++) {
                    const int ir = (by_rows ? u / nj : u % ni) * mr, jr = (by_rows ? u % nj : u / ni) * nr;
                    const int m = NASC_MIN(mr, mc - ir), n = NASC_MIN(nr, nc - jr);
                    const float *const *tab = jr < nfull ? bk : ek;
                    const ptrdiff_t boff = jr < nfull ? jr : 0;
                    const GemmMapAt at = {map, ic + ir, jc + jr};
                    float *c = map ? NULL : C + (size_t)(ic + ir) * ldc + jc + jr;
                    p->kernel(kc, arows + ir, a_cs, tab, boff, c, ldc, m, n, alpha, beta_k, stream, map ? &at : NULL);
                }
            }
        }
    }
#if GEMM_X86
    if (stream) _mm_sfence(); /* order the streaming stores before whatever the caller does next */
#endif
}

void gemm_ex(int M, int N, int K, float alpha, const GemmMat *A, const GemmMat *B, float beta, float *C, int ldc,
             int flags) {
    gemm_run(M, N, K, alpha, A, B, beta, C, ldc, flags, NULL);
}

void gemm_batch(int count, int M, int N, int K, const float *A, int lda, size_t sa, const float *B, int ldb,
                size_t sb, float beta, float *C, int ldc, size_t sc) {
    NASC_ASSERT(beta == 0.0f || beta == 1.0f);
    const GemmPath *p = path_get();
    enum { MAX_K = 256, MAX_M = 256 };
    /* gemm_run's own choices for one product: anything but one block with operands in place
     * (each C element a sum along k in order, whichever kernel runs) is left to it; a kernel
     * without masked loads reads a ragged last panel whole, so only where B's rows hold it
     * (Winograd's transforms have a row stride of at least N + 16 on that path) */
    const int whole_panels = p->masked || N % p->nr == 0 || ldb >= (N + p->nr - 1) / p->nr * p->nr;
    if (!whole_panels || K > p->kc || K > MAX_K || M > p->mc || M > MAX_M || N > p->nc || ragged_by_nt(p, N, K) ||
        (M > p->mr && stride_collides(lda)) || stride_collides(ldb) || M <= 0 || N <= 0 || K <= 0) {
        for (int i = 0; i < count; i++) {
            GemmMat a = {A + i * sa, lda, 0, NULL}, b = {B + i * sb, ldb, 0, NULL};
            gemm_ex(M, N, K, 1.0f, &a, &b, beta, C + i * sc, ldc, 0);
        }
        return;
    }
    const int mr = p->mr, nr = p->nr, ni = (M + mr - 1) / mr;
    const float *bk[MAX_K], *arows[MAX_M + 16];
    for (int k = 0; k < K; k++) bk[k] = B + (size_t)k * ldb; /* product i's: bk[k] + i sb */
    for (int i = 0; i < count; i++) {
        const GemmMat Ai = {A + i * sa, lda, 0, NULL};
        a_rows(arows, &Ai, 0, M, mr, 0, NULL, K);
        for (int jr = 0; jr < N; jr += nr)
            for (int u = 0; u < ni; u++) {
                const int ir = u * mr;
                p->kernel(K, arows + ir, 1, bk, (ptrdiff_t)(i * sb) + jr, C + i * sc + (size_t)ir * ldc + jr, ldc,
                          NASC_MIN(mr, M - ir), NASC_MIN(nr, N - jr), 1.0f, beta, 0, NULL);
            }
    }
}

int gemm_map_supported(int K) {
#if GEMM_X86
    const GemmPath *p = path_get();
    return p->kernel == kernel_avx512 && K <= p->kc;
#else
    (void)K;
    return 0;
#endif
}

void gemm_map(int M, int N, int K, const GemmMat *A, const GemmMat *B, const GemmMap *map) {
    NASC_ASSERT(gemm_map_supported(K) && !A->trans && !B->trans && map->wq >= 5 && map->ow <= map->wq &&
                map->W % map->wq == 0);
    gemm_run(M, N, K, 1.0f, A, B, 0.0f, NULL, 0, 0, map);
}

void gemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc) {
    GemmMat a = {A, lda, transa, NULL}, b = {B, ldb, transb, NULL};
    gemm_ex(M, N, K, alpha, &a, &b, beta, C, ldc, 0);
}
