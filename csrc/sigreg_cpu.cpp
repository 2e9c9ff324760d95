// SIGReg on the CPU: the characteristic-function statistics and their gradient (the math: lewm_fast/sigreg.py).
//
// The two GEMMs around these kernels (Z = X @ A before, dX = dZ @ A^T after) run in torch
// (MKL/oneDNN), which is faster than anything we would write here; these kernels do the part torch
// cannot do without materialising (T, N, M, K) tensors:
//
//   forward   cos_sum[t, k, m] = sum_n cos(k dt Z[t, n, m]),  sin_sum[t, k, m] = sum_n sin(k dt Z[t, n, m])
//   backward  dZ[t, n, m] = sum_k P[t, k, m] cos(k dt Z[t, n, m]) + Q[t, k, m] sin(k dt Z[t, n, m])
//
// (P and Q are the gradient tables the Python side forms from the global sums.) The knots are evenly
// spaced, so one sincos(theta = dt z) per (n, m) gives every knot by angle addition, in its three-term form
//   cos((k+1) theta) = 2 cos(theta) cos(k theta) - cos((k-1) theta)     (the same for sin)
// instead of 2K transcendentals. Everything after the fp32 Z is double: the recurrence, the sums, the dZ
// accumulation. Double halves the lanes of a vector but keeps the sums exact to ~1e-12 whatever N and K
// are, so the value matches the reference to its own fp32 rounding.
//
// Layout: work is split over (t, block of MB slices); one task walks all N rows of its block and
// keeps its (K-1) x MB accumulators in L1, vectorised along m (the contiguous axis of Z). Tasks own
// disjoint outputs and sum rows in a fixed order, so the result is deterministic for any thread count
// and schedule (dynamic: a core taken by another process does not hold up the whole loop).
//
// Compiled without -ffast-math on purpose: the Cody-Waite range reduction below must not be reassociated.

#include "sigreg_cpu.h"

#include "cpu_common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lewm {
namespace {

// Slices per task: (K-1) x MB doubles x 2 accumulators stay in L1 (K = 17: 16 KiB).
constexpr int64_t MB = 64;

// Beyond this |theta| the fast reduction loses accuracy: fall back to libm (rare, and NaN/Inf land here).
constexpr double kFastLimit = 1.0e6;

// One row block of sincos(theta) with theta = dt * z: Cody-Waite reduction by pi/2 (pi/2 split in
// 32 + 32 + 53 bits, so q * P1 and q * P2 are exact for |q| < 2^21), then Taylor polynomials on
// |r| <= pi/4 (sin through r^15, cos through r^16: truncation < 5e-17) and a quadrant fix-up. Written as
// plain loops that GCC vectorises; the default x86-64 build is SSE2, so the function is cloned for AVX2+FMA
// and AVX-512 and the best clone is picked at load time (cpu_common.h).

LEWM_CLONES void sincos_row(const float* z, int64_t w, double dt, double* s, double* c) {
  constexpr double kTwoOverPi = 0.6366197723675814;
  constexpr double kP1 = 0x1.921fb544p+0, kP2 = 0x1.0b4611a6p-34, kP3 = 0x1.3198a2e037073p-69;
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52: (x + kRound) - kRound rounds to nearest
  constexpr double s3 = -1.0 / 6, s5 = 1.0 / 120, s7 = -1.0 / 5040, s9 = 1.0 / 362880, s11 = -1.0 / 39916800,
                   s13 = 1.0 / 6227020800.0, s15 = -1.0 / 1307674368000.0;
  constexpr double c2 = -0.5, c4 = 1.0 / 24, c6 = -1.0 / 720, c8 = 1.0 / 40320, c10 = -1.0 / 3628800,
                   c12 = 1.0 / 479001600.0, c14 = -1.0 / 87178291200.0, c16 = 1.0 / 20922789888000.0;
  int out_of_range = 0;
#pragma omp simd reduction(| : out_of_range)
  for (int64_t j = 0; j < w; ++j) {
    const double x = dt * static_cast<double>(z[j]);
    out_of_range |= !(std::fabs(x) < kFastLimit);
    const double q = (x * kTwoOverPi + kRound) - kRound;
    const double r = ((x - q * kP1) - q * kP2) - q * kP3;
    const double r2 = r * r;
    const double sr =
        r + r * r2 * (s3 + r2 * (s5 + r2 * (s7 + r2 * (s9 + r2 * (s11 + r2 * (s13 + r2 * s15))))));
    const double cr =
        1.0 + r2 * (c2 + r2 * (c4 + r2 * (c6 + r2 * (c8 + r2 * (c10 + r2 * (c12 + r2 * (c14 + r2 * c16)))))));
    // q mod 4 in {0, 1, 2, 3}, exactly: round((q - 1.5) / 4) = floor(q / 4) for integer q (no floor()
    // call, which SSE2 cannot vectorise).
    const double quadrant = q - 4.0 * ((((q - 1.5) * 0.25) + kRound) - kRound);
    const bool odd = quadrant == 1.0 || quadrant == 3.0;
    const double sin_abs = odd ? cr : sr, cos_abs = odd ? sr : cr;
    s[j] = quadrant >= 2.0 ? -sin_abs : sin_abs;
    c[j] = (quadrant == 1.0 || quadrant == 2.0) ? -cos_abs : cos_abs;
  }
  for (int64_t j = w; j < (w + 7) / 8 * 8; ++j) s[j] = c[j] = 0.0;  // padding lanes add nothing
  for (int64_t j = 0; out_of_range && j < w; ++j) {  // libm for huge, infinite or NaN arguments
    const double x = dt * static_cast<double>(z[j]);
    if (!(std::fabs(x) < kFastLimit)) {
      s[j] = std::sin(x);
      c[j] = std::cos(x);
    }
  }
}

// Eight doubles: one AVX-512 register (two AVX2 or four SSE2 registers in the other clones). The
// recurrence keeps cos/sin of the current knot in registers and touches memory only for the sums.
typedef double v8d __attribute__((vector_size(64)));
constexpr int64_t V = 8;

LEWM_INLINE v8d load8(const double* p) {
  v8d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
LEWM_INLINE void store8(double* p, v8d v) { std::memcpy(p, &v, sizeof v); }

// The knots follow from the three-term form of angle addition, f((k+1)a) = 2 cos(a) f(ka) - f((k-1)a) for
// f = cos, sin: one multiply-add per knot and function instead of a 2x2 rotation (four products). Its
// rounding error grows like k^2 eps (|U_k(cos a)| <= k + 1): 3e-14 at K = 17 in double. The loops step two
// knots at a time so that (previous, current) swap roles without register copies, which otherwise cost
// as much as the arithmetic.

// One knot of two rows: prev <- 2 cos(a) cur - prev (prev now holds the next knot), then add it to acc.
#define LEWM_KNOT(acc_s, acc_c, spa, cpa, sa, ca, spb, cpb, sb, cb) \
  spa = ta * sa - spa;                                                \
  cpa = ta * ca - cpa;                                                \
  spb = tb * sb - spb;                                                \
  cpb = tb * cb - cpb;                                                \
  store8(acc_s, load8(acc_s) + (spa + spb));                          \
  store8(acc_c, load8(acc_c) + (cpa + cpb));

// acc_c[k-1][j] += cos(k theta_j), acc_s[k-1][j] += sin(k theta_j) for k = 1..K-1 and the two rows whose
// (sin, cos)(theta) are s1a, c1a and s1b, c1b (accumulator rows MB apart; w padded to V with zero lanes).
// `b0` is cos(0) of row b: 1, or 0 for a missing row (odd N), whose lanes then stay 0. Two rows per pass
// halve the accumulator traffic.
LEWM_CLONES void accumulate_rows(const double* s1a, const double* c1a, const double* s1b, const double* c1b,
                                 double b0, int64_t w, int64_t knots, double* acc_s, double* acc_c) {
  const v8d zero = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j = 0; j < w; j += V) {
    v8d sa = load8(s1a + j), ca = load8(c1a + j), sb = load8(s1b + j), cb = load8(c1b + j);
    const v8d ta = ca + ca, tb = cb + cb;
    v8d spa = zero, cpa = zero + 1.0, spb = zero, cpb = zero + b0;  // knot 0
    store8(acc_s + j, load8(acc_s + j) + (sa + sb));
    store8(acc_c + j, load8(acc_c + j) + (ca + cb));
    int64_t k = 2;
    for (; k + 1 < knots; k += 2) {
      LEWM_KNOT(acc_s + (k - 1) * MB + j, acc_c + (k - 1) * MB + j, spa, cpa, sa, ca, spb, cpb, sb, cb)
      LEWM_KNOT(acc_s + k * MB + j, acc_c + k * MB + j, sa, ca, spa, cpa, sb, cb, spb, cpb)
    }
    if (k < knots) {
      LEWM_KNOT(acc_s + (k - 1) * MB + j, acc_c + (k - 1) * MB + j, spa, cpa, sa, ca, spb, cpb, sb, cb)
    }
  }
}
#undef LEWM_KNOT

// One knot of two rows for the gradient: as LEWM_KNOT, then dz += p_k cos + q_k sin.
#define LEWM_GRAD_KNOT(pk, qk, spa, cpa, sa, ca, spb, cpb, sb, cb) \
  spa = ta * sa - spa;                                               \
  cpa = ta * ca - cpa;                                               \
  spb = tb * sb - spb;                                               \
  cpb = tb * cb - cpb;                                               \
  {                                                                  \
    const v8d pv = load8(pk), qv = load8(qk);                        \
    acc_a += pv * cpa + qv * spa;                                    \
    acc_b += pv * cpb + qv * spb;                                    \
  }

// dz[j] = sum_{k>=1} p[k-1][j] cos(k theta_j) + q[k-1][j] sin(k theta_j) for two rows (tables MB apart),
// with the recurrence of accumulate_rows.
LEWM_CLONES void grad_rows(const double* s1a, const double* c1a, const double* s1b, const double* c1b, int64_t w,
                           int64_t knots, const double* p, const double* q, double* dza, double* dzb) {
  const v8d zero = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j = 0; j < w; j += V) {
    v8d sa = load8(s1a + j), ca = load8(c1a + j), sb = load8(s1b + j), cb = load8(c1b + j);
    const v8d ta = ca + ca, tb = cb + cb;
    v8d spa = zero, cpa = zero + 1.0, spb = zero, cpb = zero + 1.0;
    const v8d p1 = load8(p + j), q1 = load8(q + j);
    v8d acc_a = p1 * ca + q1 * sa, acc_b = p1 * cb + q1 * sb;
    int64_t k = 2;
    for (; k + 1 < knots; k += 2) {
      LEWM_GRAD_KNOT(p + (k - 1) * MB + j, q + (k - 1) * MB + j, spa, cpa, sa, ca, spb, cpb, sb, cb)
      LEWM_GRAD_KNOT(p + k * MB + j, q + k * MB + j, sa, ca, spa, cpa, sb, cb, spb, cpb)
    }
    if (k < knots) {
      LEWM_GRAD_KNOT(p + (k - 1) * MB + j, q + (k - 1) * MB + j, spa, cpa, sa, ca, spb, cpb, sb, cb)
    }
    store8(dza + j, acc_a);
    store8(dzb + j, acc_b);
  }
}
#undef LEWM_GRAD_KNOT

}  // namespace

namespace {

// Scratch of one task: (sin, cos)(theta) of two rows, padded to a multiple of V with zero lanes.
struct RowPair {
  std::vector<double> buf = std::vector<double>(6 * MB, 0.0);
  double* s1a() { return buf.data(); }
  double* c1a() { return buf.data() + MB; }
  double* s1b() { return buf.data() + 2 * MB; }
  double* c1b() { return buf.data() + 3 * MB; }
  double* out_a() { return buf.data() + 4 * MB; }
  double* out_b() { return buf.data() + 5 * MB; }

  // Rows n and n + 1 of z (a missing second row, at odd N, is all-zero lanes: it adds nothing).
  void load(const float* row_a, const float* row_b, int64_t w, double dt) {
    sincos_row(row_a, w, dt, s1a(), c1a());
    if (row_b != nullptr) {
      sincos_row(row_b, w, dt, s1b(), c1b());
    } else {
      std::fill(buf.begin() + 2 * MB, buf.begin() + 4 * MB, 0.0);
    }
  }
};

inline int64_t padded(int64_t w) { return (w + V - 1) / V * V; }

}  // namespace

void charfn_sums(const float* z, int64_t T, int64_t N, int64_t M, int64_t knots, double dt, double* cos_sum,
                 double* sin_sum, int num_threads) {
  const int64_t blocks = (M + MB - 1) / MB;
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(num_threads)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t m0 = b * MB, w = std::min(MB, M - m0);
      std::vector<double> acc_c((knots - 1) * MB, 0.0), acc_s((knots - 1) * MB, 0.0);
      RowPair rows;
      for (int64_t n = 0; n < N; n += 2) {
        const float* row = z + (t * N + n) * M + m0;
        rows.load(row, n + 1 < N ? row + M : nullptr, w, dt);
        accumulate_rows(rows.s1a(), rows.c1a(), rows.s1b(), rows.c1b(), n + 1 < N ? 1.0 : 0.0, padded(w), knots,
                        acc_s.data(), acc_c.data());
      }
      for (int64_t j = 0; j < w; ++j) {  // knot 0: cos(0) = 1, sin(0) = 0 for every row
        cos_sum[(t * knots) * M + m0 + j] = static_cast<double>(N);
        sin_sum[(t * knots) * M + m0 + j] = 0.0;
      }
      for (int64_t k = 1; k < knots; ++k) {
        for (int64_t j = 0; j < w; ++j) {
          cos_sum[(t * knots + k) * M + m0 + j] = acc_c[(k - 1) * MB + j];
          sin_sum[(t * knots + k) * M + m0 + j] = acc_s[(k - 1) * MB + j];
        }
      }
    }
  }
}

void charfn_grad(const float* z, const double* p, const double* q, int64_t T, int64_t N, int64_t M, int64_t knots,
                 double dt, float* dz, int num_threads) {
  const int64_t blocks = (M + MB - 1) / MB;
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(num_threads)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t m0 = b * MB, w = std::min(MB, M - m0);
      // This block's tables, packed MB apart so the inner loops read contiguous rows (knot 0 is unused:
      // its angle is 0, so its derivative is 0).
      std::vector<double> pb((knots - 1) * MB, 0.0), qb((knots - 1) * MB, 0.0);
      for (int64_t k = 1; k < knots; ++k) {
        for (int64_t j = 0; j < w; ++j) {
          pb[(k - 1) * MB + j] = p[(t * knots + k) * M + m0 + j];
          qb[(k - 1) * MB + j] = q[(t * knots + k) * M + m0 + j];
        }
      }
      RowPair rows;
      for (int64_t n = 0; n < N; n += 2) {
        const int64_t row = (t * N + n) * M + m0;
        const bool pair = n + 1 < N;
        rows.load(z + row, pair ? z + row + M : nullptr, w, dt);
        grad_rows(rows.s1a(), rows.c1a(), rows.s1b(), rows.c1b(), padded(w), knots, pb.data(), qb.data(),
                  rows.out_a(), rows.out_b());
        for (int64_t j = 0; j < w; ++j) dz[row + j] = static_cast<float>(rows.out_a()[j]);
        if (pair) {
          for (int64_t j = 0; j < w; ++j) dz[row + M + j] = static_cast<float>(rows.out_b()[j]);
        }
      }
    }
  }
}

}  // namespace lewm
