/* quant.c: the quantization formulas of quant.h (activation and weight parameters, safe
 * multipliers), calibration (min/max, percentile, MSE over histograms), the post-training
 * path, int8 accuracy and int8 latency.
 *
 * Calibration runs the float net in eval mode over the sample in batches, twice when it needs
 * histograms: once for each tensor's extremes, once to fill a histogram over
 * [min(lo, 0), max(hi, 0)] (so every tensor's histogram contains 0.0, which the activation
 * format represents exactly). Only the tensors the lowering quantizes are observed
 * (quant_tensor_mask); the others keep range [0, 0].
 */
#include <math.h>

#include "quant.h"

/* ------------------------------------------------------------------ formats */
void quant_act_params(float lo, float hi, float *scale, int32_t *zp) {
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    float s = (hi - lo) / 255.0f;
    if (!(s >= QUANT_MIN_SCALE)) s = QUANT_MIN_SCALE;
    float z = -128.0f - nearbyintf(lo / s);
    *scale = s;
    *zp = z < -128.0f ? -128 : z > 127.0f ? 127 : (int32_t)z;
}

void quant_weight_scales(float *wscale, const float *w, int cout, size_t per) {
    for (int c = 0; c < cout; c++) {
        float m = 0;
        for (size_t k = 0; k < per; k++) m = fmaxf(m, fabsf(w[(size_t)c * per + k]));
        wscale[c] = m > 0 ? m / 127.0f : 1.0f;
    }
}

void quant_weights(int8_t *q, const float *w, const float *wscale, int cout, size_t per) {
    for (int c = 0; c < cout; c++) {
        float inv = 1.0f / wscale[c];
        for (size_t k = 0; k < per; k++) {
            float r = nearbyintf(w[(size_t)c * per + k] * inv);
            q[(size_t)c * per + k] = (int8_t)(r < -127.0f ? -127 : r > 127.0f ? 127 : (int)r);
        }
    }
}

void quant_multiplier(double r, int32_t *mult, int8_t *shift) {
    NASC_ASSERT(r >= 0);
    if (r > 16777216.0) r = 16777216.0;
    int s;
    q_multiplier(r, mult, &s);
    *shift = (int8_t)s;
}

/* ------------------------------------------------------------------ ranges */
void qranges_init(QRanges *r, int nnodes) {
    r->n = nnodes;
    r->lo = xcalloc((size_t)nnodes + 1, sizeof *r->lo);
    r->hi = xcalloc((size_t)nnodes + 1, sizeof *r->hi);
}

void qranges_free(QRanges *r) {
    free(r->lo);
    free(r->hi);
    memset(r, 0, sizeof *r);
}

static const char *qcal_names[QCAL_COUNT] = {"minmax", "percentile", "mse"};

const char *qcalib_name(QCalibMethod m) { return m < QCAL_COUNT ? qcal_names[m] : "?"; }

int qcalib_parse(const char *name, QCalibMethod *m, Err *e) {
    for (int k = 0; k < QCAL_COUNT; k++)
        if (!strcmp(name, qcal_names[k])) {
            *m = (QCalibMethod)k;
            return NASC_OK;
        }
    err_set(e, "unknown calibration method '%s' (expected minmax, percentile or mse)", name);
    return NASC_ERR;
}

/* ------------------------------------------------------------------ calibration */
/* Percentile: cut `tail` of the mass off each end of histogram h (bins over [a, a + bins w)). */
static void range_percentile(const double *h, int bins, double a, double w, double tail, float *lo, float *hi) {
    double cum = 0;
    int i = 0;
    for (; i < bins; i++) {
        if (cum + h[i] > tail) break;
        cum += h[i];
    }
    *lo = (float)(a + w * (i + (i < bins && h[i] > 0 ? (tail - cum) / h[i] : 0)));
    cum = 0;
    int j = bins - 1;
    for (; j >= 0; j--) {
        if (cum + h[j] > tail) break;
        cum += h[j];
    }
    *hi = (float)(a + w * (j + 1 - (j >= 0 && h[j] > 0 ? (tail - cum) / h[j] : 0)));
    if (*lo > *hi) *lo = *hi = (float)(a + w * (i + j + 1) / 2.0);
}

/* MSE: the clip range [lo, hi] (bin edges, lo <= 0 <= hi) minimizing the expected squared
 * error of quantizing the histogram's values: (x - clip(x))^2 outside, step^2 / 12 inside,
 * step = (hi - lo) / 255; bin values at their centres. Prefix sums make each candidate O(1);
 * up to ~512 candidate edges per side. */
static void range_mse(const double *h, int bins, double a, double w, float *lo, float *hi) {
    double *p0 = xcalloc((size_t)bins + 1, sizeof *p0), *p1 = xcalloc((size_t)bins + 1, sizeof *p1),
           *p2 = xcalloc((size_t)bins + 1, sizeof *p2);
    for (int i = 0; i < bins; i++) {
        double x = a + w * (i + 0.5);
        p0[i + 1] = p0[i] + h[i];
        p1[i + 1] = p1[i] + h[i] * x;
        p2[i + 1] = p2[i] + h[i] * x * x;
    }
    int z = (int)lround(-a / w); /* the edge at 0.0 */
    if (z < 0) z = 0;
    if (z > bins) z = bins;
    int step = bins / 512 > 1 ? bins / 512 : 1;
    double best = INFINITY;
    int bi = 0, bj = bins;
    for (int i = z;; i -= step) {
        if (i < 0) i = 0;
        double lo_e = a + w * i;
        double below = p2[i] - 2 * lo_e * p1[i] + lo_e * lo_e * p0[i];
        for (int j = z;; j += step) {
            if (j > bins) j = bins;
            if (j > i) {
                double hi_e = a + w * j;
                double above = (p2[bins] - p2[j]) - 2 * hi_e * (p1[bins] - p1[j]) + hi_e * hi_e * (p0[bins] - p0[j]);
                double st = (hi_e - lo_e) / 255.0;
                double cost = below + above + (p0[j] - p0[i]) * st * st / 12.0;
                if (cost < best) best = cost, bi = i, bj = j;
            }
            if (j == bins) break;
        }
        if (i == 0) break;
    }
    *lo = (float)(a + w * bi);
    *hi = (float)(a + w * bj);
    free(p0);
    free(p1);
    free(p2);
}

int quant_calibrate(Net *net, const float *x, int n, const QCalibConfig *cfg, QRanges *r, Err *e) {
    QCalibConfig c = {QCAL_MINMAX, 99.99, 2048, 32};
    if (cfg) {
        c.method = cfg->method;
        if (cfg->percentile > 0) c.percentile = cfg->percentile;
        if (cfg->bins > 0) c.bins = cfg->bins;
        if (cfg->batch > 0) c.batch = cfg->batch;
    }
    int nn = net->spec.n;
    qranges_init(r, nn);
    if (n < 1) {
        err_set(e, "calibration needs at least one image");
        return NASC_ERR;
    }
    if (c.percentile <= 50 || c.percentile > 100) {
        err_set(e, "calibration percentile must be in (50, 100], got %g", c.percentile);
        return NASC_ERR;
    }
    uint8_t *mask = xmalloc((size_t)nn + 1);
    quant_tensor_mask(net, mask);
    size_t in = (size_t)net->in_c * net->in_h * net->in_w;
    double *lo = xmalloc(((size_t)nn + 1) * sizeof *lo), *hi = xmalloc(((size_t)nn + 1) * sizeof *hi);
    for (int t = 0; t <= nn; t++) lo[t] = INFINITY, hi[t] = -INFINITY;
    int passes = c.method == QCAL_MINMAX ? 1 : 2;
    double *hist = NULL;
    int rc = NASC_OK;
    for (int pass = 0; pass < passes && rc == NASC_OK; pass++) {
        if (pass == 1) hist = xcalloc(((size_t)nn + 1) * c.bins, sizeof *hist);
        for (int b0 = 0; b0 < n && rc == NASC_OK; b0 += c.batch) {
            int bn = NASC_MIN(c.batch, n - b0);
            const float *xb = x + (size_t)b0 * in;
            net_forward(net, xb, bn, 0);
            for (int t = 0; t <= nn; t++) {
                if (!mask[t]) continue;
                const float *v = t == 0 ? xb : net->out[t - 1];
                size_t cnt = (t == 0 ? in : (size_t)net->spec.nodes[t - 1].c * net->spec.nodes[t - 1].h *
                                                 net->spec.nodes[t - 1].w) * (size_t)bn;
                if (pass == 0) {
                    double l = lo[t], h = hi[t];
                    for (size_t k = 0; k < cnt; k++) {
                        if (!isfinite(v[k])) {
                            if (t)
                                err_set(e, "calibration: statement %d (%s) produced %s; the float model is broken", t,
                                        op_name(net->spec.nodes[t - 1].op), isnan(v[k]) ? "NaN" : "infinity");
                            else
                                err_set(e, "calibration: the input holds %s", isnan(v[k]) ? "NaN" : "infinity");
                            rc = NASC_ERR;
                            break;
                        }
                        if (v[k] < l) l = v[k];
                        if (v[k] > h) h = v[k];
                    }
                    lo[t] = l, hi[t] = h;
                } else {
                    double a = fmin(lo[t], 0), wd = fmax(hi[t], 0) - a;
                    if (!(wd > 0)) continue;
                    double inv = c.bins / wd;
                    double *hh = hist + (size_t)t * c.bins;
                    for (size_t k = 0; k < cnt; k++) {
                        int bi = (int)((v[k] - a) * inv);
                        hh[bi < 0 ? 0 : bi >= c.bins ? c.bins - 1 : bi] += 1;
                    }
                }
                if (rc != NASC_OK) break;
            }
        }
    }
    if (rc == NASC_OK)
        for (int t = 0; t <= nn; t++) {
            if (!mask[t]) continue;
            float l = (float)lo[t], h = (float)hi[t];
            double a = fmin(lo[t], 0), wd = fmax(hi[t], 0) - a;
            if (c.method != QCAL_MINMAX && wd > 0) {
                const double *hh = hist + (size_t)t * c.bins;
                double total = 0;
                for (int k = 0; k < c.bins; k++) total += hh[k];
                if (c.method == QCAL_PERCENTILE)
                    range_percentile(hh, c.bins, a, wd / c.bins, total * (1 - c.percentile / 100), &l, &h);
                else
                    range_mse(hh, c.bins, a, wd / c.bins, &l, &h);
            }
            r->lo[t] = l;
            r->hi[t] = h;
        }
    free(hist);
    free(lo);
    free(hi);
    free(mask);
    return rc;
}

float *quant_calib_images(const Dataset *d, int *n, const float *mean, const float *std, uint64_t seed) {
    int m = NASC_MIN(*n, d->n);
    if (m < 0) m = 0;
    int *idx = xmalloc((size_t)(d->n ? d->n : 1) * sizeof *idx);
    for (int i = 0; i < d->n; i++) idx[i] = i;
    Rng r;
    rng_seed(&r, seed);
    rng_shuffle_int(&r, idx, d->n);
    size_t in = (size_t)d->c * d->h * d->w;
    float *x = xmalloc((size_t)(m ? m : 1) * in * sizeof *x);
    int *y = xmalloc((size_t)(m ? m : 1) * sizeof *y);
    Augment none = {0, 0};
    if (m) dataset_batch(d, idx, m, mean, std, &none, NULL, x, y);
    free(idx);
    free(y);
    *n = m;
    return x;
}

/* ------------------------------------------------------------------ the whole path */
int quant_ptq(QNet *q, Net *net, const float *x, int n, const QCalibConfig *cfg, Err *e) {
    QRanges r;
    if (quant_calibrate(net, x, n, cfg, &r, e) != NASC_OK) {
        qranges_free(&r);
        return NASC_ERR;
    }
    int rc = qnet_build(q, net, &r, e);
    qranges_free(&r);
    return rc;
}

double quant_evaluate(QNet *q, const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                      int batch) {
    if (n <= 0) return 0;
    if (batch < 1) batch = 256;
    size_t in = (size_t)d->c * d->h * d->w;
    NASC_ASSERT(d->c == q->in_c && d->h == q->in_h && d->w == q->in_w);
    float *x = xmalloc((size_t)batch * in * sizeof *x);
    float *logits = xmalloc((size_t)batch * q->classes * sizeof *logits);
    int *y = xmalloc((size_t)batch * sizeof *y), *ids = xmalloc((size_t)batch * sizeof *ids);
    Augment none = {0, 0};
    long correct = 0;
    for (int b0 = 0; b0 < n; b0 += batch) {
        int bn = NASC_MIN(batch, n - b0);
        for (int j = 0; j < bn; j++) ids[j] = idx ? idx[b0 + j] : b0 + j;
        dataset_batch(d, ids, bn, mean, std, &none, NULL, x, y);
        qnet_forward(q, x, bn, logits);
        for (int j = 0; j < bn; j++) {
            const float *l = logits + (size_t)j * q->classes;
            int best = 0;
            for (int k = 1; k < q->classes; k++)
                if (l[k] > l[best]) best = k;
            correct += best == y[j];
        }
    }
    free(x);
    free(logits);
    free(y);
    free(ids);
    return (double)correct / n;
}

/* ------------------------------------------------------------------ latency */
typedef struct {
    QNet *q;
    float *logits;
} QRun;

static void run_int8(void *ctx, const float *x) {
    QRun *r = ctx;
    qnet_forward(r->q, x, 1, r->logits);
}

void qnet_latency(QNet *q, const LatencyConfig *cfg, LatencyStats *out) {
    QRun r = {q, xalloc_aligned((size_t)q->classes * sizeof(float))};
    latency_time(run_int8, &r, (size_t)q->in_c * q->in_h * q->in_w, cfg, out);
    free(r.logits);
}
