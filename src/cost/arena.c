/* arena.c: the arena planner (arena.h). Two parts: the buffers and their lifetimes, from a walk
 * over the order with reference counts (the rules of cost.h, as exec.c applies them), then
 * offsets by several greedy placements, keeping the smallest.
 */
#include "arena.h"

static int tensor_of(int in) { return in < 0 ? 0 : in + 1; }

/* ------------------------------------------------------------------ buffers and lifetimes */
static void plan_buffers(const Net *net, const int *order, size_t elem, ArenaPlan *p) {
    int n = net->spec.n;
    p->n = n;
    p->size = xcalloc((size_t)n + 1, sizeof *p->size);
    p->offset = xcalloc((size_t)n + 1, sizeof *p->offset);
    p->first = xcalloc((size_t)n + 1, sizeof *p->first);
    p->last = xcalloc((size_t)n + 1, sizeof *p->last);
    p->tbuf = xmalloc(((size_t)n + 1) * sizeof *p->tbuf);
    p->step = xmalloc((size_t)n * sizeof *p->step);
    /* Readers per tensor (one per input slot), +1 for the network output. */
    int *readers = xcalloc((size_t)n + 1, sizeof *readers);
    int *refs = xcalloc((size_t)n + 1, sizeof *refs); /* per buffer: reads still to come */
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++) readers[tensor_of(nd->in[j])]++;
    }
    readers[n]++;
    p->size[0] = (size_t)net->in_c * net->in_h * net->in_w * elem;
    p->first[0] = -1;
    p->last[0] = -1;
    refs[0] = readers[0];
    p->tbuf[0] = 0;
    p->nbufs = 1;
    for (int t = 0; t < n; t++) {
        int i = order[t];
        const Node *nd = &net->spec.nodes[i];
        p->step[i] = t;
        int k;
        MemKind kind = memplan_kind(nd, &k);
        int ti = i + 1;
        if (kind == MEM_ALIAS) {
            int b = p->tbuf[tensor_of(nd->in[0])];
            p->tbuf[ti] = b;
            if (b >= 0) refs[b] += readers[ti];
        } else if (kind == MEM_ZERO) {
            p->tbuf[ti] = -1;
        } else {
            int reuse = -1;
            for (int j = 0; kind == MEM_INPLACE && j < k && j < nd->nin && reuse < 0; j++) {
                int b = p->tbuf[tensor_of(nd->in[j])];
                if (b < 0) continue;
                int mine = 0; /* this node's own reads of buffer b */
                for (int q = 0; q < nd->nin; q++) mine += p->tbuf[tensor_of(nd->in[q])] == b;
                if (refs[b] == mine) reuse = b;
            }
            if (reuse >= 0) {
                p->tbuf[ti] = reuse;
                refs[reuse] += readers[ti];
                p->inplace++;
            } else {
                int b = p->nbufs++;
                p->size[b] = (size_t)nd->c * nd->h * nd->w * elem;
                p->first[b] = p->last[b] = t;
                refs[b] = readers[ti];
                p->tbuf[ti] = b;
            }
        }
        for (int j = 0; j < nd->nin; j++) {
            int b = p->tbuf[tensor_of(nd->in[j])];
            if (b < 0) continue;
            NASC_ASSERT(refs[b] > 0);
            if (--refs[b] == 0) p->last[b] = t;
        }
        int b = p->tbuf[ti];
        if (b >= 0 && refs[b] == 0) p->last[b] = t;
    }
    for (int b = 0; b < p->nbufs; b++)
        if (refs[b] > 0) p->last[b] = n; /* the network output */
    free(readers);
    free(refs);

    /* The ideal figure: live bytes per step, by a sweep over the lifetimes. */
    size_t *live = xcalloc((size_t)n + 2, sizeof *live); /* index step + 1 */
    for (int b = 0; b < p->nbufs; b++)
        for (int s = p->first[b]; s <= p->last[b] && s < n; s++) live[s + 1] += p->size[b];
    p->ideal_bytes = 0;
    p->ideal_step = -1;
    for (int s = -1; s < n; s++)
        if (live[s + 1] > p->ideal_bytes) p->ideal_bytes = live[s + 1], p->ideal_step = s;
    free(live);
}

int arena_meet(const ArenaPlan *p, int a, int b) { return p->first[a] <= p->last[b] && p->first[b] <= p->last[a]; }

/* ------------------------------------------------------------------ placement */
typedef struct {
    const size_t *key, *key2; /* key2 (may be NULL) breaks ties of key */
} SortCtx;

/* By the keys (descending), then by index: a deterministic total order. */
static int by_key_desc(const void *x, const void *y, void *ctx) {
    int a = *(const int *)x, b = *(const int *)y;
    const SortCtx *c = ctx;
    if (c->key[a] != c->key[b]) return c->key[a] > c->key[b] ? -1 : 1;
    if (c->key2 && c->key2[a] != c->key2[b]) return c->key2[a] > c->key2[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int by_offset(const void *x, const void *y, void *ctx) {
    int a = *(const int *)x, b = *(const int *)y;
    const size_t *off = ctx;
    if (off[a] != off[b]) return off[a] < off[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Places buffer b among the placed ones it meets: the best-fitting (smallest) gap, or the
 * lowest gap that fits when first_fit, else on top of them. `tmp` has room for nbufs ints. */
static void place_one(const ArenaPlan *p, int b, const uint8_t *placed, size_t *off, int first_fit, int *tmp) {
    int m = 0;
    for (int a = 0; a < p->nbufs; a++)
        if (placed[a] && p->size[a] > 0 && arena_meet(p, a, b)) tmp[m++] = a;
    qsort_r(tmp, (size_t)m, sizeof *tmp, by_offset, off);
    size_t top = 0, best = 0, best_gap = SIZE_MAX;
    for (int j = 0; j < m; j++) {
        int a = tmp[j];
        if (off[a] > top) {
            size_t gap = off[a] - top;
            if (gap >= p->size[b] && gap < best_gap) {
                best = top, best_gap = gap;
                if (first_fit) break;
            }
        }
        top = NASC_MAX(top, off[a] + p->size[a]);
    }
    off[b] = best_gap != SIZE_MAX ? best : top;
}

static size_t arena_extent(const ArenaPlan *p, const size_t *off) {
    size_t e = 0;
    for (int b = 0; b < p->nbufs; b++)
        if (p->size[b]) e = NASC_MAX(e, off[b] + p->size[b]);
    return e;
}

enum { ORDER_SIZE, ORDER_BREADTH, ORDER_LIFETIME, ORDER_TIME, ORDER_COUNT };
static const char *method_names[ORDER_COUNT][2] = {{"size, best fit", "size, first fit"},
                                                   {"breadth, best fit", "breadth, first fit"},
                                                   {"lifetime, best fit", "lifetime, first fit"},
                                                   {"time, best fit", "time, first fit"}};

/* The order in which heuristic h places the buffers: seq (nbufs). */
static void placement_order(const ArenaPlan *p, int h, int *seq) {
    int nb = p->nbufs, n = p->n;
    size_t *key = xcalloc((size_t)nb, sizeof *key), *span = xcalloc((size_t)nb, sizeof *span);
    for (int b = 0; b < nb; b++) seq[b] = b, span[b] = (size_t)(p->last[b] - p->first[b]);
    SortCtx ctx = {key, NULL};
    if (h == ORDER_SIZE || h == ORDER_LIFETIME) {
        for (int b = 0; b < nb; b++) key[b] = p->size[b];
        SortCtx lc = {span, key}; /* lifetime: the longest first, then the largest */
        qsort_r(seq, (size_t)nb, sizeof *seq, by_key_desc, h == ORDER_SIZE ? &ctx : &lc);
    } else if (h == ORDER_TIME) {
        /* allocation order: by first step (ascending), i.e. descending in (n + 1 - first) */
        for (int b = 0; b < nb; b++) key[b] = (size_t)(n + 1 - p->first[b]);
        qsort_r(seq, (size_t)nb, sizeof *seq, by_key_desc, &ctx);
    } else {
        /* breadth: steps by live bytes (descending); at each step its buffers by size */
        int ns = n + 1;
        size_t *live = xcalloc((size_t)ns, sizeof *live);
        int *steps = xmalloc((size_t)ns * sizeof *steps);
        for (int b = 0; b < nb; b++)
            for (int s = p->first[b]; s <= p->last[b] && s < n; s++) live[s + 1] += p->size[b];
        for (int s = 0; s < ns; s++) steps[s] = s;
        SortCtx sc = {live, NULL};
        qsort_r(steps, (size_t)ns, sizeof *steps, by_key_desc, &sc);
        for (int b = 0; b < nb; b++) key[b] = p->size[b];
        uint8_t *taken = xcalloc((size_t)nb, 1);
        int *at = xmalloc((size_t)nb * sizeof *at);
        int m = 0;
        for (int k = 0; k < ns; k++) {
            int s = steps[k] - 1, cnt = 0;
            for (int b = 0; b < nb; b++)
                if (!taken[b] && p->first[b] <= s && s <= p->last[b]) at[cnt++] = b;
            qsort_r(at, (size_t)cnt, sizeof *at, by_key_desc, &ctx);
            for (int j = 0; j < cnt; j++) taken[at[j]] = 1, seq[m++] = at[j];
        }
        for (int b = 0; b < nb; b++)
            if (!taken[b]) seq[m++] = b; /* live only after the last node: none in practice */
        NASC_ASSERT(m == nb);
        free(live);
        free(steps);
        free(taken);
        free(at);
    }
    free(key);
    free(span);
}

void arena_plan(const Net *net, const int *order, size_t elem_bytes, ArenaPlan *p) {
    NASC_ASSERT(elem_bytes >= 1);
    NASC_ASSERT(memplan_is_topological(net, order));
    memset(p, 0, sizeof *p);
    plan_buffers(net, order, elem_bytes, p);
    int nb = p->nbufs;
    int *seq = xmalloc((size_t)nb * sizeof *seq), *tmp = xmalloc((size_t)nb * sizeof *tmp);
    size_t *off = xmalloc((size_t)nb * sizeof *off);
    uint8_t *placed = xmalloc((size_t)nb);
    size_t best = SIZE_MAX;
    for (int h = 0; h < ORDER_COUNT && best > p->ideal_bytes; h++) {
        placement_order(p, h, seq);
        for (int ff = 0; ff < 2 && best > p->ideal_bytes; ff++) {
            memset(placed, 0, (size_t)nb);
            for (int k = 0; k < nb; k++) {
                place_one(p, seq[k], placed, off, ff, tmp);
                placed[seq[k]] = 1;
            }
            size_t e = arena_extent(p, off);
            if (e < best) {
                best = e;
                memcpy(p->offset, off, (size_t)nb * sizeof *off);
                p->method = method_names[h][ff];
            }
        }
    }
    /* Still above the ideal: a seeded local search over the placement order of the winning
     * heuristic family (swap two buffers, re-place with best fit, keep when not larger), within
     * a budget of about 4e6 buffer-pair steps. */
    if (best > p->ideal_bytes && nb > 2) {
        int *cur = xmalloc((size_t)nb * sizeof *cur), *cand = xmalloc((size_t)nb * sizeof *cand);
        int h0 = 0;
        for (int h = 0; h < ORDER_COUNT; h++)
            for (int ff = 0; ff < 2; ff++)
                if (p->method == method_names[h][ff]) h0 = h;
        placement_order(p, h0, cur);
        size_t cur_size = SIZE_MAX;
        long trials = 4000000L / ((long)nb * nb + 1);
        trials = NASC_MIN(trials, 2000L);
        Rng r;
        rng_seed(&r, 0x6172656e61ull); /* fixed: the plan is deterministic */
        for (long k = 0; k < trials && best > p->ideal_bytes; k++) {
            memcpy(cand, cur, (size_t)nb * sizeof *cand);
            if (k > 0) {
                int a = (int)rng_below(&r, (uint32_t)nb), b = (int)rng_below(&r, (uint32_t)nb);
                int t = cand[a];
                cand[a] = cand[b], cand[b] = t;
            }
            memset(placed, 0, (size_t)nb);
            for (int j = 0; j < nb; j++) {
                place_one(p, cand[j], placed, off, 0, tmp);
                placed[cand[j]] = 1;
            }
            size_t e = arena_extent(p, off);
            if (e <= cur_size) {
                cur_size = e;
                memcpy(cur, cand, (size_t)nb * sizeof *cur);
            }
            if (e < best) {
                best = e;
                memcpy(p->offset, off, (size_t)nb * sizeof *off);
                p->method = "local search";
            }
        }
        free(cur);
        free(cand);
    }
    p->arena_bytes = best;
    NASC_ASSERT(p->arena_bytes >= p->ideal_bytes);
    free(seq);
    free(tmp);
    free(off);
    free(placed);
}

void arena_free(ArenaPlan *p) {
    free(p->size);
    free(p->offset);
    free(p->first);
    free(p->last);
    free(p->tbuf);
    free(p->step);
    memset(p, 0, sizeof *p);
}
