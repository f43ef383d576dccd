/* cgen.c: the standalone C exporter (cgen.h). One pass over the memory planner's order writes
 * the body of a static run() function, one kernel call per executed node, with every tensor a
 * fixed offset into the arena from the arena planner (src/cost/arena.h); the const data and
 * the kernels the calls need are collected on the way and written before it.
 *
 * Int8: the QNet's lowering is kept as is (folded BN, fused ReLU clamps, LUTs, requantization
 * pairs), and each kernel below is the reference kernel of src/ops/qops.h written out in C99
 * with the same integer expressions (integer sums do not depend on their order, so the conv
 * may block its loops freely). Conv kernels are emitted once per (kernel size, stride,
 * dilation) the model uses, so their loops have constant bounds; they run blocks of
 * CGEN_CONV_BLK output columns times four output channels, accumulate in int32 when the
 * layer's weights and biases bound every partial sum below 2^31 (checked here per layer; an
 * int64 instance is emitted otherwise), and read the padding as the zero point's exact 0. The
 * input is quantized with round half to even by integer means (nearbyintf's result in the
 * default rounding mode, without libm), the logits dequantized with the same float expression
 * as dequantize_ref.
 * How the memory model's rules map onto the int8 graph: a chain (conv + folded BN + fused
 * ReLU) runs at its head's step and writes its tail's value into the head's buffer, which the
 * model gives the whole chain (the BN and ReLU are in place there: their input dies at them);
 * an in-place op takes over a dying input's buffer only for elementwise kernels (LUT, add,
 * SE mul, a standalone BN's depthwise 1x1 conv), asserted here; zero constants have no buffer:
 * add skips them (their term is exactly 0) and any other reader gets a const block of zeros.
 *
 * Fp32: each node runs as the float tape does (BN in eval mode as a per-channel scale and
 * shift computed here in double, activations with the formulas of src/ops/act.c, sigmoid with
 * a libm-free exp), so sums differ from nasc's only in their order.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../compress/quant.h"
#include "../cost/arena.h"
#include "cgen.h"

#define CGEN_CONV_BLK 16 /* output columns per conv block in the generated code (default) */

/* ------------------------------------------------------------------ text buffers */
typedef struct {
    char *s;
    size_t len, cap;
} Str;

static void str_grow(Str *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    b->cap = (b->len + extra + 1) * 2 + 1024;
    b->s = xrealloc(b->s, b->cap);
}

__attribute__((format(printf, 2, 3))) static void str_printf(Str *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    NASC_ASSERT(n >= 0);
    str_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void str_puts(Str *b, const char *s) { str_printf(b, "%s", s); }

/* `s` with every "@K@" replaced by v (one key). */
static void str_subst(Str *b, const char *s, const char *key, const char *v) {
    size_t kl = strlen(key);
    for (const char *p = s; *p;) {
        const char *q = strstr(p, key);
        if (!q) {
            str_puts(b, p);
            break;
        }
        str_printf(b, "%.*s%s", (int)(q - p), p, v);
        p = q + kl;
    }
}

/* ------------------------------------------------------------------ the runtime (int8) */
/* Kernels and helpers, emitted only when used. Each is the reference kernel of qops.h. */
enum {
    K_MULSHIFT = 1 << 0,
    K_SAT8 = 1 << 1,
    K_CLAMP8 = 1 << 2,
    K_CONV = 1 << 3,
    K_CONV_WIDE = 1 << 4,
    K_LUT = 1 << 5,
    K_MAXPOOL = 1 << 6,
    K_AVGPOOL = 1 << 7,
    K_GAP = 1 << 8,
    K_ADD = 1 << 9,
    K_REQUANT = 1 << 10,
    K_CHMUL = 1 << 11,
    K_RESIZE = 1 << 12,
    K_FILL = 1 << 13,
    K_QUANT = 1 << 14,
    K_POOLARGS = 1 << 15,
    K_CONVARGS = 1 << 16,
    K_ADD2 = 1 << 17,
    /* fp32 */
    F_BN = 1 << 18,
    F_ACT = 1 << 19,
    F_EXP = 1 << 20,
    F_MAXPOOL = 1 << 21,
    F_AVGPOOL = 1 << 22,
    F_GAP = 1 << 23,
    F_ADD = 1 << 24,
    F_COPY = 1 << 25,
    F_MUL = 1 << 26,
    F_RESIZE = 1 << 27,
};

static const char src_mulshift[] =
    "/* round(acc * mult / 2^shift), half up, in 64 bits (qops.h's q_mulshift) */\n"
    "static int32_t mulshift(int64_t acc, int32_t mult, int shift) {\n"
    "    return (int32_t)((acc * (int64_t)mult + ((int64_t)1 << (shift - 1))) >> shift);\n"
    "}\n\n";

static const char src_requantf[] =
    "/* Convolution requantization, ONNX Runtime's arithmetic (qops.h's q_requant_f): the float s of\n"
    " * (mult, shift), built from its IEEE bits (mult's top 24 bits, times 2^(30 - shift)); then\n"
    " * v = float(acc) * s, one single-precision multiply, clamped to [y_min - y_zp, y_max - y_zp],\n"
    " * rounded half to even; plus y_zp. */\n"
    "static int8_t requantf(int32_t acc, int32_t mult, int shift, int32_t y_zp, int32_t y_min, int32_t y_max) {\n"
    "    union { uint32_t u; float f; } s; /* reading the other member reinterprets the bits (C99) */\n"
    "    float v, lo = (float)(y_min - y_zp), hi = (float)(y_max - y_zp);\n"
    "    s.u = mult > 0 ? ((uint32_t)(157 - shift) << 23) | (((uint32_t)mult >> 7) & 0x7fffffu) : 0u;\n"
    "    v = (float)acc * s.f;\n"
    "    v = v < lo ? lo : v > hi ? hi : v;\n"
    "    return (int8_t)(rne_sat(v) + y_zp);\n"
    "}\n\n";

static const char src_sat8[] = "static int8_t sat8(int32_t v) { return (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v); }\n\n";

static const char src_clamp8[] =
    "static int8_t clamp8(int32_t v, int32_t lo, int32_t hi) { return (int8_t)(v < lo ? lo : v > hi ? hi : v); }\n\n";

static const char src_convargs[] =
    "typedef struct {\n"
    "    int cin, h, w, cout, oh, ow, k, stride, pad, dil, groups;\n"
    "    int32_t x_zp, y_zp, y_min, y_max;\n"
    "} conv_args;\n\n";

/* The conv kernels, int8 and fp32 from one template. Output columns run in blocks of CONV_BLK,
 * four output channels at a time when the group's channel count allows (each input value then
 * serves four channels), one otherwise. For each (input channel, kernel row) the block's input
 * window is copied once into a small local row, minus the zero point, with the padding as 0:
 * every block, at the borders too, then runs the same branch-free loops, and the subtraction is
 * done once per input value instead of once per tap. Rows outside the input restrict ky for the
 * whole output row. A 1x1 conv on a 1x1 input (a linear layer) is a dot product per channel.
 * Placeholders: @SIG@ the signature, @T@ element type, @ACC@ accumulator, @ZPDECL@ / @ZP@ the
 * zero point's declaration and subtraction (empty for fp32), @RES@ the output value of an
 * accumulator v for channel q. */
static const char src_conv_tmpl[] =
    "@SIG@ {\n"
    "    enum { K = @K@, S = @S@, D = @D@, KK = K * K, span = (CONV_BLK - 1) * S + (K - 1) * D + 1 };\n"
    "    const int H = a->h, W = a->w;\n"
    "    const int cig = a->cin / a->groups, cog = a->cout / a->groups, hw = H * W, ohw = a->oh * a->ow;\n"
    "@ZPDECL@"
    "    if (K == 1 && H == 1 && W == 1) { /* a linear layer: one dot product per channel */\n"
    "        for (int q = 0; q < a->cout; q++) {\n"
    "            const @T@ *wc = w + q * cig, *xg = x + (q / cog) * cig;\n"
    "            @ACC@ v = bias ? bias[q] : 0;\n"
    "            for (int ci = 0; ci < cig; ci++) v += (@ACC@)wc[ci] * (xg[ci]@ZP@);\n"
    "            y[q] = @RES@;\n"
    "        }\n"
    "        return;\n"
    "    }\n"
    "    for (int co = 0; co < a->cout; co += cog % 4 == 0 ? 4 : 1) {\n"
    "        const @T@ *wc = w + co * cig * KK;\n"
    "        const @T@ *xg = x + (co / cog) * cig * hw;\n"
    "        for (int oy = 0; oy < a->oh; oy++) {\n"
    "            const int iy0 = oy * S - a->pad;\n"
    "            int ky0 = 0, ky1 = K;\n"
    "            while (ky0 < K && iy0 + ky0 * D < 0) ky0++;\n"
    "            while (ky1 > ky0 && iy0 + (ky1 - 1) * D >= H) ky1--;\n"
    "            @T@ *yr = y + co * ohw + oy * a->ow;\n"
    "            for (int ox = 0; ox < a->ow; ox += CONV_BLK) {\n"
    "                const int ix0 = ox * S - a->pad, nb = a->ow - ox < CONV_BLK ? a->ow - ox : CONV_BLK;\n"
    "                const int inside = ix0 >= 0 && ix0 + span <= W;\n"
    "                if (cog % 4 == 0) {\n"
    "@BLOCK4@"
    "                } else {\n"
    "@BLOCK1@"
    "                }\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n\n";

/* One block of four output channels (inside the kernel above): one accumulator array per
 * channel and a single column loop with four statements, the shape compilers vectorize (the
 * column loop is short and constant, so it is not unrolled away before vectorization). */
static const char src_conv_block4[] =
    "                    @ACC@ a0[CONV_BLK], a1[CONV_BLK], a2[CONV_BLK], a3[CONV_BLK];\n"
    "                    for (int j = 0; j < CONV_BLK; j++) {\n"
    "                        a0[j] = bias ? bias[co] : 0;\n"
    "                        a1[j] = bias ? bias[co + 1] : 0;\n"
    "                        a2[j] = bias ? bias[co + 2] : 0;\n"
    "                        a3[j] = bias ? bias[co + 3] : 0;\n"
    "                    }\n"
    "                    if (K == 1 && inside && ky0 == 0 && ky1 == 1) { /* 1x1: read the input directly */\n"
    "                        for (int ci = 0; ci < cig; ci++) {\n"
    "                            const @T@ *xp = xg + ci * hw + iy0 * W + ix0;\n"
    "                            const @ACC@ c0 = wc[ci], c1 = wc[cig + ci], c2 = wc[2 * cig + ci], c3 = wc[3 * cig + ci];\n"
    "                            for (int j = 0; j < CONV_BLK; j++) {\n"
    "                                const @ACC@ v = xp[j * S]@ZP@;\n"
    "                                a0[j] += c0 * v;\n"
    "                                a1[j] += c1 * v;\n"
    "                                a2[j] += c2 * v;\n"
    "                                a3[j] += c3 * v;\n"
    "                            }\n"
    "                        }\n"
    "                    } else\n"
    "                    for (int ci = 0; ci < cig; ci++)\n"
    "                        for (int ky = ky0; ky < ky1; ky++) {\n"
    "                            const @T@ *xr = xg + ci * hw + (iy0 + ky * D) * W;\n"
    "                            const @T@ *w0 = wc + (ci * K + ky) * K;\n"
    "                            @ACC@ row[span];\n"
    "                            if (inside)\n"
    "                                for (int t = 0; t < span; t++) row[t] = xr[ix0 + t]@ZP@;\n"
    "                            else\n"
    "                                for (int t = 0; t < span; t++) {\n"
    "                                    const int ix = ix0 + t;\n"
    "                                    row[t] = ix >= 0 && ix < W ? xr[ix]@ZP@ : 0;\n"
    "                                }\n"
    "                            for (int kx = 0; kx < K; kx++) {\n"
    "                                const @ACC@ c0 = w0[kx], c1 = w0[cig * KK + kx], c2 = w0[2 * cig * KK + kx],\n"
    "                                            c3 = w0[3 * cig * KK + kx];\n"
    "                                const @ACC@ *rp = row + kx * D;\n"
    "                                for (int j = 0; j < CONV_BLK; j++) {\n"
    "                                    const @ACC@ v = rp[j * S];\n"
    "                                    a0[j] += c0 * v;\n"
    "                                    a1[j] += c1 * v;\n"
    "                                    a2[j] += c2 * v;\n"
    "                                    a3[j] += c3 * v;\n"
    "                                }\n"
    "                            }\n"
    "                        }\n"
    "                    for (int j = 0; j < nb; j++) {\n"
    "                        @ACC@ v;\n"
    "                        int q = co;\n"
    "                        v = a0[j], yr[ox + j] = @RES@;\n"
    "                        v = a1[j], q = co + 1, yr[ohw + ox + j] = @RES@;\n"
    "                        v = a2[j], q = co + 2, yr[2 * ohw + ox + j] = @RES@;\n"
    "                        v = a3[j], q = co + 3, yr[3 * ohw + ox + j] = @RES@;\n"
    "                    }\n";

/* One block of one output channel (depthwise and narrow groups). */
static const char src_conv_block1[] =
    "                    @ACC@ a0[CONV_BLK];\n"
    "                    for (int j = 0; j < CONV_BLK; j++) a0[j] = bias ? bias[co] : 0;\n"
    "                    if (K == 1 && inside && ky0 == 0 && ky1 == 1) { /* 1x1: read the input directly */\n"
    "                        for (int ci = 0; ci < cig; ci++) {\n"
    "                            const @T@ *xp = xg + ci * hw + iy0 * W + ix0;\n"
    "                            const @ACC@ c0 = wc[ci];\n"
    "                            for (int j = 0; j < CONV_BLK; j++) a0[j] += c0 * (xp[j * S]@ZP@);\n"
    "                        }\n"
    "                    } else\n"
    "                    for (int ci = 0; ci < cig; ci++)\n"
    "                        for (int ky = ky0; ky < ky1; ky++) {\n"
    "                            const @T@ *xr = xg + ci * hw + (iy0 + ky * D) * W;\n"
    "                            const @T@ *w0 = wc + (ci * K + ky) * K;\n"
    "                            @ACC@ row[span];\n"
    "                            if (inside)\n"
    "                                for (int t = 0; t < span; t++) row[t] = xr[ix0 + t]@ZP@;\n"
    "                            else\n"
    "                                for (int t = 0; t < span; t++) {\n"
    "                                    const int ix = ix0 + t;\n"
    "                                    row[t] = ix >= 0 && ix < W ? xr[ix]@ZP@ : 0;\n"
    "                                }\n"
    "                            for (int kx = 0; kx < K; kx++) {\n"
    "                                const @ACC@ c0 = w0[kx], *rp = row + kx * D;\n"
    "                                for (int j = 0; j < CONV_BLK; j++) a0[j] += c0 * rp[j * S];\n"
    "                            }\n"
    "                        }\n"
    "                    for (int j = 0; j < nb; j++) {\n"
    "                        const @ACC@ v = a0[j];\n"
    "                        const int q = co;\n"
    "                        yr[ox + j] = @RES@;\n"
    "                    }\n";

static const char src_lut[] =
    "/* y = lut[x + 128]: an activation between two quantizations as a table (may run in place) */\n"
    "static void lut_s8(int8_t *y, const int8_t *x, const int8_t *lut, int n) {\n"
    "    for (int i = 0; i < n; i++) y[i] = lut[x[i] + 128];\n"
    "}\n\n";

static const char src_poolargs[] =
    "typedef struct {\n"
    "    int c, h, w, oh, ow, k, stride, pad, cip;\n"
    "} pool_args;\n\n";

static const char src_maxpool[] =
    "/* Max over the window's in-bounds cells; y keeps x's quantization. */\n"
    "static void maxpool_s8(int8_t *y, const int8_t *x, const pool_args *a) {\n"
    "    for (int p = 0; p < a->c; p++) {\n"
    "        const int8_t *xp = x + p * a->h * a->w;\n"
    "        for (int oy = 0; oy < a->oh; oy++)\n"
    "            for (int ox = 0; ox < a->ow; ox++) {\n"
    "                int best = -129;\n"
    "                for (int ky = 0; ky < a->k; ky++)\n"
    "                    for (int kx = 0; kx < a->k; kx++) {\n"
    "                        const int iy = oy * a->stride - a->pad + ky, ix = ox * a->stride - a->pad + kx;\n"
    "                        if (iy < 0 || iy >= a->h || ix < 0 || ix >= a->w) continue;\n"
    "                        if (xp[iy * a->w + ix] > best) best = xp[iy * a->w + ix];\n"
    "                    }\n"
    "                y[(p * a->oh + oy) * a->ow + ox] = (int8_t)best;\n"
    "            }\n"
    "    }\n"
    "}\n\n";

static const char src_avgpool[] =
    "/* y = sat8(y_zp + mulshift(S, mult[div - 1], shift[div - 1])): S the sum of (x - x_zp) over the\n"
    " * window's in-bounds cells, div k*k clipped to the padded input (cip) or the in-bounds count. */\n"
    "static void avgpool_s8(int8_t *y, const int8_t *x, const pool_args *a, int32_t x_zp, int32_t y_zp,\n"
    "                       const int32_t *mult, const int8_t *shift) {\n"
    "    for (int p = 0; p < a->c; p++) {\n"
    "        const int8_t *xp = x + p * a->h * a->w;\n"
    "        for (int oy = 0; oy < a->oh; oy++)\n"
    "            for (int ox = 0; ox < a->ow; ox++) {\n"
    "                const int hs = oy * a->stride - a->pad, ws = ox * a->stride - a->pad;\n"
    "                const int he = hs + a->k < a->h + a->pad ? hs + a->k : a->h + a->pad;\n"
    "                const int we = ws + a->k < a->w + a->pad ? ws + a->k : a->w + a->pad;\n"
    "                const int h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;\n"
    "                const int h1 = he < a->h ? he : a->h, w1 = we < a->w ? we : a->w;\n"
    "                const int div = a->cip ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);\n"
    "                int32_t s = 0;\n"
    "                for (int iy = h0; iy < h1; iy++)\n"
    "                    for (int ix = w0; ix < w1; ix++) s += xp[iy * a->w + ix] - x_zp;\n"
    "                y[(p * a->oh + oy) * a->ow + ox] = sat8(y_zp + mulshift(s, mult[div - 1], shift[div - 1]));\n"
    "            }\n"
    "    }\n"
    "}\n\n";

static const char src_gap[] =
    "/* y (c) = requantf(sum over hw of (x - x_zp), mult, shift, y_zp, -128, 127), as ONNX Runtime */\n"
    "static void gap_s8(int8_t *y, const int8_t *x, int c, int hw, int32_t x_zp, int32_t y_zp, int32_t mult, int shift) {\n"
    "    for (int p = 0; p < c; p++) {\n"
    "        int32_t s = 0;\n"
    "        for (int j = 0; j < hw; j++) s += x[p * hw + j] - x_zp;\n"
    "        y[p] = requantf(s, mult, shift, y_zp, -128, 127);\n"
    "    }\n"
    "}\n\n";

static const char src_add2[] =
    "/* Adds, ONNX Runtime's arithmetic (qops.h's qadd), each float step rounded once: fma(x, y, z) is\n"
    " * float((double)x * y + z), exact before that rounding for these operands. May run in place. */\n"
    "static float fma_f(float x, float y, float z) { return (float)((double)x * (double)y + (double)z); }\n\n"
    "/* Two inputs (ORT's QLinearAdd, in uint8 terms): v = fma(x0 + 128, r0, fma(x1 + 128, r1, c)) rounded\n"
    " * half to even, saturated to [0, 255], less 128, then clamped; a NULL input stands for its zero\n"
    " * point z everywhere. */\n"
    "static void add2_s8(int8_t *y, const int8_t *x0, const int8_t *x1, int32_t z0, int32_t z1, float r0, float r1,\n"
    "                    float c, int n, int32_t y_min, int32_t y_max) {\n"
    "    for (int i = 0; i < n; i++) {\n"
    "        const int32_t u0 = (x0 ? x0[i] : z0) + 128, u1 = (x1 ? x1[i] : z1) + 128;\n"
    "        int32_t t = rne_sat(fma_f((float)u0, r0, fma_f((float)u1, r1, c)));\n"
    "        t = t < 0 ? 0 : t > 255 ? 255 : t;\n"
    "        y[i] = clamp8(t - 128, y_min, y_max);\n"
    "    }\n"
    "}\n\n";

static const char src_add[] =
    "/* One or three or more inputs (DequantizeLinear, Sum, QuantizeLinear): s = the sum of xsc[j] *\n"
    " * float(x_j - zp[j]) in input order, y = clamp(y_zp + round half even (s / ysc)). */\n"
    "static void add_s8(int8_t *y, const int8_t *const *xs, const int32_t *zp, const float *xsc, int nin, int n,\n"
    "                   float ysc, int32_t y_zp, int32_t y_min, int32_t y_max) {\n"
    "    for (int i = 0; i < n; i++) {\n"
    "        float s = 0.0f;\n"
    "        for (int j = 0; j < nin; j++) s += xsc[j] * (float)(xs[j][i] - zp[j]);\n"
    "        y[i] = clamp8(y_zp + rne_sat(s / ysc), y_min, y_max);\n"
    "    }\n"
    "}\n\n";

static const char src_requant[] =
    "/* y = sat8(y_zp + mulshift(x - x_zp, mult, shift)): one input of a concat */\n"
    "static void requant_s8(int8_t *y, const int8_t *x, int n, int32_t x_zp, int32_t mult, int shift, int32_t y_zp) {\n"
    "    for (int i = 0; i < n; i++) y[i] = sat8(y_zp + mulshift(x[i] - x_zp, mult, shift));\n"
    "}\n\n";

static const char src_chmul[] =
    "/* Squeeze-excitation: y (c, hw) = sat8(y_zp + mulshift((x - x_zp) * (s[c] - s_zp), mult, shift)) */\n"
    "static void chmul_s8(int8_t *y, const int8_t *x, const int8_t *s, int c, int hw, int32_t x_zp, int32_t s_zp,\n"
    "                     int32_t y_zp, int32_t mult, int shift) {\n"
    "    for (int p = 0; p < c; p++) {\n"
    "        const int32_t sv = s[p] - s_zp;\n"
    "        for (int j = 0; j < hw; j++)\n"
    "            y[p * hw + j] = sat8(y_zp + mulshift((int64_t)(x[p * hw + j] - x_zp) * sv, mult, shift));\n"
    "    }\n"
    "}\n\n";

static const char src_resize[] =
    "/* Bilinear resize in fixed point: ty (oh, 4) and tx (ow, 4) hold {i0, i1, l0, l1} per output row and\n"
    " * column (weights l0 + l1 = the axis' unit), acc = sum of the 4 taps (x - x_zp) * wy * wx. */\n"
    "static void resize_s8(int8_t *y, const int8_t *x, int nc, int h, int w, int oh, int ow, const int32_t *ty,\n"
    "                      const int32_t *tx, int32_t x_zp, int32_t y_zp, int32_t mult, int shift) {\n"
    "    for (int p = 0; p < nc; p++) {\n"
    "        const int8_t *xp = x + p * h * w;\n"
    "        for (int i = 0; i < oh; i++)\n"
    "            for (int j = 0; j < ow; j++) {\n"
    "                const int32_t *a = ty + 4 * i, *b = tx + 4 * j;\n"
    "                const int64_t v00 = xp[a[0] * w + b[0]] - x_zp, v01 = xp[a[0] * w + b[1]] - x_zp;\n"
    "                const int64_t v10 = xp[a[1] * w + b[0]] - x_zp, v11 = xp[a[1] * w + b[1]] - x_zp;\n"
    "                const int64_t acc = a[2] * (b[2] * v00 + b[3] * v01) + a[3] * (b[2] * v10 + b[3] * v11);\n"
    "                y[(p * oh + i) * ow + j] = sat8(y_zp + mulshift(acc, mult, shift));\n"
    "            }\n"
    "    }\n"
    "}\n\n";

static const char src_fill[] =
    "static void fill_s8(int8_t *y, int8_t v, int n) {\n"
    "    for (int i = 0; i < n; i++) y[i] = v;\n"
    "}\n\n";

static const char src_rne[] =
    "/* r rounded half to even, nearbyintf's result without libm, after saturating to +-1e6 (NaN gives\n"
    " * -1e6): then |r| < 2^23, so r - trunc(r) is exact. */\n"
    "static int32_t rne_sat(float r) {\n"
    "    int32_t t;\n"
    "    float f;\n"
    "    if (!(r > -1e6f)) r = -1e6f;\n"
    "    if (r > 1e6f) r = 1e6f;\n"
    "    t = (int32_t)r;\n"
    "    f = r - (float)t;\n"
    "    if (f > 0.5f || (f == 0.5f && (t & 1))) t++;\n"
    "    else if (f < -0.5f || (f == -0.5f && (t & 1))) t--;\n"
    "    return t;\n"
    "}\n\n";

static const char src_quant[] =
    "/* q = sat8(round_half_even(x / scale) + zp), ONNX's QuantizeLinear (nasc's quantize_ref) */\n"
    "static int8_t quantize1(float x, float scale, int32_t zp) { return sat8(rne_sat(x / scale) + zp); }\n\n";

/* ------------------------------------------------------------------ the runtime (fp32) */
static const char src_bn_f32[] =
    "/* Batch norm in eval mode: y = x * scale[c] + shift[c] (may run in place) */\n"
    "static void bn_f32(float *y, const float *x, const float *scale, const float *shift, int c, int hw) {\n"
    "    for (int p = 0; p < c; p++)\n"
    "        for (int j = 0; j < hw; j++) y[p * hw + j] = x[p * hw + j] * scale[p] + shift[p];\n"
    "}\n\n";

static const char src_exp_f32[] =
    "/* e^x without libm: x = n ln2 + r (ln2 in two parts), |r| <= ln2/2, a degree-7 Taylor polynomial\n"
    " * (relative error below 2e-7), times 2^n built in the exponent bits. */\n"
    "static float exp_f32(float x) {\n"
    "    union { float f; uint32_t u; } v;\n"
    "    if (!(x > -87.0f)) x = -87.0f;\n"
    "    if (x > 88.0f) x = 88.0f;\n"
    "    const float t = x * 1.44269504f;\n"
    "    const int n = (int)(t < 0 ? t - 0.5f : t + 0.5f);\n"
    "    const float r = (x - (float)n * 0.693145751953125f) - (float)n * 1.42860682030941723e-6f;\n"
    "    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +\n"
    "                    r * (1.0f / 720 + r * (1.0f / 5040)))))));\n"
    "    v.u = (uint32_t)(n + 127) << 23;\n"
    "    return p * v.f;\n"
    "}\n\n";

/* Activations: @BODY@ is filled per kind. */
static const char src_act_f32[] =
    "/* Elementwise activations (src/ops/act.c's formulas; may run in place) */\n"
    "static void act_f32(float *y, const float *x, int n, int kind) {\n"
    "    for (int i = 0; i < n; i++) {\n"
    "        const float v = x[i];\n"
    "        switch (kind) {\n"
    "@BODY@"
    "        default: y[i] = v; break;\n"
    "        }\n"
    "    }\n"
    "}\n\n";

static const char src_maxpool_f32[] =
    "typedef struct {\n"
    "    int c, h, w, oh, ow, k, stride, pad, cip;\n"
    "} pool_args;\n\n"
    "/* Max / average pooling; average divides by k*k clipped to the padded input (cip) or by the\n"
    " * in-bounds count. */\n"
    "static void pool_f32(float *y, const float *x, const pool_args *a, int avg) {\n"
    "    for (int p = 0; p < a->c; p++) {\n"
    "        const float *xp = x + p * a->h * a->w;\n"
    "        for (int oy = 0; oy < a->oh; oy++)\n"
    "            for (int ox = 0; ox < a->ow; ox++) {\n"
    "                const int hs = oy * a->stride - a->pad, ws = ox * a->stride - a->pad;\n"
    "                const int he = hs + a->k < a->h + a->pad ? hs + a->k : a->h + a->pad;\n"
    "                const int we = ws + a->k < a->w + a->pad ? ws + a->k : a->w + a->pad;\n"
    "                const int h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;\n"
    "                const int h1 = he < a->h ? he : a->h, w1 = we < a->w ? we : a->w;\n"
    "                float s = avg ? 0.0f : xp[h0 * a->w + w0];\n"
    "                for (int iy = h0; iy < h1; iy++)\n"
    "                    for (int ix = w0; ix < w1; ix++) {\n"
    "                        const float v = xp[iy * a->w + ix];\n"
    "                        if (avg) s += v;\n"
    "                        else if (v > s) s = v;\n"
    "                    }\n"
    "                if (avg) s /= (float)(a->cip ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0));\n"
    "                y[(p * a->oh + oy) * a->ow + ox] = s;\n"
    "            }\n"
    "    }\n"
    "}\n\n";

static const char src_gap_f32[] =
    "static void gap_f32(float *y, const float *x, int c, int hw) {\n"
    "    for (int p = 0; p < c; p++) {\n"
    "        float s = 0.0f;\n"
    "        for (int j = 0; j < hw; j++) s += x[p * hw + j];\n"
    "        y[p] = s / (float)hw;\n"
    "    }\n"
    "}\n\n";

static const char src_add_f32[] =
    "/* y = the sum of nin inputs (may run in place) */\n"
    "static void add_f32(float *y, const float *const *xs, int nin, int n) {\n"
    "    for (int i = 0; i < n; i++) {\n"
    "        float s = xs[0][i];\n"
    "        for (int j = 1; j < nin; j++) s += xs[j][i];\n"
    "        y[i] = s;\n"
    "    }\n"
    "}\n\n";

static const char src_copy_f32[] =
    "static void copy_f32(float *y, const float *x, int n) {\n"
    "    for (int i = 0; i < n; i++) y[i] = x[i];\n"
    "}\n\n";

static const char src_mul_f32[] =
    "/* Squeeze-excitation: y (c, hw) = x * s[c] (may run in place) */\n"
    "static void mul_f32(float *y, const float *x, const float *s, int c, int hw) {\n"
    "    for (int p = 0; p < c; p++)\n"
    "        for (int j = 0; j < hw; j++) y[p * hw + j] = x[p * hw + j] * s[p];\n"
    "}\n\n";

static const char src_resize_f32[] =
    "/* Bilinear resize (align_corners=False): iy/ix (out, 2) source indices, ly/lx (out, 2) weights */\n"
    "static void resize_f32(float *y, const float *x, int nc, int h, int w, int oh, int ow, const int32_t *iy,\n"
    "                       const float *ly, const int32_t *ix, const float *lx) {\n"
    "    for (int p = 0; p < nc; p++) {\n"
    "        const float *xp = x + p * h * w;\n"
    "        for (int i = 0; i < oh; i++) {\n"
    "            const float *r0 = xp + iy[2 * i] * w, *r1 = xp + iy[2 * i + 1] * w;\n"
    "            for (int j = 0; j < ow; j++) {\n"
    "                const float top = lx[2 * j] * r0[ix[2 * j]] + lx[2 * j + 1] * r0[ix[2 * j + 1]];\n"
    "                const float bot = lx[2 * j] * r1[ix[2 * j]] + lx[2 * j + 1] * r1[ix[2 * j + 1]];\n"
    "                y[(p * oh + i) * ow + j] = ly[2 * i] * top + ly[2 * i + 1] * bot;\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n\n";

/* ------------------------------------------------------------------ the generator */
typedef struct {
    Str data;            /* const arrays and argument structs */
    Str body;            /* run()'s statements */
    unsigned need;       /* K_* / F_* */
    unsigned acts;       /* fp32: 1 << ActKind used */
    size_t weight_bytes; /* const data written */
    size_t zeros;        /* elements of the zero block readers need */
    int ops;
    const ArenaPlan *ap;
    size_t elem;         /* arena element size: 1 int8, 4 fp32 */
    const Spec *spec;
    int in_c, in_h, in_w;
    int ninst;           /* conv kernel instances: (k, stride, dil, kind) */
    int inst[64][4];     /* kind: 0 int8 with int32 sums, 1 int8 with int64 sums, 2 fp32 */
} Gen;

static size_t node_elems(const Node *nd) { return (size_t)nd->c * nd->h * nd->w; }

/* The arena expression of value v (0 = the input, k + 1 = node k) holding `elems` elements;
 * "Z" for a zero constant, whose readers need that many zeros when `used`. */
static void val_ptr_use(Gen *g, char *buf, size_t n, int v, size_t elems, int used) {
    int b = g->ap->tbuf[v];
    if (b < 0) {
        if (used) g->zeros = NASC_MAX(g->zeros, elems);
        snprintf(buf, n, "Z");
        return;
    }
    snprintf(buf, n, "(A + %zu)", g->ap->offset[b] / g->elem);
}

static void val_ptr(Gen *g, char *buf, size_t n, int v, size_t elems) { val_ptr_use(g, buf, n, v, elems, 1); }

static void emit_i8(Gen *g, const char *name, const int8_t *v, size_t n) {
    str_printf(&g->data, "static const int8_t %s[%zu] = {", name, n);
    for (size_t i = 0; i < n; i++) str_printf(&g->data, "%s%d", i % 32 ? "," : i ? ",\n    " : "\n    ", v[i]);
    str_puts(&g->data, "\n};\n");
    g->weight_bytes += n;
}

static void emit_i32(Gen *g, const char *name, const int32_t *v, size_t n) {
    str_printf(&g->data, "static const int32_t %s[%zu] = {", name, n);
    for (size_t i = 0; i < n; i++) str_printf(&g->data, "%s%ld", i % 16 ? "," : i ? ",\n    " : "\n    ", (long)v[i]);
    str_puts(&g->data, "\n};\n");
    g->weight_bytes += 4 * n;
}

/* A float as an exact C99 hex literal. */
static void fmt_float(char *buf, size_t n, float v) {
    NASC_ASSERT(isfinite(v));
    snprintf(buf, n, "%af", (double)v);
}

static void emit_f32(Gen *g, const char *name, const float *v, size_t n) {
    str_printf(&g->data, "static const float %s[%zu] = {", name, n);
    char b[48];
    for (size_t i = 0; i < n; i++) {
        fmt_float(b, sizeof b, v[i]);
        str_printf(&g->data, "%s%s", i % 8 ? "," : i ? ",\n    " : "\n    ", b);
    }
    str_puts(&g->data, "\n};\n");
    g->weight_bytes += 4 * n;
}

/* Whether |bias| + 255 * sum |w| < 2^31 for every output channel: then int32 partial sums of a
 * conv cannot overflow ((x - x_zp) is within [-255, 255]). */
static int conv_fits_int32(const QNode *u, int cout) {
    size_t per = u->nw / (size_t)cout;
    for (int c = 0; c < cout; c++) {
        int64_t s = u->bias ? llabs((long long)u->bias[c]) : 0;
        for (size_t k = 0; k < per; k++) s += 255 * (int64_t)abs(u->w[(size_t)c * per + k]);
        if (s >= ((int64_t)1 << 31)) return 0;
    }
    return 1;
}

/* A 1x1 conv with stride 1 and no padding sees its planes as one row (h = 1, w = h * w): the
 * kernels' blocks then run over whole planes. */
static ConvDims conv_flat(const ConvDims *d) {
    ConvDims f = *d;
    if (f.k == 1 && f.stride == 1 && f.pad == 0) {
        f.w *= f.h, f.h = 1;
        f.ow *= f.oh, f.oh = 1;
        f.dil = 1;
    }
    return f;
}

/* The name of the conv kernel for these dims and kind (registering the instance): kernels are
 * specialized on kernel size, stride and dilation, so their loops have constant bounds. */
static void conv_kernel(Gen *g, const ConvDims *dims, int kind, char *buf, size_t n) {
    ConvDims d = conv_flat(dims);
    if (d.k == 1) d.dil = 1;
    int key[4] = {d.k, d.stride, d.dil, kind}, k = 0;
    while (k < g->ninst && memcmp(g->inst[k], key, sizeof key)) k++;
    if (k == g->ninst) {
        NASC_ASSERT(g->ninst < 64);
        memcpy(g->inst[g->ninst++], key, sizeof key);
    }
    static const char *pre[3] = {"conv_s8", "conv_s8w", "conv_f32"};
    snprintf(buf, n, "%s_k%ds%dd%d", pre[kind], d.k, d.stride, d.dil);
}
static void emit_conv_args(Gen *g, const char *name, const ConvDims *dims, int32_t x_zp, int32_t y_zp, int32_t y_min,
                           int32_t y_max) {
    ConvDims flat = conv_flat(dims);
    const ConvDims *d = &flat;
    str_printf(&g->data, "static const conv_args %s = {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %ld, %ld, %ld, %ld};\n",
               name, d->cin, d->h, d->w, d->cout, d->oh, d->ow, d->k, d->stride, d->pad, d->dil, d->groups, (long)x_zp,
               (long)y_zp, (long)y_min, (long)y_max);
    g->weight_bytes += 11 * sizeof(int) + 4 * 4;
    g->need |= K_CONVARGS;
}

static void emit_pool_args(Gen *g, const char *name, const PoolDims *d) {
    str_printf(&g->data, "static const pool_args %s = {%d, %d, %d, %d, %d, %d, %d, %d, %d};\n", name, d->c, d->h, d->w,
               d->oh, d->ow, d->k, d->stride, d->pad, d->count_include_pad);
    g->weight_bytes += 9 * sizeof(int);
    g->need |= K_POOLARGS;
}

static const char *op_text(const Spec *s, int i, char *buf, size_t n) {
    const Node *nd = &s->nodes[i];
    snprintf(buf, n, "%s%s%s", op_name(nd->op), nd->name[0] ? " " : "", nd->name);
    return buf;
}

/* Shape of input j of node nd. */
static void in_shape(const Gen *g, const Node *nd, int j, int *c, int *h, int *w) {
    int k = nd->in[j];
    if (k < 0) {
        *c = g->in_c, *h = g->in_h, *w = g->in_w;
        return;
    }
    const Node *s = &g->spec->nodes[k];
    *c = s->c, *h = s->h, *w = s->w;
}

/* In place: the output buffer is one of the inputs' buffers. Only elementwise kernels may. */
static int writes_in_place(const Gen *g, const Node *nd, int out_buf) {
    for (int j = 0; j < nd->nin; j++) {
        int v = nd->in[j] < 0 ? 0 : nd->in[j] + 1;
        if (g->ap->tbuf[v] == out_buf && out_buf >= 0) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ int8 statements */
static void gen_q_node(Gen *g, const QNet *q, int i) {
    const QNode *u = &q->nodes[i];
    const Node *nd = &q->spec.nodes[i];
    QExecKind kind = (QExecKind)u->kind;
    char what[64];
    if (kind == QX_NONE || kind == QX_ALIAS || kind == QX_ZERO) return;
    int xv = qnet_value(q, nd->in[0]), yv = u->tail + 1;
    NASC_ASSERT(xv >= 0);
    int yb = g->ap->tbuf[yv];
    NASC_ASSERT(yb >= 0 && yb == g->ap->tbuf[i + 1]); /* the chain writes its head's buffer */
    const Node *tail = &q->spec.nodes[u->tail];
    size_t out = node_elems(tail), in_elems;
    int c, h, w;
    in_shape(g, nd, 0, &c, &h, &w);
    in_elems = (size_t)c * h * w;
    char x[48], y[48];
    val_ptr_use(g, x, sizeof x, xv, in_elems, kind != QX_ADD && kind != QX_CONCAT);
    val_ptr(g, y, sizeof y, yv, out);
    int inplace = writes_in_place(g, nd, yb);
    NASC_ASSERT(!inplace || kind == QX_LUT || kind == QX_ADD || kind == QX_MUL || (kind == QX_CONV && nd->op == OP_BN));
    if (kind == QX_MUL) NASC_ASSERT(g->ap->tbuf[qnet_value(q, nd->in[1])] != yb || nd->h * nd->w == 1);
    str_printf(&g->body, "    /* %d: %s", i + 1, op_text(&q->spec, i, what, sizeof what));
    if (u->bn >= 0) str_printf(&g->body, " + %s (folded)", op_text(&q->spec, u->bn, what, sizeof what));
    if (u->act >= 0) str_printf(&g->body, " + %s (clamp)", op_text(&q->spec, u->act, what, sizeof what));
    str_printf(&g->body, " -> %dx%dx%d%s */\n", tail->c, tail->h, tail->w, inplace ? ", in place" : "");
    char nm[32];
    g->ops++;
    switch (kind) {
    case QX_CONV: {
        int wide = !conv_fits_int32(u, nd->c);
        char kn[48];
        g->need |= wide ? K_CONV_WIDE : K_CONV;
        conv_kernel(g, &u->ca.d, wide, kn, sizeof kn);
        snprintf(nm, sizeof nm, "w%d", i + 1);
        emit_i8(g, nm, u->w, u->nw);
        if (u->bias) {
            snprintf(nm, sizeof nm, "b%d", i + 1);
            emit_i32(g, nm, u->bias, u->nbias);
        }
        snprintf(nm, sizeof nm, "m%d", i + 1);
        emit_i32(g, nm, u->mult, u->nmult);
        snprintf(nm, sizeof nm, "s%d", i + 1);
        emit_i8(g, nm, u->shift, u->nshift);
        snprintf(nm, sizeof nm, "c%d", i + 1);
        emit_conv_args(g, nm, &u->ca.d, u->ca.x_zp, u->ca.y_zp, u->ca.y_min, u->ca.y_max);
        if (u->bias)
            str_printf(&g->body, "    %s(%s, %s, w%d, b%d, m%d, s%d, &c%d);\n", kn, y, x, i + 1, i + 1, i + 1, i + 1,
                       i + 1);
        else
            str_printf(&g->body, "    %s(%s, %s, w%d, 0, m%d, s%d, &c%d);\n", kn, y, x, i + 1, i + 1, i + 1, i + 1);
        break;
    }
    case QX_LUT:
        g->need |= K_LUT;
        snprintf(nm, sizeof nm, "lut%d", i + 1);
        emit_i8(g, nm, u->lut, 256);
        str_printf(&g->body, "    lut_s8(%s, %s, lut%d, %zu);\n", y, x, i + 1, out);
        break;
    case QX_MAXPOOL:
        g->need |= K_MAXPOOL;
        snprintf(nm, sizeof nm, "p%d", i + 1);
        emit_pool_args(g, nm, &u->pd);
        str_printf(&g->body, "    maxpool_s8(%s, %s, &p%d);\n", y, x, i + 1);
        break;
    case QX_AVGPOOL:
        g->need |= K_AVGPOOL;
        snprintf(nm, sizeof nm, "p%d", i + 1);
        emit_pool_args(g, nm, &u->pd);
        snprintf(nm, sizeof nm, "m%d", i + 1);
        emit_i32(g, nm, u->mult, u->nmult);
        snprintf(nm, sizeof nm, "s%d", i + 1);
        emit_i8(g, nm, u->shift, u->nshift);
        str_printf(&g->body, "    avgpool_s8(%s, %s, &p%d, %ld, %ld, m%d, s%d);\n", y, x, i + 1, (long)q->zp[xv],
                   (long)q->zp[yv], i + 1, i + 1);
        break;
    case QX_GAP:
        g->need |= K_GAP;
        NASC_ASSERT((size_t)h * w < ((size_t)1 << 23)); /* int32 sums */
        str_printf(&g->body, "    gap_s8(%s, %s, %d, %d, %ld, %ld, %ld, %d);\n", y, x, c, h * w, (long)q->zp[xv],
                   (long)q->zp[yv], (long)u->mult[0], u->shift[0]);
        break;
    case QX_ADD: {
        char ysb[48];
        fmt_float(ysb, sizeof ysb, q->scale[yv]);
        if (nd->nin == 2) { /* every input counts (a zero constant passes NULL: its zero point) */
            char xp[2][48];
            int32_t z[2];
            float xsc[2];
            for (int j = 0; j < 2; j++) {
                int v = qnet_value(q, nd->in[j]);
                if (g->ap->tbuf[v] < 0) snprintf(xp[j], sizeof xp[j], "0");
                else val_ptr(g, xp[j], sizeof xp[j], v, out);
                z[j] = q->zp[v];
                xsc[j] = q->scale[v];
            }
            /* the constants exactly as qadd computes them */
            float r0 = xsc[0] / q->scale[yv], r1 = xsc[1] / q->scale[yv];
            float t0 = r0 * (float)(z[0] + 128), t1 = r1 * (float)(z[1] + 128);
            float c = (float)(q->zp[yv] + 128) - (t0 + t1);
            char rb0[48], rb1[48], cb[48];
            fmt_float(rb0, sizeof rb0, r0), fmt_float(rb1, sizeof rb1, r1), fmt_float(cb, sizeof cb, c);
            g->need |= K_ADD2;
            str_printf(&g->body, "    add2_s8(%s, %s, %s, %ld, %ld, %s, %s, %s, %zu, %ld, %ld);\n", y, xp[0], xp[1],
                       (long)z[0], (long)z[1], rb0, rb1, cb, out, (long)u->y_min, (long)u->y_max);
            break;
        }
        /* Sum's form: zero constants add exactly +0 and are left out */
        int32_t zps[NODE_MAX_IN];
        float scs[NODE_MAX_IN];
        char xs[NODE_MAX_IN][48];
        int m = 0;
        for (int j = 0; j < nd->nin; j++) {
            int v = qnet_value(q, nd->in[j]);
            if (g->ap->tbuf[v] < 0) {
                NASC_ASSERT(q->zp[v] == 0);
                continue;
            }
            val_ptr(g, xs[m], sizeof xs[m], v, out);
            zps[m] = q->zp[v];
            scs[m] = q->scale[v];
            m++;
        }
        if (m == 0) { /* s = 0: y = clamp(y_zp) */
            g->need |= K_FILL;
            int32_t v = q_clamp(q->zp[yv], u->y_min, u->y_max);
            str_printf(&g->body, "    fill_s8(%s, %ld, %zu);\n", y, (long)v, out);
            break;
        }
        g->need |= K_ADD;
        snprintf(nm, sizeof nm, "z%d", i + 1);
        emit_i32(g, nm, zps, (size_t)m);
        snprintf(nm, sizeof nm, "f%d", i + 1);
        emit_f32(g, nm, scs, (size_t)m);
        str_printf(&g->body, "    {\n        const int8_t *xs[%d] = {", m);
        for (int j = 0; j < m; j++) str_printf(&g->body, "%s%s", j ? ", " : "", xs[j]);
        str_printf(&g->body, "};\n        add_s8(%s, xs, z%d, f%d, %d, %zu, %s, %ld, %ld, %ld);\n    }\n", y, i + 1, i + 1, m,
                   out, ysb, (long)q->zp[yv], (long)u->y_min, (long)u->y_max);
        break;
    }
    case QX_CONCAT: {
        g->need |= K_REQUANT;
        size_t off = 0;
        for (int j = 0; j < nd->nin; j++) {
            int v = qnet_value(q, nd->in[j]), cj, hj, wj;
            in_shape(g, nd, j, &cj, &hj, &wj);
            size_t len = (size_t)cj * hj * wj;
            char xj[48];
            val_ptr(g, xj, sizeof xj, v, len);
            str_printf(&g->body, "    requant_s8(%s + %zu, %s, %zu, %ld, %ld, %d, %ld);\n", y, off, xj, len, (long)q->zp[v],
                       (long)u->mult[j], u->shift[j], (long)q->zp[yv]);
            off += len;
        }
        NASC_ASSERT(off == out);
        break;
    }
    case QX_MUL: {
        g->need |= K_CHMUL;
        int sv = qnet_value(q, nd->in[1]);
        char s[48];
        val_ptr(g, s, sizeof s, sv, (size_t)c);
        str_printf(&g->body, "    chmul_s8(%s, %s, %s, %d, %d, %ld, %ld, %ld, %ld, %d);\n", y, x, s, c, h * w,
                   (long)q->zp[xv], (long)q->zp[sv], (long)q->zp[yv], (long)u->mult[0], u->shift[0]);
        break;
    }
    case QX_RESIZE: {
        g->need |= K_RESIZE;
        /* qresize_taps, tabulated: {i0, i1, l0, l1} per output row / column. */
        int dims[2][2] = {{h, nd->h}, {w, nd->w}};
        for (int a = 0; a < 2; a++) {
            int in = dims[a][0], on = dims[a][1];
            QTap *tap = xmalloc((size_t)on * sizeof *tap);
            int32_t *t = xmalloc((size_t)on * 4 * sizeof *t);
            qresize_taps(tap, in, on);
            for (int o = 0; o < on; o++) {
                t[4 * o] = tap[o].i0;
                t[4 * o + 1] = tap[o].i1;
                t[4 * o + 2] = tap[o].l0;
                t[4 * o + 3] = tap[o].l1;
            }
            free(tap);
            snprintf(nm, sizeof nm, "t%c%d", a ? 'x' : 'y', i + 1);
            emit_i32(g, nm, t, (size_t)on * 4);
            free(t);
        }
        str_printf(&g->body, "    resize_s8(%s, %s, %d, %d, %d, %d, %d, ty%d, tx%d, %ld, %ld, %ld, %d);\n", y, x, c, h, w,
                   nd->h, nd->w, i + 1, i + 1, (long)q->zp[xv], (long)q->zp[yv], (long)u->mult[0], u->shift[0]);
        break;
    }
    default: NASC_ASSERT(!"not an executed node");
    }
}

/* ------------------------------------------------------------------ fp32 statements */
static void gen_f_node(Gen *g, const Net *net, int i) {
    const Node *nd = &net->spec.nodes[i];
    MemKind mk = memplan_kind(nd, NULL);
    if (mk == MEM_ALIAS || mk == MEM_ZERO) return;
    int v = i + 1;
    int yb = g->ap->tbuf[v];
    NASC_ASSERT(yb >= 0);
    int c, h, w;
    in_shape(g, nd, 0, &c, &h, &w);
    size_t out = node_elems(nd), in_elems = (size_t)c * h * w;
    char x[48], y[48], nm[32], what[64];
    val_ptr_use(g, x, sizeof x, nd->in[0] < 0 ? 0 : nd->in[0] + 1, in_elems, nd->op != OP_ADD && nd->op != OP_CONCAT);
    val_ptr(g, y, sizeof y, v, out);
    int inplace = writes_in_place(g, nd, yb);
    NASC_ASSERT(!inplace || mk == MEM_INPLACE);
    str_printf(&g->body, "    /* %d: %s -> %dx%dx%d%s */\n", i + 1, op_text(&net->spec, i, what, sizeof what), nd->c,
               nd->h, nd->w, inplace ? ", in place" : "");
    const float *p = net->params + nd->param_off;
    g->ops++;
    switch (nd->op) {
    case OP_CONV:
    case OP_LINEAR: {
        g->need |= K_CONVARGS;
        ConvDims d = {.n = 1, .cin = c, .h = h, .w = w, .cout = nd->c, .k = 1, .stride = 1, .pad = 0, .dil = 1, .groups = 1};
        if (nd->op == OP_CONV) {
            d.k = nd->a.k, d.stride = nd->a.s, d.dil = nd->a.d, d.groups = nd->a.g;
            d.pad = nd->a.p < 0 ? nd->a.d * (nd->a.k - 1) / 2 : nd->a.p;
        } else {
            d.cin = c * h * w, d.h = d.w = 1;
        }
        NASC_ASSERT(conv_dims_init(&d, NULL) == NASC_OK);
        size_t nw = (size_t)d.cout * (d.cin / d.groups) * d.k * d.k;
        snprintf(nm, sizeof nm, "w%d", i + 1);
        emit_f32(g, nm, p, nw);
        if (nd->a.bias) {
            snprintf(nm, sizeof nm, "b%d", i + 1);
            emit_f32(g, nm, p + nw, (size_t)d.cout);
        }
        snprintf(nm, sizeof nm, "c%d", i + 1);
        emit_conv_args(g, nm, &d, 0, 0, 0, 0);
        char kn[48];
        conv_kernel(g, &d, 2, kn, sizeof kn);
        if (nd->a.bias) str_printf(&g->body, "    %s(%s, %s, w%d, b%d, &c%d);\n", kn, y, x, i + 1, i + 1, i + 1);
        else str_printf(&g->body, "    %s(%s, %s, w%d, 0, &c%d);\n", kn, y, x, i + 1, i + 1);
        break;
    }
    case OP_BN: {
        g->need |= F_BN;
        const float *gam = p, *bet = p + nd->c;
        const float *mean = net->buffers + nd->buf_off, *var = mean + nd->c;
        float *sc = xmalloc((size_t)nd->c * 2 * sizeof *sc), *sh = sc + nd->c;
        for (int k = 0; k < nd->c; k++) {
            double is = 1.0 / sqrt((double)var[k] + (double)QUANT_BN_EPS);
            sc[k] = (float)(is * gam[k]);
            sh[k] = (float)((double)bet[k] - (double)mean[k] * is * gam[k]);
        }
        snprintf(nm, sizeof nm, "bs%d", i + 1);
        emit_f32(g, nm, sc, (size_t)nd->c);
        snprintf(nm, sizeof nm, "bt%d", i + 1);
        emit_f32(g, nm, sh, (size_t)nd->c);
        free(sc);
        str_printf(&g->body, "    bn_f32(%s, %s, bs%d, bt%d, %d, %d);\n", y, x, i + 1, i + 1, nd->c, nd->h * nd->w);
        break;
    }
    case OP_RELU:
    case OP_RELU6:
    case OP_HSWISH:
    case OP_SIGMOID:
    case OP_HSIGMOID:
        g->need |= F_ACT;
        g->acts |= 1u << nd->op;
        if (nd->op == OP_SIGMOID) g->need |= F_EXP;
        str_printf(&g->body, "    act_f32(%s, %s, %zu, %d);\n", y, x, out, (int)nd->op);
        break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        g->need |= F_MAXPOOL;
        PoolDims d = {.n = 1, .c = c, .h = h, .w = w, .k = nd->a.k, .stride = nd->a.s ? nd->a.s : nd->a.k,
                      .pad = nd->a.p < 0 ? 0 : nd->a.p, .count_include_pad = nd->a.cip};
        NASC_ASSERT(pool_dims_init(&d, NULL) == NASC_OK);
        snprintf(nm, sizeof nm, "p%d", i + 1);
        str_printf(&g->data, "static const pool_args %s = {%d, %d, %d, %d, %d, %d, %d, %d, %d};\n", nm, d.c, d.h, d.w, d.oh,
                   d.ow, d.k, d.stride, d.pad, d.count_include_pad);
        g->weight_bytes += 9 * sizeof(int);
        str_printf(&g->body, "    pool_f32(%s, %s, &p%d, %d);\n", y, x, i + 1, nd->op == OP_AVGPOOL);
        break;
    }
    case OP_GAP:
        g->need |= F_GAP;
        str_printf(&g->body, "    gap_f32(%s, %s, %d, %d);\n", y, x, c, h * w);
        break;
    case OP_ADD: {
        char xs[NODE_MAX_IN][48];
        int m = 0;
        for (int j = 0; j < nd->nin; j++) {
            int vj = nd->in[j] < 0 ? 0 : nd->in[j] + 1;
            if (g->ap->tbuf[vj] < 0) continue; /* a zero constant adds exactly 0 */
            val_ptr(g, xs[m], sizeof xs[m], vj, out);
            m++;
        }
        if (m == 0) {
            g->zeros = NASC_MAX(g->zeros, out);
            g->need |= F_COPY;
            str_printf(&g->body, "    copy_f32(%s, Z, %zu);\n", y, out);
            break;
        }
        g->need |= F_ADD;
        str_printf(&g->body, "    {\n        const float *xs[%d] = {", m);
        for (int j = 0; j < m; j++) str_printf(&g->body, "%s%s", j ? ", " : "", xs[j]);
        str_printf(&g->body, "};\n        add_f32(%s, xs, %d, %zu);\n    }\n", y, m, out);
        break;
    }
    case OP_CONCAT: {
        g->need |= F_COPY;
        size_t off = 0;
        for (int j = 0; j < nd->nin; j++) {
            int cj, hj, wj;
            in_shape(g, nd, j, &cj, &hj, &wj);
            size_t len = (size_t)cj * hj * wj;
            char xj[48];
            val_ptr(g, xj, sizeof xj, nd->in[j] < 0 ? 0 : nd->in[j] + 1, len);
            str_printf(&g->body, "    copy_f32(%s + %zu, %s, %zu);\n", y, off, xj, len);
            off += len;
        }
        break;
    }
    case OP_MUL: {
        g->need |= F_MUL;
        char s[48];
        val_ptr(g, s, sizeof s, nd->in[1] < 0 ? 0 : nd->in[1] + 1, (size_t)c);
        str_printf(&g->body, "    mul_f32(%s, %s, %s, %d, %d);\n", y, x, s, c, h * w);
        break;
    }
    case OP_RESIZE: {
        g->need |= F_RESIZE;
        int dims[2][2] = {{h, nd->h}, {w, nd->w}};
        for (int a = 0; a < 2; a++) {
            int in = dims[a][0], on = dims[a][1];
            int32_t *ix = xmalloc((size_t)on * 2 * sizeof *ix);
            float *l = xmalloc((size_t)on * 2 * sizeof *l);
            float scale = (float)in / (float)on; /* resize.c's taps, in float */
            for (int o = 0; o < on; o++) {
                float src = ((float)o + 0.5f) * scale - 0.5f;
                if (src < 0) src = 0;
                int i0 = (int)src;
                if (i0 > in - 1) i0 = in - 1;
                ix[2 * o] = i0;
                ix[2 * o + 1] = i0 + 1 < in ? i0 + 1 : in - 1;
                l[2 * o + 1] = src - (float)i0;
                l[2 * o] = 1.0f - l[2 * o + 1];
            }
            snprintf(nm, sizeof nm, "i%c%d", a ? 'x' : 'y', i + 1);
            emit_i32(g, nm, ix, (size_t)on * 2);
            snprintf(nm, sizeof nm, "l%c%d", a ? 'x' : 'y', i + 1);
            emit_f32(g, nm, l, (size_t)on * 2);
            free(ix);
            free(l);
        }
        str_printf(&g->body, "    resize_f32(%s, %s, %d, %d, %d, %d, %d, iy%d, ly%d, ix%d, lx%d);\n", y, x, c, h, w,
                   nd->h, nd->w, i + 1, i + 1, i + 1, i + 1);
        break;
    }
    default: NASC_ASSERT(!"op without an fp32 kernel");
    }
}

/* ------------------------------------------------------------------ files */
/* s with every @KEY@ of keys[] replaced by vals[] (n pairs), appended to o. */
static void str_subst_all(Str *o, const char *s, const char *const *keys, const char *const *vals, int n) {
    Str cur = {0}, next = {0};
    str_puts(&cur, s);
    for (int k = 0; k < n; k++) {
        next.len = 0;
        str_subst(&next, cur.s, keys[k], vals[k]);
        Str t = cur;
        cur = next;
        next = t;
    }
    str_puts(o, cur.s);
    free(cur.s);
    free(next.s);
}

/* One conv kernel instance: kind 0 int8 (int32 sums), 1 int8 (int64 sums), 2 fp32. */
static void emit_conv(Str *o, const int *inst) {
    int k = inst[0], st = inst[1], dil = inst[2], kind = inst[3], f32 = kind == 2;
    const char *acc = kind == 0 ? "int32_t" : kind == 1 ? "int64_t" : "float", *T = f32 ? "float" : "int8_t";
    Str b4 = {0}, b1 = {0};
    const char *bk[2] = {"@ACC@", "@T@"}, *bv[2] = {acc, T};
    str_subst_all(&b4, src_conv_block4, bk, bv, 2);
    str_subst_all(&b1, src_conv_block1, bk, bv, 2);
    char sig[1024], ks[16], ss[16], ds[16];
    static const char *pre[3] = {"conv_s8", "conv_s8w", "conv_f32"};
    char name[48];
    snprintf(name, sizeof name, "%s_k%ds%dd%d", pre[kind], k, st, dil);
    if (f32)
        snprintf(sig, sizeof sig,
                 "/* y (cout, oh, ow) = bias[co] + the sum over the group's (ci, ky, kx) of w * x (padding 0);\n"
                 " * kernel %dx%d, stride %d, dilation %d */\n"
                 "static void %s(float *y, const float *x, const float *w, const float *bias, const conv_args *a)",
                 k, k, st, dil, name);
    else
        snprintf(sig, sizeof sig,
                 "/* y (cout, oh, ow) = requantf(acc, mult[co], shift[co], y_zp, y_min, y_max) with acc =\n"
                 " * bias[co] + the sum over the group's (ci, ky, kx) of w * (x - x_zp) in %s; padding adds 0;\n"
                 " * kernel %dx%d, stride %d, dilation %d */\n"
                 "static void %s(int8_t *y, const int8_t *x, const int8_t *w, const int32_t *bias,\n"
                 "                    const int32_t *mult, const int8_t *shift, const conv_args *a)",
                 acc, k, k, st, dil, name);
    snprintf(ks, sizeof ks, "%d", k);
    snprintf(ss, sizeof ss, "%d", st);
    snprintf(ds, sizeof ds, "%d", dil);
    const char *keys[11] = {"@BLOCK4@", "@BLOCK1@", "@SIG@", "@ZPDECL@", "@ZP@", "@RES@",
                            "@ACC@",    "@T@",      "@K@",   "@S@",      "@D@"};
    const char *vals[12] = {b4.s, b1.s, sig, f32 ? "" : "    const int32_t zp = a->x_zp;\n", f32 ? "" : " - zp",
                            f32 ? "((void)q, v)" : "requantf((int32_t)(uint32_t)(v), mult[q], shift[q], a->y_zp, a->y_min, a->y_max)",
                            acc, T, ks, ss, ds};
    str_subst_all(o, src_conv_tmpl, keys, vals, 11);
    free(b4.s);
    free(b1.s);
}

static void emit_kernels(Str *o, const Gen *g) {
    unsigned need = g->need, acts = g->acts;
    if (need & (K_AVGPOOL | K_REQUANT | K_CHMUL | K_RESIZE)) str_puts(o, src_mulshift);
    if (need & (K_CONV | K_CONV_WIDE | K_GAP | K_QUANT | K_ADD | K_ADD2)) str_puts(o, src_rne);
    if (need & (K_CONV | K_CONV_WIDE | K_GAP)) str_puts(o, src_requantf);
    if (need & (K_AVGPOOL | K_REQUANT | K_CHMUL | K_RESIZE | K_QUANT)) str_puts(o, src_sat8);
    if (need & (K_ADD | K_ADD2)) str_puts(o, src_clamp8);
    if (need & K_CONVARGS) str_puts(o, src_convargs);
    for (int k = 0; k < g->ninst; k++)
        if (g->inst[k][3] != 2) emit_conv(o, g->inst[k]);
    if (need & K_LUT) str_puts(o, src_lut);
    if (need & K_POOLARGS) str_puts(o, src_poolargs);
    if (need & K_MAXPOOL) str_puts(o, src_maxpool);
    if (need & K_AVGPOOL) str_puts(o, src_avgpool);
    if (need & K_GAP) str_puts(o, src_gap);
    if (need & K_ADD2) str_puts(o, src_add2);
    if (need & K_ADD) str_puts(o, src_add);
    if (need & K_REQUANT) str_puts(o, src_requant);
    if (need & K_CHMUL) str_puts(o, src_chmul);
    if (need & K_RESIZE) str_puts(o, src_resize);
    if (need & K_FILL) str_puts(o, src_fill);
    if (need & K_QUANT) str_puts(o, src_quant);
    for (int k = 0; k < g->ninst; k++)
        if (g->inst[k][3] == 2) emit_conv(o, g->inst[k]);
    if (need & F_BN) str_puts(o, src_bn_f32);
    if (need & F_EXP) str_puts(o, src_exp_f32);
    if (need & F_ACT) {
        Str b = {0};
        static const char *body[OP_COUNT] = {
            [OP_RELU] = "y[i] = v > 0 ? v : 0.0f;",
            [OP_RELU6] = "y[i] = v > 0 ? (v < 6 ? v : 6.0f) : 0.0f;",
            [OP_HSWISH] = "y[i] = v <= -3 ? 0.0f : v >= 3 ? v : v * (v + 3) / 6;",
            [OP_SIGMOID] = "if (v >= 0) {\n                y[i] = 1.0f / (1.0f + exp_f32(-v));\n            } else {\n"
                           "                const float e = exp_f32(v);\n                y[i] = e / (1.0f + e);\n"
                           "            }\n            break;",
            [OP_HSIGMOID] = "y[i] = v <= -3 ? 0.0f : v >= 3 ? 1.0f : (v + 3) / 6;",
        };
        for (int k = 0; k < OP_COUNT; k++) {
            if (!(acts & (1u << k))) continue;
            str_printf(&b, "        case %d: /* %s */\n            %s\n", k, op_name((OpKind)k), body[k]);
            if (k != OP_SIGMOID) str_puts(&b, "            break;\n");
        }
        str_subst(o, src_act_f32, "@BODY@", b.s);
        free(b.s);
    }
    if (need & F_MAXPOOL) str_puts(o, src_maxpool_f32);
    if (need & F_GAP) str_puts(o, src_gap_f32);
    if (need & F_ADD) str_puts(o, src_add_f32);
    if (need & F_COPY) str_puts(o, src_copy_f32);
    if (need & F_MUL) str_puts(o, src_mul_f32);
    if (need & F_RESIZE) str_puts(o, src_resize_f32);
}

static int valid_name(const char *s) {
    if (!s[0] || strlen(s) >= CGEN_NAME_MAX) return 0;
    if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return 0;
    for (const char *p = s; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
    return 1;
}

typedef struct {
    const char *model_path, *name;
    int int8;
    const Norm *norm;
    int in_c, in_h, in_w, classes;
    const Spec *spec;
    size_t arena_bytes, elem;
    float in_scale, out_scale;
    int32_t in_zp, out_zp;
    char out_ptr[48], in_ptr[48];
} Meta;

static void emit_header(Str *o, const Meta *m, const CgenReport *r) {
    char up[CGEN_NAME_MAX];
    size_t k = 0;
    for (; m->name[k]; k++) up[k] = (char)(m->name[k] >= 'a' && m->name[k] <= 'z' ? m->name[k] - 32 : m->name[k]);
    up[k] = 0;
    const char *N = m->name;
    str_printf(o, "/* %s.h: generated by nasc %s (nasc export --format c) from %s: an %s network,\n", N, NASC_VERSION,
               m->model_path, m->int8 ? "int8" : "fp32");
    str_printf(o, " * %d statements, %d kernel calls per inference. Plain C99; no malloc, no libc, no libm.\n *\n",
               m->spec->n, r->ops);
    str_printf(o, " *   RAM:   %zu bytes: one static arena for every activation (the cost model's peak for this\n"
                  " *          net, with fixed offsets); nothing else but a few locals on the stack.\n",
               r->arena_bytes);
    str_printf(o, " *   Flash: %zu bytes of const data (weights, biases, %s),\n *          plus the code.\n *\n",
               r->weight_bytes, m->int8 ? "requantization pairs, lookup tables" : "BN scales and shifts");
    str_printf(o, " * Usage:\n"
                  " *     float x[%s_IN_C * %s_IN_H * %s_IN_W];  (CHW, x = (pixel / 255 - mean[c]) / std[c])\n"
                  " *     float scores[%s_CLASSES];\n"
                  " *     int cls = %s_predict(x, scores);  (the arg-max class; scores gets the logits)\n",
               up, up, up, up, N);
    if (m->int8)
        str_printf(o, " * or, with an int8 input q = round(x / %s_INPUT_SCALE) + %s_INPUT_ZP (round half to\n"
                      " * even, saturated; %s_quantize does it), %s_predict_q(q, logits_q), the logits being\n"
                      " * %s_OUTPUT_SCALE * (logits_q - %s_OUTPUT_ZP).\n",
                   up, up, N, N, up, up);
    str_printf(o, " * Not reentrant (one static arena). Define %s_ARENA_ATTR when compiling %s.c to\n"
                  " * place the arena (e.g. __attribute__((section(\".sram2\")))). Needs an int of at least 32\n"
                  " * bits and an arithmetic right shift of negative integers (every 32-bit MCU compiler).\n */\n",
               up, N);
    str_printf(o, "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n", up, up);
    str_printf(o, "#define %s_IN_C %d\n#define %s_IN_H %d\n#define %s_IN_W %d\n#define %s_CLASSES %d\n", up, m->in_c, up,
               m->in_h, up, m->in_w, up, m->classes);
    str_printf(o, "#define %s_ARENA_BYTES %zu\n#define %s_WEIGHT_BYTES %zu\n", up, r->arena_bytes, up, r->weight_bytes);
    /* Normalization: per channel; a model without one records 0 channels (identity). */
    str_printf(o, "\n/* Input normalization, per channel: x = (pixel / 255 - mean[c]) / std[c]%s */\n",
               m->norm->nchan ? "" : " (this model recorded none: mean 0, std 1)");
    char b[48];
    for (int pass = 0; pass < 2; pass++) {
        str_printf(o, "#define %s_NORM_%s {", up, pass ? "STD" : "MEAN");
        for (int c = 0; c < m->in_c; c++) {
            float v = pass ? 1.0f : 0.0f;
            if (m->norm->nchan > 0) v = pass ? m->norm->std[NASC_MIN(c, m->norm->nchan - 1)] : m->norm->mean[NASC_MIN(c, m->norm->nchan - 1)];
            snprintf(b, sizeof b, "%.9gf", (double)v);
            if (!strchr(b, '.') && !strchr(b, 'e')) snprintf(b, sizeof b, "%.1ff", (double)v);
            str_printf(o, "%s%s", c ? ", " : "", b);
        }
        str_puts(o, "}\n");
    }
    if (m->int8) {
        fmt_float(b, sizeof b, m->in_scale);
        str_printf(o, "\n/* int8 input and output quantization: real = scale * (q - zero point) */\n");
        str_printf(o, "#define %s_INPUT_SCALE %s\n#define %s_INPUT_ZP %ld\n", up, b, up, (long)m->in_zp);
        fmt_float(b, sizeof b, m->out_scale);
        str_printf(o, "#define %s_OUTPUT_SCALE %s\n#define %s_OUTPUT_ZP %ld\n", up, b, up, (long)m->out_zp);
    }
    str_puts(o, "\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    str_printf(o, "/* input (%s_IN_C, %s_IN_H, %s_IN_W) normalized floats -> scores (%s_CLASSES) logits;\n"
                  " * returns the arg-max class (the first of equal maxima). */\n"
                  "int %s_predict(const float *input, float *scores);\n",
               up, up, up, up, N);
    if (m->int8)
        str_printf(o, "/* The same at the int8 level: input quantized, scores_q the int8 logits. */\n"
                      "int %s_predict_q(const int8_t *input, int8_t *scores_q);\n"
                      "/* The input quantization %s_predict applies (bit for bit nasc's quantize_ref). */\n"
                      "void %s_quantize(const float *input, int8_t *input_q);\n",
                   N, N, N);
    str_puts(o, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

static void emit_source(Str *o, const Meta *m, Gen *g, const CgenReport *r) {
    char up[CGEN_NAME_MAX];
    size_t k = 0;
    for (; m->name[k]; k++) up[k] = (char)(m->name[k] >= 'a' && m->name[k] <= 'z' ? m->name[k] - 32 : m->name[k]);
    up[k] = 0;
    const char *N = m->name, *T = m->int8 ? "int8_t" : "float";
    str_printf(o, "/* %s.c: generated by nasc %s from %s (%s). See %s.h for the interface.\n", N, NASC_VERSION,
               m->model_path, m->int8 ? "int8" : "fp32", N);
    str_printf(o, " * The nodes run in the memory planner's order; every tensor lives at a fixed offset of one\n"
                  " * arena of %zu bytes (arena planner: %s; the ideal allocator needs %zu). Kernels are plain\n"
                  " * C99 %s.\n */\n",
               r->arena_bytes, r->arena_method, r->ideal_bytes,
               m->int8 ? "with nasc's int8 reference semantics (ONNX Runtime's arithmetic: convolutions, global\n"
                         " * pooling, adds and quantization in IEEE single precision, the other ops in integers):\n"
                         " * bit-identical results to nasc's int8 executor"
                       : "float loops");
    str_printf(o, "#include \"%s.h\"\n\n", N);
    if (m->int8)
        str_printf(o, "#if defined(__FAST_MATH__)\n#error \"%s.c needs IEEE single-precision arithmetic as written (it divides by scales as "
                      "ONNX's QuantizeLinear does): compile it without -ffast-math\"\n#endif\n\n",
                   N);
    str_printf(o, "/* Output columns per conv block: any value >= 1 gives the same results; wide blocks suit\n"
                  " * vector units (16: compilers vectorize the column loops), narrow ones scalar cores on small\n"
                  " * feature maps (a block computes all its columns even past the row's end). */\n"
                  "#ifndef %s_CONV_BLK\n#define %s_CONV_BLK %d\n#endif\n#define CONV_BLK %s_CONV_BLK\n",
               up, up, CGEN_CONV_BLK, up);
    str_puts(o, "\n");
    str_printf(o, "#ifndef %s_ARENA_ATTR\n#if defined(__GNUC__) || defined(__clang__)\n"
                  "#define %s_ARENA_ATTR __attribute__((aligned(16)))\n#else\n#define %s_ARENA_ATTR\n#endif\n#endif\n\n",
               up, up, up);
    str_puts(o, "typedef char int_has_32_bits[sizeof(int) >= 4 ? 1 : -1];\n\n");
    str_puts(o, "/* ------------------------------------------------------------------ kernels */\n");
    emit_kernels(o, g);
    str_puts(o, "/* ------------------------------------------------------------------ constants */\n");
    if (g->zeros) {
        str_printf(o, "/* zero constants (NB201's none) read as a block of zeros */\nstatic const %s Z[%zu] = {0};\n\n", T,
                   g->zeros);
    }
    str_puts(o, g->data.s ? g->data.s : "");
    size_t elems = m->arena_bytes / m->elem;
    str_printf(o, "\n/* ------------------------------------------------------------------ the arena */\n"
                  "static %s arena[%zu] %s_ARENA_ATTR;\n#define A arena\n\n",
               T, elems ? elems : 1, up);
    str_puts(o, "static void run(void) {\n");
    str_puts(o, g->body.s ? g->body.s : "");
    str_puts(o, "}\n\n");
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    if (m->int8) {
        char inv[48], os[48];
        fmt_float(inv, sizeof inv, m->in_scale); /* quantize1 divides by the scale */
        fmt_float(os, sizeof os, m->out_scale);
        str_printf(o, "int %s_predict_q(const int8_t *input, int8_t *scores_q) {\n"
                      "    int8_t *in = %s;\n"
                      "    for (int i = 0; i < %zu; i++) in[i] = input[i];\n"
                      "    run();\n"
                      "    const int8_t *out = %s;\n"
                      "    int best = 0;\n"
                      "    for (int i = 0; i < %d; i++) {\n"
                      "        scores_q[i] = out[i];\n"
                      "        if (out[i] > out[best]) best = i;\n"
                      "    }\n"
                      "    return best;\n}\n\n",
                   N, m->in_ptr, in, m->out_ptr, m->classes);
        str_printf(o, "void %s_quantize(const float *input, int8_t *input_q) {\n"
                      "    for (int i = 0; i < %zu; i++) input_q[i] = quantize1(input[i], %s, %ld);\n}\n\n",
                   N, in, inv, (long)m->in_zp);
        str_printf(o, "int %s_predict(const float *input, float *scores) {\n"
                      "    int8_t *in = %s;\n"
                      "    for (int i = 0; i < %zu; i++) in[i] = quantize1(input[i], %s, %ld);\n"
                      "    run();\n"
                      "    const int8_t *out = %s;\n"
                      "    int best = 0;\n"
                      "    for (int i = 0; i < %d; i++) {\n"
                      "        scores[i] = %s * (float)(out[i] - (%ld));\n"
                      "        if (out[i] > out[best]) best = i;\n"
                      "    }\n"
                      "    return best;\n}\n",
                   N, m->in_ptr, in, inv, (long)m->in_zp, m->out_ptr, m->classes, os, (long)m->out_zp);
    } else {
        str_printf(o, "int %s_predict(const float *input, float *scores) {\n"
                      "    float *in = %s;\n"
                      "    for (int i = 0; i < %zu; i++) in[i] = input[i];\n"
                      "    run();\n"
                      "    const float *out = %s;\n"
                      "    int best = 0;\n"
                      "    for (int i = 0; i < %d; i++) {\n"
                      "        scores[i] = out[i];\n"
                      "        if (out[i] > out[best]) best = i;\n"
                      "    }\n"
                      "    return best;\n}\n",
                   N, m->in_ptr, in, m->out_ptr, m->classes);
    }
}

static int make_dir(const char *dir, Err *e) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return NASC_OK;
        err_set(e, "%s exists and is not a folder", dir);
        return NASC_ERR;
    }
    if (mkdir(dir, 0777) != 0) {
        err_set(e, "cannot create the folder %s: %s", dir, strerror(errno));
        return NASC_ERR;
    }
    return NASC_OK;
}

/* Generates both files into o_c / o_h for a loaded model (q for int8, else net). */
static void generate(Meta *m, const QNet *q, const Net *net, const Net *plan_net, Str *o_c, Str *o_h, CgenReport *r) {
    CostReport cr;
    cost_static(plan_net, NULL, &cr);
    ArenaPlan ap;
    arena_plan(plan_net, cr.plan.order, m->elem, &ap);
    NASC_ASSERT(ap.arena_bytes == cost_peak_bytes(&cr, (int)m->elem)); /* the cost model's figure */
    Gen g = {.ap = &ap, .elem = m->elem, .spec = m->spec, .in_c = m->in_c, .in_h = m->in_h, .in_w = m->in_w};
    if (m->int8) g.need |= K_QUANT;
    int n = m->spec->n;
    for (int t = 0; t < n; t++) {
        int i = cr.plan.order[t];
        if (q) gen_q_node(&g, q, i);
        else gen_f_node(&g, net, i);
    }
    int ov = q ? qnet_value(q, n - 1) : n;
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    val_ptr(&g, m->in_ptr, sizeof m->in_ptr, 0, in);
    val_ptr(&g, m->out_ptr, sizeof m->out_ptr, ov, (size_t)m->classes);
    NASC_ASSERT(strcmp(m->in_ptr, "Z") != 0);
    if (g.zeros) g.weight_bytes += g.zeros * m->elem;
    m->arena_bytes = ap.arena_bytes;
    r->nodes = n;
    r->ops = g.ops;
    r->arena_bytes = ap.arena_bytes;
    r->ideal_bytes = ap.ideal_bytes;
    r->arena_method = ap.method;
    r->weight_bytes = g.weight_bytes;
    r->flash_bytes = g.weight_bytes;
    r->sram_bytes = ap.arena_bytes;
    emit_source(o_c, m, &g, r);
    emit_header(o_h, m, r);
    free(g.data.s);
    free(g.body.s);
    arena_free(&ap);
    cost_free(&cr);
}

int cgen_export(const char *model_path, const char *out_dir, const char *name, CgenReport *rep, Err *e) {
    CgenReport local;
    CgenReport *r = rep ? rep : &local;
    memset(r, 0, sizeof *r);
    if (!name) name = CGEN_DEFAULT_NAME;
    if (!valid_name(name)) {
        err_set(e, "--name '%s': must be a C identifier (letters, digits, '_', not starting with a digit), at most %d "
                   "characters", name, CGEN_NAME_MAX - 1);
        return NASC_ERR;
    }
    QModelKind kind = qmodel_probe(model_path);
    if (kind == QMODEL_NONE) {
        FILE *f = fopen(model_path, "rb");
        if (!f) err_set(e, "cannot read %s: %s", model_path, strerror(errno));
        else err_set(e, "%s is neither an fp32 nor an int8 nasc model", model_path);
        if (f) fclose(f);
        return NASC_ERR;
    }
    if (make_dir(out_dir, e) != NASC_OK) return NASC_ERR;
    int np = snprintf(r->c_path, sizeof r->c_path, "%s/%s.c", out_dir, name);
    int nh = snprintf(r->h_path, sizeof r->h_path, "%s/%s.h", out_dir, name);
    if (np < 0 || nh < 0 || (size_t)np >= sizeof r->c_path || (size_t)nh >= sizeof r->h_path) {
        err_set(e, "output folder path too long: %s", out_dir);
        return NASC_ERR;
    }
    Meta m = {.model_path = model_path, .name = name, .int8 = kind == QMODEL_INT8};
    Norm norm = {0};
    QNet q;
    Net net, plan_net;
    Str oc = {0}, oh = {0};
    int rc = NASC_ERR;
    if (m.int8) {
        if (qmodel_load(model_path, &q, &norm, e) != NASC_OK) return NASC_ERR;
        if (net_build(&plan_net, &q.spec, q.in_c, q.in_h, q.in_w, q.classes, e) != NASC_OK) {
            qnet_free(&q);
            return NASC_ERR;
        }
        m.in_c = q.in_c, m.in_h = q.in_h, m.in_w = q.in_w, m.classes = q.classes;
        m.spec = &q.spec;
        m.elem = 1;
        m.in_scale = q.scale[0];
        m.in_zp = q.zp[0];
        m.out_scale = qnet_out_scale(&q);
        m.out_zp = qnet_out_zp(&q);
    } else {
        if (model_load(model_path, &net, &norm, e) != NASC_OK) return NASC_ERR;
        m.in_c = net.in_c, m.in_h = net.in_h, m.in_w = net.in_w, m.classes = net.classes;
        m.spec = &net.spec;
        m.elem = 4;
        for (size_t k = 0; k < net.nparams; k++)
            if (!isfinite(net.params[k])) {
                err_set(e, "%s: parameter %zu is not finite", model_path, k);
                net_free(&net);
                return NASC_ERR;
            }
    }
    m.norm = &norm;
    r->int8 = m.int8;
    /* Tensors are indexed with int in the generated code. */
    size_t biggest = (size_t)m.in_c * m.in_h * m.in_w;
    for (int i = 0; i < m.spec->n; i++) biggest = NASC_MAX(biggest, node_elems(&m.spec->nodes[i]));
    if (biggest * m.elem > ((size_t)1 << 30)) {
        err_set(e, "%s: a tensor of %zu elements is too large for the generated C", model_path, biggest);
        goto done;
    }
    generate(&m, m.int8 ? &q : NULL, m.int8 ? NULL : &net, m.int8 ? &plan_net : &net, &oc, &oh, r);
    if (file_write_atomic(r->h_path, oh.s, oh.len, e) != NASC_OK) goto done;
    if (file_write_atomic(r->c_path, oc.s, oc.len, e) != NASC_OK) goto done;
    rc = NASC_OK;
    const char *meas = getenv("NASC_CGEN_MEASURE");
    if (!meas || strcmp(meas, "0") != 0) {
        Err me;
        cgen_measure(r->c_path, r, &me); /* best effort: without a compiler the data figures stand */
    }
done:
    free(oc.s);
    free(oh.s);
    if (m.int8) {
        qnet_free(&q);
        net_free(&plan_net);
    } else {
        net_free(&net);
    }
    return rc;
}

/* ------------------------------------------------------------------ measuring */
static uint64_t rd(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = v << 8 | p[k];
    return v;
}

/* Section sizes of an ELF relocatable object (little-endian, 32 or 64 bit). */
static int elf_sizes(const uint8_t *d, size_t len, CgenReport *r, Err *e) {
    if (len < 52 || memcmp(d, "\177ELF", 4) != 0 || d[5] != 1 || (d[4] != 1 && d[4] != 2)) {
        err_set(e, "the compiler's object is not a little-endian ELF file");
        return NASC_ERR;
    }
    int is64 = d[4] == 2;
    uint64_t shoff = is64 ? rd(d + 0x28, 8) : rd(d + 0x20, 4);
    unsigned shentsize = (unsigned)rd(d + (is64 ? 0x3A : 0x2E), 2), shnum = (unsigned)rd(d + (is64 ? 0x3C : 0x30), 2);
    unsigned shstrndx = (unsigned)rd(d + (is64 ? 0x3E : 0x32), 2);
    if (shentsize < (is64 ? 64u : 40u) || shoff > len || (uint64_t)shnum * shentsize > len - shoff || shstrndx >= shnum) {
        err_set(e, "the compiler's object has a damaged section table");
        return NASC_ERR;
    }
    const uint8_t *strs = d + shoff + (size_t)shstrndx * shentsize;
    uint64_t str_off = is64 ? rd(strs + 0x18, 8) : rd(strs + 0x10, 4);
    uint64_t str_len = is64 ? rd(strs + 0x20, 8) : rd(strs + 0x14, 4);
    if (str_off > len || str_len > len - str_off) {
        err_set(e, "the compiler's object has a damaged name table");
        return NASC_ERR;
    }
    r->code_bytes = r->rodata_bytes = r->ram_bytes = 0;
    size_t data_init = 0;
    for (unsigned s = 0; s < shnum; s++) {
        const uint8_t *h = d + shoff + (size_t)s * shentsize;
        uint32_t nm = (uint32_t)rd(h, 4), type = (uint32_t)rd(h + 4, 4);
        uint64_t flags = is64 ? rd(h + 8, 8) : rd(h + 8, 4);
        uint64_t size = is64 ? rd(h + 0x20, 8) : rd(h + 0x14, 4);
        const char *name = nm < str_len ? (const char *)d + str_off + nm : "";
        if (!(flags & 2)) continue; /* SHF_ALLOC */
        if (!strncmp(name, ".eh_frame", 9) || !strncmp(name, ".note", 5)) continue;
        if (flags & 4) r->code_bytes += size;          /* SHF_EXECINSTR */
        else if (flags & 1) {                           /* SHF_WRITE */
            r->ram_bytes += size;
            if (type != 8) data_init += size;           /* not SHT_NOBITS: .data has an image in flash */
        } else r->rodata_bytes += size;
    }
    r->flash_bytes = r->code_bytes + r->rodata_bytes + data_init;
    r->sram_bytes = r->ram_bytes;
    r->measured = 1;
    return NASC_OK;
}

/* Single-quoted for the shell. */
static void shell_quote(Str *b, const char *s) {
    str_puts(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'') str_puts(b, "'\\''");
        else str_printf(b, "%c", *p);
    }
    str_puts(b, "'");
}

int cgen_measure(const char *c_path, CgenReport *rep, Err *e) {
    rep->measured = 0;
    const char *cc = getenv("NASC_CC");
    if (!cc || !cc[0]) cc = "cc";
    snprintf(rep->cc, sizeof rep->cc, "%s", cc);
    char obj[CGEN_PATH_MAX + 16];
    snprintf(obj, sizeof obj, "%s.%ld.o", c_path, (long)getpid());
    Str cmd = {0};
    str_printf(&cmd, "%s -std=c99 -O2 -fno-asynchronous-unwind-tables -c ", cc);
    shell_quote(&cmd, c_path);
    str_puts(&cmd, " -o ");
    shell_quote(&cmd, obj);
    str_puts(&cmd, " >/dev/null 2>&1");
    int st = system(cmd.s);
    free(cmd.s);
    if (st != 0) {
        remove(obj);
        err_set(e, "could not compile %s with %s (status %d): sizes are the data's only", c_path, cc, st);
        return NASC_ERR;
    }
    size_t len;
    uint8_t *d = file_read_all(obj, &len, e);
    remove(obj);
    if (!d) return NASC_ERR;
    int rc = elf_sizes(d, len, rep, e);
    free(d);
    return rc;
}
