/* strategy.c: strategy_new() dispatch, configuration defaults and checks, and the helpers the
 * strategies share (strategies.h): a string set for duplicate detection and unique sampling.
 *
 * Duplicates: every strategy keys what it asked by the space's canonical arch string (members
 * that compute the same function share it), so it never asks the same function twice at the
 * same fidelity unless the space runs out of fresh members (then it says so by returning -1
 * from ask, or, for strategies that must keep going, by accepting a repeat; see each file).
 */
#include "strategies.h"

#include <math.h>

StrategyConfig strategy_defaults(void) {
    StrategyConfig c;
    memset(&c, 0, sizeof c);
    c.max_fid.epochs = 12;
    c.max_fid.fraction = 1;
    c.min_fid.epochs = 12.0 / 9.0; /* two rungs below the top with eta = 3 */
    c.min_fid.fraction = 1;
    c.population = 10;
    c.sample_size = 3;
    c.top_k = 10;
    c.eta = 3;
    return c;
}

int neat_init(Strategy *s, Err *e), proxy_init(Strategy *s, Err *e); /* neat.c, proxy.c */

static const struct {
    const char *name;
    int (*init)(Strategy *, Err *);
} strategy_table[] = {
    {"random", random_init}, {"evolution", evolution_init}, {"reinforce", reinforce_init},
    {"bohb", bohb_init},     {"pnas", pnas_init},           {"neat", neat_init}, {"proxy", proxy_init},
};
#define N_STRATEGIES ((int)(sizeof strategy_table / sizeof strategy_table[0]))

const char *strategy_names(void) { return "random, evolution, reinforce, bohb, pnas, neat, proxy"; }

static int fid_ok(Fidelity f) { return f.epochs > 0 && isfinite(f.epochs) && f.fraction > 0 && f.fraction <= 1; }

Strategy *strategy_new(const char *name, const Space *space, const StrategyConfig *cfg, uint64_t seed, Err *e) {
    StrategyConfig c = cfg ? *cfg : strategy_defaults();
    if (!space || space->ndims < 1) {
        err_set(e, "strategy: no search space (or a space without decisions)");
        return NULL;
    }
    if (!fid_ok(c.max_fid) || !fid_ok(c.min_fid)) {
        err_set(e, "strategy: fidelities need epochs > 0 and a data fraction in (0, 1] (got max %g epochs x %g, "
                   "min %g epochs x %g)", c.max_fid.epochs, c.max_fid.fraction, c.min_fid.epochs, c.min_fid.fraction);
        return NULL;
    }
    if (c.min_fid.epochs > c.max_fid.epochs || c.min_fid.fraction > c.max_fid.fraction) {
        err_set(e, "strategy: the minimum fidelity (%g epochs x %g) exceeds the maximum (%g epochs x %g)",
                c.min_fid.epochs, c.min_fid.fraction, c.max_fid.epochs, c.max_fid.fraction);
        return NULL;
    }
    if (c.population < 1 || c.sample_size < 1 || c.top_k < 1) {
        err_set(e, "strategy: population (%d), sample size (%d) and top-k (%d) must be at least 1", c.population,
                c.sample_size, c.top_k);
        return NULL;
    }
    if (c.sample_size > c.population) {
        err_set(e, "strategy: the tournament sample size (%d) exceeds the population (%d)", c.sample_size,
                c.population);
        return NULL;
    }
    if (!(c.eta >= 2)) {
        err_set(e, "strategy: eta must be at least 2, got %g", c.eta);
        return NULL;
    }
    for (int i = 0; i < N_STRATEGIES; i++) {
        if (!name || strcmp(name, strategy_table[i].name) != 0) continue;
        Strategy *s = xcalloc(1, sizeof *s);
        s->space = space;
        s->cfg = c;
        rng_seed(&s->rng, seed);
        s->next_id = 0;
        if (strategy_table[i].init(s, e) != NASC_OK) {
            free(s);
            return NULL;
        }
        return s;
    }
    err_set(e, "strategy: unknown strategy '%s' (expected one of: %s)", name ? name : "(none)", strategy_names());
    return NULL;
}

void strategy_free(Strategy *s) {
    if (!s) return;
    if (s->ops && s->ops->destroy) s->ops->destroy(s);
    free(s);
}

/* ------------------------------------------------------------------ string set */
static uint64_t fnv1a(const char *k) {
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

void strset_init(StrSet *h) {
    h->cap = 64;
    h->n = 0;
    h->slot = xcalloc(h->cap, sizeof *h->slot);
}

void strset_free(StrSet *h) {
    for (size_t i = 0; i < h->cap; i++) free(h->slot[i]);
    free(h->slot);
    h->slot = NULL;
    h->cap = h->n = 0;
}

static size_t strset_find(const StrSet *h, const char *key) {
    size_t i = (size_t)fnv1a(key) & (h->cap - 1);
    while (h->slot[i] && strcmp(h->slot[i], key) != 0) i = (i + 1) & (h->cap - 1);
    return i;
}

int strset_has(const StrSet *h, const char *key) { return h->slot[strset_find(h, key)] != NULL; }

int strset_add(StrSet *h, const char *key) {
    if (2 * (h->n + 1) > h->cap) {
        StrSet g = {xcalloc(2 * h->cap, sizeof(char *)), 2 * h->cap, h->n};
        for (size_t i = 0; i < h->cap; i++)
            if (h->slot[i]) g.slot[strset_find(&g, h->slot[i])] = h->slot[i];
        free(h->slot);
        *h = g;
    }
    size_t i = strset_find(h, key);
    if (h->slot[i]) return 0;
    h->slot[i] = xstrdup(key);
    h->n++;
    return 1;
}

/* ------------------------------------------------------------------ shared helpers */
char *strat_key(const Space *sp, const int *m, const Fidelity *fid) {
    char *a = space_canonical_arch(sp, m);
    if (!fid) return a;
    size_t n = strlen(a) + 64;
    char *k = xmalloc(n);
    snprintf(k, n, "%s@%.9gx%.9g", a, fid->epochs, fid->fraction);
    free(a);
    return k;
}

int strat_seen(const Space *sp, const StrSet *seen, const int *m) {
    char *k = strat_key(sp, m, NULL);
    int r = strset_has(seen, k);
    free(k);
    return r;
}

int strat_sample_unique(Strategy *s, const StrSet *seen, int *out, int tries) {
    for (int i = 0; i < tries; i++) {
        space_sample(s->space, &s->rng, out);
        if (!strat_seen(s->space, seen, out)) return 1;
    }
    /* Nearly exhausted: scan a small space in mixed-radix order from a random start. */
    double n = space_size(s->space);
    if (n > (double)(1 << 22)) return 0;
    int last[SPACE_MAX_DIMS];
    memcpy(last, out, (size_t)s->space->ndims * sizeof *out);
    long total = (long)n, start = (long)rng_below(&s->rng, (uint32_t)total);
    for (long i = 0; i < total; i++) {
        space_member_at(s->space, (double)((start + i) % total), out);
        if (!strat_seen(s->space, seen, out)) return 1;
    }
    memcpy(out, last, (size_t)s->space->ndims * sizeof *out);
    return 0;
}

void strat_emit(Strategy *s, Trial *t, const int *m, Fidelity fid) {
    memset(t, 0, sizeof *t);
    t->id = s->next_id++;
    memcpy(t->m, m, (size_t)s->space->ndims * sizeof *m);
    t->fid = fid;
}

int strat_is_full(const Strategy *s, Fidelity fid) {
    return fid.epochs >= s->cfg.max_fid.epochs * (1 - 1e-9) && fid.fraction >= s->cfg.max_fid.fraction * (1 - 1e-9);
}
