"""Batched model-predictive control: every episode still running is planned in one batch.

Each round: render the running environments, ask the controller for `receding` action blocks each
(one `Planner.plan_with_info` call over all of them: E = the number still running; any solver of
`lewm_fast.planning.optimizers`, built by `make_planner`), execute them
(frameskip env steps per block), checking success after every step. An episode stops at success or
when it has used `budget` env steps; the rest go on to the next round, so E shrinks as episodes end.

An exception raised by one environment (reset, step, render) ends that episode as a failure with the
error recorded; the others carry on. Planner errors are not caught: they are bugs, not episode faults.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import lewm_fast as lf
from lewm_fast.data.dataset import Normalizer, prepare_pixels


@dataclass
class EpisodeResult:
    """Outcome of one episode. steps: env steps executed; plans: controller calls that included it."""

    success: bool = False
    steps: int = 0
    plans: int = 0
    success_step: int | None = None  # env steps used when success was first seen (0: already at the goal)
    error: str | None = None
    final_frame: np.ndarray | None = None


@dataclass
class MPCStats:
    """Per controller call: how many episodes it planned and how long it took (seconds)."""

    batch_sizes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def make_planner(model, solver: str, normalizer: Normalizer, action_space, num_samples: int, topk: int, iters: int,
                 horizon: int, seed: int, backend: str, dtype) -> lf.Planner:  # fmt: skip
    """The planner of `lewm-fast eval --solver`: the evaluation's budget (samples, elites, iterations) mapped
    onto the solver's public parameters (predictive sampling draws once and has no elites; the gradient
    solver optimises `num_samples` samples for `iters` steps). iCEM clips to the env's action box, carried
    into the planner's z-scored action space and tiled over the action block."""
    params = {"cem": dict(num_samples=num_samples, topk=topk, n_steps=iters),
              "mppi": dict(num_samples=num_samples, topk=topk, n_steps=iters),
              "ps": dict(num_samples=num_samples),
              "grad": dict(num_samples=num_samples, n_steps=iters)}  # fmt: skip
    if solver == "icem":
        reps = model.cfg.frameskip
        low = torch.as_tensor(np.tile((np.asarray(action_space.low) - normalizer.mean) / normalizer.std, reps))
        high = torch.as_tensor(np.tile((np.asarray(action_space.high) - normalizer.mean) / normalizer.std, reps))
        params["icem"] = dict(num_samples=num_samples, topk=topk, n_steps=iters, action_low=low.float(),
                              action_high=high.float())  # fmt: skip
    if solver not in params:
        raise ValueError(f"solver: expected one of {lf.planning.available_optimizers()}, got {solver!r}")
    if solver == "cem":  # the same planner, under the class name CEM users know
        return lf.CEMPlanner(model, num_samples, topk, iters, horizon, seed=seed, backend=backend, dtype=dtype)
    return lf.Planner(model, solver, horizon=horizon, seed=seed, backend=backend, dtype=dtype, **params[solver])


class PlannerController:
    """Planning in latent space (any solver), warm-started from the unexecuted rest of each episode's last plan.

    goal_frames: uint8 (E, S, S, 3). __call__(idx, frames uint8 (E', S, S, 3)) -> env actions
    (E', receding, frameskip, action_dim) for the episodes `idx`.
    """

    def __init__(self, planner, normalizer: Normalizer, goal_frames: np.ndarray, receding: int):
        cfg = planner.model.cfg
        if not 1 <= receding <= planner.horizon:
            raise ValueError(f"receding: expected 1 <= receding <= horizon={planner.horizon}, got {receding}")
        self.planner, self.normalizer, self.receding = planner, normalizer, receding
        self.image_size, self.frameskip, self.action_dim = cfg.image_size, cfg.frameskip, cfg.action_dim
        self.goal_px = prepare_pixels(torch.from_numpy(np.ascontiguousarray(goal_frames)), self.image_size)
        # The rest of each episode's last plan (normalised, (horizon - receding, A)); zeros = no warm start,
        # which is the planner's own initial mean.
        rest = planner.horizon - receding
        self.warm = torch.zeros(len(goal_frames), rest, cfg.action_block_dim)

    def __call__(self, idx: list[int], frames: np.ndarray) -> np.ndarray:
        obs = prepare_pixels(torch.from_numpy(np.ascontiguousarray(frames))[:, None], self.image_size)
        init = self.warm[idx] if self.warm.shape[1] else None
        plan = self.planner.plan_with_info(obs, self.goal_px[idx], init_mean=init).actions.float().cpu()
        self.warm[idx] = plan[:, self.receding :]
        actions = self.normalizer.denormalize(plan[:, : self.receding])
        return actions.view(len(idx), self.receding, self.frameskip, self.action_dim).numpy()


class RandomController:
    """The random baseline: every env step an action drawn uniformly from the action box [low, high]."""

    def __init__(self, action_space, receding: int, frameskip: int, seed: int = 0):
        self.low, self.high = np.asarray(action_space.low), np.asarray(action_space.high)
        self.receding, self.frameskip = receding, frameskip
        self.rng = np.random.default_rng(seed)

    def __call__(self, idx: list[int], frames: np.ndarray) -> np.ndarray:
        shape = (len(idx), self.receding, self.frameskip, self.low.size)
        return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32)


def _describe(e: BaseException) -> str:
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(e).__name__}: {e}{where}"


class Every:
    """Progress of a long loop: `progress(message)` logs the message at most once per `seconds` (the first
    time only after `seconds`), so a short evaluation prints nothing extra and a long one is never silent."""

    def __init__(self, log: Callable[[str], None], seconds: float = 10.0):
        self.log, self.seconds, self.last = log, seconds, time.perf_counter()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.last >= self.seconds:
            self.log(message)
            self.last = now


def run_mpc(
    envs: list,
    goal_states: list[np.ndarray],
    controller: Callable[[list[int], np.ndarray], np.ndarray],
    budget: int,
    log: Callable[[str], None] = print,
    results: list[EpisodeResult] | None = None,
) -> tuple[list[EpisodeResult], MPCStats]:
    """Run all episodes to success or `budget` env steps. envs[i] must already be at its start state;
    success is `envs[i].is_success(goal_states[i])`. `results` may carry episodes that already failed
    during set-up (error set): they are not run. Rounds of render -> plan -> act until none is running."""
    episodes = _Episodes(envs, goal_states, budget, log, results)
    stats, progress = MPCStats(), Every(log)
    running = episodes.start()
    while running:
        ok, frames = episodes.render(running)
        if not ok:
            break
        t0 = time.perf_counter()
        actions = controller(ok, np.stack(frames))  # (E', blocks, frameskip, action_dim)
        stats.seconds.append(time.perf_counter() - t0)
        stats.batch_sizes.append(len(ok))
        running = [i for j, i in enumerate(ok) if episodes.act(i, actions[j])]
        progress(f"eval: {len(stats.seconds)} plan calls, {len(running)} of {len(envs)} episodes still "
                         f"running, {sum(r.success for r in episodes.results)} reached their goal")  # fmt: skip
    episodes.final_frames()
    return episodes.results, stats


class _Episodes:
    """The episodes of one `run_mpc`: their envs, goals and results. A step that raises ends that episode
    as a failure with the error recorded; the others go on."""

    def __init__(self, envs, goal_states, budget, log, results):
        self.envs, self.goal_states, self.budget, self.log = envs, goal_states, budget, log
        self.results = results if results is not None else [EpisodeResult() for _ in envs]

    def fail(self, i: int, e: BaseException, when: str) -> None:
        r = self.results[i]
        r.success, r.error = False, f"{when}: {_describe(e)}"
        self.log(f"eval: episode {i} failed {when} after {r.steps} steps and counts as a failure: {_describe(e)}")

    def start(self) -> list[int]:
        """The episodes to run: those set up and not already at their goal."""
        running = []
        for i, r in enumerate(self.results):
            if r.error is not None:
                continue
            try:
                if self.envs[i].is_success(self.goal_states[i]):
                    r.success, r.success_step = True, 0
                else:
                    running.append(i)
            except Exception as e:  # noqa: BLE001 - one broken env must not stop the others
                self.fail(i, e, "checking success at the start")
        return running

    def render(self, running: list[int]) -> tuple[list[int], list[np.ndarray]]:
        ok, frames = [], []
        for i in running:
            try:
                frames.append(self.envs[i].render())
                ok.append(i)
            except Exception as e:  # noqa: BLE001
                self.fail(i, e, "rendering")
        return ok, frames

    def act(self, i: int, actions: np.ndarray) -> bool:
        """Execute episode i's action blocks step by step (stopping at success or the budget); whether it
        still runs."""
        r, env = self.results[i], self.envs[i]
        r.plans += 1
        try:
            for a in actions.reshape(-1, actions.shape[-1]):
                env.step(a)
                r.steps += 1
                if env.is_success(self.goal_states[i]):
                    r.success, r.success_step = True, r.steps
                    break
                if r.steps >= self.budget:
                    break
        except Exception as e:  # noqa: BLE001
            self.fail(i, e, f"at step {r.steps + 1}")
            return False
        return not r.success and r.steps < self.budget

    def final_frames(self) -> None:
        for i, r in enumerate(self.results):
            try:
                r.final_frame = self.envs[i].render()
            except Exception:  # noqa: BLE001 - the figure shows a blank frame instead
                r.final_frame = None
