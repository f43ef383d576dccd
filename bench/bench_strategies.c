/* bench_strategies.c: search strategies on a tabular benchmark (default: NAS-Bench-201).
 * Every strategy gets the same query budget over the same seeds; the table reports the mean
 * and standard deviation of the best full-fidelity accuracy found, as Markdown.
 *
 *   build/bench/bench_strategies ../shared/benchmarks/nb201-cifar10.csv [QUERIES=100] [SEEDS=30]
 *
 * Fidelity: full = 200 epochs (NB201's), BOHB's minimum 200/9 (three rungs with eta = 3). Each
 * lookup is one query at any fidelity (runner.h); "budget" is the mean number of full-training
 * equivalents spent, "full" the mean number of full-fidelity queries; the row "bohb (budget units)"
 * instead runs until QUERIES full-training equivalents are spent. Hyper-parameters are
 * strategy_defaults() except where a row says otherwise.
 */
#include <math.h>

#include "../src/search/runner.h"
#include "../src/search/strategy.h"
#include "../src/search/tabular.h"

typedef struct {
    const char *label, *name;
    int one_fidelity; /* bohb with min = max: BO over one fidelity */
    int by_budget;    /* stop at QUERIES full-training equivalents instead of QUERIES lookups */
} Row;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TABLE.csv [QUERIES=100] [SEEDS=30] [STRATEGY]\n", argv[0]);
        return 2;
    }
    int queries = argc > 2 ? atoi(argv[2]) : 100, seeds = argc > 3 ? atoi(argv[3]) : 30;
    const char *only = argc > 4 ? argv[4] : NULL;
    Err e = {{0}};
    Space *sp = space_open("nb201", 0, 0, &e);
    if (!sp) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    Tabular *t = tabular_load(argv[1], sp, &e);
    if (!t) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double top = 0;
    for (int i = 0; i < tabular_rows(t); i++) top = fmax(top, tabular_accuracy(t, i));
    const Row rows[] = {
        {"random", "random", 0, 0}, {"evolution", "evolution", 0, 0}, {"reinforce", "reinforce", 0, 0},
        {"bohb", "bohb", 0, 0},        {"bohb (budget units)", "bohb", 0, 1}, {"bohb (one fidelity)", "bohb", 1, 0},
        {"pnas", "pnas", 0, 0},
    };
    printf("%s: %d rows, optimum %.4f; %d queries, %d seeds\n\n", argv[1], tabular_rows(t), top, queries, seeds);
    printf("| strategy | mean best | std | optimum found | full-fidelity queries | budget (full trainings) |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (only && strcmp(only, rows[r].label) != 0 && strcmp(only, rows[r].name) != 0) continue;
        StrategyConfig cfg = strategy_defaults();
        cfg.max_fid.epochs = 200;
        cfg.min_fid.epochs = rows[r].one_fidelity ? 200 : 200.0 / 9.0;
        double sum = 0, sum2 = 0, full = 0, budget = 0;
        int hits = 0;
        for (int seed = 0; seed < seeds; seed++) {
            Strategy *s = strategy_new(rows[r].name, sp, &cfg, (uint64_t)seed + 1, &e);
            if (!s) {
                fprintf(stderr, "%s\n", e.msg);
                return 1;
            }
            SearchRunOptions o = {.queries = rows[r].by_budget ? 1000 * queries : queries};
            if (rows[r].by_budget) o.budget = queries;
            SearchRunStats st;
            if (search_run_tabular(s, t, &o, NULL, &st, &e) != NASC_OK) {
                fprintf(stderr, "%s\n", e.msg);
                return 1;
            }
            sum += st.best;
            sum2 += st.best * st.best;
            full += st.full_queries;
            budget += st.budget;
            hits += st.best >= top;
            strategy_free(s);
        }
        double mean = sum / seeds, sd = seeds > 1 ? sqrt(fmax(0, (sum2 - seeds * mean * mean) / (seeds - 1))) : 0;
        printf("| %s | %.4f | %.4f | %d/%d | %.1f | %.1f |\n", rows[r].label, mean, sd, hits, seeds, full / seeds,
               budget / seeds);
        fflush(stdout);
    }
    tabular_free(t);
    space_free(sp);
    return 0;
}
