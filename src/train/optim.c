/* optim.c: SGD, Adam and AdamW on flat float buffers, following PyTorch 1.13's update rules
 * (torch.optim.SGD / Adam / AdamW, the single-tensor path) operation for operation:
 *
 *   SGD    d = g + wd*p;  buf = d on the first step, else buf = momentum*buf + d (dampening 0);
 *          d = nesterov ? d + momentum*buf : buf;  p = p - lr*d.       (momentum 0: p = p - lr*d)
 *   Adam   d = g + wd*p;  m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d*d;
 *          p = p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps),  bc_i = 1 - b_i^t, t counted from 1.
 *   AdamW  p = p*(1 - lr*wd) first, then Adam with d = g (decoupled weight decay).
 *
 * Scalars (step size, bias corrections) are computed in double like Python does, then rounded to
 * float once, as torch does when it hands a Python number to a float kernel. Vector arithmetic is
 * float. Every update is elementwise, so the OpenMP split over elements gives bit-identical
 * results for any thread count; small buffers stay on the calling thread.
 */
#include "train.h"

#include <math.h>

/* Buffers shorter than this are updated on one thread (the fork costs more than it saves). */
#define OPTIM_PAR_MIN 32768

const char *optim_name(OptKind k) {
    static const char *names[] = {"sgd", "adam", "adamw"};
    _Static_assert(sizeof names / sizeof names[0] == OPT_COUNT, "one name per OptKind");
    return (unsigned)k < OPT_COUNT ? names[k] : "?";
}

OptConfig optim_defaults(OptKind kind) {
    OptConfig c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.momentum = 0.9f;
    c.nesterov = 0;
    c.wd = 0.0f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    return c;
}

void optim_init(Optim *o, const OptConfig *cfg, size_t n) {
    NASC_ASSERT(o && cfg && (unsigned)cfg->kind < OPT_COUNT);
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->t = 0;
    int need_m = cfg->kind != OPT_SGD || cfg->momentum != 0.0f;
    int need_v = cfg->kind != OPT_SGD;
    if (n > 0 && need_m) o->m = xalloc_aligned(n * sizeof(float));
    if (n > 0 && need_v) o->v = xalloc_aligned(n * sizeof(float));
}

void optim_free(Optim *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
    o->n = 0;
}

/* p (n) updated in place; m (n) is the momentum buffer or NULL when momentum == 0. */
static void sgd_step(float *restrict p, float *restrict m, const float *restrict g, long n,
                     float lr, float wd, float mom, int nesterov, int first) {
    int par = n >= OPTIM_PAR_MIN;
    int nt = threads_get();
    if (!m) {
#pragma omp parallel for simd schedule(static) if (par) num_threads(nt)
        for (long i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            p[i] = p[i] + (-lr) * d;
        }
    } else if (first) {
#pragma omp parallel for simd schedule(static) if (par) num_threads(nt)
        for (long i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            m[i] = d;
            float u = nesterov ? d + mom * d : d;
            p[i] = p[i] + (-lr) * u;
        }
    } else {
#pragma omp parallel for simd schedule(static) if (par) num_threads(nt)
        for (long i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            float b = m[i] * mom + d;
            m[i] = b;
            float u = nesterov ? d + mom * b : b;
            p[i] = p[i] + (-lr) * u;
        }
    }
}

/* Adam / AdamW body. l2 is Adam's coupled decay (added to the gradient), decay the AdamW factor
 * applied to p first (1 for Adam). */
static void adam_step(float *restrict p, float *restrict m, float *restrict v,
                      const float *restrict g, long n, float l2, float decay, float b1, float one_b1,
                      float b2, float one_b2, float bc2_sqrt, float eps, float step_size) {
    int par = n >= OPTIM_PAR_MIN;
#pragma omp parallel for simd schedule(static) if (par) num_threads(threads_get())
    for (long i = 0; i < n; i++) {
        float pi = p[i] * decay;
        float d = g[i] + l2 * pi;
        float mi = m[i] * b1 + one_b1 * d;
        float vi = v[i] * b2 + one_b2 * d * d;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi + (-step_size) * (mi / denom);
    }
}

void optim_step(Optim *o, float *params, const float *grads, float lr) {
    NASC_ASSERT(o && (o->n == 0 || (params && grads)));
    const OptConfig *c = &o->cfg;
    long n = (long)o->n;
    int first = o->t == 0;
    o->t++;
    if (c->kind == OPT_SGD) {
        sgd_step(params, o->m, grads, n, lr, c->wd, c->momentum, c->nesterov, first);
        return;
    }
    NASC_ASSERT(c->kind == OPT_ADAM || c->kind == OPT_ADAMW);
    double t = (double)o->t;
    double bc1 = 1.0 - pow((double)c->beta1, t);
    double bc2 = 1.0 - pow((double)c->beta2, t);
    float step_size = (float)((double)lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float one_b1 = (float)(1.0 - (double)c->beta1);
    float one_b2 = (float)(1.0 - (double)c->beta2);
    float l2 = c->kind == OPT_ADAM ? c->wd : 0.0f;
    float decay = c->kind == OPT_ADAMW ? (float)(1.0 - (double)lr * (double)c->wd) : 1.0f;
    adam_step(params, o->m, o->v, grads, n, l2, decay, c->beta1, one_b1, c->beta2, one_b2,
              bc2_sqrt, c->eps, step_size);
}
