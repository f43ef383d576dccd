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
} SearchConfig;

typedef struct {
    long seq;
    char *arch;
    double val_acc;
    long long params, macs, peak_bytes, flash_bytes;
    double latency_ms;
} SearchPoint;

typedef struct {
    long trials;          /* rows in the database */
    long trained, reused, infeasible, failed;
    SearchPoint best;     /* recommended: best validation accuracy at full fidelity */
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

#endif
