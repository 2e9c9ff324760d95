// One step of the fast rollout's AdaLN blocks in one call (lewm_fast/planning/rollout.py `_blocks` on the CPU
// op set with the C++ matmul): the same kernels (linear, window_attention, residual_norm_modulate) in the same
// order on the same operands, so the result is bit for bit the Python loop's; what goes is the Python between
// them (~250 calls a chunk, each with its views and allocations) and the worker threads' turns on the GIL.

#include <cstdint>
#include <cstring>
#include <memory>

#include "linear_cpu.h"
#include "planner_cpu.h"

namespace lewm {

void rollout_step(const StepModel& m, float* x, int64_t N, int64_t n, const StepMods& mods, const StepKV* kv,
                  int64_t first, void* y_out, int num_threads) {
  const int64_t D = m.D, I = m.I, depth = static_cast<int64_t>(m.blocks.size());
  const int64_t esz = m.bf16 ? 2 : 4;
  const int64_t F = m.blocks.front().mlp1.n_out;
  // The step's intermediates, carved from one uninitialised allocation (~6 MB at the published size: zeroing it, as
  // a std::vector would, is a pass over memory for nothing), each 64-byte aligned.
  const int64_t T = N * n;  // the step's tokens
  const int64_t sizes[] = {T * D, T * D, kv ? 0 : T * 2 * I, T * D, T * I, T * I, T * D, T * D, T * F, T * D};
  int64_t total = 0;
  for (int64_t elements : sizes) total += (elements * esz + 63) / 64 * 64;
  const std::unique_ptr<char[]> scratch(new char[total + 64]);
  char* next = scratch.get() + (64 - reinterpret_cast<uintptr_t>(scratch.get()) % 64) % 64;
  char *y, *y2, *kv_rows, *asking, *q, *o, *attn, *delta, *hidden, *delta2;
  char** buffers[] = {&y, &y2, &kv_rows, &asking, &q, &o, &attn, &delta, &hidden, &delta2};
  for (int j = 0; j < 10; ++j) {
    *buffers[j] = next;
    next += (sizes[j] * esz + 63) / 64 * 64;
  }
  auto at = [esz](const void* p, int64_t elements) { return static_cast<const char*>(p) + elements * esz; };
  auto at_mut = [esz](void* p, int64_t elements) { return static_cast<char*>(p) + elements * esz; };
  auto lin = [&](const StepWeight& w, const void* rows, int64_t ldx, int64_t M, void* out, int64_t ldo, bool gelu) {
    linear(m.kernel, rows, ldx, w.packed, w.bias, out, ldo, M, w.n_out, w.k, gelu, num_threads);
  };
  // The modulation `kind` (0..5: shift1, scale1, gate1, shift2, scale2, gate2) of block i from token `tok` on.
  auto mod = [&](int64_t i, int64_t kind, int64_t tok) -> RowArg {
    return {at(mods.data, i * mods.s_block + kind * mods.s_kind + tok * mods.s1), mods.s0, mods.s1};
  };
  auto copy_rows = [&](const void* src, int64_t src_stride, void* dst, int64_t dst_stride, int64_t rows,
                       int64_t width) {  // rows of `width` elements
    for (int64_t r = 0; r < rows; ++r) std::memcpy(at_mut(dst, r * dst_stride), at(src, r * src_stride), width * esz);
  };

  residual_norm_modulate(x, n * D, D, {}, {}, mod(0, 0, 0), mod(0, 1, 0), y, m.bf16, N, n, D,
                         m.blocks[0].eps1, m.blocks[0].eps_attn, num_threads);
  for (int64_t i = 0; i < depth; ++i) {
    const StepBlock& b = m.blocks[i];
    const bool last_block = i == depth - 1;
    // Keys and values of the window: into the cache at positions first.. (one token at a time: its rows are one
    // stride apart there), or, without a cache, of the new tokens alone.
    const void* k;
    int64_t ks0, ks1, L;
    if (kv != nullptr) {
      for (int64_t t = 0; t < n; ++t)
        lin(b.kv, at(y, t * D), n * D, N, at_mut(kv[i].data, (first + t) * kv[i].s1), kv[i].s0, false);
      k = kv[i].data, ks0 = kv[i].s0, ks1 = kv[i].s1, L = first + n;
    } else {
      lin(b.kv, y, D, N * n, kv_rows, 2 * I, false);
      k = kv_rows, ks0 = n * 2 * I, ks1 = 2 * I, L = n;
    }
    const void* v = at(k, I);
    // The attention sub-layer's output of the tokens whose output is read (rollout._attention_out): all n, or the
    // newest in the last block; a token at window position 0 sees only itself (W_ov).
    const int64_t n_out = last_block ? 1 : n;
    const bool self_only = first == 0 && (!last_block || n == 1);
    if (self_only) lin(b.ov, y, n * D, N, delta, n_out * D, false);
    const int64_t a0 = last_block ? n - 1 : first == 0 ? 1 : 0, n_ask = n - a0;  // the queries read
    if (n_ask > 0 && !(last_block && n == 1 && first == 0)) {
      const void* rows = at(y, a0 * D);
      int64_t ldx = n * D, M = N;
      if (n_ask > 1) {  // several tokens of each row: contiguous first (rollout.py: asking.contiguous())
        if (a0 > 0) {
          for (int64_t r = 0; r < N; ++r)
            copy_rows(at(y, (r * n + a0) * D), D, at_mut(asking, r * n_ask * D), D, n_ask, D);
          rows = asking;
        }
        ldx = D, M = N * n_ask;
      }
      lin(b.q, rows, ldx, M, q, I, false);
      window_attention(q, n_ask * I, I, k, ks0, ks1, v, ks0, ks1, o, N, n_ask, L, m.heads,
                       I / m.heads, m.bf16, num_threads);
      const void* out_rows = o;
      int64_t width = I;
      if (b.o.packed != nullptr) {
        lin(b.o, o, I, N * n_ask, attn, D, false);
        out_rows = attn, width = D;
      }
      // after the self-only token, if any (rollout.py: torch.cat)
      const int64_t t0 = self_only ? 1 : 0;
      for (int64_t r = 0; r < N; ++r)
        copy_rows(at(out_rows, r * n_ask * width), width, at_mut(delta, (r * n_out + t0) * D), D, n_ask,
                  width);
    }
    // The residual joins the attention output, then the MLP; in the last block only the newest token goes on.
    const int64_t tok = last_block && n > 1 ? n - 1 : 0, n_tok = n - tok;
    float* xs = x + tok * D;
    residual_norm_modulate(xs, n * D, D, mod(i, 2, tok), {delta, n_out * D, D}, mod(i, 3, tok),
                           mod(i, 4, tok), y2, m.bf16, N, n_tok, D, b.eps2, b.eps_mlp, num_threads);
    lin(b.mlp1, y2, D, N * n_tok, hidden, F, true);
    lin(b.mlp2, hidden, F, N * n_tok, delta2, D, false);
    const RowArg joined{delta2, n_tok * D, D};
    if (!last_block)
      residual_norm_modulate(xs, n * D, D, mod(i, 5, tok), joined, mod(i + 1, 0, tok), mod(i + 1, 1, tok), y,
                             m.bf16, N, n_tok, D, m.blocks[i + 1].eps1, m.blocks[i + 1].eps_attn, num_threads);
    else
      residual_norm_modulate(xs, n * D, D, mod(i, 5, tok), joined, {}, {}, y_out, m.bf16, N, n_tok, D, m.eps_final,
                             0.0, num_threads);
  }
}

}  // namespace lewm
