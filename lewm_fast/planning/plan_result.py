"""What a planner returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PlanResult:
    """actions: (E, horizon, A) the plan; std: (E, horizon, A) the final std of the distribution (None
    for predictive sampling and gradient planning); elite_cost: (E,) the cost the public solver reports
    (CEM, iCEM: the last iteration's mean elite cost; MPPI: the mean cost of the weighted samples;
    predictive sampling and gradient: the chosen sample's cost). Gradient planning only (else empty /
    None): history, per chunk the summed cost of every step (`optimizers.SolveResult`'s; one chunk: all
    environments); samples (E, S, T, A), the optimised samples."""

    actions: torch.Tensor
    std: torch.Tensor | None
    elite_cost: torch.Tensor
    history: list[list[float]] = field(default_factory=list)
    samples: torch.Tensor | None = None
