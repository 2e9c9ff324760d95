// The window attention's AVX-512 path (planner_cpu.cpp's window_attention dispatches here where the CPU runs
// AVX-512 F/BW/DQ/VL, within LEWM_CPU_KERNEL's cap, and dim_head is 64; ops.window_attention is the
// specification, planner_cpu.cpp's attend_row the portable path).
//
// Why its own: the portable loops reduce one head's 64 products at a time (a horizontal sum per head and key)
// and convert a row's whole K and V to fp32 before reading them. Here sixteen heads share the lanes of one
// vector: each (head, key) dot product is four FMAs on 16-lane vectors, a transposing tree adds sixteen such
// partial sums into one vector of sixteen scores (45 operations instead of sixteen horizontal sums), the
// softmax runs on those lanes, and bf16 K/V are widened in registers as they are read. Scores, softmax and
// the weighted sum are fp32, as the portable path; only the order of the 64-term sums differs.

#include <algorithm>
#include <cstdint>

#include "cpu_common.h"
#include "planner_cpu.h"

#ifdef LEWM_X86_TARGETS
#include "avx512_common.h"

namespace lewm {
namespace {

constexpr int64_t kDimHead = 64, kLanes = 16;

// Lane h of the result = the sum of r[h]'s 16 lanes. Pairs of vectors are interleaved and added (16 -> 8 ->
// 4 vectors), then 128-bit blocks are (4 -> 2 -> 1): every add halves the vectors left.
LEWM_AVX512 LEWM_INLINE __m512 sum_each(const __m512 (&r)[kLanes]) {
  __m512 x[8], z[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit block: r[2i]'s partial sums in lanes 0, 2; r[2i + 1]'s in 1, 3
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit block: the partial sums of r[4i .. 4i + 3] in lanes 0 .. 3
    const __m512d a = _mm512_castps_pd(x[2 * i]), b = _mm512_castps_pd(x[2 * i + 1]);
    z[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0), kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], kEven), _mm512_shuffle_f32x4(z[0], z[1], kOdd));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], kEven), _mm512_shuffle_f32x4(z[2], z[3], kOdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, kEven), _mm512_shuffle_f32x4(w0, w1, kOdd));
}

// exp_nonpositive (cpu_common.h) on 16 lanes, the same steps.
LEWM_AVX512 LEWM_INLINE __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.f / 5040), r, _mm512_set1_ps(1.f / 720));
  for (const float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

// One query of one row, heads [h0, h0 + hn) (hn <= 16, one per lane), over `keys` keys.
template <typename T>
LEWM_AVX512 LEWM_INLINE void attend_heads(const T* q, const T* k, int64_t ks1, const T* v, int64_t vs1, T* out,
                                          int64_t keys, int64_t h0, int64_t hn) {
  __m512 score[kMaxWindow];
  for (int64_t j = 0; j < keys; ++j) {
    __m512 part[kLanes];
    for (int64_t h = 0; h < kLanes; ++h) {
      if (h >= hn) {
        part[h] = _mm512_setzero_ps();
        continue;
      }
      const int64_t at = (h0 + h) * kDimHead;
      __m512 s = _mm512_mul_ps(load16(q + at), load16(k + j * ks1 + at));
      for (int64_t c = kLanes; c < kDimHead; c += kLanes)
        s = _mm512_fmadd_ps(load16(q + at + c), load16(k + j * ks1 + at + c), s);
      part[h] = s;
    }
    score[j] = sum_each(part);
  }
  __m512 best = score[0], total = _mm512_setzero_ps();
  for (int64_t j = 1; j < keys; ++j) best = _mm512_max_ps(best, score[j]);
  for (int64_t j = 0; j < keys; ++j) {
    score[j] = exp16(_mm512_sub_ps(score[j], best));
    total = _mm512_add_ps(total, score[j]);
  }
  alignas(64) float p[kMaxWindow][kLanes];
  for (int64_t j = 0; j < keys; ++j) _mm512_store_ps(p[j], _mm512_div_ps(score[j], total));
  for (int64_t h = 0; h < hn; ++h) {
    const int64_t at = (h0 + h) * kDimHead;
    for (int64_t c = 0; c < kDimHead; c += kLanes) {
      __m512 o = _mm512_mul_ps(_mm512_set1_ps(p[0][h]), load16(v + at + c));
      for (int64_t j = 1; j < keys; ++j) o = _mm512_fmadd_ps(_mm512_set1_ps(p[j][h]), load16(v + j * vs1 + at + c), o);
      store16(out + at + c, o);
    }
  }
}

template <typename T>
LEWM_AVX512 void attend_rows(const T* q, int64_t qs0, int64_t qs1, const T* k, int64_t ks0, int64_t ks1, const T* v,
                             int64_t vs0, int64_t vs1, T* out, int64_t N, int64_t nq, int64_t L, int64_t heads,
                             int num_threads) {
  const int64_t inner = heads * kDimHead;
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t qi = 0; qi < nq; ++qi)
      for (int64_t h0 = 0; h0 < heads; h0 += kLanes)
        attend_heads(q + n * qs0 + qi * qs1, k + n * ks0, ks1, v + n * vs0, vs1, out + (n * nq + qi) * inner,
                     L - nq + qi + 1, h0, std::min(kLanes, heads - h0));
}

}  // namespace

bool window_attention_avx512(const void* q, int64_t qs0, int64_t qs1, const void* k, int64_t ks0, int64_t ks1,
                             const void* v, int64_t vs0, int64_t vs1, void* out, int64_t N, int64_t nq, int64_t L,
                             int64_t heads, int64_t dim_head, bool bf16, int num_threads) {
  if (dim_head != kDimHead || L > kMaxWindow) return false;
  if (bf16) {
    attend_rows(static_cast<const uint16_t*>(q), qs0, qs1, static_cast<const uint16_t*>(k), ks0, ks1,
                static_cast<const uint16_t*>(v), vs0, vs1, static_cast<uint16_t*>(out), N, nq, L, heads, num_threads);
  } else {
    attend_rows(static_cast<const float*>(q), qs0, qs1, static_cast<const float*>(k), ks0, ks1,
                static_cast<const float*>(v), vs0, vs1, static_cast<float*>(out), N, nq, L, heads, num_threads);
  }
  return true;
}

}  // namespace lewm

#else  // no x86-64 intrinsics here: the portable path always

namespace lewm {
bool window_attention_avx512(const void*, int64_t, int64_t, const void*, int64_t, int64_t, const void*, int64_t,
                             int64_t, void*, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int) {
  return false;
}
}  // namespace lewm

#endif
