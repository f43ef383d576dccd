/* test_cost.c: the cost model (src/cost).
 *   - hand-computed params, MACs, peak activation memory and flash (fp32, int8) for small
 *     specs: a chain, a residual block, a concat, an inverted residual, zero/id/dropout, and a
 *     two-branch graph where the spec's order is not the best;
 *   - the planner against brute force over every topological order of random DAG specs
 *     (conv, pools, activations, BN, add and concat of matching shapes, id, zero, dropout,
 *     squeeze-excitation mul), and against the instrumented executor run in every order on
 *     the smallest ones (the executor shares nothing with the planner but the op rules);
 *   - the planner's figure == the executor's measured peak in the planner's order, and the
 *     planner's model == the executor for random orders, for zoo nets (small, resnet8, mbv2),
 *     NB201 networks and random DAGs; the executor's logits == net_forward's, bit for bit;
 *   - the beam-limited (heuristic) search still gives valid orders, never worse than the spec;
 *   - target files: the shipped ones, every error with its line and column, lookup by name
 *     and path; fit checks at and past the limits; latency statistics are ordered.
 * No timing assertions. The shipped targets are found from the binary (BUILD/tests/test_cost ->
 * ../../targets) or, for a build folder outside the tree, from ./targets (run.sh runs from the
 * repository root).
 */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/cost/cost.h"
#include "check.h"

static Rng rng;

static int build(Net *net, const char *text, int c, int h, int w, int classes) {
    Err e;
    Spec s;
    if (spec_parse(&s, text, 16, 1, &e) != NASC_OK) {
        CHECK(0, "spec does not parse: %s\n%s", e.msg, text);
        return 0;
    }
    int rc = net_build(net, &s, c, h, w, classes, &e);
    spec_free(&s);
    CHECK(rc == NASC_OK, "spec does not build: %s\n%s", e.msg, text);
    if (rc != NASC_OK) return 0;
    net_init_params(net, rng_next(&rng));
    /* Non-trivial BN statistics, so an in-place BN that reads a clobbered input shows. */
    for (size_t k = 0; k < net->nbuffers; k++) net->buffers[k] = rng_uniformf(&rng, 0.5f, 1.5f);
    return 1;
}

static float *random_input(const Net *net) {
    size_t n = (size_t)net->in_c * net->in_h * net->in_w;
    float *x = xmalloc(n * sizeof *x);
    for (size_t k = 0; k < n; k++) x[k] = (float)rng_normal(&rng);
    return x;
}

/* Runs the executor in `order` and checks its logits against net_forward's (bitwise) and its
 * peak against the planner's model of the same order. Returns the executor's peak bytes. */
static size_t exec_check(Net *net, const float *x, const int *order, const char *what) {
    const float *ref = net_forward(net, x, 1, 0);
    float *want = xmalloc((size_t)net->classes * sizeof *want), *got = xmalloc((size_t)net->classes * sizeof *got);
    memcpy(want, ref, (size_t)net->classes * sizeof *want);
    ExecStats st;
    exec_run(net, x, order, got, &st);
    int same = !memcmp(want, got, (size_t)net->classes * sizeof *got);
    CHECK(same, "%s: executor logits differ from net_forward's (got[0] %g, want %g)", what, got[0], want[0]);
    int *spec = NULL;
    if (!order) {
        spec = xmalloc((size_t)net->spec.n * sizeof *spec);
        for (int i = 0; i < net->spec.n; i++) spec[i] = i;
    }
    int pn;
    size_t model = memplan_order_peak(net, order ? order : spec, &pn);
    CHECK(st.peak_bytes == model * 4, "%s: executor peak %zu bytes, planner model of the same order %zu", what,
          st.peak_bytes, model * 4);
    CHECK(st.peak_node == pn, "%s: executor peaks at node %d, the model at %d", what, st.peak_node, pn);
    /* The net's own activations still work after the executor. */
    const float *again = net_forward(net, x, 1, 0);
    CHECK(!memcmp(again, want, (size_t)net->classes * sizeof *want), "%s: net_forward changed after exec_run", what);
    free(spec);
    free(want);
    free(got);
    return st.peak_bytes;
}

/* ------------------------------------------------------------------ hand-computed cases */
typedef struct {
    const char *name, *spec;
    int c, h, w;
    size_t params;
    double macs;
    size_t peak_elems;     /* optimal */
    size_t spec_peak_elems;
    size_t flash_int8;
} Hand;

/* All with 10 classes. Elements: the input counts while live; conv/linear/concat/pools get new
 * buffers; bn/relu/relu6/add take over a dying input's buffer; id and zero cost nothing.
 * int8 flash (cost.h): weights 1 B, int32 biases (own, or a folded BN's), per output channel
 * of conv/linear a float scale (4 B) and a requantization multiplier (5 B); 5 B multipliers
 * for gap (1), concat (1 per input); add 4 B per input + 1; an unfolded BN 14 B per channel;
 * 8 B per quantized activation tensor (input and node outputs except id/dropout/zero/maxpool,
 * conv outputs whose BN is folded and outputs whose ReLU is fused). */
static const Hand hand[] = {
    /* chain: input 64; conv -> 256 (64 + 256 = 320, the peak); bn, relu in place; gap 256 + 4;
     * linear 4 + 10. params 36 + 8 + 50. int8: w 36 + 40, bias 16 (folded) + 40, scales 16 + 40,
     * requant 20 + 5 (gap) + 50, tensors input, relu (fused into the conv), gap, linear = 4 x 8. */
    {"chain", "conv(c=4,k=3);bn;relu;gap;linear", 1, 8, 8, 94, 2304 + 40, 320, 320,
     76 + 56 + 56 + 75 + 32},
    /* residual: conv 128 (64 + 128); a = relu in place; conv 128 while a lives: 256 (peak);
     * bn in place; add in place; relu; gap; linear. params 18 + 4 + 36 + 4 + 30.
     * int8: w 18 + 36 + 20, bias 8 + 8 + 40, scales 8 + 8 + 40, requant 10 + 10 + 5 + 50 (the
     * add keeps none: float scales), 6 tensors (input, a, bn, relu fused into the add, gap,
     * linear). */
    {"residual", "conv(c=2,k=3);bn;a=relu;conv(c=2,k=3);bn;add(_,a);relu;gap;linear", 1, 8, 8, 92,
     64 * 2 * 9 + 64 * 2 * 2 * 9 + 20, 256, 256, 74 + 56 + 56 + 75 + 48},
    /* concat: a (128) and b (192) from the input, then concat 320 while both live: 640.
     * int8: w 2 + 3 + 50, bias 40 (linear), scales 8 + 12 + 40, requant 10 + 15 + 10 + 5 + 50,
     * 6 tensors. */
    {"concat", "a=conv(c=2,k=1);b=conv(input,c=3,k=1);concat(a,b);gap;linear", 1, 8, 8, 65, 128 + 192 + 50, 640,
     640, 55 + 40 + 60 + 90 + 48},
    /* inverted residual on a 4x4x4 input (64): expand 128 (192), dw 128 while the expand
     * output and the input live: 320 (peak); project 64: 256; add in place into the project
     * output; params 32 + 16 + 72 + 16 + 32 + 8 + 50. int8: w 32 + 72 + 32 + 40, bias 32 + 32
     * + 16 + 40, scales 32 + 32 + 16 + 40, requant 40 + 40 + 20 + 5 + 50, 7 tensors (the
     * ReLU6s fused). */
    {"inverted residual",
     "conv(c=8,k=1);bn;relu6;conv(c=8,k=3,g=8);bn;relu6;conv(c=4,k=1);bn;add(_,input);gap;linear", 4, 4, 4, 226,
     512 + 1152 + 512 + 40, 320, 320, 176 + 120 + 120 + 155 + 56},
    /* zero and id: conv 128 (64 + 128 = 192, the peak); zero and id cost nothing; add in place
     * into a's buffer. int8: w 2 + 20, bias 40, scales 8 + 40, requant 10 + 5 + 50, tensors
     * input, conv, add, gap, linear. */
    {"zero+id", "a=conv(c=2,k=1);z=zero;i=id(a);add(z,i);gap;linear", 1, 8, 8, 2 + 30, 128 + 20, 192, 192,
     22 + 40 + 48 + 65 + 40},
    /* dropout aliases (eval); an unfolded BN after a pool is an affine op (2 x 14 B); the max
     * pool keeps the conv's quantization: 5 tensors. */
    {"dropout+bn", "conv(c=2,k=1);maxpool(k=2);dropout;bn;gap;linear", 1, 8, 8, 2 + 4 + 30, 128 + 20,
     64 + 128, 64 + 128, 22 + 40 + 48 + 65 + 28 + 5 * 8},
    /* order matters: the spec runs both 8-channel convs first (64 + 512 + 512 = 1088); the
     * best order finishes one branch first: a (576), a2 (576 + 64), b (64 + 64 + 512) = 640. */
    {"two branches", "a=conv(c=8,k=1);b=conv(input,c=8,k=1);a2=conv(a,c=1,k=1);b2=conv(b,c=1,k=1);add(a2,b2);gap;linear",
     1, 8, 8, 8 + 8 + 8 + 8 + 20, 512 * 2 + 512 * 2 + 10, 640, 1088,
     42 + 40 + (8 + 8 + 1 + 1 + 10) * 4 + (8 + 8 + 1 + 1 + 10) * 5 + 5 + 8 * 8},
};

static void test_hand(void) {
    for (size_t k = 0; k < sizeof hand / sizeof hand[0]; k++) {
        const Hand *t = &hand[k];
        Net net;
        if (!build(&net, t->spec, t->c, t->h, t->w, 10)) continue;
        CostReport r;
        cost_static(&net, NULL, &r);
        CHECK(r.params == t->params, "%s: params %zu, want %zu", t->name, r.params, t->params);
        CHECK(r.macs == t->macs, "%s: MACs %.0f, want %.0f", t->name, r.macs, t->macs);
        CHECK(r.plan.peak_elems == t->peak_elems, "%s: peak %zu elements, want %zu", t->name, r.plan.peak_elems,
              t->peak_elems);
        CHECK(r.plan.spec_order_peak == t->spec_peak_elems, "%s: spec-order peak %zu, want %zu", t->name,
              r.plan.spec_order_peak, t->spec_peak_elems);
        CHECK(r.plan.exact, "%s: the search should be exact", t->name);
        CHECK(r.peak_fp32 == 4 * t->peak_elems && r.peak_int8 == t->peak_elems, "%s: peak bytes %zu / %zu", t->name,
              r.peak_fp32, r.peak_int8);
        CHECK(r.flash_fp32 == 4 * t->params, "%s: fp32 flash %zu, want %zu", t->name, r.flash_fp32, 4 * t->params);
        CHECK(r.flash_int8 == t->flash_int8, "%s: int8 flash %zu, want %zu (w %zu b %zu s %zu bn %zu q %zu)", t->name,
              r.flash_int8, t->flash_int8, r.int8.weights, r.int8.biases, r.int8.wscales, r.int8.bn,
              r.int8.act_qparams);
        CHECK(cost_peak_bytes(&r, 1) == r.peak_int8 && cost_flash_bytes(&r, 4) == r.flash_fp32, "%s: dtype lookup",
              t->name);
        float *x = random_input(&net);
        size_t peak = exec_check(&net, x, r.plan.order, t->name);
        CHECK(peak == r.peak_fp32, "%s: executor peak %zu bytes, planner %zu", t->name, peak, r.peak_fp32);
        exec_check(&net, x, NULL, t->name);
        free(x);
        cost_free(&r);
        net_free(&net);
    }
}

/* ------------------------------------------------------------------ random DAGs */
/* A random spec on a (2, 5, 5) input: `units` random statements, each reading earlier
 * tensors (any of them, so there are dead ends and long-lived tensors), then gap and linear on
 * the last one. Shapes stay 5x5 (stride 1, same padding) so add and concat find partners;
 * the 1x1 tensors of squeeze-excitation units are read only by their own mul. */
typedef struct {
    int nt;
    int ch[96];   /* channels of tensor t (0 = input, t = statement n<t>) */
    int full[96]; /* 5x5 (else 1x1) */
} Dag;

static const char *tref(char *buf, int t) {
    if (t == 0) return "input";
    snprintf(buf, 16, "n%d", t);
    return buf;
}

static int pick_full(const Dag *d) {
    for (;;) {
        int t = (int)rng_below(&rng, (uint32_t)d->nt);
        if (d->full[t]) return t;
    }
}

static char *random_dag(int units) {
    size_t cap = 8192, len = 0;
    char *s = xmalloc(cap);
    Dag d = {.nt = 1};
    d.ch[0] = 2, d.full[0] = 1;
    s[0] = 0;
    for (int u = 0; u < units && d.nt < 90; u++) {
        char r1[16], r2[16], stmt[512];
        int nt = d.nt, a = pick_full(&d), c = d.ch[a];
        int kind = (int)rng_below(&rng, 12);
        switch (kind) {
        case 0:
        case 1:
            c = 2 + (int)rng_below(&rng, 3);
            snprintf(stmt, sizeof stmt, "n%d=conv(%s,c=%d,k=%d)", nt, tref(r1, a), c, rng_below(&rng, 2) ? 3 : 1);
            break;
        case 2: snprintf(stmt, sizeof stmt, "n%d=relu(%s)", nt, tref(r1, a)); break;
        case 3: snprintf(stmt, sizeof stmt, "n%d=bn(%s)", nt, tref(r1, a)); break;
        case 4: {
            static const char *const ops[] = {"hswish", "sigmoid", "relu6", "hsigmoid", "dropout", "id", "zero"};
            snprintf(stmt, sizeof stmt, "n%d=%s(%s)", nt, ops[rng_below(&rng, 7)], tref(r1, a));
            break;
        }
        case 5:
            snprintf(stmt, sizeof stmt, "n%d=%s(%s,k=3,s=1,p=1)", nt, rng_below(&rng, 2) ? "maxpool" : "avgpool",
                     tref(r1, a));
            break;
        case 6:
        case 7:
        case 8: { /* add of 2..3 tensors of the same shape (repeats allowed) */
            int same[96], nsame = 0;
            for (int t = 0; t < d.nt; t++)
                if (d.full[t] && d.ch[t] == c) same[nsame++] = t;
            int m = 2 + (int)rng_below(&rng, 2);
            int l = snprintf(stmt, sizeof stmt, "n%d=add(%s", nt, tref(r1, a));
            for (int j = 1; j < m; j++)
                l += snprintf(stmt + l, sizeof stmt - l, ",%s", tref(r2, same[rng_below(&rng, (uint32_t)nsame)]));
            snprintf(stmt + l, sizeof stmt - l, ")");
            break;
        }
        case 9:
        case 10: { /* concat of 2..3 tensors */
            int m = 2 + (int)rng_below(&rng, 2);
            int l = snprintf(stmt, sizeof stmt, "n%d=concat(%s", nt, tref(r1, a));
            for (int j = 1; j < m; j++) {
                int b = pick_full(&d);
                c += d.ch[b];
                l += snprintf(stmt + l, sizeof stmt - l, ",%s", tref(r2, b));
            }
            snprintf(stmt + l, sizeof stmt - l, ")");
            break;
        }
        default: /* squeeze-excitation: x * sigmoid(gap(x)), three statements */
            snprintf(stmt, sizeof stmt, "n%d=gap(%s);n%d=sigmoid;n%d=mul(%s,n%d)", nt, tref(r1, a), nt + 1, nt + 2,
                     tref(r2, a), nt + 1);
            d.ch[nt] = d.ch[nt + 1] = c;
            d.full[nt] = d.full[nt + 1] = 0;
            d.nt += 2;
            break;
        }
        d.ch[d.nt] = c;
        d.full[d.nt] = 1;
        d.nt++;
        size_t need = len + strlen(stmt) + 64;
        if (need > cap) s = xrealloc(s, cap = 2 * need);
        len += (size_t)sprintf(s + len, "%s;", stmt);
    }
    sprintf(s + len, "gap(n%d);linear", d.nt - 1);
    return s;
}

/* Every topological order of the net, as a callback; stops after `limit` orders and then
 * returns 0. */
typedef struct {
    const Net *net;
    int n, *order, *placed, *indeg;
    long count, limit;
    void (*visit)(void *ctx, const int *order);
    void *ctx;
} Enum;

static int enum_rec(Enum *en, int depth) {
    if (depth == en->n) {
        if (++en->count > en->limit) return 0;
        en->visit(en->ctx, en->order);
        return 1;
    }
    for (int i = 0; i < en->n; i++) {
        if (en->placed[i]) continue;
        const Node *nd = &en->net->spec.nodes[i];
        int ok = 1;
        for (int j = 0; j < nd->nin && ok; j++)
            if (nd->in[j] >= 0 && !en->placed[nd->in[j]]) ok = 0;
        if (!ok) continue;
        en->placed[i] = 1;
        en->order[depth] = i;
        int more = enum_rec(en, depth + 1);
        en->placed[i] = 0;
        if (!more) return 0;
    }
    return 1;
}

static int enum_orders(const Net *net, long limit, void (*visit)(void *, const int *), void *ctx) {
    Enum en = {net, net->spec.n, NULL, NULL, NULL, 0, limit, visit, ctx};
    en.order = xmalloc((size_t)en.n * sizeof(int));
    en.placed = xcalloc((size_t)en.n, sizeof(int));
    int done = enum_rec(&en, 0);
    free(en.order);
    free(en.placed);
    return done;
}

typedef struct {
    Net *net;
    const float *x;
    size_t best_model, best_exec;
    long orders;
    int use_exec;
} Brute;

static void brute_visit(void *ctx, const int *order) {
    Brute *b = ctx;
    size_t p = memplan_order_peak(b->net, order, NULL);
    if (p < b->best_model) b->best_model = p;
    if (b->use_exec) {
        float logits[16];
        ExecStats st;
        exec_run(b->net, b->x, order, logits, &st);
        if (st.peak_bytes < b->best_exec) b->best_exec = st.peak_bytes;
        CHECK(st.peak_bytes == p * 4, "brute force: executor %zu bytes vs model %zu for one order", st.peak_bytes, p * 4);
    }
    b->orders++;
}

/* A random topological order (Kahn's algorithm with random choices). */
static void random_order(const Net *net, int *order) {
    int n = net->spec.n;
    int *placed = xcalloc((size_t)n, sizeof *placed), *ready = xmalloc((size_t)n * sizeof *ready);
    for (int t = 0; t < n; t++) {
        int nr = 0;
        for (int i = 0; i < n; i++) {
            if (placed[i]) continue;
            const Node *nd = &net->spec.nodes[i];
            int ok = 1;
            for (int j = 0; j < nd->nin && ok; j++)
                if (nd->in[j] >= 0 && !placed[nd->in[j]]) ok = 0;
            if (ok) ready[nr++] = i;
        }
        NASC_ASSERT(nr > 0);
        order[t] = ready[rng_below(&rng, (uint32_t)nr)];
        placed[order[t]] = 1;
    }
    free(placed);
    free(ready);
}

static void test_random_dags(void) {
    int tested = 0, exec_brute = 0, improved = 0;
    for (int trial = 0; trial < 150; trial++) {
        int units = 3 + (int)rng_below(&rng, 6);
        char *text = random_dag(units);
        Net net;
        if (!build(&net, text, 2, 5, 5, 10)) {
            free(text);
            continue;
        }
        MemPlan plan;
        memplan_plan(&net, NULL, &plan);
        CHECK(plan.exact, "random DAG: search not exact on %d nodes:\n%s", net.spec.n, text);
        CHECK(memplan_is_topological(&net, plan.order), "random DAG: plan order is not topological:\n%s", text);
        CHECK(plan.peak_elems <= plan.spec_order_peak, "random DAG: plan worse than the spec order");
        improved += plan.peak_elems < plan.spec_order_peak;
        float *x = random_input(&net);
        Brute b = {&net, x, (size_t)-1, (size_t)-1, 0, 0};
        /* The fully independent check (executor in every order) on the smaller ones. */
        b.use_exec = net.spec.n <= 8;
        if (enum_orders(&net, b.use_exec ? 1500 : 20000, brute_visit, &b)) {
            tested++;
            exec_brute += b.use_exec;
            CHECK(b.best_model == plan.peak_elems, "random DAG: planner %zu, brute force over %ld orders %zu:\n%s",
                  plan.peak_elems, b.orders, b.best_model, text);
            if (b.use_exec)
                CHECK(b.best_exec == plan.peak_elems * 4, "random DAG: planner %zu bytes, executor brute force %zu:\n%s",
                      plan.peak_elems * 4, b.best_exec, text);
        }
        size_t got = exec_check(&net, x, plan.order, "random DAG, plan order");
        CHECK(got == plan.peak_elems * 4, "random DAG: executor %zu bytes in the plan's order, planner %zu:\n%s", got,
              plan.peak_elems * 4, text);
        int *ord = xmalloc((size_t)net.spec.n * sizeof *ord);
        for (int k = 0; k < 3; k++) {
            random_order(&net, ord);
            size_t p = exec_check(&net, x, ord, "random DAG, random order");
            CHECK(p >= plan.peak_elems * 4, "random DAG: a random order needs %zu bytes, less than the plan's %zu:\n%s",
                  p, plan.peak_elems * 4, text);
        }
        free(ord);
        free(x);
        memplan_free(&plan);
        net_free(&net);
        free(text);
    }
    CHECK(tested >= 100, "only %d random DAGs were brute-forced", tested);
    CHECK(exec_brute >= 20, "only %d random DAGs were brute-forced with the executor", exec_brute);
    CHECK(improved >= 5, "the planner beat the spec order on only %d random DAGs", improved);
    printf("random DAGs: %d brute-forced (%d with the executor in every order); plan < spec order on %d\n", tested,
           exec_brute, improved);
}

/* The beam-limited search on bigger random DAGs: valid, consistent, never worse than the
 * spec order, and flagged inexact when it cut. Exact search must agree when it is exact. */
static void test_heuristic(void) {
    int cut = 0;
    for (int trial = 0; trial < 20; trial++) {
        char *text = random_dag(15 + (int)rng_below(&rng, 10));
        Net net;
        if (!build(&net, text, 2, 5, 5, 10)) {
            free(text);
            continue;
        }
        MemPlan full, small;
        MemPlanConfig big = {.max_work = 20000000};
        memplan_plan(&net, &big, &full);
        MemPlanConfig cfg = {.beam = 2};
        memplan_plan(&net, &cfg, &small);
        cut += !small.exact;
        CHECK(memplan_is_topological(&net, small.order), "beam 2: order not topological");
        CHECK(memplan_order_peak(&net, small.order, NULL) == small.peak_elems, "beam 2: peak not the order's");
        CHECK(small.peak_elems <= small.spec_order_peak, "beam 2: worse than the spec order");
        if (full.exact) CHECK(full.peak_elems <= small.peak_elems, "beam 2 beat the exact search");
        if (small.exact) CHECK(full.peak_elems == small.peak_elems, "both exact but different");
        float *x = random_input(&net);
        exec_check(&net, x, small.order, "beam 2 order");
        free(x);
        memplan_free(&full);
        memplan_free(&small);
        net_free(&net);
        free(text);
    }
    CHECK(cut > 0, "the beam never cut: the heuristic path was not exercised");
}

/* ------------------------------------------------------------------ real networks */
static void net_check(const char *name, const char *text, int channels, int cells) {
    Err e;
    Spec s;
    Net net;
    if (spec_parse(&s, text, channels, cells, &e) != NASC_OK) {
        CHECK(0, "%s: %s", name, e.msg);
        return;
    }
    int rc = net_build(&net, &s, 1, 28, 28, 10, &e);
    spec_free(&s);
    if (rc != NASC_OK) {
        CHECK(0, "%s: %s", name, e.msg);
        return;
    }
    net_init_params(&net, 7);
    for (size_t k = 0; k < net.nbuffers; k++) net.buffers[k] = rng_uniformf(&rng, 0.5f, 1.5f);
    CostReport r;
    cost_static(&net, NULL, &r);
    CHECK(r.plan.exact, "%s: search not exact", name);
    CHECK(r.params == net_param_count(&net) && r.macs == net_macs(&net), "%s: params/MACs", name);
    float *x = random_input(&net);
    size_t got = exec_check(&net, x, r.plan.order, name);
    CHECK(got == r.peak_fp32, "%s: executor peak %zu bytes in the plan's order, planner %zu", name, got, r.peak_fp32);
    size_t spec_peak = exec_check(&net, x, NULL, name);
    CHECK(spec_peak >= r.peak_fp32 && spec_peak == r.plan.spec_order_peak * 4, "%s: spec order %zu vs plan %zu", name,
          spec_peak, r.peak_fp32);
    int *ord = xmalloc((size_t)net.spec.n * sizeof *ord);
    random_order(&net, ord);
    CHECK(exec_check(&net, x, ord, name) >= r.peak_fp32, "%s: a random order beat the plan", name);
    free(ord);
    printf("%-10s params %zu  MACs %.0f  peak fp32 %zu B (spec order %zu)  flash fp32 %zu B int8 %zu B  %s, %ld states\n",
           name, r.params, r.macs, r.peak_fp32, r.plan.spec_order_peak * 4, r.flash_fp32, r.flash_int8,
           r.plan.exact ? "exact" : "heuristic", r.plan.states);
    free(x);
    cost_free(&r);
    net_free(&net);
}

static void test_networks(void) {
    net_check("small", zoo_lookup("small"), 16, 1);
    net_check("resnet8", zoo_lookup("resnet8"), 16, 1);
    net_check("mbv2", zoo_lookup("mbv2"), 16, 1);
    net_check("nb201-a", "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", 8, 1);
    net_check("nb201-b", "nb201:|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|", 8, 2);
    net_check("nb201-c", "nb201:|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|", 4, 2);
    net_check("nb201-d", "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 4, 1);
    net_check("nb201-e", "nb201:|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|", 4, 1);

    /* mbv2 by hand: its peak is the first inverted residual block with expansion 6: block 1
     * (t=1) leaves b1 (16x28x28); block 2 expands to 96x28x28 and its stride-2 depthwise conv
     * writes 96x14x14 while the expansion output lives: 96*784 + 96*196 = 94080 elements
     * (the block input is dead by then: nothing else reads it). */
    Err e;
    Spec s;
    Net net;
    spec_parse(&s, zoo_lookup("mbv2"), 16, 1, &e);
    net_build(&net, &s, 1, 28, 28, 10, &e);
    spec_free(&s);
    MemPlan p;
    memplan_plan(&net, NULL, &p);
    CHECK(p.peak_elems == 96 * 784 + 96 * 196, "mbv2 peak %zu elements, want %d", p.peak_elems, 96 * 784 + 96 * 196);
    memplan_free(&p);
    net_free(&net);
}

/* ------------------------------------------------------------------ targets */
static void expect_target_error(const char *text, const char *want) {
    Target t;
    Err e = {{0}};
    int rc = target_parse(&t, text, "x.target", ".", &e);
    CHECK(rc == NASC_ERR, "target text should fail (%s):\n%s", want, text);
    if (rc == NASC_ERR) CHECK(strstr(e.msg, want) != NULL, "target error '%s', want '%s'", e.msg, want);
}

static const char *good =
    "# a profile\n"
    "name = tiny-1.0\n"
    "\n"
    "  sram_kb = 64.5   # trailing comment\n"
    "flash_kb=256\n"
    "latency_ms = 50\r\n"
    "dtype = int8\n"
    "description = \"a small #1 board\"\n";

static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    NASC_ASSERT(f);
    fwrite(text, 1, n, f);
    fclose(f);
}

static void test_targets(void) {
    Target t;
    Err e = {{0}};
    int rc = target_parse(&t, good, "good.target", ".", &e);
    CHECK(rc == NASC_OK, "good target: %s", e.msg);
    CHECK(!strcmp(t.name, "tiny-1.0") && t.sram_kb == 64.5 && t.flash_kb == 256 && t.latency_ms == 50 &&
              t.dtype_bytes == 1 && !strcmp(t.description, "a small #1 board") && !t.latency_table[0],
          "good target parsed wrong: %s %g %g %g %d '%s'", t.name, t.sram_kb, t.flash_kb, t.latency_ms, t.dtype_bytes,
          t.description);

    const char *req = "name = a\nsram_kb = 1\nflash_kb = 1\nlatency_ms = 1\n";
    char buf[512];
    /* A latency table need not exist yet (nasc profile writes it); relative to the folder. */
    snprintf(buf, sizeof buf, "%sdtype = fp32\nlatency_table = later.lat\n", req);
    rc = target_parse(&t, buf, "y.target", "/some/dir", &e);
    CHECK(rc == NASC_OK && !strcmp(t.latency_table, "/some/dir/later.lat"), "latency table path '%s' (%s)",
          t.latency_table, rc ? e.msg : "");
    expect_target_error("name = a\nfoo = 1\n", "x.target: line 2, column 1: unknown key 'foo'");
    expect_target_error("name = a\n   sram = 1\n", "x.target: line 2, column 4: unknown key 'sram'");
    expect_target_error("sram_kb 320\n", "x.target: line 1, column 9: expected '=' after 'sram_kb'");
    expect_target_error("name = a\nsram_kb\n", "x.target: line 2, column 8: expected '=' after 'sram_kb'");
    expect_target_error("sram_kb # 320\n", "x.target: line 1, column 9: expected '=' after 'sram_kb'");
    expect_target_error("= 5\n", "x.target: line 1, column 1: expected a key");
    expect_target_error("sram_kb = abc\n", "x.target: line 1, column 11: sram_kb must be a positive number");
    expect_target_error("flash_kb =   -5\n", "x.target: line 1, column 14: flash_kb must be a positive number");
    expect_target_error("latency_ms = 0\n", "x.target: line 1, column 14: latency_ms must be a positive number");
    expect_target_error("sram_kb = 320kb\n", "line 1, column 11: sram_kb must be a positive number (kilobytes), got '320kb'");
    expect_target_error("sram_kb = nan\n", "line 1, column 11: sram_kb must be a positive number");
    expect_target_error("sram_kb = \n", "x.target: line 1, column 11: 'sram_kb' needs a value");
    expect_target_error("dtype = int4\n", "x.target: line 1, column 9: dtype must be int8 or fp32, got 'int4'");
    expect_target_error("name = my board\n", "x.target: line 1, column 8: name must be");
    expect_target_error("name = a\n\nsram_kb = 1\nsram_kb = 2\n",
                        "x.target: line 4, column 1: duplicate key 'sram_kb' (first set on line 3)");
    expect_target_error("description = \"open\n", "x.target: line 1, column 15: unterminated quoted value");
    expect_target_error("description = \"a\" b\n", "x.target: line 1, column 19: unexpected text after the closing quote");
    expect_target_error("latency_table = \"\"\n", "x.target: line 1, column 17: 'latency_table' needs a value");
    snprintf(buf, sizeof buf, "%s", req); /* no dtype; the text ends after line 4's newline */
    expect_target_error(buf, "x.target: line 5, column 1: missing required key 'dtype'");
    expect_target_error("name = a\nsram_kb = 1", "x.target: line 2, column 12: missing required key 'flash_kb'");
    expect_target_error("", "x.target: line 1, column 1: missing required key 'name'");

    /* Files: a latency table next to the profile, NUL bytes, a missing file, lookup. */
    char dir[] = "/tmp/nasc_test_cost_XXXXXX";
    NASC_ASSERT(mkdtemp(dir));
    char path[256], path2[256], path3[256];
    snprintf(path, sizeof path, "%s/board.target", dir);
    snprintf(path2, sizeof path2, "%s/board.lat", dir);
    write_file(path2, "conv 1.0\n", 9);
    snprintf(buf, sizeof buf, "%sdtype = fp32\nlatency_table = board.lat\n", req);
    write_file(path, buf, strlen(buf));
    rc = target_load(&t, path, &e);
    CHECK(rc == NASC_OK, "board.target: %s", e.msg);
    CHECK(rc != NASC_OK || (!strcmp(t.latency_table, path2) && t.dtype_bytes == 4 && !strcmp(t.path, path)),
          "latency table resolved to '%s', want '%s'", t.latency_table, path2);
    snprintf(path3, sizeof path3, "%s/nul.target", dir);
    write_file(path3, "name = a\nsram\0_kb = 1\n", 22);
    rc = target_load(&t, path3, &e);
    CHECK(rc == NASC_ERR && strstr(e.msg, "nul.target: line 2, column 5: NUL byte"), "NUL byte: %s", e.msg);
    rc = target_load(&t, "/nonexistent/x.target", &e);
    CHECK(rc == NASC_ERR && strstr(e.msg, "cannot open"), "missing file: %s", e.msg);

    /* Lookup: $NASC_TARGETS first, then the shipped profiles (found here through the source
     * tree: this binary is BUILD/tests/test_cost). */
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    NASC_ASSERT(n > 0);
    exe[n] = 0;
    *strrchr(exe, '/') = 0;
    char env[2400];
    snprintf(env, sizeof env, "%s:%s/../../targets", dir, exe);
    setenv("NASC_TARGETS", env, 1);
    rc = target_find(&t, "board", &e);
    CHECK(rc == NASC_OK && !strcmp(t.name, "a"), "find board: %s", e.msg);
    rc = target_find(&t, path, &e);
    CHECK(rc == NASC_OK && !strcmp(t.name, "a"), "find by path: %s", e.msg);
    static const struct {
        const char *name;
        double sram, flash;
        int dtype;
    } shipped[] = {{"mcu", 320, 1024, 1}, {"mobile", 0, 0, 4}, {"server", 0, 0, 4}};
    for (int k = 0; k < 3; k++) {
        rc = target_find(&t, shipped[k].name, &e);
        CHECK(rc == NASC_OK, "shipped target %s: %s", shipped[k].name, e.msg);
        if (rc != NASC_OK) continue;
        CHECK(!strcmp(t.name, shipped[k].name) && t.dtype_bytes == shipped[k].dtype && t.latency_ms > 0,
              "shipped target %s: name %s dtype %d", shipped[k].name, t.name, t.dtype_bytes);
        if (shipped[k].sram > 0)
            CHECK(t.sram_kb == shipped[k].sram && t.flash_kb == shipped[k].flash, "mcu: %g KB SRAM %g KB flash",
                  t.sram_kb, t.flash_kb);
    }
    rc = target_find(&t, "nosuchboard", &e);
    CHECK(rc == NASC_ERR && strstr(e.msg, "unknown target 'nosuchboard'") && strstr(e.msg, "board") &&
              strstr(e.msg, "mcu"),
          "unknown target: %s", e.msg);
    rc = target_find(&t, "bad name!", &e);
    CHECK(rc == NASC_ERR && strstr(e.msg, "bad target name"), "bad name: %s", e.msg);
    unsetenv("NASC_TARGETS");
    unlink(path);
    unlink(path2);
    unlink(path3);
    rmdir(dir);
}

static void test_fit(void) {
    Target t = {.sram_kb = 1, .flash_kb = 2, .latency_ms = 10, .dtype_bytes = 1};
    CostReport r = {0};
    r.peak_int8 = 1024, r.peak_fp32 = 4096, r.flash_int8 = 2048, r.flash_fp32 = 8192;
    TargetFit f;
    target_check(&t, &r, &f);
    CHECK(f.sram_ok && f.flash_ok && f.latency_ok == -1 && f.fits && f.peak_bytes == 1024 && f.flash_bytes == 2048,
          "int8 at the limits without latency should fit");
    r.has_latency = 1;
    r.latency.median_ms = 10;
    target_check(&t, &r, &f);
    CHECK(f.fits && f.latency_ok == 1, "latency at the budget fits");
    r.latency.median_ms = 10.5;
    target_check(&t, &r, &f);
    CHECK(!f.fits && f.latency_ok == 0 && f.sram_ok, "latency over budget");
    r.latency.median_ms = 1;
    r.peak_int8 = 1025;
    target_check(&t, &r, &f);
    CHECK(!f.fits && !f.sram_ok && f.flash_ok, "one byte over SRAM");
    t.dtype_bytes = 4; /* fp32 figures: 4096 > 1 KB, 8192 > 2 KB */
    target_check(&t, &r, &f);
    CHECK(!f.sram_ok && !f.flash_ok && f.peak_bytes == 4096 && f.flash_bytes == 8192, "fp32 target uses fp32 figures");
}

static void test_latency(void) {
    Net net;
    if (!build(&net, zoo_lookup("small"), 1, 28, 28, 10)) return;
    LatencyConfig cfg = {.repeats = 7, .warmup = 1};
    LatencyStats s;
    latency_measure(&net, &cfg, &s);
    CHECK(s.runs == 7 && s.warmup == 1 && s.threads == threads_get(), "latency runs %d warmup %d", s.runs, s.warmup);
    CHECK(s.min_ms > 0 && s.min_ms <= s.p10_ms && s.p10_ms <= s.median_ms && s.median_ms <= s.p90_ms &&
              s.mean_ms >= s.min_ms,
          "latency statistics out of order: min %g p10 %g median %g p90 %g", s.min_ms, s.p10_ms, s.median_ms, s.p90_ms);
    CostReport r;
    cost_of(&net, NULL, &cfg, &r);
    CHECK(r.has_latency && r.latency.runs == 7, "cost_of measures latency");
    cost_free(&r);
    net_free(&net);
}

/* Runs one section and prints how long it took (information only, nothing is asserted). */
static void section(const char *name, void (*fn)(void)) {
    double t0 = now_seconds();
    fn();
    printf("  %-14s %.2f s\n", name, now_seconds() - t0);
}

int main(void) {
    rng_seed(&rng, 20240611);
    threads_set(2);
    section("hand", test_hand);
    section("random DAGs", test_random_dags);
    section("heuristic", test_heuristic);
    section("networks", test_networks);
    section("targets", test_targets);
    section("fit", test_fit);
    section("latency", test_latency);
    return check_summary("test_cost");
}
