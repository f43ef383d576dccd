/* cmd_export.c: `nasc export MODEL --format FORMAT [--out PATH] [--json]`: a saved model, fp32
 * (nasc train, nasc import) or int8 (a QNet model file), in a deployment format. Each format is
 * one row of the table below (a name, the default file extension, a writer taking the loaded
 * model), so adding one (e.g. generated C) is one row and one writer; every writer writes its
 * file atomically. The default output path is MODEL with the format's extension in place of
 * its own.
 */
#include <sys/stat.h>

#include "../export/cgen.h"
#include "../export/export.h"
#include "cli.h"

static const char usage[] =
    "usage: nasc export MODEL [--format onnx|c] [--out PATH] [--name PREFIX] [--json]\n"
    "  onnx: ONNX opset 13, fp32 for an fp32 model, QDQ (QuantizeLinear/DequantizeLinear around int8\n"
    "  weights and activations) for an int8 one; input `input` (N, C, H, W) normalized as the model file\n"
    "  says (recorded in the ONNX metadata nasc.norm_mean / nasc.norm_std), output `logits` (N, classes).\n"
    "  c: standalone C99 for a microcontroller: --out is a folder that gets PREFIX.c and PREFIX.h\n"
    "  (PREFIX from --name, default nasc_model) with int PREFIX_predict(const float *input, float *scores);\n"
    "  int8 models give int8 C bit-identical to nasc's int8 inference, fp32 models float C. No malloc:\n"
    "  one static arena of the cost model's peak-memory size.";

/* A loaded model file: fp32 (net) or int8 (q). */
typedef struct {
    int int8;
    Net net;
    QNet q;
    Norm norm;
} Loaded;

typedef struct {
    const char *name; /* --format value */
    const char *ext;  /* default extension of the output file */
    int (*write)(const char *path, const Loaded *m, Err *e);
} ExportFormat;

static int write_onnx(const char *path, const Loaded *m, Err *e) {
    return m->int8 ? onnx_export_qnet_file(path, &m->q, &m->norm, e) : onnx_export_file(path, &m->net, &m->norm, e);
}

static const ExportFormat formats[] = {
    {"onnx", ".onnx", write_onnx},
    {"c", "", NULL}, /* generated C: cgen_export loads the model itself and writes a folder */
};
#define NFORMATS ((int)(sizeof formats / sizeof formats[0]))

/* MODEL with its extension (if any) replaced by ext; caller frees. */
static char *default_out(const char *model, const char *ext) {
    const char *slash = strrchr(model, '/'), *dot = strrchr(model, '.');
    size_t stem = (dot && (!slash || dot > slash) && dot != model && dot[-1] != '/') ? (size_t)(dot - model) : strlen(model);
    char *out = xmalloc(stem + strlen(ext) + 1);
    memcpy(out, model, stem);
    strcpy(out + stem, ext);
    return out;
}

int cmd_export(int argc, char **argv) {
    const char *format = "onnx", *out = NULL, *name = NULL;
    int json = 0, help = 0;
    ArgSpec specs[] = {
        {"format", ARG_STR, &format, "output format: onnx", 0},
        {"out", ARG_STR, &out, "output file (MODEL with the format's extension); for c, a folder (MODEL's)", 0},
        {"name", ARG_STR, &name, "c: the prefix of the files and the functions (nasc_model)", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "export", usage);
    if (parsed >= 0) return parsed;
    if (npos != 1) {
        fprintf(stderr, "nasc export: needs a model file\n%s\n", usage);
        return 2;
    }
    const ExportFormat *fmt = NULL;
    for (int i = 0; i < NFORMATS; i++)
        if (!strcmp(formats[i].name, format)) fmt = &formats[i];
    if (!fmt) {
        fprintf(stderr, "nasc export: unknown --format '%s' (formats:", format);
        for (int i = 0; i < NFORMATS; i++) fprintf(stderr, " %s", formats[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    Err e = {{0}};
    if (name && strcmp(fmt->name, "c")) {
        fprintf(stderr, "nasc export: --name is for --format c\n");
        return 2;
    }
    if (!strcmp(fmt->name, "c")) {
        char *dir = out ? xstrdup(out) : default_out(pos[0], "_c");
        CgenReport rep;
        if (cgen_export(pos[0], dir, name, &rep, &e) != NASC_OK) {
            fprintf(stderr, "nasc export: %s\n", e.msg);
            free(dir);
            return 2;
        }
        printf("wrote %s and %s (%s C)\n", rep.c_path, rep.h_path, rep.int8 ? "int8" : "fp32");
        printf("  SRAM  %zu bytes: the static arena (the cost model's peak memory; ideal allocator %zu)\n",
               rep.sram_bytes, rep.ideal_bytes);
        if (rep.measured)
            printf("  flash %zu bytes: %zu code + %zu read-only data (%s -O2 for this machine's ISA)\n", rep.flash_bytes,
                   rep.code_bytes, rep.rodata_bytes, rep.cc);
        else
            printf("  flash %zu bytes of weights and tables (no compiler found to measure the code)\n", rep.flash_bytes);
        if (json) {
            struct stat st;
            long long bytes = stat(rep.c_path, &st) == 0 ? (long long)st.st_size : -1;
            Json j;
            json_begin(&j, stdout);
            json_str(&j, "path", rep.c_path);
            json_str(&j, "header", rep.h_path);
            json_str(&j, "format", "c");
            json_str(&j, "dtype", rep.int8 ? "int8" : "fp32");
            json_int(&j, "bytes", bytes);
            json_int(&j, "sram_bytes", (long long)rep.sram_bytes);
            json_int(&j, "arena_bytes", (long long)rep.arena_bytes);
            json_int(&j, "flash_bytes", (long long)rep.flash_bytes);
            json_int(&j, "weight_bytes", (long long)rep.weight_bytes);
            if (rep.measured) json_int(&j, "code_bytes", (long long)rep.code_bytes);
            json_end(&j);
        }
        free(dir);
        return 0;
    }
    Loaded m = {0};
    m.int8 = qmodel_probe(pos[0]) == QMODEL_INT8;
    int rc = m.int8 ? qmodel_load(pos[0], &m.q, &m.norm, &e) : model_load(pos[0], &m.net, &m.norm, &e);
    if (rc != NASC_OK) {
        fprintf(stderr, "nasc export: %s\n", e.msg);
        return 2;
    }
    char *path = out ? xstrdup(out) : default_out(pos[0], fmt->ext);
    rc = fmt->write(path, &m, &e);
    if (m.int8) qnet_free(&m.q);
    else net_free(&m.net);
    if (rc != NASC_OK) {
        fprintf(stderr, "nasc export: %s\n", e.msg);
        free(path);
        return 2;
    }
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    printf("wrote %s (%s, %s, %lld bytes)\n", path, fmt->name, m.int8 ? "int8" : "fp32", bytes);
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_str(&j, "path", path);
        json_str(&j, "format", fmt->name);
        json_str(&j, "dtype", m.int8 ? "int8" : "fp32");
        json_int(&j, "bytes", bytes);
        json_end(&j);
    }
    free(path);
    return 0;
}
