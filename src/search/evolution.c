/* evolution.c: regularized (aging) evolution, Real et al. 2019, asynchronous.
 *
 * The first `population` asks are uniform random members. After that each ask runs a
 * tournament: `sample_size` distinct members of the current population, drawn uniformly,
 * the best by validation accuracy (the earliest drawn on ties) is the parent, and the child is
 * space_mutate(parent). A child whose canonical form was already asked is mutated again (up to
 * 64 tries from the parent, then 64 two-step mutations), and failing that replaced by a fresh
 * random member, so no function is asked twice. The population is the `population` most
 * recently told successful trials (a FIFO: the oldest dies, not the worst). ask never waits:
 * it can return children while other trials are pending, and while no result is in yet it
 * returns random members.
 *
 * TRIAL_INFEASIBLE and TRIAL_FAILED results never enter the population (they have no
 * accuracy to compete with); the members stay in the seen set, so they are not asked again.
 * All trials run at full fidelity.
 */
#include "strategies.h"

typedef struct {
    int m[SPACE_MAX_DIMS];
    double score;
} Indiv;

typedef struct {
    StrSet seen;
    Indiv *pop; /* ring buffer of cfg.population told members, oldest at head */
    int head, n;
    long asked;
} EvoImpl;

static int evo_child(Strategy *s, EvoImpl *im, int *child) {
    int P = s->cfg.population, S = NASC_MIN(s->cfg.sample_size, im->n);
    int idx[1024], *pick = im->n <= 1024 ? idx : xmalloc((size_t)im->n * sizeof *pick);
    for (int i = 0; i < im->n; i++) pick[i] = i;
    int best = -1;
    for (int i = 0; i < S; i++) { /* partial Fisher-Yates: S distinct members */
        int j = i + (int)rng_below(&s->rng, (uint32_t)(im->n - i));
        int tmp = pick[i];
        pick[i] = pick[j];
        pick[j] = tmp;
        const Indiv *c = &im->pop[(im->head + pick[i]) % P];
        if (best < 0 || c->score > im->pop[(im->head + best) % P].score) best = pick[i];
    }
    if (pick != idx) free(pick);
    const int *parent = im->pop[(im->head + best) % P].m;
    for (int tr = 0; tr < 128; tr++) {
        space_mutate(s->space, parent, &s->rng, child);
        if (tr >= 64) {
            int tmp[SPACE_MAX_DIMS];
            memcpy(tmp, child, (size_t)s->space->ndims * sizeof *tmp);
            space_mutate(s->space, tmp, &s->rng, child);
        }
        if (!strat_seen(s->space, &im->seen, child)) return 1;
    }
    return strat_sample_unique(s, &im->seen, child, 10000);
}

static int evo_ask(Strategy *s, Trial *t) {
    EvoImpl *im = s->impl;
    int m[SPACE_MAX_DIMS], ok;
    if (im->asked < s->cfg.population || im->n == 0) ok = strat_sample_unique(s, &im->seen, m, 10000);
    else ok = evo_child(s, im, m);
    if (!ok) return -1;
    char *k = strat_key(s->space, m, NULL);
    strset_add(&im->seen, k);
    free(k);
    im->asked++;
    strat_emit(s, t, m, s->cfg.max_fid);
    return 1;
}

static void evo_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    EvoImpl *im = s->impl;
    if (status != TRIAL_OK) return;
    int P = s->cfg.population;
    Indiv *slot;
    if (im->n < P) slot = &im->pop[(im->head + im->n++) % P];
    else { /* the oldest dies; the newcomer takes its slot at the tail */
        slot = &im->pop[im->head];
        im->head = (im->head + 1) % P;
    }
    memcpy(slot->m, t->m, (size_t)s->space->ndims * sizeof *t->m);
    slot->score = score;
}

static void evo_destroy(Strategy *s) {
    EvoImpl *im = s->impl;
    strset_free(&im->seen);
    free(im->pop);
    free(im);
}

static const StrategyOps evo_ops = {"evolution", evo_ask, evo_tell, evo_destroy};

int evolution_init(Strategy *s, Err *e) {
    EvoImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    im->pop = xcalloc((size_t)s->cfg.population, sizeof *im->pop);
    s->impl = im;
    s->ops = &evo_ops;
    return NASC_OK;
}
