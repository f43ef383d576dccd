/* test_space.c: search spaces (src/space). Uniform sampling (chi-square), enumeration of all
 * 15,625 NB201 cells, mutation, crossover, encode/decode, arch strings and specs round trips,
 * canonical forms (NB201 merges, macro inactive blocks), error messages, and parameter / MAC
 * counts against PyTorch (tests/ref/space_counts.txt, made by scripts/make_space_refs.py).
 *
 *   build/tests/test_space                  run the tests (from the repository root)
 *   build/tests/test_space --print-members  print the members whose counts the reference file
 *                                           holds: "space channels cells arch CxHxW classes" lines;
 *   /usr/bin/python3 scripts/make_space_refs.py reads them and writes the reference file.
 */
#include <math.h>
#include <unistd.h>

#include "../src/net/net.h"
#include "../src/space/space.h"
#include "check.h"

#define REF_FILE "tests/ref/space_counts.txt"

/* A custom macro space for the reference counts: other stage count, per-stage overrides, a
 * strided stem, no resize, a width above 1, relu everywhere in the first stage. */
#define MACRO_CUSTOM                                                                                   \
    "macro:channels=8,16,24,strides=2,1,2,acts=relu,hswish,relu6,stem=8,stem_stride=2,head=0,"         \
    "depth=1,2,depth.3=2,3,kernel=3,5,kernel.2=7,expand=1,2,6,se=0,1,se.1=1,width=0.75,1.25,res=0"

static Space *open_ok(const char *name, int channels, int cells) {
    Err e = {{0}};
    Space *s = space_open(name, channels, cells, &e);
    if (!s) {
        fprintf(stderr, "cannot open space '%s': %s\n", name, e.msg);
        exit(1);
    }
    return s;
}

static int same(const int *a, const int *b, int n) { return memcmp(a, b, (size_t)n * sizeof *a) == 0; }

static void all_active(const Space *s, const int *m, int *act) {
    if (s->ops->active) s->ops->active(s, m, act);
    else
        for (int d = 0; d < s->ndims; d++) act[d] = 1;
}

/* ------------------------------------------------------------------ generic properties */
static void check_member_valid(const Space *s, const int *m, const char *what) {
    for (int d = 0; d < s->ndims; d++)
        CHECK(m[d] >= 0 && m[d] < s->card[d], "%s: decision %d = %d out of 0..%d", what, d, m[d], s->card[d] - 1);
}

/* Arch round trip (exact, for any member), encode/decode, spec build + print/parse round trip. */
static void check_roundtrips(const Space *s, const int *m, int in_c, int hw) {
    Err e = {{0}};
    int back[SPACE_MAX_DIMS];
    char *arch = s->ops->to_arch(s, m);
    int rc = s->ops->from_arch(s, arch, back, &e);
    CHECK(rc == NASC_OK, "from_arch(%s): %s", arch, e.msg);
    if (rc == NASC_OK) {
        CHECK(same(m, back, s->ndims), "from_arch(to_arch(m)) != m for %s", arch);
        char *again = s->ops->to_arch(s, back);
        CHECK(strcmp(arch, again) == 0, "to_arch not stable: %s vs %s", arch, again);
        free(again);
    }
    float vec[SPACE_MAX_DIMS];
    space_encode(s, m, vec);
    for (int d = 0; d < s->ndims; d++) CHECK(vec[d] >= 0 && vec[d] <= 1, "encode out of [0, 1]");
    space_decode(s, vec, back);
    CHECK(same(m, back, s->ndims), "decode(encode(m)) != m for %s", arch);

    char *text = s->ops->to_spec(s, m, &e);
    CHECK(text != NULL, "to_spec(%s): %s", arch, e.msg);
    if (text) {
        Spec sp, sp2;
        rc = spec_parse(&sp, text, s->channels, s->cells, &e);
        CHECK(rc == NASC_OK, "spec of %s does not parse: %s\n%s", arch, e.msg, text);
        if (rc == NASC_OK) {
            Net net;
            rc = net_build(&net, &sp, in_c, hw, hw, 10, &e);
            CHECK(rc == NASC_OK, "spec of %s does not build on %dx%dx%d: %s", arch, in_c, hw, hw, e.msg);
            if (rc == NASC_OK) {
                CHECK(net_param_count(&net) > 0 && net_macs(&net) > 0, "empty net for %s", arch);
                net_free(&net);
            }
            char *p1 = spec_print(&sp);
            rc = spec_parse(&sp2, p1, s->channels, s->cells, &e);
            CHECK(rc == NASC_OK, "printed spec of %s does not parse: %s", arch, e.msg);
            if (rc == NASC_OK) {
                char *p2 = spec_print(&sp2);
                CHECK(strcmp(p1, p2) == 0, "spec print/parse/print differs for %s", arch);
                CHECK(sp.n == sp2.n, "node count changed for %s", arch);
                free(p2);
                spec_free(&sp2);
            }
            free(p1);
            spec_free(&sp);
        }
        free(text);
    }
    free(arch);
}

/* mutate changes exactly one active decision; crossover takes every decision from a parent. */
static void check_mutate_crossover(const Space *s, Rng *r, int trials) {
    int a[SPACE_MAX_DIMS], b[SPACE_MAX_DIMS], o[SPACE_MAX_DIMS], act[SPACE_MAX_DIMS];
    long from_a = 0, from_b = 0;
    for (int t = 0; t < trials; t++) {
        space_sample(s, r, a);
        space_sample(s, r, b);
        space_mutate(s, a, r, o);
        check_member_valid(s, o, "mutate");
        all_active(s, a, act);
        int changed = 0, changed_active = 0;
        for (int d = 0; d < s->ndims; d++)
            if (o[d] != a[d]) changed++, changed_active += act[d];
        CHECK(changed == 1 && changed_active == 1, "%s: mutate changed %d decisions (%d active)", s->ops->name,
              changed, changed_active);
        space_crossover(s, a, b, r, o);
        for (int d = 0; d < s->ndims; d++) {
            CHECK(o[d] == a[d] || o[d] == b[d], "%s: crossover decision %d from neither parent", s->ops->name, d);
            if (a[d] != b[d]) from_a += o[d] == a[d], from_b += o[d] == b[d];
        }
    }
    double f = (double)from_a / (double)(from_a + from_b);
    CHECK(fabs(f - 0.5) < 0.05, "%s: crossover takes %.3f of differing decisions from the first parent", s->ops->name, f);
}

/* Mutation picks the decision uniformly among the active ones with more than one value. */
static void check_mutate_uniform(const Space *s, Rng *r) {
    int m[SPACE_MAX_DIMS], o[SPACE_MAX_DIMS], act[SPACE_MAX_DIMS];
    space_sample(s, r, m);
    all_active(s, m, act);
    int cand = 0;
    for (int d = 0; d < s->ndims; d++) cand += act[d] && s->card[d] > 1;
    int trials = 400 * cand;
    long *hits = xcalloc((size_t)s->ndims, sizeof *hits);
    for (int t = 0; t < trials; t++) {
        space_mutate(s, m, r, o);
        for (int d = 0; d < s->ndims; d++) hits[d] += o[d] != m[d];
    }
    double chi = 0;
    for (int d = 0; d < s->ndims; d++) {
        if (!(act[d] && s->card[d] > 1)) {
            CHECK(hits[d] == 0, "%s: mutate touched decision %d (%s) which it must not", s->ops->name, d, s->dim_name[d]);
            continue;
        }
        chi += (hits[d] - 400.0) * (hits[d] - 400.0) / 400.0;
    }
    /* cand - 1 degrees of freedom; a generous bound (mean + 5 sd) so a fixed seed cannot flake. */
    double dfree = cand - 1;
    CHECK(chi < dfree + 5 * sqrt(2 * dfree) + 10, "%s: mutate's choice of decision is not uniform (chi2 %.1f, df %.0f)",
          s->ops->name, chi, dfree);
    free(hits);
}

/* Chi-square over every raw member of a small space: sampling is uniform. */
static void check_uniform(const Space *s, Rng *r, int per_cell) {
    double size = space_size(s);
    NASC_ASSERT(size <= 200000);
    int n = (int)size;
    long *count = xcalloc((size_t)n, sizeof *count);
    int m[SPACE_MAX_DIMS];
    long draws = (long)n * per_cell;
    for (long t = 0; t < draws; t++) {
        space_sample(s, r, m);
        double idx = 0;
        for (int d = 0; d < s->ndims; d++) idx = idx * s->card[d] + m[d];
        count[(int)idx]++;
    }
    double chi = 0;
    for (int i = 0; i < n; i++) chi += (count[i] - per_cell) * (double)(count[i] - per_cell) / per_cell;
    double dfree = n - 1;
    /* p ~ 1e-6 bound via the Wilson-Hilferty approximation of the chi-square quantile. */
    double z = 4.75, q = dfree * pow(1 - 2 / (9 * dfree) + z * sqrt(2 / (9 * dfree)), 3);
    printf("  chi-square %s: %.1f with %.0f degrees of freedom (bound %.1f)\n", s->ops->name, chi, dfree, q);
    CHECK(chi < q, "%s: sampling is not uniform: chi2 %.1f > %.1f (df %.0f)", s->ops->name, chi, q, dfree);
    /* ... and not suspiciously perfect either (a sampler that cycles through members). */
    double zl = -4.75, ql = dfree * pow(1 - 2 / (9 * dfree) + zl * sqrt(2 / (9 * dfree)), 3);
    CHECK(chi > ql, "%s: sampling is too even to be random: chi2 %.1f < %.1f", s->ops->name, chi, ql);
    free(count);
}

/* ------------------------------------------------------------------ NB201 */
static const char *nb(const char *cell) { return cell; }

static int nb_parse(const Space *s, const char *arch, int *m) {
    Err e = {{0}};
    int rc = s->ops->from_arch(s, arch, m, &e);
    CHECK(rc == NASC_OK, "from_arch(%s): %s", arch, e.msg);
    return rc;
}

static void expect_canon_same(const Space *s, const char *x, const char *y, int want_same) {
    int a[6], b[6];
    if (nb_parse(s, x, a) != NASC_OK || nb_parse(s, y, b) != NASC_OK) return;
    char *ca = space_canonical_arch(s, a), *cb = space_canonical_arch(s, b);
    if (want_same) CHECK(strcmp(ca, cb) == 0, "should merge:\n  %s -> %s\n  %s -> %s", x, ca, y, cb);
    else CHECK(strcmp(ca, cb) != 0, "should stay apart:\n  %s -> %s\n  %s -> %s", x, ca, y, cb);
    free(ca);
    free(cb);
}

/* Coarser than dead edges + isomorphism: cells that differ only on dead edges, or by swapping
 * nodes 1 and 2 when 1->2 is none, must share a canonical form. Returns the number of such
 * (dead edges + isomorphism) classes. */
static int check_iso_merged(const Space *s) {
    int *canon_of = xmalloc(15625 * sizeof *canon_of);
    for (int k = 0; k < 15625; k++) canon_of[k] = -1;
    int n = 0;
    for (int c = 0; c < 15625; c++) {
        int m[6], t[6], cm[6];
        for (int d = 5, x = c; d >= 0; d--, x /= 5) m[d] = x % 5;
        /* edges: 0:0->1 1:0->2 2:1->2 3:0->3 4:1->3 5:2->3 */
        int in1 = m[0] != 0, in2 = m[1] != 0 || (in1 && m[2] != 0);
        int out2 = m[5] != 0, out1 = m[4] != 0 || (m[2] != 0 && out2);
        int live[6] = {out1, out2, in1 && out2, 1, in1, in2};
        for (int d = 0; d < 6; d++) t[d] = live[d] ? m[d] : 0;
        int k1 = 0, k2 = 0;
        for (int d = 0; d < 6; d++) k1 = k1 * 5 + t[d];
        if (t[2] == 0) {
            int u[6] = {t[1], t[0], 0, t[3], t[5], t[4]};
            for (int d = 0; d < 6; d++) k2 = k2 * 5 + u[d];
            if (k2 < k1) k1 = k2;
        }
        s->ops->canonical(s, m, cm);
        int cc = 0;
        for (int d = 0; d < 6; d++) cc = cc * 5 + cm[d];
        if (canon_of[k1] < 0) canon_of[k1] = cc, n++;
        else CHECK(canon_of[k1] == cc, "cell %d: dead-edge/isomorphic cells with different canonical forms", c);
    }
    free(canon_of);
    return n;
}

/* NB201's own dedup, CellStructure.to_unique_str(consider_zero=True), reimplemented: the
 * number of distinct strings over all cells (the 6466 of the NB201 paper). */
static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int nb201_unique_str_classes(void) {
    static const char *ops[5] = {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"};
    enum { L = 1024 };
    char **all = xmalloc(15625 * sizeof *all);
    for (int c = 0; c < 15625; c++) {
        int m[6];
        for (int d = 5, x = c; d >= 0; d--, x /= 5) m[d] = x % 5;
        char node[4][L], term[3][L];
        snprintf(node[0], L, "0");
        for (int j = 1, d = 0; j <= 3; j++) {
            char *tp[3];
            for (int i = 0; i < j; i++, d++) {
                if (m[d] == 0 || strcmp(node[i], "#") == 0) snprintf(term[i], L, "#");
                else if (m[d] == 1) snprintf(term[i], L, "%s", node[i]);
                else snprintf(term[i], L, "(%s)@%s", node[i], ops[m[d]]);
                tp[i] = term[i];
            }
            qsort(tp, (size_t)j, sizeof tp[0], cmp_strp);
            node[j][0] = 0;
            for (int i = 0; i < j; i++) {
                if (i) strncat(node[j], "+", L - strlen(node[j]) - 1);
                strncat(node[j], tp[i], L - strlen(node[j]) - 1);
            }
        }
        all[c] = xstrdup(node[3]);
    }
    qsort(all, 15625, sizeof *all, cmp_strp);
    int n = 0;
    for (int c = 0; c < 15625; c++) n += c == 0 || strcmp(all[c], all[c - 1]) != 0;
    for (int c = 0; c < 15625; c++) free(all[c]);
    free(all);
    return n;
}

/* Parameter-free cells (none, skip, pool only) all have the same parameters (stem, reductions,
 * head), so their networks can share one parameter vector: cells with one canonical form must
 * give the same logits, and cells with different forms different logits. */
static void check_paramfree_numerically(const Space *s) {
    enum { B = 2, C = 1, HW = 8, K = 10 };
    float x[B * C * HW * HW];
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < B * C * HW * HW; i++) x[i] = (float)rng_normal(&r);
    float (*logits)[B * K] = xmalloc(729 * sizeof *logits);
    int canon[729], member[729][6], nclass = 0, bad_same = 0, bad_diff = 0;
    float *params = NULL;
    size_t nparams = 0;
    for (int c = 0; c < 729; c++) {
        static const int free_ops[3] = {0, 1, 4}; /* none, skip, pool */
        int m[6], cm[6];
        for (int d = 5, q = c; d >= 0; d--, q /= 3) m[d] = free_ops[q % 3];
        memcpy(member[c], m, sizeof m);
        s->ops->canonical(s, m, cm);
        canon[c] = 0;
        for (int d = 0; d < 6; d++) canon[c] = canon[c] * 5 + cm[d];
        Err e;
        Spec sp;
        Net net;
        char *text = s->ops->to_spec(s, m, &e);
        NASC_ASSERT(spec_parse(&sp, text, 4, 1, &e) == NASC_OK);
        NASC_ASSERT(net_build(&net, &sp, C, HW, HW, K, &e) == NASC_OK);
        if (!params) {
            net_init_params(&net, 9);
            nparams = net.nparams;
            params = xmalloc(nparams * sizeof *params);
            memcpy(params, net.params, nparams * sizeof *params);
        }
        NASC_ASSERT(net.nparams == nparams);
        memcpy(net.params, params, nparams * sizeof *params);
        memcpy(logits[c], net_forward(&net, x, B, 0), sizeof logits[c]); /* eval mode: no BN scale invariance */
        net_free(&net);
        spec_free(&sp);
        free(text);
    }
    for (int a = 0; a < 729; a++)
        for (int b = a + 1; b < 729; b++) {
            double diff = 0, scale = 0;
            for (int i = 0; i < B * K; i++) {
                diff = fmax(diff, fabs(logits[a][i] - logits[b][i]));
                scale = fmax(scale, fabs(logits[a][i]));
            }
            int close = diff <= 1e-4 * (1 + scale);
            if (canon[a] == canon[b] && !close && bad_same++ < 3) {
                char *x1 = s->ops->to_arch(s, member[a]), *x2 = s->ops->to_arch(s, member[b]);
                CHECK(0, "same canonical form, different outputs (%.3g):\n  %s\n  %s", diff, x1, x2);
                free(x1), free(x2);
            }
            if (canon[a] != canon[b] && diff < 1e-6 * (1 + scale) && bad_diff++ < 3) {
                char *x1 = s->ops->to_arch(s, member[a]), *x2 = s->ops->to_arch(s, member[b]);
                CHECK(0, "different canonical forms, same outputs:\n  %s\n  %s", x1, x2);
                free(x1), free(x2);
            }
        }
    for (int a = 0; a < 729; a++) {
        int first = 1;
        for (int b = 0; b < a; b++) first &= canon[b] != canon[a];
        nclass += first;
    }
    printf("  parameter-free cells: 729 in %d canonical classes, outputs agree within classes and differ across\n", nclass);
    CHECK(bad_same == 0 && bad_diff == 0, "%d / %d numerical disagreements", bad_same, bad_diff);
    free(logits);
    free(params);
}

static void test_nb201(void) {
    Space *s = open_ok("nb201", 8, 1);
    CHECK(s->ndims == 6 && space_size(s) == 15625, "nb201: %d decisions, size %.0f", s->ndims, space_size(s));
    for (int d = 0; d < 6; d++) CHECK(s->card[d] == 5, "nb201: decision %d has %d values", d, s->card[d]);
    CHECK(s->channels == 8 && s->cells == 1, "nb201: skeleton %d/%d", s->channels, s->cells);

    /* Enumeration: every cell valid, all distinct arch strings, index order as documented. */
    int m[6], c[6], cc[6], back[6];
    char *prev = NULL;
    int classes = 0, sorted = 1;
    char *is_canon = xcalloc(15625, 1);
    for (int i = 0; i < 15625; i++) {
        int rc = space_member_at(s, i, m);
        CHECK(rc == NASC_OK, "member_at(%d)", i);
        check_member_valid(s, m, "member_at");
        int idx = 0;
        for (int d = 0; d < 6; d++) idx = idx * 5 + m[d];
        CHECK(idx == i, "member_at(%d) gives index %d", i, idx);
        char *arch = s->ops->to_arch(s, m);
        Err e;
        CHECK(s->ops->from_arch(s, arch, back, &e) == NASC_OK && same(m, back, 6), "arch round trip %s", arch);
        if (prev && strcmp(prev, arch) == 0) sorted = 0;
        free(prev);
        prev = arch;
        /* Canonical: idempotent, a member of the same class, no dead edges. */
        s->ops->canonical(s, m, c);
        check_member_valid(s, c, "canonical");
        s->ops->canonical(s, c, cc);
        CHECK(same(c, cc, 6), "canonical not idempotent for %s", arch);
        int cidx = 0;
        for (int d = 0; d < 6; d++) cidx = cidx * 5 + c[d];
        if (!is_canon[cidx]) is_canon[cidx] = 1, classes++;
        int in1 = c[0] != 0, in2 = c[1] != 0 || (in1 && c[2] != 0);
        int out2 = c[5] != 0, out1 = c[4] != 0 || (c[2] != 0 && out2);
        int live[6] = {out1, out2, in1 && out2, 1, in1, in2};
        for (int d = 0; d < 6; d++) CHECK(live[d] || c[d] == 0, "canonical of %s keeps dead edge %d", arch, d);
    }
    free(prev);
    free(is_canon);
    CHECK(sorted, "enumeration repeats a cell");
    CHECK(space_member_at(s, 15625, m) == NASC_ERR, "member_at past the end");
    CHECK(space_member_at(s, -1, m) == NASC_ERR, "member_at(-1)");
    CHECK(space_member_at(s, 2.5, m) == NASC_ERR, "member_at(2.5)");

    int iso = check_iso_merged(s), nbu = nb201_unique_str_classes();
    printf("  nb201 canonical classes: %d (dead edges + isomorphism alone: %d; NB201's to_unique_str: %d)\n",
           classes, iso, nbu);
    /* Fixed by the expression rules of nb201_space.c; a change here means the canonical form changed. */
    CHECK(classes == 5044, "nb201: %d canonical classes, expected 5044", classes);
    CHECK(iso == 8765, "dead edges + isomorphism give %d classes, expected 8765", iso);
    CHECK(nbu == 6466, "NB201's to_unique_str gives %d classes here, the NB201 paper 6466", nbu);

    check_paramfree_numerically(s);

    /* Known merges. */
    /* an edge out of a dead node (node 1 has only a none input) */
    expect_canon_same(s, nb("nb201:|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"),
                      nb("nb201:|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"), 1);
    /* an edge into a node that cannot reach the output (node 2 -> 3 is none) */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"),
                      nb("nb201:|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"), 1);
    /* output unreachable: everything is the zero cell */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"),
                      nb("nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"), 1);
    /* isomorphism: nodes 1 and 2 swapped (1->2 none) */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"),
                      nb("nb201:|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"), 1);
    /* skip forwarding: node 1 is a copy of the input */
    expect_canon_same(s, nb("nb201:|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"),
                      nb("nb201:|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"), 1);
    /* Different functions stay apart. */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"),
                      nb("nb201:|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"), 0);
    /* 1->2 not none: nodes 1 and 2 are not interchangeable */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|"),
                      nb("nb201:|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|"), 0);
    /* a skip whose target already has an edge from the source does not move (two ops differ from one) */
    expect_canon_same(s, nb("nb201:|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"),
                      nb("nb201:|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"), 0);

    /* a conv used twice (node 1 feeds 1->3 and 1->2->3) is not two independent convs */
    expect_canon_same(s, nb("nb201:|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|"),
                      nb("nb201:|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|"), 0);
    /* pooling is linear: p(x + b(x)) = p(x) + p(b(x)) */
    expect_canon_same(s, nb("nb201:|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"),
                      nb("nb201:|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|avg_pool_3x3~1|none~2|"), 1);
    /* skip and an op trade places along a chain */
    expect_canon_same(s, nb("nb201:|skip_connect~0|+|none~0|nor_conv_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"),
                      nb("nb201:|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"), 1);

    /* The arch string is the benchmark tables' notation; the bare NB201 form parses too. */
    const char *row = "nb201:|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|";
    if (nb_parse(s, row, m) == NASC_OK) {
        int want[6] = {4, 2, 1, 2, 1, 1};
        CHECK(same(m, want, 6), "decisions of a benchmark row");
        char *a = s->ops->to_arch(s, m);
        CHECK(strcmp(a, row) == 0, "to_arch gives %s", a);
        free(a);
    }
    if (nb_parse(s, "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|none~2|", m) == NASC_OK)
        CHECK(m[0] == 3 && m[2] == 4 && m[4] == 1, "bare NB201 form");
    if (nb_parse(s, "nb201:|nor_conv_3x3~0|+|avg_pool_3x3~1|none~0|+|none~2|skip_connect~1|nor_conv_3x3~0|", m) == NASC_OK)
        CHECK(m[1] == 0 && m[2] == 4 && m[3] == 3 && m[4] == 1 && m[5] == 0, "edges in any order within a node");

    /* Bad arch strings. */
    static const struct {
        const char *arch, *want;
    } bad[] = {
        {"nb201:", "expected '|'"},
        {"nb201:|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv'"},
        {"nb201:|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "cannot take input from node 1"},
        {"nb201:|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "given twice"},
        {"nb201:|none~0|+|none~0|none~1|+|none~0|none~1|", "unknown operation"},
        {"nb201:|none~0|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "expected '+|'"},
        {"nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|", "after the third node"},
        {"nb201:|none~x|+|none~0|none~1|+|none~0|none~1|none~2|", "input node digit"},
        {"macro:r28:w1.0:k3e6", "expected '|'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Err e = {{0}};
        int rc = s->ops->from_arch(s, bad[i].arch, m, &e);
        CHECK(rc == NASC_ERR, "'%s' should not parse", bad[i].arch);
        if (rc == NASC_ERR) CHECK(strstr(e.msg, bad[i].want), "error for '%s' is '%s', want '%s'", bad[i].arch, e.msg, bad[i].want);
    }

    Rng r;
    rng_seed(&r, 7);
    check_uniform(s, &r, 12);
    check_mutate_crossover(s, &r, 300);
    check_mutate_uniform(s, &r);
    for (int t = 0; t < 12; t++) {
        space_sample(s, &r, m);
        check_roundtrips(s, m, 1, 28);
        s->ops->canonical(s, m, c);
        check_roundtrips(s, c, 1, 28);
    }
    /* The spec honours the skeleton: channels 8, 2 cells per stage. */
    space_free(s);
    s = open_ok("nb201", 8, 2);
    space_sample(s, &r, m);
    check_roundtrips(s, m, 3, 32);
    space_free(s);
}

/* ------------------------------------------------------------------ macro */
static void test_macro(void) {
    Space *s = open_ok("macro", 0, 0);
    /* res, width, 4 stages x (depth + 4 blocks x 3) */
    CHECK(s->ndims == 2 + 4 * 13, "macro: %d decisions", s->ndims);
    CHECK(s->card[0] == 3 && s->card[1] == 3 && s->card[2] == 3 && s->card[3] == 3 && s->card[4] == 4 && s->card[5] == 2,
          "macro: default cardinalities");
    CHECK(strcmp(s->dim_name[2], "stage 1 depth") == 0 && strcmp(s->dim_name[4], "s1 block 1 expand") == 0,
          "macro: decision names '%s', '%s'", s->dim_name[2], s->dim_name[4]);
    Rng r;
    rng_seed(&r, 11);
    int m[SPACE_MAX_DIMS], c[SPACE_MAX_DIMS], cc[SPACE_MAX_DIMS], act[SPACE_MAX_DIMS];
    for (int t = 0; t < 40; t++) {
        space_sample(s, &r, m);
        check_member_valid(s, m, "sample");
        check_roundtrips(s, m, t % 2 ? 3 : 1, t % 2 ? 32 : 28);
        /* Canonical: idempotent, zero on inactive decisions, same network, no '/' in its arch. */
        s->ops->canonical(s, m, c);
        s->ops->canonical(s, c, cc);
        CHECK(same(c, cc, s->ndims), "macro canonical not idempotent");
        s->ops->active(s, m, act);
        for (int d = 0; d < s->ndims; d++) CHECK(act[d] ? c[d] == m[d] : c[d] == 0, "macro canonical decision %d", d);
        Err e;
        char *s1 = s->ops->to_spec(s, m, &e), *s2 = s->ops->to_spec(s, c, &e);
        CHECK(s1 && s2 && strcmp(s1, s2) == 0, "inactive decisions change the network");
        free(s1);
        free(s2);
        char *ca = space_canonical_arch(s, m);
        CHECK(!strchr(ca, '/'), "canonical arch %s lists inactive blocks", ca);
        /* a different canonical member is a different network */
        int o[SPACE_MAX_DIMS], oc[SPACE_MAX_DIMS];
        space_sample(s, &r, o);
        s->ops->canonical(s, o, oc);
        if (!same(c, oc, s->ndims)) {
            char *t1 = s->ops->to_spec(s, c, &e), *t2 = s->ops->to_spec(s, oc, &e);
            CHECK(strcmp(t1, t2) != 0, "two canonical members give one network");
            free(t1);
            free(t2);
        }
        free(ca);
    }
    check_mutate_crossover(s, &r, 300);
    check_mutate_uniform(s, &r);

    /* A member by hand: arch format, residual adds, SE, resize. */
    const char *arch = "macro:r24:w0.75:k3e1,k5e4se|k7e6,k3e3,k3e1|k5e6se,k5e6|k3e4,k3e4se,k7e1,k5e3";
    Err e = {{0}};
    int rc = s->ops->from_arch(s, arch, m, &e);
    CHECK(rc == NASC_OK, "from_arch(%s): %s", arch, e.msg);
    if (rc == NASC_OK) {
        CHECK(m[0] == 1 && m[1] == 1 && m[2] == 0 && m[3] == 0 && m[4] == 0 && m[5] == 0 && m[6] == 1 && m[7] == 2 &&
                  m[8] == 1,
              "decisions of %s", arch);
        char *back = s->ops->to_arch(s, m);
        CHECK(strcmp(back, arch) == 0, "to_arch gives %s, want %s", back, arch);
        free(back);
        char *text = s->ops->to_spec(s, m, &e);
        CHECK(strncmp(text, "resize(s=24)", 12) == 0, "spec starts with the resize: %.40s", text);
        Spec sp;
        if (spec_parse(&sp, text, 0, 0, &e) == NASC_OK) {
            int adds = 0, muls = 0, convs = 0;
            for (int i = 0; i < sp.n; i++) {
                adds += sp.nodes[i].op == OP_ADD;
                muls += sp.nodes[i].op == OP_MUL;
                convs += sp.nodes[i].op == OP_CONV;
            }
            /* residuals: stage 1 (stem 16*0.75 -> 16, 12 -> 16? make_divisible(12)=16, so in == out):
             * blocks 1, 2; stage 2: blocks 2, 3; stage 3: block 2; stage 4: blocks 2..4 */
            CHECK(adds == 8, "%d residual adds, want 8", adds);
            CHECK(muls == 3, "%d SE blocks, want 3", muls);
            /* stem 1 + head 1 + per block (2 or 3) + 2 per SE */
            CHECK(convs == 2 + (2 + 3) + (3 + 3 + 2) + (3 + 3) + (3 + 3 + 2 + 3) + 2 * 3, "%d convs", convs);
            spec_free(&sp);
        } else {
            CHECK(0, "spec does not parse: %s", e.msg);
        }
        free(text);
    }
    /* Inactive settings survive the arch string; the canonical one drops them. */
    space_sample(s, &r, m);
    m[2] = 0; /* stage 1 depth 2 ... */
    m[3 + 3 * 3] = 2, m[3 + 3 * 3 + 1] = 3; /* ... block 4 kernel 7, expansion 6 (inactive) */
    char *a1 = s->ops->to_arch(s, m);
    CHECK(strchr(a1, '/') != NULL, "inactive settings missing from %s", a1);
    check_roundtrips(s, m, 1, 28);
    free(a1);

    /* Bad arch strings. */
    static const struct {
        const char *arch, *want;
    } bad[] = {
        {"nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "expected 'macro:r"},
        {"macro:r32:w1.0:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "resolution 32 is not one of the space's (20,24,28)"},
        {"macro:r28:w0.6:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "width 0.6 is not one of"},
        {"macro:r28:w1.0:k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "depth 1"},
        {"macro:r28:w1.0:k3e1,k3e1,k3e1,k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "more than its 4 possible blocks"},
        {"macro:r28:w1.0:k4e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "kernel must be one of 3,5,7"},
        {"macro:r28:w1.0:k3e2,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "expansion must be one of 1,3,4,6"},
        {"macro:r28:w1.0:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "expected '|' and stage 4"},
        {"macro:r28:w1.0:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "after the last stage"},
        {"macro:r28:w1.0:k3e1,k3e1/k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "inactive blocks after '/', expected 2"},
        {"macro:r28:w1.0:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1x", "after the last stage"},
        {"macro:r28:k3e1,k3e1|k3e1,k3e1|k3e1,k3e1|k3e1,k3e1", "expected 'w<width>'"},
        {"macro:r:w1.0:", "expected a resolution"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Err e2 = {{0}};
        rc = s->ops->from_arch(s, bad[i].arch, m, &e2);
        CHECK(rc == NASC_ERR, "'%s' should not parse", bad[i].arch);
        if (rc == NASC_ERR) CHECK(strstr(e2.msg, bad[i].want), "error for '%s' is '%s', want '%s'", bad[i].arch, e2.msg, bad[i].want);
    }
    space_free(s);

    /* A tiny space: chi-square over all its raw members, and enumeration. */
    s = open_ok("macro:channels=8,depth=1,2,kernel=3,5,expand=1,3,se=0,width=1.0,res=0", 0, 0);
    CHECK(s->ndims == 2 + 1 + 2 * 3 && space_size(s) == 2 * 2 * 2 * 2 * 2, "tiny macro: %d dims, size %.0f", s->ndims,
          space_size(s));
    check_uniform(s, &r, 500);
    double n = space_size(s);
    for (double i = 0; i < n; i++) {
        CHECK(space_member_at(s, i, m) == NASC_OK, "member_at(%.0f)", i);
        check_roundtrips(s, m, 1, 16);
    }
    CHECK(space_member_at(s, n, m) == NASC_ERR, "member_at past the end");
    /* Canonical classes: depth 1 (2 kernels x 2 expansions) + depth 2 (16) = 20. */
    char *seen[64];
    int nseen = 0;
    for (double i = 0; i < n; i++) {
        space_member_at(s, i, m);
        char *ca = space_canonical_arch(s, m);
        int dup = 0;
        for (int j = 0; j < nseen; j++) dup |= strcmp(seen[j], ca) == 0;
        if (dup) free(ca);
        else seen[nseen++] = ca;
    }
    CHECK(nseen == 20, "tiny macro: %d canonical members, want 20", nseen);
    for (int j = 0; j < nseen; j++) free(seen[j]);
    space_free(s);

    /* The custom space of the reference counts opens and builds. */
    s = open_ok(MACRO_CUSTOM, 0, 0);
    for (int t = 0; t < 10; t++) {
        space_sample(s, &r, m);
        check_roundtrips(s, m, 3, 32);
    }
    check_mutate_crossover(s, &r, 100);
    space_free(s);
}

/* ------------------------------------------------------------------ config and open errors */
static void expect_open_error(const char *name, const char *want) {
    Err e = {{0}};
    Space *s = space_open(name, 0, 0, &e);
    CHECK(s == NULL, "space '%s' should not open", name);
    if (s) space_free(s);
    else CHECK(strstr(e.msg, want) != NULL, "error for '%s' is '%s', want '%s'", name, e.msg, want);
}

static char *write_temp(const char *text) {
    char *path = xstrdup("/tmp/nasc_test_space_XXXXXX");
    int fd = mkstemp(path);
    NASC_ASSERT(fd >= 0);
    NASC_ASSERT(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_config(void) {
    expect_open_error("nb2O1", "neither a space name");
    expect_open_error("", "no space given");
    expect_open_error("macro:depth=1,2,depth=3", "column 17: 'depth' given twice");
    expect_open_error("macro:kernel=3,4", "column 16: kernel sizes must be odd, got 4");
    expect_open_error("macro:colour=3", "column 7: unknown key 'colour'");
    expect_open_error("macro:width=0.5,0.5", "'width' lists 0.5 twice");
    expect_open_error("macro:width=0", "'width' takes multipliers in (0, 4]");
    expect_open_error("macro:acts=relu,tanh", "unknown activation 'tanh'");
    expect_open_error("macro:acts=relu,relu,relu", "'acts' has 3 values but there are 4 stages");
    expect_open_error("macro:depth.5=1", "'depth.5': there are only 4 stages");
    expect_open_error("macro:stem.2=8", "only depth, kernel, expand and se take a stage number");
    expect_open_error("macro:depth.x=1", "bad stage number");
    expect_open_error("macro:3,4", "expected KEY=VALUE, found '3'");
    expect_open_error("macro:depth=", "'depth' needs a value");
    expect_open_error("macro:se=0,2", "'se' takes whole numbers from 0 to 1, got '2'");
    expect_open_error("macro:expand=2.5", "'expand' takes whole numbers");
    expect_open_error("macro:stem=8,16", "'stem' takes one value, got 2");
    expect_open_error("macro:strides=1,3", "'strides' takes whole numbers from 1 to 2");
    expect_open_error("macro:depth=16,channels=8,8,8,8,8,8", "more than the 256");
    expect_open_error("macro:res=28 $", "unexpected character '$'");
    expect_open_error("macro:=3", "'=' without a key");

    /* A config file, with line and column positions in its errors. */
    char *good = write_temp("# a small macro space\nmacro\nchannels = 8 16   # two stages\nstrides = 1, 2\n"
                            "depth = 1 2; kernel = 3\nexpand=1,6\nse=0\nwidth=1.0\nres=0\nhead=32\n");
    Err e = {{0}};
    Space *s = space_open(good, 0, 0, &e);
    CHECK(s != NULL, "macro file does not open: %s", e.msg);
    if (s) {
        CHECK(s->ndims == 2 + 2 * (1 + 3 * 2), "macro file: %d decisions", s->ndims);
        CHECK(s->card[2] == 2 && s->card[3] == 1 && s->card[4] == 2 && s->card[5] == 1, "macro file: cardinalities");
        int m[SPACE_MAX_DIMS];
        Rng r;
        rng_seed(&r, 3);
        space_sample(s, &r, m);
        check_roundtrips(s, m, 1, 28);
        space_free(s);
    }
    unlink(good);
    free(good);
    char *bad = write_temp("macro\nchannels = 8 16\n\nkernel = 3 6\n");
    s = space_open(bad, 0, 0, &e);
    CHECK(s == NULL, "bad macro file opens");
    if (!s) {
        char want[512];
        snprintf(want, sizeof want, "%s: line 4, column 12: kernel sizes must be odd, got 6", bad);
        CHECK(strstr(e.msg, want) != NULL, "macro file error is '%s', want '%s'", e.msg, want);
    } else {
        space_free(s);
    }
    unlink(bad);
    free(bad);
    bad = write_temp("macro\nchannels = 8 16\ndepth = 1 2\n  kernel 3\n");
    s = space_open(bad, 0, 0, &e);
    CHECK(s == NULL && strstr(e.msg, "line 4, column 3: unknown key") == NULL && strstr(e.msg, "line 4, column 3"),
          "a key without '=' reports its position, got '%s'", e.msg);
    if (s) space_free(s);
    unlink(bad);
    free(bad);
    /* nb201 skeleton limits */
    CHECK(space_open("nb201", 5000, 1, &e) == NULL && strstr(e.msg, "--channels"), "nb201 channels limit: %s", e.msg);
}

/* ------------------------------------------------------------------ PyTorch counts */
typedef struct {
    const char *space;
    int channels, cells, in_c, hw, count;
    uint64_t seed;
} MemberSet;

/* The members of the reference file: drawn with fixed seeds, printed by --print-members. */
static const MemberSet member_sets[] = {
    {"nb201", 16, 1, 1, 28, 14, 101},
    {"nb201", 8, 2, 3, 32, 8, 102},
    {"macro", 0, 0, 1, 28, 16, 201},
    {"macro", 0, 0, 3, 32, 8, 202},
    {MACRO_CUSTOM, 0, 0, 3, 32, 8, 203},
};

static void print_members(void) {
    for (size_t k = 0; k < sizeof member_sets / sizeof member_sets[0]; k++) {
        const MemberSet *ms = &member_sets[k];
        Space *s = open_ok(ms->space, ms->channels, ms->cells);
        Rng r;
        rng_seed(&r, ms->seed);
        for (int i = 0; i < ms->count; i++) {
            int m[SPACE_MAX_DIMS];
            space_sample(s, &r, m);
            char *arch = s->ops->to_arch(s, m);
            printf("%s %d %d %s %dx%dx%d 10\n", ms->space, ms->channels, ms->cells, arch, ms->in_c, ms->hw, ms->hw);
            free(arch);
        }
        space_free(s);
    }
}

static void test_torch_counts(void) {
    FILE *f = fopen(REF_FILE, "r");
    CHECK(f != NULL, "cannot open %s (run from the repository root)", REF_FILE);
    if (!f) return;
    char line[4096];
    int n_nb = 0, n_macro = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char space[1024], arch[2048];
        int channels, cells, in_c, h, w, classes;
        unsigned long long params;
        double macs;
        if (sscanf(line, "%1023s %d %d %2047s %dx%dx%d %d %llu %lf", space, &channels, &cells, arch, &in_c, &h, &w,
                   &classes, &params, &macs) != 10) {
            CHECK(0, "%s:%d: cannot read the line", REF_FILE, lineno);
            continue;
        }
        Err e = {{0}};
        Space *s = space_open(space, channels, cells, &e);
        CHECK(s != NULL, "%s:%d: space %s: %s", REF_FILE, lineno, space, e.msg);
        if (!s) continue;
        int m[SPACE_MAX_DIMS];
        Spec sp;
        Net net;
        char *text = NULL;
        if (s->ops->from_arch(s, arch, m, &e) != NASC_OK || !(text = s->ops->to_spec(s, m, &e)) ||
            spec_parse(&sp, text, s->channels, s->cells, &e) != NASC_OK) {
            CHECK(0, "%s:%d: %s: %s", REF_FILE, lineno, arch, e.msg);
        } else {
            if (net_build(&net, &sp, in_c, h, w, classes, &e) != NASC_OK) {
                CHECK(0, "%s:%d: %s does not build: %s", REF_FILE, lineno, arch, e.msg);
            } else {
                CHECK(net_param_count(&net) == params, "%s:%d: %s: %zu parameters, PyTorch %llu", REF_FILE, lineno, arch,
                      net_param_count(&net), params);
                CHECK(net_macs(&net) == macs, "%s:%d: %s: %.0f MACs, PyTorch %.0f", REF_FILE, lineno, arch, net_macs(&net),
                      macs);
                if (strncmp(space, "nb201", 5) == 0) n_nb++;
                else n_macro++;
                net_free(&net);
            }
            spec_free(&sp);
        }
        free(text);
        space_free(s);
    }
    fclose(f);
    printf("  PyTorch counts: %d nb201 cells, %d macro members\n", n_nb, n_macro);
    CHECK(n_nb >= 20 && n_macro >= 20, "too few reference members: %d nb201, %d macro", n_nb, n_macro);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--print-members") == 0) {
        print_members();
        return 0;
    }
    test_nb201();
    test_macro();
    test_config();
    test_torch_counts();
    return check_summary("test_space");
}
