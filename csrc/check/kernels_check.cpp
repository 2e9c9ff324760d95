// A self-contained check of the CPU kernels without Python: each kernel against a plain double-precision
// loop of its formula, on fixed pseudo-random inputs, over the shapes with a fixed-size fast path (D = 192,
// dim_head = 64) and others, fp32 and bf16. Exit status 0 when every result is within its tolerance.
//
// Used where the Python extension cannot run: built with a cross compiler and run under qemu-user, it
// shows the kernels build and compute correctly on aarch64 (csrc/check/cross_check.sh, run by CI).
// The Python tests (tests/test_planner_cpu_kernels.py, tests/test_sigreg_*.py) are the full checks.

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../cpu_common.h"
#include "../linear_cpu.h"
#include "../planner_cpu.h"
#include "../sigreg_cpu.h"

namespace {

int failures = 0;

struct Rng {  // xorshift64*: the same inputs on every machine
  uint64_t s;
  double uniform() {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return static_cast<double>((s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
  }
  float normal() {  // Box-Muller
    const double u = uniform() + 1e-12, v = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

std::vector<float> randn(Rng& g, size_t n, float scale = 1.f) {
  std::vector<float> x(n);
  for (auto& v : x) v = g.normal() * scale;
  return x;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = lewm::float_to_bf16(x[i]);
  return y;
}

std::vector<float> rounded(const std::vector<float>& x) {  // x as bf16 would hold it
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = lewm::bf16_to_float(lewm::float_to_bf16(x[i]));
  return y;
}

void expect(const char* what, double got, double want, double rtol, double atol) {
  if (!(std::fabs(got - want) <= atol + rtol * std::fabs(want))) {
    if (failures < 20) std::printf("FAIL %s: got %.9g, want %.9g\n", what, got, want);
    ++failures;
  }
}

// The GELU epilogue's error bound (linear_kernels.h, derived in tests/test_planner_cpu_matmul.py's docstring): the
// fit's 3.8e-8 in erf times |x| / 2, plus 13 fp32 roundings of |x| + |GELU(x)| for its evaluation, plus 2^-148
// (a few roundings of subnormal results, absolute).
double gelu_exact(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tolerance(double x, double gelu) {
  return 3.8e-8 * std::fabs(x) / 2 + 13 * std::ldexp(1.0, -24) * (std::fabs(x) + std::fabs(gelu)) + std::ldexp(1.0, -148);
}

// ---- window attention: out[n, i] = sum_j softmax_j(q_i . k_j) v_j over keys j <= L - nq + i, per head ----
void attention_ref(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                   std::vector<double>& out, int64_t N, int64_t nq, int64_t L, int64_t heads, int64_t dh) {
  const int64_t I = heads * dh;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t keys = L - nq + i + 1;
        std::vector<double> s(keys);
        double best = -1e300, total = 0;
        for (int64_t j = 0; j < keys; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < dh; ++d) dot += double(q[(n * nq + i) * I + h * dh + d]) * k[(n * L + j) * I + h * dh + d];
          s[j] = dot, best = std::max(best, dot);
        }
        for (auto& x : s) total += (x = std::exp(x - best));
        for (int64_t d = 0; d < dh; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < keys; ++j) acc += s[j] / total * v[(n * L + j) * I + h * dh + d];
          out[(n * nq + i) * I + h * dh + d] = acc;
        }
      }
}

void check_attention(Rng& g, int64_t N, int64_t nq, int64_t L, int64_t heads, int64_t dh, bool bf16) {
  const int64_t I = heads * dh;
  auto q = randn(g, N * nq * I, 0.3f), k = randn(g, N * L * I), v = randn(g, N * L * I);
  if (bf16) q = rounded(q), k = rounded(k), v = rounded(v);
  std::vector<double> want(N * nq * I);
  attention_ref(q, k, v, want, N, nq, L, heads, dh);
  std::vector<float> got(N * nq * I);
  if (bf16) {
    auto qb = to_bf16(q), kb = to_bf16(k), vb = to_bf16(v);
    std::vector<uint16_t> ob(N * nq * I);
    lewm::window_attention(qb.data(), nq * I, I, kb.data(), L * I, I, vb.data(), L * I, I, ob.data(), N, nq, L, heads,
                           dh, true, 2);
    for (size_t i = 0; i < ob.size(); ++i) got[i] = lewm::bf16_to_float(ob[i]);
  } else {
    lewm::window_attention(q.data(), nq * I, I, k.data(), L * I, I, v.data(), L * I, I, got.data(), N, nq, L, heads,
                           dh, false, 2);
  }
  for (size_t i = 0; i < got.size(); ++i)
    expect(bf16 ? "window_attention bf16" : "window_attention fp32", got[i], want[i], bf16 ? 1.0 / 128 : 1e-5,
           bf16 ? 1e-3 : 1e-5);
}

// ---- residual + norm + modulate: x += gate * delta; out = LN2(LN1(x) * (1 + scale) + shift) ----
void layer_norm(std::vector<double>& y, double eps) {
  double mean = 0, var = 0;
  for (double v : y) mean += v;
  mean /= y.size();
  for (double v : y) var += (v - mean) * (v - mean);
  const double inv = 1.0 / std::sqrt(var / y.size() + eps);
  for (double& v : y) v = (v - mean) * inv;
}

void check_norm(Rng& g, int64_t N, int64_t n, int64_t D, bool join, bool modulate) {
  auto x = randn(g, N * n * D, 3.f), gate = rounded(randn(g, N * n * D, 0.5f)), delta = rounded(randn(g, N * n * D));
  auto shift = rounded(randn(g, N * n * D, 0.5f)), scale = rounded(randn(g, N * n * D, 0.5f));
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    std::vector<float> xk = x, outf(N * n * D);
    std::vector<uint16_t> outb(N * n * D);
    auto gb = to_bf16(gate), db = to_bf16(delta), sb = to_bf16(shift), cb = to_bf16(scale);
    const void *gp = bf16 ? (const void*)gb.data() : gate.data(), *dp = bf16 ? (const void*)db.data() : delta.data();
    const void *sp = bf16 ? (const void*)sb.data() : shift.data(), *cp = bf16 ? (const void*)cb.data() : scale.data();
    const lewm::RowArg none{nullptr, 0, 0};
    auto arg = [&](const void* p) { return lewm::RowArg{p, n * D, D}; };
    lewm::residual_norm_modulate(xk.data(), n * D, D, join ? arg(gp) : none, join ? arg(dp) : none,
                                 modulate ? arg(sp) : none, modulate ? arg(cp) : none,
                                 bf16 ? (void*)outb.data() : (void*)outf.data(), bf16, N, n, D, 1e-6, 1e-5, 2);
    for (int64_t r = 0; r < N * n; ++r) {
      std::vector<double> y(D);
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = r * D + d;
        y[d] = x[i] + (join ? double(gate[i]) * delta[i] : 0.0);
        expect("residual update", xk[i], y[d], 1e-6, 1e-5);
      }
      layer_norm(y, 1e-6);
      if (modulate) {
        for (int64_t d = 0; d < D; ++d) y[d] = y[d] * (1.0 + scale[r * D + d]) + shift[r * D + d];
        layer_norm(y, 1e-5);
      }
      for (int64_t d = 0; d < D; ++d) {
        const double got = bf16 ? lewm::bf16_to_float(outb[r * D + d]) : outf[r * D + d];
        expect(bf16 ? "norm bf16" : "norm fp32", got, y[d], bf16 ? 1.0 / 128 : 1e-5, bf16 ? 1e-3 : 1e-5);
      }
    }
  }
}

// ---- SIGReg's characteristic-function sums and their gradient ----
void check_charfn(Rng& g, int64_t T, int64_t N, int64_t M, int64_t K) {
  const double dt = 3.0 / (K - 1);
  auto z = randn(g, T * N * M, 2.f);
  std::vector<double> cs(T * K * M), ss(T * K * M), p(T * K * M), q(T * K * M);
  lewm::charfn_sums(z.data(), T, N, M, K, dt, cs.data(), ss.data(), 2);
  for (auto& v : p) v = g.normal();
  for (auto& v : q) v = g.normal();
  std::vector<float> dz(T * N * M);
  lewm::charfn_grad(z.data(), p.data(), q.data(), T, N, M, K, dt, dz.data(), 2);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double c = 0, s = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double a = k * dt * z[(t * N + n) * M + m];
          c += std::cos(a), s += std::sin(a);
        }
        expect("charfn_sums cos", cs[(t * K + k) * M + m], c, 1e-10, 1e-9 * N);
        expect("charfn_sums sin", ss[(t * K + k) * M + m], s, 1e-10, 1e-9 * N);
      }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m) {
        double want = 0;
        for (int64_t k = 1; k < K; ++k) {
          const double a = k * dt * z[(t * N + n) * M + m];
          want += p[(t * K + k) * M + m] * std::cos(a) + q[(t * K + k) * M + m] * std::sin(a);
        }
        expect("charfn_grad", dz[(t * N + n) * M + m], want, 1e-6, 1e-5);
      }
}

// ---- the matmul: out = x @ W^T + bias by each kernel, W packed for it; x rows ldx apart; with plane_cols > 0
// the columns in planes of plane_cols, each plane M * plane_cols + 5 values after the one before (a gap the
// kernel must leave alone). bf16 kernels: x, W, bias rounded to bf16 first, the reference on those ----
struct LinearCase {
  int64_t M, N, K, ldx;
  bool bias, gelu;
  int threads;
  int64_t plane_cols = 0;
  bool integers = false;  // small integers: every sum is exact in fp32, so the kernels must match exactly
};

std::vector<float> inputs(Rng& g, size_t n, bool integers, bool bf16) {
  auto v = randn(g, n);
  if (integers)
    for (auto& e : v) e = std::nearbyint(std::clamp(e * 2.f, -4.f, 4.f));
  return bf16 ? rounded(v) : v;
}

void check_linear(Rng& g, int kernel, const LinearCase& c) {
  const bool bf16 = lewm::linear_kernel_bf16(kernel);
  const std::string name = std::string("linear ") + lewm::linear_kernel_name(kernel);
  const auto x = inputs(g, c.M * c.ldx, c.integers, bf16), w = inputs(g, c.N * c.K, c.integers, bf16);
  const auto b = inputs(g, c.N, c.integers, bf16);
  const auto xb = to_bf16(x), wb = to_bf16(w), bb = to_bf16(b);
  const int64_t esize = bf16 ? 2 : 4, cols = c.plane_cols > 0 ? c.plane_cols : c.N, stride = c.M * cols + 5;
  std::vector<char> packed(lewm::linear_packed_size(kernel, c.N, c.K) * esize);
  lewm::pack_linear_weight(kernel, bf16 ? (const void*)wb.data() : w.data(), c.N, c.K, packed.data());
  std::vector<float> out((c.N / cols) * stride, -7.f);  // -7: the gaps' sentinel (exact in bf16 too)
  std::vector<uint16_t> outb(out.size(), lewm::float_to_bf16(-7.f));
  const void* bias = !c.bias ? nullptr : bf16 ? (const void*)bb.data() : b.data();
  lewm::linear(kernel, bf16 ? (const void*)xb.data() : x.data(), c.ldx, packed.data(), bias,
               bf16 ? (void*)outb.data() : out.data(), cols, c.M, c.N, c.K, c.gelu, c.threads, c.plane_cols, stride);
  if (bf16)
    for (size_t i = 0; i < out.size(); ++i) out[i] = lewm::bf16_to_float(outb[i]);
  for (int64_t p = 0; p < c.N / cols; ++p)
    for (int64_t i = 0; i < 5; ++i) expect((name + " plane gap").c_str(), out[p * stride + c.M * cols + i], -7.0, 0, 0);
  const double u = std::ldexp(1.0, -24), u_out = bf16 ? std::ldexp(1.0, -8) : 0.0;  // fp32 sums; bf16 output
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double want = c.bias ? b[n] : 0.0, mag = std::fabs(want);
      for (int64_t k = 0; k < c.K; ++k) {
        want += static_cast<double>(x[m * c.ldx + k]) * w[n * c.K + k];
        mag += std::fabs(static_cast<double>(x[m * c.ldx + k]) * w[n * c.K + k]);
      }
      const double got = out[(n / cols) * stride + m * cols + n % cols];
      if (c.integers) {  // exact sums; bf16: one rounding of the exact sum
        expect(name.c_str(), got, bf16 ? lewm::bf16_to_float(lewm::float_to_bf16(float(want))) : want, 0, 0);
        continue;
      }
      // K + 2 fp32 roundings of the magnitude at most (one per product and sum); GELU's slope is at most 1.13
      // and its own error gelu_tolerance; bf16: one rounding more.
      double tol = (c.K + 2) * u * mag;
      if (c.gelu) {
        const double pre = want;
        want = gelu_exact(pre);
        tol = 1.13 * tol + gelu_tolerance(pre, want);
      }
      expect(name.c_str(), got, want, 0.0, tol + u_out * (std::fabs(want) + tol));
    }
}

const LinearCase kLinearCases[] = {
    {150, 192, 192, 192, true, false, 2},    // a rollout shape (one row block per thread)
    {13, 33, 400, 405, true, false, 1},      // every edge: rows past a tile, columns past a panel, k blocks
    {7, 5, 3, 3, false, false, 1},
    {13, 33, 400, 405, true, true, 1},
    {10, 96, 192, 192, true, true, 1},       // GELU in whole panels
    {301, 50, 1025, 1031, true, false, 2},   // an odd depth split in k blocks (bf16: a lone last k)
    {13, 144, 40, 40, true, false, 2, 48},   // column planes (the AdaLN modulations')
    {9, 96, 7, 7, true, true, 1, 48},
    {37, 61, 700, 700, true, false, 2, 0, true},  // exact sums
    {701, 40, 385, 385, true, true, 2},      // row blocks (three of 234) over two threads
};

// The GELU epilogue alone, as x @ [[1]] (exact) with the GELU: every bf16 value for a bf16 kernel, every 509th fp32
// one of magnitude below 2^8 (and a few huge ones) for an fp32 kernel; NaN stays NaN. Returns the largest error
// beyond the fit's, in fp32 roundings of |x| + |GELU(x)| (the evaluation's part of gelu_tolerance: at most 13).
double check_gelu_sweep(int kernel) {
  const bool bf16 = lewm::linear_kernel_bf16(kernel);
  const std::string name = std::string("gelu sweep ") + lewm::linear_kernel_name(kernel);
  std::vector<float> x;
  for (uint32_t bits = 0; bits < (bf16 ? 0x10000u : 0x43800000u); bits += bf16 ? 1 : 509) {
    float v;
    const uint32_t pattern = bf16 ? bits << 16 : bits;
    std::memcpy(&v, &pattern, sizeof v);
    if (std::isfinite(v)) x.push_back(v), x.push_back(-v);
  }
  for (float v : {1e30f, -1e30f, 3e38f, -3e38f}) x.push_back(v);
  x.push_back(std::nanf(""));
  const int64_t M = static_cast<int64_t>(x.size());
  const float one = 1.f;
  const uint16_t one_bf16 = lewm::float_to_bf16(1.f);
  std::vector<char> packed(lewm::linear_packed_size(kernel, 1, 1) * (bf16 ? 2 : 4));
  lewm::pack_linear_weight(kernel, bf16 ? (const void*)&one_bf16 : &one, 1, 1, packed.data());
  std::vector<float> out(M);
  std::vector<uint16_t> xb(bf16 ? M : 0), outb(bf16 ? M : 0);
  for (int64_t i = 0; i < (bf16 ? M : 0); ++i) xb[i] = lewm::float_to_bf16(x[i]);  // exact: bf16 values
  lewm::linear(kernel, bf16 ? (const void*)xb.data() : x.data(), 1, packed.data(), nullptr,
               bf16 ? (void*)outb.data() : out.data(), 1, M, 1, 1, true, 1);
  for (int64_t i = 0; i < (bf16 ? M : 0); ++i) out[i] = lewm::bf16_to_float(outb[i]);
  const double u = std::ldexp(1.0, -24), u_out = bf16 ? std::ldexp(1.0, -8) : 0.0;
  double worst = 0;
  for (int64_t i = 0; i < M; ++i) {
    if (std::isnan(x[i])) {
      if (!std::isnan(out[i])) expect((name + " NaN").c_str(), out[i], NAN, 0, 0);
      continue;
    }
    const double want = gelu_exact(x[i]), tol = gelu_tolerance(x[i], want);
    // bf16: one rounding more, and vcvtneps2bf16 flushes results below 2^-126 to zero
    expect(name.c_str(), out[i], want, 0.0, tol + u_out * (std::fabs(want) + tol) + (bf16 ? std::ldexp(1.0, -126) : 0));
    if (!bf16 && std::fabs(x[i]) >= 0x1p-100)  // the relative measure, away from the subnormals' absolute term
      worst = std::max(worst, (std::fabs(out[i] - want) - 3.8e-8 * std::fabs(x[i]) / 2) /
                                  (u * (std::fabs(x[i]) + std::fabs(want))));
  }
  return worst;
}

// Every matmul kernel this build runs here, up to the ISA level LEWM_CPU_KERNEL caps; those the CPU lacks are
// named, not run.
void check_linear_kernels(Rng& g) {
  const int fp32 = lewm::linear_kernel(false), bf16 = lewm::linear_kernel(true);
  std::printf("matmul kernels: fp32 %s, bf16 %s\n", lewm::linear_kernel_name(fp32), lewm::linear_kernel_name(bf16));
  for (int kernel = lewm::kLinearPortable; kernel <= lewm::kLinearAvx512Bf16; ++kernel) {
    const int top = lewm::linear_kernel_bf16(kernel) ? bf16 : fp32;
    const bool within = kernel == top || kernel == lewm::kLinearPortable || kernel == lewm::kLinearPortableBf16 ||
                        (kernel == lewm::kLinearAvx2 && top == lewm::kLinearAvx512);
    if (!lewm::linear_kernel_runs(kernel) || !within) {
      std::printf("  %s: not checked (%s)\n", lewm::linear_kernel_name(kernel),
                  lewm::linear_kernel_runs(kernel) ? "above LEWM_CPU_KERNEL"
                                                   : "not in this build, or this CPU lacks its instructions");
      continue;
    }
    const int before = failures;
    for (const auto& c : kLinearCases) check_linear(g, kernel, c);
    const double gelu_worst = check_gelu_sweep(kernel);
    std::printf("  %s: %s", lewm::linear_kernel_name(kernel), failures == before ? "matches" : "FAILED");
    if (!lewm::linear_kernel_bf16(kernel)) std::printf(" (GELU: %.2f roundings at worst)", gelu_worst);
    std::printf("\n");
  }
}

}  // namespace

int main() {
  Rng g{0x9e3779b97f4a7c15ull};
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    check_attention(g, 7, 1, 3, 16, 64, bf16);  // the rollout's shapes (dim_head 64: the unrolled path)
    check_attention(g, 5, 3, 3, 16, 64, bf16);
    check_attention(g, 3, 2, 3, 20, 64, bf16);  // heads past a group of 16 (the AVX-512 path's lanes)
    check_attention(g, 4, 2, 4, 3, 24, bf16);  // the generic path
    check_attention(g, 3, 1, 1, 5, 7, bf16);
  }
  for (bool join : {false, true})
    for (bool modulate : {false, true}) {
      check_norm(g, 5, 3, 192, join, modulate);  // D = 192: the unrolled rows (portable and AVX-512)
      check_norm(g, 3, 2, 256, join, modulate);  // the AVX-512 path's largest D, a loop
      check_norm(g, 3, 2, 40, join, modulate);   // D not a multiple of 16: the portable row at every level
    }
  check_linear_kernels(g);
  check_charfn(g, 2, 9, 70, 17);  // N odd (a missing row in the last pair), M not a multiple of the block
  check_charfn(g, 1, 4, 8, 5);
  std::printf("%s: %s, %d failures\n", lewm::kernel_isa(), failures ? "FAILED" : "all kernels match", failures);
  return failures ? 1 : 0;
}
