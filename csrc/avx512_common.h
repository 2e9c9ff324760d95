// Helpers of the AVX-512 paths (attention_avx512.cpp, norm_avx512.cpp): 16 lanes of bf16 or fp32 in and out, and
// GCC 12's false warning on its own intrinsics silenced for the file. Include only where LEWM_X86_TARGETS is
// defined (cpu_common.h).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "cpu_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on its own _mm512_undefined_* (linear_avx512.cpp)
#endif

namespace lewm {

// 16 values as fp32: bf16 bits widened (the 16 bits are the top half of the float), or fp32.
template <typename T>
LEWM_AVX512 LEWM_INLINE __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  } else {
    return _mm512_loadu_ps(p);
  }
}

// 16 fp32 values stored as T: bf16 rounded to nearest even, NaN kept a (quiet) NaN, as float_to_bf16.
template <typename T>
LEWM_AVX512 LEWM_INLINE void store16(T* p, __m512 x) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x400000)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
  } else {
    _mm512_storeu_ps(p, x);
  }
}

}  // namespace lewm
