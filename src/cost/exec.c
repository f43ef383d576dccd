/* exec.c: the instrumented executor, the check on the planner. It runs the real network at
 * batch 1 in eval mode, node by node in a given order through net_node_forward, but with
 * activation memory of its own: each node's output buffer is allocated when the node runs and
 * released when the last reader of the buffer has run, with reference counts (one per input
 * slot that still has to read a tensor, one more for the network output). It applies the
 * memory rules of cost.h for real:
 *   - id and dropout (eval: the identity) point their output at the input's buffer;
 *   - zero points its output at one shared block of zeros (a constant, not counted);
 *   - an in-place op whose candidate input buffer has no reader left but this node writes
 *     its output into that buffer (the kernels allow out == in);
 *   - everything else gets a new buffer.
 * Live bytes are summed over buffers with readers left (the input included), and the peak
 * is taken when a buffer is allocated, while the node's inputs are still held.
 *
 * Nothing is shared with memplan.c but memplan_kind: the planner reasons over sets of executed
 * nodes, this file over reference counts; the tests require the two to agree for any order.
 * A released buffer is filled with NaN and only freed at the end, so if the rules released a
 * tensor that is still read, the logits come out NaN (and differ from net_forward's).
 */
#include <math.h>

#include "cost.h"

typedef struct {
    float *p;
    size_t bytes;
    int refs;
    int dead;
} Buf;

static int tensor_of(int in) { return in < 0 ? 0 : in + 1; }

static void release(Buf *b, size_t *current) {
    NASC_ASSERT(!b->dead && b->refs == 0);
    b->dead = 1;
    *current -= b->bytes;
    size_t n = b->bytes / sizeof(float);
    for (size_t k = 0; k < n; k++) b->p[k] = NAN;
}

void exec_run(Net *net, const float *x, const int *order, float *logits, ExecStats *st) {
    int n = net->spec.n;
    NASC_ASSERT(order == NULL || memplan_is_topological(net, order));
    memset(st, 0, sizeof *st);
    /* net_node_forward needs net->saved (maxpool's argmax), which net_forward lays out. */
    if (net->batch_cap < 1) net_forward(net, x, 1, 0);
    float **net_out = xmalloc((size_t)n * sizeof *net_out);
    memcpy(net_out, net->out, (size_t)n * sizeof *net_out);
    const float *net_x = net->x;
    int net_batch = net->batch, net_training = net->training;

    /* Readers per tensor (tensor 0 = input, i + 1 = node i), +1 for the network output. */
    int *readers = xcalloc((size_t)n + 1, sizeof *readers);
    size_t zero_elems = 1;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        for (int j = 0; j < nd->nin; j++) readers[tensor_of(nd->in[j])]++;
        if (nd->op == OP_ZERO) zero_elems = NASC_MAX(zero_elems, (size_t)nd->c * nd->h * nd->w);
    }
    readers[n]++;
    float *zeros = xalloc_aligned(zero_elems * sizeof(float));

    Buf *bufs = xcalloc((size_t)n + 1, sizeof *bufs);
    int nbufs = 0;
    int *tb = xmalloc((size_t)(n + 1) * sizeof *tb); /* tensor -> buffer, -1 = the zeros */
    size_t current = 0, peak = 0;
    int peak_node = -1;

    size_t in_elems = (size_t)net->in_c * net->in_h * net->in_w;
    Buf *b0 = &bufs[nbufs];
    b0->bytes = in_elems * sizeof(float);
    b0->p = xalloc_aligned(b0->bytes);
    memcpy(b0->p, x, b0->bytes);
    b0->refs = readers[0];
    tb[0] = nbufs++;
    current = peak = b0->bytes;
    if (b0->refs == 0) release(b0, &current);

    net->x = b0->p;
    net->batch = 1;
    net->training = 0;
    for (int t = 0; t < n; t++) {
        int i = order ? order[t] : t;
        const Node *nd = &net->spec.nodes[i];
        int k;
        MemKind kind = memplan_kind(nd, &k);
        int ti = i + 1, run = 1;
        if (kind == MEM_ALIAS || kind == MEM_ZERO) {
            int src = kind == MEM_ALIAS ? tb[tensor_of(nd->in[0])] : -1;
            tb[ti] = src;
            net->out[i] = src < 0 ? zeros : bufs[src].p;
            if (src >= 0) bufs[src].refs += readers[ti];
            st->aliased++;
            run = 0; /* nothing to compute: same values, same buffer */
        } else {
            int reuse = -1;
            for (int j = 0; kind == MEM_INPLACE && j < k && j < nd->nin && reuse < 0; j++) {
                int b = tb[tensor_of(nd->in[j])];
                if (b < 0) continue;
                int mine = 0; /* this node's own reads of buffer b */
                for (int q = 0; q < nd->nin; q++) mine += tb[tensor_of(nd->in[q])] == b;
                if (bufs[b].refs == mine) reuse = b;
            }
            if (reuse >= 0) {
                tb[ti] = reuse;
                bufs[reuse].refs += readers[ti];
                st->inplace++;
            } else {
                Buf *b = &bufs[nbufs];
                b->bytes = (size_t)nd->c * nd->h * nd->w * sizeof(float);
                b->p = xalloc_aligned(b->bytes);
                b->refs = readers[ti];
                tb[ti] = nbufs++;
                current += b->bytes;
                if (current > peak) peak = current, peak_node = i;
            }
            net->out[i] = bufs[tb[ti]].p;
        }
        if (run) net_node_forward(net, i);
        for (int j = 0; j < nd->nin; j++) {
            int b = tb[tensor_of(nd->in[j])];
            if (b < 0) continue;
            NASC_ASSERT(bufs[b].refs > 0 && !bufs[b].dead);
            if (--bufs[b].refs == 0) release(&bufs[b], &current);
        }
        int b = tb[ti];
        if (b >= 0 && bufs[b].refs == 0 && !bufs[b].dead) release(&bufs[b], &current);
    }
    memcpy(logits, net->out[n - 1], (size_t)net->classes * sizeof(float));
    st->peak_bytes = peak;
    st->final_bytes = current;
    st->peak_node = peak_node;

    for (int k = 0; k < nbufs; k++) free(bufs[k].p);
    free(bufs);
    free(tb);
    free(zeros);
    free(readers);
    memcpy(net->out, net_out, (size_t)n * sizeof *net_out);
    free(net_out);
    net->x = net_x;
    net->batch = net_batch;
    net->training = net_training;
}
