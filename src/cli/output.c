/* output.c: the progress display (a bar on a terminal, plain lines when not) and the JSON
 * line that --json prints last on stdout. */
#include <math.h>
#include <unistd.h>

#include "cli.h"

void progress_init(Progress *p, int quiet, int batch) {
    memset(p, 0, sizeof *p);
    p->tty = isatty(2);
    p->quiet = quiet;
    p->batch = batch;
}

void json_begin(Json *j, FILE *f) {
    j->f = f;
    j->n = 0;
    fputc('{', f);
}

static void json_key(Json *j, const char *key) { fprintf(j->f, "%s\"%s\": ", j->n++ ? ", " : "", key); }

void json_num(Json *j, const char *key, double v) {
    json_key(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void json_int(Json *j, const char *key, long long v) {
    json_key(j, key);
    fprintf(j->f, "%lld", v);
}

void json_str(Json *j, const char *key, const char *v) {
    json_key(j, key);
    fputc('"', j->f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(j->f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(j->f, "\\u%04x", *p);
        else
            fputc(*p, j->f);
    }
    fputc('"', j->f);
}

void json_end(Json *j) {
    fputs("}\n", j->f);
    fflush(j->f);
}
