/* model.c: model files. One file holds the spec, the input shape, the class count, the input
 * normalization, every parameter and the BN running statistics. Layout (little-endian):
 *
 *   "NASCMDL\0"                 8 bytes magic
 *   u32 version                 MODEL_VERSION
 *   u32 in_c, in_h, in_w, classes
 *   u32 norm channels; f32 mean[4]; f32 std[4]
 *   u32 spec length; spec text  (canonical, as spec_print writes it)
 *   u32 arch length; arch text  (the shorthand it came from, e.g. "nb201:|...|"; may be empty)
 *   u64 nparams; u64 nbuffers
 *   f32 params[nparams]; f32 buffers[nbuffers]
 *   u32 crc32 of all the bytes before it
 *
 * Files are written atomically. Loading checks the size, magic, version and checksum before
 * reading anything else, so a truncated or corrupted file is refused with a clear message.
 */
#include "net.h"

#define MODEL_MAGIC "NASCMDL"
#define MODEL_VERSION 1u

typedef struct {
    char *buf;
    size_t len, cap;
} Buf;

static void put(Buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->buf = xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(Buf *b, uint64_t v) { put(b, &v, 8); }

static int host_is_little_endian(void) {
    uint16_t x = 1;
    return *(uint8_t *)&x == 1;
}

int model_save(const char *path, const Net *net, const Norm *norm, Err *e) {
    NASC_ASSERT(host_is_little_endian());
    Buf b = {0};
    put(&b, MODEL_MAGIC, 8);
    put_u32(&b, MODEL_VERSION);
    put_u32(&b, (uint32_t)net->in_c);
    put_u32(&b, (uint32_t)net->in_h);
    put_u32(&b, (uint32_t)net->in_w);
    put_u32(&b, (uint32_t)net->classes);
    Norm nm = {0};
    if (norm) nm = *norm;
    put_u32(&b, (uint32_t)nm.nchan);
    put(&b, nm.mean, sizeof nm.mean);
    put(&b, nm.std, sizeof nm.std);
    char *spec = spec_print(&net->spec);
    put_u32(&b, (uint32_t)strlen(spec));
    put(&b, spec, strlen(spec));
    free(spec);
    const char *arch = net->spec.arch ? net->spec.arch : "";
    put_u32(&b, (uint32_t)strlen(arch));
    put(&b, arch, strlen(arch));
    put_u64(&b, net->nparams);
    put_u64(&b, net->nbuffers);
    put(&b, net->params, net->nparams * sizeof(float));
    put(&b, net->buffers, net->nbuffers * sizeof(float));
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
    memcpy(dst, r->p + r->off, n);
    r->off += n;
    return NASC_OK;
}

int model_load(const char *path, Net *net, Norm *norm, Err *e) {
    NASC_ASSERT(host_is_little_endian());
    size_t len;
    uint8_t *data = file_read_all(path, &len, e);
    if (!data) return NASC_ERR;
    int rc = NASC_ERR;
    char *spec_text = NULL, *arch = NULL;
    Spec spec = {0};
    if (len >= 8 && memcmp(data, "NASCQ8\0", 8) == 0) { /* src/compress/qmodel.c's magic */
        err_set(e, "%s is an int8 model; this needs an fp32 model (the one it was quantized from)", path);
        goto done;
    }
    if (frame_check(data, len, MODEL_MAGIC, MODEL_VERSION, "model", path, e) != NASC_OK) goto done;
    Reader r = {data, len - 4, 12};
    uint32_t in_c, in_h, in_w, classes, nchan, slen, alen;
    Norm nm;
    uint64_t np, nb;
    if (get(&r, &in_c, 4) || get(&r, &in_h, 4) || get(&r, &in_w, 4) || get(&r, &classes, 4) || get(&r, &nchan, 4) ||
        get(&r, nm.mean, sizeof nm.mean) || get(&r, nm.std, sizeof nm.std) || get(&r, &slen, 4))
        goto truncated;
    if (slen > r.len - r.off) goto truncated;
    spec_text = xmalloc(slen + 1);
    get(&r, spec_text, slen);
    spec_text[slen] = 0;
    if (get(&r, &alen, 4) || alen > r.len - r.off) goto truncated;
    arch = xmalloc(alen + 1);
    get(&r, arch, alen);
    arch[alen] = 0;
    if (get(&r, &np, 8) || get(&r, &nb, 8)) goto truncated;
    if (in_c < 1 || in_c > 4 || in_h < 1 || in_w < 1 || in_h > 65536 || in_w > 65536 || classes < 1 || nchan > 4) {
        err_set(e, "%s: implausible header (input %ux%ux%u, %u classes)", path, in_c, in_h, in_w, classes);
        goto done;
    }
    Err pe;
    if (spec_parse(&spec, spec_text, 16, 1, &pe) != NASC_OK) {
        err_set(e, "%s: its spec does not parse: %s", path, pe.msg);
        goto done;
    }
    if (alen) spec.arch = xstrdup(arch);
    if (net_build(net, &spec, (int)in_c, (int)in_h, (int)in_w, (int)classes, &pe) != NASC_OK) {
        err_set(e, "%s: its spec does not build: %s", path, pe.msg);
        goto done;
    }
    if (np != net->nparams || nb != net->nbuffers) {
        err_set(e, "%s: holds %llu parameters and %llu statistics but its spec needs %zu and %zu", path,
                (unsigned long long)np, (unsigned long long)nb, net->nparams, net->nbuffers);
        net_free(net);
        goto done;
    }
    if (r.len - r.off != (np + nb) * sizeof(float)) {
        err_set(e, "%s: weight section has %zu bytes, expected %llu", path, r.len - r.off,
                (unsigned long long)((np + nb) * sizeof(float)));
        net_free(net);
        goto done;
    }
    get(&r, net->params, np * sizeof(float));
    get(&r, net->buffers, nb * sizeof(float));
    nm.nchan = (int)nchan;
    if (norm) *norm = nm;
    rc = NASC_OK;
    goto done;
truncated:
    err_set(e, "%s is truncated", path);
done:
    spec_free(&spec);
    free(spec_text);
    free(arch);
    free(data);
    return rc;
}
