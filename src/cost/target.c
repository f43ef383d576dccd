/* target.c: deployment target profiles and the fit check.
 *
 * A profile is a text file, one `key = value` per line; '#' starts a comment (values cannot
 * contain '#'); blank lines are ignored; a value may be written in double quotes.
 *     name = mcu                      required; letters, digits, '_', '-', '.'
 *     sram_kb = 320                   required; activation memory, KB = 1024 bytes
 *     flash_kb = 1024                 required; weights + quantization parameters
 *     latency_ms = 200                required; latency budget
 *     dtype = int8                    required; int8 | fp32: the deployed number type
 *     latency_table = mcu.lat         optional; per-op latency table for the predictor,
 *                                     relative to the profile's folder (need not exist yet)
 *     description = "Cortex-M7 ..."   optional
 * Every mistake is reported as "FILE: line L, column C: what is wrong" (columns count bytes
 * from 1): unknown keys, a line without '=', values that are not numbers or not positive,
 * duplicates, missing required keys (reported at the end of the file).
 *
 * Lookup by name: NAME.target in each folder of $NASC_TARGETS (':'-separated; first, so users
 * can override a shipped profile), ./targets, then ../targets next to the nasc binary.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <unistd.h>

#include "cost.h"

enum { K_NAME, K_SRAM, K_FLASH, K_LATENCY, K_DTYPE, K_TABLE, K_DESC, K_COUNT };
static const char *const key_names[K_COUNT] = {"name",  "sram_kb",       "flash_kb",   "latency_ms",
                                               "dtype", "latency_table", "description"};
static const int key_required[K_COUNT] = {1, 1, 1, 1, 1, 0, 0};

/* Sets the message "FILE: line L, column C: ..." and returns NASC_ERR. */
static int perr(Err *e, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int perr(Err *e, const char *file, int line, int col, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(e, "%s: line %d, column %d: %s", file, line, col, msg);
    return NASC_ERR;
}

static int is_key_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static int is_name_char(int c) { return is_key_char(c) || c == '-' || c == '.'; }

static int valid_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!is_name_char((unsigned char)*s)) return 0;
    return 1;
}

static int parse_positive(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || !(x > 0)) return NASC_ERR;
    *out = x;
    return NASC_OK;
}

/* One `key = value` line (without its newline) into t; seen[] records the line of each key. */
static int parse_line(Target *t, const char *p, const char *end, int line, int *seen, const char *file,
                      const char *dir, Err *e) {
#define COL(q) ((int)((q) - p) + 1)
    const char *s = p;
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    if (s == end || *s == '#') return NASC_OK;
    const char *k0 = s;
    while (s < end && is_key_char((unsigned char)*s)) s++;
    if (s == k0) return perr(e, file, line, COL(k0), "expected a key such as sram_kb, found '%c'", *k0);
    int klen = (int)(s - k0);
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    if (s == end || *s == '#') return perr(e, file, line, COL(s), "expected '=' after '%.*s'", klen, k0);
    if (*s != '=') return perr(e, file, line, COL(s), "expected '=' after '%.*s', found '%c'", klen, k0, *s);
    int key = -1;
    for (int k = 0; k < K_COUNT; k++)
        if ((int)strlen(key_names[k]) == klen && !strncmp(key_names[k], k0, (size_t)klen)) key = k;
    if (key < 0)
        return perr(e, file, line, COL(k0),
                    "unknown key '%.*s' (keys: name, sram_kb, flash_kb, latency_ms, dtype, latency_table, "
                    "description)",
                    klen, k0);
    if (seen[key])
        return perr(e, file, line, COL(k0), "duplicate key '%s' (first set on line %d)", key_names[key], seen[key]);
    seen[key] = line;
    s++; /* past '=' */
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    const char *v0 = s, *v1;
    if (s < end && *s == '"') {
        const char *q = s + 1;
        while (q < end && *q != '"') q++;
        if (q == end) return perr(e, file, line, COL(s), "unterminated quoted value (no closing '\"')");
        v0 = s + 1;
        v1 = q;
        const char *r = q + 1;
        while (r < end && (*r == ' ' || *r == '\t')) r++;
        if (r < end && *r != '#') return perr(e, file, line, COL(r), "unexpected text after the closing quote");
    } else {
        v1 = s;
        while (v1 < end && *v1 != '#') v1++;
        while (v1 > v0 && (v1[-1] == ' ' || v1[-1] == '\t')) v1--;
    }
    if (v1 == v0 && key != K_DESC) return perr(e, file, line, COL(s), "'%s' needs a value", key_names[key]);
    char val[TARGET_PATH_MAX];
    if ((size_t)(v1 - v0) >= sizeof val)
        return perr(e, file, line, COL(v0), "the value of '%s' is too long", key_names[key]);
    memcpy(val, v0, (size_t)(v1 - v0));
    val[v1 - v0] = 0;
    int vc = COL(v0);
    switch (key) {
    case K_NAME:
        if (!valid_name(val) || strlen(val) >= sizeof t->name)
            return perr(e, file, line, vc, "name must be 1 to 63 letters, digits, '_', '-' or '.', got '%s'", val);
        strcpy(t->name, val);
        break;
    case K_SRAM:
    case K_FLASH:
    case K_LATENCY: {
        double x;
        if (parse_positive(val, &x) != NASC_OK)
            return perr(e, file, line, vc, "%s must be a positive number (%s), got '%s'", key_names[key],
                        key == K_LATENCY ? "milliseconds" : "kilobytes", val);
        *(key == K_SRAM ? &t->sram_kb : key == K_FLASH ? &t->flash_kb : &t->latency_ms) = x;
        break;
    }
    case K_DTYPE:
        if (!strcmp(val, "int8")) t->dtype_bytes = 1;
        else if (!strcmp(val, "fp32")) t->dtype_bytes = 4;
        else return perr(e, file, line, vc, "dtype must be int8 or fp32, got '%s'", val);
        break;
    case K_TABLE: {
        int n = val[0] == '/' || !dir ? snprintf(t->latency_table, sizeof t->latency_table, "%s", val)
                                      : snprintf(t->latency_table, sizeof t->latency_table, "%s/%s", dir, val);
        if (n < 0 || (size_t)n >= sizeof t->latency_table)
            return perr(e, file, line, vc, "latency_table path is too long");
        break; /* it may not exist yet: `nasc profile` writes it; the predictor reads it */
    }
    default: /* K_DESC */
        if (strlen(val) >= sizeof t->description)
            return perr(e, file, line, vc, "description is longer than %zu characters", sizeof t->description - 1);
        strcpy(t->description, val);
        break;
    }
    return NASC_OK;
#undef COL
}

int target_parse(Target *t, const char *text, const char *file, const char *dir, Err *e) {
    memset(t, 0, sizeof *t);
    int seen[K_COUNT] = {0};
    int line = 1;
    for (const char *p = text;; line++) {
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        const char *end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (parse_line(t, p, end, line, seen, file, dir, e) != NASC_OK) return NASC_ERR;
        if (!*eol) break;
        p = eol + 1;
    }
    /* Missing keys are reported at the end of the text. */
    const char *last = strrchr(text, '\n');
    int end_col = (int)strlen(last ? last + 1 : text) + 1;
    for (int k = 0; k < K_COUNT; k++)
        if (key_required[k] && !seen[k])
            return perr(e, file, line, end_col,
                        "missing required key '%s' at the end of the file (required: name, sram_kb, flash_kb, "
                        "latency_ms, dtype)",
                        key_names[k]);
    return NASC_OK;
}

int target_load(Target *t, const char *path, Err *e) {
    size_t n;
    char *text = file_read_all(path, &n, e);
    if (!text) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%s", e->msg);
        err_set(e, "target file: %s", msg);
        return NASC_ERR;
    }
    text = xrealloc(text, n + 1);
    text[n] = 0;
    if (strlen(text) != n) { /* a NUL byte: report where */
        size_t at = strlen(text);
        int line = 1, col = 1;
        for (size_t k = 0; k < at; k++) {
            if (text[k] == '\n') line++, col = 1;
            else col++;
        }
        free(text);
        return perr(e, path, line, col, "NUL byte: a target file is text");
    }
    char dir[TARGET_PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == path) snprintf(dir, sizeof dir, "/");
    else if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else snprintf(dir, sizeof dir, ".");
    int rc = target_parse(t, text, path, dir, e);
    if (rc == NASC_OK) snprintf(t->path, sizeof t->path, "%s", path);
    free(text);
    return rc;
}

/* The search folders, in order, into dirs[] (at most max); returns how many. */
static int target_dirs(char dirs[][TARGET_PATH_MAX], int max) {
    int n = 0;
    const char *env = getenv("NASC_TARGETS");
    while (env && *env && n < max) {
        const char *c = strchr(env, ':');
        size_t len = c ? (size_t)(c - env) : strlen(env);
        if (len > 0 && len < TARGET_PATH_MAX) snprintf(dirs[n++], TARGET_PATH_MAX, "%.*s", (int)len, env);
        env = c ? c + 1 : NULL;
    }
    if (n < max) snprintf(dirs[n++], TARGET_PATH_MAX, "targets");
    char exe[TARGET_PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0 && n < max) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if (strlen(exe) + 12 < TARGET_PATH_MAX) snprintf(dirs[n++], TARGET_PATH_MAX, "%s/../targets", exe);
        }
    }
    return n;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Appends the profile names found in dir (NAME.target) to the ", "-separated list, once each. */
static void list_names(const char *dir, char *list, size_t cap) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t nl = strlen(de->d_name);
        if (nl <= 7 || nl > 70 || !ends_with(de->d_name, ".target")) continue;
        char item[80], padded[1100];
        snprintf(item, sizeof item, ", %.*s, ", (int)(nl - 7), de->d_name);
        snprintf(padded, sizeof padded, ", %s, ", list);
        if (strstr(padded, item)) continue;
        size_t l = strlen(list);
        snprintf(list + l, cap - l, "%s%.*s", l ? ", " : "", (int)(nl - 7), de->d_name);
    }
    closedir(dp);
}

int target_find(Target *t, const char *name, Err *e) {
    if (!*name) {
        err_set(e, "--target needs a name (mcu, mobile, server) or a .target file");
        return NASC_ERR;
    }
    if (strchr(name, '/') || ends_with(name, ".target")) return target_load(t, name, e);
    if (!valid_name(name) || strlen(name) > 63) {
        err_set(e, "bad target name '%s' (a name is letters, digits, '_', '-', '.'; or give a path to a .target file)",
                name);
        return NASC_ERR;
    }
    char dirs[16][TARGET_PATH_MAX];
    int nd = target_dirs(dirs, 16);
    char path[TARGET_PATH_MAX + 80];
    for (int d = 0; d < nd; d++) {
        snprintf(path, sizeof path, "%.1023s/%.63s.target", dirs[d], name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fclose(f);
        return target_load(t, path, e);
    }
    char looked[300] = "", avail[1000] = "";
    for (int d = 0; d < nd; d++) {
        size_t l = strlen(looked);
        snprintf(looked + l, sizeof looked - l, "%s%.250s", d ? ", " : "", dirs[d]);
        list_names(dirs[d], avail, sizeof avail);
    }
    err_set(e, "unknown target '%s': no %s.target in %s (available: %.200s; or give a path to a .target file)", name,
            name, looked, avail[0] ? avail : "none found");
    return NASC_ERR;
}

void target_check(const Target *t, const CostReport *r, TargetFit *fit) {
    memset(fit, 0, sizeof *fit);
    fit->peak_bytes = cost_peak_bytes(r, t->dtype_bytes);
    fit->flash_bytes = cost_flash_bytes(r, t->dtype_bytes);
    fit->sram_ok = (double)fit->peak_bytes <= t->sram_kb * 1024.0;
    fit->flash_ok = (double)fit->flash_bytes <= t->flash_kb * 1024.0;
    if (r->has_latency) {
        fit->latency_ms = r->latency.median_ms;
        fit->latency_ok = fit->latency_ms <= t->latency_ms;
    } else {
        fit->latency_ms = NAN;
        fit->latency_ok = -1;
    }
    fit->fits = fit->sram_ok && fit->flash_ok && fit->latency_ok != 0;
}
