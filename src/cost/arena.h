/* arena.h: the arena planner. Turns the memory model of cost.h, for one execution order, into
 * fixed byte offsets in one static block: what a deployment without malloc (the generated C of
 * src/export/cgen.c, a microcontroller) allocates.
 *
 * Buffers follow the model exactly (the same rules as memplan.c and exec.c, simulated here with
 * reference counts over the order): the input and each node that needs a new buffer get one;
 * aliases (id, dropout) share their input's; an in-place op (relu, BN, add, ...) takes over an
 * input buffer that dies at it; zero constants have none. A buffer is live over a range of
 * steps [first, last] (step t runs order[t]; step -1 is the input alone before the first node;
 * the network output's buffer lives to step n). Two buffers live at a common step must not
 * overlap in the arena; buffers that never meet may share bytes.
 *
 * Placement (an offline dynamic storage allocation, NP-hard in general) tries several greedy
 * heuristics and keeps the smallest arena (ties: the first in this list):
 *   size      largest buffer first, each into the best-fitting gap among the buffers already
 *             placed that it meets in time, else above them (TFLite's "greedy by size",
 *             Pisarchyk & Lee 2020);
 *   breadth   the steps by live bytes, most first; at each step its unplaced buffers, largest
 *             first, best fit ("greedy by breadth", same paper);
 *   lifetime  longest-lived first, then largest, best fit;
 *   time      by allocation time, lowest gap that fits (what a first-fit malloc would do);
 * each of the four also with first fit instead of best fit; then, if the best is still above
 * the ideal, a local search (swap two buffers of the winning placement order, re-place, keep
 * when not larger; seeded, within a budget of about 4e6 steps). The ideal figure (the most
 * bytes live at one step: memplan_order_peak of the same order, times the element size) is a
 * lower bound; when a placement meets it the search stops. Deterministic: a fixed seed, no
 * dependence on addresses.
 *
 * Offsets are multiples of the element size (every buffer is a whole number of elements and
 * offsets are sums of sizes), so an fp32 arena planned with elem_bytes = 4 is the int8 plan
 * scaled by 4: the heuristics only compare sizes.
 */
#ifndef NASC_ARENA_H
#define NASC_ARENA_H

#include "cost.h"

typedef struct {
    int n;              /* nodes of the net */
    int nbufs;
    size_t *size;       /* (nbufs) bytes */
    size_t *offset;     /* (nbufs) bytes from the arena's start */
    int *first, *last;  /* (nbufs) live steps, inclusive: -1 = before the first node, n = after the last */
    int *tbuf;          /* (n + 1) tensor -> buffer: [0] the input, [i + 1] node i; -1 = a zero constant */
    int *step;          /* (n) the step at which node i runs */
    size_t arena_bytes; /* max over buffers of offset + size */
    size_t ideal_bytes; /* max over steps of the live bytes: the ideal allocator's figure */
    int ideal_step;     /* a step where the ideal figure is reached (-1 = the input alone) */
    const char *method; /* the heuristic that gave the offsets (see above) */
    int inplace;        /* nodes whose output took over an input's buffer */
} ArenaPlan;

/* Plans the arena for running net's nodes in `order` (topological, e.g. memplan_plan's) with
 * elements of elem_bytes bytes. Free with arena_free. */
void arena_plan(const Net *net, const int *order, size_t elem_bytes, ArenaPlan *p);
void arena_free(ArenaPlan *p);
/* 1 if buffers a and b are live at a common step. */
int arena_meet(const ArenaPlan *p, int a, int b);
/* The buffer of node k's output (following aliases), -1 for a zero constant. */
static inline int arena_buffer_of(const ArenaPlan *p, int k) { return p->tbuf[k < 0 ? 0 : k + 1]; }

#endif
