/* cli.h: what the subcommands share: flag parsing, progress display, JSON output and the
 * resolution of --arch and --data arguments. */
#ifndef NASC_CLI_H
#define NASC_CLI_H

#include "../core/common.h"
#include "../data/data.h"
#include "../net/net.h"

typedef enum { ARG_INT, ARG_FLOAT, ARG_STR, ARG_FLAG, ARG_NOFLAG } ArgType;

typedef struct {
    const char *name; /* without the leading "--" */
    ArgType type;
    void *dst;        /* int*, float*, const char**, int* (flags set 1, noflags set 0) */
    const char *help;
    int seen;
} ArgSpec;

/* Parses argv[0..argc) against specs ("--name value", "--name=value", flags without value);
 * non-flag arguments are collected in pos (at most maxpos). NASC_ERR with a message on an
 * unknown flag, a missing or malformed value, or too many positional arguments. */
int args_parse(int argc, char **argv, ArgSpec *specs, int nspecs, const char **pos, int maxpos, int *npos,
               const char *cmd, Err *e);
void args_usage(FILE *f, const char *usage, const ArgSpec *specs, int nspecs);
/* args_parse for a subcommand: on a parse error prints "nasc MESSAGE" and returns 2; when
 * --help was given prints the usage and returns 0; otherwise returns -1 (go on). */
int args_run(int argc, char **argv, ArgSpec *specs, int nspecs, const char **pos, int maxpos, int *npos,
             const char *cmd, const char *usage);

/* The spec text for --arch: a zoo name (small, resnet8, mbv2), a file holding a spec, or
 * the spec text itself. Returns an allocated string. */
char *cli_arch_text(const char *arch, Err *e);

/* Progress: a bar on a terminal, plain lines otherwise (or nothing with quiet). */
typedef struct {
    int tty, quiet;
    double last_draw;
    int batch;
} Progress;
void progress_init(Progress *p, int quiet, int batch);

/* Minimal JSON object writer: {"key": value, ...} on one line. */
typedef struct {
    FILE *f;
    int n;
} Json;
void json_begin(Json *j, FILE *f);
void json_num(Json *j, const char *key, double v);
void json_int(Json *j, const char *key, long long v);
void json_str(Json *j, const char *key, const char *v);
void json_end(Json *j);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_cost(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_compress(int argc, char **argv);

#endif
