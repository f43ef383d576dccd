/* cmd_search.c: `nasc search`: multi-trial architecture search under hard constraints, every
 * trial recorded in an SQLite trial database; --resume continues a killed search. Prints the
 * recommended architecture (best score: the accuracy, or MnasNet's latency-aware reward with
 * --objective mnas) and the Pareto front (accuracy vs params and MACs). Built with MPI=1 and
 * run under mpirun, rank 0 prints the results (with trials per rank); workers print nothing. */
#include <errno.h>
#include <math.h>

#include "../search/driver.h"
#include "cli.h"

static const char usage[] =
    "usage: nasc search [--space nb201|macro|FILE] [--strategy NAME] [--trials K | --minutes M]\n"
    "                   [--max-params P] [--max-macs M] [--max-latency-ms L] [--max-peak-kb S] [--max-flash-kb F]\n"
    "                   [--target NAME] [--epochs E] [--subset N] [--val N] [--seed S] [--db FILE] [--resume]\n"
    "                   [--benchmark FILE.csv] [--data NAME] [--worker-timeout S] [--json]\n"
    "                   [--objective acc|mnas|mnas-hard] [--latency-target MS] [--mnas-w W]\n"
    "MPI build: mpirun --enable-recovery -np N build-mpi/nasc search ... (rank 0 coordinates, ranks 1.. train)";

static void print_point(const char *label, const SearchPoint *p, int mnas) {
    char extra[96] = "";
    if (mnas) snprintf(extra, sizeof extra, "  latency %.4g ms  score %.4f", p->latency_ms, p->score);
    printf("%-6s val_acc %.4f  params %lld  macs %lld  peak %lld B  flash %lld B%s  %s\n", label, p->val_acc, p->params,
           p->macs, p->peak_bytes, p->flash_bytes, extra, p->arch);
}

/* A number flag kept as typed (settings store it as text); NASC_ERR with a message. */
static int parse_number(const char *flag, const char *text, double *out) {
    if (!text) return NASC_OK;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v)) {
        fprintf(stderr, "nasc search: --%s needs a number, got '%s'\n", flag, text);
        return NASC_ERR;
    }
    *out = v;
    return NASC_OK;
}

static void json_point(FILE *f, const SearchPoint *p) {
    Json j;
    json_begin(&j, f);
    json_str(&j, "arch", p->arch);
    json_num(&j, "val_acc", p->val_acc);
    json_int(&j, "params", p->params);
    json_int(&j, "macs", p->macs);
    json_int(&j, "peak_bytes", p->peak_bytes);
    json_int(&j, "flash_bytes", p->flash_bytes);
    json_num(&j, "latency_ms", p->latency_ms);
    json_num(&j, "score", p->score);
    json_int(&j, "trial", p->seq);
    fputc('}', f);
}

int cmd_search(int argc, char **argv) {
    SearchConfig c = search_defaults();
    int trials = 0, seed = 0, threads = 0, json = 0, help = 0;
    float worker_timeout = (float)c.worker_timeout;
    const char *lat_target = NULL, *mnas_w = NULL;
    float minutes = 0, epochs = (float)c.epochs, max_params = 0, max_macs = 0, max_lat = 0, max_peak = 0,
          max_flash = 0;
    ArgSpec specs[] = {
        {"space", ARG_STR, &c.space, "nb201 | macro | macro:KEY=VAL,... | a space file (nb201)", 0},
        {"channels", ARG_INT, &c.channels, "NB201: channels of the first stage (16)", 0},
        {"cells", ARG_INT, &c.cells, "NB201: cells per stage (1)", 0},
        {"strategy", ARG_STR, &c.strategy, "random | evolution | reinforce | bohb | pnas | neat | proxy (evolution)", 0},
        {"trials", ARG_INT, &trials, "trials to evaluate (default 20 unless --minutes)", 0},
        {"minutes", ARG_FLOAT, &minutes, "stop asking new trials after this many minutes", 0},
        {"max-params", ARG_FLOAT, &max_params, "hard limit: parameters", 0},
        {"max-macs", ARG_FLOAT, &max_macs, "hard limit: multiply-accumulates per image", 0},
        {"max-latency-ms", ARG_FLOAT, &max_lat,
         "hard limit: batch-1 latency in ms (the benchmark's latency_ms, else the target's prediction, else measured)",
         0},
        {"max-peak-kb", ARG_FLOAT, &max_peak, "hard limit: peak activation memory (KB)", 0},
        {"max-flash-kb", ARG_FLOAT, &max_flash, "hard limit: flash (KB)", 0},
        {"target", ARG_STR, &c.target, "deployment target: its SRAM, flash, latency and dtype as limits", 0},
        {"epochs", ARG_FLOAT, &epochs, "epochs per trial at full fidelity (4)", 0},
        {"subset", ARG_INT, &c.subset, "training images per trial at full fidelity (10000; 0 = all)", 0},
        {"val", ARG_INT, &c.val, "validation images held out of the training set (10000)", 0},
        {"batch", ARG_INT, &c.batch, "mini-batch (256)", 0},
        {"lr", ARG_FLOAT, &c.lr, "learning rate, cosine per step (0.1)", 0},
        {"seed", ARG_INT, &seed, "seed of the search and of every trial (0)", 0},
        {"db", ARG_STR, &c.db, "trial database (search.db)", 0},
        {"resume", ARG_FLAG, &c.resume, "continue the experiment in --db", 0},
        {"benchmark", ARG_STR, &c.benchmark, "answer trials from a tabular benchmark CSV instead of training", 0},
        {"data", ARG_STR, &c.data, "dataset (fashion-mnist)", 0},
        {"proxy", ARG_STR, &c.proxy, "proxy strategy's score: synflow | naswot | gradnorm (naswot)", 0},
        {"worker-timeout", ARG_FLOAT, &worker_timeout,
         "MPI: seconds of silence before a worker (or, seen from a worker, rank 0) is declared dead (60)", 0},
        {"objective", ARG_STR, &c.objective,
         "what the search maximizes: acc (validation accuracy), mnas (acc x (latency/T)^w, MnasNet's soft "
         "reward) or mnas-hard (acc below T, acc x T/latency above) (acc)",
         0},
        {"latency-target", ARG_STR, &lat_target, "mnas: the latency target T in ms (default: the --target's budget)", 0},
        {"mnas-w", ARG_STR, &mnas_w, "mnas: the exponent w, negative (-0.07)", 0},
        {"threads", ARG_INT, &threads, "threads (all cores)", 0},
        {"quiet", ARG_FLAG, &c.quiet, "no progress output", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 0, &npos, "search", usage);
    if (parsed >= 0) return parsed;
    if (trials < 0 || minutes < 0 || !(epochs > 0) || c.subset < 0 || c.batch < 1 || !(c.lr > 0) || seed < 0 ||
        threads < 0 || worker_timeout < 0) {
        fprintf(stderr, "nasc search: --trials, --minutes, --subset and --seed must not be negative; --epochs, "
                        "--batch and --lr must be positive\n");
        return 2;
    }
    c.trials = trials ? trials : (minutes > 0 ? 0 : 20);
    c.minutes = minutes;
    c.epochs = epochs;
    c.max_params = max_params, c.max_macs = max_macs, c.max_latency_ms = max_lat;
    c.max_peak_kb = max_peak, c.max_flash_kb = max_flash;
    c.seed = (uint64_t)seed;
    c.worker_timeout = worker_timeout;
    if (parse_number("latency-target", lat_target, &c.latency_target_ms) != NASC_OK ||
        parse_number("mnas-w", mnas_w, &c.mnas_w) != NASC_OK)
        return 2;
    if (lat_target && !(c.latency_target_ms > 0)) {
        fprintf(stderr, "nasc search: --latency-target must be a positive number of milliseconds, got '%s'\n",
                lat_target);
        return 2;
    }
    if (mnas_w && strcmp(c.objective, "mnas") != 0) {
        fprintf(stderr, "nasc search: --mnas-w is the exponent of --objective mnas (the objective is %s)\n",
                c.objective);
        return 2;
    }
    if (search_objective_check(&c, 1, &e) != NASC_OK) { /* before loading anything; the target is checked later */
        fprintf(stderr, "nasc %s\n", e.msg);
        return 2;
    }
    if (threads) threads_set(threads);
    SearchResult r;
    if (search_run(&c, &r, &e) != NASC_OK) {
        fprintf(stderr, "nasc search: %s\n", e.msg);
        return 2;
    }
    if (r.rank > 0) { /* an MPI worker: rank 0 reports */
        search_result_free(&r);
        return 0;
    }
    printf("trials %ld: %ld trained, %ld reused, %ld rejected by limits, %ld failed  (database %s)\n", r.trials,
           r.trained, r.reused, r.infeasible, r.failed, c.db);
    int mnas = strcmp(c.objective, "acc") != 0;
    if (r.have_best) print_point("best", &r.best, mnas);
    else printf("no trial finished at full fidelity\n");
    printf("pareto front (val_acc vs params, MACs): %d\n", r.npareto);
    for (int i = 0; i < r.npareto; i++) print_point("  *", &r.pareto[i], mnas);
    if (r.nranks > 1) {
        printf("trials evaluated per rank:");
        for (int k = 0; k < r.nworkers; k++) printf(" %d:%ld", k, r.per_worker[k]);
        printf("\n");
    }
    if (json) {
        printf("{\"trials\": %ld, \"trained\": %ld, \"reused\": %ld, \"infeasible\": %ld, \"failed\": %ld, \"best\": ",
               r.trials, r.trained, r.reused, r.infeasible, r.failed);
        if (r.have_best) json_point(stdout, &r.best);
        else fputs("null", stdout);
        fputs(", \"pareto\": [", stdout);
        for (int i = 0; i < r.npareto; i++) {
            if (i) fputs(", ", stdout);
            json_point(stdout, &r.pareto[i]);
        }
        fputs("]", stdout);
        if (r.nranks > 1) { /* MPI: trials evaluated per rank, from the database */
            printf(", \"ranks\": %d, \"per_rank\": [", r.nranks);
            for (int k = 0; k < r.nworkers; k++) printf("%s%ld", k ? ", " : "", r.per_worker[k]);
            fputs("]", stdout);
        }
        fputs("}\n", stdout);
    }
    search_result_free(&r);
    return 0;
}
