"""Training checkpoints: a published-format folder (weights.pt + config.json) plus our own files.

    OUT/ckpt-0001000/   weights.pt, config.json     (lf.interop.save_official: the public format)
                        normalization.json          (action mean/std, so planning can un-normalise)
                        train_state.pt              (optimiser, scheduler, step, epoch, RNG states, config)
    OUT/checkpoint  ->  ckpt-0001000                (a symlink, replaced atomically)

A checkpoint folder is written completely under a temporary name and renamed; then the `checkpoint`
link is swapped with os.replace. A kill at any moment leaves `checkpoint` pointing at a complete
folder (the new one or the previous one). The two newest folders are kept.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lewm_fast.data.dataset import Normalizer
from lewm_fast.interop.official import _atomic_write, save_official

LINK = "checkpoint"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str | os.PathLike, model, normalizer: Normalizer, train_state: dict, keep: int = 2) -> Path:
    """Write OUT/ckpt-<step>/ completely, then point OUT/checkpoint at it. Returns the folder."""
    out = Path(out)
    step = int(train_state["step"])
    final = out / f"ckpt-{step:07d}"
    tmp = out / f".ckpt-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_official(model, tmp, extra_config={"lewm_fast_training": {"step": step}})
    _atomic_write(tmp / "normalization.json", lambda f: f.write(_json(normalizer.to_dict())))
    _atomic_write(tmp / "train_state.pt", lambda f: torch.save(train_state, f))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = out / f".{LINK}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, out / LINK)
    _fsync_dir(out)
    for old in sorted(out.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder OUT/checkpoint points at, or None when there is none yet."""
    link = Path(out) / LINK
    if not link.exists():
        return None
    return link.resolve()


def load_train_state(folder: str | os.PathLike) -> dict:
    return torch.load(Path(folder) / "train_state.pt", map_location="cpu", weights_only=False)


def _json(d: dict) -> bytes:
    import json

    return json.dumps(d, indent=2).encode()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
