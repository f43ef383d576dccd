/* ops.h: the numerical kernels of the engine, forward and backward.
 *
 * Conventions (STYLE.md):
 *   - Tensors are dense, contiguous, NCHW, batch first. A "(N, C, H, W)" comment gives the shape.
 *   - Arguments in a fixed order: outputs, saved values, inputs, sizes.
 *   - Forward kernels overwrite their outputs. Backward kernels ACCUMULATE (+=) into every
 *     gradient they are given; a gradient pointer may be NULL when it is not needed
 *     (e.g. dx of the first layer), and then it is skipped.
 *   - Each family has a plain reference kernel (`*_ref`, element type `real`, single
 *     threaded, obviously correct) and, where it pays, a fast float kernel beside it that
 *     is tested against the reference. The unsuffixed name is what the engine calls: it
 *     picks the fast path when there is one.
 *   - The gradient checker compiles the reference kernels with -DNASC_REAL=double
 *     -DNASC_REF_ONLY, so everything outside `#ifndef NASC_REF_ONLY` must use `real`.
 */
#ifndef NASC_OPS_H
#define NASC_OPS_H

#include "../core/common.h"

/* ---------------------------------------------------------------- conv2d (conv.c) */
typedef struct {
    int n;            /* batch */
    int cin, h, w;    /* input channels and size */
    int cout, oh, ow; /* output channels and size (set by conv_dims_init) */
    int k;            /* square kernel size */
    int stride, pad, dil, groups;
} ConvDims;

/* Fills oh/ow from the others; returns NASC_ERR (with message) if the shape is impossible
 * (channels not divisible by groups, output smaller than 1x1, ...). */
int conv_dims_init(ConvDims *d, Err *e);

/* y (N, cout, oh, ow) = conv(x (N, cin, h, w), w (cout, cin/groups, k, k)) + b (cout) or no bias if b == NULL */
void conv2d_forward_ref(real *y, const real *x, const real *w, const real *b, const ConvDims *d);
void conv2d_backward_ref(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w,
                         const ConvDims *d);
#ifndef NASC_REF_ONLY
void conv2d_forward(float *y, const float *x, const float *w, const float *b, const ConvDims *d);
void conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                     const ConvDims *d);
/* conv2d_backward that overwrites dx (dx = ...) when dx_accumulate == 0; dw/db accumulate. */
void conv2d_backward_ex(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        const ConvDims *d, int dx_accumulate);
#endif

/* ---------------------------------------------------------------- gemm (gemm.c) */
#ifndef NASC_REF_ONLY
/* C (M, N) = alpha * op(A) op(B) + beta * C, row-major, op = transpose if the flag is set.
 * lda/ldb/ldc are row strides. Single-threaded; callers parallelize around it. */
void gemm_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void gemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);
/* Name of the gemm path chosen at run time ("avx512", "avx2", "generic"). */
const char *gemm_path(void);
#endif

/* ---------------------------------------------------------------- linear (linear.c) */
/* y (N, out) = x (N, in) w^T + b; w (out, in) as in PyTorch; b may be NULL. */
void linear_forward_ref(real *y, const real *x, const real *w, const real *b, int n, int in, int out);
void linear_backward_ref(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w, int n,
                         int in, int out);
#ifndef NASC_REF_ONLY
void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out);
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int n,
                     int in, int out);
#endif

/* ---------------------------------------------------------------- batch norm (norm.c) */
/* PyTorch semantics: training mode normalizes with the batch mean and the biased variance,
 * and updates running_mean/var with momentum using the UNBIASED variance (n*h*w/(n*h*w-1)).
 * Saves mean (C) and invstd (C) = 1/sqrt(var + eps) for the backward. */
void bn_forward_train_ref(real *y, real *mean, real *invstd, const real *x, const real *gamma,
                          const real *beta, real *running_mean, real *running_var, int n, int c, int hw,
                          real momentum, real eps);
/* Eval mode: normalizes with the running statistics. */
void bn_forward_eval_ref(real *y, const real *x, const real *gamma, const real *beta,
                         const real *running_mean, const real *running_var, int n, int c, int hw, real eps);
/* Backward of the training-mode forward. */
void bn_backward_ref(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *gamma,
                     const real *mean, const real *invstd, int n, int c, int hw);
#ifndef NASC_REF_ONLY
void bn_forward_train(float *y, float *mean, float *invstd, const float *x, const float *gamma,
                      const float *beta, float *running_mean, float *running_var, int n, int c, int hw,
                      float momentum, float eps);
void bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                     const float *running_mean, const float *running_var, int n, int c, int hw, float eps);
void bn_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma,
                 const float *mean, const float *invstd, int n, int c, int hw);
/* bn_backward that overwrites dx (dx = ...) when accumulate == 0; dgamma/dbeta still accumulate. */
void bn_backward_ex(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma,
                    const float *mean, const float *invstd, int n, int c, int hw, int accumulate);
#endif

/* ---------------------------------------------------------------- activations (act.c) */
typedef enum { ACT_RELU, ACT_RELU6, ACT_HSWISH, ACT_SIGMOID, ACT_HSIGMOID, ACT_COUNT } ActKind;
/* y = f(x) elementwise over n values; backward: dx += dy * f'(x) (uses the input x). */
void act_forward_ref(ActKind kind, real *y, const real *x, size_t n);
void act_backward_ref(ActKind kind, real *dx, const real *dy, const real *x, size_t n);
#ifndef NASC_REF_ONLY
void act_forward(ActKind kind, float *y, const float *x, size_t n);
void act_backward(ActKind kind, float *dx, const float *dy, const float *x, size_t n);
/* act_backward that overwrites dx (dx = dy f'(x)) when accumulate == 0. */
void act_backward_ex(ActKind kind, float *dx, const float *dy, const float *x, size_t n, int accumulate);

/* Fused batch norm + activation (norm.c), act = ACT_RELU or ACT_RELU6: y = act(bn(x)) in one
 * pass, bitwise equal to bn_forward_* followed by act_forward. The training forward writes
 * BN_ACT_SAVED * c floats to `saved`: the batch mean and invstd (as bn_forward_train's mean and
 * invstd), then the exact constants it normalized with. The backward takes x, the same gamma,
 * beta and saved, and dy, the gradient w.r.t. y (the activation's derivative is recomputed
 * from x exactly: bn(x) > 0, resp. 0 < bn(x) < 6); it equals act_backward into a zeroed buffer
 * followed by bn_backward. dx is overwritten when accumulate == 0; dgamma/dbeta accumulate. */
#define BN_ACT_SAVED 4
void bn_act_forward_train(ActKind act, float *y, float *saved, const float *x, const float *gamma, const float *beta,
                          float *running_mean, float *running_var, int n, int c, int hw, float momentum, float eps);
void bn_act_forward_eval(ActKind act, float *y, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, int n, int c, int hw, float eps);
/* A conv's input made on demand from the BN + ReLU/ReLU6 before it, so that output need not be
 * stored: bn_act_forward_train with y == NULL only computes and saves the statistics and
 * constants, and act_rows makes rows (image, channel) of its output, bit for bit the values it
 * would have written, from BN's input x. An ActSrc with saved == NULL is a stored input x. */
typedef struct {
    const float *x;     /* the stored input, or BN's input */
    const float *saved; /* NULL, or what bn_act_forward_train saved (BN_ACT_SAVED * c floats) */
    const float *beta;  /* BN's beta (NULL: 0) */
    ActKind act;
    int c, hw;
} ActSrc;
/* Rows [r0, r0 + nr): a pointer into s->x when it is stored, else made into buf (nr * hw floats). */
const float *act_rows(const ActSrc *s, float *buf, size_t r0, size_t nr);
/* What act_rows applies to channel ch of a made input: act(((x - k[0]) - k[1]) * k[2] + k[3]),
 * in that order of float operations (for kernels that make the input while copying it), and
 * act_row that to n values (y and x must not overlap). */
void act_consts(const ActSrc *s, int ch, float k[4]);
void act_row(ActKind act, const float k[4], float *y, const float *x, int n);
/* The training forward from rows already summed: bn_row_stats sums rows [r0, r0 + nr) of x (x
 * points at row r0) into rs (3 doubles per row), as the conv that writes x does chunk by chunk
 * while the rows are in cache; bn_forward_rows is then bn_act_forward_train (act ACT_COUNT:
 * bn_forward_train, with saved = mean, invstd, then the constants) whose statistics read
 * nothing but row_stats (every row's), in one pass over x when y is wanted; y == NULL:
 * statistics and constants only (the consumer makes y, act_rows). Each row is summed about its
 * own first value and the rows are combined in image order, the same way in both, so the
 * results are bitwise equal. */
void bn_row_stats(double *rs, const float *x, size_t r0, size_t nr, int hw);
void bn_forward_rows(ActKind act, float *y, float *saved, const double *row_stats, const float *x, const float *gamma,
                     const float *beta, float *running_mean, float *running_var, int n, int c, int hw, float momentum,
                     float eps);
void bn_act_backward(ActKind act, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                     const float *gamma, const float *beta, const float *saved, int n, int c, int hw, int accumulate);

/* A conv's output gradient made on demand from the BN (+ ReLU/ReLU6) that follows it, so BN's
 * dx is never stored: bn_grad_prepare runs the BN backward's first pass (dgamma and dbeta
 * accumulate as in bn_backward) and fixes each channel's constants of dx = a g + bb (x - mean)
 * + c0, g = dy masked by the activation's derivative; the conv's backward then calls
 * grad_rows for each chunk of rows (image, channel) while it needs them. The rows equal, bit
 * for bit, what bn_backward_ex / bn_act_backward would write with accumulate == 0. A GradSrc
 * with k == NULL is a stored gradient dy. act == ACT_COUNT: BN alone (saved as bn_fwd's: mean,
 * invstd), else saved as bn_act_forward_train wrote it. rs: NULL, or the first pass's row sums
 * already made by bn_row_sums (below). */
typedef struct {
    float mhi, mlo, scale, b; /* the forward's constants (for the mask) */
    float a, bb, c0;          /* the backward's */
} BnBwdK;
typedef struct {
    const float *dy; /* the stored gradient, or the BN (+ act) output's gradient */
    const float *x;  /* with k: BN's input */
    const BnBwdK *k; /* c of them, or NULL */
    ActKind act;
    int c, hw;
} GradSrc;
void bn_grad_prepare(GradSrc *src, BnBwdK *kc, const double *rs, float *dgamma, float *dbeta, ActKind act,
                     const float *dy, const float *x, const float *gamma, const float *beta, const float *saved, int n,
                     int c, int hw);
/* Rows [r0, r0 + nr) of the gradient: a pointer into s->dy when it is stored, else made into
 * buf (nr * hw floats). */
const float *grad_rows(const GradSrc *s, float *buf, size_t r0, size_t nr);
/* The BN backward's first pass done by the conv that writes dy (the gradient of the BN + act
 * output it alone consumes), chunk by chunk while the rows are in cache: bn_row_sums_init
 * (kc: c of them, rs: (n * c, 2) doubles), then bn_row_sums for each chunk of dy rows [r0, r0
 * + nr) once they are final (dy points at row r0); bn_grad_prepare then takes rs. The sums are
 * bitwise those of bn_grad_prepare's own pass. */
typedef struct {
    double *rs;      /* per row: sum g, sum g (x - mean) */
    const float *x;  /* BN's input */
    const BnBwdK *k; /* the forward's constants */
    ActKind act;
    int c, hw;
} BnRowSums;
void bn_row_sums_init(BnRowSums *s, double *rs, BnBwdK *kc, ActKind act, const float *x, const float *beta,
                      const float *saved, int c, int hw);
void bn_row_sums(const BnRowSums *s, const float *dy, size_t r0, size_t nr);
/* The BN after a conv in eval mode, with the ReLU/ReLU6 after it (act; ACT_COUNT: none), as the
 * conv applies it to each chunk of its output while the chunk is in cache, so that the conv's
 * own output is never stored: rows r (channel r % c) of y = act((x - mean) * scale + beta), bit
 * for bit what bn_forward_eval / bn_act_forward_eval make. bn_eval_scales fills scale (c
 * floats) as they compute it; bn_eval_rows applies k to rows [r0, r0 + nr) (x and y point at
 * row r0 and must not overlap). */
typedef struct {
    ActKind act;
    const float *mean, *scale, *beta; /* beta NULL: 0 */
} BnEval;
void bn_eval_scales(float *scale, const float *gamma, const float *running_var, int c, float eps);
void bn_eval_rows(const BnEval *k, float *y, const float *x, size_t r0, size_t nr, int c, int hw);
/* conv2d_forward and conv2d_backward_ex with the input from an ActSrc and the output gradient
 * from a GradSrc (conv.c; depthwise too). The forward, when row_stats is not NULL, calls
 * bn_row_stats(row_stats, ...) on each chunk of y once it is final; with epi (and no
 * row_stats), y is epi applied to the conv's output. The backward, when sums is not NULL, calls
 * bn_row_sums(sums, ...) on each chunk of dx. */
void conv2d_forward_src(float *y, const ActSrc *x, const float *w, const float *b, const ConvDims *d,
                        double *row_stats, const BnEval *epi);
/* The gradient of a conv's input taken through the ReLU/ReLU6 before it (a lone activation
 * whose output the conv makes on demand: NAS-Bench-201's ReLU-conv-BN edges): with mask,
 * conv2d_backward_src's dx is the activation's input gradient, dx (+)= 0 + act'(x) * (the
 * conv's dx), as act_backward_ex would make it from the conv's dx had that been stored. Only
 * where conv2d_dx_maskable(d) (dx by Winograd, whose output transform applies it). */
typedef struct {
    const float *x; /* the activation's input, laid out as dx */
    ActKind act;    /* ACT_RELU or ACT_RELU6 */
} DxMask;
int conv2d_dx_maskable(const ConvDims *d);
void conv2d_backward_src(float *dx, float *dw, float *db, const GradSrc *dy, const ActSrc *x, const float *w,
                         const ConvDims *d, int dx_accumulate, const BnRowSums *sums, const DxMask *mask);
#endif

/* ---------------------------------------------------------------- pooling (pool.c) */
typedef struct {
    int n, c, h, w; /* input */
    int oh, ow;     /* output (set by pool_dims_init) */
    int k, stride, pad;
    int count_include_pad; /* avg pool: divide by k*k (1) or by the number of in-bounds cells (0) */
} PoolDims;
int pool_dims_init(PoolDims *d, Err *e); /* PyTorch floor mode; pad must be <= k/2 */

/* Max pool saves the flat index (within the h*w plane) of each output's maximum in argmax. */
void maxpool_forward_ref(real *y, int32_t *argmax, const real *x, const PoolDims *d);
void maxpool_backward_ref(real *dx, const real *dy, const int32_t *argmax, const PoolDims *d);
void avgpool_forward_ref(real *y, const real *x, const PoolDims *d);
void avgpool_backward_ref(real *dx, const real *dy, const PoolDims *d);
/* Global average pool: y (N, C) = mean over h*w of x (N, C, h*w). */
void gap_forward_ref(real *y, const real *x, int n, int c, int hw);
void gap_backward_ref(real *dx, const real *dy, int n, int c, int hw);
#ifndef NASC_REF_ONLY
void maxpool_forward(float *y, int32_t *argmax, const float *x, const PoolDims *d);
void maxpool_backward(float *dx, const float *dy, const int32_t *argmax, const PoolDims *d);
/* The lane masks of an h x w plane walked as vectors of 16 cells, for 3x3 windows with padding
 * 1 (pool.c's and qelem.c's 3x3 average pools): all[v] = the cells of vector v in the plane,
 * and those of them with a neighbour to the left, to the right, above and below (nv = (h w +
 * 15) / 16 entries each). box3_masks_init lays them out at mem (box3_masks_bytes(h, w) bytes,
 * whole 64-byte lines), fills them and returns the first byte past them. */
typedef struct {
    int hw, w, nv;
    uint16_t *all, *left, *right, *up, *down;
} Box3Masks;
size_t box3_masks_bytes(int h, int w);
void *box3_masks_init(Box3Masks *m, void *mem, int h, int w);
void avgpool_forward(float *y, const float *x, const PoolDims *d);
void avgpool_backward(float *dx, const float *dy, const PoolDims *d);
void gap_forward(float *y, const float *x, int n, int c, int hw);
void gap_backward(float *dx, const float *dy, int n, int c, int hw);
/* gap_backward that overwrites dx (dx = dy / hw) when accumulate == 0. */
void gap_backward_ex(float *dx, const float *dy, int n, int c, int hw, int accumulate);
#endif

/* ---------------------------------------------------------------- elementwise (elem.c) */
/* y = sum of nin inputs, each of n values; backward: dx_i += dy for each non-NULL dx_i. */
void add_forward_ref(real *y, const real *const *xs, int nin, size_t n);
void add_backward_ref(real *const *dxs, const real *dy, int nin, size_t n);
/* Channel concat of nin inputs (N, c_i, hw) into y (N, sum c_i, hw). */
void concat_forward_ref(real *y, const real *const *xs, const int *cs, int nin, int n, int hw);
void concat_backward_ref(real *const *dxs, const real *dy, const int *cs, int nin, int n, int hw);
/* Channel scale (squeeze-excitation): y (N, C, hw) = x (N, C, hw) * s (N, C). */
void chmul_forward_ref(real *y, const real *x, const real *s, int n, int c, int hw);
void chmul_backward_ref(real *dx, real *ds, const real *dy, const real *x, const real *s, int n, int c,
                        int hw);
/* Inverted dropout: mask holds 0 or 1/(1-p) per element, drawn from rng; y = x * mask. */
void dropout_forward_ref(real *y, real *mask, const real *x, size_t n, real p, Rng *rng);
void dropout_backward_ref(real *dx, const real *dy, const real *mask, size_t n);
#ifndef NASC_REF_ONLY
void add_forward(float *y, const float *const *xs, int nin, size_t n);
void add_backward(float *const *dxs, const float *dy, int nin, size_t n);
/* add_backward where input j's gradient is overwritten (dx_j = dy) when accumulate[j] == 0
 * (accumulate == NULL: all accumulate). */
void add_backward_ex(float *const *dxs, const float *dy, int nin, size_t n, const int *accumulate);
/* add followed by ReLU / ReLU6 in one pass (elem.c): y = act(x0 + x1 + ...), bitwise equal to
 * add_forward then act_forward. The backward takes the fused output y and dy = dL/dy, and
 * gives each non-NULL input gradient dy * act'(y), overwritten where accumulate[j] == 0
 * (accumulate may be NULL: all accumulate), as act_backward then add_backward_ex would. */
void add_act_forward(ActKind act, float *y, const float *const *xs, int nin, size_t n);
void add_act_backward(ActKind act, float *const *dxs, const float *dy, const float *y, int nin, size_t n,
                      const int *accumulate);
/* add_forward (act ACT_COUNT) or add_act_forward over `rows` rows of hw values, input j stored
 * or made on demand from a BN before it (act_rows; a residual join whose BN output is never
 * stored): bitwise the same sums. */
void add_src_forward(ActKind act, float *y, const ActSrc *xs, int nin, size_t rows, int hw);
#endif

/* ---------------------------------------------------------------- resize (resize.c) */
/* Bilinear resize of nc planes (h, w) -> (oh, ow), PyTorch's align_corners=False. */
void resize_forward_ref(real *y, const real *x, int nc, int h, int w, int oh, int ow);
void resize_backward_ref(real *dx, const real *dy, int nc, int h, int w, int oh, int ow);

/* ---------------------------------------------------------------- loss (loss.c) */
/* Mean softmax cross-entropy over n rows of k logits, with label smoothing eps (PyTorch's
 * definition: target = (1-eps) one-hot + eps/k). Saves the softmax in probs (n, k).
 * Returns the mean loss (in double). */
double xent_forward_ref(real *probs, const real *logits, const int *labels, int n, int k, real smoothing);
/* dlogits += (probs - target) / n * scale */
void xent_backward_ref(real *dlogits, const real *probs, const int *labels, int n, int k, real smoothing,
                       real scale);
/* Knowledge distillation (Hinton et al. 2015): the mean over n rows of
 * T^2 KL(softmax(teacher/T) || softmax(logits/T)). Saves the student's softmax(logits/T) in
 * ps (n, k) and the teacher's in pt (n, k). The teacher's logits get no gradient. */
double kd_forward_ref(real *ps, real *pt, const real *logits, const real *teacher, int n, int k, real temperature);
/* dlogits += T (ps - pt) / n * scale */
void kd_backward_ref(real *dlogits, const real *ps, const real *pt, int n, int k, real temperature, real scale);

#endif
