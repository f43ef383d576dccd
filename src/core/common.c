/* common.c: errors, checked allocation, per-thread scratch, threads, RNG, CRC-32, clock and
 * atomic file writes. Everything here is small and dependency-free. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void err_set(Err *e, const char *fmt, ...) {
    if (!e) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

_Noreturn void nasc_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "nasc: internal error: assertion `%s` failed at %s:%d\n", cond, file, line);
    abort();
}

_Noreturn void nasc_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("nasc: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) nasc_die("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) nasc_die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) nasc_die("out of memory reallocating to %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

/* Blocks from this size up (activations, gradients, datasets) are 2 MB aligned and asked to be
 * backed by transparent huge pages: the kernels sweep hundreds of MB per training step, and
 * with 4 KB pages every sweep walks the page tables for each page it enters. Where the kernel
 * does not give huge pages (or has no such hint) this changes nothing. */
#define HUGE_FROM ((size_t)4 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

void *xalloc_aligned(size_t n) {
    size_t rounded = n ? (n + 63) & ~(size_t)63 : 64, align = 64;
    if (rounded >= HUGE_FROM) align = HUGE_ALIGN, rounded = (rounded + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
    void *p = aligned_alloc(align, rounded);
    if (!p) nasc_die("out of memory allocating %zu bytes", n);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_ALIGN) madvise(p, rounded, MADV_HUGEPAGE); /* a hint: failure is harmless */
#endif
    memset(p, 0, rounded);
    return p;
}

/* ------------------------------------------------------------------ scratch */
#define SCRATCH_THREADS 256
typedef struct {
    void *p;
    size_t cap;
} ScratchBuf;
static ScratchBuf scratch_bufs[SCRATCH_THREADS][NASC_SCRATCH_SLOTS];

static void scratch_release(void) {
    for (int t = 0; t < SCRATCH_THREADS; t++)
        for (int s = 0; s < NASC_SCRATCH_SLOTS; s++) free(scratch_bufs[t][s].p);
}

void *scratch_get(int slot, size_t bytes) {
    static int registered;
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    if (omp_get_level() > 1) tid = omp_get_ancestor_thread_num(1) * 16 + tid; /* nested: rare */
#endif
    NASC_ASSERT(tid >= 0 && tid < SCRATCH_THREADS && slot >= 0 && slot < NASC_SCRATCH_SLOTS);
    ScratchBuf *b = &scratch_bufs[tid][slot];
    if (b->cap < bytes) {
#ifdef _OPENMP
#pragma omp critical(nasc_scratch_register)
#endif
        if (!registered) {
            registered = 1;
            atexit(scratch_release);
        }
        free(b->p);
        size_t cap = bytes + bytes / 4 + 64;
        b->p = xalloc_aligned(cap);
        b->cap = cap;
    }
    return b->p;
}

/* ------------------------------------------------------------------ threads */
static int nasc_threads = 0;

void threads_set(int n) {
    if (n < 1) n = 1;
    nasc_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int threads_get(void) {
    if (nasc_threads > 0) return nasc_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------ rng */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(Rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

float rng_uniformf(Rng *r, float lo, float hi) { return lo + (hi - lo) * (float)rng_uniform(r); }

double rng_normal(Rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint32_t rng_below(Rng *r, uint32_t n) {
    NASC_ASSERT(n > 0);
    uint64_t limit = (UINT64_MAX / n) * n; /* reject the biased tail */
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return (uint32_t)(x % n);
}

void rng_shuffle_int(Rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ------------------------------------------------------------------ crc32 */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------ time, files */
double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int file_write_atomic(const char *path, const void *buf, size_t n, Err *e) {
    size_t len = strlen(path);
    char *tmp = xmalloc(len + 32);
    snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        err_set(e, "cannot write %s: %s", path, strerror(errno));
        free(tmp);
        return NASC_ERR;
    }
    const char *p = buf;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            err_set(e, "cannot write %s: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return NASC_ERR;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        err_set(e, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return NASC_ERR;
    }
    if (rename(tmp, path) != 0) {
        err_set(e, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return NASC_ERR;
    }
    free(tmp);
    return NASC_OK;
}

void *file_read_all(const char *path, size_t *n, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) buf = xrealloc(buf, cap *= 2);
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        err_set(e, "cannot read %s", path);
        free(buf);
        return NULL;
    }
    *n = len;
    return buf;
}

int frame_check(const uint8_t *data, size_t len, const char *magic, uint32_t version, const char *kind,
                const char *path, Err *e) {
    if (len < 8 || memcmp(data, magic, 8) != 0) {
        err_set(e, "%s is not a nasc %s file (bad magic number)", path, kind);
        return NASC_ERR;
    }
    if (len < 8 + 4 + 4) {
        err_set(e, "%s is truncated (%zu bytes)", path, len);
        return NASC_ERR;
    }
    uint32_t v, crc_stored;
    memcpy(&v, data + 8, 4);
    if (v != version) {
        err_set(e, "%s has %s format version %u; this nasc reads version %u", path, kind, v, version);
        return NASC_ERR;
    }
    memcpy(&crc_stored, data + len - 4, 4);
    if (crc32_update(0, data, len - 4) != crc_stored) {
        err_set(e, "%s is corrupted or truncated (checksum mismatch)", path);
        return NASC_ERR;
    }
    return NASC_OK;
}
