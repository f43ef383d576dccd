/* gemm_ex.h: the general entry point behind gemm(), private to src/ops (conv.c uses it).
 *
 * An operand is either a strided matrix (p, ld, trans) as in gemm(), or a table of row
 * pointers: row i of the untransposed matrix starts at rows[i] and its elements are
 * contiguous. Rows may overlap. This lets conv read its "im2col" matrix straight from the
 * (phase-split, padded) input without building it. */
#ifndef NASC_GEMM_EX_H
#define NASC_GEMM_EX_H

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

#endif
