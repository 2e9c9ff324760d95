// The planner's fp32 matmul on an AVX2 CPU: out = x @ W^T + bias (F.linear is its specification).
//
// Why: on an AVX2-only CPU (AMD EPYC, Zen 3) the rollout spends ~80-90% of its time in four matmul
// shapes, rows x (192 -> 3072 | 1024 -> 192 | 192 -> 2048 | 2048 -> 192), where oneDNN reaches 56-80
// GFLOP/s on one core of a ~93 GFLOP/s peak (measured side by side; the host drifts by ~20% within
// minutes, so only interleaved figures compare). The planner's weights are fixed for a whole plan, so
// they are packed once into 24-column panels; each call then packs its rows in blocks and runs a 4 x 24
// register tile (12 accumulators, three panel loads and four broadcasts per k: FMA-bound).
// Why 4 x 24 and not the 6 x 16 of the BLIS/OpenBLAS Haswell kernels (this kernel's first layout): 7
// loads per 12 FMAs instead of 8; on the shared cloud host it was measured on, a loop that mixes loads
// with FMAs stays well below the FMA peak that a register-only loop reaches (93 GFLOP/s); one load fewer
// per k measured 8-15% faster in a synthetic tile loop, 0.98-1.07x per rollout matmul shape (medians of
// 40 interleaved calls). Each output's sum is the same as with 6 x 16: the same bits.
//
// Blocking: rows in blocks of kRowBlock (their packed block, kRowBlock x kDepthBlock floats, stays in L2
// while every panel passes over it); k in blocks of kDepthBlock (a panel's block, kDepthBlock x 24 floats,
// stays in L1 while it meets every 4-row group). A k block carries on from the partial sums in `out`, so
// each output is one fp32 sum over k in ascending order, started from the bias.
//
// GELU (the MLP's first matmul): applied to each finished tile right after it is stored, while it is in L1
// (gelu8), instead of a separate pass over the (rows, 2048) hidden activations; PyTorch's erf GELU costs
// ~4 ns per element on the AMD EPYC, ~10% of a whole fp32 rollout (profiled), the epilogue ~0.7 ns.
//
// Elsewhere (no AVX2/FMA, aarch64, other compilers) a portable loop computes the same layout.

#include "linear_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_common.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LEWM_LINEAR_AVX2 1
#include <immintrin.h>
#endif

namespace lewm {
namespace {

constexpr int64_t kNR = kLinearPanel;
constexpr int64_t kMR = 4;           // rows per register tile
constexpr int64_t kRowBlock = 192;   // at most this many rows per packed block; blocks are balanced
constexpr int64_t kDepthBlock = 256; // k per block; a last block under half this joins the one before

// The k blocks of a depth K: [k0, k0 + kc) with no block shorter than kDepthBlock / 2 (except K itself).
LEWM_INLINE int64_t depth_block(int64_t k0, int64_t K) {
  const int64_t rest = K - k0;
  return rest < kDepthBlock + kDepthBlock / 2 ? rest : kDepthBlock;
}

// Rows in blocks of equal size (a multiple of kMR), as few as fit kRowBlock: 200 rows as two blocks of
// 100, not 192 + 8 (an 8-row block meets every weight panel for two tiles' worth of work).
LEWM_INLINE int64_t row_block(int64_t M) {
  const int64_t blocks = (M + kRowBlock - 1) / kRowBlock;
  return ((M + blocks - 1) / blocks + kMR - 1) / kMR * kMR;
}

LEWM_INLINE float gelu_erf_inline(float x) {
  const float z = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.f / (1.f + 0.3275911f * z);
  const float poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float erf_abs = 1.f - poly * exp_nonpositive(-z * z);
  return 0.5f * x * (1.f + std::copysign(erf_abs, x));
}

// GELU in place on rows x cols values, rows ldc apart: the portable path's (the AVX2 kernel uses gelu8).
LEWM_INLINE void gelu_rows(float* c, int64_t ldc, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) row[j] = gelu_erf_inline(row[j]);
  }
}

// Where output panel p's first column lives: the output is `planes` of plane_cols columns each (one plane
// when plane_cols == N), plane_stride elements apart; plane_cols is a multiple of kNR, so a panel never
// straddles two planes.
struct OutPlanes {
  int64_t cols, stride;
  LEWM_INLINE int64_t panel_offset(int64_t p) const { return (p * kNR / cols) * stride + p * kNR % cols; }
};

// The bias of panel p (kNR values, zero-padded past N), or null.
LEWM_INLINE const float* panel_bias(const float* bias, int64_t p, int64_t N, float* pad) {
  if (bias == nullptr) return nullptr;
  if ((p + 1) * kNR <= N) return bias + p * kNR;
  for (int64_t j = 0; j < kNR; ++j) pad[j] = p * kNR + j < N ? bias[p * kNR + j] : 0.f;
  return pad;
}

void portable_rows(const float* x, int64_t ldx, const float* packed, const float* bias, float* out, int64_t ldo,
                   OutPlanes planes, int64_t m0, int64_t m1, int64_t N, int64_t K, bool gelu) {
  const int64_t panels = (N + kNR - 1) / kNR;
  float acc[kNR], pad[kNR];
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t p = 0; p < panels; ++p) {
      const float* b = panel_bias(bias, p, N, pad);
      for (int64_t j = 0; j < kNR; ++j) acc[j] = b ? b[j] : 0.f;
      const float* w = packed + p * K * kNR;
      for (int64_t k = 0; k < K; ++k) {
        const float a = x[m * ldx + k];
#pragma omp simd
        for (int64_t j = 0; j < kNR; ++j) acc[j] += a * w[k * kNR + j];
      }
      const int64_t cols = std::min(kNR, N - p * kNR);
      if (gelu) gelu_rows(acc, kNR, 1, cols);
      std::memcpy(out + m * ldo + planes.panel_offset(p), acc, cols * sizeof(float));
    }
  }
}

#ifdef LEWM_LINEAR_AVX2
#define LEWM_AVX2 __attribute__((target("avx2,fma")))

// gelu_erf_inline on G vectors of 8 lanes, in place: the same formula and operations (A&S 7.1.26,
// exp_nonpositive's range reduction and series), so the same bits as the portable path. Each stage runs
// for all G vectors before the next, so G independent chains advance in step. Why: written one vector
// after another, each vector's chain of ~30 dependent operations is longer than the out-of-order window
// overlaps, and the epilogue ran latency-bound (18.7 against 15.3 cycles per vector over 4 x 24 tiles
// from memory, G = 1 against G = 3 or 4, the AMD EPYC). The kernel applies it to a stored tile, one row
// (G = 3) at a time: on the 12 accumulators still in registers the stages spilled (73 against 78 GFLOP/s
// at 150 x (192 -> 2048)); from the stored rows 80.5 against 78 for the previous one-vector epilogue.
template <int G>
LEWM_AVX2 LEWM_INLINE void gelu8(__m256* xs) {
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  __m256 z[G], t[G], poly[G], n[G], r[G], p[G];
  for (int i = 0; i < G; ++i)
    z[i] = _mm256_mul_ps(_mm256_andnot_ps(sign, xs[i]), _mm256_set1_ps(0.70710678118654752f));
  for (int i = 0; i < G; ++i)  // a true division: the same bits as the scalar formula
    t[i] = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z[i], one));
  // exp(-z^2), z^2 >= 0, as exp_nonpositive: -z^2 = n ln2 + r
  for (int i = 0; i < G; ++i)
    r[i] = _mm256_max_ps(_mm256_mul_ps(_mm256_xor_ps(z[i], sign), z[i]), _mm256_set1_ps(-87.f));
  for (int i = 0; i < G; ++i)
    n[i] = _mm256_round_ps(_mm256_mul_ps(r[i], _mm256_set1_ps(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  for (int i = 0; i < G; ++i) r[i] = _mm256_fnmadd_ps(n[i], _mm256_set1_ps(0.693145751953125f), r[i]);
  for (int i = 0; i < G; ++i) r[i] = _mm256_fnmadd_ps(n[i], _mm256_set1_ps(1.42860682030941723212e-6f), r[i]);
  // the A&S polynomial in t and exp's series in r, interleaved
  for (int i = 0; i < G; ++i)
    poly[i] = _mm256_fmadd_ps(_mm256_set1_ps(1.061405429f), t[i], _mm256_set1_ps(-1.453152027f));
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 5040), r[i], _mm256_set1_ps(1.f / 720));
  for (int i = 0; i < G; ++i) poly[i] = _mm256_fmadd_ps(poly[i], t[i], _mm256_set1_ps(1.421413741f));
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(1.f / 120));
  for (int i = 0; i < G; ++i) poly[i] = _mm256_fmadd_ps(poly[i], t[i], _mm256_set1_ps(-0.284496736f));
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(1.f / 24));
  for (int i = 0; i < G; ++i) poly[i] = _mm256_fmadd_ps(poly[i], t[i], _mm256_set1_ps(0.254829592f));
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(1.f / 6));
  for (int i = 0; i < G; ++i) poly[i] = _mm256_mul_ps(poly[i], t[i]);
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(0.5f));
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], one);
  for (int i = 0; i < G; ++i) p[i] = _mm256_fmadd_ps(p[i], r[i], one);
  for (int i = 0; i < G; ++i) {
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n[i]), _mm256_set1_epi32(127)), 23);
    const __m256 erf_abs = _mm256_fnmadd_ps(poly[i], _mm256_mul_ps(p[i], _mm256_castsi256_ps(bits)), one);
    const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(sign, xs[i]));  // copysign(erf_abs, x)
    xs[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), xs[i]), _mm256_add_ps(one, erf));
  }
}

// R x 24 outputs at c (row stride ldc) += a (kc, 4: packed rows, R used) @ b (kc, 24); the sums start
// from c (carry), the bias, or zero; GELU on the finished sums once they are stored if `gelu`.
template <int R>
LEWM_AVX2 void tile(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, bool carry,
                    const float* bias, bool gelu) {
  constexpr int V = kNR / 8;  // 8-float vectors per row of the tile
  __m256 acc[R][V];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v)
      acc[r][v] = carry ? _mm256_loadu_ps(c + r * ldc + 8 * v)
                  : bias != nullptr ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + k * kNR + 8 * v);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + k * kMR + r);
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

LEWM_AVX2 void tile_rows(int64_t rows, const float* a, const float* b, int64_t kc, float* c, int64_t ldc, bool carry,
                         const float* bias, bool gelu) {
  static_assert(kMR == 4, "one case per tile height");
  switch (rows) {
    case 4: return tile<4>(a, b, kc, c, ldc, carry, bias, gelu);
    case 3: return tile<3>(a, b, kc, c, ldc, carry, bias, gelu);
    case 2: return tile<2>(a, b, kc, c, ldc, carry, bias, gelu);
    default: return tile<1>(a, b, kc, c, ldc, carry, bias, gelu);
  }
}

// Rows [m0, m0 + mc) x k [k0, k0 + kc) of x into `dst` as 4-row groups, each (kc, 4) (k-major: the tile
// reads one stream), zero rows past mc. Eight k of four rows at a time by a 4 x 8 register transpose.
LEWM_AVX2 void pack_rows(const float* x, int64_t ldx, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst) {
  static_assert(kMR == 4, "the transpose below packs 4-row groups");
  for (int64_t g = 0; g < mc; g += kMR) {
    float* d = dst + g * kc;
    const int64_t rows = std::min(kMR, mc - g);
    const float* src[kMR];
    for (int64_t r = 0; r < kMR; ++r) src[r] = x + (m0 + g + std::min(r, rows - 1)) * ldx + k0;
    int64_t k = 0;
    if (rows == kMR) {
      for (; k + 8 <= kc; k += 8) {
        const __m256 r0 = _mm256_loadu_ps(src[0] + k), r1 = _mm256_loadu_ps(src[1] + k);
        const __m256 r2 = _mm256_loadu_ps(src[2] + k), r3 = _mm256_loadu_ps(src[3] + k);
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);  // k, k+4 | k+1, k+5
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);  // k+2, k+6 | k+3, k+7
        float* o = d + k * kMR;
        _mm256_storeu_ps(o + 0, _mm256_permute2f128_ps(u0, u1, 0x20));
        _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
        _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
        _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
      }
    }
    for (; k < kc; ++k)
      for (int64_t r = 0; r < kMR; ++r) d[k * kMR + r] = r < rows ? src[r][k] : 0.f;
  }
}

// The weight block the panel after p reads (the next panel's, or the next k block's first panel), fetched
// into L2 a few 64-byte lines per tile while panel p runs. Why: a panel block is contiguous, but the next
// one starts K x 24 floats further on when K is split, and the hardware prefetcher, which learns within a
// 4 KB page, starts each panel on misses to L3 or memory (a rollout reads ~40 MB of weights per step, more
// than the L3 keeps). Measured in one 150-candidate rollout chunk on one thread of the AMD EPYC, A/B in
// one process: the matmuls 307 -> 297 ms, the chunk 341 -> 334 ms (medians of 12).
struct NextPanel {
  const char* at;
  int64_t lines, per_tile;
  LEWM_AVX2 void fetch(int64_t tile) const {
    for (int64_t l = tile * per_tile, end = std::min(lines, l + per_tile); l < end; ++l)
      _mm_prefetch(at + 64 * l, _MM_HINT_T1);
  }
};

LEWM_INLINE NextPanel next_panel(const float* packed, int64_t p, int64_t panels, int64_t k0, int64_t kc, int64_t K,
                                 int64_t tiles) {
  const bool more_panels = p + 1 < panels;
  if (!more_panels && k0 + kc >= K) return {nullptr, 0, 0};
  const float* at = more_panels ? packed + ((p + 1) * K + k0) * kNR : packed + (k0 + kc) * kNR;
  const int64_t lines = (more_panels ? kc : depth_block(k0 + kc, K)) * kNR * sizeof(float) / 64;
  return {reinterpret_cast<const char*>(at), lines, (lines + tiles - 1) / tiles};
}

// One row block of out: rows [mb, mb + mc), mc <= kRowBlock.
LEWM_AVX2 void avx2_block(const float* x, int64_t ldx, const float* packed, const float* bias, float* out,
                          int64_t ldo, OutPlanes planes, int64_t mb, int64_t mc, int64_t N, int64_t K, bool gelu) {
  thread_local std::vector<float> rows_buf;
  rows_buf.resize(kRowBlock * (kDepthBlock + kDepthBlock / 2));
  const int64_t panels = (N + kNR - 1) / kNR;
  float pad[kNR], edge[kMR * kNR];  // the bias and a tile of the last panel when N % kNR != 0
  for (int64_t k0 = 0; k0 < K; k0 += depth_block(k0, K)) {
    const int64_t kc = depth_block(k0, K);
    const bool carry = k0 > 0, last = k0 + kc >= K;
    pack_rows(x, ldx, mb, mc, k0, kc, rows_buf.data());
    for (int64_t p = 0; p < panels; ++p) {
      const float* b = packed + (p * K + k0) * kNR;
      const NextPanel next = next_panel(packed, p, panels, k0, kc, K, (mc + kMR - 1) / kMR);
      const float* pb = carry ? nullptr : panel_bias(bias, p, N, pad);
      const int64_t cols = std::min(kNR, N - p * kNR);
      for (int64_t g = 0; g < mc; g += kMR) {
        const int64_t rows = std::min(kMR, mc - g);
        float* c = out + (mb + g) * ldo + planes.panel_offset(p);
        next.fetch(g / kMR);
        if (cols == kNR) {
          tile_rows(rows, rows_buf.data() + g * kc, b, kc, c, ldo, carry, pb, gelu && last);
          continue;
        }
        for (int64_t r = 0; r < rows && carry; ++r) std::memcpy(edge + r * kNR, c + r * ldo, cols * sizeof(float));
        tile_rows(rows, rows_buf.data() + g * kc, b, kc, edge, kNR, carry, pb, gelu && last);
        for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldo, edge + r * kNR, cols * sizeof(float));
      }
    }
  }
}
#endif  // LEWM_LINEAR_AVX2

}  // namespace

void pack_linear_weight(const float* w, int64_t N, int64_t K, float* packed) {
  const int64_t panels = (N + kNR - 1) / kNR;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < kNR; ++j) {
        const int64_t n = p * kNR + j;
        packed[(p * K + k) * kNR + j] = n < N ? w[n * K + k] : 0.f;
      }
}

bool linear_f32_native() {
#ifdef LEWM_LINEAR_AVX2
  static const bool native = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return native;
#else
  return false;
#endif
}

float gelu_erf(float x) { return gelu_erf_inline(x); }

void linear_f32(const float* x, int64_t ldx, const float* packed, const float* bias, float* out, int64_t ldo,
                int64_t M, int64_t N, int64_t K, bool gelu, int num_threads, int64_t plane_cols,
                int64_t plane_stride) {
  const bool native = linear_f32_native();
  const OutPlanes planes = plane_cols > 0 ? OutPlanes{plane_cols, plane_stride} : OutPlanes{N, 0};
  const int64_t block = row_block(std::max<int64_t>(M, 1)), blocks = (M + block - 1) / block;
  num_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, blocks)));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t m0 = blk * block, m1 = std::min(M, m0 + block);
#ifdef LEWM_LINEAR_AVX2
    if (native) {
      avx2_block(x, ldx, packed, bias, out, ldo, planes, m0, m1 - m0, N, K, gelu);
      continue;
    }
#endif
    (void)native;
    portable_rows(x, ldx, packed, bias, out, ldo, planes, m0, m1, N, K, gelu);
  }
}

}  // namespace lewm
