/* gemm.c: single-precision matrix multiply, C (M, N) = alpha * op(A) op(B) + beta * C, row-major.
 *
 * gemm_ref is three plain loops (double accumulation); gemm is the fast path, a cache-blocked
 * scheme in the BLIS style:
 *   for each NC-wide block of columns and KC-deep block of k:
 *     op(B) block -> NR-wide k-major panels (packed, or read in place, see below);
 *     for each MC-high block of rows: op(A) block -> MR-high panels (packed or in place);
 *       for each NR panel, for each MR panel: micro-kernel (MR x NR in registers over KC).
 * The micro-kernel stores alpha * acc + beta * C (beta = 1 after the first k block) and never
 * reads C when beta == 0, so C may then hold garbage (BLAS semantics).
 *
 * Packing costs O(K N) and O(M K) copies, which is a large share of the work for the thin
 * shapes of small CNNs (M = 16 output channels, N = 49 pixels). So the kernels take strides:
 * A is read in place through MR row pointers (rows past M repeat the last row; their results
 * are never stored), and a non-transposed B is read in place except for a ragged last panel,
 * which is packed zero-padded. Packing remains where it pays: transposed B, and A or B with a
 * row stride that would make the panel's rows collide in the L1 cache.
 *
 * Three micro-kernels, picked once at run time: AVX-512F (8 x 48), AVX2+FMA (6 x 16) and a
 * portable one (4 x 8, GNU C vector extensions: SSE2 / NEON) that compiles anywhere.
 * NASC_GEMM=generic|avx2|avx512 forces one (a path the CPU lacks falls back to the best
 * available, with a warning; gemm_path() tells which is used).
 *
 * gemm is single-threaded and reentrant; callers parallelize around it. Its packing buffers
 * come from scratch slot GEMM_SCRATCH_SLOT (3) of the calling thread, so a caller must not
 * hold a pointer from that slot across a gemm call.
 */
#include "ops.h"

#include <stddef.h>
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
/* One MR x NR tile: c (the m x n valid part, row stride ldc) = alpha * A B + beta * c, where
 * A (i, k) = a[i * a_rs + k * a_cs] for i < MR (rows i >= m are clamped to m - 1) and
 * B (k, j) = b[k * b_rs + j] for j < the panel width (n rounded up to the path's granule). */
typedef struct {
    const float *a;
    ptrdiff_t a_rs, a_cs;
    const float *b;
    ptrdiff_t b_rs;
} Tile;
typedef void (*GemmKernel)(int kc, const Tile *t, float *c, int ldc, int m, int n, float alpha, float beta);

typedef struct {
    const char *name;
    int mr, nr;     /* register tile */
    int ng;         /* a ragged last panel is as wide as its columns rounded up to ng (<= nr) */
    int kc, mc, nc; /* cache blocks (mc a multiple of mr, nc of nr) */
    GemmKernel kernel;
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
static void kernel_generic(int kc, const Tile *t, float *c, int ldc, int m, int n, float alpha, float beta) {
    const float *ap[GEN_MR];
    for (int i = 0; i < GEN_MR; i++) ap[i] = t->a + (ptrdiff_t)NASC_MIN(i, m - 1) * t->a_rs;
    v4f acc[GEN_MR][2];
    memset(acc, 0, sizeof acc);
    const float *b = t->b;
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += t->a_cs, b += t->b_rs) {
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
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const Tile *t, float *c, int ldc, int m,
                                                             int n, float alpha, float beta) {
    const float *ap[AVX2_MR];
    for (int i = 0; i < AVX2_MR; i++) ap[i] = t->a + (ptrdiff_t)NASC_MIN(i, m - 1) * t->a_rs;
    __m256 acc[AVX2_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < AVX2_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const float *b = t->b;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += a_cs, b += b_rs) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < AVX2_MR; i++) {
            __m256 ai = _mm256_broadcast_ss(ap[i] + ka);
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

/* AVX-512F: 8 rows x 16 * NV columns, NV = 1..3 vectors (8 x 48 = 24 accumulators in the main
 * case; a ragged last panel uses fewer vectors and masked stores). */
#define AVX512_MR 8
#define AVX512_NR 48
__attribute__((target("avx512f,fma"), always_inline)) static inline void
kernel_avx512_nv(const int NV, int kc, const Tile *t, float *c, int ldc, int m, int n, float alpha,
                 float beta) {
    const float *ap[AVX512_MR];
#pragma GCC unroll 8
    for (int i = 0; i < AVX512_MR; i++) ap[i] = t->a + (ptrdiff_t)NASC_MIN(i, m - 1) * t->a_rs;
    __m512 acc[AVX512_MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < AVX512_MR; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    const float *b = t->b;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    for (ptrdiff_t k = 0, ka = 0; k < kc; k++, ka += a_cs, b += b_rs) {
        __m512 bv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < AVX512_MR; i++) {
            __m512 ai = _mm512_set1_ps(ap[i][ka]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    __mmask16 mask[3];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) {
        int left = n - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < AVX512_MR; i++) {
        if (i >= m) break;
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            __m512 r = acc[i][v];
            if (alpha != 1.0f) r = _mm512_mul_ps(va, r);
            if (beta == 1.0f)
                r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v));
            else if (beta != 0.0f)
                r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
            _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
        }
    }
}

__attribute__((target("avx512f,fma"))) static void kernel_avx512(int kc, const Tile *t, float *c, int ldc,
                                                                 int m, int n, float alpha, float beta) {
    if (n > 32)
        kernel_avx512_nv(3, kc, t, c, ldc, m, n, alpha, beta);
    else if (n > 16)
        kernel_avx512_nv(2, kc, t, c, ldc, m, n, alpha, beta);
    else
        kernel_avx512_nv(1, kc, t, c, ldc, m, n, alpha, beta);
}
#endif

/* ------------------------------------------------------------------ paths */
enum { PATH_GENERIC, PATH_AVX2, PATH_AVX512, PATH_COUNT };

static const GemmPath gemm_paths[PATH_COUNT] = {
    [PATH_GENERIC] = {"generic", GEN_MR, GEN_NR, GEN_NR, 256, 128, 2048, kernel_generic},
#if GEMM_X86
    [PATH_AVX2] = {"avx2", AVX2_MR, AVX2_NR, AVX2_NR, 256, 144, 2048, kernel_avx2},
    [PATH_AVX512] = {"avx512", AVX512_MR, AVX512_NR, 16, 192, 512, 2064, kernel_avx512},
#endif
};

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
/* op(A) rows [0, mc), k [0, kc) (A already offset to the block) into MR-high k-major panels
 * (read back with a_rs = 1, a_cs = mr); rows past mc are zero. */
static void pack_a(int transa, int mc, int kc, const float *A, int lda, int mr, float *dst) {
    for (int i0 = 0; i0 < mc; i0 += mr) {
        int m = NASC_MIN(mr, mc - i0);
        for (int k = 0; k < kc; k++) {
            float *d = dst + (size_t)k * mr;
            if (transa)
                for (int i = 0; i < m; i++) d[i] = A[(size_t)k * lda + i0 + i];
            else
                for (int i = 0; i < m; i++) d[i] = A[(size_t)(i0 + i) * lda + k];
            for (int i = m; i < mr; i++) d[i] = 0.0f;
        }
        dst += (size_t)mr * kc;
    }
}

/* op(B) k [0, kc), columns [0, nc) into k-major panels of width nr (read back with
 * b_rs = the panel width); the last panel is as wide as its columns rounded up to ng, and
 * its padding is zero. */
static void pack_b(int transb, int kc, int nc, const float *B, int ldb, int nr, int ng, float *dst) {
    for (int j0 = 0; j0 < nc; j0 += nr) {
        int n = NASC_MIN(nr, nc - j0);
        int w = n == nr ? nr : NASC_MIN(nr, (n + ng - 1) / ng * ng);
        if (!transb) {
            for (int k = 0; k < kc; k++) {
                const float *src = B + (size_t)k * ldb + j0;
                float *d = dst + (size_t)k * w;
                memcpy(d, src, (size_t)n * sizeof *d);
                for (int j = n; j < w; j++) d[j] = 0.0f;
            }
        } else { /* op(B)(k, j) = B[j][k]: walk n rows of B side by side */
            for (int k = 0; k < kc; k++) {
                float *d = dst + (size_t)k * w;
                for (int j = 0; j < n; j++) d[j] = B[(size_t)(j0 + j) * ldb + k];
                for (int j = n; j < w; j++) d[j] = 0.0f;
            }
        }
        dst += (size_t)w * kc;
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

void gemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
        return;
    }
    const GemmPath *p = path_get();
    const int mr = p->mr, nr = p->nr;
    /* A is packed when its rows would be read with a colliding stride; B when transposed or
     * colliding. Otherwise both are read in place (see the file comment). */
    const int pack_A = !transa && M > mr && stride_collides(lda);
    const int pack_B = transb || stride_collides(ldb);
    /* Blocks no larger than needed, the k blocks balanced so the last one is not tiny. */
    int kcb = NASC_MIN(p->kc, K);
    int nkb = (K + kcb - 1) / kcb;
    kcb = (K + nkb - 1) / nkb;
    int mcb = NASC_MIN(p->mc, (M + mr - 1) / mr * mr);
    int ncb = NASC_MIN(p->nc, (N + nr - 1) / nr * nr);
    size_t a_floats = pack_A ? (size_t)mcb * kcb : 0;
    size_t b_floats = (size_t)kcb * (pack_B ? ncb : nr);
    float *apack = scratch_get(GEMM_SCRATCH_SLOT, (a_floats + b_floats) * sizeof(float) + 64);
    float *bpack = apack + (a_floats + 15) / 16 * 16;

    for (int jc = 0; jc < N; jc += ncb) {
        int nc = NASC_MIN(ncb, N - jc);
        for (int pc = 0; pc < K; pc += kcb) {
            int kc = NASC_MIN(kcb, K - pc);
            float beta_k = pc == 0 ? beta : 1.0f;
            const float *Bblk = transb ? B + (size_t)jc * ldb + pc : B + (size_t)pc * ldb + jc;
            if (pack_B) pack_b(transb, kc, nc, Bblk, ldb, nr, p->ng, bpack);
            for (int ic = 0; ic < M; ic += mcb) {
                int mc = NASC_MIN(mcb, M - ic);
                const float *Ablk = transa ? A + (size_t)pc * lda + ic : A + (size_t)ic * lda + pc;
                if (pack_A) pack_a(transa, mc, kc, Ablk, lda, mr, apack);
                for (int jr = 0; jr < nc; jr += nr) {
                    int n = NASC_MIN(nr, nc - jr);
                    Tile t;
                    if (pack_B) {
                        t.b = bpack + (size_t)jr * kc;
                        t.b_rs = n == nr ? nr : NASC_MIN(nr, (n + p->ng - 1) / p->ng * p->ng);
                    } else if (n == nr) {
                        t.b = Bblk + jr;
                        t.b_rs = ldb;
                    } else { /* ragged last panel: pack it so the kernel never reads past N */
                        pack_b(0, kc, n, Bblk + jr, ldb, nr, p->ng, bpack);
                        t.b = bpack;
                        t.b_rs = NASC_MIN(nr, (n + p->ng - 1) / p->ng * p->ng);
                    }
                    for (int ir = 0; ir < mc; ir += mr) {
                        int m = NASC_MIN(mr, mc - ir);
                        if (pack_A) {
                            t.a = apack + (size_t)ir * kc, t.a_rs = 1, t.a_cs = mr;
                        } else if (transa) {
                            t.a = Ablk + ir, t.a_rs = 1, t.a_cs = lda;
                        } else {
                            t.a = Ablk + (size_t)ir * lda, t.a_rs = lda, t.a_cs = 1;
                        }
                        p->kernel(kc, &t, C + (size_t)(ic + ir) * ldc + jc + jr, ldc, m, n, alpha, beta_k);
                    }
                }
            }
        }
    }
}
