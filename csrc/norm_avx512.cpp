// The residual + norm + modulate's AVX-512 path (planner_cpu.cpp's residual_norm_modulate dispatches here where
// the CPU runs AVX-512 F/BW/DQ/VL, within LEWM_CPU_KERNEL's cap, and D is a multiple of 16 up to 256;
// ops.residual_norm_modulate is the specification, planner_cpu.cpp's norm_row the portable path).
//
// Why its own: a norm row is four sums (the two LayerNorms' means and variances), each waiting on the one
// before. In the portable row the compiler reduced each on one vector and then added its sixteen lanes one
// after another, ~30 dependent adds per sum: two thirds of the row's time at D = 192 (~540 cycles a row on
// Zen 5). Here the row stays in registers (D / 16 vectors), each sum runs on four accumulators and ends in a
// shuffle tree (eight dependent adds). The arithmetic is the portable row's; only the order of the sums differs.

#include <cmath>
#include <cstdint>

#include "cpu_common.h"
#include "planner_cpu.h"

#ifdef LEWM_X86_TARGETS
#include "avx512_common.h"

namespace lewm {
namespace {

constexpr int kMaxVectors = 16;  // D <= 256: a row in registers (LeWM's D = 192 is 12 vectors)

// The sum of every lane of v[0 .. nv), or of their squares: accumulators j mod 4, added pairwise, then the
// lanes by halves (16 -> 8 -> 4 -> 2 -> 1).
template <bool Squares>
LEWM_AVX512 LEWM_INLINE float sum_lanes(const __m512* v, int nv) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int j = 0; j < nv; ++j)
    acc[j % 4] = Squares ? _mm512_fmadd_ps(v[j], v[j], acc[j % 4]) : _mm512_add_ps(acc[j % 4], v[j]);
  const __m512 all = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(all), _mm512_extractf32x8_ps(all, 1));
  __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
  quarter = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
}

// r[j] = (r[j] - mean) / sqrt(variance + eps) over the row's nv vectors (D = 16 nv values).
LEWM_AVX512 LEWM_INLINE void standardize(__m512* r, int nv, float eps) {
  const float invD = 1.f / static_cast<float>(16 * nv);
  const __m512 mean = _mm512_set1_ps(sum_lanes<false>(r, nv) * invD);
  for (int j = 0; j < nv; ++j) r[j] = _mm512_sub_ps(r[j], mean);
  const __m512 inv = _mm512_set1_ps(1.f / std::sqrt(sum_lanes<true>(r, nv) * invD + eps));
  for (int j = 0; j < nv; ++j) r[j] = _mm512_mul_ps(r[j], inv);
}

// One row (norm_row's contract); V > 0 fixes the vector count at compile time (unrolled, in registers).
template <typename T, int V>
LEWM_AVX512 LEWM_INLINE void norm_row16(float* x, const T* gate, const T* delta, const T* shift, const T* scale,
                                        T* out, int nv_arg, float eps1, float eps2) {
  const int nv = V > 0 ? V : nv_arg;
  __m512 r[V > 0 ? V : kMaxVectors];
  for (int j = 0; j < nv; ++j) r[j] = _mm512_loadu_ps(x + 16 * j);
  if (delta != nullptr) {
    for (int j = 0; j < nv; ++j) {
      r[j] = _mm512_fmadd_ps(load16(gate + 16 * j), load16(delta + 16 * j), r[j]);
      _mm512_storeu_ps(x + 16 * j, r[j]);
    }
  }
  if (out == nullptr) return;  // the residual update only
  standardize(r, nv, eps1);
  if (shift != nullptr) {  // y * (1 + scale) + shift, then the second norm
    for (int j = 0; j < nv; ++j)
      r[j] = _mm512_add_ps(_mm512_fmadd_ps(r[j], load16(scale + 16 * j), r[j]), load16(shift + 16 * j));
    standardize(r, nv, eps2);
  }
  for (int j = 0; j < nv; ++j) store16(out + 16 * j, r[j]);
}

template <typename T, int V>
LEWM_AVX512 void norm_rows(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift,
                           RowArg scale, T* out, int64_t N, int64_t n, int64_t D, float eps1, float eps2,
                           int num_threads) {
  auto row = [](const RowArg& a, int64_t i, int64_t j) -> const T* {
    return a.data == nullptr ? nullptr : static_cast<const T*>(a.data) + i * a.s0 + j * a.s1;
  };
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t r = 0; r < N * n; ++r) {
    const int64_t i = r / n, j = r % n;
    norm_row16<T, V>(x + i * xs0 + j * xs1, row(gate, i, j), row(delta, i, j), row(shift, i, j), row(scale, i, j),
                     out == nullptr ? nullptr : out + r * D, static_cast<int>(D / 16), eps1, eps2);
  }
}

template <typename T>
void norm_rows_of(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift, RowArg scale,
                  void* out, int64_t N, int64_t n, int64_t D, float eps1, float eps2, int num_threads) {
  T* o = static_cast<T*>(out);
  if (D == 192) {
    norm_rows<T, 12>(x, xs0, xs1, gate, delta, shift, scale, o, N, n, D, eps1, eps2, num_threads);
  } else {
    norm_rows<T, 0>(x, xs0, xs1, gate, delta, shift, scale, o, N, n, D, eps1, eps2, num_threads);
  }
}

}  // namespace

bool residual_norm_modulate_avx512(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift,
                                   RowArg scale, void* out, bool bf16, int64_t N, int64_t n, int64_t D, double eps1,
                                   double eps2, int num_threads) {
  if (D % 16 != 0 || D / 16 > kMaxVectors) return false;
  const float e1 = static_cast<float>(eps1), e2 = static_cast<float>(eps2);
  if (bf16) {
    norm_rows_of<uint16_t>(x, xs0, xs1, gate, delta, shift, scale, out, N, n, D, e1, e2, num_threads);
  } else {
    norm_rows_of<float>(x, xs0, xs1, gate, delta, shift, scale, out, N, n, D, e1, e2, num_threads);
  }
  return true;
}

}  // namespace lewm

#else  // no x86-64 intrinsics here: the portable path always

namespace lewm {
bool residual_norm_modulate_avx512(float*, int64_t, int64_t, RowArg, RowArg, RowArg, RowArg, void*, bool, int64_t,
                                   int64_t, int64_t, double, double, int) {
  return false;
}
}  // namespace lewm

#endif
