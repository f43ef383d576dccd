/* test_strategies.c: search strategies (src/search) on a synthetic tabular benchmark over the
 * NB201 space, and the tabular CSV loader.
 *   - the benchmark: every NB201 cell gets an accuracy from a structured function (more conv
 *     edges on live paths are better, 3x3 more than 1x1, a bonus for a conv path through all
 *     nodes, a penalty for pooling into the output, small deterministic noise), written to a
 *     temporary CSV and loaded through tabular.c;
 *   - each strategy's mean best accuracy over 12 seeds beats random search's at the same budget;
 *   - determinism: same seed, same trial sequence; replaying the recorded tells reproduces the
 *     asks, also with several trials pending (asynchronous interleaving);
 *   - no (canonical member, fidelity) pair is asked twice; infeasible trials are handled;
 *   - BOHB uses several fidelities and waits (ask == 0) on a synchronous rung;
 *   - CSV dialect (quotes, CRLF, BOM, extra columns), canonical and accuracy@E lookups, and
 *     error messages naming line and column.
 */
#include <math.h>
#include <unistd.h>

#include "../src/search/runner.h"
#include "../src/search/strategy.h"
#include "../src/search/tabular.h"
#include "check.h"
#include "trace.h"

static const char *names[] = {"random", "evolution", "reinforce", "bohb", "pnas"};
#define N_NAMES 5

static char tmpdir[256];

static char *write_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* The synthetic accuracy of an NB201 cell (decision values: 0 none, 1 skip, 2 conv1, 3 conv3, 4 pool). */
static double synth_acc(const Space *sp, const int *raw, Rng *noise) {
    int m[SPACE_MAX_DIMS];
    sp->ops->canonical(sp, raw, m); /* dead edges do not count */
    double a = 0.55;
    int conv3 = 0, conv1 = 0;
    for (int d = 0; d < 6; d++) {
        conv3 += m[d] == 3;
        conv1 += m[d] == 2;
    }
    int all_none = 1;
    for (int d = 0; d < 6; d++) all_none &= m[d] == 0;
    if (all_none) return 0.1;
    a += 0.045 * conv3 + 0.02 * conv1;
    if (m[0] == 3 && m[2] == 3 && m[5] == 3) a += 0.04; /* a deep conv path 0->1->2->3 */
    if (m[5] == 4) a -= 0.03;                          /* pooling into the output */
    if (m[3] == 1) a += 0.01;                          /* a residual input->output skip */
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
    fprintf(f, "arch,accuracy,params,comment\n");
    Rng noise;
    rng_seed(&noise, 2024);
    int m[SPACE_MAX_DIMS];
    for (int i = 0; i < 15625; i++) {
        space_member_at(sp, i, m);
        char *a = sp->ops->to_arch(sp, m);
        int convs = 0;
        for (int d = 0; d < 6; d++) convs += (m[d] == 2) + 9 * (m[d] == 3);
        fprintf(f, "%s,%.6f,%d,\"row %d, synthetic\"\n", a, synth_acc(sp, m, &noise), 1000 * convs, i);
        free(a);
    }
    fclose(f);
    return path;
}

static StrategyConfig test_cfg(void) {
    StrategyConfig c = strategy_defaults();
    c.max_fid.epochs = 27;
    c.min_fid.epochs = 3;
    return c;
}

/* ------------------------------------------------------------------ strategy vs random */
static double mean_best(const char *name, const Space *sp, const Tabular *t, int queries, int seeds) {
    StrategyConfig cfg = test_cfg();
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

static void test_beats_random(const Space *sp, const Tabular *t) {
    const int queries = 60, seeds = 12;
    double rnd = mean_best("random", sp, t, queries, seeds);
    printf("mean best accuracy, %d queries, %d seeds: random %.4f", queries, seeds, rnd);
    for (int i = 1; i < N_NAMES; i++) {
        double b = mean_best(names[i], sp, t, queries, seeds);
        printf(", %s %.4f", names[i], b);
        CHECK(b > rnd, "%s (%.4f) does not beat random (%.4f)", names[i], b, rnd);
    }
    printf("\n");
}

/* ------------------------------------------------------------------ determinism, duplicates */

/* Answer a trial from the table; members with params above `limit` are infeasible. */
static TrialStatus answer(const Tabular *t, const Strategy *s, const Trial *tr, double limit, double *score) {
    TabularEntry x;
    *score = 0;
    if (tabular_lookup(t, tr->m, tr->fid, s->cfg.max_fid.epochs, &x) != NASC_OK) return TRIAL_FAILED;
    if (limit > 0 && x.params > limit) return TRIAL_INFEASIBLE;
    *score = x.accuracy;
    return TRIAL_OK;
}

/* Ask up to `depth` trials ahead before telling the oldest (depth 1: synchronous). Records asks
 * and tells in order into x (a tell is recorded with id = -1 - told id). */
static void run_async(Strategy *s, const Tabular *t, int total, int depth, double limit, Trace *x) {
    Trial pending[16];
    int np = 0, asked = 0;
    while (asked < total || np > 0) {
        int rc = asked < total && np < depth ? s->ops->ask(s, &pending[np]) : 0;
        CHECK(rc >= 0, "%s finished early", s->ops->name);
        if (rc < 0) return;
        if (rc == 1) {
            trace_push(x, &pending[np], TRIAL_OK, 0);
            np++;
            asked++;
            continue;
        }
        CHECK(np > 0, "%s asked nothing with nothing pending", s->ops->name);
        if (np == 0) return;
        double score;
        TrialStatus st = answer(t, s, &pending[0], limit, &score);
        s->ops->tell(s, &pending[0], st, score);
        Trial told = pending[0];
        told.id = -1 - told.id;
        trace_push(x, &told, st, score);
        memmove(pending, pending + 1, (size_t)(np - 1) * sizeof *pending);
        np--;
    }
}

static void test_determinism(const Space *sp, const Tabular *t) {
    StrategyConfig cfg = test_cfg();
    for (int i = 0; i < N_NAMES; i++) {
        Err e = {{0}};
        /* same seed, same sequence (synchronous runner) */
        Trace a = {0}, b = {0};
        for (int rep = 0; rep < 2; rep++) {
            Strategy *s = strategy_new(names[i], sp, &cfg, 7, &e);
            SearchRunOptions o = {.queries = 80, .on_trial = on_trial, .ctx = rep ? &b : &a};
            SearchRunStats st;
            CHECK(search_run_tabular(s, t, &o, NULL, &st, &e) == NASC_OK, "%s", e.msg);
            strategy_free(s);
        }
        int same = a.n == b.n;
        for (int k = 0; same && k < a.n; k++) same = same_trial(sp, &a.tr[k], &b.tr[k]) && a.score[k] == b.score[k];
        CHECK(same, "%s: the same seed gave different trial sequences", names[i]);
        /* replay the recorded tells by hand: the asks come back identical */
        Strategy *s = strategy_new(names[i], sp, &cfg, 7, &e);
        int ok = 1;
        for (int k = 0; k < a.n && ok; k++) {
            Trial tr;
            ok = s->ops->ask(s, &tr) == 1 && same_trial(sp, &tr, &a.tr[k]);
            if (ok) s->ops->tell(s, &tr, a.st[k], a.score[k]);
        }
        CHECK(ok, "%s: replaying the tells did not reproduce the asks", names[i]);
        strategy_free(s);
        /* a different seed gives a different sequence */
        Strategy *s2 = strategy_new(names[i], sp, &cfg, 8, &e);
        Trace c = {0};
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

        /* asynchronous: up to 4 pending, with infeasible members; same seed, same interleaving */
        Trace x = {0}, y = {0};
        for (int rep = 0; rep < 2; rep++) {
            Strategy *s3 = strategy_new(names[i], sp, &cfg, 11, &e);
            run_async(s3, t, 120, 4, 30000, rep ? &y : &x);
            strategy_free(s3);
        }
        same = x.n == y.n;
        for (int k = 0; same && k < x.n; k++) same = same_trial(sp, &x.tr[k], &y.tr[k]) && x.st[k] == y.st[k];
        CHECK(same && x.n > 0, "%s: asynchronous runs with the same seed differ", names[i]);
        trace_free(&x);
        trace_free(&y);
    }
}

static void test_no_duplicates(const Space *sp, const Tabular *t) {
    StrategyConfig cfg = test_cfg();
    for (int i = 0; i < N_NAMES; i++) {
        Err e = {{0}};
        Strategy *s = strategy_new(names[i], sp, &cfg, 3, &e);
        Trace x = {0};
        SearchRunOptions o = {.queries = 300, .max_params = 20000, .on_trial = on_trial, .ctx = &x};
        SearchRunStats st;
        CHECK(search_run_tabular(s, t, &o, NULL, &st, &e) == NASC_OK, "%s: %s", names[i], e.msg);
        CHECK(st.infeasible > 0, "%s: the params limit made nothing infeasible", names[i]);
        CHECK(st.best > 0, "%s: no best", names[i]);
        TabularEntry be;
        tabular_lookup(t, st.best_m, cfg.max_fid, cfg.max_fid.epochs, &be);
        CHECK(be.params <= 20000, "%s: the best member is infeasible (%g params)", names[i], be.params);
        /* every (canonical, fidelity) once; every canonical once for strategies at full fidelity */
        char **keys = xmalloc((size_t)x.n * sizeof *keys);
        int dups = 0, fids = 0;
        for (int k = 0; k < x.n; k++) {
            int c[SPACE_MAX_DIMS];
            sp->ops->canonical(sp, x.tr[k].m, c);
            char *a = sp->ops->to_arch(sp, c);
            keys[k] = xmalloc(strlen(a) + 64);
            snprintf(keys[k], strlen(a) + 64, "%s@%g", a, x.tr[k].fid.epochs);
            free(a);
            for (int j = 0; j < k; j++) dups += strcmp(keys[j], keys[k]) == 0;
            fids |= x.tr[k].fid.epochs < cfg.max_fid.epochs;
        }
        CHECK(dups == 0, "%s: %d repeated (canonical member, fidelity) pairs in %d trials", names[i], dups, x.n);
        CHECK(fids == (strcmp(names[i], "bohb") == 0), "%s: %s low-fidelity trials", names[i],
              fids ? "has" : "has no");
        for (int k = 0; k < x.n; k++) free(keys[k]);
        free(keys);
        trace_free(&x);
        strategy_free(s);
    }
}

/* BOHB: a synchronous rung makes ask return 0; budgets are 3, 9, 27 epochs. */
static void test_bohb_rungs(const Space *sp) {
    StrategyConfig cfg = test_cfg();
    Err e = {{0}};
    Strategy *s = strategy_new("bohb", sp, &cfg, 1, &e);
    Trial tr[9], extra;
    for (int i = 0; i < 9; i++) {
        CHECK(s->ops->ask(s, &tr[i]) == 1, "bohb: first rung ask %d", i);
        CHECK(tr[i].fid.epochs == 3, "bohb: first rung at %g epochs, want 3", tr[i].fid.epochs);
    }
    CHECK(s->ops->ask(s, &extra) == 0, "bohb: ask should wait for the first rung");
    for (int i = 0; i < 9; i++) s->ops->tell(s, &tr[i], i == 4 ? TRIAL_FAILED : TRIAL_OK, 0.5 + 0.01 * i);
    for (int i = 0; i < 3; i++) {
        CHECK(s->ops->ask(s, &extra) == 1 && extra.fid.epochs == 9, "bohb: promotion %d", i);
        /* the best three of the first rung: scores 0.58, 0.57, 0.56 (trials 8, 7, 6) */
        CHECK(memcmp(extra.m, tr[8 - i].m, 6 * sizeof(int)) == 0, "bohb: promoted the wrong member");
    }
    strategy_free(s);
}

/* ------------------------------------------------------------------ CSV */
static void expect_error(const Space *sp, const char *name, const char *text, const char *want1, const char *want2) {
    Err e = {{0}};
    char *path = write_file(name, text);
    Tabular *t = tabular_load(path, sp, &e);
    CHECK(t == NULL, "%s: loaded a bad table", name);
    CHECK(strstr(e.msg, want1) && (!want2 || strstr(e.msg, want2)), "%s: message '%s' lacks '%s' / '%s'", name,
          e.msg, want1, want2 ? want2 : "");
    tabular_free(t);
}

#define A1 "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
#define A2 "nb201:|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
/* A3 and A3b: node 1 and node 2 swapped with edge 1->2 none: the same function */
#define A3 "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_1x1~2|"
#define A3b "nb201:|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"

static void test_csv(const Space *sp) {
    Err e = {{0}};
    int m[SPACE_MAX_DIMS];
    Fidelity full = {200, 1}, low = {20, 1}, mid = {60, 1};
    /* dialect: BOM, CRLF, quoted fields (with commas, quotes, a newline), extra columns, blank line */
    char *path = write_file("ok.csv", "\xEF\xBB\xBF" "note,arch,accuracy,accuracy@12,accuracy@50,params\r\n"
                                      "\"a, \"\"quoted\"\"\nnote\"," A1 ",0.9366,0.5,0.8,1000\r\n"
                                      "\r\n"
                                      "x,\"" A2 "\", 0.8586 ,,,\r\n"
                                      "y," A3 ",0.7,0.3,0.6,\n");
    Tabular *t = tabular_load(path, sp, &e);
    CHECK(t != NULL, "ok.csv: %s", e.msg);
    if (t) {
        TabularEntry x;
        CHECK(tabular_rows(t) == 3, "ok.csv: %d rows", tabular_rows(t));
        sp->ops->from_arch(sp, A1, m, &e);
        CHECK(tabular_lookup(t, m, full, 200, &x) == NASC_OK && x.accuracy == 0.9366 && x.params == 1000 && x.row == 0,
              "A1 lookup");
        CHECK(tabular_lookup(t, m, low, 200, &x) == NASC_OK && x.accuracy == 0.5, "A1 at 20 epochs: %g", x.accuracy);
        CHECK(tabular_lookup(t, m, mid, 200, &x) == NASC_OK && x.accuracy == 0.8, "A1 at 60 epochs: %g", x.accuracy);
        sp->ops->from_arch(sp, A2, m, &e);
        CHECK(tabular_lookup(t, m, low, 200, &x) == NASC_OK && x.accuracy == 0.8586 && isnan(x.params),
              "A2 at 20 epochs (empty accuracy@E cell): %g", x.accuracy);
        sp->ops->from_arch(sp, A3b, m, &e); /* not in the table; its canonical class is */
        CHECK(tabular_lookup(t, m, full, 200, &x) == NASC_OK && x.accuracy == 0.7 && x.row == -1,
              "A3b by canonical class");
        int z[SPACE_MAX_DIMS] = {0};
        z[3] = 3; /* a lone 0->3 conv: not in the table */
        CHECK(tabular_lookup(t, z, full, 200, &x) == NASC_ERR, "missing member found");
        tabular_free(t);
    }
    expect_error(sp, "nohdr.csv", "arch,acc\n" A1 ",0.5\n", "line 1", "accuracy");
    expect_error(sp, "noarch.csv", "name,accuracy\n" A1 ",0.5\n", "line 1", "'arch'");
    expect_error(sp, "nan.csv", "arch,accuracy\n" A1 ",0.5\n" A2 ",abc\n", "line 3, column 2", "not a number");
    expect_error(sp, "range.csv", "arch,accuracy\n" A1 ",93.6\n", "line 2, column 2", "outside [0, 1]");
    expect_error(sp, "dup.csv", "arch,accuracy\n" A1 ",0.5\n" A2 ",0.6\n" A1 ",0.7\n", "line 4, column 1",
                 "first on line 2");
    expect_error(sp, "cols.csv", "arch,accuracy,params\n" A1 ",0.5,1\n" A2 ",0.6\n", "line 3", "2 fields");
    expect_error(sp, "empty_arch.csv", "accuracy,arch\n0.5," A1 "\n0.6,\n", "line 3, column 2", "missing");
    expect_error(sp, "bad_arch.csv", "arch,accuracy\nnb201:|conv~0|+|x|,0.5\n", "line 2, column 1", "unknown operation");
    expect_error(sp, "quote.csv", "arch,accuracy\n\"" A1 ",0.5\n", "line 2", "not closed");
    expect_error(sp, "no_acc.csv", "arch,accuracy\n" A1 ",\n", "line 2, column 2", "missing");
    expect_error(sp, "neg.csv", "arch,accuracy,params\n" A1 ",0.5,-3\n", "line 2, column 3", "negative");
    expect_error(sp, "header_only.csv", "arch,accuracy\n", "no data rows", NULL);
}

static void test_errors(const Space *sp) {
    Err e = {{0}};
    StrategyConfig c = strategy_defaults();
    CHECK(strategy_new("nope", sp, &c, 1, &e) == NULL && strstr(e.msg, "random, evolution"), "unknown name: %s",
          e.msg);
    c.sample_size = c.population + 1;
    CHECK(strategy_new("evolution", sp, &c, 1, &e) == NULL && strstr(e.msg, "sample size"), "sample > population");
    c = strategy_defaults();
    c.min_fid.epochs = c.max_fid.epochs * 2;
    CHECK(strategy_new("bohb", sp, &c, 1, &e) == NULL && strstr(e.msg, "exceeds"), "min > max fidelity");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nasc_test_strategies_XXXXXX");
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
        CHECK(tabular_rows(t) == 15625, "synthetic rows %d", tabular_rows(t));
        test_beats_random(sp, t);
        test_determinism(sp, t);
        test_no_duplicates(sp, t);
    }
    test_bohb_rungs(sp);
    test_csv(sp);
    test_errors(sp);
    tabular_free(t);
    space_free(sp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    free(path);
    return check_summary("test_strategies");
}
