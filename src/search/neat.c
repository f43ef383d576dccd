/* neat.c: NEAT-style neuroevolution (Stanley & Miikkulainen 2002) on fixed-length choice
 * vectors. Generational: ask returns a whole generation, then 0 until every member of it has
 * been told; the next ask breeds the next generation.
 *
 * Genome. A member's genes are its decisions, aligned by index (the decision index plays the
 * role of NEAT's historical marking: the same index is the same structural slot in every
 * member). A gene is EXPRESSED when the space marks the decision active for the member and it
 * has two or more values; in a space without active() (NB201) a gene is expressed when its
 * value in the canonical member is not 0 (value 0 is `none`, the absent edge). Comparisons use
 * canonical members, so isomorphic cells are the same genome.
 *
 * Structure size and growth. size(m) counts the nodes and connections of the member's network:
 * the spec of its canonical form, parsed, each node other than zero/identity counting 1, and
 * each input edge not coming from a zero node counting 1 (an identity passes its connection
 * through). A GROWTH mutation is a single-decision change of an expressed-or-active decision
 * that strictly increases size: a deeper stage or a higher repeat count, a choice switched from
 * `id` to an op, an NB201 edge switched from none to an operation or from skip to a conv, an
 * expansion or SE block switched on. A mutation is a growth mutation with probability
 * P_GROW (falling back to an ordinary one when no change grows the member), else an ordinary
 * value mutation (space_mutate: one active decision to another value); with probability
 * P_MUT2 a second ordinary mutation follows. NEAT's "start minimal" is not used: the first
 * generation is uniform (the spaces are bounded, and a minimal NB201 cell is the empty one).
 *
 * Speciation. Compatibility distance of members a and b (canonical forms):
 *     delta = C_STRUCT * D / N + C_VALUE * W / M
 * D = genes expressed in exactly one of them (NEAT's disjoint and excess genes), N = genes
 * expressed in either, W = genes expressed in both with different values (NEAT's weight
 * difference, categorical), M = genes expressed in both (a ratio is 0 when its denominator is).
 * After a generation is told, every member with a result (and the carried elites) joins the
 * first species whose representative is within the threshold, else founds a new species.
 * Representatives are drawn at random from each species' members for the next generation.
 * The threshold starts at 0.5 and moves by 0.05 per generation (within [0.05, 2]) toward a
 * target species count of max(2, population / 5).
 *
 * Reproduction. Fitness is the validation accuracy. Fitness sharing: a member's adjusted
 * fitness is its normalized fitness ((f - fmin) / (fmax - fmin) over the pool, 1 when all are
 * equal) divided by its species' size, so a species' share is its mean normalized fitness (+
 * 0.05, so every species has a chance). Species whose best fitness has not improved for
 * STAGNATION generations get no offspring (unless they hold the overall best). Offspring are
 * allocated in proportion to the shares (largest remainder, ties to the older species).
 * Elitism: the champion of every species with at least two members, and the overall best,
 * carry over into the next generation's pool with their known fitness (they are not asked
 * again: no function is trained twice), at most population / 2 of them; the generation asks
 * population - elites new children. Within a species, the best half (at least one) are
 * parents; a child is a mutation of one parent with probability P_MUT_ONLY (or when there is
 * one parent), else the crossover of two parents followed by a mutation with probability
 * P_MUT_AFTER_X. Crossover (NEAT's): genes expressed in both parents come from either with
 * probability 1/2; the others from the fitter parent (either at random on equal fitness).
 * With probability P_INTERSPECIES the second parent comes from another species.
 *
 * Duplicates: every asked canonical form is remembered; a child that repeats one is bred again
 * (up to 64 tries) and then replaced by a fresh uniform member; when the space is exhausted
 * the generation is smaller, and ask returns -1 once a generation would be empty.
 * TRIAL_FAILED / TRIAL_INFEASIBLE members have no fitness and take no part in breeding.
 * All trials run at full fidelity. Determinism: all randomness from s->rng, all state in
 * arrays indexed in a fixed order; tells may arrive in any order (matched by trial id) and
 * breeding waits for all of them, so the asks depend only on the seed and the told results.
 */
#include "strategies.h"

#include <math.h>

#include "../net/net.h"

#define P_GROW 0.3
#define P_MUT2 0.2
#define P_MUT_ONLY 0.25
#define P_MUT_AFTER_X 0.5
#define P_INTERSPECIES 0.02
#define C_STRUCT 1.0
#define C_VALUE 1.0
#define STAGNATION 15
#define THRESH_INIT 0.5
#define THRESH_STEP 0.05

typedef struct {
    int m[SPACE_MAX_DIMS];
    long id;      /* trial id when asked in this generation, -1 for a carried elite */
    int told;
    int ok;       /* told TRIAL_OK */
    double fit;
    int species;  /* index into NeatImpl.sp after speciation */
} Genome;

typedef struct {
    int rep[SPACE_MAX_DIMS]; /* representative (canonical) */
    double best;             /* best fitness ever */
    int improved_gen;        /* generation of the last improvement */
    int *mem, nmem;          /* indices into the pool during breeding */
    double share;
    int offspring;
    int alive;
} Species;

typedef struct {
    StrSet seen;
    Genome *gen;   /* the current generation's asked members */
    int ngen, nasked, ntold;
    Genome *elite; /* carried from the previous generation */
    int nelite;
    Species *sp;
    int nsp, capsp;
    double thresh;
    int generation;
    int started, done;
} NeatImpl;

/* ------------------------------------------------------------------ genes and size */
static void canon(const Space *sp, const int *m, int *c) { sp->ops->canonical(sp, m, c); }

/* expressed[d] for a canonical member c */
static void expressed(const Space *sp, const int *c, int *ex) {
    if (sp->ops->active) {
        sp->ops->active(sp, c, ex);
        for (int d = 0; d < sp->ndims; d++) ex[d] = ex[d] && sp->card[d] > 1;
    } else {
        for (int d = 0; d < sp->ndims; d++) ex[d] = sp->card[d] > 1 && c[d] != 0;
    }
}

static double neat_distance(const Space *sp, const int *a, const int *b) {
    int ca[SPACE_MAX_DIMS], cb[SPACE_MAX_DIMS], ea[SPACE_MAX_DIMS], eb[SPACE_MAX_DIMS];
    canon(sp, a, ca);
    canon(sp, b, cb);
    expressed(sp, ca, ea);
    expressed(sp, cb, eb);
    int D = 0, N = 0, W = 0, M = 0;
    for (int d = 0; d < sp->ndims; d++) {
        N += ea[d] || eb[d];
        D += ea[d] != eb[d];
        if (ea[d] && eb[d]) {
            M++;
            W += ca[d] != cb[d];
        }
    }
    return (N ? C_STRUCT * D / N : 0) + (M ? C_VALUE * (double)W / M : 0);
}

/* Nodes + connections of the member's network (see the file comment); -1 if it has no spec. */
static long neat_size(const Space *sp, const int *m) {
    int c[SPACE_MAX_DIMS];
    canon(sp, m, c);
    Err e;
    char *text = sp->ops->to_spec(sp, c, &e);
    if (!text) return -1;
    Spec s;
    int rc = spec_parse(&s, text, sp->channels > 0 ? sp->channels : 16, sp->cells > 0 ? sp->cells : 1, &e);
    free(text);
    if (rc != NASC_OK) return -1;
    long n = 0;
    for (int i = 0; i < s.n; i++) {
        const Node *nd = &s.nodes[i];
        if (nd->op == OP_ZERO) continue;
        n += nd->op != OP_ID;
        for (int j = 0; j < nd->nin; j++) n += nd->in[j] < 0 || s.nodes[nd->in[j]].op != OP_ZERO;
    }
    spec_free(&s);
    return n;
}

/* ------------------------------------------------------------------ variation */
/* A growth mutation of m into out; 0 (out = m) when no single change grows it. Tries up to 64
 * random (decision, value) changes among the active decisions. */
static int neat_grow(Strategy *s, const int *m, int *out) {
    const Space *sp = s->space;
    int act[SPACE_MAX_DIMS], cand[SPACE_MAX_DIMS], n = 0;
    memcpy(out, m, (size_t)sp->ndims * sizeof *out);
    if (sp->ops->active) sp->ops->active(sp, m, act);
    else
        for (int d = 0; d < sp->ndims; d++) act[d] = 1;
    long total = 0;
    for (int d = 0; d < sp->ndims; d++)
        if (act[d] && sp->card[d] > 1) cand[n++] = d, total += sp->card[d] - 1;
    if (n == 0) return 0;
    long base = neat_size(sp, m);
    if (base < 0) return 0;
    int tries = (int)NASC_MIN(total, 64);
    for (int t = 0; t < tries; t++) {
        int d = cand[rng_below(&s->rng, (uint32_t)n)];
        int v = (int)rng_below(&s->rng, (uint32_t)(sp->card[d] - 1));
        v = v >= m[d] ? v + 1 : v;
        out[d] = v;
        if (neat_size(sp, out) > base) return 1;
        out[d] = m[d];
    }
    return 0;
}

static void neat_mutate(Strategy *s, const int *m, int *out) {
    int tmp[SPACE_MAX_DIMS];
    if (!(rng_uniform(&s->rng) < P_GROW && neat_grow(s, m, out))) space_mutate(s->space, m, &s->rng, out);
    if (rng_uniform(&s->rng) < P_MUT2) {
        memcpy(tmp, out, (size_t)s->space->ndims * sizeof *tmp);
        space_mutate(s->space, tmp, &s->rng, out);
    }
}

/* NEAT crossover: shared expressed genes at random, the rest from the fitter parent. */
static void neat_cross(Strategy *s, const Genome *a, const Genome *b, int *out) {
    const Space *sp = s->space;
    int ea[SPACE_MAX_DIMS], eb[SPACE_MAX_DIMS], ca[SPACE_MAX_DIMS], cb[SPACE_MAX_DIMS];
    canon(sp, a->m, ca);
    canon(sp, b->m, cb);
    expressed(sp, ca, ea);
    expressed(sp, cb, eb);
    int fitter_a = a->fit > b->fit ? 1 : a->fit < b->fit ? 0 : (int)(rng_next(&s->rng) >> 63);
    for (int d = 0; d < sp->ndims; d++) {
        if (ea[d] && eb[d]) out[d] = (rng_next(&s->rng) >> 63) ? b->m[d] : a->m[d];
        else out[d] = fitter_a ? a->m[d] : b->m[d];
    }
}

/* ------------------------------------------------------------------ generations */
static int neat_fresh(Strategy *s, NeatImpl *im, int *m) {
    if (!strat_sample_unique(s, &im->seen, m, 10000)) return 0;
    return 1;
}

static void neat_push(NeatImpl *im, const int *m, int nd) {
    Genome *g = &im->gen[im->ngen++];
    memset(g, 0, sizeof *g);
    memcpy(g->m, m, (size_t)nd * sizeof *m);
    g->id = -1;
}

static void neat_remember(Strategy *s, NeatImpl *im, const int *m) {
    char *k = strat_key(s->space, m, NULL);
    strset_add(&im->seen, k);
    free(k);
}

static void neat_first_generation(Strategy *s, NeatImpl *im) {
    int m[SPACE_MAX_DIMS];
    im->ngen = 0;
    for (int i = 0; i < s->cfg.population; i++) {
        if (!neat_fresh(s, im, m)) break;
        neat_remember(s, im, m);
        neat_push(im, m, s->space->ndims);
    }
}

static int fit_cmp_desc(const Genome *pool, int a, int b) {
    if (pool[a].fit != pool[b].fit) return pool[a].fit > pool[b].fit ? -1 : 1;
    return a - b;
}

static void sort_members(const Genome *pool, int *mem, int n) { /* insertion sort: small, stable */
    for (int i = 1; i < n; i++) {
        int x = mem[i], j = i - 1;
        while (j >= 0 && fit_cmp_desc(pool, mem[j], x) > 0) {
            mem[j + 1] = mem[j];
            j--;
        }
        mem[j + 1] = x;
    }
}

static void neat_speciate(Strategy *s, NeatImpl *im, Genome *pool, int npool) {
    const Space *sp = s->space;
    for (int k = 0; k < im->nsp; k++) {
        free(im->sp[k].mem);
        im->sp[k].mem = xmalloc((size_t)npool * sizeof(int));
        im->sp[k].nmem = 0;
    }
    for (int i = 0; i < npool; i++) {
        int k;
        for (k = 0; k < im->nsp; k++)
            if (im->sp[k].alive && neat_distance(sp, pool[i].m, im->sp[k].rep) < im->thresh) break;
        if (k == im->nsp) {
            if (im->nsp == im->capsp) {
                im->capsp = im->capsp ? 2 * im->capsp : 8;
                im->sp = xrealloc(im->sp, (size_t)im->capsp * sizeof *im->sp);
            }
            Species *n = &im->sp[im->nsp++];
            memset(n, 0, sizeof *n);
            canon(sp, pool[i].m, n->rep);
            n->best = -INFINITY;
            n->improved_gen = im->generation;
            n->alive = 1;
            n->mem = xmalloc((size_t)npool * sizeof(int));
        }
        im->sp[k].mem[im->sp[k].nmem++] = i;
        pool[i].species = k;
    }
    int alive = 0;
    for (int k = 0; k < im->nsp; k++) {
        Species *x = &im->sp[k];
        x->alive = x->nmem > 0;
        if (!x->alive) continue;
        alive++;
        sort_members(pool, x->mem, x->nmem);
        if (pool[x->mem[0]].fit > x->best) {
            x->best = pool[x->mem[0]].fit;
            x->improved_gen = im->generation;
        }
        canon(sp, pool[x->mem[rng_below(&s->rng, (uint32_t)x->nmem)]].m, x->rep);
    }
    int target = NASC_MAX(2, s->cfg.population / 5);
    if (alive < target) im->thresh = fmax(0.05, im->thresh - THRESH_STEP);
    else if (alive > target) im->thresh = fmin(2.0, im->thresh + THRESH_STEP);
}

/* Breed one child of species k into out (not yet checked for novelty). */
static void neat_child(Strategy *s, NeatImpl *im, const Genome *pool, int k, int *out) {
    const Species *x = &im->sp[k];
    int npar = NASC_MAX(1, (x->nmem + 1) / 2);
    const Genome *p1 = &pool[x->mem[rng_below(&s->rng, (uint32_t)npar)]];
    if (npar == 1 || rng_uniform(&s->rng) < P_MUT_ONLY) {
        neat_mutate(s, p1->m, out);
        return;
    }
    const Genome *p2 = NULL;
    if (rng_uniform(&s->rng) < P_INTERSPECIES) {
        int others[1024], no = 0;
        for (int j = 0; j < im->nsp && no < 1024; j++)
            if (j != k && im->sp[j].alive) others[no++] = j;
        if (no > 0) {
            const Species *y = &im->sp[others[rng_below(&s->rng, (uint32_t)no)]];
            p2 = &pool[y->mem[rng_below(&s->rng, (uint32_t)NASC_MAX(1, (y->nmem + 1) / 2))]];
        }
    }
    if (!p2) {
        int j = (int)rng_below(&s->rng, (uint32_t)(npar - 1));
        const Genome *q = &pool[x->mem[j]];
        if (q == p1) q = &pool[x->mem[npar - 1]];
        p2 = q;
    }
    neat_cross(s, p1, p2, out);
    if (rng_uniform(&s->rng) < P_MUT_AFTER_X) {
        int tmp[SPACE_MAX_DIMS];
        memcpy(tmp, out, (size_t)s->space->ndims * sizeof *tmp);
        neat_mutate(s, tmp, out);
    }
}

static void neat_next_generation(Strategy *s, NeatImpl *im) {
    const int P = s->cfg.population, nd = s->space->ndims;
    /* the pool: carried elites and this generation's successful members */
    Genome *pool = xmalloc((size_t)(im->nelite + im->ngen + 1) * sizeof *pool);
    int npool = 0;
    for (int i = 0; i < im->nelite; i++) pool[npool++] = im->elite[i];
    for (int i = 0; i < im->ngen; i++)
        if (im->gen[i].ok) pool[npool++] = im->gen[i];
    im->generation++;
    im->nelite = 0;
    im->ngen = 0;
    int m[SPACE_MAX_DIMS];
    if (npool == 0) { /* nothing to breed from: a fresh uniform generation */
        for (int i = 0; i < P; i++) {
            if (!neat_fresh(s, im, m)) break;
            neat_remember(s, im, m);
            neat_push(im, m, nd);
        }
        free(pool);
        return;
    }
    for (int i = 0; i < npool; i++) pool[i].id = -1;
    neat_speciate(s, im, pool, npool);
    /* shares (fitness sharing on normalized fitness), stagnation */
    double fmin = INFINITY, fmax = -INFINITY;
    int best = 0;
    for (int i = 0; i < npool; i++) {
        fmin = fmin < pool[i].fit ? fmin : pool[i].fit;
        fmax = fmax > pool[i].fit ? fmax : pool[i].fit;
        if (pool[i].fit > pool[best].fit) best = i;
    }
    double range = fmax - fmin, total = 0;
    for (int k = 0; k < im->nsp; k++) {
        Species *x = &im->sp[k];
        x->share = 0;
        x->offspring = 0;
        if (!x->alive) continue;
        int stagnant = im->generation - x->improved_gen > STAGNATION && pool[best].species != k;
        if (stagnant) continue;
        double sum = 0;
        for (int j = 0; j < x->nmem; j++) sum += range > 0 ? (pool[x->mem[j]].fit - fmin) / range : 1.0;
        x->share = sum / x->nmem + 0.05; /* sum of adjusted fitness f_i / |S|, plus a floor */
        total += x->share;
    }
    /* elites: champions of species with two or more members, and the overall best */
    Genome *elite = xmalloc((size_t)(im->nsp + 1) * sizeof *elite);
    int ne = 0;
    elite[ne++] = pool[best];
    for (int k = 0; k < im->nsp && ne < P / 2; k++) {
        const Species *x = &im->sp[k];
        if (x->alive && x->nmem >= 2 && x->mem[0] != best) elite[ne++] = pool[x->mem[0]];
    }
    free(im->elite);
    im->elite = elite;
    im->nelite = ne;
    /* offspring per species: largest remainder */
    int children = NASC_MAX(1, P - ne), given = 0;
    double *rem = xcalloc((size_t)im->nsp, sizeof *rem);
    for (int k = 0; k < im->nsp; k++) {
        if (im->sp[k].share <= 0) continue;
        double q = children * im->sp[k].share / total;
        im->sp[k].offspring = (int)floor(q);
        rem[k] = q - floor(q);
        given += im->sp[k].offspring;
    }
    while (given < children) {
        int pick = -1;
        for (int k = 0; k < im->nsp; k++)
            if (im->sp[k].share > 0 && (pick < 0 || rem[k] > rem[pick])) pick = k;
        im->sp[pick].offspring++;
        rem[pick] = -1;
        given++;
    }
    free(rem);
    /* breed */
    for (int k = 0; k < im->nsp; k++)
        for (int c = 0; c < im->sp[k].offspring; c++) {
            int ok = 0;
            for (int tr = 0; tr < 64 && !ok; tr++) {
                neat_child(s, im, pool, k, m);
                ok = !strat_seen(s->space, &im->seen, m);
            }
            if (!ok && !neat_fresh(s, im, m)) continue;
            neat_remember(s, im, m);
            neat_push(im, m, nd);
        }
    free(pool);
}

/* ------------------------------------------------------------------ ask / tell */
static int neat_ask(Strategy *s, Trial *t) {
    NeatImpl *im = s->impl;
    if (im->done) return -1;
    if (im->nasked == im->ngen) {
        if (im->ntold < im->ngen) return 0;
        if (!im->started) neat_first_generation(s, im);
        else neat_next_generation(s, im);
        im->started = 1;
        im->nasked = im->ntold = 0;
        if (im->ngen == 0) {
            im->done = 1;
            return -1;
        }
    }
    Genome *g = &im->gen[im->nasked++];
    strat_emit(s, t, g->m, s->cfg.max_fid);
    g->id = t->id;
    return 1;
}

static void neat_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    NeatImpl *im = s->impl;
    for (int i = 0; i < im->nasked; i++) {
        Genome *g = &im->gen[i];
        if (g->id != t->id || g->told) continue;
        g->told = 1;
        g->ok = status == TRIAL_OK && isfinite(score);
        g->fit = g->ok ? score : 0;
        im->ntold++;
        return;
    }
}

static void neat_destroy(Strategy *s) {
    NeatImpl *im = s->impl;
    strset_free(&im->seen);
    for (int k = 0; k < im->nsp; k++) free(im->sp[k].mem);
    free(im->sp);
    free(im->gen);
    free(im->elite);
    free(im);
}

static const StrategyOps neat_ops = {"neat", neat_ask, neat_tell, neat_destroy};

int neat_init(Strategy *s, Err *e) {
    NeatImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    im->gen = xcalloc((size_t)s->cfg.population, sizeof *im->gen);
    im->thresh = THRESH_INIT;
    s->impl = im;
    s->ops = &neat_ops;
    return NASC_OK;
}
