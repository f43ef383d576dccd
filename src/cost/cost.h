/* cost.h: what a network costs on a deployment target, without training.
 *
 *   cost.c     parameters, MACs, flash (fp32 and int8) and the report that gathers them
 *   memplan.c  peak activation memory under the best execution order found (MCUNet-style)
 *   exec.c     an instrumented executor that runs the real network in a given order and
 *              tracks live activation bytes (the check on the planner)
 *   latency.c  measured latency on this machine (batch 1, fp32)
 *   target.c   deployment target profiles (targets/NAME.target) and the fit check
 *
 * Sizes are per sample (batch 1). Activation memory is counted in elements by the planner and
 * in bytes for a dtype: fp32 = 4 bytes per element, int8 = 1 byte per element.
 *
 * ---- The memory model (memplan.c and exec.c implement it independently of each other)
 * The tensors are the network input and every node's output. A tensor is live from the
 * moment its producer runs until its last consumer has finished; the network output stays
 * live to the end. Executing node i needs its inputs and its output live at once, so the
 * figure at that step is (bytes live before i) + (bytes of i's new buffer). Per op:
 *   - MEM_ALIAS (id; dropout, which is the identity in eval mode): the output IS the input
 *     buffer (no bytes, no copy); the buffer lives while any tensor in it is live.
 *   - MEM_ZERO (zero, NB201's `none`): the output is a read-only constant (all zeros; in flash on
 *     a device, and removed by a graph rewrite since add(x, 0) = x): no activation bytes.
 *   - MEM_INPLACE (relu, relu6, hswish, sigmoid, hsigmoid, BN in eval mode, add; mul for its
 *     first input): the output reuses an input's buffer when that buffer dies at this node
 *     (no other tensor in it is needed later, it is not the network output, not a zero
 *     constant); otherwise a new buffer. For int8 deployment BN is folded into the preceding
 *     conv anyway, which leaves the same activation footprint as an in-place BN.
 *   - MEM_NEW (conv, linear, pools, gap, concat): a new buffer for the output.
 * The figure is the sum of live buffers, i.e. an arena with an ideal allocator (no
 * fragmentation; a real arena planner may need a little more). Not counted: weights (they
 * are flash), kernel scratch (im2col and the like), the training engine's saved values.
 * Concat copies its inputs (no placement of the inputs inside the output buffer), and an add
 * whose inputs are all zero constants still gets a buffer.
 * A deployment without malloc needs fixed offsets: the arena planner (arena.h) places the
 * same buffers in one block for the plan's order, and may need more than the ideal figure
 * when buffers of different lifetimes fragment it. CostReport keeps both: peak_* is the ideal
 * figure, arena_* the planned arena (never less). The deployable figure, cost_peak_bytes (what
 * target checks and the search compare, and `nasc cost`'s peak_bytes), is the larger of the
 * two, i.e. the arena's; the generated C (src/export/cgen.c) declares exactly that arena.
 *
 * ---- Flash
 *   fp32: every trainable parameter, 4 bytes (BN's gamma/beta stand for the per-channel
 *         scale/shift an fp32 deployment keeps after folding the running statistics in).
 *   int8: what an int8 model file (src/compress/qmodel.c) stores besides its header and spec,
 *         byte for byte (tests/test_quant.c checks the two agree):
 *         - conv/linear: weights 1 byte each; per output channel a float32 weight scale and an
 *           int32 multiplier + int8 shift (requantization, 5 bytes); an int32 bias per output
 *           channel when it has a bias or absorbs a BN (BN folded when it reads a conv/linear
 *           output that nothing else reads: its parameters disappear);
 *         - a BN that is not folded is a per-channel int8 affine op: 14 bytes per channel
 *           (int8 weight, int32 bias, float32 scale, int32 multiplier, int8 shift);
 *         - a ReLU/ReLU6 reading the output of a conv/linear (BN folded or not), a BN or an add
 *           that nothing else reads is fused as that op's output clamp (no bytes); any other
 *           ReLU/ReLU6, and every hswish/sigmoid/hsigmoid, is a 256-byte lookup table;
 *         - requantization of the other ops (5 bytes a multiplier): avg pool one per divisor
 *           1..k*k, gap/mul/resize one, concat one per input; add an int32 per input plus one
 *           int8 shift;
 *         - per quantized activation tensor a float32 scale + int32 zero point (8 bytes). The
 *           quantized tensors are the input and every node output except aliases (id,
 *           dropout), zero constants, max pools (they keep their input's quantization) and
 *           outputs absorbed inside a fused chain (a conv/linear whose BN was folded, the op
 *           before a fused ReLU): the chain's last node's output replaces them.
 */
#ifndef NASC_COST_H
#define NASC_COST_H

#include "../net/net.h"

/* ------------------------------------------------------------------ memplan.c */
typedef enum { MEM_NEW, MEM_ALIAS, MEM_ZERO, MEM_INPLACE } MemKind;

/* The memory rule for a node (see above). For MEM_INPLACE, *inplace_inputs (if not NULL)
 * gets how many of the first inputs may be overwritten: all of them for add, 1 otherwise. */
MemKind memplan_kind(const Node *nd, int *inplace_inputs);

typedef struct {
    int n;                   /* nodes */
    int *order;              /* (n) the execution order found: node indices, 0-based */
    size_t peak_elems;       /* activation elements live at the peak of that order */
    int peak_node;           /* the node executing at the peak; -1 = before the first (the input) */
    size_t spec_order_peak;  /* the peak of the spec's own order, for comparison */
    int exact;               /* 1: the search was exhaustive, the order is optimal */
    long states;             /* search states visited */
} MemPlan;

typedef struct {
    int beam;        /* max states kept per search level; 0 = automatic (exact when it fits) */
    long max_work;   /* budget in state expansions x nodes; 0 = default (1e8: about a second) */
} MemPlanConfig;

/* Finds a topological order minimizing the peak live activation elements: a breadth-first
 * dynamic program over the sets of executed nodes (every reachable set of a level is kept,
 * then the search is exact), bounded by the best of the spec order and a greedy order. When a
 * level holds more sets than the beam, the best ones by (peak so far, live now) are kept and
 * the result is a heuristic (exact = 0), never worse than the spec order. cfg may be NULL. */
void memplan_plan(const Net *net, const MemPlanConfig *cfg, MemPlan *out);
void memplan_free(MemPlan *p);
/* 1 if order[0..n) is a permutation of the nodes with every node after its inputs. */
int memplan_is_topological(const Net *net, const int *order);
/* The peak live elements of running the nodes in `order` (must be topological); *peak_node
 * (if not NULL) gets the node executing at the peak, -1 for the input alone. */
size_t memplan_order_peak(const Net *net, const int *order, int *peak_node);

/* ------------------------------------------------------------------ exec.c */
typedef struct {
    size_t peak_bytes;  /* most activation bytes live at once (fp32) */
    size_t final_bytes; /* live at the end: the output */
    int peak_node;      /* node being executed at the peak; -1 = the input alone */
    int inplace;        /* nodes that wrote into an input's buffer */
    int aliased;        /* nodes that aliased their input (id, dropout) or a zero constant */
} ExecStats;

/* Runs the net's forward on one sample x (in_c, in_h, in_w) in eval mode, node by node in
 * `order` (topological; NULL = the spec order), allocating each output when its node runs and
 * releasing buffers after their last consumer, with the memory rules above (in-place writes
 * really go into the input's buffer). A released buffer is filled with NaN and kept until the
 * end, so a read after release shows in the logits. Copies the logits (classes values) to
 * `logits`. The net's own activation pointers are restored afterwards. */
void exec_run(Net *net, const float *x, const int *order, float *logits, ExecStats *st);

/* ------------------------------------------------------------------ latency.c */
typedef struct {
    int repeats;        /* timed runs (default 50) */
    int warmup;         /* untimed runs first (default max(3, repeats / 10)) */
    double max_seconds; /* stop timing after this long, once 5 runs are done (default 5) */
    uint64_t seed;      /* for the random input */
} LatencyConfig;

typedef struct {
    double median_ms, p10_ms, p90_ms, min_ms, mean_ms;
    int runs, warmup, threads;
} LatencyStats;

/* Measured latency of net_forward at batch 1 in eval mode (fp32), with threads_get() threads.
 * cfg may be NULL (defaults). The net's activations are overwritten. */
void latency_measure(Net *net, const LatencyConfig *cfg, LatencyStats *out);
/* The timing loop behind it, for any runner (the int8 executor uses it too): run(ctx, x) on a
 * fixed random input x of `in` floats, with cfg's warm-up, repeats and time limit. */
void latency_time(void (*run)(void *ctx, const float *x), void *ctx, size_t in, const LatencyConfig *cfg,
                  LatencyStats *out);

/* ------------------------------------------------------------------ cost.c */
typedef struct {
    size_t weights;     /* conv/linear weights, 1 byte each */
    size_t biases;      /* int32 biases, own or from a folded BN */
    size_t wscales;     /* float32 per output channel of each conv/linear */
    size_t requant;     /* int32 multipliers and int8 shifts (conv/linear channels, pools, add, ...) */
    size_t luts;        /* 256-byte lookup tables of unfused activations */
    size_t bn;          /* unfolded BN: 14 bytes per channel (see above) */
    size_t act_qparams; /* float32 scale + int32 zero point per quantized activation tensor */
    int folded_bn;      /* BN nodes folded into a conv/linear */
    int fused_act;      /* ReLU/ReLU6 nodes fused as output clamps */
    int qtensors;       /* quantized activation tensors */
    size_t total;
} Int8Flash;

typedef struct {
    size_t params;        /* trainable values (BN's affine ones included, running stats not) */
    double macs;          /* multiply-accumulates of conv and linear layers per sample */
    MemPlan plan;         /* the execution order and its peak (in elements) */
    size_t peak_fp32;     /* bytes: plan.peak_elems * 4 */
    size_t peak_int8;     /* bytes: plan.peak_elems * 1 */
    size_t arena_fp32;    /* bytes: the arena planner's fixed-offset arena for plan.order, fp32 (>= peak_fp32) */
    size_t arena_int8;    /* bytes: the same for int8 (= arena_fp32 / 4) */
    size_t flash_fp32;    /* bytes: params * 4 */
    size_t flash_int8;    /* bytes: int8.total */
    Int8Flash int8;
    int has_latency;
    LatencyStats latency; /* when has_latency */
} CostReport;

/* Every cost that needs no running of the net: params, MACs, the memory plan, flash.
 * Free with cost_free. */
void cost_static(const Net *net, const MemPlanConfig *plan_cfg, CostReport *r);
/* cost_static plus measured latency (runs the net; lat_cfg may be NULL). */
void cost_of(Net *net, const MemPlanConfig *plan_cfg, const LatencyConfig *lat_cfg, CostReport *r);
void cost_free(CostReport *r);
/* The int8 flash breakdown alone. */
void cost_flash_int8(const Net *net, Int8Flash *f);
/* Peak and flash bytes for a dtype size (4 = fp32, 1 = int8). The peak is the deployable one:
 * max(peak, arena) for that dtype (a report filled by hand with arena 0 gives its peak). */
size_t cost_peak_bytes(const CostReport *r, int dtype_bytes);
size_t cost_flash_bytes(const CostReport *r, int dtype_bytes);

/* ------------------------------------------------------------------ target.c */
#define TARGET_PATH_MAX 1024

typedef struct {
    char name[64];
    char description[256];
    double sram_kb;          /* activation memory available (KB = 1024 bytes) */
    double flash_kb;         /* storage for weights and quantization parameters */
    double latency_ms;       /* latency budget */
    int dtype_bytes;         /* 1 = int8, 4 = fp32 */
    char latency_table[TARGET_PATH_MAX]; /* "" or a path (resolved against the file's folder) */
    char path[TARGET_PATH_MAX];          /* the file it came from */
} Target;

/* Parses target text. `file` names the source in messages, which read
 * "FILE: line L, column C: ...". `dir` (may be NULL) resolves a relative latency_table. */
int target_parse(Target *t, const char *text, const char *file, const char *dir, Err *e);
int target_load(Target *t, const char *path, Err *e);
/* A path (contains '/' or ends in .target) or a name looked up as NAME.target in each folder
 * of $NASC_TARGETS (':'-separated), ./targets, then the binary's ../targets. */
int target_find(Target *t, const char *name_or_path, Err *e);

typedef struct {
    int sram_ok, flash_ok;
    int latency_ok;             /* -1 when no latency was measured */
    int fits;                   /* all known checks pass */
    size_t peak_bytes, flash_bytes; /* for the target's dtype */
    double latency_ms;
} TargetFit;

void target_check(const Target *t, const CostReport *r, TargetFit *fit);

#endif
