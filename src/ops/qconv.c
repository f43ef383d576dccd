/* qconv.c: the int8 convolution's fast paths (qops.h), each equal bit for bit to qconv2d_ref.
 *
 * Arithmetic. The accumulator acc = bias + sum w (x - x_zp) is computed in int32: qconv_pack
 * checks per output channel that |bias| + sum |w| * max|x - x_zp| fits, and falls back to the
 * reference (int64) loops otherwise, so wrap-around int32 sums are exact. Activations are read
 * as unsigned bytes xu = x + 128 (x ^ 0x80), the operand order of VNNI's vpdpbusd (u8 x s8)
 * and AMX's tdpbsud (s8 x u8), and the zero point moves into the bias at pack time:
 *     sum w (x - x_zp) = sum w xu - (128 + x_zp) sum w,   bc = bias - (128 + x_zp) sum w.
 * Padding reads xu = x_zp + 128, which the compensation cancels exactly, as the reference's
 * x_zp does. The accumulators start at bc (AMX: added in the epilogue). Requantization is q_mulshift's integer formula,
 * 16 lanes at a time in the AVX-512 epilogue (see requant16).
 *
 * Lowering (as conv.c's implicit gemm). One job = nb images. The input is copied once into
 * "planes": padded, phase-split (plane (py, px) holds padded rows i*s + py, columns j*s + px),
 * flattened, u8, with cw = 4 channels interleaved per element for the VNNI / AMX dot products
 * (cw = 1 for the portable path and depthwise). An output position is q = img*HW + oy*qw + ox;
 * each kernel tap (ky, kx) then reads one contiguous run of a plane at a fixed offset from q,
 * so the gemm needs no im2col. Columns ox >= ow and rows oy >= oh are junk: computed, never
 * stored. With one image per job, results go straight into y: a table per 16 positions gives
 * the valid lanes and their output offset (vpcompressd packs the valid lanes). Pointwise
 * convolutions have no junk, so small images are batched several per job (a linear layer
 * sees the whole batch as columns) through a row buffer copied out per image.
 *
 * Kernels (pack picks one per layer from the path and the shape):
 *   generic   portable C: 4 output channels x 64 positions, two taps per step (int16
 *             products, int32 sums: the pmaddwd pattern), compiled for AVX-512 / AVX2 /
 *             baseline (simd.h); also the depthwise fallback;
 *   avx512    AVX-512BW without VNNI: a dot of 4 u8 x s8 as two vpmaddwd on 16-bit pairs;
 *             depthwise with vpmaddwd on zero-extended pixels;
 *   vnni      vpdpbusd, register tile 4 channels x 64 positions; depthwise reads x directly
 *             (no planes; short rows two per vector) and does 3 (or 4) taps per vpdpbusd:
 *             vpermb (AVX512-VBMI) gathers the quadruples (x[s*ox + dil*kx]) of a row;
 *   amx       tdpbsud on 16x16 int32 tiles (weights s8 as A; planes as B, where 16 channel
 *             quads of one tap are 16 rows with a constant stride), for layers with 16 or
 *             more input and output channels per group; others (and depthwise) run vnni.
 * NASC_QCONV=generic|avx512|vnni|amx forces a path (read at every qconv_pack, so tests can
 * switch); "amx" forced also runs AMX on the layers it would leave to vnni.
 *
 * Threads: jobs (image groups) are split across threads; with fewer jobs than threads (batch
 * 1) every thread builds the job's planes and runs a share of its tiles, so that a layer
 * costs one OpenMP region and no barrier. Depthwise splits (image, channel range) items.
 * Small layers run on one thread (an OpenMP region costs microseconds).
 * Scratch: slot 3 of each thread (gemm's slot; this file never calls gemm).
 */
#include "qops.h"
#include "simd.h"

#include <limits.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* NASC_QCONV_PORTABLE builds only the portable kernels (what non-x86 targets get). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(NASC_QCONV_PORTABLE)
#define QX86 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define QX86 0
#endif

#define QSCRATCH 3
#define QMR 4   /* output channels per register tile */
#define QNV 4   /* 16-lane vectors of positions per register tile */
#define QTQ (QNV * 16)

/* ------------------------------------------------------------------ paths */
enum { QP_GENERIC, QP_AVX512, QP_VNNI, QP_AMX, QP_COUNT };
static const char *const qp_names[QP_COUNT] = {"generic", "avx512", "vnni", "amx"};

/* Kernel of one layer. */
typedef enum {
    QK_REF,        /* accumulators may overflow int32: the reference loops */
    QK_GEN,        /* portable gemm */
    QK_AVX512,     /* AVX-512BW gemm */
    QK_VNNI,       /* VNNI gemm */
    QK_AMX,        /* AMX gemm */
    QK_DW_GEN,     /* depthwise, portable */
    QK_DW_AVX512,  /* depthwise, AVX-512BW */
    QK_DW_VNNI     /* depthwise, VNNI + VBMI */
} QKernel;

static int is_dw_kernel(QKernel k) { return k >= QK_DW_GEN; }

#if QX86
static int amx_request(void) {
    /* Linux: a process must ask for the AMX tile data state before using it. */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}
#endif

static int cpu_vbmi(void) {
#if QX86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
#else
    return 0;
#endif
}

static int qpath_supported(int p) {
    static int cache[QP_COUNT] = {1, -1, -1, -1};
    int c = __atomic_load_n(&cache[p], __ATOMIC_ACQUIRE);
    if (c >= 0) return c;
    c = 0;
#if QX86
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("popcnt");
    if (p == QP_AVX512) c = avx512;
    if (p == QP_VNNI) c = avx512 && __builtin_cpu_supports("avx512vnni");
    if (p == QP_AMX) {
        unsigned a, b, cc, d;
        int amx = __get_cpuid_count(7, 0, &a, &b, &cc, &d) && (d >> 24 & 1) && (d >> 25 & 1);
        c = avx512 && __builtin_cpu_supports("avx512vnni") && amx && amx_request();
    }
#endif
    __atomic_store_n(&cache[p], c, __ATOMIC_RELEASE);
    return c;
}

/* NASC_QCONV if set and available, else the best path; *forced tells whether it was forced. */
static int qpath_choose(int *forced) {
    int p = QP_GENERIC;
    for (int q = QP_COUNT - 1; q > QP_GENERIC; q--)
        if (qpath_supported(q)) {
            p = q;
            break;
        }
    *forced = 0;
    const char *want = getenv("NASC_QCONV");
    if (want && *want) {
        int q = -1;
        for (int i = 0; i < QP_COUNT; i++)
            if (strcmp(want, qp_names[i]) == 0) q = i;
        if (q >= 0 && qpath_supported(q)) {
            p = q;
            *forced = 1;
        } else {
            static int warned;
            if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
                fprintf(stderr, "nasc: NASC_QCONV=%s is not available here; using %s\n", want, qp_names[p]);
        }
    }
    return p;
}

const char *qconv_path(void) {
    int forced;
    return qp_names[qpath_choose(&forced)];
}

/* ------------------------------------------------------------------ packed layer */
/* Plane geometry: element (cq, phase, img, i, j) of cw bytes sits at element index
 * ((cq * nph + phase) * nb + img) * HW + i * pw + j; nb (images per job) is set per call.
 * Depthwise splits rows only (sx = 1, pw = s * qw): a tap reads element s*q + shift. */
typedef struct {
    int cw;        /* channels per element: 4 or 1 */
    int sy, sx;    /* row and column phases (stride, or 1 when not split) */
    int ph, pw;    /* rows and columns of one phase plane */
    int qw;        /* output positions per output row */
    int HW;        /* ph * pw */
    int CQg, CQ;   /* elements across the channels of one conv group, of all groups */
    int max_off;   /* largest tap offset inside a phase plane, in elements */
} Geo;

struct QConvPacked {
    QConvArgs a;
    QKernel kern;
    Geo geo;
    int G, cin_g, cout_g;
    int cop;             /* output channels per group padded (to QMR, or 16 for AMX) */
    int taps;            /* k * k */
    int KQ;              /* k-steps of the gemm: CQg * taps, rounded up to even for QK_GEN */
    int *tap_phase;      /* (taps) phase plane of each tap */
    int *tap_shift;      /* (taps) offset inside the phase plane, elements */
    uint8_t *phase_used; /* (sy * sx) 1 if some tap reads the phase */
    int32_t *w;          /* kernel-specific layout, see pack_weights */
    int32_t *bc;         /* (G, cop) bias + zero-point compensation (wrapping int32) */
    int32_t *mult;       /* (G, cop) */
    int8_t *shift;       /* (G, cop) */
    int8_t *wref;        /* QK_REF: (cout, cin_g, k, k) */
    int32_t *bref;       /* QK_REF: (cout) or NULL */
    int amx_kr;          /* AMX: channel quads per tile step (rows of B) */
    int amx_nk;          /* AMX: tile steps per tap (CQg padded to amx_nk * amx_kr) */
    struct DwBlock *dwb; /* QK_DW_VNNI: column blocks (see dw_blocks) */
    int ndwb;
    int nqv;             /* 16-position vectors of one image, rounded up to a tile */
    uint16_t *vmask;     /* (nqv) valid lanes of each vector of one image */
    int32_t *voff;       /* (nqv) output pixel (oy * ow + ox) of the vector's first valid lane */
};

/* Largest |x - x_zp| over int8 x. */
static int64_t xdev_max(int32_t x_zp) { return NASC_MAX(127 - (int64_t)x_zp, (int64_t)x_zp + 128); }

/* The kernel for a layer on path p. */
static QKernel kernel_of(const QConvArgs *a, int p, int forced) {
    const ConvDims *d = &a->d;
    int dw = d->groups == d->cin && d->cin == d->cout;
    if (dw) {
        if (p >= QP_VNNI && cpu_vbmi() && d->k <= 7 && d->stride * 15 + d->dil * (d->k - 1) < 64)
            return QK_DW_VNNI;
        if (p >= QP_AVX512 && d->k <= 7 && d->stride <= 2) return QK_DW_AVX512;
        return QK_DW_GEN;
    }
    if (p == QP_AMX) {
        /* AMX pays once the reduction fills a tile row (64 bytes) and the channels a tile
         * (bench_int8: e.g. 16->16 3x3 at 28x28 1.3x VNNI, 16->96 1x1 0.9x). */
        int cin_g = d->cin / d->groups, cout_g = d->cout / d->groups;
        if (forced || (cin_g >= 16 && cout_g >= 16)) return QK_AMX;
        return QK_VNNI;
    }
    if (p == QP_VNNI) return QK_VNNI;
    if (p == QP_AVX512) return QK_AVX512;
    return QK_GEN;
}

static Geo geo_of(const ConvDims *d, QKernel k) {
    Geo g;
    int s = d->stride;
    int Hp = d->h + 2 * d->pad, Wp = d->w + 2 * d->pad;
    int wq = (Wp + s - 1) / s;
    g.ph = (Hp + s - 1) / s;
    int dwk = is_dw_kernel(k);
    g.qw = wq;
    if (dwk) {
        g.cw = 1;
        g.sy = s;
        g.sx = 1;
        g.pw = s * wq;
    } else {
        g.cw = (k == QK_GEN) ? 1 : 4;
        g.sy = g.sx = s;
        g.pw = wq;
    }
    g.HW = g.ph * g.pw;
    int cin_g = d->cin / d->groups;
    g.CQg = dwk ? 1 : (cin_g + g.cw - 1) / g.cw;
    g.CQ = dwk ? d->cin : g.CQg * d->groups;
    int span = (d->k - 1) * d->dil;
    g.max_off = (span / s) * g.pw + (dwk ? span : span / s);
    return g;
}

/* Weight layouts:
 *   QK_GEN     (G, cop/QMR, KQ, QMR) int16 stored in int32 slots pairwise: k-steps (ci, tap),
 *              KQ = cin_g*taps rounded up to even (the extra step has zero weights);
 *   QK_VNNI    (G, cop/QMR, KQ, QMR) int32 = 4 int8 of channels 4cq..4cq+3 at one tap;
 *   QK_AVX512  (G, cop/QMR, KQ, QMR, 2) int32 = int16 pairs (w0, w2) and (w1, w3);
 *   QK_AMX     (G, cop/16, taps, amx_nk, 16, 4*amx_kr) int8: A tiles, row = output channel;
 *   QK_DW_GEN, QK_DW_AVX512  (C, taps) int32 (DW_AVX512: w & 0xffff, the low int16 of a pair);
 *   QK_DW_VNNI (C, k, nq) int32 = 4 int8 taps kx = 4j..4j+3 of row ky (nq = ceil(k/4)).
 * Missing channels and taps are zero. */
static void pack_weights(QConvPacked *p, const int8_t *w) {
    const ConvDims *d = &p->a.d;
    const int k = d->k, taps = p->taps, cin_g = p->cin_g, G = p->G;
#define WAT(co, ci, t) ((int32_t)w[((size_t)(co) * cin_g + (ci)) * taps + (t)])
    switch (p->kern) {
    case QK_GEN: {
        int16_t *wg = xcalloc((size_t)G * p->cop * p->KQ + 2, sizeof(int16_t));
        for (int g = 0; g < G; g++)
            for (int c = 0; c < p->cout_g; c++)
                for (int ci = 0; ci < cin_g; ci++)
                    for (int t = 0; t < taps; t++) {
                        size_t blk = (size_t)g * (p->cop / QMR) + c / QMR;
                        wg[(blk * p->KQ + (size_t)ci * taps + t) * QMR + c % QMR] = (int16_t)WAT(g * p->cout_g + c, ci, t);
                    }
        p->w = (int32_t *)(void *)wg;
        break;
    }
    case QK_VNNI:
    case QK_AVX512: {
        int pairs = p->kern == QK_AVX512 ? 2 : 1;
        p->w = xcalloc((size_t)G * p->cop * p->KQ * pairs, sizeof(int32_t));
        for (int g = 0; g < G; g++)
            for (int c = 0; c < p->cout_g; c++)
                for (int cq = 0; cq < p->geo.CQg; cq++)
                    for (int t = 0; t < taps; t++) {
                        int8_t b[4] = {0, 0, 0, 0};
                        for (int e = 0; e < 4; e++)
                            if (cq * 4 + e < cin_g) b[e] = (int8_t)WAT(g * p->cout_g + c, cq * 4 + e, t);
                        size_t blk = (size_t)g * (p->cop / QMR) + c / QMR;
                        size_t at = ((blk * p->KQ + (size_t)cq * taps + t) * QMR + c % QMR) * pairs;
                        if (pairs == 1) {
                            uint32_t v = (uint32_t)(uint8_t)b[0] | (uint32_t)(uint8_t)b[1] << 8 |
                                         (uint32_t)(uint8_t)b[2] << 16 | (uint32_t)(uint8_t)b[3] << 24;
                            p->w[at] = (int32_t)v;
                        } else {
                            p->w[at] = (int32_t)((uint32_t)(uint16_t)b[0] | (uint32_t)(uint16_t)b[2] << 16);
                            p->w[at + 1] = (int32_t)((uint32_t)(uint16_t)b[1] | (uint32_t)(uint16_t)b[3] << 16);
                        }
                    }
        break;
    }
    case QK_AMX: {
        int kr = p->amx_kr, nk = p->amx_nk;
        size_t per_tap = (size_t)nk * 16 * 4 * kr; /* bytes of one (co block, tap) */
        int8_t *wa = xcalloc((size_t)G * (p->cop / 16) * taps * per_tap, 1);
        for (int g = 0; g < G; g++)
            for (int c = 0; c < p->cout_g; c++)
                for (int ci = 0; ci < cin_g; ci++)
                    for (int t = 0; t < taps; t++) {
                        int cq = ci / 4, kc = cq / kr, r = cq % kr;
                        size_t blk = (size_t)g * (p->cop / 16) + c / 16;
                        size_t at = (blk * taps + t) * per_tap + ((size_t)kc * 16 + c % 16) * 4 * kr + r * 4 + ci % 4;
                        wa[at] = (int8_t)WAT(g * p->cout_g + c, ci, t);
                    }
        p->w = (int32_t *)(void *)wa;
        break;
    }
    case QK_DW_GEN:
    case QK_DW_AVX512:
        p->w = xcalloc((size_t)d->cout * taps, sizeof(int32_t));
        for (int c = 0; c < d->cout; c++)
            for (int t = 0; t < taps; t++)
                p->w[(size_t)c * taps + t] = p->kern == QK_DW_GEN ? WAT(c, 0, t) : (int32_t)(uint16_t)WAT(c, 0, t);
        break;
    case QK_DW_VNNI: {
        int nq = (k + 3) / 4;
        uint32_t *wd = xcalloc((size_t)d->cout * k * nq, sizeof(uint32_t));
        for (int c = 0; c < d->cout; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    wd[((size_t)c * k + ky) * nq + kx / 4] |= (uint32_t)(uint8_t)WAT(c, 0, ky * k + kx) << (8 * (kx % 4));
        p->w = (int32_t *)(void *)wd;
        break;
    }
    case QK_REF:
        break;
    }
#undef WAT
}

/* Valid-lane masks and output offsets of the 16-position vectors of one image. */
static void pack_vectors(QConvPacked *p) {
    const ConvDims *d = &p->a.d;
    const int qw = p->geo.qw, Q = d->oh * qw;
    p->nqv = (Q + QTQ - 1) / QTQ * QNV;
    p->vmask = xcalloc((size_t)p->nqv, sizeof *p->vmask);
    p->voff = xcalloc((size_t)p->nqv, sizeof *p->voff);
    for (int v = 0; v < p->nqv; v++) {
        int q0 = 16 * v, oy0 = q0 / qw;
        p->voff[v] = oy0 >= d->oh ? d->oh * d->ow : oy0 * d->ow + NASC_MIN(q0 % qw, d->ow);
        unsigned m = 0;
        for (int l = 0; l < 16; l++) {
            int q = q0 + l;
            if (q / qw < d->oh && q % qw < d->ow) m |= 1u << l;
        }
        p->vmask[v] = (uint16_t)m;
    }
}

/* QK_DW_VNNI reads x directly (no planes): a vector holds R output rows of L <= 16 columns
 * (R > 1 when a row is short: 7x7 outputs go two rows per vector). For output rows oy0 .. and
 * a kernel row ky, one masked 64-byte load from x at row iy0 = oy0*s + ky*dil - pad, column
 * s*ox0 - pad covers every tap of the vector; vpermb with idx[j] picks for lane (r, i) the
 * bytes of taps kx = 4j..4j+3, i.e. x[iy0 + r*s][s*(ox0 + i) + dil*kx - pad], and replaces
 * those outside the image (colok: column; grp: row, per group r) by the padding value. */
typedef struct {
    ptrdiff_t off; /* of the load from the channel's first byte */
    uint64_t lm;   /* load mask: bytes inside the channel */
    uint64_t rows; /* bytes whose row is inside the image */
} DwLoad;

typedef struct DwBlock {
    int ox0, L, R;
    uint8_t idx[2][64];
    uint64_t colok[2]; /* bytes whose column is inside the image (and kx < k) */
    uint64_t grp[16];  /* bytes of lane group r */
    DwLoad *ld;        /* (ceil(oh / R), k): the loads of each row group and kernel row */
} DwBlock;

static void dw_blocks(QConvPacked *p) {
    const ConvDims *d = &p->a.d;
    const int s = d->stride, k = d->k, span = d->dil * (k - 1);
    int R = 1;
    if (d->ow <= 16)
        while (R < 16 / d->ow && R * s * d->w + s * (d->ow - 1) + span < 64) R++;
    p->ndwb = d->ow <= 16 ? 1 : (d->ow + 15) / 16;
    p->dwb = xcalloc((size_t)p->ndwb, sizeof *p->dwb);
    for (int b = 0; b < p->ndwb; b++) {
        DwBlock *B = &p->dwb[b];
        B->ox0 = 16 * b;
        B->L = NASC_MIN(16, d->ow - B->ox0);
        B->R = b == 0 && p->ndwb == 1 ? R : 1;
        for (int l = 0; l < 16; l++) {
            int r = l / B->L, i = l % B->L;
            if (r >= B->R) continue;
            B->grp[r] |= (uint64_t)0xf << (4 * l);
            for (int j = 0; j < 2; j++)
                for (int t = 0; t < 4; t++) {
                    int kx = 4 * j + t, col = s * (B->ox0 + i) + d->dil * kx - d->pad;
                    if (kx >= k) continue;
                    int at = r * s * d->w + s * i + d->dil * kx;
                    NASC_ASSERT(at < 64);
                    B->idx[j][4 * l + t] = (uint8_t)at;
                    if (col >= 0 && col < d->w) B->colok[j] |= (uint64_t)1 << (4 * l + t);
                }
        }
        int ng = (d->oh + B->R - 1) / B->R;
        B->ld = xcalloc((size_t)ng * k, sizeof *B->ld);
        for (int gi = 0; gi < ng; gi++)
            for (int ky = 0; ky < k; ky++) {
                DwLoad *L = &B->ld[gi * k + ky];
                int iy0 = gi * B->R * s + ky * d->dil - d->pad;
                ptrdiff_t off = (ptrdiff_t)iy0 * d->w + s * B->ox0 - d->pad, hw = (ptrdiff_t)d->h * d->w;
                ptrdiff_t lo = NASC_MAX(0, -off), hi = NASC_MIN(64, hw - off);
                L->off = off;
                L->lm = hi <= lo ? 0 : (hi - lo == 64 ? ~(uint64_t)0 : (((uint64_t)1 << (hi - lo)) - 1) << lo);
                for (int r = 0; r < B->R; r++) {
                    int iy = iy0 + r * s;
                    if (iy >= 0 && iy < d->h) L->rows |= B->grp[r];
                }
            }
    }
}

QConvPacked *qconv_pack(const int8_t *w, const int32_t *bias, const int32_t *mult, const int8_t *shift,
                        const QConvArgs *a) {
    const ConvDims *d = &a->d;
    NASC_ASSERT(d->groups >= 1 && d->cin % d->groups == 0 && d->cout % d->groups == 0);
    NASC_ASSERT(d->oh >= 1 && d->ow >= 1 && d->k >= 1 && d->stride >= 1 && d->dil >= 1 && d->pad >= 0);
    QConvPacked *p = xcalloc(1, sizeof *p);
    p->a = *a;
    p->G = d->groups;
    p->cin_g = d->cin / d->groups;
    p->cout_g = d->cout / d->groups;
    p->taps = d->k * d->k;
    const int taps = p->taps, cin_g = p->cin_g;

    /* Can the accumulators stay in int32? (Also bounds the partial sums of w * xu.) */
    int fits = (int64_t)cin_g * taps <= 60000;
    int64_t xdev = xdev_max(a->x_zp);
    for (int co = 0; co < d->cout && fits; co++) {
        int64_t s = 0;
        for (size_t i = 0; i < (size_t)cin_g * taps; i++) s += abs(w[(size_t)co * cin_g * taps + i]);
        int64_t b = bias ? bias[co] : 0;
        if ((b < 0 ? -b : b) + s * xdev > INT32_MAX) fits = 0;
    }
    int forced;
    int path = qpath_choose(&forced);
    p->kern = fits ? kernel_of(a, path, forced) : QK_REF;
    if (p->kern == QK_REF) {
        size_t nw = (size_t)d->cout * cin_g * taps;
        p->wref = xmalloc(nw);
        memcpy(p->wref, w, nw);
        if (bias) {
            p->bref = xmalloc((size_t)d->cout * sizeof *p->bref);
            memcpy(p->bref, bias, (size_t)d->cout * sizeof *p->bref);
        }
        p->mult = xmalloc((size_t)d->cout * sizeof *p->mult);
        memcpy(p->mult, mult, (size_t)d->cout * sizeof *p->mult);
        p->shift = xmalloc((size_t)d->cout);
        memcpy(p->shift, shift, (size_t)d->cout);
        return p;
    }
    p->geo = geo_of(d, p->kern);
    const Geo *g = &p->geo;
    const int dwk = is_dw_kernel(p->kern);
    p->KQ = g->CQg * taps;
    if (p->kern == QK_GEN) p->KQ += p->KQ & 1;
    p->cop = dwk ? 1 : p->kern == QK_AMX ? (p->cout_g + 15) / 16 * 16 : (p->cout_g + QMR - 1) / QMR * QMR;
    if (p->kern == QK_AMX) {
        p->amx_nk = (g->CQg + 15) / 16;
        p->amx_kr = (g->CQg + p->amx_nk - 1) / p->amx_nk;
    }
    /* Tap offsets inside the planes, and the phases the taps read. */
    p->tap_phase = xmalloc((size_t)taps * sizeof(int));
    p->tap_shift = xmalloc((size_t)taps * sizeof(int));
    p->phase_used = xcalloc((size_t)g->sy * g->sx, 1);
    for (int ky = 0; ky < d->k; ky++)
        for (int kx = 0; kx < d->k; kx++) {
            int t = ky * d->k + kx, oy = ky * d->dil, ox = kx * d->dil, s = d->stride;
            if (dwk) {
                p->tap_phase[t] = oy % s;
                p->tap_shift[t] = (oy / s) * g->pw + ox;
            } else {
                p->tap_phase[t] = (oy % s) * s + ox % s;
                p->tap_shift[t] = (oy / s) * g->pw + ox / s;
            }
            p->phase_used[p->tap_phase[t]] = 1;
        }
    /* Bias with the zero-point compensation and requantization constants, padded per group. */
    size_t nco = dwk ? (size_t)d->cout : (size_t)p->G * p->cop;
    p->bc = xcalloc(nco, sizeof *p->bc);
    p->mult = xcalloc(nco, sizeof *p->mult);
    p->shift = xcalloc(nco, 1);
    for (size_t i = 0; i < nco; i++) p->shift[i] = 1; /* padding channels: computed, never stored */
    for (int co = 0; co < d->cout; co++) {
        size_t at = dwk ? (size_t)co : (size_t)(co / p->cout_g) * p->cop + co % p->cout_g;
        int64_t sw = 0;
        for (size_t i = 0; i < (size_t)cin_g * taps; i++) sw += w[(size_t)co * cin_g * taps + i];
        int64_t bcv = (bias ? bias[co] : 0) - (128 + (int64_t)a->x_zp) * sw;
        p->bc[at] = (int32_t)(uint32_t)(uint64_t)bcv; /* wraps: exact modulo 2^32 */
        p->mult[at] = mult[co];
        p->shift[at] = shift[co];
        NASC_ASSERT(shift[co] >= 1 && shift[co] <= 62);
    }
    pack_weights(p, w);
    pack_vectors(p);
    if (p->kern == QK_DW_VNNI) dw_blocks(p);
    return p;
}

void qconv_free(QConvPacked *p) {
    if (!p) return;
    free(p->tap_phase);
    free(p->tap_shift);
    free(p->phase_used);
    free(p->w);
    free(p->bc);
    free(p->mult);
    free(p->shift);
    free(p->wref);
    free(p->bref);
    free(p->vmask);
    free(p->voff);
    for (int b = 0; b < p->ndwb; b++) free(p->dwb[b].ld);
    free(p->dwb);
    free(p);
}

/* ------------------------------------------------------------------ planes */
/* One plane row: pw elements of cw bytes. Elements [jlo, jhi) come from the source rows src[t]
 * (element byte t; NULL: a missing channel, which reads the pad value), columns 0, sx, 2sx, ...
 * from src[t]; the others are padv. Sources are int8, the planes u8 (x ^ 0x80). */
static void row_c(uint8_t *row, const int8_t *const *src, int cw, int pw, int jlo, int jhi, int sx, uint8_t padv) {
    memset(row, padv, (size_t)jlo * cw);
    memset(row + (size_t)jhi * cw, padv, (size_t)(pw - jhi) * cw);
    for (int t = 0; t < cw; t++) {
        uint8_t *r = row + (size_t)jlo * cw + t;
        const int8_t *s = src[t];
        int n = jhi - jlo;
        if (!s)
            for (int j = 0; j < n; j++) r[(size_t)j * cw] = padv;
        else if (cw == 1 && sx == 1)
            for (int j = 0; j < n; j++) r[j] = (uint8_t)(s[j] ^ 0x80);
        else
            for (int j = 0; j < n; j++) r[(size_t)j * cw] = (uint8_t)(s[(size_t)j * sx] ^ 0x80);
    }
}

#if QX86
#define TGT_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt,avx512vnni")))
#define TGT_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt,avx512vnni,avx512vbmi")))
#define TGT_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt,avx512vnni,amx-tile,amx-int8")))
#define INLINE static inline __attribute__((always_inline))

TGT_512 static void fill_avx512(uint8_t *dst, size_t n, uint8_t v) {
    __m512i pv = _mm512_set1_epi8((char)v);
    for (; n >= 64; n -= 64, dst += 64) _mm512_storeu_si512(dst, pv);
    if (n) _mm512_mask_storeu_epi8(dst, ((__mmask64)1 << n) - 1, pv);
}

/* m <= 16 source bytes s[0], s[sx], ..., as u8 (x ^ 0x80); lanes past m are junk. */
TGT_512 INLINE __m128i cols16(const int8_t *s, int m, int sx) {
    __m128i v;
    if (sx == 1) {
        v = _mm_maskz_loadu_epi8((__mmask16)((1u << m) - 1), s);
    } else if (sx == 2) {
        __m256i u = _mm256_maskz_loadu_epi8((__mmask32)(((uint64_t)1 << (2 * m - 1)) - 1), s);
        v = _mm256_cvtepi16_epi8(_mm256_and_si256(u, _mm256_set1_epi16(0xff)));
    } else {
        int8_t tmp[16] = {0};
        for (int l = 0; l < m; l++) tmp[l] = s[(size_t)l * sx];
        v = _mm_loadu_si128((const __m128i *)tmp);
    }
    return _mm_xor_si128(v, _mm_set1_epi8((char)0x80));
}

/* row_c for the AVX-512 kernels: 16 columns per step, 4-channel interleave by unpacking. */
TGT_512 static void row_avx512(uint8_t *row, const int8_t *const *src, int cw, int pw, int jlo, int jhi, int sx,
                               uint8_t padv) {
    fill_avx512(row, (size_t)jlo * cw, padv);
    fill_avx512(row + (size_t)jhi * cw, (size_t)(pw - jhi) * cw, padv);
    const __m128i pv = _mm_set1_epi8((char)padv);
    for (int j = jlo; j < jhi; j += 16) {
        int m = NASC_MIN(16, jhi - j);
        size_t so = (size_t)(j - jlo) * sx;
        if (cw == 1) {
            _mm_mask_storeu_epi8(row + j, (__mmask16)((1u << m) - 1), src[0] ? cols16(src[0] + so, m, sx) : pv);
            continue;
        }
        __m128i a0 = src[0] ? cols16(src[0] + so, m, sx) : pv, a1 = src[1] ? cols16(src[1] + so, m, sx) : pv;
        __m128i a2 = src[2] ? cols16(src[2] + so, m, sx) : pv, a3 = src[3] ? cols16(src[3] + so, m, sx) : pv;
        __m128i l01 = _mm_unpacklo_epi8(a0, a1), h01 = _mm_unpackhi_epi8(a0, a1);
        __m128i l23 = _mm_unpacklo_epi8(a2, a3), h23 = _mm_unpackhi_epi8(a2, a3);
        __m512i z = _mm512_castsi128_si512(_mm_unpacklo_epi16(l01, l23));
        z = _mm512_inserti32x4(z, _mm_unpackhi_epi16(l01, l23), 1);
        z = _mm512_inserti32x4(z, _mm_unpacklo_epi16(h01, h23), 2);
        z = _mm512_inserti32x4(z, _mm_unpackhi_epi16(h01, h23), 3);
        _mm512_mask_storeu_epi8(row + (size_t)4 * j, m == 16 ? ~(__mmask64)0 : ((__mmask64)1 << (4 * m)) - 1, z);
    }
}
#endif

/* Writes elements [cq0, cq1) of the planes for image `img` (slot img of nb) from x (the image,
 * (cin, h, w)); pl holds element cqb first. Phases no tap reads are skipped. */
static void planes_build(uint8_t *pl, const int8_t *x, const QConvPacked *p, int nb, int img, int cqb, int cq0,
                         int cq1) {
    const ConvDims *d = &p->a.d;
    const Geo *g = &p->geo;
    const int cw = g->cw, nph = g->sy * g->sx, h = d->h, w = d->w, pad = d->pad;
    const uint8_t padv = (uint8_t)(p->a.x_zp + 128);
    const int dwk = is_dw_kernel(p->kern);
    void (*row_fn)(uint8_t *, const int8_t *const *, int, int, int, int, int, uint8_t) = row_c;
#if QX86
    if (p->kern != QK_GEN && p->kern != QK_DW_GEN) row_fn = row_avx512; /* an AVX-512 kernel runs */
#endif
    /* no padding, no phases: each plane is one contiguous run of the source */
    const int flat = pad == 0 && nph == 1 && g->pw == w && g->ph == h;
    for (int cq = cq0; cq < cq1; cq++) {
        const int8_t *src[4];
        int grp = dwk ? 0 : cq / g->CQg, cqg = dwk ? cq : cq % g->CQg;
        for (int t = 0; t < cw; t++) {
            int ci = cqg * cw + t;
            src[t] = (dwk || ci < p->cin_g) ? x + ((size_t)grp * p->cin_g + ci) * h * w : NULL;
        }
        for (int ph = 0; ph < nph; ph++) {
            if (!p->phase_used[ph]) continue;
            int py = ph / g->sx, px = ph % g->sx;
            uint8_t *dst = pl + (((size_t)(cq - cqb) * nph + ph) * nb + img) * g->HW * cw;
            if (flat) {
                row_fn(dst, src, cw, g->HW, 0, g->HW, 1, padv);
                continue;
            }
            /* columns j with source column j*sx + px - pad inside [0, w): [jlo, jhi) */
            int off = px - pad;
            int jlo = off >= 0 ? 0 : (-off + g->sx - 1) / g->sx;
            int jhi = w - off <= 0 ? 0 : (w - off - 1) / g->sx + 1;
            jlo = NASC_MIN(jlo, g->pw);
            jhi = NASC_MAX(jlo, NASC_MIN(jhi, g->pw));
            for (int i = 0; i < g->ph; i++) {
                uint8_t *row = dst + (size_t)i * g->pw * cw;
                int iy = i * g->sy + py - pad;
                const int8_t *rs[4];
                int in = iy >= 0 && iy < h && jhi > jlo;
                for (int t = 0; t < cw; t++)
                    rs[t] = in && src[t] ? src[t] + (size_t)iy * w + (ptrdiff_t)jlo * g->sx + off : NULL;
                if (!in)
                    row_fn(row, rs, cw, g->pw, 0, 0, 1, padv);
                else
                    row_fn(row, rs, cw, g->pw, jlo, jhi, g->sx, padv);
            }
        }
    }
}

/* planes_build for 1x1 images (a linear layer), all nimg images of a job at once: element
 * (cq, img) = the 4 (or 1) channels of image img. */
static void planes_linear(uint8_t *pl, const int8_t *x, const QConvPacked *p, int nb, int nimg, int cq0, int cq1) {
    const int cw = p->geo.cw, cin = p->a.d.cin;
    const uint8_t padv = (uint8_t)(p->a.x_zp + 128);
    for (int cq = cq0; cq < cq1; cq++) {
        int grp = cq / p->geo.CQg, c0 = (cq % p->geo.CQg) * cw, n = NASC_MAX(0, NASC_MIN(cw, p->cin_g - c0));
        const int8_t *src = x + (size_t)grp * p->cin_g + c0;
        uint8_t *dst = pl + (size_t)cq * nb * cw;
        for (int b = 0; b < nimg; b++) {
            uint8_t *e = dst + (size_t)b * cw;
            for (int t = 0; t < n; t++) e[t] = (uint8_t)(src[(size_t)b * cin + t] ^ 0x80);
            for (int t = n; t < cw; t++) e[t] = padv;
        }
    }
}

/* ------------------------------------------------------------------ generic kernels */
/* y = q_requant_f(acc + bc, s) for int32 sums (wrapping add: exact). */
static inline int8_t requant1(int32_t acc, int32_t bc, float s, const QConvArgs *a) {
    int32_t v = (int32_t)((uint32_t)acc + (uint32_t)bc);
    return (int8_t)q_requant_f(v, s, a->y_zp, a->y_min, a->y_max);
}

/* Stores 16 results of vector qv: into row + voff[qv] (valid lanes, packed) when vmask is
 * given, else into row (the vector's first position) up to n values. */
static inline void store_c(int8_t *row, const int8_t *v, const uint16_t *vmask, const int32_t *voff, int qv, int n) {
    if (vmask) {
        int8_t *o = row + voff[qv];
        for (int l = 0, k = 0; l < 16; l++)
            if (vmask[qv] >> l & 1) o[k++] = v[l];
    } else {
        memcpy(row, v, (size_t)NASC_MAX(0, NASC_MIN(16, n)));
    }
}

/* The gemm sums of one tile: acc (QMR, QTQ) over KQ (even) k-steps, two per step as int16
 * products (exact: |w * xu| <= 127 * 255) added in int32 (the pmaddwd pattern). */
MULTIVERSION static void gen_sums(int32_t *restrict acc, const uint8_t *pl, const int32_t *koff, int KQ,
                                  const int16_t *wb) {
    memset(acc, 0, sizeof(int32_t) * QMR * QTQ);
    for (int k = 0; k < KQ; k += 2) {
        const uint8_t *s0 = pl + koff[k], *s1 = pl + koff[k + 1];
        const int16_t *wk = wb + (size_t)k * QMR;
        for (int i = 0; i < QMR; i++) {
            int32_t w0 = wk[i], w1 = wk[QMR + i];
            int32_t *a = acc + i * QTQ;
            for (int q = 0; q < QTQ; q++) a[q] += (int16_t)(w0 * s0[q]) + (int16_t)(w1 * s1[q]);
        }
    }
}

static void tile_generic(int nv, const uint8_t *pl, const int32_t *koff, int KQ, const int16_t *wb, const int32_t *bc,
                         const int32_t *mult, const int8_t *shift, const QConvArgs *a, int8_t *dst, size_t ld,
                         int mrows, int qv0, int qn, const uint16_t *vmask, const int32_t *voff) {
    int32_t acc[QMR * QTQ];
    gen_sums(acc, pl, koff, KQ, wb);
    for (int i = 0; i < mrows; i++) {
        float sc = q_conv_scale(mult[i], shift[i]);
        for (int j = 0; j < nv; j++) {
            int8_t v[16];
            for (int l = 0; l < 16; l++) v[l] = requant1(acc[i * QTQ + 16 * j + l], bc[i], sc, a);
            store_c(dst + (size_t)i * ld + (vmask ? 0 : 16 * j), v, vmask, voff, qv0 + j, qn - 16 * j);
        }
    }
}

/* Depthwise, one channel, all positions; pl = the channel's phase planes. */
static void dw_generic(const uint8_t *pl, const QConvPacked *p, int c, int8_t *yc) {
    const int s = p->a.d.stride, taps = p->taps;
    const int32_t *wc = p->w + (size_t)c * taps;
    const float sc = q_conv_scale(p->mult[c], p->shift[c]);
    for (int v0 = 0; v0 < p->nqv; v0 += QNV) {
        int32_t acc[QTQ];
        memset(acc, 0, sizeof acc);
        for (int t = 0; t < taps; t++) {
            const uint8_t *src = pl + (size_t)p->tap_phase[t] * p->geo.HW + p->tap_shift[t] + (size_t)s * 16 * v0;
            int32_t wv = wc[t];
            if (s == 1)
                for (int q = 0; q < QTQ; q++) acc[q] += wv * (int32_t)src[q];
            else
                for (int q = 0; q < QTQ; q++) acc[q] += wv * (int32_t)src[(size_t)s * q];
        }
        for (int j = 0; j < QNV; j++) {
            int8_t v[16];
            for (int l = 0; l < 16; l++) v[l] = requant1(acc[16 * j + l], p->bc[c], sc, &p->a);
            store_c(yc, v, p->vmask, p->voff, v0 + j, 0);
        }
    }
}

/* ------------------------------------------------------------------ AVX-512 kernels */
#if QX86
typedef struct {
    __m512i zp;
    __m512 flo, fhi; /* the clamp, less the zero point, as floats */
} Epi;

TGT_512 INLINE Epi epi_of(const QConvArgs *a) {
    Epi e = {_mm512_set1_epi32(a->y_zp), _mm512_set1_ps((float)(a->y_min - a->y_zp)),
             _mm512_set1_ps((float)(a->y_max - a->y_zp))};
    return e;
}

/* 16 int32 accumulators (bias included) of one output channel -> 16 clamped int32 results,
 * q_requant_f exactly: convert (round to nearest even), multiply, clamp, round to nearest
 * even (explicitly, whatever MXCSR says), add the zero point. Rq holds one channel's scale. */
typedef struct {
    __m512 s;
} Rq;

TGT_512 INLINE Rq rq_of(int32_t mult, int shift) {
    Rq q = {_mm512_set1_ps(q_conv_scale(mult, shift))};
    return q;
}

TGT_512 INLINE __m512i requant16(__m512i acc, const Rq *q, const Epi *e) {
    __m512 v = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), q->s,
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_ps(_mm512_max_ps(v, e->flo), e->fhi);
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_add_epi32(r, e->zp);
}

/* store_c for 16 int32 lanes: the valid lanes packed with vpcompressd, then narrowed with
 * signed saturation (the clamp to [-128, 127]). */
TGT_512 INLINE void store16(int8_t *row, __m512i r, const uint16_t *vmask, const int32_t *voff, int qv, int n) {
    if (vmask) {
        unsigned m = vmask[qv];
        if (m == 0xffff)
            _mm_storeu_si128((__m128i *)(row + voff[qv]), _mm512_cvtsepi32_epi8(r));
        else if (m)
            _mm_mask_storeu_epi8(row + voff[qv], (__mmask16)((1u << _mm_popcnt_u32(m)) - 1),
                                 _mm512_cvtsepi32_epi8(_mm512_maskz_compress_epi32((__mmask16)m, r)));
    } else if (n >= 16) {
        _mm_storeu_si128((__m128i *)row, _mm512_cvtsepi32_epi8(r));
    } else if (n > 0) {
        _mm_mask_storeu_epi8(row, (__mmask16)((1u << n) - 1), _mm512_cvtsepi32_epi8(r));
    }
}

/* The register tile QMR x NV vectors: DOT accumulates 4 u8 x s8 products per lane. */
#define GEMM_TILE_BODY(DOT_DECL, DOT)                                                                 \
    __m512i acc[QMR][QNV];                                                                            \
    for (int i = 0; i < QMR; i++)                                                                     \
        for (int j = 0; j < QNV; j++) acc[i][j] = _mm512_set1_epi32(bc[i]);                           \
    for (int k = 0; k < KQ; k++) {                                                                    \
        const uint8_t *src = pl + (size_t)koff[k] * 4;                                                \
        __m512i av[QNV];                                                                              \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) av[j] = _mm512_loadu_si512(src + 64 * j); \
        DOT_DECL;                                                                                     \
        _Pragma("GCC unroll 4") for (int i = 0; i < QMR; i++) {                                       \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) DOT;                                 \
        }                                                                                             \
    }                                                                                                 \
    Epi e = epi_of(a);                                                                                \
    _Pragma("GCC unroll 4") for (int i = 0; i < QMR; i++) {                                           \
        if (i >= mrows) break;                                                                        \
        Rq rq = rq_of(mult[i], shift[i]);                                                             \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                        \
            __m512i r = requant16(acc[i][j], &rq, &e);                                                \
            store16(dst + (size_t)i * ld + (vmask ? 0 : 16 * j), r, vmask, voff, qv0 + j, qn - 16 * j); \
        }                                                                                             \
    }

#define TILE_ARGS                                                                                       \
    const uint8_t *pl, const int32_t *koff, int KQ, const int32_t *wb, const int32_t *bc, const int32_t *mult, \
        const int8_t *shift, const QConvArgs *a, int8_t *dst, size_t ld, int mrows, int qv0, int qn,          \
        const uint16_t *vmask, const int32_t *voff
#define TILE_PASS pl, koff, KQ, wb, bc, mult, shift, a, dst, ld, mrows, qv0, qn, vmask, voff

TGT_VNNI INLINE void tile_vnni_nv(const int NV, TILE_ARGS) {
    GEMM_TILE_BODY(const int32_t *wk = wb + (size_t)k * QMR,
                   acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av[j], _mm512_set1_epi32(wk[i])))
}

TGT_VNNI static void tile_vnni(int nv, TILE_ARGS) {
    switch (nv) {
    case 1: tile_vnni_nv(1, TILE_PASS); break;
    case 2: tile_vnni_nv(2, TILE_PASS); break;
    case 3: tile_vnni_nv(3, TILE_PASS); break;
    default: tile_vnni_nv(4, TILE_PASS); break;
    }
}

/* Without VNNI: even bytes (x0, x2) and odd bytes (x1, x3) of each quad as 16-bit pairs, each
 * multiplied by the matching weight pair with vpmaddwd (exact: 2 * 255 * 127 < 2^31). */
#define DOT512                                                                                                     \
    acc[i][j] = _mm512_add_epi32(                                                                                  \
        acc[i][j], _mm512_add_epi32(_mm512_madd_epi16(_mm512_and_si512(av[j], lo8), _mm512_set1_epi32(wk[2 * i])), \
                                    _mm512_madd_epi16(_mm512_srli_epi16(av[j], 8), _mm512_set1_epi32(wk[2 * i + 1]))))

TGT_512 INLINE void tile_avx512_nv(const int NV, TILE_ARGS) {
    const __m512i lo8 = _mm512_set1_epi16(0xff);
    GEMM_TILE_BODY(const int32_t *wk = wb + (size_t)k * QMR * 2, DOT512)
}

TGT_512 static void tile_avx512(int nv, TILE_ARGS) {
    switch (nv) {
    case 1: tile_avx512_nv(1, TILE_PASS); break;
    case 2: tile_avx512_nv(2, TILE_PASS); break;
    case 3: tile_avx512_nv(3, TILE_PASS); break;
    default: tile_avx512_nv(4, TILE_PASS); break;
    }
}

/* Depthwise, AVX-512BW: 16 positions per vector, one vpmaddwd per tap (pixel zero-extended to
 * 32 bits = the 16-bit pair (xu, 0); weight pair (w, 0)). Stride 1 or 2, k <= 7. */
TGT_512 static void dw_avx512(const uint8_t *pl, const QConvPacked *p, int c, int8_t *yc) {
    const int s = p->a.d.stride, taps = p->taps;
    const int32_t *wc = p->w + (size_t)c * taps;
    const uint8_t *src[49];
    __m512i wv[49];
    NASC_ASSERT(taps <= 49);
    for (int t = 0; t < taps; t++) {
        src[t] = pl + (size_t)p->tap_phase[t] * p->geo.HW + p->tap_shift[t];
        wv[t] = _mm512_set1_epi32(wc[t]);
    }
    Epi e = epi_of(&p->a);
    Rq rq = rq_of(p->mult[c], p->shift[c]);
    const __m512i lo8 = _mm512_set1_epi32(0xff);
    for (int v = 0; v < p->nqv; v++) {
        if (!p->vmask[v]) continue;
        __m512i acc = _mm512_set1_epi32(p->bc[c]);
        size_t at = (size_t)s * 16 * v;
        if (s == 1)
            for (int t = 0; t < taps; t++) {
                __m512i xv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src[t] + at)));
                acc = _mm512_add_epi32(acc, _mm512_madd_epi16(xv, wv[t]));
            }
        else
            for (int t = 0; t < taps; t++) {
                __m512i xv = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src[t] + at)));
                acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_and_si512(xv, lo8), wv[t]));
            }
        store16(yc, requant16(acc, &rq, &e), p->vmask, p->voff, v, 0);
    }
}

/* Depthwise, VNNI + VBMI, straight from x (see DwBlock): channel c of one image, xc the
 * channel's (h, w) input, yc its (oh, ow) output. vpdpbusd does 4 taps of a kernel row. */
TGT_VBMI static void dw_vnni(const int8_t *xc, const QConvPacked *p, int c, int8_t *yc) {
    const ConvDims *d = &p->a.d;
    const int k = d->k, nq = (k + 3) / 4;
    const int32_t *wc = p->w + (size_t)c * k * nq;
    __m512i wv[7][2];
    NASC_ASSERT(k <= 7);
    for (int ky = 0; ky < k; ky++)
        for (int j = 0; j < nq; j++) wv[ky][j] = _mm512_set1_epi32(wc[ky * nq + j]);
    Epi e = epi_of(&p->a);
    const __m512i flip = _mm512_set1_epi8((char)0x80), padv = _mm512_set1_epi8((char)(p->a.x_zp + 128));
    const int32_t bc = p->bc[c];
    const Rq rq = rq_of(p->mult[c], p->shift[c]);
    for (int b = 0; b < p->ndwb; b++) {
        const DwBlock *B = &p->dwb[b];
        const __m512i i0 = _mm512_loadu_si512(B->idx[0]), i1 = _mm512_loadu_si512(B->idx[1]);
        const DwLoad *L = B->ld;
        for (int oy0 = 0; oy0 < d->oh; oy0 += B->R, L += k) {
            __m512i acc = _mm512_set1_epi32(bc);
            for (int ky = 0; ky < k; ky++) {
                /* masked: never reads outside the channel; the address may lie before it */
                const void *src = (const void *)((uintptr_t)xc + (uintptr_t)L[ky].off);
                __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(L[ky].lm, src), flip);
                acc = _mm512_dpbusd_epi32(acc, _mm512_mask_permutexvar_epi8(padv, B->colok[0] & L[ky].rows, i0, v),
                                          wv[ky][0]);
                if (nq > 1)
                    acc = _mm512_dpbusd_epi32(acc, _mm512_mask_permutexvar_epi8(padv, B->colok[1] & L[ky].rows, i1, v),
                                              wv[ky][1]);
            }
            __m512i r = requant16(acc, &rq, &e);
            int nrows = NASC_MIN(B->R, d->oh - oy0);
            store16(yc + (size_t)oy0 * d->ow + B->ox0, r, NULL, NULL, 0, B->R > 1 ? nrows * B->L : B->L);
        }
    }
}

/* ------------------------------------------------------------------ AMX */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} AmxCfg;

/* Tiles: 0-3 C (16 channels x 16 positions, int32), 4 A (16 channels x 4*kr weight bytes),
 * 5-6 B (kr channel quads x 16 positions x 4 bytes, two in flight). */
TGT_AMX static void amx_config(int kr) {
    AmxCfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 4; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    cfg.rows[4] = 16, cfg.colsb[4] = (uint16_t)(4 * kr);
    cfg.rows[5] = cfg.rows[6] = (uint8_t)kr, cfg.colsb[5] = cfg.colsb[6] = 64;
    /* not _tile_loadconfig: GCC 12's macro tells the compiler it reads 8 bytes, and the other
     * stores into cfg can then be dropped */
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
}

/* 16 output channels (A tiles wb) x 64 positions of planes pl (at the tile's first position;
 * channel quads cqs bytes apart; tap t at element tapoff[t]). */
TGT_AMX static void tile_amx(const uint8_t *pl, size_t cqs, const QConvPacked *p, const int32_t *tapoff,
                             const int8_t *wb, const int32_t *bc, const int32_t *mult, const int8_t *shift,
                             int8_t *dst, size_t ld, int mrows, int nv, int qv0, int qn, const uint16_t *vmask,
                             const int32_t *voff) {
    const int kr = p->amx_kr, nk = p->amx_nk, taps = p->taps;
    const size_t per_tap = (size_t)nk * 16 * 4 * kr, akstep = (size_t)16 * 4 * kr;
    _tile_zero(0); /* (starting from tiles of biases costs more: 4 tile loads) */
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int t = 0; t < taps; t++) {
        const uint8_t *bt = pl + (size_t)tapoff[t] * 4;
        const int8_t *at = wb + (size_t)t * per_tap;
        for (int kc = 0; kc < nk; kc++) {
            const uint8_t *b = bt + (size_t)kc * kr * cqs;
            _tile_loadd(4, at + kc * akstep, 4 * kr);
            _tile_loadd(5, b, cqs);
            _tile_loadd(6, b + 64, cqs);
            _tile_dpbsud(0, 4, 5);
            _tile_dpbsud(1, 4, 6);
            _tile_loadd(5, b + 128, cqs);
            _tile_loadd(6, b + 192, cqs);
            _tile_dpbsud(2, 4, 5);
            _tile_dpbsud(3, 4, 6);
        }
    }
    int32_t c[4][16][16];
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    Epi e = epi_of(&p->a);
    for (int i = 0; i < mrows; i++) {
        Rq rq = rq_of(mult[i], shift[i]);
        __m512i b = _mm512_set1_epi32(bc[i]);
        for (int j = 0; j < nv; j++) {
            __m512i r = requant16(_mm512_add_epi32(_mm512_loadu_si512(c[j][i]), b), &rq, &e);
            store16(dst + (size_t)i * ld + (vmask ? 0 : 16 * j), r, vmask, voff, qv0 + j, qn - 16 * j);
        }
    }
}

TGT_AMX static void amx_release(void) { _tile_release(); }
#endif

/* ------------------------------------------------------------------ driver */
/* Geometry of one call: nb images per job; positions of a full job (the last image's rows
 * past oh are not computed); whether results go straight to y (nb == 1, via the vector
 * tables) or through the row buffer `out`. */
typedef struct {
    int nb, njobs;
    int HW;        /* positions per image */
    int Qmax;      /* positions of a full job */
    int Qalloc;    /* Qmax rounded up to a tile */
    int direct;
    int linear;    /* 1x1 images, pointwise: planes_linear */
    size_t pl_bytes, koff_bytes, out_bytes;
} Run;

static Run run_of(const QConvPacked *p, int n) {
    const ConvDims *d = &p->a.d;
    const Geo *g = &p->geo;
    const int dwk = is_dw_kernel(p->kern);
    Run r;
    int pointwise = d->k == 1 && d->stride == 1 && d->pad == 0;
    r.HW = g->HW;
    r.nb = 1;
    if (pointwise && !dwk) /* no junk: batch small images into one job */
        r.nb = NASC_MAX(1, NASC_MIN(n, 256 / NASC_MAX(1, r.HW)));
    r.njobs = (n + r.nb - 1) / r.nb;
    r.Qmax = (r.nb - 1) * r.HW + d->oh * g->qw;
    r.Qalloc = (r.Qmax + QTQ - 1) / QTQ * QTQ;
    r.direct = r.nb == 1;
    r.linear = pointwise && d->h == 1 && d->w == 1 && !dwk;
    /* depthwise builds one channel's planes at a time */
    size_t span = (size_t)g->sy * g->sx * r.nb * r.HW; /* elements of one channel element */
    size_t planes = (size_t)(dwk ? 1 : g->CQ) * span;
    if (p->kern == QK_AMX) planes += (size_t)p->amx_kr * span; /* B rows past CQg */
    size_t margin = (size_t)(r.Qalloc - r.Qmax) + g->max_off + 128;
    if (dwk) margin = (size_t)d->stride * r.Qalloc + g->max_off + 128;
    r.pl_bytes = ((planes + margin) * g->cw + 63) / 64 * 64;
    r.koff_bytes = dwk ? 0 : (((size_t)p->KQ + 16) * sizeof(int32_t) + 63) / 64 * 64;
    r.out_bytes = r.direct ? 0 : (size_t)p->G * p->cop * r.Qalloc;
    return r;
}

/* k-step offsets (elements) for a job of nb images: kq = cq*taps + t (padding steps: 0). */
static void koff_fill(int32_t *koff, const QConvPacked *p, const Run *r) {
    const Geo *g = &p->geo;
    const size_t img_span = (size_t)r->nb * r->HW, cqs = (size_t)g->sy * g->sx * img_span;
    for (int kq = 0; kq < p->KQ; kq++) koff[kq] = 0;
    for (int cq = 0; cq < g->CQg; cq++)
        for (int t = 0; t < p->taps; t++)
            koff[cq * p->taps + t] = (int32_t)(cq * cqs + p->tap_phase[t] * img_span + p->tap_shift[t]);
}

/* Copies rows [r0, r1) of out (Qalloc positions each; row = group * cop + index) into y for
 * images img0 .. img0 + nimg - 1 (pointwise only: position = image * HW + pixel). */
static void out_copy(int8_t *y, const int8_t *out, const QConvPacked *p, const Run *r, int img0, int nimg, int r0,
                     int r1) {
    const ConvDims *d = &p->a.d;
    const size_t P = (size_t)d->oh * d->ow;
    for (int row = r0; row < r1; row++) {
        int gi = row / p->cop, c = row % p->cop;
        if (c >= p->cout_g) continue;
        int co = gi * p->cout_g + c;
        const int8_t *src = out + (size_t)row * r->Qalloc;
        if (P == 1)
            for (int b = 0; b < nimg; b++) y[(size_t)(img0 + b) * d->cout + co] = src[b];
        else
            for (int b = 0; b < nimg; b++) memcpy(y + ((size_t)(img0 + b) * d->cout + co) * P, src + (size_t)b * r->HW, P);
    }
}

/* Tiles of one job: (group, channel block, 64-position block). */
static int tile_rows(const QConvPacked *p) { return p->kern == QK_AMX ? 16 : QMR; }

/* Runs tiles [t0, t1) of a job whose planes are built; y_img = the job's first image in y. */
static void tiles_run(const QConvPacked *p, const Run *r, const uint8_t *pl, const int32_t *koff, int Q, int8_t *y_img,
                      int8_t *out, int t0, int t1) {
    const ConvDims *d = &p->a.d;
    const Geo *g = &p->geo;
    const int mr = tile_rows(p);
    const int nqb = (Q + QTQ - 1) / QTQ, ncb = p->cop / mr;
    const size_t img_span = (size_t)r->nb * r->HW, cqs = (size_t)g->sy * g->sx * img_span;
    const uint16_t *vmask = r->direct ? p->vmask : NULL;
    const int32_t *voff = r->direct ? p->voff : NULL;
    for (int t = t0; t < t1; t++) {
        int qb = t % nqb, cb = (t / nqb) % ncb, gi = t / nqb / ncb;
        int q0 = qb * QTQ, c0 = cb * mr;
        int mrows = NASC_MIN(mr, p->cout_g - c0), qn = NASC_MIN(QTQ, Q - q0), nv = (qn + 15) / 16;
        size_t ci = (size_t)gi * p->cop + c0;
        const uint8_t *plq = pl + ((size_t)gi * g->CQg * cqs + q0) * g->cw;
        int8_t *dst;
        size_t ld;
        if (r->direct) {
            ld = (size_t)d->oh * d->ow;
            dst = y_img + ((size_t)gi * p->cout_g + c0) * ld;
        } else {
            ld = r->Qalloc;
            dst = out + ci * ld + q0;
        }
        int qv0 = q0 / 16;
        switch (p->kern) {
        case QK_GEN:
            tile_generic(nv, plq, koff, p->KQ, (const int16_t *)(const void *)p->w + ci * p->KQ, p->bc + ci,
                         p->mult + ci, p->shift + ci, &p->a, dst, ld, mrows, qv0, qn, vmask, voff);
            break;
#if QX86
        case QK_VNNI:
            tile_vnni(nv, plq, koff, p->KQ, p->w + ci * p->KQ, p->bc + ci, p->mult + ci, p->shift + ci, &p->a, dst,
                      ld, mrows, qv0, qn, vmask, voff);
            break;
        case QK_AVX512:
            tile_avx512(nv, plq, koff, p->KQ, p->w + ci * p->KQ * 2, p->bc + ci, p->mult + ci, p->shift + ci, &p->a,
                        dst, ld, mrows, qv0, qn, vmask, voff);
            break;
        case QK_AMX: {
            size_t per_blk = (size_t)p->taps * p->amx_nk * 16 * 4 * p->amx_kr;
            /* koff's first row (channel quad 0) holds the tap offsets */
            tile_amx(plq, cqs * 4, p, koff, (const int8_t *)(const void *)p->w + (ci / 16) * per_blk, p->bc + ci,
                     p->mult + ci, p->shift + ci, dst, ld, mrows, nv, qv0, qn, vmask, voff);
            break;
        }
#endif
        default:
            NASC_ASSERT(0);
        }
    }
}

static void split(int count, int parts, int i, int *lo, int *hi) {
    int q = count / parts, rem = count % parts;
    *lo = i * q + NASC_MIN(i, rem);
    *hi = *lo + q + (i < rem);
}

/* Part `part` of `parts` of one job (images img0 .. img0 + nimg - 1) on the calling thread:
 * builds the whole planes (threads sharing a job each build their own copy: cheaper than
 * two more barriers for these small layers), then runs its share of the tiles. */
static void job_run(int8_t *y, const int8_t *x, const QConvPacked *p, const Run *r, int img0, int nimg,
                    uint8_t *buf, int part, int parts) {
    const ConvDims *d = &p->a.d;
    const size_t xs = (size_t)d->cin * d->h * d->w;
    uint8_t *pl = buf;
    int32_t *koff = (int32_t *)(void *)(buf + r->pl_bytes);
    int8_t *out = (int8_t *)(buf + r->pl_bytes + r->koff_bytes);
    if (r->linear)
        planes_linear(pl, x + (size_t)img0 * xs, p, r->nb, nimg, 0, p->geo.CQ);
    else
        for (int b = 0; b < nimg; b++) planes_build(pl, x + (size_t)(img0 + b) * xs, p, r->nb, b, 0, 0, p->geo.CQ);
    koff_fill(koff, p, r);
    int Q = (nimg - 1) * r->HW + d->oh * p->geo.qw, nqb = (Q + QTQ - 1) / QTQ, nblk = p->G * (p->cop / tile_rows(p));
    int t0, t1;
    if (r->direct) {
        split(nblk * nqb, parts, part, &t0, &t1);
    } else { /* whole channel blocks, so that this thread can copy its rows out */
        split(nblk, parts, part, &t0, &t1);
        t0 *= nqb, t1 *= nqb;
    }
#if QX86
    if (p->kern == QK_AMX) amx_config(p->amx_kr);
#endif
    tiles_run(p, r, pl, koff, Q, y + (size_t)img0 * d->cout * d->oh * d->ow, out, t0, t1);
#if QX86
    if (p->kern == QK_AMX) amx_release();
#endif
    if (!r->direct) out_copy(y, out, p, r, img0, nimg, t0 / nqb * tile_rows(p), t1 / nqb * tile_rows(p));
}

/* Depthwise: channels [c0, c1) of image img, on the calling thread. */
static void dw_run(int8_t *y, const int8_t *x, const QConvPacked *p, int img, int c0, int c1, uint8_t *buf) {
    const ConvDims *d = &p->a.d;
    const size_t xs = (size_t)d->cin * d->h * d->w, P = (size_t)d->oh * d->ow;
    for (int c = c0; c < c1; c++) {
#if QX86
        if (p->kern == QK_DW_VNNI) {
            dw_vnni(x + (size_t)img * xs + (size_t)c * d->h * d->w, p, c, y + ((size_t)img * d->cout + c) * P);
            continue;
        }
#endif
        /* one channel's planes at a time (they stay in L1) */
        planes_build(buf, x + (size_t)img * xs, p, 1, 0, c, c, c + 1);
        int8_t *yc = y + ((size_t)img * d->cout + c) * P;
        switch (p->kern) {
#if QX86
        case QK_DW_AVX512: dw_avx512(buf, p, c, yc); break;
#endif
        default: dw_generic(buf, p, c, yc); break;
        }
    }
}

/* Multiply-adds below which a layer runs on one thread. */
#define QPAR_MACS (1 << 20)

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_total(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

void qconv2d(int8_t *y, const int8_t *x, const QConvPacked *p, int n) {
    if (n < 1) return;
    if (p->kern == QK_REF) {
        QConvArgs a = p->a;
        a.d.n = n;
        qconv2d_ref(y, x, p->wref, p->bref, p->mult, p->shift, &a);
        return;
    }
    const ConvDims *d = &p->a.d;
    Run r = run_of(p, n);
    double macs = (double)n * d->cout * d->oh * d->ow * p->cin_g * p->taps;
    int nt = threads_get();
    if (macs < QPAR_MACS) nt = 1;
    if (is_dw_kernel(p->kern)) {
        /* items: whole images, or with fewer images than threads, (image, channel range) */
        int parts = n >= nt ? 1 : NASC_MIN(nt, d->cout), items = n * parts;
        nt = NASC_MAX(1, NASC_MIN(nt, items));
        if (nt == 1) {
            uint8_t *buf = scratch_get(QSCRATCH, r.pl_bytes);
            for (int i = 0; i < n; i++) dw_run(y, x, p, i, 0, d->cout, buf);
            return;
        }
#pragma omp parallel num_threads(nt)
        {
            uint8_t *buf = scratch_get(QSCRATCH, r.pl_bytes);
            int lo, hi;
            split(items, thread_total(), thread_index(), &lo, &hi);
            for (int it = lo; it < hi; it++) {
                int c0, c1;
                split(d->cout, parts, it % parts, &c0, &c1);
                dw_run(y, x, p, it / parts, c0, c1, buf);
            }
        }
        return;
    }
    size_t bytes = r.pl_bytes + r.koff_bytes + r.out_bytes;
    if (nt == 1) {
        uint8_t *buf = scratch_get(QSCRATCH, bytes);
        for (int j = 0; j < r.njobs; j++) job_run(y, x, p, &r, j * r.nb, NASC_MIN(r.nb, n - j * r.nb), buf, 0, 1);
        return;
    }
    /* jobs split across threads; with fewer jobs than threads, every thread on every job */
    int share = r.njobs < nt;
#pragma omp parallel num_threads(nt)
    {
        uint8_t *buf = scratch_get(QSCRATCH, bytes);
        int T = thread_total(), tid = thread_index(), lo = 0, hi = r.njobs;
        if (!share) split(r.njobs, T, tid, &lo, &hi);
        for (int j = lo; j < hi; j++)
            job_run(y, x, p, &r, j * r.nb, NASC_MIN(r.nb, n - j * r.nb), buf, share ? tid : 0, share ? T : 1);
    }
}
