/* args.c: flag parsing for the subcommands, strict: every value is checked whole, and an
 * unknown flag is an error that names it. */
#include <errno.h>
#include <math.h>

#include "cli.h"

static ArgSpec *find(ArgSpec *specs, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(specs[i].name) == len && strncmp(specs[i].name, name, len) == 0) return &specs[i];
    return NULL;
}

static int set_value(ArgSpec *s, const char *v, const char *cmd, Err *e) {
    char *end;
    errno = 0;
    switch (s->type) {
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end || errno || x < -2147483647L || x > 2147483647L) {
            err_set(e, "%s: --%s needs a whole number, got '%s'", cmd, s->name, v);
            return NASC_ERR;
        }
        *(int *)s->dst = (int)x;
        return NASC_OK;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (*v == 0 || *end || errno || !isfinite(x)) {
            err_set(e, "%s: --%s needs a number, got '%s'", cmd, s->name, v);
            return NASC_ERR;
        }
        *(float *)s->dst = (float)x;
        return NASC_OK;
    }
    case ARG_STR:
        *(const char **)s->dst = v;
        return NASC_OK;
    default: NASC_ASSERT(0);
    }
}

int args_parse(int argc, char **argv, ArgSpec *specs, int nspecs, const char **pos, int maxpos, int *npos,
               const char *cmd, Err *e) {
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
            if (a[0] == '-' && a[1] != 0 && a[1] != '-' && !(a[1] >= '0' && a[1] <= '9')) {
                err_set(e, "%s: unknown option '%s' (options are spelled --name; see 'nasc %s --help')", cmd, a, cmd);
                return NASC_ERR;
            }
            if (*npos >= maxpos) {
                err_set(e, "%s: unexpected argument '%s'", cmd, a);
                return NASC_ERR;
            }
            pos[(*npos)++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        ArgSpec *s = find(specs, nspecs, name, len);
        if (!s) {
            err_set(e, "%s: unknown flag '--%.*s' (see 'nasc %s --help')", cmd, (int)len, name, cmd);
            return NASC_ERR;
        }
        s->seen = 1;
        if (s->type == ARG_FLAG || s->type == ARG_NOFLAG) {
            if (eq) {
                err_set(e, "%s: flag --%s takes no value", cmd, s->name);
                return NASC_ERR;
            }
            *(int *)s->dst = s->type == ARG_FLAG;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) {
                err_set(e, "%s: --%s needs a value", cmd, s->name);
                return NASC_ERR;
            }
            v = argv[++i];
        }
        if (set_value(s, v, cmd, e) != NASC_OK) return NASC_ERR;
    }
    return NASC_OK;
}

void args_usage(FILE *f, const char *usage, const ArgSpec *specs, int nspecs) {
    fprintf(f, "%s\n\noptions:\n", usage);
    for (int i = 0; i < nspecs; i++) {
        const char *v = specs[i].type == ARG_INT     ? " N"
                        : specs[i].type == ARG_FLOAT ? " X"
                        : specs[i].type == ARG_STR   ? " S"
                                                     : "";
        char left[48];
        snprintf(left, sizeof left, "--%s%s", specs[i].name, v);
        fprintf(f, "  %-22s %s\n", left, specs[i].help);
    }
}

int args_run(int argc, char **argv, ArgSpec *specs, int nspecs, const char **pos, int maxpos, int *npos,
             const char *cmd, const char *usage) {
    Err e = {{0}};
    if (args_parse(argc, argv, specs, nspecs, pos, maxpos, npos, cmd, &e) != NASC_OK) {
        fprintf(stderr, "nasc %s\n", e.msg);
        return 2;
    }
    for (int i = 0; i < nspecs; i++)
        if (!strcmp(specs[i].name, "help") && specs[i].seen) {
            args_usage(stdout, usage, specs, nspecs);
            return 0;
        }
    return -1;
}

char *cli_arch_text(const char *arch, Err *e) {
    const char *z = zoo_lookup(arch);
    if (z) return xstrdup(z);
    const char *path = arch[0] == '@' ? arch + 1 : arch;
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        size_t n;
        char *text = file_read_all(path, &n, e);
        if (!text) return NULL;
        text = xrealloc(text, n + 1);
        text[n] = 0;
        if (strlen(text) != n) {
            err_set(e, "--arch %s: the file contains a NUL byte; a spec file is text", path);
            free(text);
            return NULL;
        }
        return text;
    }
    if (arch[0] == '@') {
        err_set(e, "--arch: cannot open spec file %s", path);
        return NULL;
    }
    return xstrdup(arch);
}
