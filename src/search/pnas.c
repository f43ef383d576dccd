/* pnas.c: progressive search in the spirit of PNAS (Liu et al. 2018): grow members from simple
 * to complex, rank the expansions with a learned surrogate, and train only the top K per round.
 *
 * Complexity: value 0 of every decision is its default (NB201: the edge is none; macro: the
 * first listed value), and a member's complexity is the number of decisions of its canonical
 * form that are not at the default. The search starts from the all-default member.
 *
 * Rounds (synchronous: ask returns 0 while a round has pending trials). The beam is the top K
 * (cfg.top_k) successful members trained so far, or the all-default member before any. The
 * round's candidates are the beam's expansions: one more decision set away from its default;
 * when that gives fewer than 2K new functions, also two more decisions (NB201 needs it: a lone
 * new edge is often dead, e.g. 0->1 without 1->3), capped at 4,096 draws; when still fewer
 * than K, single and double mutations of the beam and finally uniform members. Once members
 * are complete (nothing left to expand) the rounds thus turn into surrogate-ranked local
 * search around the beam. Candidates are canonical members never asked before.
 *
 * Surrogate: kernel ridge regression on the trained members, kernel k(a, b) = s + s^2 / D with
 * s the number of decisions on which the canonical members agree (a degree-2 polynomial
 * kernel on one-hot features: per-value effects plus pairwise interactions), ridge 1.0, the
 * targets centred. Failed and infeasible trials enter with the lowest accuracy seen. Round 1
 * has no data: it trains K candidates drawn uniformly. Each later round trains the K best
 * predicted candidates.
 */
#include "strategies.h"

#include <math.h>

#define PNAS_RIDGE 1.0
#define PNAS_MAX_DRAWS 4096

typedef struct {
    int m[SPACE_MAX_DIMS]; /* canonical */
} Cand;

typedef struct {
    StrSet seen;
    int *tm;        /* (n_tr, ndims) trained members, canonical */
    double *ty;     /* (n_tr) accuracy, NAN for failed / infeasible */
    int n_tr, cap_tr;
    Cand *round;    /* this round's members */
    long *ids;
    int *told;
    int n_round, n_asked, n_told;
} PnasImpl;

static int complexity(const Space *sp, const int *m) {
    int c = 0;
    for (int d = 0; d < sp->ndims; d++) c += m[d] != 0;
    return c;
}

static double kern(const Space *sp, const int *a, const int *b) {
    int s = 0;
    for (int d = 0; d < sp->ndims; d++) s += a[d] == b[d];
    return s + (double)s * s / sp->ndims;
}

/* Candidate pool with local dedup (canonical keys). */
typedef struct {
    Cand *c;
    int n, cap;
    StrSet keys;
} Pool;

static void pool_add(const Space *sp, PnasImpl *im, Pool *p, const int *m) {
    int cm[SPACE_MAX_DIMS];
    sp->ops->canonical(sp, m, cm);
    char *k = sp->ops->to_arch(sp, cm);
    if (!strset_has(&im->seen, k) && strset_add(&p->keys, k)) {
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 256;
            p->c = xrealloc(p->c, (size_t)p->cap * sizeof *p->c);
        }
        memcpy(p->c[p->n++].m, cm, (size_t)sp->ndims * sizeof *cm);
    }
    free(k);
}

/* The beam: up to K trained members by accuracy (ties: earlier first). Returns its size. */
static int beam_get(const Strategy *s, const PnasImpl *im, int *beam) {
    int K = s->cfg.top_k, n = 0;
    for (int i = 0; i < im->n_tr; i++) {
        if (isnan(im->ty[i])) continue;
        int j = n < K ? n++ : K;
        if (j == K && !(im->ty[i] > im->ty[beam[K - 1]])) continue;
        if (j == K) j = K - 1;
        while (j > 0 && im->ty[beam[j - 1]] < im->ty[i]) {
            beam[j] = beam[j - 1];
            j--;
        }
        beam[j] = i;
    }
    return n;
}

static void build_pool(Strategy *s, PnasImpl *im, Pool *p) {
    const Space *sp = s->space;
    int nd = sp->ndims, K = s->cfg.top_k;
    int *beam = xmalloc((size_t)(K + 1) * sizeof *beam), nb = beam_get(s, im, beam);
    int zero[SPACE_MAX_DIMS] = {0}, m[SPACE_MAX_DIMS];
#define BEAM(i) (nb ? &im->tm[(size_t)beam[i] * nd] : zero)
    int nbeam = nb ? nb : 1;
    for (int i = 0; i < nbeam; i++) /* one more decision */
        for (int d = 0; d < nd; d++) {
            if (BEAM(i)[d] != 0) continue;
            memcpy(m, BEAM(i), (size_t)nd * sizeof *m);
            for (int v = 1; v < sp->card[d]; v++) {
                m[d] = v;
                pool_add(sp, im, p, m);
            }
        }
    for (int t = 0; t < PNAS_MAX_DRAWS && p->n < 2 * K; t++) { /* two more decisions */
        const int *b = BEAM(rng_below(&s->rng, (uint32_t)nbeam));
        int z[SPACE_MAX_DIMS], nz = 0;
        for (int d = 0; d < nd; d++)
            if (b[d] == 0 && sp->card[d] > 1) z[nz++] = d;
        if (nz < 2) continue;
        memcpy(m, b, (size_t)nd * sizeof *m);
        int d1 = z[rng_below(&s->rng, (uint32_t)nz)], d2 = z[rng_below(&s->rng, (uint32_t)nz)];
        if (d1 == d2) continue;
        m[d1] = 1 + (int)rng_below(&s->rng, (uint32_t)(sp->card[d1] - 1));
        m[d2] = 1 + (int)rng_below(&s->rng, (uint32_t)(sp->card[d2] - 1));
        pool_add(sp, im, p, m);
    }
    for (int t = 0; t < PNAS_MAX_DRAWS && p->n < K; t++) { /* local search around the beam */
        space_mutate(sp, BEAM(rng_below(&s->rng, (uint32_t)nbeam)), &s->rng, m);
        if (t & 1) {
            int tmp[SPACE_MAX_DIMS];
            memcpy(tmp, m, (size_t)nd * sizeof *m);
            space_mutate(sp, tmp, &s->rng, m);
        }
        pool_add(sp, im, p, m);
    }
#undef BEAM
    for (int t = 0; t < 64 && p->n < K; t++) {
        if (!strat_sample_unique(s, &im->seen, m, 10000)) break;
        pool_add(sp, im, p, m);
    }
    free(beam);
}

/* Kernel ridge predictions for the pool; NULL when there is nothing to learn from. */
static double *predict(const Strategy *s, const PnasImpl *im, const Pool *p) {
    const Space *sp = s->space;
    int n = im->n_tr, nd = sp->ndims;
    double lo = INFINITY, mean = 0;
    int n_ok = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(im->ty[i])) {
            lo = fmin(lo, im->ty[i]);
            mean += im->ty[i];
            n_ok++;
        }
    if (n_ok == 0) return NULL;
    mean /= n_ok;
    double *A = xmalloc((size_t)n * n * sizeof *A), *y = xmalloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) {
        y[i] = (isnan(im->ty[i]) ? lo : im->ty[i]) - mean;
        for (int j = 0; j <= i; j++)
            A[(size_t)i * n + j] = kern(sp, &im->tm[(size_t)i * nd], &im->tm[(size_t)j * nd]) + (i == j ? PNAS_RIDGE : 0);
    }
    for (int j = 0; j < n; j++) { /* Cholesky, lower triangle in place (A is positive definite) */
        double dgn = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) dgn -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        NASC_ASSERT(dgn > 0);
        A[(size_t)j * n + j] = sqrt(dgn);
        for (int i = j + 1; i < n; i++) {
            double v = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) v -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = v / A[(size_t)j * n + j];
        }
    }
    for (int i = 0; i < n; i++) { /* solve L z = y, then L^T alpha = z */
        for (int k = 0; k < i; k++) y[i] -= A[(size_t)i * n + k] * y[k];
        y[i] /= A[(size_t)i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++) y[i] -= A[(size_t)k * n + i] * y[k];
        y[i] /= A[(size_t)i * n + i];
    }
    double *pred = xmalloc((size_t)p->n * sizeof *pred);
    for (int c = 0; c < p->n; c++) {
        double v = mean;
        for (int i = 0; i < n; i++) v += y[i] * kern(sp, p->c[c].m, &im->tm[(size_t)i * nd]);
        pred[c] = v;
    }
    free(A);
    free(y);
    return pred;
}

static void round_start(Strategy *s, PnasImpl *im) {
    int K = s->cfg.top_k;
    Pool p = {0};
    strset_init(&p.keys);
    build_pool(s, im, &p);
    double *pred = predict(s, im, &p);
    int n = NASC_MIN(K, p.n);
    /* pick n: the best predicted (ties: lower complexity, then pool order), or uniformly */
    for (int i = 0; i < n; i++) {
        int best = i;
        if (pred) {
            for (int j = i + 1; j < p.n; j++)
                if (pred[j] > pred[best] ||
                    (pred[j] == pred[best] && complexity(s->space, p.c[j].m) < complexity(s->space, p.c[best].m)))
                    best = j;
        } else best = i + (int)rng_below(&s->rng, (uint32_t)(p.n - i));
        Cand tc = p.c[i];
        p.c[i] = p.c[best];
        p.c[best] = tc;
        if (pred) {
            double tp = pred[i];
            pred[i] = pred[best];
            pred[best] = tp;
        }
        im->round[i] = p.c[i];
    }
    im->n_round = n;
    im->n_asked = im->n_told = 0;
    free(pred);
    free(p.c);
    strset_free(&p.keys);
}

static int pnas_ask(Strategy *s, Trial *t) {
    PnasImpl *im = s->impl;
    if (im->n_asked == im->n_round) {
        if (im->n_told < im->n_round) return 0; /* synchronous round */
        round_start(s, im);
        if (im->n_round == 0) return -1; /* no new function anywhere */
    }
    const int *m = im->round[im->n_asked].m;
    char *k = strat_key(s->space, m, NULL);
    strset_add(&im->seen, k);
    free(k);
    strat_emit(s, t, m, s->cfg.max_fid);
    im->ids[im->n_asked] = t->id;
    im->told[im->n_asked++] = 0;
    return 1;
}

static void pnas_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    PnasImpl *im = s->impl;
    int nd = s->space->ndims;
    for (int i = 0; i < im->n_asked; i++) {
        if (im->ids[i] != t->id || im->told[i]) continue;
        im->told[i] = 1;
        im->n_told++;
        if (im->n_tr == im->cap_tr) {
            im->cap_tr = im->cap_tr ? 2 * im->cap_tr : 64;
            im->tm = xrealloc(im->tm, (size_t)im->cap_tr * nd * sizeof *im->tm);
            im->ty = xrealloc(im->ty, (size_t)im->cap_tr * sizeof *im->ty);
        }
        s->space->ops->canonical(s->space, t->m, &im->tm[(size_t)im->n_tr * nd]);
        im->ty[im->n_tr++] = status == TRIAL_OK ? score : NAN;
        return;
    }
}

static void pnas_destroy(Strategy *s) {
    PnasImpl *im = s->impl;
    strset_free(&im->seen);
    free(im->tm);
    free(im->ty);
    free(im->round);
    free(im->ids);
    free(im->told);
    free(im);
}

static const StrategyOps pnas_ops = {"pnas", pnas_ask, pnas_tell, pnas_destroy};

int pnas_init(Strategy *s, Err *e) {
    PnasImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    int K = s->cfg.top_k;
    im->round = xmalloc((size_t)K * sizeof *im->round);
    im->ids = xmalloc((size_t)K * sizeof *im->ids);
    im->told = xmalloc((size_t)K * sizeof *im->told);
    s->impl = im;
    s->ops = &pnas_ops;
    return NASC_OK;
}
