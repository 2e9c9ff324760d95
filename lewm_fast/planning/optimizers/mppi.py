"""MPPI, Model Predictive Path Integral control: stable-worldmodel 0.1.1's `MPPISolver` semantics,
batched over b environments.

Per iteration: cand = mean + randn(b, S, T, A) * std, cand[:, 0] = mean; when 1 <= topk < S only the
`topk` lowest costs take part; weights = softmax(-(cost - min cost) / temperature); mean = the weighted
sum of those candidates. The std never changes (`var_scale`). The reported cost is the mean cost of the
candidates that took part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lewm_fast.planning import ops
from lewm_fast.planning.optimizers.base import PlanState, SamplingOptimizer, check_float, check_int
from lewm_fast.planning.optimizers.cem import gaussian_candidates


@dataclass(frozen=True)
class MPPI(SamplingOptimizer):
    """The public MPPISolver's parameters and defaults; topk None (or >= num_samples) weights every sample."""

    num_samples: int = 300
    var_scale: float = 1.0
    n_steps: int = 30
    topk: int | None = 30
    temperature: float = 0.5

    name = "mppi"
    rank_based = False  # the weights follow the costs' values
    public_name = "MPPISolver"

    def __post_init__(self):
        check_int("num_samples", self.num_samples)
        check_float("var_scale", self.var_scale)
        check_int("n_steps", self.n_steps)
        if self.topk is not None:
            check_int("topk", self.topk)
        check_float("temperature", self.temperature)

    @property
    def elites(self) -> int | None:
        """How many candidates are weighted: topk when it selects, None for all of them."""
        return self.topk if self.topk is not None and self.topk < self.num_samples else None

    @property
    def selection_size(self) -> int:
        """The `elites` lowest costs take part (0: every sample does); their weights then follow the costs."""
        return self.elites or 0

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        """(b, S, T, A): the public mean + noise * std with sample 0 = the mean (CEM's draw: a float sum
        does not depend on the order of its two terms)."""
        return gaussian_candidates(state, self.num_samples, generator)

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        """The softmax-weighted mean; also what a callback may read (topk_* are None without top-k)."""
        new = ops.mppi_weighting(costs, cand, self.elites, self.temperature)
        selected = new.indices is not None
        info = dict(topk_vals=new.costs if selected else None, topk_inds=new.indices,
                    topk_candidates=new.candidates if selected else None, weights=new.weights, mean=new.mean,
                    var=state.std, prev_mean=state.mean, prev_var=state.std)  # fmt: skip
        return state.replace(mean=new.mean, cost=new.costs.mean(dim=1)), info

    def fast_update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor, op_set) -> PlanState:
        """One fused op (`op_set.mppi_update`: top-k, softmax weights, weighted mean) on the device."""
        mean, cost = op_set.mppi_update(costs, cand, self.elites, self.temperature)
        return state.replace(mean=mean, cost=cost)
