// The matmul's AVX-512 tiles: fp32 (FMA on 16-lane vectors) and bf16 (vdpbf16ps: pairs of bf16 products
// added into 16 fp32 lanes), both 8 rows x 48 columns: 24 accumulators of the 32 vector registers, per k
// (bf16: per pair of k) three panel loads and eight broadcasts, from eight rows of x read where they are,
// feed 24 FMAs. Partial panels (cols < 48) load and store through lane masks. Compiled for AVX-512 by target
// attributes; called only where the CPU has AVX-512 F/BW/DQ/VL (and AVX512-BF16 for the bf16 tile), as
// linear_cpu.cpp checks.

#include <algorithm>

#include "cpu_common.h"
#include "linear_kernels.h"

#ifdef LEWM_X86_TARGETS
#include <immintrin.h>

// GCC 12 reports its own AVX-512 intrinsics' _mm512_undefined_* self-initialisation as "may be used
// uninitialized" once they are inlined here (-Wall -Werror in csrc/check/cross_check.sh).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lewm {
namespace linear_detail {
namespace {

constexpr int64_t kNR = 48, kMR = 8, kV = kNR / 16;
static_assert(kNR <= kMaxPanel, "a panel's bias fits the driver's buffer");

// Lane masks of a tile row's kV vectors: the first `cols` columns.
LEWM_AVX512 LEWM_INLINE void column_masks(int64_t cols, __mmask16* m) {
  for (int v = 0; v < kV; ++v) {
    const int64_t n = std::clamp<int64_t>(cols - 16 * v, 0, 16);
    m[v] = static_cast<__mmask16>((1u << n) - 1u);
  }
}

// The GELU (linear_kernels.h: the rational erf by Horner's rule, then x/2 + x/2 erf) on G vectors of 16
// lanes in place, each step for all G vectors before the next: G independent chains in step. max/min return
// their second operand for a NaN, so a NaN x gives the clamp there, and NaN through x/2.
template <int G>
LEWM_AVX512 LEWM_INLINE void gelu16(__m512* xs) {
  __m512 xc[G], s[G], p[G], q[G];
  for (int i = 0; i < G; ++i)
    xc[i] = _mm512_min_ps(_mm512_max_ps(xs[i], _mm512_set1_ps(-kGeluClamp)), _mm512_set1_ps(kGeluClamp));
  for (int i = 0; i < G; ++i) s[i] = _mm512_mul_ps(xc[i], xc[i]);
  for (int i = 0; i < G; ++i) p[i] = _mm512_set1_ps(kGeluP[6]), q[i] = _mm512_set1_ps(kGeluQ[5]);
  for (int j = 5; j >= 0; --j)
    for (int i = 0; i < G; ++i) {
      p[i] = _mm512_fmadd_ps(p[i], s[i], _mm512_set1_ps(kGeluP[j]));
      if (j < 5) q[i] = _mm512_fmadd_ps(q[i], s[i], _mm512_set1_ps(kGeluQ[j]));
    }
  for (int i = 0; i < G; ++i) {
    const __m512 erf = _mm512_div_ps(_mm512_mul_ps(xc[i], p[i]), q[i]);
    const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), xs[i]);
    xs[i] = _mm512_fmadd_ps(half, erf, half);
  }
}

// The start of a tile's sums: the carried partial sums, the bias, or zero.
template <int R>
LEWM_AVX512 LEWM_INLINE void start_sums(const TileArgs& t, const __mmask16* m, __m512 (&acc)[R][kV]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kV; ++v)
      acc[r][v] = t.carry ? _mm512_maskz_loadu_ps(m[v], t.carry + r * t.ld_carry + 16 * v)
                  : t.bias ? _mm512_loadu_ps(t.bias + 16 * v) : _mm512_setzero_ps();
}

// fp32: R x 48 outputs <- a (kc, 8: packed rows, R used) @ b (kc, 48); partial sums and results go to the
// same place (fp32 out), the GELU on the stored tile a row at a time (24 live accumulators leave it no
// registers).
template <int R>
LEWM_AVX512 void tile_f32(const TileArgs& t) {
  const char* a = static_cast<const char*>(t.a);
  const float* b = static_cast<const float*>(t.b);
  __mmask16 m[kV];
  column_masks(t.cols, m);
  __m512 acc[R][kV];
  start_sums<R>(t, m, acc);
  for (int64_t k = 0; k < t.kc; ++k) {
    __m512 bv[kV];
    for (int v = 0; v < kV; ++v) bv[v] = _mm512_loadu_ps(b + k * kNR + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(*reinterpret_cast<const float*>(a + k * t.a_step + r * t.a_row));
      for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
  float* c = t.partial != nullptr ? t.partial : static_cast<float*>(t.out);
  const int64_t ldc = t.partial != nullptr ? t.ld_partial : t.ldo;
  if (t.cols == kNR) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kV; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
  } else {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kV; ++v) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, m[v], acc[r][v]);
  }
  if (!t.gelu) return;
  for (int r = 0; r < R; ++r) {
    __m512 row[kV];
    for (int v = 0; v < kV; ++v) row[v] = _mm512_maskz_loadu_ps(m[v], c + r * ldc + 16 * v);
    gelu16<kV>(row);
    for (int v = 0; v < kV; ++v) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, m[v], row[v]);
  }
}

// bf16: R x 48 outputs <- a (ceil(kc / 2), 8 pairs) @ b (ceil(kc / 2), 48 pairs) by vdpbf16ps; partial sums
// to the fp32 buffer, results (after the GELU) rounded to bf16 by vcvtneps2bf16 (to nearest even).
template <int R>
LEWM_AVX512BF16 void tile_bf16(const TileArgs& t) {
  const char *a = static_cast<const char*>(t.a), *b = static_cast<const char*>(t.b);
  __mmask16 m[kV];
  column_masks(t.cols, m);
  __m512 acc[R][kV];
  start_sums<R>(t, m, acc);
  for (int64_t p = 0; p < (t.kc + 1) / 2; ++p) {
    __m512i bv[kV];
    for (int v = 0; v < kV; ++v) bv[v] = _mm512_loadu_si512(b + (p * kNR + 16 * v) * 4);
    for (int r = 0; r < R; ++r) {
      const __m512i ar = _mm512_broadcastd_epi32(_mm_loadu_si32(a + p * t.a_step + r * t.a_row));
      for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)ar, (__m512bh)bv[v]);
    }
  }
  if (t.partial != nullptr) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kV; ++v) _mm512_mask_storeu_ps(t.partial + r * t.ld_partial + 16 * v, m[v], acc[r][v]);
    return;
  }
  uint16_t* out = static_cast<uint16_t*>(t.out);
  for (int r = 0; r < R; ++r) {
    if (t.gelu) gelu16<kV>(acc[r]);
    for (int v = 0; v < kV; ++v)
      _mm256_mask_storeu_epi16(out + r * t.ldo + 16 * v, m[v], (__m256i)_mm512_cvtneps_pbh(acc[r][v]));
  }
}

LEWM_AVX512 void f32_tile(const TileArgs& t) {
  static_assert(kMR == 8, "one case per tile height");
  switch (t.rows) {
    case 8: return tile_f32<8>(t);
    case 7: return tile_f32<7>(t);
    case 6: return tile_f32<6>(t);
    case 5: return tile_f32<5>(t);
    case 4: return tile_f32<4>(t);
    case 3: return tile_f32<3>(t);
    case 2: return tile_f32<2>(t);
    default: return tile_f32<1>(t);
  }
}

LEWM_AVX512BF16 void bf16_tile(const TileArgs& t) {
  static_assert(kMR == 8, "one case per tile height");
  switch (t.rows) {
    case 8: return tile_bf16<8>(t);
    case 7: return tile_bf16<7>(t);
    case 6: return tile_bf16<6>(t);
    case 5: return tile_bf16<5>(t);
    case 4: return tile_bf16<4>(t);
    case 3: return tile_bf16<3>(t);
    case 2: return tile_bf16<2>(t);
    default: return tile_bf16<1>(t);
  }
}

}  // namespace

// k blocks: fp32 192 (a panel's block, 36 KB, about L1; the rollout's depth of 192 in one block: a split
// writes and reads its partial sums once more), bf16 512 (48 KB; fewer passes over the fp32 partial sums of a
// long depth measured faster than L1-sized blocks of 256, benchmarks/results/linear_kernels-*.json).
// Reading x's rows in place instead of a packed copy measured 1-9% faster per shape (fp32 and bf16) and
// 3-6% per rollout on an AMD EPYC Zen 5 (docs/cpu-planner.md); an fp32 depth is always whole words, so the
// fp32 tile never packs, and the bf16 one only for an odd depth, in plain loops.
const KernelSpec kAvx512Spec{kNR, kMR, 192, false, true, nullptr, f32_tile};
const KernelSpec kAvx512Bf16Spec{kNR, kMR, 512, true, true, portable_pack_rows<kMR, uint16_t>,
                                 bf16_tile};

}  // namespace linear_detail
}  // namespace lewm

#endif  // LEWM_X86_TARGETS
