/* cmd_import.c: `nasc import FILE.onnx --out MODEL [--json]`: a network trained elsewhere, as
 * an fp32 nasc model file (spec, weights, BN statistics, and the input normalization when the
 * ONNX metadata records one), ready for eval, compression or export. What the importer
 * recognizes is listed in src/export/onnx_import.c; anything else is refused with the node's
 * name and op type.
 */
#include "../export/export.h"
#include "cli.h"

static const char usage[] = "usage: nasc import FILE.onnx --out MODEL [--json]";

int cmd_import(int argc, char **argv) {
    const char *out = NULL;
    int json = 0, help = 0;
    ArgSpec specs[] = {
        {"out", ARG_STR, &out, "the nasc model file to write", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "import", usage);
    if (parsed >= 0) return parsed;
    if (npos != 1 || !out) {
        fprintf(stderr, "nasc import: needs an ONNX file and --out MODEL\n%s\n", usage);
        return 2;
    }
    Err e = {{0}};
    Net net;
    Norm norm;
    if (onnx_import_file(pos[0], &net, &norm, &e) != NASC_OK) {
        fprintf(stderr, "nasc import: %s\n", e.msg);
        return 2;
    }
    int rc = model_save(out, &net, &norm, &e);
    if (rc != NASC_OK) {
        fprintf(stderr, "nasc import: %s\n", e.msg);
        net_free(&net);
        return 2;
    }
    printf("imported %s: %dx%dx%d input, %d classes, %d nodes, %zu parameters%s; wrote %s\n", pos[0], net.in_c,
           net.in_h, net.in_w, net.classes, net.spec.n, net_param_count(&net),
           norm.nchan ? "" : " (no input normalization recorded)", out);
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_str(&j, "path", out);
        json_int(&j, "nodes", net.spec.n);
        json_int(&j, "params", (long long)net_param_count(&net));
        json_int(&j, "classes", net.classes);
        json_int(&j, "norm", norm.nchan > 0);
        json_end(&j);
    }
    net_free(&net);
    return 0;
}
