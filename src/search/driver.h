/* driver.h: `nasc search`'s engine: a strategy proposes, the driver checks hard constraints
 * before any training, evaluates (trains on a validation split of the training set, never
 * the test set, or looks the trial up in a tabular benchmark), records every trial in the
 * trial database, and resumes a killed search by replaying the recorded ask/tell events.
 *
 * Built with MPI (make MPI=1, -DNASC_MPI) and started by mpirun with N > 1 ranks, search_run
 * runs on every rank: rank 0 owns the database and the strategy and hands trials to ranks
 * 1..N-1, which only evaluate them (protocol and lost-rank handling in driver.c). Which rank
 * finishes first changes the ask/tell interleaving, so an MPI run need not equal a serial run;
 * --resume replays the recorded order either way. One rank, or no MPI: the serial loop.
 *
 * Objective: what strategies maximize and what picks the recommended model is the trial's
 * score (stored in the database's score column). --objective acc (default): the validation
 * accuracy. --objective mnas: MnasNet's soft reward (Tan et al. 2019, eq. 2 with
 * alpha = beta = w): score = acc * (lat / T)^w, w = -0.07 by default (--mnas-w), T the
 * latency target; a model twice as fast as T gains 5%, one twice as slow loses 5%.
 * --objective mnas-hard: MnasNet's hard variant (alpha = 0, beta = -1): acc below T,
 * acc * T / lat above. lat is the latency the driver already knows for the hard limit, in this
 * order: the tabular benchmark's latency_ms column, else the target's latency table's
 * prediction (nasc profile), else the median measured on this machine at batch 1. The Pareto
 * front stays accuracy vs params and MACs, whatever the objective.
 *
 * Progress (stderr, one line per trial unless quiet): the trial's result, then trials done
 * (of --trials), the best score so far at full fidelity, the Pareto front's size, time spent
 * and time left: with --minutes the budget's remainder, with --trials the mean time per trial
 * of this run times the trials still to do (marked "~").
 */
#ifndef NASC_DRIVER_H
#define NASC_DRIVER_H

#include "../data/data.h"
#include "../store/trials.h"
#include "strategy.h"

typedef struct {
    const char *space;    /* nb201 | macro | FILE */
    int channels, cells;  /* NB201 skeleton */
    const char *strategy;
    long trials;          /* trials to run (asks answered), 0 = no limit */
    double minutes;       /* wall-clock limit of this invocation, 0 = none */
    /* Hard limits (<= 0: none), checked before training. */
    double max_params, max_macs, max_latency_ms, max_peak_kb, max_flash_kb;
    const char *target;   /* a target profile: its SRAM, flash, latency budget and dtype */
    double epochs;        /* full fidelity: epochs per trial */
    int subset;           /* training images per trial at full fidelity (0 = the whole split) */
    int val;              /* validation images held out of the training set */
    int batch;
    float lr, wd;
    uint64_t seed;
    const char *db;
    int resume;
    const char *benchmark; /* tabular mode: answer trials from this CSV */
    const char *data;
    const char *proxy;     /* proxy strategy: synflow | naswot | gradnorm (naswot) */
    int quiet;
    double worker_timeout; /* MPI: seconds without a word from a worker before it is declared dead */
    const char *objective;    /* acc | mnas | mnas-hard (see above) */
    double latency_target_ms; /* mnas: T; <= 0: the --target's latency budget */
    double mnas_w;            /* mnas: the exponent w, < 0 (-0.07) */
} SearchConfig;

typedef struct {
    long seq;
    char *arch;
    double val_acc;
    long long params, macs, peak_bytes, flash_bytes;
    double latency_ms; /* the objective's latency (see above); NAN when none was known */
    double score;      /* the objective's value */
} SearchPoint;

typedef struct {
    long trials;          /* rows in the database */
    long trained, reused, infeasible, failed;
    SearchPoint best;     /* recommended: best score at full fidelity (ties: the earlier trial) */
    SearchPoint *pareto;  /* accuracy vs params and MACs, full fidelity, sorted by params */
    int npareto;
    int have_best;
    long *per_worker;     /* evaluated trials per rank (index = the rows' worker), from the database */
    int nworkers;         /* entries of per_worker */
    int rank, nranks;     /* MPI (make MPI=1); results are valid on rank 0 only; serial: 0, 1 */
} SearchResult;

SearchConfig search_defaults(void);
int search_run(const SearchConfig *cfg, SearchResult *res, Err *e);
void search_result_free(SearchResult *r);

/* NASC_ERR with a message naming the flag when objective, latency target or w are not usable
 * (have_target_latency: a --target with a latency budget stands in for the target). */
int search_objective_check(const SearchConfig *cfg, int have_target_latency, Err *e);
/* The score of a trial with accuracy acc and latency lat_ms under objective (acc | mnas |
 * mnas-hard), target_ms and w. An unknown latency (NAN) scores 0 under the mnas objectives. */
double search_score(const char *objective, double target_ms, double w, double acc, double lat_ms);
/* The latency an objective uses: measured (or from a tabular benchmark), else predicted. */
double search_latency(double latency_ms, double predicted_latency_ms);
/* front[i] = 1 when point i is on the Pareto front of accuracy (up) vs params and MACs (down):
 * no other point is at least as good in all three and better in one. O(n^2). */
void search_pareto(const SearchPoint *pts, int n, int *front);

#endif
