"""lewm_fast/kernels/norm_modulate.py against its reference (lewm_fast.planning.ops): fp32 and bf16 outputs, strided
modulation views, awkward widths and row counts. Runs under TRITON_INTERPRET=1 without a GPU.

Tolerance rule: fp32 outputs match the reference to 1e-5; bf16 outputs are the fp32 result rounded once,
so they lie within one bf16 ulp (relative 2^-7) of it, as PyTorch's own bf16 output does.
"""

import pytest
import torch

from lewm_fast.planning import ops

pytest.importorskip("triton")
from lewm_fast.kernels.norm_modulate import layer_norm, norm_modulate  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=1e-5)}


def modulation_views(n, n_tok, d, dtype, seed):
    """shift, scale: (n, n_tok, d) strided views into a (n, 5, 2, 6, d) table, as the rollout reads them."""
    g = torch.Generator().manual_seed(seed)
    table = (torch.randn(n, 5, 2, 6, d, generator=g) * 0.3).to(DEVICE, dtype)
    return table[:, 1 : 1 + n_tok, 1, 0], table[:, 1 : 1 + n_tok, 1, 1]


@pytest.mark.parametrize("n, n_tok, d", [(1, 1, 192), (7, 3, 48), (33, 2, 17), (5, 1, 1000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_modulate_matches_reference(n, n_tok, d, dtype):
    g = torch.Generator().manual_seed(n * d)
    x = (torch.randn(n, n_tok, d, generator=g) * 3 + 1).to(DEVICE)
    shift, scale = modulation_views(n, n_tok, d, dtype, seed=d)
    exact = ops.norm_modulate(x, shift, scale, 1e-6, 1e-5, torch.float32)
    got = norm_modulate(x, shift, scale, 1e-6, 1e-5, dtype)
    assert got.shape == (n, n_tok, d) and got.dtype == dtype
    torch.testing.assert_close(got.float(), exact, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_of_a_strided_row(dtype):
    x = torch.randn(9, 3, 40, generator=torch.Generator().manual_seed(1)).to(DEVICE) * 5
    last = x[:, -1]  # (9, 40), row stride 120: the final norm reads the newest token in place
    exact = ops.layer_norm(last, 1e-6, torch.float32)
    got = layer_norm(last, 1e-6, dtype)
    assert got.shape == (9, 40)
    torch.testing.assert_close(got.float(), exact, **TOL[dtype])


def test_modulation_is_applied_per_token():
    """A kernel that ignored shift/scale, or read the wrong token's, would fail here."""
    x = torch.randn(4, 3, 32, device=DEVICE)
    shift, scale = modulation_views(4, 3, 32, torch.float32, seed=3)
    got = norm_modulate(x, shift, scale, 1e-6, 1e-5, torch.float32)
    swapped = ops.norm_modulate(x, shift.flip(1), scale.flip(1), 1e-6, 1e-5, torch.float32)
    assert not torch.allclose(got, swapped, atol=1e-3)
    torch.testing.assert_close(got, ops.norm_modulate(x, shift, scale, 1e-6, 1e-5, torch.float32))


def test_bad_input():
    x = torch.randn(4, 3, 32, device=DEVICE)
    shift, scale = modulation_views(4, 3, 32, torch.float32, seed=3)
    with pytest.raises(ValueError, match="must match x"):
        norm_modulate(x, shift[:, :2], scale[:, :2], 1e-6, 1e-5, torch.float32)
    with pytest.raises(ValueError, match="contiguous in its last dimension"):
        norm_modulate(x.transpose(1, 2), shift, scale, 1e-6, 1e-5, torch.float32)
