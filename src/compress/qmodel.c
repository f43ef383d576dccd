/* qmodel.c: int8 model files. Everything an int8 network needs, and nothing float but the
 * scales (which exporters need): the spec, the input shape, the class count, the input
 * normalization, the lowering's node kinds (checked on load against this nasc's), one table
 * of activation (scale, zero point) pairs, each quantized tensor declared once, then every
 * executed node's payload. Layout (little-endian):
 *
 *   "NASCQ8\0\0"                 8 bytes magic
 *   u32 version                  QMODEL_VERSION
 *   u32 in_c, in_h, in_w, classes
 *   u32 norm channels; f32 mean[4]; f32 std[4]
 *   u32 spec length; spec text   (canonical, as spec_print writes it)
 *   u32 arch length; arch text   (the shorthand it came from; may be empty)
 *   u32 nodes; u8 kind[nodes]    (QExecKind of each spec node)
 *   u32 tensors; {f32 scale, i32 zero point}[tensors]
 *                                (the input, then each executed node's value that has its
 *                                 own quantization, in node order)
 *   per executed node, in node order:
 *     u32 nw, nbias, nmult, nshift, nwscale, nlut
 *     i8 w[nw]; i32 bias[nbias]; i32 mult[nmult]; i8 shift[nshift]; f32 wscale[nwscale];
 *     i8 lut[nlut]
 *   u32 crc32 of all the bytes before it
 *
 * Written atomically. Loading checks size, magic, version and checksum first, then every
 * count against what the spec and the lowering require, and every value's range (zero points
 * in [-128, 127], positive finite scales, weights in [-127, 127], shifts in [1, 62], ...), so a
 * damaged file is refused with a message naming the problem and never crashes the reader.
 */
#include <math.h>

#include "qnet_impl.h"

#define QMODEL_MAGIC "NASCQ8\0"
#define FP32_MAGIC "NASCMDL"
#define QMODEL_VERSION 3u /* 2: resize multipliers in qresize_unit units (were 2^-22); 3: conv pairs
                            * stand for ONNX Runtime's float output scales (qops.h) */

typedef struct {
    char *buf;
    size_t len, cap;
} Buf;

static void put(Buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->buf = xrealloc(b->buf, b->cap);
    }
    if (n) memcpy(b->buf + b->len, p, n);
    b->len += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }

static int host_is_little_endian(void) {
    uint16_t x = 1;
    return *(uint8_t *)&x == 1;
}

QModelKind qmodel_probe(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return QMODEL_NONE;
    char m[8];
    size_t got = fread(m, 1, 8, f);
    fclose(f);
    if (got != 8) return QMODEL_NONE;
    if (!memcmp(m, QMODEL_MAGIC, 8)) return QMODEL_INT8;
    if (!memcmp(m, FP32_MAGIC, 8)) return QMODEL_FP32;
    return QMODEL_NONE;
}

int qmodel_save(const char *path, const QNet *q, const Norm *norm, Err *e) {
    NASC_ASSERT(host_is_little_endian());
    Buf b = {0};
    put(&b, QMODEL_MAGIC, 8);
    put_u32(&b, QMODEL_VERSION);
    put_u32(&b, (uint32_t)q->in_c);
    put_u32(&b, (uint32_t)q->in_h);
    put_u32(&b, (uint32_t)q->in_w);
    put_u32(&b, (uint32_t)q->classes);
    Norm nm = {0};
    if (norm) nm = *norm;
    put_u32(&b, (uint32_t)nm.nchan);
    put(&b, nm.mean, sizeof nm.mean);
    put(&b, nm.std, sizeof nm.std);
    char *spec = spec_print(&q->spec);
    put_u32(&b, (uint32_t)strlen(spec));
    put(&b, spec, strlen(spec));
    free(spec);
    const char *arch = q->spec.arch ? q->spec.arch : "";
    put_u32(&b, (uint32_t)strlen(arch));
    put(&b, arch, strlen(arch));
    int n = q->spec.n;
    put_u32(&b, (uint32_t)n);
    for (int i = 0; i < n; i++) put(&b, &q->nodes[i].kind, 1);
    put_u32(&b, (uint32_t)q->qtensors);
    for (int t = 0; t <= n; t++) {
        if (t > 0 && (q->nodes[t - 1].kind == QX_NONE || !qnet_has_table_entry(q, t - 1))) continue;
        int v = t == 0 ? 0 : q->nodes[t - 1].tail + 1;
        put(&b, &q->scale[v], 4);
        put(&b, &q->zp[v], 4);
    }
    for (int i = 0; i < n; i++) {
        const QNode *u = &q->nodes[i];
        if (u->kind == QX_NONE || u->kind == QX_ALIAS) continue;
        uint32_t counts[6] = {u->nw, u->nbias, u->nmult, u->nshift, u->nwscale, u->nlut};
        put(&b, counts, sizeof counts);
        put(&b, u->w, u->nw);
        put(&b, u->bias, 4 * (size_t)u->nbias);
        put(&b, u->mult, 4 * (size_t)u->nmult);
        put(&b, u->shift, u->nshift);
        put(&b, u->wscale, 4 * (size_t)u->nwscale);
        put(&b, u->lut, u->nlut);
    }
    put_u32(&b, crc32_update(0, b.buf, b.len));
    int rc = file_write_atomic(path, b.buf, b.len, e);
    free(b.buf);
    return rc;
}

typedef struct {
    const uint8_t *p;
    size_t len, off;
} Reader;

static int get(Reader *r, void *dst, size_t n) {
    if (r->len - r->off < n) return NASC_ERR;
    if (n) memcpy(dst, r->p + r->off, n);
    r->off += n;
    return NASC_OK;
}

/* The payload of executed node i from r into the arrays qnet_setup placed; NASC_ERR with a
 * message on a count or value out of range. */
static int read_node(Reader *r, QNet *q, int i, const char *path, Err *e) {
    QNode *u = &q->nodes[i];
    uint32_t c[6];
    if (get(r, c, sizeof c)) goto truncated;
    uint32_t want[6] = {u->nw, u->nbias, u->nmult, u->nshift, u->nwscale, u->nlut};
    static const char *what[6] = {"weights", "biases", "multipliers", "shifts", "weight scales", "table entries"};
    for (int k = 0; k < 6; k++)
        if (c[k] != want[k]) {
            err_set(e, "%s: statement %d (%s) has %u %s; its shape needs %u", path, i + 1, op_name(q->spec.nodes[i].op),
                    c[k], what[k], want[k]);
            return NASC_ERR;
        }
    if (get(r, u->w, u->nw) || get(r, u->bias, 4 * (size_t)u->nbias) || get(r, u->mult, 4 * (size_t)u->nmult) ||
        get(r, u->shift, u->nshift) || get(r, u->wscale, 4 * (size_t)u->nwscale) || get(r, u->lut, u->nlut))
        goto truncated;
    const char *bad = NULL;
    for (uint32_t k = 0; k < u->nw && !bad; k++)
        if (u->w[k] < -127) bad = "a weight outside [-127, 127]";
    for (uint32_t k = 0; k < u->nbias && !bad; k++)
        if (u->bias[k] < -1073741824 || u->bias[k] > 1073741824) bad = "a bias outside +-2^30";
    /* Multipliers are q_multiplier's (0 or in [2^30, 2^31), shift in [1, 62]). */
    for (uint32_t k = 0; k < u->nmult && !bad; k++)
        if (u->mult[k] < 0 || (u->mult[k] != 0 && u->mult[k] < (1 << 30)))
            bad = "a requantization multiplier outside [2^30, 2^31)";
    for (uint32_t k = 0; k < u->nshift && !bad; k++)
        if (u->shift[k] < 1 || u->shift[k] > 62) bad = "a shift outside [1, 62]";
    for (uint32_t k = 0; k < u->nwscale && !bad; k++)
        if (!(u->wscale[k] > 0) || !isfinite(u->wscale[k])) bad = "a weight scale that is not a positive number";
    if (bad) {
        err_set(e, "%s is corrupted: statement %d (%s) has %s", path, i + 1, op_name(q->spec.nodes[i].op), bad);
        return NASC_ERR;
    }
    return NASC_OK;
truncated:
    err_set(e, "%s is truncated (in statement %d's int8 payload)", path, i + 1);
    return NASC_ERR;
}

int qmodel_load(const char *path, QNet *q, Norm *norm, Err *e) {
    NASC_ASSERT(host_is_little_endian());
    memset(q, 0, sizeof *q);
    size_t len;
    uint8_t *data = file_read_all(path, &len, e);
    if (!data) return NASC_ERR;
    int rc = NASC_ERR, built = 0, setup = 0;
    char *spec_text = NULL, *arch = NULL;
    uint8_t *kinds = NULL;
    Spec spec = {0};
    Net net;
    if (len >= 8 && !memcmp(data, FP32_MAGIC, 8)) {
        err_set(e, "%s is an fp32 model; this needs an int8 model (run nasc compress --quantize int8)", path);
        goto done;
    }
    if (frame_check(data, len, QMODEL_MAGIC, QMODEL_VERSION, "int8 model", path, e) != NASC_OK) goto done;
    Reader r = {data, len - 4, 12};
    uint32_t in_c, in_h, in_w, classes, nchan, slen, alen, nnodes, ntensors;
    Norm nm;
    if (get(&r, &in_c, 4) || get(&r, &in_h, 4) || get(&r, &in_w, 4) || get(&r, &classes, 4) || get(&r, &nchan, 4) ||
        get(&r, nm.mean, sizeof nm.mean) || get(&r, nm.std, sizeof nm.std) || get(&r, &slen, 4))
        goto truncated;
    if (slen > r.len - r.off) goto truncated;
    spec_text = xmalloc((size_t)slen + 1);
    get(&r, spec_text, slen);
    spec_text[slen] = 0;
    if (get(&r, &alen, 4) || alen > r.len - r.off) goto truncated;
    arch = xmalloc((size_t)alen + 1);
    get(&r, arch, alen);
    arch[alen] = 0;
    if (in_c < 1 || in_c > 4 || in_h < 1 || in_w < 1 || in_h > 65536 || in_w > 65536 || classes < 1 ||
        classes > 1000000 || nchan > 4) {
        err_set(e, "%s: implausible header (input %ux%ux%u, %u classes)", path, in_c, in_h, in_w, classes);
        goto done;
    }
    for (uint32_t k = 0; k < nchan; k++)
        if (!isfinite(nm.mean[k]) || !(nm.std[k] > 0) || !isfinite(nm.std[k])) {
            err_set(e, "%s: implausible input normalization (channel %u: mean %g, std %g)", path, k, nm.mean[k],
                    nm.std[k]);
            goto done;
        }
    Err pe;
    if (spec_parse(&spec, spec_text, 16, 1, &pe) != NASC_OK) {
        err_set(e, "%s: its spec does not parse: %s", path, pe.msg);
        goto done;
    }
    if (alen) spec.arch = xstrdup(arch);
    if (net_build(&net, &spec, (int)in_c, (int)in_h, (int)in_w, (int)classes, &pe) != NASC_OK) {
        err_set(e, "%s: its spec does not build: %s", path, pe.msg);
        goto done;
    }
    built = 1;
    qnet_setup(q, &net);
    setup = 1;
    int n = q->spec.n;
    if (get(&r, &nnodes, 4)) goto truncated;
    if (nnodes != (uint32_t)n) {
        err_set(e, "%s: lists %u nodes but its spec has %d", path, nnodes, n);
        goto done;
    }
    if (nnodes > r.len - r.off) goto truncated;
    kinds = xmalloc((size_t)n + 1);
    get(&r, kinds, (size_t)n);
    for (int i = 0; i < n; i++)
        if (kinds[i] != q->nodes[i].kind) {
            err_set(e, "%s: statement %d (%s) was lowered as '%s' but this nasc lowers it as '%s'; quantize the model again",
                    path, i + 1, op_name(q->spec.nodes[i].op), qexec_name((QExecKind)(kinds[i] < QX_COUNT ? kinds[i] : QX_COUNT)),
                    qexec_name((QExecKind)q->nodes[i].kind));
            goto done;
        }
    if (get(&r, &ntensors, 4)) goto truncated;
    if (ntensors != (uint32_t)q->qtensors) {
        err_set(e, "%s: declares %u quantized tensors but its network has %d", path, ntensors, q->qtensors);
        goto done;
    }
    for (int t = 0; t <= n; t++) {
        if (t > 0 && (q->nodes[t - 1].kind == QX_NONE || !qnet_has_table_entry(q, t - 1))) continue;
        int v = t == 0 ? 0 : q->nodes[t - 1].tail + 1;
        if (get(&r, &q->scale[v], 4) || get(&r, &q->zp[v], 4)) goto truncated;
        if (!(q->scale[v] > 0) || !isfinite(q->scale[v]) || q->zp[v] < -128 || q->zp[v] > 127) {
            char what[48];
            if (v) snprintf(what, sizeof what, "statement %d", v);
            else snprintf(what, sizeof what, "the input");
            err_set(e, "%s is corrupted: the quantization of %s is scale %g, zero point %d", path, what, q->scale[v],
                    q->zp[v]);
            goto done;
        }
    }
    qnet_derive(q);
    for (int i = 0; i < n; i++) {
        if (q->nodes[i].kind == QX_NONE || q->nodes[i].kind == QX_ALIAS) continue;
        if (read_node(&r, q, i, path, e) != NASC_OK) goto done;
    }
    if (r.off != r.len) {
        err_set(e, "%s: %zu unexpected bytes after the last node's payload", path, r.len - r.off);
        goto done;
    }
    qnet_finish(q);
    nm.nchan = (int)nchan;
    if (norm) *norm = nm;
    rc = NASC_OK;
    goto done;
truncated:
    err_set(e, "%s is truncated", path);
done:
    if (rc != NASC_OK && setup) qnet_free(q);
    if (built) net_free(&net);
    spec_free(&spec);
    free(spec_text);
    free(arch);
    free(kinds);
    free(data);
    return rc;
}
