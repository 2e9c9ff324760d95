// The planner's matmul on the CPU: out = x @ W^T + bias (F.linear is its specification), fp32 or bf16.
//
// Why its own: the planner's weights are fixed for a whole plan and its matmuls are small (150-750 rows
// per call), so the weights are packed once into panels of NR columns and each call at most packs its rows
// (the AVX2 and AVX-512 tiles read them where they are); the MLP's GELU and the AdaLN modulations' column planes are
// written by the matmul itself (epilogues), not by extra passes over the output. Rows go in blocks (a block
// stays in L2 while every panel passes over it), k in blocks (a panel's block stays in L1 while it meets
// every MR-row group); a register tile of MR x NR outputs accumulates in fp32 and carries on from the partial
// sums of the k blocks before.
//
// One build runs everywhere: each ISA's tile is compiled for its ISA by target attributes (linear_avx2.cpp,
// linear_avx512.cpp) and chosen at run time from cpuid (linear_kernel), never run where the CPU lacks it;
// a portable tile in plain C++ computes the same layout on any CPU (aarch64, old x86, other compilers).
// docs/cpu-planner.md says how the kernels are built and how the planner picks them.

#include "linear_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "linear_kernels.h"

namespace lewm {
namespace {

using linear_detail::KernelSpec;
using linear_detail::TileArgs;
using linear_detail::kGeluClamp;
using linear_detail::kGeluP;
using linear_detail::kGeluQ;
using linear_detail::portable_pack_rows;

// A row block's share of x within one k block, at most: every weight panel passes over the block while it stays
// in L2, and each block streams every panel once more. 256 KB measured 2-3% faster per plan than a fixed 192 rows
// (CEM, E = 1, bf16 and fp32, AMD EPYC Zen 5, medians of 20-40 interleaved pairs): a window slide's 450-row
// matmuls run in one or two blocks instead of three (depth 192: bf16 682 rows, fp32 341; bf16 depth 2048 in k
// blocks of 512: 256), so their weights, which come from L3, are streamed fewer times.
constexpr int64_t kRowBlockBytes = 256 * 1024;

// 0.5 x (1 + erf(x / sqrt 2)), erf by linear_kernels.h's rational; without FMAs where the build has none.
LEWM_INLINE float gelu_erf_inline(float x) {
  const float xc = std::min(std::max(x, -kGeluClamp), kGeluClamp);  // NaN stays NaN
  const float s = xc * xc;
  float p = kGeluP[6], q = kGeluQ[5];
  for (int j = 5; j >= 0; --j) p = p * s + kGeluP[j];
  for (int j = 4; j >= 0; --j) q = q * s + kGeluQ[j];
  const float half = 0.5f * x;
  return half + half * (xc * p / q);
}

// ---- the portable tile: plain loops the compiler vectorises for the target's baseline (NEON, SSE2) ----

template <int64_t NR, int64_t MR, bool BF16>
void portable_tile(const TileArgs& t) {
  float acc[MR][NR];
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t j = 0; j < NR; ++j)
      acc[r][j] = t.carry ? (j < t.cols ? t.carry[r * t.ld_carry + j] : 0.f) : t.bias ? t.bias[j] : 0.f;
  if constexpr (BF16) {  // each pair's odd product first, then the even one: vdpbf16ps's order
    const uint16_t *a = static_cast<const uint16_t*>(t.a), *b = static_cast<const uint16_t*>(t.b);
    for (int64_t p = 0; p < (t.kc + 1) / 2; ++p)
      for (int64_t r = 0; r < t.rows; ++r) {
        const float a1 = bf16_to_float(a[(p * MR + r) * 2 + 1]), a0 = bf16_to_float(a[(p * MR + r) * 2]);
        for (int64_t j = 0; j < NR; ++j) {
          acc[r][j] += a1 * bf16_to_float(b[(p * NR + j) * 2 + 1]);
          acc[r][j] += a0 * bf16_to_float(b[(p * NR + j) * 2]);
        }
      }
  } else {
    const float *a = static_cast<const float*>(t.a), *b = static_cast<const float*>(t.b);
    for (int64_t k = 0; k < t.kc; ++k)
      for (int64_t r = 0; r < t.rows; ++r) {
        const float ar = a[k * MR + r];
#pragma omp simd
        for (int64_t j = 0; j < NR; ++j) acc[r][j] += ar * b[k * NR + j];
      }
  }
  for (int64_t r = 0; r < t.rows; ++r) {
    if (t.partial != nullptr) {
      std::memcpy(t.partial + r * t.ld_partial, acc[r], t.cols * sizeof(float));
      continue;
    }
    if (t.gelu)
      for (int64_t j = 0; j < t.cols; ++j) acc[r][j] = gelu_erf_inline(acc[r][j]);
    if constexpr (BF16) {
      uint16_t* o = static_cast<uint16_t*>(t.out) + r * t.ldo;
      for (int64_t j = 0; j < t.cols; ++j) o[j] = float_to_bf16(acc[r][j]);
    } else {
      std::memcpy(static_cast<float*>(t.out) + r * t.ldo, acc[r], t.cols * sizeof(float));
    }
  }
}

constexpr KernelSpec kPortableSpec{24, 4, 256, false, false, portable_pack_rows<4, float>,
                                   portable_tile<24, 4, false>};
constexpr KernelSpec kPortableBf16Spec{48, 4, 256, true, false, portable_pack_rows<4, uint16_t>,
                                       portable_tile<48, 4, true>};

const KernelSpec* spec_of(int kernel) {
  switch (kernel) {
    case kLinearPortable: return &kPortableSpec;
    case kLinearPortableBf16: return &kPortableBf16Spec;
#ifdef LEWM_X86_TARGETS
    case kLinearAvx2: return &linear_detail::kAvx2Spec;
    case kLinearAvx512: return &linear_detail::kAvx512Spec;
    case kLinearAvx512Bf16: return &linear_detail::kAvx512Bf16Spec;
#endif
    default: return nullptr;
  }
}

// ---- which kernel runs here ----

struct CpuFeatures {
  bool avx2 = false, avx512 = false, avx512bf16 = false;
};

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#ifdef LEWM_X86_TARGETS
    __builtin_cpu_init();  // libgcc's / compiler-rt's cpuid, which also asks the OS (xgetbv) for the state
    c.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    c.avx512 = c.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    c.avx512bf16 = c.avx512 && __builtin_cpu_supports("avx512bf16");
#endif
    return c;
  }();
  return f;
}

// LEWM_CPU_KERNEL's ISA levels, lowest first; the kernels with their level, widest first.
constexpr const char* kLevels[] = {"portable", "avx2", "avx512", "avx512bf16"};
struct Ranked {
  int kernel, level;
  bool bf16;
};
constexpr Ranked kByLevel[] = {{kLinearAvx512Bf16, 3, true}, {kLinearAvx512, 2, false}, {kLinearAvx2, 1, false},
                               {kLinearPortableBf16, 0, true}, {kLinearPortable, 0, false}};

int level_cap() {
  static const std::string raw = [] {
    const char* v = std::getenv("LEWM_CPU_KERNEL");
    return std::string(v ? v : "");
  }();
  if (raw.empty() || raw == "auto") return 3;
  for (int i = 0; i < 4; ++i)
    if (raw == kLevels[i]) return i;
  throw std::invalid_argument("LEWM_CPU_KERNEL: expected auto, portable, avx2, avx512 or avx512bf16, got '" + raw +
                              "'");
}

// ---- the blocking (one row block on the calling thread) ----

// Rows in blocks of equal size (a multiple of mr), as few as fit kRowBlockBytes of x's rows per k block
// (`row_bytes` each): 400 rows of 341 at most as two blocks of 200, not 341 + 59 (a small block meets every
// weight panel for few tiles' worth of work).
int64_t row_block(int64_t M, int64_t mr, int64_t row_bytes) {
  const int64_t most = std::max<int64_t>(mr, kRowBlockBytes / row_bytes / mr * mr);
  const int64_t blocks = (M + most - 1) / most;
  return ((M + blocks - 1) / blocks + mr - 1) / mr * mr;
}

// The k blocks of a depth K: [k0, k0 + kc), no block shorter than depth / 2 (except K itself).
int64_t depth_block(int64_t k0, int64_t K, int64_t depth) {
  const int64_t rest = K - k0;
  return rest < depth + depth / 2 ? rest : depth;
}

// Where output panel p's first column lives: the output is `planes` of plane_cols columns each (one plane
// when plane_cols == N), plane_stride elements apart; plane_cols is a multiple of the panel, so a panel
// never straddles two planes.
struct OutPlanes {
  int64_t cols, stride, nr;
  int64_t panel_offset(int64_t p) const { return (p * nr / cols) * stride + p * nr % cols; }
};

// Prefetches into L2 (hint 2) or for writing into L1 (hint 3); nothing where the compiler has no builtin.
template <int Write, int Hint>
LEWM_INLINE void prefetch(const char* at) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(at, Write, Hint);
#else
  (void)at;
#endif
}

// The weight block the panel after p reads (the next panel's, or the next k block's first panel), fetched
// into L2 a few 64-byte lines per tile while panel p runs. Why: a panel's block is contiguous, but the next
// one starts K x NR values further on when K is split, and the hardware prefetcher, which learns within a
// 4 KB page, would start each panel on misses to L3 or memory (a rollout step reads all the predictor's
// weights, more than the L3 keeps for one core).
struct NextPanel {
  const char* at = nullptr;
  int64_t lines = 0, per_tile = 0;
  void fetch(int64_t tile) const {
    for (int64_t l = tile * per_tile, end = std::min(lines, l + per_tile); l < end; ++l) prefetch<0, 2>(at + 64 * l);
  }
};

// A tile's destination rows (`bytes` each, `stride` apart), fetched for writing one tile ahead. Why: a fresh
// output is in no cache, and without the fetch the reads for ownership of a tile's lines start only at its
// stores, at the tile's end, and stall the next tile.
struct Dest {
  char* at;
  int64_t stride, bytes;
  void fetch(int64_t rows) const {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t l = 0; l < bytes; l += 64) prefetch<1, 3>(at + r * stride + l);
  }
};

// The matmul as linear() received it; pointers in bytes where the element type is the kernel's.
struct Problem {
  const char *x, *packed;
  int64_t ldx;
  const float* bias;  // fp32 or null
  char* out;
  int64_t ldo;
  OutPlanes planes;
  int64_t N, K;
  bool gelu;
};

// One block of rows [mb, mb + mc) through every k block and panel, on the calling thread.
class RowBlock {
 public:
  RowBlock(const KernelSpec& s, const Problem& m, int64_t mb, int64_t mc)
      : s(s), m(m), mb(mb), mc(mc), esize(s.bf16 ? 2 : 4), pair(s.bf16 ? 2 : 1), panels((m.N + s.nr - 1) / s.nr),
        kpacked((m.K + pair - 1) / pair * pair), tiles((mc + s.mr - 1) / s.mr),
        in_place(s.rows_in_place && m.K % pair == 0) {
    if (!in_place) rows_buf().resize((mc + s.mr) * (s.depth + s.depth / 2 + 1) * esize);
    if (s.bf16 && m.K > depth_block(0, m.K, s.depth)) sums().resize(mc * panels * s.nr);
  }

  void run() {
    for (int64_t k0 = 0, kc; k0 < m.K; k0 += kc) {
      kc = depth_block(k0, m.K, s.depth);
      if (!in_place) s.pack_rows(m.x, m.ldx, mb, mc, k0, kc, rows_buf().data());
      for (int64_t p = 0; p < panels; ++p) run_panel(p, k0, kc);
    }
  }

 private:
  const KernelSpec& s;
  const Problem& m;
  const int64_t mb, mc, esize, pair, panels, kpacked, tiles;
  const bool in_place;  // the tiles read x's rows where they are (KernelSpec::rows_in_place)

  static std::vector<char>& rows_buf() {  // the packed rows of a k block
    thread_local std::vector<char> buf;
    return buf;
  }
  static std::vector<float>& sums() {  // bf16 output, K split: the fp32 partial sums (mc, panels * nr)
    thread_local std::vector<float> buf;
    return buf;
  }
  char* out_at(int64_t p, int64_t g) const { return m.out + ((mb + g) * m.ldo + m.planes.panel_offset(p)) * esize; }
  // The fp32 sums of tile g in panel p: in the output itself (fp32), else in sums().
  float* acc_at(int64_t p, int64_t g) const {
    return s.bf16 ? sums().data() + g * panels * s.nr + p * s.nr : reinterpret_cast<float*>(out_at(p, g));
  }
  Dest dest(int64_t p, int64_t g, bool last) const {
    if (last || !s.bf16) return {out_at(p, g), m.ldo * esize, s.nr * esize};
    return {reinterpret_cast<char*>(acc_at(p, g)), panels * s.nr * 4, s.nr * 4};
  }
  NextPanel next_panel(int64_t p, int64_t k0, int64_t kc) const {
    if (p + 1 == panels && k0 + kc >= m.K) return {};
    const bool same_k = p + 1 < panels;
    const int64_t k_next = same_k ? k0 : k0 + kc, depth_next = same_k ? kc : depth_block(k_next, m.K, s.depth);
    const int64_t lines = depth_next * s.nr * esize / 64;
    return {m.packed + ((same_k ? p + 1 : 0) * kpacked + k_next) * s.nr * esize, lines, (lines + tiles - 1) / tiles};
  }

  void run_panel(int64_t p, int64_t k0, int64_t kc) {
    const bool last = k0 + kc >= m.K;
    const NextPanel next = next_panel(p, k0, kc);
    float bias[linear_detail::kMaxPanel];  // the panel's bias in fp32, zero past N
    TileArgs t{};
    t.b = m.packed + (p * kpacked + k0) * s.nr * esize;
    t.kc = kc, t.cols = std::min(s.nr, m.N - p * s.nr), t.gelu = m.gelu && last;
    if (k0 == 0 && m.bias != nullptr) {
      for (int64_t j = 0; j < s.nr; ++j) bias[j] = j < t.cols ? m.bias[p * s.nr + j] : 0.f;
      t.bias = bias;
    }
    const int64_t ld_acc = s.bf16 ? panels * s.nr : m.ldo, group = (kc + pair - 1) / pair * pair * s.mr;
    for (int64_t g = 0; g < mc; g += s.mr) {
      next.fetch(g / s.mr);
      if (g + s.mr < mc) dest(p, g + s.mr, last).fetch(std::min(s.mr, mc - g - s.mr));
      if (in_place) {
        t.a = m.x + ((mb + g) * m.ldx + k0) * esize, t.a_row = m.ldx * esize, t.a_step = 4;
      } else {
        t.a = rows_buf().data() + (g / s.mr) * group * esize, t.a_row = 4, t.a_step = s.mr * 4;
      }
      t.rows = std::min(s.mr, mc - g);
      t.carry = k0 > 0 ? acc_at(p, g) : nullptr, t.ld_carry = ld_acc;
      t.partial = last ? nullptr : acc_at(p, g), t.ld_partial = ld_acc;
      t.out = last ? out_at(p, g) : nullptr, t.ldo = m.ldo;
      s.tile(t);
    }
  }
};

}  // namespace

const char* linear_kernel_name(int kernel) {
  constexpr const char* names[] = {"portable", "avx2", "avx512", "portable-bf16", "avx512bf16"};
  return kernel >= 0 && kernel < 5 ? names[kernel] : nullptr;
}

int linear_kernel_of(const char* name) {
  for (int k = 0; k < 5; ++k)
    if (std::strcmp(name, linear_kernel_name(k)) == 0) return k;
  return -1;
}

bool linear_kernel_bf16(int kernel) { return kernel == kLinearPortableBf16 || kernel == kLinearAvx512Bf16; }

bool linear_kernel_runs(int kernel) {
  const CpuFeatures& f = cpu_features();
  switch (kernel) {
    case kLinearPortable:
    case kLinearPortableBf16: return true;
    case kLinearAvx2: return f.avx2;
    case kLinearAvx512: return f.avx512;
    case kLinearAvx512Bf16: return f.avx512bf16;
    default: return false;
  }
}

int linear_kernel(bool bf16) {
  const int cap = level_cap();
  for (const Ranked& k : kByLevel)
    if (k.bf16 == bf16 && k.level <= cap && linear_kernel_runs(k.kernel)) return k.kernel;
  return bf16 ? kLinearPortableBf16 : kLinearPortable;
}

int64_t linear_panel(int kernel) {
  const KernelSpec* s = spec_of(kernel);
  return s ? s->nr : 0;
}

int64_t linear_packed_size(int kernel, int64_t N, int64_t K) {
  const int64_t nr = linear_panel(kernel), pair = linear_kernel_bf16(kernel) ? 2 : 1;
  return nr == 0 ? 0 : (N + nr - 1) / nr * nr * ((K + pair - 1) / pair * pair);
}

void pack_linear_weight(int kernel, const void* w, int64_t N, int64_t K, void* packed) {
  const int64_t nr = linear_panel(kernel), pair = linear_kernel_bf16(kernel) ? 2 : 1;
  const int64_t panels = (N + nr - 1) / nr, kp = (K + pair - 1) / pair;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t q = 0; q < kp; ++q)
      for (int64_t j = 0; j < nr; ++j)
        for (int64_t e = 0; e < pair; ++e) {
          const int64_t n = p * nr + j, k = q * pair + e, at = ((p * kp + q) * nr + j) * pair + e;
          const bool inside = n < N && k < K;
          if (pair == 2)
            static_cast<uint16_t*>(packed)[at] = inside ? static_cast<const uint16_t*>(w)[n * K + k] : 0;
          else
            static_cast<float*>(packed)[at] = inside ? static_cast<const float*>(w)[n * K + k] : 0.f;
        }
}

void linear(int kernel, const void* x, int64_t ldx, const void* packed, const void* bias, void* out, int64_t ldo,
            int64_t M, int64_t N, int64_t K, bool gelu, int num_threads, int64_t plane_cols, int64_t plane_stride) {
  const KernelSpec* s = spec_of(kernel);
  if (s == nullptr || !linear_kernel_runs(kernel))
    throw std::invalid_argument("linear: kernel " + std::to_string(kernel) + " does not run on this CPU");
  const OutPlanes planes = plane_cols > 0 ? OutPlanes{plane_cols, plane_stride, s->nr} : OutPlanes{N, 0, s->nr};
  std::vector<float> bias32;  // a bf16 bias in fp32: the sums start from it
  if (bias != nullptr && s->bf16) {
    bias32.resize(N);
    for (int64_t n = 0; n < N; ++n) bias32[n] = bf16_to_float(static_cast<const uint16_t*>(bias)[n]);
  }
  const Problem problem{static_cast<const char*>(x), static_cast<const char*>(packed), ldx,
                        s->bf16 && bias != nullptr ? bias32.data() : static_cast<const float*>(bias),
                        static_cast<char*>(out), ldo, planes, N, K, gelu};
  const int64_t row_bytes = depth_block(0, K, s->depth) * (s->bf16 ? 2 : 4);  // a row's share of the first k block
  const int64_t block = row_block(std::max<int64_t>(M, 1), s->mr, std::max<int64_t>(row_bytes, 1));
  const int64_t blocks = (M + block - 1) / block;
  num_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, blocks)));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t m0 = blk * block;
    RowBlock(*s, problem, m0, std::min(M, m0 + block) - m0).run();
  }
}

}  // namespace lewm
