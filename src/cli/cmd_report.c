/* cmd_report.c: `nasc report DB`: what a search's trial database holds: the experiment's
 * settings, trial counts by status, the best trials by score (the validation accuracy, or
 * the MnasNet reward of an --objective mnas search) and the Pareto front (accuracy up, params
 * and MACs down), both at the highest fidelity trained (a low-fidelity accuracy is not
 * comparable with a full one). It opens the database read-only, so it can watch a search that
 * is still running.
 *
 * --out FILE.html writes one self-contained page (atomically): settings, summary, the Pareto
 * front, every trial (front members highlighted, arch strings HTML-escaped) and four plots
 * embedded as base64 PNG data URIs: accuracy vs params, vs MACs, vs latency (when trials have
 * one) and best-so-far accuracy vs trial number. The plots come from gnuplot (gnuplot-nox;
 * $NASC_GNUPLOT names another program), run on a script and data files in a temporary folder;
 * without it the page is still written, says why it has no plots, and the command warns and
 * exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../search/driver.h"
#include "../store/trials.h"
#include "cli.h"

extern char **environ;

static const char usage[] = "usage: nasc report DB [--top N] [--json] [--out REPORT.html]\n"
                            "  DB is the trial database of 'nasc search --db'.";

/* What the report shows, read once from the database. */
typedef struct {
    const char *path;
    TrialsSetting *meta, *set;
    int nmeta, nset;
    TrialRow *rows; /* (n) seq order */
    long n;
    const char *objective; /* the settings' objective ("acc" when absent: schema 1, or an acc search) */
    int mnas;
    long counts[4]; /* done, infeasible, failed (TrialStatus order), running */
    long reused;
    double train_s;
    const TrialRow **best; /* (nbest) finished trained trials, best first (cmp_best) */
    long nbest;
    double top_fid;   /* the highest fidelity (epochs x fraction) of a finished trained trial */
    char *on_front;   /* (n) 1: row i is on the Pareto front at top_fid */
    long *front;      /* (nfront) row indices of the front, by params */
    long nfront;
} Report;

static double row_score(const TrialRow *t) { return isnan(t->r.score) ? t->r.val_acc : t->r.score; }
static double row_fid(const TrialRow *t) { return t->fid.epochs * t->fid.fraction; }
static double row_latency(const TrialRow *t) { return search_latency(t->r.latency_ms, t->r.predicted_latency_ms); }
/* A finished, trained (not reused) trial: what the best list, the front and the plots are made of. */
static int row_trained(const TrialRow *t) { return !t->running && t->r.status == TRIAL_OK && t->reuse_of < 0; }
static int row_top(const Report *R, const TrialRow *t) {
    return row_trained(t) && fabs(row_fid(t) - R->top_fid) <= 1e-9 * fmax(1, R->top_fid);
}

/* Best first: higher fidelity (epochs x fraction), then higher score, then ask order. */
static int cmp_best(const void *pa, const void *pb) {
    const TrialRow *a = *(const TrialRow *const *)pa, *b = *(const TrialRow *const *)pb;
    double fa = row_fid(a), fb = row_fid(b);
    if (fa != fb) return fa > fb ? -1 : 1;
    double sa = row_score(a), sb = row_score(b);
    if (sa != sb) return sa > sb ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static const Report *front_sort_ctx;
static int cmp_front(const void *pa, const void *pb) {
    const TrialRow *a = &front_sort_ctx->rows[*(const long *)pa], *b = &front_sort_ctx->rows[*(const long *)pb];
    if (a->r.params != b->r.params) return a->r.params < b->r.params ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static const char *setting(const Report *R, const char *key) {
    for (int i = 0; i < R->nset; i++)
        if (!strcmp(R->set[i].key, key)) return R->set[i].value;
    return NULL;
}

static void report_free(Report *R) {
    free(R->best);
    free(R->on_front);
    free(R->front);
    trials_rows_free(R->rows, R->n);
    trials_settings_free(R->meta, R->nmeta);
    trials_settings_free(R->set, R->nset);
}

/* Counts, the best list and the Pareto front of the rows read. */
static void report_analyze(Report *R) {
    R->objective = setting(R, "objective");
    if (!R->objective || !R->objective[0]) R->objective = "acc";
    R->mnas = strcmp(R->objective, "acc") != 0;
    R->best = xcalloc((size_t)R->n + 1, sizeof *R->best);
    R->on_front = xcalloc((size_t)R->n + 1, 1);
    R->top_fid = -1;
    for (long i = 0; i < R->n; i++) {
        const TrialRow *t = &R->rows[i];
        R->counts[t->running ? 3 : (int)t->r.status]++;
        if (t->reuse_of >= 0) R->reused++;
        else if (!isnan(t->r.train_seconds)) R->train_s += t->r.train_seconds;
        if (row_trained(t)) {
            R->best[R->nbest++] = t;
            R->top_fid = fmax(R->top_fid, row_fid(t));
        }
    }
    qsort(R->best, (size_t)R->nbest, sizeof *R->best, cmp_best);
    /* The front: search_pareto over the trained trials at the top fidelity. */
    SearchPoint *pts = xcalloc((size_t)R->n + 1, sizeof *pts);
    long *idx = xcalloc((size_t)R->n + 1, sizeof *idx);
    int np = 0;
    for (long i = 0; i < R->n; i++) {
        const TrialRow *t = &R->rows[i];
        if (!row_top(R, t)) continue;
        pts[np] = (SearchPoint){.seq = t->seq, .val_acc = t->r.val_acc, .params = t->r.params, .macs = t->r.macs};
        idx[np++] = i;
    }
    int *front = xcalloc((size_t)np + 1, sizeof *front);
    search_pareto(pts, np, front);
    R->front = xcalloc((size_t)np + 1, sizeof *R->front);
    for (int k = 0; k < np; k++)
        if (front[k]) R->on_front[idx[k]] = 1, R->front[R->nfront++] = idx[k];
    front_sort_ctx = R;
    qsort(R->front, (size_t)R->nfront, sizeof *R->front, cmp_front);
    free(front);
    free(idx);
    free(pts);
}

/* ------------------------------------------------------------------ text and JSON */
static void print_count(char *buf, size_t n, long long v) {
    if (v < 0) snprintf(buf, n, "-");
    else snprintf(buf, n, "%lld", v);
}

static void print_rows(FILE *f, const Report *R, const TrialRow *const *list, long n) {
    fprintf(f, "  %6s %8s%s %7s %6s %10s %12s %10s %10s  %s\n", "seq", "val_acc", R->mnas ? "    score" : "", "epochs",
            "frac", "params", "macs", "peak_B", "lat_ms", "arch");
    for (long i = 0; i < n; i++) {
        const TrialRow *t = list[i];
        char p[32], m[32], pk[32], sc[32] = "";
        print_count(p, sizeof p, t->r.params);
        print_count(m, sizeof m, t->r.macs);
        print_count(pk, sizeof pk, t->r.peak_bytes);
        if (R->mnas) snprintf(sc, sizeof sc, " %8.4f", row_score(t));
        fprintf(f, "  %6ld %8.4f%s %7g %6g %10s %12s %10s %10.3f  %s\n", t->seq, t->r.val_acc, sc, t->fid.epochs,
                t->fid.fraction, p, m, pk, row_latency(t), t->arch);
    }
}

static void json_raw_key(Json *j, const char *key) { fprintf(j->f, "%s\"%s\": ", j->n++ ? ", " : "", key); }

static void json_trial(FILE *f, const TrialRow *t) {
    Json o;
    json_begin(&o, f);
    json_int(&o, "seq", t->seq);
    json_str(&o, "arch", t->arch);
    json_num(&o, "val_acc", t->r.val_acc);
    json_num(&o, "score", row_score(t));
    json_num(&o, "epochs", t->fid.epochs);
    json_num(&o, "fraction", t->fid.fraction);
    json_num(&o, "params", t->r.params < 0 ? NAN : (double)t->r.params);
    json_num(&o, "macs", t->r.macs < 0 ? NAN : (double)t->r.macs);
    json_num(&o, "peak_bytes", t->r.peak_bytes < 0 ? NAN : (double)t->r.peak_bytes);
    json_num(&o, "flash_bytes", t->r.flash_bytes < 0 ? NAN : (double)t->r.flash_bytes);
    json_num(&o, "latency_ms", t->r.latency_ms);
    json_num(&o, "predicted_latency_ms", t->r.predicted_latency_ms);
    json_num(&o, "train_seconds", t->r.train_seconds);
    json_int(&o, "worker", t->worker);
    json_int(&o, "attempts", t->attempts);
    fputc('}', f);
}

static void json_list(Json *j, const char *key, const TrialRow *const *list, long n) {
    json_raw_key(j, key);
    fputc('[', j->f);
    for (long i = 0; i < n; i++) {
        if (i) fputs(", ", j->f);
        json_trial(j->f, list[i]);
    }
    fputc(']', j->f);
}

/* ------------------------------------------------------------------ plots (gnuplot) */
enum { PLOT_PARAMS, PLOT_MACS, PLOT_LATENCY, PLOT_PROGRESS, PLOT_COUNT };
static const char *const plot_file[PLOT_COUNT] = {"acc_params.png", "acc_macs.png", "acc_latency.png",
                                                  "progress.png"};

typedef struct {
    unsigned char *png[PLOT_COUNT]; /* file contents, NULL when not drawn */
    size_t len[PLOT_COUNT];
    int n;
    char note[512]; /* why some or all plots are missing ("" when none is) */
} Plots;

static double plot_x(const TrialRow *t, int which) {
    if (which == PLOT_PARAMS) return t->r.params > 0 ? (double)t->r.params : NAN;
    if (which == PLOT_MACS) return t->r.macs > 0 ? (double)t->r.macs : NAN;
    double l = row_latency(t);
    return l > 0 ? l : NAN;
}

static FILE *open_in(const char *dir, const char *name, char *path, size_t npath) {
    snprintf(path, npath, "%s/%s", dir, name);
    return fopen(path, "w");
}

/* Writes the data files of the scatter plot `which` (x = params, MACs or latency) into dir:
 * pts_W.dat (trials off the front), front_W.dat (front members), step_W.dat (the best accuracy
 * at this x or less: the 2-D front of this plot). Returns the number of points with an x, and
 * in *xmin and *xmax their range. */
static int write_scatter(const Report *R, const char *dir, int which, int *noff, double *xmin, double *xmax) {
    char path[1100], name[32];
    snprintf(name, sizeof name, "pts_%d.dat", which);
    FILE *off = open_in(dir, name, path, sizeof path);
    snprintf(name, sizeof name, "front_%d.dat", which);
    FILE *on = open_in(dir, name, path, sizeof path);
    snprintf(name, sizeof name, "step_%d.dat", which);
    FILE *step = open_in(dir, name, path, sizeof path);
    int n = 0;
    *noff = 0;
    *xmin = INFINITY, *xmax = -INFINITY;
    double *xs = xcalloc((size_t)R->n + 1, sizeof *xs), *ys = xcalloc((size_t)R->n + 1, sizeof *ys);
    if (off && on && step) {
        for (long i = 0; i < R->n; i++) {
            const TrialRow *t = &R->rows[i];
            double x = plot_x(t, which);
            if (!row_top(R, t) || isnan(x)) continue;
            fprintf(R->on_front[i] ? on : off, "%.10g %.10g %ld\n", x, t->r.val_acc, t->seq);
            if (!R->on_front[i]) (*noff)++;
            xs[n] = x, ys[n] = t->r.val_acc, n++;
            *xmin = fmin(*xmin, x), *xmax = fmax(*xmax, x);
        }
        /* Staircase: sort by x (insertion sort: reports hold thousands of trials at most). */
        for (int i = 1; i < n; i++)
            for (int k = i; k > 0 && (xs[k] < xs[k - 1] || (xs[k] == xs[k - 1] && ys[k] > ys[k - 1])); k--) {
                double tx = xs[k], ty = ys[k];
                xs[k] = xs[k - 1], ys[k] = ys[k - 1], xs[k - 1] = tx, ys[k - 1] = ty;
            }
        double best = -INFINITY;
        for (int i = 0; i < n; i++)
            if (ys[i] > best) best = ys[i], fprintf(step, "%.10g %.10g\n", xs[i], ys[i]);
        if (n) fprintf(step, "%.10g %.10g\n", *xmax, best);
    }
    free(xs);
    free(ys);
    int ok = off && on && step;
    if (off && fclose(off)) ok = 0;
    if (on && fclose(on)) ok = 0;
    if (step && fclose(step)) ok = 0;
    return ok ? n : -1;
}

/* progress.dat: every trained trial (seq, val_acc, 1 when at the top fidelity); best.dat: the
 * best accuracy (and score) so far at the top fidelity, in ask order. Returns the number of
 * trained trials (-1 when a file cannot be written), *nlow those below the top fidelity. */
static int write_progress(const Report *R, const char *dir, int *nlow) {
    char path[1100];
    FILE *all = open_in(dir, "progress.dat", path, sizeof path);
    FILE *best = open_in(dir, "best.dat", path, sizeof path);
    int n = 0;
    *nlow = 0;
    if (all && best) {
        double ba = -INFINITY, bs = -INFINITY;
        for (long i = 0; i < R->n; i++) {
            const TrialRow *t = &R->rows[i];
            if (!row_trained(t)) continue;
            fprintf(all, "%ld %.10g %d\n", t->seq, t->r.val_acc, row_top(R, t));
            n++;
            if (!row_top(R, t)) {
                (*nlow)++;
                continue;
            }
            ba = fmax(ba, t->r.val_acc), bs = fmax(bs, row_score(t));
            fprintf(best, "%ld %.10g %.10g\n", t->seq, ba, bs);
        }
        if (isfinite(ba)) fprintf(best, "%ld %.10g %.10g\n", R->rows[R->n - 1].seq, ba, bs);
    }
    int ok = all && best;
    if (all && fclose(all)) ok = 0;
    if (best && fclose(best)) ok = 0;
    return ok ? n : -1;
}

/* Runs prog on script (stdin /dev/null, stdout and stderr into log). Returns the exit status,
 * or -1 with *spawn_errno set when it could not be started. */
static int run_program(const char *prog, const char *script, const char *log, int *spawn_errno) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {(char *)prog, (char *)script, NULL};
    pid_t pid;
    fflush(NULL);
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        *spawn_errno = rc;
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            *spawn_errno = errno;
            return -1;
        }
    if (WIFEXITED(status)) {
        /* The shell's "command not found" (127) after exec failed in the child. */
        if (WEXITSTATUS(status) == 127) *spawn_errno = ENOENT;
        return WEXITSTATUS(status);
    }
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The first line of the log that mentions an error (or its first line), for the warning. */
static void log_excerpt(const char *log, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen(log, "r");
    if (!f) return;
    char line[400], first[400] = "";
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!first[0] && line[strspn(line, " ^")]) snprintf(first, sizeof first, "%s", line);
        if (strstr(line, "rror")) {
            snprintf(out, n, "%s", line + strspn(line, " "));
            fclose(f);
            return;
        }
    }
    snprintf(out, n, "%s", first);
    fclose(f);
}

static const char gp_head[] =
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "    set terminal pngcairo size 760,460 enhanced font 'sans,10'\n"
    "} else {\n"
    "    set terminal png size 760,460\n"
    "}\n"
    "set datafile missing '?'\n"
    "set grid lc rgb '#dddddd'\n"
    "set key below\n"
    "set offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05\n"
    "set ylabel 'validation accuracy'\n";

/* Draws the plots with gnuplot into a temporary folder and reads them back. Never fails:
 * what could not be drawn is said in P->note. */
static void plots_make(const Report *R, Plots *P) {
    memset(P, 0, sizeof *P);
    const char *prog = getenv("NASC_GNUPLOT");
    if (!prog || !prog[0]) prog = "gnuplot";
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !tmp[0] || strpbrk(tmp, "'\"\\\n") || strlen(tmp) > 400) tmp = "/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/nasc_report_XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        snprintf(P->note, sizeof P->note, "cannot make a temporary folder in %s: %s", tmp, strerror(errno));
        return;
    }
    double lo[3], hi[3];
    int npts[3], noff[3];
    for (int w = 0; w < 3; w++) npts[w] = write_scatter(R, dir, w, &noff[w], &lo[w], &hi[w]);
    int nlow = 0, nprog = write_progress(R, dir, &nlow);
    char script[1100], log[1100];
    FILE *g = open_in(dir, "plots.gp", script, sizeof script);
    if (npts[0] < 0 || npts[1] < 0 || npts[2] < 0 || nprog < 0 || !g) {
        snprintf(P->note, sizeof P->note, "cannot write the plot data in %.440s", dir);
        if (g) fclose(g);
        goto clean;
    }
    if (nprog == 0) {
        snprintf(P->note, sizeof P->note, "no trial has finished training yet: nothing to plot");
        fclose(g);
        goto clean;
    }
    fputs(gp_head, g);
    fprintf(g, "cd '%s'\n", dir);
    static const char *const xlabel[3] = {"parameters", "MACs (multiply-accumulates per image)",
                                          "latency (ms, batch 1)"};
    static const char *const xname[3] = {"params", "MACs", "latency"};
    for (int w = 0; w < 3; w++) {
        if (npts[w] == 0) continue;
        fprintf(g, "set output '%s'\nset title 'validation accuracy vs %s (%d trials at the highest fidelity)'\n",
                plot_file[w], xname[w], npts[w]);
        fprintf(g, "set xlabel '%s'\n%s\n", xlabel[w],
                lo[w] > 0 && hi[w] / lo[w] > 30 ? "set logscale x" : "unset logscale x");
        fprintf(g, "plot ");
        if (noff[w]) fprintf(g, "'pts_%d.dat' using 1:2 with points pt 7 ps 0.7 lc rgb '#9a9a9a' title 'trial', ", w);
        fprintf(g,
                "'step_%d.dat' using 1:2 with steps lw 1.5 dt 2 lc rgb '#1f77b4' title 'best accuracy at this %s "
                "or less', "
                "'front_%d.dat' using 1:2 with points pt 7 ps 1.3 lc rgb '#d62728' title 'Pareto front (accuracy vs "
                "params and MACs)'\n",
                w, xname[w], w);
    }
    fprintf(g, "set output '%s'\nunset logscale x\nset title 'accuracy by trial (%d trained)'\n",
            plot_file[PLOT_PROGRESS], nprog);
    fprintf(g, "set xlabel 'trial (ask order)'\n");
    fprintf(g, "plot 'progress.dat' using 1:($3 > 0 ? $2 : 1/0) with points pt 7 ps 0.7 lc rgb '#9a9a9a' title 'trial', ");
    if (nlow)
        fprintf(g, "'progress.dat' using 1:($3 > 0 ? 1/0 : $2) with points pt 6 ps 0.6 lc rgb '#bcbd22' title 'trial "
                   "at a lower fidelity', ");
    fprintf(g, "'best.dat' using 1:2 with steps lw 2 lc rgb '#d62728' title 'best accuracy so far'");
    if (R->mnas) fprintf(g, ", 'best.dat' using 1:3 with steps lw 1.5 dt 2 lc rgb '#1f77b4' title 'best score so far'");
    fputc('\n', g);
    if (fclose(g)) {
        snprintf(P->note, sizeof P->note, "cannot write the plot script in %.440s", dir);
        goto clean;
    }
    snprintf(log, sizeof log, "%s/gnuplot.log", dir);
    int serr = 0;
    int st = run_program(prog, script, log, &serr);
    if (st < 0 || serr == ENOENT) {
        if (serr == ENOENT)
            snprintf(P->note, sizeof P->note, "%s was not found (install gnuplot-nox, or set NASC_GNUPLOT)", prog);
        else
            snprintf(P->note, sizeof P->note, "cannot run %s: %s", prog, strerror(serr));
        goto clean;
    }
    if (st != 0) {
        char ex[256];
        log_excerpt(log, ex, sizeof ex);
        snprintf(P->note, sizeof P->note, "%s failed (exit status %d)%s%s", prog, st, ex[0] ? ": " : "", ex);
    }
    for (int w = 0; w < PLOT_COUNT; w++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, plot_file[w]);
        size_t len = 0;
        Err e;
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        unsigned char *png = file_read_all(path, &len, &e);
        if (png && len > 8 && !memcmp(png, "\x89PNG", 4)) {
            P->png[w] = png, P->len[w] = len, P->n++;
        } else {
            free(png);
            if (!P->note[0]) snprintf(P->note, sizeof P->note, "%s wrote no PNG image in %s", prog, plot_file[w]);
        }
        unlink(path);
    }
clean:;
    static const char *const junk[] = {"pts_0.dat",  "pts_1.dat",   "pts_2.dat",    "front_0.dat", "front_1.dat",
                                       "front_2.dat", "step_0.dat", "step_1.dat",   "step_2.dat",  "progress.dat",
                                       "best.dat",    "plots.gp",   "gnuplot.log"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, junk[i]);
        unlink(path);
    }
    for (int w = 0; w < PLOT_COUNT; w++) { /* images of a failed run that were not read */
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, plot_file[w]);
        unlink(path);
    }
    rmdir(dir);
}

static void plots_free(Plots *P) {
    for (int w = 0; w < PLOT_COUNT; w++) free(P->png[w]);
}

/* ------------------------------------------------------------------ HTML */
static void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void base64(FILE *f, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        fputc(tab[v >> 18 & 63], f);
        fputc(tab[v >> 12 & 63], f);
        fputc(i + 1 < n ? tab[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? tab[v & 63] : '=', f);
    }
}

/* A table cell with a number, "-" when unknown. */
static void td_num(FILE *f, double v, const char *fmt) {
    fputs("<td class=n>", f);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("-", f);
    fputs("</td>", f);
}

static void td_count(FILE *f, long long v) { td_num(f, v < 0 ? NAN : (double)v, "%.0f"); }

static const char css[] =
    "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}"
    "th{background:#f2f2f2;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.pareto td{background:#fde2e2;font-weight:bold}tr.reuse td{color:#888}tr.bad td{color:#a33}"
    "code{font-size:.95em}.arch{font-family:monospace;font-size:.9em}"
    ".plots img{margin:4px;border:1px solid #ddd;max-width:48%}.note{background:#fff4d6;padding:.5em}";

static void html_trial_head(FILE *f, const Report *R) {
    fprintf(f, "<tr><th>seq</th><th>arch</th><th>status</th><th>epochs</th><th>data</th><th>val acc</th>%s"
               "<th>params</th><th>MACs</th><th>peak KB</th><th>flash KB</th><th>latency ms</th><th>seconds</th>"
               "<th>rank</th><th>note</th></tr>\n",
            R->mnas ? "<th>score</th>" : "");
}

static void html_trial_row(FILE *f, const Report *R, const TrialRow *t, int front) {
    const char *cls = front ? " class=pareto" : t->reuse_of >= 0 ? " class=reuse"
                                            : !t->running && t->r.status != TRIAL_OK ? " class=bad"
                                                                                       : "";
    fprintf(f, "<tr%s><td class=n>%ld</td><td class=arch>", cls, t->seq);
    html_esc(f, t->arch);
    fprintf(f, "</td><td>%s%s</td>", trials_status_name(t), front ? " &#9733;" : "");
    td_num(f, t->fid.epochs, "%g");
    td_num(f, t->fid.fraction * 100, "%g%%");
    td_num(f, t->r.val_acc, "%.4f");
    if (R->mnas) td_num(f, t->r.status == TRIAL_OK && !t->running ? row_score(t) : NAN, "%.4f");
    td_count(f, t->r.params);
    td_count(f, t->r.macs);
    td_num(f, t->r.peak_bytes < 0 ? NAN : t->r.peak_bytes / 1024.0, "%.1f");
    td_num(f, t->r.flash_bytes < 0 ? NAN : t->r.flash_bytes / 1024.0, "%.1f");
    double lat = row_latency(t);
    fputs("<td class=n>", f);
    if (isfinite(lat)) fprintf(f, "%.4g%s", lat, isnan(t->r.latency_ms) ? " (pred.)" : "");
    else fputs("-", f);
    fputs("</td>", f);
    td_num(f, t->r.train_seconds, "%.2f");
    fprintf(f, "<td class=n>%d</td><td>", t->worker);
    if (t->reuse_of >= 0) fprintf(f, "result of trial %ld", t->reuse_of);
    else if (t->attempts > 1) fprintf(f, "%d attempts. ", t->attempts);
    if (t->reuse_of < 0 && t->error) html_esc(f, t->error);
    fputs("</td></tr>\n", f);
}

static void html_kv(FILE *f, const char *k, const char *v) {
    fputs("<tr><th>", f);
    html_esc(f, k);
    fputs("</th><td>", f);
    html_esc(f, v);
    fputs("</td></tr>\n", f);
}

static void html_write(FILE *f, const Report *R, const Plots *P) {
    fputs("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>nasc search report: ", f);
    html_esc(f, R->path);
    fprintf(f, "</title><style>%s</style></head><body>\n<h1>nasc search report: <code>", css);
    html_esc(f, R->path);
    fputs("</code></h1>\n", f);
    time_t now = time(NULL);
    struct tm tm;
    char when[64];
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    fprintf(f, "<p>Written %s by <code>nasc report</code>.</p>\n", when);

    /* Summary */
    fputs("<h2>Summary</h2>\n<table>\n", f);
    char v[256];
    snprintf(v, sizeof v, "%ld", R->n);
    html_kv(f, "trials", v);
    snprintf(v, sizeof v, "%ld done, %ld failed, %ld rejected by hard limits (infeasible), %ld running or interrupted",
             R->counts[TRIAL_OK], R->counts[TRIAL_FAILED], R->counts[TRIAL_INFEASIBLE], R->counts[3]);
    html_kv(f, "status", v);
    snprintf(v, sizeof v, "%ld (answered from an earlier trial of the same function and fidelity)", R->reused);
    html_kv(f, "reused", v);
    snprintf(v, sizeof v, "%.1f s", R->train_s);
    html_kv(f, "training time (sum over trials)", v);
    double t0 = INFINITY, t1 = -INFINITY;
    for (long i = 0; i < R->n; i++) {
        t0 = fmin(t0, R->rows[i].started);
        if (isfinite(R->rows[i].finished)) t1 = fmax(t1, R->rows[i].finished);
    }
    if (isfinite(t0) && isfinite(t1) && t1 >= t0) {
        snprintf(v, sizeof v, "%.1f s (first start to last finish)", t1 - t0);
        html_kv(f, "wall time", v);
    }
    if (!R->mnas) {
        html_kv(f, "objective", "acc: maximize the validation accuracy");
    } else {
        const char *tg = setting(R, "latency_target_ms"), *w = setting(R, "mnas_w");
        if (!strcmp(R->objective, "mnas"))
            snprintf(v, sizeof v, "mnas: maximize val_acc x (latency / %s ms)^%s (MnasNet's soft reward)",
                     tg ? tg : "?", w ? w : "?");
        else
            snprintf(v, sizeof v, "%s: val_acc up to %s ms, val_acc x %s ms / latency above (MnasNet's hard reward)",
                     R->objective, tg ? tg : "?", tg ? tg : "?");
        html_kv(f, "objective", v);
    }
    if (R->nbest) {
        const TrialRow *b = R->best[0];
        fputs("<tr><th>recommended (best score at the highest fidelity)</th><td>trial ", f);
        fprintf(f, "%ld: val acc %.4f", b->seq, b->r.val_acc);
        if (R->mnas) fprintf(f, ", score %.4f", row_score(b));
        fprintf(f, ", %lld params, %lld MACs", b->r.params, b->r.macs);
        if (isfinite(row_latency(b))) fprintf(f, ", %.4g ms", row_latency(b));
        fputs("<br><span class=arch>", f);
        html_esc(f, b->arch);
        fputs("</span></td></tr>\n", f);
        snprintf(v, sizeof v, "%ld trials (accuracy vs params and MACs, at %g epochs on %g%% of the data)", R->nfront,
                 b->fid.epochs, b->fid.fraction * 100);
        html_kv(f, "Pareto front", v);
    } else {
        html_kv(f, "recommended", "none yet: no trial has finished training");
    }
    fputs("</table>\n", f);

    /* Plots */
    fputs("<h2>Plots</h2>\n", f);
    if (P->note[0]) {
        fputs("<p class=note>", f);
        fputs(P->n ? "Some plots are missing: " : "No plots: ", f);
        html_esc(f, P->note);
        fputs(".</p>\n", f);
    }
    static const char *const alt[PLOT_COUNT] = {"validation accuracy vs parameters", "validation accuracy vs MACs",
                                                "validation accuracy vs latency",
                                                "accuracy by trial, best so far"};
    if (P->n) {
        fputs("<div class=plots>\n", f);
        for (int w = 0; w < PLOT_COUNT; w++) {
            if (!P->png[w]) continue;
            fprintf(f, "<img alt=\"%s\" title=\"%s\" src=\"data:image/png;base64,", alt[w], alt[w]);
            base64(f, P->png[w], P->len[w]);
            fputs("\">\n", f);
        }
        fputs("</div>\n<p>Red: the Pareto front (no other trial at the highest fidelity has at least its accuracy "
              "with no more parameters and MACs, and is better in one). Dashed blue: the best accuracy reachable "
              "at each x or less.",
              f);
        if (!P->png[PLOT_LATENCY]) fputs(" No accuracy-vs-latency plot: no trial has a latency.", f);
        fputs("</p>\n", f);
    }

    /* Pareto front */
    fprintf(f, "<h2>Pareto front (%ld)</h2>\n<table>\n", R->nfront);
    html_trial_head(f, R);
    for (long i = 0; i < R->nfront; i++) html_trial_row(f, R, &R->rows[R->front[i]], 1);
    fputs("</table>\n", f);

    /* All trials */
    fprintf(f, "<h2>All trials (%ld)</h2>\n<p>Highlighted: on the Pareto front. Latency: measured (or from the "
               "tabular benchmark), else predicted from the target's latency table (pred.).</p>\n<table>\n",
            R->n);
    html_trial_head(f, R);
    for (long i = 0; i < R->n; i++) html_trial_row(f, R, &R->rows[i], R->on_front[i]);
    fputs("</table>\n", f);

    /* Settings */
    fputs("<h2>Experiment settings</h2>\n<table>\n", f);
    for (int i = 0; i < R->nset; i++) html_kv(f, R->set[i].key, R->set[i].value);
    fputs("</table>\n<h2>Database</h2>\n<table>\n", f);
    html_kv(f, "file", R->path);
    for (int i = 0; i < R->nmeta; i++) html_kv(f, R->meta[i].key, R->meta[i].value);
    fputs("</table>\n</body></html>\n", f);
}

/* Writes the HTML report to out (atomically). *nplots: the plots embedded. */
static int report_html(const Report *R, const char *out, int *nplots, Err *e) {
    Plots P;
    plots_make(R, &P);
    *nplots = P.n;
    if (P.note[0]) fprintf(stderr, "nasc report: warning: %s%s\n", P.note, P.n ? "" : "; the report has no plots");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        plots_free(&P);
        err_set(e, "cannot write %s: out of memory", out);
        return NASC_ERR;
    }
    html_write(f, R, &P);
    int rc = fclose(f) == 0 ? file_write_atomic(out, buf, len, e) : NASC_ERR;
    if (rc != NASC_OK && !e->msg[0]) err_set(e, "cannot write %s: out of memory", out);
    free(buf);
    plots_free(&P);
    return rc;
}

int cmd_report(int argc, char **argv) {
    int json = 0, help = 0, top = 10;
    const char *out = NULL;
    ArgSpec specs[] = {
        {"top", ARG_INT, &top, "how many of the best trials to list (10)", 0},
        {"out", ARG_STR, &out, "also write an HTML report (self-contained; plots need gnuplot)", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "report", usage);
    if (parsed >= 0) return parsed;
    if (npos != 1) {
        fprintf(stderr, "nasc report: needs a trial database\n%s\n", usage);
        return 2;
    }
    if (top < 0 || top > 100000) {
        fprintf(stderr, "nasc report: --top must be in 0..100000\n");
        return 2;
    }
    if (out && !out[0]) {
        fprintf(stderr, "nasc report: --out needs a file name (report.html)\n");
        return 2;
    }
    TrialsDb *db = trials_open(pos[0], TRIALS_READ, NULL, 0, &e);
    if (!db) {
        fprintf(stderr, "nasc report: %s\n", e.msg);
        return 2;
    }
    Report R = {.path = pos[0]};
    if (trials_meta(db, &R.meta, &R.nmeta, &e) != NASC_OK || trials_settings(db, &R.set, &R.nset, &e) != NASC_OK ||
        trials_list(db, &R.rows, &R.n, &e) != NASC_OK) {
        fprintf(stderr, "nasc report: %s\n", e.msg);
        report_free(&R);
        trials_close(db);
        return 2;
    }
    trials_close(db);
    report_analyze(&R);
    long shown = NASC_MIN(R.nbest, (long)top);

    FILE *f = json ? stderr : stdout;
    fprintf(f, "trial database %s\n", R.path);
    for (int i = 0; i < R.nmeta; i++) fprintf(f, "  %-22s %s\n", R.meta[i].key, R.meta[i].value);
    fprintf(f, "settings\n");
    for (int i = 0; i < R.nset; i++) fprintf(f, "  %-22s %s\n", R.set[i].key, R.set[i].value);
    fprintf(f,
            "trials: %ld (done %ld, failed %ld, infeasible %ld, running or interrupted %ld; %ld answered from earlier "
            "trials)\n",
            R.n, R.counts[TRIAL_OK], R.counts[TRIAL_FAILED], R.counts[TRIAL_INFEASIBLE], R.counts[3], R.reused);
    fprintf(f, "training time: %.1f s\n", R.train_s);
    if (shown) {
        if (R.mnas) fprintf(f, "best %ld by score (objective %s; highest fidelity first):\n", shown, R.objective);
        else fprintf(f, "best %ld by validation accuracy (highest fidelity first):\n", shown);
        print_rows(f, &R, R.best, shown);
    }
    const TrialRow **fr = xcalloc((size_t)R.nfront + 1, sizeof *fr);
    for (long i = 0; i < R.nfront; i++) fr[i] = &R.rows[R.front[i]];
    if (R.nfront) {
        fprintf(f, "pareto front (val_acc vs params, MACs; %g epochs on %g%% of the data): %ld\n", R.best[0]->fid.epochs,
                R.best[0]->fid.fraction * 100, R.nfront);
        print_rows(f, &R, fr, R.nfront);
    }
    int rc = 0, nplots = 0;
    if (out) {
        if (report_html(&R, out, &nplots, &e) != NASC_OK) {
            fprintf(stderr, "nasc report: %s\n", e.msg);
            rc = 2;
        } else {
            fprintf(f, "report written to %s (%ld trials, %d plots)\n", out, R.n, nplots);
        }
    }
    if (json && rc == 0) {
        Json j;
        json_begin(&j, stdout);
        json_str(&j, "db", R.path);
        json_int(&j, "trials", R.n);
        json_int(&j, "done", R.counts[TRIAL_OK]);
        json_int(&j, "failed", R.counts[TRIAL_FAILED]);
        json_int(&j, "infeasible", R.counts[TRIAL_INFEASIBLE]);
        json_int(&j, "running", R.counts[3]);
        json_int(&j, "reused", R.reused);
        json_num(&j, "train_seconds", R.train_s);
        json_str(&j, "objective", R.objective);
        json_raw_key(&j, "settings");
        Json s;
        json_begin(&s, stdout);
        for (int i = 0; i < R.nset; i++) json_str(&s, R.set[i].key, R.set[i].value);
        fputc('}', stdout);
        json_raw_key(&j, "best");
        if (R.nbest) json_trial(stdout, R.best[0]);
        else fputs("null", stdout);
        json_list(&j, "top", R.best, shown);
        json_list(&j, "pareto", fr, R.nfront);
        if (out) {
            json_str(&j, "out", out);
            json_int(&j, "plots", nplots);
        }
        json_end(&j);
    }
    free(fr);
    report_free(&R);
    return rc;
}
