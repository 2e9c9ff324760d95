"""Training checkpoints: a published-format folder (weights.pt + config.json) plus our own files.

    OUT/ckpt-0001000/   weights.pt, config.json     (lf.interop.save_official: the public format)
                        normalization.json          (action mean/std, so planning can un-normalise)
                        train_state.json            (step, epoch, precision, the run's resolved config, data
                                                     fingerprint: all that evaluation reads)
                        train_state.pt              (optimiser, scheduler, per-rank RNG states: tensors and
                                                     plain containers only, read with weights_only=True)
    OUT/checkpoint  ->  ckpt-0001000                (a symlink, replaced atomically)

A checkpoint folder is written completely under a temporary name and renamed; then the `checkpoint`
link is swapped with os.replace. A kill at any moment leaves `checkpoint` pointing at a complete
folder (the new one or the previous one).

Nothing here deletes what it did not write in this run's line: `prune` keeps the newest `keep`
checkpoints of the run's lineage (those up to the step it resumed from, then those it wrote, in that
order), and a folder in the way of a new checkpoint is moved aside (`ckpt-N.old`), not deleted.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lewm_fast._io import FileFormatError, UnsafeFileError, atomic_write, load_tensors, read_json
from lewm_fast.data.dataset import Normalizer
from lewm_fast.interop.official import save_official

LINK = "checkpoint"
FORMAT = 2  # train_state.json + a weights-only train_state.pt (format 1 pickled numpy RNG states)
_NAME = re.compile(r"ckpt-(\d+)")


# ---- RNG states as tensors and plain containers (loadable with weights_only=True) -----------------


def rng_state() -> dict:
    """Every RNG stream training draws from: torch (CPU, CUDA), numpy's global, Python's `random`."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- writing ---------------------------------------------------------------------------------------


def checkpoint_step(folder: Path) -> int | None:
    """The step of a checkpoint folder named ckpt-<step>, else None."""
    m = _NAME.fullmatch(folder.name)
    return int(m[1]) if m else None


def checkpoints(out: str | os.PathLike) -> list[Path]:
    """OUT's checkpoint folders (ckpt-<step>, not the temporary or moved-aside ones), by step."""
    found = [p for p in Path(out).glob("ckpt-*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def _move_aside(path: Path) -> Path:
    n, target = 1, path.with_name(f"{path.name}.old")
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.old-{n}")
    os.replace(path, target)
    return target


def save_checkpoint(out: str | os.PathLike, model, normalizer: Normalizer, state: dict, tensors: dict) -> Path:
    """Write OUT/ckpt-<step>/ completely, then point OUT/checkpoint at it. Returns the folder.

    state: JSON-able (step, epoch, batch_in_epoch, amp, config, data); tensors: optimizer, scheduler, rng.
    """
    out = Path(out)
    step = int(state["step"])
    final = out / f"ckpt-{step:07d}"
    tmp = out / f".ckpt-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a killed write
    save_official(model, tmp, extra_config={"lewm_fast_training": {"step": step}})
    atomic_write(tmp / "normalization.json", lambda f: f.write(_json(normalizer.to_dict())))
    atomic_write(tmp / "train_state.json", lambda f: f.write(_json({"format": FORMAT, **state})))
    atomic_write(tmp / "train_state.pt", lambda f: torch.save(tensors, f))
    if final.exists():  # not this run's (it never writes a step twice): a stale or damaged one
        _move_aside(final)
    os.replace(tmp, final)
    link_tmp = out / f".{LINK}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, out / LINK)
    _fsync_dir(out)
    return final


def prune(lineage: list[Path], keep: int = 2) -> None:
    """Delete all but the newest `keep` folders of `lineage` (oldest first; the last is the one just
    written and always stays)."""
    for old in lineage[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    del lineage[: -max(keep, 1)]


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder OUT/checkpoint points at, or None when there is none yet."""
    link = Path(out) / LINK
    if not link.exists():
        return None
    return link.resolve()


# ---- reading back for --resume ---------------------------------------------------------------------


@dataclass
class Saved:
    """A checkpoint read back whole: every file loaded (so it is known to be intact)."""

    folder: Path
    state: dict  # train_state.json
    tensors: dict  # train_state.pt: optimizer, scheduler, rng (one per rank)
    weights: dict  # weights.pt
    normalizer: Normalizer

    @property
    def step(self) -> int:
        return int(self.state["step"])


def load_saved(folder: Path) -> Saved:
    """Read every file of a checkpoint; FileFormatError / FileNotFoundError naming the first bad one,
    UnsafeFileError for a file holding pickled Python objects."""
    if not (folder / "train_state.json").exists() and (folder / "train_state.pt").exists():
        raise FileFormatError(f"{folder}: no train_state.json: written by an older lewm_fast whose train_state.pt "
                              "holds pickled objects, which are not loaded (its weights still evaluate)")  # fmt: skip
    state = read_json(folder / "train_state.json")
    missing = [k for k in ("step", "epoch", "batch_in_epoch", "amp", "config") if k not in state]
    if missing or state.get("format") != FORMAT:
        raise FileFormatError(f"{folder / 'train_state.json'}: expected format {FORMAT} with step, epoch, "
                              f"batch_in_epoch, amp and config; missing {missing}, "
                              f"format {state.get('format')!r}")  # fmt: skip
    tensors = load_tensors(folder / "train_state.pt")
    if not isinstance(tensors, dict) or not {"optimizer", "scheduler", "rng"} <= set(tensors):
        raise FileFormatError(f"{folder / 'train_state.pt'}: expected a dict with optimizer, scheduler and rng")
    weights = load_tensors(folder / "weights.pt")
    read_json(folder / "config.json")
    return Saved(folder, state, tensors, weights, Normalizer.load(folder / "normalization.json"))


def newest_intact(out: str | os.PathLike, log=print) -> Saved | None:
    """The newest checkpoint of OUT that reads back whole, starting from the one OUT/checkpoint names
    (folders with higher steps are not this run's line); each one skipped is named with the reason.
    None when OUT has no checkpoint; an error when none is intact or one holds a pickle payload."""
    link = latest_checkpoint(out)
    found = checkpoints(out)
    if link is not None and checkpoint_step(link) is not None:
        found = [p for p in found if checkpoint_step(p) < checkpoint_step(link)] + [link]
    skipped = []
    for folder in reversed(found):
        try:
            saved = load_saved(folder)
        except UnsafeFileError:
            raise
        except (FileFormatError, FileNotFoundError, ValueError) as e:
            skipped.append(f"{folder.name} ({e})")
            log(f"lewm-fast train: --resume: skipped {folder}, it is not intact: {e}")
            continue
        if skipped:
            log(f"lewm-fast train: --resume: resuming from {folder.name} (step {saved.step}), the newest intact one")
        return saved
    if skipped:
        raise FileFormatError(f"--resume: no intact checkpoint in {out}: " + "; ".join(skipped))
    return None


def _json(d: dict) -> bytes:
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
