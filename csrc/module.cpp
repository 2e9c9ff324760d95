// The extension lewm_fast._C: pybind11 bindings of the CPU kernels in csrc/ (no torch headers, so it
// builds in seconds). Arrays are numpy views of torch tensors, taken without conversion (`noconvert`):
// a wrong dtype or a non-contiguous array is an error here, never a silent copy. Shapes are checked
// below; the kernels release the GIL.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "linear_cpu.h"
#include "planner_cpu.h"
#include "sigreg_cpu.h"

namespace py = pybind11;

namespace {

// Bumped whenever a signature or a result changes; lewm_fast/_ext.py refuses a stale build.
constexpr int kApiVersion = 7;

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

// A 3-d array of float32 or bfloat16 (passed as uint16/int16 bits) whose last axis is contiguous.
struct Strided3 {
  const void* data;
  int64_t s0, s1, n0, n1, n2;
  bool bf16;
};

Strided3 strided3(const py::array& a, const char* name) {
  const bool f32 = a.dtype().is(py::dtype::of<float>());
  const bool b16 = a.itemsize() == 2 && (a.dtype().kind() == 'u' || a.dtype().kind() == 'i');
  if (a.ndim() != 3 || !(f32 || b16) || a.strides(2) != a.itemsize() || a.strides(0) % a.itemsize() ||
      a.strides(1) % a.itemsize())
    throw std::invalid_argument(std::string(name) +
                                ": expected a 3-d float32 or bfloat16 (16-bit) array with a contiguous last axis");
  const auto it = a.itemsize();
  return {a.data(), a.strides(0) / it, a.strides(1) / it, a.shape(0), a.shape(1), a.shape(2), b16};
}

void window_attention(const py::array& q, const py::array& k, const py::array& v, py::array& out, int64_t heads,
                      int num_threads) {
  const auto Q = strided3(q, "q"), K = strided3(k, "k"), V = strided3(v, "v"), O = strided3(out, "out");
  const int64_t N = Q.n0, nq = Q.n1, inner = Q.n2, L = K.n1;
  if (K.bf16 != Q.bf16 || V.bf16 != Q.bf16 || O.bf16 != Q.bf16)
    throw std::invalid_argument("q, k, v, out: expected one element type");
  if (K.n0 != N || V.n0 != N || V.n1 != L || K.n2 != inner || V.n2 != inner)
    throw std::invalid_argument("k, v: expected shape (N, L, I) matching q (N, nq, I)");
  if (nq < 1 || nq > L || L > lewm::kMaxWindow)
    throw std::invalid_argument("q: expected 1 <= nq <= L <= " + std::to_string(lewm::kMaxWindow));
  if (heads < 1 || heads > lewm::kMaxHeads || inner % heads)
    throw std::invalid_argument("heads: expected a divisor of I, <= " + std::to_string(lewm::kMaxHeads));
  if (O.n0 != N || O.n1 != nq || O.n2 != inner || O.s0 != nq * inner || O.s1 != inner || !out.writeable())
    throw std::invalid_argument("out: expected a writeable C-contiguous (N, nq, I) array");
  void* op = out.mutable_data();
  py::gil_scoped_release release;
  lewm::window_attention(Q.data, Q.s0, Q.s1, K.data, K.s0, K.s1, V.data, V.s0, V.s1, op, N, nq, L, heads,
                         inner / heads, Q.bf16, num_threads);
}

// An optional (N, n, D) operand of residual_norm_modulate: None, or an array like x's of element type bf16.
lewm::RowArg row_arg(const py::object& obj, const char* name, int64_t N, int64_t n, int64_t D, bool bf16) {
  if (obj.is_none()) return {nullptr, 0, 0};
  const auto A = strided3(obj.cast<py::array>(), name);
  if (A.bf16 != bf16 || A.n0 != N || A.n1 != n || A.n2 != D)
    throw std::invalid_argument(std::string(name) + ": expected shape (N, n, D) and out's element type");
  return {A.data, A.s0, A.s1};
}

void residual_norm_modulate(py::array& x, const py::object& gate, const py::object& delta, const py::object& shift,
                            const py::object& scale, const py::object& out, bool bf16, double eps1, double eps2,
                            int num_threads) {
  const auto X = strided3(x, "x");
  const int64_t N = X.n0, n = X.n1, D = X.n2;
  if (X.bf16 || !x.writeable()) throw std::invalid_argument("x: expected a writeable float32 array");
  void* op = nullptr;
  if (!out.is_none()) {
    auto o = out.cast<py::array>();
    const auto O = strided3(o, "out");
    if (O.bf16 != bf16 || O.n0 != N || O.n1 != n || O.n2 != D || O.s0 != n * D || O.s1 != D || !o.writeable())
      throw std::invalid_argument("out: expected a writeable C-contiguous (N, n, D) array of the element type");
    op = o.mutable_data();
  }
  const auto G = row_arg(gate, "gate", N, n, D, bf16), De = row_arg(delta, "delta", N, n, D, bf16);
  const auto Sh = row_arg(shift, "shift", N, n, D, bf16), Sc = row_arg(scale, "scale", N, n, D, bf16);
  if ((G.data == nullptr) != (De.data == nullptr) || (Sh.data == nullptr) != (Sc.data == nullptr))
    throw std::invalid_argument("gate and delta, shift and scale: expected both or neither");
  if (op == nullptr && Sh.data != nullptr) throw std::invalid_argument("shift, scale: given without out");
  float* xp = static_cast<float*>(x.mutable_data());
  py::gil_scoped_release release;
  lewm::residual_norm_modulate(xp, X.s0, X.s1, G, De, Sh, Sc, op, bf16, N, n, D, eps1, eps2, num_threads);
}

// A 2-d float32 or bf16 (16-bit) array whose last axis is contiguous: (data, rows, cols, row stride in
// elements, whether bf16).
struct Rows2 {
  const void* data;
  int64_t n0, n1, s0;
  bool bf16;
};

Rows2 rows2(const py::array& a, const char* name) {
  const bool f32 = a.dtype().is(py::dtype::of<float>());
  const bool b16 = a.itemsize() == 2 && (a.dtype().kind() == 'u' || a.dtype().kind() == 'i');
  const auto it = a.itemsize();
  if (a.ndim() != 2 || !(f32 || b16) || a.strides(1) != it || a.strides(0) % it || a.strides(0) < 0)
    throw std::invalid_argument(std::string(name) +
                                ": expected a 2-d float32 or bfloat16 (16-bit) array with a contiguous last axis");
  return {a.data(), a.shape(0), a.shape(1), a.strides(0) / it, b16};
}

// The kernel named `name` (linear_cpu.h), which must run on this CPU.
int runnable_kernel(const std::string& name) {
  const int kernel = lewm::linear_kernel_of(name.c_str());
  if (kernel < 0)
    throw std::invalid_argument("kernel: expected portable, avx2, avx512, portable-bf16 or avx512bf16, got '" + name +
                                "'");
  if (!lewm::linear_kernel_runs(kernel))
    throw std::invalid_argument("kernel: '" + name +
                                "' does not run on this CPU (linear_kernels() lists those that do)");
  return kernel;
}

std::string linear_kernel(const std::string& dtype) {
  if (dtype != "fp32" && dtype != "bf16")
    throw std::invalid_argument("dtype: expected 'fp32' or 'bf16', got '" + dtype + "'");
  return lewm::linear_kernel_name(lewm::linear_kernel(dtype == "bf16"));
}

py::list linear_kernels() {
  py::list names;
  for (int k = lewm::kLinearPortable; k <= lewm::kLinearAvx512Bf16; ++k)
    if (lewm::linear_kernel_runs(k)) names.append(lewm::linear_kernel_name(k));
  return names;
}

// The packed shape of a (N, K) weight for `kernel`: (panels, K', P * pair) (linear_cpu.h).
std::vector<py::ssize_t> packed_shape(int kernel, int64_t N, int64_t K) {
  const int64_t nr = lewm::linear_panel(kernel), pair = lewm::linear_kernel_bf16(kernel) ? 2 : 1;
  return {(N + nr - 1) / nr, (K + pair - 1) / pair, nr * pair};
}

py::tuple linear_packed_shape(const std::string& kernel_name, int64_t N, int64_t K) {
  if (N < 1 || K < 1) throw std::invalid_argument("N, K: expected at least one output and one input column");
  const auto shape = packed_shape(runnable_kernel(kernel_name), N, K);
  return py::make_tuple(shape[0], shape[1], shape[2]);
}

// A packed weight as linear reads it: (panels, K', P * pair) C-contiguous, of the kernel's element size, 64-byte
// aligned (its panel loads are whole cache lines).
void expect_packed(const py::array& packed, int kernel, int64_t N, int64_t K) {
  const auto shape = packed_shape(kernel, N, K);
  if (packed.ndim() != 3 || packed.shape(0) != shape[0] || packed.shape(1) != shape[1] || packed.shape(2) != shape[2] ||
      packed.itemsize() != (lewm::linear_kernel_bf16(kernel) ? 2 : 4) || !(packed.flags() & py::array::c_style) ||
      reinterpret_cast<uintptr_t>(packed.data()) % 64)
    throw std::invalid_argument("packed: expected a 64-byte aligned C-contiguous array of linear_packed_shape(kernel, "
                                "N, K) and the kernel's element size, for N = " + std::to_string(N) + ", K = " +
                                std::to_string(K));
}

void pack_linear_weight(const py::array& w, py::array& packed, const std::string& kernel_name) {
  const int kernel = runnable_kernel(kernel_name);
  const bool bf16 = lewm::linear_kernel_bf16(kernel);
  const auto W = rows2(w, "w");
  if (W.n0 < 1 || W.n1 < 1 || W.s0 != W.n1 || W.bf16 != bf16)
    throw std::invalid_argument(std::string("w: expected a C-contiguous (N, K) ") + (bf16 ? "bfloat16" : "float32") +
                                " array for kernel " + kernel_name);
  expect_packed(packed, kernel, W.n0, W.n1);
  if (!packed.writeable()) throw std::invalid_argument("packed: expected a writeable array");
  void* pp = packed.mutable_data();
  py::gil_scoped_release release;
  lewm::pack_linear_weight(kernel, W.data, W.n0, W.n1, pp);
}

// A bias (n_out,) contiguous of the kernel's element type, or None: its data (nullptr for None).
const void* bias_data(const py::object& bias, int64_t n_out, bool bf16, const std::string& name) {
  if (bias.is_none()) return nullptr;
  const auto b = bias.cast<py::array>();
  if (b.ndim() != 1 || b.shape(0) != n_out || b.itemsize() != (bf16 ? 2 : 4) || b.strides(0) != b.itemsize() ||
      (!bf16 && !b.dtype().is(py::dtype::of<float>())))
    throw std::invalid_argument(name + ": expected a contiguous (n_out,) array of x's element type");
  return b.data();
}

void linear(const py::array& x, const py::array& packed, int64_t n_out, const py::object& bias, py::array& out,
            bool gelu, int num_threads, const std::string& kernel_name) {
  const int kernel = runnable_kernel(kernel_name);
  const bool bf16 = lewm::linear_kernel_bf16(kernel);
  const int64_t panel = lewm::linear_panel(kernel);
  const auto X = rows2(x, "x");
  const int64_t M = X.n0, K = X.n1;
  if (X.bf16 != bf16) throw std::invalid_argument("x: expected the kernel's element type");
  if (K < 1 || n_out < 1) throw std::invalid_argument("x, n_out: expected at least one input and one output column");
  expect_packed(packed, kernel, n_out, K);
  // out (M, n_out), or (planes, M, plane_cols) with planes * plane_cols == n_out (linear_cpu.h)
  int64_t plane_cols = 0, plane_stride = 0;
  Rows2 O;
  const auto it = out.itemsize();
  if (out.ndim() == 3) {
    if (out.strides(0) % it || out.strides(0) < 0 || n_out % panel || out.shape(0) * out.shape(2) != n_out ||
        out.shape(2) % panel)
      throw std::invalid_argument("out: expected (planes, M, plane_cols) planes, plane_cols a multiple of " +
                                  std::to_string(panel) + " (the kernel's panel) and planes * plane_cols == n_out");
    plane_cols = out.shape(2), plane_stride = out.strides(0) / it;
    O = rows2(out.attr("__getitem__")(0).cast<py::array>(), "out");
    O.n1 = n_out;
    if (out.shape(0) > 1 && plane_stride < (M - 1) * O.s0 + plane_cols)
      throw std::invalid_argument("out: planes overlap (plane stride below the rows of a plane)");
  } else {
    O = rows2(out, "out");
  }
  if (O.n0 != M || O.n1 != n_out || O.bf16 != bf16 || !out.writeable())
    throw std::invalid_argument("out: expected a writeable (M, n_out) array of x's element type, matching x (M, K)");
  const void* bp = bias_data(bias, n_out, bf16, "bias");
  const void* pp = packed.data();
  void* op = out.mutable_data();
  py::gil_scoped_release release;
  lewm::linear(kernel, X.data, X.s0, pp, bp, op, O.s0, M, n_out, K, gelu, num_threads, plane_cols, plane_stride);
}

// ---- rollout_step: the model once (keeping the arrays it points into), then one call per step ----

struct StepModelHolder {
  lewm::StepModel model;
  std::vector<py::object> keep;
};

// (packed, bias or None, n_out, k), or None where `optional`: a weight packed for `kernel` (expect_packed).
lewm::StepWeight step_weight(const py::object& spec, int kernel, int64_t n_out, int64_t k, bool optional,
                             StepModelHolder& h, const std::string& name) {
  if (spec.is_none() && optional) return {};
  const auto t = spec.cast<py::tuple>();
  if (t.size() != 4 || t[2].cast<int64_t>() != n_out || t[3].cast<int64_t>() != k)
    throw std::invalid_argument(name + ": expected (packed, bias, " + std::to_string(n_out) + ", " +
                                std::to_string(k) + ")");
  const auto packed = t[0].cast<py::array>();
  expect_packed(packed, kernel, n_out, k);
  h.keep.push_back(packed);
  h.keep.push_back(t[1]);
  return {packed.data(), bias_data(t[1], n_out, lewm::linear_kernel_bf16(kernel), name + " bias"), n_out, k};
}

StepModelHolder rollout_step_model(const py::list& blocks, const std::string& kernel_name, int64_t D, int64_t I,
                                   int64_t F, int64_t heads, double eps_final) {
  const int kernel = runnable_kernel(kernel_name);
  if (blocks.empty() || D < 1 || I < 1 || F < 1 || heads < 1 || I % heads || heads > lewm::kMaxHeads)
    throw std::invalid_argument("blocks, D, I, F, heads: expected blocks and positive widths, heads dividing I");
  StepModelHolder h;
  h.model = {{}, kernel, lewm::linear_kernel_bf16(kernel), D, I, heads, eps_final};
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto b = blocks[i].cast<py::tuple>();  // (q, kv, ov, o, mlp1, mlp2, eps1, eps_attn, eps2, eps_mlp)
    const std::string name = "blocks[" + std::to_string(i) + "]";
    if (b.size() != 10) throw std::invalid_argument(name + ": expected (q, kv, ov, o, mlp1, mlp2, 4 epsilons)");
    if (b[3].is_none() && I != D) throw std::invalid_argument(name + ": no output projection needs I == D");
    h.model.blocks.push_back({step_weight(b[0], kernel, I, D, false, h, name + " q"),
                              step_weight(b[1], kernel, 2 * I, D, false, h, name + " kv"),
                              step_weight(b[2], kernel, D, D, false, h, name + " ov"),
                              step_weight(b[3], kernel, D, I, true, h, name + " o"),
                              step_weight(b[4], kernel, F, D, false, h, name + " mlp1"),
                              step_weight(b[5], kernel, D, F, false, h, name + " mlp2"),
                              b[6].cast<double>(), b[7].cast<double>(), b[8].cast<double>(), b[9].cast<double>()});
  }
  return h;
}

void rollout_step(const StepModelHolder& h, py::array& x, const py::array& mods, const py::object& kv, int64_t first,
                  py::array& y_out, int num_threads) {
  const auto& m = h.model;
  const int64_t depth = static_cast<int64_t>(m.blocks.size()), esz = m.bf16 ? 2 : 4;
  const auto X = strided3(x, "x");
  const int64_t N = X.n0, n = X.n1;
  if (X.bf16 || X.n2 != m.D || X.s0 != n * m.D || X.s1 != m.D || !x.writeable() || N < 1 || n < 1)
    throw std::invalid_argument("x: expected a writeable C-contiguous (N, n, D) float32 array");
  if (mods.ndim() != 5 || mods.shape(0) != N || mods.shape(1) != n || mods.shape(2) != depth || mods.shape(3) != 6 ||
      mods.shape(4) != m.D || mods.itemsize() != esz || mods.strides(4) != esz)
    throw std::invalid_argument("mods: expected (N, n, depth, 6, D) of the model's element type, last axis contiguous");
  for (int d = 0; d < 4; ++d)
    if (mods.strides(d) % esz || mods.strides(d) < 0)
      throw std::invalid_argument("mods: expected non-negative strides of whole elements");
  const lewm::StepMods M{mods.data(), mods.strides(0) / esz, mods.strides(1) / esz, mods.strides(2) / esz,
                         mods.strides(3) / esz};
  std::vector<lewm::StepKV> caches;
  if (!kv.is_none()) {
    const auto layers = kv.cast<py::list>();
    if (static_cast<int64_t>(layers.size()) != depth) throw std::invalid_argument("kv: expected one cache per block");
    for (auto layer : layers) {
      auto a = layer.cast<py::array>();
      const auto C = strided3(a, "kv");
      if (C.bf16 != m.bf16 || C.n0 != N || C.n1 < first + n || C.n2 != 2 * m.I || !a.writeable() || first < 0)
        throw std::invalid_argument("kv: expected writeable (N, window, 2I) caches of the model's element type, "
                                    "window >= first + n");
      caches.push_back({a.mutable_data(), C.s0, C.s1});
    }
  } else if (first != 0) {
    throw std::invalid_argument("first: expected 0 without a cache (the new tokens are the whole window)");
  }
  const auto Y = strided3(y_out, "y_out");
  if (Y.bf16 != m.bf16 || Y.n0 != N || Y.n1 != 1 || Y.n2 != m.D || Y.s0 != m.D || !y_out.writeable())
    throw std::invalid_argument("y_out: expected a writeable C-contiguous (N, 1, D) array of the model's element type");
  float* xp = static_cast<float*>(x.mutable_data());
  void* yp = y_out.mutable_data();
  py::gil_scoped_release release;
  lewm::rollout_step(m, xp, N, n, M, caches.empty() ? nullptr : caches.data(), first, yp, num_threads);
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
  m.def("window_attention", &window_attention, py::arg("q").noconvert(), py::arg("k").noconvert(),
        py::arg("v").noconvert(), py::arg("out").noconvert(), py::arg("heads"), py::arg("num_threads"),
        "out (N, nq, I) <- causal attention of q (N, nq, I) over k, v (N, L, I); fp32 or bf16 (16-bit) arrays");
  m.def("linear_kernel", &linear_kernel, py::arg("dtype"),
        "the matmul kernel for 'fp32' or 'bf16' operands on this CPU (the widest it runs, capped by LEWM_CPU_KERNEL)");
  m.def("linear_kernels", &linear_kernels, "the matmul kernels this CPU runs: portable, avx2, avx512, portable-bf16, "
        "avx512bf16");
  m.def("linear_panel", [](const std::string& kernel) { return lewm::linear_panel(runnable_kernel(kernel)); },
        py::arg("kernel"), "output columns per packed weight panel of `kernel`");
  m.def("linear_packed_shape", &linear_packed_shape, py::arg("kernel"), py::arg("n"), py::arg("k"),
        "the shape (panels, K', P * pair) of a (n, k) weight packed for `kernel`: P = linear_panel(kernel) columns per "
        "panel; bf16 kernels hold pairs of k side by side (pair = 2, K' = ceil(k / 2)), fp32 ones pair = 1, K' = k");
  m.def("pack_linear_weight", &pack_linear_weight, py::arg("w").noconvert(), py::arg("packed").noconvert(),
        py::arg("kernel"),
        "packed <- w (N, K) float32 (bfloat16 as 16-bit for bf16 kernels) in `kernel`'s panels, zero-padded; packed: "
        "64-byte aligned, linear_packed_shape(kernel, N, K), the kernel's element size");
  m.def("linear", &linear, py::arg("x").noconvert(), py::arg("packed").noconvert(), py::arg("n_out"),
        py::arg("bias").none(true), py::arg("out").noconvert(), py::arg("gelu"), py::arg("num_threads"),
        py::arg("kernel"),
        "out (M, n_out) <- x (M, K) @ W^T + bias, then the erf GELU if `gelu`, by `kernel` on W packed for it; "
        "float32, or bfloat16 (16-bit) in and out with fp32 sums for bf16 kernels; rows may be strided; out may be "
        "(planes, M, plane_cols) planes of the columns");
  m.def("kernel_isa", &lewm::kernel_isa, "the instruction set of the kernels' clone the loader picked on this CPU");
  m.def("residual_norm_modulate", &residual_norm_modulate, py::arg("x").noconvert(), py::arg("gate").none(true),
        py::arg("delta").none(true), py::arg("shift").none(true), py::arg("scale").none(true),
        py::arg("out").none(true), py::arg("bf16"), py::arg("eps1"), py::arg("eps2"), py::arg("num_threads"),
        "x += gate * delta (in place, if given); then, if out is given, out <- LN2(LN1(x) * (1 + scale) + shift), "
        "or LN1(x) without shift/scale. gate, delta, shift, scale, out: bf16 (16-bit) or fp32 as `bf16` says");
  py::class_<StepModelHolder>(m, "RolloutStepModel", "the blocks of a packed predictor, as rollout_step reads them");
  m.def("rollout_step_model", &rollout_step_model, py::arg("blocks"), py::arg("kernel"), py::arg("d"), py::arg("i"),
        py::arg("f"), py::arg("heads"), py::arg("eps_final"),
        "blocks: per block (q, kv, ov, o or None, mlp1, mlp2, eps1, eps_attn, eps2, eps_mlp), each weight (packed "
        "for `kernel`, bias or None, n_out, k); the arrays are kept alive by the returned model");
  m.def("rollout_step", &rollout_step, py::arg("model"), py::arg("x").noconvert(), py::arg("mods").noconvert(),
        py::arg("kv").none(true), py::arg("first"), py::arg("y_out").noconvert(), py::arg("num_threads"),
        "every block of one rollout step for the n newest tokens, then the final norm of the newest: x (N, n, D) "
        "float32 residual (in place), mods (N, n, depth, 6, D), kv: a (N, window, 2I) cache per block or None, "
        "y_out (N, 1, D) (csrc/rollout_step.cpp)");
}
