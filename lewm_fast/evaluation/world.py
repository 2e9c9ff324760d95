"""`lewm-fast eval --world swm/NAME`: a checkpoint evaluated on a stable-worldmodel World (any of its 40+
registered environments), with that World's own goals and success logic, all episodes planned in one batch.

The public pipeline, with lewm_fast's planner inside: `swm.World` (one env per episode) drives
`swm.policy.WorldModelPolicy`, whose solver is `lf.interop.CEMSolver` (the public Solver protocol; every
episode that needs a plan is planned in one batch, where the public `CEMSolver` plans one at a time).
Frames reach the model as in training (resized by the World, ImageNet-normalised by `prepare_pixels`);
planned actions are un-normalised with the checkpoint's `normalization.json`. Success is the World's: an
episode succeeds when its env reports `terminated` within the budget.

Two ways to get goals, as the public evaluation (`scripts/plan/eval_wm.py` of stable-worldmodel):
- from a data set (`data`: a file the public reader opens, e.g. one `World.collect` wrote): start and goal
  states `goal_offset` steps apart in its episodes, set in each env by the World's set-up calls
  (`WORLD_CALLABLES` holds the public ones of the paper's four Worlds; `callables` gives others);
- without data, from the World itself: each env's reset draws a start and a goal (Worlds whose envs put a
  goal image in their info, e.g. swm/PushT-v1; TwoRoom-v1 does not).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lewm_fast.capability import dtype_name, resolve_dtype
from lewm_fast.data.dataset import prepare_pixels
from lewm_fast.evaluation.protocol import (
    BUDGET,
    EPISODES,
    GOAL_OFFSET,
    HORIZON,
    ITERS,
    SAMPLES,
    TOPK,
    EvalConfigError,
    EvalSettings,
    check_eval,
    load_checkpoint,
)


def _call(method: str, **args) -> dict:
    return {"method": method, "args": {k: ({"value": v} if isinstance(v, str) else v) for k, v in args.items()}}


# The public evaluation's set-up calls per World (stable-worldmodel scripts/plan/config/<env>.yaml at 0.1.1):
# method names of the env and, per argument, the data set column holding its value.
WORLD_CALLABLES = {
    # TwoRoom-v1: the public config reads columns pos_agent / goal_pos_agent of its published data set; what
    # World.collect writes for TwoRoom-v1 holds the agent's position in `state` (as PushT's config reads it).
    "swm/TwoRoom-v1": [_call("_set_state", state="state"), _call("_set_goal_state", goal_state="goal_state")],
    "swm/PushT-v1": [_call("_set_state", state="state"), _call("_set_goal_state", goal_state="goal_state")],
    "swm/ReacherDMControl-v0": [_call("set_state", qpos="qpos", qvel="qvel"),
                                _call("set_target_qpos", target_qpos="goal_qpos")],
    "swm/OGBCube-v0": [_call("set_state", qpos="qpos", qvel="qvel"),
                       _call("set_target_pos", cube_id={"value": 0, "in_dataset": False},
                             target_pos="goal_privileged_block_0_pos", target_quat="goal_privileged_block_0_quat")],
}  # fmt: skip
# World constructor arguments of the public evaluation (same files).
WORLD_KWARGS = {
    "swm/ReacherDMControl-v0": {"task": "qpos_match"},
    "swm/OGBCube-v0": {"env_type": "single", "ob_type": "states", "multiview": False, "visualize_info": False,
                       "terminate_at_goal": True},
}  # fmt: skip


def _import_swm():
    try:
        import stable_worldmodel as swm
    except ImportError as e:
        raise ImportError(f"--world needs the stable-worldmodel package: pip install stable-worldmodel ({e})") from e
    return swm


class ActionScaler:
    """The checkpoint's action z-scoring in the interface `WorldModelPolicy` expects of `process['action']`."""

    def __init__(self, normalizer):
        self.mean, self.std = normalizer.mean.astype(np.float64), normalizer.std.astype(np.float64)

    def transform(self, a: np.ndarray) -> np.ndarray:
        return ((a - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, a: np.ndarray) -> np.ndarray:
        return (np.asarray(a) * self.std + self.mean).astype(np.float32)


def frame_transform(image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A World frame (C, H, W) uint8 -> the model's input (C, S, S) float (as in training)."""

    def transform(img) -> torch.Tensor:
        x = torch.as_tensor(img).as_subclass(torch.Tensor)
        return prepare_pixels(x.permute(1, 2, 0)[None], image_size)[0]

    return transform


def timed_solver(solver):
    """Record (episodes planned, seconds) of every solve call in `solver.calls`."""
    solve, solver.calls = solver.solve, []

    def timed(info_dict, init_action=None):
        t0 = time.perf_counter()
        out = solve(info_dict, init_action=init_action)
        solver.calls.append((int(out["actions"].shape[0]), time.perf_counter() - t0))
        return out

    solver.solve = timed
    return solver


def make_policy(swm, checkpoint, policy: str, horizon: int, receding: int, plan_kwargs: dict, seed: int,
                solver=None):  # fmt: skip
    """The World's policy: random, or `WorldModelPolicy` over `solver` (default: lf.interop.CEMSolver)."""
    if policy == "random":
        return swm.policy.RandomPolicy(seed=seed), None
    from lewm_fast.interop import CEMSolver

    model = checkpoint.model
    solver = timed_solver(solver or CEMSolver(model, seed=seed, **plan_kwargs))
    config = swm.PlanConfig(horizon=horizon, receding_horizon=receding, action_block=model.cfg.frameskip)
    tf = frame_transform(model.cfg.image_size)
    process = {"action": ActionScaler(checkpoint.normalizer)}
    return swm.policy.WorldModelPolicy(solver=solver, config=config, process=process,
                                       transform={"pixels": tf, "goal": tf}), solver  # fmt: skip


def dataset_problems(dataset, episodes: int, goal_offset: int, seed: int) -> tuple[list[int], list[int]]:
    """(episode indices, start steps): `episodes` start rows drawn uniformly without replacement among the
    rows with a goal `goal_offset` steps later in the same episode, sorted (the public protocol)."""
    lengths = np.asarray(dataset.lengths, dtype=np.int64)
    valid = [(e, s) for e, n in enumerate(lengths) for s in range(max(0, int(n) - goal_offset))]
    if len(valid) < episodes:
        raise EvalConfigError(f"data: only {len(valid)} start rows have a goal {goal_offset} steps ahead in the "
                              f"same episode; {episodes} episodes asked for")  # fmt: skip
    pick = np.sort(np.random.default_rng(seed).choice(len(valid), size=episodes, replace=False))
    return [valid[i][0] for i in pick], [valid[i][1] for i in pick]


def check_callables(callables: object, name: str = "callables") -> list[dict] | None:
    """The public set-up calls' format: a list of {"method": str, "args": {argument: {"value": ...,
    "in_dataset": bool (optional, default true: `value` names a data set column)}}}; None passes."""
    if callables is None:
        return None
    if not isinstance(callables, list):
        raise TypeError(f"{name}: expected a JSON list of set-up calls ([{{\"method\": ..., \"args\": {{...}}}}]), "
                        f"got {type(callables).__name__}")  # fmt: skip
    for k, call in enumerate(callables):
        where = f"{name}[{k}]"
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            raise ValueError(f'{where}: expected {{"method": NAME, "args": {{...}}}}, got {call!r}')
        args = call.get("args", {})
        if not isinstance(args, dict):
            raise ValueError(f"{where}.args: expected an object of argument specs, got {args!r}")
        for arg, spec in args.items():
            if not isinstance(spec, dict) or "value" not in spec:
                raise ValueError(f'{where}.args.{arg}: expected {{"value": ...}}, got {spec!r}')
            if not isinstance(spec.get("in_dataset", True), bool):
                raise ValueError(f"{where}.args.{arg}.in_dataset: expected true or false, got {spec['in_dataset']!r}")
    return callables


def evaluate_world(
    world_name: str,
    ckpt: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    episodes: int = EPISODES,
    goal_offset: int = GOAL_OFFSET,
    budget: int = BUDGET,
    horizon: int = HORIZON,
    receding: int = HORIZON,
    num_samples: int = SAMPLES,
    topk: int = TOPK,
    iters: int = ITERS,
    backend: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    policy: str = "planner",
    callables: list[dict] | None = None,
    world_kwargs: dict | None = None,
    image_size: int = 64,
    solver=None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Success rate on a stable-worldmodel World (module docstring). image_size: frame size for the random
    policy without a checkpoint (a checkpoint's own size otherwise). solver: another solver with the public
    Solver protocol (e.g. the public CEMSolver, for a side-by-side benchmark) instead of lewm_fast's.

    Steps: check every argument (`EvalSettings`, shared with `closed_loop.evaluate`), set up (the World and
    the policy), run (the World's own evaluation), summarise."""
    settings = EvalSettings(episodes, goal_offset, budget, horizon, receding, num_samples, topk, iters, backend,
                            dtype, seed, policy)  # fmt: skip
    check_eval(ckpt, out, settings)
    callables = check_callables(callables)
    if world_kwargs is not None and not isinstance(world_kwargs, dict):
        raise TypeError(f"world_kwargs: expected a dict or None, got {type(world_kwargs).__name__}")
    swm = _import_swm()
    _check_world_name(world_name)
    checkpoint = load_checkpoint(ckpt) if ckpt is not None else None
    device = next(checkpoint.model.parameters()).device if checkpoint else torch.device("cpu")
    plan_dtype = resolve_dtype(dtype, device)  # "auto": bf16 where the hardware runs it natively
    size = checkpoint.model.cfg.image_size if checkpoint else image_size
    kwargs = {**WORLD_KWARGS.get(world_name, {}), **(world_kwargs or {})}
    world = swm.World(world_name, num_envs=episodes, image_shape=(size, size), max_episode_steps=2 * budget, **kwargs)
    try:
        pol, solver = _world_policy(swm, world, world_name, checkpoint, settings, plan_dtype, solver)
        t0 = time.perf_counter()
        if data is not None:
            result, how = _from_dataset(swm, world, world_name, data, settings, callables, size)
        else:
            result, how = _from_world(world, world_name, episodes, seed), "each env's own reset (start and goal)"
        seconds = time.perf_counter() - t0
    finally:
        world.close()
    summary = {**settings.plan_settings(), "backend": backend, "dtype": dtype_name(plan_dtype)}
    return _summary(world_name, checkpoint, data, how, policy, result, solver, seconds, summary, out, log)


def _check_world_name(world_name: str) -> None:
    import gymnasium as gym

    if world_name not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("swm/"))
        raise EvalConfigError(f"world: {world_name!r} is not a registered World; stable-worldmodel has {known}")


def _world_policy(swm, world, world_name, checkpoint, settings: EvalSettings, plan_dtype, solver):
    """The World's policy (and its timed solver) once the checkpoint is known to fit the World's actions."""
    adim = int(np.prod(world.envs.single_action_space.shape))
    if checkpoint is not None and checkpoint.model.cfg.action_dim != adim:
        raise EvalConfigError(f"checkpoint {checkpoint.folder} takes actions of width "
                              f"{checkpoint.model.cfg.action_dim}, World {world_name} has {adim}")  # fmt: skip
    plan_kwargs = {"num_samples": settings.num_samples, "n_steps": settings.iters, "topk": settings.topk,
                   "backend": settings.backend, "dtype": plan_dtype}  # fmt: skip
    pol, solver = make_policy(swm, checkpoint, settings.policy, settings.horizon, settings.receding, plan_kwargs,
                              settings.seed, solver)  # fmt: skip
    world.set_policy(pol)
    return pol, solver


def _from_dataset(swm, world, world_name, data, settings: EvalSettings, callables, size):
    episodes, goal_offset = settings.episodes, settings.goal_offset
    callables = callables or WORLD_CALLABLES.get(world_name)
    if callables is None:
        raise EvalConfigError(f"world: no known set-up calls for {world_name} (the paper's Worlds have them: "
                              f"{sorted(WORLD_CALLABLES)}); pass callables (--callables JSON)")  # fmt: skip
    dataset = swm.data.load_dataset(str(data))
    check_columns(callables, dataset.column_names, data)
    frame = tuple(dataset.load_chunk(np.array([0]), np.array([0]), np.array([1]))[0]["pixels"].shape[-2:])
    if frame != (size, size):
        raise EvalConfigError(f"data: {data} holds {frame[0]}x{frame[1]} frames, the World renders {size}x{size} "
                              "for this model: use a data set at the model's image size")  # fmt: skip
    eps, starts = dataset_problems(dataset, episodes, goal_offset, settings.seed)
    result = world.evaluate(dataset=dataset, episodes_idx=eps, start_steps=starts, goal_offset=goal_offset,
                            eval_budget=settings.budget, callables=callables)  # fmt: skip
    return result, f"{data}: {episodes} start rows, goal {goal_offset} steps ahead"


def check_columns(callables: list[dict], columns: list[str], data) -> None:
    """Every data set value a set-up call reads must exist (the World would skip the call silently)."""
    have = {c for c in columns if not c.startswith("goal")}
    have |= {"goal"} | {f"goal_{c}" for c in have}
    missing = sorted({a["value"] for spec in callables for a in spec.get("args", {}).values()
                      if a.get("in_dataset", True) and a.get("value") not in have})  # fmt: skip
    if missing:
        raise EvalConfigError(f"data: {data} has no column for {missing} (read by the World's set-up calls); "
                              f"columns: {sorted(columns)}")  # fmt: skip


def _from_world(world, world_name, episodes, seed):
    world.reset(seed=seed)
    if "goal" not in world.infos:
        raise EvalConfigError(f"world: {world_name}'s envs give no goal image; evaluate with data "
                              "(--data: episodes for start and goal states)")  # fmt: skip
    return world.evaluate(episodes=episodes, seed=seed, reset_mode="wait")


def _summary(world_name, checkpoint, data, how, policy, result, solver, seconds, settings, out, log) -> dict:
    wins = np.asarray(result["episode_successes"], dtype=bool)
    calls = solver.calls if solver is not None else []
    summary = {"world": world_name, "policy": policy, "checkpoint": str(checkpoint.folder) if checkpoint else None,
               "data": str(data) if data is not None else None, "goals": how, "episodes": int(wins.size),
               "successes": int(wins.sum()), "success_rate": float(wins.mean()), "seconds": seconds,
               "plan_calls": len(calls), "mean_batch_per_plan_call": float(np.mean([c[0] for c in calls])) if calls
               else 0.0, "seconds_per_plan_call": float(np.mean([c[1] for c in calls])) if calls else 0.0,
               "per_episode_success": wins.tolist(), **settings}  # fmt: skip
    log(f"eval: {world_name}, {summary['episodes']} episodes ({how}), policy {policy}: {len(calls)} plan calls, "
        f"{summary['seconds_per_plan_call']:.2f} s per call ({summary['mean_batch_per_plan_call']:.1f} episodes "
        f"per call on average), {seconds:.1f} s in all")  # fmt: skip
    log(f"success rate: {100 * summary['success_rate']:.0f}% ({summary['successes']}/{summary['episodes']})")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        name = "eval_world.json" if policy == "planner" else "eval_world_random.json"
        (out / name).write_text(json.dumps(summary, indent=2))
        summary["files"] = [str(out / name)]
    return summary
