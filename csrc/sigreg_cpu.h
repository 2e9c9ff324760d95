// SIGReg CPU kernels (sigreg_cpu.cpp): plain C++ on raw contiguous buffers, no Python.
#pragma once

#include <cstdint>

namespace lewm {

// cos_sum, sin_sum (T, K, M) float64 = sum over n of cos / sin(k * dt * z[t, n, m]), k = 0..K-1.
// z: (T, N, M) float32, C-contiguous.
void charfn_sums(const float* z, int64_t T, int64_t N, int64_t M, int64_t knots, double dt, double* cos_sum,
                 double* sin_sum, int num_threads);

// dz (T, N, M) float32 = sum over k >= 1 of p[t, k, m] cos(k dt z) + q[t, k, m] sin(k dt z).
// z: (T, N, M) float32; p, q: (T, K, M) float64; all C-contiguous.
void charfn_grad(const float* z, const double* p, const double* q, int64_t T, int64_t N, int64_t M, int64_t knots,
                 double dt, float* dz, int num_threads);

}  // namespace lewm
