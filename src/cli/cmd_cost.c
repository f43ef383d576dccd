/* cmd_cost.c: `nasc cost`: what a network costs, without training: parameters, MACs, peak
 * activation memory under the planner's execution order (fp32 and int8), flash (fp32 and
 * int8), latency measured here (batch 1, fp32), and whether it fits a deployment target.
 * The input shape and class count come from --data (known datasets need no files), or from
 * the model file. The accounting is documented in src/cost/cost.h.
 *
 * An int8 model file (src/compress) reports int8 figures only: its real payload bytes as
 * flash, the planner's int8 peak, and the measured batch-1 latency of the int8 executor.
 */
#include <math.h>

#include "../compress/quant.h"
#include "../cost/cost.h"
#include "../cost/predict.h"
#include "cli.h"

static const char usage[] =
    "usage: nasc cost --arch SPEC | MODEL [--channels C --cells N] [--data NAME[:DIR]|DIR] [--target NAME|FILE]\n"
    "                 [--repeats N] [--threads T] [--order] [--json]\n"
    "  SPEC is spec text, a file holding one, a zoo name (small, resnet8, mbv2) or an NB201 cell;\n"
    "  MODEL is a model file saved by 'nasc train --out', or an int8 model. Targets: mcu, mobile, server,\n"
    "  or a .target file\n"
    "  (see targets/*.target; $NASC_TARGETS adds folders to search).";


static void fmt_bytes(char *buf, size_t n, size_t bytes) {
    if (bytes < 1024) snprintf(buf, n, "%zu B", bytes);
    else if (bytes < 1024 * 1024) snprintf(buf, n, "%.1f KB", bytes / 1024.0);
    else snprintf(buf, n, "%.2f MB", bytes / (1024.0 * 1024.0));
}

static void fmt_count(char *buf, size_t n, double v) {
    if (v < 1e3) snprintf(buf, n, "%.0f", v);
    else if (v < 1e6) snprintf(buf, n, "%.2f K", v / 1e3);
    else if (v < 1e9) snprintf(buf, n, "%.2f M", v / 1e6);
    else snprintf(buf, n, "%.2f G", v / 1e9);
}

/* A JSON value written as is (arrays, booleans), in json_* style. */
static void json_raw_begin(Json *j, const char *key) { fprintf(j->f, "%s\"%s\": ", j->n++ ? ", " : "", key); }

/* The target's limits and whether the network fits them. */
static void json_fit(Json *j, const Target *t, const TargetFit *fit) {
    json_str(j, "target", t->name);
    json_raw_begin(j, "fits");
    fputs(fit->fits ? "true" : "false", j->f);
    json_raw_begin(j, "fits_sram");
    fputs(fit->sram_ok ? "true" : "false", j->f);
    json_raw_begin(j, "fits_flash");
    fputs(fit->flash_ok ? "true" : "false", j->f);
    json_raw_begin(j, "fits_latency");
    fputs(fit->latency_ok < 0 ? "null" : fit->latency_ok ? "true" : "false", j->f);
    json_num(j, "target_sram_bytes", t->sram_kb * 1024.0);
    json_num(j, "target_flash_bytes", t->flash_kb * 1024.0);
    json_num(j, "target_latency_ms", t->latency_ms);
}

/* `nasc cost INT8_MODEL`: the int8 figures of an int8 model file. */
static int cost_int8(const char *model, const char *data, int data_given, const Target *target, int repeats, int beam,
                     int show_order, int json) {
    Err e = {{0}};
    QNet q;
    Norm norm;
    if (qmodel_load(model, &q, &norm, &e) != NASC_OK) {
        fprintf(stderr, "nasc cost: %s\n", e.msg);
        return 2;
    }
    int rc = 2;
    Net net;
    if (data_given) {
        int c, h, w, k;
        if (dataset_shape(data, &c, &h, &w, &k, &e) != NASC_OK) {
            fprintf(stderr, "nasc cost: --data: %s\n", e.msg);
            goto done_q;
        }
        if (c != q.in_c || h != q.in_h || w != q.in_w || k != q.classes) {
            fprintf(stderr, "nasc cost: the model takes %dx%dx%d inputs and %d classes but %s has %dx%dx%d and %d\n", q.in_c,
                    q.in_h, q.in_w, q.classes, data, c, h, w, k);
            goto done_q;
        }
    }
    /* The memory plan works on the float tape of the same spec (its weights are not used). */
    if (net_build(&net, &q.spec, q.in_c, q.in_h, q.in_w, q.classes, &e) != NASC_OK) {
        fprintf(stderr, "nasc cost: %s: %s\n", model, e.msg);
        goto done_q;
    }
    MemPlanConfig pc = {.beam = beam};
    CostReport r;
    cost_static(&net, &pc, &r);
    size_t flash = q.payload_bytes + q.table_bytes;
    if (flash != r.flash_int8)
        fprintf(stderr, "nasc cost: note: the file holds %zu payload bytes, the cost model estimates %zu\n", flash,
                r.flash_int8);
    r.flash_int8 = flash;
    if (repeats > 0) {
        LatencyConfig lc = {.repeats = repeats};
        qnet_latency(&q, &lc, &r.latency);
        r.has_latency = 1;
    }
    const MemPlan *pl = &r.plan;
    int n = net.spec.n, executed = 0;
    for (int i = 0; i < n; i++) executed += q.nodes[i].kind != QX_NONE && q.nodes[i].kind != QX_ALIAS;
    char a[32], b[32];
    printf("nasc cost: %.*s%s  (int8 model: input %dx%dx%d, %d classes, %d nodes, %d run as int8 ops)\n", 60, model,
           strlen(model) > 60 ? "..." : "", q.in_c, q.in_h, q.in_w, q.classes, n, executed);
    fmt_count(a, sizeof a, (double)q.params);
    printf("  params          %zu (%s) in the float spec; %zu int8 weights and int32 biases stored\n", q.params, a,
           qnet_weight_count(&q));
    fmt_count(a, sizeof a, r.macs);
    printf("  MACs            %.0f (%s)\n", r.macs, a);
    fmt_bytes(a, sizeof a, r.peak_int8);
    printf("  peak memory     int8 %s  (%s order)\n", a, pl->exact ? "optimal" : "heuristic");
    fmt_bytes(a, sizeof a, r.arena_int8);
    printf("  arena           int8 %s with fixed offsets (%s); peak_bytes is the arena's figure\n", a,
           r.arena_int8 > r.peak_int8 ? "more than the ideal peak: fragmentation" : "equal to the ideal peak");
    if (show_order) {
        printf("  order          ");
        for (int t = 0; t < n; t++) printf(" %d:%s", pl->order[t] + 1, op_name(net.spec.nodes[pl->order[t]].op));
        printf("\n");
    }
    fmt_bytes(a, sizeof a, flash);
    printf("  flash           int8 %s  (%zu B weights, %zu B biases, %zu B weight scales, %zu B multipliers,\n", a,
           r.int8.weights, r.int8.biases, r.int8.wscales, r.int8.requant);
    printf("                  %zu B lookup tables, %zu B unfolded BN, %zu B activation qparams for %d tensors;\n",
           r.int8.luts, r.int8.bn, r.int8.act_qparams, q.qtensors);
    printf("                  %d BN folded, %d ReLU/ReLU6 fused)\n", r.int8.folded_bn, r.int8.fused_act);
    if (r.has_latency)
        printf("  latency int8    %.3f ms median  (p10 %.3f, p90 %.3f; %d runs after %d warm-up, batch 1, %d thread%s, "
               "int8 conv path %s, this machine)\n",
               r.latency.median_ms, r.latency.p10_ms, r.latency.p90_ms, r.latency.runs, r.latency.warmup,
               r.latency.threads, r.latency.threads == 1 ? "" : "s", qconv_path());
    TargetFit fit;
    Target t8;
    if (target) {
        t8 = *target;
        t8.dtype_bytes = 1; /* an int8 model is measured as int8, whatever the target's default */
        target_check(&t8, &r, &fit);
        fmt_bytes(a, sizeof a, fit.peak_bytes);
        fmt_bytes(b, sizeof b, fit.flash_bytes);
        printf("  target %-8s %s: int8 peak %s %s %.0f KB SRAM, flash %s %s %.0f KB", t8.name,
               fit.fits ? "fits" : "DOES NOT FIT", a, fit.sram_ok ? "<=" : ">", t8.sram_kb, b, fit.flash_ok ? "<=" : ">",
               t8.flash_kb);
        if (fit.latency_ok >= 0)
            printf(", latency %.3f ms %s %g ms (measured here)\n", fit.latency_ms, fit.latency_ok ? "<=" : ">",
                   t8.latency_ms);
        else
            printf(", latency not measured (budget %g ms)\n", t8.latency_ms);
    }
    if (json) {
        Json j;
        json_begin(&j, stdout);
        json_int(&j, "params", (long long)q.params);
        json_num(&j, "macs", r.macs);
        json_int(&j, "peak_bytes", (long long)cost_peak_bytes(&r, 1));
        json_int(&j, "flash_bytes", (long long)flash);
        if (r.has_latency) json_num(&j, "latency_ms", r.latency.median_ms);
        json_str(&j, "dtype", "int8");
        json_int(&j, "peak_bytes_int8", (long long)r.peak_int8);
        json_int(&j, "flash_bytes_int8", (long long)flash);
        json_int(&j, "arena_bytes_int8", (long long)r.arena_int8);
        json_int(&j, "int8_weights", (long long)qnet_weight_count(&q));
        json_int(&j, "int8_weight_bytes", (long long)r.int8.weights);
        json_int(&j, "int8_bias_bytes", (long long)r.int8.biases);
        json_int(&j, "int8_weight_scale_bytes", (long long)r.int8.wscales);
        json_int(&j, "int8_requant_bytes", (long long)r.int8.requant);
        json_int(&j, "int8_lut_bytes", (long long)r.int8.luts);
        json_int(&j, "int8_bn_bytes", (long long)r.int8.bn);
        json_int(&j, "int8_act_qparam_bytes", (long long)r.int8.act_qparams);
        json_int(&j, "int8_tensors", q.qtensors);
        json_raw_begin(&j, "plan_exact");
        fputs(pl->exact ? "true" : "false", j.f);
        json_int(&j, "peak_statement", pl->peak_node + 1);
        json_raw_begin(&j, "order");
        fputc('[', j.f);
        for (int t = 0; t < n; t++) fprintf(j.f, "%s%d", t ? ", " : "", pl->order[t] + 1);
        fputc(']', j.f);
        if (r.has_latency) {
            json_num(&j, "latency_p10_ms", r.latency.p10_ms);
            json_num(&j, "latency_p90_ms", r.latency.p90_ms);
            json_int(&j, "latency_runs", r.latency.runs);
            json_int(&j, "threads", r.latency.threads);
            json_str(&j, "qconv_path", qconv_path());
        }
        json_int(&j, "in_c", q.in_c);
        json_int(&j, "in_h", q.in_h);
        json_int(&j, "in_w", q.in_w);
        json_int(&j, "classes", q.classes);
        if (target) json_fit(&j, &t8, &fit);
        json_end(&j);
    }
    rc = 0;
    cost_free(&r);
    net_free(&net);
done_q:
    qnet_free(&q);
    return rc;
}

int cmd_cost(int argc, char **argv) {
    const char *arch = NULL, *data = "fashion-mnist", *target_name = NULL;
    int channels = 16, cells = 1, repeats = 50, threads = 0, beam = 0, show_order = 0, json = 0, help = 0;
    ArgSpec specs[] = {
        {"arch", ARG_STR, &arch, "network spec, spec file, zoo name or NB201 cell", 0},
        {"channels", ARG_INT, &channels, "NB201: channels of the first stage (16)", 0},
        {"cells", ARG_INT, &cells, "NB201: cells per stage (1)", 0},
        {"data", ARG_STR, &data, "input shape and classes: fashion-mnist | mnist:DIR | cifar10:DIR | DIR", 0},
        {"target", ARG_STR, &target_name, "deployment target: mcu | mobile | server | FILE.target", 0},
        {"repeats", ARG_INT, &repeats, "timed runs for the latency (50; 0 = no latency)", 0},
        {"threads", ARG_INT, &threads, "threads for the latency runs (all cores)", 0},
        {"beam", ARG_INT, &beam, "memory planner: sets kept per search level (0 = automatic)", 0},
        {"order", ARG_FLAG, &show_order, "print the planned execution order", 0},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout", 0},
        {"help", ARG_FLAG, &help, "this help", 0},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Err e = {{0}};
    const char *pos[1];
    int npos;
    int parsed = args_run(argc, argv, specs, nspecs, pos, 1, &npos, "cost", usage);
    if (parsed >= 0) return parsed;
    const char *model = npos ? pos[0] : NULL;
    if (!arch == !model) {
        fprintf(stderr, "nasc cost: %s\n%s\n",
                arch ? "give --arch SPEC or a MODEL file, not both" : "needs --arch SPEC or a MODEL file", usage);
        return 2;
    }
    if (repeats < 0 || repeats > 1000000 || threads < 0 || threads > 1024 || beam < 0) {
        fprintf(stderr, "nasc cost: --repeats must be in 0..1000000, --threads in 1..1024, --beam >= 0\n");
        return 2;
    }
    if (threads) threads_set(threads);
    Target target;
    if (target_name && target_find(&target, target_name, &e) != NASC_OK) {
        fprintf(stderr, "nasc cost: --target: %s\n", e.msg);
        return 2;
    }

    if (model && qmodel_probe(model) == QMODEL_INT8) {
        int data_given = 0;
        for (int k = 0; k < nspecs; k++)
            if (!strcmp(specs[k].name, "data")) data_given = specs[k].seen;
        return cost_int8(model, data, data_given, target_name ? &target : NULL, repeats, beam, show_order, json);
    }
    Net net;
    const char *what = model ? model : arch;
    if (model) {
        Norm norm;
        if (model_load(model, &net, &norm, &e) != NASC_OK) {
            fprintf(stderr, "nasc cost: %s\n", e.msg);
            return 2;
        }
        int c, h, w, k;
        int data_given = 0;
        for (int k = 0; k < nspecs; k++)
            if (!strcmp(specs[k].name, "data")) data_given = specs[k].seen;
        if (data_given) {
            if (dataset_shape(data, &c, &h, &w, &k, &e) != NASC_OK) {
                fprintf(stderr, "nasc cost: --data: %s\n", e.msg);
                net_free(&net);
                return 2;
            }
            if (c != net.in_c || h != net.in_h || w != net.in_w || k != net.classes) {
                fprintf(stderr, "nasc cost: the model takes %dx%dx%d inputs and %d classes but %s has %dx%dx%d and %d\n",
                        net.in_c, net.in_h, net.in_w, net.classes, data, c, h, w, k);
                net_free(&net);
                return 2;
            }
        }
    } else {
        int c, h, w, k;
        if (dataset_shape(data, &c, &h, &w, &k, &e) != NASC_OK) {
            fprintf(stderr, "nasc cost: --data: %s\n", e.msg);
            return 2;
        }
        char *text = cli_arch_text(arch, &e);
        Spec spec;
        if (!text || spec_parse(&spec, text, channels, cells, &e) != NASC_OK) {
            fprintf(stderr, "nasc cost: --arch: %s\n", e.msg);
            free(text);
            return 2;
        }
        free(text);
        int rc = net_build(&net, &spec, c, h, w, k, &e);
        spec_free(&spec);
        if (rc != NASC_OK) {
            fprintf(stderr, "nasc cost: --arch: %s\n", e.msg);
            return 2;
        }
        net_init_params(&net, 0);
    }

    MemPlanConfig pc = {.beam = beam};
    LatencyConfig lc = {.repeats = repeats};
    CostReport r;
    if (repeats > 0) cost_of(&net, &pc, &lc, &r);
    else cost_static(&net, &pc, &r);
    const MemPlan *pl = &r.plan;
    int n = net.spec.n, moved = 0;
    for (int t = 0; t < n; t++) moved += pl->order[t] != t;

    char a[32], b[32], c2[32];
    printf("nasc cost: %.*s%s  (input %dx%dx%d, %d classes, %d nodes)\n", 60, what, strlen(what) > 60 ? "..." : "",
           net.in_c, net.in_h, net.in_w, net.classes, n);
    fmt_count(a, sizeof a, (double)r.params);
    printf("  params          %zu (%s)\n", r.params, a);
    fmt_count(a, sizeof a, r.macs);
    printf("  MACs            %.0f (%s)\n", r.macs, a);
    fmt_bytes(a, sizeof a, r.peak_fp32);
    fmt_bytes(b, sizeof b, r.peak_int8);
    fmt_bytes(c2, sizeof c2, pl->spec_order_peak * 4);
    printf("  peak memory     fp32 %s, int8 %s  (%s order; the spec's order needs fp32 %s)\n", a, b,
           pl->exact ? "optimal" : "heuristic", c2);
    fmt_bytes(a, sizeof a, r.arena_fp32);
    fmt_bytes(b, sizeof b, r.arena_int8);
    printf("  arena           fp32 %s, int8 %s with fixed offsets (%s)\n", a, b,
           r.arena_int8 > r.peak_int8 ? "more than the ideal peak: fragmentation; peak_bytes is the arena's figure"
                                      : "equal to the ideal peak");
    if (pl->peak_node >= 0)
        printf("                  peak while running statement %d (%s); %d of %d statements run out of spec order\n",
               pl->peak_node + 1, op_name(net.spec.nodes[pl->peak_node].op), moved, n);
    else
        printf("                  peak is the input alone; %d of %d statements run out of spec order\n", moved, n);
    if (show_order) {
        printf("  order          ");
        for (int t = 0; t < n; t++) printf(" %d:%s", pl->order[t] + 1, op_name(net.spec.nodes[pl->order[t]].op));
        printf("\n");
    }
    fmt_bytes(a, sizeof a, r.flash_fp32);
    fmt_bytes(b, sizeof b, r.flash_int8);
    printf("  flash           fp32 %s, int8 %s  (int8: %zu B weights, %zu B biases, %zu B weight scales,\n", a, b,
           r.int8.weights, r.int8.biases, r.int8.wscales);
    printf("                  %zu B multipliers, %zu B lookup tables, %zu B unfolded BN, %zu B activation qparams;\n",
           r.int8.requant, r.int8.luts, r.int8.bn, r.int8.act_qparams);
    printf("                  %d BN folded, %d ReLU/ReLU6 fused)\n", r.int8.folded_bn, r.int8.fused_act);
    if (r.has_latency)
        printf("  latency fp32    %.3f ms median  (p10 %.3f, p90 %.3f; %d runs after %d warm-up, batch 1, %d thread%s, "
               "this machine)\n",
               r.latency.median_ms, r.latency.p10_ms, r.latency.p90_ms, r.latency.runs, r.latency.warmup,
               r.latency.threads, r.latency.threads == 1 ? "" : "s");
    TargetFit fit;
    if (target_name) {
        target_check(&target, &r, &fit);
        const char *dt = target.dtype_bytes == 1 ? "int8" : "fp32";
        fmt_bytes(a, sizeof a, fit.peak_bytes);
        fmt_bytes(b, sizeof b, fit.flash_bytes);
        printf("  target %-8s %s: %s peak %s %s %.0f KB SRAM, flash %s %s %.0f KB", target.name,
               fit.fits ? "fits" : "DOES NOT FIT", dt, a, fit.sram_ok ? "<=" : ">", target.sram_kb, b,
               fit.flash_ok ? "<=" : ">", target.flash_kb);
        if (fit.latency_ok >= 0)
            printf(", latency %.3f ms %s %g ms (measured here)\n", fit.latency_ms, fit.latency_ok ? "<=" : ">",
                   target.latency_ms);
        else
            printf(", latency not measured (budget %g ms)\n", target.latency_ms);
    }

    /* Predicted latency from the target's latency table (made by `nasc profile`), if it has one. */
    double predicted_ms = NAN;
    int fallback_nodes = 0;
    if (target_name) {
        LatencyTable lt;
        Err le;
        if (lattable_for_target(&lt, &target, &le) == NASC_OK) {
            predicted_ms = predict_latency_ms(&lt, &net, &fallback_nodes);
            lattable_free(&lt);
            printf("  predicted       %.3f ms  (latency table of target %s; %d node%s by the fallback model)\n",
                   predicted_ms, target.name, fallback_nodes, fallback_nodes == 1 ? "" : "s");
        } else {
            printf("  predicted       no latency table for target %s (run `nasc profile --target %s`)\n",
                   target.name, target.name);
        }
    }

    if (json) {
        int dtb = target_name ? target.dtype_bytes : 4;
        Json j;
        json_begin(&j, stdout);
        json_int(&j, "params", (long long)r.params);
        json_num(&j, "macs", r.macs);
        json_int(&j, "peak_bytes", (long long)cost_peak_bytes(&r, dtb));
        json_int(&j, "flash_bytes", (long long)cost_flash_bytes(&r, dtb));
        if (r.has_latency) json_num(&j, "latency_ms", r.latency.median_ms);
        if (!isnan(predicted_ms)) {
            json_num(&j, "predicted_latency_ms", predicted_ms);
            json_int(&j, "predicted_fallback_nodes", fallback_nodes);
        }
        json_str(&j, "dtype", dtb == 1 ? "int8" : "fp32");
        json_int(&j, "peak_bytes_fp32", (long long)r.peak_fp32);
        json_int(&j, "peak_bytes_int8", (long long)r.peak_int8);
        json_int(&j, "arena_bytes_fp32", (long long)r.arena_fp32);
        json_int(&j, "arena_bytes_int8", (long long)r.arena_int8);
        json_int(&j, "flash_bytes_fp32", (long long)r.flash_fp32);
        json_int(&j, "flash_bytes_int8", (long long)r.flash_int8);
        json_int(&j, "spec_order_peak_bytes_fp32", (long long)pl->spec_order_peak * 4);
        json_raw_begin(&j, "plan_exact");
        fputs(pl->exact ? "true" : "false", j.f);
        json_int(&j, "plan_states", pl->states);
        json_int(&j, "peak_statement", pl->peak_node + 1);
        json_raw_begin(&j, "order");
        fputc('[', j.f);
        for (int t = 0; t < n; t++) fprintf(j.f, "%s%d", t ? ", " : "", pl->order[t] + 1);
        fputc(']', j.f);
        json_int(&j, "int8_weight_bytes", (long long)r.int8.weights);
        json_int(&j, "int8_bias_bytes", (long long)r.int8.biases);
        json_int(&j, "int8_weight_scale_bytes", (long long)r.int8.wscales);
        json_int(&j, "int8_requant_bytes", (long long)r.int8.requant);
        json_int(&j, "int8_lut_bytes", (long long)r.int8.luts);
        json_int(&j, "int8_bn_bytes", (long long)r.int8.bn);
        json_int(&j, "int8_act_qparam_bytes", (long long)r.int8.act_qparams);
        if (r.has_latency) {
            json_num(&j, "latency_p10_ms", r.latency.p10_ms);
            json_num(&j, "latency_p90_ms", r.latency.p90_ms);
            json_int(&j, "latency_runs", r.latency.runs);
            json_int(&j, "threads", r.latency.threads);
        }
        json_int(&j, "in_c", net.in_c);
        json_int(&j, "in_h", net.in_h);
        json_int(&j, "in_w", net.in_w);
        json_int(&j, "classes", net.classes);
        if (target_name) json_fit(&j, &target, &fit);
        json_end(&j);
    }
    cost_free(&r);
    net_free(&net);
    return 0;
}
