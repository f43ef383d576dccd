/* simd.h: private to src/ops. The build compiles for the baseline ISA (no -march), so hot
 * loops that the compiler vectorizes are compiled several times, for AVX-512 / AVX2 / the
 * baseline, and one is picked at load time (GCC function multiversioning). Off under the
 * sanitizers and on other compilers, where the baseline version runs. Put MULTIVERSION on a
 * plain function (not one holding an OpenMP region) and call it from the region. */
#ifndef NASC_OPS_SIMD_H
#define NASC_OPS_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#ifdef NASC_NO_AVX512_CLONES /* a build that runs as on a machine without AVX-512 (bench/run.sh ISA=avx2) */
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define MULTIVERSION
#endif

/* MULTIVERSION_FMA: for kernels written with GNU C vectors whose speed rests on fused
 * multiply-adds. The "avx2" clone above has no FMA (GCC's avx2 does not imply fma), and the
 * build is -std=c11, where GCC contracts nothing, so these clones are x86-64-v3 (AVX2 + FMA:
 * Haswell, Zen and later) and the baseline, and a * b + c is contracted to an FMA inside the
 * function (NEON's fmla on ARM64), never elsewhere, so other code's results stay as they were. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define MULTIVERSION_FMA __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#elif defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION_FMA __attribute__((optimize("fp-contract=fast")))
#else
#define MULTIVERSION_FMA
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* v where cond, else +0, by the bits: a loop using it has no control flow, which GCC's AVX2
 * clones (no masked loads or stores) and NEON need to vectorize it (`cond ? v : 0` had stayed
 * scalar there: the residual add's backward 5% of resnet8's step on AVX2). */
static inline float keep_if(float v, int cond) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= 0u - (uint32_t)cond;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* The cache lines of bytes [0, n) at p into the caches (a hint; write = 1 for lines about to be
 * written), for walks whose runs are too short for the hardware prefetchers to ramp up on. */
static inline void prefetch_range(const void *p, size_t n, int write) {
    const char *a = (const char *)((uintptr_t)p & ~(uintptr_t)63), *e = (const char *)p + n;
    if (write)
        for (; a < e; a += 64) __builtin_prefetch(a, 1, 3);
    else
        for (; a < e; a += 64) __builtin_prefetch(a, 0, 3);
}

#endif
