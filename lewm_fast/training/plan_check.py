"""A quick closed-loop check that a trained checkpoint plans (the paper's protocol, on a few episodes).

Start and goal come from held-out episodes of the training file: a random start row t, the goal is the
frame and state at t + goal_offset (25). The environment is teleported to the start state, its target
set to the goal's agent position; then MPC: plan `horizon` action blocks with lf.CEMPlanner from the
current frame to the goal frame, un-normalise them with the checkpoint's action statistics, execute
`receding` blocks (frameskip env steps each), replan (warm-started with the rest of the plan), until
success or `budget` env steps. TwoRoom only: PushT evaluation belongs to the evaluation issue.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import lewm_fast as lf
from lewm_fast.data.dataset import Normalizer, prepare_pixels, split_episodes
from lewm_fast.data.hdf5 import open_h5, read_index
from lewm_fast.envs import make_env


def held_out_starts(data, episodes: np.ndarray, n: int, goal_offset: int, seed: int) -> list[tuple[int, int]]:
    """n (episode, start row) pairs with start + goal_offset inside the episode."""
    with open_h5(data) as f:
        lengths, _ = read_index(f)
    ok = [e for e in episodes if lengths[e] > goal_offset]
    if not ok:
        raise ValueError(f"data: no held-out episode longer than goal_offset={goal_offset}")
    rng = np.random.default_rng(seed)
    picks = []
    for i in range(n):
        e = int(ok[i % len(ok)] if n <= len(ok) else rng.choice(ok))
        picks.append((e, int(rng.integers(0, lengths[e] - goal_offset))))
    return picks


def closed_loop_check(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    episodes: int = 10,
    goal_offset: int = 25,
    budget: int = 50,
    horizon: int = 5,
    receding: int = 1,
    num_samples: int = 300,
    topk: int = 30,
    iters: int = 30,
    seed: int = 0,
    backend: str = "auto",
    val_fraction: float | None = None,
    split_seed: int | None = None,
) -> dict:
    """Success rate of MPC with lf.CEMPlanner on `episodes` held-out (start, goal) pairs (TwoRoom)."""
    checkpoint = Path(checkpoint)
    model = lf.interop.load_official(checkpoint).eval()
    normalizer = Normalizer.load(checkpoint / "normalization.json")
    cfg = model.cfg
    train_cfg = {}
    run_cfg = checkpoint.parent / "train_config.json"
    if run_cfg.exists():
        train_cfg = json.loads(run_cfg.read_text())
    vf = val_fraction if val_fraction is not None else train_cfg.get("val_fraction", 0.1)
    ss = split_seed if split_seed is not None else train_cfg.get("seed", 0)
    with open_h5(data) as f:
        lengths, offsets = read_index(f, ("pixels", "state"))
        env_name = f.attrs.get("env", "tworoom")
        env_name = env_name.decode() if isinstance(env_name, bytes) else str(env_name)
        image_size = int(f["pixels"].shape[1])
        _, val_eps = split_episodes(lengths.size, vf, ss)
        if val_eps.size == 0:
            val_eps = np.arange(lengths.size)
        picks = held_out_starts(data, val_eps, episodes, goal_offset, seed)
        rows = [(int(offsets[e] + t), int(offsets[e] + t + goal_offset)) for e, t in picks]
        starts = [f["state"][a] for a, _ in rows]
        goals = [f["state"][b] for _, b in rows]
        goal_frames = [f["pixels"][b] for _, b in rows]
    if env_name != "tworoom":
        raise ValueError(f"closed_loop_check: only 'tworoom' is supported here, the data are from {env_name!r}")
    env = make_env(env_name, image_size=image_size, max_episode_steps=None, terminate_on_success=False)
    planner = lf.CEMPlanner(model, num_samples=num_samples, topk=topk, iters=iters, horizon=horizon, seed=seed,
                            backend=backend)  # fmt: skip
    fs, adim = cfg.frameskip, cfg.action_dim
    successes, steps_used, t0 = [], [], time.perf_counter()
    for start, goal, goal_frame in zip(starts, goals, goal_frames):
        env.reset(seed=seed)
        env.set_state(start)
        env.set_target(goal[:2])
        goal_px = prepare_pixels(torch.from_numpy(goal_frame)[None], cfg.image_size)  # (1, C, S, S)
        init, used, success = None, 0, env.is_success()
        while used < budget and not success:
            obs = prepare_pixels(torch.from_numpy(env.render())[None, None], cfg.image_size)  # (1, 1, C, S, S)
            plan = planner.plan(obs, goal_px, init_mean=init)  # (1, horizon, fs * adim), normalised
            actions = normalizer.denormalize(plan.float().cpu())[0].view(horizon, fs, adim).numpy()
            for block in actions[:receding]:
                for a in block:
                    env.step(a)
                    used += 1
                    success = success or env.is_success()
                    if used >= budget or success:
                        break
                if used >= budget or success:
                    break
            init = plan[:, receding:] if receding < horizon else None
        successes.append(bool(success))
        steps_used.append(used)
    seconds = time.perf_counter() - t0
    return {"episodes": len(successes), "success_rate": float(np.mean(successes)), "successes": successes,
            "steps": steps_used, "seconds": seconds, "planner_backend": planner.backend, "receding": receding,
            "goal_offset": goal_offset, "budget": budget}  # fmt: skip


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="closed-loop planning check of a TwoRoom checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("data")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--receding", type=int, default=1)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto")
    a = p.parse_args()
    print(json.dumps(closed_loop_check(a.checkpoint, a.data, a.episodes, receding=a.receding, iters=a.iters,
                                       num_samples=a.samples, seed=a.seed, backend=a.backend)))  # fmt: skip
