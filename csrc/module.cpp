// The extension lewm_fast._C: pybind11 bindings of the CPU kernels in csrc/ (no torch headers, so it
// builds in seconds). Arrays are numpy views of torch tensors, taken without conversion (`noconvert`):
// a wrong dtype or a non-contiguous array is an error here, never a silent copy. Shapes are checked
// below; the kernels release the GIL.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "sigreg_cpu.h"

namespace py = pybind11;

namespace {

// Bumped whenever a signature or a result changes; lewm_fast/_ext.py refuses a stale build.
constexpr int kApiVersion = 1;

using F32 = py::array_t<float, py::array::c_style>;
using F64 = py::array_t<double, py::array::c_style>;

template <typename A>
void expect_shape(const A& a, const char* name, std::initializer_list<py::ssize_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int i = 0;
  for (auto s : shape) ok = ok && a.shape(i++) == s;
  if (!ok) throw std::invalid_argument(std::string(name) + ": unexpected shape");
}

void charfn_sums(const F32& z, int64_t knots, double dt, F64& cos_sum, F64& sin_sum, int num_threads) {
  if (z.ndim() != 3) throw std::invalid_argument("z: expected shape (T, N, M)");
  if (knots < 2) throw std::invalid_argument("knots: expected at least 2");
  const auto T = z.shape(0), N = z.shape(1), M = z.shape(2);
  expect_shape(cos_sum, "cos_sum", {T, knots, M});
  expect_shape(sin_sum, "sin_sum", {T, knots, M});
  const float* zp = z.data();
  double *cp = cos_sum.mutable_data(), *sp = sin_sum.mutable_data();
  py::gil_scoped_release release;
  lewm::charfn_sums(zp, T, N, M, knots, dt, cp, sp, num_threads);
}

void charfn_grad(const F32& z, const F64& p, const F64& q, double dt, F32& dz, int num_threads) {
  if (z.ndim() != 3) throw std::invalid_argument("z: expected shape (T, N, M)");
  const auto T = z.shape(0), N = z.shape(1), M = z.shape(2);
  if (p.ndim() != 3 || p.shape(1) < 2) throw std::invalid_argument("p: expected shape (T, K, M), K >= 2");
  const auto knots = p.shape(1);
  expect_shape(p, "p", {T, knots, M});
  expect_shape(q, "q", {T, knots, M});
  expect_shape(dz, "dz", {T, N, M});
  const float* zp = z.data();
  const double *pp = p.data(), *qp = q.data();
  float* dzp = dz.mutable_data();
  py::gil_scoped_release release;
  lewm::charfn_grad(zp, pp, qp, T, N, M, knots, dt, dzp, num_threads);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lewm_fast CPU kernels (see csrc/)";
  m.attr("API_VERSION") = kApiVersion;
  m.def("charfn_sums", &charfn_sums, py::arg("z").noconvert(), py::arg("knots"), py::arg("dt"),
        py::arg("cos_sum").noconvert(), py::arg("sin_sum").noconvert(), py::arg("num_threads"),
        "cos_sum, sin_sum (T, K, M) float64 <- sum_n cos/sin(k dt z), z (T, N, M) float32");
  m.def("charfn_grad", &charfn_grad, py::arg("z").noconvert(), py::arg("p").noconvert(), py::arg("q").noconvert(),
        py::arg("dt"), py::arg("dz").noconvert(), py::arg("num_threads"),
        "dz (T, N, M) float32 <- sum_k p cos(k dt z) + q sin(k dt z), p, q (T, K, M) float64");
}
