/* gemm_ex.h: the general entry point behind gemm(), private to src/ops (conv.c uses it).
 *
 * An operand is either a strided matrix (p, ld, trans) as in gemm(), or a table of row
 * pointers: row i of the untransposed matrix starts at rows[i] and its elements are
 * contiguous. Rows may overlap. This lets conv read its "im2col" matrix straight from the
 * (phase-split, padded) input without building it. */
#ifndef NASC_GEMM_EX_H
#define NASC_GEMM_EX_H

#include <stddef.h>

#include "../core/common.h"

typedef struct {
    const float *p;           /* the matrix, row-major with row stride ld (unused with rows) */
    int ld;
    int trans;                /* op = transpose (not allowed with rows) */
    const float *const *rows; /* NULL, or one pointer per row of the untransposed matrix */
} GemmMat;

/* flags: GEMM_STREAM_C writes C (when beta == 0 and K fits one k block) with non-temporal
 * stores where aligned: for large outputs that are not read again soon. */
#define GEMM_STREAM_C 1

/* C (M, N) = alpha * op(A) op(B) + beta * C; same contract as gemm() in ops.h. */
void gemm_ex(int M, int N, int K, float alpha, const GemmMat *A, const GemmMat *B, float beta, float *C, int ldc,
             int flags);

/* Where gemm_map puts C: C's columns are the cells of conv's output grid, oy * W + j * wq + ox
 * (W = images * wq), and cell (oy, j, ox) of row r is element oy * ow + ox of y + j * img_stride
 * + r * row_stride; the cells with ox >= ow (the grid's padding columns) are dropped. The
 * kernel stores each register row through masked stores, so the grid is never written out. */
typedef struct {
    float *y;
    size_t img_stride, row_stride;
    int W, wq, ow;
    const float *bias; /* NULL, or one value per row, added */
    int accumulate;    /* y += instead of y = */
    /* NULL, or values laid out as y: each value v is stored as 0 + v f'(mask) (f = ReLU, or
     * ReLU6 with mask_relu6), as an activation's backward would make it from v. Winograd's
     * output transform only (conv.c), never gemm's kernel. */
    const float *mask;
    int mask_relu6;
} GemmMap;

/* count products C_i = A_i B_i + beta C_i (beta 0 or 1), A_i = A + i sa (M x K, row stride lda),
 * B_i = B + i sb (K x N, ldb; every row, the last one's too, ldb floats that may be read), C_i =
 * C + i sc (M x N, ldc), each equal bit for bit to gemm_ex's
 * of the same operands, with one setup for all of them where that holds: Winograd's 36 small
 * products a block of tiles (16 -> 16 channels on 28x28, batch 128, 2 threads: forward 1.69 ->
 * 1.61 ms, backward 3.25 -> 3.07; gemm_ex's setup had been 4-5% of the conv's time). */
void gemm_batch(int count, int M, int N, int K, const float *A, int lda, size_t sa, const float *B, int ldb,
                size_t sb, float beta, float *C, int ldc, size_t sc);

/* Whether gemm_map runs for this K (the AVX-512 path, and K within one k block: with more,
 * each block's partial sums would go through the map, measured slower than writing the grid). */
int gemm_map_supported(int K);
/* The product op(A) op(B) (alpha 1, A not transposed) stored through map. */
void gemm_map(int M, int N, int K, const GemmMat *A, const GemmMat *B, const GemmMap *map);

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

/* A run of a vector's lanes kept by a GemmMap: lane l goes to row + off + l. */
#define MAP_RUNS 4
typedef struct {
    ptrdiff_t off;
    __mmask16 lanes;
} MapRun;

/* The runs of the n lanes of the vector whose lane 0 is column q0: at most MAP_RUNS (a run
 * per image met; a vector meets at most 3 images with wq >= 8, and at most 4 with wq >= 5:
 * narrower grids are not mapped, gemm_map). */
int gemm_map_runs(const GemmMap *g, int q0, int n, MapRun *run);
#endif

#endif
