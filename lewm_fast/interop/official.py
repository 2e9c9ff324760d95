"""The published checkpoint format: a folder with `weights.pt` (the state_dict
of the whole public module) and `config.json` (the resolved Hydra model config).

`load_official` reads sizes from the config fields (no Hydra, no transformers; `_target_` strings are
ignored) and maps transformers 4.x or 5.x ViT parameter names. `save_official` writes the same
format atomically (temporary file + rename), with 5.x names, which the public code reads today.
Weights are read with `torch.load(weights_only=True)` only (lewm_fast/_io.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from lewm_fast._checks import check_device, check_int
from lewm_fast._io import atomic_write, check_output_dir, load_tensors, read_json
from lewm_fast.config import LeWMConfig
from lewm_fast.interop.swm import load_public_state_dict
from lewm_fast.model import LeWM


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from what torch.load returned: a dict of tensors, or one under 'state_dict'/'model'."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights file, config.json) for a checkpoint folder or a .pt file beside a config.json."""
    path = Path(path)
    if path.is_dir():
        weights = path / "weights.pt"
        if not weights.exists():
            candidates = sorted(path.glob("*.pt"))
            if len(candidates) != 1:
                raise FileNotFoundError(f"path: expected {path}/weights.pt (or a single .pt file), found {candidates}")
            weights = candidates[0]
        config = path / "config.json"
    elif path.is_file():
        weights, config = path, path.parent / "config.json"
    else:
        raise FileNotFoundError(f"path: no checkpoint folder or file at {path}")
    if not config.exists():
        raise FileNotFoundError(f"path: expected a config.json beside {weights}, found none")
    return weights, config


def load_official(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", action_dim: int | None = None
) -> LeWM:
    """A published-format checkpoint (folder, or .pt beside a config.json) -> `lf.LeWM` in eval mode.

    The weights are read with `torch.load(weights_only=True)` (a shared file cannot run code); a file
    that is empty, corrupt, holds something other than tensors, or a config.json that is not the
    published shape raises an error naming the file (and the field).
    """
    device = check_device("map_location", map_location, allow_auto=False)
    if action_dim is not None:
        check_int("action_dim", action_dim, lo=1)
    weights, config_path = resolve_checkpoint(path)
    config = read_json(config_path)
    try:
        cfg = LeWMConfig.from_published(config, action_dim=action_dim)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{config_path}: {e}") from e
    state = _unwrap_state_dict(load_tensors(weights, map_location=device), weights)
    model = LeWM(cfg).to(device)
    try:
        load_public_state_dict(model, state)
    except ValueError as e:
        raise ValueError(f"{weights}: {e} (config: {config_path})") from e
    return model.eval()


def save_official(model: LeWM, path: str | os.PathLike, extra_config: dict | None = None) -> Path:
    """Write `model` as a published-format folder (weights.pt + config.json), each file atomically.
    Every argument is checked before the folder is created or a file written."""
    if not isinstance(model, LeWM):
        raise TypeError(f"model: expected an lf.LeWM (lf.interop.from_swm converts a public one), got "
                        f"{type(model).__name__}")  # fmt: skip
    path = check_output_dir("path", path)
    if extra_config is not None and not isinstance(extra_config, dict):
        raise TypeError(f"extra_config: expected a dict or None, got {type(extra_config).__name__}")
    config = {**model.cfg.to_published(), **(extra_config or {})}
    try:
        text = json.dumps(config, indent=2, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise type(e)(f"extra_config: cannot be written as JSON ({e})") from e
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "weights.pt", lambda f: torch.save(state, f))
    atomic_write(path / "config.json", lambda f: f.write(text))
    return path
