/* cost.c: the cost report of a network: parameters and MACs (the tape's own counts), peak
 * activation memory from the planner, and flash for fp32 and int8 with the accounting that
 * cost.h states. Latency is measured only when asked (cost_of), since it runs the net.
 */
#include "cost.h"

#define INT8_BIAS_BYTES 4   /* int32 */
#define INT8_WSCALE_BYTES 4 /* float32 per output channel */
#define INT8_BN_BYTES 8     /* float32 scale + float32 shift per channel */
#define INT8_QPARAM_BYTES 8 /* float32 scale + int32 zero point per activation tensor */

void cost_flash_int8(const Net *net, Int8Flash *f) {
    int n = net->spec.n;
    memset(f, 0, sizeof *f);
    /* Readers of each node's output, to know whether a conv feeds its BN alone. */
    int *readers = xcalloc((size_t)n, sizeof *readers);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++)
            if (nd->in[j] >= 0) readers[nd->in[j]]++;
    }
    /* folded[i]: node i is a BN folded into its input, or a conv/linear that absorbed one. */
    uint8_t *folded = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_BN || nd->in[0] < 0) continue;
        int src = nd->in[0];
        OpKind op = net->spec.nodes[src].op;
        if ((op == OP_CONV || op == OP_LINEAR) && readers[src] == 1 && !folded[src]) folded[i] = folded[src] = 1;
    }
    f->qtensors = 1; /* the input */
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        MemKind mk = memplan_kind(nd, NULL);
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            size_t nb = nd->a.bias ? (size_t)nd->c : 0;
            f->weights += nd->nparam - nb;
            f->wscales += (size_t)nd->c * INT8_WSCALE_BYTES;
            if (nd->a.bias || folded[i]) f->biases += (size_t)nd->c * INT8_BIAS_BYTES;
            if (!folded[i]) f->qtensors++;
        } else if (nd->op == OP_BN) {
            if (folded[i]) f->folded_bn++;
            else f->bn += (size_t)nd->c * INT8_BN_BYTES;
            f->qtensors++;
        } else if (mk != MEM_ALIAS && mk != MEM_ZERO) {
            f->qtensors++;
        }
    }
    f->act_qparams = (size_t)f->qtensors * INT8_QPARAM_BYTES;
    f->total = f->weights + f->biases + f->wscales + f->bn + f->act_qparams;
    free(readers);
    free(folded);
}

void cost_static(const Net *net, const MemPlanConfig *plan_cfg, CostReport *r) {
    memset(r, 0, sizeof *r);
    r->params = net_param_count(net);
    r->macs = net_macs(net);
    memplan_plan(net, plan_cfg, &r->plan);
    r->peak_fp32 = r->plan.peak_elems * 4;
    r->peak_int8 = r->plan.peak_elems;
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

size_t cost_peak_bytes(const CostReport *r, int dtype_bytes) { return dtype_bytes == 1 ? r->peak_int8 : r->peak_fp32; }

size_t cost_flash_bytes(const CostReport *r, int dtype_bytes) {
    return dtype_bytes == 1 ? r->flash_int8 : r->flash_fp32;
}
