/* dataset.c: source dispatch, normalization statistics, seeded splits and mini-batches.
 *
 * dataset_load parses the source string documented in data.h and hands the folder to one
 * of the loaders (idx.c, cifar.c, folder.c). dataset_batch turns raw bytes into normalized
 * floats, with optional torchvision-style augmentation:
 *   - random crop: zero-pad by P on every side (pixel value 0, before normalization), then
 *     take the HxW window at offset (oy, ox) in [0, 2P]^2, i.e. out[y][x] = in[y+oy-P][x+ox-P];
 *   - horizontal flip with probability 1/2, applied after the crop.
 * The random numbers are drawn serially in a fixed order (per image, in batch order: oy, ox
 * if cropping, then the flip bit as rng_below(rng, 2)) before the pixel work, which then runs
 * in parallel over images; the result is the same for any thread count.
 */
#include "loaders.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>


#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef enum { SRC_FASHION_MNIST, SRC_MNIST, SRC_CIFAR10, SRC_FOLDER } SourceKind;

static const struct {
    const char *prefix; /* without the ':' */
    SourceKind kind;
} source_prefixes[] = {
    {"fashion-mnist", SRC_FASHION_MNIST},
    {"mnist", SRC_MNIST},
    {"cifar10", SRC_CIFAR10},
    {"folder", SRC_FOLDER},
};
#define N_PREFIXES ((int)(sizeof source_prefixes / sizeof source_prefixes[0]))

static const char *source_help =
    "expected fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, folder:DIR or DIR";

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int check_dir(const char *dir, const char *what, Err *e) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT)
            err_set(e, "%s folder %s does not exist", what, dir);
        else
            err_set(e, "cannot open %s folder %s: %s", what, dir, strerror(errno));
        return NASC_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        err_set(e, "%s folder %s is not a folder", what, dir);
        return NASC_ERR;
    }
    return NASC_OK;
}

int dataset_load(Dataset *out, const char *source, Split split, Err *e) {
    memset(out, 0, sizeof *out);
    if (!source || !*source) {
        err_set(e, "empty dataset source (%s)", source_help);
        return NASC_ERR;
    }
    SourceKind kind = SRC_FOLDER;
    const char *dir = source;
    int matched = 0;
    if (!strcmp(source, "fashion-mnist")) {
        kind = SRC_FASHION_MNIST;
        dir = FASHION_MNIST_DIR;
        matched = 1;
    }
    for (int i = 0; i < N_PREFIXES && !matched; i++) {
        size_t len = strlen(source_prefixes[i].prefix);
        if (!strncmp(source, source_prefixes[i].prefix, len) && source[len] == ':') {
            kind = source_prefixes[i].kind;
            dir = source + len + 1;
            matched = 1;
            if (!*dir) {
                err_set(e, "dataset source '%s' names no folder after the ':' (%s)", source,
                        source_help);
                return NASC_ERR;
            }
        }
    }
    if (!matched && !is_dir(source)) {
        /* A bare dataset name, or "word:..." with an unknown word, is a mistake rather than a
         * folder that happens to be missing. */
        for (int i = 0; i < N_PREFIXES; i++) {
            if (!strcmp(source, source_prefixes[i].prefix)) {
                err_set(e, "dataset source '%s' needs a folder: use %s:DIR", source, source);
                return NASC_ERR;
            }
        }
        const char *colon = strchr(source, ':');
        if (colon && colon > source) {
            int word = 1;
            for (const char *p = source; p < colon; p++)
                if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') word = 0;
            if (word) {
                err_set(e, "unknown dataset source prefix '%.*s:' in '%s' (%s)",
                        (int)(colon - source), source, source, source_help);
                return NASC_ERR;
            }
        }
    }

    static const char *names[] = {"fashion-mnist", "mnist", "cifar10", "folder"};
    static const char *what[] = {"Fashion-MNIST", "MNIST", "CIFAR-10", "image"};
    if (check_dir(dir, what[kind], e) != NASC_OK) {
        if (!strcmp(source, "fashion-mnist")) {
            size_t len = strlen(e->msg);
            snprintf(e->msg + len, sizeof e->msg - len,
                     " (the default location; use fashion-mnist:DIR for another)");
        }
        return NASC_ERR;
    }
    int rc;
    switch (kind) {
    case SRC_FASHION_MNIST:
    case SRC_MNIST: rc = idx_load_dir(out, dir, split, e); break;
    case SRC_CIFAR10: rc = cifar10_load_dir(out, dir, split, e); break;
    default: rc = folder_load_dir(out, dir, split, e); break;
    }
    if (rc != NASC_OK) {
        dataset_free(out);
        return NASC_ERR;
    }
    snprintf(out->name, sizeof out->name, "%s", names[kind]);
    return NASC_OK;
}

int dataset_shape(const char *source, int *c, int *h, int *w, int *classes, Err *e) {
    if (!strcmp(source, "fashion-mnist") || !strncmp(source, "fashion-mnist:", 14) || !strncmp(source, "mnist:", 6)) {
        *c = 1, *h = 28, *w = 28, *classes = 10;
        return NASC_OK;
    }
    if (!strncmp(source, "cifar10:", 8)) {
        *c = 3, *h = 32, *w = 32, *classes = 10;
        return NASC_OK;
    }
    Dataset d;
    if (dataset_load(&d, source, SPLIT_TEST, e) != NASC_OK) return NASC_ERR;
    *c = d.c, *h = d.h, *w = d.w, *classes = d.classes;
    dataset_free(&d);
    return NASC_OK;
}

void dataset_free(Dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

/* Population mean and std of pixel/255 per channel, exact integer sums. A constant channel
 * (std 0) gets std 1 so normalization never divides by zero. */
static void norm_stats_compute(const Dataset *d, float *mean, float *std) {
    size_t hw = (size_t)d->h * (size_t)d->w;
    for (int c = 0; c < d->c; c++) {
        uint64_t s = 0, s2 = 0;
        for (int i = 0; i < d->n; i++) {
            const uint8_t *p = d->images + ((size_t)i * (size_t)d->c + (size_t)c) * hw;
            for (size_t q = 0; q < hw; q++) {
                s += p[q];
                s2 += (uint64_t)p[q] * p[q];
            }
        }
        double cnt = (double)d->n * (double)hw;
        double m = cnt > 0 ? (double)s / cnt : 0.0;
        double var = cnt > 0 ? (double)s2 / cnt - m * m : 0.0;
        double sd = var > 0 ? sqrt(var) : 0.0;
        mean[c] = (float)(m / 255.0);
        std[c] = sd / 255.0 > 1e-6 ? (float)(sd / 255.0) : 1.0f;
    }
}

void dataset_norm_stats(const Dataset *d, float *mean, float *std) {
    if (!strcmp(d->name, "fashion-mnist") && d->c == 1) {
        mean[0] = 0.2860f;
        std[0] = 0.3530f;
    } else if (!strcmp(d->name, "mnist") && d->c == 1) {
        mean[0] = 0.1307f;
        std[0] = 0.3081f;
    } else if (!strcmp(d->name, "cifar10") && d->c == 3) {
        static const float m[3] = {0.4914f, 0.4822f, 0.4465f}, s[3] = {0.2470f, 0.2435f, 0.2616f};
        memcpy(mean, m, sizeof m);
        memcpy(std, s, sizeof s);
    } else {
        norm_stats_compute(d, mean, std);
    }
}

/* nval is clamped to [0, n]. A seeded Fisher-Yates shuffle picks the validation set; both
 * index lists come out ascending. */
void dataset_split(int n, int nval, uint64_t seed, int **train_idx, int *ntrain, int **val_idx) {
    NASC_ASSERT(n >= 0);
    nval = NASC_MAX(0, NASC_MIN(nval, n));
    int *perm = xmalloc((size_t)n * sizeof *perm);
    for (int i = 0; i < n; i++) perm[i] = i;
    Rng rng;
    rng_seed(&rng, seed);
    rng_shuffle_int(&rng, perm, n);
    uint8_t *is_val = xcalloc((size_t)n, 1);
    for (int i = 0; i < nval; i++) is_val[perm[i]] = 1;
    int *tr = xmalloc((size_t)(n - nval) * sizeof *tr);
    int *va = xmalloc((size_t)nval * sizeof *va);
    int nt = 0, nv = 0;
    for (int i = 0; i < n; i++) {
        if (is_val[i])
            va[nv++] = i;
        else
            tr[nt++] = i;
    }
    free(perm);
    free(is_val);
    *train_idx = tr;
    *val_idx = va;
    *ntrain = nt;
}

void dataset_batch(const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                   const Augment *aug, Rng *rng, float *x, int *y) {
    const int C = d->c, H = d->h, W = d->w;
    const int P = aug ? NASC_MAX(aug->crop_pad, 0) : 0;
    const int flip = aug ? aug->flip : 0;
    NASC_ASSERT(n >= 0 && C >= 1);
    NASC_ASSERT(rng || (P == 0 && !flip));

    /* Normalized value of every byte, per channel. */
    float *lut = xmalloc((size_t)C * 256 * sizeof *lut); /* (C, 256) */
    for (int c = 0; c < C; c++)
        for (int p = 0; p < 256; p++) lut[c * 256 + p] = ((float)p / 255.0f - mean[c]) / std[c];

    /* Per image: row shift, column shift (both in [-P, P]) and flip, drawn serially. */
    int *aug_par = xmalloc((size_t)NASC_MAX(n, 1) * 3 * sizeof *aug_par);
    for (int i = 0; i < n; i++) {
        NASC_ASSERT(idx[i] >= 0 && idx[i] < d->n);
        int dy = 0, dx = 0, f = 0;
        if (P > 0) {
            dy = (int)rng_below(rng, (uint32_t)(2 * P + 1)) - P;
            dx = (int)rng_below(rng, (uint32_t)(2 * P + 1)) - P;
        }
        if (flip) f = (int)rng_below(rng, 2);
        aug_par[3 * i] = dy;
        aug_par[3 * i + 1] = dx;
        aug_par[3 * i + 2] = f;
        y[i] = d->labels[idx[i]];
    }

    const size_t hw = (size_t)H * (size_t)W, chw = (size_t)C * hw;
    const int par = n > 1 && (size_t)n * chw >= 32768; /* threads only pay off on real batches */
#pragma omp parallel for schedule(static) num_threads(threads_get()) if (par)
    for (int i = 0; i < n; i++) {
        const uint8_t *src = d->images + (size_t)idx[i] * chw;
        float *dst = x + (size_t)i * chw;
        int dy = aug_par[3 * i], dx = aug_par[3 * i + 1], f = aug_par[3 * i + 2];
        for (int c = 0; c < C; c++) {
            const uint8_t *s = src + (size_t)c * hw;
            float *o = dst + (size_t)c * hw;
            const float *l = lut + (size_t)c * 256;
            if (dy == 0 && dx == 0 && !f) {
                for (size_t q = 0; q < hw; q++) o[q] = l[s[q]];
                continue;
            }
            for (int yy = 0; yy < H; yy++) {
                int sy = yy + dy;
                float *orow = o + (size_t)yy * W;
                if (sy < 0 || sy >= H) {
                    for (int xx = 0; xx < W; xx++) orow[xx] = l[0];
                    continue;
                }
                const uint8_t *srow = s + (size_t)sy * W;
                for (int xx = 0; xx < W; xx++) {
                    int cx = f ? W - 1 - xx : xx; /* column of the cropped image */
                    int sx = cx + dx;
                    orow[xx] = (sx >= 0 && sx < W) ? l[srow[sx]] : l[0];
                }
            }
        }
    }
    free(aug_par);
    free(lut);
}
