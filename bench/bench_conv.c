/* bench_conv.c: speed of the conv kernels on the layers of the three reference networks
 * (small, resnet8, mbv2 on 1x28x28 inputs; see /work/shared/bench/torch_ref.py).
 *
 * For every distinct layer: GFLOP/s of the fast forward and backward (dx + dw; no dx for a
 * first layer) at batch B (default 128) with T threads (default 2), of the reference kernels
 * (at batch 2: they are slow), of one gemm of the layer's per-image forward shape (1 thread),
 * and the batch-1 forward time. Then per network: the conv time of one training step
 * (forward + backward of every conv) as images/s, and the batch-1 conv forward latency.
 * Times are the best of several runs (the machine is shared).
 *
 * Usage: bench_conv [batch] [threads] [small|resnet8|mbv2|all]
 */
#include "../src/ops/ops.h"

#include <math.h>

typedef struct {
    const char *net;
    int cin, hw, cout, k, s, g, count; /* count = how many times the net has this layer */
    int first;                         /* no dx needed */
} Layer;

#define L(net, cin, hw, cout, k, s, g, count, first) {net, cin, hw, cout, k, s, g, count, first}
static const Layer layers[] = {
    L("small", 1, 28, 16, 3, 1, 1, 1, 1),
    L("small", 16, 28, 32, 3, 2, 1, 1, 0),
    L("small", 32, 14, 64, 3, 2, 1, 1, 0),
    L("resnet8", 1, 28, 16, 3, 1, 1, 1, 1),
    L("resnet8", 16, 28, 16, 3, 1, 1, 2, 0),
    L("resnet8", 16, 28, 32, 3, 2, 1, 1, 0),
    L("resnet8", 32, 14, 32, 3, 1, 1, 1, 0),
    L("resnet8", 16, 28, 32, 1, 2, 1, 1, 0),
    L("resnet8", 32, 14, 64, 3, 2, 1, 1, 0),
    L("resnet8", 64, 7, 64, 3, 1, 1, 1, 0),
    L("resnet8", 32, 14, 64, 1, 2, 1, 1, 0),
    L("mbv2", 1, 28, 16, 3, 1, 1, 1, 1),
    L("mbv2", 16, 28, 16, 3, 1, 16, 1, 0),
    L("mbv2", 16, 28, 16, 1, 1, 1, 1, 0),
    L("mbv2", 16, 28, 96, 1, 1, 1, 1, 0),
    L("mbv2", 96, 28, 96, 3, 2, 96, 1, 0),
    L("mbv2", 96, 14, 24, 1, 1, 1, 1, 0),
    L("mbv2", 24, 14, 144, 1, 1, 1, 2, 0),
    L("mbv2", 144, 14, 144, 3, 1, 144, 1, 0),
    L("mbv2", 144, 14, 24, 1, 1, 1, 1, 0),
    L("mbv2", 144, 14, 144, 3, 2, 144, 1, 0),
    L("mbv2", 144, 7, 32, 1, 1, 1, 1, 0),
    L("mbv2", 32, 7, 192, 1, 1, 1, 2, 0),
    L("mbv2", 192, 7, 192, 3, 1, 192, 2, 0),
    L("mbv2", 192, 7, 32, 1, 1, 1, 1, 0),
    L("mbv2", 192, 7, 64, 1, 1, 1, 1, 0),
    L("mbv2", 64, 7, 384, 1, 1, 1, 2, 0),
    L("mbv2", 384, 7, 384, 3, 1, 384, 2, 0),
    L("mbv2", 384, 7, 64, 1, 1, 1, 1, 0),
    L("mbv2", 384, 7, 96, 1, 1, 1, 1, 0),
    L("mbv2", 96, 7, 256, 1, 1, 1, 1, 0),
};
#define NLAYERS ((int)(sizeof layers / sizeof layers[0]))

static ConvDims dims_of(const Layer *l, int n) {
    ConvDims d = {.n = n, .cin = l->cin, .h = l->hw, .w = l->hw, .cout = l->cout, .k = l->k, .stride = l->s,
                  .pad = l->k / 2, .dil = 1, .groups = l->g};
    Err e;
    if (conv_dims_init(&d, &e) != NASC_OK) nasc_die("bench layer: %s", e.msg);
    return d;
}

typedef struct {
    float *x, *w, *y, *dy, *dx, *dw, *db;
} Bufs;

static Bufs bufs_new(const ConvDims *d) {
    size_t xs = (size_t)d->n * d->cin * d->h * d->w, ys = (size_t)d->n * d->cout * d->oh * d->ow;
    size_t ws = (size_t)d->cout * (d->cin / d->groups) * d->k * d->k;
    Bufs b = {xalloc_aligned(xs * 4), xalloc_aligned(ws * 4), xalloc_aligned(ys * 4), xalloc_aligned(ys * 4),
              xalloc_aligned(xs * 4), xalloc_aligned(ws * 4), xalloc_aligned((size_t)d->cout * 4)};
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < xs; i++) b.x[i] = rng_uniformf(&r, -1, 1);
    for (size_t i = 0; i < ws; i++) b.w[i] = rng_uniformf(&r, -1, 1);
    for (size_t i = 0; i < ys; i++) b.dy[i] = rng_uniformf(&r, -1, 1);
    return b;
}

static void bufs_free(Bufs *b) {
    free(b->x), free(b->w), free(b->y), free(b->dy), free(b->dx), free(b->dw), free(b->db);
}

enum { RUN_FWD, RUN_BWD, RUN_FWD_REF, RUN_BWD_REF };

static void run(int what, Bufs *b, const ConvDims *d, int first) {
    switch (what) {
    case RUN_FWD: conv2d_forward(b->y, b->x, b->w, NULL, d); break;
    case RUN_BWD: conv2d_backward(first ? NULL : b->dx, b->dw, NULL, b->dy, b->x, b->w, d); break;
    case RUN_FWD_REF: conv2d_forward_ref(b->y, b->x, b->w, NULL, d); break;
    case RUN_BWD_REF: conv2d_backward_ref(first ? NULL : b->dx, b->dw, NULL, b->dy, b->x, b->w, d); break;
    }
}

/* Best time of one call over about `budget` seconds (at least 3 runs). */
static double best_time(int what, Bufs *b, const ConvDims *d, int first, double budget) {
    run(what, b, d, first); /* warm up: scratch buffers, caches */
    double best = 1e30, start = now_seconds();
    for (int i = 0; i < 3 || now_seconds() - start < budget; i++) {
        double t0 = now_seconds();
        run(what, b, d, first);
        double t = now_seconds() - t0;
        if (t < best) best = t;
        if (i > 1000) break;
    }
    return best;
}

static double gemm_time(const ConvDims *d, double budget) {
    int M = d->cout / d->groups, N = d->oh * d->ow, K = d->cin / d->groups * d->k * d->k;
    float *A = xalloc_aligned((size_t)M * K * 4), *B = xalloc_aligned((size_t)K * N * 4),
          *C = xalloc_aligned((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = 0.5f;
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = 0.25f;
    double best = 1e30, start = now_seconds();
    for (int i = 0; i < 5 || now_seconds() - start < budget; i++) {
        double t0 = now_seconds();
        for (int r = 0; r < 8; r++) gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double t = (now_seconds() - t0) / 8;
        if (t < best) best = t;
    }
    free(A), free(B), free(C);
    return best;
}

int main(int argc, char **argv) {
    int batch = argc > 1 ? atoi(argv[1]) : 128, threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *which = argc > 3 ? argv[3] : "all";
    if (batch < 1 || threads < 1) nasc_die("usage: bench_conv [batch] [threads] [small|resnet8|mbv2|all]");
    threads_set(threads);
    printf("bench_conv: batch %d, %d threads, gemm path %s; GFLOP/s (2 flops per MAC; backward = dx + dw)\n", batch,
           threads, gemm_path());
    printf("%-8s %-26s %8s %8s | %8s %8s | %8s | %9s\n", "net", "layer", "fwd", "bwd", "ref fwd", "ref bwd",
           "gemm1t", "b1 fwd us");
    static const char *nets[] = {"small", "resnet8", "mbv2"};
    for (int ni = 0; ni < 3; ni++) {
        if (strcmp(which, "all") != 0 && strcmp(which, nets[ni]) != 0) continue;
        double t_train = 0, t_b1 = 0, t_fwd = 0, t_ref = 0, macs = 0;
        for (int li = 0; li < NLAYERS; li++) {
            const Layer *l = &layers[li];
            if (strcmp(l->net, nets[ni]) != 0) continue;
            ConvDims d = dims_of(l, batch), d1 = dims_of(l, 1), dr = dims_of(l, 2);
            double mac1 = (double)d.cout * d.oh * d.ow * (d.cin / d.groups) * d.k * d.k;
            Bufs b = bufs_new(&d);
            double tf = best_time(RUN_FWD, &b, &d, l->first, 0.25);
            double tb = best_time(RUN_BWD, &b, &d, l->first, 0.25);
            double tf1 = best_time(RUN_FWD, &b, &d1, l->first, 0.1);
            double tfr = best_time(RUN_FWD_REF, &b, &dr, l->first, 0.05);
            double tbr = best_time(RUN_BWD_REF, &b, &dr, l->first, 0.05);
            double tg = l->g == 1 ? gemm_time(&d1, 0.05) : 0;
            bufs_free(&b);
            double bw_mult = l->first ? 1 : 2;
            char name[64];
            snprintf(name, sizeof name, "%dx%d %d->%d k%d s%d%s x%d", l->hw, l->hw, l->cin, l->cout, l->k, l->s,
                     l->g > 1 ? " dw" : "", l->count);
            printf("%-8s %-26s %8.1f %8.1f | %8.2f %8.2f | ", l->net, name, 2 * mac1 * batch / tf / 1e9,
                   2 * bw_mult * mac1 * batch / tb / 1e9, 2 * mac1 * 2 / tfr / 1e9, 2 * bw_mult * mac1 * 2 / tbr / 1e9);
            if (tg > 0)
                printf("%8.1f | ", 2 * mac1 / tg / 1e9);
            else
                printf("%8s | ", "-");
            printf("%9.1f\n", tf1 * 1e6);
            t_train += l->count * (tf + tb);
            t_ref += l->count * (tfr + tbr) * batch / 2; /* the reference ran at batch 2 */
            t_fwd += l->count * tf;
            t_b1 += l->count * tf1;
            macs += l->count * mac1;
        }
        printf("%-8s convs only: train step %.2f ms = %.0f img/s (%.1f GFLOP/s, %.0fx the reference kernels), "
               "forward %.0f img/s, batch-1 forward %.3f ms (%.2f MMAC/img)\n",
               nets[ni], t_train * 1e3, batch / t_train, 6 * macs * batch / t_train / 1e9, t_ref / t_train,
               batch / t_fwd, t_b1 * 1e3, macs / 1e6);
    }
    return 0;
}
