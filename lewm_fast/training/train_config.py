"""TrainConfig: everything a training run needs, one field per `lewm-fast train` flag, and the check of
every field's range, run before any data is read or any process group waits.

A field left None is "the preset's value (or DEFAULTS), or on --resume the run's" (training/resume.py).
Errors name the flag (`--grad-clip: expected a finite number > 0, got -1.0`), for the API as for the CLI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lewm_fast._checks import SEED_MAX, check_choice, check_device, check_int, check_number
from lewm_fast._io import check_output_dir
from lewm_fast.data.hdf5 import check_pixels, open_h5, read_index
from lewm_fast.sigreg import BACKENDS
from lewm_fast.training.presets import DEFAULTS, PRESETS, get_preset
from lewm_fast.training.resume import flag, sigreg_backend_on

AMP_CHOICES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Everything a run needs. None: the preset's value or DEFAULTS (on --resume: the run's value)."""

    data: str
    out: str
    preset: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None  # global batch (split over ranks)
    lr: float | None = None
    lambd: float | None = None
    weight_decay: float | None = None
    warmup: int | None = None
    grad_clip: float | None = None
    amp: str | None = None  # auto | bf16 | off
    val_fraction: float | None = None
    val_every: int = 250
    val_batches: int = 8
    log_every: int = 10
    ckpt_every: int = 500
    num_workers: int = 0
    seed: int | None = None
    resume: bool = False
    overwrite: bool = False  # move an existing run in `out` aside (OUT.old-N) and start afresh
    sync_bn: bool = False
    compile: bool = False
    sigreg_backend: str = "auto"
    num_proj: int | None = None
    device: str = "auto"
    progress: bool = True
    model_overrides: dict | None = None  # LeWMConfig fields to change (tests, experiments)
    max_seconds: float | None = None  # stop (with a checkpoint) after this much training time; 0: after one step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _optional(check, field: str, value, **bounds) -> None:
    if value is not None:
        check(flag(field), value, **bounds)


def check_data_file(path: str) -> None:
    """An episode file whose index and pixel column are sound (cheap: the rows are read later)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--data: no file at {path}")
    with open_h5(path) as f:
        read_index(f, ("pixels", "action"))
        check_pixels(f)


def check_train_config(cfg: TrainConfig) -> None:
    """Every field's type and range, the device, the model changes, the data file's index and the output
    folder; nothing is written. Raises TypeError/ValueError naming the flag (or the data file)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    check_data_file(cfg.data)
    check_output_dir("--out", cfg.out)
    if cfg.preset is not None:
        check_choice(flag("preset"), cfg.preset, sorted(PRESETS))
    preset = get_preset(cfg.preset or DEFAULTS["preset"])
    if cfg.steps is not None and cfg.epochs is not None:
        raise ValueError(f"--steps, --epochs: expected one of them, got both ({cfg.steps}, {cfg.epochs})")
    _optional(check_int, "steps", cfg.steps, lo=1)
    _optional(check_number, "epochs", cfg.epochs, lo=0, lo_open=True)
    _optional(check_int, "batch_size", cfg.batch_size, lo=1)
    _optional(check_number, "lr", cfg.lr, lo=0, lo_open=True)
    _optional(check_number, "lambd", cfg.lambd, lo=0)
    _optional(check_number, "weight_decay", cfg.weight_decay, lo=0)
    _optional(check_int, "warmup", cfg.warmup, lo=0)
    _optional(check_number, "grad_clip", cfg.grad_clip, lo=0, lo_open=True)  # <= 0 would zero or flip gradients
    _optional(check_number, "val_fraction", cfg.val_fraction, lo=0, hi=1, hi_open=True)
    _optional(check_int, "seed", cfg.seed, lo=0, hi=SEED_MAX)
    _optional(check_int, "num_proj", cfg.num_proj, lo=1)
    _optional(check_number, "max_seconds", cfg.max_seconds, lo=0)
    for field in ("val_every", "val_batches", "log_every", "ckpt_every"):
        check_int(flag(field), getattr(cfg, field), lo=1)
    check_int(flag("num_workers"), cfg.num_workers, lo=0)
    if cfg.amp is not None:
        check_choice(flag("amp"), cfg.amp, AMP_CHOICES)
    check_choice(flag("sigreg_backend"), cfg.sigreg_backend, BACKENDS)
    sigreg_backend_on(cfg.sigreg_backend, check_device(flag("device"), cfg.device))  # it can run here
    if cfg.model_overrides is not None:
        if not isinstance(cfg.model_overrides, dict):
            raise TypeError(f"--model: expected a JSON object of LeWMConfig fields, got {cfg.model_overrides!r}")
        try:
            preset.model.replace(**cfg.model_overrides)
        except (TypeError, ValueError) as e:
            raise type(e)(f"--model: {e}") from e
