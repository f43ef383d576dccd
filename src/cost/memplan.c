/* memplan.c: the peak-memory planner. Finds the execution order (a topological order of the
 * tape) that minimizes the most activation elements live at once, under the memory model of
 * cost.h (tensor lifetimes, aliases, zero constants, in-place ops where the input dies).
 *
 * Why a search over sets works: with aliases fixed per node and in-place reuse only of a
 * buffer that dies, the bytes live after a set S of nodes has run depend on S alone, not on
 * the order inside S. So the best order is a shortest path in "max" cost over the lattice of
 * executed sets (downsets of the DAG), as in SERENITY (Ahn et al., 2020); the in-place rules
 * follow MCUNet's TinyEngine. The search runs level by level (|S| = 0, 1, ..., n), merging
 * equal sets and keeping for each the lowest peak so far; it is exact when every level fits
 * the beam, and the number of downsets of a network that is a chain of cells is the sum, not
 * the product, of the cells' counts, so NB201 networks, ResNets and MobileNets are solved
 * exactly.
 * Branch and bound: the best of the spec order and a greedy order is an upper bound; a
 * partial order whose peak already reaches it is dropped, and when the bound meets a simple
 * lower bound (the largest single step: a node's inputs plus its new output) there is nothing
 * to search. Beyond the beam (very wide random graphs, networks of thousands of nodes) the
 * best sets of a level by (peak so far, live now) are kept: a heuristic, never worse than the
 * upper bound it started from, reported as exact only if it meets the lower bound. The beam
 * is sized so the work (sets x nodes) stays under about 1e8 steps, about a second.
 *
 * Tensors are numbered 0 = the network input, i + 1 = node i's output. Tensors that share a
 * buffer through aliases (id, dropout) form one class; a class lives while any member still
 * has a consumer to run (or holds the network output).
 */
#include "cost.h"

MemKind memplan_kind(const Node *nd, int *inplace_inputs) {
    int k = 1;
    MemKind m;
    switch (nd->op) {
    case OP_ID:
    case OP_DROPOUT: m = MEM_ALIAS; break;
    case OP_ZERO: m = MEM_ZERO; break;
    case OP_ADD: m = MEM_INPLACE, k = nd->nin; break;
    case OP_RELU:
    case OP_RELU6:
    case OP_HSWISH:
    case OP_SIGMOID:
    case OP_HSIGMOID:
    case OP_BN:
    case OP_MUL: m = MEM_INPLACE; break;
    default: m = MEM_NEW; break;
    }
    if (inplace_inputs) *inplace_inputs = m == MEM_INPLACE ? k : 0;
    return m;
}

/* ------------------------------------------------------------------ the graph */
typedef struct {
    int n, words;
    int ncls;
    int *cls;          /* (n + 1) class of each tensor */
    size_t *csize;     /* (ncls) elements of a class's buffer; 0 for a zero constant */
    uint8_t *cout;     /* (ncls) holds the network output: never dies */
    uint64_t *ccons;   /* (ncls, words) every consumer of every member */
    MemKind *kind;     /* (n) */
    int *newcls;       /* (n) node starts a class of its own (not an alias) */
    int *incls, *nincls; /* (n, NODE_MAX_IN) distinct input classes */
    int *inpl, *ninpl;   /* (n, NODE_MAX_IN) distinct classes an in-place output may take over */
    int *pred, *npred;   /* (n, NODE_MAX_IN) distinct predecessor nodes */
    size_t live0;        /* live before any node runs: the input */
} Graph;

static int tensor_of(int in) { return in < 0 ? 0 : in + 1; }

static int add_unique(int *list, int *count, int v) {
    for (int j = 0; j < *count; j++)
        if (list[j] == v) return 0;
    list[(*count)++] = v;
    return 1;
}

static void graph_build(Graph *g, const Net *net) {
    int n = net->spec.n;
    memset(g, 0, sizeof *g);
    g->n = n;
    g->words = (n + 63) / 64;
    g->cls = xmalloc((size_t)(n + 1) * sizeof *g->cls);
    g->csize = xcalloc((size_t)n + 1, sizeof *g->csize);
    g->cout = xcalloc((size_t)n + 1, 1);
    g->ccons = xcalloc((size_t)(n + 1) * g->words, sizeof *g->ccons);
    g->kind = xmalloc((size_t)n * sizeof *g->kind);
    g->newcls = xcalloc((size_t)n, sizeof *g->newcls);
    g->incls = xmalloc((size_t)n * NODE_MAX_IN * sizeof *g->incls);
    g->inpl = xmalloc((size_t)n * NODE_MAX_IN * sizeof *g->inpl);
    g->pred = xmalloc((size_t)n * NODE_MAX_IN * sizeof *g->pred);
    g->nincls = xcalloc((size_t)n, sizeof *g->nincls);
    g->ninpl = xcalloc((size_t)n, sizeof *g->ninpl);
    g->npred = xcalloc((size_t)n, sizeof *g->npred);
    g->cls[0] = 0;
    g->csize[0] = (size_t)net->in_c * net->in_h * net->in_w;
    g->ncls = 1;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        g->kind[i] = memplan_kind(nd, NULL);
        if (g->kind[i] == MEM_ALIAS) {
            g->cls[i + 1] = g->cls[tensor_of(nd->in[0])];
        } else {
            int c = g->ncls++;
            g->cls[i + 1] = c;
            g->csize[c] = g->kind[i] == MEM_ZERO ? 0 : (size_t)nd->c * nd->h * nd->w;
            g->newcls[i] = 1;
        }
    }
    g->cout[g->cls[n]] = 1;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        int k;
        memplan_kind(nd, &k);
        for (int j = 0; j < nd->nin; j++) {
            int c = g->cls[tensor_of(nd->in[j])];
            g->ccons[(size_t)c * g->words + i / 64] |= 1ull << (i % 64);
            add_unique(g->incls + i * NODE_MAX_IN, &g->nincls[i], c);
            if (nd->in[j] >= 0) add_unique(g->pred + i * NODE_MAX_IN, &g->npred[i], nd->in[j]);
        }
        /* In-place candidates: real buffers (not a zero constant, not the output). */
        if (g->kind[i] == MEM_INPLACE)
            for (int j = 0; j < k && j < nd->nin; j++) {
                int c = g->cls[tensor_of(nd->in[j])];
                if (g->csize[c] > 0 && !g->cout[c]) add_unique(g->inpl + i * NODE_MAX_IN, &g->ninpl[i], c);
            }
    }
    int used = 0;
    for (int w = 0; w < g->words; w++) used |= g->ccons[w] != 0;
    g->live0 = used || g->cout[0] ? g->csize[0] : 0;
}

static void graph_free(Graph *g) {
    free(g->cls);
    free(g->csize);
    free(g->cout);
    free(g->ccons);
    free(g->kind);
    free(g->newcls);
    free(g->incls);
    free(g->nincls);
    free(g->inpl);
    free(g->ninpl);
    free(g->pred);
    free(g->npred);
}

static int bit(const uint64_t *s, int i) { return (int)((s[i / 64] >> (i % 64)) & 1); }

/* Whether class c has no consumer left once S and node i have run (and can be released). */
static int dies(const Graph *g, const uint64_t *S, int i, int c) {
    if (g->cout[c]) return 0;
    const uint64_t *m = g->ccons + (size_t)c * g->words;
    for (int w = 0; w < g->words; w++) {
        uint64_t left = m[w] & ~S[w];
        if (w == i / 64) left &= ~(1ull << (i % 64));
        if (left) return 0;
    }
    return 1;
}

static int ready(const Graph *g, const uint64_t *S, int i) {
    if (bit(S, i)) return 0;
    const int *p = g->pred + i * NODE_MAX_IN;
    for (int j = 0; j < g->npred[i]; j++)
        if (!bit(S, p[j])) return 0;
    return 1;
}

/* Runs node i after the set S with `live` elements live: returns the elements live during
 * the step, and the live elements after it in *after. */
static size_t step(const Graph *g, const uint64_t *S, size_t live, int i, size_t *after) {
    int own = g->cls[i + 1];
    size_t extra = 0;
    if (g->kind[i] == MEM_NEW) {
        extra = g->csize[own];
    } else if (g->kind[i] == MEM_INPLACE) {
        extra = g->csize[own];
        const int *ip = g->inpl + i * NODE_MAX_IN;
        for (int j = 0; j < g->ninpl[i]; j++)
            if (dies(g, S, i, ip[j])) {
                extra = 0;
                break;
            }
    }
    size_t a = live;
    if (g->newcls[i] && !dies(g, S, i, own)) a += g->csize[own];
    const int *ic = g->incls + i * NODE_MAX_IN;
    for (int j = 0; j < g->nincls[i]; j++)
        if (dies(g, S, i, ic[j])) a -= g->csize[ic[j]];
    *after = a;
    return live + extra;
}

int memplan_is_topological(const Net *net, const int *order) {
    int n = net->spec.n;
    int *pos = xmalloc((size_t)n * sizeof *pos);
    for (int i = 0; i < n; i++) pos[i] = -1;
    int ok = 1;
    for (int t = 0; t < n && ok; t++) {
        int i = order[t];
        if (i < 0 || i >= n || pos[i] >= 0) ok = 0;
        else pos[i] = t;
    }
    for (int i = 0; i < n && ok; i++) {
        const Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++)
            if (nd->in[j] >= 0 && pos[nd->in[j]] > pos[i]) ok = 0;
    }
    free(pos);
    return ok;
}

static size_t order_peak(const Graph *g, const int *order, int *peak_node) {
    uint64_t *S = xcalloc((size_t)g->words, sizeof *S);
    size_t live = g->live0, peak = live;
    int at = -1;
    for (int t = 0; t < g->n; t++) {
        int i = order[t];
        size_t after, during = step(g, S, live, i, &after);
        if (during > peak) peak = during, at = i;
        S[i / 64] |= 1ull << (i % 64);
        live = after;
    }
    free(S);
    if (peak_node) *peak_node = at;
    return peak;
}

size_t memplan_order_peak(const Net *net, const int *order, int *peak_node) {
    NASC_ASSERT(memplan_is_topological(net, order));
    Graph g;
    graph_build(&g, net);
    size_t p = order_peak(&g, order, peak_node);
    graph_free(&g);
    return p;
}


/* Greedy: run the ready node with the smallest step figure, then the smallest live after it,
 * then the lowest index. */
static void greedy_order(const Graph *g, int *order) {
    uint64_t *S = xcalloc((size_t)g->words, sizeof *S);
    size_t live = g->live0;
    for (int t = 0; t < g->n; t++) {
        int best = -1;
        size_t bd = 0, ba = 0;
        for (int i = 0; i < g->n; i++) {
            if (!ready(g, S, i)) continue;
            size_t after, during = step(g, S, live, i, &after);
            if (best < 0 || during < bd || (during == bd && after < ba)) best = i, bd = during, ba = after;
        }
        NASC_ASSERT(best >= 0);
        order[t] = best;
        S[best / 64] |= 1ull << (best % 64);
        live = ba;
    }
    free(S);
}

/* ------------------------------------------------------------------ the search */
/* One level of the search: the executed sets of one size, each with the lowest peak found to
 * reach it, the elements live after it, and how it was reached (for the order). */
typedef struct {
    int words;
    long count, cap;
    uint64_t *sets;  /* (cap, words) */
    size_t *peak, *live;
    int *parent, *node;
    long hcap;       /* power of two */
    long *slot;      /* (hcap) index into the level, -1 = empty */
} Level;

static void level_init(Level *L, int words) {
    memset(L, 0, sizeof *L);
    L->words = words;
    L->hcap = 64;
    L->slot = xmalloc((size_t)L->hcap * sizeof *L->slot);
    for (long h = 0; h < L->hcap; h++) L->slot[h] = -1;
}

static void level_free(Level *L) {
    free(L->sets);
    free(L->peak);
    free(L->live);
    free(L->parent);
    free(L->node);
    free(L->slot);
    memset(L, 0, sizeof *L);
}

static uint64_t set_hash(const uint64_t *s, int words) {
    uint64_t h = 0x243f6a8885a308d3ull;
    for (int w = 0; w < words; w++) {
        uint64_t z = (h ^ s[w]) + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        h = z ^ (z >> 31);
    }
    return h;
}

static void level_rehash(Level *L, long hcap) {
    free(L->slot);
    L->hcap = hcap;
    L->slot = xmalloc((size_t)hcap * sizeof *L->slot);
    for (long h = 0; h < hcap; h++) L->slot[h] = -1;
    for (long k = 0; k < L->count; k++) {
        long h = (long)(set_hash(L->sets + k * L->words, L->words) & (uint64_t)(hcap - 1));
        while (L->slot[h] >= 0) h = (h + 1) & (hcap - 1);
        L->slot[h] = k;
    }
}

/* The index of set s in the level, adding it (fields unset) if new; *fresh says which. */
static long level_find(Level *L, const uint64_t *s, int *fresh) {
    int W = L->words;
    long h = (long)(set_hash(s, W) & (uint64_t)(L->hcap - 1));
    while (L->slot[h] >= 0) {
        long k = L->slot[h];
        if (!memcmp(L->sets + k * W, s, (size_t)W * sizeof *s)) {
            *fresh = 0;
            return k;
        }
        h = (h + 1) & (L->hcap - 1);
    }
    if (L->count == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 64;
        L->sets = xrealloc(L->sets, (size_t)L->cap * W * sizeof *L->sets);
        L->peak = xrealloc(L->peak, (size_t)L->cap * sizeof *L->peak);
        L->live = xrealloc(L->live, (size_t)L->cap * sizeof *L->live);
        L->parent = xrealloc(L->parent, (size_t)L->cap * sizeof *L->parent);
        L->node = xrealloc(L->node, (size_t)L->cap * sizeof *L->node);
    }
    long k = L->count++;
    memcpy(L->sets + k * W, s, (size_t)W * sizeof *s);
    L->slot[h] = k;
    *fresh = 1;
    if (2 * L->count > L->hcap) level_rehash(L, 2 * L->hcap);
    return k;
}

static int by_peak_live(const void *a, const void *b, void *ctx) {
    long x = *(const long *)a, y = *(const long *)b;
    const Level *L = ctx;
    if (L->peak[x] != L->peak[y]) return L->peak[x] < L->peak[y] ? -1 : 1;
    if (L->live[x] != L->live[y]) return L->live[x] < L->live[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int by_index(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* Keeps the `beam` best sets of the level by (peak so far, live now). */
static void level_truncate(Level *L, long beam) {
    if (L->count <= beam) return;
    long *idx = xmalloc((size_t)L->count * sizeof *idx);
    for (long k = 0; k < L->count; k++) idx[k] = k;
    qsort_r(idx, (size_t)L->count, sizeof *idx, by_peak_live, L);
    /* Keep the chosen ones in their original relative order (the copy below then only ever
     * moves entries down). */
    long *keep = xmalloc((size_t)beam * sizeof *keep);
    memcpy(keep, idx, (size_t)beam * sizeof *keep);
    qsort(keep, (size_t)beam, sizeof *keep, by_index);
    int W = L->words;
    for (long k = 0; k < beam; k++) {
        long s = keep[k];
        memmove(L->sets + k * W, L->sets + s * W, (size_t)W * sizeof *L->sets);
        L->peak[k] = L->peak[s];
        L->live[k] = L->live[s];
        L->parent[k] = L->parent[s];
        L->node[k] = L->node[s];
    }
    L->count = beam;
    free(idx);
    free(keep);
    level_rehash(L, L->hcap);
}

/* A lower bound on any order's peak: the input alone, and for each node its distinct input
 * buffers plus its output when that always needs a new buffer. When the best order found
 * meets it, the order is optimal without searching. */
static size_t lower_bound(const Graph *g) {
    size_t lb = g->live0;
    for (int i = 0; i < g->n; i++) {
        size_t s = g->kind[i] == MEM_NEW ? g->csize[g->cls[i + 1]] : 0;
        const int *ic = g->incls + i * NODE_MAX_IN;
        for (int j = 0; j < g->nincls[i]; j++) s += g->csize[ic[j]];
        lb = NASC_MAX(lb, s);
    }
    return lb;
}

void memplan_plan(const Net *net, const MemPlanConfig *cfg, MemPlan *out) {
    Graph g;
    graph_build(&g, net);
    int n = g.n, W = g.words;
    memset(out, 0, sizeof *out);
    out->n = n;
    out->order = xmalloc((size_t)n * sizeof *out->order);

    /* Upper bound: the better of the spec order and the greedy order. */
    int *spec = xmalloc((size_t)n * sizeof *spec), *greedy = xmalloc((size_t)n * sizeof *greedy);
    for (int i = 0; i < n; i++) spec[i] = i;
    greedy_order(&g, greedy);
    size_t spec_peak = order_peak(&g, spec, NULL), greedy_peak = order_peak(&g, greedy, NULL);
    out->spec_order_peak = spec_peak;
    size_t ub = NASC_MIN(spec_peak, greedy_peak);
    memcpy(out->order, greedy_peak < spec_peak ? greedy : spec, (size_t)n * sizeof *out->order);

    long max_work = cfg && cfg->max_work > 0 ? cfg->max_work : 100000000L;
    long beam = cfg && cfg->beam > 0 ? cfg->beam : max_work / ((long)n * n + 1);
    beam = NASC_MAX(beam, 16L);
    beam = NASC_MIN(beam, 1L << 20);
    int exact = 1;
    long states = 1, work = 0;

    /* history[k]: how each set of level k was reached (parent index in level k-1, node). */
    int **hist_parent = xcalloc((size_t)n + 1, sizeof *hist_parent);
    int **hist_node = xcalloc((size_t)n + 1, sizeof *hist_node);
    Level cur, next;
    level_init(&cur, W);
    uint64_t *tmp = xcalloc((size_t)W, sizeof *tmp);
    int fresh, reached = 0;
    long k0 = level_find(&cur, tmp, &fresh);
    cur.peak[k0] = cur.live[k0] = g.live0;
    cur.parent[k0] = cur.node[k0] = -1;
    size_t lb = lower_bound(&g);
    NASC_ASSERT(lb <= ub);
    if (lb < ub) {
        for (int lvl = 0; lvl < n; lvl++) {
            level_init(&next, W);
            for (long s = 0; s < cur.count; s++) {
                const uint64_t *S = cur.sets + s * W;
                int first = 0;
                while (first < n && bit(S, first)) first++;
                for (int i = first; i < n; i++) {
                    if (!ready(&g, S, i)) continue;
                    size_t after, during = step(&g, S, cur.live[s], i, &after);
                    size_t pk = NASC_MAX(cur.peak[s], during);
                    if (pk >= ub) continue; /* cannot beat the bound */
                    memcpy(tmp, S, (size_t)W * sizeof *tmp);
                    tmp[i / 64] |= 1ull << (i % 64);
                    long k = level_find(&next, tmp, &fresh);
                    if (fresh || pk < next.peak[k]) {
                        next.peak[k] = pk;
                        next.live[k] = after;
                        next.parent[k] = (int)s;
                        next.node[k] = i;
                    }
                    if (next.count > 4 * beam) {
                        level_truncate(&next, beam);
                        exact = 0;
                    }
                }
                work += n;
            }
            if (next.count > beam) {
                level_truncate(&next, beam);
                exact = 0;
            }
            states += next.count;
            hist_parent[lvl + 1] = xmalloc((size_t)(next.count ? next.count : 1) * sizeof(int));
            hist_node[lvl + 1] = xmalloc((size_t)(next.count ? next.count : 1) * sizeof(int));
            if (next.count) {
                memcpy(hist_parent[lvl + 1], next.parent, (size_t)next.count * sizeof(int));
                memcpy(hist_node[lvl + 1], next.node, (size_t)next.count * sizeof(int));
            }
            level_free(&cur);
            cur = next;
            if (cur.count == 0) break; /* everything pruned: the bound's order is the best */
            if (lvl == n - 1) {
                reached = 1;
                break;
            }
            if (work > 4 * max_work) { /* safety net; the beam normally keeps work below max_work */
                exact = 0;
                break;
            }
        }
    }
    if (reached) { /* one full set, better than the bound: walk back for its order */
        NASC_ASSERT(cur.count == 1);
        long s = 0;
        for (int lvl = n; lvl >= 1; lvl--) {
            out->order[lvl - 1] = hist_node[lvl][s];
            s = hist_parent[lvl][s];
        }
        NASC_ASSERT(order_peak(&g, out->order, NULL) == cur.peak[0]);
    }
    out->peak_elems = order_peak(&g, out->order, &out->peak_node);
    out->exact = exact || out->peak_elems == lb;
    out->states = states;
    NASC_ASSERT(out->peak_elems <= spec_peak);

    level_free(&cur);
    for (int l = 0; l <= n; l++) {
        free(hist_parent[l]);
        free(hist_node[l]);
    }
    free(hist_parent);
    free(hist_node);
    free(tmp);
    free(spec);
    free(greedy);
    graph_free(&g);
}

void memplan_free(MemPlan *p) {
    free(p->order);
    memset(p, 0, sizeof *p);
}
