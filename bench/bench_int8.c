/* bench_int8.c: speed of the int8 convolution (qconv2d, every path this CPU has) against
 * nasc's float convolution (conv2d_forward) on the same shapes: the layers of resnet8, mbv2
 * and an NB201 network (C = 16) on 1x28x28 inputs, at batch 1 and batch 64.
 *
 * Per layer and path: GOP/s (2 * multiply-adds / time) and the int8 / float speed ratio
 * (float time / int8 time, > 1 means int8 is faster). Then per network the summed time of
 * its layers (each counted as often as the net has it) and the ratio. Times are the best of
 * several rounds, the float and int8 runs interleaved so that machine noise hits both alike.
 * Prints, asserts nothing (tests/test_qops.c checks the results).
 *
 * Usage: bench_int8 [threads (2)] [batches (1,64)] [resnet8|mbv2|nb201|all] [rounds (5)]
 * (on a shared machine, threads = 1 gives the steadier numbers)
 */
#include "../src/ops/qops.h"

#include <math.h>

typedef struct {
    const char *net;
    int cin, hw, cout, k, s, g, count; /* count = how many times the net has this layer */
} Layer;

#define L(net, cin, hw, cout, k, s, g, count) {net, cin, hw, cout, k, s, g, count}
static const Layer layers[] = {
    L("resnet8", 1, 28, 16, 3, 1, 1, 1),
    L("resnet8", 16, 28, 16, 3, 1, 1, 2),
    L("resnet8", 16, 28, 32, 3, 2, 1, 1),
    L("resnet8", 32, 14, 32, 3, 1, 1, 1),
    L("resnet8", 16, 28, 32, 1, 2, 1, 1),
    L("resnet8", 32, 14, 64, 3, 2, 1, 1),
    L("resnet8", 64, 7, 64, 3, 1, 1, 1),
    L("resnet8", 32, 14, 64, 1, 2, 1, 1),
    L("resnet8", 64, 1, 10, 1, 1, 1, 1), /* the classifier as a 1x1 conv */
    L("mbv2", 1, 28, 16, 3, 1, 1, 1),
    L("mbv2", 16, 28, 16, 3, 1, 16, 1),
    L("mbv2", 16, 28, 16, 1, 1, 1, 1),
    L("mbv2", 16, 28, 96, 1, 1, 1, 1),
    L("mbv2", 96, 28, 96, 3, 2, 96, 1),
    L("mbv2", 96, 14, 24, 1, 1, 1, 1),
    L("mbv2", 24, 14, 144, 1, 1, 1, 2),
    L("mbv2", 144, 14, 144, 3, 1, 144, 1),
    L("mbv2", 144, 14, 24, 1, 1, 1, 1),
    L("mbv2", 144, 14, 144, 3, 2, 144, 1),
    L("mbv2", 144, 7, 32, 1, 1, 1, 1),
    L("mbv2", 32, 7, 192, 1, 1, 1, 2),
    L("mbv2", 192, 7, 192, 3, 1, 192, 2),
    L("mbv2", 192, 7, 32, 1, 1, 1, 1),
    L("mbv2", 192, 7, 64, 1, 1, 1, 1),
    L("mbv2", 64, 7, 384, 1, 1, 1, 2),
    L("mbv2", 384, 7, 384, 3, 1, 384, 2),
    L("mbv2", 384, 7, 64, 1, 1, 1, 1),
    L("mbv2", 384, 7, 96, 1, 1, 1, 1),
    L("mbv2", 96, 7, 256, 1, 1, 1, 1),
    L("mbv2", 256, 1, 10, 1, 1, 1, 1),
    /* NB201 (C = 16, 5 cells per stage) counted for a cell whose 6 edges are all nor_conv_3x3;
     * a reduction is conv3x3/2, conv3x3 and a 1x1 shortcut after 2x2 pooling. The cell's
     * nor_conv_1x1 is timed but not counted (count 0). */
    L("nb201", 1, 28, 16, 3, 1, 1, 1),
    L("nb201", 16, 28, 16, 3, 1, 1, 30),
    L("nb201", 16, 28, 16, 1, 1, 1, 0),
    L("nb201", 16, 28, 32, 3, 2, 1, 1),
    L("nb201", 32, 14, 32, 3, 1, 1, 31),
    L("nb201", 16, 14, 32, 1, 1, 1, 1),
    L("nb201", 32, 14, 64, 3, 2, 1, 1),
    L("nb201", 64, 7, 64, 3, 1, 1, 31),
    L("nb201", 32, 7, 64, 1, 1, 1, 1),
};
#define NLAYERS ((int)(sizeof layers / sizeof layers[0]))

static const char *const paths[] = {"generic", "avx512", "vnni", "amx"};
#define NPATHS 4

static ConvDims dims_of(const Layer *l, int n) {
    ConvDims d = {.n = n, .cin = l->cin, .h = l->hw, .w = l->hw, .cout = l->cout, .k = l->k, .stride = l->s,
                  .pad = l->k / 2, .dil = 1, .groups = l->g};
    Err e;
    if (conv_dims_init(&d, &e) != NASC_OK) nasc_die("bench layer: %s", e.msg);
    return d;
}

/* Seconds per call of f: calls repeated until a round lasts ~2 ms. */
typedef struct {
    int kind; /* 0 float, 1 int8 */
    const ConvDims *d;
    float *fy, *fx, *fw, *fb;
    int8_t *qy, *qx;
    QConvPacked *qp;
} Job;

static void job_call(const Job *j) {
    if (j->kind == 0)
        conv2d_forward(j->fy, j->fx, j->fw, j->fb, j->d);
    else
        qconv2d(j->qy, j->qx, j->qp, j->d->n);
}

static double time_round(const Job *j, int reps) {
    double t0 = now_seconds();
    for (int r = 0; r < reps; r++) job_call(j);
    return (now_seconds() - t0) / reps;
}

static int reps_for(const Job *j) {
    job_call(j); /* warm up */
    double t = time_round(j, 1);
    int reps = (int)(2e-3 / fmax(t, 1e-7));
    return NASC_MAX(1, NASC_MIN(reps, 20000));
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const char *batches = argc > 2 ? argv[2] : "1,64";
    const char *which = argc > 3 ? argv[3] : "all";
    int rounds = argc > 4 ? atoi(argv[4]) : 5;
    threads_set(threads);

    int avail[NPATHS], npaths = 0;
    for (int p = 0; p < NPATHS; p++) {
        setenv("NASC_QCONV", paths[p], 1);
        avail[p] = strcmp(qconv_path(), paths[p]) == 0;
        npaths += avail[p];
    }
    unsetenv("NASC_QCONV");
    const char *deflt = qconv_path();
    printf("int8 conv vs float conv, %d thread(s), fp32 gemm path %s, int8 default path %s\n", threads, gemm_path(),
           deflt);
    printf("columns: GOP/s of float, then per int8 path GOP/s and speed ratio (float time / int8 time)\n");

    char blist[64];
    snprintf(blist, sizeof blist, "%s", batches);
    for (char *tok = strtok(blist, ","); tok; tok = strtok(NULL, ",")) {
        int n = atoi(tok);
        if (n < 1) continue;
        /* per net totals: float, each path, default */
        const char *nets[] = {"resnet8", "mbv2", "nb201"};
        double tot[3][NPATHS + 2];
        memset(tot, 0, sizeof tot);
        printf("\n== batch %d\n%-8s %-24s %8s", n, "net", "layer", "f32");
        for (int p = 0; p < NPATHS; p++)
            if (avail[p]) printf(" %8s %6s", paths[p], "x");
        printf(" %8s %6s\n", "default", "x");
        for (int li = 0; li < NLAYERS; li++) {
            const Layer *l = &layers[li];
            if (strcmp(which, "all") != 0 && strcmp(which, l->net) != 0) continue;
            ConvDims d = dims_of(l, n);
            size_t nx = (size_t)n * d.cin * d.h * d.w, ny = (size_t)n * d.cout * d.oh * d.ow;
            size_t nw = (size_t)d.cout * (d.cin / d.groups) * d.k * d.k;
            double ops = 2.0 * n * d.cout * d.oh * d.ow * (d.cin / d.groups) * d.k * d.k;
            Rng r;
            rng_seed(&r, 11);
            float *fx = xalloc_aligned(nx * 4), *fw = xalloc_aligned(nw * 4), *fy = xalloc_aligned(ny * 4);
            float *fb = xalloc_aligned((size_t)d.cout * 4);
            int8_t *qx = xalloc_aligned(nx), *qw = xalloc_aligned(nw), *qy = xalloc_aligned(ny);
            int32_t *bias = xmalloc((size_t)d.cout * 4), *mult = xmalloc((size_t)d.cout * 4);
            int8_t *shift = xmalloc((size_t)d.cout);
            for (size_t i = 0; i < nx; i++) fx[i] = rng_uniformf(&r, -1, 1), qx[i] = (int8_t)(rng_below(&r, 256) - 128);
            for (size_t i = 0; i < nw; i++) fw[i] = rng_uniformf(&r, -1, 1), qw[i] = (int8_t)(rng_below(&r, 255) - 127);
            for (int i = 0; i < d.cout; i++) {
                int m, s;
                fb[i] = 0.1f;
                bias[i] = (int32_t)rng_below(&r, 2000) - 1000;
                q_multiplier(0.001, &m, &s);
                mult[i] = m, shift[i] = (int8_t)s;
            }
            QConvArgs a = {.d = d, .x_zp = -5, .y_zp = -128, .y_min = -128, .y_max = 127};
            Job jobs[NPATHS + 2];
            int njobs = 0, idx[NPATHS + 2];
            jobs[njobs] = (Job){0, &d, fy, fx, fw, fb, NULL, NULL, NULL};
            idx[njobs++] = 0;
            for (int p = 0; p < NPATHS; p++) {
                if (!avail[p]) continue;
                setenv("NASC_QCONV", paths[p], 1);
                jobs[njobs] = (Job){1, &d, NULL, NULL, NULL, NULL, qy, qx, qconv_pack(qw, bias, mult, shift, &a)};
                idx[njobs++] = 1 + p;
            }
            unsetenv("NASC_QCONV");
            jobs[njobs] = (Job){1, &d, NULL, NULL, NULL, NULL, qy, qx, qconv_pack(qw, bias, mult, shift, &a)};
            idx[njobs++] = 1 + NPATHS;
            int reps[NPATHS + 2];
            double best[NPATHS + 2];
            for (int j = 0; j < njobs; j++) reps[j] = reps_for(&jobs[j]), best[j] = INFINITY;
            for (int rd = 0; rd < rounds; rd++)
                for (int j = 0; j < njobs; j++) best[j] = fmin(best[j], time_round(&jobs[j], reps[j]));
            char name[64];
            snprintf(name, sizeof name, "%d>%d %dx%d k%d s%d%s", l->cin, l->cout, l->hw, l->hw, l->k, l->s,
                     l->g > 1 ? " dw" : "");
            printf("%-8s %-24s %8.1f", l->net, name, ops / best[0] * 1e-9);
            for (int j = 1; j < njobs; j++) printf(" %8.1f %6.2f", ops / best[j] * 1e-9, best[0] / best[j]);
            printf("   (%.1f us f32, %.1f us int8)\n", best[0] * 1e6, best[njobs - 1] * 1e6);
            int ni = strcmp(l->net, "resnet8") == 0 ? 0 : strcmp(l->net, "mbv2") == 0 ? 1 : 2;
            for (int j = 0; j < njobs; j++) tot[ni][idx[j]] += best[j] * l->count;
            for (int j = 1; j < njobs; j++) qconv_free(jobs[j].qp);
            free(fx), free(fw), free(fy), free(fb), free(qx), free(qw), free(qy), free(bias), free(mult), free(shift);
        }
        printf("-- batch %d, all conv layers of each net (time per batch; ratio = float / int8)\n", n);
        for (int ni = 0; ni < 3; ni++) {
            if (tot[ni][0] == 0) continue;
            printf("%-8s f32 %9.1f us", nets[ni], tot[ni][0] * 1e6);
            for (int p = 0; p < NPATHS; p++)
                if (avail[p]) printf("  %s %9.1f us x%.2f", paths[p], tot[ni][1 + p] * 1e6, tot[ni][0] / tot[ni][1 + p]);
            printf("  default %9.1f us x%.2f\n", tot[ni][1 + NPATHS] * 1e6, tot[ni][0] / tot[ni][1 + NPATHS]);
        }
    }
    return 0;
}
