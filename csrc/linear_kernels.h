// Internal to the matmul (linear_cpu.cpp drives, linear_avx2.cpp and linear_avx512.cpp hold the x86 tiles):
// what one register tile reads and writes, and the table of an ISA's tile and row packing.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu_common.h"  // LEWM_X86_TARGETS

namespace lewm {
namespace linear_detail {

// One register tile: rows x cols outputs (rows <= the kernel's MR, cols <= its NR) of one panel, over one
// k block. The sums start from `carry` (fp32 partial sums of the k blocks before), else from `bias`, else
// from zero; at the end they go to `partial` (fp32, when more k blocks follow) or, after the optional GELU,
// to `out` in the kernel's output type (the last k block).
struct TileArgs {
  const void* a;  // the tile's first row at its k block: packed rows or x itself (a_row, a_step say which)
  // Bytes from one row of `a` to the next, and from one k (bf16: one pair of k, a 32-bit word) to the next:
  // (4, MR x 4) in the packed groups, (row stride of x, 4) reading x's rows in place. The portable tiles read
  // packed groups only (their specs pack always).
  int64_t a_row, a_step;
  const void* b;  // the panel's k block: (kc, NR) fp32, or (ceil(kc / 2), NR) bf16 pairs
  int64_t kc;     // the k block's depth in elements
  const float* carry;
  int64_t ld_carry;
  const float* bias;  // NR fp32 values (zero past the panel's columns)
  float* partial;
  int64_t ld_partial;
  void* out;
  int64_t ldo;
  int64_t rows, cols;
  bool gelu;
};

// The GELU epilogue's erf(x / sqrt 2) = x P(x^2) / Q(x^2) on x clamped to [-kGeluClamp, kGeluClamp], P and Q
// lowest degree first: a rational fitted to float64 erf by csrc/check/fit_gelu_erf.py, within 3.8e-8 of it
// with these fp32 coefficients. Every kernel evaluates it by Horner's rule, then x/2 + x/2 erf; the tests
// bound the whole GELU's error (tests/test_planner_cpu_matmul.py, csrc/check/kernels_check.cpp).
constexpr float kGeluClamp = 5.5f;
constexpr float kGeluP[7] = {0.797884583f,   0.0650570616f,   0.00961216912f, 0.000338375074f,
                             1.71471420e-05f, 1.09127690e-07f, -1.59435382e-10f};
constexpr float kGeluQ[6] = {1.00000000f,     0.248203769f,    0.0284139942f,
                             0.00193122192f, 8.21499052e-05f, 2.04703724e-06f};

// The widest panel of any kernel (the driver keeps a panel's bias on the stack).
constexpr int64_t kMaxPanel = 64;

// An ISA's kernel: its tile shape, its k block, and its two functions.
struct KernelSpec {
  int64_t nr, mr;  // panel width (the tile's columns), tile rows
  int64_t depth;   // k per block: a panel's block (depth x nr values) stays in L1 while it meets every row group
  bool bf16;
  // The tile reads x's rows where they are (a_row, a_step) when the depth is whole 32-bit words (bf16: K even),
  // instead of a packed copy: its MR broadcasts per k come from MR rows of x, each read in order.
  bool rows_in_place;
  // Rows [m0, m0 + mc) x k [k0, k0 + kc) of x (row stride ldx) into dst as MR-row groups, each
  // (kc, MR) (bf16: (ceil(kc / 2), MR) pairs, a lone last k paired with zero), rows past mc zero.
  // (Null for a kernel that always reads the rows in place.)
  void (*pack_rows)(const void* x, int64_t ldx, int64_t m0, int64_t mc, int64_t k0, int64_t kc, void* dst);
  void (*tile)(const TileArgs& t);
};

// Rows [m0, m0 + mc) x k [k0, k0 + kc) of x into MR-row groups in plain loops (KernelSpec::pack_rows's layout):
// the portable kernels' packing, and the AVX-512 bf16 tile's for an odd depth (no depth of LeWM's).
template <int64_t MR, typename T>
void portable_pack_rows(const void* x, int64_t ldx, int64_t m0, int64_t mc, int64_t k0, int64_t kc, void* dst) {
  constexpr int64_t pair = std::is_same_v<T, uint16_t> ? 2 : 1;
  const int64_t kp = (kc + pair - 1) / pair;
  for (int64_t g = 0; g < mc; g += MR) {
    T* d = static_cast<T*>(dst) + g * kp * pair;
    for (int64_t q = 0; q < kp; ++q)
      for (int64_t r = 0; r < MR; ++r)
        for (int64_t e = 0; e < pair; ++e) {
          const int64_t k = q * pair + e;
          d[(q * MR + r) * pair + e] =
              g + r < mc && k < kc ? static_cast<const T*>(x)[(m0 + g + r) * ldx + k0 + k] : T(0);
        }
  }
}

// The x86 kernels, defined in their own files; each is called only where linear_kernel_runs says so.
#ifdef LEWM_X86_TARGETS
extern const KernelSpec kAvx2Spec;
extern const KernelSpec kAvx512Spec;
extern const KernelSpec kAvx512Bf16Spec;
#endif

}  // namespace linear_detail
}  // namespace lewm
