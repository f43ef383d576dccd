/* simd.h: private to src/ops. The build compiles for the baseline ISA (no -march), so hot
 * loops that the compiler vectorizes are compiled several times, for AVX-512 / AVX2 / the
 * baseline, and one is picked at load time (GCC function multiversioning). Off under the
 * sanitizers and on other compilers, where the baseline version runs. Put MULTIVERSION on a
 * plain function (not one holding an OpenMP region) and call it from the region. */
#ifndef NASC_OPS_SIMD_H
#define NASC_OPS_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

#endif
