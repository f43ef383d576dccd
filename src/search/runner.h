/* runner.h: a synchronous search loop over a tabular benchmark. It asks, looks the trial up,
 * tells at once, and stops when the query budget is spent or the strategy finishes. The real
 * driver (training, trial database, MPI workers) reuses the same strategies.
 *
 * Accounting: every lookup is one query, at any fidelity (a BOHB evaluation at 1/9 of the
 * epochs costs as much as a full one: the conservative choice, since without `accuracy@E`
 * columns a low-fidelity lookup returns the full-fidelity accuracy). `budget` also sums
 * epochs x fraction in units of a full evaluation, for reporting. A member that violates a
 * limit is told TRIAL_INFEASIBLE and is free (it would never be trained); one that the table
 * lacks is told TRIAL_FAILED and costs a query. The best-so-far accuracy counts only trials at
 * full fidelity: a model seen only at a low fidelity was never trained fully.
 */
#ifndef NASC_RUNNER_H
#define NASC_RUNNER_H

#include "strategy.h"
#include "tabular.h"

typedef struct {
    int queries;         /* query budget (lookups charged) */
    double budget;       /* > 0: also stop once this many full-training equivalents are spent */
    double max_params;   /* hard limits on the table's cost columns; <= 0: none. A row without */
    double max_macs;     /* the column passes. */
    double max_latency_ms;
    double max_peak_bytes;
    /* Called after each tell (may be NULL): for traces and tests. */
    void (*on_trial)(void *ctx, const Trial *t, TrialStatus status, double score);
    void *ctx;
} SearchRunOptions;

typedef struct {
    int queries;       /* lookups charged */
    int full_queries;  /* of which at full fidelity */
    double budget;     /* sum of epochs x fraction / (full epochs x full fraction) */
    int infeasible;    /* told TRIAL_INFEASIBLE (free) */
    int misses;        /* told TRIAL_FAILED: not in the table */
    int finished;      /* the strategy returned -1 before the budget was spent */
    double best;       /* best full-fidelity accuracy, 0 when none yet */
    int best_m[SPACE_MAX_DIMS];
} SearchRunStats;

/* Run s against t. curve (may be NULL) gets opt->queries values: curve[q] = best-so-far after
 * q + 1 queries (the final best repeated when the strategy finished early). Returns NASC_OK,
 * or NASC_ERR with a message when the strategy keeps proposing infeasible members (more than
 * 100 per query: the limits leave almost nothing). ask() == 0 cannot happen here, everything
 * being told at once; it is a strategy bug and fails NASC_ASSERT. */
int search_run_tabular(Strategy *s, const Tabular *t, const SearchRunOptions *opt, double *curve,
                       SearchRunStats *st, Err *e);

#endif
