"""The paper's evaluation protocol, the pieces before planning: load a checkpoint for evaluation, check
that it fits the environment and the data, and pick (start, goal) problems from held-out episodes.

A problem: episode e, start row s (within the episode); the environment is teleported to the dataset
state at s; the goal image is the dataset frame at s + goal_offset and the goal state the dataset state
there. Success is the environment's own criterion against that goal state (TwoRoom: agent within 16
units; PushT: agent + block within 20 units and the block angle within pi/9).

Held-out episodes: when the data file is the one the checkpoint was trained on, the validation split
of that run (same `val_fraction` and seed as the trainer's `split_episodes`); any other file is unseen
by the model and all of its episodes are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import lewm_fast as lf
from lewm_fast._checks import GENERATOR_SEED_MAX, check_choice, check_int
from lewm_fast._io import FileFormatError, check_output_dir, read_json
from lewm_fast._memory import check_fits
from lewm_fast.capability import DTYPE_CHOICES
from lewm_fast.data.dataset import Normalizer, split_episodes
from lewm_fast.data.hdf5 import check_pixels, fingerprint, open_h5, read_index, read_rows
from lewm_fast.planning.backends import BACKENDS
from lewm_fast.planning.optimizers import optimizer_defaults
from lewm_fast.planning.planner import HORIZON
from lewm_fast.training.presets import DEFAULTS

# The paper's protocol: start and goal from held-out episodes, the goal GOAL_OFFSET steps ahead, BUDGET
# env steps per problem, EPISODES problems.
EPISODES, GOAL_OFFSET, BUDGET = 50, 25, 50
# Planning defaults, each from where it is defined: CEM's sizes from the optimizer registry, the horizon
# from the planner (executed in full before replanning: receding = horizon).
_CEM = optimizer_defaults("cem")
SAMPLES, TOPK, ITERS = _CEM["num_samples"], _CEM["topk"], _CEM["n_steps"]
DTYPES = DTYPE_CHOICES
POLICIES = ("planner", "random")


class EvalConfigError(ValueError):
    """The checkpoint, the environment and the data do not fit together (raised before any planning)."""


@dataclass(frozen=True)
class EvalSettings:
    """What both evaluations take (closed_loop.evaluate on a lewm_fast env, world.evaluate_world on a
    stable-worldmodel World), checked once on construction; errors name the argument."""

    episodes: int = EPISODES
    goal_offset: int = GOAL_OFFSET
    budget: int = BUDGET
    horizon: int = HORIZON
    receding: int = HORIZON
    num_samples: int = SAMPLES
    topk: int = TOPK
    iters: int = ITERS
    backend: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    policy: str = "planner"

    def __post_init__(self) -> None:
        for name in ("episodes", "goal_offset", "budget", "horizon", "num_samples", "iters"):
            check_int(name, getattr(self, name), lo=1)
        check_int("topk", self.topk, lo=1)
        if self.topk > self.num_samples:
            raise ValueError(f"topk: expected at most num_samples={self.num_samples} elites, got {self.topk}")
        check_int("receding", self.receding, lo=1)
        if self.receding > self.horizon:
            raise ValueError(f"receding: expected at most horizon={self.horizon} action blocks, got {self.receding}")
        check_int("seed", self.seed, lo=0, hi=GENERATOR_SEED_MAX)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("policy", self.policy, POLICIES)

    def plan_settings(self) -> dict:
        """The settings a summary reports."""
        return {"goal_offset": self.goal_offset, "budget": self.budget, "horizon": self.horizon,
                "receding": self.receding, "num_samples": self.num_samples, "topk": self.topk, "iters": self.iters,
                "seed": self.seed}  # fmt: skip


def check_eval(ckpt, out, settings: EvalSettings) -> None:
    """What both evaluations check before any file is read: a planner needs a checkpoint, `out` can be
    written."""
    if ckpt is None and settings.policy == "planner":
        raise ValueError("ckpt: the planner needs a checkpoint (policy='random' does not)")
    if out is not None:
        check_output_dir("out", out)


@dataclass
class Checkpoint:
    """What evaluation needs from a training checkpoint folder."""

    folder: Path
    model: lf.LeWM  # eval mode
    normalizer: Normalizer  # action statistics of the training episodes
    train_config: dict  # the trainer's TrainConfig as a dict ({} for a checkpoint from elsewhere)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a run folder (its `checkpoint` link) or a checkpoint folder itself."""
    path = Path(path)
    if (path / "checkpoint").exists():
        return (path / "checkpoint").resolve()
    if (path / "weights.pt").exists() or path.is_file():
        return path
    raise FileNotFoundError(f"ckpt: no checkpoint at {path} (expected a run folder with a 'checkpoint' link "
                            f"or a folder with weights.pt + config.json)")  # fmt: skip


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Model (eval mode), action normaliser and training config of a checkpoint (run folder or ckpt-*)."""
    folder = find_checkpoint(path)
    model = lf.interop.load_official(folder).eval()
    norm_file = folder / "normalization.json"
    if norm_file.exists():
        normalizer = Normalizer.load(norm_file)
    else:  # a published checkpoint: actions were z-scored with statistics we do not have
        raise FileNotFoundError(f"ckpt: {folder} has no normalization.json (the action statistics of its "
                                "training data, needed to turn planned actions into environment actions)")  # fmt: skip
    return Checkpoint(folder, model, normalizer, _train_config(folder))


def _train_config(folder: Path) -> dict:
    """The training config of a checkpoint, from JSON only (train_state.pt, which holds the optimiser and
    RNG states, is never read here): train_state.json's, or the run folder's train_config.json, or {}.
    `data_fingerprint` is added when the checkpoint recorded one (see `held_out_episodes`)."""
    if (folder / "train_state.json").exists():
        state = read_json(folder / "train_state.json")
        config = state.get("config")
        if not isinstance(config, dict):
            raise FileFormatError(f"{folder / 'train_state.json'}: expected a 'config' object, got {config!r}")
        data = state.get("data") if isinstance(state.get("data"), dict) else {}
        return {**config, "data_fingerprint": data.get("fingerprint")}
    if (folder.parent / "train_config.json").exists():
        return read_json(folder.parent / "train_config.json")
    return {}


def check_compatible(ckpt: Checkpoint, env, data_info: dict | None = None, env_name: str | None = None) -> None:
    """Raise EvalConfigError when the checkpoint's config does not fit the env (action width, channels)
    or the data (image size, action width, which env). data_info: `describe_data(...)` or None."""
    cfg = ckpt.model.cfg
    env_adim = int(np.prod(env.action_space.shape))
    problems = []
    if cfg.action_dim != env_adim:
        problems.append(
            f"the model takes actions of width {cfg.action_dim} (action block {cfg.action_block_dim} = "
            f"frameskip {cfg.frameskip} x {cfg.action_dim}) but env {env_name!r} has {env_adim}"
        )
    if ckpt.normalizer.mean.size != cfg.action_dim:
        problems.append(f"normalization.json has {ckpt.normalizer.mean.size} action columns, the model "
                        f"{cfg.action_dim}")  # fmt: skip
    if cfg.in_channels != 3:
        problems.append(f"the model takes {cfg.in_channels}-channel images, the env renders RGB")
    if data_info is not None:
        if env_name is not None and data_info.get("env") not in (None, env_name):
            problems.append(f"the data were collected in env {data_info['env']!r}, not {env_name!r}")
        if data_info["image_size"] != cfg.image_size:
            problems.append(f"the model takes {cfg.image_size} px images but the data hold {data_info['image_size']} "
                            f"px frames (collect with --image-size {cfg.image_size})")  # fmt: skip
        if data_info["action_dim"] != cfg.action_dim:
            problems.append(f"the data hold actions of width {data_info['action_dim']}, the model {cfg.action_dim}")
    if problems:
        raise EvalConfigError(f"checkpoint {ckpt.folder} does not fit: " + "; ".join(problems))


def describe_data(data: str | os.PathLike) -> dict:
    """Env name, frame size, action width and episode count of an episode file (checked layout)."""
    with open_h5(data) as f:
        lengths, _ = read_index(f, ("pixels", "action", "state"))
        h, w, _ = check_pixels(f)
        env = f.attrs.get("env")
        env = env.decode() if isinstance(env, bytes) else (str(env) if env is not None else None)
        if h != w:
            raise EvalConfigError(f"data: {data}: frames must be square, got {h}x{w}")
        return {"env": env, "image_size": int(h), "action_dim": int(f["action"].shape[1]),
                "state_dim": int(f["state"].shape[1]), "episodes": int(lengths.size)}  # fmt: skip


def held_out_episodes(data: str | os.PathLike, train_config: dict) -> tuple[np.ndarray, str]:
    """(episode indices, how they were chosen): the run's validation split when `data` is the file the
    checkpoint was trained on, else every episode of `data` (a file the model never saw)."""
    with open_h5(data) as f:
        lengths, _ = read_index(f)
    if train_config.get("data_fingerprint"):  # the same content under any path is the training file
        same = fingerprint(data) == train_config["data_fingerprint"]
    else:
        trained_on = train_config.get("data")
        same = trained_on is not None and Path(trained_on).exists() and os.path.samefile(trained_on, data)
    if not same:
        return np.arange(lengths.size), "all episodes (not the checkpoint's training file)"
    vf = float(train_config.get("val_fraction", DEFAULTS["val_fraction"]))
    seed = int(train_config.get("seed", DEFAULTS["seed"]))
    _, val = split_episodes(lengths.size, vf, seed)
    if val.size == 0:
        raise EvalConfigError(f"data: {data} is the checkpoint's training file and it held out no episode "
                              f"(val_fraction={vf}); evaluate on a separately collected file")  # fmt: skip
    return val, f"the validation split of training (val_fraction={vf}, seed={seed}: {val.size} episodes)"


@dataclass
class Problem:
    """One evaluation problem. Frames are uint8 (S, S, 3); states the env's state vectors."""

    episode: int
    start_row: int  # within the episode
    goal_row: int  # start_row + goal_offset
    start_state: np.ndarray
    goal_state: np.ndarray
    start_frame: np.ndarray
    goal_frame: np.ndarray


def select_problems(
    data: str | os.PathLike, episodes: np.ndarray, n: int, goal_offset: int, seed: int
) -> list[Problem]:
    """n problems from `episodes` of `data`: episodes in turn (shuffled), a uniformly drawn start row
    with start + goal_offset inside the episode; no (episode, start) pair is drawn twice (more problems
    than there are pairs are refused)."""
    check_int("episodes", n, lo=1)
    check_int("goal_offset", goal_offset, lo=1)
    rng = np.random.default_rng(seed)
    with open_h5(data) as f:
        lengths, offsets = read_index(f, ("pixels", "state"))
        usable = [int(e) for e in episodes if lengths[e] > goal_offset]
        if not usable:
            longest = int(lengths[episodes].max()) if len(episodes) else 0
            raise EvalConfigError(
                f"data: no held-out episode of {data} is longer than goal_offset={goal_offset} "
                f"(longest: {longest} steps)"
            )
        capacity = sum(int(lengths[e]) - goal_offset for e in usable)
        if n > capacity:  # a problem drawn twice would count twice: refused rather than repeated
            raise EvalConfigError(f"episodes: {n} problems asked for, but the {len(usable)} held-out episode(s) of "
                                  f"{data} hold {capacity} distinct start rows with a goal {goal_offset} steps "
                                  "ahead")  # fmt: skip
        frame = int(np.prod(f["pixels"].shape[1:]))
        check_fits("episodes", 3 * n * frame, "cpu", f"{n} problems (start, goal and final frames)")
        order = [int(e) for e in rng.permutation(usable)]
        picks: list[tuple[int, int]] = []
        used: set[tuple[int, int]] = set()
        i = 0
        while len(picks) < n:
            e = order[i % len(order)]
            i += 1
            s = int(rng.integers(0, lengths[e] - goal_offset))
            if (e, s) in used:
                continue
            used.add((e, s))
            picks.append((e, s))
        problems = []
        for e, s in picks:
            a, b = int(offsets[e] + s), int(offsets[e] + s + goal_offset)
            state, pixels = read_rows(f, "state", [a, b]).astype(np.float64), read_rows(f, "pixels", [a, b])
            problems.append(Problem(e, s, s + goal_offset, state[0], state[1], pixels[0], pixels[1]))
    return problems
