/* bench_qnet.c: batch-1 latency of the int8 executor (src/compress, qnet_forward: quantize the
 * input, int8 ops, dequantize the logits) against its peer, the fp32 engine (net_forward), on
 * the same networks with the same random weights, in the same run: small, resnet8, mbv2 and
 * an NB201 network (1x28x28 inputs, 10 classes). Weights are random (PyTorch's init, BN
 * statistics from one training-mode batch), the int8 net is calibrated (min/max) on random
 * inputs: latency does not depend on the values. The two sides are measured in interleaved
 * rounds and each keeps the minimum over rounds of its per-round median, so a slow moment of
 * a shared machine hits both alike. Prints fp32 ms, int8 ms and the speed-up fp32 / int8,
 * and a RESULT line of JSON per network.
 *
 *   build/bench/bench_qnet [--threads T] [--rounds R] [--repeats N] [--nets small,resnet8,...]
 */
#include <math.h>

#include "../src/compress/quant.h"

typedef struct {
    const char *name, *spec;
    int channels;
} BenchNet;

static const BenchNet nets[] = {
    {"small", "small", 16},
    {"resnet8", "resnet8", 16},
    {"mbv2", "mbv2", 16},
    {"nb201", "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     16},
};

static float *random_images(int n, size_t in, uint64_t seed) {
    float *x = xmalloc((size_t)n * in * sizeof *x);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < (size_t)n * in; i++) x[i] = (float)rng_normal(&r);
    return x;
}


int main(int argc, char **argv) {
    int threads = 1, rounds = 3, repeats = 40;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nets") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_qnet [--threads T] [--rounds R] [--repeats N] [--nets a,b]\n");
            return 2;
        }
    }
    threads_set(threads);
    printf("bench_qnet: batch-1 latency, int8 executor vs fp32 engine; %d thread%s, %d rounds x %d runs; int8 conv "
           "path %s, fp32 gemm path %s\n",
           threads, threads == 1 ? "" : "s", rounds, repeats, qconv_path(), gemm_path());
    printf("  %-8s %10s %10s %8s   %s\n", "net", "fp32 ms", "int8 ms", "speedup", "(fp32 / int8)");
    for (size_t k = 0; k < sizeof nets / sizeof nets[0]; k++) {
        const BenchNet *b = &nets[k];
        if (only && !strstr(only, b->name)) continue;
        Err e;
        Spec sp;
        Net net;
        const char *text = zoo_lookup(b->spec) ? zoo_lookup(b->spec) : b->spec;
        if (spec_parse(&sp, text, b->channels, 1, &e) != NASC_OK || net_build(&net, &sp, 1, 28, 28, 10, &e) != NASC_OK) {
            fprintf(stderr, "bench_qnet: %s: %s\n", b->name, e.msg);
            return 1;
        }
        spec_free(&sp);
        net_randomize(&net, 1, 0);
        float *xc = random_images(64, 28 * 28, 3);
        QNet q;
        if (quant_ptq(&q, &net, xc, 64, NULL, &e) != NASC_OK) {
            fprintf(stderr, "bench_qnet: %s: %s\n", b->name, e.msg);
            return 1;
        }
        double best32 = INFINITY, best8 = INFINITY;
        LatencyConfig lc = {.repeats = repeats, .max_seconds = 10};
        for (int r = 0; r < rounds; r++) {
            LatencyStats s32, s8;
            latency_measure(&net, &lc, &s32);
            qnet_latency(&q, &lc, &s8);
            best32 = fmin(best32, s32.median_ms);
            best8 = fmin(best8, s8.median_ms);
        }
        printf("  %-8s %10.4f %10.4f %7.2fx\n", b->name, best32, best8, best32 / best8);
        printf("RESULT {\"net\": \"%s\", \"threads\": %d, \"fp32_ms\": %.5f, \"int8_ms\": %.5f, \"speedup\": %.3f, "
               "\"qconv_path\": \"%s\"}\n",
               b->name, threads, best32, best8, best32 / best8, qconv_path());
        qnet_free(&q);
        net_free(&net);
        free(xc);
    }
    return 0;
}
