"""Closed-loop evaluation (the paper's protocol): held-out start/goal pairs, batched MPC with the CEM
planner, success rate within an env-step budget. `evaluate(...)` -> a summary dict; it also writes
`eval.json` and `eval_frames.png` (start / goal / final frame per episode) to `out` when given.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import lewm_fast as lf
from lewm_fast._checks import check_choice, check_int
from lewm_fast.capability import dtype_name, resolve_dtype
from lewm_fast.envs import ENVS, make_env
from lewm_fast.evaluation.figures import frame_grid
from lewm_fast.evaluation.mpc import (
    EpisodeResult,
    Every,
    MPCStats,
    PlannerController,
    RandomController,
    _describe,
    make_planner,
    run_mpc,
)
from lewm_fast.evaluation.protocol import (
    BUDGET,
    EPISODES,
    GOAL_OFFSET,
    HORIZON,
    ITERS,
    SAMPLES,
    TOPK,
    Checkpoint,
    EvalConfigError,
    EvalSettings,
    Problem,
    check_compatible,
    check_eval,
    describe_data,
    held_out_episodes,
    load_checkpoint,
    select_problems,
)
from lewm_fast.evaluation.sharding import (
    EpisodeRandomController,
    GroupedController,
    default_group,
    gather_to_rank0,
    owned_episodes,
    rank_and_world,
)


def make_eval_env(env_name: str, image_size: int):
    """An env that never truncates or terminates by itself: the evaluation owns the budget."""
    if env_name not in ENVS:
        raise EvalConfigError(f"env: expected one of {list(ENVS)}, got {env_name!r}")
    if env_name == "tworoom":
        return make_env("tworoom", image_size=image_size, max_episode_steps=None, terminate_on_success=False)
    return make_env(env_name, image_size=image_size, max_episode_steps=None)


def place(env_name: str, env, problem: Problem, seed: int) -> None:
    """Teleport `env` to the problem's start state and give it the problem's goal."""
    env.reset(seed=seed)
    env.set_state(problem.start_state)
    if env_name == "tworoom":
        env.set_target(problem.goal_state[:2])  # the data policy's own target in the state is not the goal
    else:
        env.set_goal_state(problem.goal_state)


def evaluate(
    env_name: str,
    data: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    episodes: int = EPISODES,
    goal_offset: int = GOAL_OFFSET,
    budget: int = BUDGET,
    horizon: int = HORIZON,
    receding: int = HORIZON,
    num_samples: int = SAMPLES,
    topk: int = TOPK,
    iters: int = ITERS,
    solver: str = "cem",
    backend: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    policy: str = "planner",
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    env_factory: Callable[[str, int], object] = make_eval_env,
    plan_group: int | None = None,
) -> dict:
    """Success rate of MPC (`policy="planner"`, needs `ckpt`) or of uniformly random actions
    (`policy="random"`, the baseline) on `episodes` held-out problems of `data`.

    Under torchrun (a process group initialised) the episodes are sharded over the ranks and rank 0 returns
    the summary (the others a stub); `plan_group` sets the planning groups that make the outcome the same
    for any number of processes (lewm_fast/evaluation/sharding.py).

    Steps: check every argument (`EvalSettings`, shared with `evaluate_world`), set up (data, checkpoint,
    problems, environments), run (batched MPC), summarise (and write `out`). Raises EvalConfigError before
    any planning when the checkpoint does not fit the env or the data.
    """
    settings = EvalSettings(episodes, goal_offset, budget, horizon, receding, num_samples, topk, iters, backend,
                            dtype, seed, policy)  # fmt: skip
    check_eval(ckpt, out, settings)
    check_choice("solver", solver, lf.planning.available_optimizers())
    if plan_group is not None:
        check_int("plan_group", plan_group, lo=1)
    setup = _set_up(env_name, data, ckpt, settings, env_factory, log)
    ran = _run(setup, settings, solver, plan_group, env_factory, log)
    if isinstance(ran, dict):  # not rank 0: rank 0 writes the summary
        return ran
    summary = _summarise(setup, settings, solver, *ran)
    log(f"eval: {summary['plan_calls']} plan calls, {summary['seconds_per_plan_call']:.2f} s per call "
        f"({summary['mean_batch_per_plan_call']:.1f} episodes per call on average), "
        f"{summary['seconds_per_episode']:.2f} s per episode, {summary['seconds']:.1f} s in all")  # fmt: skip
    log(f"success rate: {100 * summary['success_rate']:.0f}% ({summary['successes']}/{summary['episodes']})")
    if out is not None:
        write_outputs(out, summary, setup.problems, ran[0])
    return summary


@dataclass
class _Setup:
    """Everything an evaluation fixes before it plans."""

    env_name: str
    data: str | os.PathLike
    probe: object  # an env of the kind evaluated (the first episode's)
    checkpoint: Checkpoint | None
    problems: list[Problem]
    held_out: str
    frameskip: int
    image_size: int


def _set_up(env_name, data, ckpt, settings: EvalSettings, env_factory, log) -> _Setup:
    """Read the data and the checkpoint, check they fit the env, pick the held-out problems."""
    info = describe_data(data)
    if info["env"] not in (None, env_name):  # before building the env: that env may need packages not installed
        raise EvalConfigError(f"data: {data} was collected in env {info['env']!r}, not {env_name!r}")
    probe = env_factory(env_name, info["image_size"])
    checkpoint = None
    if ckpt is not None:
        checkpoint = load_checkpoint(ckpt)
        check_compatible(checkpoint, probe, info, env_name)
    eps, held_out = held_out_episodes(data, checkpoint.train_config if checkpoint else {})
    problems = select_problems(data, eps, settings.episodes, settings.goal_offset, settings.seed)
    log(f"eval: {env_name}, {len(problems)} problems from {held_out}; goal {settings.goal_offset} steps ahead, "
        f"budget {settings.budget} steps, policy {settings.policy}")  # fmt: skip
    frameskip = checkpoint.model.cfg.frameskip if checkpoint else lf.LeWMConfig().frameskip
    return _Setup(env_name, data, probe, checkpoint, problems, held_out, frameskip, info["image_size"])


def _place_envs(setup: _Setup, mine: list[int], seed: int, env_factory, log) -> tuple[list, list[EpisodeResult]]:
    """One env per problem of this process, at its start state; one that fails is a recorded failure."""
    envs, results = [], [EpisodeResult() for _ in mine]
    progress = Every(log)
    for k, i in enumerate(mine):
        env = setup.probe if k == 0 else None
        try:
            env = env or env_factory(setup.env_name, setup.image_size)
            place(setup.env_name, env, setup.problems[i], seed + i)
        except Exception as e:  # noqa: BLE001 - a broken episode is a failure, not the end of the evaluation
            results[k].error = f"setting up: {_describe(e)}"
            log(f"eval: episode {i} failed setting up and counts as a failure: {_describe(e)}")
        envs.append(env)
        progress(f"eval: set up {k + 1}/{len(mine)} environments")
    return envs, results


def _run(setup: _Setup, settings: EvalSettings, solver: str, plan_group, env_factory, log):
    """This process's episodes planned (or acted on at random) to success or the budget; on rank 0 the
    gathered (results, finals, stats, seconds, world, group, planner), on the other ranks a stub dict."""
    rank, world = rank_and_world()
    n = len(setup.problems)
    group = plan_group or (default_group(n, world) if world > 1 else None)
    mine = owned_episodes(n, group, rank, world) if group else list(range(n))
    envs, results = _place_envs(setup, mine, settings.seed, env_factory, log)
    planner = None
    if settings.policy == "planner":
        model = setup.checkpoint.model
        plan_dtype = resolve_dtype(settings.dtype, next(model.parameters()).device)  # "auto": bf16 where native
        planner = make_planner(model, solver, setup.checkpoint.normalizer, setup.probe.action_space,
                               settings.num_samples, settings.topk, settings.iters, settings.horizon, settings.seed,
                               settings.backend, plan_dtype)  # fmt: skip
    controller = _controller(settings.policy, planner, setup.checkpoint, setup.problems, mine, group, setup.probe,
                             settings.receding, setup.frameskip, settings.seed)  # fmt: skip
    t0 = time.perf_counter()
    results, stats = run_mpc(envs, [setup.problems[i].goal_state for i in mine], controller, settings.budget, log=log,
                             results=results)  # fmt: skip
    mine_out = {"results": list(zip(mine, results, [_final_state(env) for env in envs])),
                "seconds": time.perf_counter() - t0, "batch_sizes": stats.batch_sizes,
                "plan_seconds": stats.seconds}  # fmt: skip
    ranks = gather_to_rank0([mine_out], world)
    if ranks is None:
        return {"rank": rank, "episodes_run": len(mine)}
    ordered = sorted((x for part in ranks for x in part["results"]), key=lambda x: x[0])
    stats = MPCStats(*([x for part in ranks for x in part[key]] for key in ("batch_sizes", "plan_seconds")))
    seconds = max(part["seconds"] for part in ranks)
    return [x[1] for x in ordered], [x[2] for x in ordered], stats, seconds, world, group, planner


def _summarise(setup: _Setup, settings: EvalSettings, solver, results, finals, stats, seconds, world, group,
               planner) -> dict:  # fmt: skip
    """The summary dict: the outcome, the settings, the timing, and every episode."""
    n, wins, plans = len(results), [r.success for r in results], len(stats.seconds)
    checkpoint = setup.checkpoint
    return {
        "env": setup.env_name, "policy": settings.policy,
        "checkpoint": str(checkpoint.folder) if checkpoint else None, "data": str(setup.data),
        "held_out": setup.held_out, "episodes": n, "successes": int(sum(wins)), "success_rate": float(np.mean(wins)),
        "solved_at_start": sum(r.success_step == 0 for r in results),
        "failed_with_error": sum(r.error is not None for r in results),
        **settings.plan_settings(), "frameskip": setup.frameskip, "solver": solver if planner else None,
        "planner_backend": planner.backend if planner else None,
        "dtype": dtype_name(planner.dtype) if planner else None,
        "seconds": seconds, "plan_calls": plans, "processes": world, "plan_group": group,
        "seconds_per_plan_call": float(np.mean(stats.seconds)) if plans else 0.0,
        "mean_batch_per_plan_call": float(np.mean(stats.batch_sizes)) if plans else 0.0,
        "seconds_per_episode": seconds / max(n, 1),
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "per_episode": [
            {"episode": p.episode, "start_row": p.start_row, "goal_row": p.goal_row, "success": r.success,
             "success_step": r.success_step, "steps": r.steps, "plans": r.plans, "error": r.error,
             "start_state": p.start_state.tolist(), "goal_state": p.goal_state.tolist(), "final_state": final,
             "start_goal_agent_distance": float(np.linalg.norm(p.goal_state[:2] - p.start_state[:2]))}
            for p, r, final in zip(setup.problems, results, finals)
        ],
    }  # fmt: skip


def _final_state(env) -> list | None:
    try:
        return np.asarray(env.get_state(), dtype=np.float64).tolist()
    except Exception:  # noqa: BLE001 - an env that failed setting up has no state to report
        return None


def _controller(policy, planner, checkpoint, problems, mine, group, probe, receding, frameskip, seed):
    """The MPC controller for this process's episodes `mine`: grouped (shard-invariant) when `group` is set."""
    if policy == "planner" and mine:
        goals = np.stack([problems[i].goal_frame for i in mine])
        base = PlannerController(planner, checkpoint.normalizer, goals, receding)
        return GroupedController(base, mine, group, seed) if group else base
    if group:  # (also a rank without episodes: never called)
        return EpisodeRandomController(probe.action_space, receding, frameskip, seed, mine)
    return RandomController(probe.action_space, receding, frameskip, seed)


def write_outputs(out: str | os.PathLike, summary: dict, problems: list[Problem], results: list[EpisodeResult]):
    """eval.json (the summary) and eval_frames.png (start / goal / final per episode) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "eval" if summary["policy"] == "planner" else "eval_random"
    summary["files"] = [str(out / f"{stem}.json"), str(out / f"{stem}_frames.png")]
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    rate = f"{100 * summary['success_rate']:.0f}% ({summary['successes']}/{summary['episodes']})"
    frame_grid(out / f"{stem}_frames.png", [p.start_frame for p in problems], [p.goal_frame for p in problems],
               [r.final_frame for r in results], [r.success for r in results],
               title=f"{summary['env']}, {summary['policy']}: success {rate}")  # fmt: skip
