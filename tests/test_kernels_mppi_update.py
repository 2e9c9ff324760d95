"""lewm_fast/kernels/mppi_update.py (top-k or all S costs, softmax weights, weighted mean) against the reference
`ops.mppi_update` (torch.topk + gather + softmax + sum): S not a power of two, topk 1, topk = S, no
top-k (every sample weighted, in row tiles), wide candidates. Runs under TRITON_INTERPRET=1 without a GPU.
"""

import pytest
import torch

from lewm_fast.planning import ops

pytest.importorskip("triton")
from lewm_fast.kernels.mppi_update import mppi_update  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "e, s, k, t, a, temperature",
    [(1, 300, 30, 5, 10, 0.5), (3, 37, None, 1, 10, 2.0), (2, 9, 9, 2, 3, 0.1), (2, 50, 1, 7, 20, 0.5),
     (2, 70, None, 5, 10, 0.05)],
)  # fmt: skip
def test_matches_reference(e, s, k, t, a, temperature):
    g = torch.Generator().manual_seed(s)
    cost = (torch.randperm(e * s, generator=g).float().view(e, s) / s * 3).to(DEVICE)  # distinct: no ties
    cand = torch.randn(e, s, t, a, generator=g).to(DEVICE)
    mean, out_cost = mppi_update(cost, cand, k, temperature)
    want_mean, want_cost = ops.mppi_update(cost, cand, k, temperature)
    assert mean.shape == (e, t, a) and out_cost.shape == (e,)
    torch.testing.assert_close(mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_cost, want_cost, rtol=1e-5, atol=1e-6)


def test_weights_by_hand():
    """Two candidates of costs 0 and ln 3 at temperature 1: weights 3/4 and 1/4."""
    cost = torch.tensor([[0.0, float(torch.tensor(3.0).log()), 9.0]], device=DEVICE)
    cand = torch.tensor([1.0, 5.0, 100.0], device=DEVICE).view(1, 3, 1, 1)
    mean, out_cost = mppi_update(cost, cand, 2, 1.0)
    torch.testing.assert_close(mean.flatten(), torch.tensor([2.0], device=DEVICE))
    torch.testing.assert_close(out_cost, cost[:, :2].mean(1))


def test_bad_input():
    with pytest.raises(ValueError, match="1 <= topk <= S=4"):
        mppi_update(torch.zeros(1, 4, device=DEVICE), torch.zeros(1, 4, 2, 2, device=DEVICE), 5, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        mppi_update(torch.zeros(1, 4, device=DEVICE), torch.zeros(1, 4, 2, 2, device=DEVICE), 2, 0.0)
