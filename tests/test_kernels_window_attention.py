"""lewm_fast/kernels/window_attention.py against its reference (lewm_fast.planning.ops.window_attention) and against
plain causal SDPA: every window shape the rollout uses (n == 1 or n == L, L <= num_frames), strided
q/k/v views, odd head counts. Runs under TRITON_INTERPRET=1 without a GPU.
"""

import pytest
import torch
import torch.nn.functional as F

from lewm_fast.planning import ops

pytest.importorskip("triton")
from lewm_fast.kernels.window_attention import window_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def qkv(n, n_q, length, heads, dh, dtype, seed=0):
    """q as a strided slice of a fused qkv output, k and v contiguous (a KV cache)."""
    g = torch.Generator().manual_seed(seed)
    fused = torch.randn(n, n_q, 3 * heads * dh, generator=g).to(DEVICE, dtype)
    k = torch.randn(n, length, heads * dh, generator=g).to(DEVICE, dtype)
    v = torch.randn(n, length, heads * dh, generator=g).to(DEVICE, dtype)
    return fused[..., : heads * dh], k, v


def sdpa_last(q, k, v, heads):
    """The public computation: causal SDPA over the whole window (scale 1), keeping the last n queries."""
    n, n_q, inner = q.shape
    length = k.shape[1]
    full_q = torch.zeros(n, length, inner, dtype=torch.float32, device=q.device)
    full_q[:, length - n_q :] = q.float()
    split = [u.float().unflatten(-1, (heads, -1)).transpose(1, 2) for u in (full_q, k, v)]
    out = F.scaled_dot_product_attention(*split, is_causal=True, scale=1.0)
    return out.transpose(1, 2).flatten(2)[:, length - n_q :]


@pytest.mark.parametrize("n_q, length", [(1, 1), (1, 2), (1, 3), (3, 3), (2, 2), (4, 4)])
@pytest.mark.parametrize("heads, dh", [(16, 64), (3, 24)])
def test_matches_causal_sdpa(n_q, length, heads, dh):
    q, k, v = qkv(5, n_q, length, heads, dh, torch.float32, seed=n_q + length)
    got = window_attention(q, k, v, heads)
    assert got.shape == (5, n_q, heads * dh)
    torch.testing.assert_close(got, sdpa_last(q, k, v, heads), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, ops.window_attention(q, k, v, heads), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_q, length", [(1, 3), (3, 3)])
def test_bf16_is_the_fp32_result_rounded_once(n_q, length):
    """bf16 inputs, fp32 softmax and accumulation: within one bf16 ulp (relative 2^-7) of fp32 SDPA."""
    q, k, v = qkv(7, n_q, length, 16, 64, torch.bfloat16, seed=4)
    got = window_attention(q, k, v, 16)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), sdpa_last(q, k, v, 16), rtol=2**-7, atol=1e-4)


def test_causality_is_enforced():
    """With n == L, query 0 must ignore keys 1.. : changing them leaves its output unchanged."""
    q, k, v = qkv(2, 3, 3, 4, 16, torch.float32, seed=9)
    a = window_attention(q, k, v, 4)
    k2, v2 = k.clone(), v.clone()
    k2[:, 1:] += 5
    v2[:, 1:] -= 5
    b = window_attention(q, k2, v2, 4)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_bad_input():
    q, k, v = qkv(2, 2, 3, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="expected 1 or L=3 queries"):
        window_attention(q, k, v, 4)
    q, k, v = qkv(2, 1, 3, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="must be"):
        window_attention(q, k[:, :, :32], v, 4)
