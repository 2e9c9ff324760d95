"""The reference engine (backend "reference"): the public semantics, plainly.

The optimizer's public loop (`optimizers.solve_chunks`) in chunks of the public solver's default
batch_size (one environment; the gradient solver: all), one generator, the reference LeWM cost with
each chunk's goal and history encoded as the public `LeWM.get_cost` encodes them. The distribution is
kept in the planner's dtype (the public solvers keep it in the model's). Under the same seed the plan
equals the public solver's plan (tests/test_solvers_peer.py, tests/test_planner_*.py).
"""

from __future__ import annotations

import copy

import torch

from lewm_fast.planning.optimizers import solve_chunks
from lewm_fast.planning.plan_result import PlanResult
from lewm_fast.planning.reference import lewm_cost_reference


class ReferenceEngine:
    """The public loop on the reference cost. Arguments as `engine.FastEngine`'s (one signature for every
    engine); the plan's length comes from the distribution it is given, and nothing is captured (cuda_graph
    is unused)."""

    def __init__(self, model, optimizer, generator: torch.Generator, *, horizon: int, dtype: torch.dtype,
                 device: torch.device, cuda_graph: bool = True):  # fmt: skip
        if dtype != next(model.parameters()).dtype:
            model = copy.deepcopy(model).to(dtype)
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.dtype, self.device = dtype, torch.device(device)
        self.distribution_dtype = dtype

    @torch.inference_mode()
    def cost(self, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S): the public `get_cost` of all E environments as one chunk."""
        dev = self.device
        return lewm_cost_reference(self.model, pixels.to(dev), goal.to(dev))(cand.to(dev, self.dtype))

    def plan(self, pixels, goal, mean, std) -> PlanResult:
        """pixels (E, H, C, h, w), goal (E, C, h, w), mean and std (E, T, A) -> PlanResult."""
        opt = self.optimizer
        pixels, goal = pixels.to(self.device), goal.to(self.device)

        def chunk_cost(lo: int, hi: int):
            return lewm_cost_reference(self.model, pixels[lo:hi], goal[lo:hi])

        return solve_chunks(opt, mean, std, chunk_cost, self.generator, batch_size=opt.public_batch_size)
