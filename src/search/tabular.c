/* tabular.c: loading and querying tabular benchmarks (format and lookup rules in tabular.h).
 *
 * CSV dialect (RFC 4180 plus what spreadsheets write): comma-separated, fields optionally in
 * double quotes ("" is a quote inside one; a quoted field may span lines), LF or CRLF line
 * ends, a UTF-8 byte-order mark and blank lines ignored, spaces around unquoted fields
 * trimmed. Every record must have as many fields as the header. Messages name the file, the
 * line (where the record starts) and the column (1-based field number and header name).
 *
 * Index: an open-addressing table maps arch strings to entries: exact arch -> row, and
 * canonical arch -> class (the mean of its rows' values, per column).
 */
#include "tabular.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>

enum { COL_ACC, COL_PARAMS, COL_MACS, COL_LAT, COL_PEAK, N_VALS };
static const char *val_names[N_VALS] = {"accuracy", "params", "macs", "latency_ms", "peak_bytes"};

typedef struct {
    char *key;
    int idx;
} MapSlot;

typedef struct {
    MapSlot *slot;
    size_t cap, n;
} Map;

struct Tabular {
    int n, n_fid, n_class;
    char **arch;      /* (n) exact arch, as to_arch prints it */
    double *val;      /* (n, N_VALS) NAN where empty */
    double *fid_ep;   /* (n_fid) E of each accuracy@E column, ascending */
    double *fid_acc;  /* (n, n_fid) NAN where empty */
    double *cval;     /* (n_class, N_VALS) class means */
    double *cfid;     /* (n_class, n_fid) */
    Map exact, canon; /* arch -> row, canonical arch -> class */
    const Space *space;
};

/* ------------------------------------------------------------------ string -> int map */
static uint64_t hash_str(const char *k) {
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

static void map_init(Map *m, size_t want) {
    m->cap = 64;
    while (m->cap < 2 * want) m->cap *= 2;
    m->n = 0;
    m->slot = xcalloc(m->cap, sizeof *m->slot);
}

static MapSlot *map_find(const Map *m, const char *key) {
    size_t i = (size_t)hash_str(key) & (m->cap - 1);
    while (m->slot[i].key && strcmp(m->slot[i].key, key) != 0) i = (i + 1) & (m->cap - 1);
    return &m->slot[i];
}

/* The index stored for key, or -1. */
static int map_get(const Map *m, const char *key) {
    const MapSlot *s = map_find(m, key);
    return s->key ? s->idx : -1;
}

/* Insert key -> idx unless present; returns the stored index. */
static int map_put(Map *m, const char *key, int idx) {
    if (2 * (m->n + 1) > m->cap) {
        Map g = {xcalloc(2 * m->cap, sizeof(MapSlot)), 2 * m->cap, m->n};
        for (size_t i = 0; i < m->cap; i++)
            if (m->slot[i].key) *map_find(&g, m->slot[i].key) = m->slot[i];
        free(m->slot);
        *m = g;
    }
    MapSlot *s = map_find(m, key);
    if (s->key) return s->idx;
    s->key = xstrdup(key);
    s->idx = idx;
    m->n++;
    return idx;
}

static void map_free(Map *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->slot[i].key);
    free(m->slot);
}

/* ------------------------------------------------------------------ CSV records */
typedef struct {
    const char *p, *end;
    int line; /* line of the next character */
} Csv;

typedef struct {
    char **f;
    int n, cap;
    int line; /* where the record starts */
} Record;

static void rec_clear(Record *r) {
    for (int i = 0; i < r->n; i++) free(r->f[i]);
    r->n = 0;
}

static void rec_push(Record *r, char *field) {
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->f = xrealloc(r->f, (size_t)r->cap * sizeof *r->f);
    }
    r->f[r->n++] = field;
}

/* Read one record. 1: got one (blank lines skipped); 0: end of input; -1: error in *e. */
static int csv_record(Csv *c, Record *r, const char *path, Err *e) {
    rec_clear(r);
    while (c->p < c->end && (*c->p == '\n' || *c->p == '\r')) { /* blank lines */
        if (*c->p == '\n') c->line++;
        c->p++;
    }
    if (c->p >= c->end) return 0;
    r->line = c->line;
    size_t cap = 64;
    char *buf = xmalloc(cap);
    for (;;) { /* one field per pass */
        size_t n = 0;
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
        if (c->p < c->end && *c->p == '"') {
            int qline = c->line;
            c->p++;
            for (;;) {
                if (c->p >= c->end) {
                    err_set(e, "%s, line %d, column %d: a quoted field is not closed", path, qline, r->n + 1);
                    free(buf);
                    return -1;
                }
                char ch = *c->p++;
                if (ch == '"') {
                    if (c->p < c->end && *c->p == '"') c->p++;
                    else break;
                }
                if (ch == '\n') c->line++;
                if (n + 2 > cap) buf = xrealloc(buf, cap *= 2);
                buf[n++] = ch;
            }
            while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
            if (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
                err_set(e, "%s, line %d, column %d: unexpected '%c' after a closing quote", path, c->line, r->n + 1,
                        *c->p);
                free(buf);
                return -1;
            }
        } else {
            while (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
                if (n + 2 > cap) buf = xrealloc(buf, cap *= 2);
                buf[n++] = *c->p++;
            }
            while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t')) n--;
        }
        buf[n] = 0;
        rec_push(r, xstrdup(buf));
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == '\r') c->p++;
        if (c->p < c->end && *c->p == '\n') {
            c->p++;
            c->line++;
        }
        break;
    }
    free(buf);
    return 1;
}

/* A finite number filling the whole field: NASC_OK, or NASC_ERR (also for an empty field). */
static int parse_num(const char *s, double *out) {
    if (!*s) return NASC_ERR;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) return NASC_ERR;
    *out = v;
    return NASC_OK;
}

/* ------------------------------------------------------------------ load */
void tabular_free(Tabular *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->arch[i]);
    free(t->arch);
    free(t->val);
    free(t->fid_ep);
    free(t->fid_acc);
    free(t->cval);
    free(t->cfid);
    if (t->exact.slot) map_free(&t->exact);
    if (t->canon.slot) map_free(&t->canon);
    free(t);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Class means of every column (over the rows where the column is not empty). */
static void build_classes(Tabular *t, const int *cls) {
    int nv = N_VALS + t->n_fid;
    double *sum = xcalloc((size_t)t->n_class * nv, sizeof *sum);
    int *cnt = xcalloc((size_t)t->n_class * nv, sizeof *cnt);
    for (int i = 0; i < t->n; i++)
        for (int j = 0; j < nv; j++) {
            double v = j < N_VALS ? t->val[(size_t)i * N_VALS + j] : t->fid_acc[(size_t)i * t->n_fid + j - N_VALS];
            if (isnan(v)) continue;
            sum[(size_t)cls[i] * nv + j] += v;
            cnt[(size_t)cls[i] * nv + j]++;
        }
    t->cval = xmalloc((size_t)t->n_class * N_VALS * sizeof *t->cval);
    t->cfid = xmalloc(((size_t)t->n_class * t->n_fid + 1) * sizeof *t->cfid);
    for (int c = 0; c < t->n_class; c++)
        for (int j = 0; j < nv; j++) {
            size_t k = (size_t)c * nv + j;
            double v = cnt[k] ? sum[k] / cnt[k] : NAN;
            if (j < N_VALS) t->cval[(size_t)c * N_VALS + j] = v;
            else t->cfid[(size_t)c * t->n_fid + j - N_VALS] = v;
        }
    free(sum);
    free(cnt);
}

Tabular *tabular_load(const char *path, const Space *space, Err *e) {
    size_t size;
    char *text = file_read_all(path, &size, e);
    if (!text) return NULL;
    Csv c = {text, text + size, 1};
    if (size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) c.p += 3;
    Tabular *t = xcalloc(1, sizeof *t);
    t->space = space;
    Record r = {0};
    int *col_of = NULL, *fid_col = NULL, *cls = NULL, ncols = 0, cap_rows = 0, ok = 0;
    int col_val[N_VALS], col_arch = -1;
    int *first_line = NULL;
    for (int j = 0; j < N_VALS; j++) col_val[j] = -1;

    int rc = csv_record(&c, &r, path, e);
    if (rc < 0) goto done;
    if (rc == 0) {
        err_set(e, "%s: the file is empty (expected a header row with columns arch and accuracy)", path);
        goto done;
    }
    ncols = r.n;
    col_of = xmalloc((size_t)ncols * sizeof *col_of);
    fid_col = xmalloc((size_t)ncols * sizeof *fid_col);
    for (int j = 0; j < ncols; j++) {
        const char *h = r.f[j];
        col_of[j] = -1;
        for (int k = 0; k < j; k++)
            if (*h && strcmp(h, r.f[k]) == 0) {
                err_set(e, "%s, line %d, column %d: header column '%s' repeats column %d", path, r.line, j + 1, h,
                        k + 1);
                goto done;
            }
        if (strcmp(h, "arch") == 0) col_arch = j;
        for (int v = 0; v < N_VALS; v++)
            if (strcmp(h, val_names[v]) == 0) col_val[v] = j;
        if (strncmp(h, "accuracy@", 9) == 0) {
            double ep;
            if (parse_num(h + 9, &ep) != NASC_OK || !(ep > 0)) {
                err_set(e, "%s, line %d, column %d: header '%s': expected accuracy@E with E a number of epochs > 0",
                        path, r.line, j + 1, h);
                goto done;
            }
            t->fid_ep = xrealloc(t->fid_ep, (size_t)(t->n_fid + 1) * sizeof *t->fid_ep);
            t->fid_ep[t->n_fid++] = ep;
        }
    }
    if (col_arch < 0 || col_val[COL_ACC] < 0) {
        err_set(e, "%s, line %d: the header has no '%s' column (it needs arch and accuracy; found %d columns)", path,
                r.line, col_arch < 0 ? "arch" : "accuracy", ncols);
        goto done;
    }
    /* accuracy@E columns in ascending E: fid_col[j] = slot of column j, or -1 */
    if (t->n_fid > 1) qsort(t->fid_ep, (size_t)t->n_fid, sizeof *t->fid_ep, cmp_double);
    for (int j = 0; j < ncols; j++) {
        fid_col[j] = -1;
        double ep;
        if (strncmp(r.f[j], "accuracy@", 9) == 0 && parse_num(r.f[j] + 9, &ep) == NASC_OK)
            for (int k = 0; k < t->n_fid; k++)
                if (t->fid_ep[k] == ep) {
                    if (k > 0 && t->fid_ep[k - 1] == ep) {
                        err_set(e, "%s, line %d, column %d: two columns give the accuracy after %g epochs", path,
                                r.line, j + 1, ep);
                        goto done;
                    }
                    fid_col[j] = k;
                }
    }
    for (int j = 0; j < ncols; j++)
        if (j != col_arch) {
            int v = -1;
            for (int k = 0; k < N_VALS; k++)
                if (col_val[k] == j) v = k;
            col_of[j] = v;
        }

    map_init(&t->exact, size / 64 + 16); /* grows as needed */
    map_init(&t->canon, size / 64 + 16);
    int m[SPACE_MAX_DIMS];
    while ((rc = csv_record(&c, &r, path, e)) == 1) {
        if (r.n != ncols) {
            err_set(e, "%s, line %d: %d fields, but the header has %d columns", path, r.line, r.n, ncols);
            goto done;
        }
        if (t->n == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 1024;
            t->arch = xrealloc(t->arch, (size_t)cap_rows * sizeof *t->arch);
            t->val = xrealloc(t->val, (size_t)cap_rows * N_VALS * sizeof *t->val);
            t->fid_acc = xrealloc(t->fid_acc, ((size_t)cap_rows * t->n_fid + 1) * sizeof *t->fid_acc);
            cls = xrealloc(cls, (size_t)cap_rows * sizeof *cls);
            first_line = xrealloc(first_line, (size_t)cap_rows * sizeof *first_line);
        }
        int i = t->n;
        const char *a = r.f[col_arch];
        if (!*a) {
            err_set(e, "%s, line %d, column %d (arch): the arch is missing", path, r.line, col_arch + 1);
            goto done;
        }
        Err pe = {{0}};
        if (space->ops->from_arch(space, a, m, &pe) != NASC_OK) {
            err_set(e, "%s, line %d, column %d (arch): %s", path, r.line, col_arch + 1, pe.msg);
            goto done;
        }
        for (int j = 0; j < ncols; j++) {
            double v = NAN;
            int is_acc = col_of[j] == COL_ACC || fid_col[j] >= 0;
            if (col_of[j] < 0 && fid_col[j] < 0) continue;
            if (!*r.f[j] && col_of[j] != COL_ACC) { /* optional columns may be empty */
            } else if (!*r.f[j]) {
                err_set(e, "%s, line %d, column %d (accuracy): the accuracy is missing", path, r.line, j + 1);
                goto done;
            } else if (parse_num(r.f[j], &v) != NASC_OK) {
                err_set(e, "%s, line %d, column %d (%s): '%.40s' is not a number", path, r.line, j + 1,
                        col_of[j] >= 0 ? val_names[col_of[j]] : "accuracy@E", r.f[j]);
                goto done;
            } else if (is_acc && !(v >= 0 && v <= 1)) {
                err_set(e, "%s, line %d, column %d (%s): %s is outside [0, 1] (accuracies are fractions)", path,
                        r.line, j + 1, col_of[j] >= 0 ? val_names[col_of[j]] : "accuracy@E", r.f[j]);
                goto done;
            } else if (!is_acc && v < 0) {
                err_set(e, "%s, line %d, column %d (%s): %s is negative", path, r.line, j + 1, val_names[col_of[j]],
                        r.f[j]);
                goto done;
            }
            if (col_of[j] >= 0) t->val[(size_t)i * N_VALS + col_of[j]] = v;
            else t->fid_acc[(size_t)i * t->n_fid + fid_col[j]] = v;
        }
        for (int j = 0; j < N_VALS; j++)
            if (col_val[j] < 0) t->val[(size_t)i * N_VALS + j] = NAN;
        t->arch[i] = space->ops->to_arch(space, m);
        int prev = map_put(&t->exact, t->arch[i], i);
        if (prev != i) {
            err_set(e, "%s, line %d, column %d (arch): duplicate arch %s (first on line %d)", path, r.line,
                    col_arch + 1, t->arch[i], first_line[prev]);
            free(t->arch[i]);
            goto done;
        }
        first_line[i] = r.line;
        char *ca = space_canonical_arch(space, m);
        cls[i] = map_put(&t->canon, ca, t->n_class);
        if (cls[i] == t->n_class) t->n_class++;
        free(ca);
        t->n++;
    }
    if (rc < 0) goto done;
    if (t->n == 0) {
        err_set(e, "%s: no data rows after the header", path);
        goto done;
    }
    build_classes(t, cls);
    ok = 1;
done:
    rec_clear(&r);
    free(r.f);
    free(col_of);
    free(fid_col);
    free(cls);
    free(first_line);
    free(text);
    if (!ok) {
        tabular_free(t);
        return NULL;
    }
    return t;
}

/* ------------------------------------------------------------------ queries */
int tabular_lookup(const Tabular *t, const int *m, Fidelity fid, double full_epochs, TabularEntry *out) {
    char *a = t->space->ops->to_arch(t->space, m);
    int row = map_get(&t->exact, a), cl = -1;
    free(a);
    if (row < 0) {
        char *ca = space_canonical_arch(t->space, m);
        cl = map_get(&t->canon, ca);
        free(ca);
        if (cl < 0) return NASC_ERR;
    }
    const double *v = row >= 0 ? &t->val[(size_t)row * N_VALS] : &t->cval[(size_t)cl * N_VALS];
    const double *fa = row >= 0 ? &t->fid_acc[(size_t)row * t->n_fid] : &t->cfid[(size_t)cl * t->n_fid];
    out->accuracy = v[COL_ACC];
    out->params = v[COL_PARAMS];
    out->macs = v[COL_MACS];
    out->latency_ms = v[COL_LAT];
    out->peak_bytes = v[COL_PEAK];
    out->row = row;
    if (t->n_fid > 0 && fid.epochs < full_epochs * (1 - 1e-9)) {
        int k = 0;
        for (int j = 0; j < t->n_fid; j++)
            if (t->fid_ep[j] <= fid.epochs * (1 + 1e-9)) k = j;
        if (!isnan(fa[k])) out->accuracy = fa[k];
    }
    return NASC_OK;
}

int tabular_rows(const Tabular *t) { return t->n; }
const char *tabular_arch(const Tabular *t, int row) { return t->arch[row]; }
double tabular_accuracy(const Tabular *t, int row) { return t->val[(size_t)row * N_VALS + COL_ACC]; }
