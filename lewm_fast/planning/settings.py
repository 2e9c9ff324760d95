"""The environment knobs of the CPU fast path, read here and nowhere else (engines read them once, when
they are built)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
