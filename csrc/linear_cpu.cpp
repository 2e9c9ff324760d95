// The planner's fp32 matmul on an AVX2 CPU: out = x @ W^T + bias (F.linear is its specification).
//
// Why: on an AVX2-only CPU (AMD EPYC, Zen 3) the rollout spends ~80% of its time in four matmul shapes,
// rows x (192 -> 3072 | 1024 -> 192 | 192 -> 2048 | 2048 -> 192), where oneDNN reaches 56-80 GFLOP/s on
// one core of a ~94 GFLOP/s peak and this kernel 64-88 (measured side by side; the host drifts by ~20%
// within minutes, so only interleaved figures compare). The planner's weights are fixed for a whole plan,
// so they are packed once into 16-column panels; each call then packs its rows in blocks and runs a
// 6 x 16 register tile (12 accumulators, two panel loads and six broadcasts per k: FMA-bound), the
// layout of the BLIS/OpenBLAS Haswell kernels.
//
// Blocking: rows in blocks of kRowBlock (their packed block, kRowBlock x kDepthBlock floats, stays in L2
// while every panel passes over it); k in blocks of kDepthBlock (a panel's block, kDepthBlock x 16 floats,
// stays in L1 while it meets every 6-row group). A k block carries on from the partial sums in `out`, so
// each output is one fp32 sum over k in ascending order, started from the bias.
//
// GELU (the MLP's first matmul): applied to each finished tile while it is in L1, instead of a separate
// pass over the (rows, 2048) hidden activations; PyTorch's erf GELU costs ~4 ns per element on the AMD
// EPYC, ~10% of a whole fp32 rollout (profiled), the epilogue a fraction of that.
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
constexpr int64_t kMR = 6;           // rows per register tile
constexpr int64_t kRowBlock = 192;   // at most this many rows per packed block; blocks are balanced
constexpr int64_t kDepthBlock = 256; // k per block; a last block under half this joins the one before

// The k blocks of a depth K: [k0, k0 + kc) with no block shorter than kDepthBlock / 2 (except K itself).
LEWM_INLINE int64_t depth_block(int64_t k0, int64_t K) {
  const int64_t rest = K - k0;
  return rest < kDepthBlock + kDepthBlock / 2 ? rest : kDepthBlock;
}

// Rows in blocks of equal size (a multiple of kMR), as few as fit kRowBlock: 150 rows as one block, not
// 144 + 6 (a 6-row block meets every weight panel for one tile's worth of work).
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

// GELU in place on rows x cols values, rows ldc apart (a tile, in L1). Vectorised by the compiler in the
// caller's ISA (inlined into the AVX2 kernel).
LEWM_INLINE void gelu_rows(float* c, int64_t ldc, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) row[j] = gelu_erf_inline(row[j]);
  }
}

// The bias of panel p (16 values, zero-padded past N), or null.
LEWM_INLINE const float* panel_bias(const float* bias, int64_t p, int64_t N, float* pad) {
  if (bias == nullptr) return nullptr;
  if ((p + 1) * kNR <= N) return bias + p * kNR;
  for (int64_t j = 0; j < kNR; ++j) pad[j] = p * kNR + j < N ? bias[p * kNR + j] : 0.f;
  return pad;
}

void portable_rows(const float* x, int64_t ldx, const float* packed, const float* bias, float* out, int64_t ldo,
                   int64_t m0, int64_t m1, int64_t N, int64_t K, bool gelu) {
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
      std::memcpy(out + m * ldo + p * kNR, acc, cols * sizeof(float));
    }
  }
}

#ifdef LEWM_LINEAR_AVX2
#define LEWM_AVX2 __attribute__((target("avx2,fma")))

// R x 16 outputs at c (row stride ldc) += a (kc, 6: packed rows, R used) @ b (kc, 16); the sums start
// from c (carry), the bias, or zero.
template <int R>
LEWM_AVX2 void tile(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, bool carry,
                    const float* bias) {
  __m256 acc[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    if (carry) {
      acc[r][0] = _mm256_loadu_ps(c + r * ldc);
      acc[r][1] = _mm256_loadu_ps(c + r * ldc + 8);
    } else if (bias != nullptr) {
      acc[r][0] = _mm256_loadu_ps(bias);
      acc[r][1] = _mm256_loadu_ps(bias + 8);
    } else {
      acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kNR), b1 = _mm256_loadu_ps(b + k * kNR + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + k * kMR + r);
      acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc[r][0]);
    _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
  }
}

LEWM_AVX2 void tile_rows(int64_t rows, const float* a, const float* b, int64_t kc, float* c, int64_t ldc, bool carry,
                         const float* bias) {
  switch (rows) {
    case 6: return tile<6>(a, b, kc, c, ldc, carry, bias);
    case 5: return tile<5>(a, b, kc, c, ldc, carry, bias);
    case 4: return tile<4>(a, b, kc, c, ldc, carry, bias);
    case 3: return tile<3>(a, b, kc, c, ldc, carry, bias);
    case 2: return tile<2>(a, b, kc, c, ldc, carry, bias);
    default: return tile<1>(a, b, kc, c, ldc, carry, bias);
  }
}

// Rows [m0, m0 + mc) x k [k0, k0 + kc) of x into `dst` as 6-row groups, each (kc, 6) (k-major: the tile
// reads one stream), zero rows past mc. Eight k of six rows at a time: an 8 x 8 register transpose (two
// lanes unused), stored 6 floats apart with overlapping 8-float stores (dst has 2 floats of slack).
LEWM_AVX2 void pack_rows(const float* x, int64_t ldx, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst) {
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
        const __m256 r4 = _mm256_loadu_ps(src[4] + k), r5 = _mm256_loadu_ps(src[5] + k);
        const __m256 z = _mm256_setzero_ps();
        // 8 x 8 transpose of rows (r0 .. r5, 0, 0): column i = k + i across the six rows.
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 u4 = _mm256_shuffle_ps(t4, z, 0x44), u5 = _mm256_shuffle_ps(t4, z, 0xEE);
        const __m256 u6 = _mm256_shuffle_ps(t5, z, 0x44), u7 = _mm256_shuffle_ps(t5, z, 0xEE);
        float* o = d + k * kMR;
        _mm256_storeu_ps(o + 0 * kMR, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(o + 1 * kMR, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(o + 2 * kMR, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(o + 3 * kMR, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(o + 4 * kMR, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(o + 5 * kMR, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(o + 6 * kMR, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(o + 7 * kMR, _mm256_permute2f128_ps(u3, u7, 0x31));
      }
    }
    for (; k < kc; ++k)
      for (int64_t r = 0; r < kMR; ++r) d[k * kMR + r] = r < rows ? src[r][k] : 0.f;
  }
}

// One row block of out: rows [mb, mb + mc), mc <= kRowBlock.
LEWM_AVX2 void avx2_block(const float* x, int64_t ldx, const float* packed, const float* bias, float* out,
                          int64_t ldo, int64_t mb, int64_t mc, int64_t N, int64_t K, bool gelu) {
  thread_local std::vector<float> rows_buf;
  rows_buf.resize(kRowBlock * (kDepthBlock + kDepthBlock / 2) + 2);  // + the packing's slack
  const int64_t panels = (N + kNR - 1) / kNR;
  float pad[kNR], edge[kMR * kNR];  // the bias and a 6 x 16 tile of the last panel when N % 16 != 0
  for (int64_t k0 = 0; k0 < K; k0 += depth_block(k0, K)) {
    const int64_t kc = depth_block(k0, K);
    const bool carry = k0 > 0, last = k0 + kc >= K;
    pack_rows(x, ldx, mb, mc, k0, kc, rows_buf.data());
    for (int64_t p = 0; p < panels; ++p) {
      const float* b = packed + (p * K + k0) * kNR;
      const float* pb = carry ? nullptr : panel_bias(bias, p, N, pad);
      const int64_t cols = std::min(kNR, N - p * kNR);
      for (int64_t g = 0; g < mc; g += kMR) {
        const int64_t rows = std::min(kMR, mc - g);
        float* c = out + (mb + g) * ldo + p * kNR;
        if (cols == kNR) {
          tile_rows(rows, rows_buf.data() + g * kc, b, kc, c, ldo, carry, pb);
          if (gelu && last) gelu_rows(c, ldo, rows, kNR);
          continue;
        }
        for (int64_t r = 0; r < rows && carry; ++r) std::memcpy(edge + r * kNR, c + r * ldo, cols * sizeof(float));
        tile_rows(rows, rows_buf.data() + g * kc, b, kc, edge, kNR, carry, pb);
        if (gelu && last) gelu_rows(edge, kNR, rows, cols);
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
                int64_t M, int64_t N, int64_t K, bool gelu, int num_threads) {
  const bool native = linear_f32_native();
  const int64_t block = row_block(std::max<int64_t>(M, 1)), blocks = (M + block - 1) / block;
  num_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, blocks)));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t m0 = blk * block, m1 = std::min(M, m0 + block);
#ifdef LEWM_LINEAR_AVX2
    if (native) {
      avx2_block(x, ldx, packed, bias, out, ldo, m0, m1 - m0, N, K, gelu);
      continue;
    }
#endif
    (void)native;
    portable_rows(x, ldx, packed, bias, out, ldo, m0, m1, N, K, gelu);
  }
}

}  // namespace lewm
