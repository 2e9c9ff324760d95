"""The planner's C++ CPU kernels (csrc/planner_cpu.cpp and linear_cpu.cpp, through
lewm_fast.planning.cpu_ops) against their PyTorch references in lewm_fast.planning.ops: window attention,
the fused residual + norm chain and the fp32 matmul, fp32 and bf16, strided operands (views of the qkv
output and the modulation table), awkward sizes.

Tolerance rule: fp32 within 1e-5 absolute (values are O(1); the kernels sum in a different order);
bf16 outputs within one bf16 rounding of the fp32 reference output (2^-8 relative, plus 1e-3 absolute
for values near 0), i.e. no worse than PyTorch's own bf16 rounding of the same result.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lewm_fast import _ext
from lewm_fast.planning import ops
from lewm_fast.planning.cpu_ops import (
    CppPackedWeight,
    CpuOps,
    cpp_linear,
    cpp_residual_norm_modulate,
    cpp_window_attention,
)  # fmt: skip

ext = _ext.load()
pytestmark = pytest.mark.skipif(ext is None, reason="the C++ extension is not built")


def assert_close_to(got: torch.Tensor, exact: torch.Tensor):
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(got.float(), exact, rtol=2**-8, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# Queries are the window's last nq positions, 1 <= nq <= L (the rollout asks for 1, L - 1 and L).
@pytest.mark.parametrize("n_rows, nq, length, heads, dim_head", [
    (300, 1, 3, 16, 64), (300, 3, 3, 16, 64), (150, 2, 3, 16, 64), (7, 2, 2, 16, 64), (5, 1, 1, 4, 64),
    (1, 1, 3, 1, 64), (9, 4, 4, 3, 24), (6, 2, 4, 3, 24), (4, 1, 2, 5, 7),
])  # fmt: skip
def test_window_attention(dtype, n_rows, nq, length, heads, dim_head):
    inner = heads * dim_head
    qkv = torch.randn(n_rows, length, 3 * inner)
    q, k, v = qkv.to(dtype).chunk(3, dim=-1)  # strided views, as in the rollout
    q = q[:, length - nq :]
    exact = ops.window_attention(q.float(), k.float(), v.float(), heads)
    got = cpp_window_attention(ext, q, k, v, heads)
    assert got.dtype == dtype and got.shape == (n_rows, nq, inner)
    assert_close_to(got, exact)


def modulation(n_rows, n, d, dtype):
    """shift, scale, gate as strided views of a (N, T, depth, 6, D) table, like the rollout's."""
    table = (torch.randn(n_rows, n + 2, 3, 6, d) * 0.5).to(dtype)
    return table[:, 1 : n + 1, 2, 0], table[:, 1 : n + 1, 2, 1], table[:, 1 : n + 1, 2, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_rows, n, d", [(300, 3, 192), (300, 1, 192), (3, 2, 17), (1, 1, 1), (64, 3, 40)])
def test_residual_norm_modulate(dtype, n_rows, n, d):
    x = torch.randn(n_rows, n, d) * 3 + 0.5
    shift, scale, gate = modulation(n_rows, n, d, dtype)
    delta = torch.randn(n_rows, n, d).to(dtype)
    # norm_modulate alone
    exact = ops.norm_modulate(x, shift.float(), scale.float(), 1e-6, 1e-5, torch.float32)
    assert_close_to(cpp_residual_norm_modulate(ext, x.clone(), None, None, shift, scale, 1e-6, 1e-5, dtype), exact)
    # the residual join, then the norm; x is updated in place
    joined = torch.addcmul(x, gate.float(), delta.float())
    exact = ops.norm_modulate(joined, shift.float(), scale.float(), 1e-6, 1e-5, torch.float32)
    x_in = x.clone()
    got = cpp_residual_norm_modulate(ext, x_in, gate, delta, shift, scale, 1e-6, 1e-5, dtype)
    assert_close_to(got, exact)
    torch.testing.assert_close(x_in, joined, rtol=0, atol=1e-5)
    # the final norm (no modulation), on a strided last-token view
    last = x[:, -1]
    assert_close_to(cpp_residual_norm_modulate(ext, last, None, None, None, None, 1e-6, 0.0, dtype),
                    ops.layer_norm(last, 1e-6, torch.float32))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_ops_linear_join_norm_equals_composition(dtype):
    cpu = CpuOps(dtype)
    h, w, b = torch.randn(50, 3, 64).to(dtype), torch.randn(192, 64).to(dtype), torch.randn(192).to(dtype)
    shift, scale, gate = modulation(50, 3, 192, dtype)
    x = torch.randn(50, 3, 192)
    want_x, want_y = ops.linear_join_norm(h, w, b, gate, x.clone(), shift, scale, 1e-6, 1e-5, dtype)
    got_x, got_y = cpu.linear_join_norm(h, cpu.pack_weight(w), b, gate, x.clone(), shift, scale, 1e-6, 1e-5, dtype)
    # oneDNN's and PyTorch's bf16 matmuls round differently: allow one more bf16 step in y
    torch.testing.assert_close(got_x, want_x, rtol=1e-5, atol=1e-4 if dtype == torch.float32 else 0.1)
    torch.testing.assert_close(got_y.float(), want_y.float(), rtol=1e-5 if dtype == torch.float32 else 2**-7,
                               atol=1e-4 if dtype == torch.float32 else 1e-2)  # fmt: skip


# The rollout's shapes (rows x in -> out) and every edge of the blocking: rows past a 4-row tile or a row
# block, columns past a 24-column panel (2048 = 85 x 24 + 8) or within one, depths split into k blocks
# (> 384) or not, single elements.
@pytest.mark.parametrize("rows, k, n", [
    (150, 192, 3072), (450, 1024, 192), (300, 192, 2048), (151, 2048, 192), (1, 1, 1), (7, 5, 17),
    (13, 400, 33), (193, 385, 16), (6, 2049, 15), (385, 64, 1), (5, 24, 25), (3, 7, 48),
])  # fmt: skip
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gelu", [False, True])
def test_cpp_linear(rows, k, n, bias, gelu):
    """fp32 sums in another order than PyTorch's: within sqrt(k) fp32 roundings of the magnitude (GELU's
    slope is at most 1.13); the GELU's erf within 1.5e-7 (Abramowitz & Stegun 7.1.26)."""
    x = torch.randn(rows, 2, k)[:, 1]  # strided rows, as the rollout's views
    w, b = torch.randn(n, k), torch.randn(n) if bias else None
    got = cpp_linear(x, CppPackedWeight(ext, w), b, gelu=gelu)
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    magnitude = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    tol = 1.2e-6 * math.sqrt(k) * magnitude + 1e-6
    if gelu:
        exact, tol = F.gelu(exact), tol + 1e-7 * exact.abs()
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    assert ((got.double() - exact).abs() <= tol).all()


@pytest.mark.parametrize("columns", [1, 48])
def test_cpp_gelu_is_within_its_derived_error_of_the_exact_gelu(columns):
    """The epilogue's GELU, x * (1 + erf(x / sqrt 2)) / 2 with Abramowitz & Stegun's erf (|error| < 1.5e-7),
    against the float64 GELU of the same fp32 inputs (an identity weight), in a partial panel (one column)
    and in whole panels. Not against PyTorch's fp32 GELU, whose rounding depends on the ISA it dispatches to."""
    x = torch.linspace(-10, 10, 20016).reshape(-1, columns)
    got = cpp_linear(x, CppPackedWeight(ext, torch.eye(columns)), None, gelu=True).double()
    exact = F.gelu(x.double())
    # erf's error times |x| / 2, plus a few fp32 roundings (2^-24 each) of the products and the sum
    tol = 0.75e-7 * x.double().abs() + 4 * 2**-24 * (exact.abs() + x.double().abs())
    assert ((got - exact).abs() <= tol).all()


def test_planes_the_cpp_matmul_cannot_write_are_a_view():
    """A plane width that is not whole panels (16 of 24 columns): the row-major result, viewed as planes."""
    x, w, b = torch.randn(5, 9), torch.randn(48, 9), torch.randn(48)
    packed = CppPackedWeight(ext, w)
    got = CpuOps(torch.float32).linear_planes(x, packed, b, 16)
    assert got.shape == (3, 5, 16) and torch.equal(got, cpp_linear(x, packed, b).view(5, 3, 16).transpose(0, 1))


def test_cpp_linear_does_not_depend_on_threads():
    x, w, b = torch.randn(700, 300), torch.randn(40, 300), torch.randn(40)
    packed = CppPackedWeight(ext, w).packed.numpy()
    outs = [torch.empty(700, 40) for _ in range(2)]
    for out, threads in zip(outs, (1, 2)):
        ext.linear_f32(x.numpy(), packed, 40, b.numpy(), out.numpy(), True, threads)
    assert torch.equal(outs[0], outs[1])


def test_nan_propagates():
    x = torch.randn(4, 1, 192)
    x[2, 0, 5] = float("nan")
    shift, scale, _ = modulation(4, 1, 192, torch.float32)
    out = cpp_residual_norm_modulate(ext, x, None, None, shift, scale, 1e-6, 1e-5, torch.float32)
    assert out[2].isnan().all() and not out[[0, 1, 3]].isnan().any()


def test_bad_input_is_refused():
    q = torch.randn(4, 1, 64)
    with pytest.raises(ValueError, match="k, v"):
        ext.window_attention(q.numpy(), torch.randn(4, 2, 32).numpy(), torch.randn(4, 2, 64).numpy(),
                             torch.empty(4, 1, 64).numpy(), 1, 1)  # fmt: skip
    with pytest.raises(ValueError, match="one element type"):
        ext.window_attention(q.numpy(), torch.randn(4, 2, 64).bfloat16().view(torch.int16).numpy(),
                             torch.randn(4, 2, 64).numpy(),
                             torch.empty(4, 1, 64).numpy(), 1, 1)  # fmt: skip
    p = ext.LINEAR_PANEL
    packed = torch.empty(1, 8, p).numpy()
    with pytest.raises(ValueError, match="packed"):
        ext.linear_f32(torch.randn(3, 9).numpy(), packed, p, None, torch.empty(3, p).numpy(), False, 1)
    with pytest.raises(ValueError, match="out"):
        ext.linear_f32(torch.randn(3, 8).numpy(), packed, p, None, torch.empty(3, p - 1).numpy(), False, 1)
    with pytest.raises(ValueError, match="planes"):  # planes of 12 columns: not whole panels
        ext.linear_f32(torch.randn(3, 8).numpy(), packed, p, None, torch.empty(2, 3, p // 2).numpy(), False, 1)
    with pytest.raises(ValueError, match="overlap"):  # two planes of p columns over each other's rows
        ext.linear_f32(torch.randn(3, 8).numpy(), torch.empty(2, 8, p).numpy(), 2 * p, None,
                       torch.empty(2, 3, p).as_strided((2, 3, p), (p, p, 1)).numpy(), False, 1)  # fmt: skip
    with pytest.raises(ValueError, match="bias"):
        ext.linear_f32(torch.randn(3, 8).numpy(), packed, p, torch.randn(p - 1).numpy(), torch.empty(3, p).numpy(),
                       False, 1)  # fmt: skip
    with pytest.raises(ValueError, match="out"):
        ext.residual_norm_modulate(torch.randn(2, 1, 8).numpy(), None, None, None, None,
                                   torch.empty(2, 2, 8).numpy(), False, 1e-6, 0.0, 1)  # fmt: skip
