"""lewm_fast/kernels/linear_epilogue.py (GEMM + bias + GELU; GEMM + bias, then gate * . + residual) against the
references in lewm_fast.planning.ops: fp32 (IEEE dot, 1e-5) and bf16, row counts that are not multiples
of the tile, strided gate/residual views. Runs under TRITON_INTERPRET=1 without a GPU. bf16: the kernel
applies its epilogue to the fp32 accumulator and rounds once, so it is at least as close to the fp32
result as PyTorch's composition.
"""

import pytest
import torch
import torch.nn.functional as F

from lewm_fast.planning import ops

pytest.importorskip("triton")
from lewm_fast.kernels.linear_epilogue import linear_gate_residual, linear_gelu  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def weights(k, n_out, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_out, k, generator=g) / k**0.5).to(DEVICE, dtype), torch.randn(n_out, generator=g).to(
        DEVICE, dtype
    )


@pytest.mark.parametrize("m, k, n_out", [(1, 16, 8), (67, 40, 70), (130, 192, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_gelu(m, k, n_out, dtype):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(DEVICE, dtype)
    w, b = weights(k, n_out, dtype, seed=k)
    exact = F.gelu(F.linear(x.float(), w.float(), b.float()))
    got = linear_gelu(x, w, b)
    assert got.shape == (m, n_out) and got.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, ops.linear_gelu(x, w, b), rtol=1e-5, atol=1e-5)
    else:  # GELU of the fp32 accumulator, rounded once: within one bf16 ulp; PyTorch rounds twice
        torch.testing.assert_close(got.float(), exact, rtol=2**-7, atol=1e-3)
        torch_err = (ops.linear_gelu(x, w, b).float() - exact).abs().max()
        assert (got.float() - exact).abs().max() <= torch_err + 1e-6


@pytest.mark.parametrize("n, n_tok, last_only", [(1, 1, False), (23, 3, False), (23, 3, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_gate_residual(n, n_tok, last_only, dtype):
    g = torch.Generator().manual_seed(n + n_tok)
    k, d = 48, 40
    x = torch.randn(n, n_tok, k, generator=g).to(DEVICE, dtype)
    res = torch.randn(n, n_tok, d, generator=g).to(DEVICE)
    table = torch.randn(n, 4, 6, d, generator=g).to(DEVICE, dtype)
    gate = table[:, :n_tok, 2]  # a strided view into the modulation table
    if last_only:  # the last block keeps only the newest token: every operand a strided slice
        x, res, gate = x[:, -1:], res[:, -1:], gate[:, -1:]
    w, b = weights(k, d, dtype, seed=3)
    exact = res + gate.float() * F.linear(x.float(), w.float(), b.float())
    got = linear_gate_residual(x, w, b, gate, res)
    assert got.shape == res.shape and got.dtype == torch.float32
    if dtype == torch.float32:
        torch.testing.assert_close(got, ops.linear_gate_residual(x, w, b, gate, res), rtol=1e-5, atol=1e-5)
    else:  # bf16 operands, fp32 accumulator and epilogue: the exact products up to summation order
        torch.testing.assert_close(got, exact, rtol=1e-4, atol=1e-4)


def test_bad_input():
    x = torch.randn(4, 16, device=DEVICE)
    w, b = weights(16, 8, torch.float32, seed=0)
    with pytest.raises(ValueError, match="do not fit an input width"):
        linear_gelu(x, w[:, :15], b)
    with pytest.raises(ValueError, match="x is torch.float32 but the weight is torch.bfloat16"):
        linear_gelu(x, w.bfloat16(), b.bfloat16())
    with pytest.raises(ValueError, match="must be"):
        linear_gate_residual(
            x.view(2, 2, 16), w, b, torch.zeros(2, 3, 8, device=DEVICE), torch.zeros(2, 3, 8, device=DEVICE)
        )
