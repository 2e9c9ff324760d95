// Planner CPU kernels (planner_cpu.cpp): plain C++ on raw strided buffers, no Python.
#pragma once

#include <cstdint>
#include <vector>

namespace lewm {

// A strided (N, L, I) view: element [n, l, i] is at data[n * s0 + l * s1 + i] (the last axis is contiguous).
template <typename T>
struct View3 {
  T* data;
  int64_t s0, s1;
};

// The longest window and the most heads window_attention takes (windows are num_frames long, 3 in LeWM:
// generous bounds, so that per-row scratch can live on the stack).
constexpr int64_t kMaxWindow = 64, kMaxHeads = 64;

// Causal attention over a short window, one program per row n and head h, everything in registers.
// q (N, nq, I): the last nq positions of the window; k, v (N, L, I); out (N, nq, I) in q's type.
// Query i sits at position L - nq + i and sees keys 0 .. L - nq + i. The 1/sqrt(dim_head) scale is
// already folded into q. Scores, softmax and the weighted sum are fp32. I = heads * dim_head.
// `bf16` selects the element type: uint16 bfloat16 (true) or float32 (false) for q, k, v and out.
void window_attention(const void* q, int64_t qs0, int64_t qs1, const void* k, int64_t ks0, int64_t ks1,
                      const void* v, int64_t vs0, int64_t vs1, void* out, int64_t N, int64_t nq, int64_t L,
                      int64_t heads, int64_t dim_head, bool bf16, int num_threads);

// The same on AVX-512 (attention_avx512.cpp), for dim_head 64 only; false (nothing done) for other shapes or
// where it is not compiled. The caller checks that the CPU runs AVX-512.
bool window_attention_avx512(const void* q, int64_t qs0, int64_t qs1, const void* k, int64_t ks0, int64_t ks1,
                             const void* v, int64_t vs0, int64_t vs1, void* out, int64_t N, int64_t nq, int64_t L,
                             int64_t heads, int64_t dim_head, bool bf16, int num_threads);

}  // namespace lewm

namespace lewm {

// The elementwise chain between two matmuls of an AdaLN block, fused (ops.residual_norm_modulate):
//   if delta: x += gate * delta                           (the previous sub-layer joins the residual, in place)
//   out = LN2(LN1(x) * (1 + scale) + shift)                (modulate; LN1 eps1, LN2 eps2, no affine)
//   or, without shift/scale, out = LN1(x)                  (the final norm)
// x (N, n, D) fp32 strided (last axis contiguous); gate, delta, shift, scale (N, n, D) strided, all of one
// element type (bf16 or fp32, `bf16`), null when absent; out (N, n, D) contiguous, of that type, or null
// (then only the residual update is done).
// Statistics in fp32. Rows are independent: the result does not depend on the thread count.
struct RowArg {
  const void* data;  // nullptr: absent
  int64_t s0, s1;
};

void residual_norm_modulate(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift,
                            RowArg scale, void* out, bool bf16, int64_t N, int64_t n, int64_t D, double eps1,
                            double eps2, int num_threads);

// The same on AVX-512 (norm_avx512.cpp), for D a multiple of 16 up to 256; false (nothing done) for other sizes or
// where it is not compiled. The caller checks that the CPU runs AVX-512.
bool residual_norm_modulate_avx512(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift,
                                   RowArg scale, void* out, bool bf16, int64_t N, int64_t n, int64_t D, double eps1,
                                   double eps2, int num_threads);

// ---- one step of the rollout's blocks (rollout_step.cpp: rollout.py's `_blocks` on the CPU op set) ----

// A matmul weight packed for the model's kernel (linear_cpu.h): (n_out, k), its bias (n_out,) or null.
struct StepWeight {
  const void* packed = nullptr;  // null: absent (a block without an output projection)
  const void* bias = nullptr;
  int64_t n_out = 0, k = 0;
};

// One AdaLN block as rollout.py's PackedBlock (queries, keys and values, W_o W_v, W_o, the MLP) and its four norms.
struct StepBlock {
  StepWeight q, kv, ov, o, mlp1, mlp2;
  double eps1, eps_attn, eps2, eps_mlp;
};

struct StepModel {
  std::vector<StepBlock> blocks;
  int kernel;  // the matmul kernel every weight is packed for; bf16 its element type
  bool bf16;
  int64_t D, I, heads;  // the residual width, heads x dim_head, heads
  double eps_final;     // the final norm's
};

// The step's modulations (N, n, depth, 6, D) as strides in elements: row, token, block, kind.
struct StepMods {
  const void* data;
  int64_t s0, s1, s_block, s_kind;
};

// A layer's K/V cache (N, window, 2I): a position's keys then values, rows s0 apart, positions s1 apart.
struct StepKV {
  void* data;
  int64_t s0, s1;
};

// Every block for the n newest tokens of the window and the final norm of the newest: x (N, n, D) fp32 residual
// (contiguous, updated in place), mods their modulations, kv one cache per layer (the window grows: the new tokens'
// K/V go to positions first.. and the attention reads positions 0 .. first + n - 1) or null (the new tokens are
// the whole window). y_out (N, 1, D) contiguous, of the model's element type.
void rollout_step(const StepModel& m, float* x, int64_t N, int64_t n, const StepMods& mods, const StepKV* kv,
                  int64_t first, void* y_out, int num_threads);

}  // namespace lewm
