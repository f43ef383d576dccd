/* idx.c: MNIST / Fashion-MNIST loader (IDX format, gzip-compressed or plain).
 *
 * An IDX file is a 4-byte big-endian magic (0x00000803 for 8-bit images with 3 dimensions,
 * 0x00000801 for 8-bit labels with 1 dimension), one big-endian uint32 per dimension, then
 * the bytes. Both MNIST and Fashion-MNIST use the same four file names; each may carry a
 * .gz suffix (preferred when both exist). zlib's gzread reads plain files transparently,
 * so one code path serves both.
 *
 * The pixel buffer grows as bytes arrive instead of being sized from the header, so a
 * corrupt header claiming terabytes gives a "truncated" error rather than an out-of-memory
 * exit. Every failure fills the Err with the file's path and the problem.
 */
#include "loaders.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <zlib.h>


#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_CLASSES 10
#define IDX_MAX_SIDE 32768 /* rows and columns per image, a sanity bound */

static int is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Path of DIR/NAME.gz if it exists, else DIR/NAME if it exists, else NULL with an error. */
static char *idx_find(const char *dir, const char *name, Err *e) {
    size_t n = strlen(dir) + strlen(name) + 8;
    char *gz = xmalloc(n), *plain = xmalloc(n);
    snprintf(gz, n, "%s/%s.gz", dir, name);
    snprintf(plain, n, "%s/%s", dir, name);
    char *found = NULL;
    if (is_regular_file(gz)) {
        found = gz;
        free(plain);
    } else if (is_regular_file(plain)) {
        found = plain;
        free(gz);
    } else {
        err_set(e, "missing file: neither %s nor %s exists", gz, plain);
        free(gz);
        free(plain);
    }
    return found;
}

/* Read up to n bytes; returns the count read (< n at end of data) or -1 on a decode error. */
static long long gz_read_upto(gzFile f, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = NASC_MIN(n - got, (size_t)1 << 20);
        int r = gzread(f, buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

static const char *gz_msg(gzFile f) {
    int code;
    const char *m = gzerror(f, &code);
    return (m && *m) ? m : "read error";
}

/* Reads one IDX file with the expected magic (ndim = magic & 0xff dimensions). On success
 * *data (malloc'd, caller frees) holds the product of dims bytes. */
static int idx_read(const char *path, uint32_t magic_want, int dims[3], uint8_t **data, Err *e) {
    *data = NULL;
    int ndim = (int)(magic_want & 0xff);
    const char *what = ndim == 3 ? "image" : "label";
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        err_set(e, "cannot open %s: %s", path, errno ? strerror(errno) : "zlib error");
        return NASC_ERR;
    }
    gzbuffer(f, 1 << 17);

    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndim;
    long long r = gz_read_upto(f, hdr, hlen);
    if (r < 0) {
        err_set(e, "cannot decompress %s: %s", path, gz_msg(f));
        gzclose(f);
        return NASC_ERR;
    }
    if (r < 4) {
        err_set(e, "%s is truncated: %lld bytes, too short for an IDX header", path, r);
        gzclose(f);
        return NASC_ERR;
    }
    uint32_t magic = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) |
                     hdr[3];
    if (magic != magic_want) {
        const char *hint = magic == IDX_MAGIC_LABELS   ? " (this looks like a label file)"
                           : magic == IDX_MAGIC_IMAGES ? " (this looks like an image file)"
                                                       : "";
        err_set(e, "%s: wrong magic 0x%08x, expected 0x%08x for an IDX %s file%s", path, magic,
                magic_want, what, hint);
        gzclose(f);
        return NASC_ERR;
    }
    if (r < (long long)hlen) {
        err_set(e, "%s is truncated: the IDX header needs %zu bytes, the file holds %lld", path,
                hlen, r);
        gzclose(f);
        return NASC_ERR;
    }
    size_t total = 1;
    for (int d = 0; d < ndim; d++) {
        const uint8_t *p = hdr + 4 + 4 * d;
        uint32_t v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        uint32_t limit = d == 0 ? (uint32_t)INT_MAX : IDX_MAX_SIDE;
        if (v == 0 || v > limit) {
            err_set(e, "%s: dimension %d of the IDX header is %u, expected 1..%u", path, d, v,
                    limit);
            gzclose(f);
            return NASC_ERR;
        }
        dims[d] = (int)v;
        total *= v; /* < 2^31 * 2^15 * 2^15: no overflow on 64-bit size_t */
    }

    /* Grow with the data actually present. */
    size_t cap = NASC_MIN(total, (size_t)1 << 24), len = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        r = gz_read_upto(f, buf + len, cap - len);
        if (r < 0) {
            err_set(e, "cannot decompress %s: %s", path, gz_msg(f));
            free(buf);
            gzclose(f);
            return NASC_ERR;
        }
        len += (size_t)r;
        if (len < cap || cap == total) break;
        cap = NASC_MIN(total, cap * 2);
        buf = xrealloc(buf, cap);
    }
    if (len < total) {
        /* zlib may drop the last partial chunk of a cut gzip stream: the count is exact only
         * for plain files. */
        char got[64];
        if (gzdirect(f))
            snprintf(got, sizeof got, "after %zu bytes", len);
        else
            snprintf(got, sizeof got, "early (gzip stream cut)");
        if (ndim == 3)
            err_set(e,
                    "%s is truncated: the header declares %d images of %dx%d (%zu bytes) but the "
                    "data ends %s",
                    path, dims[0], dims[1], dims[2], total, got);
        else
            err_set(e, "%s is truncated: the header declares %d labels but the data ends %s",
                    path, dims[0], got);
        free(buf);
        gzclose(f);
        return NASC_ERR;
    }
    uint8_t extra;
    r = gz_read_upto(f, &extra, 1);
    if (r != 0) {
        if (r < 0)
            err_set(e, "cannot decompress %s: %s", path, gz_msg(f));
        else
            err_set(e, "%s has extra bytes after the %zu %s bytes its IDX header declares", path,
                    total, what);
        free(buf);
        gzclose(f);
        return NASC_ERR;
    }
    int zerr = Z_OK;
    gzerror(f, &zerr);
    if (zerr == Z_BUF_ERROR) { /* all data arrived but the gzip trailer is cut off */
        err_set(e, "%s is truncated: the gzip stream ends early", path);
        free(buf);
        gzclose(f);
        return NASC_ERR;
    }
    gzclose(f);
    *data = buf;
    return NASC_OK;
}

/* Loads DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] into out (classes = 10).
 * The caller sets out->name. On error out is left empty. */
int idx_load_dir(Dataset *out, const char *dir, Split split, Err *e) {
    memset(out, 0, sizeof *out);
    const char *pre = split == SPLIT_TRAIN ? "train" : "t10k";
    char img_name[64], lbl_name[64];
    snprintf(img_name, sizeof img_name, "%s-images-idx3-ubyte", pre);
    snprintf(lbl_name, sizeof lbl_name, "%s-labels-idx1-ubyte", pre);

    char *img_path = idx_find(dir, img_name, e);
    if (!img_path) return NASC_ERR;
    char *lbl_path = idx_find(dir, lbl_name, e);
    if (!lbl_path) {
        free(img_path);
        return NASC_ERR;
    }
    int idims[3] = {0}, ldims[3] = {0};
    uint8_t *pix = NULL, *lab = NULL;
    int rc = NASC_ERR;
    if (idx_read(img_path, IDX_MAGIC_IMAGES, idims, &pix, e) != NASC_OK) goto done;
    if (idx_read(lbl_path, IDX_MAGIC_LABELS, ldims, &lab, e) != NASC_OK) goto done;
    if (ldims[0] != idims[0]) {
        err_set(e, "label count %d in %s does not match image count %d in %s", ldims[0], lbl_path,
                idims[0], img_path);
        goto done;
    }
    int n = idims[0];
    int32_t *labels = xmalloc((size_t)n * sizeof *labels);
    for (int i = 0; i < n; i++) {
        if (lab[i] >= IDX_CLASSES) {
            err_set(e, "%s: label %d of item %d is out of range (expected 0..%d)", lbl_path,
                    lab[i], i, IDX_CLASSES - 1);
            free(labels);
            goto done;
        }
        labels[i] = lab[i];
    }
    out->n = n;
    out->c = 1;
    out->h = idims[1];
    out->w = idims[2];
    out->classes = IDX_CLASSES;
    out->images = pix;
    out->labels = labels;
    pix = NULL;
    rc = NASC_OK;
done:
    free(pix);
    free(lab);
    free(img_path);
    free(lbl_path);
    return rc;
}
