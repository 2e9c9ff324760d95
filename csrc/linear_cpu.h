// The planner's fp32 matmul on the CPU (linear_cpu.cpp): out = x @ W^T + bias with W packed once.
#pragma once

#include <cstdint>

namespace lewm {

// Output columns per packed weight panel (three 8-float AVX2 vectors: the 4 x 24 register tile).
constexpr int64_t kLinearPanel = 24;

// W (N, K) fp32 row-major -> packed (ceil(N / 24), K, 24): panel p holds output columns 24p .. 24p + 23,
// k-major, zero-padded past N. Packed once per weight; every call then streams one panel at a time.
void pack_linear_weight(const float* w, int64_t N, int64_t K, float* packed);

// out (M, N) <- x (M, K) @ W^T + bias, then GELU if `gelu`; W given packed. Row strides ldx, ldo
// (elements; the last axes are contiguous); bias (N) or null. With plane_cols > 0 (a multiple of
// kLinearPanel that divides N) the output is N / plane_cols planes (M, plane_cols), plane_stride elements
// apart: column j of row m at out[(j / plane_cols) * plane_stride + m * ldo + j % plane_cols] (the
// planner's AdaLN modulations, so that a (shift, scale) plane is read row after row). Blocks of rows
// are split over num_threads; each output element is one fp32 sum over k in order (ascending k, from the
// bias), so the result does not depend on the threads. The GELU is the exact (erf) one, applied to each
// 4 x 24 tile right after it is stored, while it is in L1 (gelu_erf in linear_cpu.cpp).
void linear_f32(const float* x, int64_t ldx, const float* packed, const float* bias, float* out, int64_t ldo,
                int64_t M, int64_t N, int64_t K, bool gelu, int num_threads, int64_t plane_cols = 0,
                int64_t plane_stride = 0);

// 0.5 x (1 + erf(x / sqrt 2)) with erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), PyTorch's
// formula for its vectorised CPU erf. Exposed for the kernel check.
float gelu_erf(float x);

// Whether linear_f32 runs the AVX2 + FMA register-tiled kernel on this CPU (else a portable loop over
// the same layout, correct but several times slower: the planner then keeps oneDNN).
bool linear_f32_native();

}  // namespace lewm
