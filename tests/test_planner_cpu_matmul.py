"""The planner's C++ matmul (csrc/linear_cpu.cpp, through lewm_fast.planning.cpu_ops) against float64
references, kernel by kernel: fp32 (portable, avx2, avx512) and bf16 (portable-bf16, avx512bf16). A kernel
this CPU cannot run is skipped with the reason; LEWM_CPU_KERNEL (the choice capped) is tested in subprocesses.

Tolerance rule (derived, not tuned to a CPU): the references are float64 sums of the operands the kernel
sees (bf16 kernels: x, W and the bias rounded to bf16 first, as torch's .to(torch.bfloat16) rounds, to nearest
even). A kernel's fp32 sum of K products started from the bias makes at most one rounding per product and
per addition, so it is within (K + 2) * 2^-24 * (|b| + sum_k |x_k w_k|) of the exact sum; the GELU (slope at
most 1.13) adds its own error (`GELU_FIT` |x| / 2 + `GELU_ROUNDINGS` u (|x| + |GELU(x)|), below); a bf16 kernel
rounds the result once more, within 2^-8 of it. Small-integer inputs make every sum exact, so there the kernels
must match the reference exactly.

The GELU's error (csrc/linear_kernels.h: x/2 + x/2 erf(x / sqrt 2), erf ~ x P(x^2) / Q(x^2) on x clamped to
[-5.5, 5.5]): the rational is within 3.8e-8 of erf with its fp32 coefficients, and erf(5.5 / sqrt 2) within 2e-8
of 1 (csrc/check/fit_gelu_erf.py). Its evaluation: x^2 rounded once (the rational's relative change is at most
half of s's), Horner's rule over positive partial sums (P's one negative term is below 1e-3 of P) makes at most
one rounding per step with FMAs, two without (P: 6 steps, Q: 5), then x P and the division one each: at most
24.5 roundings of erf relative, i.e. 12.25 u |x| in x/2 erf; x/2 is exact (but for subnormals), and the last
multiply and add at most u (|x| / 2 + |GELU(x)|). In all under 13 u (|x| + |GELU(x)|). csrc/check/kernels_check.cpp
sweeps every bf16 input and 4.4 million fp32 ones through each kernel: 1.9-2.5 roundings at worst.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lewm_fast import _ext
from lewm_fast.planning.cpu_ops import CppPackedWeight, CpuOps, cpp_linear

ext = _ext.load()
pytestmark = pytest.mark.skipif(ext is None, reason="the C++ extension is not built")
KERNELS = ["portable", "avx2", "avx512", "portable-bf16", "avx512bf16"]
U32 = 2.0**-24  # fp32 unit roundoff
U16 = 2.0**-8  # bf16 unit roundoff
GELU_FIT, GELU_ROUNDINGS = 3.8e-8, 13  # the GELU epilogue's erf fit and evaluation (module docstring)


@pytest.fixture(params=KERNELS)
def kernel(request) -> str:
    if request.param not in ext.linear_kernels():
        pytest.skip(f"this CPU does not run the {request.param} kernel (it runs {', '.join(ext.linear_kernels())})")
    return request.param


def dtype_of(kernel: str) -> torch.dtype:
    return torch.bfloat16 if kernel.endswith("bf16") else torch.float32


def reference(x, w, b, gelu: bool):
    """(exact, tol): the float64 result on the operands as given, and the kernel's error bound before any
    bf16 output rounding (module docstring)."""
    x64, w64 = x.double(), w.double()
    exact = F.linear(x64, w64, None if b is None else b.double())
    magnitude = x64.abs() @ w64.abs().T + (0 if b is None else b.double().abs())
    tol = (x.shape[-1] + 2) * U32 * magnitude
    if gelu:
        pre = exact
        exact = F.gelu(pre)
        tol = 1.13 * tol + gelu_tolerance(pre, exact)
    return exact, tol


def gelu_tolerance(pre: torch.Tensor, gelu: torch.Tensor) -> torch.Tensor:
    """The GELU epilogue's own error at pre-activations `pre` (module docstring), subnormal roundings included."""
    return GELU_FIT * pre.abs() / 2 + GELU_ROUNDINGS * U32 * (pre.abs() + gelu.abs()) + 2.0**-148


def check_close(got: torch.Tensor, exact: torch.Tensor, tol: torch.Tensor, dtype: torch.dtype):
    if dtype == torch.bfloat16:
        tol = tol + U16 * (exact.abs() + tol)
    err = (got.double() - exact).abs()
    assert (err <= tol).all(), f"largest error {err.max().item():.3g} at {(err / tol).argmax().item()}"


# The rollout's shapes (rows x in -> out) and every edge of the blocking: rows past a register tile (4 or 8 rows)
# or a row block (256 KB of x per k block: 701 x 385 is three), columns past a panel (24 or 48) or within one,
# depths split into k blocks or not, odd depths (a lone last k of a bf16 pair), single elements.
SHAPES = [(150, 192, 2048), (301, 1024, 192), (7, 2048, 192), (1, 1, 1), (7, 5, 17), (13, 400, 33), (701, 385, 16),
          (6, 2049, 15), (385, 64, 1), (5, 24, 25), (3, 7, 48), (150, 192, 6912 // 16), (2, 513, 97)]  # fmt: skip


@pytest.mark.parametrize("rows, k, n", SHAPES)
@pytest.mark.parametrize("bias, gelu", [(True, False), (False, False), (True, True)])
def test_linear_matches_float64(kernel, rows, k, n, bias, gelu):
    dtype = dtype_of(kernel)
    x = torch.randn(rows, 2, k)[:, 1].to(dtype)  # strided rows, as the rollout's views
    w, b = torch.randn(n, k).to(dtype), torch.randn(n).to(dtype) if bias else None
    got = cpp_linear(x, CppPackedWeight(ext, w, kernel), b, gelu=gelu)
    assert got.dtype == dtype and got.shape == (rows, n)
    check_close(got, *reference(x, w, b, gelu), dtype)


@pytest.mark.parametrize("rows, k, n", [(37, 700, 61), (150, 192, 96), (9, 3, 5)])
def test_linear_is_exact_on_small_integers(kernel, rows, k, n):
    """Every sum is an integer below 2^24: exact in fp32, so no term may be lost, doubled or misplaced. bf16:
    the exact sum rounded once (torch's rounding of the float64 value)."""
    dtype = dtype_of(kernel)
    x, w, b = (torch.randint(-4, 5, s).to(dtype) for s in ((rows, k), (n, k), (n,)))
    got = cpp_linear(x, CppPackedWeight(ext, w, kernel), b)
    assert torch.equal(got, F.linear(x.double(), w.double(), b.double()).to(dtype))


def test_bf16_output_rounds_to_nearest_even(kernel):
    """Sums that fall exactly halfway between two bf16 values (1 + 2^-8 and 1 + 3 * 2^-8, spaced 2^-7) round
    to the one with an even last bit: 1 and 1 + 2^-6, as torch rounds; truncation or rounding half up differ."""
    if dtype_of(kernel) != torch.bfloat16:
        pytest.skip("fp32 kernels do not round their output")
    x = torch.tensor([[1.0, 1.0], [1.0, 3.0]], dtype=torch.bfloat16)
    w = torch.tensor([[1.0, 2.0**-8]], dtype=torch.bfloat16)
    got = cpp_linear(x, CppPackedWeight(ext, w, kernel), None)
    assert got.flatten().tolist() == [1.0, 1.0 + 2.0**-6]


def test_bf16_kernels_take_bf16_operands(kernel):
    """The rounding to bf16 is the caller's (torch's .to): a bf16 kernel refuses fp32 inputs, and the other way."""
    dtype = dtype_of(kernel)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    with pytest.raises(RuntimeError, match="linear: expected x"):
        cpp_linear(torch.randn(3, 8).to(other), CppPackedWeight(ext, torch.randn(4, 8).to(dtype), kernel), None)


@pytest.mark.parametrize("columns", [1, 48])
def test_gelu_epilogue_is_within_its_error_of_the_exact_gelu(kernel, columns):
    """The epilogue alone (an identity weight), in a partial panel (one column) and in whole panels; against
    the float64 GELU of the operands, not PyTorch's fp32 GELU (whose rounding depends on the ISA)."""
    dtype = dtype_of(kernel)
    x = torch.linspace(-10, 10, 20016).reshape(-1, columns).to(dtype)
    got = cpp_linear(x, CppPackedWeight(ext, torch.eye(columns).to(dtype), kernel), None, gelu=True)
    check_close(got, *reference(x, torch.eye(columns), None, gelu=True), dtype)


@pytest.mark.parametrize("rows, k, planes, plane_cols", [(750, 192, 36, 192), (13, 40, 3, 48), (1, 7, 1, 48)])
@pytest.mark.parametrize("threads", [1, 2])
def test_planes_are_the_same_sums_in_planes(kernel, rows, k, planes, plane_cols, threads):
    """The AdaLN modulations' layout (cpp_linear with plane_cols, CpuOps.linear_planes): plane c holds columns
    c * plane_cols ... of every row, bit for bit the row-major matmul's values, on 1 or 2 threads."""
    dtype = dtype_of(kernel)
    x, w, b = (torch.randn(*s).to(dtype) for s in ((rows, k), (planes * plane_cols, k), (planes * plane_cols,)))
    packed = CppPackedWeight(ext, w, kernel)
    torch.set_num_threads(threads)
    try:
        got = cpp_linear(x, packed, b, plane_cols=plane_cols)
        want = cpp_linear(x, packed, b).view(rows, planes, plane_cols).transpose(0, 1)
    finally:
        torch.set_num_threads(2)
    assert got.shape == (planes, rows, plane_cols) and got.is_contiguous() and torch.equal(got, want)


def test_planes_the_cpp_matmul_cannot_write_are_a_view():
    """A plane width that is not whole panels (16 columns): the row-major result, viewed as planes."""
    x, w, b = torch.randn(5, 9), torch.randn(48, 9), torch.randn(48)
    ops = CpuOps(torch.float32)
    packed = CppPackedWeight(ext, w)
    got = ops.linear_planes(x, packed, b, 16)
    assert got.shape == (3, 5, 16) and torch.equal(got, cpp_linear(x, packed, b).view(5, 3, 16).transpose(0, 1))


def test_result_does_not_depend_on_threads(kernel):
    dtype = dtype_of(kernel)
    x, w, b = (torch.randn(*s).to(dtype) for s in ((700, 300), (40, 300), (40,)))
    packed = CppPackedWeight(ext, w, kernel)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(cpp_linear(x, packed, b, gelu=True))
    torch.set_num_threads(2)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("tokens", [1, 2])
def test_linear_into_a_cache_slot(kernel, tokens):
    """CpuOps.linear_into writes into a view of a K/V cache (N, window, 2I) at a window position: one token a row
    (rows one stride apart) by the kernel itself, two by its output copied; the values of `linear` either way,
    and nothing else of the cache changes."""
    dtype = dtype_of(kernel)
    ops = CpuOps(dtype, matmul="cpp", cpp_kernel=kernel)
    packed = ops.pack_weight(torch.randn(96, 40).to(dtype))
    b, x = torch.randn(96).to(dtype), torch.randn(13, tokens, 40).to(dtype)
    cache = torch.full((13, 3, 96), 7.0, dtype=dtype)
    slot = cache[:, 1 : 1 + tokens]
    assert ops.linear_into(x, packed, b, slot) is slot
    assert torch.equal(slot, ops.linear(x, packed, b))
    assert (cache[:, 0] == 7).all() and (cache[:, 1 + tokens :] == 7).all()
    with pytest.raises(ValueError, match=r"out: expected a \(13, 2, 96\) view"):
        cpp_linear(torch.randn(13, 2, 40).to(dtype), packed, b, out=cache[:, :2])  # two strides: refused


def linear_kernel_in_subprocess(level: str) -> subprocess.CompletedProcess:
    """ext.linear_kernel for fp32 and bf16 in a fresh process with LEWM_CPU_KERNEL=level (read once per process)."""
    code = "from lewm_fast import _ext; e = _ext.load(); print(e.linear_kernel('fp32'), e.linear_kernel('bf16'))"
    env = {**os.environ, "LEWM_CPU_KERNEL": level}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("level", ["portable", "avx2", "avx512", "avx512bf16", "auto"])
def test_lewm_cpu_kernel_caps_the_choice(level):
    """The widest kernel this CPU runs at or below the level: fp32 avx512 > avx2 > portable, bf16 avx512bf16 >
    portable-bf16; a level above the CPU's falls back to what it runs."""
    runs = ext.linear_kernels()
    order = ["portable", "avx2", "avx512", "avx512bf16"]
    cap = len(order) - 1 if level == "auto" else order.index(level)
    fp32 = next(k for k in ("avx512", "avx2", "portable") if k in runs and order.index(k) <= cap)
    bf16 = "avx512bf16" if "avx512bf16" in runs and cap == 3 else "portable-bf16"
    done = linear_kernel_in_subprocess(level)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [fp32, bf16]


def test_an_unknown_lewm_cpu_kernel_is_refused():
    done = linear_kernel_in_subprocess("avx1024")
    assert done.returncode != 0 and "LEWM_CPU_KERNEL: expected" in done.stderr and "'avx1024'" in done.stderr


def test_bad_input_is_refused():
    fp32 = ext.linear_kernel("fp32")
    p = ext.linear_panel(fp32)
    packed = torch.empty(ext.linear_packed_shape(fp32, p, 8))
    missing = [k for k in KERNELS if k not in ext.linear_kernels()]
    if missing:
        with pytest.raises(ValueError, match="does not run on this CPU"):
            ext.linear_packed_shape(missing[0], 4, 4)
    with pytest.raises(ValueError, match="kernel: expected"):
        ext.linear_panel("avx1024")
    with pytest.raises(ValueError, match="packed"):  # the wrong depth
        ext.linear(torch.randn(3, 9).numpy(), packed.numpy(), p, None, torch.empty(3, p).numpy(), False, 1, fp32)
    with pytest.raises(ValueError, match="packed"):  # not 64-byte aligned
        unaligned = torch.empty(packed.numel() + 1)[1:].view(packed.shape)
        ext.linear(torch.randn(3, 8).numpy(), unaligned.numpy(), p, None, torch.empty(3, p).numpy(), False, 1, fp32)
    with pytest.raises(ValueError, match="x: expected the kernel's element type"):
        ext.linear(torch.randn(3, 8).bfloat16().view(torch.int16).numpy(), packed.numpy(), p, None,
                   torch.empty(3, p).numpy(), False, 1, fp32)  # fmt: skip
    with pytest.raises(ValueError, match="out"):
        ext.linear(torch.randn(3, 8).numpy(), packed.numpy(), p, None, torch.empty(3, p - 1).numpy(), False, 1, fp32)
    with pytest.raises(ValueError, match="planes"):  # planes narrower than a panel
        ext.linear(torch.randn(3, 8).numpy(), packed.numpy(), p, None, torch.empty(p, 3, 1).numpy(), False, 1, fp32)
    two = torch.empty(ext.linear_packed_shape(fp32, 2 * p, 8))
    with pytest.raises(ValueError, match="overlap"):  # two planes of p columns over each other's rows
        ext.linear(torch.randn(3, 8).numpy(), two.numpy(), 2 * p, None,
                   torch.empty(2, 3, p).as_strided((2, 3, p), (p, p, 1)).numpy(), False, 1, fp32)  # fmt: skip
    with pytest.raises(ValueError, match="bias"):
        ext.linear(torch.randn(3, 8).numpy(), packed.numpy(), p, torch.randn(p - 1).numpy(),
                   torch.empty(3, p).numpy(), False, 1, fp32)  # fmt: skip
    with pytest.raises(ValueError, match="w: expected"):
        ext.pack_linear_weight(torch.randn(p, 8).t().numpy(), packed.numpy(), fp32)
