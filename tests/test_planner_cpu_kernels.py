"""The planner's C++ CPU kernels (csrc/planner_cpu.cpp, through lewm_fast.planning.cpu_ops) against their
PyTorch references in lewm_fast.planning.ops: window attention and the fused residual + norm chain, fp32 and
bf16, strided operands (views of the qkv output and the modulation table), awkward sizes. The matmul
(csrc/linear_cpu.cpp) has its own file, tests/test_planner_cpu_matmul.py.

Tolerance rule: fp32 within 1e-5 absolute (values are O(1); the kernels sum in a different order);
bf16 outputs within one bf16 rounding of the fp32 reference output (2^-8 relative, plus 1e-3 absolute
for values near 0), i.e. no worse than PyTorch's own bf16 rounding of the same result.
"""

import os
import subprocess
import sys

import pytest
import torch

from lewm_fast import _ext
from lewm_fast.planning import ops
from lewm_fast.planning.cpu_ops import CpuOps, cpp_residual_norm_modulate, cpp_window_attention

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
    (1, 1, 3, 1, 64), (6, 2, 3, 20, 64), (9, 4, 4, 3, 24), (6, 2, 4, 3, 24), (4, 1, 2, 5, 7),
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


# The window attention in a fresh process with LEWM_CPU_KERNEL capped (read once per process), on inputs drawn
# from a seed, against the reference; prints the largest error beyond the relative part of the tolerance rule.
_CAPPED_ATTENTION = """
import torch
from lewm_fast import _ext
from lewm_fast.planning import ops
from lewm_fast.planning.cpu_ops import cpp_window_attention
torch.manual_seed(0)
for dtype, rtol in ((torch.float32, 0.0), (torch.bfloat16, 2**-8)):
    q, k, v = torch.randn(37, 3, 3 * 1024).to(dtype).chunk(3, dim=-1)
    got = cpp_window_attention(_ext.load(), q[:, 1:], k, v, 16).float()
    exact = ops.window_attention(q[:, 1:].float(), k.float(), v.float(), 16)
    print(((got - exact).abs() - rtol * exact.abs()).max().item())
"""


# The residual + norm + modulate likewise, at D = 192 (LeWM's; the AVX-512 path's unrolled row), 256 (its
# largest, a loop) and 272 (past it: the portable row at every level).
_CAPPED_NORM = """
import torch
from lewm_fast import _ext
from lewm_fast.planning import ops
from lewm_fast.planning.cpu_ops import cpp_residual_norm_modulate
torch.manual_seed(0)
for dtype, rtol in ((torch.float32, 0.0), (torch.bfloat16, 2**-8)):
    worst = 0.0
    for d in (192, 256, 272):
        x = torch.randn(50, 2, d) * 3 + 0.5
        gate, delta, shift, scale = ((torch.randn(50, 2, d) * 0.5).to(dtype) for _ in range(4))
        joined = torch.addcmul(x, gate.float(), delta.float())
        exact = ops.norm_modulate(joined, shift.float(), scale.float(), 1e-6, 1e-5, torch.float32)
        got = cpp_residual_norm_modulate(_ext.load(), x, gate, delta, shift, scale, 1e-6, 1e-5, dtype).float()
        worst = max(worst, ((got - exact).abs() - rtol * exact.abs()).max().item(), (x - joined).abs().max().item())
    print(worst)
"""


def _capped_excess(script: str, level: str) -> list[float]:
    """Run `script` in a fresh process with LEWM_CPU_KERNEL=`level` (read once per process); what it printed."""
    env = {**os.environ, "LEWM_CPU_KERNEL": level}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [float(v) for v in done.stdout.split()]


@pytest.mark.parametrize("level", ["portable", "avx2", "auto"])
def test_window_attention_on_every_path(level):
    """Below AVX-512 (LEWM_CPU_KERNEL=portable or avx2, or a CPU without it) the portable loops run; at it the
    AVX-512 path (csrc/attention_avx512.cpp, dim_head 64): both within the tolerance rule above."""
    fp32_excess, bf16_excess = _capped_excess(_CAPPED_ATTENTION, level)
    assert fp32_excess <= 1e-5 and bf16_excess <= 1e-3  # the absolute parts of the rule


@pytest.mark.parametrize("level", ["portable", "avx2", "auto"])
def test_residual_norm_modulate_on_every_path(level):
    """The portable rows below AVX-512, the AVX-512 path (csrc/norm_avx512.cpp, D a multiple of 16 up to 256) at
    it: both within the tolerance rule above, the residual update too."""
    fp32_excess, bf16_excess = _capped_excess(_CAPPED_NORM, level)
    assert fp32_excess <= 1e-5 and bf16_excess <= 1e-3


def modulation(n_rows, n, d, dtype):
    """shift, scale, gate as strided views of a (N, T, depth, 6, D) table, like the rollout's."""
    table = (torch.randn(n_rows, n + 2, 3, 6, d) * 0.5).to(dtype)
    return table[:, 1 : n + 1, 2, 0], table[:, 1 : n + 1, 2, 1], table[:, 1 : n + 1, 2, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "n_rows, n, d", [(300, 3, 192), (300, 1, 192), (3, 2, 17), (1, 1, 1), (64, 3, 40), (5, 2, 48), (7, 1, 256)]
)
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
    with pytest.raises(ValueError, match="out"):
        ext.residual_norm_modulate(torch.randn(2, 1, 8).numpy(), None, None, None, None,
                                   torch.empty(2, 2, 8).numpy(), False, 1e-6, 0.0, 1)  # fmt: skip
