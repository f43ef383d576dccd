/* bench_cgen.c: batch-1 latency of the standalone C export (src/export/cgen.c) against its peer,
 * nasc's own int8 executor (qnet_forward), on the same int8 models in the same run: small,
 * resnet8, mbv2 and an NB201 network (1x28x28 inputs, 10 classes, random weights with BN
 * statistics from one training-mode batch, int8 by min/max post-training quantization on
 * random inputs: latency does not depend on the values).
 *
 * Each model is exported, then the generated C is compiled twice with a timing driver written
 * here: `cc -std=c99 -O2` (portable, what a microcontroller build would use) and `cc -std=c99
 * -O3 -march=native` (this machine's vector units). Both sides take float input and give float
 * logits (NAME_predict / qnet_forward: quantize, int8 ops, dequantize). nasc runs with
 * --threads threads (default 1: the generated code is single-threaded). The three are measured
 * in interleaved rounds, each keeping the minimum over rounds of its per-round median, so a
 * slow moment of a shared machine hits all alike. Also printed: the exported flash (code +
 * read-only data of the -O2 object, host ISA) and SRAM (the arena). A RESULT line of JSON per
 * network.
 *
 *   build/bench/bench_cgen [--threads T] [--rounds R] [--repeats N] [--nets small,resnet8,...]
 */
#include <math.h>
#include <unistd.h>

#include "../src/compress/quant.h"
#include "../src/export/cgen.h"

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


static const char driver[] =
    "#define _POSIX_C_SOURCE 199309L\n"
    "#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n#include \"bnet.h\"\n"
    "#define IN (BNET_IN_C * BNET_IN_H * BNET_IN_W)\n"
    "static double now(void) {\n"
    "    struct timespec t;\n"
    "    clock_gettime(CLOCK_MONOTONIC, &t);\n"
    "    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;\n"
    "}\n"
    "static int cmp(const void *a, const void *b) {\n"
    "    double x = *(const double *)a, y = *(const double *)b;\n"
    "    return x < y ? -1 : x > y;\n"
    "}\n"
    "int main(int argc, char **argv) {\n"
    "    static float x[IN], s[BNET_CLASSES];\n"
    "    int n = argc > 1 ? atoi(argv[1]) : 50, k, i, sum = 0;\n"
    "    double lim = argc > 2 ? atof(argv[2]) : 5.0, t0, *t = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));\n"
    "    unsigned r = 12345;\n"
    "    for (i = 0; i < IN; i++) {\n"
    "        r = r * 1103515245u + 12345u;\n"
    "        x[i] = (float)((r >> 8) % 2000) / 500.0f - 2.0f;\n"
    "    }\n"
    "    for (i = 0; i < 3; i++) sum += bnet_predict(x, s);\n"
    "    t0 = now();\n"
    "    for (k = 0; k < n; k++) {\n"
    "        double a = now();\n"
    "        sum += bnet_predict(x, s);\n"
    "        t[k] = now() - a;\n"
    "        if (k >= 4 && now() - t0 > lim) {\n"
    "            k++;\n"
    "            break;\n"
    "        }\n"
    "    }\n"
    "    qsort(t, (size_t)k, sizeof *t, cmp);\n"
    "    printf(\"%.6f %d %d\\n\", 1e3 * t[k / 2], k, sum);\n"
    "    free(t);\n"
    "    return 0;\n"
    "}\n";

/* Runs a compiled driver; returns its median in ms (NAN on failure). */
static double run_driver(const char *bin, int repeats) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %d 5", bin, repeats);
    FILE *p = popen(cmd, "r");
    if (!p) return NAN;
    double ms = NAN;
    int runs, sum;
    if (fscanf(p, "%lf %d %d", &ms, &runs, &sum) != 3) ms = NAN;
    pclose(p);
    return ms;
}

int main(int argc, char **argv) {
    int threads = 1, rounds = 3, repeats = 50;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nets") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cgen [--threads T] [--rounds R] [--repeats N] [--nets a,b]\n");
            return 2;
        }
    }
    threads_set(threads);
    const char *cc = getenv("NASC_CC") ? getenv("NASC_CC") : "cc";
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/nasc_bench_cgen_XXXXXX");
    NASC_ASSERT(mkdtemp(dir));
    printf("batch-1 latency, float in -> logits out: nasc qnet_forward (%d thread%s, int8 conv path %s) vs the "
           "generated C\n(%s -std=c99 -O2, and -O3 -march=native); min over %d rounds of the median of up to %d runs\n\n",
           threads, threads == 1 ? "" : "s", qconv_path(), cc, rounds, repeats);
    printf("%-8s %9s %9s %9s | %10s %10s %7s %12s %7s\n", "network", "flash B", "code B", "SRAM B", "nasc ms",
           "C -O2 ms", "ratio", "C -O3nat ms", "ratio");
    int rc = 0;
    for (size_t k = 0; k < sizeof nets / sizeof nets[0]; k++) {
        const BenchNet *b = &nets[k];
        if (only && !strstr(only, b->name)) continue;
        Err e;
        Spec sp;
        Net net;
        const char *text = zoo_lookup(b->spec) ? zoo_lookup(b->spec) : b->spec;
        if (spec_parse(&sp, text, b->channels, 1, &e) != NASC_OK || net_build(&net, &sp, 1, 28, 28, 10, &e) != NASC_OK) {
            fprintf(stderr, "%s: %s\n", b->name, e.msg);
            return 1;
        }
        spec_free(&sp);
        net_randomize(&net, 1, 0);
        float *xc = random_images(32, 784, 3);
        QNet q;
        if (quant_ptq(&q, &net, xc, 32, NULL, &e) != NASC_OK) {
            fprintf(stderr, "%s: %s\n", b->name, e.msg);
            return 1;
        }
        char model[256], out[256], bin2[300], bin3[300], cmd[2400];
        snprintf(model, sizeof model, "%s/%s.q8", dir, b->name);
        snprintf(out, sizeof out, "%s/%s", dir, b->name);
        Norm norm = {1, {0.2860f}, {0.3530f}};
        CgenReport r;
        if (qmodel_save(model, &q, &norm, &e) != NASC_OK || cgen_export(model, out, "bnet", &r, &e) != NASC_OK) {
            fprintf(stderr, "%s: %s\n", b->name, e.msg);
            return 1;
        }
        char drv[300];
        snprintf(drv, sizeof drv, "%s/drv.c", out);
        if (file_write_atomic(drv, driver, strlen(driver), &e) != NASC_OK) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        snprintf(bin2, sizeof bin2, "%s/drv_o2", out);
        snprintf(bin3, sizeof bin3, "%s/drv_o3", out);
        snprintf(cmd, sizeof cmd, "%s -std=c99 -O2 -o %s %s %s/bnet.c && %s -std=c99 -O3 -march=native -o %s %s %s/bnet.c",
                 cc, bin2, drv, out, cc, bin3, drv, out);
        if (system(cmd) != 0) {
            fprintf(stderr, "%s: the generated C did not compile\n", b->name);
            return 1;
        }
        double best_n = INFINITY, best_2 = INFINITY, best_3 = INFINITY;
        for (int round = 0; round < rounds; round++) {
            best_2 = fmin(best_2, run_driver(bin2, repeats));
            LatencyConfig lc = {.repeats = repeats, .seed = 4};
            LatencyStats st;
            qnet_latency(&q, &lc, &st);
            best_n = fmin(best_n, st.median_ms);
            best_3 = fmin(best_3, run_driver(bin3, repeats));
        }
        if (!isfinite(best_2) || !isfinite(best_3)) rc = 1;
        printf("%-8s %9zu %9zu %9zu | %10.3f %10.3f %6.2fx %12.3f %6.2fx\n", b->name, r.flash_bytes, r.code_bytes,
               r.arena_bytes, best_n, best_2, best_n / best_2, best_3, best_n / best_3);
        printf("RESULT {\"model\": \"%s\", \"threads\": %d, \"nasc_ms\": %.4f, \"c_o2_ms\": %.4f, \"c_o3_native_ms\": %.4f, "
               "\"flash_bytes\": %zu, \"code_bytes\": %zu, \"rodata_bytes\": %zu, \"arena_bytes\": %zu, "
               "\"weight_bytes\": %zu, \"measured\": %s}\n",
               b->name, threads, best_n, best_2, best_3, r.flash_bytes, r.code_bytes, r.rodata_bytes, r.arena_bytes,
               r.weight_bytes, r.measured ? "true" : "false");
        fflush(stdout);
        free(xc);
        qnet_free(&q);
        net_free(&net);
    }
    printf("\nratio = nasc ms / generated C ms (> 1: the generated C is faster). flash = code + read-only data of\n"
           "the -O2 object for this machine's ISA; SRAM = the static arena (= nasc cost's peak_bytes).\n");
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
