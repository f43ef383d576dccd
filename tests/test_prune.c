/* test_prune.c: structured and unstructured pruning.
 *
 * Structured: for resnet8, mbv2, an NB201 cell using every edge op, and hand-written specs
 * with concat + SE mul + depthwise + residual add (a concat added to a conv output) and a
 * linear reading a C x H x W tensor, pruning at 50% must give a net that builds, whose
 * parameter and MAC counts equal the plan's prediction and drop, whose outputs (eval mode,
 * random inputs) equal the masked original's, whose spec round-trips through print/parse and
 * which saves and loads as an ordinary model file. Hand-computed cases check which channels a
 * criterion keeps; bad ratios and unprunable nets give clear errors.
 * Unstructured: exact sparsity layer-wise and globally, smallest magnitudes first, masks that
 * survive momentum SGD steps through the on_step hook, the AGP schedule at hand-computed
 * steps, and a short train_run with the hook. */
#include <math.h>
#include <unistd.h>

#include "../src/compress/prune.h"
#include "check.h"

#define IN_C 1
#define IN_HW 28
#define CLASSES 10

static int build(Net *net, const char *text, int channels, int cells) {
    Err e;
    Spec s;
    if (spec_parse(&s, text, channels, cells, &e) != NASC_OK) {
        CHECK(0, "parse '%.40s': %s", text, e.msg);
        return NASC_ERR;
    }
    int rc = net_build(net, &s, IN_C, IN_HW, IN_HW, CLASSES, &e);
    CHECK(rc == NASC_OK, "build '%.40s': %s", text, e.msg);
    spec_free(&s);
    return rc;
}

/* Random weights and BN parameters/statistics, so that every channel carries a distinct
 * signal (BN's defaults would make gamma-based ranking and masking trivial). */
static void randomize(Net *net, uint64_t seed) {
    net_init_params(net, seed);
    Rng r;
    rng_seed(&r, seed ^ 0xabcdu);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN) continue;
        float *g = net->params + nd->param_off, *m = net->buffers + nd->buf_off;
        for (int j = 0; j < nd->c; j++) {
            g[j] = rng_uniformf(&r, 0.2f, 1.5f) * (rng_uniform(&r) < 0.2 ? -1.0f : 1.0f);
            g[nd->c + j] = rng_uniformf(&r, -0.3f, 0.3f);
            m[j] = rng_uniformf(&r, -0.2f, 0.2f);
            m[nd->c + j] = rng_uniformf(&r, 0.5f, 2.0f);
        }
    }
}

static void net_clone(Net *dst, const Net *src) {
    Err e;
    int rc = net_build(dst, &src->spec, src->in_c, src->in_h, src->in_w, src->classes, &e);
    NASC_ASSERT(rc == NASC_OK);
    memcpy(dst->params, src->params, src->nparams * sizeof(float));
    memcpy(dst->buffers, src->buffers, src->nbuffers * sizeof(float));
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *scale) {
    double d = 0, s = 0;
    for (size_t j = 0; j < n; j++) {
        d = fmax(d, fabs((double)a[j] - b[j]));
        s = fmax(s, fabs((double)b[j]));
    }
    if (scale) *scale = s;
    return d;
}

/* Prune `text` at `ratio` and check everything the file comment lists. Returns the report. */
static PruneReport check_structured(const char *label, const char *text, int channels, int cells, PruneCriterion crit,
                                    float ratio) {
    PruneReport rep = {0};
    Net net, masked, pruned;
    if (build(&net, text, channels, cells) != NASC_OK) return rep;
    randomize(&net, 7);
    Err e;
    PrunePlan plan;
    if (prune_plan(&net, crit, ratio, &plan, &e) != NASC_OK) {
        CHECK(0, "%s: prune_plan: %s", label, e.msg);
        net_free(&net);
        return rep;
    }
    int rc = prune_plan_apply(&net, &plan, &pruned, &rep, &e);
    CHECK(rc == NASC_OK, "%s: prune_plan_apply: %s", label, e.msg);
    if (rc != NASC_OK) {
        prune_plan_free(&plan);
        net_free(&net);
        return rep;
    }
    net_clone(&masked, &net);
    prune_plan_mask(&masked, &plan);

    CHECK(rep.params_after == rep.params_predicted, "%s: params %zu, predicted %zu", label, rep.params_after,
          rep.params_predicted);
    CHECK(rep.macs_after == rep.macs_predicted, "%s: MACs %.0f, predicted %.0f", label, rep.macs_after,
          rep.macs_predicted);
    CHECK(rep.params_after == net_param_count(&pruned) && rep.macs_after == net_macs(&pruned), "%s: report", label);
    CHECK(rep.params_after < rep.params_before && rep.macs_after < rep.macs_before, "%s: nothing dropped", label);
    CHECK(pruned.spec.arch == NULL, "%s: pruned spec keeps an arch shorthand", label);

    /* Outputs: pruned == masked original, and != the unmasked original (masking did something). */
    int B = 3;
    size_t nx = (size_t)B * IN_C * IN_HW * IN_HW, ny = (size_t)B * CLASSES;
    float *x = xmalloc(nx * sizeof *x), *y_masked = xmalloc(ny * sizeof(float)), *y_orig = xmalloc(ny * sizeof(float));
    Rng r;
    rng_seed(&r, 99);
    for (size_t j = 0; j < nx; j++) x[j] = (float)rng_normal(&r);
    memcpy(y_orig, net_forward(&net, x, B, 0), ny * sizeof(float));
    memcpy(y_masked, net_forward(&masked, x, B, 0), ny * sizeof(float));
    const float *y_pruned = net_forward(&pruned, x, B, 0);
    double scale, diff = max_abs_diff(y_pruned, y_masked, ny, &scale);
    double moved = max_abs_diff(y_orig, y_masked, ny, NULL);
    CHECK(diff <= 1e-5 * fmax(scale, 1e-3), "%s: pruned vs masked outputs differ by %g (scale %g)", label, diff, scale);
    CHECK(moved > 1e-4 * scale, "%s: masking did not change the outputs (%g)", label, moved);
    printf("%-10s params %7zu -> %7zu (predicted %7zu)  MACs %10.0f -> %10.0f (predicted %10.0f)  "
           "spaces %d pruned %d  max|pruned - masked| %.3g (outputs up to %.3g)\n",
           label, rep.params_before, rep.params_after, rep.params_predicted, rep.macs_before, rep.macs_after,
           rep.macs_predicted, rep.groups, rep.groups_pruned, diff, scale);

    /* The pruned spec round-trips and is an ordinary model file. */
    char *text1 = spec_print(&pruned.spec);
    Spec s2;
    if (spec_parse(&s2, text1, 16, 1, &e) == NASC_OK) {
        char *text2 = spec_print(&s2);
        CHECK(!strcmp(text1, text2), "%s: print/parse/print differs:\n%s\n%s", label, text1, text2);
        free(text2);
        spec_free(&s2);
    } else {
        CHECK(0, "%s: pruned spec does not parse: %s\n%s", label, e.msg, text1);
    }
    free(text1);
    char path[] = "/tmp/nasc_test_prune_XXXXXX";
    int fd = mkstemp(path);
    NASC_ASSERT(fd >= 0);
    close(fd);
    Net loaded;
    if (model_save(path, &pruned, NULL, &e) == NASC_OK && model_load(path, &loaded, NULL, &e) == NASC_OK) {
        CHECK(loaded.nparams == pruned.nparams, "%s: loaded param count", label);
        const float *y_loaded = net_forward(&loaded, x, B, 0);
        y_pruned = net_forward(&pruned, x, B, 0);
        CHECK(!memcmp(y_loaded, y_pruned, ny * sizeof(float)), "%s: loaded model gives other outputs", label);
        net_free(&loaded);
    } else {
        CHECK(0, "%s: save/load: %s", label, e.msg);
    }
    unlink(path);

    free(x);
    free(y_masked);
    free(y_orig);
    net_free(&pruned);
    net_free(&masked);
    prune_plan_free(&plan);
    net_free(&net);
    return rep;
}

/* Concat of two branches, a depthwise conv over the concat, an SE block (gap, conv, relu, conv,
 * hsigmoid, mul) and a residual add of a conv output with the concat: its 10 channels span
 * two producers, so units cross spaces. */
static const char concat_se_spec[] =
    "conv(c=8,k=3);bn;a=relu;"
    "conv(a,c=6,k=1);bn;b=relu;"
    "conv(a,c=4,k=3);bn;c=hswish;"
    "cat=concat(b,c);"
    "conv(c=10,k=3,g=10);bn;d=relu6;"
    "gap;conv(c=4,k=1,bias=1);relu;conv(c=10,k=1,bias=1);s=hsigmoid;"
    "m=mul(d,s);"
    "conv(m,c=10,k=1);bn;r=add(_,cat);"
    "conv(r,c=12,k=1);bn;relu;gap;linear";

/* A linear reading a C x H x W tensor (one H*W block per channel), resize, avgpool, a hidden
 * linear with BN1d and dropout. */
static const char linear_spec[] =
    "conv(c=6,k=3,s=2,bias=1);bn;relu;resize(s=10);avgpool(k=2);linear(c=12);bn;relu;dropout;linear";

static const char nb201_all_ops[] =
    "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|";

static void test_structured(void) {
    PruneReport r;
    r = check_structured("resnet8", zoo_lookup("resnet8"), 16, 1, PRUNE_L1, 0.5f);
    /* Six spaces (stem+block 1 residual, block 1 inner, block 2 inner and residual, block 3
     * inner and residual), all halved: the same counts as resnet8 at half width. */
    CHECK(r.groups_pruned == 6 && r.units_prunable == 16 + 16 + 32 + 32 + 64 + 64 && r.units_kept == r.units_prunable / 2,
          "resnet8: %d spaces pruned, %d -> %d channels", r.groups_pruned, r.units_prunable, r.units_kept);
    {
        Net half;
        if (build(&half,
                  "conv(c=8,k=3);bn;x0=relu;"
                  "conv(c=8,k=3);bn;relu;conv(c=8,k=3);bn;add(_,x0);x1=relu;"
                  "conv(c=16,k=3,s=2);bn;relu;conv(c=16,k=3);b2=bn;conv(x1,c=16,k=1,s=2);bn;add(b2,_);x2=relu;"
                  "conv(c=32,k=3,s=2);bn;relu;conv(c=32,k=3);b3=bn;conv(x2,c=32,k=1,s=2);bn;add(b3,_);relu;"
                  "gap;linear",
                  16, 1) == NASC_OK) {
            CHECK(net_param_count(&half) == r.params_after && net_macs(&half) == r.macs_after,
                  "resnet8 at 50%%: %zu params %.0f MACs, half-width resnet8 has %zu and %.0f", r.params_after,
                  r.macs_after, net_param_count(&half), net_macs(&half));
            net_free(&half);
        }
    }
    r = check_structured("mbv2", zoo_lookup("mbv2"), 16, 1, PRUNE_L2, 0.5f);
    CHECK(r.units_kept * 2 == r.units_prunable, "mbv2: %d -> %d channels", r.units_prunable, r.units_kept);
    r = check_structured("nb201", nb201_all_ops, 8, 2, PRUNE_BN, 0.5f);
    /* Three stages tied through the cells' adds, plus the first conv of each reduction. */
    CHECK(r.groups_pruned == 5 && r.units_prunable == 8 + 16 + 32 + 16 + 32 && r.units_kept * 2 == r.units_prunable,
          "nb201: %d spaces pruned, %d -> %d channels", r.groups_pruned, r.units_prunable, r.units_kept);
    r = check_structured("concat+se", concat_se_spec, 16, 1, PRUNE_L1, 0.5f);
    /* a (8), the concat/depthwise/SE-scale/residual space (10), the SE hidden conv (4), the last conv (12). */
    CHECK(r.groups_pruned == 4 && r.units_prunable == 34 && r.units_kept == 17, "concat+se: %d spaces, %d -> %d",
          r.groups_pruned, r.units_prunable, r.units_kept);
    r = check_structured("concat+bn", concat_se_spec, 16, 1, PRUNE_BN, 0.3f);
    CHECK(r.units_kept == 6 + 7 + 3 + 8, "concat+bn at 30%%: kept %d", r.units_kept);
    r = check_structured("linear", linear_spec, 16, 1, PRUNE_L2, 0.5f);
    CHECK(r.groups_pruned == 2 && r.units_prunable == 18 && r.units_kept == 9, "linear: %d spaces, %d -> %d",
          r.groups_pruned, r.units_prunable, r.units_kept);
    /* A sigmoid read by a conv fixes its channels; the conv after it still prunes. */
    r = check_structured("sigmoid", "conv(c=8,k=3);sigmoid;conv(c=6,k=1);bn;relu;gap;linear", 16, 1, PRUNE_L1, 0.5f);
    CHECK(r.groups_pruned == 1 && r.units_prunable == 6 && r.units_kept == 3, "sigmoid: %d spaces, %d -> %d",
          r.groups_pruned, r.units_prunable, r.units_kept);
    /* A grouped conv fixes both its ends; the convs around them still prune. */
    r = check_structured("grouped", "conv(c=6,k=3);bn;relu;conv(c=8,k=3);bn;relu;conv(c=8,k=3,g=2);bn;relu;"
                                    "conv(c=8,k=1);bn;relu;gap;linear",
                         16, 1, PRUNE_L1, 0.5f);
    CHECK(r.groups_pruned == 2 && r.units_prunable == 14 && r.units_kept == 7, "grouped: %d spaces, %d -> %d",
          r.groups_pruned, r.units_prunable, r.units_kept);
}

/* Which channels survive, by hand. */
static void test_choice(void) {
    Net net;
    if (build(&net, "conv(c=4,k=1,bias=1);bn;relu;gap;linear", 16, 1) != NASC_OK) return;
    float *w = net.params + net.spec.nodes[0].param_off;
    float *gamma = net.params + net.spec.nodes[1].param_off;
    const float wv[4] = {0.1f, -3.0f, 2.0f, 0.5f}, gv[4] = {1.0f, 0.1f, -2.0f, 0.3f};
    memcpy(w, wv, sizeof wv);
    memcpy(gamma, gv, sizeof gv);
    Err e;
    PrunePlan plan;
    int idx[CLASSES];
    CHECK(prune_plan(&net, PRUNE_L1, 0.5f, &plan, &e) == NASC_OK, "plan: %s", e.msg);
    CHECK(prune_plan_kept(&net, &plan, 0, idx) == 2 && idx[0] == 1 && idx[1] == 2, "L1 keeps |w| 3 and 2");
    CHECK(prune_plan_kept(&net, &plan, 2, idx) == 2 && idx[0] == 1 && idx[1] == 2, "relu follows the conv");
    CHECK(prune_plan_kept(&net, &plan, 4, idx) == CLASSES, "classifier keeps its outputs");
    prune_plan_free(&plan);
    CHECK(prune_plan(&net, PRUNE_BN, 0.5f, &plan, &e) == NASC_OK, "plan: %s", e.msg);
    CHECK(prune_plan_kept(&net, &plan, 0, idx) == 2 && idx[0] == 0 && idx[1] == 2, "BN keeps |gamma| 1 and 2");
    prune_plan_free(&plan);
    /* 4 * (1 - 0.6) = 1.6 rounds to 2; 4 * (1 - 0.9) = 0.4 rounds to 0, kept at 1. */
    CHECK(prune_plan(&net, PRUNE_L1, 0.9f, &plan, &e) == NASC_OK, "plan: %s", e.msg);
    CHECK(prune_plan_kept(&net, &plan, 0, idx) == 1 && idx[0] == 1, "at 90%% one channel stays");
    prune_plan_free(&plan);
    /* Equal importance: the lower indices stay. */
    for (int j = 0; j < 4; j++) w[j] = 1.0f;
    CHECK(prune_plan(&net, PRUNE_L2, 0.6f, &plan, &e) == NASC_OK, "plan: %s", e.msg);
    CHECK(prune_plan_kept(&net, &plan, 0, idx) == 2 && idx[0] == 0 && idx[1] == 1, "ties keep lower indices");
    prune_plan_free(&plan);
    /* The pruned net holds exactly the kept channels' weights. */
    w[0] = 0.25f, w[1] = -4.0f, w[2] = 0.5f, w[3] = 3.0f;
    Net out;
    PruneReport rep;
    if (prune_channels(&net, PRUNE_L1, 0.5f, &out, &rep, &e) == NASC_OK) {
        const float *nw = out.params + out.spec.nodes[0].param_off;
        const float *ob = net.params + net.spec.nodes[0].param_off + 4;
        CHECK(out.spec.nodes[0].a.c == 2 && nw[0] == -4.0f && nw[1] == 3.0f && nw[2] == ob[1] && nw[3] == ob[3],
              "pruned conv weights/bias");
        const Node *lo = &out.spec.nodes[4], *li = &net.spec.nodes[4];
        const float *lw = out.params + lo->param_off, *liw = net.params + li->param_off;
        CHECK(lw[0] == liw[1] && lw[1] == liw[3] && lw[2] == liw[4 + 1] && lw[2 * 10] == liw[4 * 10],
              "classifier columns sliced, bias kept");
        net_free(&out);
    } else {
        CHECK(0, "prune_channels: %s", e.msg);
    }
    /* prune_channels_mask zeroes the pruned filters, bias and BN gamma/beta. */
    net.params[net.spec.nodes[1].param_off + 4] = 0.7f; /* beta of channel 0 */
    CHECK(prune_channels_mask(&net, PRUNE_L1, 0.5f, &e) == NASC_OK, "mask: %s", e.msg);
    CHECK(w[0] == 0 && w[2] == 0 && w[4] == 0 && w[6] == 0 && w[1] == -4.0f && w[3] == 3.0f, "masked conv");
    CHECK(gamma[0] == 0 && gamma[4] == 0 && gamma[2] == 0 && gamma[1] == gv[1], "masked BN");
    net_free(&net);
}

static void expect_plan_error(const char *text, float ratio, const char *want) {
    Net net;
    if (build(&net, text, 16, 1) != NASC_OK) return;
    Err e = {{0}};
    PrunePlan plan;
    Net out;
    int rc = prune_plan(&net, PRUNE_L1, ratio, &plan, &e);
    CHECK(rc == NASC_ERR, "'%.40s' at %g should fail", text, (double)ratio);
    if (rc == NASC_OK) prune_plan_free(&plan);
    else CHECK(strstr(e.msg, want) != NULL, "error '%s' should contain '%s'", e.msg, want);
    e.msg[0] = 0;
    rc = prune_channels(&net, PRUNE_L1, ratio, &out, NULL, &e);
    CHECK(rc == NASC_ERR && strstr(e.msg, want) != NULL, "prune_channels: '%s'", e.msg);
    if (rc == NASC_OK) net_free(&out);
    net_free(&net);
}

static void test_errors(void) {
    const char *small = zoo_lookup("small");
    const float bad[] = {0.0f, 1.0f, -0.5f, 1.5f, NAN, INFINITY};
    for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++)
        expect_plan_error(small, bad[j], "pruning ratio must be in (0, 1)");
    expect_plan_error(small, 0.005f, "removes no channel");
    expect_plan_error("gap;linear", 0.5f, "nothing to prune");
    expect_plan_error("conv(c=1,k=3);add(_,input);gap;linear", 0.5f, "tied to the network's input or output");
    expect_plan_error("conv(c=8,k=3);bn;relu;conv(c=8,k=3,g=2);bn;relu;gap;linear", 0.5f, "grouped conv");
    expect_plan_error("conv(c=8,k=3);sigmoid;gap;linear", 0.5f, "sigmoid");
    PruneCriterion c;
    Err e;
    CHECK(prune_criterion_parse("bn", &c, &e) == NASC_OK && c == PRUNE_BN, "parse bn");
    CHECK(prune_criterion_parse("l3", &c, &e) == NASC_ERR && strstr(e.msg, "l1, l2 or bn"), "parse l3");
}

/* ------------------------------------------------------------------ unstructured */
static size_t masked_in(const Net *net, const unsigned char *m, size_t lo, size_t hi) {
    size_t z = 0;
    for (size_t j = lo; j < hi; j++) z += !m[j];
    return z;
}

static void weight_span(const Node *nd, size_t *lo, size_t *hi) {
    *lo = nd->param_off;
    *hi = nd->param_off + nd->nparam - (nd->a.bias ? (size_t)nd->c : 0);
}

static void test_magnitude(void) {
    Net net;
    if (build(&net, zoo_lookup("small"), 16, 1) != NASC_OK) return;
    randomize(&net, 3);
    float *orig = xmalloc(net.nparams * sizeof *orig);
    memcpy(orig, net.params, net.nparams * sizeof *orig);
    unsigned char *m = prune_masks_new(&net);
    Err e;
    CHECK(prune_weights_magnitude(&net, m, 1.0f, PRUNE_LAYERWISE, &e) == NASC_ERR && strstr(e.msg, "[0, 1)"),
          "sparsity 1 refused");
    CHECK(prune_weights_magnitude(&net, m, NAN, PRUNE_GLOBAL, &e) == NASC_ERR, "sparsity NaN refused");

    /* Layer-wise: exactly round(0.3 n) per layer, the smallest ones. */
    CHECK(prune_weights_magnitude(&net, m, 0.3f, PRUNE_LAYERWISE, &e) == NASC_OK, "layerwise: %s", e.msg);
    size_t total = 0, total_z = 0;
    for (int i = 0; i < net.spec.n; i++) {
        const Node *nd = &net.spec.nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        size_t lo, hi;
        weight_span(nd, &lo, &hi);
        size_t z = masked_in(&net, m, lo, hi), want = (size_t)floor(0.3 * (double)(hi - lo) + 0.5);
        CHECK(z == want, "layer %d: %zu masked, want %zu", i, z, want);
        CHECK_CLOSE(prune_sparsity(&net, m, i), (double)want / (double)(hi - lo), 0, 1e-12, "prune_sparsity(layer)");
        float max_masked = 0, min_kept = INFINITY;
        for (size_t j = lo; j < hi; j++) {
            if (!m[j]) max_masked = fmaxf(max_masked, fabsf(orig[j]));
            else min_kept = fminf(min_kept, fabsf(orig[j]));
            if (!m[j]) CHECK(net.params[j] == 0.0f, "masked weight %zu not zero", j);
        }
        CHECK(max_masked <= min_kept, "layer %d: masked |w| up to %g but kept from %g", i, max_masked, min_kept);
        total += hi - lo, total_z += z;
    }
    CHECK_CLOSE(prune_sparsity(&net, m, -1), (double)total_z / (double)total, 0, 1e-12, "prune_sparsity(global)");
    for (size_t j = 0; j < net.nparams; j++)
        if (!prune_is_weight(&net, j)) CHECK(m[j] == 1 && net.params[j] == orig[j], "non-weight %zu touched", j);

    /* Growing the sparsity keeps what was masked. */
    unsigned char *before = xmalloc(net.nparams);
    memcpy(before, m, net.nparams);
    CHECK(prune_weights_magnitude(&net, m, 0.5f, PRUNE_LAYERWISE, &e) == NASC_OK, "layerwise 0.5");
    size_t revived = 0;
    for (size_t j = 0; j < net.nparams; j++) revived += !before[j] && m[j];
    CHECK(revived == 0, "%zu weights revived", revived);
    free(before);

    /* Global: exactly round(0.6 N) over all layers, the smallest anywhere. */
    memset(m, 1, net.nparams);
    memcpy(net.params, orig, net.nparams * sizeof *orig);
    CHECK(prune_weights_magnitude(&net, m, 0.6f, PRUNE_GLOBAL, &e) == NASC_OK, "global");
    size_t z = 0;
    float max_masked = 0, min_kept = INFINITY;
    for (size_t j = 0; j < net.nparams; j++) {
        if (!prune_is_weight(&net, j)) continue;
        z += !m[j];
        if (!m[j]) max_masked = fmaxf(max_masked, fabsf(orig[j]));
        else min_kept = fminf(min_kept, fabsf(orig[j]));
    }
    CHECK(z == (size_t)floor(0.6 * (double)total + 0.5), "global: %zu masked of %zu", z, total);
    CHECK(max_masked <= min_kept, "global: masked |w| up to %g but kept from %g", max_masked, min_kept);
    /* Global pruning does not prune every layer equally (the layers' scales differ). */
    int differ = 0;
    for (int i = 0; i < net.spec.n; i++)
        if (net.spec.nodes[i].op == OP_CONV && fabs(prune_sparsity(&net, m, i) - 0.6) > 0.02) differ = 1;
    CHECK(differ, "global pruning gave every conv layer the same sparsity");

    /* Masks survive momentum SGD steps through the hook. */
    PruneHook h;
    CHECK(prune_hook_init(&h, &net, m, NULL, PRUNE_GLOBAL, &e) == NASC_OK, "hook init");
    OptConfig oc = optim_defaults(OPT_SGD);
    oc.momentum = 0.9f;
    oc.wd = 1e-3f;
    Optim opt;
    optim_init(&opt, &oc, net.nparams);
    Rng r;
    rng_seed(&r, 5);
    int moved_masked = 0, moved_kept = 0;
    for (int step = 0; step < 3; step++) {
        for (size_t j = 0; j < net.nparams; j++) net.grads[j] = (float)rng_normal(&r);
        float *prev = xmalloc(net.nparams * sizeof *prev);
        memcpy(prev, net.params, net.nparams * sizeof *prev);
        optim_step(&opt, net.params, net.grads, 0.1f);
        for (size_t j = 0; j < net.nparams; j++) {
            if (!m[j] && net.params[j] != 0.0f) moved_masked = 1;
            if (m[j] && net.params[j] != prev[j]) moved_kept = 1;
        }
        free(prev);
        TrainProgress p = {0};
        prune_on_step(&h, &p);
        size_t nonzero = 0;
        for (size_t j = 0; j < net.nparams; j++) nonzero += !m[j] && net.params[j] != 0.0f;
        CHECK(nonzero == 0, "step %d: %zu masked weights nonzero after the hook", step, nonzero);
    }
    CHECK(moved_masked && moved_kept, "the optimizer should move weights (masked %d, kept %d)", moved_masked,
          moved_kept);
    CHECK(h.step == 3, "hook counted %ld steps", h.step);
    optim_free(&opt);
    free(m);
    free(orig);
    net_free(&net);
}

static void test_agp(void) {
    AgpSchedule s = {.s_init = 0.0f, .s_final = 0.8f, .t0 = 10, .n = 4, .dt = 5};
    /* s_t = 0.8 - 0.8 (1 - (t - 10)/20)^3 */
    CHECK_CLOSE(prune_agp_sparsity(&s, 0), 0.0, 0, 0, "agp before t0");
    CHECK_CLOSE(prune_agp_sparsity(&s, 10), 0.0, 1e-7, 0, "agp t0");
    CHECK_CLOSE(prune_agp_sparsity(&s, 15), 0.4625, 1e-6, 0, "agp t0+dt");
    CHECK_CLOSE(prune_agp_sparsity(&s, 20), 0.7, 1e-6, 0, "agp t0+2dt");
    CHECK_CLOSE(prune_agp_sparsity(&s, 25), 0.7875, 1e-6, 0, "agp t0+3dt");
    CHECK_CLOSE(prune_agp_sparsity(&s, 30), 0.8, 1e-7, 0, "agp end");
    CHECK_CLOSE(prune_agp_sparsity(&s, 1000), 0.8, 1e-7, 0, "agp after");
    CHECK(prune_agp_is_step(&s, 10) && prune_agp_is_step(&s, 25) && prune_agp_is_step(&s, 30), "agp steps");
    CHECK(!prune_agp_is_step(&s, 5) && !prune_agp_is_step(&s, 12) && !prune_agp_is_step(&s, 35), "agp non-steps");
    AgpSchedule s2 = {.s_init = 0.2f, .s_final = 0.5f, .t0 = 0, .n = 3, .dt = 1};
    /* 0.5 - 0.3 (1 - t/3)^3: t=1 0.5-0.3*8/27, t=2 0.5-0.3/27 */
    CHECK_CLOSE(prune_agp_sparsity(&s2, 0), 0.2, 1e-7, 0, "agp s_init");
    CHECK_CLOSE(prune_agp_sparsity(&s2, 1), 0.5 - 0.3 * 8.0 / 27.0, 1e-6, 0, "agp t=1");
    CHECK_CLOSE(prune_agp_sparsity(&s2, 2), 0.5 - 0.3 / 27.0, 1e-6, 0, "agp t=2");

    /* The hook prunes on schedule: layer-wise sparsity follows s_t at t = 0, 2, 4, 6, 8. */
    Net net;
    if (build(&net, zoo_lookup("small"), 16, 1) != NASC_OK) return;
    randomize(&net, 11);
    unsigned char *m = prune_masks_new(&net);
    AgpSchedule g = {.s_init = 0.1f, .s_final = 0.5f, .t0 = 0, .n = 4, .dt = 2};
    PruneHook h;
    Err e;
    AgpSchedule badg = g;
    badg.dt = 0;
    CHECK(prune_hook_init(&h, &net, m, &badg, PRUNE_LAYERWISE, &e) == NASC_ERR && strstr(e.msg, "interval"),
          "dt 0 refused");
    CHECK(prune_hook_init(&h, &net, m, &g, PRUNE_LAYERWISE, &e) == NASC_OK, "hook: %s", e.msg);
    const Node *conv2 = &net.spec.nodes[3];
    size_t lo, hi;
    weight_span(conv2, &lo, &hi);
    double n2 = (double)(hi - lo);
    CHECK_CLOSE((double)masked_in(&net, m, lo, hi), floor(0.1 * n2 + 0.5), 0, 0, "step 0 prunes to s_i");
    const double want[9] = {0.1, 0.1, 0.5 - 0.4 * 0.421875, 0.5 - 0.4 * 0.421875, 0.45, 0.45,
                            0.5 - 0.4 * 0.015625, 0.5 - 0.4 * 0.015625, 0.5};
    Rng r;
    rng_seed(&r, 8);
    for (int t = 1; t <= 8; t++) {
        for (size_t j = 0; j < net.nparams; j++) net.params[j] += 0.01f * (float)rng_normal(&r);
        TrainProgress p = {0};
        prune_on_step(&h, &p);
        CHECK_CLOSE((double)masked_in(&net, m, lo, hi), floor(want[t] * n2 + 0.5), 0, 0, "agp hook step");
        CHECK_CLOSE(h.sparsity, want[t], 1e-6, 0, "hook sparsity");
    }
    free(m);
    net_free(&net);
}

/* A tiny in-memory dataset (n random 1x8x8 images, labels j mod CLASSES) from a seeded r, and
 * `text` built for it. */
static void tiny_setup(Dataset *d, Net *net, Rng *r, int n, uint64_t seed, const char *text) {
    *d = (Dataset){.n = n, .c = 1, .h = 8, .w = 8, .classes = CLASSES};
    snprintf(d->name, sizeof d->name, "synthetic");
    d->images = xmalloc((size_t)n * 64);
    d->labels = xmalloc((size_t)n * sizeof *d->labels);
    rng_seed(r, seed);
    for (int j = 0; j < n * 64; j++) d->images[j] = (uint8_t)rng_below(r, 256);
    for (int j = 0; j < n; j++) d->labels[j] = (int32_t)(j % CLASSES);
    Spec s;
    Err e;
    NASC_ASSERT(spec_parse(&s, text, 16, 1, &e) == NASC_OK);
    NASC_ASSERT(net_build(net, &s, 1, 8, 8, CLASSES, &e) == NASC_OK);
    spec_free(&s);
}

/* Two epochs of SGD (batch 8, lr 0.05) on the whole of d with on_step(ctx, ...) after each step. */
static int tiny_train(const Dataset *d, Net *net, float momentum, void (*on_step)(void *, const TrainProgress *),
                      void *ctx, TrainResult *res, Err *e) {
    int *idx = xmalloc((size_t)d->n * sizeof *idx);
    for (int j = 0; j < d->n; j++) idx[j] = j;
    TrainConfig tc = {.epochs = 2, .batch = 8, .opt = optim_defaults(OPT_SGD), .seed = 1};
    tc.opt.momentum = momentum;
    tc.sched.kind = SCHED_CONST;
    tc.sched.lr = 0.05f;
    tc.on_step = on_step;
    tc.ctx = ctx;
    float mean = 0.5f, sd = 0.25f;
    int rc = train_run(net, d, idx, d->n, NULL, NULL, 0, &mean, &sd, &tc, res, e);
    free(idx);
    return rc;
}

/* The hook inside train_run (on a tiny in-memory dataset): masked weights end at zero and the
 * final sparsity is reached. */
static void on_step_count(void *ctx, const TrainProgress *p) { (*(int *)ctx)++; }

static void test_train_hook(void) {
    Dataset d;
    Net net;
    Err e;
    Rng r;
    tiny_setup(&d, &net, &r, 48, 4, "conv(c=8,k=3);bn;relu;conv(c=8,k=3,s=2);bn;relu;gap;linear");
    unsigned char *m = prune_masks_new(&net);
    AgpSchedule g = {.s_init = 0.0f, .s_final = 0.7f, .t0 = 1, .n = 3, .dt = 2};
    PruneHook h;
    CHECK(prune_hook_init(&h, &net, m, &g, PRUNE_GLOBAL, &e) == NASC_OK, "hook: %s", e.msg);
    int count = 0;
    h.next = on_step_count, h.next_ctx = &count;
    TrainResult res;
    CHECK(tiny_train(&d, &net, 0.0f, prune_on_step, &h, &res, &e) == NASC_OK, "train: %s", e.msg);
    CHECK(res.steps == 12 && h.step == 12 && count == 12, "steps %ld, hook %ld, chained %d", res.steps, h.step, count);
    size_t nz = 0;
    for (size_t j = 0; j < net.nparams; j++) nz += !m[j] && net.params[j] != 0.0f;
    CHECK(nz == 0, "%zu masked weights nonzero after training", nz);
    CHECK_CLOSE(prune_sparsity(&net, m, -1), 0.7, 0.001, 0, "final global sparsity");
    free(m);
    net_free(&net);
    dataset_free(&d);
}

/* Gradual channel pruning through real training steps on a residual net: the dropped set only
 * grows, the dropped channels stay zero through SGD, and removing them at the end gives the
 * masked net's outputs with the predicted counts. */
typedef struct {
    ChannelPruneHook *h;
    unsigned char *dropped; /* (nunits) once dropped */
    int shrank, revived, plans;
    float last_ratio;
} GradualWatch;

static void gradual_watch(void *ctx, const TrainProgress *p) {
    (void)p;
    GradualWatch *w = ctx;
    if (w->h->ratio == 0 || w->h->plan.nunits > 4096) return;
    if (w->h->ratio != w->last_ratio) w->plans++;
    w->last_ratio = w->h->ratio;
    for (int u = 0; u < w->h->plan.nunits; u++) {
        if (w->dropped[u] && w->h->plan.keep[u]) w->revived++;
        if (!w->h->plan.keep[u]) w->dropped[u] = 1;
    }
}

static void test_gradual_channels(void) {
    Dataset d;
    Net net;
    Err e;
    Rng r;
    tiny_setup(&d, &net, &r, 64, 5,
               "conv(c=12,k=3);bn;x0=relu;conv(c=12,k=3);bn;relu;conv(c=12,k=3);bn;add(_,x0);relu;"
               "conv(c=16,k=3,s=2);bn;relu;gap;linear");
    net_init_params(&net, 3);
    AgpSchedule g = {.s_init = 0.0f, .s_final = 0.5f, .t0 = 0, .n = 4, .dt = 3};
    ChannelPruneHook h;
    CHECK(prune_channel_hook_init(&h, &net, PRUNE_L1, &g, &e) == NASC_OK, "hook: %s", e.msg);
    GradualWatch w = {&h, NULL, 0, 0, 0, 0};
    h.next = gradual_watch, h.next_ctx = &w;
    w.dropped = calloc(4096, 1);
    TrainResult res; /* momentum keeps pushing dropped weights: the hook must re-zero them */
    CHECK(tiny_train(&d, &net, 0.9f, prune_channel_on_step, &h, &res, &e) == NASC_OK, "train: %s", e.msg);
    CHECK(res.steps == 16 && h.step == 16, "steps %ld, hook %ld", res.steps, h.step);
    CHECK(h.ratio == 0.5f && w.plans >= 3 && w.revived == 0, "ratio %g after %d plans, %d channels revived",
          (double)h.ratio, w.plans, w.revived);
    /* The dropped filters of the first conv are zero after the last SGD step. */
    int keep[16], nk = prune_plan_kept(&net, &h.plan, 0, keep);
    const float *w0 = net.params + net.spec.nodes[0].param_off;
    int nonzero = 0;
    for (int c = 0, k = 0; c < 12; c++) {
        if (k < nk && keep[k] == c) {
            k++;
            continue;
        }
        for (int j = 0; j < 9; j++) nonzero += w0[c * 9 + j] != 0.0f;
    }
    CHECK(nk == 6 && nonzero == 0, "first conv keeps %d of 12; %d dropped weights nonzero", nk, nonzero);
    Net out;
    PruneReport rep;
    CHECK(prune_plan_apply(&net, &h.plan, &out, &rep, &e) == NASC_OK, "apply: %s", e.msg);
    CHECK(rep.params_after == rep.params_predicted && rep.params_after < rep.params_before, "params %zu -> %zu (%zu)",
          rep.params_before, rep.params_after, rep.params_predicted);
    float x[2 * 64];
    for (int j = 0; j < 2 * 64; j++) x[j] = (float)rng_normal(&r);
    float y[2 * CLASSES];
    memcpy(y, net_forward(&net, x, 2, 0), sizeof y);
    double scale, diff = max_abs_diff(net_forward(&out, x, 2, 0), y, 2 * CLASSES, &scale);
    CHECK(diff <= 1e-5 * fmax(scale, 1e-3), "removed vs zeroed outputs differ by %g (scale %g)", diff, scale);
    printf("gradual    %d plans to 50%%, params %zu -> %zu, max|removed - zeroed| %.3g\n", w.plans,
           rep.params_before, rep.params_after, diff);
    net_free(&out);
    /* A schedule whose final ratio cannot be reached fails at init, not mid-training. */
    AgpSchedule bad = {.s_init = 0.0f, .s_final = 0.001f, .t0 = 0, .n = 2, .dt = 1};
    ChannelPruneHook h2;
    CHECK(prune_channel_hook_init(&h2, &net, PRUNE_L1, &bad, &e) == NASC_ERR && strstr(e.msg, "removes no channel"),
          "unreachable ratio: '%s'", e.msg);
    prune_channel_hook_free(&h);
    free(w.dropped);
    net_free(&net);
    dataset_free(&d);
}

int main(void) {
    test_structured();
    test_choice();
    test_errors();
    test_magnitude();
    test_agp();
    test_train_hook();
    test_gradual_channels();
    return check_summary("test_prune");
}
