/* test_neat_proxy.c: the `neat` and `proxy` search strategies (src/search/neat.c, proxy.c) on
 * a synthetic tabular NB201 benchmark (the same construction as test_strategies.c: accuracy
 * from a structured function of the canonical cell plus small deterministic noise, written to
 * a temporary CSV and loaded through tabular.c).
 *   - determinism: same seed, same trial sequence; replaying the tells reproduces the asks;
 *     asynchronous runs (several pending, ask == 0 at NEAT's generation boundaries) repeat;
 *   - neat beats random search on average over 12 seeds at 60 queries;
 *   - proxy with a score that correlates with the table's accuracy beats random at the same
 *     number of trained models; it trains exactly top_k, then finishes (-1); infeasible
 *     candidates are replaced by the next in the ranking;
 *   - proxy without a score callback fails with a message;
 *   - neat waits (ask == 0) for a whole generation, never asks a function twice, and runs on
 *     a macro space too.
 */
#include <math.h>
#include <unistd.h>

#include "../src/search/runner.h"
#include "../src/search/strategy.h"
#include "../src/search/tabular.h"
#include "check.h"
#include "trace.h"

static char tmpdir[256];

/* The synthetic accuracy of an NB201 cell (0 none, 1 skip, 2 conv1, 3 conv3, 4 pool). */
static double synth_acc(const Space *sp, const int *raw, Rng *noise) {
    int m[SPACE_MAX_DIMS];
    sp->ops->canonical(sp, raw, m);
    int conv3 = 0, conv1 = 0, all_none = 1;
    for (int d = 0; d < 6; d++) {
        conv3 += m[d] == 3;
        conv1 += m[d] == 2;
        all_none &= m[d] == 0;
    }
    if (all_none) return 0.1;
    double a = 0.55 + 0.045 * conv3 + 0.02 * conv1;
    if (m[0] == 3 && m[2] == 3 && m[5] == 3) a += 0.04;
    if (m[5] == 4) a -= 0.03;
    if (m[3] == 1) a += 0.01;
    a += 0.004 * rng_normal(noise);
    return fmin(1, fmax(0, a));
}

static char *make_synthetic(const Space *sp) {
    char *path = xmalloc(512);
    snprintf(path, 512, "%s/synthetic.csv", tmpdir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "arch,accuracy,params\n");
    Rng noise;
    rng_seed(&noise, 2024);
    int m[SPACE_MAX_DIMS];
    for (int i = 0; i < 15625; i++) {
        space_member_at(sp, i, m);
        char *a = sp->ops->to_arch(sp, m);
        int convs = 0;
        for (int d = 0; d < 6; d++) convs += (m[d] == 2) + 9 * (m[d] == 3);
        fprintf(f, "%s,%.6f,%d\n", a, synth_acc(sp, m, &noise), 1000 * convs);
        free(a);
    }
    fclose(f);
    return path;
}

/* ------------------------------------------------------------------ a synthetic proxy */
typedef struct {
    const Tabular *t;
    const Space *sp;
    double noise; /* std of the deterministic noise added to the accuracy */
    long calls;
} ProxyCtx;

/* The table's accuracy plus noise keyed by the canonical arch (deterministic). */
static double synth_proxy(void *ctx, const int *m) {
    ProxyCtx *c = ctx;
    c->calls++;
    TabularEntry x;
    Fidelity full = {27, 1};
    if (tabular_lookup(c->t, m, full, 27, &x) != NASC_OK) return NAN;
    char *a = space_canonical_arch(c->sp, m);
    Rng r;
    rng_seed(&r, crc32_update(0, a, strlen(a)));
    free(a);
    return x.accuracy + c->noise * rng_normal(&r);
}

static StrategyConfig test_cfg(ProxyCtx *pc) {
    StrategyConfig c = strategy_defaults();
    c.max_fid.epochs = 27;
    c.min_fid.epochs = 3;
    c.proxy_score = synth_proxy;
    c.proxy_ctx = pc;
    return c;
}

static double mean_best(const char *name, StrategyConfig cfg, const Space *sp, const Tabular *t, int queries,
                        int seeds) {
    double sum = 0;
    for (int seed = 0; seed < seeds; seed++) {
        Err e = {{0}};
        Strategy *s = strategy_new(name, sp, &cfg, 100 + seed, &e);
        CHECK(s != NULL, "strategy_new(%s): %s", name, e.msg);
        if (!s) return 0;
        SearchRunOptions o = {.queries = queries};
        SearchRunStats st;
        CHECK(search_run_tabular(s, t, &o, NULL, &st, &e) == NASC_OK, "%s: %s", name, e.msg);
        CHECK(st.queries == queries, "%s used %d queries of %d", name, st.queries, queries);
        sum += st.best;
        strategy_free(s);
    }
    return sum / seeds;
}

static void test_beats_random(const Space *sp, const Tabular *t, ProxyCtx *pc) {
    const int seeds = 12;
    StrategyConfig cfg = test_cfg(pc);
    double rnd = mean_best("random", cfg, sp, t, 60, seeds);
    double neat = mean_best("neat", cfg, sp, t, 60, seeds);
    printf("mean best accuracy, 60 queries, %d seeds: random %.4f, neat %.4f\n", seeds, rnd, neat);
    CHECK(neat > rnd, "neat (%.4f) does not beat random (%.4f)", neat, rnd);
    /* proxy: score 100 candidates, train the top 10; random trains 10 */
    cfg.top_k = 10;
    cfg.population = 100;
    double rnd10 = mean_best("random", cfg, sp, t, 10, seeds);
    pc->calls = 0;
    double px = mean_best("proxy", cfg, sp, t, 10, seeds);
    printf("mean best accuracy, 10 trained, %d seeds: random %.4f, proxy %.4f (%ld proxy calls)\n", seeds, rnd10, px,
           pc->calls);
    CHECK(px > rnd10, "proxy (%.4f) does not beat random (%.4f)", px, rnd10);
    CHECK(pc->calls == 100L * seeds, "proxy scored %ld candidates, want %d", pc->calls, 100 * seeds);
}

/* ------------------------------------------------------------------ determinism */

static TrialStatus answer(const Tabular *t, const Trial *tr, double limit, double *score) {
    TabularEntry x;
    *score = 0;
    if (tabular_lookup(t, tr->m, tr->fid, 27, &x) != NASC_OK) return TRIAL_FAILED;
    if (limit > 0 && x.params > limit) return TRIAL_INFEASIBLE;
    *score = x.accuracy;
    return TRIAL_OK;
}

/* Up to `depth` pending, told oldest first (a tell is recorded with id = -1 - told id).
 * Returns the number of asks; counts ask == 0 answers in *waits. */
static int run_async(Strategy *s, const Tabular *t, int total, int depth, double limit, Trace *x, int *waits) {
    Trial pending[16];
    int np = 0, asked = 0;
    *waits = 0;
    while (asked < total || np > 0) {
        int rc = asked < total && np < depth ? s->ops->ask(s, &pending[np]) : 0;
        if (rc < 0) break;
        if (rc == 1) {
            trace_push(x, &pending[np], TRIAL_OK, 0);
            np++;
            asked++;
            continue;
        }
        if (asked < total && np < depth) ++*waits;
        CHECK(np > 0, "%s asked nothing with nothing pending", s->ops->name);
        if (np == 0) break;
        double score;
        TrialStatus st = answer(t, &pending[0], limit, &score);
        s->ops->tell(s, &pending[0], st, score);
        Trial told = pending[0];
        told.id = -1 - told.id;
        trace_push(x, &told, st, score);
        memmove(pending, pending + 1, (size_t)(np - 1) * sizeof *pending);
        np--;
    }
    return asked;
}

static void test_determinism(const Space *sp, const Tabular *t, ProxyCtx *pc) {
    const char *names[2] = {"neat", "proxy"};
    StrategyConfig cfg = test_cfg(pc);
    cfg.population = 12;
    cfg.top_k = 30; /* proxy: 300 candidates, 30 trained */
    for (int i = 0; i < 2; i++) {
        Err e = {{0}};
        Trace a = {0}, b = {0};
        for (int rep = 0; rep < 2; rep++) {
            Strategy *s = strategy_new(names[i], sp, &cfg, 7, &e);
            CHECK(s != NULL, "%s: %s", names[i], e.msg);
            if (!s) return;
            SearchRunOptions o = {.queries = 80, .on_trial = on_trial, .ctx = rep ? &b : &a};
            SearchRunStats st;
            CHECK(search_run_tabular(s, t, &o, NULL, &st, &e) == NASC_OK, "%s", e.msg);
            strategy_free(s);
        }
        int same = a.n == b.n && a.n > 0;
        for (int k = 0; same && k < a.n; k++) same = same_trial(sp, &a.tr[k], &b.tr[k]) && a.score[k] == b.score[k];
        CHECK(same, "%s: the same seed gave different trial sequences", names[i]);
        /* replay by hand */
        Strategy *s = strategy_new(names[i], sp, &cfg, 7, &e);
        int ok = 1;
        for (int k = 0; k < a.n && ok; k++) {
            Trial tr;
            ok = s->ops->ask(s, &tr) == 1 && same_trial(sp, &tr, &a.tr[k]);
            if (ok) s->ops->tell(s, &tr, a.st[k], a.score[k]);
        }
        CHECK(ok, "%s: replaying the tells did not reproduce the asks", names[i]);
        strategy_free(s);
        /* another seed, another sequence */
        Trace c = {0};
        Strategy *s2 = strategy_new(names[i], sp, &cfg, 8, &e);
        SearchRunOptions o = {.queries = 80, .on_trial = on_trial, .ctx = &c};
        SearchRunStats st;
        search_run_tabular(s2, t, &o, NULL, &st, &e);
        int differ = c.n != a.n;
        for (int k = 0; !differ && k < a.n; k++) differ = !same_trial(sp, &a.tr[k], &c.tr[k]);
        CHECK(differ, "%s: seeds 7 and 8 gave the same sequence", names[i]);
        strategy_free(s2);
        trace_free(&a);
        trace_free(&b);
        trace_free(&c);
        /* asynchronous, with infeasible members: same seed, same interleaving */
        Trace x = {0}, y = {0};
        int wx, wy;
        for (int rep = 0; rep < 2; rep++) {
            Strategy *s3 = strategy_new(names[i], sp, &cfg, 11, &e);
            run_async(s3, t, 100, 4, 30000, rep ? &y : &x, rep ? &wy : &wx);
            strategy_free(s3);
        }
        same = x.n == y.n && x.n > 0 && wx == wy;
        for (int k = 0; same && k < x.n; k++) same = same_trial(sp, &x.tr[k], &y.tr[k]) && x.st[k] == y.st[k];
        CHECK(same, "%s: asynchronous runs with the same seed differ", names[i]);
        if (i == 0) CHECK(wx > 0, "neat never waited for a generation");
        trace_free(&x);
        trace_free(&y);
    }
}

/* ------------------------------------------------------------------ neat specifics */
static void test_neat_generations(const Space *sp, const Tabular *t, ProxyCtx *pc) {
    StrategyConfig cfg = test_cfg(pc);
    cfg.population = 8;
    Err e = {{0}};
    Strategy *s = strategy_new("neat", sp, &cfg, 5, &e);
    CHECK(s != NULL, "neat: %s", e.msg);
    if (!s) return;
    Trial gen[8], extra;
    for (int i = 0; i < 8; i++) CHECK(s->ops->ask(s, &gen[i]) == 1, "neat: first generation ask %d", i);
    CHECK(s->ops->ask(s, &extra) == 0, "neat: should wait for the first generation");
    for (int i = 7; i >= 1; i--) { /* out of order; one left pending */
        double sc;
        TrialStatus st = answer(t, &gen[i], 0, &sc);
        s->ops->tell(s, &gen[i], i == 3 ? TRIAL_FAILED : st, sc);
    }
    CHECK(s->ops->ask(s, &extra) == 0, "neat: should wait for the last member of the generation");
    double sc;
    TrialStatus st = answer(t, &gen[0], 0, &sc);
    s->ops->tell(s, &gen[0], st, sc);
    CHECK(s->ops->ask(s, &extra) == 1 && extra.id == 8, "neat: second generation");
    strategy_free(s);

    /* 400 queries: no function twice */
    s = strategy_new("neat", sp, &cfg, 9, &e);
    Trace x = {0};
    SearchRunOptions o = {.queries = 400, .on_trial = on_trial, .ctx = &x};
    SearchRunStats rs;
    CHECK(search_run_tabular(s, t, &o, NULL, &rs, &e) == NASC_OK, "neat: %s", e.msg);
    int dups = 0;
    char **keys = xmalloc((size_t)x.n * sizeof *keys);
    for (int k = 0; k < x.n; k++) {
        keys[k] = space_canonical_arch(sp, x.tr[k].m);
        for (int j = 0; j < k; j++) dups += strcmp(keys[j], keys[k]) == 0;
    }
    CHECK(dups == 0 && x.n == 400, "neat: %d repeated functions in %d trials", dups, x.n);
    for (int k = 0; k < x.n; k++) free(keys[k]);
    free(keys);
    trace_free(&x);
    strategy_free(s);
}

/* neat on a macro space, fitness = a made-up function preferring depth and kernel 5 */
static void test_neat_macro(void) {
    Err e = {{0}};
    Space *sp = space_open("macro:channels=8,16,strides=1,2,depth=1,2,3,kernel=3,5,expand=1,3,se=0,1,res=0,width=1.0",
                           0, 0, &e);
    CHECK(sp != NULL, "macro space: %s", e.msg);
    if (!sp) return;
    StrategyConfig cfg = strategy_defaults();
    cfg.population = 10;
    Strategy *s = strategy_new("neat", sp, &cfg, 3, &e);
    double best = 0;
    int n = 0;
    Trial tr;
    while (n < 60 && s->ops->ask(s, &tr) == 1) {
        int act[SPACE_MAX_DIMS];
        sp->ops->active(sp, tr.m, act);
        double f = 0.3;
        for (int d = 0; d < sp->ndims; d++)
            if (act[d] && strstr(sp->dim_name[d], "kernel")) f += 0.05 * tr.m[d];
        for (int d = 0; d < sp->ndims; d++)
            if (strstr(sp->dim_name[d], "depth")) f += 0.04 * tr.m[d];
        s->ops->tell(s, &tr, TRIAL_OK, f);
        best = fmax(best, f);
        n++;
    }
    CHECK(n == 60, "neat on a macro space stopped after %d trials", n);
    CHECK(best > 0.5, "neat on a macro space: best %.3f", best);
    strategy_free(s);
    space_free(sp);
}

/* ------------------------------------------------------------------ proxy specifics */
static void test_proxy_budget(const Space *sp, const Tabular *t, ProxyCtx *pc) {
    StrategyConfig cfg = test_cfg(pc);
    cfg.top_k = 5;
    cfg.population = 40;
    Err e = {{0}};
    Strategy *s = strategy_new("proxy", sp, &cfg, 2, &e);
    CHECK(s != NULL, "proxy: %s", e.msg);
    if (!s) return;
    pc->calls = 0;
    Trial tr[5], extra;
    double prev = INFINITY;
    for (int i = 0; i < 5; i++) {
        CHECK(s->ops->ask(s, &tr[i]) == 1, "proxy: ask %d", i);
        double p = synth_proxy(pc, tr[i].m);
        CHECK(p <= prev, "proxy: asks not in rank order (%g after %g)", p, prev);
        prev = p;
        CHECK(tr[i].fid.epochs == 27, "proxy: not at full fidelity");
    }
    CHECK(pc->calls == 40 + 5, "proxy: %ld proxy calls, want 40 (+5 by the test)", pc->calls);
    CHECK(s->ops->ask(s, &extra) == 0, "proxy: should wait with top_k pending");
    for (int i = 0; i < 4; i++) s->ops->tell(s, &tr[i], TRIAL_OK, 0.9);
    s->ops->tell(s, &tr[4], TRIAL_INFEASIBLE, 0);
    CHECK(s->ops->ask(s, &extra) == 1, "proxy: an infeasible candidate is replaced");
    s->ops->tell(s, &extra, TRIAL_OK, 0.8);
    CHECK(s->ops->ask(s, &extra) == -1, "proxy: should finish after top_k results");
    strategy_free(s);

    cfg.proxy_score = NULL;
    s = strategy_new("proxy", sp, &cfg, 2, &e);
    CHECK(s == NULL && strstr(e.msg, "proxy_score"), "proxy without a score callback: %s", e.msg);
    strategy_free(s);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nasc_test_neat_proxy_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Err e = {{0}};
    Space *sp = space_open("nb201", 0, 0, &e);
    if (!sp) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    char *path = make_synthetic(sp);
    Tabular *t = tabular_load(path, sp, &e);
    CHECK(t != NULL, "synthetic table: %s", e.msg);
    if (t) {
        ProxyCtx pc = {.t = t, .sp = sp, .noise = 0.02};
        test_beats_random(sp, t, &pc);
        test_determinism(sp, t, &pc);
        test_neat_generations(sp, t, &pc);
        test_proxy_budget(sp, t, &pc);
    }
    test_neat_macro();
    tabular_free(t);
    space_free(sp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    free(path);
    return check_summary("test_neat_proxy");
}
