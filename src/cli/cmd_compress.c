/* cmd_compress.c: `nasc compress MODEL ... --out MODEL`: the compression pipeline on a trained
 * fp32 model, in this order:
 *   1. pruning: structured (`--prune-mode channel`, the default: channels physically removed,
 *      src/compress/prune.c) or unstructured (`--prune-mode weight`: magnitude masks), then
 *      fine-tuning for --finetune-epochs. `--prune-schedule gradual` (the default when there
 *      is fine-tuning) reaches the ratio with AGP over the first two thirds of fine-tuning,
 *      choosing again at each of 10 steps (channels: zeroed, and removed once training ends),
 *      then trains on with the final masks; `oneshot` prunes everything before fine-tuning;
 *   2. int8 quantization (`--quantize int8`): quantization-aware training for --qat-epochs
 *      (fake quantization, src/compress/qat.c) when asked, then the int8 network from the
 *      learned ranges; otherwise post-training quantization calibrated on --calib training
 *      images with --calib-method;
 *   3. distillation (`--distill TEACHER`): every training phase above (fine-tuning, QAT) adds
 *      Hinton's loss against the teacher's soft targets (often the uncompressed model itself).
 * Fine-tuning uses the training split only; test accuracy is measured before and after. The
 * table compares size on disk, parameters, MACs, test accuracy and batch-1 latency.
 */
#include <math.h>
#include <sys/stat.h>

#include "../compress/prune.h"
#include "../compress/qat.h"
#include "../compress/quant.h"
#include "../cost/cost.h"
#include "../train/train.h"
#include "cli.h"

static const char usage[] =
    "usage: nasc compress MODEL [--prune R [--prune-mode channel|weight] [--prune-criterion l1|l2|bn]\n"
    "                     [--prune-schedule gradual|oneshot]]\n"
    "                     [--quantize int8 [--calib N] [--calib-method minmax|percentile|mse] [--qat-epochs E]]\n"
    "                     [--distill TEACHER] [--finetune-epochs E] [--data NAME[:DIR]|DIR] --out MODEL\n"
    "  MODEL is an fp32 model file (nasc train --out). R is the fraction of channels (channel mode, per\n"
    "  prunable layer) or of conv/linear weights (weight mode) to remove, in (0, 1).";

typedef struct {
    double test_acc;
    size_t bytes, params, nonzero;
    double macs, latency_ms;
} Side;

static size_t file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static size_t count_nonzero(const Net *net) {
    size_t n = 0;
    for (size_t i = 0; i < net->nparams; i++) n += net->params[i] != 0;
    return n;
}

typedef struct {
    int quiet;
    const char *phase;
    PruneHook *prune;          /* re-applies weight masks after every step (weight mode), or NULL */
    ChannelPruneHook *cprune; /* gradual channel pruning, or NULL */
} Ctx;

static void on_step(void *ctx, const TrainProgress *p) {
    Ctx *c = ctx;
    if (c->prune) prune_on_step(c->prune, p);
    if (c->cprune) prune_channel_on_step(c->cprune, p);
}

static void on_epoch(void *ctx, const TrainProgress *p, double val_acc) {
    Ctx *c = ctx;
    if (c->quiet) return;
    fprintf(stderr, "%s: epoch %d/%d  loss %.4f  train_acc %.4f  lr %.4g  %.0fs\n", c->phase, p->epoch, p->epochs,
            p->loss, p->acc, (double)p->lr, p->seconds);
}

/* *net becomes the pruned *small, with BN statistics re-estimated on the training images: after
 * one-shot pruning the kept channels no longer see the removed ones (accuracy collapses even at
 * small ratios until this is done), after gradual pruning the running averages include steps
 * taken before the last channels were dropped. */
static void adopt_pruned(Net *net, Net *small, const Dataset *tr, const int *tidx, int ntr, const Norm *norm, int batch,
                         int seed) {
    net_free(net);
    *net = *small;
    train_bn_recalibrate(net, tr, tidx, ntr, norm->mean, norm->std, 50, NASC_MIN(batch, 256), (uint64_t)seed + 5);
}

static void json_side(Json *j, const char *key, const Side *s) {
    fprintf(j->f, "%s\"%s\": {\"test_acc\": %.6g, \"bytes\": %zu, \"params\": %zu, \"nonzero_params\": %zu, \"macs\": %.0f, "
               "\"latency_ms\": %.6g}",
            j->n++ ? ", " : "", key, s->test_acc, s->bytes, s->params, s->nonzero, s->macs, s->latency_ms);
}

static void print_row(const char *what, const char *a, const char *b) { printf("  %-22s %16s %16s\n", what, a, b); }

int cmd_compress(int argc, char **argv) {
    const char *data = "fashion-mnist", *out = NULL, *prune_mode = "channel", *crit_name = "l1", *schedule = NULL, *quantize = NULL,
               *calib_name = "percentile", *distill = NULL;
    float ratio = 0, lr = 0.01f, kd_alpha = 0.9f, kd_temp = 4.0f, qat_lr = 0.001f;
    int finetune = -1, qat_epochs = 0, calib = 1024, batch = 256, subset = 0, seed = 0, threads = 0, repeats = 50, json = 0,
        quiet = 0, help = 0;
    ArgSpec specs[] = {
        {"prune", ARG_FLOAT, &ratio, "fraction to prune, in (0, 1) (no pruning)", 0},
        {"prune-mode", ARG_STR, &prune_mode, "channel (structured, removes channels) | weight (unstructured)", 0},
        {"prune-criterion", ARG_STR, &crit_name, "channel importance: l1 | l2 | bn (l1)", 0},
        {"prune-schedule", ARG_STR, &schedule,
         "gradual (AGP over 2/3 of fine-tuning; the default with fine-tuning) | oneshot", 0},
        {"finetune-epochs", ARG_INT, &finetune, "fine-tuning epochs after pruning (3)", 0},
        {"lr", ARG_FLOAT, &lr, "fine-tuning learning rate, cosine to 0 (0.01)", 0},
        {"quantize", ARG_STR, &quantize, "int8: quantize (post-training, or QAT with --qat-epochs)", 0},
        {"calib", ARG_INT, &calib, "calibration images from the training set (1024)", 0},
        {"calib-method", ARG_STR, &calib_name, "minmax | percentile | mse (percentile)", 0},
        {"qat-epochs", ARG_INT, &qat_epochs, "quantization-aware training epochs (0: post-training only)", 0},
        {"qat-lr", ARG_FLOAT, &qat_lr, "QAT learning rate, cosine to 0 (0.001)", 0},
        {"distill", ARG_STR, &distill, "teacher model file for knowledge distillation during training", 0},
        {"kd-alpha", ARG_FLOAT, &kd_alpha, "distillation: weight of the soft targets (0.9)", 0},
        {"kd-temperature", ARG_FLOAT, &kd_temp, "distillation: temperature (4)", 0},
        {"data", ARG_STR, &data, "dataset (fashion-mnist): training split to fine-tune, test split to measure", 0},
        {"batch", ARG_INT, &batch, "fine-tuning batch size (256)", 0},
        {"subset", ARG_INT, &subset, "fine-tune and calibrate on a random subset of N training images (all)", 0},
        {"seed", ARG_INT, &seed, "seed for shuffling and calibration sampling (0)", 0},
        {"repeats", ARG_INT, &repeats, "timed runs for batch-1 latency (50; 0 = no latency)", 0},
        {"threads", ARG_INT, &threads, "threads (all cores)", 0},
        {"out", ARG_STR, &out, "the compressed model file (required)", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"quiet", ARG_FLAG, &quiet, "no progress output", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "compress", usage);
    if (parsed >= 0) return parsed;

    /* ---- flags */
    int channel = 1;
    PruneCriterion crit = PRUNE_L1;
    QCalibMethod cal = QCAL_PERCENTILE;
    const char *bad = NULL;
    char msg[sizeof e.msg + 64];
    if (npos != 1) bad = "needs a model file";
    else if (!out) bad = "--out MODEL is required";
    else if (ratio != 0 && !(ratio > 0 && ratio < 1)) {
        snprintf(msg, sizeof msg, "--prune must be in (0, 1), got %g", (double)ratio);
        bad = msg;
    } else if (strcmp(prune_mode, "channel") && strcmp(prune_mode, "weight")) {
        snprintf(msg, sizeof msg, "--prune-mode must be channel or weight, got '%s'", prune_mode);
        bad = msg;
    } else if (prune_criterion_parse(crit_name, &crit, &e) != NASC_OK) {
        snprintf(msg, sizeof msg, "--prune-criterion: %s", e.msg);
        bad = msg;
    } else if (quantize && strcmp(quantize, "int8")) {
        snprintf(msg, sizeof msg, "--quantize must be int8, got '%s'", quantize);
        bad = msg;
    } else if (qcalib_parse(calib_name, &cal, &e) != NASC_OK) {
        snprintf(msg, sizeof msg, "--calib-method: %s", e.msg);
        bad = msg;
    } else if (calib < 1 || calib > 1000000) bad = "--calib must be between 1 and 1000000";
    else if (qat_epochs < 0 || qat_epochs > 1000) bad = "--qat-epochs must be between 0 and 1000";
    else if (qat_epochs > 0 && !quantize) bad = "--qat-epochs needs --quantize int8";
    else if (finetune < -1 || finetune > 1000) bad = "--finetune-epochs must be between 0 and 1000";
    else if (schedule && strcmp(schedule, "gradual") && strcmp(schedule, "oneshot")) {
        snprintf(msg, sizeof msg, "--prune-schedule must be gradual or oneshot, got '%s'", schedule);
        bad = msg;
    } else if (schedule && !strcmp(schedule, "gradual") && finetune == 0)
        bad = "--prune-schedule gradual needs fine-tuning (--finetune-epochs > 0)";
    else if (!(lr > 0) || !(qat_lr > 0)) bad = "--lr and --qat-lr must be positive";
    else if (!(kd_alpha >= 0 && kd_alpha <= 1)) bad = "--kd-alpha must be in [0, 1]";
    else if (!(kd_temp > 0 && kd_temp <= 100)) bad = "--kd-temperature must be in (0, 100]";
    else if (batch < 1 || batch > 65536) bad = "--batch must be between 1 and 65536";
    else if (subset < 0) bad = "--subset must not be negative";
    else if (threads < 0 || threads > 1024) bad = "--threads must be between 1 and 1024";
    else if (repeats < 0 || repeats > 100000) bad = "--repeats must be between 0 and 100000";
    else if (ratio == 0 && !quantize) bad = "nothing to do: give --prune R and/or --quantize int8";
    if (bad) {
        fprintf(stderr, "nasc compress: %s\n%s\n", bad, usage);
        return 2;
    }
    channel = !strcmp(prune_mode, "channel");
    if (finetune < 0) finetune = ratio > 0 ? 3 : 0;
    int gradual = schedule ? !strcmp(schedule, "gradual") : finetune > 0;
    if (threads) threads_set(threads);
    const char *model = pos[0];
    QModelKind kind = qmodel_probe(model);
    if (kind == QMODEL_INT8) {
        fprintf(stderr, "nasc compress: %s is already an int8 model; compress takes the fp32 model it came from\n", model);
        return 2;
    }

    /* ---- inputs */
    Net net, teacher;
    Norm norm;
    int has_teacher = 0, status = 2;
    if (model_load(model, &net, &norm, &e) != NASC_OK) {
        fprintf(stderr, "nasc compress: %s\n", e.msg);
        return 2;
    }
    Dataset tr = {0}, te = {0};
    if (dataset_load(&tr, data, SPLIT_TRAIN, &e) != NASC_OK || dataset_load(&te, data, SPLIT_TEST, &e) != NASC_OK) {
        fprintf(stderr, "nasc compress: --data: %s\n", e.msg);
        dataset_free(&tr);
        net_free(&net);
        return 2;
    }
    if (tr.c != net.in_c || tr.h != net.in_h || tr.w != net.in_w || tr.classes > net.classes) {
        fprintf(stderr, "nasc compress: %s takes %dx%dx%d inputs and %d classes but %s has %dx%dx%d and %d classes\n",
                model, net.in_c, net.in_h, net.in_w, net.classes, data, tr.c, tr.h, tr.w, tr.classes);
        goto done;
    }
    if (norm.nchan != tr.c) {
        norm.nchan = tr.c;
        dataset_norm_stats(&tr, norm.mean, norm.std);
    }
    if (distill) {
        Norm tn;
        if (model_load(distill, &teacher, &tn, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: --distill: %s\n", e.msg);
            goto done;
        }
        has_teacher = 1;
        if (teacher.classes != net.classes || teacher.in_c != net.in_c || teacher.in_h != net.in_h ||
            teacher.in_w != net.in_w) {
            fprintf(stderr,
                    "nasc compress: --distill: the teacher %s takes %dx%dx%d inputs with %d classes but the model %s takes "
                    "%dx%dx%d with %d classes\n",
                    distill, teacher.in_c, teacher.in_h, teacher.in_w, teacher.classes, model, net.in_c, net.in_h,
                    net.in_w, net.classes);
            goto done;
        }
    }
    LatencyConfig lc = {.repeats = repeats, .seed = 1};

    /* ---- before */
    Side before = {0}, after = {0};
    before.test_acc = evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, 512);
    before.bytes = file_bytes(model);
    before.params = net_param_count(&net);
    before.nonzero = count_nonzero(&net);
    before.macs = net_macs(&net);
    if (!quiet)
        fprintf(stderr, "compress: %s: test_acc %.4f, %zu params, %.2f M MACs\n", model, before.test_acc, before.params,
                before.macs / 1e6);

    /* ---- training set-up shared by fine-tuning and QAT */
    int ntr = tr.n;
    int *tidx = xmalloc((size_t)tr.n * sizeof(int));
    for (int i = 0; i < tr.n; i++) tidx[i] = i;
    if (subset > 0 && subset < tr.n) { /* a seeded random subset */
        Rng r;
        rng_seed(&r, (uint64_t)seed + 2);
        rng_shuffle_int(&r, tidx, tr.n);
        ntr = subset;
    }
    TrainConfig cfg = {0};
    cfg.batch = batch;
    cfg.opt = optim_defaults(OPT_SGD);
    cfg.opt.momentum = 0.9f;
    cfg.opt.nesterov = 1;
    cfg.opt.wd = 5e-4f;
    cfg.sched.kind = SCHED_COSINE;
    cfg.seed = (uint64_t)seed;
    if (has_teacher) {
        cfg.teacher = &teacher;
        cfg.kd_alpha = kd_alpha;
        cfg.kd_temperature = kd_temp;
    }
    Ctx ctx = {quiet, "fine-tune", NULL, NULL};
    cfg.on_step = on_step;
    cfg.on_epoch = on_epoch;
    cfg.ctx = &ctx;
    long spe = (ntr + NASC_MIN(batch, ntr) - 1) / NASC_MIN(batch, ntr);
    TrainResult res;
    unsigned char *masks = NULL;
    PruneHook hook;

    /* ---- 1. pruning */
    ChannelPruneHook chook;
    long total = spe * finetune;
    AgpSchedule agp = {0, ratio, 0, 0, 1}; /* gradual: 10 steps over the first two thirds */
    if (gradual && total >= 3) {
        agp.dt = NASC_MAX(1L, total * 2 / 3 / 10);
        agp.n = NASC_MAX(1L, total * 2 / 3 / agp.dt);
    }
    if (ratio > 0 && channel && gradual) {
        if (prune_channel_hook_init(&chook, &net, crit, &agp, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: --prune: %s\n", e.msg);
            free(tidx);
            goto done;
        }
        ctx.cprune = &chook;
    } else if (ratio > 0 && channel) {
        Net small;
        PruneReport rep;
        if (prune_channels(&net, crit, ratio, &small, &rep, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: --prune: %s\n", e.msg);
            free(tidx);
            goto done;
        }
        adopt_pruned(&net, &small, &tr, tidx, ntr, &norm, batch, seed);
        if (!quiet) {
            fprintf(stderr, "compress: channel pruning %.0f%% (%s): ", 100.0 * ratio, prune_criterion_name(crit));
            prune_report_print(stderr, &rep);
            fprintf(stderr, "compress: before fine-tuning: test_acc %.4f\n",
                    evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, 512));
        }
    } else if (ratio > 0) {
        masks = prune_masks_new(&net);
        if (prune_hook_init(&hook, &net, masks, gradual ? &agp : NULL, PRUNE_GLOBAL, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: --prune: %s\n", e.msg);
            free(masks);
            free(tidx);
            goto done;
        }
        if (!gradual && prune_weights_magnitude(&net, masks, ratio, PRUNE_GLOBAL, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: --prune: %s\n", e.msg);
            free(masks);
            free(tidx);
            goto done;
        }
        ctx.prune = &hook;
    }
    if (ratio > 0 && finetune > 0) {
        cfg.epochs = finetune;
        cfg.sched.lr = lr;
        cfg.sched.total_steps = spe * finetune;
        if (train_run(&net, &tr, tidx, ntr, NULL, NULL, 0, norm.mean, norm.std, &cfg, &res, &e) != NASC_OK) {
            fprintf(stderr, "nasc compress: fine-tuning: %s\n", e.msg);
            free(masks);
            free(tidx);
            goto done;
        }
    }
    if (masks && !quiet) prune_sparsity_print(stderr, &net, masks);
    if (ctx.cprune) { /* remove the channels gradual pruning zeroed */
        Net small;
        PruneReport rep;
        ctx.cprune = NULL;
        int rc = chook.ratio > 0 ? prune_plan_apply(&net, &chook.plan, &small, &rep, &e) : NASC_ERR;
        if (chook.ratio == 0) err_set(&e, "fine-tuning ended before the first pruning step");
        prune_channel_hook_free(&chook);
        if (rc != NASC_OK) {
            fprintf(stderr, "nasc compress: --prune: %s\n", e.msg);
            free(tidx);
            goto done;
        }
        adopt_pruned(&net, &small, &tr, tidx, ntr, &norm, batch, seed);
        if (!quiet) {
            fprintf(stderr, "compress: channel pruning %.0f%% (%s, gradual): ", 100.0 * ratio, prune_criterion_name(crit));
            prune_report_print(stderr, &rep);
        }
    }

    /* ---- 2. quantization */
    QNet qn;
    int quantized = 0;
    if (quantize) {
        if (qat_epochs > 0) {
            Qat qat;
            qat_init(&qat, &net);
            ctx.phase = "qat";
            cfg.epochs = qat_epochs;
            cfg.sched.lr = qat_lr;
            cfg.sched.total_steps = spe * qat_epochs;
            int rc = train_run(&net, &tr, tidx, ntr, NULL, NULL, 0, norm.mean, norm.std, &cfg, &res, &e);
            QRanges r;
            qat_ranges(&qat, &r);
            qat_free(&qat);
            if (rc == NASC_OK) rc = qnet_build(&qn, &net, &r, &e);
            qranges_free(&r);
            if (rc != NASC_OK) {
                fprintf(stderr, "nasc compress: quantization-aware training: %s\n", e.msg);
                free(masks);
                free(tidx);
                goto done;
            }
        } else {
            int nc = calib;
            float *cx = quant_calib_images(&tr, &nc, norm.mean, norm.std, (uint64_t)seed + 11);
            QCalibConfig qc = {.method = cal, .percentile = 99.99, .bins = 2048, .batch = 32};
            int rc = quant_ptq(&qn, &net, cx, nc, &qc, &e);
            free(cx);
            if (rc != NASC_OK) {
                fprintf(stderr, "nasc compress: quantization: %s\n", e.msg);
                free(masks);
                free(tidx);
                goto done;
            }
        }
        quantized = 1;
    }
    free(tidx);

    /* ---- after */
    int rc = quantized ? qmodel_save(out, &qn, &norm, &e) : model_save(out, &net, &norm, &e);
    if (rc != NASC_OK) {
        fprintf(stderr, "nasc compress: --out: %s\n", e.msg);
        if (quantized) qnet_free(&qn);
        free(masks);
        goto done;
    }
    after.bytes = file_bytes(out);
    after.params = net_param_count(&net);
    after.macs = net_macs(&net);
    if (quantized) {
        after.test_acc = quant_evaluate(&qn, &te, NULL, te.n, norm.mean, norm.std, 512);
        after.nonzero = 0;
        for (int i = 0; i < qn.spec.n; i++) {
            const QNode *nd = &qn.nodes[i];
            for (uint32_t j = 0; j < nd->nw; j++) after.nonzero += nd->w[j] != 0;
        }
    } else {
        after.test_acc = evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, 512);
        after.nonzero = count_nonzero(&net);
    }
    /* Latency: the original and the result measured in turns, three rounds, best median of
     * each, so that a burst of load on a shared machine does not land on one side only. */
    if (repeats > 0) {
        Net orig;
        Norm on;
        if (model_load(model, &orig, &on, &e) == NASC_OK) {
            before.latency_ms = after.latency_ms = INFINITY;
            for (int round = 0; round < 3; round++) {
                LatencyStats ls;
                latency_measure(&orig, &lc, &ls);
                before.latency_ms = fmin(before.latency_ms, ls.median_ms);
                if (quantized) qnet_latency(&qn, &lc, &ls);
                else latency_measure(&net, &lc, &ls);
                after.latency_ms = fmin(after.latency_ms, ls.median_ms);
            }
            net_free(&orig);
        }
    }

    char a[64], b[64];
    printf("nasc compress: %s -> %s\n", model, out);
    print_row("", "before (fp32)", quantized ? "after (int8)" : "after (fp32)");
    snprintf(a, sizeof a, "%zu", before.bytes), snprintf(b, sizeof b, "%zu", after.bytes);
    print_row("size (bytes)", a, b);
    snprintf(a, sizeof a, "%zu", before.params), snprintf(b, sizeof b, "%zu", after.params);
    print_row("params", a, b);
    snprintf(a, sizeof a, "%zu", before.nonzero), snprintf(b, sizeof b, "%zu", after.nonzero);
    print_row(quantized ? "nonzero (int8 weights)" : "nonzero params", a, b);
    snprintf(a, sizeof a, "%.0f", before.macs), snprintf(b, sizeof b, "%.0f", after.macs);
    print_row("MACs", a, b);
    snprintf(a, sizeof a, "%.4f", before.test_acc), snprintf(b, sizeof b, "%.4f", after.test_acc);
    print_row("test accuracy", a, b);
    if (repeats > 0) {
        snprintf(a, sizeof a, "%.3f ms", before.latency_ms), snprintf(b, sizeof b, "%.3f ms", after.latency_ms);
        print_row("latency (batch 1)", a, b);
    }
    printf("  accuracy change %+.2f points; size x%.2f smaller; MACs x%.2f fewer", 100 * (after.test_acc - before.test_acc),
           after.bytes ? (double)before.bytes / after.bytes : 0, after.macs > 0 ? before.macs / after.macs : 0);
    if (repeats > 0 && after.latency_ms > 0) printf("; latency x%.2f faster", before.latency_ms / after.latency_ms);
    printf("\n");
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_str(&j, "model", out);
        json_str(&j, "dtype", quantized ? "int8" : "fp32");
        json_side(&j, "before", &before);
        json_side(&j, "after", &after);
        json_end(&j);
    }
    if (quantized) qnet_free(&qn);
    free(masks);
    status = 0;
done:
    if (has_teacher) net_free(&teacher);
    net_free(&net);
    dataset_free(&tr);
    dataset_free(&te);
    return status;
}
