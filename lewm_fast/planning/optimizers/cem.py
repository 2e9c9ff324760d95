"""CEM, the Cross-Entropy Method: stable-worldmodel 0.1.1's `CEMSolver` semantics, batched over b
environments.

Per iteration: cand = randn(b, S, T, A) * std + mean, cand[:, 0] = mean; keep the `topk` lowest
costs; mean, std = the elites' mean and unbiased std. The reported cost is the elites' mean cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lewm_fast.planning.optimizers.base import (
    PlanState,
    SamplingOptimizer,
    check_float,
    check_int,
    check_topk,
    elite_rows,
)


def gaussian_candidates(state: PlanState, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """randn(b, S, T, A) * std + mean with sample 0 = the mean, in the public order of operations."""
    mean, std = state.mean, state.std
    # The noise in the std's dtype, the distribution's own (MPPI never changes its std): a float64 cost
    # makes MPPI's weighted mean float64, but the public solvers keep drawing in the model's dtype.
    noise = torch.randn(mean.shape[0], num_samples, *mean.shape[1:], generator=generator, device=mean.device,
                        dtype=std.dtype)  # fmt: skip
    cand = noise * std.unsqueeze(1) + mean.unsqueeze(1)
    cand[:, 0] = mean
    return cand


def top_elites(cand: torch.Tensor, costs: torch.Tensor, topk: int):
    """The public elite selection: (topk_vals (b, K), topk_inds (b, K), topk_candidates (b, K, T, A))."""
    topk_vals, topk_inds = torch.topk(costs, k=topk, dim=1, largest=False)
    return topk_vals, topk_inds, cand[elite_rows(cand.shape[0], topk, cand.device), topk_inds]


@dataclass(frozen=True)
class CEM(SamplingOptimizer):
    """num_samples (S), var_scale (initial std), n_steps (iterations), topk (elites): the public defaults."""

    num_samples: int = 300
    var_scale: float = 1.0
    n_steps: int = 30
    topk: int = 30

    name = "cem"
    public_name = "CEMSolver"

    def __post_init__(self):
        check_int("num_samples", self.num_samples)
        check_float("var_scale", self.var_scale)
        check_int("n_steps", self.n_steps)
        check_topk("topk", self.topk, self.num_samples)

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        """(b, S, T, A) candidates: exactly the public draw."""
        return gaussian_candidates(state, self.num_samples, generator)

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        """The elite update; also the public callback's keyword arguments (besides step, candidates, costs)."""
        topk_vals, topk_inds, topk_candidates = top_elites(cand, costs, self.topk)
        mean, std = topk_candidates.mean(dim=1), topk_candidates.std(dim=1)
        info = dict(topk_vals=topk_vals, topk_inds=topk_inds, topk_candidates=topk_candidates, mean=mean, var=std,
                    prev_mean=state.mean, prev_var=state.std)  # fmt: skip
        return PlanState(mean, std, topk_vals.mean(dim=1), topk_candidates), info

    def fast_update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor, ops) -> PlanState:
        """One fused op (`ops.elite_update`: top-k, mean, unbiased std, mean elite cost) on the device."""
        mean, std, cost = ops.elite_update(costs, cand, self.topk)
        return PlanState(mean, std, cost)
