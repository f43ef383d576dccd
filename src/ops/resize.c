/* resize.c: bilinear resizing of feature maps, PyTorch's F.interpolate(mode="bilinear",
 * align_corners=False, antialias=False): output pixel o samples the input at
 * (o + 0.5) * in/out - 0.5, clamped at 0, between the two nearest input pixels. Used as a
 * network's first statement to search over input resolutions. */
#include "ops.h"

typedef struct {
    int i0, i1;
    real l0, l1; /* weights of i0 and i1 */
} Tap;

static void taps(Tap *t, int in, int out) {
    real scale = (real)in / (real)out;
    for (int o = 0; o < out; o++) {
        real src = ((real)o + (real)0.5) * scale - (real)0.5;
        if (src < 0) src = 0;
        int i0 = (int)src;
        if (i0 > in - 1) i0 = in - 1;
        int i1 = i0 + 1 < in ? i0 + 1 : in - 1;
        real l = src - (real)i0;
        t[o].i0 = i0;
        t[o].i1 = i1;
        t[o].l1 = l;
        t[o].l0 = (real)1 - l;
    }
}

void resize_forward_ref(real *y, const real *x, int nc, int h, int w, int oh, int ow) {
    Tap *th = xmalloc((size_t)oh * sizeof *th), *tw = xmalloc((size_t)ow * sizeof *tw);
    taps(th, h, oh);
    taps(tw, w, ow);
    for (int p = 0; p < nc; p++) {
        const real *xp = x + (size_t)p * h * w;
        real *yp = y + (size_t)p * oh * ow;
        for (int i = 0; i < oh; i++) {
            const real *r0 = xp + (size_t)th[i].i0 * w, *r1 = xp + (size_t)th[i].i1 * w;
            for (int j = 0; j < ow; j++) {
                real top = tw[j].l0 * r0[tw[j].i0] + tw[j].l1 * r0[tw[j].i1];
                real bot = tw[j].l0 * r1[tw[j].i0] + tw[j].l1 * r1[tw[j].i1];
                yp[(size_t)i * ow + j] = th[i].l0 * top + th[i].l1 * bot;
            }
        }
    }
    free(th);
    free(tw);
}

void resize_backward_ref(real *dx, const real *dy, int nc, int h, int w, int oh, int ow) {
    if (!dx) return;
    Tap *th = xmalloc((size_t)oh * sizeof *th), *tw = xmalloc((size_t)ow * sizeof *tw);
    taps(th, h, oh);
    taps(tw, w, ow);
    for (int p = 0; p < nc; p++) {
        real *dp = dx + (size_t)p * h * w;
        const real *gp = dy + (size_t)p * oh * ow;
        for (int i = 0; i < oh; i++) {
            real *r0 = dp + (size_t)th[i].i0 * w, *r1 = dp + (size_t)th[i].i1 * w;
            for (int j = 0; j < ow; j++) {
                real g = gp[(size_t)i * ow + j];
                r0[tw[j].i0] += th[i].l0 * tw[j].l0 * g;
                r0[tw[j].i1] += th[i].l0 * tw[j].l1 * g;
                r1[tw[j].i0] += th[i].l1 * tw[j].l0 * g;
                r1[tw[j].i1] += th[i].l1 * tw[j].l1 * g;
            }
        }
    }
    free(th);
    free(tw);
}
