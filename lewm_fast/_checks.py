"""Argument checks shared by the public API: each error names the argument, what was expected and
what came. No silent broadcasting: shapes are compared dimension by dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
