/* cmd_train.c: `nasc train`: build a network from a spec, train it on a dataset with the
 * NB201 recipe by default (SGD, Nesterov momentum 0.9, lr 0.1 cosine per step, wd 5e-4,
 * batch 256, 12 epochs), report validation and test accuracy, optionally save the model. */
#include <math.h>

#include "../train/train.h"
#include "cli.h"

static const char usage[] =
    "usage: nasc train --arch SPEC [--channels C --cells N] [--data NAME[:DIR]|DIR] [options]\n"
    "  SPEC is spec text, a file holding one, a zoo name (small, resnet8, mbv2)\n"
    "  or an NB201 cell such as 'nb201:|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|'";

static void fmt_time(char *buf, size_t n, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static void on_step(void *ctx, const TrainProgress *p) {
    Progress *pr = ctx;
    if (pr->quiet || !pr->tty) return;
    double now = p->seconds;
    if (p->step != p->steps && now - pr->last_draw < 0.2) return;
    pr->last_draw = now;
    double done = ((p->epoch - 1) * (double)p->steps + p->step) / ((double)p->epochs * p->steps);
    char eta[32];
    fmt_time(eta, sizeof eta, done > 0 ? p->seconds * (1 - done) / done : 0);
    int width = 24, fill = (int)(width * (double)p->step / p->steps);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double ips = p->seconds > 0 ? ((p->epoch - 1) * (double)p->steps + p->step) * pr->batch / p->seconds : 0;
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %ld/%ld loss %.4f acc %.4f lr %.4g %.0f img/s eta %s", p->epoch,
            p->epochs, bar, p->step, p->steps, p->loss, p->acc, (double)p->lr, ips, eta);
    fflush(stderr);
}

static void on_epoch(void *ctx, const TrainProgress *p, double val_acc) {
    Progress *pr = ctx;
    if (pr->quiet) return;
    if (pr->tty) fprintf(stderr, "\r\033[K");
    char el[32];
    fmt_time(el, sizeof el, p->seconds);
    fprintf(stderr, "epoch %d/%d  loss %.4f  train_acc %.4f", p->epoch, p->epochs, p->loss, p->acc);
    if (val_acc >= 0) fprintf(stderr, "  val_acc %.4f", val_acc);
    fprintf(stderr, "  lr %.4g  %s\n", (double)p->lr, el);
}

static int parse_enum(const char *v, const char *const *names, int n, const char *flag, Err *e) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strcat(list, i ? ", " : "");
        strcat(list, names[i]);
    }
    err_set(e, "train: --%s must be one of %s, got '%s'", flag, list, v);
    return -1;
}

int cmd_train(int argc, char **argv) {
    const char *arch = NULL, *data = "fashion-mnist", *optimizer = "sgd", *schedule = "cosine", *augment = "none",
               *out = NULL, *distill = NULL;
    float kd_alpha = 0.9f, kd_temp = 4.0f;
    int channels = 16, cells = 1, epochs = 12, batch = 256, nesterov = 1, subset = 0, nval = 0, seed = 0,
        threads = 0, json = 0, quiet = 0, help = 0;
    float lr = 0.1f, momentum = 0.9f, wd = 5e-4f, warmup = 0, step_size = 30, gamma = 0.1f, smoothing = 0,
          lr_min = 0;
    ArgSpec specs[] = {
        {"arch", ARG_STR, &arch, "network spec, spec file, zoo name or NB201 cell (required)", 0},
        {"channels", ARG_INT, &channels, "NB201: channels of the first stage (16)", 0},
        {"cells", ARG_INT, &cells, "NB201: cells per stage (1)", 0},
        {"data", ARG_STR, &data, "fashion-mnist | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | DIR", 0},
        {"epochs", ARG_INT, &epochs, "epochs (12)", 0},
        {"batch", ARG_INT, &batch, "mini-batch size (256)", 0},
        {"optimizer", ARG_STR, &optimizer, "sgd | adam | adamw (sgd)", 0},
        {"lr", ARG_FLOAT, &lr, "base learning rate (0.1)", 0},
        {"lr-min", ARG_FLOAT, &lr_min, "cosine: final learning rate (0)", 0},
        {"momentum", ARG_FLOAT, &momentum, "SGD momentum (0.9)", 0},
        {"nesterov", ARG_FLAG, &nesterov, "Nesterov momentum (on)", 0},
        {"no-nesterov", ARG_NOFLAG, &nesterov, "plain momentum", 0},
        {"wd", ARG_FLOAT, &wd, "weight decay (5e-4)", 0},
        {"schedule", ARG_STR, &schedule, "cosine | step | const (cosine, per step)", 0},
        {"warmup", ARG_FLOAT, &warmup, "linear warm-up, in epochs (0)", 0},
        {"step-size", ARG_FLOAT, &step_size, "step schedule: epochs between decays (30)", 0},
        {"gamma", ARG_FLOAT, &gamma, "step schedule: decay factor (0.1)", 0},
        {"label-smoothing", ARG_FLOAT, &smoothing, "label smoothing (0)", 0},
        {"augment", ARG_STR, &augment, "none | crop-flip (none)", 0},
        {"subset", ARG_INT, &subset, "train on a random subset of N images (all)", 0},
        {"val", ARG_INT, &nval, "hold out N training images for validation (0)", 0},
        {"seed", ARG_INT, &seed, "seed for init, shuffling, augmentation (0)", 0},
        {"threads", ARG_INT, &threads, "threads (all cores)", 0},
        {"distill", ARG_STR, &distill, "knowledge distillation from this teacher model file", 0},
        {"kd-alpha", ARG_FLOAT, &kd_alpha, "distillation: weight of the teacher's soft targets (0.9)", 0},
        {"kd-temperature", ARG_FLOAT, &kd_temp, "distillation: softmax temperature (4)", 0},
        {"out", ARG_STR, &out, "save the trained model to this file", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"quiet", ARG_FLAG, &quiet, "no progress output", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 0, &npos, "train", usage);
    if (parsed >= 0) return parsed;
    static const char *const opt_names[] = {"sgd", "adam", "adamw"};
    static const char *const sched_names[] = {"const", "step", "cosine"};
    static const char *const aug_names[] = {"none", "crop-flip"};
    int ok = 1;
#define BAD(...) (err_set(&e, __VA_ARGS__), ok = 0)
    if (!arch) BAD("train: --arch is required (e.g. --arch small, or an NB201 cell 'nb201:|...|')");
    else if (epochs < 1 || epochs > 100000) BAD("train: --epochs must be at least 1, got %d", epochs);
    else if (batch < 1 || batch > 65536) BAD("train: --batch must be between 1 and 65536, got %d", batch);
    else if (!(lr > 0)) BAD("train: --lr must be positive, got %g", (double)lr);
    else if (momentum < 0 || momentum >= 1) BAD("train: --momentum must be in [0, 1), got %g", (double)momentum);
    else if (wd < 0) BAD("train: --wd must not be negative, got %g", (double)wd);
    else if (smoothing < 0 || smoothing >= 1) BAD("train: --label-smoothing must be in [0, 1), got %g", (double)smoothing);
    else if (subset < 0 || nval < 0) BAD("train: --subset and --val must not be negative");
    else if (threads < 0 || threads > 1024) BAD("train: --threads must be between 1 and 1024, got %d", threads);
    else if (warmup < 0 || step_size <= 0) BAD("train: --warmup must be >= 0 and --step-size > 0");
    else if (!(kd_alpha >= 0 && kd_alpha <= 1)) BAD("train: --kd-alpha must be in [0, 1], got %g", (double)kd_alpha);
    else if (!(kd_temp > 0 && kd_temp <= 100)) BAD("train: --kd-temperature must be in (0, 100], got %g", (double)kd_temp);
    if (!ok) {
        fprintf(stderr, "nasc %s\n", e.msg);
        return 2;
    }
#undef BAD
    int opt_kind = parse_enum(optimizer, opt_names, 3, "optimizer", &e);
    int sched_kind = opt_kind < 0 ? -1 : parse_enum(schedule, sched_names, 3, "schedule", &e);
    int aug_kind = sched_kind < 0 ? -1 : parse_enum(augment, aug_names, 2, "augment", &e);
    if (aug_kind < 0) {
        fprintf(stderr, "nasc %s\n", e.msg);
        return 2;
    }
    if (threads) threads_set(threads);

    char *text = cli_arch_text(arch, &e);
    Spec spec;
    if (!text || spec_parse(&spec, text, channels, cells, &e) != NASC_OK) {
        fprintf(stderr, "nasc train: --arch: %s\n", e.msg);
        free(text);
        return 2;
    }
    free(text);
    Dataset tr, te;
    if (dataset_load(&tr, data, SPLIT_TRAIN, &e) != NASC_OK) {
        fprintf(stderr, "nasc train: --data: %s\n", e.msg);
        spec_free(&spec);
        return 2;
    }
    if (dataset_load(&te, data, SPLIT_TEST, &e) != NASC_OK) {
        fprintf(stderr, "nasc train: --data: %s\n", e.msg);
        dataset_free(&tr);
        spec_free(&spec);
        return 2;
    }
    if (nval >= tr.n) {
        fprintf(stderr, "nasc train: --val %d leaves no training images (the set has %d)\n", nval, tr.n);
        dataset_free(&tr);
        dataset_free(&te);
        spec_free(&spec);
        return 2;
    }
    Net net;
    if (net_build(&net, &spec, tr.c, tr.h, tr.w, tr.classes, &e) != NASC_OK) {
        fprintf(stderr, "nasc train: --arch: %s\n", e.msg);
        dataset_free(&tr);
        dataset_free(&te);
        spec_free(&spec);
        return 2;
    }
    spec_free(&spec);
    net_init_params(&net, (uint64_t)seed);

    Norm norm = {.nchan = tr.c};
    dataset_norm_stats(&tr, norm.mean, norm.std);
    Net teacher;
    int has_teacher = 0;
    if (distill) {
        Norm tnorm;
        if (model_load(distill, &teacher, &tnorm, &e) != NASC_OK) {
            fprintf(stderr, "nasc train: --distill: %s\n", e.msg);
            net_free(&net);
            dataset_free(&tr);
            dataset_free(&te);
            return 2;
        }
        has_teacher = 1;
        if (teacher.classes != tr.classes || teacher.in_c != tr.c || teacher.in_h != tr.h || teacher.in_w != tr.w) {
            fprintf(stderr, "nasc train: --distill: the teacher %s takes %dx%dx%d inputs with %d classes but %s has %dx%dx%d and %d classes\n",
                    distill, teacher.in_c, teacher.in_h, teacher.in_w, teacher.classes, data, tr.c, tr.h, tr.w, tr.classes);
            net_free(&teacher);
            net_free(&net);
            dataset_free(&tr);
            dataset_free(&te);
            return 2;
        }
    }
    int *tidx, *vidx, ntr;
    dataset_split(tr.n, nval, (uint64_t)seed + 1, &tidx, &ntr, &vidx);
    if (subset > 0 && subset < ntr) { /* a seeded random subset of the training part */
        Rng r;
        rng_seed(&r, (uint64_t)seed + 2);
        rng_shuffle_int(&r, tidx, ntr);
        ntr = subset;
    }

    TrainConfig cfg = {0};
    cfg.epochs = epochs;
    cfg.batch = batch;
    cfg.opt = optim_defaults((OptKind)opt_kind);
    cfg.opt.momentum = momentum;
    cfg.opt.nesterov = nesterov && momentum > 0;
    cfg.opt.wd = wd;
    long spe = (ntr + NASC_MIN(batch, ntr) - 1) / NASC_MIN(batch, ntr);
    cfg.sched.kind = (SchedKind)sched_kind;
    cfg.sched.lr = lr;
    cfg.sched.lr_min = lr_min;
    cfg.sched.total_steps = spe * epochs;
    cfg.sched.warmup_steps = (long)(warmup * spe + 0.5);
    cfg.sched.step_size = NASC_MAX(1L, (long)(step_size * spe + 0.5));
    cfg.sched.gamma = gamma;
    cfg.label_smoothing = smoothing;
    cfg.aug.crop_pad = aug_kind == 1 ? (tr.h >= 32 ? 4 : 2) : 0;
    cfg.aug.flip = aug_kind == 1;
    cfg.seed = (uint64_t)seed;
    if (has_teacher) {
        cfg.teacher = &teacher;
        cfg.kd_alpha = kd_alpha;
        cfg.kd_temperature = kd_temp;
    }
    Progress pr;
    progress_init(&pr, quiet, NASC_MIN(batch, ntr));
    cfg.on_step = on_step;
    cfg.on_epoch = on_epoch;
    cfg.ctx = &pr;
    if (!quiet)
        fprintf(stderr, "train: %s, %d images (%d held out), %zu params, %.2f M MACs, %d threads\n", data, ntr, nval,
                net_param_count(&net), net_macs(&net) / 1e6, threads_get());
    TrainResult res;
    int rc = train_run(&net, &tr, tidx, ntr, &tr, vidx, nval, norm.mean, norm.std, &cfg, &res, &e);
    int status = 0;
    if (rc != NASC_OK) {
        if (pr.tty && !quiet) fprintf(stderr, "\n");
        fprintf(stderr, "nasc train: %s\n", e.msg);
        status = 3;
    } else {
        double test_acc = evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, 512);
        if (out && model_save(out, &net, &norm, &e) != NASC_OK) {
            fprintf(stderr, "nasc train: --out: %s\n", e.msg);
            status = 2;
        }
        printf("test_acc %.4f  (%d test images)\n", test_acc, te.n);
        if (nval > 0) printf("val_acc %.4f  (%d held-out training images)\n", res.val_acc, nval);
        printf("params %zu  macs %.0f  seconds %.1f  (%.0f img/s)\n", net_param_count(&net), net_macs(&net),
               res.seconds, res.seconds > 0 ? (double)ntr * epochs / res.seconds : 0.0);
        if (out && status == 0) printf("model %s\n", out);
        if (json) {
            Json j;
            json_begin(&j, stdout);
            json_num(&j, "test_acc", test_acc);
            if (nval > 0) json_num(&j, "val_acc", res.val_acc);
            json_num(&j, "train_loss", res.train_loss);
            json_num(&j, "train_acc", res.train_acc);
            json_int(&j, "params", (long long)net_param_count(&net));
            json_num(&j, "macs", net_macs(&net));
            json_num(&j, "seconds", res.seconds);
            json_int(&j, "epochs", epochs);
            json_int(&j, "threads", threads_get());
            if (out) json_str(&j, "model", out);
            json_end(&j);
        }
    }
    free(tidx);
    free(vidx);
    net_free(&net);
    if (has_teacher) net_free(&teacher);
    dataset_free(&tr);
    dataset_free(&te);
    return status;
}
