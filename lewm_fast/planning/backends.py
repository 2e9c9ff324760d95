"""Planner backends, in one place: their names, what is available where, what "auto" means, the engine
class of each, and the environment knobs of the CPU fast path (read here and nowhere else).

    reference  the public loop with the reference LeWM cost (any device): the public plans
    torch      the batched, restructured rollout in PyTorch ops (the CPU fast path; also runs on CUDA)
    triton     the same with the fused Triton kernels of kernels/ (CUDA; the CPU under TRITON_INTERPRET=1)
    auto       triton on CUDA when Triton imports, torch elsewhere (a warning when CUDA has to use torch)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch

from lewm_fast._checks import check_choice

BACKENDS = ("auto", "reference", "torch", "triton")

# Environment knobs of the CPU fast path, with their defaults.
THREADS_VAR, CHUNK_ROWS_VAR, COMPILE_VAR = "LEWM_PLAN_THREADS", "LEWM_PLAN_CHUNK_ROWS", "LEWM_PLAN_COMPILE"


@dataclass(frozen=True)
class PlanSettings:
    """threads: CPU threads of a solve (None: `capability.planner_threads`); chunk_rows: roll out in
    chunks of at most this many candidates (0: one per thread; None: `capability.planner_chunk_rows`);
    compile: TorchInductor for the CPU elementwise chains."""

    threads: int | None = None
    chunk_rows: int | None = None
    compile: bool = False


def _int_var(name: str, default: int | None, low: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {raw!r}")
    return value


def plan_settings() -> PlanSettings:
    """The knobs as the environment sets them now (engines read them once, when they are built)."""
    compile_raw = os.environ.get(COMPILE_VAR, "0").strip()
    if compile_raw not in ("", "0", "1"):
        raise ValueError(f"{COMPILE_VAR}: expected 0 or 1, got {compile_raw!r}")
    return PlanSettings(
        threads=_int_var(THREADS_VAR, None, 1),
        chunk_rows=_int_var(CHUNK_ROWS_VAR, None, 0),
        compile=compile_raw == "1",
    )


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
    from lewm_fast.planning.engine import FastEngine, TritonEngine
    from lewm_fast.planning.engine_reference import ReferenceEngine

    engines = {"reference": ReferenceEngine, "torch": FastEngine, "triton": TritonEngine}
    if backend not in engines:
        raise ValueError(f"backend: expected one of {list(engines)}, got {backend!r}")
    return engines[backend]
