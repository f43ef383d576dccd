/* cost.c: the cost report of a network: parameters and MACs (the tape's own counts), peak
 * activation memory from the planner, and flash for fp32 and int8 with the accounting that
 * cost.h states. Latency is measured only when asked (cost_of), since it runs the net.
 */
#include "arena.h"
#include "cost.h"

#define INT8_BIAS_BYTES 4    /* int32 */
#define INT8_WSCALE_BYTES 4  /* float32 per output channel */
#define INT8_REQUANT_BYTES 5 /* int32 multiplier + int8 shift */
#define INT8_BN_BYTES 14     /* unfolded BN per channel: int8 w, int32 bias, f32 scale, requant */
#define INT8_LUT_BYTES 256
#define INT8_QPARAM_BYTES 8  /* float32 scale + int32 zero point per activation tensor */

/* The accounting of cost.h, derived here from the tape independently of the lowering in
 * src/compress/qnet.c (the tests compare the two on many networks). */
void cost_flash_int8(const Net *net, Int8Flash *f) {
    int n = net->spec.n;
    memset(f, 0, sizeof *f);
    int *readers = xcalloc((size_t)n, sizeof *readers);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++)
            if (nd->in[j] >= 0) readers[nd->in[j]]++;
    }
    /* absorbed[i]: node i runs inside the chain of head[i] (a folded BN, a fused activation);
     * inner[i]: node i's output is consumed inside its chain (not a tensor); folds[i]: the
     * conv/linear i absorbed a BN; acts[i]: the chain headed by i has a fused activation. */
    uint8_t *absorbed = xcalloc((size_t)n, 1), *inner = xcalloc((size_t)n, 1), *folds = xcalloc((size_t)n, 1),
            *acts = xcalloc((size_t)n, 1);
    int *head = xmalloc((size_t)n * sizeof *head);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        int p = nd->in[0];
        head[i] = i;
        if (p < 0 || readers[p] != 1) continue;
        OpKind pop = net->spec.nodes[p].op;
        if (nd->op == OP_BN && (pop == OP_CONV || pop == OP_LINEAR)) {
            absorbed[i] = inner[p] = folds[p] = 1;
            head[i] = p;
            f->folded_bn++;
        } else if (nd->op == OP_RELU || nd->op == OP_RELU6) {
            OpKind hop = net->spec.nodes[head[p]].op;
            if ((hop == OP_CONV || hop == OP_LINEAR || hop == OP_BN || hop == OP_ADD) && !acts[head[p]]) {
                absorbed[i] = inner[p] = acts[head[p]] = 1;
                head[i] = head[p];
                f->fused_act++;
            }
        }
    }
    f->qtensors = 1; /* the input */
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        size_t c = (size_t)nd->c;
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR:
            f->weights += nd->nparam - (nd->a.bias ? c : 0);
            f->wscales += c * INT8_WSCALE_BYTES;
            f->requant += c * INT8_REQUANT_BYTES;
            if (nd->a.bias || folds[i]) f->biases += c * INT8_BIAS_BYTES;
            break;
        case OP_BN:
            if (!absorbed[i]) f->bn += c * INT8_BN_BYTES;
            break;
        case OP_RELU:
        case OP_RELU6:
        case OP_HSWISH:
        case OP_SIGMOID:
        case OP_HSIGMOID:
            if (!absorbed[i]) f->luts += INT8_LUT_BYTES;
            break;
        case OP_AVGPOOL: f->requant += (size_t)nd->a.k * nd->a.k * INT8_REQUANT_BYTES; break;
        case OP_GAP:
        case OP_MUL:
        case OP_RESIZE: f->requant += INT8_REQUANT_BYTES; break;
        case OP_CONCAT: f->requant += (size_t)nd->nin * INT8_REQUANT_BYTES; break;
        case OP_ADD: break; /* float scales, from the tensors' quantization */
        default: break;
        }
        int tensor = !inner[i] && nd->op != OP_ID && nd->op != OP_DROPOUT && nd->op != OP_ZERO && nd->op != OP_MAXPOOL;
        f->qtensors += tensor;
    }
    f->act_qparams = (size_t)f->qtensors * INT8_QPARAM_BYTES;
    f->total = f->weights + f->biases + f->wscales + f->requant + f->luts + f->bn + f->act_qparams;
    free(readers);
    free(absorbed);
    free(inner);
    free(folds);
    free(acts);
    free(head);
}

void cost_static(const Net *net, const MemPlanConfig *plan_cfg, CostReport *r) {
    memset(r, 0, sizeof *r);
    r->params = net_param_count(net);
    r->macs = net_macs(net);
    memplan_plan(net, plan_cfg, &r->plan);
    r->peak_fp32 = r->plan.peak_elems * 4;
    r->peak_int8 = r->plan.peak_elems;
    ArenaPlan ap;
    arena_plan(net, r->plan.order, 1, &ap);
    r->arena_int8 = ap.arena_bytes;
    r->arena_fp32 = ap.arena_bytes * 4; /* the plan scales with the element size (arena.h) */
    arena_free(&ap);
    r->flash_fp32 = r->params * 4;
    cost_flash_int8(net, &r->int8);
    r->flash_int8 = r->int8.total;
}

void cost_of(Net *net, const MemPlanConfig *plan_cfg, const LatencyConfig *lat_cfg, CostReport *r) {
    cost_static(net, plan_cfg, r);
    latency_measure(net, lat_cfg, &r->latency);
    r->has_latency = 1;
}

void cost_free(CostReport *r) { memplan_free(&r->plan); }

size_t cost_peak_bytes(const CostReport *r, int dtype_bytes) {
    return dtype_bytes == 1 ? NASC_MAX(r->peak_int8, r->arena_int8) : NASC_MAX(r->peak_fp32, r->arena_fp32);
}

size_t cost_flash_bytes(const CostReport *r, int dtype_bytes) {
    return dtype_bytes == 1 ? r->flash_int8 : r->flash_fp32;
}
