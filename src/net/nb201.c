/* nb201.c: NAS-Bench-201 cells in NB201's own notation, expanded into NB201's network.
 *
 *   nb201:|op~0|+|op~0|op~1|+|op~0|op~1|op~2|      op in none, skip_connect, nor_conv_1x1,
 *                                                  nor_conv_3x3, avg_pool_3x3
 * Node j (1..3) of a cell is the sum over its edges i -> j of op(node i); node 3 is the output.
 * The network (NB201's TinyNetwork, infer version) is:
 *   stem: conv3x3(C) + BN
 *   N cells at C, reduction to 2C, N cells at 2C, reduction to 4C, N cells at 4C
 *   head: BN, ReLU, global average pool, linear(classes)
 * A reduction is NB201's ResNet basic block with stride 2: branch ReLU-conv3x3/2-BN,
 * ReLU-conv3x3-BN; shortcut avgpool 2x2/2 then conv1x1 (no BN); output branch + shortcut.
 * In a cell, nor_conv_kxk is ReLU-conv(k, pad k/2)-BN, avg_pool_3x3 is stride 1 pad 1 with
 * count_include_pad off, skip_connect the identity and none the zero op.
 * Nodes are emitted in the order of NB201's module registration, so parameters come out in
 * the same order as PyTorch's model.parameters() for the reference implementation.
 */
#include "net.h"

typedef enum { E_NONE, E_SKIP, E_CONV1, E_CONV3, E_POOL, E_COUNT } EdgeOp;
static const char *edge_names[E_COUNT] = {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"};

typedef struct {
    int op[4][3]; /* op[j][i] for edge i -> j, j = 1..3; -1 = absent */
    int order[4][3]; /* edge inputs of node j in the order written */
} Cell;

static int parse_cell(const char *arch, Cell *cell, Err *e) {
    const char *p = arch + 6; /* past "nb201:" */
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 3; i++) cell->op[j][i] = -1, cell->order[j][i] = -1;
    for (int j = 1; j <= 3; j++) {
        if (j > 1) {
            if (strncmp(p, "+|", 2) != 0) {
                err_set(e, "spec: nb201 cell, column %d: expected '+|' before node %d's edges, found '%.8s'",
                        (int)(p - arch) + 1, j, p);
                return NASC_ERR;
            }
            p += 2;
        } else if (*p != '|') {
            err_set(e, "spec: nb201 cell, column %d: expected '|' after 'nb201:'", (int)(p - arch) + 1);
            return NASC_ERR;
        } else {
            p++;
        }
        for (int k = 0; k < j; k++) {
            const char *start = p;
            int op = -1;
            for (int o = 0; o < E_COUNT; o++) {
                size_t n = strlen(edge_names[o]);
                if (strncmp(p, edge_names[o], n) == 0 && p[n] == '~') {
                    op = o;
                    p += n + 1;
                    break;
                }
            }
            if (op < 0) {
                int len = 0;
                while (start[len] && start[len] != '~' && start[len] != '|' && len < 24) len++;
                err_set(e,
                        "spec: nb201 cell, column %d: unknown operation '%.*s' (expected none, skip_connect, "
                        "nor_conv_1x1, nor_conv_3x3 or avg_pool_3x3, followed by ~input)",
                        (int)(start - arch) + 1, len, start);
                return NASC_ERR;
            }
            if (*p < '0' || *p > '9' || p[1] != '|') {
                err_set(e, "spec: nb201 cell, column %d: expected a single-digit input node and '|' after '~'",
                        (int)(p - arch) + 1);
                return NASC_ERR;
            }
            int in = *p - '0';
            if (in >= j) {
                err_set(e, "spec: nb201 cell, column %d: node %d cannot take input from node %d (inputs must come before)",
                        (int)(p - arch) + 1, j, in);
                return NASC_ERR;
            }
            if (cell->op[j][in] >= 0) {
                err_set(e, "spec: nb201 cell, column %d: edge %d -> %d given twice", (int)(p - arch) + 1, in, j);
                return NASC_ERR;
            }
            cell->op[j][in] = op;
            cell->order[j][k] = in;
            p += 2;
        }
    }
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    if (*p) {
        err_set(e, "spec: nb201 cell, column %d: unexpected '%.8s' after the third node (a cell has 3 nodes)",
                (int)(p - arch) + 1, p);
        return NASC_ERR;
    }
    return NASC_OK;
}

static OpAttr conv_attr(int c, int k, int s) {
    OpAttr a = op_default_attr(OP_CONV);
    a.c = c;
    a.k = k;
    a.s = s;
    a.p = k / 2;
    return a;
}

static int add1(Spec *s, OpKind op, OpAttr a, int in) { return spec_add(s, op, a, &in, 1, NULL); }

/* ReLU -> conv -> BN on node x; returns the BN node. */
static int relu_conv_bn(Spec *s, int x, int c, int k, int stride) {
    int r = add1(s, OP_RELU, op_default_attr(OP_RELU), x);
    int cv = add1(s, OP_CONV, conv_attr(c, k, stride), r);
    return add1(s, OP_BN, op_default_attr(OP_BN), cv);
}

static int emit_cell(Spec *s, const Cell *cell, int x, int c) {
    int node[4] = {x, -1, -1, -1};
    for (int j = 1; j <= 3; j++) {
        int outs[3], nout = 0;
        for (int k = 0; k < j; k++) {
            int i = cell->order[j][k];
            int src = node[i];
            int o;
            switch (cell->op[j][i]) {
            case E_NONE: o = add1(s, OP_ZERO, op_default_attr(OP_ZERO), src); break;
            case E_SKIP: o = add1(s, OP_ID, op_default_attr(OP_ID), src); break;
            case E_CONV1: o = relu_conv_bn(s, src, c, 1, 1); break;
            case E_CONV3: o = relu_conv_bn(s, src, c, 3, 1); break;
            default: {
                OpAttr a = op_default_attr(OP_AVGPOOL);
                a.k = 3;
                a.s = 1;
                a.p = 1;
                a.cip = 0;
                o = add1(s, OP_AVGPOOL, a, src);
            }
            }
            outs[nout++] = o;
        }
        node[j] = nout == 1 ? outs[0] : spec_add(s, OP_ADD, op_default_attr(OP_ADD), outs, nout, NULL);
    }
    return node[3];
}

static int emit_reduction(Spec *s, int x, int c) {
    int a = relu_conv_bn(s, x, c, 3, 2);
    int b = relu_conv_bn(s, a, c, 3, 1);
    OpAttr pa = op_default_attr(OP_AVGPOOL);
    pa.k = 2;
    pa.s = 2;
    pa.p = 0;
    int pool = add1(s, OP_AVGPOOL, pa, x);
    int sc = add1(s, OP_CONV, conv_attr(c, 1, 1), pool);
    int in[2] = {b, sc};
    return spec_add(s, OP_ADD, op_default_attr(OP_ADD), in, 2, NULL);
}

int nb201_expand(Spec *out, const char *arch, int channels, int cells, Err *e) {
    Cell cell;
    if (parse_cell(arch, &cell, e) != NASC_OK) return NASC_ERR;
    if (channels < 1 || channels > 4096) {
        err_set(e, "nb201: --channels must be between 1 and 4096, got %d", channels);
        return NASC_ERR;
    }
    if (cells < 1 || cells > 64) {
        err_set(e, "nb201: --cells must be between 1 and 64, got %d", cells);
        return NASC_ERR;
    }
    int x = add1(out, OP_CONV, conv_attr(channels, 3, 1), -1);
    x = add1(out, OP_BN, op_default_attr(OP_BN), x);
    for (int stage = 0; stage < 3; stage++) {
        int c = channels << stage;
        if (stage > 0) x = emit_reduction(out, x, c);
        for (int n = 0; n < cells; n++) x = emit_cell(out, &cell, x, c);
    }
    x = add1(out, OP_BN, op_default_attr(OP_BN), x);
    x = add1(out, OP_RELU, op_default_attr(OP_RELU), x);
    x = add1(out, OP_GAP, op_default_attr(OP_GAP), x);
    add1(out, OP_LINEAR, op_default_attr(OP_LINEAR), x);
    return NASC_OK;
}
