/* cifar.c: CIFAR-10 loader (the "binary version").
 *
 * Each batch file is a run of 3073-byte records: one label byte (0..9) then 3072 pixel bytes,
 * the 32x32 red plane, then green, then blue, rows top to bottom. That is already our
 * (C, H, W) layout, so a record's pixels are copied as they are. The training split is
 * data_batch_1.bin .. data_batch_5.bin in that order, the test split test_batch.bin.
 *
 * All files are checked (present, size a positive multiple of 3073) before anything is
 * allocated, then read straight into the dataset's buffers. If DIR itself holds no batch
 * files but DIR/cifar-10-batches-bin does (the layout of the official tarball), that
 * sub-folder is used.
 */
#include "loaders.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>


#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_CLASSES 10
#define CIFAR_MAX_FILES 5

static char *cifar_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* DIR, or DIR/cifar-10-batches-bin when only the latter holds the first file of the split. */
static char *cifar_resolve_dir(const char *dir, const char *first) {
    struct stat st;
    char *p = cifar_path(dir, first);
    int here = stat(p, &st) == 0;
    free(p);
    if (!here) {
        char *sub = cifar_path(dir, "cifar-10-batches-bin");
        char *q = cifar_path(sub, first);
        int there = stat(q, &st) == 0;
        free(q);
        if (there) return sub;
        free(sub);
    }
    return xstrdup(dir);
}

/* Loads the split's batch files from DIR into out (3x32x32, 10 classes). The caller sets
 * out->name. On error out is left empty. */
int cifar10_load_dir(Dataset *out, const char *dir, Split split, Err *e) {
    memset(out, 0, sizeof *out);
    const char *names[CIFAR_MAX_FILES];
    int nfiles = 0;
    if (split == SPLIT_TRAIN) {
        static const char *train[CIFAR_MAX_FILES] = {"data_batch_1.bin", "data_batch_2.bin",
                                                     "data_batch_3.bin", "data_batch_4.bin",
                                                     "data_batch_5.bin"};
        for (int i = 0; i < CIFAR_MAX_FILES; i++) names[nfiles++] = train[i];
    } else {
        names[nfiles++] = "test_batch.bin";
    }
    char *root = cifar_resolve_dir(dir, names[0]);
    char *paths[CIFAR_MAX_FILES] = {0};
    size_t counts[CIFAR_MAX_FILES] = {0};
    size_t total = 0;
    int rc = NASC_ERR;

    for (int i = 0; i < nfiles; i++) {
        paths[i] = cifar_path(root, names[i]);
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            if (errno == ENOENT)
                err_set(e, "missing CIFAR-10 batch file %s", paths[i]);
            else
                err_set(e, "cannot open CIFAR-10 batch file %s: %s", paths[i], strerror(errno));
            goto done;
        }
        if (!S_ISREG(st.st_mode)) {
            err_set(e, "CIFAR-10 batch file %s is not a regular file", paths[i]);
            goto done;
        }
        size_t size = (size_t)st.st_size;
        if (size == 0 || size % CIFAR_RECORD != 0) {
            err_set(e,
                    "CIFAR-10 batch file %s has %zu bytes, not a positive multiple of the "
                    "%d-byte record (1 label + 3072 pixels); is this the binary version?",
                    paths[i], size, CIFAR_RECORD);
            goto done;
        }
        counts[i] = size / CIFAR_RECORD;
        total += counts[i];
    }
    if (total > (size_t)INT_MAX) {
        err_set(e, "CIFAR-10 folder %s holds too many records (%zu)", root, total);
        goto done;
    }

    uint8_t *images = xmalloc(total * CIFAR_PIXELS);
    int32_t *labels = xmalloc(total * sizeof *labels);
    size_t at = 0;
    for (int i = 0; i < nfiles; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            err_set(e, "cannot open CIFAR-10 batch file %s: %s", paths[i], strerror(errno));
            free(images);
            free(labels);
            goto done;
        }
        for (size_t r = 0; r < counts[i]; r++, at++) {
            uint8_t label;
            if (fread(&label, 1, 1, f) != 1 ||
                fread(images + at * CIFAR_PIXELS, 1, CIFAR_PIXELS, f) != CIFAR_PIXELS) {
                err_set(e, "CIFAR-10 batch file %s is truncated at record %zu (it shrank while "
                           "being read?)",
                        paths[i], r);
                fclose(f);
                free(images);
                free(labels);
                goto done;
            }
            if (label >= CIFAR_CLASSES) {
                err_set(e, "CIFAR-10 batch file %s: label %d of record %zu is out of range "
                           "(expected 0..%d)",
                        paths[i], label, r, CIFAR_CLASSES - 1);
                fclose(f);
                free(images);
                free(labels);
                goto done;
            }
            labels[at] = label;
        }
        fclose(f);
    }
    out->n = (int)total;
    out->c = 3;
    out->h = CIFAR_SIDE;
    out->w = CIFAR_SIDE;
    out->classes = CIFAR_CLASSES;
    out->images = images;
    out->labels = labels;
    rc = NASC_OK;
done:
    for (int i = 0; i < nfiles; i++) free(paths[i]);
    free(root);
    return rc;
}
