/* test_cgen.c: the arena planner (src/cost/arena.c) and the standalone C export
 * (src/export/cgen.c).
 *
 *   1. arena plans, for zoo nets, NB201 cells, hand-made specs and random DAG specs, in the
 *      memory planner's order and in random topological orders:
 *      - a brute-force check that shares nothing with arena.c but the plan's tensor -> buffer map
 *        and offsets: at every step, every two tensors that are needed then (produced, and read
 *        at or after the step) occupy disjoint bytes unless they are the same value (aliases)
 *        or an in-place hand-over at that step (the output of the step's node taking the buffer
 *        of an input read for the last time); every range lies inside the arena;
 *      - the ideal figure equals memplan_order_peak of the same order, the arena is never
 *        smaller, and equals it on chains, residual nets, MobileNetV2 and NB201 cells; on a
 *        spec where the planner's arena stays above the ideal (frag_spec: 784 bytes more;
 *        2 million random placement orders found nothing smaller either), cost_peak_bytes is
 *        the arena's figure;
 *      - the fp32 plan is the int8 plan scaled by 4, and cost_static reports both;
 *      - an instrumented run: the fp32 net executed node by node (net_node_forward) inside one
 *        float arena at the planned offsets, every byte not held by a live tensor set to NaN
 *        before each step, gives exec_run's logits bit for bit;
 *   2. the generated C, for small, resnet8, mbv2, three NB201 networks (one with none and
 *      avg_pool_3x3, one nearly all none: adds of zero constants only), frag_spec, two specs
 *      covering concat, SE mul, hswish, sigmoid, hsigmoid, resize,
 *      max pool, avg pool with and without count_include_pad, standalone BN, dilated and
 *      grouped conv, zero, id, dropout and a 3-input add, and two random members of the macro
 *      space: random weights and BN statistics, int8 by quant_ptq, both model files saved,
 *      exported, compiled with `gcc -std=c99 -Wall -Wextra -Werror -O2` beside a driver written
 *      here, run on several inputs (random, large, NaN/inf, and exact rounding ties for the
 *      input quantization):
 *      - int8: NAME_predict_q == qnet_forward_int8 (reference kernels) bit for bit, NAME_predict's
 *        scores == qnet_forward's logits bit for bit, the returned class their arg-max, and
 *        NAME_quantize == quantize_ref; for three nets, the same bytes again when compiled with
 *        conv blocks of 3 columns (-DQNET_CONV_BLK=3) instead of the default; and -ffast-math
 *        (which would turn its divisions into reciprocal multiplies) is refused with a message;
 *      - fp32: scores within 1e-4 of net_forward's (relative to the largest logit);
 *      - the arena declared == cost_peak_bytes of the cost model (int8 and fp32);
 *      - once, the measured object sizes (code, rodata >= the const data, RAM >= the arena).
 * Needs gcc on the PATH for part 2 (it is skipped with a note otherwise, and the test fails if
 * NASC_REQUIRE_CC=1). No timing assertions.
 *
 * Tools for tests/cli_cgen.sh: `test_cgen --make DIR` writes random-weight models (small and
 * frag_spec, fp32 and int8); `test_cgen --export MODEL DIR [NAME]` runs cgen_export and prints
 * its report as "key value" lines.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "../src/compress/quant.h"
#include "../src/cost/arena.h"
#include "../src/export/cgen.h"
#include "../src/space/space.h"
#include "check.h"

static Rng rng;
static char tmpdir[64];

static int build_net(Net *net, const char *text, int channels, int c, int h, int w, int classes) {
    Err e;
    Spec s;
    if (spec_parse(&s, text, channels, 1, &e) != NASC_OK) {
        CHECK(0, "spec does not parse: %s\n%s", e.msg, text);
        return 0;
    }
    int rc = net_build(net, &s, c, h, w, classes, &e);
    spec_free(&s);
    CHECK(rc == NASC_OK, "spec does not build: %s\n%s", e.msg, text);
    return rc == NASC_OK;
}

static void random_order(const Net *net, int *order) {
    int n = net->spec.n;
    uint8_t *done = xcalloc((size_t)n, 1);
    int *ready = xmalloc((size_t)n * sizeof *ready);
    for (int t = 0; t < n; t++) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            const Node *nd = &net->spec.nodes[i];
            int ok = 1;
            for (int j = 0; j < nd->nin; j++) ok &= nd->in[j] < 0 || done[nd->in[j]];
            if (ok) ready[m++] = i;
        }
        NASC_ASSERT(m > 0);
        order[t] = ready[rng_below(&rng, (uint32_t)m)];
        done[order[t]] = 1;
    }
    free(done);
    free(ready);
}

/* ------------------------------------------------------------------ 1. arena plans */
/* The brute-force check (see the file comment). Returns 1 if the plan is valid. */
static int plan_valid(const Net *net, const int *order, const ArenaPlan *p, size_t elem, const char *what) {
    int n = net->spec.n, ok = 1;
    int *pos = xmalloc((size_t)n * sizeof *pos);
    for (int t = 0; t < n; t++) pos[order[t]] = t;
    /* Per tensor (0 = input, k + 1 = node k): produced at, last needed at, alias root. */
    int *prod = xmalloc((size_t)(n + 1) * sizeof *prod), *lastuse = xmalloc((size_t)(n + 1) * sizeof *lastuse);
    int *root = xmalloc((size_t)(n + 1) * sizeof *root);
    prod[0] = -1, root[0] = 0;
    for (int k = 0; k < n; k++) {
        const Node *nd = &net->spec.nodes[k];
        prod[k + 1] = pos[k];
        int a = nd->op == OP_ID || nd->op == OP_DROPOUT;
        root[k + 1] = a ? root[nd->in[0] < 0 ? 0 : nd->in[0] + 1] : k + 1;
    }
    for (int v = 0; v <= n; v++) lastuse[v] = prod[v];
    for (int k = 0; k < n; k++) {
        const Node *nd = &net->spec.nodes[k];
        for (int j = 0; j < nd->nin; j++) {
            int v = nd->in[j] < 0 ? 0 : nd->in[j] + 1;
            lastuse[v] = NASC_MAX(lastuse[v], pos[k]);
        }
    }
    lastuse[n] = n; /* the output */
    /* An alias keeps its root needed while it is. */
    for (int v = n; v >= 0; v--) lastuse[root[v]] = NASC_MAX(lastuse[root[v]], lastuse[v]);
    for (int v = 0; v <= n && ok; v++) {
        int b = p->tbuf[v];
        size_t sz = v == 0 ? (size_t)net->in_c * net->in_h * net->in_w : (size_t)net->spec.nodes[v - 1].c *
                                                                          net->spec.nodes[v - 1].h * net->spec.nodes[v - 1].w;
        if (b < 0) { /* only zero constants (and aliases of them) have no buffer */
            if (root[v] == 0 || net->spec.nodes[root[v] - 1].op != OP_ZERO) {
                CHECK(0, "%s: tensor %d has no buffer", what, v);
                ok = 0;
            }
            continue;
        }
        if (p->size[b] < sz * elem || p->offset[b] + p->size[b] > p->arena_bytes) {
            CHECK(0, "%s: tensor %d: buffer %d of %zu bytes at %zu, needs %zu within %zu", what, v, b, p->size[b],
                  p->offset[b], sz * elem, p->arena_bytes);
            ok = 0;
        }
    }
    for (int t = -1; t < n && ok; t++) {
        int cur = t >= 0 ? order[t] : -1;
        for (int a = 0; a <= n && ok; a++) {
            if (p->tbuf[a] < 0 || prod[a] > t || lastuse[a] < t) continue;
            for (int b = a + 1; b <= n && ok; b++) {
                if (p->tbuf[b] < 0 || prod[b] > t || lastuse[b] < t) continue;
                int ba = p->tbuf[a], bb = p->tbuf[b];
                if (ba == bb) {
                    if (root[a] == root[b]) continue;
                    /* in-place hand-over: b is the output of this step's node, a dies here */
                    int handover = (cur >= 0 && root[b] == cur + 1 && lastuse[a] == t) ||
                                   (cur >= 0 && root[a] == cur + 1 && lastuse[b] == t);
                    if (handover) continue;
                    CHECK(0, "%s: step %d: tensors %d and %d share buffer %d while both are needed", what, t, a, b, ba);
                    ok = 0;
                } else {
                    size_t a0 = p->offset[ba], a1 = a0 + p->size[ba], b0 = p->offset[bb], b1 = b0 + p->size[bb];
                    if (a0 < b1 && b0 < a1) {
                        CHECK(0, "%s: step %d: tensors %d [%zu, %zu) and %d [%zu, %zu) overlap", what, t, a, a0, a1, b,
                              b0, b1);
                        ok = 0;
                    }
                }
            }
        }
    }
    /* The placement against the plan's own lifetimes, every pair. */
    for (int a = 0; a < p->nbufs && ok; a++)
        for (int b = a + 1; b < p->nbufs && ok; b++)
            if (arena_meet(p, a, b) && p->offset[a] < p->offset[b] + p->size[b] && p->offset[b] < p->offset[a] + p->size[a]) {
                CHECK(0, "%s: buffers %d and %d meet in time and overlap in the arena", what, a, b);
                ok = 0;
            }
    free(pos);
    free(prod);
    free(lastuse);
    free(root);
    return ok;
}

/* Runs the fp32 net in `order` inside one float arena laid out by p (elem 4); bytes not held
 * by a live buffer are NaN before each step. Returns 1 if the logits equal exec_run's. */
static int arena_run(Net *net, const int *order, const ArenaPlan *p, const char *what) {
    int n = net->spec.n;
    size_t in = (size_t)net->in_c * net->in_h * net->in_w;
    float *x = xmalloc(in * sizeof *x);
    for (size_t k = 0; k < in; k++) x[k] = (float)rng_normal(&rng);
    float *want = xmalloc((size_t)net->classes * sizeof *want);
    ExecStats st;
    exec_run(net, x, order, want, &st);
    if (net->batch_cap < 1) net_forward(net, x, 1, 0);
    size_t cells = p->arena_bytes / 4 + 1;
    float *arena = xmalloc(cells * sizeof *arena);
    uint8_t *held = xmalloc(cells);
    size_t zmax = 1;
    for (int i = 0; i < n; i++)
        if (net->spec.nodes[i].op == OP_ZERO) zmax = NASC_MAX(zmax, (size_t)net->spec.nodes[i].c * net->spec.nodes[i].h * net->spec.nodes[i].w);
    float *zeros = xcalloc(zmax, sizeof *zeros);
    float **saved_out = xmalloc((size_t)n * sizeof *saved_out);
    memcpy(saved_out, net->out, (size_t)n * sizeof *saved_out);
    const float *saved_x = net->x;
    int saved_batch = net->batch, saved_training = net->training;
    for (size_t k = 0; k < cells; k++) arena[k] = NAN;
    memcpy(arena + p->offset[p->tbuf[0]] / 4, x, in * sizeof *x);
    net->x = arena + p->offset[p->tbuf[0]] / 4;
    net->batch = 1;
    net->training = 0;
    for (int t = 0; t < n; t++) {
        int i = order[t];
        const Node *nd = &net->spec.nodes[i];
        /* Poison everything but the buffers live before this step (first < t <= last). */
        memset(held, 0, cells);
        for (int b = 0; b < p->nbufs; b++)
            if (p->first[b] < t && t <= p->last[b])
                memset(held + p->offset[b] / 4, 1, p->size[b] / 4);
        for (size_t k = 0; k < cells; k++)
            if (!held[k]) arena[k] = NAN;
        int b = p->tbuf[i + 1];
        net->out[i] = b < 0 ? zeros : arena + p->offset[b] / 4;
        MemKind mk = memplan_kind(nd, NULL);
        if (mk != MEM_ALIAS && mk != MEM_ZERO) net_node_forward(net, i);
    }
    float *got = net->out[n - 1];
    int same = !memcmp(got, want, (size_t)net->classes * sizeof *got);
    CHECK(same, "%s: the arena run's logits differ from exec_run's (got[0] %g, want %g)", what, got[0], want[0]);
    memcpy(net->out, saved_out, (size_t)n * sizeof *saved_out);
    net->x = saved_x;
    net->batch = saved_batch;
    net->training = saved_training;
    free(saved_out);
    free(zeros);
    free(held);
    free(arena);
    free(want);
    free(x);
    return same;
}

/* One net: plans in the memory planner's order (and a few random orders), all checks. */
static void arena_check(const char *name, const char *text, int channels, int c, int h, int w, int expect_equal) {
    Net net;
    if (!build_net(&net, text, channels, c, h, w, 10)) return;
    net_init_params(&net, rng_next(&rng));
    for (size_t k = 0; k < net.nbuffers; k++) net.buffers[k] = rng_uniformf(&rng, 0.5f, 1.5f);
    CostReport r;
    cost_static(&net, NULL, &r);
    ArenaPlan p1, p4;
    arena_plan(&net, r.plan.order, 1, &p1);
    arena_plan(&net, r.plan.order, 4, &p4);
    CHECK(p1.ideal_bytes == r.plan.peak_elems, "%s: arena's ideal %zu, memplan's peak %zu", name, p1.ideal_bytes,
          r.plan.peak_elems);
    CHECK(p1.arena_bytes >= p1.ideal_bytes, "%s: arena %zu below the ideal %zu", name, p1.arena_bytes, p1.ideal_bytes);
    if (expect_equal)
        CHECK(p1.arena_bytes == p1.ideal_bytes, "%s: arena %zu, ideal %zu: expected equal", name, p1.arena_bytes,
              p1.ideal_bytes);
    CHECK(p4.arena_bytes == 4 * p1.arena_bytes && p4.ideal_bytes == 4 * p1.ideal_bytes, "%s: fp32 plan %zu, int8 %zu",
          name, p4.arena_bytes, p1.arena_bytes);
    CHECK(r.arena_int8 == p1.arena_bytes && r.arena_fp32 == p4.arena_bytes, "%s: cost report arena %zu/%zu", name,
          r.arena_int8, r.arena_fp32);
    CHECK(cost_peak_bytes(&r, 1) == NASC_MAX(r.peak_int8, r.arena_int8) && cost_peak_bytes(&r, 4) == r.arena_fp32,
          "%s: cost_peak_bytes is not the arena's figure", name);
    plan_valid(&net, r.plan.order, &p1, 1, name);
    plan_valid(&net, r.plan.order, &p4, 4, name);
    arena_run(&net, r.plan.order, &p4, name);
    /* Random orders: still valid, still >= the ideal of that order. */
    int *ord = xmalloc((size_t)net.spec.n * sizeof *ord);
    for (int k = 0; k < 3; k++) {
        random_order(&net, ord);
        ArenaPlan q;
        arena_plan(&net, ord, 4, &q);
        CHECK(q.ideal_bytes == 4 * memplan_order_peak(&net, ord, NULL), "%s: random order: ideal %zu vs memplan %zu",
              name, q.ideal_bytes, 4 * memplan_order_peak(&net, ord, NULL));
        char what[96];
        snprintf(what, sizeof what, "%s (random order %d)", name, k);
        plan_valid(&net, ord, &q, 4, what);
        if (k == 0) arena_run(&net, ord, &q, what);
        arena_free(&q);
    }
    printf("  %-14s %3d nodes %3d buffers (%d in place): arena %7zu B int8, ideal %7zu B%s (%s)\n", name, net.spec.n,
           p1.nbufs, p1.inplace, p1.arena_bytes, p1.ideal_bytes, p1.arena_bytes > p1.ideal_bytes ? " MORE" : "",
           p1.method);
    free(ord);
    arena_free(&p1);
    arena_free(&p4);
    cost_free(&r);
    net_free(&net);
}

/* A random DAG over tensors of one shape (8, 8, 8): unary ops, adds, concats (folded back by
 * a 1x1 conv), SE blocks, ids, dropouts, zeros, dead ends. */
static char *random_dag(int steps) {
    size_t cap = 16384, len = 0;
    char *s = xmalloc(cap);
    int t = 0; /* tensors t0 .. t{t-1} */
#define OUT(...)                                                                                                       \
    do {                                                                                                               \
        len += (size_t)snprintf(s + len, cap - len, __VA_ARGS__);                                                      \
        NASC_ASSERT(len < cap);                                                                                        \
    } while (0)
    OUT("t0=conv(input,c=8,k=3);");
    t = 1;
    for (int k = 0; k < steps; k++) {
        int a = (int)rng_below(&rng, (uint32_t)t), b = (int)rng_below(&rng, (uint32_t)t), c = (int)rng_below(&rng, (uint32_t)t);
        switch (rng_below(&rng, 12)) {
        case 0: OUT("t%d=relu(t%d);", t, a); break;
        case 1: OUT("t%d=bn(t%d);", t, a); break;
        case 2: OUT("t%d=conv(t%d,c=8,k=%d);", t, a, rng_below(&rng, 2) ? 3 : 1); break;
        case 3: OUT("t%d=maxpool(t%d,k=3,s=1,p=1);", t, a); break;
        case 4: OUT("t%d=avgpool(t%d,k=3,s=1,p=1,cip=%d);", t, a, (int)rng_below(&rng, 2)); break;
        case 5: OUT("t%d=add(t%d,t%d);", t, a, b); break;
        case 6: OUT("t%d=add(t%d,t%d,t%d);", t, a, b, c); break;
        case 7: OUT("c%d=concat(t%d,t%d);t%d=conv(c%d,c=8,k=1);", t, a, b, t, t); break;
        case 8: OUT("g%d=gap(t%d);h%d=conv(g%d,c=8,k=1,bias=1);s%d=sigmoid(h%d);t%d=mul(t%d,s%d);", t, a, t, t, t, t, t, a, t); break;
        case 9: OUT("t%d=id(t%d);", t, a); break;
        case 10: OUT("t%d=dropout(t%d);", t, a); break;
        default: OUT("t%d=zero(t%d);", t, a); break;
        }
        t++;
    }
    OUT("o=add(t%d,t%d);gap(o);linear", t - 1, (int)rng_below(&rng, (uint32_t)t));
#undef OUT
    return s;
}

static const char custom_a[] =
    "bn;x0=relu6;"
    "x1=conv(c=8,k=3,s=2,bias=1);"
    "r=hswish;"
    "pa=avgpool(r,k=3,s=1,p=1,cip=0);"
    "gp=gap(pa);conv(gp,c=4,k=1,bias=1);relu;conv(c=8,k=1,bias=1);sc=sigmoid;"
    "se=mul(pa,sc);"
    "b2=bn(se);"
    "cat=concat(b2,x1);"
    "mp=maxpool(cat,k=2);"
    "rs=resize(mp,s=9);"
    "conv(c=16,k=3,d=2,p=2,g=4);bn;hsigmoid;dropout;"
    "avgpool(k=2,p=1,cip=1);"
    "linear(c=24);bn;relu;linear";

/* A ReLU reading an id (a table), a 3-input add, a zero constant in a concat and in an add,
 * a resize up, sigmoid then ReLU6 (two tables), a bias-free linear with its BN folded last. */
static const char custom_b[] =
    "bn;x0=relu6;"
    "x1=conv(c=8,k=3,s=2,bias=1);"
    "i1=id(x1);r1=relu(i1);"
    "x2=conv(r1,c=8,k=1);"
    "x3=hswish(x1);"
    "s3=add(x1,x2,x3);"
    "z=zero(s3);"
    "cat=concat(s3,z,x1);"
    "a4=add(z,s3);"
    "mp=maxpool(cat,k=2);"
    "resize(mp,s=7);"
    "conv(c=8,k=3,p=0,bias=1);sigmoid;relu6;"
    "g=gap;g2=gap(a4);cat2=concat(g,g2);linear(c=10,bias=0);bn";

/* A DAG where fixed offsets need more than the ideal allocator (found by a random search; on
 * 1x28x28 inputs the planner's arena is 10192 bytes against an ideal 9408): the anchor for
 * cost reporting the arena's figure and the export declaring it. */
static const char frag_spec[] =
    "t0=conv(input,c=2,k=1);t1=maxpool(t0,k=3,s=1,p=1);t2=relu(t1);t3=conv(t2,c=8,k=1);t4=maxpool(t2,k=3,s=1,p=1);"
    "t5=maxpool(t0,k=3,s=1,p=1);t6=conv(t4,c=5,k=1);t7=relu(t5);t8=concat(t2,t7);o=concat(t8,t4);gap(o);linear";

static const char nb201_a[] = "nb201:|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|";
static const char nb201_b[] = "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|";

static void test_arena(void) {
    printf("arena plans\n");
    arena_check("chain", "conv(c=8,k=3);bn;relu;conv(c=16,k=3,s=2);relu;maxpool(k=2);gap;linear", 16, 1, 16, 16, 1);
    arena_check("small", zoo_lookup("small"), 16, 1, 28, 28, 1);
    arena_check("resnet8", zoo_lookup("resnet8"), 16, 1, 28, 28, 1);
    arena_check("mbv2", zoo_lookup("mbv2"), 16, 1, 28, 28, 1);
    arena_check("nb201 a", nb201_a, 8, 1, 16, 16, 1);
    arena_check("nb201 b", nb201_b, 8, 1, 16, 16, 1);
    arena_check("nb201 none", "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 4, 1, 16, 16, 1);
    arena_check("custom a", custom_a, 16, 1, 28, 28, 0);
    arena_check("custom b", custom_b, 16, 3, 16, 16, 0);
    arena_check("fragmenting", frag_spec, 16, 1, 28, 28, 0);
    {
        Net net;
        if (build_net(&net, frag_spec, 16, 1, 28, 28, 10)) {
            CostReport r;
            cost_static(&net, NULL, &r);
            CHECK(r.arena_int8 > r.peak_int8 && cost_peak_bytes(&r, 1) == r.arena_int8 &&
                      cost_peak_bytes(&r, 4) == r.arena_fp32 && r.arena_fp32 > r.peak_fp32,
                  "fragmenting: arena %zu, ideal %zu, deployable %zu (the anchor case should fragment)", r.arena_int8,
                  r.peak_int8, cost_peak_bytes(&r, 1));
            cost_free(&r);
            net_free(&net);
        }
    }
    int more = 0, total = 0;
    for (int k = 0; k < 12; k++) {
        char *text = random_dag(8 + (int)rng_below(&rng, 12));
        char name[32];
        snprintf(name, sizeof name, "random dag %d", k);
        Net net;
        if (build_net(&net, text, 16, 8, 8, 8, 10)) {
            CostReport r;
            cost_static(&net, NULL, &r);
            more += r.arena_int8 > r.peak_int8;
            total++;
            cost_free(&r);
            net_free(&net);
            arena_check(name, text, 16, 8, 8, 8, 0);
        }
        free(text);
    }
    printf("  random DAGs: the arena exceeds the ideal on %d of %d\n", more, total);
}

/* ------------------------------------------------------------------ 2. generated C */
typedef struct {
    const char *name, *spec;
    int c, h, w, channels;
} NetCase;


static int have_gcc;

/* The driver: reads N, then N float inputs (and N int8 inputs for int8), writes per input the
 * scores, the class, and for int8 the int8 logits, predict_q's class and NAME_quantize's bytes. */
static void write_driver(const char *path, const char *name, int int8) {
    FILE *f = fopen(path, "w");
    NASC_ASSERT(f);
    char up[64];
    size_t k = 0;
    for (; name[k]; k++) up[k] = (char)(name[k] >= 'a' && name[k] <= 'z' ? name[k] - 32 : name[k]);
    up[k] = 0;
    fprintf(f,
            "#include <stdio.h>\n#include \"%s.h\"\n"
            "#define IN (%s_IN_C * %s_IN_H * %s_IN_W)\n"
            "static float x[IN], s[%s_CLASSES];\n",
            name, up, up, up, up);
    if (int8) fprintf(f, "static int8_t xq[IN], yq[%s_CLASSES], qq[IN];\n", up);
    fprintf(f,
            "int main(int argc, char **argv) {\n"
            "    FILE *in, *out;\n"
            "    int n, i;\n"
            "    if (argc != 3 || !(in = fopen(argv[1], \"rb\")) || !(out = fopen(argv[2], \"wb\"))) return 2;\n"
            "    if (fread(&n, sizeof n, 1, in) != 1) return 3;\n"
            "    for (i = 0; i < n; i++) {\n"
            "        int c;\n"
            "        if (fread(x, sizeof x, 1, in) != 1) return 4;\n"
            "        c = %s_predict(x, s);\n"
            "        fwrite(s, sizeof s, 1, out);\n"
            "        fwrite(&c, sizeof c, 1, out);\n",
            name);
    if (int8)
        fprintf(f,
                "        if (fread(xq, sizeof xq, 1, in) != 1) return 5;\n"
                "        c = %s_predict_q(xq, yq);\n"
                "        fwrite(yq, sizeof yq, 1, out);\n"
                "        fwrite(&c, sizeof c, 1, out);\n"
                "        %s_quantize(x, qq);\n"
                "        fwrite(qq, sizeof qq, 1, out);\n",
                name, name);
    fprintf(f, "    }\n    return fclose(out) != 0;\n}\n");
    fclose(f);
}

/* Compiles dir/drv.c with dir/NAME.c into dir/BIN (with extra flags); returns 1 on success (the
 * log is printed otherwise). */
static int compile_driver_as(const char *dir, const char *name, const char *bin, const char *flags, const char *what) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "gcc -std=c99 -Wall -Wextra -Werror -O2 %s -o %s/%s %s/drv.c %s/%s.c >%s/cc.log 2>&1", flags,
             dir, bin, dir, dir, name, dir);
    int st = system(cmd);
    if (st != 0) {
        char log[256];
        snprintf(log, sizeof log, "%s/cc.log", dir);
        size_t n;
        Err e;
        char *text = file_read_all(log, &n, &e);
        CHECK(0, "%s: the generated C does not compile cleanly:\n%.*s", what, text ? (int)NASC_MIN(n, 3000) : 0,
              text ? text : "");
        free(text);
        return 0;
    }
    return 1;
}

static int compile_driver(const char *dir, const char *name, const char *what) {
    return compile_driver_as(dir, name, "drv", "", what);
}

static void *read_exact(const char *path, size_t want, const char *what) {
    size_t n;
    Err e;
    void *d = file_read_all(path, &n, &e);
    CHECK(d && n == want, "%s: driver output %zu bytes, want %zu", what, d ? n : 0, want);
    if (d && n != want) {
        free(d);
        return NULL;
    }
    return d;
}

static int argmax_i8(const int8_t *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* Inputs: random normals, one scaled by 100 (saturation), one with NaN/inf and huge values,
 * and one made of exact rounding ties of the input quantization. */
static float *make_inputs(int ni, size_t in, float scale) {
    float *x = xmalloc((size_t)ni * in * sizeof *x);
    float inv = 1.0f / scale;
    for (int s = 0; s < ni; s++)
        for (size_t k = 0; k < in; k++) {
            float v = (float)rng_normal(&rng);
            if (s == 1) v *= 100.0f;
            if (s == 2 && k % 7 == 0) v = k % 21 == 0 ? NAN : k % 14 == 0 ? INFINITY : -3e30f;
            if (s == 3) {
                /* (j + 0.5) * scale whose product with inv is exactly j + 0.5 */
                for (int tries = 0; tries < 50; tries++) {
                    float j = (float)((int)rng_below(&rng, 60) - 30) + 0.5f, c = j * scale;
                    if (c * inv == j) {
                        v = c;
                        break;
                    }
                }
            }
            x[(size_t)s * in + k] = v;
        }
    return x;
}

static int ties_found(const float *x, size_t in, float scale) {
    float inv = 1.0f / scale;
    int t = 0;
    for (size_t k = 0; k < in; k++) {
        float r = x[k] * inv;
        t += r - (float)(int)r == 0.5f || r - (float)(int)r == -0.5f;
    }
    return t;
}

static void cgen_case(const char *name, const char *text, int channels, int c, int h, int w, int measure, int narrow) {
    Net net;
    if (!build_net(&net, text, channels, c, h, w, 10)) return;
    net_randomize(&net, rng_next(&rng), 1);
    size_t in = (size_t)c * h * w;
    int k = net.classes, ncal = 32, ni = 6;
    float *xc = xmalloc((size_t)ncal * in * sizeof *xc);
    for (size_t j = 0; j < (size_t)ncal * in; j++) xc[j] = (float)rng_normal(&rng);
    Err e;
    QNet q;
    if (quant_ptq(&q, &net, xc, ncal, NULL, &e) != NASC_OK) {
        CHECK(0, "%s: ptq: %s", name, e.msg);
        free(xc);
        net_free(&net);
        return;
    }
    char dir[128], path[256], mq[256], mf[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    for (char *p = dir + strlen(tmpdir) + 1; *p; p++)
        if (*p == ' ') *p = '_';
    snprintf(mq, sizeof mq, "%s.q8", dir);
    snprintf(mf, sizeof mf, "%s.mdl", dir);
    Norm norm = {.nchan = c};
    for (int j = 0; j < c; j++) norm.mean[j] = 0.25f + 0.125f * j, norm.std[j] = 0.5f;
    CHECK(qmodel_save(mq, &q, &norm, &e) == NASC_OK, "%s: save int8: %s", name, e.msg);
    CHECK(model_save(mf, &net, &norm, &e) == NASC_OK, "%s: save fp32: %s", name, e.msg);
    CostReport cr;
    cost_static(&net, NULL, &cr);

    /* int8 */
    float *x = make_inputs(ni, in, q.scale[0]);
    int ties = ties_found(x + 3 * in, in, q.scale[0]);
    setenv("NASC_CGEN_MEASURE", measure ? "1" : "0", 1);
    CgenReport rq, rf;
    char qdir[160], fdir[160];
    snprintf(qdir, sizeof qdir, "%s_q", dir);
    snprintf(fdir, sizeof fdir, "%s_f", dir);
    int okq = cgen_export(mq, qdir, "qnet", &rq, &e) == NASC_OK;
    CHECK(okq, "%s: int8 export: %s", name, e.msg);
    int okf = cgen_export(mf, fdir, "fnet", &rf, &e) == NASC_OK;
    CHECK(okf, "%s: fp32 export: %s", name, e.msg);
    CHECK(!okq || (rq.int8 && rq.arena_bytes == cost_peak_bytes(&cr, 1)), "%s: int8 arena %zu, cost model %zu", name,
          rq.arena_bytes, cost_peak_bytes(&cr, 1));
    CHECK(!okf || (!rf.int8 && rf.arena_bytes == cost_peak_bytes(&cr, 4)), "%s: fp32 arena %zu, cost model %zu", name,
          rf.arena_bytes, cost_peak_bytes(&cr, 4));
    if (okq) {
        /* the declaration in the file is that figure */
        snprintf(path, sizeof path, "%s/qnet.c", qdir);
        size_t n;
        char *src = file_read_all(path, &n, &e);
        char decl[64];
        snprintf(decl, sizeof decl, "static int8_t arena[%zu]", rq.arena_bytes);
        CHECK(src && strstr(src, decl), "%s: '%s' not in the generated C", name, decl);
        CHECK(src && !strstr(src, "malloc") && !strstr(src, "#include <"), "%s: the generated C includes or allocates",
              name);
        free(src);
    }
    if (measure && okq) {
        CHECK(rq.measured && rq.code_bytes > 0 && rq.rodata_bytes >= rq.weight_bytes && rq.ram_bytes >= rq.arena_bytes &&
                  rq.flash_bytes == rq.code_bytes + rq.rodata_bytes + (rq.ram_bytes - rq.sram_bytes) &&
                  rq.sram_bytes == rq.ram_bytes,
              "%s: measured sizes: measured %d, code %zu, rodata %zu (data %zu), RAM %zu (arena %zu)", name, rq.measured,
              rq.code_bytes, rq.rodata_bytes, rq.weight_bytes, rq.ram_bytes, rq.arena_bytes);
        printf("  (%s compiled with %s -O2: code %zu B, rodata %zu B, RAM %zu B)\n", name, rq.cc, rq.code_bytes,
               rq.rodata_bytes, rq.ram_bytes);
    }
    if (okq && have_gcc) {
        snprintf(path, sizeof path, "%s/drv.c", qdir);
        write_driver(path, "qnet", 1);
        int8_t *xq = xmalloc((size_t)ni * in);
        quantize_ref(xq, x, (size_t)ni * in, q.scale[0], q.zp[0]);
        char fin[256], fout[256];
        snprintf(fin, sizeof fin, "%s/in.bin", qdir);
        snprintf(fout, sizeof fout, "%s/out.bin", qdir);
        FILE *f = fopen(fin, "wb");
        NASC_ASSERT(f);
        fwrite(&ni, sizeof ni, 1, f);
        for (int s = 0; s < ni; s++) {
            fwrite(x + (size_t)s * in, sizeof *x, in, f);
            fwrite(xq + (size_t)s * in, 1, in, f);
        }
        fclose(f);
        if (compile_driver(qdir, "qnet", name)) {
            char cmd[1024];
            snprintf(cmd, sizeof cmd, "%s/drv %s %s", qdir, fin, fout);
            CHECK(system(cmd) == 0, "%s: the int8 driver failed", name);
            size_t rec = (size_t)k * 4 + 4 + (size_t)k + 4 + in;
            uint8_t *o = read_exact(fout, rec * ni, name);
            if (o) {
                float *ref = xmalloc((size_t)ni * k * sizeof *ref);
                int8_t *yref = xmalloc((size_t)ni * k);
                qnet_forward(&q, x, ni, ref);
                qnet_forward_int8(&q, xq, ni, yref, 1);
                int bad_s = 0, bad_q = 0, bad_c = 0, bad_in = 0;
                for (int s = 0; s < ni; s++) {
                    const uint8_t *r = o + rec * s;
                    float sc[64];
                    int8_t yq[64];
                    int c1, c2;
                    memcpy(sc, r, (size_t)k * 4);
                    memcpy(&c1, r + k * 4, 4);
                    memcpy(yq, r + k * 4 + 4, (size_t)k);
                    memcpy(&c2, r + k * 5 + 4, 4);
                    bad_s += memcmp(sc, ref + (size_t)s * k, (size_t)k * 4) != 0;
                    bad_q += memcmp(yq, yref + (size_t)s * k, (size_t)k) != 0;
                    bad_in += memcmp(r + k * 5 + 8, xq + (size_t)s * in, in) != 0;
                    int want = argmax_i8(yref + (size_t)s * k, k);
                    bad_c += c1 != want || c2 != want;
                }
                CHECK(bad_q == 0, "%s: predict_q differs from qnet_forward_int8 (reference) on %d of %d inputs", name,
                      bad_q, ni);
                CHECK(bad_s == 0, "%s: predict's scores differ from qnet_forward's on %d of %d inputs", name, bad_s, ni);
                CHECK(bad_c == 0, "%s: the returned class is not the arg-max on %d of %d inputs", name, bad_c, ni);
                CHECK(bad_in == 0, "%s: NAME_quantize differs from quantize_ref on %d of %d inputs", name, bad_in, ni);
                CHECK(ties > (int)in / 4, "%s: only %d exact rounding ties among %zu inputs", name, ties, in);
                /* Any conv block width gives the same bytes (3: blocks end past every row). */
                if (narrow && compile_driver_as(qdir, "qnet", "drv3", "-DQNET_CONV_BLK=3", name)) {
                    char out3[300];
                    snprintf(out3, sizeof out3, "%s/out3.bin", qdir);
                    snprintf(cmd, sizeof cmd, "%s/drv3 %s %s", qdir, fin, out3);
                    CHECK(system(cmd) == 0, "%s: the int8 driver (blocks of 3) failed", name);
                    uint8_t *o3 = read_exact(out3, rec * ni, name);
                    CHECK(o3 && !memcmp(o3, o, rec * ni), "%s: blocks of 3 columns give other outputs", name);
                    free(o3);
                    /* -ffast-math is refused by the generated file itself */
                    snprintf(cmd, sizeof cmd, "gcc -std=c99 -O2 -ffast-math -c -o %s/fm.o %s/qnet.c >%s/fm.log 2>&1", qdir,
                             qdir, qdir);
                    CHECK(system(cmd) != 0, "%s: the generated C compiled with -ffast-math", name);
                    snprintf(cmd, sizeof cmd, "grep -q 'compile it without -ffast-math' %s/fm.log", qdir);
                    CHECK(system(cmd) == 0, "%s: -ffast-math refused without the message", name);
                }
                free(ref);
                free(yref);
                free(o);
            }
        }
        free(xq);
    }

    /* fp32 */
    double worst = -1;
    if (okf && have_gcc) {
        snprintf(path, sizeof path, "%s/drv.c", fdir);
        write_driver(path, "fnet", 0);
        char fin[256], fout[256];
        snprintf(fin, sizeof fin, "%s/in.bin", fdir);
        snprintf(fout, sizeof fout, "%s/out.bin", fdir);
        int nf = 3; /* the finite inputs: random, random, x100 */
        float *xf = xmalloc((size_t)nf * in * sizeof *xf);
        memcpy(xf, x + 4 * in, in * sizeof *xf);
        memcpy(xf + in, x + 5 * in, in * sizeof *xf);
        memcpy(xf + 2 * in, x + in, in * sizeof *xf);
        FILE *f = fopen(fin, "wb");
        NASC_ASSERT(f);
        fwrite(&nf, sizeof nf, 1, f);
        fwrite(xf, sizeof *xf, (size_t)nf * in, f);
        fclose(f);
        if (compile_driver(fdir, "fnet", name)) {
            char cmd[1024];
            snprintf(cmd, sizeof cmd, "%s/drv %s %s", fdir, fin, fout);
            CHECK(system(cmd) == 0, "%s: the fp32 driver failed", name);
            size_t rec = (size_t)k * 4 + 4;
            uint8_t *o = read_exact(fout, rec * nf, name);
            if (o) {
                const float *ref = net_forward(&net, xf, nf, 0);
                worst = 0;
                for (int s = 0; s < nf; s++) {
                    float sc[64];
                    int cl;
                    memcpy(sc, o + rec * s, (size_t)k * 4);
                    memcpy(&cl, o + rec * s + k * 4, 4);
                    double big = 0;
                    int am = 0;
                    for (int j = 0; j < k; j++) {
                        big = fmax(big, fabs(ref[s * k + j]));
                        if (sc[j] > sc[am]) am = j;
                    }
                    for (int j = 0; j < k; j++) worst = fmax(worst, fabs(sc[j] - ref[s * k + j]) / fmax(big, 1e-30));
                    CHECK(cl == am, "%s: fp32 class %d, arg-max of its scores %d", name, cl, am);
                }
                CHECK(worst <= 1e-4, "%s: fp32 scores %.3g relative from net_forward's, want <= 1e-4", name, worst);
                free(o);
            }
        }
        free(xf);
    }
    printf("  %-14s int8: arena %6zu B (ideal %6zu), const data %7zu B, %3d kernel calls; fp32: arena %7zu B, "
           "max rel err %.2g\n",
           name, rq.arena_bytes, rq.ideal_bytes, rq.weight_bytes, rq.ops, rf.arena_bytes, worst);
    cost_free(&cr);
    free(x);
    free(xc);
    qnet_free(&q);
    net_free(&net);
}

static void test_bad_args(void) {
    Err e;
    CgenReport r;
    char p[128];
    snprintf(p, sizeof p, "%s/nothing.q8", tmpdir);
    CHECK(cgen_export(p, tmpdir, "ok", &r, &e) == NASC_ERR && strstr(e.msg, "cannot read"), "missing model: '%s'", e.msg);
    snprintf(p, sizeof p, "%s/junk.bin", tmpdir);
    FILE *f = fopen(p, "wb");
    fputs("not a model at all", f);
    fclose(f);
    CHECK(cgen_export(p, tmpdir, "ok", &r, &e) == NASC_ERR && strstr(e.msg, "neither"), "junk model: '%s'", e.msg);
    CHECK(cgen_export(p, tmpdir, "9lives", &r, &e) == NASC_ERR && strstr(e.msg, "C identifier"), "bad name: '%s'", e.msg);
    CHECK(cgen_export(p, tmpdir, "a-b", &r, &e) == NASC_ERR && strstr(e.msg, "C identifier"), "bad name: '%s'", e.msg);
    unlink(p);
}

static void test_generated(void) {
    printf("generated C\n");
    have_gcc = system("gcc --version >/dev/null 2>&1") == 0;
    if (!have_gcc) {
        const char *req = getenv("NASC_REQUIRE_CC");
        printf("  NOTE: gcc not found: exported but not compiled\n");
        CHECK(!req || strcmp(req, "1") != 0, "gcc is required (NASC_REQUIRE_CC=1)");
    }
    test_bad_args();
    cgen_case("small", zoo_lookup("small"), 16, 1, 28, 28, 1, 1);
    cgen_case("resnet8", zoo_lookup("resnet8"), 16, 1, 28, 28, 0, 0);
    cgen_case("mbv2", zoo_lookup("mbv2"), 16, 1, 16, 16, 0, 1);
    cgen_case("nb201 pool+none", nb201_a, 8, 1, 16, 16, 0, 0);
    cgen_case("nb201 convs", nb201_b, 8, 1, 16, 16, 0, 0);
    cgen_case("nb201 none", "nb201:|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|", 4, 1, 16, 16, 0, 0);
    cgen_case("custom a", custom_a, 16, 1, 28, 28, 0, 1);
    cgen_case("custom b", custom_b, 16, 3, 16, 16, 0, 0);
    cgen_case("fragmenting", frag_spec, 16, 1, 28, 28, 0, 0);
    Err e;
    Space *sp = space_open("macro:channels=8,16,24,strides=1,2,2,res=0,20,head=64,width=0.5,1.0", 0, 0, &e);
    CHECK(sp, "macro space: %s", sp ? "" : e.msg);
    if (sp) {
        Rng r;
        rng_seed(&r, 2024);
        for (int k = 0; k < 2; k++) {
            int m[SPACE_MAX_DIMS];
            space_sample(sp, &r, m);
            char *spec = sp->ops->to_spec(sp, m, &e);
            CHECK(spec, "macro member: %s", spec ? "" : e.msg);
            if (!spec) continue;
            char name[32];
            snprintf(name, sizeof name, "macro %d", k);
            char *arch = sp->ops->to_arch(sp, m);
            printf("  (%s: %s)\n", name, arch);
            free(arch);
            cgen_case(name, spec, 16, 1, 28, 28, 0, 0);
            free(spec);
        }
        space_free(sp);
    }
}

/* ------------------------------------------------------------------ tools for tests/cli_cgen.sh */
/* `--make DIR`: random-weight models of the zoo's small net and of frag_spec (fp32 and int8). */
static int make_models(const char *dir) {
    const char *names[2] = {"small", "frag"}, *specs[2] = {zoo_lookup("small"), frag_spec};
    Norm norm = {1, {0.2860f}, {0.3530f}};
    for (int k = 0; k < 2; k++) {
        Net net;
        if (!build_net(&net, specs[k], 16, 1, 28, 28, 10)) return 1;
        net_randomize(&net, 100 + (uint64_t)k, 1);
        float *x = xmalloc(32 * 784 * sizeof *x);
        for (int j = 0; j < 32 * 784; j++) x[j] = (float)rng_normal(&rng);
        Err e;
        QNet q;
        char p[512];
        int ok = quant_ptq(&q, &net, x, 32, NULL, &e) == NASC_OK;
        if (ok) {
            snprintf(p, sizeof p, "%s/%s.q8", dir, names[k]);
            ok = qmodel_save(p, &q, &norm, &e) == NASC_OK;
            qnet_free(&q);
        }
        snprintf(p, sizeof p, "%s/%s.mdl", dir, names[k]);
        ok = ok && model_save(p, &net, &norm, &e) == NASC_OK;
        free(x);
        net_free(&net);
        if (!ok) {
            fprintf(stderr, "test_cgen --make: %s\n", e.msg);
            return 1;
        }
    }
    printf("wrote %s/{small,frag}.{mdl,q8}\n", dir);
    return 0;
}

/* `--export MODEL DIR [NAME]`: cgen_export, then the report as "key value" lines. */
static int export_tool(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: test_cgen --export MODEL DIR [NAME]\n");
        return 2;
    }
    Err e;
    CgenReport r;
    if (cgen_export(argv[2], argv[3], argc > 4 ? argv[4] : NULL, &r, &e) != NASC_OK) {
        fprintf(stderr, "test_cgen --export: %s\n", e.msg);
        return 1;
    }
    printf("wrote %s and %s (%s)\n", r.c_path, r.h_path, r.int8 ? "int8" : "fp32");
    printf("arena_bytes %zu\nideal_bytes %zu\nweight_bytes %zu\nmeasured %d\ncode_bytes %zu\nrodata_bytes %zu\n"
           "flash_bytes %zu\nsram_bytes %zu\n",
           r.arena_bytes, r.ideal_bytes, r.weight_bytes, r.measured, r.code_bytes, r.rodata_bytes, r.flash_bytes,
           r.sram_bytes);
    return 0;
}

int main(int argc, char **argv) {
    rng_seed(&rng, 7);
    if (argc > 2 && !strcmp(argv[1], "--make")) return make_models(argv[2]);
    if (argc > 1 && !strcmp(argv[1], "--export")) return export_tool(argc, argv);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nasc_test_cgen_XXXXXX");
    NASC_ASSERT(mkdtemp(tmpdir));
    double t0 = now_seconds();
    test_arena();
    printf("  (%.2f s)\n", now_seconds() - t0);
    t0 = now_seconds();
    test_generated();
    printf("  (%.2f s)\n", now_seconds() - t0);
    int rc = check_summary("test_cgen");
    if (!rc) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        printf("files kept in %s\n", tmpdir);
    }
    return rc;
}
