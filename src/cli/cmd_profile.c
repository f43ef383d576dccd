/* cmd_profile.c: `nasc profile --target NAME`: measures, on the machine it runs on, every op
 * configuration the named search spaces can produce (all members of a space small enough to
 * enumerate, such as NB201's 15,625 cells; N sampled members of a bigger one; and the zoo
 * nets), measures some whole networks to fit the correction, and writes the latency table
 * the predictor reads (src/cost/predict.h). Run it once on the deployment device; the table
 * then serves searches on any machine.
 *
 * Threads: 1 unless --threads says otherwise (target files have no thread count). Measured
 * here, batch 1, 1 vs 2 threads interleaved, machine under load: best-case (p10) small 60 vs
 * 74 us, resnet8 232 vs 253 us, mbv2 582 vs 503 us; medians 71 vs 18,900 us, 270 vs 63,000 us,
 * 635 vs 126,000 us, because a parallel region waits for a thread the scheduler has parked.
 * One thread is as fast or nearly so for these nets and by far the most predictable.
 */
#include "../cost/predict.h"
#include "cli.h"

#include <ctype.h>

static const char usage[] =
    "usage: nasc profile --target NAME [--space nb201,macro,FILE...] [--members N] [--nets M] [--out FILE]\n"
    "                    [--threads T] [--repeats R] [--passes P] [--channels C --cells N] [--data NAME[:DIR]|DIR]\n"
    "                    [--seed S] [--no-zoo] [--quiet] [--json]\n"
    "  Writes the per-op latency table of this machine for target NAME (default: the target's latency_table,\n"
    "  else NAME.latency beside NAME.target, else targets/NAME.latency).";


static int valid_name(const char *s) {
    if (!*s || strlen(s) >= 64) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) return 0;
    return 1;
}

#define MAX_SPACES 16

int cmd_profile(int argc, char **argv) {
    const char *target_name = NULL, *space_list = "nb201,macro", *out = NULL, *data = "fashion-mnist";
    int members = 2000, nets = 30, threads = 1, repeats = 8, passes = 4, channels = 16, cells = 1, seed = 1;
    int zoo = 1, quiet = 0, json = 0, help = 0;
    ArgSpec specs[] = {
        {"target", ARG_STR, &target_name, "target name (or .target file) the table is for", 0},
        {"space", ARG_STR, &space_list, "spaces whose op configurations to measure, ',' separated (nb201,macro)", 0},
        {"members", ARG_INT, &members, "members sampled from a space too big to enumerate (2000)", 0},
        {"nets", ARG_INT, &nets, "whole networks per space measured to fit the correction (30)", 0},
        {"out", ARG_STR, &out, "table file to write", 0},
        {"threads", ARG_INT, &threads, "threads the ops run with (1)", 0},
        {"repeats", ARG_INT, &repeats, "interleaved timing rounds per pass (8)", 0},
        {"passes", ARG_INT, &passes, "timing passes; each entry is the min of the per-pass medians (4)", 0},
        {"channels", ARG_INT, &channels, "NB201: channels of the first stage (16)", 0},
        {"cells", ARG_INT, &cells, "NB201: cells per stage (1)", 0},
        {"data", ARG_STR, &data, "input shape and classes: fashion-mnist | mnist:DIR | cifar10:DIR | DIR", 0},
        {"seed", ARG_INT, &seed, "seed for sampling members and inputs (1)", 0},
        {"no-zoo", ARG_NOFLAG, &zoo, "leave out the zoo nets small, resnet8, mbv2", 0},
        {"quiet", ARG_FLAG, &quiet, "no progress on stderr", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, NULL, 0, &npos, "profile", usage);
    if (parsed >= 0) return parsed;
    if (!target_name) {
        fprintf(stderr, "nasc profile: needs --target NAME\n%s\n", usage);
        return 2;
    }
    if (members < 1 || members > 10000000 || nets < 0 || nets > 100000 || threads < 1 || threads > 1024 ||
        repeats < 1 || repeats > 100000 || passes < 1 || passes > 100 || channels < 1 || cells < 1) {
        fprintf(stderr, "nasc profile: --members must be in 1..10000000, --nets in 0..100000, --threads in 1..1024, "
                        "--repeats in 1..100000, --passes in 1..100, --channels and --cells >= 1\n");
        return 2;
    }
    /* The target: a known profile, or a new name for a device that has none yet. */
    Target tg;
    char name[64];
    if (target_find(&tg, target_name, &e) == NASC_OK) {
        snprintf(name, sizeof name, "%s", tg.name);
    } else if (valid_name(target_name) && !strstr(target_name, ".target")) {
        snprintf(name, sizeof name, "%s", target_name);
        if (!quiet) fprintf(stderr, "nasc profile: no target file for '%s'; profiling it as a new device\n", name);
    } else {
        fprintf(stderr, "nasc profile: --target: %s\n", e.msg);
        return 2;
    }
    /* spaces */
    char *list = xstrdup(space_list);
    const char *spaces[MAX_SPACES];
    int nspaces = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (nspaces == MAX_SPACES) {
            fprintf(stderr, "nasc profile: --space: at most %d spaces\n", MAX_SPACES);
            free(list);
            return 2;
        }
        spaces[nspaces++] = tok;
    }
    int in_c, in_h, in_w, classes;
    if (dataset_shape(data, &in_c, &in_h, &in_w, &classes, &e) != NASC_OK) {
        fprintf(stderr, "nasc profile: --data: %s\n", e.msg);
        free(list);
        return 2;
    }
    char *path = out ? xstrdup(out) : lattable_default_path(name);

    threads_set(threads);
    LatencyTable t;
    lattable_init(&t, name);
    ProfileConfig pc = {.spaces = spaces, .nspaces = nspaces, .channels = channels, .cells = cells,
                        .in_c = in_c, .in_h = in_h, .in_w = in_w, .classes = classes, .members = members,
                        .nets = nets, .zoo = zoo,
                        .mc = {.repeats = repeats, .passes = passes, .seed = (uint64_t)seed, .verbose = !quiet}};
    ProfileSummary sum;
    int rc = predict_profile(&t, &pc, &sum, &e);
    if (rc != NASC_OK) {
        fprintf(stderr, "nasc profile: %s\n", e.msg);
    } else if (lattable_save(&t, path, &e) != NASC_OK) {
        fprintf(stderr, "nasc profile: %s\n", e.msg);
        rc = NASC_ERR;
    }
    if (rc == NASC_OK) {
        int unmeasured = 0;
        for (int i = 0; i < t.n; i++) unmeasured += t.e[i].us < 0;
        printf("nasc profile: target %s on %s (%d cpus, %s), %d thread%s, input %dx%dx%d\n", name, t.machine, t.cpus,
               t.isa, t.threads, t.threads == 1 ? "" : "s", in_c, in_h, in_w);
        printf("  members         %d built (%d skipped: do not fit the input) from %s\n", sum.members, sum.skipped,
               space_list);
        printf("  configurations  %d measured%s (%d rounds x %d passes)\n", t.n - unmeasured,
               unmeasured ? ", some not measurable (fallback)" : "", t.repeats, t.passes);
        printf("  correction      us = %.4f * sum + %.3f * units + %.2f + %.3f * log2(bytes)  (fitted on %d nets: "
               "mean |err| %.1f%%, max %.1f%%)\n",
               t.corr[0], t.corr[1], t.corr[2], t.corr[3], sum.nets, 100 * sum.fit_mean_abs_err,
               100 * sum.fit_max_abs_err);
        printf("  table           %s  (%.0f s)\n", path, sum.seconds);
        if (json) {
            Json j;
            json_begin(&j, stdout);
            json_str(&j, "path", path);
            json_str(&j, "target", name);
            json_int(&j, "configs", t.n - unmeasured);
            json_int(&j, "unmeasured", unmeasured);
            json_int(&j, "members", sum.members);
            json_int(&j, "skipped", sum.skipped);
            json_int(&j, "nets", sum.nets);
            json_num(&j, "fit_mean_abs_err", sum.fit_mean_abs_err);
            json_num(&j, "fit_max_abs_err", sum.fit_max_abs_err);
            json_int(&j, "threads", t.threads);
            json_num(&j, "seconds", sum.seconds);
            json_end(&j);
        }
    }
    lattable_free(&t);
    free(path);
    free(list);
    return rc == NASC_OK ? 0 : 2;
}
