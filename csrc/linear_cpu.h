// The planner's matmul on the CPU (linear_cpu.cpp): out = x @ W^T + bias with W packed once, by one of
// several register-tiled kernels chosen at run time from what the CPU has.
#pragma once

#include <cstdint>

namespace lewm {

// The kernels, each with its own packed-weight layout (panel width, element type):
//   fp32: kLinearPortable (any CPU), kLinearAvx2 (AVX2 + FMA), kLinearAvx512 (AVX-512 F/BW/DQ/VL);
//   bf16: kLinearPortableBf16 (any CPU), kLinearAvx512Bf16 (AVX-512 + AVX512-BF16, vdpbf16ps).
// Their order is the ISA level LEWM_CPU_KERNEL caps (linear_kernel below).
enum LinearKernel : int {
  kLinearPortable = 0,
  kLinearAvx2 = 1,
  kLinearAvx512 = 2,
  kLinearPortableBf16 = 3,
  kLinearAvx512Bf16 = 4,
};

// "portable", "avx2", "avx512", "portable-bf16", "avx512bf16"; null for an unknown value.
const char* linear_kernel_name(int kernel);
// The kernel of that name, or -1.
int linear_kernel_of(const char* name);
// Whether `kernel` works on bf16 (uint16 bits) operands (else fp32).
bool linear_kernel_bf16(int kernel);
// Whether this CPU (and its OS) can run `kernel`.
bool linear_kernel_runs(int kernel);
// The kernel the planner uses for fp32 (bf16 = false) or bf16 operands on this CPU: the widest one the CPU
// runs, at most the ISA level named by the environment variable LEWM_CPU_KERNEL if set (portable < avx2 <
// avx512 < avx512bf16; the fp32 kernel for "avx512bf16" is avx512, the bf16 kernel below it is
// portable-bf16). A level above what the CPU runs falls back to what it runs. Throws std::invalid_argument
// for an unknown LEWM_CPU_KERNEL value. Read once per process.
int linear_kernel(bool bf16);

// Output columns per packed panel (the register tile's width) and elements per packed weight of `kernel`:
// W (N, K) -> packed (ceil(N / P), K', P * pair) with pair = 2, K' = ceil(K / 2) for bf16 kernels (pairs of
// consecutive k side by side, as vdpbf16ps reads them) and pair = 1, K' = K for fp32.
int64_t linear_panel(int kernel);
int64_t linear_packed_size(int kernel, int64_t N, int64_t K);

// W (N, K) row-major -> packed for `kernel`, zero-padded past N (and past K to a whole pair). `w` is float
// for fp32 kernels, uint16 bf16 bits for bf16 ones; `packed` likewise.
void pack_linear_weight(int kernel, const void* w, int64_t N, int64_t K, void* packed);

// out (M, N) <- x (M, K) @ W^T + bias, then GELU if `gelu`, by `kernel` (which the CPU must run) on W packed
// for it. Element type: fp32 for fp32 kernels; bf16 (uint16 bits) for x, bias and out with bf16 kernels.
// Row strides ldx, ldo (elements; the last axes are contiguous); bias (N) or null. With plane_cols > 0 (a
// multiple of the panel that divides N) the output is N / plane_cols planes (M, plane_cols), plane_stride
// elements apart: column j of row m at out[(j / plane_cols) * plane_stride + m * ldo + j % plane_cols] (the
// planner's AdaLN modulations, so that a (shift, scale) plane is read row after row).
// Arithmetic: each output is one fp32 sum started from the bias, over k in ascending order (bf16: over pairs
// of k, each pair's two exact products added as vdpbf16ps adds them), so the result does not depend on the
// threads (blocks of rows are split over num_threads). The GELU (the exact, erf one, by linear_kernels.h's
// rational erf) acts on the fp32 sum; bf16 kernels then round once to bf16, to nearest even.
void linear(int kernel, const void* x, int64_t ldx, const void* packed, const void* bias, void* out, int64_t ldo,
            int64_t M, int64_t N, int64_t K, bool gelu, int num_threads, int64_t plane_cols = 0,
            int64_t plane_stride = 0);

}  // namespace lewm
