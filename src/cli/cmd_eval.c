/* cmd_eval.c: `nasc eval MODEL`: test accuracy of a saved model, with the normalization the
 * model file records. MODEL is an fp32 model (nasc train --out) or an int8 one (found by its
 * magic number), which runs on the int8 executor (src/compress). */
#include "../compress/quant.h"
#include "../train/train.h"
#include "cli.h"

static const char usage[] = "usage: nasc eval MODEL [--data NAME[:DIR]|DIR] [--threads T] [--json]\n"
                            "  MODEL is an fp32 model (nasc train --out) or an int8 model.";

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
    int int8 = qmodel_probe(pos[0]) == QMODEL_INT8;
    Net net;
    QNet q;
    Norm norm;
    int in_c, in_h, in_w, classes;
    size_t params;
    double macs;
    if (int8) {
        if (qmodel_load(pos[0], &q, &norm, &e) != NASC_OK) {
            fprintf(stderr, "nasc eval: %s\n", e.msg);
            return 2;
        }
        in_c = q.in_c, in_h = q.in_h, in_w = q.in_w, classes = q.classes, params = q.params, macs = q.macs;
    } else {
        if (model_load(pos[0], &net, &norm, &e) != NASC_OK) {
            fprintf(stderr, "nasc eval: %s\n", e.msg);
            return 2;
        }
        in_c = net.in_c, in_h = net.in_h, in_w = net.in_w, classes = net.classes;
        params = net_param_count(&net), macs = net_macs(&net);
    }
    Dataset te;
    int rc = 2;
    if (dataset_load(&te, data, SPLIT_TEST, &e) != NASC_OK) {
        fprintf(stderr, "nasc eval: --data: %s\n", e.msg);
        goto done_model;
    }
    if (te.c != in_c || te.h != in_h || te.w != in_w || te.classes > classes) {
        fprintf(stderr, "nasc eval: the model takes %dx%dx%d inputs and %d classes but %s has %dx%dx%d and %d classes\n",
                in_c, in_h, in_w, classes, data, te.c, te.h, te.w, te.classes);
        goto done;
    }
    if (norm.nchan != te.c) {
        norm.nchan = te.c;
        dataset_norm_stats(&te, norm.mean, norm.std);
    }
    double acc = int8 ? quant_evaluate(&q, &te, NULL, te.n, norm.mean, norm.std, batch)
                      : evaluate(&net, &te, NULL, te.n, norm.mean, norm.std, batch);
    printf("test_acc %.4f  (%d test images, %s)\n", acc, te.n, int8 ? "int8" : "fp32");
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_num(&j, "test_acc", acc);
        json_int(&j, "samples", te.n);
        json_int(&j, "params", (long long)params);
        json_num(&j, "macs", macs);
        json_str(&j, "dtype", int8 ? "int8" : "fp32");
        json_end(&j);
    }
    rc = 0;
done:
    dataset_free(&te);
done_model:
    if (int8) qnet_free(&q);
    else net_free(&net);
    return rc;
}
