"""What a run folder holds and what a resumed run must keep.

- `check_run_folder` (before anything is read or written): `--out` is not a file and is writable; a folder
  that already holds something is refused unless `--resume` (continue it) or `--overwrite`.
  `make_run_folder` (once every other check has passed): moves an old run aside to OUT.old-N (never
  deletes it) and creates OUT.
- `resolve`: every TrainConfig field is one of four kinds (`FIELD_KINDS`; a test enumerates them):
  CHOICES change the numbers and are taken from the checkpoint when the flag is not given (a different
  value is refused, naming the flag); SETTINGS change the numbers too but are resolved on this machine
  ("auto" device and SIGReg backend, --compile, --sync-bn) and must resolve to what the run used; LENGTH
  (--steps, --epochs, --max-minutes) may change, continuing a run for longer is what --resume is for;
  the rest do not change the weights (logging, validation, checkpoint cadence, workers) or say where
  things are (--data is checked by content, --out is the run).
- The data file is identified by the sha256 of its bytes (`data_identity`, computed once per file
  version): the same file under another path is the same data, a file with any byte changed is not.
  Checkpoints written before the digest existed fall back to the sampled content fingerprint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch

from lewm_fast._io import check_output_dir, folder_contents, move_aside
from lewm_fast.data.hdf5 import file_digest, fingerprint
from lewm_fast.sigreg import resolve_backend as resolve_sigreg_backend
from lewm_fast.training.checkpoint import Saved
from lewm_fast.training.presets import DEFAULTS, get_preset

# TrainConfig fields that change the numbers a run computes: restored on resume, a change is refused.
CHOICES = ("preset", "model_overrides", "seed", "batch_size", "lr", "lambd", "weight_decay", "warmup",
           "grad_clip", "num_proj", "val_fraction")  # fmt: skip
# Fields that change the numbers and are resolved here ("auto"): a resume must resolve them as the run did.
SETTINGS = ("device", "sigreg_backend", "compile", "sync_bn")
# The run's length: recorded, and may be changed by a resume.
LENGTH = ("steps", "epochs", "max_seconds")
# Fields that do not change the weights (tests/test_hostile_train.py trains with each changed and compares).
NEUTRAL = ("val_every", "val_batches", "log_every", "ckpt_every", "num_workers", "progress")
# Where things are and what to do with an existing run (the data file is checked by its digest).
WHERE = ("data", "out", "resume", "overwrite")
# (--amp is a choice too, restored as the precision the run measured or was given: `_resumed_amp`.)
FIELD_KINDS = {"choice": (*CHOICES, "amp"), "setting": SETTINGS, "length": LENGTH, "neutral": NEUTRAL, "where": WHERE}
# The flags of `lewm-fast train` whose names differ from the TrainConfig field.
_FLAGS = {"lambd": "--lambda", "model_overrides": "--model", "max_seconds": "--max-minutes"}


def flag(field: str) -> str:
    """The `lewm-fast train` flag of a TrainConfig field (errors name it, for the CLI and the API alike)."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


class RunExistsError(ValueError):
    """`--out` holds a run (or anything) and neither --resume nor --overwrite was given."""


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse OUT when it is not writable, or holds something and neither --resume nor --overwrite is given.
    Changes nothing."""
    check_output_dir("--out", out)
    if resume and overwrite:
        raise ValueError("--resume, --overwrite: expected one of them, got both")
    if out.is_dir() and any(out.iterdir()) and not (resume or overwrite):
        raise RunExistsError(f"--out: {out} is not empty (it holds {folder_contents(out)}); pass --resume to continue "
                             "that run, or --overwrite to move it aside and start afresh")  # fmt: skip


def make_run_folder(out: Path, overwrite: bool, is_main: bool, barrier: Callable[[], None]) -> None:
    """Move an old run in OUT aside (--overwrite) and create OUT (rank 0, once every check has passed on
    every rank: a barrier before and after)."""
    busy = out.is_dir() and any(out.iterdir())
    barrier()
    if is_main and busy and overwrite:
        print(f"lewm-fast train: --overwrite: moved the previous {out} to {move_aside(out)}")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier()


def data_identity(path: str | os.PathLike) -> dict:
    """How a checkpoint remembers its data file: the real path, the sha256 of its bytes, and the sampled
    content fingerprint (which evaluation uses to recognise the training file)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, **_identity(real, st.st_mtime_ns, st.st_size)}


@functools.lru_cache(maxsize=4)
def _identity(real: str, mtime_ns: int, size: int) -> dict:
    """Computed once per file version (a resume checks it, then the run records it)."""
    return {"digest": file_digest(real), "fingerprint": fingerprint(real)}


def resolve(cfg, saved: Saved | None, device: torch.device):
    """A copy of `cfg` (a TrainConfig) with every None filled and the SETTINGS resolved on `device`: from
    the checkpoint when resuming, else from the preset and DEFAULTS. Raises ValueError naming the flag
    when a given value contradicts the checkpoint."""
    fill: dict = {"device": device.type, "sigreg_backend": sigreg_backend_on(cfg.sigreg_backend, device)}
    fill["compile"], fill["sync_bn"] = bool(cfg.compile), bool(cfg.sync_bn)
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
        _check_settings(fill, old, saved.folder)
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


def sigreg_backend_on(backend: str, device: torch.device) -> str:
    """The SIGReg backend --sigreg-backend means on `device` (an error naming the flag where it cannot run)."""
    try:
        return resolve_sigreg_backend(backend, device)
    except ValueError as e:
        raise ValueError(f"--sigreg-backend: {str(e).removeprefix('backend: ')}") from e


def _check_settings(resolved: dict, old: dict, folder: Path) -> None:
    """Each SETTING resolves here as it did for the run (checkpoints from before a setting was recorded,
    or that recorded 'auto', say nothing about it)."""
    for field in SETTINGS:
        before = old.get(field)
        if before is None or before == "auto" or before == resolved[field]:
            continue
        hint = f"pass {flag(field)} {before}" if not isinstance(before, bool) else (
            f"{'pass' if before else 'omit'} {flag(field)}")  # fmt: skip
        raise ValueError(f"{flag(field)}: {folder} was trained with {field}={before!r}, and this resume would use "
                         f"{resolved[field]!r}, which changes the numbers; {hint} to resume it, or train into a "
                         "new --out")  # fmt: skip


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
    """--data must be the file the run was trained on: the same bytes (any path); for older checkpoints the
    same sampled fingerprint, or without one the same real path."""
    known = saved.state.get("data") or {}
    key = "digest" if known.get("digest") else "fingerprint"
    if known.get(key):
        if data_identity(data)[key] != known[key]:
            raise ValueError(f"--data: {data} is not the file {saved.folder} was trained on ({known.get('path')}): "
                             "its content differs; resume with that file, or train into a new --out")  # fmt: skip
        return
    before = known.get("path") or saved.state["config"].get("data")
    if before is None or os.path.realpath(before) != os.path.realpath(data):
        raise ValueError(f"--data: {saved.folder} was trained on {before!r}, not {data!r}")
