/* predict.h: predicted latency of a network from a per-op lookup table, nn-Meter-style
 * (kernel-level prediction): `nasc profile` measures, on the machine it runs on, every op
 * configuration the search spaces can produce, and a table file keeps the results; a
 * network's latency is then the sum of its nodes' entries, corrected by a small linear model
 * fitted on whole networks measured during profiling. A table made on one device can be used
 * to search on another machine: prediction reads the table only.
 *
 * Latency means: net_forward at batch 1, eval mode, fp32, with the table's thread count, in
 * steady state (the median of back-to-back runs after a warm-up), in microseconds inside the
 * table and milliseconds at the API's edge. `nasc profile` uses 1 thread unless told otherwise
 * (target files have no thread count): at batch 1 these nets are faster on one thread than
 * on two here, and far steadier on a shared machine (see cmd_profile.c).
 *
 * An entry is the time of one op configuration as a node inside real networks (the members
 * that contain it, each timed node by node), not of the op run alone: inside a network a node
 * meets cold output buffers and weights, which makes cheap memory-bound ops (relu, bn, add)
 * 1.5x to 4x slower than back to back in a one-op net. Timing alone stays available
 * (lattable_measure) for configurations no network carries.
 *
 * Measurements are robust to a noisy machine the cheap way: medians of many short samples,
 * rounds interleaved across items (a burst of load hits many items a little, not one a lot),
 * and the min over passes of the per-pass medians.
 *
 * ---- Op configurations and keys
 * An op configuration is everything that decides one node's forward cost at batch 1: the op,
 * the shapes of its inputs and the attributes the kernel sees (padding resolved, pool stride
 * resolved). Its key is one canonical text without blanks:
 *     conv(16x28x28,c=32,k=3,s=2,p=1,d=1,g=1,bias=0)     linear(64x1x1,c=10,bias=1)
 *     maxpool(16x28x28,k=3,s=1,p=1)   avgpool(16x28x28,k=3,s=1,p=1,cip=0)   resize(1x28x28,s=20)
 *     add(16x28x28,16x28x28)   concat(16x7x7,32x7x7)   mul(96x7x7,96x1x1)   bn(16x28x28)
 *     relu(..) relu6(..) hswish(..) sigmoid(..) hsigmoid(..) gap(..) zero(..) dropout(..)
 * `id` has no key: net_forward aliases its input, it costs nothing. Dropout in eval mode is a
 * copy, so its probability is not part of the key.
 * Fusion: net_forward runs a BN and the ReLU/ReLU6 right after it as one kernel when the
 * activation is the BN's only reader (and $NASC_FUSE is not 0). Prediction units are kernels,
 * as in nn-Meter: such a pair has one key, `bn+relu(16x28x28)` or `bn+relu6(..)`, and the
 * activation none. predict.c mirrors net.c's fusion rule (fusion_plan there is private).
 *
 * ---- Table files (text, version 1)
 *     nasc-latency-table 1              first line: magic and format version
 *     nasc 0.1                          the nasc version that wrote it
 *     target mobile                     the profile's name
 *     machine Intel(R) Xeon(R) ...      /proc/cpuinfo's model name (rest of the line)
 *     cpus 2                            online CPUs when profiled
 *     isa avx512                        the gemm path the kernels used (ops.h gemm_path)
 *     threads 1                         threads the ops ran with (required)
 *     batch 1                           always 1 in this version
 *     repeats 8                         interleaved rounds per pass (informative)
 *     passes 4                          measurement passes; an entry is the min of per-pass medians
 *     correction A B C D                whole-net us = A * (sum of unit us) + B * units + C
 *                                       + D * log2(footprint bytes), see predict_footprint_bytes
 *     fallback CLASS C0 C1 C2 N         for configs missing from the table: us = C0 + C1*MACs + C2*bytes,
 *                                       fitted on N entries of that class (conv, conv_dw, conv_1x1,
 *                                       bn_act, the other op names, or `all`)
 *     op KEY US                         one line per op configuration: microseconds per run
 * '#' starts a comment line; blank lines are ignored; keys may come in any order but the
 * magic line comes first. Numbers are written in the shortest form that reads back to the
 * same double, so load(save(t)) is exact. Loading reports "FILE: line L: what is wrong" for a
 * bad magic or version, unknown keys, malformed numbers, non-canonical or duplicate op keys.
 */
#ifndef NASC_PREDICT_H
#define NASC_PREDICT_H

#include "../space/space.h"
#include "cost.h"

#define LAT_FORMAT_VERSION 1
#define LAT_KEY_MAX 512

/* ------------------------------------------------------------------ op configurations */
typedef struct {
    OpKind op;
    int nin;
    int in_c[NODE_MAX_IN], in_h[NODE_MAX_IN], in_w[NODE_MAX_IN];
    /* Attributes the op's kernel sees (0 when the op has no such attribute):
     * conv c,k,s,p,d,g,bias; linear c,bias; pools k,s,p (+cip for avgpool); resize s. */
    int c, k, s, p, d, g, bias, cip;
    /* OP_RELU or OP_RELU6 when this BN runs fused with the activation after it (the pair is
     * one kernel in net_forward and one entry here), else 0. */
    int fuse;
} OpConfig;

/* The configuration of node i of a built net. Returns 0 (and leaves *cfg zeroed) when the
 * node costs nothing of its own in net_forward (id; an activation fused into the BN before
 * it, whose configuration then carries it), else 1. */
int opconfig_of_node(const Net *net, int i, OpConfig *cfg);
/* The canonical key (no blanks); `n` >= LAT_KEY_MAX always suffices. */
void opconfig_key(const OpConfig *cfg, char *key, size_t n);
/* Parses a key; NASC_ERR with a message unless it is exactly the canonical key of a valid
 * configuration (the op's output shape must exist). */
int opconfig_parse(OpConfig *cfg, const char *key, Err *e);
/* Output shape of one sample; NASC_ERR (message) when the configuration is impossible. */
int opconfig_out_shape(const OpConfig *cfg, int *c, int *h, int *w, Err *e);
/* Features of the fallback model: multiply-accumulates (elementwise ops: output elements;
 * pools: output elements x window) and bytes touched (inputs + output + parameters, fp32). */
double opconfig_macs(const OpConfig *cfg);
double opconfig_bytes(const OpConfig *cfg);

/* Fallback classes: one per op kind, conv split three ways (its kernels differ), fused
 * bn+activation, and `all`. */
enum { LAT_CLASS_CONV_DW = OP_COUNT, LAT_CLASS_CONV_1X1, LAT_CLASS_BN_ACT, LAT_CLASS_ALL, LAT_CLASS_COUNT };
int opconfig_class(const OpConfig *cfg);
const char *lat_class_name(int cls);

/* ------------------------------------------------------------------ the table */
typedef struct {
    char key[LAT_KEY_MAX];
    OpConfig cfg;
    double us; /* microseconds per run; < 0 = not measured yet */
} LatEntry;

typedef struct {
    char nasc[32];          /* version that wrote it */
    char target[64];
    char machine[256];
    int cpus;
    char isa[32];
    int threads;
    int repeats, passes;
    double corr[4];          /* A, B, C, D of the correction */
    double fb[LAT_CLASS_COUNT][3];
    int fb_n[LAT_CLASS_COUNT]; /* entries each fallback was fitted on; 0 = none */
    LatEntry *e;
    int n, cap;
    int *slot;              /* open-addressing hash: entry index + 1, 0 = empty */
    int nslot;
} LatencyTable;

/* An empty table describing this machine (machine, cpus, isa, threads_get()), with the
 * identity correction (1, 0, 0, 0) and no fallback. */
void lattable_init(LatencyTable *t, const char *target);
void lattable_free(LatencyTable *t);
/* The entry for a key, or NULL. */
const LatEntry *lattable_find(const LatencyTable *t, const char *key);
/* Adds the configuration (us < 0: to be measured) unless its key is present; returns its
 * entry index. */
int lattable_add(LatencyTable *t, const OpConfig *cfg, double us);
/* Adds every costed node of a net; returns how many keys were new. */
int lattable_add_net(LatencyTable *t, const Net *net);

/* Text form (caller frees) and its parser; `file` names the source in messages. */
char *lattable_print(const LatencyTable *t);
int lattable_parse(LatencyTable *t, const char *text, const char *file, Err *e);
int lattable_save(const LatencyTable *t, const char *path, Err *e);
int lattable_load(LatencyTable *t, const char *path, Err *e);
/* The table of a deployment target: its `latency_table` when set, else NAME.latency in the
 * target file's folder. NASC_ERR with a message saying to run `nasc profile` when missing. */
int lattable_for_target(LatencyTable *t, const Target *target, Err *e);
/* Where `nasc profile --target NAME` writes by default (caller frees): the target's
 * latency_table, else NAME.latency beside NAME.target, else targets/NAME.latency. */
char *lattable_default_path(const char *target_name);

/* ------------------------------------------------------------------ prediction */
typedef struct {
    double sum_us;     /* sum of the nodes' table (or fallback) entries */
    int nodes;         /* costed units (id and activations fused into a BN excluded) */
    int fallback_nodes;/* nodes whose key was missing from the table */
    double log2_bytes; /* log2 of predict_footprint_bytes */
    double us;         /* corrected prediction */
} LatPrediction;

/* The memory one forward walks over: the parameters and every node's output and gradient
 * buffer (net_forward's arena holds both; id nodes have none), fp32, bytes. The correction's
 * last term uses its log: a net small enough to stay in cache runs its units faster than the
 * table's figures (medians over all the networks that carry them), a big one slower. */
double predict_footprint_bytes(const Net *net);

void predict_net(const LatencyTable *t, const Net *net, LatPrediction *p);
/* Predicted latency in milliseconds; *fallback_nodes (may be NULL) gets the number of nodes
 * predicted by the fallback model. */
double predict_latency_ms(const LatencyTable *t, const Net *net, int *fallback_nodes);
/* The fallback model's microseconds for one configuration (never below 0). */
double predict_fallback_us(const LatencyTable *t, const OpConfig *cfg);

/* ------------------------------------------------------------------ measurement */
typedef struct {
    int repeats;      /* interleaved rounds per pass (default 8) */
    int passes;       /* passes; a result is the min over passes of the per-pass median (default 4) */
    int runs;         /* nets: timed runs of each net per round, after one warm-up run (default 3) */
    double sample_us; /* ops: a timed sample runs the op back to back for at least this long (default 40) */
    double q;         /* statistic of a pass: the q-quantile of its samples (default 0.5, the median) */
    uint64_t seed;
    int verbose;      /* progress lines on stderr */
} LatMeasureConfig;

/* Measures every entry with us < 0 (all when `all`): each op runs alone as the last node of a
 * small net whose earlier nodes make its inputs, timed with net_node_forward. Entries are
 * measured in groups; within a group the rounds are interleaved (one sample of each entry per
 * round, in shuffled order), and every pass reshuffles, so a burst of load on the machine
 * spreads over many entries instead of spoiling one. mc may be NULL. An entry whose net cannot
 * be built stays unmeasured (us < 0: the fallback covers it); returns NASC_OK. */
int lattable_measure(LatencyTable *t, int all, const LatMeasureConfig *mc, Err *e);
/* Whole-net latency (microseconds) of each net, interleaved the same way: per round, one
 * warm-up forward then `runs` timed forwards of each net. */
void predict_measure_nets(Net *const *nets, int n, const LatMeasureConfig *mc, double *us);

/* Builds carrier net k (net_build'ed) or returns NASC_ERR with a message. */
typedef int (*NetSourceFn)(void *ctx, int k, Net *net, Err *e);
/* Optional output of lattable_measure_in_nets: for the carriers flagged in want[k], the
 * whole-net latency (plain net_forward, timed in the same rounds as the units, so under the
 * same load; min over passes of the per-pass median) in whole_us[k]; -1 for the others. */
typedef struct {
    const unsigned char *want;
    double *whole_us;
} LatWhole;
/* Times entries as nodes inside whole networks: carriers 0..ncarriers-1 (built a group at a
 * time by `build`) run node by node, each unit timed (a fused bn+activation as one unit, run
 * the way net_forward runs it); per pass an entry gets the median over its occurrences of
 * each occurrence's median, and the result is the min over passes. Rounds are interleaved
 * across the group's nets like lattable_measure's. Sets the entries with us < 0 (all when
 * `all`) that some carrier contains. This is what `nasc profile` uses: a node inside a network
 * meets the caches the way it will at inference (its output buffer and its weights are cold,
 * its input was just written), which an op timed alone does not. wo may be NULL. */
int lattable_measure_in_nets(LatencyTable *t, int all, int ncarriers, NetSourceFn build, void *ctx,
                             const LatMeasureConfig *mc, LatWhole *wo, Err *e);

/* Fits the fallback models on the measured entries (weighted least squares on relative error). */
void lattable_fit_fallback(LatencyTable *t);
/* Fits the correction on whole nets: measured_us[i] ~ A * sum + B * units + C + D * log2_bytes
 * of plain[i] (predict_net's figures under the identity correction), least squares on
 * relative error, lightly pulled toward (1, 0, 0, 0) so that few nets still give sane values
 * (none: the identity). `nasc profile` measures the nets in the same rounds as the units that
 * make the table, so the fit sees what a sum misses and not the machine's drift. */
void lattable_fit_correction(LatencyTable *t, const LatPrediction *plain, const double *measured_us, int n);

/* ------------------------------------------------------------------ profiling */
typedef struct {
    const char *const *spaces; /* space names or files */
    int nspaces;
    int channels, cells;       /* NB201 skeleton */
    int in_c, in_h, in_w, classes;
    int members;               /* members sampled from a space too big to enumerate (default 2000) */
    int enumerate_max;         /* enumerate a space with at most this many members (default 20000) */
    int nets;                  /* members per space also measured whole, for the correction (default 30) */
    int zoo;                   /* also the zoo nets small, resnet8, mbv2 */
    LatMeasureConfig mc;
} ProfileConfig;

typedef struct {
    int members;        /* members whose configurations were collected */
    int skipped;        /* members that did not build for the input shape */
    int configs;        /* distinct op configurations in the table */
    int nets;           /* whole nets measured for the correction */
    int carriers;       /* nets the configurations were timed in */
    double fit_mean_abs_err, fit_max_abs_err; /* relative errors of the corrected prediction on them */
    double seconds;
} ProfileSummary;

/* Collects the configurations of the spaces' members (and the zoo nets), measures them, fits
 * the fallback, measures whole nets and fits the correction, all into t (lattable_init'ed by
 * the caller). Progress on stderr when pc->mc.verbose. */
int predict_profile(LatencyTable *t, const ProfileConfig *pc, ProfileSummary *sum, Err *e);

/* Builds member m of a space into a net for the given input (spec -> net); NASC_ERR + message. */
int predict_build_member(const Space *s, const int *m, int in_c, int in_h, int in_w, int classes, Net *net,
                         Err *e);

#endif
