/* prune.c: structured channel pruning (analysis, plan, physical removal, masking) and
 * unstructured magnitude pruning with masks and the AGP schedule. See prune.h for the contract.
 *
 * Channel analysis. Every output channel of every node is labelled with an element id; the
 * network input gets in_c elements and every channel-mixing producer (a conv that is not
 * depthwise, a linear) gets fresh ones, each producer being one "space". Ops that keep channels
 * (BN, activations, pools, gap, dropout, id, zero, resize) pass their input's labels through; a
 * depthwise conv (g == cin == cout) too, since its channel i reads only channel i. Then:
 *   - add(x, y, ...) unions label j of every input (union-find over elements);
 *   - mul(x, s) unions x's label j with s's label j;
 *   - concat(x, y) labels its output with x's labels followed by y's.
 * A union-find root is a unit: a set of channels that live or die together. A second union-find
 * over spaces (a space is tied to another when one of its elements shares a unit with one of
 * the other's) gives the groups in which the ratio applies. This is what keeps residual adds,
 * concats (even a concat added to a conv output: units then span two producers), SE blocks,
 * depthwise convs and NB201 cells consistent: a unit is kept or dropped everywhere at once.
 *
 * Building the pruned net is then mechanical: every node's kept channels are the positions of
 * its labels whose unit is kept (ascending), a conv slices (cout, cin/g) with those of its
 * output and input, a depthwise conv slices its output and sets g to its new cin, a linear
 * slices rows by its output and columns by its input's kept channels, one H*W block each.
 */
#include "prune.h"

#include <math.h>

const char *prune_criterion_name(PruneCriterion c) {
    static const char *names[] = {"l1", "l2", "bn"};
    _Static_assert(sizeof names / sizeof names[0] == PRUNE_CRIT_COUNT, "one name per criterion");
    return (unsigned)c < PRUNE_CRIT_COUNT ? names[c] : "?";
}

int prune_criterion_parse(const char *s, PruneCriterion *out, Err *e) {
    for (int c = 0; c < PRUNE_CRIT_COUNT; c++)
        if (!strcmp(s, prune_criterion_name((PruneCriterion)c))) {
            *out = (PruneCriterion)c;
            return NASC_OK;
        }
    err_set(e, "unknown pruning criterion '%s' (expected l1, l2 or bn)", s);
    return NASC_ERR;
}

/* ------------------------------------------------------------------ union-find */
static int uf_find(int *parent, int x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* The smaller root becomes the parent, so roots (and unit numbering) do not depend on the
 * order of unions. */
static void uf_union(int *parent, int a, int b) {
    a = uf_find(parent, a), b = uf_find(parent, b);
    if (a == b) return;
    if (a < b) parent[b] = a;
    else parent[a] = b;
}

/* ------------------------------------------------------------------ analysis */
/* Reasons a channel cannot be pruned (bits). */
enum { FIX_IO = 1, FIX_GROUPED = 2, FIX_SIGMOID = 4 };

static int input_c(const Net *net, const Node *nd, int j) {
    int k = nd->in[j];
    return k < 0 ? net->in_c : net->spec.nodes[k].c;
}

static void input_hw(const Net *net, const Node *nd, int *h, int *w) {
    int k = nd->in[0];
    if (k < 0) *h = net->in_h, *w = net->in_w;
    else *h = net->spec.nodes[k].h, *w = net->spec.nodes[k].w;
}

/* A depthwise conv: channel i of the output reads only channel i of the input. */
static int conv_is_depthwise(const Net *net, const Node *nd) {
    int cin = input_c(net, nd, 0);
    return nd->op == OP_CONV && nd->a.g > 1 && nd->a.g == cin && nd->c == cin;
}

/* Element labels of every node's output channels. */
typedef struct {
    int *maps;    /* (sum of node channels): labels, node by node */
    int *map_off; /* (n + 1) */
    int *in_map;  /* (in_c): the network input's labels */
    int nelem;
    int *parent;  /* (nelem) element union-find */
    int *space;   /* (nelem) the space that created each element */
    int nspace;
    int *fix;     /* (nelem) FIX_* bits */
} Labels;

static const int *labels_of(const Labels *L, int k) { return k < 0 ? L->in_map : L->maps + L->map_off[k]; }

static void labels_fix(Labels *L, const int *map, int c, int why) {
    for (int j = 0; j < c; j++) L->fix[map[j]] |= why;
}

static void labels_free(Labels *L) {
    free(L->maps);
    free(L->map_off);
    free(L->in_map);
    free(L->parent);
    free(L->space);
    free(L->fix);
}

static int labels_new_space(Labels *L, int *dst, int c) {
    int sp = L->nspace++;
    for (int j = 0; j < c; j++) {
        int el = L->nelem++;
        L->parent[el] = el;
        L->space[el] = sp;
        L->fix[el] = 0;
        dst[j] = el;
    }
    return sp;
}

static void labels_build(const Net *net, Labels *L) {
    int n = net->spec.n;
    memset(L, 0, sizeof *L);
    L->map_off = xmalloc((size_t)(n + 1) * sizeof *L->map_off);
    size_t total = 0, elems = (size_t)net->in_c;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        L->map_off[i] = (int)total;
        total += (size_t)nd->c;
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) elems += (size_t)nd->c;
    }
    L->map_off[n] = (int)total;
    L->maps = xmalloc((total ? total : 1) * sizeof *L->maps);
    L->in_map = xmalloc((size_t)net->in_c * sizeof *L->in_map);
    L->parent = xmalloc(elems * sizeof *L->parent);
    L->space = xmalloc(elems * sizeof *L->space);
    L->fix = xmalloc(elems * sizeof *L->fix);
    labels_new_space(L, L->in_map, net->in_c);
    labels_fix(L, L->in_map, net->in_c, FIX_IO);

    /* nz[i]: node i's output may be nonzero on a pruned channel of the masked original (a
     * sigmoid gives 0.5 for 0), so a layer mixing channels must not read it. */
    unsigned char *nz = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        int *out = L->maps + L->map_off[i];
        const int *x = labels_of(L, nd->in[0]);
        int cin = input_c(net, nd, 0);
        int nz_in = nd->in[0] >= 0 && nz[nd->in[0]];
        switch (nd->op) {
        case OP_CONV:
            if (conv_is_depthwise(net, nd)) {
                memcpy(out, x, (size_t)nd->c * sizeof *out);
            } else {
                labels_new_space(L, out, nd->c);
                if (nd->a.g > 1) { /* grouped, or depthwise with a channel multiplier */
                    labels_fix(L, x, cin, FIX_GROUPED);
                    labels_fix(L, out, nd->c, FIX_GROUPED);
                }
                if (nz_in) labels_fix(L, x, cin, FIX_SIGMOID);
            }
            break;
        case OP_LINEAR:
            labels_new_space(L, out, nd->c);
            if (nz_in) labels_fix(L, x, cin, FIX_SIGMOID);
            break;
        case OP_ADD:
            memcpy(out, x, (size_t)nd->c * sizeof *out);
            for (int j = 1; j < nd->nin; j++) {
                const int *y = labels_of(L, nd->in[j]);
                for (int ch = 0; ch < nd->c; ch++) uf_union(L->parent, out[ch], y[ch]);
                if (nd->in[j] >= 0 && nz[nd->in[j]]) nz[i] = 1;
            }
            nz[i] |= nz_in;
            break;
        case OP_MUL: {
            memcpy(out, x, (size_t)nd->c * sizeof *out);
            const int *s = labels_of(L, nd->in[1]);
            for (int ch = 0; ch < nd->c; ch++) uf_union(L->parent, out[ch], s[ch]);
            nz[i] = nz_in && nd->in[1] >= 0 && nz[nd->in[1]]; /* 0 * anything = 0 */
            break;
        }
        case OP_CONCAT: {
            int off = 0;
            for (int j = 0; j < nd->nin; j++) {
                int cj = input_c(net, nd, j);
                memcpy(out + off, labels_of(L, nd->in[j]), (size_t)cj * sizeof *out);
                off += cj;
                if (nd->in[j] >= 0 && nz[nd->in[j]]) nz[i] = 1;
            }
            NASC_ASSERT(off == nd->c);
            break;
        }
        case OP_SIGMOID:
        case OP_HSIGMOID:
            memcpy(out, x, (size_t)nd->c * sizeof *out);
            nz[i] = 1;
            break;
        case OP_BN: /* gamma = beta = 0 on a pruned channel: exactly 0 whatever comes in */
        case OP_ZERO:
            memcpy(out, x, (size_t)nd->c * sizeof *out);
            break;
        default: /* channel-preserving: activations, pools, gap, id, dropout, resize */
            NASC_ASSERT(nd->c == cin);
            memcpy(out, x, (size_t)nd->c * sizeof *out);
            nz[i] = nz_in;
            break;
        }
    }
    free(nz);
    /* The network's output (the classifier's classes) is never pruned. */
    labels_fix(L, L->maps + L->map_off[n - 1], net->spec.nodes[n - 1].c, FIX_IO);
}

/* ------------------------------------------------------------------ importance */
/* Score of each output channel of conv/linear node nd into s (nd->c): L1 or L2 norm of its
 * filter (weights only). */
static void filter_scores(const Net *net, const Node *nd, PruneCriterion crit, double *s) {
    size_t nw = nd->nparam - (nd->a.bias ? (size_t)nd->c : 0);
    size_t per = nw / (size_t)nd->c;
    const float *w = net->params + nd->param_off;
    for (int o = 0; o < nd->c; o++) {
        double acc = 0;
        for (size_t j = 0; j < per; j++) {
            double v = w[(size_t)o * per + j];
            acc += crit == PRUNE_L2 ? v * v : fabs(v);
        }
        s[o] = crit == PRUNE_L2 ? sqrt(acc) : acc;
    }
}

/* Add s (c) divided by its maximum into imp[unit of channel j]. Returns NASC_ERR on a
 * non-finite score. */
static int add_scores(double *imp, const double *s, int c, const int *units) {
    double mx = 0;
    for (int j = 0; j < c; j++) {
        if (!isfinite(s[j])) return NASC_ERR;
        if (s[j] > mx) mx = s[j];
    }
    if (mx <= 0) return NASC_OK;
    for (int j = 0; j < c; j++) imp[units[j]] += s[j] / mx;
    return NASC_OK;
}

typedef struct {
    int group;
    double imp;
    int unit;
} Rank;

static int rank_cmp(const void *pa, const void *pb) {
    const Rank *a = pa, *b = pb;
    if (a->group != b->group) return a->group < b->group ? -1 : 1;
    if (a->imp != b->imp) return a->imp > b->imp ? -1 : 1;
    return (a->unit > b->unit) - (a->unit < b->unit);
}

/* ------------------------------------------------------------------ counts */
static int kept_count(const PrunePlan *p, int node) {
    int c = 0;
    for (int j = p->map_off[node]; j < p->map_off[node + 1]; j++) c += p->keep[p->unit[j]];
    return c;
}

static int kept_in(const Net *net, const PrunePlan *p, int k) { return k < 0 ? net->in_c : kept_count(p, k); }

/* Parameters and MACs of net with only the plan's kept channels. */
static void plan_counts(const Net *net, const PrunePlan *p, size_t *params, double *macs) {
    size_t np = 0;
    double mc = 0;
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        int kc = kept_count(p, i), kin = kept_in(net, p, nd->in[0]);
        int hin, win;
        input_hw(net, nd, &hin, &win);
        if (nd->op == OP_CONV) {
            int g = conv_is_depthwise(net, nd) ? kin : nd->a.g;
            size_t per = (size_t)(kin / g) * nd->a.k * nd->a.k;
            np += (size_t)kc * per + (nd->a.bias ? (size_t)kc : 0);
            mc += (double)nd->h * nd->w * kc * per;
        } else if (nd->op == OP_LINEAR) {
            np += (size_t)kc * kin * hin * win + (nd->a.bias ? (size_t)kc : 0);
            mc += (double)kin * hin * win * kc;
        } else if (nd->op == OP_BN) {
            np += 2 * (size_t)kc;
        }
    }
    *params = np;
    *macs = mc;
}

/* ------------------------------------------------------------------ plan */
void prune_plan_free(PrunePlan *plan) {
    free(plan->map_off);
    free(plan->unit);
    free(plan->keep);
    memset(plan, 0, sizeof *plan);
}

int prune_plan(const Net *net, PruneCriterion crit, float ratio, PrunePlan *plan, Err *e) {
    memset(plan, 0, sizeof *plan);
    NASC_ASSERT((unsigned)crit < PRUNE_CRIT_COUNT && net->spec.n > 0);
    if (!(ratio > 0.0f && ratio < 1.0f)) {
        err_set(e, "pruning ratio must be in (0, 1), got %g", (double)ratio);
        return NASC_ERR;
    }
    int n = net->spec.n, rc = NASC_ERR;
    Labels L;
    labels_build(net, &L);

    /* Units: union-find roots, numbered in element order. */
    int *unit_of = xmalloc((size_t)L.nelem * sizeof *unit_of);
    int nunits = 0;
    for (int el = 0; el < L.nelem; el++) unit_of[el] = -1;
    for (int el = 0; el < L.nelem; el++) {
        int r = uf_find(L.parent, el);
        if (unit_of[r] < 0) unit_of[r] = nunits++;
        unit_of[el] = unit_of[r];
    }
    /* Groups: spaces tied through shared units. */
    int *sp_parent = xmalloc((size_t)L.nspace * sizeof *sp_parent);
    for (int s = 0; s < L.nspace; s++) sp_parent[s] = s;
    for (int el = 0; el < L.nelem; el++) uf_union(sp_parent, L.space[el], L.space[uf_find(L.parent, el)]);
    int *unit_group = xmalloc((size_t)nunits * sizeof *unit_group);
    int *unit_fix = xcalloc((size_t)nunits, sizeof *unit_fix);
    for (int el = 0; el < L.nelem; el++) {
        unit_group[unit_of[el]] = uf_find(sp_parent, L.space[el]);
        unit_fix[unit_of[el]] |= L.fix[el];
    }
    int *group_fix = xcalloc((size_t)L.nspace, sizeof *group_fix);
    int *group_units = xcalloc((size_t)L.nspace, sizeof *group_units);
    for (int u = 0; u < nunits; u++) {
        group_fix[unit_group[u]] |= unit_fix[u];
        group_units[unit_group[u]]++;
    }

    /* The plan's per-node unit table. */
    plan->nnodes = n;
    plan->in_c = net->in_c;
    plan->nunits = nunits;
    plan->map_off = xmalloc((size_t)(n + 1) * sizeof *plan->map_off);
    memcpy(plan->map_off, L.map_off, (size_t)(n + 1) * sizeof *plan->map_off);
    plan->unit = xmalloc(((size_t)L.map_off[n] ? (size_t)L.map_off[n] : 1) * sizeof *plan->unit);
    for (int j = 0; j < L.map_off[n]; j++) plan->unit[j] = unit_of[L.maps[j]];
    plan->keep = xmalloc((size_t)nunits);
    memset(plan->keep, 1, (size_t)nunits);

    /* Importance. */
    double *imp = xcalloc((size_t)nunits, sizeof *imp);
    double *imp_bn = xcalloc((size_t)nunits, sizeof *imp_bn);
    unsigned char *group_bn = xcalloc((size_t)L.nspace, 1);
    int maxc = 1;
    for (int i = 0; i < n; i++) maxc = NASC_MAX(maxc, net->spec.nodes[i].c);
    double *s = xmalloc((size_t)maxc * sizeof *s);
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++) {
        const Node *nd = &net->spec.nodes[i];
        const int *units = plan->unit + plan->map_off[i];
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            filter_scores(net, nd, crit == PRUNE_L2 ? PRUNE_L2 : PRUNE_L1, s);
            if (add_scores(imp, s, nd->c, units) != NASC_OK) bad = i;
        } else if (nd->op == OP_BN && crit == PRUNE_BN) {
            const float *gamma = net->params + nd->param_off;
            for (int j = 0; j < nd->c; j++) s[j] = fabs((double)gamma[j]);
            if (add_scores(imp_bn, s, nd->c, units) != NASC_OK) bad = i;
            for (int j = 0; j < nd->c; j++) group_bn[unit_group[units[j]]] = 1;
        }
    }
    if (bad >= 0) {
        err_set(e, "cannot rank channels: statement %d (%s) has NaN or infinite weights", bad + 1,
                op_name(net->spec.nodes[bad].op));
        goto done;
    }

    /* Choose: per prunable group, the most important units. */
    Rank *rk = xmalloc((size_t)(nunits ? nunits : 1) * sizeof *rk);
    for (int u = 0; u < nunits; u++) {
        int g = unit_group[u];
        rk[u].group = g;
        rk[u].imp = crit == PRUNE_BN && group_bn[g] ? imp_bn[u] : imp[u];
        rk[u].unit = u;
    }
    qsort(rk, (size_t)nunits, sizeof *rk, rank_cmp);
    int fix_why = 0, largest = 0;
    for (int a = 0; a < nunits;) {
        int g = rk[a].group, U = group_units[g];
        plan->groups++;
        if (group_fix[g]) {
            fix_why |= group_fix[g];
        } else {
            int keep = (int)floor(U * (1.0 - (double)ratio) + 0.5);
            keep = NASC_MAX(1, NASC_MIN(U, keep));
            for (int b = keep; b < U; b++) plan->keep[rk[a + b].unit] = 0;
            plan->units_prunable += U;
            plan->units_kept += keep;
            plan->groups_pruned += keep < U;
            largest = NASC_MAX(largest, U);
        }
        a += U;
    }
    free(rk);
    if (!plan->units_prunable) {
        char why[160] = "";
        if (fix_why & FIX_IO) strcat(why, ", tied to the network's input or output");
        if (fix_why & FIX_GROUPED) strcat(why, ", at an end of a grouped conv");
        if (fix_why & FIX_SIGMOID) strcat(why, ", a sigmoid output read by a conv or linear layer");
        err_set(e,
                "nothing to prune: none of the %d channel spaces of this network can lose channels (each is%s); "
                "structured pruning removes channels made by a conv or linear layer that are not tied to the "
                "network's input or output",
                plan->groups, why + 1);
        goto done;
    }
    if (plan->units_kept == plan->units_prunable) {
        err_set(e,
                "pruning ratio %g removes no channel: the largest prunable channel space has %d channels, so the "
                "ratio must be above %.4g",
                (double)ratio, largest, 0.5 / largest);
        goto done;
    }
    plan->params_before = net_param_count(net);
    plan->macs_before = net_macs(net);
    plan_counts(net, plan, &plan->params_predicted, &plan->macs_predicted);
    rc = NASC_OK;
done:
    free(s);
    free(imp);
    free(imp_bn);
    free(group_bn);
    free(group_fix);
    free(group_units);
    free(unit_fix);
    free(unit_group);
    free(sp_parent);
    free(unit_of);
    labels_free(&L);
    if (rc != NASC_OK) prune_plan_free(plan);
    return rc;
}

int prune_plan_kept(const Net *net, const PrunePlan *plan, int node, int *idx) {
    NASC_ASSERT(plan->nnodes == net->spec.n && node >= -1 && node < plan->nnodes);
    if (node < 0) {
        for (int j = 0; j < net->in_c; j++) idx[j] = j;
        return net->in_c;
    }
    int c = 0;
    for (int j = 0; j < net->spec.nodes[node].c; j++)
        if (plan->keep[plan->unit[plan->map_off[node] + j]]) idx[c++] = j;
    return c;
}

/* ------------------------------------------------------------------ apply */
int prune_plan_apply(const Net *net, const PrunePlan *plan, Net *out, PruneReport *rep, Err *e) {
    int n = net->spec.n;
    NASC_ASSERT(plan->nnodes == n);
    Spec sp = {0};
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i];
        OpAttr a = nd->a;
        int kc = kept_count(plan, i), kin = kept_in(net, plan, nd->in[0]);
        if (nd->op == OP_CONV) {
            if (conv_is_depthwise(net, nd)) a.g = kin;
            a.c = kc;
        } else if (nd->op == OP_LINEAR && a.c) {
            a.c = kc;
        }
        spec_add(&sp, nd->op, a, nd->in, nd->nin, nd->name[0] ? nd->name : NULL);
    }
    Err be;
    if (net_build(out, &sp, net->in_c, net->in_h, net->in_w, net->classes, &be) != NASC_OK) {
        spec_free(&sp);
        err_set(e, "pruning produced a spec that does not build (a bug): %s", be.msg);
        return NASC_ERR;
    }
    spec_free(&sp);

    int maxc = net->in_c;
    for (int i = 0; i < n; i++) maxc = NASC_MAX(maxc, net->spec.nodes[i].c);
    int *ko = xmalloc((size_t)maxc * sizeof *ko), *ki = xmalloc((size_t)maxc * sizeof *ki);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->spec.nodes[i], *nn = &out->spec.nodes[i];
        const float *src = net->params + nd->param_off;
        float *dst = out->params + nn->param_off;
        int kc = prune_plan_kept(net, plan, i, ko);
        if (nd->op == OP_CONV) {
            int cin = input_c(net, nd, 0);
            int kin = prune_plan_kept(net, plan, nd->in[0], ki);
            size_t kk = (size_t)nd->a.k * nd->a.k, per = (size_t)(cin / nd->a.g) * kk;
            if (nd->a.g == 1) { /* (cout, cin, k, k): slice both */
                for (int o = 0; o < kc; o++)
                    for (int c = 0; c < kin; c++)
                        memcpy(dst + ((size_t)o * kin + c) * kk, src + (size_t)ko[o] * per + (size_t)ki[c] * kk,
                               kk * sizeof *dst);
            } else if (conv_is_depthwise(net, nd)) { /* (c, 1, k, k): slice the output */
                for (int o = 0; o < kc; o++) memcpy(dst + (size_t)o * kk, src + (size_t)ko[o] * kk, kk * sizeof *dst);
            } else { /* grouped: both ends are fixed by the analysis */
                NASC_ASSERT(kc == nd->c && kin == cin);
                memcpy(dst, src, (size_t)nd->c * per * sizeof *dst);
            }
            if (nd->a.bias)
                for (int o = 0; o < kc; o++) dst[nn->nparam - (size_t)kc + o] = src[nd->nparam - (size_t)nd->c + ko[o]];
        } else if (nd->op == OP_LINEAR) {
            int hin, win;
            input_hw(net, nd, &hin, &win);
            size_t hw = (size_t)hin * win, fin = (size_t)input_c(net, nd, 0) * hw;
            int kin = prune_plan_kept(net, plan, nd->in[0], ki);
            size_t nfin = (size_t)kin * hw;
            for (int o = 0; o < kc; o++) /* (out, C*H*W): one H*W block per kept input channel */
                for (int c = 0; c < kin; c++)
                    memcpy(dst + (size_t)o * nfin + (size_t)c * hw, src + (size_t)ko[o] * fin + (size_t)ki[c] * hw,
                           hw * sizeof *dst);
            if (nd->a.bias)
                for (int o = 0; o < kc; o++) dst[(size_t)kc * nfin + o] = src[(size_t)nd->c * fin + ko[o]];
        } else if (nd->op == OP_BN) {
            const float *rs = net->buffers + nd->buf_off;
            float *rd = out->buffers + nn->buf_off;
            for (int o = 0; o < kc; o++) {
                dst[o] = src[ko[o]];                     /* gamma */
                dst[kc + o] = src[nd->c + ko[o]];        /* beta */
                rd[o] = rs[ko[o]];                       /* running mean */
                rd[kc + o] = rs[nd->c + ko[o]];          /* running var */
            }
        } else {
            NASC_ASSERT(nd->nparam == 0 && nd->nbuf == 0);
        }
    }
    free(ko);
    free(ki);

    PruneReport r = {.params_before = plan->params_before, .params_after = net_param_count(out),
                     .params_predicted = plan->params_predicted, .macs_before = plan->macs_before,
                     .macs_after = net_macs(out), .macs_predicted = plan->macs_predicted, .groups = plan->groups,
                     .groups_pruned = plan->groups_pruned, .units_prunable = plan->units_prunable,
                     .units_kept = plan->units_kept};
    if (rep) *rep = r;
    if (r.params_after != r.params_predicted || r.macs_after != r.macs_predicted) {
        err_set(e, "pruned net has %zu parameters and %.0f MACs but %zu and %.0f were predicted (a bug)",
                r.params_after, r.macs_after, r.params_predicted, r.macs_predicted);
        net_free(out);
        return NASC_ERR;
    }
    return NASC_OK;
}

void prune_plan_mask(Net *net, const PrunePlan *plan) {
    NASC_ASSERT(plan->nnodes == net->spec.n);
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        float *p = net->params + nd->param_off;
        const int *units = plan->unit + plan->map_off[i];
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            size_t nb = nd->a.bias ? (size_t)nd->c : 0, per = (nd->nparam - nb) / (size_t)nd->c;
            for (int o = 0; o < nd->c; o++)
                if (!plan->keep[units[o]]) {
                    memset(p + (size_t)o * per, 0, per * sizeof *p);
                    if (nb) p[nd->nparam - nb + (size_t)o] = 0.0f;
                }
        } else if (nd->op == OP_BN) {
            for (int o = 0; o < nd->c; o++)
                if (!plan->keep[units[o]]) p[o] = p[nd->c + o] = 0.0f;
        }
    }
}

int prune_channels(const Net *net, PruneCriterion crit, float ratio, Net *out, PruneReport *rep, Err *e) {
    PrunePlan plan;
    if (prune_plan(net, crit, ratio, &plan, e) != NASC_OK) return NASC_ERR;
    int rc = prune_plan_apply(net, &plan, out, rep, e);
    prune_plan_free(&plan);
    return rc;
}

int prune_channels_mask(Net *net, PruneCriterion crit, float ratio, Err *e) {
    PrunePlan plan;
    if (prune_plan(net, crit, ratio, &plan, e) != NASC_OK) return NASC_ERR;
    prune_plan_mask(net, &plan);
    prune_plan_free(&plan);
    return NASC_OK;
}

void prune_report_print(FILE *f, const PruneReport *r) {
    fprintf(f, "channel spaces: %d, pruned %d; channels %d -> %d\n", r->groups, r->groups_pruned, r->units_prunable,
            r->units_kept);
    fprintf(f, "params: %zu -> %zu (predicted %zu, %.1f%% of the original)\n", r->params_before, r->params_after,
            r->params_predicted, r->params_before ? 100.0 * (double)r->params_after / (double)r->params_before : 0.0);
    fprintf(f, "MACs:   %.0f -> %.0f (predicted %.0f, %.1f%% of the original)\n", r->macs_before, r->macs_after,
            r->macs_predicted, r->macs_before > 0 ? 100.0 * r->macs_after / r->macs_before : 0.0);
}

/* ------------------------------------------------------------------ unstructured */
/* The weights (no bias) of conv/linear node nd: [*lo, *hi) in net->params; 0 if none. */
static int weight_range(const Node *nd, size_t *lo, size_t *hi) {
    if (nd->op != OP_CONV && nd->op != OP_LINEAR) return 0;
    *lo = nd->param_off;
    *hi = nd->param_off + nd->nparam - (nd->a.bias ? (size_t)nd->c : 0);
    return 1;
}

unsigned char *prune_masks_new(const Net *net) {
    unsigned char *m = xmalloc(net->nparams ? net->nparams : 1);
    memset(m, 1, net->nparams);
    return m;
}

int prune_is_weight(const Net *net, size_t param) {
    for (int i = 0; i < net->spec.n; i++) {
        size_t lo, hi;
        if (weight_range(&net->spec.nodes[i], &lo, &hi) && param >= lo && param < hi) return 1;
    }
    return 0;
}

void prune_masks_apply(Net *net, const unsigned char *masks) {
    for (size_t j = 0; j < net->nparams; j++)
        if (!masks[j]) net->params[j] = 0.0f;
}

typedef struct {
    float key; /* |w|, or -1 for an already masked weight */
    uint32_t idx;
} MagKey;

static int mag_cmp(const void *pa, const void *pb) {
    const MagKey *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Mask the round(sparsity * count) smallest of keys (count), unmask the rest. */
static void mask_smallest(unsigned char *masks, MagKey *keys, size_t count, double sparsity) {
    size_t k = (size_t)floor(sparsity * (double)count + 0.5);
    if (k > count) k = count;
    qsort(keys, count, sizeof *keys, mag_cmp);
    for (size_t j = 0; j < count; j++) masks[keys[j].idx] = j >= k;
}

int prune_weights_magnitude(Net *net, unsigned char *masks, float sparsity, PruneScope scope, Err *e) {
    if (!(sparsity >= 0.0f && sparsity < 1.0f)) {
        err_set(e, "sparsity must be in [0, 1), got %g", (double)sparsity);
        return NASC_ERR;
    }
    NASC_ASSERT(net->nparams < UINT32_MAX);
    size_t total = 0;
    for (int i = 0; i < net->spec.n; i++) {
        size_t lo, hi;
        if (weight_range(&net->spec.nodes[i], &lo, &hi)) total += hi - lo;
    }
    MagKey *keys = xmalloc((total ? total : 1) * sizeof *keys);
    size_t m = 0;
    for (int i = 0; i < net->spec.n; i++) {
        size_t lo, hi;
        if (!weight_range(&net->spec.nodes[i], &lo, &hi)) continue;
        size_t start = m;
        for (size_t j = lo; j < hi; j++) {
            keys[m].key = masks[j] ? fabsf(net->params[j]) : -1.0f;
            keys[m].idx = (uint32_t)j;
            m++;
        }
        if (scope == PRUNE_LAYERWISE) mask_smallest(masks, keys + start, m - start, sparsity);
    }
    if (scope == PRUNE_GLOBAL) mask_smallest(masks, keys, m, sparsity);
    free(keys);
    prune_masks_apply(net, masks);
    return NASC_OK;
}

double prune_sparsity(const Net *net, const unsigned char *masks, int node) {
    size_t n = 0, z = 0;
    for (int i = 0; i < net->spec.n; i++) {
        size_t lo, hi;
        if ((node >= 0 && i != node) || !weight_range(&net->spec.nodes[i], &lo, &hi)) continue;
        n += hi - lo;
        for (size_t j = lo; j < hi; j++) z += !masks[j];
    }
    return n ? (double)z / (double)n : 0.0;
}

void prune_sparsity_print(FILE *f, const Net *net, const unsigned char *masks) {
    for (int i = 0; i < net->spec.n; i++) {
        size_t lo, hi;
        const Node *nd = &net->spec.nodes[i];
        if (!weight_range(nd, &lo, &hi)) continue;
        fprintf(f, "  %3d %-6s %-10s %8zu weights  sparsity %.4f\n", i + 1, op_name(nd->op), nd->name, hi - lo,
                prune_sparsity(net, masks, i));
    }
    fprintf(f, "  global sparsity %.4f\n", prune_sparsity(net, masks, -1));
}

/* ------------------------------------------------------------------ AGP */
float prune_agp_sparsity(const AgpSchedule *s, long t) {
    if (t < s->t0) return 0.0f;
    if (s->n <= 0 || t >= s->t0 + s->n * s->dt) return s->s_final;
    double frac = 1.0 - (double)(t - s->t0) / ((double)s->n * (double)s->dt);
    return (float)(s->s_final + (s->s_init - s->s_final) * frac * frac * frac);
}

int prune_agp_is_step(const AgpSchedule *s, long t) {
    return t >= s->t0 && t <= s->t0 + s->n * s->dt && (t - s->t0) % s->dt == 0;
}

int prune_hook_init(PruneHook *h, Net *net, unsigned char *masks, const AgpSchedule *agp, PruneScope scope, Err *e) {
    memset(h, 0, sizeof *h);
    h->net = net;
    h->masks = masks;
    h->scope = scope;
    if (agp) {
        if (!(agp->s_init >= 0 && agp->s_init < 1 && agp->s_final >= 0 && agp->s_final < 1)) {
            err_set(e, "AGP: sparsities must be in [0, 1), got initial %g and final %g", (double)agp->s_init,
                    (double)agp->s_final);
            return NASC_ERR;
        }
        if (agp->s_init > agp->s_final || agp->t0 < 0 || agp->n < 0 || agp->dt < 1) {
            err_set(e, "AGP: need initial <= final sparsity, start >= 0, steps >= 0 and a pruning interval >= 1 "
                       "(got %g, %g, %ld, %ld, %ld)",
                    (double)agp->s_init, (double)agp->s_final, agp->t0, agp->n, agp->dt);
            return NASC_ERR;
        }
        h->agp = *agp;
        h->gradual = 1;
        if (prune_agp_is_step(agp, 0)) {
            h->sparsity = prune_agp_sparsity(agp, 0);
            if (prune_weights_magnitude(net, masks, h->sparsity, scope, e) != NASC_OK) return NASC_ERR;
        }
    }
    prune_masks_apply(net, masks);
    return NASC_OK;
}

void prune_on_step(void *ctx, const TrainProgress *p) {
    PruneHook *h = ctx;
    h->step++;
    if (h->gradual && prune_agp_is_step(&h->agp, h->step)) {
        Err e;
        h->sparsity = prune_agp_sparsity(&h->agp, h->step);
        int rc = prune_weights_magnitude(h->net, h->masks, h->sparsity, h->scope, &e);
        NASC_ASSERT(rc == NASC_OK); /* the schedule was checked by prune_hook_init */
    } else {
        prune_masks_apply(h->net, h->masks);
    }
    if (h->next) h->next(h->next_ctx, p);
}

/* ------------------------------------------------------------------ gradual channel pruning */
static void channel_hook_prune(ChannelPruneHook *h, float ratio) {
    if (h->ratio > 0) prune_plan_mask(h->net, &h->plan); /* the dropped channels score 0 first */
    PrunePlan next;
    Err e;
    if (ratio <= h->ratio || prune_plan(h->net, h->crit, ratio, &next, &e) != NASC_OK) return;
    if (h->ratio > 0) prune_plan_free(&h->plan);
    h->plan = next;
    h->ratio = ratio;
}

int prune_channel_hook_init(ChannelPruneHook *h, Net *net, PruneCriterion crit, const AgpSchedule *agp, Err *e) {
    memset(h, 0, sizeof *h);
    h->net = net;
    h->crit = crit;
    if (!(agp->s_init >= 0 && agp->s_init < 1 && agp->s_final > 0 && agp->s_final < 1) || agp->s_init > agp->s_final ||
        agp->t0 < 0 || agp->n < 0 || agp->dt < 1) {
        err_set(e, "gradual channel pruning: need 0 <= initial <= final ratio < 1, final > 0, start >= 0, steps >= 0 "
                   "and a pruning interval >= 1 (got %g, %g, %ld, %ld, %ld)",
                (double)agp->s_init, (double)agp->s_final, agp->t0, agp->n, agp->dt);
        return NASC_ERR;
    }
    PrunePlan probe; /* the final ratio must be reachable: the errors come now, not mid-training */
    if (prune_plan(net, crit, agp->s_final, &probe, e) != NASC_OK) return NASC_ERR;
    prune_plan_free(&probe);
    h->agp = *agp;
    if (prune_agp_is_step(agp, 0)) channel_hook_prune(h, prune_agp_sparsity(agp, 0));
    if (h->ratio > 0) prune_plan_mask(net, &h->plan);
    return NASC_OK;
}

void prune_channel_hook_free(ChannelPruneHook *h) {
    if (h->ratio > 0) prune_plan_free(&h->plan);
    h->ratio = 0;
}

void prune_channel_on_step(void *ctx, const TrainProgress *p) {
    ChannelPruneHook *h = ctx;
    h->step++;
    if (prune_agp_is_step(&h->agp, h->step)) channel_hook_prune(h, prune_agp_sparsity(&h->agp, h->step));
    if (h->ratio > 0) prune_plan_mask(h->net, &h->plan);
    if (h->next) h->next(h->next_ctx, p);
}
