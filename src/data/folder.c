/* folder.c: image-folder loader (one sub-folder of PNG/JPEG files per class).
 *
 * Layout: DIR/<class>/<image>. Class indices follow the byte order (strcmp) of the class
 * folder names; images within a class are taken in the same order, so a load is
 * deterministic. If DIR has both train/ and test/ sub-folders they are the two splits and
 * must hold the same class names; otherwise DIR itself is the class root for both splits.
 *
 * Hidden entries (names starting with '.') are skipped, as are files whose extension is not
 * .png, .jpg or .jpeg (case-insensitive). Images are decoded with stb_image: 1-channel
 * (gray) and 2-channel (gray + alpha) files become 1 channel, RGB and RGBA files become 3
 * channels (alpha dropped, not composited). Every image must match the first one's width,
 * height and channel count; a mismatch is an error naming the file.
 */
#include "loaders.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stb/stb_image.h>
#include <strings.h>
#include <sys/stat.h>


typedef struct {
    char **v;
    int n, cap;
} Names;

static void names_push(Names *s, const char *name) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = xrealloc(s->v, (size_t)s->cap * sizeof *s->v);
    }
    s->v[s->n++] = xstrdup(name);
}

static void names_free(Names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg");
}

/* Sorted non-hidden entries of DIR: sub-folders into *dirs, regular files into *files (either
 * may be NULL). *any counts every non-hidden entry. */
static int list_dir(const char *dir, Names *dirs, Names *files, int *any, Err *e) {
    DIR *d = opendir(dir);
    if (!d) {
        err_set(e, "cannot open folder %s: %s", dir, strerror(errno));
        return NASC_ERR;
    }
    *any = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.') continue;
        (*any)++;
        char *p = join(dir, ent->d_name);
        struct stat st;
        if (stat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode) && dirs) names_push(dirs, ent->d_name);
            if (S_ISREG(st.st_mode) && files) names_push(files, ent->d_name);
        }
        free(p);
    }
    closedir(d);
    if (dirs && dirs->n > 1) qsort(dirs->v, (size_t)dirs->n, sizeof *dirs->v, cmp_str);
    if (files && files->n > 1) qsort(files->v, (size_t)files->n, sizeof *files->v, cmp_str);
    return NASC_OK;
}

/* The class folder names under root, sorted; an error if there are none. */
static int list_classes(const char *root, Names *classes, Err *e) {
    int any = 0;
    if (list_dir(root, classes, NULL, &any, e) != NASC_OK) return NASC_ERR;
    if (any == 0) {
        err_set(e, "image folder %s is empty (expected one sub-folder of PNG/JPEG images per "
                   "class)",
                root);
        return NASC_ERR;
    }
    if (classes->n == 0) {
        err_set(e, "image folder %s has no class sub-folders (expected one sub-folder of "
                   "PNG/JPEG images per class)",
                root);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* Output channels for a file with `comp` channels: gray(+alpha) -> 1, RGB(A) -> 3. */
static int out_channels(int comp) { return comp <= 2 ? 1 : 3; }

int folder_load_dir(Dataset *out, const char *dir, Split split, Err *e) {
    memset(out, 0, sizeof *out);
    Names classes = {0}, other = {0}, paths = {0};
    int32_t *labels = NULL;
    uint8_t *images = NULL;
    char *root = NULL, *tr = NULL, *te = NULL;
    int rc = NASC_ERR;

    tr = join(dir, "train");
    te = join(dir, "test");
    int has_tr = is_dir(tr), has_te = is_dir(te);
    if (has_tr != has_te) {
        err_set(e, "image folder %s has a %s/ sub-folder but no %s/ (a split layout needs both; "
                   "otherwise rename it)",
                dir, has_tr ? "train" : "test", has_tr ? "test" : "train");
        goto done;
    }
    if (has_tr) {
        root = xstrdup(split == SPLIT_TRAIN ? tr : te);
        const char *other_root = split == SPLIT_TRAIN ? te : tr;
        if (list_classes(root, &classes, e) != NASC_OK ||
            list_classes(other_root, &other, e) != NASC_OK)
            goto done;
        /* Both lists are sorted: the first difference names a class only one side has. */
        const Names *trn = split == SPLIT_TRAIN ? &classes : &other;
        const Names *tst = split == SPLIT_TRAIN ? &other : &classes;
        int i = 0;
        while (i < trn->n && i < tst->n && !strcmp(trn->v[i], tst->v[i])) i++;
        if (i < trn->n || i < tst->n) {
            int only_train = i < trn->n && (i >= tst->n || strcmp(trn->v[i], tst->v[i]) < 0);
            err_set(e, "image folder %s: %s/ has class sub-folder '%s' that %s/ lacks; train/ "
                       "and test/ must hold the same classes",
                    dir, only_train ? "train" : "test", only_train ? trn->v[i] : tst->v[i],
                    only_train ? "test" : "train");
            goto done;
        }
    } else {
        root = xstrdup(dir);
        if (list_classes(root, &classes, e) != NASC_OK) goto done;
    }

    /* Collect the image paths, class by class. */
    int lcap = 0;
    for (int k = 0; k < classes.n; k++) {
        char *cdir = join(root, classes.v[k]);
        Names files = {0};
        int any = 0;
        if (list_dir(cdir, NULL, &files, &any, e) != NASC_OK) {
            free(cdir);
            goto done;
        }
        int before = paths.n;
        for (int i = 0; i < files.n; i++) {
            if (!has_image_ext(files.v[i])) continue;
            if (paths.n == INT_MAX) {
                err_set(e, "image folder %s holds too many images", root);
                names_free(&files);
                free(cdir);
                goto done;
            }
            char *p = join(cdir, files.v[i]);
            names_push(&paths, p);
            free(p);
            if (paths.n > lcap) {
                lcap = paths.cap;
                labels = xrealloc(labels, (size_t)lcap * sizeof *labels);
            }
            labels[paths.n - 1] = k;
        }
        names_free(&files);
        if (paths.n == before) {
            err_set(e, "class folder %s has no PNG/JPEG images (.png, .jpg, .jpeg)", cdir);
            free(cdir);
            goto done;
        }
        free(cdir);
    }

    /* Decode: the first image fixes the shape. */
    int w0 = 0, h0 = 0, c0 = 0;
    size_t chw = 0;
    for (int i = 0; i < paths.n; i++) {
        const char *p = paths.v[i];
        int w, h, comp;
        if (!stbi_info(p, &w, &h, &comp)) {
            err_set(e, "cannot decode image %s: %s", p, stbi_failure_reason());
            goto done;
        }
        int c = out_channels(comp);
        if (i == 0) {
            if ((size_t)w * (size_t)h * 3 > (size_t)INT_MAX) {
                err_set(e, "image %s is too large (%dx%d)", p, w, h);
                goto done;
            }
            w0 = w;
            h0 = h;
            c0 = c;
            chw = (size_t)c0 * (size_t)h0 * (size_t)w0;
            images = xmalloc((size_t)paths.n * chw);
        } else if (w != w0 || h != h0) {
            err_set(e, "image %s has size %dx%d (width x height) but %s has %dx%d; all images "
                       "must have the same size",
                    p, w, h, paths.v[0], w0, h0);
            goto done;
        } else if (c != c0) {
            err_set(e, "image %s has %d channel%s (%s) but %s has %d; all images must have the "
                       "same channel count",
                    p, c, c == 1 ? "" : "s", c == 1 ? "grayscale" : "color", paths.v[0], c0);
            goto done;
        }
        int dw, dh, dcomp;
        uint8_t *px = stbi_load(p, &dw, &dh, &dcomp, c0);
        if (!px) {
            err_set(e, "cannot decode image %s: %s", p, stbi_failure_reason());
            goto done;
        }
        if (dw != w0 || dh != h0) { /* file changed between info and load */
            err_set(e, "image %s changed size while being read", p);
            stbi_image_free(px);
            goto done;
        }
        /* (H, W, C) interleaved -> (C, H, W) planes. */
        uint8_t *dst = images + (size_t)i * chw;
        size_t hw = (size_t)h0 * (size_t)w0;
        for (size_t q = 0; q < hw; q++)
            for (int c = 0; c < c0; c++) dst[(size_t)c * hw + q] = px[q * (size_t)c0 + (size_t)c];
        stbi_image_free(px);
    }

    out->n = paths.n;
    out->c = c0;
    out->h = h0;
    out->w = w0;
    out->classes = classes.n;
    out->images = images;
    out->labels = labels;
    images = NULL;
    labels = NULL;
    rc = NASC_OK;
done:
    free(images);
    free(labels);
    free(root);
    free(tr);
    free(te);
    names_free(&classes);
    names_free(&other);
    names_free(&paths);
    return rc;
}
