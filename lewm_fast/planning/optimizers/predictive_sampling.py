"""Predictive sampling (Howell et al., 2022): stable-worldmodel 0.1.1's `PredictiveSamplingSolver`
semantics, batched over b environments.

One draw around the nominal: cand = nominal + randn(b, S, T, A) * noise_scale, cand[:, 0] = nominal
(never worse than the warm start); the result is the lowest-cost candidate, and its cost is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lewm_fast.planning.optimizers.base import PlanState, SamplingOptimizer, check_float, check_int


@dataclass(frozen=True)
class PredictiveSampling(SamplingOptimizer):
    """num_samples (S) and noise_scale (the noise's std): the public defaults. One iteration."""

    num_samples: int = 300
    noise_scale: float = 1.0

    name = "ps"
    public_name = "PredictiveSamplingSolver"

    def __post_init__(self):
        check_int("num_samples", self.num_samples)
        check_float("noise_scale", self.noise_scale, strict=False)

    @property
    def steps(self) -> int:
        return 1

    @property
    def initial_std(self) -> float:
        return float(self.noise_scale)

    @property
    def selection_size(self) -> int:
        """The result is the lowest-cost candidate."""
        return 1

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        nominal = state.mean
        noise = torch.randn(nominal.shape[0], self.num_samples, *nominal.shape[1:], generator=generator,
                            device=nominal.device, dtype=nominal.dtype)  # fmt: skip
        cand = nominal.unsqueeze(1) + noise * self.noise_scale
        cand[:, 0] = nominal
        return cand

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        """The argmin per environment (no host sync: a gather on the device)."""
        rows = torch.arange(cand.shape[0], device=cand.device)
        best_idx = costs.argmin(dim=1)
        best, best_cost = cand[rows, best_idx], costs[rows, best_idx]
        return state.replace(mean=best, cost=best_cost), dict(best_idx=best_idx, mean=best, prev_mean=state.mean)

    def result(self, state: PlanState):
        return state.mean, None, state.cost
