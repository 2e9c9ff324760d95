"""What planning returns, at every level: a planner's plan, an engine's solve, the chunk loop's solve and one
chunk's solve all return a `PlanResult`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch


@dataclass
class PlanResult:
    """The plan of E environments (a chunk's result: of its b environments).

    actions: (E, T, A) the plan.
    std: (E, T, A) the final std of the distribution; None for predictive sampling and gradient planning.
    cost: (E,) the cost the public solver reports (CEM, iCEM: the last iteration's mean elite cost; MPPI:
        the mean cost of the weighted samples; predictive sampling and gradient: the chosen sample's cost).
    history: gradient planning only, else []: per chunk of environments, the summed cost of every step
        (floats; in one chunk's own result, that chunk's steps as 0-d device tensors, made floats once at
        the end of the whole solve so that no step waits on the host).
    samples: (E, S, T, A) the optimised samples (gradient planning), else None.
    """

    actions: torch.Tensor
    std: torch.Tensor | None
    cost: torch.Tensor
    history: list = field(default_factory=list)
    samples: torch.Tensor | None = None

    @property
    def elite_cost(self) -> torch.Tensor:
        """Deprecated name of `cost` (lewm_fast 0.1.0's)."""
        warnings.warn("PlanResult.elite_cost is deprecated: use PlanResult.cost", DeprecationWarning, stacklevel=2)
        return self.cost
