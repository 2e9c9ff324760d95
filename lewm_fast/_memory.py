"""What a request may ask of memory: requests whose estimate exceeds the device are refused before
anything is allocated, with the argument (or flag) named and the estimate, instead of failing in an
allocator deep inside (or, on a CPU, swapping for minutes first).

Estimates are lower bounds of what the work surely holds (the planner's `solve_bytes`, the trainer's
`lewm_fast/training/memory.py`, SIGReg's directions and projections): a refusal is always right, and a
request that passes can still be too large where an estimate leaves something out.
"""

from __future__ import annotations

import os

import torch


def memory_limit(device: torch.device | str) -> int:
    """The memory one request may plan to use: the device's total memory (more cannot be had at all)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX: a generous fixed cap
        return 64 << 30


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def check_fits(name: str, need: int, device: torch.device | str, what: str, hint: str = "") -> None:
    """Refuse (ValueError naming `name`) when `need` bytes exceed the device's memory."""
    device = torch.device(device)
    have = memory_limit(device)
    if need > have:
        where = "this machine's memory" if device.type == "cpu" else f"the {gib(have)} of this {device.type} device"
        where = f"{gib(have)}, {where}" if device.type == "cpu" else where
        raise ValueError(f"{name}: {what} needs at least ~{gib(need)}, more than {where}"
                         f"{'; ' + hint if hint else ''}")  # fmt: skip
