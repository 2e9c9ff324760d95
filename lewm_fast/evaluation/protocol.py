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
from lewm_fast._io import FileFormatError, read_json
from lewm_fast.data.dataset import Normalizer, split_episodes
from lewm_fast.data.hdf5 import check_pixels, fingerprint, open_h5, read_index, read_rows
from lewm_fast.training.presets import DEFAULTS


class EvalConfigError(ValueError):
    """The checkpoint, the environment and the data do not fit together (raised before any planning)."""


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
    with start + goal_offset inside the episode; no (episode, start) pair is drawn twice while others
    remain."""
    if n < 1:
        raise ValueError(f"episodes: expected a positive number of problems, got {n}")
    if goal_offset < 1:
        raise ValueError(f"goal_offset: expected a positive int, got {goal_offset}")
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
        order = [int(e) for e in rng.permutation(usable)]
        picks: list[tuple[int, int]] = []
        used: set[tuple[int, int]] = set()
        capacity = sum(int(lengths[e]) - goal_offset for e in usable)
        i = 0
        while len(picks) < n:
            e = order[i % len(order)]
            i += 1
            s = int(rng.integers(0, lengths[e] - goal_offset))
            if (e, s) in used and len(used) < capacity:
                continue
            used.add((e, s))
            picks.append((e, s))
        problems = []
        for e, s in picks:
            a, b = int(offsets[e] + s), int(offsets[e] + s + goal_offset)
            state, pixels = read_rows(f, "state", [a, b]).astype(np.float64), read_rows(f, "pixels", [a, b])
            problems.append(Problem(e, s, s + goal_offset, state[0], state[1], pixels[0], pixels[1]))
    return problems
