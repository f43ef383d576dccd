/* predict.c: the latency predictor (see predict.h for the key and file formats).
 *
 * Parts, in file order:
 *   op configurations   node -> configuration -> canonical key (a fused bn+activation is one
 *                       unit, mirroring net_forward), and the key parser
 *   the table           entries in an array with an open-addressing hash over the keys;
 *                       print/parse of the text format, atomic save
 *   prediction          sum of the units' entries (fallback model for missing keys), then the
 *                       correction A * sum + B * units + C + D * log2(footprint bytes)
 *   measurement         ops alone (the last unit of a small net that makes its inputs), units
 *                       inside whole networks (what profiling uses), and whole networks; all
 *                       interleaved across items in rounds and repeated over passes: a result
 *                       is the min over passes of the per-pass median
 *   fitting             weighted least squares on relative error (weights 1/y^2), lightly
 *                       pulled toward a prior so that few points stay sane
 *   profiling           collect the configurations of the spaces' members, time them inside
 *                       the members that carry them, fit the fallback and the correction
 *
 * What measured best (bench/bench_latency, 100 members per space, this 2-core VM under load):
 *   - Units timed inside networks, not alone. An op run back to back in a one-op net finds its
 *     output buffer, its weights and the branch predictors warm; inside a network every node
 *     writes a buffer last touched a whole forward ago and reads evicted weights. Relu, bn, add
 *     and zero take 1.5x to 4x longer inside a network, convs 5-8% longer; sums of ops timed
 *     alone came out 15% (nb201) to 25% (macro) below the measured latency.
 *   - Kernels, not nodes: net_forward fuses BN + ReLU/ReLU6; timing them apart overestimated
 *     MobileNet-style nets by ~12% (nn-Meter's point: predict per fused kernel).
 *   - The correction's whole-net figures timed in the same rounds as the units that make the
 *     table: measuring them in a phase of their own, a minute later, folded the machine's
 *     drift into the coefficients (+-5% bias).
 *   - The footprint term: the sum over-predicts nets small enough to stay in cache and
 *     under-predicts big ones (a unit's entry is its median over all the nets that carry it).
 *     Cross-validated on 300 measured members, adding D * log2(bytes) to A * sum + B * units
 *     + C took the share within 10% from 97/94/99% to 100/99/100% (nb201/macro/mobile.space).
 *     With all this the sum itself misses little: A stays within a few % of 1.
 */
#include "predict.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <unistd.h>

#include "../ops/ops.h"

#define DIM_MAX (1 << 24)

/* ------------------------------------------------------------------ op configurations */
static void node_in_shape(const Net *net, const Node *nd, int j, int *c, int *h, int *w) {
    int k = nd->in[j];
    if (k < 0) {
        *c = net->in_c, *h = net->in_h, *w = net->in_w;
    } else {
        const Node *src = &net->spec.nodes[k];
        *c = src->c, *h = src->h, *w = src->w;
    }
}

/* net.c's fusion rule (net_forward): BN node i runs fused with node i + 1 when that is a ReLU
 * or ReLU6 reading only node i, node i has no other reader, and $NASC_FUSE is not "0".
 * Returns the activation's op, or 0. */
static int fused_act(const Net *net, int i) {
    const char *env = getenv("NASC_FUSE");
    int n = net->spec.n;
    if ((env && env[0] == '0') || i + 1 >= n) return 0;
    const Node *a = &net->spec.nodes[i], *b = &net->spec.nodes[i + 1];
    if (a->op != OP_BN || !(b->op == OP_RELU || b->op == OP_RELU6) || b->nin != 1 || b->in[0] != i) return 0;
    int uses = 0;
    for (int k = i + 1; k < n; k++)
        for (int j = 0; j < net->spec.nodes[k].nin; j++) uses += net->spec.nodes[k].in[j] == i;
    return uses == 1 ? (int)b->op : 0;
}

int opconfig_of_node(const Net *net, int i, OpConfig *cfg) {
    const Node *nd = &net->spec.nodes[i];
    memset(cfg, 0, sizeof *cfg);
    if (nd->op == OP_ID) return 0;
    if ((nd->op == OP_RELU || nd->op == OP_RELU6) && i > 0 && fused_act(net, i - 1)) return 0;
    if (nd->op == OP_BN) cfg->fuse = fused_act(net, i);
    cfg->op = nd->op;
    cfg->nin = nd->nin;
    for (int j = 0; j < nd->nin; j++) node_in_shape(net, nd, j, &cfg->in_c[j], &cfg->in_h[j], &cfg->in_w[j]);
    const OpAttr *a = &nd->a;
    switch (nd->op) {
    case OP_CONV:
        cfg->c = nd->c, cfg->k = a->k, cfg->s = a->s, cfg->d = a->d, cfg->g = a->g, cfg->bias = a->bias ? 1 : 0;
        cfg->p = a->p < 0 ? a->d * (a->k - 1) / 2 : a->p;
        break;
    case OP_LINEAR: cfg->c = nd->c, cfg->bias = a->bias ? 1 : 0; break;
    case OP_MAXPOOL:
    case OP_AVGPOOL:
        cfg->k = a->k, cfg->s = a->s ? a->s : a->k, cfg->p = a->p < 0 ? 0 : a->p;
        if (nd->op == OP_AVGPOOL) cfg->cip = a->cip ? 1 : 0;
        break;
    case OP_RESIZE: cfg->s = a->s; break;
    default: break;
    }
    return 1;
}

void opconfig_key(const OpConfig *c, char *key, size_t n) {
    size_t len = 0;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(key + len, len < n ? n - len : 0, __VA_ARGS__);                          \
        len += w_ > 0 ? (size_t)w_ : 0;                                                            \
    } while (0)
    PUT("%s%s%s(", op_name(c->op), c->fuse ? "+" : "", c->fuse ? op_name((OpKind)c->fuse) : "");
    for (int j = 0; j < c->nin; j++) PUT("%s%dx%dx%d", j ? "," : "", c->in_c[j], c->in_h[j], c->in_w[j]);
    switch (c->op) {
    case OP_CONV: PUT(",c=%d,k=%d,s=%d,p=%d,d=%d,g=%d,bias=%d", c->c, c->k, c->s, c->p, c->d, c->g, c->bias); break;
    case OP_LINEAR: PUT(",c=%d,bias=%d", c->c, c->bias); break;
    case OP_MAXPOOL: PUT(",k=%d,s=%d,p=%d", c->k, c->s, c->p); break;
    case OP_AVGPOOL: PUT(",k=%d,s=%d,p=%d,cip=%d", c->k, c->s, c->p, c->cip); break;
    case OP_RESIZE: PUT(",s=%d", c->s); break;
    default: break;
    }
    PUT(")");
#undef PUT
    NASC_ASSERT(len < n);
}

int opconfig_out_shape(const OpConfig *cfg, int *c, int *h, int *w, Err *e) {
    if (cfg->nin < 1 || cfg->nin > NODE_MAX_IN) {
        err_set(e, "%d inputs (1..%d)", cfg->nin, NODE_MAX_IN);
        return NASC_ERR;
    }
    for (int j = 0; j < cfg->nin; j++)
        if (cfg->in_c[j] < 1 || cfg->in_h[j] < 1 || cfg->in_w[j] < 1 || cfg->in_c[j] > DIM_MAX ||
            cfg->in_h[j] > DIM_MAX || cfg->in_w[j] > DIM_MAX) {
            err_set(e, "input %d has an empty or huge dimension", j + 1);
            return NASC_ERR;
        }
    int multi = cfg->op == OP_ADD || cfg->op == OP_CONCAT || cfg->op == OP_MUL;
    if (!multi && cfg->nin != 1) {
        err_set(e, "%s takes one input, not %d", op_name(cfg->op), cfg->nin);
        return NASC_ERR;
    }
    if (multi && (cfg->nin < 2 || (cfg->op == OP_MUL && cfg->nin != 2))) {
        err_set(e, "%s takes %s inputs, not %d", op_name(cfg->op), cfg->op == OP_MUL ? "2" : "2 or more", cfg->nin);
        return NASC_ERR;
    }
    if (cfg->fuse && !(cfg->op == OP_BN && (cfg->fuse == OP_RELU || cfg->fuse == OP_RELU6))) {
        err_set(e, "only bn fuses, with relu or relu6");
        return NASC_ERR;
    }
    *c = cfg->in_c[0], *h = cfg->in_h[0], *w = cfg->in_w[0];
    switch (cfg->op) {
    case OP_CONV: {
        ConvDims d = {.n = 1, .cin = *c, .h = *h, .w = *w, .cout = cfg->c, .k = cfg->k, .stride = cfg->s,
                      .pad = cfg->p, .dil = cfg->d, .groups = cfg->g};
        if (cfg->bias > 1 || cfg->c > DIM_MAX) {
            err_set(e, "conv: bias must be 0 or 1");
            return NASC_ERR;
        }
        if (conv_dims_init(&d, e) != NASC_OK) return NASC_ERR;
        *c = d.cout, *h = d.oh, *w = d.ow;
        return NASC_OK;
    }
    case OP_LINEAR:
        if (cfg->c < 1 || cfg->c > DIM_MAX || cfg->bias > 1) {
            err_set(e, "linear: needs c >= 1 and bias 0 or 1");
            return NASC_ERR;
        }
        *c = cfg->c, *h = *w = 1;
        return NASC_OK;
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        PoolDims d = {.n = 1, .c = *c, .h = *h, .w = *w, .k = cfg->k, .stride = cfg->s, .pad = cfg->p,
                      .count_include_pad = cfg->cip};
        if (cfg->cip > 1) {
            err_set(e, "avgpool: cip must be 0 or 1");
            return NASC_ERR;
        }
        if (pool_dims_init(&d, e) != NASC_OK) return NASC_ERR;
        *h = d.oh, *w = d.ow;
        return NASC_OK;
    }
    case OP_GAP: *h = *w = 1; return NASC_OK;
    case OP_RESIZE:
        if (cfg->s < 1 || cfg->s > 16384) {
            err_set(e, "resize: output size %d is not in 1..16384", cfg->s);
            return NASC_ERR;
        }
        *h = *w = cfg->s;
        return NASC_OK;
    case OP_ADD:
    case OP_CONCAT:
        for (int j = 1; j < cfg->nin; j++) {
            if (cfg->in_h[j] != *h || cfg->in_w[j] != *w || (cfg->op == OP_ADD && cfg->in_c[j] != cfg->in_c[0])) {
                err_set(e, "%s: input %d's shape does not match input 1's", op_name(cfg->op), j + 1);
                return NASC_ERR;
            }
            if (cfg->op == OP_CONCAT) *c += cfg->in_c[j];
        }
        if (*c > DIM_MAX) {
            err_set(e, "concat: too many channels");
            return NASC_ERR;
        }
        return NASC_OK;
    case OP_MUL:
        if (cfg->in_c[1] != *c || cfg->in_h[1] != 1 || cfg->in_w[1] != 1) {
            err_set(e, "mul: the second input must be %dx1x1", *c);
            return NASC_ERR;
        }
        return NASC_OK;
    case OP_ID: err_set(e, "id costs nothing and has no key"); return NASC_ERR;
    default: return NASC_OK;
    }
}

static double shape_elems(int c, int h, int w) { return (double)c * h * w; }

static double opconfig_params(const OpConfig *cfg) {
    switch (cfg->op) {
    case OP_CONV: return (double)cfg->c * (cfg->in_c[0] / NASC_MAX(cfg->g, 1)) * cfg->k * cfg->k + cfg->bias * cfg->c;
    case OP_LINEAR: return (double)cfg->c * shape_elems(cfg->in_c[0], cfg->in_h[0], cfg->in_w[0]) + cfg->bias * cfg->c;
    case OP_BN: return 4.0 * cfg->in_c[0];
    default: return 0;
    }
}

double opconfig_macs(const OpConfig *cfg) {
    int c, h, w;
    if (opconfig_out_shape(cfg, &c, &h, &w, NULL) != NASC_OK) return 0;
    double out = shape_elems(c, h, w);
    switch (cfg->op) {
    case OP_CONV: return out * (cfg->in_c[0] / cfg->g) * cfg->k * cfg->k;
    case OP_LINEAR: return out * shape_elems(cfg->in_c[0], cfg->in_h[0], cfg->in_w[0]);
    case OP_MAXPOOL:
    case OP_AVGPOOL: return out * cfg->k * cfg->k;
    case OP_GAP: return shape_elems(cfg->in_c[0], cfg->in_h[0], cfg->in_w[0]);
    case OP_RESIZE: return out * 4;
    case OP_ADD: return out * cfg->nin;
    default: return out;
    }
}

double opconfig_bytes(const OpConfig *cfg) {
    int c, h, w;
    if (opconfig_out_shape(cfg, &c, &h, &w, NULL) != NASC_OK) return 0;
    double b = shape_elems(c, h, w) + opconfig_params(cfg);
    for (int j = 0; j < cfg->nin; j++) b += shape_elems(cfg->in_c[j], cfg->in_h[j], cfg->in_w[j]);
    return 4 * b;
}

int opconfig_class(const OpConfig *cfg) {
    if (cfg->fuse) return LAT_CLASS_BN_ACT;
    if (cfg->op == OP_CONV) {
        if (cfg->g == cfg->in_c[0] && cfg->in_c[0] == cfg->c) return LAT_CLASS_CONV_DW;
        if (cfg->k == 1) return LAT_CLASS_CONV_1X1;
    }
    return (int)cfg->op;
}

const char *lat_class_name(int cls) {
    if (cls == LAT_CLASS_CONV_DW) return "conv_dw";
    if (cls == LAT_CLASS_CONV_1X1) return "conv_1x1";
    if (cls == LAT_CLASS_BN_ACT) return "bn_act";
    if (cls == LAT_CLASS_ALL) return "all";
    return op_name((OpKind)cls);
}

static int lat_class_lookup(const char *name) {
    for (int c = 0; c < LAT_CLASS_COUNT; c++)
        if (c != OP_ID && !strcmp(lat_class_name(c), name)) return c;
    return -1;
}

/* A non-negative decimal integer at *p (no sign, at most DIM_MAX); advances *p. */
static int parse_uint(const char **p, int *out) {
    const char *s = *p;
    if (!isdigit((unsigned char)*s)) return NASC_ERR;
    long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s++ - '0');
        if (v > DIM_MAX) return NASC_ERR;
    }
    *out = (int)v;
    *p = s;
    return NASC_OK;
}

int opconfig_parse(OpConfig *cfg, const char *key, Err *e) {
    memset(cfg, 0, sizeof *cfg);
    const char *p = strchr(key, '(');
    if (!p) {
        err_set(e, "'%s' is not an op key such as conv(16x28x28,...): no '('", key);
        return NASC_ERR;
    }
    int op = -1, fuse = 0;
    size_t nl = (size_t)(p - key);
    const char *plus = memchr(key, '+', nl);
    if (plus) { /* a fused pair: bn+relu, bn+relu6 */
        for (int k = 0; k < OP_COUNT; k++)
            if (strlen(op_name((OpKind)k)) == (size_t)(p - plus - 1) &&
                !strncmp(op_name((OpKind)k), plus + 1, (size_t)(p - plus - 1)))
                fuse = k;
        nl = (size_t)(plus - key);
    }
    for (int k = 0; k < OP_COUNT; k++)
        if (k != OP_ID && strlen(op_name((OpKind)k)) == nl && !strncmp(op_name((OpKind)k), key, nl)) op = k;
    if (op < 0 || (plus && !fuse)) {
        err_set(e, "unknown op '%.*s' in '%s'", (int)(p - key), key, key);
        return NASC_ERR;
    }
    cfg->op = (OpKind)op;
    cfg->fuse = fuse;
    p++;
    /* shapes CxHxW, ',' separated */
    while (isdigit((unsigned char)*p)) {
        if (cfg->nin == NODE_MAX_IN) {
            err_set(e, "'%s': more than %d inputs", key, NODE_MAX_IN);
            return NASC_ERR;
        }
        int j = cfg->nin++;
        if (parse_uint(&p, &cfg->in_c[j]) || *p++ != 'x' || parse_uint(&p, &cfg->in_h[j]) || *p++ != 'x' ||
            parse_uint(&p, &cfg->in_w[j])) {
            err_set(e, "'%s': input %d is not a shape CxHxW", key, j + 1);
            return NASC_ERR;
        }
        if (*p == ',') p++;
        else break;
    }
    if (cfg->nin == 0) {
        err_set(e, "'%s': no input shape", key);
        return NASC_ERR;
    }
    /* attributes key=value, ',' separated */
    while (isalpha((unsigned char)*p)) {
        const char *k0 = p;
        while (isalpha((unsigned char)*p)) p++;
        size_t kl = (size_t)(p - k0);
        int *dst = NULL;
        static const char *const names[] = {"c", "k", "s", "p", "d", "g", "bias", "cip"};
        int *fields[] = {&cfg->c, &cfg->k, &cfg->s, &cfg->p, &cfg->d, &cfg->g, &cfg->bias, &cfg->cip};
        for (int a = 0; a < 8; a++)
            if (strlen(names[a]) == kl && !strncmp(names[a], k0, kl)) dst = fields[a];
        if (!dst || *p++ != '=' || parse_uint(&p, dst)) {
            err_set(e, "'%s': bad attribute at '%.*s'", key, (int)strcspn(k0, ",)"), k0);
            return NASC_ERR;
        }
        if (*p == ',') p++;
        else break;
    }
    if (*p != ')' || p[1]) {
        err_set(e, "'%s': expected ')' at the end", key);
        return NASC_ERR;
    }
    int c, h, w;
    Err sub;
    if (opconfig_out_shape(cfg, &c, &h, &w, &sub) != NASC_OK) {
        err_set(e, "'%s': %s", key, sub.msg);
        return NASC_ERR;
    }
    char canon[LAT_KEY_MAX];
    opconfig_key(cfg, canon, sizeof canon);
    if (strcmp(canon, key)) {
        err_set(e, "'%s' is not a canonical key (expected '%s')", key, canon);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* ------------------------------------------------------------------ the table */
static uint64_t key_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void machine_describe(LatencyTable *t) {
    snprintf(t->machine, sizeof t->machine, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) && strncmp(line, "Hardware", 8) && strncmp(line, "Processor", 9))
                continue;
            char *v = strchr(line, ':');
            if (!v) continue;
            v++;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\r\n")] = 0;
            if (*v) {
                snprintf(t->machine, sizeof t->machine, "%s", v);
                break;
            }
        }
        fclose(f);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    t->cpus = n > 0 ? (int)n : 1;
}

static void table_blank(LatencyTable *t) {
    memset(t, 0, sizeof *t);
    t->corr[0] = 1.0;
}

void lattable_init(LatencyTable *t, const char *target) {
    table_blank(t);
    snprintf(t->nasc, sizeof t->nasc, "%s", NASC_VERSION);
    snprintf(t->target, sizeof t->target, "%s", target && *target ? target : "unnamed");
    machine_describe(t);
    snprintf(t->isa, sizeof t->isa, "%s", gemm_path());
    t->threads = threads_get();
}

void lattable_free(LatencyTable *t) {
    free(t->e);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

static int find_index(const LatencyTable *t, const char *key) {
    if (!t->nslot) return -1;
    size_t mask = (size_t)t->nslot - 1;
    for (size_t s = key_hash(key) & mask;; s = (s + 1) & mask) {
        int v = t->slot[s];
        if (!v) return -1;
        if (!strcmp(t->e[v - 1].key, key)) return v - 1;
    }
}

static void slot_insert(LatencyTable *t, int idx) {
    size_t mask = (size_t)t->nslot - 1;
    size_t s = key_hash(t->e[idx].key) & mask;
    while (t->slot[s]) s = (s + 1) & mask;
    t->slot[s] = idx + 1;
}

const LatEntry *lattable_find(const LatencyTable *t, const char *key) {
    int i = find_index(t, key);
    return i < 0 ? NULL : &t->e[i];
}

static int add_keyed(LatencyTable *t, const OpConfig *cfg, const char *key, double us) {
    int i = find_index(t, key);
    if (i >= 0) return i;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->e = xrealloc(t->e, (size_t)t->cap * sizeof *t->e);
    }
    if (2 * (t->n + 1) > t->nslot) {
        free(t->slot);
        t->nslot = t->nslot ? 2 * t->nslot : 512;
        while (2 * (t->n + 1) > t->nslot) t->nslot *= 2;
        t->slot = xcalloc((size_t)t->nslot, sizeof *t->slot);
        for (int k = 0; k < t->n; k++) slot_insert(t, k);
    }
    LatEntry *en = &t->e[t->n];
    memset(en, 0, sizeof *en);
    snprintf(en->key, sizeof en->key, "%s", key);
    en->cfg = *cfg;
    en->us = us;
    slot_insert(t, t->n);
    return t->n++;
}

int lattable_add(LatencyTable *t, const OpConfig *cfg, double us) {
    char key[LAT_KEY_MAX];
    opconfig_key(cfg, key, sizeof key);
    return add_keyed(t, cfg, key, us);
}

int lattable_add_net(LatencyTable *t, const Net *net) {
    int before = t->n;
    for (int i = 0; i < net->spec.n; i++) {
        OpConfig cfg;
        if (opconfig_of_node(net, i, &cfg)) lattable_add(t, &cfg, -1);
    }
    return t->n - before;
}

/* ---- text form */
typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(Buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (w >= 0 && (size_t)w < b->cap - b->n) {
            b->n += (size_t)w;
            return;
        }
        b->cap = b->cap * 2 + (w > 0 ? (size_t)w : 0) + 256;
        b->p = xrealloc(b->p, b->cap);
    }
}

/* The shortest %g form that reads back as exactly v. */
static void fmt_exact(char *buf, size_t n, double v) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

char *lattable_print(const LatencyTable *t) {
    Buf b = {xmalloc(4096), 0, 4096};
    b.p[0] = 0;
    char x[3][40];
    buf_printf(&b,
               "nasc-latency-table %d\n"
               "# Per-op latency table for nasc's predictor (see src/cost/predict.h): microseconds per run\n"
               "# of one op configuration at batch 1, fp32, eval mode, timed as a node inside networks;\n"
               "# a network's prediction is A * (sum of its nodes' entries) + B * (costed nodes) + C.\n",
               LAT_FORMAT_VERSION);
#define OR_UNKNOWN(s) ((s)[0] ? (s) : "unknown")
    buf_printf(&b, "nasc %s\ntarget %s\nmachine %s\n", OR_UNKNOWN(t->nasc), OR_UNKNOWN(t->target),
               OR_UNKNOWN(t->machine));
    if (t->cpus > 0) buf_printf(&b, "cpus %d\n", t->cpus);
    buf_printf(&b, "isa %s\nthreads %d\nbatch 1\nrepeats %d\npasses %d\n", OR_UNKNOWN(t->isa),
               NASC_MAX(t->threads, 1), t->repeats, t->passes);
#undef OR_UNKNOWN
    char x3[40];
    for (int k = 0; k < 3; k++) fmt_exact(x[k], sizeof x[k], t->corr[k]);
    fmt_exact(x3, sizeof x3, t->corr[3]);
    buf_printf(&b, "correction %s %s %s %s\n", x[0], x[1], x[2], x3);
    for (int c = 0; c < LAT_CLASS_COUNT; c++) {
        if (!t->fb_n[c]) continue;
        for (int k = 0; k < 3; k++) fmt_exact(x[k], sizeof x[k], t->fb[c][k]);
        buf_printf(&b, "fallback %s %s %s %s %d\n", lat_class_name(c), x[0], x[1], x[2], t->fb_n[c]);
    }
    int unmeasured = 0;
    for (int i = 0; i < t->n; i++) {
        if (t->e[i].us < 0) {
            unmeasured++;
            continue;
        }
        fmt_exact(x[0], sizeof x[0], t->e[i].us);
        buf_printf(&b, "op %s %s\n", t->e[i].key, x[0]);
    }
    if (unmeasured)
        buf_printf(&b, "# %d configurations could not be measured (the fallback covers them)\n", unmeasured);
    return b.p;
}

static int lerr(Err *e, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int lerr(Err *e, const char *file, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(e, "%s: line %d: %s", file, line, msg);
    return NASC_ERR;
}

/* A finite number filling the whole token. */
static int parse_num(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return NASC_ERR;
    *out = v;
    return NASC_OK;
}

static int parse_int_tok(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return NASC_ERR;
    *out = (int)v;
    return NASC_OK;
}

enum { H_NASC, H_TARGET, H_MACHINE, H_CPUS, H_ISA, H_THREADS, H_BATCH, H_REPEATS, H_PASSES, H_CORR, H_COUNT };
static const char *const header_names[H_COUNT] = {"nasc",    "target",  "machine", "cpus",   "isa",
                                                  "threads", "batch",   "repeats", "passes", "correction"};

int lattable_parse(LatencyTable *t, const char *text, const char *file, Err *e) {
    table_blank(t);
    int seen[H_COUNT] = {0}, magic = 0, line = 0;
    int fb_line[LAT_CLASS_COUNT] = {0};
    const char *p = text;
    char buf[1024];
    while (*p) {
        line++;
        size_t len = strcspn(p, "\n");
        if (len >= sizeof buf) {
            lattable_free(t);
            return lerr(e, file, line, "line too long (%zu bytes)", len);
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        p += len + (p[len] == '\n');
        while (len && (buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t')) buf[--len] = 0;
        char *s = buf;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        /* split into up to 8 blank-separated tokens; `rest` keeps the text after the first */
        char *rest = s + strcspn(s, " \t");
        while (*rest == ' ' || *rest == '\t') rest++;
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", s);
        char *tok[8] = {0};
        int nt = 0;
        char *save = NULL;
        for (char *q = strtok_r(copy, " \t", &save); q && nt < 8; q = strtok_r(NULL, " \t", &save)) tok[nt++] = q;
        if (!nt) continue;
        if (!magic) {
            int v;
            if (strcmp(tok[0], "nasc-latency-table") || nt != 2 || parse_int_tok(tok[1], 0, 1 << 30, &v)) {
                lattable_free(t);
                return lerr(e, file, line, "not a nasc latency table (the first line must be 'nasc-latency-table %d')",
                            LAT_FORMAT_VERSION);
            }
            if (v != LAT_FORMAT_VERSION) {
                lattable_free(t);
                return lerr(e, file, line, "format version %d; this nasc reads version %d (re-run nasc profile)", v,
                            LAT_FORMAT_VERSION);
            }
            magic = 1;
            continue;
        }
        if (!strcmp(tok[0], "op")) {
            double us;
            OpConfig cfg;
            Err sub;
            if (nt != 3) {
                lattable_free(t);
                return lerr(e, file, line, "expected 'op KEY MICROSECONDS'");
            }
            if (opconfig_parse(&cfg, tok[1], &sub) != NASC_OK) {
                lattable_free(t);
                return lerr(e, file, line, "%s", sub.msg);
            }
            if (parse_num(tok[2], &us) || us < 0) {
                lattable_free(t);
                return lerr(e, file, line, "'%s' is not a latency in microseconds (a number >= 0)", tok[2]);
            }
            if (lattable_find(t, tok[1])) {
                lattable_free(t);
                return lerr(e, file, line, "duplicate op key %s", tok[1]);
            }
            add_keyed(t, &cfg, tok[1], us);
            continue;
        }
        if (!strcmp(tok[0], "fallback")) {
            int cls = nt >= 2 ? lat_class_lookup(tok[1]) : -1;
            double v[3];
            int n;
            if (nt != 6 || cls < 0 || parse_num(tok[2], &v[0]) || parse_num(tok[3], &v[1]) ||
                parse_num(tok[4], &v[2]) || parse_int_tok(tok[5], 1, 1 << 30, &n)) {
                lattable_free(t);
                return lerr(e, file, line, "expected 'fallback CLASS C0 C1 C2 N' with CLASS an op name, conv_dw, "
                                           "conv_1x1 or all, three numbers and a count >= 1");
            }
            if (fb_line[cls]) {
                lattable_free(t);
                return lerr(e, file, line, "duplicate fallback for %s (first on line %d)", tok[1], fb_line[cls]);
            }
            fb_line[cls] = line;
            memcpy(t->fb[cls], v, sizeof v);
            t->fb_n[cls] = n;
            continue;
        }
        int h = -1;
        for (int k = 0; k < H_COUNT; k++)
            if (!strcmp(tok[0], header_names[k])) h = k;
        if (h < 0) {
            lattable_free(t);
            return lerr(e, file, line, "unknown key '%s' (expected op, fallback, correction, threads, ...)", tok[0]);
        }
        if (seen[h]) {
            lattable_free(t);
            return lerr(e, file, line, "duplicate '%s' (first on line %d)", tok[0], seen[h]);
        }
        seen[h] = line;
        int bad = 0;
        switch (h) {
        case H_NASC: bad = nt != 2, snprintf(t->nasc, sizeof t->nasc, "%s", nt > 1 ? tok[1] : ""); break;
        case H_TARGET: bad = nt != 2, snprintf(t->target, sizeof t->target, "%s", nt > 1 ? tok[1] : ""); break;
        case H_MACHINE: bad = !*rest, snprintf(t->machine, sizeof t->machine, "%s", rest); break;
        case H_ISA: bad = nt != 2, snprintf(t->isa, sizeof t->isa, "%s", nt > 1 ? tok[1] : ""); break;
        case H_CPUS: bad = nt != 2 || parse_int_tok(tok[1], 1, 1 << 20, &t->cpus); break;
        case H_THREADS: bad = nt != 2 || parse_int_tok(tok[1], 1, 1024, &t->threads); break;
        case H_BATCH: {
            int b;
            bad = nt != 2 || parse_int_tok(tok[1], 1, 1, &b);
            break;
        }
        case H_REPEATS: bad = nt != 2 || parse_int_tok(tok[1], 0, 1 << 30, &t->repeats); break;
        case H_PASSES: bad = nt != 2 || parse_int_tok(tok[1], 0, 1 << 30, &t->passes); break;
        case H_CORR:
            bad = nt != 5 || parse_num(tok[1], &t->corr[0]) || parse_num(tok[2], &t->corr[1]) ||
                  parse_num(tok[3], &t->corr[2]) || parse_num(tok[4], &t->corr[3]);
            break;
        }
        if (bad) {
            static const char *const want[H_COUNT] = {"a version", "a name", "a description", "a count >= 1",
                                                      "a word", "a count in 1..1024", "1 (batch-1 tables only)",
                                                      "a count", "a count", "four numbers A B C D"};
            lattable_free(t);
            return lerr(e, file, line, "'%s' needs %s", tok[0], want[h]);
        }
    }
    if (!magic) {
        lattable_free(t);
        return lerr(e, file, line ? line : 1, "empty file: not a nasc latency table");
    }
    if (!seen[H_THREADS]) {
        lattable_free(t);
        return lerr(e, file, line, "missing 'threads' (the thread count the table was measured with)");
    }
    return NASC_OK;
}

int lattable_save(const LatencyTable *t, const char *path, Err *e) {
    char *text = lattable_print(t);
    int rc = file_write_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

int lattable_load(LatencyTable *t, const char *path, Err *e) {
    size_t n;
    char *text = file_read_all(path, &n, e);
    if (!text) {
        memset(t, 0, sizeof *t);
        return NASC_ERR;
    }
    if (memchr(text, 0, n)) {
        free(text);
        memset(t, 0, sizeof *t);
        err_set(e, "%s: not a text file", path);
        return NASC_ERR;
    }
    char *z = xmalloc(n + 1); /* file_read_all does not terminate the text */
    memcpy(z, text, n);
    z[n] = 0;
    free(text);
    int rc = lattable_parse(t, z, path, e);
    free(z);
    return rc;
}

static void target_default_table(const Target *target, char *out, size_t n) {
    if (target->latency_table[0]) {
        snprintf(out, n, "%s", target->latency_table);
        return;
    }
    const char *slash = strrchr(target->path, '/');
    if (slash) snprintf(out, n, "%.*s/%s.latency", (int)(slash - target->path), target->path, target->name);
    else snprintf(out, n, "%s.latency", target->name);
}

int lattable_for_target(LatencyTable *t, const Target *target, Err *e) {
    char path[TARGET_PATH_MAX + 80];
    target_default_table(target, path, sizeof path);
    if (access(path, F_OK) != 0) {
        memset(t, 0, sizeof *t);
        err_set(e, "target %s has no latency table (%s): run 'nasc profile --target %s' on the device", target->name,
                path, target->name);
        return NASC_ERR;
    }
    return lattable_load(t, path, e);
}

char *lattable_default_path(const char *target_name) {
    Target tg;
    Err e;
    char path[TARGET_PATH_MAX + 80];
    if (target_find(&tg, target_name, &e) == NASC_OK) target_default_table(&tg, path, sizeof path);
    else snprintf(path, sizeof path, "targets/%s.latency", target_name);
    return xstrdup(path);
}

/* ------------------------------------------------------------------ prediction */
double predict_fallback_us(const LatencyTable *t, const OpConfig *cfg) {
    int cls = opconfig_class(cfg);
    if (!t->fb_n[cls]) cls = LAT_CLASS_ALL;
    if (!t->fb_n[cls]) return 0;
    double v = t->fb[cls][0] + t->fb[cls][1] * opconfig_macs(cfg) + t->fb[cls][2] * opconfig_bytes(cfg);
    return v > 0 ? v : 0;
}

double predict_footprint_bytes(const Net *net) {
    double b = 4.0 * (double)net->nparams;
    for (int i = 0; i < net->spec.n; i++) {
        const Node *nd = &net->spec.nodes[i];
        if (nd->op != OP_ID) b += 8.0 * nd->c * nd->h * nd->w; /* output + gradient buffer, fp32 */
    }
    return b > 1 ? b : 1;
}

void predict_net(const LatencyTable *t, const Net *net, LatPrediction *p) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < net->spec.n; i++) {
        OpConfig cfg;
        if (!opconfig_of_node(net, i, &cfg)) continue;
        char key[LAT_KEY_MAX];
        opconfig_key(&cfg, key, sizeof key);
        const LatEntry *en = lattable_find(t, key);
        if (en && en->us >= 0) {
            p->sum_us += en->us;
        } else {
            p->sum_us += predict_fallback_us(t, &cfg);
            p->fallback_nodes++;
        }
        p->nodes++;
    }
    p->log2_bytes = log2(predict_footprint_bytes(net));
    p->us = t->corr[0] * p->sum_us + t->corr[1] * p->nodes + t->corr[2] + t->corr[3] * p->log2_bytes;
    if (p->us < 0) p->us = 0;
}

double predict_latency_ms(const LatencyTable *t, const Net *net, int *fallback_nodes) {
    LatPrediction p;
    predict_net(t, net, &p);
    if (fallback_nodes) *fallback_nodes = p.fallback_nodes;
    return p.us * 1e-3;
}

/* ------------------------------------------------------------------ measurement */
static void mc_defaults(const LatMeasureConfig *in, LatMeasureConfig *mc) {
    if (in) *mc = *in;
    else memset(mc, 0, sizeof *mc);
    if (mc->repeats <= 0) mc->repeats = 8;
    if (mc->passes <= 0) mc->passes = 4;
    if (mc->runs <= 0) mc->runs = 3;
    if (mc->sample_us <= 0) mc->sample_us = 40;
    if (!(mc->q > 0 && mc->q <= 1)) mc->q = 0.5;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The q-quantile of v[0..n) (sorts v; linear interpolation between order statistics). */
static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return v[n - 1];
    return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

static float *random_input(size_t n, uint64_t seed) {
    float *x = xalloc_aligned((n ? n : 1) * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (size_t k = 0; k < n; k++) x[k] = (float)rng_normal(&r);
    return x;
}

/* Runs node i as net_forward would: a BN fused with its activation (fuse = that op, see
 * fused_act) runs as the one bn_act kernel net.c uses, writing the activation's output; any
 * other node through net_node_forward. net.c's bn_act_fwd is private, so this mirrors it (the
 * epsilon only changes values, not time). */
static void run_unit(Net *net, int i, int fuse) {
    if (!fuse) {
        net_node_forward(net, i);
        return;
    }
    const Node *nd = &net->spec.nodes[i];
    const float *g = net->params + nd->param_off, *b = g + nd->c;
    const float *rm = net->buffers + nd->buf_off, *rv = rm + nd->c;
    const float *x = nd->in[0] < 0 ? net->x : net->out[nd->in[0]];
    bn_act_forward_eval(fuse == OP_RELU ? ACT_RELU : ACT_RELU6, net->out[i + 1], x, g, b, rm, rv, net->batch, nd->c,
                        nd->h * nd->w, 1e-5f);
}

/* A node of shape (c, h, w) made from the network input (c0, h0, w0), appended to sp:
 * gap or bilinear resize for another size, a 1x1 conv for other channels, a relu when the
 * shape is the same (a buffer of its own, as a real network's second input would be).
 * -2 when the shape cannot be made (another size that is not square). */
static int make_input(Spec *sp, int c0, int h0, int w0, int c, int h, int w) {
    int src = -1, in[1];
    if (h != h0 || w != w0) {
        in[0] = src;
        if (h == 1 && w == 1) {
            src = spec_add(sp, OP_GAP, op_default_attr(OP_GAP), in, 1, NULL);
        } else if (h == w) {
            OpAttr a = op_default_attr(OP_RESIZE);
            a.s = h;
            src = spec_add(sp, OP_RESIZE, a, in, 1, NULL);
        } else {
            return -2;
        }
    }
    in[0] = src;
    if (c != c0) {
        OpAttr a = op_default_attr(OP_CONV);
        a.c = c, a.k = 1;
        src = spec_add(sp, OP_CONV, a, in, 1, NULL);
    } else if (src == -1) {
        src = spec_add(sp, OP_RELU, op_default_attr(OP_RELU), in, 1, NULL);
    }
    return src;
}

/* One op alone: a net whose last node is the op, its input a random tensor. */
typedef struct {
    Net net;
    float *x;
    int node, fuse, inner, ok;
} OpBench;

static int opbench_build(OpBench *b, const OpConfig *cfg, uint64_t seed, Err *e) {
    memset(b, 0, sizeof *b);
    int oc, oh, ow;
    if (opconfig_out_shape(cfg, &oc, &oh, &ow, e) != NASC_OK) return NASC_ERR;
    Spec sp;
    memset(&sp, 0, sizeof sp);
    int in[NODE_MAX_IN];
    in[0] = -1;
    for (int j = 1; j < cfg->nin; j++) {
        in[j] = make_input(&sp, cfg->in_c[0], cfg->in_h[0], cfg->in_w[0], cfg->in_c[j], cfg->in_h[j], cfg->in_w[j]);
        if (in[j] == -2) {
            spec_free(&sp);
            err_set(e, "cannot make a %dx%dx%d input from %dx%dx%d", cfg->in_c[j], cfg->in_h[j], cfg->in_w[j],
                    cfg->in_c[0], cfg->in_h[0], cfg->in_w[0]);
            return NASC_ERR;
        }
    }
    OpAttr a = op_default_attr(cfg->op);
    switch (cfg->op) {
    case OP_CONV:
        a.c = cfg->c, a.k = cfg->k, a.s = cfg->s, a.p = cfg->p, a.d = cfg->d, a.g = cfg->g, a.bias = cfg->bias;
        break;
    case OP_LINEAR: a.c = cfg->c, a.bias = cfg->bias; break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: a.k = cfg->k, a.s = cfg->s, a.p = cfg->p, a.cip = cfg->cip; break;
    case OP_RESIZE: a.s = cfg->s; break;
    default: break;
    }
    int node = spec_add(&sp, cfg->op, a, in, cfg->nin, NULL);
    if (cfg->fuse) spec_add(&sp, (OpKind)cfg->fuse, op_default_attr((OpKind)cfg->fuse), &node, 1, NULL);
    int rc = net_build(&b->net, &sp, cfg->in_c[0], cfg->in_h[0], cfg->in_w[0], oc * oh * ow, e);
    spec_free(&sp);
    if (rc != NASC_OK) return NASC_ERR;
    b->node = node;
    b->fuse = cfg->fuse;
    b->x = random_input((size_t)cfg->in_c[0] * cfg->in_h[0] * cfg->in_w[0], seed);
    net_forward(&b->net, b->x, 1, 0); /* allocates the activations and makes the inputs */
    b->ok = 1;
    return NASC_OK;
}

static void opbench_free(OpBench *b) {
    if (b->ok) net_free(&b->net);
    free(b->x);
    memset(b, 0, sizeof *b);
}

/* One timed sample: a warm-up call, then `inner` calls back to back; microseconds per call. */
static double opbench_sample(OpBench *b) {
    run_unit(&b->net, b->node, b->fuse);
    double t0 = now_seconds();
    for (int k = 0; k < b->inner; k++) run_unit(&b->net, b->node, b->fuse);
    return (now_seconds() - t0) * 1e6 / b->inner;
}

static void opbench_calibrate(OpBench *b, double sample_us) {
    b->inner = 1;
    double best = 1e30;
    for (int k = 0; k < 3; k++) {
        double t = opbench_sample(b);
        if (t < best) best = t;
    }
    double inner = ceil(sample_us / NASC_MAX(best, 0.02));
    b->inner = (int)NASC_MAX(1, NASC_MIN(inner, 100000));
}

#define OP_GROUP 192

int lattable_measure(LatencyTable *t, int all, const LatMeasureConfig *mcin, Err *e) {
    LatMeasureConfig mc;
    mc_defaults(mcin, &mc);
    int *todo = xmalloc((size_t)(t->n ? t->n : 1) * sizeof *todo), n = 0;
    for (int i = 0; i < t->n; i++)
        if (all || t->e[i].us < 0) todo[n++] = i;
    double *best = xmalloc((size_t)(n ? n : 1) * sizeof *best);
    for (int k = 0; k < n; k++) best[k] = -1;
    int *pos = xmalloc((size_t)(n ? n : 1) * sizeof *pos); /* todo positions, shuffled per pass */
    OpBench *b = xcalloc(OP_GROUP, sizeof *b);
    double *samples = xmalloc((size_t)OP_GROUP * mc.repeats * sizeof *samples);
    int order[OP_GROUP];
    Rng r;
    rng_seed(&r, mc.seed ^ 0x0b5e55edULL);
    int failed = 0;
    double start = now_seconds();
    for (int pass = 0; pass < mc.passes; pass++) {
        for (int k = 0; k < n; k++) pos[k] = k;
        rng_shuffle_int(&r, pos, n);
        for (int g0 = 0; g0 < n; g0 += OP_GROUP) {
            int gn = NASC_MIN(OP_GROUP, n - g0);
            for (int k = 0; k < gn; k++) {
                Err sub;
                const LatEntry *en = &t->e[todo[pos[g0 + k]]];
                if (opbench_build(&b[k], &en->cfg, mc.seed + (uint64_t)k, &sub) != NASC_OK) {
                    if (pass == 0) {
                        failed++;
                        if (mc.verbose) fprintf(stderr, "profile: cannot measure %s: %s\n", en->key, sub.msg);
                    }
                    continue;
                }
                opbench_calibrate(&b[k], mc.sample_us);
            }
            for (int k = 0; k < gn; k++) order[k] = k;
            for (int rep = 0; rep < mc.repeats; rep++) {
                rng_shuffle_int(&r, order, gn);
                for (int q = 0; q < gn; q++) {
                    int k = order[q];
                    if (b[k].ok) samples[(size_t)k * mc.repeats + rep] = opbench_sample(&b[k]);
                }
            }
            for (int k = 0; k < gn; k++) {
                if (!b[k].ok) continue;
                double med = quantile(samples + (size_t)k * mc.repeats, mc.repeats, mc.q);
                int slot = pos[g0 + k];
                if (best[slot] < 0 || med < best[slot]) best[slot] = med;
                opbench_free(&b[k]);
            }
            if (mc.verbose && isatty(2))
                fprintf(stderr, "\rprofile: ops pass %d/%d: %d/%d configurations (%.0f s)   ", pass + 1, mc.passes,
                        g0 + gn, n, now_seconds() - start);
        }
    }
    if (mc.verbose && n)
        fprintf(stderr, "%sprofile: timed %d op configurations alone in %.0f s\n", isatty(2) ? "\r" : "", n,
                now_seconds() - start);
    for (int k = 0; k < n; k++) t->e[todo[k]].us = best[k] < 0 ? -1 : round(best[k] * 1e3) / 1e3; /* 1 ns */
    if (!all) {
        /* keep the settings that made the entries */
        t->repeats = mc.repeats, t->passes = mc.passes;
    }
    free(todo);
    free(best);
    free(pos);
    free(b);
    free(samples);
    (void)e;
    (void)failed;
    return NASC_OK; /* unbuildable entries stay at -1 */
}

void predict_measure_nets(Net *const *nets, int n, const LatMeasureConfig *mcin, double *us) {
    LatMeasureConfig mc;
    mc_defaults(mcin, &mc);
    if (n <= 0) return;
    int per = mc.repeats * mc.runs;
    float **x = xmalloc((size_t)n * sizeof *x);
    double *samples = xmalloc((size_t)n * per * sizeof *samples);
    int *order = xmalloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++) {
        x[i] = random_input((size_t)nets[i]->in_c * nets[i]->in_h * nets[i]->in_w, mc.seed + 77 + (uint64_t)i);
        us[i] = -1;
    }
    Rng r;
    rng_seed(&r, mc.seed ^ 0x4e7f0a11ULL);
    volatile float sink = 0;
    double start = now_seconds();
    for (int pass = 0; pass < mc.passes; pass++) {
        for (int i = 0; i < n; i++) order[i] = i;
        for (int rep = 0; rep < mc.repeats; rep++) {
            rng_shuffle_int(&r, order, n);
            for (int q = 0; q < n; q++) {
                int i = order[q];
                sink += net_forward(nets[i], x[i], 1, 0)[0];
                for (int k = 0; k < mc.runs; k++) {
                    double t0 = now_seconds();
                    const float *y = net_forward(nets[i], x[i], 1, 0);
                    double t1 = now_seconds();
                    sink += y[0];
                    samples[(size_t)i * per + rep * mc.runs + k] = (t1 - t0) * 1e6;
                }
            }
            if (mc.verbose && isatty(2))
                fprintf(stderr, "\rprofile: whole nets pass %d/%d: round %d/%d (%.0f s)   ", pass + 1, mc.passes,
                        rep + 1, mc.repeats, now_seconds() - start);
        }
        for (int i = 0; i < n; i++) {
            double v = quantile(samples + (size_t)i * per, per, mc.q);
            if (us[i] < 0 || v < us[i]) us[i] = v;
        }
    }
    if (mc.verbose) fprintf(stderr, "%sprofile: measured %d whole nets in %.0f s\n", isatty(2) ? "\r" : "", n,
                            now_seconds() - start);
    (void)sink;
    for (int i = 0; i < n; i++) free(x[i]);
    free(x);
    free(samples);
    free(order);
}

/* In-network measurement. */
/* One forward node by node (fused pairs as one unit, see run_unit), each unit timed into
 * dst[i * stride] (i = the unit's first node). */
static void timed_forward(Net *net, const float *x, const unsigned char *fuse, double *dst, size_t stride) {
    net->x = x, net->batch = 1, net->training = 0;
    for (int i = 0; i < net->spec.n; i++) {
        if (net->spec.nodes[i].op == OP_ID) continue; /* aliased by the last net_forward */
        double t0 = now_seconds();
        run_unit(net, i, fuse[i]);
        dst[(size_t)i * stride] = (now_seconds() - t0) * 1e6;
        if (fuse[i]) i++;
    }
}

typedef struct {
    double *v;
    int n, cap;
} DList;

static void dlist_push(DList *l, double v) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = v;
}

#define NET_GROUP 24

int lattable_measure_in_nets(LatencyTable *t, int all, int ncarriers, NetSourceFn build, void *ctx,
                             const LatMeasureConfig *mcin, LatWhole *wo, Err *e) {
    LatMeasureConfig mc;
    mc_defaults(mcin, &mc);
    int per = mc.repeats * mc.runs, ne = t->n;
    double *whole[NET_GROUP];
    if (wo)
        for (int k = 0; k < ncarriers; k++) wo->whole_us[k] = -1;
    DList *occ = xcalloc((size_t)(ne ? ne : 1), sizeof *occ); /* this pass: each occurrence's statistic */
    double *best = xmalloc((size_t)(ne ? ne : 1) * sizeof *best);
    for (int k = 0; k < ne; k++) best[k] = -1;
    int *pos = xmalloc((size_t)(ncarriers ? ncarriers : 1) * sizeof *pos);
    Net *nets = xcalloc(NET_GROUP, sizeof *nets);
    int order[NET_GROUP], *eidx[NET_GROUP];
    unsigned char *fz[NET_GROUP];
    float *x[NET_GROUP];
    double *samples[NET_GROUP];
    Rng r;
    rng_seed(&r, mc.seed ^ 0x1d5e7ULL);
    volatile float sink = 0;
    double start = now_seconds();
    int rc = NASC_OK;
    for (int pass = 0; pass < mc.passes && rc == NASC_OK; pass++) {
        for (int k = 0; k < ne; k++) occ[k].n = 0;
        for (int k = 0; k < ncarriers; k++) pos[k] = k;
        rng_shuffle_int(&r, pos, ncarriers);
        for (int g0 = 0; g0 < ncarriers && rc == NASC_OK; g0 += NET_GROUP) {
            int gn = NASC_MIN(NET_GROUP, ncarriers - g0), nb = 0;
            for (; nb < gn; nb++) {
                if (build(ctx, pos[g0 + nb], &nets[nb], e) != NASC_OK) {
                    rc = NASC_ERR;
                    break;
                }
                Net *net = &nets[nb];
                x[nb] = random_input((size_t)net->in_c * net->in_h * net->in_w, mc.seed + (uint64_t)(g0 + nb));
                eidx[nb] = xmalloc((size_t)net->spec.n * sizeof *eidx[nb]);
                fz[nb] = xcalloc((size_t)net->spec.n, 1);
                samples[nb] = xcalloc((size_t)net->spec.n * per, sizeof *samples[nb]);
                whole[nb] = wo && wo->want[pos[g0 + nb]] ? xcalloc((size_t)per, sizeof *whole[nb]) : NULL;
                for (int i = 0; i < net->spec.n; i++) {
                    OpConfig cfg;
                    char key[LAT_KEY_MAX];
                    eidx[nb][i] = -1;
                    fz[nb][i] = (unsigned char)fused_act(net, i);
                    if (!opconfig_of_node(net, i, &cfg)) continue;
                    opconfig_key(&cfg, key, sizeof key);
                    eidx[nb][i] = find_index(t, key);
                }
                sink += net_forward(net, x[nb], 1, 0)[0];
            }
            if (rc == NASC_OK) {
                for (int k = 0; k < gn; k++) order[k] = k;
                for (int rep = 0; rep < mc.repeats; rep++) {
                    rng_shuffle_int(&r, order, gn);
                    for (int q = 0; q < gn; q++) {
                        int k = order[q];
                        sink += net_forward(&nets[k], x[k], 1, 0)[0]; /* warm-up; sets the id aliases */
                        for (int run = 0; run < mc.runs; run++) {
                            timed_forward(&nets[k], x[k], fz[k], samples[k] + rep * mc.runs + run, (size_t)per);
                            if (whole[k]) { /* the same net as a whole, in the same moments */
                                double t0 = now_seconds();
                                sink += net_forward(&nets[k], x[k], 1, 0)[0];
                                whole[k][rep * mc.runs + run] = (now_seconds() - t0) * 1e6;
                            }
                        }
                    }
                }
                for (int k = 0; k < gn; k++) {
                    for (int i = 0; i < nets[k].spec.n; i++)
                        if (eidx[k][i] >= 0)
                            dlist_push(&occ[eidx[k][i]], quantile(samples[k] + (size_t)i * per, per, mc.q));
                    int c = pos[g0 + k];
                    if (whole[k]) {
                        double wv = quantile(whole[k], per, mc.q);
                        if (wo->whole_us[c] < 0 || wv < wo->whole_us[c]) wo->whole_us[c] = wv;
                    }
                }
            }
            for (int k = 0; k < nb; k++) {
                net_free(&nets[k]);
                free(x[k]), free(eidx[k]), free(fz[k]), free(samples[k]), free(whole[k]);
            }
            if (mc.verbose && isatty(2))
                fprintf(stderr, "\rprofile: in-network timing, pass %d/%d: %d/%d nets (%.0f s)   ", pass + 1, mc.passes,
                        g0 + gn, ncarriers, now_seconds() - start);
        }
        for (int k = 0; k < ne; k++) {
            if (!occ[k].n) continue;
            double med = median(occ[k].v, occ[k].n);
            if (best[k] < 0 || med < best[k]) best[k] = med;
        }
    }
    (void)sink;
    int measured = 0;
    for (int k = 0; rc == NASC_OK && k < ne; k++)
        if (best[k] >= 0 && (all || t->e[k].us < 0)) {
            t->e[k].us = round(best[k] * 1e3) / 1e3; /* 1 ns */
            measured++;
        }
    if (rc == NASC_OK) t->repeats = mc.repeats, t->passes = mc.passes;
    if (mc.verbose && rc == NASC_OK)
        fprintf(stderr, "%sprofile: timed %d configurations inside %d nets in %.0f s\n", isatty(2) ? "\r" : "",
                measured, ncarriers, now_seconds() - start);
    for (int k = 0; k < ne; k++) free(occ[k].v);
    free(occ);
    free(best);
    free(pos);
    free(nets);
    return rc;
}

/* ------------------------------------------------------------------ fitting */
/* Six significant digits (the printed form then stays short and still reads back exactly). */
static double round6(double v) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.6g", v);
    return strtod(buf, NULL);
}

#define FIT_MAXP 4

/* Solves a (p x p) theta = rhs by Gaussian elimination with partial pivoting; NASC_ERR if singular. */
static int solve(int p, double a[FIT_MAXP][FIT_MAXP], double *rhs, double *theta) {
    for (int c = 0; c < p; c++) {
        int piv = c;
        for (int r = c + 1; r < p; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
        if (!(fabs(a[piv][c]) > 1e-300)) return NASC_ERR;
        if (piv != c) {
            for (int k = 0; k < p; k++) {
                double tmp = a[c][k];
                a[c][k] = a[piv][k], a[piv][k] = tmp;
            }
            double tmp = rhs[c];
            rhs[c] = rhs[piv], rhs[piv] = tmp;
        }
        for (int r = c + 1; r < p; r++) {
            double f = a[r][c] / a[c][c];
            for (int k = c; k < p; k++) a[r][k] -= f * a[c][k];
            rhs[r] -= f * rhs[c];
        }
    }
    for (int c = p - 1; c >= 0; c--) {
        double s = rhs[c];
        for (int k = c + 1; k < p; k++) s -= a[c][k] * theta[k];
        theta[c] = s / a[c][c];
    }
    return NASC_OK;
}

/* Weighted least squares with a ridge toward prior: minimizes
 *   sum_i w_i (y_i - x_i . theta)^2 + ridge * sum_j D_jj (theta_j - prior_j)^2,
 * D = diag(X^T W X) (scale-free). x is n rows of p features. */
static int wls(int p, int n, const double *x, const double *y, const double *w, double ridge, const double *prior,
               double *theta) {
    double a[FIT_MAXP][FIT_MAXP] = {{0}}, rhs[FIT_MAXP] = {0};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < p; j++) {
            rhs[j] += w[i] * x[i * p + j] * y[i];
            for (int k = 0; k < p; k++) a[j][k] += w[i] * x[i * p + j] * x[i * p + k];
        }
    for (int j = 0; j < p; j++) {
        double d = a[j][j] > 0 ? a[j][j] : 1.0;
        a[j][j] += ridge * d;
        rhs[j] += ridge * d * prior[j];
    }
    return solve(p, a, rhs, theta);
}

void lattable_fit_fallback(LatencyTable *t) {
    memset(t->fb, 0, sizeof t->fb);
    memset(t->fb_n, 0, sizeof t->fb_n);
    int n = t->n;
    double *x = xmalloc((size_t)(n ? n : 1) * 3 * sizeof *x), *y = xmalloc((size_t)(n ? n : 1) * sizeof *y);
    double *w = xmalloc((size_t)(n ? n : 1) * sizeof *w);
    for (int cls = 0; cls < LAT_CLASS_COUNT; cls++) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            const LatEntry *en = &t->e[i];
            if (en->us <= 0 || (cls != LAT_CLASS_ALL && opconfig_class(&en->cfg) != cls)) continue;
            x[m * 3 + 0] = 1, x[m * 3 + 1] = opconfig_macs(&en->cfg), x[m * 3 + 2] = opconfig_bytes(&en->cfg);
            y[m] = en->us, w[m] = 1.0 / (en->us * en->us);
            m++;
        }
        if (!m) continue;
        double prior[3] = {0, 0, 0}, th[3] = {0, 0, 0};
        int ok = m >= 4 && wls(3, m, x, y, w, 1e-6, prior, th) == NASC_OK;
        for (int i = 0; ok && i < m; i++)
            if (th[0] + th[1] * x[i * 3 + 1] + th[2] * x[i * 3 + 2] <= 0) ok = 0;
        if (!ok) { /* proportional to bytes: the weighted mean of us / bytes */
            double num = 0, den = 0;
            for (int i = 0; i < m; i++) num += w[i] * y[i] * x[i * 3 + 2], den += w[i] * x[i * 3 + 2] * x[i * 3 + 2];
            th[0] = th[1] = 0, th[2] = den > 0 ? num / den : 0;
        }
        for (int k = 0; k < 3; k++) t->fb[cls][k] = round6(th[k]);
        t->fb_n[cls] = m;
    }
    free(x);
    free(y);
    free(w);
}

void lattable_fit_correction(LatencyTable *t, const LatPrediction *plain, const double *measured_us, int n) {
    memset(t->corr, 0, sizeof t->corr);
    t->corr[0] = 1;
    int m = 0;
    double *x = xmalloc((size_t)(n > 0 ? n : 1) * 4 * sizeof *x), *w = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *w);
    double *y = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *y);
    for (int i = 0; i < n; i++) {
        if (!(measured_us[i] > 0) || !(plain[i].sum_us >= 0)) continue;
        x[m * 4 + 0] = plain[i].sum_us, x[m * 4 + 1] = plain[i].nodes, x[m * 4 + 2] = 1;
        x[m * 4 + 3] = plain[i].log2_bytes;
        y[m] = measured_us[i], w[m] = 1.0 / (measured_us[i] * measured_us[i]);
        m++;
    }
    double prior[4] = {1, 0, 0, 0}, th[4];
    /* a light pull toward the plain sum; a strong one when there are too few nets to fit 4 terms */
    if (m > 0 && wls(4, m, x, y, w, m >= 8 ? 1e-6 : 1.0, prior, th) == NASC_OK && th[0] > 0)
        for (int k = 0; k < 4; k++) t->corr[k] = round6(th[k]);
    free(x);
    free(w);
    free(y);
}

/* ------------------------------------------------------------------ profiling */
int predict_build_member(const Space *s, const int *m, int in_c, int in_h, int in_w, int classes, Net *net,
                         Err *e) {
    char *text = s->ops->to_spec(s, m, e);
    if (!text) return NASC_ERR;
    Spec sp;
    int rc = spec_parse(&sp, text, s->channels, s->cells, e);
    free(text);
    if (rc != NASC_OK) return NASC_ERR;
    rc = net_build(net, &sp, in_c, in_h, in_w, classes, e);
    spec_free(&sp);
    return rc;
}

static const char *const zoo_names[] = {"small", "resnet8", "mbv2"};

/* A net that carries configurations to measure: member m of space `space`, or zoo net -1-space;
 * `whole`: also measured as a whole for the correction. */
typedef struct {
    int space;
    int *m;
    int whole;
} Carrier;

typedef struct {
    const ProfileConfig *pc;
    Space **spaces;
    Carrier *c;
    int n, cap;
} Carriers;

static int build_zoo(const char *name, const ProfileConfig *pc, Net *net, Err *e) {
    Spec sp;
    if (spec_parse(&sp, zoo_lookup(name), 0, 0, e) != NASC_OK) return NASC_ERR;
    int rc = net_build(net, &sp, pc->in_c, pc->in_h, pc->in_w, pc->classes, e);
    spec_free(&sp);
    return rc;
}

static int carrier_build(void *ctx, int k, Net *net, Err *e) {
    Carriers *cs = ctx;
    const Carrier *c = &cs->c[k];
    const ProfileConfig *pc = cs->pc;
    if (c->space < 0) return build_zoo(zoo_names[-1 - c->space], pc, net, e);
    return predict_build_member(cs->spaces[c->space], c->m, pc->in_c, pc->in_h, pc->in_w, pc->classes, net, e);
}

static void carrier_add(Carriers *cs, int space, const int *m, int ndims, int whole) {
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? 2 * cs->cap : 64;
        cs->c = xrealloc(cs->c, (size_t)cs->cap * sizeof *cs->c);
    }
    Carrier *c = &cs->c[cs->n++];
    c->space = space;
    c->whole = whole;
    c->m = NULL;
    if (m) {
        c->m = xmalloc((size_t)ndims * sizeof *c->m);
        memcpy(c->m, m, (size_t)ndims * sizeof *c->m);
    }
}

int predict_profile(LatencyTable *t, const ProfileConfig *pcin, ProfileSummary *sum, Err *e) {
    ProfileConfig pc = *pcin;
    if (pc.members <= 0) pc.members = 2000;
    if (pc.enumerate_max <= 0) pc.enumerate_max = 20000;
    if (pc.nets < 0) pc.nets = 0;
    memset(sum, 0, sizeof *sum);
    double start = now_seconds();
    Rng r;
    rng_seed(&r, pc.mc.seed);
    Carriers cs = {.pc = &pc, .spaces = xcalloc((size_t)(pc.nspaces ? pc.nspaces : 1), sizeof(Space *))};
    int rc = NASC_OK;
    for (int si = 0; si < pc.nspaces && rc == NASC_OK; si++) {
        Space *s = cs.spaces[si] = space_open(pc.spaces[si], pc.channels, pc.cells, e);
        if (!s) {
            rc = NASC_ERR;
            break;
        }
        double size = space_size(s);
        int enumerate = size <= pc.enumerate_max;
        long count = enumerate ? (long)size : pc.members;
        /* which members also serve the correction: `nets` random positions */
        uint8_t *keep = xcalloc((size_t)count, 1);
        for (int k = 0, want = (int)NASC_MIN((long)pc.nets, count); k < want;) {
            long at = (long)rng_below(&r, (uint32_t)count);
            if (!keep[at]) keep[at] = 1, k++;
        }
        int m[SPACE_MAX_DIMS], built = 0, before = t->n, carriers_before = cs.n;
        for (long idx = 0; idx < count; idx++) {
            if (enumerate) space_member_at(s, (double)idx, m);
            else space_sample(s, &r, m);
            Net net;
            Err sub;
            if (predict_build_member(s, m, pc.in_c, pc.in_h, pc.in_w, pc.classes, &net, &sub) != NASC_OK) {
                sum->skipped++;
                continue;
            }
            built++;
            /* a member that brings new configurations is timed; so are the correction nets, so
             * that common configurations are timed in many different networks */
            if (lattable_add_net(t, &net) > 0 || keep[idx]) carrier_add(&cs, si, m, s->ndims, keep[idx]);
            net_free(&net);
            if (pc.mc.verbose && isatty(2) && (idx + 1) % 500 == 0)
                fprintf(stderr, "\rprofile: %s: %ld/%ld members, %d configurations   ", pc.spaces[si], idx + 1, count,
                        t->n);
        }
        free(keep);
        sum->members += built;
        if (pc.mc.verbose)
            fprintf(stderr, "%sprofile: %s: %d members (%s), %d new configurations (%d in all) carried by %d nets\n",
                    isatty(2) ? "\r" : "", pc.spaces[si], built, enumerate ? "all" : "sampled", t->n - before, t->n,
                    cs.n - carriers_before);
        if (!built) {
            err_set(e, "space %s: no member builds for a %dx%dx%d input with %d classes", pc.spaces[si], pc.in_c,
                    pc.in_h, pc.in_w, pc.classes);
            rc = NASC_ERR;
        }
    }
    for (int z = 0; pc.zoo && rc == NASC_OK && z < 3; z++) {
        Net net;
        Err sub;
        if (build_zoo(zoo_names[z], &pc, &net, &sub) != NASC_OK) continue; /* does not fit the input: left out */
        lattable_add_net(t, &net);
        carrier_add(&cs, -1 - z, NULL, 0, 1);
        net_free(&net);
    }
    int nc = cs.n;
    unsigned char *want = xcalloc((size_t)(nc ? nc : 1), 1);
    double *whole = xmalloc((size_t)(nc ? nc : 1) * sizeof *whole);
    LatPrediction *plain = xcalloc((size_t)(nc ? nc : 1), sizeof *plain);
    for (int k = 0; k < nc; k++) want[k] = (unsigned char)cs.c[k].whole;
    LatWhole wo = {.want = want, .whole_us = whole};
    if (rc == NASC_OK) {
        sum->configs = t->n;
        if (pc.mc.verbose) fprintf(stderr, "profile: timing %d op configurations inside %d nets\n", t->n, nc);
        rc = lattable_measure_in_nets(t, 0, nc, carrier_build, &cs, &pc.mc, &wo, e);
    }
    if (rc == NASC_OK) /* whatever no net carried (none, normally) is timed alone */
        rc = lattable_measure(t, 0, &pc.mc, e);
    if (rc == NASC_OK) {
        lattable_fit_fallback(t);
        /* The correction: the flagged nets' whole latency, timed in the same rounds as the
         * units that make the table, against the table's plain prediction for them. */
        int n = 0;
        LatencyTable id = *t; /* the same entries with the identity correction */
        memset(id.corr, 0, sizeof id.corr);
        id.corr[0] = 1;
        for (int k = 0; k < nc; k++) {
            Net net;
            Err sub;
            if (!want[k] || !(whole[k] > 0) || carrier_build(&cs, k, &net, &sub) != NASC_OK) continue;
            predict_net(&id, &net, &plain[n]);
            whole[n++] = whole[k];
            net_free(&net);
        }
        lattable_fit_correction(t, plain, whole, n);
        sum->nets = n;
        for (int i = 0; i < n; i++) {
            const double *c = t->corr;
            double pred = c[0] * plain[i].sum_us + c[1] * plain[i].nodes + c[2] + c[3] * plain[i].log2_bytes;
            double err = fabs(NASC_MAX(pred, 0) - whole[i]) / whole[i];
            sum->fit_mean_abs_err += err / n;
            if (err > sum->fit_max_abs_err) sum->fit_max_abs_err = err;
        }
    }
    sum->carriers = nc;
    free(want);
    free(whole);
    free(plain);
    for (int k = 0; k < cs.n; k++) free(cs.c[k].m);
    free(cs.c);
    for (int si = 0; si < pc.nspaces; si++)
        if (cs.spaces[si]) space_free(cs.spaces[si]);
    free(cs.spaces);
    sum->seconds = now_seconds() - start;
    return rc;
}
