"""What a run folder holds and what a resumed run must keep.

- `prepare_run_folder`: `--out` is checked before any data is read: not a file, writable; a folder that
  already holds something is refused unless `--resume` (continue it) or `--overwrite` (move it aside to
  OUT.old-N, never delete it).
- `resolve`: every choice that changes the numbers (CHOICES, plus the precision and the data file) is
  taken from the checkpoint when resuming and the flag was not given, refused with a message naming the
  flag when it was given with another value, and filled from the preset / DEFAULTS in a fresh run.
  The data file is identified by its content fingerprint (the same file under another path is the same
  data; a file changed since is not), falling back to its real path for checkpoints without one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

from lewm_fast._io import check_output_dir
from lewm_fast.data.hdf5 import fingerprint
from lewm_fast.training.checkpoint import Saved
from lewm_fast.training.presets import DEFAULTS, get_preset

# TrainConfig fields that change the numbers a run computes: restored on resume, a change is refused.
# (steps/epochs may change: continuing a run for longer is what --resume is for.)
CHOICES = ("preset", "model_overrides", "seed", "batch_size", "lr", "lambd", "weight_decay", "warmup",
           "grad_clip", "num_proj", "val_fraction")  # fmt: skip
# The flags of `lewm-fast train` whose names differ from the TrainConfig field.
_FLAGS = {"lambd": "--lambda", "model_overrides": "--model", "max_seconds": "--max-minutes"}


def flag(field: str) -> str:
    """The `lewm-fast train` flag of a TrainConfig field (errors name it, for the CLI and the API alike)."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


class RunExistsError(ValueError):
    """`--out` holds a run (or anything) and neither --resume nor --overwrite was given."""


def prepare_run_folder(out: Path, resume: bool, overwrite: bool, is_main: bool, barrier: Callable[[], None]) -> None:
    """Refuse, move aside or keep OUT (see the module docstring); create it. Every rank checks before
    rank 0 changes anything (a barrier between), so all ranks agree."""
    check_output_dir("--out", out)
    if resume and overwrite:
        raise ValueError("--resume, --overwrite: expected one of them, got both")
    busy = out.is_dir() and any(out.iterdir())
    if busy and not (resume or overwrite):
        raise RunExistsError(f"--out: {out} is not empty (it holds {_contents(out)}); pass --resume to continue "
                             "that run, or --overwrite to move it aside and start afresh")  # fmt: skip
    barrier()
    if is_main and busy and overwrite:
        print(f"lewm-fast train: --overwrite: moved the previous {out} to {_move_run_aside(out)}")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier()


def _contents(out: Path) -> str:
    names = sorted(p.name for p in out.iterdir())
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _move_run_aside(out: Path) -> Path:
    n = 1
    while out.with_name(f"{out.name}.old-{n}").exists():
        n += 1
    target = out.with_name(f"{out.name}.old-{n}")
    os.replace(out, target)
    return target


def data_identity(path: str | os.PathLike) -> dict:
    """How a checkpoint remembers its data file: the real path and the content fingerprint."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "fingerprint": _fingerprint(real, st.st_mtime_ns, st.st_size)}


@functools.lru_cache(maxsize=4)
def _fingerprint(real: str, mtime_ns: int, size: int) -> str:
    """fingerprint() once per file version (a resume checks it, then the run records it)."""
    return fingerprint(real)


def resolve(cfg, saved: Saved | None):
    """A copy of `cfg` (a TrainConfig) with every None filled: from the checkpoint when resuming, else
    from the preset and DEFAULTS. Raises ValueError naming the flag when a given value contradicts the
    checkpoint."""
    fill: dict = {}
    if saved:
        old = saved.state["config"]
        _check_data(cfg.data, saved)
        for field in CHOICES:
            given = getattr(cfg, field)
            if given is None:
                fill[field] = old.get(field)
            elif not _same(field, given, old.get(field), old):
                raise ValueError(f"{flag(field)}: {saved.folder} was trained with {field}={old.get(field)!r}, not "
                                 f"{given!r}; omit {flag(field)} to resume with the run's value, or train into a "
                                 "new --out")  # fmt: skip
        fill["amp"] = _resumed_amp(cfg.amp, saved)
        if cfg.steps is None and cfg.epochs is None:  # the run's length, unless a new one is given
            fill["steps"], fill["epochs"] = old.get("steps"), old.get("epochs")
    preset = get_preset(fill.get("preset") or cfg.preset or DEFAULTS["preset"])
    defaults = {**DEFAULTS, "batch_size": preset.batch_size, "lr": preset.lr, "warmup": preset.warmup}
    for field, value in defaults.items():
        if fill.get(field) is None and getattr(cfg, field) is None:
            fill[field] = value
    if all(fill.get(k) is None and getattr(cfg, k) is None for k in ("steps", "epochs")):
        fill["steps"] = preset.steps
    return dataclasses.replace(cfg, **fill)


def _same(field: str, given, saved_value, old: dict) -> bool:
    if field != "model_overrides":
        return given == saved_value
    preset = get_preset(old.get("preset") or DEFAULTS["preset"])  # compare the models, not the spelling
    return preset.model.replace(**given) == preset.model.replace(**(saved_value or {}))


def _resumed_amp(amp: str | None, saved: Saved) -> str:
    """The precision the run was using ('bf16' or 'off'); --amp auto or no --amp takes it, another refuses."""
    used = "bf16" if saved.state["amp"] == "bf16" else "off"
    if amp not in (None, "auto", used):
        raise ValueError(f"--amp: {saved.folder} was trained with amp={used} (its --amp "
                         f"{saved.state['config'].get('amp')!r} chose it), not {amp!r}; omit --amp to resume with "
                         "it")  # fmt: skip
    return used


def _check_data(data: str, saved: Saved) -> None:
    """--data must be the file the run was trained on: the same content (any path), or for a checkpoint
    without a fingerprint, the same real path."""
    known = saved.state.get("data") or {}
    if known.get("fingerprint"):
        if data_identity(data)["fingerprint"] != known["fingerprint"]:
            raise ValueError(f"--data: {data} is not the file {saved.folder} was trained on ({known.get('path')}): "
                             "its content differs; resume with that file, or train into a new --out")  # fmt: skip
        return
    before = known.get("path") or saved.state["config"].get("data")
    if before is None or os.path.realpath(before) != os.path.realpath(data):
        raise ValueError(f"--data: {saved.folder} was trained on {before!r}, not {data!r}")
