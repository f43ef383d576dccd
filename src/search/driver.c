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
 */
#include "driver.h"

#include <math.h>

#include "../cost/cost.h"
#include "../train/train.h"
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
    return c;
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
    double best;
} Search;

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

/* Costs of the member; returns 1 if it breaks a hard limit (reason in why). */
static int check_costs(Search *S, Net *net, TrialResult *r, char *why, size_t nwhy) {
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
    if (!why[0] && max_lat > 0) {
        LatencyConfig lc = {.repeats = 30, .warmup = 5, .max_seconds = 2, .seed = 1};
        LatencyStats ls;
        latency_measure(net, &lc, &ls);
        r->latency_ms = ls.median_ms;
        if (ls.median_ms > max_lat) snprintf(why, nwhy, "latency %.3f ms > %.3f ms", ls.median_ms, max_lat);
    }
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

/* Evaluates a trial that has a row already (status running). */
static void eval_trial(Search *S, const Trial *t, const char *spec, long seq, TrialResult *r, char *err, size_t nerr) {
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
    train_trial(S, &net, t, S->cfg->seed * 1000003u + (uint64_t)seq, r, err, nerr);
    net_free(&net);
}

/* ------------------------------------------------------------------ one trial */
static void say(const Search *S, long seq, const char *arch, const char *what, const TrialResult *r) {
    if (S->cfg->quiet) return;
    double el = now_seconds() - S->t0;
    if (r && r->status == TRIAL_OK)
        fprintf(stderr, "trial %ld  %-9s val_acc %.4f  params %lld  best %.4f  %.0fs  %s\n", seq, what, r->val_acc,
                r->params, S->best, el, arch);
    else
        fprintf(stderr, "trial %ld  %-9s %s  %.0fs  %s\n", seq, what, r && r->error ? r->error : "", el, arch);
}

/* Runs the trial the strategy asked (row seq); returns NASC_ERR only for database errors. */
static int run_trial(Search *S, const Trial *t, long seq, int redo, Err *e) {
    char *arch = S->space->ops->to_arch(S->space, t->m);
    char *canon = space_canonical_arch(S->space, t->m);
    char *spec = S->space->ops->to_spec(S->space, t->m, e);
    int rc = NASC_ERR;
    TrialResult r = trials_result_empty();
    char why[512] = "", err[512] = "";
    if (!spec) goto done;
    TrialBegin b = {.seq = seq, .trial_id = t->id, .arch = arch, .canonical = canon, .spec = spec, .fid = t->fid,
                    .seed = S->cfg->seed * 1000003u + (uint64_t)seq, .worker = 0, .reuse_of = -1};
    if (!redo) {
        TrialRow found;
        int f = trials_find_result(S->db, canon, t->fid, &found, e);
        if (f < 0) goto done;
        if (f == TRIALS_FOUND_DONE && found.r.status != TRIAL_INFEASIBLE) {
            TrialResult rr = found.r;
            b.reuse_of = found.seq;
            rc = trials_record(S->db, &b, &rr, e);
            trials_row_free(&found);
            if (rc != NASC_OK) goto done;
            S->reused++;
            if (rr.status == TRIAL_OK && is_full(S, t->fid)) S->best = fmax(S->best, rr.val_acc);
            S->strat->ops->tell(S->strat, t, rr.status, rr.val_acc);
            say(S, seq, arch, "reused", &rr);
            goto done;
        }
        if (f == TRIALS_FOUND_DONE) trials_row_free(&found);
        NASC_ASSERT(f != TRIALS_FOUND_RUNNING); /* serial: nothing else is running */
    }
    /* Costs and hard limits, before any training. */
    Net net;
    Err be;
    if (build_net(S, spec, &net, &be) != NASC_OK) {
        r.status = TRIAL_FAILED;
        snprintf(err, sizeof err, "%s", be.msg);
    } else {
        int bad = check_costs(S, &net, &r, why, sizeof why);
        net_free(&net);
        if (bad) {
            r.status = TRIAL_INFEASIBLE;
            r.error = why;
            if (redo) rc = trials_finish(S->db, seq, &r, e);
            else rc = trials_mark_infeasible(S->db, &b, &r, e);
            if (rc != NASC_OK) goto done;
            S->infeasible++;
            S->strat->ops->tell(S->strat, t, TRIAL_INFEASIBLE, 0);
            say(S, seq, arch, "rejected", &r);
            goto done;
        }
    }
    if (redo) rc = trials_restart(S->db, seq, 0, e);
    else rc = trials_begin(S->db, &b, e);
    if (rc != NASC_OK) goto done;
    if (r.status != TRIAL_FAILED) eval_trial(S, t, spec, seq, &r, err, sizeof err);
    if (err[0]) r.error = err;
    if ((rc = trials_finish(S->db, seq, &r, e)) != NASC_OK) goto done;
    if (r.status == TRIAL_OK) {
        S->trained++;
        if (is_full(S, t->fid)) S->best = fmax(S->best, r.val_acc);
    } else {
        S->failed++;
    }
    S->strat->ops->tell(S->strat, t, r.status, r.val_acc);
    say(S, seq, arch, r.status == TRIAL_OK ? "trained" : "failed", &r);
done:
    free(arch);
    free(canon);
    free(spec);
    return rc;
}

/* ------------------------------------------------------------------ replay */
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
    int rc = NASC_OK;
    for (long i = 0; i < nev && rc == NASC_OK; i++) {
        const TrialRow *row = &rows[ev[i].seq];
        Trial *t = &(*trials)[ev[i].seq];
        if (ev[i].kind == TRIALS_EV_ASK) {
            int a = S->strat->ops->ask(S->strat, t);
            char *arch = a == 1 ? S->space->ops->to_arch(S->space, t->m) : NULL;
            if (a != 1 || strcmp(arch, row->arch) != 0 || !fid_equal(t->fid, row->fid)) {
                err_set(e,
                        "%s: cannot resume: replaying the strategy does not reproduce trial %ld (recorded %s, "
                        "replayed %s); the database was written by a different strategy version",
                        trials_path(S->db), row->seq, row->arch, arch ? arch : "nothing");
                rc = NASC_ERR;
            }
            free(arch);
            if (row->running) (*redo)[(*nredo)++] = row->seq;
        } else {
            TrialStatus st = row->r.status;
            if (row->r.status == TRIAL_OK && is_full(S, row->fid)) S->best = fmax(S->best, row->r.val_acc);
            if (st == TRIAL_INFEASIBLE) S->infeasible++;
            else if (row->reuse_of >= 0) S->reused++;
            else if (st == TRIAL_OK) S->trained++;
            else S->failed++;
            S->strat->ops->tell(S->strat, t, st, row->r.val_acc);
        }
    }
    free(ev);
    trials_rows_free(rows, nrows);
    return rc;
}

/* ------------------------------------------------------------------ results */
static int dominated(const SearchPoint *a, const SearchPoint *b) { /* b dominates a */
    return b->val_acc >= a->val_acc && b->params <= a->params && b->macs <= a->macs &&
           (b->val_acc > a->val_acc || b->params < a->params || b->macs < a->macs);
}

static int cmp_params(const void *x, const void *y) {
    const SearchPoint *a = x, *b = y;
    return (a->params > b->params) - (a->params < b->params);
}

static int collect(Search *S, SearchResult *res, Err *e) {
    TrialRow *rows;
    long n;
    if (trials_list(S->db, &rows, &n, e) != NASC_OK) return NASC_ERR;
    res->trials = n;
    SearchPoint *pts = xcalloc((size_t)n + 1, sizeof *pts);
    int np = 0;
    for (long i = 0; i < n; i++) {
        const TrialRow *r = &rows[i];
        if (r->running || r->r.status != TRIAL_OK || !is_full(S, r->fid) || r->reuse_of >= 0) continue;
        SearchPoint p = {r->seq, r->arch, r->r.val_acc, r->r.params, r->r.macs, r->r.peak_bytes, r->r.flash_bytes,
                         r->r.latency_ms};
        pts[np++] = p;
    }
    for (int i = 0; i < np; i++) {
        if (!res->have_best || pts[i].val_acc > res->best.val_acc) res->best = pts[i], res->have_best = 1;
        int dom = 0;
        for (int j = 0; j < np && !dom; j++) dom = j != i && dominated(&pts[i], &pts[j]);
        if (!dom) {
            res->pareto = xrealloc(res->pareto, (size_t)(res->npareto + 1) * sizeof *res->pareto);
            res->pareto[res->npareto++] = pts[i];
        }
    }
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
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ the run */
int search_run(const SearchConfig *cfg, SearchResult *res, Err *e) {
    memset(res, 0, sizeof *res);
    Search S = {.cfg = cfg, .dtype_bytes = 4, .t0 = now_seconds()};
    int rc = NASC_ERR;
    Trial *trials = NULL;
    long ntrials = 0, *redo = NULL, nredo = 0;
    if (!(S.space = space_open(cfg->space, cfg->channels, cfg->cells, e))) return NASC_ERR;
    if (cfg->target) {
        if (target_find(&S.target, cfg->target, e) != NASC_OK) goto out;
        S.have_target = 1;
        S.dtype_bytes = S.target.dtype_bytes;
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

    char num[16][48];
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
    };
#undef NUM
    if (!(S.db = trials_open(cfg->db, cfg->resume ? TRIALS_RESUME : TRIALS_CREATE, st, (int)(sizeof st / sizeof st[0]),
                             e)))
        goto out;

    StrategyConfig sc = strategy_defaults();
    sc.max_fid = (Fidelity){cfg->epochs, 1.0};
    sc.min_fid = (Fidelity){cfg->epochs / 9.0, 1.0};
    if (!(S.strat = strategy_new(cfg->strategy, S.space, &sc, cfg->seed, e))) goto out;

    if (cfg->resume) {
        if (replay(&S, &trials, &ntrials, &redo, &nredo, e) != NASC_OK) goto out;
        if (!cfg->quiet)
            fprintf(stderr, "search: resuming %s: %ld trials recorded, %ld interrupted\n", cfg->db, ntrials, nredo);
        for (long i = 0; i < nredo; i++)
            if (run_trial(&S, &trials[redo[i]], redo[i], 1, e) != NASC_OK) goto out;
    }
    long seq = ntrials, guard = 0;
    for (;;) {
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
    space_free(S.space);
    return rc;
}
