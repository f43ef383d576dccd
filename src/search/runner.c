/* runner.c: the synchronous tabular search loop (contract and accounting in runner.h). */
#include "runner.h"

#include <math.h>

static int violates(const SearchRunOptions *o, const TabularEntry *x) {
    return (o->max_params > 0 && x->params > o->max_params) || (o->max_macs > 0 && x->macs > o->max_macs) ||
           (o->max_latency_ms > 0 && x->latency_ms > o->max_latency_ms) ||
           (o->max_peak_bytes > 0 && x->peak_bytes > o->max_peak_bytes); /* NAN compares false: passes */
}

int search_run_tabular(Strategy *s, const Tabular *t, const SearchRunOptions *opt, double *curve,
                       SearchRunStats *st, Err *e) {
    memset(st, 0, sizeof *st);
    const Fidelity full = s->cfg.max_fid;
    long free_asks = 0, max_free = 100L * opt->queries + 1000;
    while (st->queries < opt->queries && !(opt->budget > 0 && st->budget >= opt->budget * (1 - 1e-9))) {
        Trial tr;
        int rc = s->ops->ask(s, &tr);
        if (rc < 0) {
            st->finished = 1;
            break;
        }
        NASC_ASSERT(rc == 1); /* 0 (wait) is impossible: every trial was told */
        TabularEntry x;
        TrialStatus status;
        double score = 0;
        if (tabular_lookup(t, tr.m, tr.fid, full.epochs, &x) != NASC_OK) {
            status = TRIAL_FAILED;
            st->misses++;
        } else if (violates(opt, &x)) {
            status = TRIAL_INFEASIBLE;
            st->infeasible++;
        } else {
            status = TRIAL_OK;
            score = x.accuracy;
        }
        if (status != TRIAL_INFEASIBLE) {
            int is_full = tr.fid.epochs >= full.epochs * (1 - 1e-9) && tr.fid.fraction >= full.fraction * (1 - 1e-9);
            st->budget += tr.fid.epochs * tr.fid.fraction / (full.epochs * full.fraction);
            if (is_full) st->full_queries++;
            if (is_full && status == TRIAL_OK && score > st->best) {
                st->best = score;
                memcpy(st->best_m, tr.m, (size_t)s->space->ndims * sizeof *tr.m);
            }
            if (curve) curve[st->queries] = st->best;
            st->queries++;
        } else if (++free_asks > max_free) {
            err_set(e, "search: %ld members violated the limits; relax --max-* or check the table's costs",
                    free_asks);
            return NASC_ERR;
        }
        s->ops->tell(s, &tr, status, score);
        if (opt->on_trial) opt->on_trial(opt->ctx, &tr, status, score);
    }
    if (curve)
        for (int q = st->queries; q < opt->queries; q++) curve[q] = st->best;
    return NASC_OK;
}
