/* bench_fidelity.c: how well a search's cheap scores predict full training.
 *
 *   bench_fidelity DB [--cells K] [--epochs E] [--threads T] [--data NAME] [--also ARCH]...
 *                     [--reuse FILE]...
 *
 * Reads a finished search's trial database (read-only), takes the distinct architectures it
 * trained, with for each its low-fidelity score (the validation accuracy at the lowest
 * fidelity it was trained at), and picks K of them spread evenly over the score ranking (the
 * top one always included). Each is then trained from scratch with NB201's full recipe (SGD,
 * Nesterov momentum 0.9, lr 0.1 cosine per step, wd 5e-4, batch 256, E epochs, seed 0) on the
 * whole training split and evaluated on the test split. Prints one line per cell and the
 * Kendall tau-b between the low-fidelity scores and the full-training test accuracies, and a
 * last line `RESULT {...}` in JSON. Slow by design (full trainings): a study, not a test.
 *
 * --also ARCH adds a trained architecture to the picks (e.g. the one the search recommended,
 * which need not be the top at the lowest fidelity). --reuse FILE takes full-recipe accuracies
 * from an earlier bench_fidelity output (its "  score ... full A ... ARCH" lines, same recipe)
 * instead of training those cells again; such lines are marked "(reused)".
 */
#include <math.h>

#include "../src/store/trials.h"
#include "../src/train/train.h"

typedef struct {
    char *spec, *arch;
    double score, fid_epochs, fid_fraction, full_acc;
    size_t params;
} Cell;

#define MAX_EXTRA 16

/* Earlier results: (arch, full accuracy, params, seconds) from bench_fidelity output lines. */
typedef struct {
    char arch[512];
    double acc, seconds;
    size_t params;
} Known;

static int read_known(const char *path, Known **known, int *nknown) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench_fidelity: cannot read %s\n", path);
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        const char *full = strstr(line, " full ");
        if (strncmp(line, "  score ", 8) || !full) continue;
        Known k;
        memset(&k, 0, sizeof k);
        char arch[512];
        if (sscanf(full, " full %lf %zu params %lfs %511s", &k.acc, &k.params, &k.seconds, arch) != 4) continue;
        snprintf(k.arch, sizeof k.arch, "%s", arch);
        *known = xrealloc(*known, (size_t)(*nknown + 1) * sizeof **known);
        (*known)[(*nknown)++] = k;
    }
    fclose(f);
    return 0;
}

static int by_score_desc(const void *a, const void *b) {
    double x = ((const Cell *)a)->score, y = ((const Cell *)b)->score;
    return x < y ? 1 : x > y ? -1 : strcmp(((const Cell *)a)->arch, ((const Cell *)b)->arch);
}

/* Kendall's tau-b over n pairs (ties in either ranking handled). */
static double kendall_tau_b(const double *x, const double *y, int n) {
    long conc = 0, disc = 0, tx = 0, ty = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double dx = x[i] - x[j], dy = y[i] - y[j];
            if (dx == 0 && dy == 0) continue;
            if (dx == 0) tx++;
            else if (dy == 0) ty++;
            else if ((dx > 0) == (dy > 0)) conc++;
            else disc++;
        }
    double den = sqrt((double)(conc + disc + tx) * (double)(conc + disc + ty));
    return den > 0 ? (conc - disc) / den : 0;
}

int main(int argc, char **argv) {
    const char *db_path = NULL, *data = "fashion-mnist";
    int k = 6, epochs = 12, threads = 2, nalso = 0, nknown = 0;
    const char *also[MAX_EXTRA];
    Known *known = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cells") && i + 1 < argc) k = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--also") && i + 1 < argc && nalso < MAX_EXTRA) also[nalso++] = argv[++i];
        else if (!strcmp(argv[i], "--reuse") && i + 1 < argc) {
            if (read_known(argv[++i], &known, &nknown)) return 2;
        } else if (argv[i][0] != '-' && !db_path) db_path = argv[i];
        else {
            fprintf(stderr, "usage: bench_fidelity DB [--cells K] [--epochs E] [--threads T] [--data NAME] "
                            "[--also ARCH]... [--reuse FILE]...\n");
            return 2;
        }
    }
    if (!db_path || k < 2 || epochs < 1) {
        fprintf(stderr, "usage: bench_fidelity DB [--cells K >= 2] [--epochs E] [--threads T] [--data NAME]\n");
        return 2;
    }
    threads_set(threads);
    Err e = {{0}};
    TrialsDb *db = trials_open(db_path, TRIALS_READ, NULL, 0, &e);
    if (!db) {
        fprintf(stderr, "bench_fidelity: %s\n", e.msg);
        return 2;
    }
    TrialRow *rows;
    long nrows;
    if (trials_list(db, &rows, &nrows, &e) != NASC_OK) {
        fprintf(stderr, "bench_fidelity: %s\n", e.msg);
        return 2;
    }
    /* Distinct trained architectures, each with its lowest-fidelity score. */
    Cell *cells = xcalloc((size_t)(nrows ? nrows : 1), sizeof *cells);
    int nc = 0;
    for (long i = 0; i < nrows; i++) {
        const TrialRow *r = &rows[i];
        if (r->running || r->reuse_of >= 0 || r->r.status != TRIAL_OK || !isfinite(r->r.val_acc)) continue;
        double cost = r->fid.epochs * r->fid.fraction;
        int j;
        for (j = 0; j < nc; j++)
            if (!strcmp(cells[j].arch, r->canonical)) break;
        if (j == nc) {
            cells[nc].arch = r->canonical;
            cells[nc].spec = r->spec;
            cells[nc].score = r->r.val_acc;
            cells[nc].fid_epochs = r->fid.epochs;
            cells[nc].fid_fraction = r->fid.fraction;
            nc++;
        } else if (cost < cells[j].fid_epochs * cells[j].fid_fraction) {
            cells[j].score = r->r.val_acc;
            cells[j].fid_epochs = r->fid.epochs;
            cells[j].fid_fraction = r->fid.fraction;
        }
    }
    if (nc < 2) {
        fprintf(stderr, "bench_fidelity: %s has %d trained architectures; need at least 2\n", db_path, nc);
        return 2;
    }
    qsort(cells, (size_t)nc, sizeof *cells, by_score_desc);
    if (k > nc) k = nc;
    Cell *pick = xcalloc((size_t)(k + nalso), sizeof *pick);
    for (int i = 0; i < k; i++) pick[i] = cells[(int)((double)i * (nc - 1) / (k - 1) + 0.5)];
    for (int a = 0; a < nalso; a++) {
        int j, dup = 0;
        const char *canon = also[a]; /* as the search printed it (a spec) or in canonical form */
        for (long r = 0; r < nrows; r++)
            if (!strcmp(rows[r].spec, also[a])) canon = rows[r].canonical;
        for (j = 0; j < nc; j++)
            if (!strcmp(cells[j].arch, canon)) break;
        if (j == nc) {
            fprintf(stderr, "bench_fidelity: --also %s: not an architecture %s trained\n", also[a], db_path);
            return 2;
        }
        for (int i = 0; i < k; i++) dup |= !strcmp(pick[i].arch, cells[j].arch);
        if (!dup) pick[k++] = cells[j];
    }

    Dataset tr, te;
    if (dataset_load(&tr, data, SPLIT_TRAIN, &e) != NASC_OK || dataset_load(&te, data, SPLIT_TEST, &e) != NASC_OK) {
        fprintf(stderr, "bench_fidelity: %s\n", e.msg);
        return 2;
    }
    float mean[4], std[4];
    dataset_norm_stats(&tr, mean, std);
    int *idx = xmalloc((size_t)tr.n * sizeof(int));
    for (int i = 0; i < tr.n; i++) idx[i] = i;
    printf("bench_fidelity: %s: %d trained architectures, %d picked, full recipe %d epochs\n", db_path, nc, k, epochs);
    double *xs = xmalloc((size_t)k * sizeof(double)), *ys = xmalloc((size_t)k * sizeof(double));
    for (int i = 0; i < k; i++) {
        const Known *kn = NULL;
        for (int j = 0; j < nknown && !kn; j++)
            if (!strcmp(known[j].arch, pick[i].arch)) kn = &known[j];
        if (kn) {
            pick[i].full_acc = kn->acc;
            xs[i] = pick[i].score;
            ys[i] = kn->acc;
            printf("  score %.4f (%.3g epochs x %.3g of the data)  full %.4f  %7zu params  %.0fs  %s (reused)\n",
                   pick[i].score, pick[i].fid_epochs, pick[i].fid_fraction, kn->acc, kn->params, kn->seconds,
                   pick[i].arch);
            fflush(stdout);
            continue;
        }
        Spec spec;
        Net net;
        if (spec_parse(&spec, pick[i].spec, 16, 1, &e) != NASC_OK ||
            net_build(&net, &spec, tr.c, tr.h, tr.w, tr.classes, &e) != NASC_OK) {
            fprintf(stderr, "bench_fidelity: %s: %s\n", pick[i].arch, e.msg);
            return 2;
        }
        spec_free(&spec);
        net_init_params(&net, 0);
        TrainConfig cfg = {0};
        cfg.epochs = epochs;
        cfg.batch = 256;
        cfg.opt = optim_defaults(OPT_SGD);
        cfg.opt.nesterov = 1;
        cfg.opt.wd = 5e-4f;
        cfg.sched.kind = SCHED_COSINE;
        cfg.sched.lr = 0.1f;
        TrainResult res;
        if (train_run(&net, &tr, idx, tr.n, NULL, NULL, 0, mean, std, &cfg, &res, &e) != NASC_OK) {
            fprintf(stderr, "bench_fidelity: %s: %s\n", pick[i].arch, e.msg);
            return 2;
        }
        pick[i].full_acc = evaluate(&net, &te, NULL, te.n, mean, std, 512);
        pick[i].params = net_param_count(&net);
        xs[i] = pick[i].score;
        ys[i] = pick[i].full_acc;
        printf("  score %.4f (%.3g epochs x %.3g of the data)  full %.4f  %7zu params  %.0fs  %s\n", pick[i].score,
               pick[i].fid_epochs, pick[i].fid_fraction, pick[i].full_acc, pick[i].params, res.seconds, pick[i].arch);
        fflush(stdout);
        net_free(&net);
    }
    double tau = kendall_tau_b(xs, ys, k);
    printf("kendall tau-b (low-fidelity score vs full-training test accuracy, %d cells): %.3f\n", k, tau);
    printf("RESULT {\"db\": \"%s\", \"cells\": %d, \"kendall_tau\": %.4f, \"top_arch\": \"%s\", \"top_full_acc\": %.4f}\n",
           db_path, k, tau, pick[0].arch, pick[0].full_acc);
    free(xs);
    free(ys);
    free(known);
    free(idx);
    free(pick);
    free(cells);
    trials_rows_free(rows, nrows);
    trials_close(db);
    dataset_free(&tr);
    dataset_free(&te);
    return 0;
}
