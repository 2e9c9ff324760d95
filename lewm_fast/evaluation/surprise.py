"""The surprise test (violation of expectation: a world model should be surprised by the impossible).

For each of N fresh trajectories (the env's data policy, seeds the training data did not use) three
versions are rendered by replaying the same actions from the same start state:
- unperturbed;
- colour: at env step t the agent (TwoRoom) or the block (PushT) changes colour (a visual change only);
- teleport: at env step t the agent (TwoRoom) or the block (PushT) jumps far away (physically impossible).
Frames are taken every `frameskip` env steps (as in training) and t is a multiple of frameskip, so frame
m = t / frameskip is the first perturbed frame.

Surprise of frame k >= 1 = mean over D of (predicted - observed embedding)^2, the prediction made from
the observed embeddings of the previous <= num_frames frames and their action blocks (teacher forcing,
as in training). Per trajectory, the surprise "around t" is its mean over frames m .. m + window - 1;
a paired t-test (scipy.stats.ttest_rel) compares each perturbed version with the unperturbed one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lewm_fast._checks import SEED_MAX, check_int
from lewm_fast._io import check_output_dir
from lewm_fast.data.collect import episode_seeds
from lewm_fast.data.dataset import prepare_pixels
from lewm_fast.envs import DEFAULT_POLICY, make_policy
from lewm_fast.evaluation.closed_loop import make_eval_env
from lewm_fast.evaluation.figures import surprise_plot
from lewm_fast.evaluation.mpc import Every
from lewm_fast.evaluation.protocol import check_compatible, load_checkpoint

CONDITIONS = ("unperturbed", "colour", "teleport")
EPISODES = 50  # trajectories per test
# Fresh trajectories: episode i of the surprise test uses episode_seeds(seed + SEED_SHIFT, i), far from the
# seeds `lewm-fast collect` uses by default (0 and small integers).
SEED_SHIFT = 7_919_000


def record_actions(env_name: str, env, steps: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Roll out the env's data policy for `steps` steps: (start state, actions (steps, action_dim))."""
    env_seed, policy_seed = episode_seeds(seed + SEED_SHIFT, index)
    policy = make_policy(env_name, env, DEFAULT_POLICY[env_name])
    state, _ = env.reset(seed=env_seed)
    policy.reset(policy_seed)
    start, actions = env.get_state().copy(), []
    for _ in range(steps):
        a = np.asarray(policy(state), dtype=np.float32)
        state, *_ = env.step(a)
        actions.append(a)
    return start, np.stack(actions)


# The colour perturbation's new colour, per env: a hue the training data never show (red agent -> blue;
# slate-grey block -> orange). How surprising a recolouring is grows with how far it moves from the
# trained colour (docs/evaluation.md has a sweep); `colour=` picks another.
DEFAULT_COLOUR = {"tworoom": (0, 90, 255), "pusht": (230, 90, 40), "reacher": (0, 90, 255), "cube": (0, 90, 255)}
# What the colour perturbation recolours in the envs with `set_colors(**{part: rgb})`, `get_colors()` and
# `teleport(rng)`: Reacher's arm (its agent) and Cube's cube (its object, like PushT's block).
COLOUR_PART = {"reacher": "arm", "cube": "cube"}


def perturb(env_name: str, env, condition: str, rng: np.random.Generator, colour=None) -> None:
    """Apply a perturbation to `env` now: 'colour' recolours (to `colour`, RGB 0..255, default
    DEFAULT_COLOUR), 'teleport' moves the agent (TwoRoom) / the block (PushT) far away."""
    if condition == "colour":
        colour = tuple(colour or DEFAULT_COLOUR[env_name])
        if env_name in COLOUR_PART:
            env.set_colors(**{COLOUR_PART[env_name]: colour})
        elif env_name == "tworoom":
            env.set_colors(agent=colour)
        else:
            env.set_colors(block=colour)
    elif condition == "teleport":
        s = env.get_state().astype(np.float64)
        if env_name in COLOUR_PART:
            env.teleport(rng)  # Reacher: the arm jumps >= 1.5 rad; Cube: the cube jumps >= 0.15 m
        elif env_name == "tworoom":
            from lewm_fast.envs.tworoom import BORDER, WALL_CENTER, WALL_HALF, WORLD

            lo, hi = BORDER + env.agent_radius, WORLD - BORDER - env.agent_radius
            while True:  # far from where it is, not inside the wall
                xy = rng.uniform(lo, hi, size=2)
                in_wall = abs(xy[0] - WALL_CENTER) <= WALL_HALF + env.agent_radius
                if not in_wall and np.linalg.norm(xy - s[:2]) >= 70:
                    break
            env.set_state(xy)
        else:
            while True:  # the block, far from where it was and clear of the agent
                xy = rng.uniform(130, 382, size=2)
                if np.linalg.norm(xy - s[2:4]) >= 90 and np.linalg.norm(xy - s[:2]) >= 80:
                    break
            env.set_state(np.concatenate([s[:2], xy, s[4:7]]))
    elif condition != "unperturbed":
        raise ValueError(f"condition: expected one of {list(CONDITIONS)}, got {condition!r}")


def replay(
    env_name: str,
    env,
    start: np.ndarray,
    actions: np.ndarray,
    frameskip: int,
    condition: str,
    at_step: int,
    seed: int,
    colour=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replay `actions` from `start`, perturbing at env step `at_step` (before that step's frame).
    Returns frames uint8 (K + 1, S, S, 3) at steps 0, frameskip, ... and states (K + 1, state_dim).
    The env's colours are put back afterwards, so one env serves every replay."""
    if env_name in COLOUR_PART:
        saved = env.get_colors()
    else:
        saved = env.agent_color.copy() if env_name == "tworoom" else dict(env.colors)
    try:
        return _replay(env_name, env, start, actions, frameskip, condition, at_step, seed, colour)
    finally:
        if env_name in COLOUR_PART:
            env.set_colors(**saved)
        elif env_name == "tworoom":
            env.agent_color = saved
        else:
            env.colors = saved  # gym-pusht rebuilds its shapes (default colours) at the next reset


def _replay(env_name, env, start, actions, frameskip, condition, at_step, seed, colour):
    env.reset(seed=seed)
    env.set_state(start)
    rng = np.random.default_rng(seed)
    frames, states = [], []
    for step in range(len(actions) + 1):
        if step == at_step:
            perturb(env_name, env, condition, rng, colour)
        if step % frameskip == 0:
            frames.append(env.render())
            states.append(env.get_state().copy())
        if step < len(actions):
            env.step(actions[step])
    return np.stack(frames), np.stack(states)


@torch.no_grad()
def frame_surprise(model, pixels: torch.Tensor, action_blocks: torch.Tensor) -> torch.Tensor:
    """pixels (B, K+1, C, S, S), action_blocks (B, K, frameskip*action_dim) normalised ->
    surprise (B, K+1): NaN at frame 0, then the MSE of each frame's teacher-forced prediction."""
    b, k1 = pixels.shape[:2]
    emb = model.encode(pixels)  # (B, K+1, D)
    act = model.embed_actions(action_blocks)  # (B, K, D)
    n = model.cfg.num_frames
    out = torch.full((b, k1), float("nan"))
    for k in range(1, k1):
        lo = max(0, k - n)
        pred = model.predict(emb[:, lo:k], act[:, lo:k])[:, -1]
        out[:, k] = (pred - emb[:, k]).pow(2).mean(-1).float()
    return out


def surprise_test(
    ckpt: str | os.PathLike,
    env_name: str,
    episodes: int = EPISODES,
    steps: int = 60,
    perturb_step: int = 30,
    window: int = 2,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    colour: tuple[int, int, int] | None = None,
) -> dict:
    """Run the surprise test; returns per-condition statistics and p-values (and writes
    surprise.json + surprise.png to `out`). colour: the colour perturbation's RGB (default
    DEFAULT_COLOUR[env_name]). Steps: check, set up (checkpoint, env), run (record, replay, surprise per
    frame), summarise (paired t-tests), write."""
    if out is not None:
        check_output_dir("out", out)  # before the work, not after it
    check_int("seed", seed, lo=0, hi=SEED_MAX)
    checkpoint = load_checkpoint(ckpt)
    m = _check_surprise_args(checkpoint.model.cfg.frameskip, episodes, steps, perturb_step, window, colour)
    env = make_eval_env(env_name, checkpoint.model.cfg.image_size)
    check_compatible(checkpoint, env, None, env_name)
    frames, states, curves = _run_conditions(checkpoint, env_name, env, episodes, steps, perturb_step, seed, colour,
                                             Every(log))  # fmt: skip
    result = {"env": env_name, "checkpoint": str(checkpoint.folder), "episodes": episodes, "steps": steps,
              "perturb_step": perturb_step, "colour": list(colour or DEFAULT_COLOUR[env_name]), "perturb_frame": m,
              "window_frames": [m, m + window - 1], "frameskip": checkpoint.model.cfg.frameskip, "seed": seed,
              **_statistics(curves, m, window, log)}  # fmt: skip
    # The perturbations must have changed what they claim to change (a cheap guard against a no-op).
    result["frames_changed"] = {c: float(np.mean([np.abs(a[m].astype(int) - b[m].astype(int)).mean() > 0
                                                  for a, b in zip(frames[c], frames["unperturbed"])]))
                                for c in CONDITIONS}  # fmt: skip
    result["states_changed"] = {c: float(np.mean([not np.allclose(a[m], b[m]) for a, b in
                                                  zip(states[c], states["unperturbed"])]))
                                for c in CONDITIONS}  # fmt: skip
    if out is not None:
        _write(Path(out), result, curves, m)
    result["_curves"] = curves
    result["_frames"] = frames
    result["_states"] = states
    return result


def _check_surprise_args(fs: int, episodes, steps, perturb_step, window, colour) -> int:
    """The arguments that depend on the checkpoint's frameskip `fs`; returns the perturbed frame m."""
    check_int("episodes", episodes, lo=2)  # a paired t-test needs two trajectories
    check_int("steps", steps, lo=1)
    check_int("perturb_step", perturb_step, lo=1)
    check_int("window", window, lo=1)
    if perturb_step % fs or not fs * 1 <= perturb_step < steps:
        raise ValueError(f"perturb_step: expected a multiple of frameskip={fs} in [{fs}, steps={steps}), "
                         f"got {perturb_step}")  # fmt: skip
    if steps % fs:
        raise ValueError(f"steps: expected a multiple of frameskip={fs}, got {steps}")
    if colour is not None and (len(colour) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in colour)):
        raise ValueError(f"colour: expected three ints in 0..255 (RGB), got {colour!r}")
    m = perturb_step // fs
    if not 1 <= window <= steps // fs + 1 - m:  # refused, not clamped: the statistic would change silently
        raise ValueError(f"window: expected 1 to {steps // fs + 1 - m} frames (from the perturbation's frame {m} "
                         f"to the last, {steps // fs}), got {window}")  # fmt: skip
    return m


def _run_conditions(checkpoint, env_name, env, episodes, steps, perturb_step, seed, colour, progress):
    """Each trajectory recorded once and replayed under every condition; (frames, states, curves) per
    condition, curves (N, K+1) the surprise of every frame."""
    cfg, fs = checkpoint.model.cfg, checkpoint.model.cfg.frameskip
    frames = {c: [] for c in CONDITIONS}
    states = {c: [] for c in CONDITIONS}
    blocks = []
    for i in range(episodes):
        start, actions = record_actions(env_name, env, steps, seed, i)
        for c in CONDITIONS:
            f, s = replay(env_name, env, start, actions, fs, c, perturb_step, seed + i, colour)
            frames[c].append(f)
            states[c].append(s)
        blocks.append(actions.reshape(steps // fs, fs * actions.shape[1]))
        progress(f"surprise: {i + 1}/{episodes} trajectories recorded and replayed")
    act = checkpoint.normalizer.normalize(torch.from_numpy(np.stack(blocks)))  # (N, K, fs * adim)
    curves = {}
    for c in CONDITIONS:
        px = prepare_pixels(torch.from_numpy(np.stack(frames[c])), cfg.image_size)  # (N, K+1, C, S, S)
        curves[c] = frame_surprise(checkpoint.model, px, act).numpy()
    return frames, states, curves


def _statistics(curves: dict, m: int, window: int, log) -> dict:
    """Per condition the mean surprise around the perturbation and per frame; paired t-tests against the
    unperturbed version, and teleport against colour (the paper's contrast)."""
    from scipy import stats

    around = {c: curves[c][:, m : m + window].mean(1) for c in CONDITIONS}
    base, conditions, pvalues = around["unperturbed"], {}, {}
    for c in CONDITIONS:
        per_frame = [None] + [float(v) for v in curves[c][:, 1:].mean(0)]  # frame 0 has no prediction
        entry = {"mean_surprise_around_t": float(around[c].mean()), "mean_surprise_per_frame": per_frame}
        if c != "unperturbed":
            t_stat, p = stats.ttest_rel(around[c], base)
            entry.update(t=float(t_stat), p=float(p), ratio_to_unperturbed=float(around[c].mean() / base.mean()))
            pvalues[c] = float(p)
            log(f"surprise: {c:8s} {around[c].mean():.4g} vs unperturbed {base.mean():.4g} "
                f"(x{entry['ratio_to_unperturbed']:.1f}), paired t = {t_stat:.2f}, p = {p:.3g}")  # fmt: skip
        conditions[c] = entry
    t_stat, p = stats.ttest_rel(around["teleport"], around["colour"])
    contrast = {"t": float(t_stat), "p": float(p), "ratio": float(around["teleport"].mean() / around["colour"].mean())}
    log(f"surprise: teleport vs colour x{contrast['ratio']:.2f}, paired t = {t_stat:.2f}, p = {p:.3g}")
    log(f"surprise: p-values: teleport {pvalues['teleport']:.3g}, colour {pvalues['colour']:.3g}")
    return {"conditions": conditions, "teleport_vs_colour": contrast}


def _write(out: Path, result: dict, curves: dict, m: int) -> None:
    """surprise.json and surprise.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    result["files"] = [str(out / "surprise.json"), str(out / "surprise.png")]
    pvalues = {c: result["conditions"][c]["p"] for c in CONDITIONS if c != "unperturbed"}
    surprise_plot(out / "surprise.png", curves, m, result["frameskip"], pvalues=pvalues,
                  title=f"{result['env']}: surprise over {result['episodes']} trajectories (perturbation at step "
                  f"{result['perturb_step']})")  # fmt: skip
    (out / "surprise.json").write_text(json.dumps(result, indent=2))
