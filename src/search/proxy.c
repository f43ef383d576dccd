/* proxy.c: zero-cost proxy search. Score many candidates without training, train the best.
 *
 * The first ask draws N distinct members (distinct canonical forms; uniform over raw vectors
 * like random.c) and scores each with cfg.proxy_score(cfg.proxy_ctx, m), the training-free
 * score the driver provides (it builds the network and runs a proxy of proxies.h on a fixed
 * batch; higher is better). N = cfg.population when it exceeds cfg.top_k, else 10 x top_k
 * (fewer when the space has fewer functions). This scoring phase happens inside that one ask
 * call and produces no trials.
 *
 * Ranking: by the callback's single score, descending; ties keep the draw order; NaN ranks
 * last. (To rank by several proxies, the callback combines them; a rank-sum needs the whole
 * candidate set, so this strategy ranks by one score.)
 *
 * Training: the candidates are then asked in rank order at full fidelity, without waiting
 * (several may be pending), until top_k of them have been told TRIAL_OK. A candidate told
 * TRIAL_INFEASIBLE or TRIAL_FAILED is replaced by the next one in the ranking, so top_k
 * models get trained when the candidates allow. While the trained set is complete but some
 * trials are pending, ask returns 0; when everything asked has been told and top_k are in (or
 * the ranking is used up), ask returns -1.
 *
 * Determinism: the draws come from s->rng and the ranking is a stable sort, so the asks
 * depend only on the seed, the tells and the callback; the callback must be deterministic
 * (a fixed batch and fixed initialization seed), which the driver's replay relies on.
 */
#include "strategies.h"

#include <math.h>

typedef struct {
    int m[SPACE_MAX_DIMS];
    double score;
    int order; /* draw order, for ties */
} Cand;

typedef struct {
    Cand *cand;
    int ncand;
    int scored;  /* the scoring phase has run */
    int next;    /* next candidate to ask */
    long pending, ok;
} ProxyImpl;

static int cand_cmp(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    int na = isnan(a->score), nb = isnan(b->score);
    if (na != nb) return na - nb; /* NaN last */
    if (!na && a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->order - b->order;
}

static void proxy_score_all(Strategy *s, ProxyImpl *im) {
    const StrategyConfig *c = &s->cfg;
    int N = c->population > c->top_k ? c->population : 10 * c->top_k;
    StrSet seen;
    strset_init(&seen);
    im->cand = xcalloc((size_t)N, sizeof *im->cand);
    for (int i = 0; i < N; i++) {
        Cand *k = &im->cand[im->ncand];
        if (!strat_sample_unique(s, &seen, k->m, 10000)) break;
        char *key = strat_key(s->space, k->m, NULL);
        strset_add(&seen, key);
        free(key);
        k->score = c->proxy_score(c->proxy_ctx, k->m);
        k->order = im->ncand++;
    }
    strset_free(&seen);
    qsort(im->cand, (size_t)im->ncand, sizeof *im->cand, cand_cmp);
    im->scored = 1;
}

static int proxy_ask(Strategy *s, Trial *t) {
    ProxyImpl *im = s->impl;
    if (!im->scored) proxy_score_all(s, im);
    if (im->ok + im->pending < s->cfg.top_k && im->next < im->ncand) {
        strat_emit(s, t, im->cand[im->next++].m, s->cfg.max_fid);
        im->pending++;
        return 1;
    }
    return im->pending > 0 ? 0 : -1;
}

static void proxy_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    ProxyImpl *im = s->impl;
    if (im->pending > 0) im->pending--;
    if (status == TRIAL_OK) im->ok++;
}

static void proxy_destroy(Strategy *s) {
    ProxyImpl *im = s->impl;
    free(im->cand);
    free(im);
}

static const StrategyOps proxy_ops = {"proxy", proxy_ask, proxy_tell, proxy_destroy};

int proxy_init(Strategy *s, Err *e) {
    if (!s->cfg.proxy_score) {
        err_set(e, "strategy proxy: needs a training-free score function (StrategyConfig.proxy_score), which the "
                   "search driver provides when it can build and score networks; none was given");
        return NASC_ERR;
    }
    ProxyImpl *im = xcalloc(1, sizeof *im);
    s->impl = im;
    s->ops = &proxy_ops;
    return NASC_OK;
}
