"""CEM, the Cross-Entropy Method: stable-worldmodel 0.1.1's `CEMSolver` semantics, batched over b
environments.

Per iteration: cand = randn(b, S, T, A) * std + mean, cand[:, 0] = mean; keep the `topk` lowest
costs; mean, std = the elites' mean and unbiased std. The reported cost is the elites' mean cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lewm_fast.planning import ops
from lewm_fast.planning.optimizers.base import PlanState, SamplingOptimizer, check_float, check_int, check_topk


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

    @property
    def selection_size(self) -> int:
        """The update depends on the costs only through the ranks of the `topk` lowest."""
        return self.topk

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        """(b, S, T, A) candidates: exactly the public draw."""
        return gaussian_candidates(state, self.num_samples, generator)

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        """The elite update; also the public callback's keyword arguments (besides step, candidates, costs)."""
        new = ops.elites(costs, cand, self.topk)
        info = dict(topk_vals=new.costs, topk_inds=new.indices, topk_candidates=new.candidates, mean=new.mean,
                    var=new.std, prev_mean=state.mean, prev_var=state.std)  # fmt: skip
        return PlanState(new.mean, new.std, new.costs.mean(dim=1), new.candidates), info

    def fast_update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor, op_set) -> PlanState:
        """One fused op (`op_set.elite_update`: top-k, mean, unbiased std, mean elite cost) on the device."""
        mean, std, cost = op_set.elite_update(costs, cand, self.topk)
        return PlanState(mean, std, cost)
