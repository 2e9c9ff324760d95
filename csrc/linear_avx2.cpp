// The matmul's AVX2 + FMA tile (fp32): 4 rows x 24 columns, 12 accumulators; per k three panel loads and
// four broadcasts feed 12 FMAs. Why 4 x 24 and not the 6 x 16 of the BLIS/OpenBLAS Haswell kernels: one
// load fewer per 12 FMAs, and on the AMD EPYC (Zen 3) a loop that mixes loads with FMAs stays well below
// the FMA peak (benchmarks/results/linear_kernels-*.json). Compiled for AVX2 by target attributes; called
// only where the CPU has AVX2 and FMA (linear_cpu.cpp).

#include <cstring>

#include "cpu_common.h"
#include "linear_kernels.h"

#ifdef LEWM_X86_TARGETS
#include <immintrin.h>

namespace lewm {
namespace linear_detail {
namespace {

constexpr int64_t kNR = 24, kMR = 4;

// The GELU (linear_kernels.h: the rational erf by Horner's rule, then x/2 + x/2 erf) on G vectors of 8
// lanes in place, each step for all G vectors before the next: G independent chains in step. max/min return
// their second operand for a NaN, so a NaN x gives the clamp there, and NaN through x/2.
template <int G>
LEWM_AVX2 LEWM_INLINE void gelu8(__m256* xs) {
  __m256 xc[G], s[G], p[G], q[G];
  for (int i = 0; i < G; ++i)
    xc[i] = _mm256_min_ps(_mm256_max_ps(xs[i], _mm256_set1_ps(-kGeluClamp)), _mm256_set1_ps(kGeluClamp));
  for (int i = 0; i < G; ++i) s[i] = _mm256_mul_ps(xc[i], xc[i]);
  for (int i = 0; i < G; ++i) p[i] = _mm256_set1_ps(kGeluP[6]), q[i] = _mm256_set1_ps(kGeluQ[5]);
  for (int j = 5; j >= 0; --j)
    for (int i = 0; i < G; ++i) {
      p[i] = _mm256_fmadd_ps(p[i], s[i], _mm256_set1_ps(kGeluP[j]));
      if (j < 5) q[i] = _mm256_fmadd_ps(q[i], s[i], _mm256_set1_ps(kGeluQ[j]));
    }
  for (int i = 0; i < G; ++i) {
    const __m256 erf = _mm256_div_ps(_mm256_mul_ps(xc[i], p[i]), q[i]);
    const __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), xs[i]);
    xs[i] = _mm256_fmadd_ps(half, erf, half);
  }
}

// R x 24 outputs at c (row stride ldc) <- a (R rows of kc, a_row bytes apart, a_step bytes from one k to
// the next: packed groups or x's rows in place) @ b (kc, 24), the sums started from `carry` (row stride
// ld_carry), the bias or zero; GELU on the finished sums once they are stored.
template <int R>
LEWM_AVX2 void tile(const char* a, int64_t a_row, int64_t a_step, const float* b, int64_t kc, const float* carry,
                    int64_t ld_carry, const float* bias, float* c, int64_t ldc, bool gelu) {
  constexpr int V = kNR / 8;  // 8-float vectors per row of the tile
  __m256 acc[R][V];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v)
      acc[r][v] = carry ? _mm256_loadu_ps(carry + r * ld_carry + 8 * v)
                  : bias != nullptr ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + k * kNR + 8 * v);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(reinterpret_cast<const float*>(a + k * a_step + r * a_row));
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
  if (gelu) {  // on the stored tile, a row at a time: 12 live accumulators leave gelu8 no registers
    for (int r = 0; r < R; ++r) {
      __m256 row[V];
      for (int v = 0; v < V; ++v) row[v] = _mm256_loadu_ps(c + r * ldc + 8 * v);
      gelu8<V>(row);
      for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, row[v]);
    }
  }
}

LEWM_AVX2 void tile_rows(const TileArgs& t, const float* carry, int64_t ld_carry, float* c, int64_t ldc) {
  static_assert(kMR == 4, "one case per tile height");
  const char* a = static_cast<const char*>(t.a);
  const float* b = static_cast<const float*>(t.b);
  switch (t.rows) {
    case 4: return tile<4>(a, t.a_row, t.a_step, b, t.kc, carry, ld_carry, t.bias, c, ldc, t.gelu);
    case 3: return tile<3>(a, t.a_row, t.a_step, b, t.kc, carry, ld_carry, t.bias, c, ldc, t.gelu);
    case 2: return tile<2>(a, t.a_row, t.a_step, b, t.kc, carry, ld_carry, t.bias, c, ldc, t.gelu);
    default: return tile<1>(a, t.a_row, t.a_step, b, t.kc, carry, ld_carry, t.bias, c, ldc, t.gelu);
  }
}

// TileArgs -> tile: fp32 in and out, so the partial sums and the results go to the same place. A panel's
// last columns past N (cols < 24) go through a whole tile on the stack.
LEWM_AVX2 void avx2_tile(const TileArgs& t) {
  float* dst = t.partial != nullptr ? t.partial : static_cast<float*>(t.out);
  const int64_t ld = t.partial != nullptr ? t.ld_partial : t.ldo;
  if (t.cols == kNR) return tile_rows(t, t.carry, t.ld_carry, dst, ld);
  float edge[kMR * kNR] = {};
  for (int64_t r = 0; r < t.rows && t.carry; ++r) std::memcpy(edge + r * kNR, t.carry + r * t.ld_carry, t.cols * 4);
  tile_rows(t, t.carry ? edge : nullptr, kNR, edge, kNR);
  for (int64_t r = 0; r < t.rows; ++r) std::memcpy(dst + r * ld, edge + r * kNR, t.cols * 4);
}
}  // namespace

// k blocks of 256: a panel's block, 256 x 24 floats (24 KB), stays in L1. The tile reads x's rows in place (an fp32
// depth is always whole words, so it never packs): 1-4% faster per shape than a packed copy, a rollout -1.6%, on an
// AMD EPYC Zen 5 under LEWM_CPU_KERNEL=avx2 (2026-12-07; not timed on an AVX2-only CPU).
const KernelSpec kAvx2Spec{kNR, kMR, 256, false, true, nullptr, avx2_tile};

}  // namespace linear_detail
}  // namespace lewm

#endif  // LEWM_X86_TARGETS
