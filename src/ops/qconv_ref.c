/* qconv_ref.c: the reference int8 convolution and the requantization multiplier (qops.h).
 * Plain loops, one thread: the definition the fast paths in qconv.c are tested against. */
#include <math.h>

#include "qops.h"

void q_multiplier(double r, int32_t *mult, int *shift) {
    NASC_ASSERT(r >= 0 && r < 536870912.0);
    int ex;
    double m = frexp(r, &ex); /* r = m * 2^ex, m in [0.5, 1) */
    int64_t q = (int64_t)llround(m * 2147483648.0);
    if (q == ((int64_t)1 << 31)) { /* m rounded up to 1 */
        q >>= 1;
        ex++;
    }
    int s = 31 - ex;
    if (r == 0 || s > 62) {
        *mult = 0;
        *shift = 1;
        return;
    }
    *mult = (int32_t)q;
    *shift = s;
}

void qconv2d_ref(int8_t *y, const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                 const int8_t *shift, const QConvArgs *a) {
    const ConvDims *d = &a->d;
    int cig = d->cin / d->groups, cog = d->cout / d->groups;
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->cout; co++) {
            int g = co / cog;
            const int8_t *wc = w + (size_t)co * cig * d->k * d->k;
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    int64_t acc = bias ? bias[co] : 0;
                    for (int ci = 0; ci < cig; ci++) {
                        const int8_t *xc = x + ((size_t)n * d->cin + (size_t)g * cig + ci) * d->h * d->w;
                        for (int ky = 0; ky < d->k; ky++)
                            for (int kx = 0; kx < d->k; kx++) {
                                int iy = oy * d->stride - d->pad + ky * d->dil;
                                int ix = ox * d->stride - d->pad + kx * d->dil;
                                int32_t v = (iy >= 0 && iy < d->h && ix >= 0 && ix < d->w)
                                                ? xc[(size_t)iy * d->w + ix]
                                                : a->x_zp;
                                acc += (int32_t)wc[((size_t)ci * d->k + ky) * d->k + kx] * (v - a->x_zp);
                            }
                    }
                    /* int32 accumulation, wrapping like the fast kernels and ONNX Runtime */
                    int32_t q = q_requant_f((int32_t)(uint32_t)(uint64_t)acc, q_conv_scale(mult[co], shift[co]), a->y_zp,
                                            a->y_min, a->y_max);
                    y[(((size_t)n * d->cout + co) * d->oh + oy) * d->ow + ox] = (int8_t)q;
                }
        }
}
