// Shared pieces of the CPU kernels: per-ISA function clones, bf16 <-> fp32, a vectorisable exp.
//
// Portability: the kernels are plain loops that the compiler vectorises. On x86-64 with GCC the hot
// functions are cloned for AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and the SSE2 baseline, and the
// loader picks the best clone the running CPU supports (an ifunc; `kernel_isa()` names it). Elsewhere
// (aarch64, where NEON is part of the baseline; clang; other architectures) there is one build for the
// target's baseline. Nothing here needs OpenMP's runtime: without -fopenmp the `omp` pragmas are
// ignored and every kernel runs on the calling thread, with the same results.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LEWM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LEWM_CLONES
#endif

// x86-64 with GCC or clang: the kernels for one instruction set are compiled for it by function target
// attributes (one build runs everywhere), and are called only where cpuid says the CPU has it.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LEWM_X86_TARGETS 1
#define LEWM_AVX2 __attribute__((target("avx2,fma")))
#define LEWM_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define LEWM_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,avx512bf16")))
#endif

// Helpers called from a LEWM_CLONES function must be inlined into it: a helper GCC leaves out of line is
// compiled once, for the baseline ISA (SSE2), whichever clone calls it.
#if defined(__GNUC__)
#define LEWM_INLINE inline __attribute__((always_inline))
#else
#define LEWM_INLINE inline
#endif

namespace lewm {

// The clone of LEWM_CLONES functions the loader picks on this CPU (same test as GCC's resolver).
inline const char* kernel_isa() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2, FMA)";
  return "x86-64 (SSE2)";
#elif defined(__aarch64__)
  return "aarch64 (NEON)";
#elif defined(__x86_64__)
  return "x86-64 (compiler default)";
#else
  return "portable C++";
#endif
}

LEWM_INLINE float bf16_to_float(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

LEWM_INLINE uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Element i of a bf16 (uint16_t bits) or fp32 buffer, as fp32.
template <typename T>
LEWM_INLINE float load(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    return bf16_to_float(p[i]);
  } else {
    return p[i];
  }
}

// exp(x) for x <= 0 (a softmax argument after subtracting the max), written to vectorise (libm's expf
// does not without -ffast-math): x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so n ln2 is exact),
// exp(r) by its Taylor series to r^7 (relative error < 2e-8 on that range), times 2^n built in the
// exponent bits. Below -87 the result underflows to 0, as expf's does (to within a denormal).
LEWM_INLINE float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  const float p =
      1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace lewm
