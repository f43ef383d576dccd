/* cmd_report.c: `nasc report DB`: what a search's trial database holds: the experiment's
 * settings, trial counts by status, and the best trials by validation accuracy at the
 * highest fidelity trained (a low-fidelity accuracy is not comparable with a full one).
 * It opens the database read-only, so it can watch a search that is still running.
 */
#include <math.h>

#include "../store/trials.h"
#include "cli.h"

static const char usage[] = "usage: nasc report DB [--top N] [--json]\n"
                            "  DB is the trial database of 'nasc search --db'.";

/* Best first: higher fidelity (epochs x fraction), then higher val_acc, then ask order. */
static int cmp_best(const void *pa, const void *pb) {
    const TrialRow *a = *(const TrialRow *const *)pa, *b = *(const TrialRow *const *)pb;
    double fa = a->fid.epochs * a->fid.fraction, fb = b->fid.epochs * b->fid.fraction;
    if (fa != fb) return fa > fb ? -1 : 1;
    if (a->r.val_acc != b->r.val_acc) return a->r.val_acc > b->r.val_acc ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void json_raw_key(Json *j, const char *key) { fprintf(j->f, "%s\"%s\": ", j->n++ ? ", " : "", key); }

static void json_trial(FILE *f, const TrialRow *t) {
    Json o;
    json_begin(&o, f);
    json_int(&o, "seq", t->seq);
    json_str(&o, "arch", t->arch);
    json_num(&o, "val_acc", t->r.val_acc);
    json_num(&o, "epochs", t->fid.epochs);
    json_num(&o, "fraction", t->fid.fraction);
    json_num(&o, "params", t->r.params < 0 ? NAN : (double)t->r.params);
    json_num(&o, "macs", t->r.macs < 0 ? NAN : (double)t->r.macs);
    json_num(&o, "peak_bytes", t->r.peak_bytes < 0 ? NAN : (double)t->r.peak_bytes);
    json_num(&o, "flash_bytes", t->r.flash_bytes < 0 ? NAN : (double)t->r.flash_bytes);
    json_num(&o, "latency_ms", t->r.latency_ms);
    json_num(&o, "predicted_latency_ms", t->r.predicted_latency_ms);
    json_num(&o, "train_seconds", t->r.train_seconds);
    fputc('}', f);
}

static void print_count(char *buf, size_t n, long long v) {
    if (v < 0)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%lld", v);
}

int cmd_report(int argc, char **argv) {
    int json = 0, help = 0, top = 10;
    ArgSpec specs[] = {
        {"top", ARG_INT, &top, "how many of the best trials to list (10)", 0},
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
    TrialsDb *db = trials_open(pos[0], TRIALS_READ, NULL, 0, &e);
    if (!db) {
        fprintf(stderr, "nasc report: %s\n", e.msg);
        return 2;
    }
    TrialsSetting *meta = NULL, *set = NULL;
    int nmeta = 0, nset = 0;
    TrialRow *rows = NULL;
    long n = 0;
    if (trials_meta(db, &meta, &nmeta, &e) != NASC_OK || trials_settings(db, &set, &nset, &e) != NASC_OK ||
        trials_list(db, &rows, &n, &e) != NASC_OK) {
        fprintf(stderr, "nasc report: %s\n", e.msg);
        trials_settings_free(meta, nmeta);
        trials_settings_free(set, nset);
        trials_close(db);
        return 2;
    }
    long counts[4] = {0, 0, 0, 0}; /* done, infeasible, failed (TrialStatus order), running */
    long reused = 0, nbest = 0;
    double train_s = 0;
    const TrialRow **best = xcalloc((size_t)n + 1, sizeof *best);
    for (long i = 0; i < n; i++) {
        const TrialRow *t = &rows[i];
        counts[t->running ? 3 : (int)t->r.status]++;
        if (t->reuse_of >= 0)
            reused++;
        else if (!isnan(t->r.train_seconds))
            train_s += t->r.train_seconds;
        if (!t->running && t->r.status == TRIAL_OK && t->reuse_of < 0) best[nbest++] = t;
    }
    qsort(best, (size_t)nbest, sizeof *best, cmp_best);
    long shown = NASC_MIN(nbest, (long)top);

    FILE *f = json ? stderr : stdout;
    fprintf(f, "trial database %s\n", pos[0]);
    for (int i = 0; i < nmeta; i++) fprintf(f, "  %-22s %s\n", meta[i].key, meta[i].value);
    fprintf(f, "settings\n");
    for (int i = 0; i < nset; i++) fprintf(f, "  %-22s %s\n", set[i].key, set[i].value);
    fprintf(f,
            "trials: %ld (done %ld, failed %ld, infeasible %ld, running or interrupted %ld; %ld answered from earlier "
            "trials)\n",
            n, counts[TRIAL_OK], counts[TRIAL_FAILED], counts[TRIAL_INFEASIBLE], counts[3], reused);
    fprintf(f, "training time: %.1f s\n", train_s);
    if (shown) {
        fprintf(f, "best %ld by validation accuracy (highest fidelity first):\n", shown);
        fprintf(f, "  %6s %8s %7s %6s %10s %12s %10s %10s  %s\n", "seq", "val_acc", "epochs", "frac", "params", "macs",
                "peak_B", "lat_ms", "arch");
        for (long i = 0; i < shown; i++) {
            const TrialRow *t = best[i];
            char p[32], m[32], pk[32];
            print_count(p, sizeof p, t->r.params);
            print_count(m, sizeof m, t->r.macs);
            print_count(pk, sizeof pk, t->r.peak_bytes);
            fprintf(f, "  %6ld %8.4f %7g %6g %10s %12s %10s %10.3f  %s\n", t->seq, t->r.val_acc, t->fid.epochs,
                    t->fid.fraction, p, m, pk, t->r.latency_ms, t->arch);
        }
    }
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_str(&j, "db", pos[0]);
        json_int(&j, "trials", n);
        json_int(&j, "done", counts[TRIAL_OK]);
        json_int(&j, "failed", counts[TRIAL_FAILED]);
        json_int(&j, "infeasible", counts[TRIAL_INFEASIBLE]);
        json_int(&j, "running", counts[3]);
        json_int(&j, "reused", reused);
        json_num(&j, "train_seconds", train_s);
        json_raw_key(&j, "settings");
        Json s;
        json_begin(&s, stdout);
        for (int i = 0; i < nset; i++) json_str(&s, set[i].key, set[i].value);
        fputc('}', stdout);
        json_raw_key(&j, "best");
        if (nbest)
            json_trial(stdout, best[0]);
        else
            fputs("null", stdout);
        json_raw_key(&j, "top");
        fputc('[', stdout);
        for (long i = 0; i < shown; i++) {
            if (i) fputs(", ", stdout);
            json_trial(stdout, best[i]);
        }
        fputc(']', stdout);
        json_end(&j);
    }
    free(best);
    trials_rows_free(rows, n);
    trials_settings_free(meta, nmeta);
    trials_settings_free(set, nset);
    trials_close(db);
    return 0;
}
