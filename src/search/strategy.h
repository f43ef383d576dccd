/* strategy.h: the search strategy interface. A strategy only proposes and learns: ask()
 * returns the next trial (a member of the space and a fidelity), tell() reports its result.
 * It never trains; the search driver evaluates trials (training, or a tabular benchmark
 * lookup) and checks constraints before any training.
 *
 * Determinism contract (the driver's crash-safe resume depends on it): given the same
 * space, config and seed, and the same sequence of tell() results in the same order
 * relative to ask() calls, a strategy asks exactly the same trials. The driver resumes a
 * killed search by replaying the recorded ask/tell sequence from the trial database.
 */
#ifndef NASC_STRATEGY_H
#define NASC_STRATEGY_H

#include "../space/space.h"

typedef struct {
    double epochs;   /* training epochs at this fidelity */
    double fraction; /* fraction of the training split used, in (0, 1] */
} Fidelity;

typedef enum {
    TRIAL_OK,         /* score is the validation accuracy in [0, 1] */
    TRIAL_INFEASIBLE, /* violates a hard constraint; never trained */
    TRIAL_FAILED,     /* training failed (diverged, crashed) */
} TrialStatus;

typedef struct {
    long id;                 /* assigned by the strategy, 0, 1, 2, ... in ask order */
    int m[SPACE_MAX_DIMS];   /* the member (space->ndims decisions) */
    Fidelity fid;
} Trial;

typedef struct {
    Fidelity max_fid;     /* full fidelity (the budget's top rung) */
    Fidelity min_fid;     /* lowest fidelity multi-fidelity strategies may use */
    int population;       /* evolution: population size (e.g. 20); reinforce/pnas: batch sizes */
    int sample_size;      /* evolution: tournament size (e.g. 5) */
    int top_k;            /* pnas: trials trained per expansion round; proxy: trained after scoring */
    double eta;           /* bohb/hyperband: 3 */
    /* proxy strategy: a training-free score for a member (higher is better), provided by
     * the driver (it builds the network); NULL when unavailable. */
    double (*proxy_score)(void *ctx, const int *m);
    void *proxy_ctx;
} StrategyConfig;

typedef struct Strategy Strategy;

typedef struct {
    const char *name;
    /* 1: *t filled with the next trial; 0: nothing to ask until pending trials are told
     * (a synchronous phase); -1: the strategy is finished. */
    int (*ask)(Strategy *s, Trial *t);
    void (*tell)(Strategy *s, const Trial *t, TrialStatus status, double score);
    void (*destroy)(Strategy *s);
} StrategyOps;

struct Strategy {
    const StrategyOps *ops;
    const Space *space;
    StrategyConfig cfg;
    Rng rng;
    long next_id;
    void *impl;
};

StrategyConfig strategy_defaults(void);
/* name: random, evolution, reinforce, bohb, pnas, neat, proxy. */
Strategy *strategy_new(const char *name, const Space *space, const StrategyConfig *cfg, uint64_t seed, Err *e);
void strategy_free(Strategy *s);
const char *strategy_names(void); /* "random, evolution, ..." for messages */

#endif
