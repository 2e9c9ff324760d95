"""Argument checks shared by the public API: each error names the argument, what was expected and
what came. No silent broadcasting: shapes are compared dimension by dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SEED_MAX = 2**32 - 1  # seeds are checked to numpy's global-seed range, which every seeded RNG here accepts
GENERATOR_SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed accepts 0 .. 2**64 - 1

# A dimension spec: an int (must equal), None (any size), or a str (a name, any size).
Dim = int | str | None


def _fmt(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def check_tensor(
    name: str,
    x: object,
    shape: Sequence[Dim],
    *,
    floating: bool = True,
    finite: bool = False,
) -> torch.Tensor:
    """Check that `x` is a tensor of rank len(shape) whose sizes match `shape`.

    Args:
        name: the argument's name, for the error message.
        shape: expected sizes; None or a string name accepts any size at that position.
        floating: require a floating dtype (TypeError otherwise).
        finite: require every value finite (ValueError otherwise; costs a host sync on GPU).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {_fmt(shape)}, got {type(x).__name__}")
    if x.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, x.shape)):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf")
    return x


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """'>= 1', '> 0', 'in [0, 1)', ... for an error message."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool, not a float) with lo <= value <= hi; TypeError or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int {_bounds(lo, hi)}, got {value!r} ({type(value).__name__})")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}: expected an int {_bounds(lo, hi)}, got {value}")
    return value


def check_number(
    name: str,
    value: object,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number (int or float, not a bool) within the bounds; `lo_open`/`hi_open` exclude them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number {_bounds(lo, hi, lo_open, hi_open)}, got {value!r}")
    bad = not math.isfinite(value)
    bad |= lo is not None and (value <= lo if lo_open else value < lo)
    bad |= hi is not None and (value >= hi if hi_open else value > hi)
    if bad:
        raise ValueError(f"{name}: expected a finite number {_bounds(lo, hi, lo_open, hi_open)}, got {value}")
    return float(value)


def check_device(name: str, value: object, allow_auto: bool = True) -> torch.device:
    """A CPU or CUDA device that exists here ('auto': CUDA when available, else the CPU)."""
    if allow_auto and value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "'auto', 'cpu', 'cuda' or 'cuda:N'" if allow_auto else "'cpu', 'cuda' or 'cuda:N'"
    try:
        device = torch.device(value)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {value!r} needs a CUDA GPU, and torch {torch.__version__} sees none here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {value!r}, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return device
