/* bench_latency.c: how well the latency predictor (src/cost/predict.h) matches measured
 * latency. Loads a table (or profiles this machine first, as `nasc profile` would), draws
 * random members of each space with a seed the profile did not use, measures each member's
 * real batch-1 latency (interleaved rounds, min over passes of the per-pass median), predicts
 * it, and prints the distribution of relative errors per space: mean |err|, p50/p90/p99,
 * the share within 5% and 10%, the bias, and the worst cases. Its peer, measured in the same
 * run, is the measurement itself: every member is measured twice, independently, and the
 * disagreement of the two measurements is printed beside the prediction's error (the noise
 * floor no predictor can beat on this machine at this moment). Two more peers: the plain sum
 * of the table (no correction), and the sum of the same op configurations timed alone, each
 * op back to back in a one-op net (the textbook kernel-level table; it misses the cold
 * caches a node meets inside a network).
 * A last line divides out one common factor k (the median of measured / predicted over the
 * space's members) and prints what is left: on a shared machine the whole box runs a few %
 * faster or slower from one minute to the next, which moves every member alike; k says how
 * much the machine's speed differed from when the table was made, the rest is the predictor.
 * --drop F removes a fraction F of the table's entries at random first, to see how the
 * fallback model does on configurations it never measured.
 *
 *   build/bench/bench_latency [--table FILE] [--space nb201,macro,FILE] [--members 100]
 *                             [--seed 777] [--threads 1] [--repeats 8] [--passes 4]
 *                             [--channels 16] [--cells 1] [--save-table FILE] [--drop F]
 *                             [--no-alone] [--quiet]
 * Without --table the profile uses its defaults (seed 1; --profile-members sets its sample).
 */
#include <math.h>

#include "../src/cost/predict.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* q-quantile of sorted v (linear interpolation) */
static double quantile(const double *v, int n, double q) {
    if (n <= 0) return 0;
    double pos = q * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return v[n - 1];
    return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

typedef struct {
    double mean, p50, p90, p99, max, within5, within10, bias;
} Dist;

/* Distribution of |err| (relative errors, signed in err[]). */
static void dist_of(const double *err, int n, Dist *d) {
    double *a = malloc((size_t)(n ? n : 1) * sizeof *a);
    memset(d, 0, sizeof *d);
    for (int i = 0; i < n; i++) {
        a[i] = fabs(err[i]);
        d->mean += a[i] / n;
        d->bias += err[i] / n;
        d->within5 += (a[i] <= 0.05) / (double)n;
        d->within10 += (a[i] <= 0.10) / (double)n;
    }
    qsort(a, (size_t)n, sizeof *a, cmp_double);
    d->p50 = quantile(a, n, 0.5), d->p90 = quantile(a, n, 0.9), d->p99 = quantile(a, n, 0.99);
    d->max = n ? a[n - 1] : 0;
    free(a);
}

static void dist_print(const char *what, const Dist *d) {
    printf("  %-26s mean %5.1f%%  p50 %5.1f%%  p90 %5.1f%%  p99 %5.1f%%  max %5.1f%%  within 5%%: %3.0f%%  "
           "within 10%%: %3.0f%%  bias %+5.1f%%\n",
           what, 100 * d->mean, 100 * d->p50, 100 * d->p90, 100 * d->p99, 100 * d->max, 100 * d->within5,
           100 * d->within10, 100 * d->bias);
}

static const char *arg_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "bench_latency: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    const char *table_path = NULL, *save_path = NULL, *space_list = "nb201,macro";
    int members = 100, seed = 777, threads = 1, repeats = 8, passes = 4, channels = 16, cells = 1, quiet = 0;
    int profile_members = 2000, alone = 1;
    double drop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--table")) table_path = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--save-table")) save_path = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--space")) space_list = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--members")) members = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--profile-members")) profile_members = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--seed")) seed = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--threads")) threads = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--repeats")) repeats = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--passes")) passes = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--channels")) channels = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--cells")) cells = atoi(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--drop")) drop = atof(arg_value(argc, argv, &i));
        else if (!strcmp(a, "--no-alone")) alone = 0;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else {
            fprintf(stderr, "bench_latency: unknown argument '%s' (see the top of bench/bench_latency.c)\n", a);
            return 2;
        }
    }
    if (members < 1 || threads < 1 || repeats < 1 || passes < 1) {
        fprintf(stderr, "bench_latency: --members, --threads, --repeats and --passes must be >= 1\n");
        return 2;
    }
    char *list = xstrdup(space_list);
    const char *spaces[16];
    int nspaces = 0;
    for (char *tok = strtok(list, ","); tok && nspaces < 16; tok = strtok(NULL, ",")) spaces[nspaces++] = tok;
    const int in_c = 1, in_h = 28, in_w = 28, classes = 10; /* fashion-mnist, the spaces' default input */

    Err e = {{0}};
    LatencyTable t;
    if (table_path) {
        if (lattable_load(&t, table_path, &e) != NASC_OK) {
            fprintf(stderr, "bench_latency: %s\n", e.msg);
            return 2;
        }
        threads = t.threads;
        threads_set(threads);
        printf("table %s: %d entries, %d thread%s, made on %s (%s)\n", table_path, t.n, t.threads,
               t.threads == 1 ? "" : "s", t.machine, t.isa);
    } else {
        threads_set(threads);
        lattable_init(&t, "bench");
        ProfileConfig pc = {.spaces = spaces, .nspaces = nspaces, .channels = channels, .cells = cells, .in_c = in_c,
                            .in_h = in_h, .in_w = in_w, .classes = classes, .members = profile_members, .nets = 30,
                            .zoo = 1, .mc = {.repeats = repeats, .passes = passes, .seed = 1, .verbose = !quiet}};
        ProfileSummary sum;
        if (predict_profile(&t, &pc, &sum, &e) != NASC_OK) {
            fprintf(stderr, "bench_latency: profile: %s\n", e.msg);
            return 2;
        }
        printf("profiled this machine: %d configurations from %d members in %.0f s; correction fitted on %d nets "
               "(mean |err| %.1f%%)\n",
               sum.configs, sum.members, sum.seconds, sum.nets, 100 * sum.fit_mean_abs_err);
        if (save_path && lattable_save(&t, save_path, &e) != NASC_OK) fprintf(stderr, "bench_latency: %s\n", e.msg);
    }
    if (drop > 0) { /* a copy of the table without a random fraction of its entries */
        LatencyTable d;
        lattable_init(&d, t.target);
        memcpy(d.corr, t.corr, sizeof d.corr); /* all four terms */
        memcpy(d.fb, t.fb, sizeof d.fb);
        memcpy(d.fb_n, t.fb_n, sizeof d.fb_n);
        d.threads = t.threads;
        Rng r;
        rng_seed(&r, (uint64_t)seed + 99);
        for (int i = 0; i < t.n; i++)
            if (rng_uniform(&r) >= drop) lattable_add(&d, &t.e[i].cfg, t.e[i].us);
        printf("dropped %d of %d entries (--drop %g): those nodes use the fallback\n", t.n - d.n, t.n, drop);
        lattable_free(&t);
        t = d;
    }
    /* the peer table: the same configurations, each op timed alone */
    LatencyTable iso;
    lattable_init(&iso, "alone");
    if (alone) {
        for (int i = 0; i < t.n; i++) lattable_add(&iso, &t.e[i].cfg, -1);
        LatMeasureConfig mi = {.repeats = repeats, .passes = passes, .seed = (uint64_t)seed};
        double t0 = now_seconds();
        if (lattable_measure(&iso, 1, &mi, &e) != NASC_OK) {
            fprintf(stderr, "bench_latency: %s\n", e.msg);
            return 2;
        }
        printf("timed the %d configurations alone too, in %.0f s\n", iso.n, now_seconds() - t0);
    }
    printf("correction: us = %.4f * sum + %.3f * units + %.2f + %.3f * log2(bytes);  %d thread%s; members drawn "
           "with seed %d\n",
           t.corr[0], t.corr[1], t.corr[2], t.corr[3], threads, threads == 1 ? "" : "s", seed);

    LatMeasureConfig mc = {.repeats = repeats, .passes = passes, .seed = (uint64_t)seed};
    int all_ok = 1;
    for (int si = 0; si < nspaces; si++) {
        Space *s = space_open(spaces[si], channels, cells, &e);
        if (!s) {
            fprintf(stderr, "bench_latency: %s\n", e.msg);
            all_ok = 0;
            continue;
        }
        Rng r;
        rng_seed(&r, (uint64_t)seed * 7919 + (uint64_t)si);
        Net **nets = xcalloc((size_t)members, sizeof *nets);
        char **arch = xcalloc((size_t)members, sizeof *arch);
        int n = 0, tries = 0, m[SPACE_MAX_DIMS];
        while (n < members && tries < 20 * members) {
            tries++;
            space_sample(s, &r, m);
            Net *net = xcalloc(1, sizeof *net);
            if (predict_build_member(s, m, in_c, in_h, in_w, classes, net, &e) != NASC_OK) {
                free(net);
                continue;
            }
            arch[n] = s->ops->to_arch(s, m);
            nets[n++] = net;
        }
        double *meas = xmalloc((size_t)n * sizeof *meas), *meas2 = xmalloc((size_t)n * sizeof *meas2);
        double *err = xmalloc((size_t)n * sizeof *err), *err_sum = xmalloc((size_t)n * sizeof *err_sum);
        double *err_alone = xmalloc((size_t)n * sizeof *err_alone), *ratio = xmalloc((size_t)n * sizeof *ratio);
        double *pred = xmalloc((size_t)n * sizeof *pred);
        double *noise = xmalloc((size_t)n * sizeof *noise);
        double t0 = now_seconds();
        predict_measure_nets(nets, n, &mc, meas);
        mc.seed += 1000;
        predict_measure_nets(nets, n, &mc, meas2); /* the second, independent measurement */
        double secs = now_seconds() - t0;
        int fb_nets = 0, fb_nodes = 0, nodes = 0;
        double lat_min = 1e30, lat_max = 0;
        int *worst = xmalloc((size_t)n * sizeof *worst);
        for (int i = 0; i < n; i++) {
            LatPrediction p;
            predict_net(&t, nets[i], &p);
            err[i] = (p.us - meas[i]) / meas[i];
            pred[i] = p.us, ratio[i] = meas[i] / p.us;
            err_sum[i] = (p.sum_us - meas[i]) / meas[i];
            if (alone) {
                LatPrediction pa;
                predict_net(&iso, nets[i], &pa);
                err_alone[i] = (pa.sum_us - meas[i]) / meas[i];
            }
            noise[i] = (meas2[i] - meas[i]) / meas[i];

            fb_nets += p.fallback_nodes > 0;
            fb_nodes += p.fallback_nodes;
            nodes += p.nodes;
            lat_min = fmin(lat_min, meas[i]), lat_max = fmax(lat_max, meas[i]);
            worst[i] = i;
        }
        printf("\n%s: %d members (latency %.3f .. %.3f ms), measured twice in %.0f s; %d of %d nodes (in %d "
               "members) used the fallback\n",
               spaces[si], n, lat_min * 1e-3, lat_max * 1e-3, secs, fb_nodes, nodes, fb_nets);
        Dist d;
        dist_of(err, n, &d);
        dist_print("predicted vs measured", &d);
        double within10 = d.within10;
        dist_of(err_sum, n, &d);
        dist_print("plain sum vs measured", &d);
        if (alone) {
            dist_of(err_alone, n, &d);
            dist_print("ops alone, sum vs measured", &d);
        }
        dist_of(noise, n, &d);
        dist_print("measured again vs first", &d);
        qsort(ratio, (size_t)n, sizeof *ratio, cmp_double);
        double k = quantile(ratio, n, 0.5);
        for (int i = 0; i < n; i++) err_alone[i] = (k * pred[i] - meas[i]) / meas[i];
        dist_of(err_alone, n, &d);
        char what[64];
        snprintf(what, sizeof what, "predicted x k=%.3f", k);
        dist_print(what, &d);
        /* worst 5 by |err| */
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++)
                if (fabs(err[worst[b]]) > fabs(err[worst[a]])) {
                    int tmp = worst[a];
                    worst[a] = worst[b], worst[b] = tmp;
                }
        printf("  worst:\n");
        for (int k = 0; k < NASC_MIN(5, n); k++) {
            int i = worst[k];
            int fb;
            double pred = predict_latency_ms(&t, nets[i], &fb) * 1e3;
            printf("    %+6.1f%%  measured %.3f ms (again %.3f), predicted %.3f ms, %d fallback nodes  %s\n",
                   100 * err[i], meas[i] * 1e-3, meas2[i] * 1e-3, pred * 1e-3, fb, arch[i]);
        }
        printf("  RESULT %s: %.0f%% of members predicted within 10%% (goal: >= 90%%)\n", spaces[si], 100 * within10);
        for (int i = 0; i < n; i++) {
            net_free(nets[i]);
            free(nets[i]);
            free(arch[i]);
        }
        free(nets);
        free(arch);
        free(meas);
        free(meas2);
        free(err);
        free(err_sum);
        free(noise);
        free(err_alone);
        free(ratio);
        free(pred);
        free(worst);
        space_free(s);
    }
    lattable_free(&iso);
    lattable_free(&t);
    free(list);
    return all_ok ? 0 : 1;
}
