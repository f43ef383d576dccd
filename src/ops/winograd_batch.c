/* winograd_batch.c: 3x3 convolutions with padding 1 and one group by Winograd's minimal
 * filtering with sixteen images a vector (AVX-512), for batches of training and evaluation:
 * stride 2 as F(7x7, 3x3) on the four phases (ws2_*), stride 1 as F(4x4, 3x3) (wb1_*); on AVX2
 * machines both with eight images a vector (the sixteen-lane description below with 8 for 16:
 * Wb.L; the "8" functions at the end, the drivers choosing by it). conv.c hands a conv here when
 * its shape suits (ws2_shape_ok, wb1_shape_ok) and each thread has at least 12 images.
 *
 * Layout (both strides): lane j of every vector is image j of a chunk of 16. A chunk's input is
 * copied once into planes of 16-image vectors (16 images' rows transposed into columns; stride
 * 2: four phase planes a channel), zero where the padded input is; a tile's values are then
 * whole vectors, loaded and stored without shuffles, and every image has its own tiles (none
 * straddles two images). Outputs are transposed back into each image's rows, and output
 * gradients into vectors the same way. Tiles go through the transforms and gemms a block at a
 * time (a unit: one chunk's tile row); a point's values of a channel are a row of N = (tiles
 * of the block) x 16 floats. conv.c's F(4x4, 3x3) instead runs sixteen tiles of a tile row a
 * vector across images side by side, the rows' columns split by shuffles; here 16 -> 16
 * channels on 28x28 (each image seven tiles a row, none in vain) forward 1.69 -> 1.32 ms,
 * backward 3.21 -> 2.55 ms (batch 128, 2 threads).
 *
 * Stride 1: F(4x4, 3x3) with conv.c's transforms (bt6, at4, at4t, b6: conv_internal.h) and
 * kernels (winograd_weights), 36 products a 4x4 tile and channel pair for the direct 144, on
 * planes of 4 th + 2 rows and 4 tw + 2 columns; in dx's adjoint the patches of neighbouring
 * tiles overlap by two rows and columns, added where an earlier tile wrote.
 *
 * Stride 2: split into its four phases (padded rows 2i + pr, columns 2q + pc), a stride-2 3x3 conv is the
 * sum of four stride-1 convs on the phase planes: phase (0, 0) with the 2x2 kernel of taps
 * ({0,2}, {0,2}), (0, 1) with the 2x1 of taps ({0,2}, 1), (1, 0) with (1, {0,2}), (1, 1) with
 * tap (1, 1). Along a dimension with two taps a tile of 7 outputs is F(7, 2): 8 points (those
 * of F(6, 3): 0, 1, -1, 2, -2, 1/2, -1/2 and infinity; its B^T as Lavin's and NNPACK's, G
 * scaled to match), y = A^T ((G g) . (B^T d)); along one with one tap the tile's 7 values are
 * taken as they are. So a 7x7 output tile costs (8 + 7)^2 = 225 products a channel pair where
 * the direct conv takes 441, and 14x14 and 7x7 outputs (Fashion-MNIST's stride-2 layers) are
 * whole tiles. In float, F(7, 2) of random data is within 1e-6 of the exact sums, relatively.
 *
 * The 225 points fall in four groups by the phase they come from, each its own products:
 *   A  phase (0, 0): 8 x 8 points, V = B^T P B, one kernel (G k G^T) a point: 64 gemms;
 *   B  phase (0, 1): 8 x 7, V = B^T P, the kernel per row point: 8 gemms of 7 tiles' columns;
 *   C  phase (1, 0): 7 x 8, V = P B, per column point: 8 gemms;
 *   D  phase (1, 1): 7 x 7, the one tap: one gemm of 49 tiles' columns.
 * and the output tile is Y = (A^T M_A + M_C) A + (A^T M_B + M_D): the row transform of M_A
 * (into R0) and of M_B (into R1) is taken as soon as their products are, and the products of
 * C and D are added into R0 and R1 by their gemms (beta 1), so no more than one group's points
 * are held at a time.
 */
#include "conv_internal.h"
#include "gemm_ex.h"
#include "simd.h"

#if CONV_X86

#define WB_LANES 16 /* images a vector, a chunk */

/* G of F(7, 2) (two taps g0, g1 -> the 8 points' values), in the scaling that matches B^T. */
static const double ws2_g[8][2] = {{1, 0},
                                   {-2.0 / 9, -2.0 / 9},
                                   {-2.0 / 9, 2.0 / 9},
                                   {1.0 / 90, 1.0 / 45},
                                   {1.0 / 90, -1.0 / 45},
                                   {32.0 / 45, 16.0 / 45},
                                   {32.0 / 45, -16.0 / 45},
                                   {0, 1}};

int ws2_shape_ok(const ConvDims *d) {
    if (d->k != 3 || d->stride != 2 || d->pad != 1 || d->dil != 1 || d->groups != 1) return 0;
    if (d->cin < 8 || d->cout < 16) return 0;
    /* whole tiles only (14x14 and 7x7 outputs): a ragged last tile would compute up to 6/7 of
     * a tile row or column in vain */
    return d->oh % 7 == 0 && d->ow % 7 == 0;
}

/* The plan of one thread's images: plane sizes, chunks a group, units a block. */
typedef struct {
    int cin, cout, h, w, oh, ow;
    int s;        /* stride: 2 (F(7x7, 3x3) on four phases) or 1 (F(4x4, 3x3)) */
    int tm;       /* outputs a tile side: 7 or 4 */
    int th, tw;   /* tile rows and tiles a row of an image (7x7 or 4x4 outputs each) */
    int R, Qc;    /* rows and columns of a (phase) plane */
    size_t plane; /* floats of one plane of a chunk (R Qc 16) */
    size_t chunk; /* floats of a chunk's planes (s s cin planes) */
    int cpg;      /* chunks a group (filled together) */
    int L;        /* images a vector, a chunk: 16 (AVX-512), or 8 (AVX2) */
    int upb;      /* units (a chunk's tile row) a block */
} Wb;

static Wb wb_plan(const ConvDims *d) {
    Wb s;
    s.cin = d->cin, s.cout = d->cout, s.h = d->h, s.w = d->w, s.oh = d->oh, s.ow = d->ow, s.s = d->stride;
    s.tm = s.s == 2 ? 7 : 4;
    if (s.s == 2) {
        s.th = (d->oh + 6) / 7, s.tw = (d->ow + 6) / 7;
        s.R = 7 * s.th + 1, s.Qc = 7 * s.tw + 1;
    } else {
        s.th = (d->oh + 3) / 4, s.tw = (d->ow + 3) / 4;
        s.R = 4 * s.th + 2, s.Qc = 4 * s.tw + 2;
    }
    s.L = use_avx512() ? WB_LANES : 8;
    s.plane = (size_t)s.R * s.Qc * s.L;
    s.chunk = (size_t)s.s * s.s * s.cin * s.plane;
    /* one tile row a block: the smallest blocks were the fastest (stride 2, one thread, 16 -> 32
     * on 28x28 / 32 -> 64 on 14x14, forward + backward, ms: one or two tiles a block 6.96 /
     * 5.77, four 7.05 / 6.40, eight 7.62 / 7.40) */
    s.upb = 1;
    s.cpg = NASC_MAX(1, (s.upb + s.th - 1) / s.th);
    return s;
}

int wb_group_images(const ConvDims *d) {
    const Wb s = wb_plan(d);
    return s.cpg * s.L;
}

/* c[tap]: what kernel x of U takes of each tap of a 3x3 kernel (ws2_weights). */
static void ws2_coefs(int x, double c[9]) {
    memset(c, 0, 9 * sizeof(double));
    if (x < 64) {
        const int a = x / 8, b = x % 8;
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) c[6 * i + 2 * j] = ws2_g[a][i] * ws2_g[b][j];
    } else if (x < 72) {
        c[1] = ws2_g[x - 64][0], c[7] = ws2_g[x - 64][1];
    } else if (x < 80) {
        c[3] = ws2_g[x - 72][0], c[5] = ws2_g[x - 72][1];
    } else {
        c[4] = 1;
    }
}

/* Kernels [x0, x1) of U (81, cout, cin), or with transposed of U^T (81, cin, cout: dx's): the 64
 * of group A (G k G^T of the taps {0,2} x {0,2}), then the 8 of B (G of taps (0, 1), (2, 1)),
 * the 8 of C (G of (1, 0), (1, 2)) and D's (tap (1, 1)). Each kernel's coefficients (products
 * of G's, in double, rounded once) times the taps gathered into rows of cout cin, one pass a
 * kernel (the loops over the kernels vectorize; one kernel at a time with the stores 81 rows
 * apart had taken a third of a 32 -> 64 forward). The threads of a region each take a share.
 * tap: 9 cout cin floats of scratch. */
MULTIVERSION void ws2_weights(float *U, int transposed, const float *w, int cout, int cin, int x0, int x1, float *tap) {
    const size_t pm = (size_t)cout * cin;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const size_t p = transposed ? (size_t)ci * cout + co : (size_t)co * cin + ci;
            const float *k = w + ((size_t)co * cin + ci) * 9;
            for (int t = 0; t < 9; t++) tap[t * pm + p] = k[t];
        }
    for (int x = x0; x < x1; x++) { /* one pass over u a kernel: its (at most four) taps' terms in order */
        double c[9];
        ws2_coefs(x, c);
        const float *k[4];
        float ck[4];
        int nk = 0;
        for (int t = 0; t < 9; t++)
            if (c[t] != 0) k[nk] = tap + t * pm, ck[nk++] = (float)c[t];
        float *u = U + (size_t)x * pm;
        NASC_ASSERT(nk == 1 || nk == 2 || nk == 4);
        if (nk == 1)
            for (size_t p = 0; p < pm; p++) u[p] = ck[0] * k[0][p];
        else if (nk == 2)
            for (size_t p = 0; p < pm; p++) u[p] = ck[0] * k[0][p] + ck[1] * k[1][p];
        else
            for (size_t p = 0; p < pm; p++)
                u[p] = ((ck[0] * k[0][p] + ck[1] * k[1][p]) + ck[2] * k[2][p]) + ck[3] * k[3][p];
    }
}

#define AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline
#define V16 __m512
#define SET1 _mm512_set1_ps

/* t = B^T d (8 points of 8 values). */
AVX512_INLINE void bt8(const V16 d[8], V16 t[8]) {
    const V16 c21 = SET1(5.25f), c17 = SET1(4.25f), c54 = SET1(1.25f), c52 = SET1(2.5f), c5 = SET1(5.0f);
    const V16 two = SET1(2.0f), four = SET1(4.0f), half = SET1(0.5f), quarter = SET1(0.25f);
    t[0] = _mm512_fmadd_ps(c21, _mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[0], d[6]));
    t[7] = _mm512_fmadd_ps(c21, _mm512_sub_ps(d[3], d[5]), _mm512_sub_ps(d[7], d[1]));
    V16 a = _mm512_fnmadd_ps(c17, d[4], _mm512_add_ps(d[2], d[6]));
    V16 b = _mm512_fnmadd_ps(c17, d[3], _mm512_add_ps(d[1], d[5]));
    t[1] = _mm512_add_ps(a, b), t[2] = _mm512_sub_ps(a, b);
    a = _mm512_fnmadd_ps(c54, d[4], _mm512_fmadd_ps(quarter, d[2], d[6]));
    b = _mm512_fnmadd_ps(c52, d[3], _mm512_fmadd_ps(two, d[5], _mm512_mul_ps(half, d[1])));
    t[3] = _mm512_add_ps(a, b), t[4] = _mm512_sub_ps(a, b);
    a = _mm512_fnmadd_ps(c5, d[4], _mm512_fmadd_ps(four, d[2], d[6]));
    b = _mm512_fnmadd_ps(c52, d[3], _mm512_fmadd_ps(half, d[5], _mm512_mul_ps(two, d[1])));
    t[5] = _mm512_add_ps(a, b), t[6] = _mm512_sub_ps(a, b);
}

/* y = A^T m (8 points to 7 values). */
AVX512_INLINE void at8(const V16 m[8], V16 y[7]) {
    const V16 s1 = _mm512_add_ps(m[1], m[2]), d1 = _mm512_sub_ps(m[1], m[2]);
    const V16 s2 = _mm512_add_ps(m[3], m[4]), d2 = _mm512_sub_ps(m[3], m[4]);
    const V16 s3 = _mm512_add_ps(m[5], m[6]), d3 = _mm512_sub_ps(m[5], m[6]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s1), _mm512_add_ps(s2, s3));
    y[1] = _mm512_fmadd_ps(SET1(2.0f), d2, _mm512_fmadd_ps(SET1(0.5f), d3, d1));
    y[2] = _mm512_fmadd_ps(SET1(4.0f), s2, _mm512_fmadd_ps(SET1(0.25f), s3, s1));
    y[3] = _mm512_fmadd_ps(SET1(8.0f), d2, _mm512_fmadd_ps(SET1(0.125f), d3, d1));
    y[4] = _mm512_fmadd_ps(SET1(16.0f), s2, _mm512_fmadd_ps(SET1(0.0625f), s3, s1));
    y[5] = _mm512_fmadd_ps(SET1(32.0f), d2, _mm512_fmadd_ps(SET1(0.03125f), d3, d1));
    y[6] = _mm512_add_ps(_mm512_fmadd_ps(SET1(64.0f), s2, _mm512_fmadd_ps(SET1(0.015625f), s3, s1)), m[7]);
}

/* s = A r (7 values to the 8 points: the adjoint of at8). */
AVX512_INLINE void a7(const V16 r[7], V16 s[8]) {
    const V16 e1 = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[4], r[6]));
    const V16 o1 = _mm512_add_ps(_mm512_add_ps(r[1], r[3]), r[5]);
    const V16 e2 =
        _mm512_fmadd_ps(SET1(64.0f), r[6], _mm512_fmadd_ps(SET1(16.0f), r[4], _mm512_fmadd_ps(SET1(4.0f), r[2], r[0])));
    const V16 o2 =
        _mm512_fmadd_ps(SET1(32.0f), r[5], _mm512_fmadd_ps(SET1(8.0f), r[3], _mm512_mul_ps(SET1(2.0f), r[1])));
    const V16 e3 = _mm512_fmadd_ps(SET1(0.015625f), r[6],
                                   _mm512_fmadd_ps(SET1(0.0625f), r[4], _mm512_fmadd_ps(SET1(0.25f), r[2], r[0])));
    const V16 o3 =
        _mm512_fmadd_ps(SET1(0.03125f), r[5], _mm512_fmadd_ps(SET1(0.125f), r[3], _mm512_mul_ps(SET1(0.5f), r[1])));
    s[0] = r[0], s[7] = r[6];
    s[1] = _mm512_add_ps(e1, o1), s[2] = _mm512_sub_ps(e1, o1);
    s[3] = _mm512_add_ps(e2, o2), s[4] = _mm512_sub_ps(e2, o2);
    s[5] = _mm512_add_ps(e3, o3), s[6] = _mm512_sub_ps(e3, o3);
}

/* d = B u (B = (B^T)^T: the 8 points back to 8 values, the adjoint of bt8). */
AVX512_INLINE void b8(const V16 u[8], V16 d[8]) {
    const V16 p1 = _mm512_sub_ps(u[1], u[2]), q1 = _mm512_add_ps(u[1], u[2]);
    const V16 p2 = _mm512_sub_ps(u[3], u[4]), q2 = _mm512_add_ps(u[3], u[4]);
    const V16 p3 = _mm512_sub_ps(u[5], u[6]), q3 = _mm512_add_ps(u[5], u[6]);
    const V16 c21 = SET1(5.25f);
    d[0] = u[0], d[7] = u[7];
    d[1] = _mm512_sub_ps(_mm512_fmadd_ps(SET1(2.0f), p3, _mm512_fmadd_ps(SET1(0.5f), p2, p1)), u[7]);
    d[2] = _mm512_fnmadd_ps(c21, u[0], _mm512_fmadd_ps(SET1(4.0f), q3, _mm512_fmadd_ps(SET1(0.25f), q2, q1)));
    d[3] = _mm512_fmadd_ps(c21, u[7],
                           _mm512_fnmadd_ps(SET1(2.5f), _mm512_add_ps(p2, p3), _mm512_mul_ps(SET1(-4.25f), p1)));
    d[4] = _mm512_fmadd_ps(
        c21, u[0],
        _mm512_fnmadd_ps(SET1(5.0f), q3, _mm512_fnmadd_ps(SET1(1.25f), q2, _mm512_mul_ps(SET1(-4.25f), q1))));
    d[5] = _mm512_fnmadd_ps(c21, u[7], _mm512_fmadd_ps(SET1(0.5f), p3, _mm512_fmadd_ps(SET1(2.0f), p2, p1)));
    d[6] = _mm512_sub_ps(_mm512_add_ps(_mm512_add_ps(q1, q2), q3), u[0]);
}

/* Floats from one point's rows (c channels of n floats) to the next: an odd number of cache
 * lines, so that the points a transform stores or loads together fall in different L1 sets. */
static size_t pstride(int c, size_t n) {
    const size_t f = (size_t)c * n;
    return f / 16 % 2 ? f : f + 16;
}

/* ------------------------------------------------------------------ input copy */
/* With padding 1, padded row P = r + 1 of input row r is row P / s of the planes of row phase
 * P % s (the same for columns). */
static inline void padded_at(int r, int s, int *phase, int *i) { *phase = (r + 1) % s, *i = (r + 1) / s; }

/* The chunk's planes (pl: channel c's plane (pr, pc) at (s s c + s pr + pc) plane floats) from
 * images [img0, img0 + n) of xs (n <= 16; the other lanes zero); an input made on demand is made
 * as it is copied (made_lanes: act_rows' values, bit for bit). */
__attribute__((target("avx512f"))) static void wb_fill(float *pl, const Wb *s, const ActSrc *xs, size_t img0, int n) {
    const int h = s->h, w = s->w, hw = h * w, Qc = s->Qc, st = s->s;
    const V16 zero = _mm512_setzero_ps();
    float kc[4];
    const MadeInput made = {kc, xs->act}, *mi = xs->saved ? &made : NULL;
    for (int ch = 0; ch < s->cin; ch++) {
        const float *X[WB_LANES];
        for (int j = 0; j < WB_LANES; j++) X[j] = j < n ? xs->x + ((img0 + j) * s->cin + ch) * hw : NULL;
        if (mi) act_consts(xs, ch, kc);
        float *pc = pl + (size_t)st * st * ch * s->plane;
        /* zero where the padded input is padding (or past it): whole rows, and in the others the
         * columns q outside [qlo, qhi) (input column s q + pc - 1 outside the row) */
        for (int ph = 0; ph < st * st; ph++) {
            const int pr = ph / st, pcol = ph % st, qlo = (st - pcol) / st, qhi = (w - pcol) / st + 1;
            float *p = pc + ph * s->plane;
            for (int i = 0; i < s->R; i++) {
                const int r = st * i + pr - 1, inside = r >= 0 && r < h;
                float *row = p + (size_t)i * Qc * WB_LANES;
                for (int q = 0; q < (inside ? qlo : Qc); q++) _mm512_store_ps(row + (size_t)q * WB_LANES, zero);
                if (inside)
                    for (int q = qhi; q < Qc; q++) _mm512_store_ps(row + (size_t)q * WB_LANES, zero);
            }
        }
        for (int r = 0; r < h; r++) {
            int pr, i;
            padded_at(r, st, &pr, &i);
            /* sixteen streams, one an image: too many for the hardware prefetchers (a stored
             * input's rows run on into the next channel's; a prefetch past an array is harmless) */
            for (int j = 0; j < n; j++)
                for (int c = 0; c < w; c += 16)
                    _mm_prefetch((const char *)(X[j] + (size_t)(r + 4) * w + c), _MM_HINT_T0);
            for (int c0 = 0; c0 < w; c0 += WB_LANES) {
                const __mmask16 m = lane_range(c0, 0, w);
                V16 v[WB_LANES];
                for (int j = 0; j < WB_LANES; j++) {
                    v[j] = X[j] ? _mm512_maskz_loadu_ps(m, X[j] + (size_t)r * w + c0) : zero;
                    if (mi && X[j]) v[j] = made_lanes(v[j], m, mi);
                }
                tr16(v);
                for (int k = 0; k < WB_LANES && c0 + k < w; k++) {
                    int pcol, q;
                    padded_at(c0 + k, st, &pcol, &q);
                    _mm512_store_ps(pc + (st * pr + pcol) * s->plane + ((size_t)i * Qc + q) * WB_LANES, v[k]);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ outputs and gradients */
/* stage (npix pixels of 16 images, a vector each) into each of the nimg images' planes at y + j
 * ystride + off, npix floats each (a unit's rows of a channel are contiguous). */
__attribute__((target("avx512f"))) static void stage_out(float *y, int nimg, size_t ystride, size_t off, int npix,
                                                         const float *stage) {
    for (int p0 = 0; p0 < npix; p0 += WB_LANES) {
        V16 v[WB_LANES];
        for (int k = 0; k < WB_LANES; k++) v[k] = _mm512_load_ps(stage + (size_t)(p0 + k) * WB_LANES);
        tr16(v);
        const __mmask16 m = lane_range(p0, 0, npix);
        for (int j = 0; j < nimg; j++) _mm512_mask_storeu_ps(y + j * ystride + off + p0, m, v[j]);
    }
}

/* The other way: npix pixels of each of nimg images (the rest zero) into stage, a vector of the
 * 16 images a pixel; stage has room for npix rounded up to 16. */
__attribute__((target("avx512f"))) static void stage_in(float *stage, const float *y, int nimg, size_t ystride,
                                                        size_t off, int npix) {
    for (int p0 = 0; p0 < npix; p0 += WB_LANES) {
        const __mmask16 m = lane_range(p0, 0, npix);
        V16 v[WB_LANES];
        for (int j = 0; j < WB_LANES; j++)
            v[j] = j < nimg ? _mm512_maskz_loadu_ps(m, y + j * ystride + off + p0) : _mm512_setzero_ps();
        tr16(v);
        for (int k = 0; k < WB_LANES; k++) _mm512_store_ps(stage + (size_t)(p0 + k) * WB_LANES, v[k]);
    }
}

/* ------------------------------------------------------------------ transforms of a block */
/* A block: nu units, unit u the tile row ty[u] of the chunk whose planes are at pl[u]. Tile
 * (u, tx) is column (u tw + tx) 16 of a point's rows of N floats. */
typedef struct {
    int nu;
    const float *pl[64];
    int ty[64];
    size_t N;
} WbBlock;

#define WB_UNITS_MAX 64

/* The first value of tile (u, tx) in phase plane ph of channel ch. */
static inline const float *tile_at(const Wb *s, const WbBlock *b, int u, int tx, int ch, int ph) {
    return b->pl[u] + ((size_t)s->s * s->s * ch + ph) * s->plane +
           ((size_t)s->tm * b->ty[u] * s->Qc + s->tm * tx) * s->L;
}

/* A one-dimensional transform of n vectors (bt8, b8: n = 8; bt6, b6: n = 6). */
typedef void (*Transform)(const V16 *, V16 *);

/* V[i n + j][ch] = (T P T^T)[i][j] of each tile's n x n patch P of plane 0 (phase (0, 0)), T
 * the n-point transform tf: rows, then columns. Inlined with n and tf constant. */
AVX512_INLINE void input_full(const int n, Transform tf, float *V, size_t sv, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * WB_LANES;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, 0);
                float *dst = V + (size_t)ch * b->N + ((size_t)u * s->tw + tx) * WB_LANES;
                V16 rt[8][8];
                for (int r = 0; r < n; r++) {
                    V16 d[8];
                    for (int c = 0; c < n; c++) d[c] = _mm512_load_ps(p + r * rs + c * WB_LANES);
                    tf(d, rt[r]);
                }
                for (int c = 0; c < n; c++) {
                    V16 col[8], t[8];
                    for (int r = 0; r < n; r++) col[r] = rt[r][c];
                    tf(col, t);
                    for (int i = 0; i < n; i++) _mm512_store_ps(dst + (size_t)(i * n + c) * sv, t[i]);
                }
            }
}

/* Group A: V[a 8 + b][ch] = (B^T P00 B)[a][b]. */
__attribute__((target("avx512f"))) static void input_a(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_full(8, bt8, V, sv, s, b);
}

/* Groups B and C: the 8-point transform along one dimension of phase ph's 8 x 7 (B: rows by
 * columns) or 7 x 8 (C) patch, the other taken as it is. V[t][ch][o N + col] = the transform's
 * value t of line o, whose points lie st apart in the plane and whose lines so apart. */
AVX512_INLINE void input_lines(float *V, size_t sv, const Wb *s, const WbBlock *b, int ph, size_t st, size_t so) {
    const size_t N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, ph);
                float *dst = V + (size_t)ch * 7 * N + ((size_t)u * s->tw + tx) * WB_LANES;
                for (int o = 0; o < 7; o++) {
                    V16 d[8], t[8];
                    for (int i = 0; i < 8; i++) d[i] = _mm512_load_ps(p + i * st + o * so);
                    bt8(d, t);
                    for (int i = 0; i < 8; i++) _mm512_store_ps(dst + (size_t)i * sv + o * N, t[i]);
                }
            }
}

/* Group B (phase (0, 1)): V[a][ch][bb N + col] = (B^T P01)[a][bb]. */
__attribute__((target("avx512f"))) static void input_b(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_lines(V, sv, s, b, 1, (size_t)s->Qc * WB_LANES, WB_LANES);
}

/* Group C (phase (1, 0)): V[b][ch][aa N + col] = (P10 B)[aa][b]. */
__attribute__((target("avx512f"))) static void input_c(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_lines(V, sv, s, b, 2, WB_LANES, (size_t)s->Qc * WB_LANES);
}

/* Group D (phase (1, 1)): V[ch][(aa 7 + bb) N + col] = P11[aa][bb]. */
__attribute__((target("avx512f"))) static void input_d(float *V, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * WB_LANES, N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, 3);
                float *dst = V + (size_t)ch * 49 * N + ((size_t)u * s->tw + tx) * WB_LANES;
                for (int r = 0; r < 7; r++)
                    for (int c = 0; c < 7; c++)
                        _mm512_store_ps(dst + (size_t)(r * 7 + c) * N, _mm512_load_ps(p + r * rs + c * WB_LANES));
            }
}

/* R0[b][co][aa N + col] = (A^T M_A)[aa][b], M_A[a 8 + b][co] (rows sm apart). */
__attribute__((target("avx512f"))) static void rows_a(float *R0, size_t sr, const float *M, size_t sm, int cout,
                                                      size_t N) {
    for (int co = 0; co < cout; co++)
        for (size_t col = 0; col < N; col += WB_LANES) {
            const float *src = M + (size_t)co * N + col;
            float *dst = R0 + (size_t)co * 7 * N + col;
            for (int b = 0; b < 8; b++) {
                V16 m[8], y[7];
                for (int a = 0; a < 8; a++) m[a] = _mm512_load_ps(src + (size_t)(a * 8 + b) * sm);
                at8(m, y);
                for (int aa = 0; aa < 7; aa++) _mm512_store_ps(dst + (size_t)b * sr + aa * N, y[aa]);
            }
        }
}

/* R1[co][(aa 7 + bb) N + col] = (A^T M_B)[aa][bb], M_B[a][co][bb N + col]. */
__attribute__((target("avx512f"))) static void rows_b(float *R1, const float *M, size_t sm, int cout, size_t N) {
    for (int co = 0; co < cout; co++)
        for (size_t col = 0; col < N; col += WB_LANES) {
            const float *src = M + (size_t)co * 7 * N + col;
            float *dst = R1 + (size_t)co * 49 * N + col;
            for (int bb = 0; bb < 7; bb++) {
                V16 m[8], y[7];
                for (int a = 0; a < 8; a++) m[a] = _mm512_load_ps(src + (size_t)a * sm + bb * N);
                at8(m, y);
                for (int aa = 0; aa < 7; aa++) _mm512_store_ps(dst + (size_t)(aa * 7 + bb) * N, y[aa]);
            }
        }
}

/* Y = R0 A + R1 (+ bias) of every tile of the block, into y: unit u's images are those of its
 * chunk, y + (chunk's first image + j) ystride for j < n[u]. */
__attribute__((target("avx512f"))) static void output_y(float *const *yu, const int *nimg, size_t ystride,
                                                        const float *R0, size_t sr, const float *R1, const float *bias,
                                                        const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++) {
        const V16 bv = SET1(bias ? bias[co] : 0.0f);
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(7, s->oh - 7 * b->ty[u]);
            for (int tx = 0; tx < s->tw; tx++) {
                const size_t col = ((size_t)u * s->tw + tx) * WB_LANES;
                const float *r0 = R0 + (size_t)co * 7 * N + col, *r1 = R1 + (size_t)co * 49 * N + col;
                const int cols = NASC_MIN(7, ow - 7 * tx);
                for (int aa = 0; aa < rows; aa++) {
                    V16 m[8], y[7];
                    for (int c = 0; c < 8; c++) m[c] = _mm512_load_ps(r0 + (size_t)c * sr + aa * N);
                    at8(m, y);
                    float *st = stage + ((size_t)aa * ow + 7 * tx) * WB_LANES;
                    for (int bb = 0; bb < cols; bb++)
                        _mm512_store_ps(
                            st + bb * WB_LANES,
                            _mm512_add_ps(_mm512_add_ps(y[bb], _mm512_load_ps(r1 + (size_t)(aa * 7 + bb) * N)), bv));
                }
            }
            /* the unit's rows * ow pixels of 16 images into each image's rows (contiguous) */
            stage_out(yu[u], nimg[u], ystride, (size_t)co * P + (size_t)7 * b->ty[u] * ow, rows * ow, stage);
        }
    }
}

/* ------------------------------------------------------------------ forward */
/* Floats of the block buffers (V, M, R0, R1) for N columns. */
typedef struct {
    size_t sv1, sv7, sm1, sm7, sr7; /* point strides: V of A, of B/C; M of A, of B; R0's */
    size_t v, m, r0, r1;            /* buffer sizes */
} WbBufs;

static WbBufs wb_bufs(const Wb *s, size_t N) {
    WbBufs z;
    z.sv1 = pstride(s->cin, N), z.sv7 = pstride(s->cin, 7 * N);
    z.sm1 = pstride(s->cout, N), z.sm7 = pstride(s->cout, 7 * N), z.sr7 = z.sm7;
    z.v = NASC_MAX(NASC_MAX(64 * z.sv1, 8 * z.sv7), (size_t)s->cin * 49 * N);
    z.m = NASC_MAX(64 * z.sm1, 8 * z.sm7);
    z.r0 = 8 * z.sr7;
    z.r1 = (size_t)s->cout * 49 * N;
    return z;
}

/* The block of units [u0, u0 + nu) of chunks of 16 images (planes at pl, dP planes at dpl, y or
 * dy at y, images ystride apart, n images in all). */
static void unit_block(WbBlock *b, float *yu[], int nimg[], float *dpu[], const Wb *s, int u0, int units, float *pl,
                       float *dpl, float *y, size_t ystride, int n) {
    b->nu = NASC_MIN(s->upb, units - u0);
    NASC_ASSERT(b->nu <= WB_UNITS_MAX);
    for (int u = 0; u < b->nu; u++) {
        const int c = (u0 + u) / s->th;
        b->pl[u] = pl + c * s->chunk, b->ty[u] = (u0 + u) % s->th;
        dpu[u] = dpl ? dpl + c * s->chunk : NULL;
        yu[u] = y + (size_t)c * s->L * ystride, nimg[u] = NASC_MIN(s->L, n - c * s->L);
    }
    b->N = (size_t)b->nu * s->tw * s->L;
}

/* ------------------------------------------------------------------ backward */
/* The adjoint of the output transform of every tile of the block, from dy (unit u's images at
 * dyu[u], ystride apart): with e the tile's 7x7 gradient, E_A = A e A^T (8 x 8 points, as
 * M_A), E_B = A e (8 x 7, as M_B), E_C = e A^T (7 x 8, as R0), E_D = e; the same layouts as the
 * forward's products, E_A at E, E_B at eb, E_C at ec, E_D at ed. */
__attribute__((target("avx512f"))) static void dy_transform(float *E, float *eb, float *ec, float *ed, const WbBufs *z,
                                                            const float *const *dyu, const int *nimg, size_t ystride,
                                                            const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++)
        for (int u = 0; u < b->nu; u++) {
            /* the unit's 7 rows of 16 images, transposed into vectors of the 16 images */
            stage_in(stage, dyu[u], nimg[u], ystride, (size_t)co * P + (size_t)7 * b->ty[u] * ow, 7 * ow);
            for (int tx = 0; tx < s->tw; tx++) {
                const size_t col = ((size_t)u * s->tw + tx) * WB_LANES;
                const float *st = stage + (size_t)7 * tx * WB_LANES;
                V16 e[7][7], c8[7][8];
                for (int aa = 0; aa < 7; aa++)
                    for (int bb = 0; bb < 7; bb++) {
                        e[aa][bb] = _mm512_load_ps(st + ((size_t)aa * ow + bb) * WB_LANES);
                        _mm512_store_ps(ed + (size_t)co * 49 * N + (size_t)(aa * 7 + bb) * N + col, e[aa][bb]);
                    }
                for (int aa = 0; aa < 7; aa++) {
                    a7(e[aa], c8[aa]);
                    for (int c = 0; c < 8; c++)
                        _mm512_store_ps(ec + c * z->sm7 + (size_t)co * 7 * N + aa * N + col, c8[aa][c]);
                }
                for (int bb = 0; bb < 7; bb++) {
                    V16 r[7] = {e[0][bb], e[1][bb], e[2][bb], e[3][bb], e[4][bb], e[5][bb], e[6][bb]}, t[8];
                    a7(r, t);
                    for (int a = 0; a < 8; a++)
                        _mm512_store_ps(eb + a * z->sm7 + (size_t)co * 7 * N + bb * N + col, t[a]);
                }
                for (int c = 0; c < 8; c++) {
                    V16 r[7] = {c8[0][c], c8[1][c], c8[2][c], c8[3][c], c8[4][c], c8[5][c], c8[6][c]}, t[8];
                    a7(r, t);
                    for (int a = 0; a < 8; a++) _mm512_store_ps(E + (a * 8 + c) * z->sm1 + (size_t)co * N + col, t[a]);
                }
            }
        }
}

/* v into the phase plane at p: stored, or added where an earlier tile wrote it (the first row
 * or column of a two-tap dimension is the last one of the tile above or to the left). */
AVX512_INLINE void put(float *p, V16 v, int add) { _mm512_store_ps(p, add ? _mm512_add_ps(_mm512_load_ps(p), v) : v); }

static inline float *dtile_at(const Wb *s, float *const *dpl, const WbBlock *b, int u, int tx, int ch, int ph) {
    return dpl[u] + ((size_t)s->s * s->s * ch + ph) * s->plane + ((size_t)s->tm * b->ty[u] * s->Qc + s->tm * tx) * s->L;
}

/* dP (+)= T dV T^T of each tile of plane 0 (the adjoint of input_full, T = tf's transpose:
 * b8 or b6): a patch's first ov rows and columns are the last ov of the tile above and to the
 * left, added to where that tile wrote. */
AVX512_INLINE void adjoint_full(const int n, Transform tf, const int ov, float *const *dpl, const float *dV, size_t sv,
                                const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * WB_LANES;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, 0);
                const float *src = dV + (size_t)ch * b->N + ((size_t)u * s->tw + tx) * WB_LANES;
                V16 t[8][8];
                for (int a = 0; a < n; a++) {
                    V16 v[8];
                    for (int c = 0; c < n; c++) v[c] = _mm512_load_ps(src + (size_t)(a * n + c) * sv);
                    tf(v, t[a]);
                }
                for (int c = 0; c < n; c++) {
                    V16 col[8], r[8];
                    for (int a = 0; a < n; a++) col[a] = t[a][c];
                    tf(col, r);
                    for (int i = 0; i < n; i++)
                        put(p + i * rs + c * WB_LANES, r[i], (i < ov && b->ty[u]) || (c < ov && tx));
                }
            }
}

/* dP00 (+)= B dV_A B^T of each tile (the adjoint of input_a). */
__attribute__((target("avx512f"))) static void adj_a(float *const *dpl, const float *dV, size_t sv, const Wb *s,
                                                     const WbBlock *b) {
    adjoint_full(8, b8, 1, dpl, dV, sv, s, b);
}

/* The adjoint of input_lines: each line's 8 points (+)= B of its transformed values. A patch's
 * first point along the transform is the last of the tile before it along that dimension (the
 * tile above when down, as for B; the one to the left otherwise, as for C), added to where that
 * tile wrote. */
AVX512_INLINE void adjoint_lines(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b, int ph,
                                 size_t st, size_t so, int down) {
    const size_t N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, ph);
                const float *src = dV + (size_t)ch * 7 * N + ((size_t)u * s->tw + tx) * WB_LANES;
                const int after = down ? b->ty[u] != 0 : tx != 0;
                for (int o = 0; o < 7; o++) {
                    V16 v[8], r[8];
                    for (int i = 0; i < 8; i++) v[i] = _mm512_load_ps(src + (size_t)i * sv + o * N);
                    b8(v, r);
                    for (int i = 0; i < 8; i++) put(p + i * st + o * so, r[i], i == 0 && after);
                }
            }
}

/* dP01 (+)= B dV_B (the adjoint of input_b). */
__attribute__((target("avx512f"))) static void adj_b(float *const *dpl, const float *dV, size_t sv, const Wb *s,
                                                     const WbBlock *b) {
    adjoint_lines(dpl, dV, sv, s, b, 1, (size_t)s->Qc * WB_LANES, WB_LANES, 1);
}

/* dP10 (+)= dV_C B^T (the adjoint of input_c). */
__attribute__((target("avx512f"))) static void adj_c(float *const *dpl, const float *dV, size_t sv, const Wb *s,
                                                     const WbBlock *b) {
    adjoint_lines(dpl, dV, sv, s, b, 2, WB_LANES, (size_t)s->Qc * WB_LANES, 0);
}

/* dP11 = dV_D (the adjoint of input_d). */
__attribute__((target("avx512f"))) static void adj_d(float *const *dpl, const float *dV, const Wb *s,
                                                     const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * WB_LANES, N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, 3);
                const float *src = dV + (size_t)ch * 49 * N + ((size_t)u * s->tw + tx) * WB_LANES;
                for (int i = 0; i < 7; i++)
                    for (int c = 0; c < 7; c++)
                        _mm512_store_ps(p + i * rs + c * WB_LANES, _mm512_load_ps(src + (size_t)(i * 7 + c) * N));
            }
}

/* dx (images j < n, xstride apart) = or += the input values' gradients in the chunk's planes
 * dpl (the adjoint of wb_fill: every input value is one plane position). mask: NULL, or each
 * value v goes in as 0 + v f'(a), a the mask's value at its place (as GemmMap's mask). */
__attribute__((target("avx512f"))) static void wb_fold(float *dx, size_t xstride, int acc, const DxMask *mask,
                                                       const float *dpl, const Wb *s, int n) {
    const int h = s->h, w = s->w, hw = h * w, Qc = s->Qc, st = s->s;
    for (int ch = 0; ch < s->cin; ch++) {
        const float *pc = dpl + (size_t)st * st * ch * s->plane;
        for (int r = 0; r < h; r++) {
            int pr, i;
            padded_at(r, st, &pr, &i);
            for (int c0 = 0; c0 < w; c0 += WB_LANES) {
                V16 v[WB_LANES];
                for (int k = 0; k < WB_LANES; k++) {
                    int pcol, q;
                    padded_at(c0 + k, st, &pcol, &q);
                    v[k] = c0 + k < w
                               ? _mm512_load_ps(pc + (st * pr + pcol) * s->plane + ((size_t)i * Qc + q) * WB_LANES)
                               : _mm512_setzero_ps();
                }
                tr16(v);
                const __mmask16 m = lane_range(c0, 0, w);
                for (int j = 0; j < n; j++) {
                    const size_t off = j * xstride + (size_t)ch * hw + (size_t)r * w + c0;
                    float *o = dx + off;
                    V16 x = v[j];
                    if (mask) {
                        const V16 a = _mm512_maskz_loadu_ps(m, mask->x + off);
                        __mmask16 on = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
                        if (mask->act == ACT_RELU6) on &= _mm512_cmp_ps_mask(a, _mm512_set1_ps(6.0f), _CMP_LT_OQ);
                        x = _mm512_maskz_mov_ps(on, x);
                    }
                    const V16 base = acc ? _mm512_maskz_loadu_ps(m, o) : _mm512_setzero_ps();
                    _mm512_mask_storeu_ps(o, m, acc || mask ? _mm512_add_ps(base, x) : x);
                }
            }
        }
    }
}

/* dwt (cin 9, cout: dW^T) += dL/dk of every kernel from du (81, cout, cin: dL/dU), summed in
 * double: U[x] = sum over taps of c[x][tap] k[tap] (ws2_weights), so dk[tap] = sum over x of
 * c[x][tap] du[x]. One output channel at a time, the taps each kernel takes (the loops over the
 * input channels vectorize; all 81 x 9 products one pair at a time had cost 17% of a 32 -> 64
 * dW). */
MULTIVERSION void ws2_dw_finish(float *dwt, const float *du, int cin, int cout) {
    const size_t pm = (size_t)cout * cin;
    struct {
        int x, tap;
        double c;
    } e[WS2_KERNELS * 4]; /* the nonzero coefficients, by kernel and tap */
    int ne = 0;
    for (int x = 0; x < WS2_KERNELS; x++) {
        double c[9];
        ws2_coefs(x, c);
        for (int tap = 0; tap < 9; tap++)
            if (c[tap] != 0) e[ne].x = x, e[ne].tap = tap, e[ne++].c = c[tap];
    }
    double *t = xmalloc((size_t)9 * cin * sizeof(double));
    for (int co = 0; co < cout; co++) {
        memset(t, 0, (size_t)9 * cin * sizeof(double));
        for (int k = 0; k < ne; k++) {
            const float *v = du + e[k].x * pm + (size_t)co * cin;
            double *tt = t + (size_t)e[k].tap * cin;
            const double ck = e[k].c;
            for (int ci = 0; ci < cin; ci++) tt[ci] += ck * v[ci];
        }
        for (int ci = 0; ci < cin; ci++)
            for (int tap = 0; tap < 9; tap++)
                dwt[((size_t)ci * 9 + tap) * cout + co] += (float)t[(size_t)tap * cin + ci];
    }
    free(t);
}

/* ------------------------------------------------------------------ stride 1: F(4x4, 3x3) */
int wb1_shape_ok(const ConvDims *d) {
    if (d->k != 3 || d->stride != 1 || d->pad != 1 || d->dil != 1 || d->groups != 1) return 0;
    if (d->cin < 8 || d->cout < 8) return 0;
    /* an image's own 4x4 tiles: at most a third more outputs computed than kept (28x28 and
     * 12x12 none, 14x14 and 7x7 16/14 and 8/7 a side; 13x13 would be 16/13) */
    const int th = (d->oh + 3) / 4, tw = (d->ow + 3) / 4;
    return 16.0 * th * tw <= 1.34 * d->oh * d->ow;
}

/* V[i 6 + j][ch] = (B^T P B)[i][j] of each tile's 6x6 patch P of the plane. */
__attribute__((target("avx512f"))) static void f43_input(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_full(6, bt6, V, sv, s, b);
}

/* Y = A^T M A (+ bias) of every tile of the block, into y (as output_y). */
__attribute__((target("avx512f"))) static void f43_output(float *const *yu, const int *nimg, size_t ystride,
                                                          const float *M, size_t sm, const float *bias, const Wb *s,
                                                          const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++) {
        const V16 bv = SET1(bias ? bias[co] : 0.0f);
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(4, s->oh - 4 * b->ty[u]);
            for (int tx = 0; tx < s->tw; tx++) {
                const float *src = M + (size_t)co * N + ((size_t)u * s->tw + tx) * WB_LANES;
                const int cols = NASC_MIN(4, ow - 4 * tx);
                V16 t[4][6];
                for (int c = 0; c < 6; c++) {
                    V16 m[6], y[4];
                    for (int i = 0; i < 6; i++) m[i] = _mm512_load_ps(src + (size_t)(i * 6 + c) * sm);
                    at4(m, y);
                    for (int aa = 0; aa < 4; aa++) t[aa][c] = y[aa];
                }
                for (int aa = 0; aa < rows; aa++) {
                    V16 y[4];
                    at4(t[aa], y);
                    float *st = stage + ((size_t)aa * ow + 4 * tx) * WB_LANES;
                    for (int bb = 0; bb < cols; bb++) _mm512_store_ps(st + bb * WB_LANES, _mm512_add_ps(y[bb], bv));
                }
            }
            stage_out(yu[u], nimg[u], ystride, (size_t)co * P + (size_t)4 * b->ty[u] * ow, rows * ow, stage);
        }
    }
}

/* E[i 6 + j][co] = (A e A^T)[i][j] of each tile's 4x4 output gradient e (zero past the image):
 * the adjoint of f43_output. */
__attribute__((target("avx512f"))) static void f43_dy(float *E, size_t se, const float *const *dyu, const int *nimg,
                                                      size_t ystride, const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++)
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(4, s->oh - 4 * b->ty[u]);
            stage_in(stage, dyu[u], nimg[u], ystride, (size_t)co * P + (size_t)4 * b->ty[u] * ow, rows * ow);
            for (int tx = 0; tx < s->tw; tx++) {
                float *dst = E + (size_t)co * N + ((size_t)u * s->tw + tx) * WB_LANES;
                const int cols = NASC_MIN(4, ow - 4 * tx);
                V16 r[4][6];
                for (int aa = 0; aa < 4; aa++) {
                    V16 e[4];
                    for (int bb = 0; bb < 4; bb++)
                        e[bb] = aa < rows && bb < cols
                                    ? _mm512_load_ps(stage + ((size_t)aa * ow + 4 * tx + bb) * WB_LANES)
                                    : _mm512_setzero_ps();
                    at4t(e, r[aa]);
                }
                for (int c = 0; c < 6; c++) {
                    V16 col[4] = {r[0][c], r[1][c], r[2][c], r[3][c]}, t[6];
                    at4t(col, t);
                    for (int i = 0; i < 6; i++) _mm512_store_ps(dst + (size_t)(i * 6 + c) * se, t[i]);
                }
            }
        }
}

/* dP (+)= B dV B^T of each tile (the adjoint of f43_input): patches overlap by two. */
__attribute__((target("avx512f"))) static void f43_adj(float *const *dpl, const float *dV, size_t sv, const Wb *s,
                                                       const WbBlock *b) {
    adjoint_full(6, b6, 2, dpl, dV, sv, s, b);
}

/* ------------------------------------------------------------------ AVX2: eight images a vector
 * For machines without AVX-512: the same F(4x4, 3x3) and F(7x7, 3x3) with eight images a vector
 * (Wb.L = 8), the same layout, transforms and products, each function as its sixteen-lane one
 * above
 * (batch 128, 2 threads, NASC_GEMM=avx2 on a build without AVX-512 clones, forward / backward
 * GFLOP/s, the per-image Winograd of conv.c -> this: 16 -> 16 on 28x28 223 / 194 -> 251 / 265,
 * 32 -> 32 on 14x14 327 / 315 -> 377 / 333, 64 -> 64 on 7x7 340 / 323 -> 349 / 359). Stores
 * of fewer than eight lanes go through store8_first (AVX2's masked stores are slow on AMD). */
#define AVX2_FN __attribute__((target("avx2,fma"))) static
#define L8 8

/* wb_fill: the chunk's (phase) planes, a vector of the eight images a pixel. */
AVX2_FN void wb_fill8(float *pl, const Wb *s, const ActSrc *xs, size_t img0, int n) {
    const int h = s->h, w = s->w, hw = h * w, Qc = s->Qc, st = s->s;
    const __m256 zero = _mm256_setzero_ps();
    float kc[4];
    const MadeInput made = {kc, xs->act}, *mi = xs->saved ? &made : NULL;
    for (int ch = 0; ch < s->cin; ch++) {
        const float *X[L8];
        for (int j = 0; j < L8; j++) X[j] = j < n ? xs->x + ((img0 + j) * s->cin + ch) * hw : NULL;
        if (mi) act_consts(xs, ch, kc);
        float *pc = pl + (size_t)st * st * ch * s->plane;
        for (int ph = 0; ph < st * st; ph++) { /* the padding, as wb_fill's */
            const int pr = ph / st, pcol = ph % st, qlo = (st - pcol) / st, qhi = (w - pcol) / st + 1;
            float *p = pc + ph * s->plane;
            for (int i = 0; i < s->R; i++) {
                const int r = st * i + pr - 1, inside = r >= 0 && r < h;
                float *row = p + (size_t)i * Qc * L8;
                for (int q = 0; q < (inside ? qlo : Qc); q++) _mm256_store_ps(row + (size_t)q * L8, zero);
                if (inside)
                    for (int q = qhi; q < Qc; q++) _mm256_store_ps(row + (size_t)q * L8, zero);
            }
        }
        for (int r = 0; r < h; r++) {
            int pr, i;
            padded_at(r, st, &pr, &i);
            for (int c0 = 0; c0 < w; c0 += L8) {
                const __m256i m = lane_range8(c0, 0, w);
                __m256 v[L8];
                for (int j = 0; j < L8; j++) {
                    v[j] = X[j] ? _mm256_maskload_ps(X[j] + (size_t)r * w + c0, m) : zero;
                    if (mi && X[j]) v[j] = made_lanes8(v[j], m, mi);
                }
                tr8(v);
                for (int k = 0; k < L8 && c0 + k < w; k++) {
                    int pcol, q;
                    padded_at(c0 + k, st, &pcol, &q);
                    _mm256_store_ps(pc + (st * pr + pcol) * s->plane + ((size_t)i * Qc + q) * L8, v[k]);
                }
            }
        }
    }
}

/* stage_out / stage_in: npix pixels of the nimg images (eight lanes a pixel in stage). */
AVX2_FN void stage_out8(float *y, int nimg, size_t ystride, size_t off, int npix, const float *stage) {
    for (int p0 = 0; p0 < npix; p0 += L8) {
        __m256 v[L8];
        for (int k = 0; k < L8; k++) v[k] = _mm256_load_ps(stage + (size_t)(p0 + k) * L8);
        tr8(v);
        for (int j = 0; j < nimg; j++) store8_first(y + j * ystride + off + p0, v[j], npix - p0);
    }
}

AVX2_FN void stage_in8(float *stage, const float *y, int nimg, size_t ystride, size_t off, int npix) {
    for (int p0 = 0; p0 < npix; p0 += L8) {
        const __m256i m = lane_range8(p0, 0, npix);
        __m256 v[L8];
        for (int j = 0; j < L8; j++)
            v[j] = j < nimg ? _mm256_maskload_ps(y + j * ystride + off + p0, m) : _mm256_setzero_ps();
        tr8(v);
        for (int k = 0; k < L8; k++) _mm256_store_ps(stage + (size_t)(p0 + k) * L8, v[k]);
    }
}

/* bt8, at8, a7 and b8 in eight lanes. */
AVX2_FMA_INLINE void bt8_8(const __m256 d[8], __m256 t[8]) {
    const __m256 c21 = _mm256_set1_ps(5.25f), c17 = _mm256_set1_ps(4.25f), c54 = _mm256_set1_ps(1.25f);
    const __m256 c52 = _mm256_set1_ps(2.5f), c5 = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
    const __m256 four = _mm256_set1_ps(4.0f), half = _mm256_set1_ps(0.5f), quarter = _mm256_set1_ps(0.25f);
    t[0] = _mm256_fmadd_ps(c21, _mm256_sub_ps(d[4], d[2]), _mm256_sub_ps(d[0], d[6]));
    t[7] = _mm256_fmadd_ps(c21, _mm256_sub_ps(d[3], d[5]), _mm256_sub_ps(d[7], d[1]));
    __m256 a = _mm256_fnmadd_ps(c17, d[4], _mm256_add_ps(d[2], d[6]));
    __m256 b = _mm256_fnmadd_ps(c17, d[3], _mm256_add_ps(d[1], d[5]));
    t[1] = _mm256_add_ps(a, b), t[2] = _mm256_sub_ps(a, b);
    a = _mm256_fnmadd_ps(c54, d[4], _mm256_fmadd_ps(quarter, d[2], d[6]));
    b = _mm256_fnmadd_ps(c52, d[3], _mm256_fmadd_ps(two, d[5], _mm256_mul_ps(half, d[1])));
    t[3] = _mm256_add_ps(a, b), t[4] = _mm256_sub_ps(a, b);
    a = _mm256_fnmadd_ps(c5, d[4], _mm256_fmadd_ps(four, d[2], d[6]));
    b = _mm256_fnmadd_ps(c52, d[3], _mm256_fmadd_ps(half, d[5], _mm256_mul_ps(two, d[1])));
    t[5] = _mm256_add_ps(a, b), t[6] = _mm256_sub_ps(a, b);
}

#define S8 _mm256_set1_ps
AVX2_FMA_INLINE void at8_8(const __m256 m[8], __m256 y[7]) {
    const __m256 s1 = _mm256_add_ps(m[1], m[2]), d1 = _mm256_sub_ps(m[1], m[2]);
    const __m256 s2 = _mm256_add_ps(m[3], m[4]), d2 = _mm256_sub_ps(m[3], m[4]);
    const __m256 s3 = _mm256_add_ps(m[5], m[6]), d3 = _mm256_sub_ps(m[5], m[6]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], s1), _mm256_add_ps(s2, s3));
    y[1] = _mm256_fmadd_ps(S8(2.0f), d2, _mm256_fmadd_ps(S8(0.5f), d3, d1));
    y[2] = _mm256_fmadd_ps(S8(4.0f), s2, _mm256_fmadd_ps(S8(0.25f), s3, s1));
    y[3] = _mm256_fmadd_ps(S8(8.0f), d2, _mm256_fmadd_ps(S8(0.125f), d3, d1));
    y[4] = _mm256_fmadd_ps(S8(16.0f), s2, _mm256_fmadd_ps(S8(0.0625f), s3, s1));
    y[5] = _mm256_fmadd_ps(S8(32.0f), d2, _mm256_fmadd_ps(S8(0.03125f), d3, d1));
    y[6] = _mm256_add_ps(_mm256_fmadd_ps(S8(64.0f), s2, _mm256_fmadd_ps(S8(0.015625f), s3, s1)), m[7]);
}

AVX2_FMA_INLINE void a7_8(const __m256 r[7], __m256 s[8]) {
    const __m256 e1 = _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[4], r[6]));
    const __m256 o1 = _mm256_add_ps(_mm256_add_ps(r[1], r[3]), r[5]);
    const __m256 e2 =
        _mm256_fmadd_ps(S8(64.0f), r[6], _mm256_fmadd_ps(S8(16.0f), r[4], _mm256_fmadd_ps(S8(4.0f), r[2], r[0])));
    const __m256 o2 = _mm256_fmadd_ps(S8(32.0f), r[5], _mm256_fmadd_ps(S8(8.0f), r[3], _mm256_mul_ps(S8(2.0f), r[1])));
    const __m256 e3 = _mm256_fmadd_ps(S8(0.015625f), r[6],
                                      _mm256_fmadd_ps(S8(0.0625f), r[4], _mm256_fmadd_ps(S8(0.25f), r[2], r[0])));
    const __m256 o3 =
        _mm256_fmadd_ps(S8(0.03125f), r[5], _mm256_fmadd_ps(S8(0.125f), r[3], _mm256_mul_ps(S8(0.5f), r[1])));
    s[0] = r[0], s[7] = r[6];
    s[1] = _mm256_add_ps(e1, o1), s[2] = _mm256_sub_ps(e1, o1);
    s[3] = _mm256_add_ps(e2, o2), s[4] = _mm256_sub_ps(e2, o2);
    s[5] = _mm256_add_ps(e3, o3), s[6] = _mm256_sub_ps(e3, o3);
}

AVX2_FMA_INLINE void b8_8(const __m256 u[8], __m256 d[8]) {
    const __m256 p1 = _mm256_sub_ps(u[1], u[2]), q1 = _mm256_add_ps(u[1], u[2]);
    const __m256 p2 = _mm256_sub_ps(u[3], u[4]), q2 = _mm256_add_ps(u[3], u[4]);
    const __m256 p3 = _mm256_sub_ps(u[5], u[6]), q3 = _mm256_add_ps(u[5], u[6]);
    const __m256 c21 = S8(5.25f);
    d[0] = u[0], d[7] = u[7];
    d[1] = _mm256_sub_ps(_mm256_fmadd_ps(S8(2.0f), p3, _mm256_fmadd_ps(S8(0.5f), p2, p1)), u[7]);
    d[2] = _mm256_fnmadd_ps(c21, u[0], _mm256_fmadd_ps(S8(4.0f), q3, _mm256_fmadd_ps(S8(0.25f), q2, q1)));
    d[3] = _mm256_fmadd_ps(c21, u[7], _mm256_fnmadd_ps(S8(2.5f), _mm256_add_ps(p2, p3), _mm256_mul_ps(S8(-4.25f), p1)));
    d[4] = _mm256_fmadd_ps(
        c21, u[0], _mm256_fnmadd_ps(S8(5.0f), q3, _mm256_fnmadd_ps(S8(1.25f), q2, _mm256_mul_ps(S8(-4.25f), q1))));
    d[5] = _mm256_fnmadd_ps(c21, u[7], _mm256_fmadd_ps(S8(0.5f), p3, _mm256_fmadd_ps(S8(2.0f), p2, p1)));
    d[6] = _mm256_sub_ps(_mm256_add_ps(_mm256_add_ps(q1, q2), q3), u[0]);
}

typedef void (*Transform8)(const __m256 *, __m256 *);

/* input_full: V[i n + j][ch] = (T P T^T)[i][j] of each tile's n x n patch of plane 0. */
AVX2_FMA_INLINE void input_full8(const int n, Transform8 tf, float *V, size_t sv, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * L8;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, 0);
                float *dst = V + (size_t)ch * b->N + ((size_t)u * s->tw + tx) * L8;
                __m256 rt[8][8];
                for (int r = 0; r < n; r++) {
                    __m256 d[8];
                    for (int c = 0; c < n; c++) d[c] = _mm256_load_ps(p + r * rs + c * L8);
                    tf(d, rt[r]);
                }
                for (int c = 0; c < n; c++) {
                    __m256 col[8], t[8];
                    for (int r = 0; r < n; r++) col[r] = rt[r][c];
                    tf(col, t);
                    for (int i = 0; i < n; i++) _mm256_store_ps(dst + (size_t)(i * n + c) * sv, t[i]);
                }
            }
}

/* adjoint_full: dP (+)= T dV T^T of each tile of plane 0, patches overlapping by ov. */
AVX2_FMA_INLINE void adjoint_full8(const int n, Transform8 tf, const int ov, float *const *dpl, const float *dV,
                                   size_t sv, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * L8;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, 0);
                const float *src = dV + (size_t)ch * b->N + ((size_t)u * s->tw + tx) * L8;
                __m256 t[8][8];
                for (int a = 0; a < n; a++) {
                    __m256 v[8];
                    for (int c = 0; c < n; c++) v[c] = _mm256_load_ps(src + (size_t)(a * n + c) * sv);
                    tf(v, t[a]);
                }
                for (int c = 0; c < n; c++) {
                    __m256 col[8], r[8];
                    for (int a = 0; a < n; a++) col[a] = t[a][c];
                    tf(col, r);
                    for (int i = 0; i < n; i++) {
                        float *q = p + i * rs + c * L8;
                        const int add = (i < ov && b->ty[u]) || (c < ov && tx);
                        _mm256_store_ps(q, add ? _mm256_add_ps(_mm256_load_ps(q), r[i]) : r[i]);
                    }
                }
            }
}

AVX2_FN void f43_input8(float *V, size_t sv, const Wb *s, const WbBlock *b) { input_full8(6, bt6_avx2, V, sv, s, b); }
AVX2_FN void f43_adj8(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b) {
    adjoint_full8(6, b6_avx2, 2, dpl, dV, sv, s, b);
}

/* Stride 2's groups (input_a .. adj_d above) in eight lanes. */
AVX2_FN void input_a8(float *V, size_t sv, const Wb *s, const WbBlock *b) { input_full8(8, bt8_8, V, sv, s, b); }

AVX2_FMA_INLINE void input_lines8(float *V, size_t sv, const Wb *s, const WbBlock *b, int ph, size_t st, size_t so) {
    const size_t N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, ph);
                float *dst = V + (size_t)ch * 7 * N + ((size_t)u * s->tw + tx) * L8;
                for (int o = 0; o < 7; o++) {
                    __m256 d[8], t[8];
                    for (int i = 0; i < 8; i++) d[i] = _mm256_load_ps(p + i * st + o * so);
                    bt8_8(d, t);
                    for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (size_t)i * sv + o * N, t[i]);
                }
            }
}

AVX2_FN void input_b8(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_lines8(V, sv, s, b, 1, (size_t)s->Qc * L8, L8);
}

AVX2_FN void input_c8(float *V, size_t sv, const Wb *s, const WbBlock *b) {
    input_lines8(V, sv, s, b, 2, L8, (size_t)s->Qc * L8);
}

AVX2_FN void input_d8(float *V, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * L8, N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                const float *p = tile_at(s, b, u, tx, ch, 3);
                float *dst = V + (size_t)ch * 49 * N + ((size_t)u * s->tw + tx) * L8;
                for (int r = 0; r < 7; r++)
                    for (int c = 0; c < 7; c++)
                        _mm256_store_ps(dst + (size_t)(r * 7 + c) * N, _mm256_load_ps(p + r * rs + c * L8));
            }
}

AVX2_FN void rows_a8(float *R0, size_t sr, const float *M, size_t sm, int cout, size_t N) {
    for (int co = 0; co < cout; co++)
        for (size_t col = 0; col < N; col += L8) {
            const float *src = M + (size_t)co * N + col;
            float *dst = R0 + (size_t)co * 7 * N + col;
            for (int b = 0; b < 8; b++) {
                __m256 m[8], y[7];
                for (int a = 0; a < 8; a++) m[a] = _mm256_load_ps(src + (size_t)(a * 8 + b) * sm);
                at8_8(m, y);
                for (int aa = 0; aa < 7; aa++) _mm256_store_ps(dst + (size_t)b * sr + aa * N, y[aa]);
            }
        }
}

AVX2_FN void rows_b8(float *R1, const float *M, size_t sm, int cout, size_t N) {
    for (int co = 0; co < cout; co++)
        for (size_t col = 0; col < N; col += L8) {
            const float *src = M + (size_t)co * 7 * N + col;
            float *dst = R1 + (size_t)co * 49 * N + col;
            for (int bb = 0; bb < 7; bb++) {
                __m256 m[8], y[7];
                for (int a = 0; a < 8; a++) m[a] = _mm256_load_ps(src + (size_t)a * sm + bb * N);
                at8_8(m, y);
                for (int aa = 0; aa < 7; aa++) _mm256_store_ps(dst + (size_t)(aa * 7 + bb) * N, y[aa]);
            }
        }
}

AVX2_FN void output_y8(float *const *yu, const int *nimg, size_t ystride, const float *R0, size_t sr, const float *R1,
                       const float *bias, const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++) {
        const __m256 bv = _mm256_set1_ps(bias ? bias[co] : 0.0f);
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(7, s->oh - 7 * b->ty[u]);
            for (int tx = 0; tx < s->tw; tx++) {
                const size_t col = ((size_t)u * s->tw + tx) * L8;
                const float *r0 = R0 + (size_t)co * 7 * N + col, *r1 = R1 + (size_t)co * 49 * N + col;
                const int cols = NASC_MIN(7, ow - 7 * tx);
                for (int aa = 0; aa < rows; aa++) {
                    __m256 m[8], y[7];
                    for (int c = 0; c < 8; c++) m[c] = _mm256_load_ps(r0 + (size_t)c * sr + aa * N);
                    at8_8(m, y);
                    float *st = stage + ((size_t)aa * ow + 7 * tx) * L8;
                    for (int bb = 0; bb < cols; bb++)
                        _mm256_store_ps(
                            st + bb * L8,
                            _mm256_add_ps(_mm256_add_ps(y[bb], _mm256_load_ps(r1 + (size_t)(aa * 7 + bb) * N)), bv));
                }
            }
            stage_out8(yu[u], nimg[u], ystride, (size_t)co * P + (size_t)7 * b->ty[u] * ow, rows * ow, stage);
        }
    }
}

AVX2_FN void dy_transform8(float *E, float *eb, float *ec, float *ed, const WbBufs *z, const float *const *dyu,
                           const int *nimg, size_t ystride, const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++)
        for (int u = 0; u < b->nu; u++) {
            stage_in8(stage, dyu[u], nimg[u], ystride, (size_t)co * P + (size_t)7 * b->ty[u] * ow, 7 * ow);
            for (int tx = 0; tx < s->tw; tx++) {
                const size_t col = ((size_t)u * s->tw + tx) * L8;
                const float *st = stage + (size_t)7 * tx * L8;
                __m256 e[7][7], c8[7][8];
                for (int aa = 0; aa < 7; aa++)
                    for (int bb = 0; bb < 7; bb++) {
                        e[aa][bb] = _mm256_load_ps(st + ((size_t)aa * ow + bb) * L8);
                        _mm256_store_ps(ed + (size_t)co * 49 * N + (size_t)(aa * 7 + bb) * N + col, e[aa][bb]);
                    }
                for (int aa = 0; aa < 7; aa++) {
                    a7_8(e[aa], c8[aa]);
                    for (int c = 0; c < 8; c++)
                        _mm256_store_ps(ec + c * z->sm7 + (size_t)co * 7 * N + aa * N + col, c8[aa][c]);
                }
                for (int bb = 0; bb < 7; bb++) {
                    __m256 r[7] = {e[0][bb], e[1][bb], e[2][bb], e[3][bb], e[4][bb], e[5][bb], e[6][bb]}, t[8];
                    a7_8(r, t);
                    for (int a = 0; a < 8; a++)
                        _mm256_store_ps(eb + a * z->sm7 + (size_t)co * 7 * N + bb * N + col, t[a]);
                }
                for (int c = 0; c < 8; c++) {
                    __m256 r[7] = {c8[0][c], c8[1][c], c8[2][c], c8[3][c], c8[4][c], c8[5][c], c8[6][c]}, t[8];
                    a7_8(r, t);
                    for (int a = 0; a < 8; a++) _mm256_store_ps(E + (a * 8 + c) * z->sm1 + (size_t)co * N + col, t[a]);
                }
            }
        }
}

AVX2_FN void adj_a8(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b) {
    adjoint_full8(8, b8_8, 1, dpl, dV, sv, s, b);
}

AVX2_FMA_INLINE void adjoint_lines8(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b,
                                    int ph, size_t st, size_t so, int down) {
    const size_t N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, ph);
                const float *src = dV + (size_t)ch * 7 * N + ((size_t)u * s->tw + tx) * L8;
                const int after = down ? b->ty[u] != 0 : tx != 0;
                for (int o = 0; o < 7; o++) {
                    __m256 v[8], r[8];
                    for (int i = 0; i < 8; i++) v[i] = _mm256_load_ps(src + (size_t)i * sv + o * N);
                    b8_8(v, r);
                    for (int i = 0; i < 8; i++) {
                        float *q = p + i * st + o * so;
                        _mm256_store_ps(q, i == 0 && after ? _mm256_add_ps(_mm256_load_ps(q), r[i]) : r[i]);
                    }
                }
            }
}

AVX2_FN void adj_b8(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b) {
    adjoint_lines8(dpl, dV, sv, s, b, 1, (size_t)s->Qc * L8, L8, 1);
}

AVX2_FN void adj_c8(float *const *dpl, const float *dV, size_t sv, const Wb *s, const WbBlock *b) {
    adjoint_lines8(dpl, dV, sv, s, b, 2, L8, (size_t)s->Qc * L8, 0);
}

AVX2_FN void adj_d8(float *const *dpl, const float *dV, const Wb *s, const WbBlock *b) {
    const size_t rs = (size_t)s->Qc * L8, N = b->N;
    for (int ch = 0; ch < s->cin; ch++)
        for (int u = 0; u < b->nu; u++)
            for (int tx = 0; tx < s->tw; tx++) {
                float *p = dtile_at(s, dpl, b, u, tx, ch, 3);
                const float *src = dV + (size_t)ch * 49 * N + ((size_t)u * s->tw + tx) * L8;
                for (int i = 0; i < 7; i++)
                    for (int c = 0; c < 7; c++)
                        _mm256_store_ps(p + i * rs + c * L8, _mm256_load_ps(src + (size_t)(i * 7 + c) * N));
            }
}

/* f43_output: Y = A^T M A (+ bias) of every tile of the block, into y. */
AVX2_FN void f43_output8(float *const *yu, const int *nimg, size_t ystride, const float *M, size_t sm,
                         const float *bias, const Wb *s, const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++) {
        const __m256 bv = _mm256_set1_ps(bias ? bias[co] : 0.0f);
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(4, s->oh - 4 * b->ty[u]);
            for (int tx = 0; tx < s->tw; tx++) {
                const float *src = M + (size_t)co * N + ((size_t)u * s->tw + tx) * L8;
                const int cols = NASC_MIN(4, ow - 4 * tx);
                __m256 t[4][6];
                for (int c = 0; c < 6; c++) {
                    __m256 m[6], y[4];
                    for (int i = 0; i < 6; i++) m[i] = _mm256_load_ps(src + (size_t)(i * 6 + c) * sm);
                    at4_avx2(m, y);
                    for (int aa = 0; aa < 4; aa++) t[aa][c] = y[aa];
                }
                for (int aa = 0; aa < rows; aa++) {
                    __m256 y[4];
                    at4_avx2(t[aa], y);
                    float *st = stage + ((size_t)aa * ow + 4 * tx) * L8;
                    for (int bb = 0; bb < cols; bb++) _mm256_store_ps(st + bb * L8, _mm256_add_ps(y[bb], bv));
                }
            }
            stage_out8(yu[u], nimg[u], ystride, (size_t)co * P + (size_t)4 * b->ty[u] * ow, rows * ow, stage);
        }
    }
}

/* f43_dy: E[i 6 + j][co] = (A e A^T)[i][j] of each tile's 4x4 output gradient e. */
AVX2_FN void f43_dy8(float *E, size_t se, const float *const *dyu, const int *nimg, size_t ystride, const Wb *s,
                     const WbBlock *b, float *stage) {
    const size_t N = b->N;
    const int ow = s->ow, P = s->oh * ow;
    for (int co = 0; co < s->cout; co++)
        for (int u = 0; u < b->nu; u++) {
            const int rows = NASC_MIN(4, s->oh - 4 * b->ty[u]);
            stage_in8(stage, dyu[u], nimg[u], ystride, (size_t)co * P + (size_t)4 * b->ty[u] * ow, rows * ow);
            for (int tx = 0; tx < s->tw; tx++) {
                float *dst = E + (size_t)co * N + ((size_t)u * s->tw + tx) * L8;
                const int cols = NASC_MIN(4, ow - 4 * tx);
                __m256 r[4][6];
                for (int aa = 0; aa < 4; aa++) {
                    __m256 e[4];
                    for (int bb = 0; bb < 4; bb++)
                        e[bb] = aa < rows && bb < cols ? _mm256_load_ps(stage + ((size_t)aa * ow + 4 * tx + bb) * L8)
                                                       : _mm256_setzero_ps();
                    at4t_avx2(e, r[aa]);
                }
                for (int c = 0; c < 6; c++) {
                    __m256 col[4] = {r[0][c], r[1][c], r[2][c], r[3][c]}, t[6];
                    at4t_avx2(col, t);
                    for (int i = 0; i < 6; i++) _mm256_store_ps(dst + (size_t)(i * 6 + c) * se, t[i]);
                }
            }
        }
}

/* wb_fold: dx (+)= the input values' gradients in the (phase) planes dpl. */
AVX2_FN void wb_fold8(float *dx, size_t xstride, int acc, const DxMask *mask, const float *dpl, const Wb *s, int n) {
    const int h = s->h, w = s->w, hw = h * w, Qc = s->Qc, st = s->s;
    for (int ch = 0; ch < s->cin; ch++) {
        const float *pc = dpl + (size_t)st * st * ch * s->plane;
        for (int r = 0; r < h; r++) {
            int pr, i;
            padded_at(r, st, &pr, &i);
            for (int c0 = 0; c0 < w; c0 += L8) {
                __m256 v[L8];
                for (int k = 0; k < L8; k++) {
                    int pcol, q;
                    padded_at(c0 + k, st, &pcol, &q);
                    v[k] = c0 + k < w ? _mm256_load_ps(pc + (st * pr + pcol) * s->plane + ((size_t)i * Qc + q) * L8)
                                      : _mm256_setzero_ps();
                }
                tr8(v);
                const __m256i m = lane_range8(c0, 0, w);
                for (int j = 0; j < n; j++) {
                    const size_t off = j * xstride + (size_t)ch * hw + (size_t)r * w + c0;
                    float *o = dx + off;
                    __m256 x = v[j];
                    if (mask) {
                        const __m256 a = _mm256_maskload_ps(mask->x + off, m);
                        __m256 on = _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ);
                        if (mask->act == ACT_RELU6)
                            on = _mm256_and_ps(on, _mm256_cmp_ps(a, _mm256_set1_ps(6.0f), _CMP_LT_OQ));
                        x = _mm256_and_ps(x, on);
                    }
                    const __m256 base = acc ? _mm256_maskload_ps(o, m) : _mm256_setzero_ps();
                    store8_first(o, acc || mask ? _mm256_add_ps(base, x) : x, w - c0);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ the drivers */
/* The kernels of one vector width: sixteen lanes (AVX-512) or eight (AVX2). */
typedef void (*InputFn)(float *, size_t, const Wb *, const WbBlock *);
typedef void (*AdjFn)(float *const *, const float *, size_t, const Wb *, const WbBlock *);
typedef struct {
    void (*fill)(float *, const Wb *, const ActSrc *, size_t, int);
    void (*fold)(float *, size_t, int, const DxMask *, const float *, const Wb *, int);
    /* stride 1 */
    InputFn f43_input;
    void (*f43_output)(float *const *, const int *, size_t, const float *, size_t, const float *, const Wb *,
                       const WbBlock *, float *);
    void (*f43_dy)(float *, size_t, const float *const *, const int *, size_t, const Wb *, const WbBlock *, float *);
    AdjFn f43_adj;
    /* stride 2 */
    InputFn input_a, input_b, input_c;
    void (*input_d)(float *, const Wb *, const WbBlock *);
    void (*rows_a)(float *, size_t, const float *, size_t, int, size_t);
    void (*rows_b)(float *, const float *, size_t, int, size_t);
    void (*output_y)(float *const *, const int *, size_t, const float *, size_t, const float *, const float *,
                     const Wb *, const WbBlock *, float *);
    void (*dy_transform)(float *, float *, float *, float *, const WbBufs *, const float *const *, const int *, size_t,
                         const Wb *, const WbBlock *, float *);
    AdjFn adj_a, adj_b, adj_c;
    void (*adj_d)(float *const *, const float *, const Wb *, const WbBlock *);
} WbOps;

static const WbOps *wb_ops(const Wb *s) {
    static const WbOps w16 = {wb_fill, wb_fold, f43_input, f43_output, f43_dy,       f43_adj, input_a, input_b, input_c,
                              input_d, rows_a,  rows_b,    output_y,   dy_transform, adj_a,   adj_b,   adj_c,   adj_d};
    static const WbOps w8 = {wb_fill8,  wb_fold8,      f43_input8, f43_output8, f43_dy8, f43_adj8,
                             input_a8,  input_b8,      input_c8,   input_d8,    rows_a8, rows_b8,
                             output_y8, dy_transform8, adj_a8,     adj_b8,      adj_c8,  adj_d8};
    return s->L == 8 ? &w8 : &w16;
}

/* The planes of the chunks of images [img0, img0 + n) of xs (fill each). */
static void fill_chunks(const WbOps *o, float *pl, const Wb *s, const ActSrc *xs, size_t img0, int n) {
    for (int c = 0; c * s->L < n; c++)
        o->fill(pl + c * s->chunk, s, xs, img0 + (size_t)c * s->L, NASC_MIN(s->L, n - c * s->L));
}

/* dx of the n images from the chunks' gradient planes dpl (fold each; mask as wb_fold's, at
 * image 0). */
static void fold_chunks(const WbOps *o, float *dx, size_t xstride, int acc, const DxMask *mask, const float *dpl,
                        const Wb *s, int n) {
    for (int c = 0; c * s->L < n; c++) {
        const size_t off = (size_t)c * s->L * xstride;
        DxMask mc;
        if (mask) mc = (DxMask){mask->x + off, mask->act};
        o->fold(dx + off, xstride, acc, mask ? &mc : NULL, dpl + c * s->chunk, s, NASC_MIN(s->L, n - c * s->L));
    }
}

void wb1_forward(float *y, size_t ystride, const ActSrc *xs, size_t img0, int n, const float *U, const float *bias,
                 const ConvDims *d) {
    const Wb s = wb_plan(d);
    const WbOps *o = wb_ops(&s);
    const int chunks = (n + s.L - 1) / s.L, units = chunks * s.th;
    const size_t pm = (size_t)s.cout * s.cin, Nmax = (size_t)s.upb * s.tw * s.L;
    const size_t sv = pstride(s.cin, Nmax), sm = pstride(s.cout, Nmax);
    float *pl = scratch_get(0, chunks * s.chunk * sizeof(float));
    float *V = scratch_get(WINO_SLOT, (36 * (sv + sm) + (size_t)(4 * s.ow + 16) * s.L) * sizeof(float));
    float *M = V + 36 * sv, *stage = M + 36 * sm;
    fill_chunks(o, pl, &s, xs, img0, n);
    for (int u0 = 0; u0 < units; u0 += s.upb) {
        WbBlock b;
        float *yu[WB_UNITS_MAX], *dpu[WB_UNITS_MAX];
        int nimg[WB_UNITS_MAX];
        unit_block(&b, yu, nimg, dpu, &s, u0, units, pl, NULL, y, ystride, n);
        const int N = (int)b.N;
        o->f43_input(V, sv, &s, &b);
        gemm_batch(36, s.cout, N, s.cin, U, s.cin, pm, V, N, sv, 0.0f, M, N, sm);
        o->f43_output(yu, nimg, ystride, M, sm, bias, &s, &b, stage);
    }
}

void wb1_backward(float *dx, size_t xstride, int dx_acc, const DxMask *mask, float *du, int du_zero, const float *dy,
                  size_t ystride, const ActSrc *xs, size_t img0, int n, const float *Ut, const ConvDims *d) {
    const Wb s = wb_plan(d);
    const WbOps *o = wb_ops(&s);
    const int chunks = (n + s.L - 1) / s.L, units = chunks * s.th;
    const size_t pm = (size_t)s.cout * s.cin, Nmax = (size_t)s.upb * s.tw * s.L;
    const size_t sv = pstride(s.cin, Nmax), se = pstride(s.cout, Nmax), et = 36 * Nmax * (size_t)s.cout;
    float *pl = scratch_get(0, 2 * chunks * s.chunk * sizeof(float)), *dpl = pl + chunks * s.chunk;
    float *E = scratch_get(WINO_SLOT, (36 * (sv + se) + et + (size_t)(4 * s.ow + 16) * s.L) * sizeof(float));
    float *V = E + 36 * se, *Et = V + 36 * sv, *stage = Et + et;
    if (du) fill_chunks(o, pl, &s, xs, img0, n);
    for (int u0 = 0; u0 < units; u0 += s.upb) {
        WbBlock b;
        float *dyu[WB_UNITS_MAX], *dpu[WB_UNITS_MAX];
        int nimg[WB_UNITS_MAX];
        unit_block(&b, dyu, nimg, dpu, &s, u0, units, pl, dpl, (float *)dy, ystride, n); /* dy only read */
        const int N = (int)b.N;
        o->f43_dy(E, se, (const float *const *)dyu, nimg, ystride, &s, &b, stage);
        if (du) { /* du[x] += V[x] E[x]^T */
            o->f43_input(V, sv, &s, &b);
            for (int x = 0; x < 36; x++) conv_transpose(Et + (size_t)x * N * s.cout, E + x * se, s.cout, N, (size_t)N);
            gemm_batch(36, s.cin, s.cout, N, V, N, sv, Et, s.cout, (size_t)N * s.cout, du_zero && u0 == 0 ? 0.0f : 1.0f,
                       du, s.cout, pm);
        }
        if (dx) { /* dV[x] = U[x]^T E[x], then the input transform's adjoint into dP */
            gemm_batch(36, s.cin, N, s.cout, Ut, s.cout, pm, E, N, se, 0.0f, V, N, sv);
            o->f43_adj(dpu, V, sv, &s, &b);
        }
    }
    if (dx) fold_chunks(o, dx, xstride, dx_acc, mask, dpl, &s, n);
}

void ws2_forward(float *y, size_t ystride, const ActSrc *xs, size_t img0, int n, const float *U, const float *bias,
                 const ConvDims *d) {
    const Wb s = wb_plan(d);
    const WbOps *o = wb_ops(&s);
    const int chunks = (n + s.L - 1) / s.L, units = chunks * s.th;
    const size_t pm = (size_t)s.cout * s.cin, Nmax = (size_t)s.upb * s.tw * s.L;
    float *pl = scratch_get(0, chunks * s.chunk * sizeof(float));
    const WbBufs zmax = wb_bufs(&s, Nmax);
    float *V =
        scratch_get(WINO_SLOT, (zmax.v + zmax.m + zmax.r0 + zmax.r1 + (size_t)(7 * s.ow + 16) * s.L) * sizeof(float));
    float *M = V + zmax.v, *R0 = M + zmax.m, *R1 = R0 + zmax.r0, *stage = R1 + zmax.r1;
    fill_chunks(o, pl, &s, xs, img0, n);
    for (int u0 = 0; u0 < units; u0 += s.upb) {
        WbBlock b;
        float *yu[WB_UNITS_MAX], *dpu[WB_UNITS_MAX];
        int nimg[WB_UNITS_MAX];
        unit_block(&b, yu, nimg, dpu, &s, u0, units, pl, NULL, y, ystride, n);
        const size_t N = b.N;
        const WbBufs z = wb_bufs(&s, N);
        o->input_a(V, z.sv1, &s, &b);
        gemm_batch(64, s.cout, (int)N, s.cin, U, s.cin, pm, V, (int)N, z.sv1, 0.0f, M, (int)N, z.sm1);
        o->rows_a(R0, z.sr7, M, z.sm1, s.cout, N);
        o->input_c(V, z.sv7, &s, &b);
        gemm_batch(8, s.cout, (int)(7 * N), s.cin, U + 72 * pm, s.cin, pm, V, (int)(7 * N), z.sv7, 1.0f, R0,
                   (int)(7 * N), z.sr7);
        o->input_b(V, z.sv7, &s, &b);
        gemm_batch(8, s.cout, (int)(7 * N), s.cin, U + 64 * pm, s.cin, pm, V, (int)(7 * N), z.sv7, 0.0f, M,
                   (int)(7 * N), z.sm7);
        o->rows_b(R1, M, z.sm7, s.cout, N);
        o->input_d(V, &s, &b);
        gemm_batch(1, s.cout, (int)(49 * N), s.cin, U + 80 * pm, s.cin, pm, V, (int)(49 * N), 0, 1.0f, R1,
                   (int)(49 * N), 0);
        o->output_y(yu, nimg, ystride, R0, z.sr7, R1, bias, &s, &b, stage);
    }
}

void ws2_backward(float *dx, size_t xstride, int dx_acc, float *du, int du_zero, const float *dy, size_t ystride,
                  const ActSrc *xs, size_t img0, int n, const float *Ut, const ConvDims *d) {
    const Wb s = wb_plan(d);
    const WbOps *o = wb_ops(&s);
    const int chunks = (n + s.L - 1) / s.L, units = chunks * s.th;
    const size_t pm = (size_t)s.cout * s.cin, Nmax = (size_t)s.upb * s.tw * s.L;
    const WbBufs zmax = wb_bufs(&s, Nmax);
    const size_t ea = 64 * zmax.sm1, ebc = 8 * zmax.sm7, ed = (size_t)s.cout * 49 * Nmax;
    const size_t vt = 64 * Nmax * (size_t)s.cin;
    /* planes: the input's (dW) and its gradient's (dx), each chunks' worth */
    float *pl = scratch_get(0, 2 * chunks * s.chunk * sizeof(float)), *dpl = pl + chunks * s.chunk;
    float *E =
        scratch_get(WINO_SLOT, (ea + 2 * ebc + ed + zmax.v + vt + (size_t)(7 * s.ow + 16) * s.L) * sizeof(float));
    float *Eb = E + ea, *Ec = Eb + ebc, *Ed = Ec + ebc, *V = Ed + ed, *Vt = V + zmax.v, *stage = Vt + vt;
    if (du) fill_chunks(o, pl, &s, xs, img0, n);
    for (int u0 = 0; u0 < units; u0 += s.upb) {
        WbBlock b;
        float *dyu[WB_UNITS_MAX], *dpu[WB_UNITS_MAX];
        int nimg[WB_UNITS_MAX];
        unit_block(&b, dyu, nimg, dpu, &s, u0, units, pl, dpl, (float *)dy, ystride, n); /* dy only read */
        const size_t N = b.N;
        const WbBufs z = wb_bufs(&s, N);
        o->dy_transform(E, Eb, Ec, Ed, &z, (const float *const *)dyu, nimg, ystride, &s, &b, stage);
        if (du) { /* du[x] (cout, cin) += E[x] V[x]^T, group by group: V, the smaller (cin < cout in
                   * the networks), transposed for gemm's main kernel */
            const int ci = s.cin, co = s.cout;
            const float beta = du_zero && u0 == 0 ? 0.0f : 1.0f; /* the first products overwrite du */
            o->input_a(V, z.sv1, &s, &b);
            for (int x = 0; x < 64; x++) conv_transpose(Vt + x * N * ci, V + x * z.sv1, ci, (int)N, N);
            gemm_batch(64, co, ci, (int)N, E, (int)N, z.sm1, Vt, ci, N * ci, beta, du, ci, pm);
            o->input_b(V, z.sv7, &s, &b);
            for (int a = 0; a < 8; a++) conv_transpose(Vt + a * 7 * N * ci, V + a * z.sv7, ci, (int)(7 * N), 7 * N);
            gemm_batch(8, co, ci, (int)(7 * N), Eb, (int)(7 * N), z.sm7, Vt, ci, 7 * N * ci, beta, du + 64 * pm, ci,
                       pm);
            o->input_c(V, z.sv7, &s, &b);
            for (int c = 0; c < 8; c++) conv_transpose(Vt + c * 7 * N * ci, V + c * z.sv7, ci, (int)(7 * N), 7 * N);
            gemm_batch(8, co, ci, (int)(7 * N), Ec, (int)(7 * N), z.sm7, Vt, ci, 7 * N * ci, beta, du + 72 * pm, ci,
                       pm);
            o->input_d(V, &s, &b);
            conv_transpose(Vt, V, ci, (int)(49 * N), 49 * N);
            gemm_batch(1, co, ci, (int)(49 * N), Ed, (int)(49 * N), 0, Vt, ci, 0, beta, du + 80 * pm, ci, 0);
        }
        if (dx) { /* dV[x] = U[x]^T E[x], then the input transforms' adjoints into dP */
            gemm_batch(64, s.cin, (int)N, s.cout, Ut, s.cout, pm, E, (int)N, z.sm1, 0.0f, V, (int)N, z.sv1);
            o->adj_a(dpu, V, z.sv1, &s, &b);
            gemm_batch(8, s.cin, (int)(7 * N), s.cout, Ut + 64 * pm, s.cout, pm, Eb, (int)(7 * N), z.sm7, 0.0f, V,
                       (int)(7 * N), z.sv7);
            o->adj_b(dpu, V, z.sv7, &s, &b);
            gemm_batch(8, s.cin, (int)(7 * N), s.cout, Ut + 72 * pm, s.cout, pm, Ec, (int)(7 * N), z.sm7, 0.0f, V,
                       (int)(7 * N), z.sv7);
            o->adj_c(dpu, V, z.sv7, &s, &b);
            gemm_batch(1, s.cin, (int)(49 * N), s.cout, Ut + 80 * pm, s.cout, pm, Ed, (int)(49 * N), 0, 0.0f, V,
                       (int)(49 * N), 0);
            o->adj_d(dpu, V, &s, &b);
        }
    }
    if (dx) fold_chunks(o, dx, xstride, dx_acc, NULL, dpl, &s, n);
}

#endif
