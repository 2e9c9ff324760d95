"""Planner backends, in one place: their names, what is available where, what "auto" means and the
engine class of each.

    reference  the public loop with the reference LeWM cost (any device): the public plans
    torch      the batched, restructured rollout in PyTorch ops (the CPU fast path; also runs on CUDA)
    triton     the same with the fused Triton kernels of lewm_fast/kernels/ (CUDA; the CPU under TRITON_INTERPRET=1)
    auto       triton on CUDA when Triton imports, torch elsewhere (a warning when CUDA has to use torch)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

from lewm_fast._checks import check_choice
from lewm_fast.planning.engine import FastEngine, TritonEngine
from lewm_fast.planning.engine_reference import ReferenceEngine

BACKENDS = ("auto", "reference", "torch", "triton")


@functools.cache
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def _unavailable(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot plan on `device` (None when it can)."""
    if backend != "triton":
        return None
    if not _has_triton():
        return "Triton is not installed"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"it needs a CUDA device (or TRITON_INTERPRET=1 for tests), got a model on {device}"
    return None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The concrete backends that can plan on `device`."""
    device = torch.device(device)
    return [b for b in BACKENDS if b != "auto" and _unavailable(b, device) is None]


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """What `backend` means on `device`: 'auto' = the fastest available; an unavailable one is refused."""
    check_choice("backend", backend, BACKENDS)
    device = torch.device(device)
    if backend != "auto":
        why = _unavailable(backend, device)
        if why:
            raise ValueError(f"backend: '{backend}' is not available here: {why}; use 'torch' or 'auto'")
        return backend
    if device.type == "cuda":
        if _unavailable("triton", device) is None:
            return "triton"
        warnings.warn("planner backend 'auto' on CUDA: Triton is not installed, using 'torch'", stacklevel=3)
    return "torch"


def engine_class(backend: str) -> type:
    """The engine class of a concrete backend (after `resolve_backend`)."""
    engines = {"reference": ReferenceEngine, "torch": FastEngine, "triton": TritonEngine}
    if backend not in engines:
        raise ValueError(f"backend: expected one of {list(engines)}, got {backend!r}")
    return engines[backend]
