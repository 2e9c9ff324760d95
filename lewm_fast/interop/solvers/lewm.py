"""The drop-ins' LeWM fast path: which cost objects get the packed rollout, and the solve on it.

Packed (all environments in one batch on `lf.Planner`'s engine):
- an `lf.LeWM`, or release 0.1.1's public `LeWM` (stable_worldmodel.wm.lewm), whose `get_cost` is its
  class's own (a subclass that changes the cost keeps its own `get_cost`, on the generic loop);
- the current source's `ShootingCostEvaluator` over a LeWM with a recognised objective
  (lewm_fast/interop/evaluator.py), for solves with one context frame.
A public LeWM is converted once (`from_swm`) and converted again when its weights change (a parameter
updated in place, or moved), so planning between training steps stays exact. A public module that does
not convert (a test double with another encoder) is not a LeWM to the packed path: the generic loop.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass

import torch

from lewm_fast.interop.evaluator import GoalTerm, WithObjective, public_class, recognise_evaluator
from lewm_fast.model import LeWM

_converted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # public LeWM -> (fingerprint, lf.LeWM)
LEWM_MODULE = "stable_worldmodel.wm.lewm"


def _fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is updated in place, replaced, or moved."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*model.parameters(), *model.buffers()))


def converted_lewm(model) -> LeWM | None:
    """`model` as an `lf.LeWM` (itself, or the public LeWM converted and cached), or None."""
    if isinstance(model, LeWM):
        return model
    if public_class(model, "LeWM", LEWM_MODULE) is None:
        return None
    stamp = _fingerprint(model)
    cached = _converted.get(model)
    if cached is None or cached[0] != stamp:
        from lewm_fast.interop.swm import from_swm

        try:
            cached = (stamp, from_swm(model).eval())
        except (TypeError, ValueError, AttributeError):  # not the published architecture
            return None
        _converted[model] = cached
    return cached[1]


@dataclass(frozen=True)
class PackedCost:
    """A cost object the packed rollout computes: `lewm` the model it rolls out, `objective` the tree of
    lewm_fast/interop/evaluator.py (a LeWM's own get_cost: the goal term alone), `generic` the object whose
    `get_cost` the eager loop calls on the fast backends, `evaluator` the recognised evaluator or None."""

    lewm: LeWM
    objective: object
    generic: object
    evaluator: object | None = None

    def accepts(self, info_dict: dict) -> bool:
        """Whether this solve's inputs are ones the packed path computes (the evaluator's rules)."""
        return self.evaluator is None or self.evaluator.accepts(info_dict)


def packed_cost(model) -> PackedCost | None:
    """The packed form of a solver's cost object, or None (the generic loop around its own get_cost)."""
    if isinstance(model, LeWM):
        return PackedCost(model, GoalTerm(), model) if type(model).get_cost is LeWM.get_cost else None
    evaluator = recognise_evaluator(model)
    if evaluator is not None:
        lewm = converted_lewm(evaluator.model)
        return None if lewm is None else PackedCost(lewm, evaluator.objective, model, evaluator)
    public = public_class(model, "LeWM", LEWM_MODULE)
    own_cost = getattr(public, "get_cost", None)
    if own_cost is None or getattr(type(model), "get_cost", None) is not own_cost:
        return None
    lewm = converted_lewm(model)
    # the public get_cost compares every environment with the first one's goal: lf.LeWM's is per environment
    return None if lewm is None else PackedCost(lewm, GoalTerm(), lewm)


def observations(info_dict: dict, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels (E, H, C, h, w) and the goal frame (E, C, h, w) of a public info_dict: `goal` (or
    `goal_pixels`, which the public cost prefers) (E, T, C, h, w), its last frame as the public cost uses."""
    for key in ("pixels", "goal"):
        if key not in info_dict:
            raise ValueError(f"info_dict: expected a '{key}' entry, got keys {sorted(info_dict)}")
    pixels = torch.as_tensor(info_dict["pixels"]).to(device, dtype)
    goal = torch.as_tensor(info_dict.get("goal_pixels", info_dict["goal"])).to(device, dtype)
    if goal.ndim == 5:
        goal = goal[:, -1]
    return pixels, goal


class PlannerCache:
    """A drop-in's packed planner, kept while the settings it was built for stay the same (its static
    buffers and CUDA graphs are reused across solves). `key` and `planner` are the last ones built."""

    def __init__(self):
        self.key: tuple | None = None
        self.planner = None

    def get(self, key: tuple, build):
        if self.planner is None or self.key != key:
            self.planner, self.key = build(), key
        return self.planner


def solve_packed(solver, packed: PackedCost, optimizer, info_dict: dict, mean: torch.Tensor, std: torch.Tensor):
    """All environments in one batch on the packed rollout of `lf.Planner`, the solver's generator its noise.

    A sampling optimizer's planner is kept in `solver.planner_cache`; the gradient solver's optimizer holds
    this solve's drawn samples (its `init`), so its planner is built for the solve.
    """
    from lewm_fast.planning.planner import Planner

    def build():
        opt = optimizer if isinstance(packed.objective, GoalTerm) else WithObjective(optimizer, packed.objective)
        return Planner(packed.lewm, opt, horizon=mean.shape[1], backend=solver.backend, dtype=solver.plan_dtype,
                       cuda_graph=solver.cuda_graph, generator=solver.torch_gen)  # fmt: skip

    if optimizer.kind == "sampling":
        key = (id(packed.lewm), packed.objective, optimizer.name, repr(solver.optimizer_settings()), mean.shape[1],
               solver.backend, solver.plan_dtype, solver.cuda_graph, id(solver.torch_gen))  # fmt: skip
        planner = solver.planner_cache.get(key, build)
    else:
        planner = build()
    pixels, goal = observations(info_dict, planner.device, torch.float32)
    out = planner.plan_with_info(pixels, goal, init_mean=mean.float(), init_std=std.float())
    std_out = None if out.std is None else out.std.to(mean.dtype)
    return dataclasses.replace(out, actions=out.actions.to(mean.dtype), std=std_out)
