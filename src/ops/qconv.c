/* qconv.c: the int8 convolution's fast paths (qops.h). For now only the generic path: the
 * packed layer keeps a copy of the reference inputs and qconv2d runs the reference loops. */
#include "qops.h"

struct QConvPacked {
    QConvArgs a;
    int8_t *w;      /* (cout, cin/groups, k, k) */
    int32_t *bias;  /* (cout) */
    int32_t *mult;  /* (cout) */
    int8_t *shift;  /* (cout) */
};

QConvPacked *qconv_pack(const int8_t *w, const int32_t *bias, const int32_t *mult, const int8_t *shift,
                        const QConvArgs *a) {
    QConvPacked *p = xcalloc(1, sizeof *p);
    const ConvDims *d = &a->d;
    size_t nw = (size_t)d->cout * (d->cin / d->groups) * d->k * d->k;
    p->a = *a;
    p->w = xmalloc(nw);
    memcpy(p->w, w, nw);
    p->bias = xcalloc((size_t)d->cout, sizeof *p->bias);
    if (bias) memcpy(p->bias, bias, (size_t)d->cout * sizeof *p->bias);
    p->mult = xmalloc((size_t)d->cout * sizeof *p->mult);
    memcpy(p->mult, mult, (size_t)d->cout * sizeof *p->mult);
    p->shift = xmalloc((size_t)d->cout);
    memcpy(p->shift, shift, (size_t)d->cout);
    return p;
}

void qconv2d(int8_t *y, const int8_t *x, const QConvPacked *p, int n) {
    QConvArgs a = p->a;
    a.d.n = n;
    qconv2d_ref(y, x, p->w, p->bias, p->mult, p->shift, &a);
}

void qconv_free(QConvPacked *p) {
    if (!p) return;
    free(p->w);
    free(p->bias);
    free(p->mult);
    free(p->shift);
    free(p);
}

const char *qconv_path(void) { return "generic"; }
