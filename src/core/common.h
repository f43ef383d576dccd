/* common.h: what every nasc module uses.
 *
 * Errors come in three tiers (see STYLE.md):
 *   - NASC_ASSERT for bugs: prints file:line and aborts;
 *   - xmalloc/xcalloc/xfopen for resources: print what failed and exit(2);
 *   - status codes (NASC_OK / NASC_ERR) plus a message buffer for what a user can cause
 *     (bad spec, bad file, bad flag); the CLI prints the message and exits non-zero.
 *
 * `real` is the element type of the reference kernels. It is float in the product and
 * double when the gradient checker compiles the reference kernels with -DNASC_REAL=double.
 */
#ifndef NASC_COMMON_H
#define NASC_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NASC_VERSION "0.1"

#ifndef NASC_REAL
#define NASC_REAL float
#endif
typedef NASC_REAL real;

#define NASC_OK 0
#define NASC_ERR (-1)

/* A user-facing error message; functions that can fail on user input fill one. */
typedef struct {
    char msg[512];
} Err;

void err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define NASC_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) nasc_assert_fail(#cond, __FILE__, __LINE__);                      \
    } while (0)
_Noreturn void nasc_assert_fail(const char *cond, const char *file, int line);

/* Print "nasc: <message>" to stderr and exit with status 2. For resources, not user input. */
_Noreturn void nasc_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* 64-byte aligned allocation, zero-filled; free with free(). */
void *xalloc_aligned(size_t n);

/* Per-thread grow-only scratch buffer (64-byte aligned). `slot` lets one thread hold
 * several buffers at once (0..NASC_SCRATCH_SLOTS-1). Valid until the next call with the
 * same thread and slot asks for more bytes. Never free the result. */
#define NASC_SCRATCH_SLOTS 10
void *scratch_get(int slot, size_t bytes);

/* Threads: the number used by parallel kernels (set once by the CLI; default all cores). */
void threads_set(int n);
int threads_get(void);

/* Seeded random numbers (splitmix64-seeded xoshiro256**). Deterministic across platforms. */
typedef struct {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);              /* [0, 1) */
float rng_uniformf(Rng *r, float lo, float hi);
double rng_normal(Rng *r);               /* standard normal (Box-Muller) */
uint32_t rng_below(Rng *r, uint32_t n);  /* uniform in [0, n), unbiased */
void rng_shuffle_int(Rng *r, int *a, int n);

/* CRC-32 (IEEE, same as zlib's crc32) of a buffer, continuing from `crc` (start at 0). */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t n);
/* The frame of nasc's binary files (model files, int8 model files), read whole: an 8-byte magic,
 * a u32 version, the payload, then a u32 CRC-32 of every byte before it. Checks the magic, the
 * size, the version and the checksum, in that order; NASC_ERR with "PATH is not a nasc KIND file
 * (bad magic number)", "PATH is truncated", "PATH has KIND format version V; this nasc reads
 * version W" or "PATH is corrupted or truncated (checksum mismatch)". The payload starts at
 * byte 12 and ends 4 bytes before len. */
int frame_check(const uint8_t *data, size_t len, const char *magic, uint32_t version, const char *kind,
                const char *path, Err *e);

/* Monotonic wall clock in seconds. */
double now_seconds(void);

/* Write `n` bytes to `path` atomically (temp file in the same folder, fsync, rename).
 * Returns NASC_OK or NASC_ERR with a message in *e. */
int file_write_atomic(const char *path, const void *buf, size_t n, Err *e);
/* Read a whole file; returns NULL with a message in *e on failure. *n gets the size. */
void *file_read_all(const char *path, size_t *n, Err *e);

#define NASC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NASC_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
