/* latency.c: latency measured on this machine: net_forward at batch 1 in eval mode (fp32) on a
 * fixed random input, `warmup` untimed runs, then up to `repeats` timed runs (stopping early
 * once max_seconds have passed and at least 5 runs are in). Reports the median, the 10th and
 * 90th percentiles (linear interpolation between order statistics, numpy's default), the
 * minimum and the mean, in milliseconds. The thread count is threads_get().
 */
#include "cost.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of sorted v[0..n). */
static double quantile(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return v[n - 1];
    double f = pos - lo;
    return v[lo] * (1 - f) + v[lo + 1] * f;
}

void latency_time(void (*run)(void *ctx, const float *x), void *ctx, size_t in, const LatencyConfig *cfg,
                  LatencyStats *out) {
    int repeats = cfg && cfg->repeats > 0 ? cfg->repeats : 50;
    int warmup = cfg && cfg->warmup > 0 ? cfg->warmup : NASC_MAX(3, repeats / 10);
    double max_s = cfg && cfg->max_seconds > 0 ? cfg->max_seconds : 5.0;
    uint64_t seed = cfg ? cfg->seed : 0;
    float *x = xalloc_aligned((in ? in : 1) * sizeof(float));
    Rng r;
    rng_seed(&r, seed + 0x1a7e);
    for (size_t k = 0; k < in; k++) x[k] = (float)rng_normal(&r);

    for (int k = 0; k < warmup; k++) run(ctx, x);
    double *t = xmalloc((size_t)repeats * sizeof *t);
    int runs = 0;
    double start = now_seconds();
    while (runs < repeats) {
        double t0 = now_seconds();
        run(ctx, x);
        double t1 = now_seconds();
        t[runs++] = (t1 - t0) * 1e3;
        if (runs >= 5 && t1 - start > max_s) break;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    memset(out, 0, sizeof *out);
    out->median_ms = quantile(t, runs, 0.5);
    out->p10_ms = quantile(t, runs, 0.1);
    out->p90_ms = quantile(t, runs, 0.9);
    out->min_ms = t[0];
    double sum = 0;
    for (int k = 0; k < runs; k++) sum += t[k];
    out->mean_ms = sum / runs;
    out->runs = runs;
    out->warmup = warmup;
    out->threads = threads_get();
    free(t);
    free(x);
}

static void run_fp32(void *ctx, const float *x) {
    Net *net = ctx;
    static volatile float sink;
    sink += net_forward(net, x, 1, 0)[0];
}

void latency_measure(Net *net, const LatencyConfig *cfg, LatencyStats *out) {
    latency_time(run_fp32, net, (size_t)net->in_c * net->in_h * net->in_w, cfg, out);
}
