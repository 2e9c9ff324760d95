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
    def __init__(self, planner):
        self.p = planner
        model = planner.model
        if planner.dtype != next(model.parameters()).dtype:
            model = copy.deepcopy(model).to(planner.dtype)
        self.model = model
        self.distribution_dtype = planner.dtype

    @torch.inference_mode()
    def cost(self, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S): the public `get_cost` of all E environments as one chunk."""
        dev = self.p.device
        return lewm_cost_reference(self.model, pixels.to(dev), goal.to(dev))(cand.to(dev, self.p.dtype))

    def plan(self, pixels, goal, mean, std) -> PlanResult:
        opt = self.p.optimizer
        pixels, goal = pixels.to(self.p.device), goal.to(self.p.device)

        def chunk_cost(lo: int, hi: int):
            return lewm_cost_reference(self.model, pixels[lo:hi], goal[lo:hi])

        return solve_chunks(opt, mean, std, chunk_cost, self.p.generator, batch_size=opt.public_batch_size)
