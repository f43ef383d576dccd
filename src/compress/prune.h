/* prune.h: pruning, structured and unstructured.
 *
 * Structured (channel) pruning physically removes channels: the result is an ordinary Net
 * whose spec has smaller c= attributes, so it saves as an ordinary model file and runs with the
 * ordinary kernels. It works in two steps:
 *   1. prune_plan: channel analysis over the spec graph, then a choice of channels to keep.
 *      Channels that must be removed together form one unit (a residual add ties the channel i
 *      of each of its inputs, an SE mul ties x's channel i with the scale's channel i, a
 *      depthwise conv ties its output channel i with its input channel i, a concat lays its
 *      inputs' channels side by side). Units whose producers are tied form a group (a
 *      "channel space"); each group keeps max(1, round(U * (1 - ratio))) of its U units, the
 *      most important ones. Groups tied to the network input or to the network output (the
 *      classifier) are never pruned, nor the two ends of a grouped conv (1 < g < cin, or a
 *      depthwise conv with a channel multiplier), nor a group whose channels pass through a
 *      sigmoid/hsigmoid that feeds anything but the scale input of a mul (a pruned channel
 *      would read 0.5 there, not 0, so removing it would change the output).
 *   2. prune_plan_apply builds the smaller net (and checks its parameter and MAC counts against
 *      the plan's prediction); prune_plan_mask instead zeroes the pruned channels of the
 *      original in place (producer filters and biases, BN gamma and beta), which gives the same
 *      outputs: the "masked original" the tests compare with.
 *
 * Unstructured pruning keeps one mask byte per parameter (aligned with net->params, like the
 * gradients; 1 = keep) over conv and linear weights only; magnitude pruning layer by layer or
 * globally, one-shot or gradually with Zhu & Gupta's AGP schedule through a TrainConfig.on_step
 * hook (prune_on_step) that prunes on schedule and re-applies the masks after every optimizer
 * step, so pruned weights stay exactly zero through fine-tuning.
 */
#ifndef NASC_PRUNE_H
#define NASC_PRUNE_H

#include "../core/common.h"
#include "../net/net.h"
#include "../train/train.h"

/* ------------------------------------------------------------------ structured */
typedef enum {
    PRUNE_L1, /* L1 norm of the producing filters (conv/linear weights, no bias) */
    PRUNE_L2, /* L2 norm of the producing filters */
    PRUNE_BN, /* |gamma| of the BN layers on the channel (groups without any BN fall back to L1) */
    PRUNE_CRIT_COUNT
} PruneCriterion;

const char *prune_criterion_name(PruneCriterion c);
/* "l1", "l2" or "bn" -> the criterion; NASC_ERR with a message for anything else. */
int prune_criterion_parse(const char *s, PruneCriterion *out, Err *e);

/* Which channels of every tensor survive. Built by prune_plan for one Net; valid for that Net
 * (same spec) only. */
typedef struct {
    int nnodes;
    int in_c;            /* the network input's channels (never pruned) */
    int *map_off;        /* (nnodes + 1): node i's channel units are unit[map_off[i] ..] */
    int *unit;           /* (sum of node channels): the unit of each output channel */
    int nunits;
    unsigned char *keep; /* (nunits): 1 = the unit survives */
    int groups, groups_pruned;   /* channel spaces found; those that lose channels */
    int units_prunable, units_kept; /* units in prunable groups, before and after */
    size_t params_before, params_predicted;
    double macs_before, macs_predicted;
} PrunePlan;

typedef struct {
    size_t params_before, params_after, params_predicted;
    double macs_before, macs_after, macs_predicted;
    int groups, groups_pruned;
    int units_prunable, units_kept;
} PruneReport;

/* Analyse net's spec and choose the channels to keep at `ratio` in (0, 1) by `crit`.
 * Importance of a unit: every contributing layer (conv/linear producing the channel, or every BN
 * on it for PRUNE_BN) gives each of its channels a score divided by that layer's largest score
 * (so each layer weighs the same whatever its scale), and a unit sums the scores of its
 * channels. Ties keep the lower unit index. NASC_ERR with a message for a ratio outside (0, 1)
 * or NaN, a net with nothing prunable, or a ratio too small to remove any channel. */
int prune_plan(const Net *net, PruneCriterion crit, float ratio, PrunePlan *plan, Err *e);
void prune_plan_free(PrunePlan *plan);
/* Build the pruned net into *out (a plain spec, arch NULL, with the kept weights, biases, BN
 * parameters and running statistics). rep may be NULL. NASC_ERR only if the built net's counts
 * disagree with the plan's prediction (a bug, reported rather than aborted). */
int prune_plan_apply(const Net *net, const PrunePlan *plan, Net *out, PruneReport *rep, Err *e);
/* Zero, in place, the pruned channels of net: the filters and biases producing them (every
 * conv/linear, depthwise ones included) and the gamma and beta of every BN on them. */
void prune_plan_mask(Net *net, const PrunePlan *plan);
/* Kept channels of node i's output (node -1: the network input), ascending, into idx (room
 * for the node's channel count); returns how many. */
int prune_plan_kept(const Net *net, const PrunePlan *plan, int node, int *idx);

/* prune_plan + prune_plan_apply. */
int prune_channels(const Net *net, PruneCriterion crit, float ratio, Net *out, PruneReport *rep, Err *e);
/* prune_plan + prune_plan_mask. */
int prune_channels_mask(Net *net, PruneCriterion crit, float ratio, Err *e);
void prune_report_print(FILE *f, const PruneReport *rep);

/* ------------------------------------------------------------------ unstructured */
typedef enum {
    PRUNE_LAYERWISE, /* each conv/linear layer reaches the sparsity */
    PRUNE_GLOBAL     /* the sparsity over all conv/linear weights; smallest magnitudes anywhere */
} PruneScope;

/* A mask byte per parameter (net->nparams), all 1 (keep). Caller frees. */
unsigned char *prune_masks_new(const Net *net);
/* 1 for the parameters unstructured pruning may remove: conv and linear weights (not biases,
 * not BN). */
int prune_is_weight(const Net *net, size_t param);
/* Set masks so that `sparsity` in [0, 1) of the prunable weights (per layer or globally) are
 * masked: exactly round(sparsity * n) of them, the smallest |w| first; weights already masked
 * count as smaller than any live one (so a growing sparsity never revives a weight), equal
 * magnitudes go lower index first. Then applies the masks. NASC_ERR for a sparsity outside
 * [0, 1) or NaN. */
int prune_weights_magnitude(Net *net, unsigned char *masks, float sparsity, PruneScope scope, Err *e);
/* params[i] = 0 wherever masks[i] == 0. */
void prune_masks_apply(Net *net, const unsigned char *masks);
/* The fraction of masked weights of node i (a conv or linear), or over all prunable weights
 * when node < 0. */
double prune_sparsity(const Net *net, const unsigned char *masks, int node);
/* One line per conv/linear layer and a global line. */
void prune_sparsity_print(FILE *f, const Net *net, const unsigned char *masks);

/* Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the sparsity at step t is
 *     s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3   for t0 <= t <= t0 + n*dt,
 * 0 before t0 and s_f after; pruning happens at t = t0, t0 + dt, ..., t0 + n*dt. */
typedef struct {
    float s_init, s_final;
    long t0; /* first pruning step (optimizer steps taken) */
    long n;  /* number of pruning steps after t0 (0: one-shot at t0) */
    long dt; /* steps between pruning steps (>= 1) */
} AgpSchedule;

float prune_agp_sparsity(const AgpSchedule *s, long t);
/* 1 when t is a pruning step of the schedule. */
int prune_agp_is_step(const AgpSchedule *s, long t);

/* The on_step context: plug prune_on_step and a PruneHook into TrainConfig.on_step/ctx. */
typedef struct {
    Net *net;
    unsigned char *masks; /* (net->nparams), not owned */
    AgpSchedule agp;
    int gradual;          /* 0: masks are fixed, only re-applied after every step */
    PruneScope scope;
    long step;            /* optimizer steps taken so far */
    float sparsity;       /* the last target applied */
    /* Called after pruning, with the same progress (may be NULL): keeps a progress printer. */
    void (*next)(void *ctx, const TrainProgress *p);
    void *next_ctx;
} PruneHook;

/* agp NULL: fixed masks. Otherwise prunes to the schedule's value at step 0 if that is a
 * pruning step. NASC_ERR with a message for an invalid schedule. */
int prune_hook_init(PruneHook *h, Net *net, unsigned char *masks, const AgpSchedule *agp, PruneScope scope, Err *e);
/* TrainConfig.on_step: counts the step, prunes if it is a pruning step, re-applies the masks. */
void prune_on_step(void *ctx, const TrainProgress *p);

/* Gradual channel pruning: the AGP schedule above over the fraction of channels removed. At each
 * pruning step the plan is chosen anew by crit on the current weights, after the previous plan's
 * channels were zeroed (they score 0, so they stay dropped and the set only grows); after every
 * optimizer step the current plan's channels are zeroed again (prune_plan_mask). Once training
 * ends, prune_plan_apply(net, &plan, ...) removes exactly the zeroed channels. A step whose
 * ratio is too small to drop a channel keeps the previous plan. */
typedef struct {
    Net *net;
    PruneCriterion crit;
    AgpSchedule agp;
    long step;
    float ratio;    /* the ratio of the current plan (0: no plan yet) */
    PrunePlan plan; /* valid when ratio > 0 */
    void (*next)(void *ctx, const TrainProgress *p);
    void *next_ctx;
} ChannelPruneHook;

/* Checks the schedule and that net can be pruned to s_final by crit (prune_plan's errors), then
 * applies step 0 if it is a pruning step. */
int prune_channel_hook_init(ChannelPruneHook *h, Net *net, PruneCriterion crit, const AgpSchedule *agp, Err *e);
void prune_channel_hook_free(ChannelPruneHook *h);
/* TrainConfig.on_step for a ChannelPruneHook. */
void prune_channel_on_step(void *ctx, const TrainProgress *p);

#endif
