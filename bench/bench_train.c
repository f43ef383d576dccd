/* bench_train.c: nasc's side of the engine benchmark. For each reference network (the zoo's
 * small, resnet8, mbv2 = ../shared/bench/torch_ref.py's networks) it measures, exactly as
 * torch_ref.py does: training images/s at batch B (forward, cross-entropy, backward, SGD with
 * momentum 0.9 and weight decay 5e-4; median step time after warm-up), fp32 inference images/s
 * at batch B, and batch-1 latency (median). Prints one "RESULT {json}" line per network.
 * Real Fashion-MNIST images when available, random ones otherwise (speed does not depend on
 * the values). Usage: bench_train [--threads T] [--batch B] [--iters N] [--train-only] [nets...]
 * (--train-only: just the training step, median and minimum, for A/B runs). It first prints
 * "PEAK {json}": the fp32 multiply-add peak of this machine with T threads. */
#include <math.h>

#include "../src/data/data.h"
#include "../src/ops/ops.h"
#include "../src/train/train.h"

/* The machine's fp32 peak: independent chains of vector multiply-adds per thread (16 of 16
 * lanes on AVX-512's 32 registers, 12 of 8 on AVX2's 16: with 16 chains and the two constants
 * AVX2 ran out of registers and measured 133 GFLOP/s on the Zen 4 where it reaches the AVX-512
 * figure), the most any kernel could reach (AVX-512 or AVX2 + FMA, as gemm runs; 0 otherwise).
 * FMA_CHAINS makes one: CH chains a[i] = a[i] b + c of n steps on vectors V (set1, fmadd,
 * storeu: their intrinsics) in instruction set T, returning the sum of the lanes so nothing is
 * dropped. */
#if defined(__x86_64__)
#include <immintrin.h>
#define FMA_CHAINS(name, CH, T, V, set1, fmadd, storeu)                                           \
    __attribute__((target(T))) static float name(long n, float seed) {                           \
        V a[CH];                                                                                  \
        const V b = set1(0.999f), c = set1(1e-4f);                                                \
        for (int i = 0; i < CH; i++) a[i] = set1(seed * (float)i);                                \
        for (long k = 0; k < n; k++)                                                              \
            _Pragma("GCC unroll 16") for (int i = 0; i < CH; i++) a[i] = fmadd(a[i], b, c);       \
        float r[sizeof(V) / sizeof(float)], s = 0;                                                \
        for (int i = 0; i < CH; i++) {                                                            \
            storeu(r, a[i]);                                                                      \
            for (size_t j = 0; j < sizeof r / sizeof *r; j++) s += r[j];                          \
        }                                                                                         \
        return s;                                                                                 \
    }
#define CHAINS_AVX512 16
#define CHAINS_AVX2 12
FMA_CHAINS(fma_chains_avx512, CHAINS_AVX512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps)
FMA_CHAINS(fma_chains_avx2, CHAINS_AVX2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps)
#endif

static double fp32_peak_gflops(void) {
#if defined(__x86_64__)
    const int lanes = !strcmp(gemm_path(), "avx512") ? 16 : !strcmp(gemm_path(), "avx2") ? 8 : 0;
    if (!lanes) return 0;
    const int chains = lanes == 16 ? CHAINS_AVX512 : CHAINS_AVX2;
    const long n = 4000000; /* about 0.1 s */
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < 3; r++) {
        float s = 0;
        double t0 = now_seconds();
#pragma omp parallel num_threads(threads_get()) reduction(+ : s)
        s += lanes == 16 ? fma_chains_avx512(n, 1e-3f) : fma_chains_avx2(n, 1e-3f);
        double t = now_seconds() - t0, g = 2.0 * chains * lanes * n * threads_get() / t / 1e9;
        sink += s;
        best = g > best ? g : best;
    }
    return best;
#else
    return 0;
#endif
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    int threads = 2, B = 128, iters = 20, warmup = 5, train_only = 0;
    const char *nets[8];
    int nnets = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--train-only")) train_only = 1;
        else if (nnets < 8) nets[nnets++] = argv[i];
    }
    if (!nnets) nets[0] = "small", nets[1] = "resnet8", nets[2] = "mbv2", nnets = 3;
    threads_set(threads);
    Err e;
    Dataset d;
    int have_data = dataset_load(&d, "fashion-mnist", SPLIT_TRAIN, &e) == NASC_OK;
    int nb = have_data ? d.n / B : 8;
    float mean[1] = {0.2860f}, stdv[1] = {0.3530f};
    float *xs = xalloc_aligned((size_t)nb * B * 784 * sizeof(float));
    int *ys = xmalloc((size_t)nb * B * sizeof(int));
    if (have_data) {
        int *idx = xmalloc((size_t)nb * B * sizeof(int));
        for (int i = 0; i < nb * B; i++) idx[i] = i;
        dataset_batch(&d, idx, nb * B, mean, stdv, NULL, NULL, xs, ys);
        free(idx);
        dataset_free(&d);
    } else {
        Rng r;
        rng_seed(&r, 1);
        for (size_t i = 0; i < (size_t)nb * B * 784; i++) xs[i] = (float)rng_normal(&r);
        for (int i = 0; i < nb * B; i++) ys[i] = (int)rng_below(&r, 10);
    }
    printf("nasc bench: threads=%d batch=%d gemm=%s data=%s\n", threads_get(), B, gemm_path(),
           have_data ? "fashion-mnist" : "random");
    if (!train_only) /* the ceiling the GFLOP/s below are set against, measured here and now */
        printf("PEAK {\"fp32_gflops\": %.1f, \"threads\": %d}\n", fp32_peak_gflops(), threads_get());
    for (int ni = 0; ni < nnets; ni++) {
        const char *text = zoo_lookup(nets[ni]);
        if (!text && strpbrk(nets[ni], ":(;")) text = nets[ni]; /* a spec: nb201:|...| (C=16, N=1), conv(...);... */
        if (!text) {
            fprintf(stderr, "unknown net %s\n", nets[ni]);
            return 2;
        }
        Spec s;
        Net net;
        if (spec_parse(&s, text, 16, 1, &e) != NASC_OK || net_build(&net, &s, 1, 28, 28, 10, &e) != NASC_OK) {
            fprintf(stderr, "%s: %s\n", nets[ni], e.msg);
            return 2;
        }
        spec_free(&s);
        net_init_params(&net, 0);
        OptConfig oc = optim_defaults(OPT_SGD);
        oc.momentum = 0.9f;
        oc.wd = 5e-4f;
        Optim opt;
        optim_init(&opt, &oc, net.nparams);
        float *probs = xmalloc((size_t)B * 10 * sizeof(float)), *dl = xmalloc((size_t)B * 10 * sizeof(float));
        double *t = xmalloc((size_t)(iters * 2 + 300) * sizeof(double));
        int it = 0;
        for (int i = 0; i < warmup + iters; i++) {
            int bi = it++ % nb;
            const float *x = xs + (size_t)bi * B * 784;
            const int *y = ys + (size_t)bi * B;
            double t0 = now_seconds();
            const float *logits = net_forward(&net, x, B, 1);
            xent_forward_ref(probs, logits, y, B, 10, 0);
            memset(dl, 0, (size_t)B * 10 * sizeof(float));
            xent_backward_ref(dl, probs, y, B, 10, 0, 1);
            net_zero_grad(&net);
            net_backward(&net, dl);
            optim_step(&opt, net.params, net.grads, 0.05f);
            if (i >= warmup) t[i - warmup] = now_seconds() - t0;
        }
        double train_min = t[0];
        for (int i = 1; i < iters; i++) train_min = t[i] < train_min ? t[i] : train_min;
        double train_med = median(t, iters);
        if (train_only) { /* for A/B runs on a noisy machine: the fastest step is the least disturbed */
            printf("TRAIN %s median %.3f ms min %.3f ms\n", nets[ni], train_med * 1e3, train_min * 1e3);
            fflush(stdout);
            free(probs), free(dl), free(t);
            optim_free(&opt);
            net_free(&net);
            continue;
        }
        for (int i = 0; i < warmup + 2 * iters; i++) {
            double t0 = now_seconds();
            net_forward(&net, xs, B, 0);
            if (i >= warmup) t[i - warmup] = now_seconds() - t0;
        }
        double infer_med = median(t, 2 * iters);
        for (int i = 0; i < 20 + 300; i++) {
            double t0 = now_seconds();
            net_forward(&net, xs, 1, 0);
            if (i >= 20) t[i - 20] = now_seconds() - t0;
        }
        double b1_med = median(t, 300);
        double macs = net_macs(&net);
        printf("RESULT {\"kind\": \"bench\", \"impl\": \"nasc\", \"model\": \"%s\", \"threads\": %d, \"batch\": %d, "
               "\"params\": %zu, \"macs_per_img\": %.0f, \"train_img_s\": %.1f, \"train_step_ms_median\": %.3f, "
               "\"train_gflops_eff\": %.2f, \"infer_img_s\": %.1f, \"infer_gflops_eff\": %.2f, "
               "\"b1_latency_ms_median\": %.4f}\n",
               nets[ni], threads_get(), B, net.nparams, macs, B / train_med, train_med * 1e3,
               3 * 2 * macs * B / train_med / 1e9, B / infer_med, 2 * macs * B / infer_med / 1e9, b1_med * 1e3);
        fflush(stdout);
        free(probs);
        free(dl);
        free(t);
        optim_free(&opt);
        net_free(&net);
    }
    free(xs);
    free(ys);
    return 0;
}
