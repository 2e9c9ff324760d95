// The planner's window attention on the CPU (ops.window_attention is its specification).
//
// In the fast rollout every attention is tiny: one (or a few) queries against L <= num_frames (3) keys,
// 16 heads x 64, for N = E x S (300 .. 4800) rows. PyTorch's CPU SDPA spends far longer on its set-up and
// blocking for such shapes than on the work itself, a few multiply-adds per element of K and V.
// Here one task handles a block of rows: for each head, L dot products of length dim_head, an fp32
// softmax over L scores, and the weighted sum of L value rows, reading bf16 or fp32 in place (strided
// views of the qkv matmul output and the K/V cache: no copies) and writing the output in q's type
// (bf16 rounded to nearest even). Rows are independent, so the result does not depend on threads.

#include "planner_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu_common.h"
#include "linear_cpu.h"

namespace lewm {
namespace {


template <typename T>
LEWM_INLINE void store(T* out, const float* src, int64_t n) {
  if constexpr (std::is_same_v<T, uint16_t>) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(src[i]);
  } else {
    std::memcpy(out, src, n * sizeof(float));
  }
}

// Convert n elements to fp32 (one vectorised pass; the hot loops below then run on plain floats).
template <typename T>
LEWM_INLINE void to_float(const T* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = load(src, i);
}

// One row: all heads, all queries. `buf` holds (2 L + 2) x I floats of scratch for bf16 inputs: the row's
// K and V in fp32, the current query and its output; fp32 inputs are read and written in place (the
// same arithmetic on the same values: no copies). Heads are handled a whole row at a time (the
// elementwise products over all I = heads x dim_head lanes vectorise; only the per-head sums are short).
// DH > 0 fixes dim_head at compile time (the common 64: fully unrolled, vectorised inner loops);
// DH == 0 reads it from `dh`.
template <typename T, int64_t DH>
LEWM_CLONES void attend_row(const T* q, int64_t qs1, const T* k, int64_t ks1, const T* v, int64_t vs1, T* out,
                            int64_t nq, int64_t L, int64_t heads, int64_t dh_arg, float* buf) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  const int64_t dh = DH > 0 ? DH : dh_arg;
  const int64_t inner = heads * dh;
  const float* krow[kMaxWindow];  // key j's (I) values in fp32
  const float* vrow[kMaxWindow];
  float* qbuf = buf + 2 * L * inner;  // (I), bf16 only
  float* obuf = qbuf + inner;         // (I), bf16 only
  for (int64_t j = 0; j < L; ++j) {
    if constexpr (kFloat) {
      krow[j] = k + j * ks1, vrow[j] = v + j * vs1;
    } else {
      to_float(k + j * ks1, buf + j * inner, inner);
      to_float(v + j * vs1, buf + (L + j) * inner, inner);
      krow[j] = buf + j * inner, vrow[j] = buf + (L + j) * inner;
    }
  }
  float score[kMaxWindow * kMaxHeads];  // (keys, heads), both bounds checked by the caller
  for (int64_t qi = 0; qi < nq; ++qi) {
    const int64_t keys = L - nq + qi + 1;  // causal: keys 0 .. position of this query
    const float* qf;
    float* of;
    if constexpr (kFloat) {
      qf = q + qi * qs1, of = out + qi * inner;
    } else {
      to_float(q + qi * qs1, qbuf, inner);
      qf = qbuf, of = obuf;
    }
    for (int64_t j = 0; j < keys; ++j) {
      const float* kj = krow[j];
      for (int64_t h = 0; h < heads; ++h) {
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < dh; ++d) s += qf[h * dh + d] * kj[h * dh + d];
        score[j * heads + h] = s;
      }
    }
    // Softmax over the keys, per head: loops run along the heads (contiguous in `score`), so they vectorise.
    float best[kMaxHeads], total[kMaxHeads];
#pragma omp simd
    for (int64_t h = 0; h < heads; ++h) best[h] = score[h], total[h] = 0.f;
    for (int64_t j = 1; j < keys; ++j) {
#pragma omp simd
      for (int64_t h = 0; h < heads; ++h) best[h] = std::max(best[h], score[j * heads + h]);
    }
    for (int64_t j = 0; j < keys; ++j) {
#pragma omp simd
      for (int64_t h = 0; h < heads; ++h) {
        const float e = exp_nonpositive(score[j * heads + h] - best[h]);
        score[j * heads + h] = e;
        total[h] += e;
      }
    }
    for (int64_t j = 0; j < keys; ++j) {
#pragma omp simd
      for (int64_t h = 0; h < heads; ++h) score[j * heads + h] /= total[h];
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* oh = of + h * dh;
      const float p0 = score[h];
      const float* v0 = vrow[0] + h * dh;
#pragma omp simd
      for (int64_t d = 0; d < dh; ++d) oh[d] = p0 * v0[d];
      for (int64_t j = 1; j < keys; ++j) {
        const float pj = score[j * heads + h];
        const float* vj = vrow[j] + h * dh;
#pragma omp simd
        for (int64_t d = 0; d < dh; ++d) oh[d] += pj * vj[d];
      }
    }
    if constexpr (!kFloat) store(out + qi * inner, of, inner);
  }
}

template <typename T>
void run(const void* q, int64_t qs0, int64_t qs1, const void* k, int64_t ks0, int64_t ks1, const void* v,
         int64_t vs0, int64_t vs1, void* out, int64_t N, int64_t nq, int64_t L, int64_t heads, int64_t dh,
         int num_threads) {
  const T* qp = static_cast<const T*>(q);
  const T* kp = static_cast<const T*>(k);
  const T* vp = static_cast<const T*>(v);
  T* op = static_cast<T*>(out);
  const int64_t out_row = nq * heads * dh;
#pragma omp parallel num_threads(num_threads)
  {
    float* buf = new float[(2 * L + 2) * heads * dh];
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      if (dh == 64) {
        attend_row<T, 64>(qp + n * qs0, qs1, kp + n * ks0, ks1, vp + n * vs0, vs1, op + n * out_row, nq, L, heads,
                          dh, buf);
      } else {
        attend_row<T, 0>(qp + n * qs0, qs1, kp + n * ks0, ks1, vp + n * vs0, vs1, op + n * out_row, nq, L, heads, dh,
                         buf);
      }
    }
    delete[] buf;
  }
}

// One row of D of residual_norm_modulate (see planner_cpu.h). `tmp` holds D floats. DD > 0 fixes D at
// compile time (LeWM's 192: unrolled, vectorised loops); DD == 0 reads it from `D_arg`. Statistics are
// fp32 simd reductions (a fixed summation tree per build and machine), like the LayerNorms they replace.
template <typename T, int64_t DD>
LEWM_CLONES void norm_row(float* __restrict x, const T* __restrict gate, const T* __restrict delta,
                          const T* __restrict shift, const T* __restrict scale, T* __restrict out, int64_t D_arg,
                          float eps1, float eps2, float* __restrict tmp) {
  const int64_t D = DD > 0 ? DD : D_arg;
  const float invD = 1.f / static_cast<float>(D);
  if (delta != nullptr) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) x[d] += load(gate, d) * load(delta, d);
  }
  if (out == nullptr) return;  // the residual update only
  float sum = 0.f, sq = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < D; ++d) sum += x[d];
  const float mean = sum * invD;
#pragma omp simd reduction(+ : sq)
  for (int64_t d = 0; d < D; ++d) sq += (x[d] - mean) * (x[d] - mean);
  const float inv = 1.f / std::sqrt(sq * invD + eps1);
  if (shift == nullptr) {  // the final norm
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) tmp[d] = (x[d] - mean) * inv;
  } else {
    float sum2 = 0.f, sq2 = 0.f;
#pragma omp simd reduction(+ : sum2)
    for (int64_t d = 0; d < D; ++d) {
      const float y = (x[d] - mean) * inv;
      tmp[d] = y * load(scale, d) + y + load(shift, d);  // y * (1 + scale) + shift
      sum2 += tmp[d];
    }
    const float mean2 = sum2 * invD;
#pragma omp simd reduction(+ : sq2)
    for (int64_t d = 0; d < D; ++d) sq2 += (tmp[d] - mean2) * (tmp[d] - mean2);
    const float inv2 = 1.f / std::sqrt(sq2 * invD + eps2);
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) tmp[d] = (tmp[d] - mean2) * inv2;
  }
  if constexpr (std::is_same_v<T, uint16_t>) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) out[d] = float_to_bf16(tmp[d]);
  } else {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) out[d] = tmp[d];
  }
}

template <typename T>
void run_norm(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift, RowArg scale, void* out,
              int64_t N, int64_t n, int64_t D, float eps1, float eps2, int num_threads) {
  auto row = [](const RowArg& a, int64_t i, int64_t j) -> const T* {
    return a.data == nullptr ? nullptr : static_cast<const T*>(a.data) + i * a.s0 + j * a.s1;
  };
#pragma omp parallel num_threads(num_threads)
  {
    float* tmp = new float[D];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N * n; ++r) {
      const int64_t i = r / n, j = r % n;
      T* o = out == nullptr ? nullptr : static_cast<T*>(out) + r * D;
      if (D == 192) {
        norm_row<T, 192>(x + i * xs0 + j * xs1, row(gate, i, j), row(delta, i, j), row(shift, i, j),
                         row(scale, i, j), o, D, eps1, eps2, tmp);
      } else {
        norm_row<T, 0>(x + i * xs0 + j * xs1, row(gate, i, j), row(delta, i, j), row(shift, i, j), row(scale, i, j),
                       o, D, eps1, eps2, tmp);
      }
    }
    delete[] tmp;
  }
}

}  // namespace

void residual_norm_modulate(float* x, int64_t xs0, int64_t xs1, RowArg gate, RowArg delta, RowArg shift,
                            RowArg scale, void* out, bool bf16, int64_t N, int64_t n, int64_t D, double eps1,
                            double eps2, int num_threads) {
  // AVX-512 where the matmul would run it too (the CPU has it and LEWM_CPU_KERNEL allows it)
  if (linear_kernel(false) == kLinearAvx512 &&
      residual_norm_modulate_avx512(x, xs0, xs1, gate, delta, shift, scale, out, bf16, N, n, D, eps1, eps2,
                                    num_threads))
    return;
  if (bf16) {
    run_norm<uint16_t>(x, xs0, xs1, gate, delta, shift, scale, out, N, n, D, eps1, eps2, num_threads);
  } else {
    run_norm<float>(x, xs0, xs1, gate, delta, shift, scale, out, N, n, D, eps1, eps2, num_threads);
  }
}

void window_attention(const void* q, int64_t qs0, int64_t qs1, const void* k, int64_t ks0, int64_t ks1,
                      const void* v, int64_t vs0, int64_t vs1, void* out, int64_t N, int64_t nq, int64_t L,
                      int64_t heads, int64_t dim_head, bool bf16, int num_threads) {
  // AVX-512 where the matmul would run it too (the CPU has it and LEWM_CPU_KERNEL allows it)
  if (linear_kernel(false) == kLinearAvx512 &&
      window_attention_avx512(q, qs0, qs1, k, ks0, ks1, v, vs0, vs1, out, N, nq, L, heads, dim_head, bf16,
                              num_threads))
    return;
  if (bf16) {
    run<uint16_t>(q, qs0, qs1, k, ks0, ks1, v, vs0, vs1, out, N, nq, L, heads, dim_head, num_threads);
  } else {
    run<float>(q, qs0, qs1, k, ks0, ks1, v, vs0, vs1, out, N, nq, L, heads, dim_head, num_threads);
  }
}

}  // namespace lewm
