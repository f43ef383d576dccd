/* test_torch_ref.c: whole networks against PyTorch. For every tests/ref/NAME.ref (written by
 * scripts/make_refs.py with Debian's python3-torch; the files are committed, PyTorch is not
 * needed here) it parses the spec, builds the net, loads the reference's initial parameters
 * and BN statistics, and compares with PyTorch:
 *   - parameter count and each node's parameter / buffer sizes;
 *   - one training-mode forward: logits, mean cross-entropy, every parameter gradient;
 *   - three SGD steps (lr 0.1, momentum 0.9, nesterov, weight decay 5e-4, constant schedule)
 *     from the initial state on the same batch: the loss of each step, the parameters and the
 *     BN running statistics after them, then an eval-mode forward's logits;
 *   - spec round trip: print -> parse -> print gives the same text, and the net built from the
 *     printed text gives the same outputs.
 * Arguments (optional): .ref files or folders to use instead of tests/ref.
 *
 * Reference file format (all little-endian; make_refs.py's docstring has the record list):
 *     "NREF", u32 version (1), u32 record count, records, u32 CRC-32 of everything before it;
 *     record = u32 name length, name, u32 dtype (0 f32, 1 i32, 2 text), u32 ndim (0..4),
 *              u32 dims[ndim], prod(dims) elements (4 bytes each, 1 byte for text).
 * The PyTorch side runs in float64 from float32-exact initial values, so the differences below
 * are nasc's float32 rounding (plus any bug).
 */
#include "../src/net/net.h"
#include "../src/ops/ops.h"
#include "../src/train/train.h"
#include "check.h"

#include <dirent.h>
#include <sys/stat.h>

#define REF_VERSION 1
#define ATOL 1e-4
#define RTOL 1e-3

enum { DT_F32, DT_I32, DT_TEXT };

typedef struct {
    char name[128];
    uint32_t dtype, ndim, dims[4];
    size_t count;      /* number of elements */
    const uint8_t *data; /* into the file buffer (unaligned) */
} Rec;

typedef struct {
    uint8_t *buf;
    size_t size;
    Rec *recs;
    int n;
} RefFile;

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ref_free(RefFile *r) {
    free(r->buf);
    free(r->recs);
    memset(r, 0, sizeof *r);
}

/* Reads and validates a reference file; returns 0 (with a message on stderr) if it is bad. */
static int ref_load(RefFile *r, const char *path) {
    Err e;
    memset(r, 0, sizeof *r);
    r->buf = file_read_all(path, &r->size, &e);
    if (!r->buf) {
        fprintf(stderr, "%s\n", e.msg);
        return 0;
    }
    const uint8_t *p = r->buf, *end = r->buf + r->size;
    if (r->size < 16 || memcmp(p, "NREF", 4) != 0) {
        fprintf(stderr, "%s: not a reference file (bad magic)\n", path);
        return 0;
    }
    end -= 4;
    if (crc32_update(0, r->buf, r->size - 4) != rd_u32(end)) {
        fprintf(stderr, "%s: CRC mismatch (corrupt file)\n", path);
        return 0;
    }
    if (rd_u32(p + 4) != REF_VERSION) {
        fprintf(stderr, "%s: version %u, this test reads %d\n", path, rd_u32(p + 4), REF_VERSION);
        return 0;
    }
    uint32_t n = rd_u32(p + 8);
    p += 12;
    r->recs = xcalloc(n ? n : 1, sizeof *r->recs);
    for (uint32_t i = 0; i < n; i++) {
        Rec *rc = &r->recs[i];
        if (end - p < 4) goto truncated;
        uint32_t nl = rd_u32(p);
        p += 4;
        if (nl >= sizeof rc->name || (size_t)(end - p) < nl + 8) goto truncated;
        memcpy(rc->name, p, nl);
        p += nl;
        rc->dtype = rd_u32(p);
        rc->ndim = rd_u32(p + 4);
        p += 8;
        if (rc->dtype > DT_TEXT || rc->ndim > 4 || (size_t)(end - p) < 4 * rc->ndim) goto truncated;
        rc->count = 1;
        for (uint32_t d = 0; d < rc->ndim; d++, p += 4) rc->count *= rc->dims[d] = rd_u32(p);
        size_t bytes = rc->count * (rc->dtype == DT_TEXT ? 1 : 4);
        if ((size_t)(end - p) < bytes) goto truncated;
        rc->data = p;
        p += bytes;
        r->n++;
    }
    if (p != end) goto truncated;
    return 1;
truncated:
    fprintf(stderr, "%s: truncated or malformed record %d\n", path, r->n);
    return 0;
}

static const Rec *ref_get(const RefFile *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->recs[i].name, name)) return &r->recs[i];
    return NULL;
}

/* Decoded copies (the caller frees). */
static float *rec_f32(const Rec *rc) {
    float *v = xmalloc((rc->count ? rc->count : 1) * sizeof *v);
    for (size_t i = 0; i < rc->count; i++) {
        uint32_t u = rd_u32(rc->data + 4 * i);
        memcpy(&v[i], &u, 4);
    }
    return v;
}

static int *rec_i32(const Rec *rc) {
    int *v = xmalloc((rc->count ? rc->count : 1) * sizeof *v);
    for (size_t i = 0; i < rc->count; i++) v[i] = (int32_t)rd_u32(rc->data + 4 * i);
    return v;
}

/* The f32 records whose names start with `prefix` ("init/", ...), in file order. */
typedef struct {
    int n;
    const Rec **recs;
    size_t total;
} Group;

static Group ref_group(const RefFile *r, const char *prefix) {
    Group g = {0, xcalloc((size_t)r->n + 1, sizeof(Rec *)), 0};
    size_t pl = strlen(prefix);
    for (int i = 0; i < r->n; i++)
        if (!strncmp(r->recs[i].name, prefix, pl) && r->recs[i].dtype == DT_F32) {
            g.recs[g.n++] = &r->recs[i];
            g.total += r->recs[i].count;
        }
    return g;
}

/* Copies a group into a flat buffer of exactly g->total floats. */
static void group_load(float *dst, const Group *g) {
    size_t off = 0;
    for (int i = 0; i < g->n; i++) {
        float *v = rec_f32(g->recs[i]);
        memcpy(dst + off, v, g->recs[i]->count * sizeof *v);
        off += g->recs[i]->count;
        free(v);
    }
}

/* Compares n values with |got - want| <= ATOL + RTOL |want| (one CHECK per tensor) and prints
 * the max abs error. Returns the max abs error (folded into *worst). */
static double compare(const char *net, const char *what, const float *got, const float *want, size_t n,
                      double *worst) {
    double maxerr = 0, maxref = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double a = got[i], b = want[i], d = fabs(a - b);
        if (!(d <= ATOL + RTOL * fabs(b))) { /* also catches NaN */
            if (!bad) first_bad = i;
            bad++;
            if (isnan(d)) d = INFINITY;
        }
        if (d > maxerr) maxerr = d;
        if (fabs(b) > maxref) maxref = fabs(b);
    }
    printf("  %-8s %-40s n=%-6zu max|err|=%.3g  max|ref|=%.3g%s\n", net, what, n, maxerr, maxref,
           bad ? "  FAIL" : "");
    CHECK(!bad, "%s %s: %zu of %zu values off, first at [%zu]: got %.9g, want %.9g", net, what, bad, n,
          first_bad, (double)got[first_bad], (double)want[first_bad]);
    if (maxerr > *worst) *worst = maxerr;
    return maxerr;
}

/* Compares a flat nasc buffer with a group, tensor by tensor (names from the file). */
static void compare_group(const char *net, const float *got, const Group *g, double *worst) {
    size_t off = 0;
    for (int i = 0; i < g->n; i++) {
        float *want = rec_f32(g->recs[i]);
        compare(net, g->recs[i]->name, got + off, want, g->recs[i]->count, worst);
        off += g->recs[i]->count;
        free(want);
    }
}

/* Mean cross-entropy of the logits and its gradient (into dlogits, overwritten). */
static double loss_and_grad(float *dlogits, float *probs, const float *logits, const int *labels, int n,
                            int k) {
    double loss = xent_forward_ref(probs, logits, labels, n, k, 0.0f);
    memset(dlogits, 0, (size_t)n * k * sizeof *dlogits);
    xent_backward_ref(dlogits, probs, labels, n, k, 0.0f, 1.0f);
    return loss;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void run_ref(const char *path) {
    char net_name[64];
    snprintf(net_name, sizeof net_name, "%s", base_name(path));
    char *dot = strrchr(net_name, '.');
    if (dot) *dot = 0;
    printf("%s\n", path);

    RefFile rf;
    if (!ref_load(&rf, path)) {
        CHECK(0, "%s: cannot read the reference file", path);
        ref_free(&rf);
        return;
    }
    const Rec *r_spec = ref_get(&rf, "spec"), *r_meta = ref_get(&rf, "meta"),
              *r_nparam = ref_get(&rf, "node_nparam"), *r_nbuf = ref_get(&rf, "node_nbuf"),
              *r_x = ref_get(&rf, "x"), *r_y = ref_get(&rf, "y"), *r_logits = ref_get(&rf, "logits"),
              *r_loss = ref_get(&rf, "loss"), *r_losses = ref_get(&rf, "loss_steps"),
              *r_eval = ref_get(&rf, "logits_eval");
    if (!r_spec || !r_meta || r_meta->count != 6 || !r_nparam || !r_nbuf || !r_x || r_x->ndim != 4 || !r_y ||
        !r_logits || !r_loss || !r_losses || r_losses->count != 3 || !r_eval) {
        CHECK(0, "%s: missing or malformed records", path);
        ref_free(&rf);
        return;
    }
    char *spec_text = xmalloc(r_spec->count + 1);
    memcpy(spec_text, r_spec->data, r_spec->count);
    spec_text[r_spec->count] = 0;
    int *meta = rec_i32(r_meta);
    int in_c = meta[0], in_h = meta[1], in_w = meta[2], classes = meta[3], channels = meta[4],
        cells = meta[5];
    int batch = (int)r_x->dims[0];
    CHECK(r_x->dims[1] == (uint32_t)in_c && r_x->dims[2] == (uint32_t)in_h && r_x->dims[3] == (uint32_t)in_w &&
              r_y->count == (size_t)batch && r_logits->count == (size_t)batch * classes &&
              r_eval->count == (size_t)batch * classes,
          "%s: inconsistent shapes in the file", path);
    float *x = rec_f32(r_x), *want_logits = rec_f32(r_logits), *want_eval = rec_f32(r_eval);
    float *want_loss = rec_f32(r_loss), *want_losses = rec_f32(r_losses);
    int *labels = rec_i32(r_y), *node_nparam = rec_i32(r_nparam), *node_nbuf = rec_i32(r_nbuf);
    Group g_init = ref_group(&rf, "init/"), g_binit = ref_group(&rf, "binit/");
    Group g_grad = ref_group(&rf, "grad/"), g_step = ref_group(&rf, "step3/");
    Group g_bstep = ref_group(&rf, "bstep3/");
    float *probs = xmalloc((size_t)batch * classes * sizeof *probs);
    float *dlogits = xmalloc((size_t)batch * classes * sizeof *dlogits);
    float *eval_logits = xmalloc((size_t)batch * classes * sizeof *eval_logits);
    double worst_fwd = 0, worst_grad = 0, worst_step = 0, worst_eval = 0;

    Err e = {{0}};
    Spec spec = {0}, spec2 = {0};
    Net net, net2;
    memset(&net, 0, sizeof net);
    memset(&net2, 0, sizeof net2);
    int built = 0, built2 = 0;
    char *text1 = NULL, *text2 = NULL;
    Optim opt = {0};

    if (spec_parse(&spec, spec_text, channels, cells, &e) != NASC_OK) {
        CHECK(0, "%s: spec_parse: %s", net_name, e.msg);
        goto done;
    }
    if (net_build(&net, &spec, in_c, in_h, in_w, classes, &e) != NASC_OK) {
        CHECK(0, "%s: net_build: %s", net_name, e.msg);
        goto done;
    }
    built = 1;

    /* ---- layout: parameter count, per-node parameter and buffer sizes */
    size_t np = net_param_count(&net);
    printf("  %-8s %zu parameters (reference %zu), %zu buffer values (reference %zu)\n", net_name, np,
           g_init.total, net.nbuffers, g_binit.total);
    CHECK(np == g_init.total && net.nparams == g_init.total && net.nbuffers == g_binit.total &&
              g_grad.total == g_init.total && g_step.total == g_init.total && g_bstep.total == g_binit.total,
          "%s: nasc has %zu params (net->nparams %zu) and %zu buffer values, the reference %zu and %zu",
          net_name, np, net.nparams, net.nbuffers, g_init.total, g_binit.total);
    {
        int k = 0, m = 0, layout_ok = 1;
        for (int i = 0; i < net.spec.n; i++) {
            const Node *nd = &net.spec.nodes[i];
            if (nd->nparam) {
                int ok = k < (int)r_nparam->count && (size_t)node_nparam[k] == nd->nparam;
                CHECK(ok, "%s: node %d (%s) has %zu params, reference node #%d has %d", net_name, i,
                      op_name(nd->op), nd->nparam, k, k < (int)r_nparam->count ? node_nparam[k] : -1);
                layout_ok &= ok;
                k++;
            }
            if (nd->nbuf) {
                int ok = m < (int)r_nbuf->count && (size_t)node_nbuf[m] == nd->nbuf;
                CHECK(ok, "%s: node %d (%s) has %zu buffer values, reference node #%d has %d", net_name, i,
                      op_name(nd->op), nd->nbuf, m, m < (int)r_nbuf->count ? node_nbuf[m] : -1);
                layout_ok &= ok;
                m++;
            }
        }
        CHECK(k == (int)r_nparam->count && m == (int)r_nbuf->count,
              "%s: %d nodes with parameters and %d with buffers, the reference %zu and %zu", net_name, k, m,
              r_nparam->count, r_nbuf->count);
        if (!layout_ok || k != (int)r_nparam->count || m != (int)r_nbuf->count || np != g_init.total ||
            net.nbuffers != g_binit.total || g_grad.total != np || g_step.total != np ||
            g_bstep.total != net.nbuffers)
            goto done; /* nothing below can be compared */
    }

    /* ---- one training-mode forward and backward */
    group_load(net.params, &g_init);
    group_load(net.buffers, &g_binit);
    net_zero_grad(&net);
    const float *logits = net_forward(&net, x, batch, 1);
    compare(net_name, "logits (train)", logits, want_logits, (size_t)batch * classes, &worst_fwd);
    double loss = loss_and_grad(dlogits, probs, logits, labels, batch, classes);
    CHECK_CLOSE(loss, want_loss[0], ATOL, RTOL, "loss");
    if (fabs(loss - want_loss[0]) > worst_fwd) worst_fwd = fabs(loss - want_loss[0]);
    printf("  %-8s loss %.7f (reference %.7f)\n", net_name, loss, (double)want_loss[0]);
    net_backward(&net, dlogits);
    compare_group(net_name, net.grads, &g_grad, &worst_grad);

    /* ---- three SGD steps from the initial state */
    group_load(net.params, &g_init);
    group_load(net.buffers, &g_binit);
    OptConfig oc = optim_defaults(OPT_SGD);
    oc.momentum = 0.9f;
    oc.nesterov = 1;
    oc.wd = 5e-4f;
    optim_init(&opt, &oc, net.nparams);
    Schedule sched = {0};
    sched.kind = SCHED_CONST;
    sched.lr = 0.1f;
    for (long step = 0; step < 3; step++) {
        net_zero_grad(&net);
        logits = net_forward(&net, x, batch, 1);
        double l = loss_and_grad(dlogits, probs, logits, labels, batch, classes);
        char what[48];
        snprintf(what, sizeof what, "loss of SGD step %ld", step + 1);
        CHECK_CLOSE(l, want_losses[step], ATOL, RTOL, what);
        if (fabs(l - want_losses[step]) > worst_step) worst_step = fabs(l - want_losses[step]);
        net_backward(&net, dlogits);
        optim_step(&opt, net.params, net.grads, sched_lr(&sched, step));
    }
    compare_group(net_name, net.params, &g_step, &worst_step);
    compare_group(net_name, net.buffers, &g_bstep, &worst_step);
    logits = net_forward(&net, x, batch, 0);
    compare(net_name, "logits (eval, after 3 steps)", logits, want_eval, (size_t)batch * classes, &worst_eval);
    memcpy(eval_logits, logits, (size_t)batch * classes * sizeof *eval_logits);

    /* ---- spec round trip: print -> parse -> print, and the same outputs */
    text1 = spec_print(&net.spec);
    if (spec_parse(&spec2, text1, channels, cells, &e) != NASC_OK) {
        CHECK(0, "%s: the printed spec does not parse: %s\n%s", net_name, e.msg, text1);
        goto done;
    }
    text2 = spec_print(&spec2);
    CHECK(!strcmp(text1, text2), "%s: print(parse(print(spec))) differs:\n%s\n%s", net_name, text1, text2);
    if (net_build(&net2, &spec2, in_c, in_h, in_w, classes, &e) != NASC_OK) {
        CHECK(0, "%s: net_build of the printed spec: %s", net_name, e.msg);
        goto done;
    }
    built2 = 1;
    CHECK(net2.nparams == net.nparams && net2.nbuffers == net.nbuffers,
          "%s: the printed spec has %zu params / %zu buffers, the original %zu / %zu", net_name, net2.nparams,
          net2.nbuffers, net.nparams, net.nbuffers);
    if (net2.nparams == net.nparams && net2.nbuffers == net.nbuffers) {
        memcpy(net2.params, net.params, net.nparams * sizeof *net.params);
        memcpy(net2.buffers, net.buffers, net.nbuffers * sizeof *net.buffers);
        double w = 0;
        logits = net_forward(&net2, x, batch, 0);
        size_t nl = (size_t)batch * classes;
        compare(net_name, "round trip: logits (eval)", logits, eval_logits, nl, &w);
        CHECK(w <= 1e-6, "%s: round-trip eval logits differ by %.3g", net_name, w);
        /* Training mode (batch statistics, so the differing running stats do not matter). */
        memcpy(eval_logits, net_forward(&net2, x, batch, 1), nl * sizeof *eval_logits);
        logits = net_forward(&net, x, batch, 1);
        w = 0;
        compare(net_name, "round trip: logits (train)", eval_logits, logits, nl, &w);
        CHECK(w <= 1e-6, "%s: round-trip train logits differ by %.3g", net_name, w);
    }
    printf("  %-8s max|err|: forward %.3g, gradients %.3g, 3 SGD steps %.3g, eval forward %.3g\n", net_name,
           worst_fwd, worst_grad, worst_step, worst_eval);

done:
    if (built) net_free(&net);
    if (built2) net_free(&net2);
    optim_free(&opt);
    spec_free(&spec);
    spec_free(&spec2);
    free(text1);
    free(text2);
    free(spec_text);
    free(meta);
    free(x);
    free(want_logits);
    free(want_eval);
    free(want_loss);
    free(want_losses);
    free(labels);
    free(node_nparam);
    free(node_nbuf);
    free(g_init.recs);
    free(g_binit.recs);
    free(g_grad.recs);
    free(g_step.recs);
    free(g_bstep.recs);
    free(probs);
    free(dlogits);
    free(eval_logits);
    ref_free(&rf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends the .ref files of `path` (a file, or a folder's *.ref sorted by name). */
static void collect(const char *path, char ***list, int *n) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        *list = xrealloc(*list, (size_t)(*n + 1) * sizeof **list);
        (*list)[(*n)++] = xstrdup(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) return;
    int start = *n;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".ref")) continue;
        char *full = xmalloc(strlen(path) + l + 2);
        sprintf(full, "%s/%s", path, de->d_name);
        *list = xrealloc(*list, (size_t)(*n + 1) * sizeof **list);
        (*list)[(*n)++] = full;
    }
    closedir(d);
    qsort(*list + start, (size_t)(*n - start), sizeof **list, cmp_str);
}

int main(int argc, char **argv) {
    char **files = NULL;
    int n = 0;
    if (argc > 1)
        for (int i = 1; i < argc; i++) collect(argv[i], &files, &n);
    else
        collect("tests/ref", &files, &n);
    CHECK(n > 0, "no reference files found (looked in %s; run from the repository root)",
          argc > 1 ? "the arguments" : "tests/ref");
    for (int i = 0; i < n; i++) {
        run_ref(files[i]);
        free(files[i]);
    }
    free(files);
    return check_summary("test_torch_ref");
}
