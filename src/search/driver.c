/* driver.c: the serial search loop behind `nasc search` (contract in driver.h).
 *
 * One iteration: ask the strategy for a trial; name it (arch, canonical arch, spec); if the
 * database already holds a result for the same function at the same fidelity, reuse it (a
 * trial is never trained twice at one fidelity); otherwise build the network, measure its
 * costs and reject it before any training if it breaks a hard limit; else record it as
 * running, evaluate it (train on the training part, score on the validation split, or look
 * it up in a tabular benchmark), record the result and tell the strategy.
 *
 * Resume: the strategy is rebuilt with the same seed and the recorded ask/tell events are
 * replayed in order (strategies are deterministic given that sequence), so the search
 * continues exactly where it stopped; trials that were running when the process died are
 * asked again by the replay and trained again first.
 *
 * Score: job_end and the reuse path compute the trial's score (search_score, objective in
 * driver.h) and store it with the result; strategies are told the score, the replay tells
 * the stored one, so a resumed search sees exactly what the first run saw.
 */
#include "driver.h"

#include <math.h>
#include <signal.h>

#include "../cost/cost.h"
#include "../cost/predict.h"
#include "../train/train.h"
#include "proxies.h"
#include "tabular.h"

SearchConfig search_defaults(void) {
    SearchConfig c = {0};
    c.space = "nb201";
    c.channels = 16;
    c.cells = 1;
    c.strategy = "evolution";
    c.epochs = 4;
    c.subset = 10000;
    c.val = 10000;
    c.batch = 256;
    c.lr = 0.1f;
    c.wd = 5e-4f;
    c.db = "search.db";
    c.data = "fashion-mnist";
    c.proxy = "naswot";
    c.worker_timeout = 60;
    c.objective = "acc";
    c.mnas_w = -0.07;
    return c;
}

/* ------------------------------------------------------------------ objective */
static int objective_mnas(const char *objective) { return objective && strncmp(objective, "mnas", 4) == 0; }

int search_objective_check(const SearchConfig *c, int have_target_latency, Err *e) {
    const char *o = c->objective ? c->objective : "acc";
    if (strcmp(o, "acc") && strcmp(o, "mnas") && strcmp(o, "mnas-hard")) {
        err_set(e, "search: --objective must be acc, mnas or mnas-hard, got '%s'", o);
        return NASC_ERR;
    }
    if (!objective_mnas(o)) {
        if (c->latency_target_ms != 0) {
            err_set(e, "search: --latency-target is the target of --objective mnas or mnas-hard (the objective is %s); "
                       "for a hard limit use --max-latency-ms",
                    o);
            return NASC_ERR;
        }
        return NASC_OK;
    }
    if (c->latency_target_ms < 0 || isnan(c->latency_target_ms) || isinf(c->latency_target_ms)) {
        err_set(e, "search: --latency-target must be a positive number of milliseconds, got %g", c->latency_target_ms);
        return NASC_ERR;
    }
    if (c->latency_target_ms == 0 && !have_target_latency) {
        err_set(e, "search: --objective %s needs --latency-target MS (or a --target with a latency budget)", o);
        return NASC_ERR;
    }
    if (!(c->mnas_w < 0 && c->mnas_w >= -10)) {
        err_set(e, "search: --mnas-w must be negative and at least -10 (MnasNet uses -0.07), got %g", c->mnas_w);
        return NASC_ERR;
    }
    return NASC_OK;
}

static int dominated(const SearchPoint *a, const SearchPoint *b) { /* b dominates a */
    return b->val_acc >= a->val_acc && b->params <= a->params && b->macs <= a->macs &&
           (b->val_acc > a->val_acc || b->params < a->params || b->macs < a->macs);
}

void search_pareto(const SearchPoint *pts, int n, int *front) {
    for (int i = 0; i < n; i++) {
        front[i] = 1;
        for (int j = 0; j < n && front[i]; j++) front[i] = j == i || !dominated(&pts[i], &pts[j]);
    }
}

double search_latency(double latency_ms, double predicted_latency_ms) {
    return isnan(latency_ms) ? predicted_latency_ms : latency_ms;
}

double search_score(const char *objective, double target_ms, double w, double acc, double lat_ms) {
    if (isnan(acc)) return NAN;
    if (!objective_mnas(objective)) return acc;
    if (isnan(lat_ms) || !(target_ms > 0)) return 0;
    double ratio = fmax(lat_ms, 1e-9) / target_ms;
    if (!strcmp(objective, "mnas-hard")) return ratio <= 1 ? acc : acc / ratio;
    return acc * pow(ratio, w);
}

typedef struct {
    const SearchConfig *cfg;
    Space *space;
    Strategy *strat;
    TrialsDb *db;
    Tabular *table;
    Target target;
    int have_target;
    Dataset train;
    int have_data;
    int *train_idx, ntrain, *val_idx;
    Norm norm;
    int dtype_bytes;
    double t0;
    long trained, reused, infeasible, failed;
    long told;          /* evaluated trials told in this process (not replayed): the time-left estimate */
    double best;        /* best score at full fidelity so far (valid when nfront > 0) */
    SearchPoint *front; /* the Pareto front so far (arch unset), for the progress line */
    int nfront;
    int mnas;           /* the objective needs every trial's latency */
    double lat_target;  /* mnas: T in ms (--latency-target, or the target's budget) */
    LatencyTable lat; /* the target's latency table (nasc profile), when it has one */
    int have_lat;
    float *proxy_x; /* the proxy strategy's fixed scoring batch (PROXY_BATCH images) */
    int *proxy_y;
} Search;

#define PROXY_BATCH 64

static int fid_equal(Fidelity a, Fidelity b) {
    return fabs(a.epochs - b.epochs) <= 1e-9 * fmax(1, a.epochs) && fabs(a.fraction - b.fraction) <= 1e-9;
}

static int is_full(const Search *S, Fidelity f) {
    return f.epochs >= S->cfg->epochs * (1 - 1e-9) && f.fraction >= 1 - 1e-9;
}

/* ------------------------------------------------------------------ evaluation */
static int build_net(const Search *S, const char *spec, Net *net, Err *e) {
    Spec sp;
    if (spec_parse(&sp, spec, S->cfg->channels, S->cfg->cells, e) != NASC_OK) return NASC_ERR;
    int in_c = S->have_data ? S->train.c : 1, in_h = S->have_data ? S->train.h : 28;
    int in_w = S->have_data ? S->train.w : 28, classes = S->have_data ? S->train.classes : 10;
    int rc = net_build(net, &sp, in_c, in_h, in_w, classes, e);
    spec_free(&sp);
    return rc;
}

/* Costs of the member; returns 1 if it breaks a hard limit (reason in why). table_lat: the
 * tabular benchmark's latency of the member, NAN when there is none. The latency (for the
 * limit or the objective) is the table's, else the target table's prediction, else measured. */
static int check_costs(Search *S, Net *net, double table_lat, TrialResult *r, char *why, size_t nwhy) {
    const SearchConfig *c = S->cfg;
    CostReport cr;
    cost_static(net, NULL, &cr);
    r->params = (long long)cr.params;
    r->macs = (long long)cr.macs;
    r->peak_bytes = (long long)cost_peak_bytes(&cr, S->dtype_bytes);
    r->flash_bytes = (long long)cost_flash_bytes(&cr, S->dtype_bytes);
    cost_free(&cr);
    double max_lat = c->max_latency_ms > 0 ? c->max_latency_ms : (S->have_target ? S->target.latency_ms : 0);
    double max_peak = c->max_peak_kb > 0 ? c->max_peak_kb : (S->have_target ? S->target.sram_kb : 0);
    double max_flash = c->max_flash_kb > 0 ? c->max_flash_kb : (S->have_target ? S->target.flash_kb : 0);
    r->latency_ms = NAN;
    why[0] = 0;
    if (c->max_params > 0 && r->params > c->max_params)
        snprintf(why, nwhy, "params %lld > %.0f", r->params, c->max_params);
    else if (c->max_macs > 0 && r->macs > c->max_macs)
        snprintf(why, nwhy, "MACs %lld > %.0f", r->macs, c->max_macs);
    else if (max_peak > 0 && r->peak_bytes > max_peak * 1024)
        snprintf(why, nwhy, "peak memory %.1f KB > %.1f KB", r->peak_bytes / 1024.0, max_peak);
    else if (max_flash > 0 && r->flash_bytes > max_flash * 1024)
        snprintf(why, nwhy, "flash %.1f KB > %.1f KB", r->flash_bytes / 1024.0, max_flash);
    if (why[0] || !(max_lat > 0 || S->mnas)) return why[0] != 0;
    double lat;
    const char *kind = "latency";
    if (!isnan(table_lat)) {
        r->latency_ms = lat = table_lat;
        kind = "benchmark latency";
    } else if (S->have_lat) {
        /* The target's table predicts the latency on the target's own machine. */
        r->predicted_latency_ms = lat = predict_latency_ms(&S->lat, net, NULL);
        kind = "predicted latency";
    } else {
        LatencyConfig lc = {.repeats = 30, .warmup = 5, .max_seconds = 2, .seed = 1};
        LatencyStats ls;
        latency_measure(net, &lc, &ls);
        r->latency_ms = lat = ls.median_ms;
    }
    if (max_lat > 0 && lat > max_lat) snprintf(why, nwhy, "%s %.3f ms > %.3f ms", kind, lat, max_lat);
    return why[0] != 0;
}

static void train_trial(Search *S, Net *net, const Trial *t, uint64_t seed, TrialResult *r, char *err, size_t nerr) {
    const SearchConfig *c = S->cfg;
    int n = c->subset > 0 && c->subset < S->ntrain ? c->subset : S->ntrain;
    double images = n * t->fid.fraction * t->fid.epochs;
    int epochs = (int)fmax(1, floor(t->fid.epochs + 0.5));
    int per_epoch = (int)fmin(S->ntrain, fmax(c->batch, images / epochs));
    TrainConfig tc = {0};
    tc.epochs = epochs;
    tc.batch = c->batch;
    tc.opt = optim_defaults(OPT_SGD);
    tc.opt.momentum = 0.9f;
    tc.opt.nesterov = 1;
    tc.opt.wd = c->wd;
    tc.sched.kind = SCHED_COSINE;
    tc.sched.lr = c->lr;
    tc.seed = seed;
    net_init_params(net, seed);
    /* The trial's training images: a seeded prefix of a shuffle of the training part. */
    int *idx = xmalloc((size_t)S->ntrain * sizeof *idx);
    memcpy(idx, S->train_idx, (size_t)S->ntrain * sizeof *idx);
    Rng rng;
    rng_seed(&rng, seed ^ 0x7a11);
    rng_shuffle_int(&rng, idx, S->ntrain);
    TrainResult tr;
    Err e;
    if (train_run(net, &S->train, idx, per_epoch, &S->train, S->val_idx, c->val, S->norm.mean, S->norm.std, &tc, &tr,
                  &e) != NASC_OK) {
        r->status = TRIAL_FAILED;
        snprintf(err, nerr, "%s", e.msg);
    } else {
        r->status = TRIAL_OK;
        r->val_acc = tr.val_acc;
        r->train_acc = tr.train_acc;
        r->train_loss = tr.train_loss;
    }
    r->train_seconds = tr.seconds;
    free(idx);
}

/* Test hook (tests/cli_search.sh): with NASC_TEST_KILL_TRIAL=K the process kills itself with
 * SIGKILL when it starts training its K-th trial, its row already running in the database:
 * a kill -9 that lands during a trial, at a moment that does not depend on timing. */
static void test_kill(void) {
    static long trained;
    const char *k = getenv("NASC_TEST_KILL_TRIAL");
    if (k && ++trained == atol(k)) raise(SIGKILL);
}

/* Evaluates a trial that has a row already (status running). */
static void eval_trial(Search *S, const Trial *t, const char *spec, long seq, uint64_t seed, TrialResult *r, char *err,
                       size_t nerr) {
    double t0 = now_seconds();
    err[0] = 0;
    if (S->table) {
        TabularEntry x;
        if (tabular_lookup(S->table, t->m, t->fid, S->cfg->epochs, &x) != NASC_OK) {
            r->status = TRIAL_FAILED;
            snprintf(err, nerr, "not in the benchmark table");
        } else {
            r->status = TRIAL_OK;
            r->val_acc = x.accuracy;
            if (!isnan(x.latency_ms)) r->latency_ms = x.latency_ms;
        }
        r->train_seconds = now_seconds() - t0;
        return;
    }
    Net net;
    Err e;
    if (build_net(S, spec, &net, &e) != NASC_OK) {
        r->status = TRIAL_FAILED;
        snprintf(err, nerr, "%s", e.msg);
        return;
    }
    test_kill();
    train_trial(S, &net, t, seed, r, err, nerr);
    net_free(&net);
}

/* ------------------------------------------------------------------ progress */
/* A finished result joins the best score and the Pareto front when it is at full fidelity
 * (a reuse row repeats a trial already counted: best only). */
static void track(Search *S, Fidelity fid, const TrialResult *r, int reuse) {
    if (r->status != TRIAL_OK || !is_full(S, fid)) return;
    double sc = isnan(r->score) ? r->val_acc : r->score;
    S->best = S->nfront ? fmax(S->best, sc) : sc;
    if (reuse) return;
    SearchPoint p = {.val_acc = r->val_acc, .params = r->params, .macs = r->macs};
    for (int i = 0; i < S->nfront; i++)
        if (dominated(&p, &S->front[i])) return;
    int k = 0;
    for (int i = 0; i < S->nfront; i++)
        if (!dominated(&S->front[i], &p)) S->front[k++] = S->front[i];
    S->front = xrealloc(S->front, (size_t)(k + 1) * sizeof *S->front);
    S->front[k++] = p;
    S->nfront = k;
}

/* "42s", "3m05s", "2h07m" */
static void fmt_duration(char *buf, size_t n, double s) {
    long t = (long)floor(fmax(0, s) + 0.5);
    if (t < 60) snprintf(buf, n, "%lds", t);
    else if (t < 3600) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
}

/* Seconds left: the --minutes budget's remainder, and/or for --trials the mean wall time per
 * trial told in this run times the trials still to tell; *estimate = 1 when the latter
 * decides. NAN when neither is known yet. */
static double time_left(const Search *S, double elapsed, int *estimate) {
    const SearchConfig *c = S->cfg;
    double left = NAN;
    *estimate = 0;
    if (c->minutes > 0) left = fmax(0, c->minutes * 60 - elapsed);
    long done = S->trained + S->reused + S->failed;
    if (c->trials > 0 && (S->told > 0 || done >= c->trials)) {
        double est = S->told > 0 ? elapsed / S->told * fmax(0, (double)(c->trials - done)) : 0;
        if (isnan(left) || est < left) left = est, *estimate = done < c->trials;
    }
    return left;
}

/* One progress line per trial (stderr): the trial, then where the search stands. */
static void say(const Search *S, long seq, const char *arch, const char *what, const TrialResult *r) {
    if (S->cfg->quiet) return;
    double el = now_seconds() - S->t0;
    char res[192], sofar[64] = "", spent[32], left[48] = "";
    if (r && r->status == TRIAL_OK) {
        int n = snprintf(res, sizeof res, "val_acc %.4f  params %lld", r->val_acc, r->params);
        double lat = search_latency(r->latency_ms, r->predicted_latency_ms);
        if (S->mnas && n > 0 && n < (int)sizeof res)
            snprintf(res + n, sizeof res - (size_t)n, "  lat %.3g ms  score %.4f", lat, r->score);
    } else {
        snprintf(res, sizeof res, "%s", r && r->error ? r->error : "");
    }
    long done = S->trained + S->reused + S->failed;
    if (S->cfg->trials > 0) snprintf(sofar, sizeof sofar, "%ld/%ld done", done, S->cfg->trials);
    else snprintf(sofar, sizeof sofar, "%ld done", done);
    fmt_duration(spent, sizeof spent, el);
    int est;
    double tl = time_left(S, el, &est);
    if (!isnan(tl)) {
        char d[32];
        fmt_duration(d, sizeof d, tl);
        snprintf(left, sizeof left, ", %s%s left", est ? "~" : "", d);
    }
    char best[32] = "best -";
    if (S->nfront) snprintf(best, sizeof best, "best %.4f", S->best);
    fprintf(stderr, "trial %ld  %-8s %s | %s  %s  pareto %d  %s%s  %s\n", seq, what, res, sofar, best, S->nfront, spent,
            left, arch);
}

/* ------------------------------------------------------------------ one trial */

/* One asked trial on its way through the driver: its names, its costs and result so far.
 * r.error is set only while writing (why/err live in the job, which may move). */
typedef struct {
    Trial t;
    long seq;
    char *arch, *canon, *spec;
    TrialResult r;
    char why[512], err[512];
    int worker;   /* rank evaluating it (0: rank 0 itself) */
    int attempts; /* evaluations started in this process (MPI: re-queued after a lost worker) */
} Job;

static void job_init(Job *j, const Trial *t, long seq) {
    memset(j, 0, sizeof *j);
    j->t = *t;
    j->seq = seq;
    j->r = trials_result_empty();
}

static void job_free(Job *j) {
    free(j->arch);
    free(j->canon);
    free(j->spec);
    j->arch = j->canon = j->spec = NULL;
}

/* The reuse rows that rank 0 records for a trial asked while the same canonical arch was being
 * trained at the same fidelity by a worker carry this worker number: their ask happened before
 * the source trial's tell although the database numbers it after (replay() moves it back). */
#define DRIVER_EARLY_REUSE (-1)

typedef enum {
    JOB_SETTLED, /* recorded and told: reused, rejected by limits */
    JOB_EVAL,    /* its row is running: evaluate it, then job_end */
    JOB_WAIT,    /* the same function is being trained at this fidelity (row *wait_for): retry later */
} JobNext;

/* Before evaluation: names, reuse, costs and hard limits, then the running row (trials_begin,
 * or trials_restart for a redo). Returns NASC_ERR only for database errors; *next says what
 * follows. reuse_worker is the worker number written on a reuse row. */
static int job_start(Search *S, Job *j, int redo, int reuse_worker, JobNext *next, long *wait_for, Err *e) {
    const Trial *t = &j->t;
    *next = JOB_SETTLED;
    if (!j->arch) {
        j->arch = S->space->ops->to_arch(S->space, t->m);
        j->canon = space_canonical_arch(S->space, t->m);
        j->spec = S->space->ops->to_spec(S->space, t->m, e);
        if (!j->spec) return NASC_ERR;
    }
    long seq = j->seq;
    int rc;
    TrialBegin b = {.seq = seq, .trial_id = t->id, .arch = j->arch, .canonical = j->canon, .spec = j->spec,
                    .fid = t->fid, .seed = S->cfg->seed * 1000003u + (uint64_t)seq, .worker = j->worker,
                    .reuse_of = -1};
    if (!redo) {
        TrialRow found;
        int f = trials_find_result(S->db, j->canon, t->fid, &found, e);
        if (f < 0) return NASC_ERR;
        if (f == TRIALS_FOUND_RUNNING) {
            *wait_for = found.seq;
            trials_row_free(&found);
            *next = JOB_WAIT;
            return NASC_OK;
        }
        if (f == TRIALS_FOUND_DONE && found.r.status != TRIAL_INFEASIBLE) {
            TrialResult rr = found.r;
            b.reuse_of = found.seq;
            b.worker = reuse_worker;
            rc = trials_record(S->db, &b, &rr, e);
            trials_row_free(&found);
            if (rc != NASC_OK) return NASC_ERR;
            S->reused++;
            S->told++;
            track(S, t->fid, &rr, 1);
            S->strat->ops->tell(S->strat, t, rr.status, rr.score);
            say(S, seq, j->arch, "reused", &rr);
            return NASC_OK;
        }
        if (f == TRIALS_FOUND_DONE) trials_row_free(&found);
    }
    /* Costs and hard limits, before any training. */
    Net net;
    Err be;
    double table_lat = NAN;
    TabularEntry x;
    if (S->table && tabular_lookup(S->table, t->m, t->fid, S->cfg->epochs, &x) == NASC_OK) table_lat = x.latency_ms;
    if (build_net(S, j->spec, &net, &be) != NASC_OK) {
        j->r.status = TRIAL_FAILED;
        snprintf(j->err, sizeof j->err, "%s", be.msg);
    } else {
        int bad = check_costs(S, &net, table_lat, &j->r, j->why, sizeof j->why);
        net_free(&net);
        if (bad) {
            j->r.status = TRIAL_INFEASIBLE;
            j->r.error = j->why;
            if (redo) rc = trials_finish(S->db, seq, &j->r, e);
            else rc = trials_mark_infeasible(S->db, &b, &j->r, e);
            j->r.error = NULL;
            if (rc != NASC_OK) return NASC_ERR;
            S->infeasible++;
            S->strat->ops->tell(S->strat, t, TRIAL_INFEASIBLE, 0);
            j->r.error = j->why;
            say(S, seq, j->arch, "rejected", &j->r);
            j->r.error = NULL;
            return NASC_OK;
        }
    }
    if (redo) rc = trials_restart(S->db, seq, j->worker, e);
    else rc = trials_begin(S->db, &b, e);
    if (rc != NASC_OK) return NASC_ERR;
    *next = JOB_EVAL;
    return NASC_OK;
}

/* After evaluation (j->r holds costs and result, j->err why it failed): record, tell. */
static int job_end(Search *S, Job *j, Err *e) {
    const SearchConfig *c = S->cfg;
    if (j->err[0]) j->r.error = j->err;
    j->r.score = j->r.status == TRIAL_OK ? search_score(c->objective, S->lat_target, c->mnas_w, j->r.val_acc,
                                                        search_latency(j->r.latency_ms, j->r.predicted_latency_ms))
                                         : NAN;
    int rc = trials_finish(S->db, j->seq, &j->r, e);
    if (rc != NASC_OK) {
        j->r.error = NULL;
        return NASC_ERR;
    }
    if (j->r.status == TRIAL_OK) S->trained++;
    else S->failed++;
    S->told++;
    track(S, j->t.fid, &j->r, 0);
    S->strat->ops->tell(S->strat, &j->t, j->r.status, j->r.score);
    say(S, j->seq, j->arch, j->r.status == TRIAL_OK ? "trained" : "failed", &j->r);
    j->r.error = NULL;
    return NASC_OK;
}

/* Runs the trial the strategy asked (row seq) here; returns NASC_ERR only for database errors. */
static int run_trial(Search *S, const Trial *t, long seq, int redo, Err *e) {
    Job j;
    job_init(&j, t, seq);
    JobNext next;
    long wait_for = -1;
    int rc = job_start(S, &j, redo, 0, &next, &wait_for, e);
    NASC_ASSERT(rc != NASC_OK || next != JOB_WAIT); /* serial: nothing else is running */
    if (rc == NASC_OK && next == JOB_EVAL) {
        if (j.r.status != TRIAL_FAILED)
            eval_trial(S, &j.t, j.spec, seq, S->cfg->seed * 1000003u + (uint64_t)seq, &j.r, j.err, sizeof j.err);
        rc = job_end(S, &j, e);
    }
    job_free(&j);
    return rc;
}

/* ------------------------------------------------------------------ replay */
/* Replays the ask of row seq; checks that the strategy asks the recorded trial. */
static int replay_ask(Search *S, const TrialRow *row, Trial *t, long *redo, long *nredo, Err *e) {
    int a = S->strat->ops->ask(S->strat, t);
    char *arch = a == 1 ? S->space->ops->to_arch(S->space, t->m) : NULL;
    int rc = NASC_OK;
    if (a != 1 || strcmp(arch, row->arch) != 0 || !fid_equal(t->fid, row->fid)) {
        err_set(e,
                "%s: cannot resume: replaying the strategy does not reproduce trial %ld (recorded %s, "
                "replayed %s); the database was written by a different strategy version",
                trials_path(S->db), row->seq, row->arch, arch ? arch : "nothing");
        rc = NASC_ERR;
    }
    free(arch);
    if (row->running) redo[(*nredo)++] = row->seq;
    return rc;
}

static int early_reuse(const TrialRow *row) { return row->reuse_of >= 0 && row->worker == DRIVER_EARLY_REUSE; }

static int replay(Search *S, Trial **trials, long *ntrials, long **redo, long *nredo, Err *e) {
    TrialRow *rows;
    long nrows;
    TrialsEvent *ev;
    long nev;
    if (trials_list(S->db, &rows, &nrows, e) != NASC_OK) return NASC_ERR;
    if (trials_events(S->db, &ev, &nev, e) != NASC_OK) {
        trials_rows_free(rows, nrows);
        return NASC_ERR;
    }
    *trials = xcalloc((size_t)nrows + 1, sizeof **trials);
    *redo = xcalloc((size_t)nrows + 1, sizeof **redo);
    *ntrials = nrows;
    *nredo = 0;
    /* early[s]: the early reuse row of trial s (MPI runs), replayed just before s's tell. */
    long *early = xmalloc(((size_t)nrows + 1) * sizeof *early);
    for (long i = 0; i < nrows; i++) early[i] = -1;
    for (long i = 0; i < nrows; i++)
        if (early_reuse(&rows[i]) && rows[i].reuse_of < nrows) early[rows[i].reuse_of] = i;
    int rc = NASC_OK;
    for (long i = 0; i < nev && rc == NASC_OK; i++) {
        const TrialRow *row = &rows[ev[i].seq];
        Trial *t = &(*trials)[ev[i].seq];
        if (ev[i].kind == TRIALS_EV_ASK) {
            if (!early_reuse(row)) rc = replay_ask(S, row, t, *redo, nredo, e);
        } else {
            long r = early[row->seq];
            if (r >= 0 && (rc = replay_ask(S, &rows[r], &(*trials)[r], *redo, nredo, e)) != NASC_OK) break;
            TrialStatus st = row->r.status;
            track(S, row->fid, &row->r, row->reuse_of >= 0);
            if (st == TRIAL_INFEASIBLE) S->infeasible++;
            else if (row->reuse_of >= 0) S->reused++;
            else if (st == TRIAL_OK) S->trained++;
            else S->failed++;
            /* The stored score (a version-1 database's is its accuracy, see trials.h). */
            S->strat->ops->tell(S->strat, t, st, row->r.score);
        }
    }
    free(early);
    free(ev);
    trials_rows_free(rows, nrows);
    return rc;
}

/* ------------------------------------------------------------------ MPI (make MPI=1) */
#ifdef NASC_MPI
/* Master/worker over MPI_COMM_WORLD. Rank 0 owns the database and the strategy: it asks,
 * answers reuses, checks hard limits (an infeasible member is never sent), writes the running
 * row (worker = the rank) and sends the trial to an idle worker; workers only evaluate.
 *
 * Messages (MPI_BYTE; every rank runs the same binary on the same kind of machine):
 *   WORK   0 -> w  a WorkMsg, then the spec text (NUL-terminated)
 *   RESULT w -> 0  a ResultMsg: seq, status, accuracies, training time, error text
 *   BEAT   w -> 0  every second, from a thread of each worker, training or idle
 *   BEAT   0 -> w  every second, from a thread of rank 0, to every worker not declared dead
 *   STOP   0 -> w  empty: the search is over (also sent when rank 0 fails)
 * A trial's seed and training subset come from its seq, so its result does not depend on the
 * rank that ran it.
 *
 * A lost worker: a worker is declared dead when a send to it fails or does not complete within
 * cfg->worker_timeout seconds, or when nothing (result or heartbeat) came from it for that long. Its trial is re-queued for another
 * worker once (trials_restart: attempts + 1); lost a second time it is recorded as failed. The
 * search goes on with the others; with no worker left rank 0 evaluates trials itself. Messages
 * from a rank declared dead are ignored. OpenMPI ends the whole job when a rank exits unless
 * mpirun is given --enable-recovery; with it (OpenMPI 4.1), a dead rank is not reported to the
 * others: probes just find nothing and a blocking send to it can wait forever. Hence the
 * heartbeats both ways, and sends that never block longer than the timeout (mpi_send_timed).
 *
 * A lost rank 0: a worker that hears nothing from rank 0 (work or heartbeat) for
 * cfg->worker_timeout seconds while it waits for work ends the job (MPI_Abort), so that mpirun
 * returns and `--resume` can continue from the database. Heartbeats need an MPI library that
 * lets a second thread call it (MPI_THREAD_SERIALIZED or more); without, no rank is ever
 * declared dead by silence. Every MPI call of a rank holds mpi_lock.
 *
 * Order: asks and tells happen in the order the database numbers them (ask_ev, tell_ev), so
 * --resume replays them. One exception: when the strategy asks a member whose function is
 * being trained at that fidelity by a worker, the ask cannot be recorded yet (its row must reuse
 * a finished one and seq must stay contiguous): rank 0 asks nothing more, holds other results
 * until the source finishes, then records the reuse row with worker DRIVER_EARLY_REUSE, which
 * tells replay() that this ask came just before the source's tell.
 */
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

enum { TAG_WORK = 11, TAG_RESULT, TAG_BEAT, TAG_STOP };

typedef struct {
    long seq, trial_id;
    int m[SPACE_MAX_DIMS];
    Fidelity fid;
    uint64_t seed;
} WorkMsg;

typedef struct {
    long seq;
    int status;
    double val_acc, train_acc, train_loss, train_seconds, latency_ms;
    char err[480];
} ResultMsg;

static pthread_mutex_t mpi_lock = PTHREAD_MUTEX_INITIALIZER; /* every rank: MPI calls from two threads */
static int mpi_beats; /* the MPI library lets a second thread send (>= MPI_THREAD_SERIALIZED) */
/* A rank died: MPI_Finalize would wait for it forever (OpenMPI 4), so no rank calls it; STOP
 * carries this flag to the workers. */
static int mpi_lost;

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

/* MPI_Init unless done; *started = 1 when this call initialized it (then mpi_end finalizes). */
static void mpi_begin(int *rank, int *nranks, int *started) {
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    *started = !inited;
    if (!inited) MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    else MPI_Query_thread(&provided);
    mpi_beats = provided >= MPI_THREAD_SERIALIZED;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, nranks);
}

/* Rank 0: STOP to every worker (dead ones too: a wrongly declared one is still waiting), then
 * up to 5 s for the sends to the live ones to complete (dead[w]: declared dead, may be NULL). */
static void mpi_stop_workers(int nranks, const atomic_int *dead) {
    MPI_Request *rq = xcalloc((size_t)nranks, sizeof *rq), *live = xcalloc((size_t)nranks, sizeof *live);
    int nlive = 0;
    for (int w = 1; w < nranks; w++) {
        if (MPI_Isend(&mpi_lost, 1, MPI_INT, w, TAG_STOP, MPI_COMM_WORLD, &rq[w]) != MPI_SUCCESS)
            rq[w] = MPI_REQUEST_NULL;
        if (!dead || !atomic_load(&dead[w])) live[nlive++] = rq[w];
    }
    double t0 = now_seconds();
    int done = 0;
    while (!done && now_seconds() - t0 < 5) {
        if (MPI_Testall(nlive, live, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) break;
        if (!done) nap(0.002);
    }
    free(live);
    free(rq);
}

/* Sends n bytes to dest, waiting at most timeout seconds (<= 0: no limit) for the send to
 * complete: OpenMPI 4 with --enable-recovery reports no failure for a rank that died, and a
 * blocking send to it can wait forever. NASC_ERR when the send failed or timed out; the copy
 * of the data is then leaked on purpose (MPI may still read it). */
static int mpi_send_timed(const void *data, int n, int dest, int tag, double timeout) {
    char *copy = xmalloc((size_t)n + 1);
    memcpy(copy, data, (size_t)n);
    MPI_Request rq;
    pthread_mutex_lock(&mpi_lock);
    int rc = MPI_Isend(copy, n, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &rq);
    pthread_mutex_unlock(&mpi_lock);
    if (rc != MPI_SUCCESS) {
        free(copy);
        return NASC_ERR;
    }
    double t0 = now_seconds();
    for (;;) {
        int done = 0;
        pthread_mutex_lock(&mpi_lock);
        rc = MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        pthread_mutex_unlock(&mpi_lock);
        if (rc != MPI_SUCCESS) return NASC_ERR;
        if (done) {
            free(copy);
            return NASC_OK;
        }
        if (timeout > 0 && now_seconds() - t0 > timeout) return NASC_ERR;
        nap(0.0005);
    }
}

/* ---- heartbeats: a thread of each rank, once a second, to rank 0 (workers) or to every
 * worker not declared dead (rank 0). Sends never block: a beat to a rank whose previous beat
 * is still pending (a dead rank) is skipped. */
typedef struct {
    atomic_int stop;
    int nranks, self;
    atomic_int *dead; /* (nranks) rank 0: 1 once master_lose declared the worker dead */
    MPI_Request *rq;  /* (nranks) the pending beat to each rank */
    long *msg;        /* (nranks) its payload (a counter), alive while rq is pending */
    pthread_t thread;
    int running;
} Beat;

static Beat beat;

static void *beat_main(void *arg) {
    Beat *b = arg;
    long n = 0;
    while (!atomic_load(&b->stop)) {
        pthread_mutex_lock(&mpi_lock);
        for (int r = 0; r < b->nranks; r++) {
            if (r == b->self || (b->self == 0) == (r == 0) || atomic_load(&b->dead[r])) continue;
            int done = 1;
            if (b->rq[r] != MPI_REQUEST_NULL && MPI_Test(&b->rq[r], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) done = 0;
            if (!done) continue;
            b->msg[r] = n;
            if (MPI_Isend(&b->msg[r], 1, MPI_LONG, r, TAG_BEAT, MPI_COMM_WORLD, &b->rq[r]) != MPI_SUCCESS)
                b->rq[r] = MPI_REQUEST_NULL;
        }
        pthread_mutex_unlock(&mpi_lock);
        n++;
        for (int i = 0; i < 20 && !atomic_load(&b->stop); i++) nap(0.05);
    }
    return NULL;
}

static void beat_start(int rank, int nranks) {
    Beat *b = &beat;
    atomic_store(&b->stop, 0);
    b->nranks = nranks, b->self = rank;
    b->dead = xcalloc((size_t)nranks, sizeof *b->dead);
    b->rq = xmalloc((size_t)nranks * sizeof *b->rq);
    for (int r = 0; r < nranks; r++) b->rq[r] = MPI_REQUEST_NULL;
    b->msg = xcalloc((size_t)nranks, sizeof *b->msg);
    b->running = mpi_beats && pthread_create(&b->thread, NULL, beat_main, b) == 0;
}

/* Stops the thread and waits (1 s at most) for the pending beats to ranks not declared dead. */
static void beat_stop(void) {
    Beat *b = &beat;
    if (b->running) {
        atomic_store(&b->stop, 1);
        pthread_join(b->thread, NULL);
    }
    b->running = 0;
    for (double t0 = now_seconds(); b->dead && now_seconds() - t0 < 1; nap(0.001)) {
        int pending = 0;
        for (int r = 0; r < b->nranks; r++) {
            int done = 1;
            if (b->rq[r] != MPI_REQUEST_NULL && !atomic_load(&b->dead[r]) &&
                MPI_Test(&b->rq[r], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                done = 1; /* an error ends the request */
            pending += !done;
        }
        if (!pending) break;
    }
}

/* Frees what beat_start allocated, except beats still pending (to a dead rank): MPI may still
 * read them. */
static void beat_free(void) {
    Beat *b = &beat;
    if (!b->dead) return;
    int pending = 0;
    for (int r = 0; r < b->nranks; r++) pending += b->rq[r] != MPI_REQUEST_NULL;
    if (!pending) {
        free(b->rq);
        free(b->msg);
    }
    free(b->dead);
    b->dead = NULL, b->rq = NULL, b->msg = NULL;
}

/* Evaluates what rank 0 sends until STOP. Test hooks (documented in README/tests): with
 * NASC_TEST_DIE_RANK=R and NASC_TEST_DIE_AFTER=K, rank R exits at once (_exit(1)) when it
 * receives its K-th trial, as if it crashed while training; with NASC_TEST_STALL_RANK=R, rank
 * R never answers a trial (still beating and listening, as if its training never ended), so
 * that a kill -9 from outside is sure to find it holding one and the search cannot end first,
 * however fast the other worker trains. */
static int worker_run(Search *S, int rank, int nranks, Err *e) {
    const char *dr = getenv("NASC_TEST_DIE_RANK"), *da = getenv("NASC_TEST_DIE_AFTER");
    const char *sr = getenv("NASC_TEST_STALL_RANK");
    int die = dr && atoi(dr) == rank ? (da ? atoi(da) : 1) : 0;
    const int stall = sr && atoi(sr) == rank;
    beat_start(rank, nranks);
    char *buf = NULL;
    int cap = 0, rc = NASC_OK;
    long got = 0;
    double heard = now_seconds(); /* when rank 0 last said something */
    double timeout = mpi_beats ? S->cfg->worker_timeout : 0;
    for (;;) {
        int flag = 0, n = 0;
        MPI_Status st;
        pthread_mutex_lock(&mpi_lock);
        int mrc = MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
        if (mrc == MPI_SUCCESS && flag) {
            MPI_Get_count(&st, MPI_BYTE, &n);
            if (n + 1 > cap) buf = xrealloc(buf, (size_t)(cap = n + 1));
            mrc = MPI_Recv(buf, n, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
        pthread_mutex_unlock(&mpi_lock);
        if (mrc != MPI_SUCCESS) {
            err_set(e, "lost its connection to rank 0");
            rc = NASC_ERR;
            break;
        }
        if (!flag) {
            if (timeout > 0 && now_seconds() - heard > timeout) {
                err_set(e, "heard nothing from rank 0 for %g s (--worker-timeout): rank 0 is gone; continue with "
                           "--resume",
                        timeout);
                rc = NASC_ERR;
                break;
            }
            nap(0.002);
            continue;
        }
        heard = now_seconds();
        if (st.MPI_TAG == TAG_STOP) {
            if (n >= (int)sizeof(int)) memcpy(&mpi_lost, buf, sizeof(int));
            break;
        }
        if (st.MPI_TAG != TAG_WORK || n < (int)sizeof(WorkMsg) + 1) continue;
        buf[n] = 0;
        WorkMsg w;
        memcpy(&w, buf, sizeof w);
        if (++got == die) {
            fprintf(stderr, "search: rank %d: NASC_TEST_DIE_RANK: exiting during trial %ld\n", rank, w.seq);
            _exit(1);
        }
        if (stall) continue; /* the trial held, never answered */
        Trial t = {.id = w.trial_id, .fid = w.fid};
        memcpy(t.m, w.m, sizeof t.m);
        TrialResult r = trials_result_empty();
        ResultMsg out;
        memset(&out, 0, sizeof out);
        eval_trial(S, &t, buf + sizeof w, w.seq, w.seed, &r, out.err, sizeof out.err);
        out.seq = w.seq;
        out.status = (int)r.status;
        out.val_acc = r.val_acc, out.train_acc = r.train_acc, out.train_loss = r.train_loss;
        out.train_seconds = r.train_seconds, out.latency_ms = r.latency_ms;
        if (mpi_send_timed(&out, (int)sizeof out, 0, TAG_RESULT, timeout) != NASC_OK) {
            err_set(e, "could not send its result to rank 0 within %g s (--worker-timeout): rank 0 is gone; "
                       "continue with --resume",
                    timeout);
            rc = NASC_ERR;
            break;
        }
    }
    beat_stop();
    beat_free();
    free(buf);
    return rc;
}

/* ---- rank 0 */
typedef struct {
    int alive;
    Job *job;    /* the trial it evaluates, or NULL when idle */
    double seen; /* when it was last heard from (or given work) */
} Peer;

typedef struct {
    Search *S;
    int nranks, nlive;
    Peer *peer;
    Job **queue; /* rows running in the database, waiting for a worker (resume, lost workers) */
    long nq;
    Job *blocked; /* asked while its function was being trained (row blocked_on) */
    long blocked_on;
    Job **held; /* finished while blocked: recorded once blocked is */
    long nheld;
    double timeout;
} Master;

static void queue_push(Master *M, Job *j, int front) {
    M->queue = xrealloc(M->queue, (size_t)(M->nq + 1) * sizeof *M->queue);
    if (front) {
        memmove(M->queue + 1, M->queue, (size_t)M->nq * sizeof *M->queue);
        M->queue[0] = j;
    } else {
        M->queue[M->nq] = j;
    }
    M->nq++;
}

static void job_drop(Job *j) {
    job_free(j);
    free(j);
}

/* A trial's result is known: record and tell it, unless an ask is blocked on another trial. */
static int master_complete(Master *M, Job *j, Err *e) {
    if (M->blocked && j->seq != M->blocked_on) {
        M->held = xrealloc(M->held, (size_t)(M->nheld + 1) * sizeof *M->held);
        M->held[M->nheld++] = j;
        return NASC_OK;
    }
    int rc = job_end(M->S, j, e);
    int source = M->blocked && j->seq == M->blocked_on;
    job_drop(j);
    if (rc != NASC_OK || !source) return rc;
    Job *b = M->blocked;
    M->blocked = NULL;
    JobNext next;
    long wf = -1;
    if (job_start(M->S, b, 0, DRIVER_EARLY_REUSE, &next, &wf, e) != NASC_OK) {
        job_drop(b);
        return NASC_ERR;
    }
    NASC_ASSERT(next == JOB_SETTLED); /* its source is finished now: a reuse */
    job_drop(b);
    for (long i = 0; i < M->nheld && rc == NASC_OK; i++) {
        rc = job_end(M->S, M->held[i], e);
        job_drop(M->held[i]);
        M->held[i] = NULL;
    }
    for (long i = 0; i < M->nheld; i++)
        if (M->held[i]) job_drop(M->held[i]);
    M->nheld = 0;
    return rc;
}

static void master_lose(Master *M, int w, const char *why) {
    mpi_lost = 1;
    if (beat.dead) atomic_store(&beat.dead[w], 1);
    M->peer[w].alive = 0;
    M->nlive--;
    Job *j = M->peer[w].job;
    M->peer[w].job = NULL;
    if (!M->S->cfg->quiet)
        fprintf(stderr, "search: worker rank %d lost (%s)%s%s\n", w, why, j ? "; its trial goes to " : "",
                j ? (j->attempts < 2 ? "another worker" : "the failed list") : "");
    if (!j) return;
    if (j->attempts < 2) {
        queue_push(M, j, 1);
        return;
    }
    j->r.status = TRIAL_FAILED;
    snprintf(j->err, sizeof j->err, "lost with worker rank %d (its second lost worker)", w);
    Err e;
    if (master_complete(M, j, &e) != NASC_OK) fprintf(stderr, "search: %s\n", e.msg);
}

static int send_work(Job *j, int w, uint64_t seed, double timeout) {
    WorkMsg m = {.seq = j->seq, .trial_id = j->t.id, .fid = j->t.fid, .seed = seed};
    memcpy(m.m, j->t.m, sizeof m.m);
    size_t ls = strlen(j->spec) + 1;
    char *buf = xmalloc(sizeof m + ls);
    memcpy(buf, &m, sizeof m);
    memcpy(buf + sizeof m, j->spec, ls);
    int rc = mpi_send_timed(buf, (int)(sizeof m + ls), w, TAG_WORK, timeout);
    free(buf);
    return rc;
}

/* The asynchronous loop of rank 0 (nranks > 1). queue: interrupted rows (resume) to redo
 * first; seq: the next trial's seq. */
static int master_run(Search *S, int nranks, Trial *trials, const long *redo, long nredo, long seq, Err *e) {
    const SearchConfig *cfg = S->cfg;
    Master M = {.S = S, .nranks = nranks, .nlive = nranks - 1, .timeout = mpi_beats ? cfg->worker_timeout : 0};
    M.peer = xcalloc((size_t)nranks, sizeof *M.peer);
    for (int w = 1; w < nranks; w++) M.peer[w] = (Peer){1, NULL, now_seconds()};
    for (long i = 0; i < nredo; i++) {
        Job *j = xmalloc(sizeof *j);
        job_init(j, &trials[redo[i]], redo[i]);
        queue_push(&M, j, 0);
    }
    int rc = NASC_ERR, done_asking = 0, ask_wait = 0;
    for (;;) {
        /* 1. Work for every idle worker (for rank 0 itself when none is left). */
        for (;;) {
            int w = 0;
            for (int k = 1; k < nranks && !w; k++)
                if (M.peer[k].alive && !M.peer[k].job) w = k;
            if (!w && M.nlive > 0) break;
            Job *j = NULL;
            int from_queue = 0;
            if (M.nq) {
                j = M.queue[0];
                memmove(M.queue, M.queue + 1, (size_t)--M.nq * sizeof *M.queue);
                from_queue = 1;
            } else if (!M.blocked && !done_asking && !ask_wait) {
                long evaluated = seq - S->infeasible;
                if ((cfg->trials > 0 && evaluated >= cfg->trials) ||
                    (cfg->minutes > 0 && now_seconds() - S->t0 > cfg->minutes * 60)) {
                    done_asking = 1;
                    break;
                }
                if (S->infeasible > 100 * (cfg->trials > 0 ? cfg->trials : 100) + 1000) {
                    err_set(e, "search: %ld candidates broke the hard limits; relax --max-* or the target",
                            S->infeasible);
                    goto out;
                }
                Trial t;
                int a = S->strat->ops->ask(S->strat, &t);
                if (a < 0) done_asking = 1;
                if (a == 0) ask_wait = 1;
                if (a != 1) break;
                j = xmalloc(sizeof *j);
                job_init(j, &t, seq++);
            } else {
                break;
            }
            j->worker = w;
            if (!(from_queue && j->attempts > 0)) { /* new, or interrupted: reuse, limits, running row */
                JobNext next;
                long wf = -1;
                if (job_start(S, j, from_queue, 0, &next, &wf, e) != NASC_OK) {
                    job_drop(j);
                    goto out;
                }
                if (next == JOB_SETTLED) {
                    job_drop(j);
                    continue;
                }
                if (next == JOB_WAIT) {
                    M.blocked = j, M.blocked_on = wf;
                    continue;
                }
                if (j->r.status == TRIAL_FAILED) { /* cannot be built */
                    if (master_complete(&M, j, e) != NASC_OK) goto out;
                    continue;
                }
            } else if (trials_restart(S->db, j->seq, w, e) != NASC_OK) { /* re-queued after a lost worker */
                job_drop(j);
                goto out;
            }
            j->attempts++;
            if (!w) { /* no worker left */
                eval_trial(S, &j->t, j->spec, j->seq, S->cfg->seed * 1000003u + (uint64_t)j->seq, &j->r, j->err,
                           sizeof j->err);
                if (master_complete(&M, j, e) != NASC_OK) goto out;
                continue;
            }
            if (send_work(j, w, S->cfg->seed * 1000003u + (uint64_t)j->seq, M.timeout) != NASC_OK) {
                M.peer[w].job = j;
                master_lose(&M, w, "send failed");
                continue;
            }
            M.peer[w].job = j;
            M.peer[w].seen = now_seconds();
        }
        /* 2. Done? */
        int busy = 0;
        for (int k = 1; k < nranks; k++) busy += M.peer[k].job != NULL;
        if (!busy && !M.nq && !M.blocked) {
            if (done_asking) break;
            if (ask_wait) {
                err_set(e, "search: strategy %s waits for results although none is pending (a bug)", cfg->strategy);
                goto out;
            }
        }
        /* 3. A message, or a silent worker. */
        int flag = 0, src = 0, n = 0, mrc = MPI_SUCCESS;
        MPI_Status st;
        char *buf = NULL;
        pthread_mutex_lock(&mpi_lock);
        if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) flag = 0;
        if (flag) {
            src = st.MPI_SOURCE;
            MPI_Get_count(&st, MPI_BYTE, &n);
            buf = xmalloc((size_t)n + 1);
            mrc = MPI_Recv(buf, n, MPI_BYTE, src, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
        pthread_mutex_unlock(&mpi_lock);
        if (!flag) {
            double now = now_seconds();
            for (int k = 1; k < nranks; k++)
                if (M.peer[k].alive && M.timeout > 0 && now - M.peer[k].seen > M.timeout)
                    master_lose(&M, k, "silent too long");
            nap(0.002);
            continue;
        }
        if (mrc != MPI_SUCCESS || src < 1 || src >= nranks || !M.peer[src].alive) {
            free(buf);
            continue;
        }
        M.peer[src].seen = now_seconds();
        Job *j = M.peer[src].job;
        ResultMsg r;
        if (st.MPI_TAG != TAG_RESULT || n != (int)sizeof r || !j) {
            free(buf);
            continue;
        }
        memcpy(&r, buf, sizeof r);
        free(buf);
        if (r.seq != j->seq) continue;
        M.peer[src].job = NULL;
        ask_wait = 0;
        j->r.status = (TrialStatus)r.status;
        j->r.val_acc = r.val_acc, j->r.train_acc = r.train_acc, j->r.train_loss = r.train_loss;
        j->r.train_seconds = r.train_seconds;
        if (!isnan(r.latency_ms)) j->r.latency_ms = r.latency_ms;
        r.err[sizeof r.err - 1] = 0;
        snprintf(j->err, sizeof j->err, "%s", r.err);
        if (master_complete(&M, j, e) != NASC_OK) goto out;
    }
    rc = NASC_OK;
out:
    for (int k = 1; k < nranks; k++)
        if (M.peer[k].job) job_drop(M.peer[k].job);
    for (long i = 0; i < M.nq; i++) job_drop(M.queue[i]);
    for (long i = 0; i < M.nheld; i++) job_drop(M.held[i]);
    if (M.blocked) job_drop(M.blocked);
    free(M.queue);
    free(M.held);
    free(M.peer);
    return rc;
}
#endif

/* ------------------------------------------------------------------ results */

static int cmp_params(const void *x, const void *y) {
    const SearchPoint *a = x, *b = y;
    return (a->params > b->params) - (a->params < b->params);
}

static int collect(Search *S, SearchResult *res, Err *e) {
    TrialRow *rows;
    long n;
    if (trials_list(S->db, &rows, &n, e) != NASC_OK) return NASC_ERR;
    res->trials = n;
    for (long i = 0; i < n; i++) { /* evaluations per rank (not reuses, not rejected members) */
        const TrialRow *r = &rows[i];
        if (r->running || r->reuse_of >= 0 || r->r.status == TRIAL_INFEASIBLE || r->worker < 0) continue;
        if (r->worker >= res->nworkers) {
            res->per_worker = xrealloc(res->per_worker, (size_t)(r->worker + 1) * sizeof *res->per_worker);
            for (int k = res->nworkers; k <= r->worker; k++) res->per_worker[k] = 0;
            res->nworkers = r->worker + 1;
        }
        res->per_worker[r->worker]++;
    }
    SearchPoint *pts = xcalloc((size_t)n + 1, sizeof *pts);
    int np = 0;
    for (long i = 0; i < n; i++) {
        const TrialRow *r = &rows[i];
        if (r->running || r->r.status != TRIAL_OK || !is_full(S, r->fid) || r->reuse_of >= 0) continue;
        SearchPoint p = {.seq = r->seq,
                         .arch = r->arch,
                         .val_acc = r->r.val_acc,
                         .params = r->r.params,
                         .macs = r->r.macs,
                         .peak_bytes = r->r.peak_bytes,
                         .flash_bytes = r->r.flash_bytes,
                         .latency_ms = search_latency(r->r.latency_ms, r->r.predicted_latency_ms),
                         .score = isnan(r->r.score) ? r->r.val_acc : r->r.score};
        pts[np++] = p;
    }
    int *front = xcalloc((size_t)np + 1, sizeof *front);
    search_pareto(pts, np, front);
    for (int i = 0; i < np; i++) {
        if (!res->have_best || pts[i].score > res->best.score) res->best = pts[i], res->have_best = 1;
        if (front[i]) {
            res->pareto = xrealloc(res->pareto, (size_t)(res->npareto + 1) * sizeof *res->pareto);
            res->pareto[res->npareto++] = pts[i];
        }
    }
    free(front);
    qsort(res->pareto, (size_t)res->npareto, sizeof *res->pareto, cmp_params);
    for (int i = 0; i < res->npareto; i++) res->pareto[i].arch = xstrdup(res->pareto[i].arch);
    if (res->have_best) res->best.arch = xstrdup(res->best.arch);
    free(pts);
    trials_rows_free(rows, n);
    return NASC_OK;
}

void search_result_free(SearchResult *r) {
    if (r->have_best) free(r->best.arch);
    for (int i = 0; i < r->npareto; i++) free(r->pareto[i].arch);
    free(r->pareto);
    free(r->per_worker);
    memset(r, 0, sizeof *r);
}

/* The proxy strategy's score of a member: the chosen training-free proxy of the network at a
 * fixed initialization on a fixed batch of training images (deterministic, so a resumed
 * search scores alike). -inf when the member does not build or the proxy fails. */
static double driver_proxy_score(void *ctx, const int *m) {
    Search *S = ctx;
    Err e;
    char *spec = S->space->ops->to_spec(S->space, m, &e);
    double score = -INFINITY;
    Net net;
    if (spec && build_net(S, spec, &net, &e) == NASC_OK) {
        net_init_params(&net, S->cfg->seed);
        double v;
        if (proxy_score(S->cfg->proxy ? S->cfg->proxy : "naswot", &net, S->proxy_x, S->proxy_y, PROXY_BATCH, &v, &e) ==
            NASC_OK)
            score = v;
        net_free(&net);
    }
    free(spec);
    return score;
}

/* ------------------------------------------------------------------ the run */
int search_run(const SearchConfig *cfg, SearchResult *res, Err *e) {
    memset(res, 0, sizeof *res);
    Search S = {.cfg = cfg, .dtype_bytes = 4, .t0 = now_seconds()};
    int rc = NASC_ERR, rank = 0, nranks = 1;
    Trial *trials = NULL;
    long ntrials = 0, *redo = NULL, nredo = 0;
#ifdef NASC_MPI
    int mpi_started = 0;
    mpi_begin(&rank, &nranks, &mpi_started);
#endif
    res->rank = rank, res->nranks = nranks;
    if (search_objective_check(cfg, 1, e) != NASC_OK) goto out; /* the target's budget is checked below */
    if (!(S.space = space_open(cfg->space, cfg->channels, cfg->cells, e))) goto out;
    if (cfg->target) {
        if (target_find(&S.target, cfg->target, e) != NASC_OK) goto out;
        S.have_target = 1;
        Err le;
        S.have_lat = lattable_for_target(&S.lat, &S.target, &le) == NASC_OK;
        if (!cfg->quiet)
            fprintf(stderr, "search: target %s: latency %s\n", S.target.name,
                    S.have_lat ? "predicted from its latency table" : "measured on this machine (no latency table)");
        S.dtype_bytes = S.target.dtype_bytes;
    }
    S.mnas = objective_mnas(cfg->objective);
    S.lat_target = cfg->latency_target_ms;
    if (S.mnas && !(S.lat_target > 0)) S.lat_target = S.have_target ? S.target.latency_ms : 0;
    if (search_objective_check(cfg, S.lat_target > 0, e) != NASC_OK) goto out;
    if (S.mnas && !cfg->quiet && rank == 0) {
        if (!strcmp(cfg->objective, "mnas"))
            fprintf(stderr, "search: objective mnas: score = val_acc x (latency / %.4g ms)^%g\n", S.lat_target,
                    cfg->mnas_w);
        else
            fprintf(stderr, "search: objective mnas-hard: score = val_acc up to %.4g ms, val_acc x %.4g ms / latency "
                            "above\n",
                    S.lat_target, S.lat_target);
    }
    if (cfg->benchmark) {
        if (!(S.table = tabular_load(cfg->benchmark, S.space, e))) goto out;
    }
    /* Data: the input shape for costs, and the training/validation split for evaluation. */
    if (dataset_load(&S.train, cfg->data, SPLIT_TRAIN, e) != NASC_OK) goto out;
    S.have_data = 1;
    if (cfg->val < 1 || cfg->val >= S.train.n) {
        err_set(e, "search: --val must be between 1 and %d (candidates are judged on a validation split)",
                S.train.n - 1);
        goto out;
    }
    S.norm.nchan = S.train.c;
    dataset_norm_stats(&S.train, S.norm.mean, S.norm.std);
    dataset_split(S.train.n, cfg->val, cfg->seed + 1, &S.train_idx, &S.ntrain, &S.val_idx);
#ifdef NASC_MPI
    if (rank > 0) { /* a worker: evaluates what rank 0 sends, touches no database */
        rc = worker_run(&S, rank, nranks, e);
        goto out;
    }
    if (nranks > 1) beat_start(0, nranks); /* from here on (a long replay too) */
#endif

    char num[20][48];
    int k = 0;
#define NUM(fmt, v) (snprintf(num[k], sizeof num[k], fmt, v), num[k++])
    TrialsSetting st[] = {
        {"space", cfg->space, 0},
        {"channels", NUM("%d", cfg->channels), 0},
        {"cells", NUM("%d", cfg->cells), 0},
        {"strategy", cfg->strategy, 0},
        {"seed", NUM("%llu", (unsigned long long)cfg->seed), 0},
        {"epochs", NUM("%.9g", cfg->epochs), 0},
        {"subset", NUM("%d", cfg->subset), 0},
        {"val", NUM("%d", cfg->val), 0},
        {"batch", NUM("%d", cfg->batch), 0},
        {"lr", NUM("%.7g", (double)cfg->lr), 0},
        {"wd", NUM("%.7g", (double)cfg->wd), 0},
        {"max_params", NUM("%.9g", cfg->max_params), 0},
        {"max_macs", NUM("%.9g", cfg->max_macs), 0},
        {"max_latency_ms", NUM("%.9g", cfg->max_latency_ms), 0},
        {"max_peak_kb", NUM("%.9g", cfg->max_peak_kb), 0},
        {"max_flash_kb", NUM("%.9g", cfg->max_flash_kb), 0},
        {"target", cfg->target ? cfg->target : "", 0},
        {"benchmark", cfg->benchmark ? cfg->benchmark : "", 0},
        {"data", cfg->data, 0},
        {"proxy", !strcmp(cfg->strategy, "proxy") && cfg->proxy ? cfg->proxy : "", 0},
        /* Stored only for an mnas objective, so that databases of accuracy searches (and those of
         * schema version 1) keep their settings. */
        {"objective", cfg->objective, 0},
        {"latency_target_ms", NUM("%.9g", S.lat_target), 0},
        {"mnas_w", NUM("%.9g", cfg->mnas_w), 0},
    };
#undef NUM
    int nst = (int)(sizeof st / sizeof st[0]) - (S.mnas ? (strcmp(cfg->objective, "mnas") ? 1 : 0) : 3);
    if (!(S.db = trials_open(cfg->db, cfg->resume ? TRIALS_RESUME : TRIALS_CREATE, st, nst, e))) goto out;

    StrategyConfig sc = strategy_defaults();
    sc.max_fid = (Fidelity){cfg->epochs, 1.0};
    sc.min_fid = (Fidelity){cfg->epochs / 9.0, 1.0};
    if (!strcmp(cfg->strategy, "proxy")) {
        S.proxy_x = xalloc_aligned((size_t)PROXY_BATCH * S.train.c * S.train.h * S.train.w * sizeof(float));
        S.proxy_y = xmalloc(PROXY_BATCH * sizeof(int));
        dataset_batch(&S.train, S.train_idx, NASC_MIN(PROXY_BATCH, S.ntrain), S.norm.mean, S.norm.std, NULL, NULL,
                      S.proxy_x, S.proxy_y);
        sc.proxy_score = driver_proxy_score;
        sc.proxy_ctx = &S;
    }
    if (!(S.strat = strategy_new(cfg->strategy, S.space, &sc, cfg->seed, e))) goto out;

    if (cfg->resume) {
        if (replay(&S, &trials, &ntrials, &redo, &nredo, e) != NASC_OK) goto out;
        if (!cfg->quiet)
            fprintf(stderr, "search: resuming %s: %ld trials recorded, %ld interrupted\n", cfg->db, ntrials, nredo);
        for (long i = 0; i < nredo && nranks == 1; i++)
            if (run_trial(&S, &trials[redo[i]], redo[i], 1, e) != NASC_OK) goto out;
    }
    long seq = ntrials, guard = 0;
#ifdef NASC_MPI
    if (nranks > 1) {
        if (master_run(&S, nranks, trials, redo, nredo, seq, e) != NASC_OK || trials_check(S.db, e) != NASC_OK) goto out;
    }
#endif
    for (; nranks == 1;) {
        long evaluated = seq - S.infeasible;
        if (cfg->trials > 0 && evaluated >= cfg->trials) break;
        if (cfg->minutes > 0 && now_seconds() - S.t0 > cfg->minutes * 60) break;
        Trial t;
        int a = S.strat->ops->ask(S.strat, &t);
        if (a < 0) break;
        if (a == 0) {
            err_set(e, "search: strategy %s waits for results although none is pending (a bug)", cfg->strategy);
            goto out;
        }
        if (run_trial(&S, &t, seq, 0, e) != NASC_OK) goto out;
        seq++;
        if (S.infeasible > 100 * (cfg->trials > 0 ? cfg->trials : 100) + 1000 && ++guard) {
            err_set(e, "search: %ld candidates broke the hard limits; relax --max-* or the target", S.infeasible);
            goto out;
        }
    }
    if (collect(&S, res, e) != NASC_OK) goto out;
    res->trained = S.trained;
    res->reused = S.reused;
    res->infeasible = S.infeasible;
    res->failed = S.failed;
    rc = NASC_OK;
out:
#ifdef NASC_MPI
    if (rank == 0 && nranks > 1) {
        beat_stop();
        mpi_stop_workers(nranks, beat.dead);
        beat_free();
    }
    if (rank > 0 && rc != NASC_OK) { /* rank 0 may be waiting for this rank: end the job */
        fprintf(stderr, "nasc search: rank %d: %s\n", rank, e->msg);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
#endif
    free(trials);
    free(redo);
    if (S.strat) strategy_free(S.strat);
    if (S.db) trials_close(S.db);
    if (S.table) tabular_free(S.table);
    if (S.have_data) {
        dataset_free(&S.train);
        free(S.train_idx);
        free(S.val_idx);
    }
    free(S.proxy_x);
    free(S.proxy_y);
    free(S.front);
    if (S.have_lat) lattable_free(&S.lat);
    space_free(S.space);
#ifdef NASC_MPI
    if (mpi_started && !mpi_lost) MPI_Finalize();
    if (mpi_started && mpi_lost) fflush(NULL); /* exits without MPI_Finalize: see mpi_lost */
#endif
    return rc;
}
