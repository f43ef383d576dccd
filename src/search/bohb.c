/* bohb.c: BOHB (Falkner et al. 2018): Hyperband's successive halving for the fidelities, a
 * TPE-style kernel density model instead of uniform sampling for new configurations.
 *
 * Fidelities: the budget ratio rho runs over eta^-i, i = 0..s_max, from 1 (cfg.max_fid) down to
 * at least cfg.min_fid, with s_max = floor(log_eta(max / min)) of epochs x fraction. A ratio
 * is spent on epochs first (epochs = max.epochs * rho, at least min.epochs), the rest on the
 * data fraction (at least min.fraction). min_fid = max_fid gives s_max = 0: plain BO.
 *
 * Hyperband: iterations of brackets s = s_max, ..., 0; bracket s starts n = ceil((s_max + 1) /
 * (s + 1) * eta^s) new configurations at ratio eta^-s, and each rung promotes the best
 * floor(n_i / eta) of the successful ones to eta times the budget, up to full fidelity. Rungs
 * are synchronous: ask returns 0 while a rung has pending trials. New configurations are drawn
 * when asked (so the model uses every result told so far); they are never a function asked
 * before (canonical form), so no (canonical member, fidelity) pair repeats. Failed and
 * infeasible trials are never promoted and enter the model as the worst observations.
 *
 * Model (per new configuration, for a third of them a uniform random member instead): the
 * largest budget with at least ndims + 1 observations; sorted by accuracy, the top 15%
 * (ceil, at least 1) are "good", the rest "bad". Each set gets a product of Aitchison-Aitken
 * kernels, k(x, x_i) = 1 - lambda if x = x_i, lambda / (c - 1) otherwise, with a per-decision
 * lambda from a normal-reference rule on the set's spread: lambda = 1.06 sigma n^(-1/5),
 * sigma^2 = 1 - sum_v p_v^2 (the chance two points differ), clamped to [1e-3, (c - 1) / c].
 * 64 candidates are drawn around random good points with the bandwidth widened 3x (a decision
 * keeps the point's value with probability 1 - 3 lambda, else takes a uniform value) and the
 * one maximizing l(x) / g(x) (good over bad density) is asked, skipping functions seen before.
 */
#include "strategies.h"

#include <math.h>

#define BOHB_TOP 0.15
#define BOHB_RANDOM_FRACTION (1.0 / 3.0)
#define BOHB_CANDIDATES 64
#define BOHB_BW_FACTOR 3.0
#define BOHB_MIN_BW 1e-3
#define BOHB_MAX_LEVELS 16

typedef struct {
    int *m;        /* (n, ndims) members */
    double *score; /* (n) accuracy, -1 for failed / infeasible */
    int n, cap;
} Obs;

typedef struct {
    int m[SPACE_MAX_DIMS];
    double score; /* of the current rung, -1 until told OK */
    int told;
} Slot;

typedef struct {
    StrSet seen;             /* canonical arch of every configuration started */
    int s_max;
    Fidelity fid[BOHB_MAX_LEVELS]; /* level i: ratio eta^-i */
    Obs obs[BOHB_MAX_LEVELS];
    /* the running bracket */
    int bracket;             /* s: its first rung is at level s */
    int rung;                /* current rung i: level s - i */
    Slot *slot;              /* this rung's configurations */
    int n_slot, n_asked, n_told, cap_slot;
    long *ids;               /* (cap_slot) trial id of each asked slot */
} BohbImpl;

static void obs_add(Obs *o, const int *m, int nd, double score) {
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 32;
        o->m = xrealloc(o->m, (size_t)o->cap * nd * sizeof *o->m);
        o->score = xrealloc(o->score, (size_t)o->cap * sizeof *o->score);
    }
    memcpy(&o->m[(size_t)o->n * nd], m, (size_t)nd * sizeof *m);
    o->score[o->n++] = score;
}

static void ensure_slots(BohbImpl *im, int n) {
    if (n <= im->cap_slot) return;
    im->cap_slot = n;
    im->slot = xrealloc(im->slot, (size_t)n * sizeof *im->slot);
    im->ids = xrealloc(im->ids, (size_t)n * sizeof *im->ids);
}

/* Start bracket s: rung 0 with its number of new configurations (drawn lazily). */
static void bracket_start(Strategy *s, BohbImpl *im, int b) {
    im->bracket = b;
    im->rung = 0;
    int n = (int)ceil((double)(im->s_max + 1) / (b + 1) * pow(s->cfg.eta, b) - 1e-9);
    ensure_slots(im, n);
    im->n_slot = n;
    im->n_asked = im->n_told = 0;
}

/* ---- the KDE model */
typedef struct {
    const int *m; /* (n, nd) */
    int n;
    double bw[SPACE_MAX_DIMS];
} Kde;

static void kde_fit(const Space *sp, Kde *k, const int *m, int n) {
    k->m = m;
    k->n = n;
    double cnt[64];
    for (int d = 0; d < sp->ndims; d++) {
        int c = sp->card[d];
        if (c <= 1) {
            k->bw[d] = 0;
            continue;
        }
        double sum2 = 0;
        if (c <= 64) {
            memset(cnt, 0, sizeof cnt);
            for (int i = 0; i < n; i++) cnt[m[(size_t)i * sp->ndims + d]] += 1.0 / n;
            for (int v = 0; v < c; v++) sum2 += cnt[v] * cnt[v];
        } else { /* many values: count agreement pairwise */
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) sum2 += m[(size_t)i * sp->ndims + d] == m[(size_t)j * sp->ndims + d];
            sum2 /= (double)n * n;
        }
        double sigma = sqrt(fmax(0, 1 - sum2));
        double bw = 1.06 * sigma * pow(n, -0.2);
        k->bw[d] = fmin(fmax(bw, BOHB_MIN_BW), (double)(c - 1) / c);
    }
}

static double kde_logpdf(const Space *sp, const Kde *k, const int *x) {
    double mx = -INFINITY, *lp = xmalloc((size_t)k->n * sizeof *lp), sum = 0;
    for (int i = 0; i < k->n; i++) {
        const int *xi = &k->m[(size_t)i * sp->ndims];
        double l = 0;
        for (int d = 0; d < sp->ndims; d++) {
            int c = sp->card[d];
            if (c <= 1) continue;
            l += log(x[d] == xi[d] ? 1 - k->bw[d] : k->bw[d] / (c - 1));
        }
        lp[i] = l;
        mx = fmax(mx, l);
    }
    for (int i = 0; i < k->n; i++) sum += exp(lp[i] - mx);
    free(lp);
    return mx + log(sum / k->n);
}

/* Indices 0..n-1 sorted by score descending (ties: earlier first). */
static void sort_desc(const double *score, int *idx, int n) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++) { /* insertion sort: stable, n is small */
        int v = idx[i], j = i;
        while (j > 0 && score[idx[j - 1]] < score[v]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

/* A new configuration from the model; 0 when no budget has enough observations yet. */
static int model_sample(Strategy *s, BohbImpl *im, int *out) {
    const Space *sp = s->space;
    int nd = sp->ndims, lvl = -1;
    for (int i = 0; i <= im->s_max && lvl < 0; i++) /* level 0 is the largest budget */
        if (im->obs[i].n >= nd + 1) lvl = i;
    if (lvl < 0) return 0;
    const Obs *o = &im->obs[lvl];
    int *idx = xmalloc((size_t)o->n * sizeof *idx);
    sort_desc(o->score, idx, o->n);
    int n_good = NASC_MAX(1, (int)ceil(BOHB_TOP * o->n - 1e-9));
    if (n_good >= o->n) n_good = o->n - 1;
    int *gm = xmalloc((size_t)o->n * nd * sizeof *gm), *bm = gm + (size_t)n_good * nd;
    for (int i = 0; i < o->n; i++) memcpy(&gm[(size_t)i * nd], &o->m[(size_t)idx[i] * nd], (size_t)nd * sizeof *gm);
    Kde good, bad;
    kde_fit(sp, &good, gm, n_good);
    kde_fit(sp, &bad, bm, o->n - n_good);
    double best = -INFINITY;
    int found = 0, cand[SPACE_MAX_DIMS];
    for (int c = 0; c < BOHB_CANDIDATES; c++) {
        const int *base = &gm[(size_t)rng_below(&s->rng, (uint32_t)n_good) * nd];
        for (int d = 0; d < nd; d++) {
            double bw = fmax(good.bw[d] * BOHB_BW_FACTOR, BOHB_MIN_BW);
            cand[d] = rng_uniform(&s->rng) < 1 - bw ? base[d] : (int)rng_below(&s->rng, (uint32_t)sp->card[d]);
        }
        double a = kde_logpdf(sp, &good, cand) - kde_logpdf(sp, &bad, cand);
        if (a > best && !strat_seen(sp, &im->seen, cand)) {
            best = a;
            memcpy(out, cand, (size_t)nd * sizeof *out);
            found = 1;
        }
    }
    free(gm);
    free(idx);
    return found;
}

static int new_config(Strategy *s, BohbImpl *im, int *m) {
    int random = rng_uniform(&s->rng) < BOHB_RANDOM_FRACTION;
    if (!random && model_sample(s, im, m)) return 1;
    return strat_sample_unique(s, &im->seen, m, 10000);
}

/* The rung is complete: promote its best to the next rung, or start the next bracket. */
static void rung_advance(Strategy *s, BohbImpl *im) {
    int n_next = im->rung < im->bracket ? (int)floor(im->n_slot / s->cfg.eta + 1e-9) : 0;
    int n_ok = 0;
    for (int i = 0; i < im->n_slot; i++) n_ok += im->slot[i].score >= 0;
    n_next = NASC_MIN(n_next, n_ok);
    if (n_next == 0) {
        bracket_start(s, im, im->bracket > 0 ? im->bracket - 1 : im->s_max);
        return;
    }
    double *sc = xmalloc((size_t)im->n_slot * sizeof *sc);
    int *idx = xmalloc((size_t)im->n_slot * sizeof *idx);
    for (int i = 0; i < im->n_slot; i++) sc[i] = im->slot[i].score;
    sort_desc(sc, idx, im->n_slot);
    Slot *next = xmalloc((size_t)n_next * sizeof *next);
    for (int i = 0; i < n_next; i++) {
        next[i] = im->slot[idx[i]];
        next[i].score = -1;
        next[i].told = 0;
    }
    memcpy(im->slot, next, (size_t)n_next * sizeof *next);
    free(next);
    free(sc);
    free(idx);
    im->rung++;
    im->n_slot = n_next;
    im->n_asked = im->n_told = 0;
}

static int bohb_ask(Strategy *s, Trial *t) {
    BohbImpl *im = s->impl;
    while (im->n_asked == im->n_slot) {
        if (im->n_told < im->n_slot) return 0; /* synchronous rung: wait */
        rung_advance(s, im);
    }
    Slot *sl = &im->slot[im->n_asked];
    if (im->rung == 0) { /* a new configuration */
        if (!new_config(s, im, sl->m)) return -1;
        char *k = strat_key(s->space, sl->m, NULL);
        strset_add(&im->seen, k);
        free(k);
    }
    sl->score = -1;
    sl->told = 0;
    strat_emit(s, t, sl->m, im->fid[im->bracket - im->rung]);
    im->ids[im->n_asked++] = t->id;
    return 1;
}

static void bohb_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    BohbImpl *im = s->impl;
    for (int i = 0; i < im->n_asked; i++) {
        if (im->ids[i] != t->id || im->slot[i].told) continue;
        im->slot[i].told = 1;
        im->slot[i].score = status == TRIAL_OK ? score : -1;
        im->n_told++;
        obs_add(&im->obs[im->bracket - im->rung], t->m, s->space->ndims, im->slot[i].score);
        return;
    }
    /* A trial of an earlier rung (cannot happen: rungs advance only when complete) or unknown id. */
}

static void bohb_destroy(Strategy *s) {
    BohbImpl *im = s->impl;
    strset_free(&im->seen);
    for (int i = 0; i < BOHB_MAX_LEVELS; i++) {
        free(im->obs[i].m);
        free(im->obs[i].score);
    }
    free(im->slot);
    free(im->ids);
    free(im);
}

static const StrategyOps bohb_ops = {"bohb", bohb_ask, bohb_tell, bohb_destroy};

int bohb_init(Strategy *s, Err *e) {
    const StrategyConfig *c = &s->cfg;
    double range = (c->max_fid.epochs * c->max_fid.fraction) / (c->min_fid.epochs * c->min_fid.fraction);
    int s_max = (int)floor(log(range) / log(c->eta) + 1e-9);
    if (s_max >= BOHB_MAX_LEVELS) {
        err_set(e, "bohb: the fidelity range %g..%g epochs needs %d rungs with eta = %g; at most %d are supported",
                c->min_fid.epochs, c->max_fid.epochs, s_max + 1, c->eta, BOHB_MAX_LEVELS);
        return NASC_ERR;
    }
    BohbImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    im->s_max = s_max;
    for (int i = 0; i <= s_max; i++) {
        double rho = pow(c->eta, -i);
        double ep = fmax(c->min_fid.epochs, c->max_fid.epochs * rho);
        double rest = rho * c->max_fid.epochs / ep; /* the part of the ratio epochs could not take */
        im->fid[i].epochs = ep;
        im->fid[i].fraction = fmin(c->max_fid.fraction, fmax(c->min_fid.fraction, c->max_fid.fraction * rest));
    }
    im->fid[0] = c->max_fid;
    s->impl = im;
    s->ops = &bohb_ops;
    bracket_start(s, im, s_max);
    return NASC_OK;
}
