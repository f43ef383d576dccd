/* nb201_space.c: the NAS-Bench-201 cell space: 6 edges, each one of 5 operations, in NB201's
 * order (value 0..4): none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3.
 * Decision d is edge d in the order NB201 writes them:
 *     nb201:|op~0|+|op~0|op~1|+|op~0|op~1|op~2|
 *            d0     d1     d2     d3     d4     d5       (edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3)
 * to_arch gives exactly that string (the notation of spec_parse and of the benchmark tables);
 * from_arch also takes NB201's bare "|...|" form and a node's edges in any order.
 * to_spec returns the arch string itself: spec_parse expands it onto the NB201 skeleton, so
 * the caller passes the space's `channels` and `cells` to spec_parse (a short spec that is also
 * the key of the tabular benchmarks).
 *
 * Canonical form: two cells share one form when the output of the cell (node 3) is the same
 * formal expression of the input x. Each node's value is a formal sum (a sorted multiset of
 * terms), built edge by edge:
 *   - none adds nothing, and any operation applied to an empty sum (an all-zero node) adds
 *     nothing. That is exact for skip and pooling, and is NB201's own dedup convention for
 *     nor_conv (ReLU-conv-BN of zeros gives BN's bias in training mode, so strictly not zero);
 *     it makes edges out of unreachable nodes and into nodes that cannot reach node 3 vanish;
 *   - skip_connect adds the source's terms themselves (identity; sums flatten);
 *   - avg_pool_3x3 is linear, so it distributes: p(t) for every term t of the source;
 *   - nor_conv_1x1 / nor_conv_3x3 add one term a[...] / b[...] around the source's whole sum
 *     (ReLU first: not linear). Each such edge has its own weights, so two equal-looking
 *     conv terms are two independent instances, with one exception: the conv on edge 0->1
 *     reaches node 3 twice when node 1 feeds both 1->3 and 1->2->3; then its term is marked
 *     a*[x] / b*[x] (one shared instance), and no other edge can be shared in this cell.
 * Equal expressions therefore mean the same parameterized function: this merges cells that
 * differ on dead edges, isomorphic cells (nodes 1 and 2 swapped when 1->2 is none), skip
 * chains (node j = skip(node i) can be bypassed), skip and an operation trading places along
 * a chain, and pooling moved across sums: 5,044 classes. NB201's own to_unique_str (its
 * paper's 6,466) differs both ways: it sees a node with two zero inputs ("#+#") as non-zero
 * and neither flattens sums nor distributes pooling, so it misses merges (792 of these classes
 * span several of its strings); and it writes a conv instance used twice like two independent
 * convs, so it merges cells that differ in parameters (430 of its strings span several of
 * these classes).
 * At open the space computes the expression of all 15,625 cells; the canonical member of a
 * class is the one with the fewest non-none edges, then the smallest mixed-radix index (edge
 * 0->1 most significant). It has no dead edges, and canonical(canonical(m)) = canonical(m).
 */
#include "spaces.h"

#define NB_EDGES 6
#define NB_OPS 5
#define NB_CELLS 15625 /* 5^6 */

enum { NB_NONE, NB_SKIP, NB_CONV1, NB_CONV3, NB_POOL };
static const char *nb_op_names[NB_OPS] = {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"};

/* Edge index of i -> j (0 <= i < j <= 3) in NB201's order. */
static int eidx(int i, int j) { return j * (j - 1) / 2 + i; }

typedef struct {
    int canon[NB_CELLS]; /* canonical cell code of each cell code */
} Nb201Impl;

static int cell_code(const int *m) {
    int c = 0;
    for (int d = 0; d < NB_EDGES; d++) c = c * NB_OPS + m[d];
    return c;
}

static void cell_decode(int c, int *m) {
    for (int d = NB_EDGES - 1; d >= 0; d--) {
        m[d] = c % NB_OPS;
        c /= NB_OPS;
    }
}

/* ---- formal expressions (see the top comment) */
#define NF_TERMS 8
#define NF_LEN 160

typedef struct {
    int n;
    char t[NF_TERMS][NF_LEN]; /* sorted */
} Expr;

static void expr_add(Expr *v, const char *term) {
    NASC_ASSERT(v->n < NF_TERMS && strlen(term) < NF_LEN);
    int i = v->n++;
    while (i > 0 && strcmp(v->t[i - 1], term) > 0) {
        memcpy(v->t[i], v->t[i - 1], NF_LEN);
        i--;
    }
    snprintf(v->t[i], NF_LEN, "%s", term);
}

static void expr_join(const Expr *v, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    if (v->n == 0) snprintf(out, n, "0");
    for (int i = 0; i < v->n; i++) len += (size_t)snprintf(out + len, n - len, "%s%s", i ? "+" : "", v->t[i]);
    NASC_ASSERT(len < n);
}

/* dst += op(v) */
static void expr_apply(Expr *dst, int op, const Expr *v, int shared) {
    char inner[NF_TERMS * NF_LEN], term[NF_LEN + 8];
    if (op == NB_NONE || v->n == 0) return;
    switch (op) {
    case NB_SKIP:
        for (int i = 0; i < v->n; i++) expr_add(dst, v->t[i]);
        break;
    case NB_POOL:
        for (int i = 0; i < v->n; i++) {
            snprintf(term, sizeof term, "p(%s)", v->t[i]);
            expr_add(dst, term);
        }
        break;
    default:
        expr_join(v, inner, sizeof inner);
        NASC_ASSERT(strlen(inner) + 5 < NF_LEN);
        snprintf(term, sizeof term, "%c%s[%s]", op == NB_CONV1 ? 'a' : 'b', shared ? "*" : "", inner);
        expr_add(dst, term);
    }
}

#define NF_KEY 256

/* The expression of node 3 of cell m, as text. */
static void cell_expr(const int *m, char *key) {
    Expr x = {0}, n1 = {0}, n2 = {0}, n3 = {0};
    expr_add(&x, "x");
    int shared = m[eidx(1, 3)] != NB_NONE && m[eidx(1, 2)] != NB_NONE && m[eidx(2, 3)] != NB_NONE;
    expr_apply(&n1, m[eidx(0, 1)], &x, shared);
    expr_apply(&n2, m[eidx(0, 2)], &x, 0);
    expr_apply(&n2, m[eidx(1, 2)], &n1, 0);
    expr_apply(&n3, m[eidx(0, 3)], &x, 0);
    expr_apply(&n3, m[eidx(1, 3)], &n1, 0);
    expr_apply(&n3, m[eidx(2, 3)], &n2, 0);
    expr_join(&n3, key, NF_KEY);
}

static int cell_nnz(int code) {
    int n = 0;
    for (int d = 0; d < NB_EDGES; d++, code /= NB_OPS) n += (code % NB_OPS) != NB_NONE;
    return n;
}

typedef struct {
    char key[NF_KEY];
    int code, nnz;
} CellKey;

/* By expression, then the preferred member first: fewer non-none edges, smaller code. */
static int cellkey_cmp(const void *pa, const void *pb) {
    const CellKey *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c) return c;
    if (a->nnz != b->nnz) return a->nnz - b->nnz;
    return a->code - b->code;
}

static void build_canon(Nb201Impl *im) {
    CellKey *k = xmalloc(NB_CELLS * sizeof *k);
    for (int c = 0; c < NB_CELLS; c++) {
        int m[NB_EDGES];
        cell_decode(c, m);
        cell_expr(m, k[c].key);
        k[c].code = c;
        k[c].nnz = cell_nnz(c);
    }
    qsort(k, NB_CELLS, sizeof *k, cellkey_cmp);
    int rep = 0;
    for (int i = 0; i < NB_CELLS; i++) {
        if (i == 0 || strcmp(k[i].key, k[i - 1].key) != 0) rep = k[i].code;
        im->canon[k[i].code] = rep;
    }
    free(k);
}

static void nb_canonical(const Space *s, const int *m, int *out) {
    const Nb201Impl *im = s->impl;
    cell_decode(im->canon[cell_code(m)], out);
}

static char *nb_to_arch(const Space *s, const int *m) {
    char buf[256];
    size_t n = (size_t)snprintf(buf, sizeof buf, "nb201:|");
    for (int j = 1; j <= 3; j++) {
        if (j > 1) n += (size_t)snprintf(buf + n, sizeof buf - n, "+|");
        for (int i = 0; i < j; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s~%d|", nb_op_names[m[eidx(i, j)]], i);
    }
    return xstrdup(buf);
}

static char *nb_to_spec(const Space *s, const int *m, Err *e) { return nb_to_arch(s, m); }

static int nb_from_arch(const Space *s, const char *arch, int *m, Err *e) {
    const char *p = arch;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    const char *start = p;
    if (strncmp(p, "nb201:", 6) == 0) p += 6;
    int seen[NB_EDGES] = {0};
#define COL ((int)(p - start) + 1)
    for (int j = 1; j <= 3; j++) {
        if (j > 1) {
            if (strncmp(p, "+|", 2) != 0) {
                err_set(e, "nb201 arch, column %d: expected '+|' before node %d's edges, found '%.8s'", COL, j, p);
                return NASC_ERR;
            }
            p += 2;
        } else {
            if (*p != '|') {
                err_set(e, "nb201 arch, column %d: expected '|' (an NB201 cell looks like "
                           "nb201:|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)", COL);
                return NASC_ERR;
            }
            p++;
        }
        for (int k = 0; k < j; k++) {
            int op = -1;
            for (int o = 0; o < NB_OPS; o++) {
                size_t len = strlen(nb_op_names[o]);
                if (strncmp(p, nb_op_names[o], len) == 0 && p[len] == '~') {
                    op = o;
                    p += len + 1;
                    break;
                }
            }
            if (op < 0) {
                int len = 0;
                while (p[len] && p[len] != '~' && p[len] != '|' && len < 24) len++;
                err_set(e, "nb201 arch, column %d: unknown operation '%.*s' (expected none, skip_connect, "
                           "nor_conv_1x1, nor_conv_3x3 or avg_pool_3x3, then ~input)", COL, len, p);
                return NASC_ERR;
            }
            if (*p < '0' || *p > '9' || p[1] != '|') {
                err_set(e, "nb201 arch, column %d: expected one input node digit and '|' after '~'", COL);
                return NASC_ERR;
            }
            int i = *p - '0';
            if (i >= j) {
                err_set(e, "nb201 arch, column %d: node %d cannot take input from node %d", COL, j, i);
                return NASC_ERR;
            }
            if (seen[eidx(i, j)]) {
                err_set(e, "nb201 arch, column %d: edge %d -> %d given twice", COL, i, j);
                return NASC_ERR;
            }
            seen[eidx(i, j)] = 1;
            m[eidx(i, j)] = op;
            p += 2;
        }
    }
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p) {
        err_set(e, "nb201 arch, column %d: unexpected '%.8s' after the third node", COL, p);
        return NASC_ERR;
    }
#undef COL
    return NASC_OK;
}

static void nb_destroy(Space *s) {
    free(s->impl);
    free(s);
}

static const SpaceOps nb201_ops = {
    .name = "nb201",
    .canonical = nb_canonical,
    .to_spec = nb_to_spec,
    .to_arch = nb_to_arch,
    .from_arch = nb_from_arch,
    .active = NULL,
    .destroy = nb_destroy,
};

Space *nb201_space_open(int channels, int cells, Err *e) {
    if (channels < 1 || channels > 4096) {
        err_set(e, "nb201: --channels must be between 1 and 4096, got %d", channels);
        return NULL;
    }
    if (cells < 1 || cells > 64) {
        err_set(e, "nb201: --cells must be between 1 and 64, got %d", cells);
        return NULL;
    }
    Space *s = xcalloc(1, sizeof *s);
    s->ops = &nb201_ops;
    s->ndims = NB_EDGES;
    s->channels = channels;
    s->cells = cells;
    for (int j = 1; j <= 3; j++)
        for (int i = 0; i < j; i++) {
            s->card[eidx(i, j)] = NB_OPS;
            snprintf(s->dim_name[eidx(i, j)], sizeof s->dim_name[0], "edge %d->%d", i, j);
        }
    Nb201Impl *im = xmalloc(sizeof *im);
    build_canon(im);
    s->impl = im;
    return s;
}
