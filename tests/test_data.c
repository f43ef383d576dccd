/* test_data.c: the dataset loaders, splits and mini-batches.
 *
 * Builds small IDX (gzip and plain), CIFAR-10 and image-folder datasets in a temporary
 * folder, checks that pixels and labels round-trip exactly, that every malformed input gives
 * NASC_ERR with a message naming the problem, that splits are deterministic, disjoint and
 * complete, and that batches are normalized and augmented as documented (one case computed
 * by hand). Loads the real Fashion-MNIST test split when it is installed, else skips it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../src/data/data.h"
#include "check.h"

#include <ftw.h>
#include <stb/stb_image_write.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmp_root[] = "/tmp/nasc_test_data_XXXXXX";

/* ------------------------------------------------------------------ file helpers */
static char *tpath(const char *rel) {
    static char buf[8][1024];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", tmp_root, rel);
    return b;
}

/* mkdir -p of a path relative to tmp_root. */
static void mkdirs(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", tmp_root, rel);
    for (char *s = p + strlen(tmp_root) + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    }
    mkdir(p, 0755);
}

static void write_plain(const char *rel, const void *buf, size_t n) {
    FILE *f = fopen(tpath(rel), "wb");
    if (!f) nasc_die("test: cannot create %s", tpath(rel));
    if (n && fwrite(buf, 1, n, f) != n) nasc_die("test: cannot write %s", tpath(rel));
    fclose(f);
}

static void write_gz(const char *rel, const void *buf, size_t n) {
    gzFile f = gzopen(tpath(rel), "wb");
    if (!f) nasc_die("test: cannot create %s", tpath(rel));
    if (gzwrite(f, buf, (unsigned)n) != (int)n) nasc_die("test: cannot write %s", tpath(rel));
    gzclose(f);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX image file (magic 0x803 unless overridden) in a malloc'd buffer. */
static uint8_t *idx_images(uint32_t magic, int n, int h, int w, const uint8_t *pix, size_t *len) {
    *len = 16 + (size_t)n * h * w;
    uint8_t *b = xmalloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, (uint32_t)n);
    put_be32(b + 8, (uint32_t)h);
    put_be32(b + 12, (uint32_t)w);
    memcpy(b + 16, pix, (size_t)n * h * w);
    return b;
}

static uint8_t *idx_labels(uint32_t magic, int n, const uint8_t *lab, size_t *len) {
    *len = 8 + (size_t)n;
    uint8_t *b = xmalloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, (uint32_t)n);
    memcpy(b + 8, lab, (size_t)n);
    return b;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int msg_has(const Err *e, const char *a, const char *b) {
    return strstr(e->msg, a) != NULL && (!b || strstr(e->msg, b) != NULL);
}

/* Expect dataset_load(source) to fail with a message holding both words (b may be NULL). */
static void expect_fail(const char *source, Split split, const char *a, const char *b) {
    Dataset d;
    Err e = {{0}};
    memset(&d, 0x5a, sizeof d);
    int rc = dataset_load(&d, source, split, &e);
    if (getenv("NASC_TEST_VERBOSE")) printf("  expected error: %s\n", e.msg);
    CHECK(rc == NASC_ERR, "%s: load should fail", source);
    CHECK(msg_has(&e, a, b), "%s: message \"%s\" should contain \"%s\"%s%s", source, e.msg, a,
          b ? " and " : "", b ? b : "");
    CHECK(d.images == NULL && d.labels == NULL && d.n == 0, "%s: failed load leaves data", source);
    dataset_free(&d);
}

/* ------------------------------------------------------------------ IDX */
#define IN 5
#define IH 4
#define IW 3
static uint8_t idx_pix(int i, int y, int x) {
    if (i == 0 && y == 0 && x == 0) return 0;
    if (i == 1 && y == 0 && x == 0) return 255;
    return (uint8_t)((i * 53 + y * 11 + x * 5 + 7) & 255);
}

static void test_idx(void) {
    uint8_t pix[IN * IH * IW], lab[IN] = {3, 0, 9, 1, 7}, tlab[3] = {4, 4, 2};
    for (int i = 0; i < IN; i++)
        for (int y = 0; y < IH; y++)
            for (int x = 0; x < IW; x++) pix[(i * IH + y) * IW + x] = idx_pix(i, y, x);
    size_t li, ll;
    uint8_t *bi = idx_images(0x803, IN, IH, IW, pix, &li);
    uint8_t *bl = idx_labels(0x801, IN, lab, &ll);
    uint8_t *ti, *tl;
    size_t lti, ltl;
    ti = idx_images(0x803, 3, IH, IW, pix + IH * IW, &lti); /* images 1..3 */
    tl = idx_labels(0x801, 3, tlab, &ltl);

    /* Train split gzip, test split plain; a broken plain train file beside the .gz is ignored. */
    mkdirs("idx");
    write_gz("idx/train-images-idx3-ubyte.gz", bi, li);
    write_gz("idx/train-labels-idx1-ubyte.gz", bl, ll);
    write_plain("idx/train-images-idx3-ubyte", "junk", 4);
    write_plain("idx/t10k-images-idx3-ubyte", ti, lti);
    write_plain("idx/t10k-labels-idx1-ubyte", tl, ltl);

    char src[1200];
    Dataset d;
    Err e = {{0}};
    snprintf(src, sizeof src, "mnist:%s", tpath("idx"));
    int rc = dataset_load(&d, src, SPLIT_TRAIN, &e);
    CHECK(rc == NASC_OK, "idx train load: %s", e.msg);
    if (rc == NASC_OK) {
        CHECK(d.n == IN && d.c == 1 && d.h == IH && d.w == IW && d.classes == 10,
              "idx shape %d %d %d %d classes %d", d.n, d.c, d.h, d.w, d.classes);
        CHECK(!strcmp(d.name, "mnist"), "idx name %s", d.name);
        CHECK(!memcmp(d.images, pix, sizeof pix), "idx pixels round-trip");
        int ok = 1;
        for (int i = 0; i < IN; i++) ok &= d.labels[i] == lab[i];
        CHECK(ok, "idx labels round-trip");
        float m, s;
        dataset_norm_stats(&d, &m, &s);
        CHECK(m == 0.1307f && s == 0.3081f, "mnist norm stats %g %g", m, s);
    }
    dataset_free(&d);
    CHECK(d.images == NULL && d.n == 0, "dataset_free clears");
    dataset_free(&d); /* twice is harmless */

    snprintf(src, sizeof src, "fashion-mnist:%s", tpath("idx"));
    rc = dataset_load(&d, src, SPLIT_TEST, &e);
    CHECK(rc == NASC_OK, "idx test load: %s", e.msg);
    if (rc == NASC_OK) {
        CHECK(d.n == 3 && d.h == IH && d.w == IW, "idx test shape");
        CHECK(!strcmp(d.name, "fashion-mnist"), "idx test name %s", d.name);
        CHECK(!memcmp(d.images, pix + IH * IW, 3 * IH * IW), "idx test pixels round-trip");
        CHECK(d.labels[0] == 4 && d.labels[1] == 4 && d.labels[2] == 2, "idx test labels");
        float m, s;
        dataset_norm_stats(&d, &m, &s);
        CHECK(m == 0.2860f && s == 0.3530f, "fashion-mnist norm stats %g %g", m, s);
    }
    dataset_free(&d);

    /* Missing image file. */
    mkdirs("idx_missing");
    write_gz("idx_missing/train-labels-idx1-ubyte.gz", bl, ll);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_missing"));
    expect_fail(src, SPLIT_TRAIN, "missing", "train-images-idx3-ubyte");
    expect_fail(src, SPLIT_TEST, "missing", "t10k-images-idx3-ubyte");

    /* Wrong magic (a label magic in the image file). */
    size_t lw;
    uint8_t *bw = idx_images(0x801, IN, IH, IW, pix, &lw);
    mkdirs("idx_magic");
    write_gz("idx_magic/train-images-idx3-ubyte.gz", bw, lw);
    write_gz("idx_magic/train-labels-idx1-ubyte.gz", bl, ll);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_magic"));
    expect_fail(src, SPLIT_TRAIN, "wrong magic", "train-images-idx3-ubyte.gz");
    free(bw);

    /* Truncated image file: plain, gzip with its data cut, gzip with only its trailer cut. */
    mkdirs("idx_trunc");
    write_plain("idx_trunc/train-images-idx3-ubyte", bi, li - 7);
    write_plain("idx_trunc/train-labels-idx1-ubyte", bl, ll);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_trunc"));
    expect_fail(src, SPLIT_TRAIN, "truncated", "train-images-idx3-ubyte");
    write_plain("idx_trunc/train-images-idx3-ubyte", bi, 10); /* inside the header */
    expect_fail(src, SPLIT_TRAIN, "truncated", "train-images-idx3-ubyte");
    {
        write_gz("idx_trunc/train-images-idx3-ubyte.gz", bi, li);
        size_t gzn;
        Err e2 = {{0}};
        uint8_t *gzb = file_read_all(tpath("idx_trunc/train-images-idx3-ubyte.gz"), &gzn, &e2);
        CHECK(gzb != NULL, "reread gz: %s", e2.msg);
        if (gzb) {
            write_plain("idx_trunc/train-images-idx3-ubyte.gz", gzb, gzn / 2);
            expect_fail(src, SPLIT_TRAIN, "truncated", "train-images-idx3-ubyte.gz");
            write_plain("idx_trunc/train-images-idx3-ubyte.gz", gzb, gzn - 4);
            expect_fail(src, SPLIT_TRAIN, "truncated", "train-images-idx3-ubyte.gz");
            free(gzb);
        }
    }

    /* Extra bytes after the declared images. */
    mkdirs("idx_extra");
    {
        uint8_t *big = xmalloc(li + 3);
        memcpy(big, bi, li);
        memset(big + li, 1, 3);
        write_plain("idx_extra/train-images-idx3-ubyte", big, li + 3);
        free(big);
    }
    write_plain("idx_extra/train-labels-idx1-ubyte", bl, ll);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_extra"));
    expect_fail(src, SPLIT_TRAIN, "extra bytes", "train-images-idx3-ubyte");

    /* Label and image counts disagree. */
    size_t l4;
    uint8_t *b4 = idx_labels(0x801, IN - 1, lab, &l4);
    mkdirs("idx_count");
    write_gz("idx_count/train-images-idx3-ubyte.gz", bi, li);
    write_gz("idx_count/train-labels-idx1-ubyte.gz", b4, l4);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_count"));
    expect_fail(src, SPLIT_TRAIN, "label count 4", "does not match image count 5");
    free(b4);

    /* Label out of range. */
    uint8_t badlab[IN] = {3, 0, 10, 1, 7};
    size_t lb;
    uint8_t *bb = idx_labels(0x801, IN, badlab, &lb);
    mkdirs("idx_label");
    write_gz("idx_label/train-images-idx3-ubyte.gz", bi, li);
    write_gz("idx_label/train-labels-idx1-ubyte.gz", bb, lb);
    snprintf(src, sizeof src, "mnist:%s", tpath("idx_label"));
    expect_fail(src, SPLIT_TRAIN, "out of range", "train-labels-idx1-ubyte.gz");
    free(bb);

    free(bi);
    free(bl);
    free(ti);
    free(tl);
}

/* ------------------------------------------------------------------ CIFAR-10 */
#define CREC 3073
static uint8_t cifar_pix(int g, int c, int y, int x) {
    return (uint8_t)((g * 31 + c * 80 + y * 3 + x) & 255);
}
static int cifar_label(int g) { return (g * 7 + 3) % 10; }

/* Records g0..g0+n-1 written to rel. */
static void write_cifar(const char *rel, int g0, int n) {
    uint8_t *b = xmalloc((size_t)n * CREC);
    for (int r = 0; r < n; r++) {
        uint8_t *p = b + (size_t)r * CREC;
        p[0] = (uint8_t)cifar_label(g0 + r);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    p[1 + c * 1024 + y * 32 + x] = cifar_pix(g0 + r, c, y, x);
    }
    write_plain(rel, b, (size_t)n * CREC);
    free(b);
}

static int cifar_matches(const Dataset *d, int g0) {
    int ok = 1;
    for (int i = 0; i < d->n; i++) {
        ok &= d->labels[i] == cifar_label(g0 + i);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    ok &= d->images[(size_t)i * 3072 + c * 1024 + y * 32 + x] ==
                          cifar_pix(g0 + i, c, y, x);
    }
    return ok;
}

static void make_cifar(const char *dir) {
    static const int counts[5] = {2, 1, 3, 1, 2};
    char rel[256];
    mkdirs(dir);
    int g = 0;
    for (int b = 0; b < 5; b++) {
        snprintf(rel, sizeof rel, "%s/data_batch_%d.bin", dir, b + 1);
        write_cifar(rel, g, counts[b]);
        g += counts[b];
    }
    snprintf(rel, sizeof rel, "%s/test_batch.bin", dir);
    write_cifar(rel, 100, 3);
}

static void test_cifar(void) {
    make_cifar("cifar");
    char src[1200];
    Dataset d;
    Err e = {{0}};
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar"));
    int rc = dataset_load(&d, src, SPLIT_TRAIN, &e);
    CHECK(rc == NASC_OK, "cifar train load: %s", e.msg);
    if (rc == NASC_OK) {
        CHECK(d.n == 9 && d.c == 3 && d.h == 32 && d.w == 32 && d.classes == 10,
              "cifar shape %d %d %d %d", d.n, d.c, d.h, d.w);
        CHECK(!strcmp(d.name, "cifar10"), "cifar name %s", d.name);
        CHECK(cifar_matches(&d, 0), "cifar train pixels (R, G, B planes) and labels, batch order");
        /* Spot check by hand: record 4 (batch 3), green plane, row 2, column 5. */
        CHECK(d.images[4 * 3072 + 1 * 1024 + 2 * 32 + 5] == (4 * 31 + 80 + 6 + 5) % 256,
              "cifar spot pixel");
        CHECK(d.labels[4] == (4 * 7 + 3) % 10, "cifar spot label");
        float m[3], s[3];
        dataset_norm_stats(&d, m, s);
        CHECK(m[0] == 0.4914f && m[1] == 0.4822f && m[2] == 0.4465f && s[0] == 0.2470f &&
                  s[1] == 0.2435f && s[2] == 0.2616f,
              "cifar10 norm stats");
    }
    dataset_free(&d);
    rc = dataset_load(&d, src, SPLIT_TEST, &e);
    CHECK(rc == NASC_OK, "cifar test load: %s", e.msg);
    if (rc == NASC_OK) CHECK(d.n == 3 && cifar_matches(&d, 100), "cifar test pixels and labels");
    dataset_free(&d);

    /* The official tarball's sub-folder is found. */
    make_cifar("cifar_tar/cifar-10-batches-bin");
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar_tar"));
    rc = dataset_load(&d, src, SPLIT_TEST, &e);
    CHECK(rc == NASC_OK && d.n == 3, "cifar-10-batches-bin sub-folder: %s", e.msg);
    dataset_free(&d);

    /* Missing batch. */
    make_cifar("cifar_missing");
    unlink(tpath("cifar_missing/data_batch_3.bin"));
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar_missing"));
    expect_fail(src, SPLIT_TRAIN, "missing", "data_batch_3.bin");
    rc = dataset_load(&d, src, SPLIT_TEST, &e);
    CHECK(rc == NASC_OK, "cifar test split does not need the train batches: %s", e.msg);
    dataset_free(&d);

    /* Wrong size. */
    make_cifar("cifar_size");
    {
        uint8_t junk[2 * CREC + 5];
        memset(junk, 1, sizeof junk);
        write_plain("cifar_size/data_batch_2.bin", junk, sizeof junk);
        write_plain("cifar_size/test_batch.bin", junk, 0);
    }
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar_size"));
    expect_fail(src, SPLIT_TRAIN, "multiple of", "data_batch_2.bin");
    expect_fail(src, SPLIT_TEST, "multiple of", "test_batch.bin");

    /* Label out of range. */
    make_cifar("cifar_label");
    {
        uint8_t rec[CREC];
        memset(rec, 9, sizeof rec);
        rec[0] = 10;
        write_plain("cifar_label/test_batch.bin", rec, sizeof rec);
    }
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar_label"));
    expect_fail(src, SPLIT_TEST, "out of range", "test_batch.bin");
}

/* ------------------------------------------------------------------ image folders */
#define FW 5
#define FH 4
static uint8_t folder_pix(int seed, int c, int y, int x) {
    return (uint8_t)((seed * 40 + c * 70 + y * 13 + x * 29) & 255);
}

/* A PNG with `comp` channels (1..4) whose channel c at (y, x) is folder_pix(seed, c, y, x). */
static void write_png(const char *rel, int seed, int w, int h, int comp) {
    uint8_t *b = xmalloc((size_t)w * h * comp);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comp; c++) b[(y * w + x) * comp + c] = folder_pix(seed, c, y, x);
    if (!stbi_write_png(tpath(rel), w, h, comp, b, w * comp)) nasc_die("test: png %s", rel);
    free(b);
}

/* A constant-color RGB JPEG. */
static void write_jpg(const char *rel, int w, int h, const uint8_t rgb[3]) {
    uint8_t *b = xmalloc((size_t)w * h * 3);
    for (int q = 0; q < w * h; q++) memcpy(b + 3 * q, rgb, 3);
    if (!stbi_write_jpg(tpath(rel), w, h, 3, b, 100)) nasc_die("test: jpg %s", rel);
    free(b);
}

/* The decoded image i of d equals write_png(seed)'s first `c` channels. */
static int folder_matches(const Dataset *d, int i, int seed) {
    int ok = 1;
    for (int c = 0; c < d->c; c++)
        for (int y = 0; y < d->h; y++)
            for (int x = 0; x < d->w; x++)
                ok &= d->images[(((size_t)i * d->c + c) * d->h + y) * d->w + x] ==
                      folder_pix(seed, c, y, x);
    return ok;
}

static void test_folder(void) {
    static const uint8_t jrgb[3] = {200, 100, 50};
    /* Split layout: classes ant < cat < dog; hidden entries and non-images skipped. */
    mkdirs("tt/train/ant");
    mkdirs("tt/train/cat");
    mkdirs("tt/train/dog");
    mkdirs("tt/train/.cache");
    mkdirs("tt/test/ant");
    mkdirs("tt/test/cat");
    mkdirs("tt/test/dog");
    write_png("tt/train/ant/a.png", 1, FW, FH, 3);
    write_jpg("tt/train/ant/b.jpg", FW, FH, jrgb);
    write_plain("tt/train/ant/.hidden.png", "not a png", 9);
    write_plain("tt/train/ant/notes.txt", "hello", 5);
    write_png("tt/train/cat/c.PNG", 2, FW, FH, 4); /* RGBA -> RGB */
    write_png("tt/train/dog/d2.png", 4, FW, FH, 3);
    write_png("tt/train/dog/d1.png", 3, FW, FH, 3);
    write_png("tt/train/.cache/x.png", 9, 2, 2, 1);
    write_png("tt/test/ant/t1.png", 5, FW, FH, 3);
    write_png("tt/test/cat/t2.png", 6, FW, FH, 3);
    write_jpg("tt/test/dog/t3.jpeg", FW, FH, jrgb);

    char src[1200];
    Dataset d;
    Err e = {{0}};
    snprintf(src, sizeof src, "%s", tpath("tt"));
    int rc = dataset_load(&d, src, SPLIT_TRAIN, &e);
    CHECK(rc == NASC_OK, "folder train load: %s", e.msg);
    if (rc == NASC_OK) {
        CHECK(d.n == 5 && d.c == 3 && d.h == FH && d.w == FW && d.classes == 3,
              "folder shape %d %d %d %d classes %d", d.n, d.c, d.h, d.w, d.classes);
        CHECK(!strcmp(d.name, "folder"), "folder name %s", d.name);
        CHECK(d.labels[0] == 0 && d.labels[1] == 0 && d.labels[2] == 1 && d.labels[3] == 2 &&
                  d.labels[4] == 2,
              "folder labels follow sorted class names");
        CHECK(folder_matches(&d, 0, 1), "ant/a.png pixels");
        CHECK(folder_matches(&d, 2, 2), "cat/c.PNG pixels (alpha dropped)");
        CHECK(folder_matches(&d, 3, 3) && folder_matches(&d, 4, 4), "dog files in name order");
        int ok = 1;
        for (int c = 0; c < 3; c++)
            for (int q = 0; q < FH * FW; q++) {
                int v = d.images[(size_t)1 * 3 * FH * FW + (size_t)c * FH * FW + q];
                ok &= abs(v - jrgb[c]) <= 4;
            }
        CHECK(ok, "ant/b.jpg decodes to its color (within JPEG rounding)");

        /* Per-channel statistics computed from the images. */
        float m[3], s[3];
        dataset_norm_stats(&d, m, s);
        for (int c = 0; c < 3; c++) {
            double s1 = 0, s2 = 0, cnt = (double)d.n * FH * FW;
            for (int i = 0; i < d.n; i++)
                for (int q = 0; q < FH * FW; q++) {
                    double v = d.images[((size_t)i * 3 + c) * FH * FW + q] / 255.0;
                    s1 += v;
                    s2 += v * v;
                }
            double mean = s1 / cnt, sd = sqrt(s2 / cnt - mean * mean);
            CHECK_CLOSE(m[c], mean, 1e-6, 0, "folder mean");
            CHECK_CLOSE(s[c], sd, 1e-6, 0, "folder std");
        }
    }
    dataset_free(&d);

    rc = dataset_load(&d, src, SPLIT_TEST, &e);
    CHECK(rc == NASC_OK, "folder test load: %s", e.msg);
    if (rc == NASC_OK) {
        CHECK(d.n == 3 && d.classes == 3 && d.c == 3, "folder test shape");
        CHECK(d.labels[0] == 0 && d.labels[1] == 1 && d.labels[2] == 2, "folder test labels");
        CHECK(folder_matches(&d, 0, 5) && folder_matches(&d, 1, 6), "folder test pixels");
    }
    dataset_free(&d);

    /* Flat grayscale layout, with the folder: prefix; gray + alpha stays 1 channel. */
    mkdirs("flat/b_cls");
    mkdirs("flat/a_cls");
    write_png("flat/b_cls/x.png", 7, 3, 2, 1);
    write_png("flat/a_cls/y.png", 8, 3, 2, 2);
    write_png("flat/a_cls/z.png", 9, 3, 2, 1);
    snprintf(src, sizeof src, "folder:%s", tpath("flat"));
    for (int sp = 0; sp < 2; sp++) {
        rc = dataset_load(&d, src, sp ? SPLIT_TEST : SPLIT_TRAIN, &e);
        CHECK(rc == NASC_OK, "flat folder load: %s", e.msg);
        if (rc == NASC_OK) {
            CHECK(d.n == 3 && d.c == 1 && d.h == 2 && d.w == 3 && d.classes == 2,
                  "flat shape %d %d %d %d", d.n, d.c, d.h, d.w);
            CHECK(d.labels[0] == 0 && d.labels[1] == 0 && d.labels[2] == 1, "flat labels");
            CHECK(folder_matches(&d, 0, 8) && folder_matches(&d, 1, 9) &&
                      folder_matches(&d, 2, 7),
                  "flat pixels");
        }
        dataset_free(&d);
    }

    /* Errors. */
    mkdirs("f_size/cls");
    write_png("f_size/cls/a.png", 1, FW, FH, 3);
    write_png("f_size/cls/b.png", 1, FW - 1, FH, 3);
    expect_fail(tpath("f_size"), SPLIT_TRAIN, "size", "b.png");

    mkdirs("f_chan/cls");
    write_png("f_chan/cls/a.png", 1, FW, FH, 3);
    write_png("f_chan/cls/b.png", 1, FW, FH, 1);
    expect_fail(tpath("f_chan"), SPLIT_TRAIN, "channel", "b.png");

    mkdirs("f_empty");
    expect_fail(tpath("f_empty"), SPLIT_TRAIN, "empty", "f_empty");

    mkdirs("f_noclass");
    write_png("f_noclass/a.png", 1, FW, FH, 3);
    expect_fail(tpath("f_noclass"), SPLIT_TRAIN, "no class sub-folders", "f_noclass");

    mkdirs("f_noimg/cls1");
    mkdirs("f_noimg/cls2");
    write_png("f_noimg/cls1/a.png", 1, FW, FH, 3);
    write_plain("f_noimg/cls2/readme.txt", "x", 1);
    expect_fail(tpath("f_noimg"), SPLIT_TRAIN, "no PNG/JPEG images", "cls2");

    mkdirs("f_bad/cls");
    write_png("f_bad/cls/a.png", 1, FW, FH, 3);
    write_plain("f_bad/cls/b.png", "definitely not a png", 20);
    expect_fail(tpath("f_bad"), SPLIT_TRAIN, "cannot decode", "b.png");

    mkdirs("f_half/train/cls");
    write_png("f_half/train/cls/a.png", 1, FW, FH, 3);
    expect_fail(tpath("f_half"), SPLIT_TRAIN, "no test/", "f_half");

    mkdirs("f_diff/train/a");
    mkdirs("f_diff/train/b");
    mkdirs("f_diff/test/a");
    mkdirs("f_diff/test/c");
    write_png("f_diff/train/a/x.png", 1, FW, FH, 3);
    write_png("f_diff/train/b/x.png", 1, FW, FH, 3);
    write_png("f_diff/test/a/x.png", 1, FW, FH, 3);
    write_png("f_diff/test/c/x.png", 1, FW, FH, 3);
    expect_fail(tpath("f_diff"), SPLIT_TEST, "train/ has class sub-folder 'b'", "f_diff");
}

/* ------------------------------------------------------------------ sources */
static void test_sources(void) {
    char src[1200];
    snprintf(src, sizeof src, "imagenet:%s", tpath("idx"));
    expect_fail(src, SPLIT_TRAIN, "unknown dataset source prefix", "imagenet");
    expect_fail("mnist", SPLIT_TRAIN, "needs a folder", "mnist:DIR");
    expect_fail("cifar10:", SPLIT_TRAIN, "no folder", "cifar10:");
    expect_fail("", SPLIT_TRAIN, "empty dataset source", NULL);
    expect_fail(NULL, SPLIT_TRAIN, "empty dataset source", NULL);
    expect_fail(tpath("nope"), SPLIT_TRAIN, "does not exist", "nope");
    snprintf(src, sizeof src, "mnist:%s", tpath("nope"));
    expect_fail(src, SPLIT_TRAIN, "does not exist", "nope");
    snprintf(src, sizeof src, "cifar10:%s", tpath("idx/t10k-labels-idx1-ubyte"));
    expect_fail(src, SPLIT_TRAIN, "not a folder", "t10k-labels-idx1-ubyte");
}

/* ------------------------------------------------------------------ splits */
static void test_split(void) {
    const int n = 100, nval = 23;
    int *tr1, *va1, *tr2, *va2, *tr3, *va3, nt1, nt2, nt3;
    dataset_split(n, nval, 7, &tr1, &nt1, &va1);
    dataset_split(n, nval, 7, &tr2, &nt2, &va2);
    dataset_split(n, nval, 8, &tr3, &nt3, &va3);
    CHECK(nt1 == n - nval && nt2 == nt1 && nt3 == nt1, "split sizes %d", nt1);
    CHECK(!memcmp(tr1, tr2, (size_t)nt1 * sizeof *tr1) &&
              !memcmp(va1, va2, (size_t)nval * sizeof *va1),
          "split deterministic for a seed");
    CHECK(memcmp(va1, va3, (size_t)nval * sizeof *va1) != 0, "another seed, another split");
    int seen[100] = {0}, sorted = 1;
    for (int i = 0; i < nt1; i++) {
        seen[tr1[i]]++;
        if (i && tr1[i] <= tr1[i - 1]) sorted = 0;
    }
    for (int i = 0; i < nval; i++) {
        seen[va1[i]]++;
        if (i && va1[i] <= va1[i - 1]) sorted = 0;
    }
    int once = 1;
    for (int i = 0; i < n; i++) once &= seen[i] == 1;
    CHECK(once, "split disjoint and complete");
    CHECK(sorted, "split lists ascending");
    free(tr1), free(va1), free(tr2), free(va2), free(tr3), free(va3);

    int *tr, *va, nt;
    dataset_split(10, 0, 1, &tr, &nt, &va);
    CHECK(nt == 10 && tr[0] == 0 && tr[9] == 9, "split with no validation");
    free(tr), free(va);
    dataset_split(10, 10, 1, &tr, &nt, &va);
    CHECK(nt == 0 && va[0] == 0 && va[9] == 9, "split all validation");
    free(tr), free(va);
}

/* ------------------------------------------------------------------ batches */
/* A synthetic in-memory dataset; pixels never 0 so padding is recognizable. */
static void make_synth(Dataset *d, int n, int c, int h, int w) {
    memset(d, 0, sizeof *d);
    d->n = n, d->c = c, d->h = h, d->w = w, d->classes = 3;
    snprintf(d->name, sizeof d->name, "synthetic");
    d->images = xmalloc((size_t)n * c * h * w);
    d->labels = xmalloc((size_t)n * sizeof *d->labels);
    for (int i = 0; i < n; i++) {
        d->labels[i] = (i * 2 + 1) % 3;
        for (int k = 0; k < c * h * w; k++)
            d->images[(size_t)i * c * h * w + k] = (uint8_t)(1 + (i * 37 + k * 7) % 255);
    }
}

static float norm1(int p, float m, float s) { return ((float)p / 255.0f - m) / s; }

/* Does out (c, h, w) equal src shifted by (dy, dx) with zero fill, then flipped if f? */
static int is_shift_flip(const float *out, const uint8_t *src, int c, int h, int w, int dy, int dx,
                         int f, const float *m, const float *s) {
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int cx = f ? w - 1 - x : x, sy = y + dy, sx = cx + dx;
                int p = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[(k * h + sy) * w + sx] : 0;
                if (fabsf(out[(k * h + y) * w + x] - norm1(p, m[k], s[k])) > 1e-6f) return 0;
            }
    return 1;
}

static void test_batch(void) {
    Dataset d;
    const int C = 2, H = 3, W = 4;
    make_synth(&d, 3, C, H, W);
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 2.0f};
    const int idx[3] = {2, 0, 2};
    float x[3 * 2 * 3 * 4];
    int y[3];

    /* No augmentation: exact normalization, aug NULL or all zero, rng NULL. */
    Augment none = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        memset(x, 0, sizeof x);
        dataset_batch(&d, idx, 3, mean, std, pass ? &none : NULL, NULL, x, y);
        int ok = 1;
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < C * H * W; k++) {
                int p = d.images[(size_t)idx[i] * C * H * W + k];
                double want = ((double)p / 255.0 - mean[k / (H * W)]) / std[k / (H * W)];
                ok &= fabs(x[i * C * H * W + k] - want) <= 1e-6;
            }
        CHECK(ok, "batch normalization (p/255 - mean)/std");
        CHECK(y[0] == d.labels[2] && y[1] == d.labels[0] && y[2] == d.labels[2], "batch labels");
    }
    dataset_free(&d);

    /* Hand-computed: image 1..12 in a 3x4 grid, pad 1, shift (dy, dx) = (+1, -1), flipped.
     * Crop window out[y][x] = in[y+1][x-1]:  0 5 6 7 / 0 9 10 11 / 0 0 0 0; flipped gives
     * 7 6 5 0 / 11 10 9 0 / 0 0 0 0. The seed is searched for with the documented draw order
     * (row offset, column offset in [0, 2P], then flip bit). */
    {
        Dataset h;
        make_synth(&h, 1, 1, 3, 4);
        for (int k = 0; k < 12; k++) h.images[k] = (uint8_t)(k + 1);
        static const uint8_t want[12] = {7, 6, 5, 0, 11, 10, 9, 0, 0, 0, 0, 0};
        uint64_t seed = 0;
        for (;; seed++) {
            Rng r;
            rng_seed(&r, seed);
            int oy = (int)rng_below(&r, 3), ox = (int)rng_below(&r, 3), f = (int)rng_below(&r, 2);
            if (oy == 2 && ox == 0 && f == 1) break;
        }
        Rng r;
        rng_seed(&r, seed);
        Augment a = {1, 1};
        float m0 = 0.0f, s0 = 1.0f, out[12];
        int lab;
        int i0 = 0;
        dataset_batch(&h, &i0, 1, &m0, &s0, &a, &r, out, &lab);
        int ok = 1;
        for (int k = 0; k < 12; k++) ok &= fabsf(out[k] - (float)want[k] / 255.0f) <= 1e-7f;
        CHECK(ok, "hand-computed crop + flip (seed %llu)", (unsigned long long)seed);
        /* Zero padding is pixel 0 before normalization. */
        float m1 = 0.5f, s1 = 0.25f;
        rng_seed(&r, seed);
        dataset_batch(&h, &i0, 1, &m1, &s1, &a, &r, out, &lab);
        CHECK_CLOSE(out[3], (0.0 - 0.5) / 0.25, 1e-6, 0, "padding normalized as pixel 0");
        CHECK_CLOSE(out[0], (7 / 255.0 - 0.5) / 0.25, 1e-6, 0, "cropped pixel normalized");
        dataset_free(&h);
    }

    /* Random crops and flips: every output is some valid shift/flip of its source, all
     * (2P+1)^2 shifts and both flip states occur, and the result does not depend on the
     * thread count. */
    {
        const int n = 64, c = 3, h = 16, w = 16, P = 2;
        make_synth(&d, n, c, h, w);
        const float m3[3] = {0.4f, 0.5f, 0.6f}, s3[3] = {0.2f, 0.3f, 0.25f};
        int *ix = xmalloc(sizeof(int) * n), *yy = xmalloc(sizeof(int) * n);
        for (int i = 0; i < n; i++) ix[i] = (i * 5 + 3) % n;
        size_t sz = (size_t)n * c * h * w;
        float *x1 = xmalloc(sz * sizeof(float)), *x2 = xmalloc(sz * sizeof(float));
        Augment a = {P, 1};
        int shift_seen[5][5] = {{0}}, flip_seen[2] = {0}, valid = 1;
        for (int round = 0; round < 4; round++) {
            Rng r1, r2;
            rng_seed(&r1, 1000 + round);
            r2 = r1;
            threads_set(1);
            dataset_batch(&d, ix, n, m3, s3, &a, &r1, x1, yy);
            threads_set(2);
            dataset_batch(&d, ix, n, m3, s3, &a, &r2, x2, yy);
            CHECK(!memcmp(x1, x2, sz * sizeof(float)), "batch independent of thread count");
            CHECK(!memcmp(&r1, &r2, sizeof r1), "rng advanced identically");
            for (int i = 0; i < n; i++) {
                const uint8_t *src = d.images + (size_t)ix[i] * c * h * w;
                const float *o = x1 + (size_t)i * c * h * w;
                int found = 0;
                for (int dy = -P; dy <= P && !found; dy++)
                    for (int dx = -P; dx <= P && !found; dx++)
                        for (int f = 0; f < 2 && !found; f++)
                            if (is_shift_flip(o, src, c, h, w, dy, dx, f, m3, s3)) {
                                found = 1;
                                shift_seen[dy + P][dx + P]++;
                                flip_seen[f]++;
                            }
                valid &= found;
                valid &= yy[i] == d.labels[ix[i]];
            }
        }
        CHECK(valid, "every augmented image is a shifted/flipped copy of its source");
        int all = flip_seen[0] > 0 && flip_seen[1] > 0;
        for (int a1 = 0; a1 < 5; a1++)
            for (int a2 = 0; a2 < 5; a2++) all &= shift_seen[a1][a2] > 0;
        CHECK(all, "all shifts and both flip states occur");
        free(ix), free(yy), free(x1), free(x2);
        dataset_free(&d);
    }
}

/* ------------------------------------------------------------------ real Fashion-MNIST */
static void test_real(void) {
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist", &st) != 0) {
        printf("skipped: /usr/share/datasets/fashion-mnist is absent\n");
        return;
    }
    Dataset d;
    Err e = {{0}};
    int rc = dataset_load(&d, "fashion-mnist", SPLIT_TEST, &e);
    CHECK(rc == NASC_OK, "fashion-mnist test load: %s", e.msg);
    if (rc != NASC_OK) return;
    CHECK(d.n == 10000 && d.c == 1 && d.h == 28 && d.w == 28 && d.classes == 10,
          "fashion-mnist shape %d %d %d %d", d.n, d.c, d.h, d.w);
    int counts[10] = {0};
    for (int i = 0; i < d.n; i++)
        if (d.labels[i] >= 0 && d.labels[i] < 10) counts[d.labels[i]]++;
    int ok = 1;
    for (int k = 0; k < 10; k++) ok &= counts[k] == 1000;
    CHECK(ok, "fashion-mnist test labels 1000 per class");
    printf("real Fashion-MNIST test split: %d images of %dx%dx%d\n", d.n, d.c, d.h, d.w);
    dataset_free(&d);
}

int main(void) {
    if (!mkdtemp(tmp_root)) nasc_die("test: mkdtemp failed");
    test_idx();
    test_cifar();
    test_folder();
    test_sources();
    test_split();
    test_batch();
    test_real();
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_summary("test_data");
}
