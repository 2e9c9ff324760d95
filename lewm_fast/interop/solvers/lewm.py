"""The drop-ins' LeWM fast path: which models get the packed rollout, and the solve on it.

A model gets it when it is an `lf.LeWM` or the public `LeWM` (stable_worldmodel.wm.lewm) whose
`get_cost` is the class's own (a subclass that changes the cost keeps its own `get_cost`, on the eager
loop). A public LeWM is converted once (`from_swm`) and converted again when its weights change (a
parameter updated in place, or moved), so planning between training steps stays exact.
"""

from __future__ import annotations

import weakref

import torch

from lewm_fast.model import LeWM

_converted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # public LeWM -> (fingerprint, lf.LeWM)


def _public_lewm_class(model) -> type | None:
    for cls in type(model).__mro__:
        if cls.__name__ == "LeWM" and cls.__module__.startswith("stable_worldmodel.wm.lewm"):
            return cls
    return None


def _fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is updated in place, replaced, or moved."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*model.parameters(), *model.buffers()))


def packed_lewm(model) -> LeWM | None:
    """The `lf.LeWM` to run the packed rollout on for `model`, or None (the model keeps its own get_cost)."""
    if isinstance(model, LeWM):
        return model if type(model).get_cost is LeWM.get_cost else None
    public = _public_lewm_class(model)
    if public is None or type(model).get_cost is not public.get_cost:
        return None
    stamp = _fingerprint(model)
    cached = _converted.get(model)
    if cached is None or cached[0] != stamp:
        from lewm_fast.interop.swm import from_swm

        cached = (stamp, from_swm(model).eval())
        _converted[model] = cached
    return cached[1]


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


def solve_packed(solver, lewm: LeWM, optimizer, info_dict: dict, mean: torch.Tensor, std: torch.Tensor):
    """All environments in one batch on the packed rollout of `lf.Planner` (built once per solver and
    setting, then kept: its static buffers and CUDA graph are reused), the solver's generator its noise."""
    from lewm_fast.planning.optimizers import SolveResult
    from lewm_fast.planning.planner import Planner

    key = (id(lewm), solver.optimizer_name, repr(solver.optimizer_settings()), mean.shape[1], solver.backend,
           solver.plan_dtype, solver.cuda_graph)  # fmt: skip
    planner = getattr(solver, "_planner", None)
    if planner is None or solver._planner_key != key:
        planner = Planner(lewm, optimizer.name, horizon=mean.shape[1], backend=solver.backend, dtype=solver.plan_dtype,
                          cuda_graph=solver.cuda_graph, **solver.optimizer_settings())  # fmt: skip
        planner.generator = solver.torch_gen  # one noise stream per solver, as in the public solvers
        solver._planner, solver._planner_key = planner, key
    planner.optimizer = optimizer  # the gradient solver's samples are drawn already (its `init`)
    pixels, goal = observations(info_dict, planner.device, torch.float32)
    out = planner.plan_with_info(pixels, goal, init_mean=mean.float())
    std_out = None if out.std is None else out.std.to(mean.dtype)
    return SolveResult(out.actions.to(mean.dtype), std_out, out.elite_cost, out.history, out.samples)
