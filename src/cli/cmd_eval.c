/* cmd_eval.c: `nasc eval MODEL`: test accuracy of a saved model, with the normalization the
 * model file records. */
#include "../train/train.h"
#include "cli.h"

static const char usage[] = "usage: nasc eval MODEL [--data NAME[:DIR]|DIR] [--threads T] [--json]";

int cmd_eval(int argc, char **argv) {
    const char *data = "fashion-mnist";
    int threads = 0, json = 0, help = 0, batch = 512;
    ArgSpec specs[] = {
        {"data", ARG_STR, &data, "dataset whose test split to evaluate on (fashion-mnist)", 0},
        {"batch", ARG_INT, &batch, "evaluation batch size (512)", 0},
        {"threads", ARG_INT, &threads, "threads (all cores)", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "eval", usage);
    if (parsed >= 0) return parsed;
    if (npos != 1) {
        fprintf(stderr, "nasc eval: needs a model file\n%s\n", usage);
        return 2;
    }
    if (batch < 1 || batch > 65536 || threads < 0 || threads > 1024) {
        fprintf(stderr, "nasc eval: --batch must be in 1..65536 and --threads in 1..1024\n");
        return 2;
    }
    if (threads) threads_set(threads);
    Net net;
    Norm norm;
    if (model_load(pos[0], &net, &norm, &e) != NASC_OK) {
        fprintf(stderr, "nasc eval: %s\n", e.msg);
        return 2;
    }
    Dataset te;
    if (dataset_load(&te, data, SPLIT_TEST, &e) != NASC_OK) {
        fprintf(stderr, "nasc eval: --data: %s\n", e.msg);
        net_free(&net);
        return 2;
    }
    if (te.c != net.in_c || te.h != net.in_h || te.w != net.in_w || te.classes > net.classes) {
        fprintf(stderr, "nasc eval: the model takes %dx%dx%d inputs and %d classes but %s has %dx%dx%d and %d classes\n",
                net.in_c, net.in_h, net.in_w, net.classes, data, te.c, te.h, te.w, te.classes);
        net_free(&net);
        dataset_free(&te);
        return 2;
    }
    if (norm.nchan != te.c) {
        norm.nchan = te.c;
        dataset_norm_stats(&te, norm.mean, norm.std);
    }
    double acc = evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, batch);
    printf("test_acc %.4f  (%d test images)\n", acc, te.n);
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_num(&j, "test_acc", acc);
        json_int(&j, "samples", te.n);
        json_int(&j, "params", (long long)net_param_count(&net));
        json_num(&j, "macs", net_macs(&net));
        json_end(&j);
    }
    net_free(&net);
    dataset_free(&te);
    return 0;
}
