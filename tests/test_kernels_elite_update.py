"""lewm_fast/kernels/elite_update.py (top-k of S costs, mean and unbiased std of the elites, mean elite cost) against
the reference (torch.topk + gather + mean + std): S not a power of two, topk = 2 and topk = S, many
environments, wide candidates (several column blocks). Runs under TRITON_INTERPRET=1 without a GPU.
"""

import pytest
import torch

from lewm_fast.planning import ops

pytest.importorskip("triton")
from lewm_fast.kernels.elite_update import elite_update  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("e, s, k, t, a", [(1, 300, 30, 5, 10), (3, 37, 2, 1, 10), (2, 9, 9, 2, 3), (2, 50, 7, 7, 20)])
def test_matches_reference(e, s, k, t, a):
    g = torch.Generator().manual_seed(s + k)
    cost = torch.randperm(e * s, generator=g).float().view(e, s).to(DEVICE)  # distinct costs: no ties
    cand = torch.randn(e, s, t, a, generator=g).to(DEVICE)
    mean, std, elite_cost = elite_update(cost, cand, k)
    ref = ops.elite_update(cost, cand, k)
    assert mean.shape == std.shape == (e, t, a) and elite_cost.shape == (e,)
    for got, want in zip((mean, std, elite_cost), ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_selects_the_lowest_costs():
    """Elites are the k lowest: candidates equal to their index make mean/std checkable by hand."""
    cost = torch.tensor([[5.0, 0.0, 3.0, 1.0, 4.0, 2.0]], device=DEVICE)
    cand = torch.arange(6.0, device=DEVICE).view(1, 6, 1, 1)
    mean, std, elite_cost = elite_update(cost, cand, 3)  # lowest costs at indices 1, 3, 5
    torch.testing.assert_close(mean.flatten(), torch.tensor([3.0], device=DEVICE))
    torch.testing.assert_close(std.flatten(), torch.tensor([2.0], device=DEVICE))  # unbiased: sqrt(8 / 2)
    torch.testing.assert_close(elite_cost, torch.tensor([1.0], device=DEVICE))


def test_bad_input():
    with pytest.raises(ValueError, match="2 <= topk <= S=4"):
        elite_update(torch.zeros(1, 4, device=DEVICE), torch.zeros(1, 4, 2, 2, device=DEVICE), 5)
    with pytest.raises(ValueError, match="does not match cost"):
        elite_update(torch.zeros(1, 4, device=DEVICE), torch.zeros(1, 5, 2, 2, device=DEVICE), 2)


@pytest.mark.parametrize("e, s, k, t, a", [(1, 300, 30, 5, 10), (3, 37, 2, 1, 10), (2, 50, 7, 7, 20)])
def test_momentum_and_indices_match_reference(e, s, k, t, a):
    """iCEM's update: alpha * previous + (1 - alpha) * elite statistics, and the elites' indices, best first."""
    g = torch.Generator().manual_seed(s)
    cost = torch.randperm(e * s, generator=g).float().view(e, s).to(DEVICE)
    cand = torch.randn(e, s, t, a, generator=g).to(DEVICE)
    prev_mean, prev_std = torch.randn(e, t, a, generator=g).to(DEVICE), torch.rand(e, t, a, generator=g).to(DEVICE)
    kw = dict(alpha=0.3, prev_mean=prev_mean, prev_std=prev_std, return_indices=True)
    got, want = elite_update(cost, cand, k, **kw), ops.elite_update(cost, cand, k, **kw)
    for x, y in zip(got[:3], want[:3]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[3], want[3]) and got[3].dtype == torch.int64
    plain = elite_update(cost, cand, k)
    assert not torch.allclose(plain[0], got[0])  # the momentum changes the mean
