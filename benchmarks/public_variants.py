"""The public code's best configuration on the same device, beside the public code as shipped.

What a user of the public LeWM code (stable-worldmodel) would try first to make it faster, and what its
own speed work does (le-wm pull request 57: `torch.compile` of the encoder and the predictor, bf16 autocast
around encoding and prediction):

    shipped        the public code as it ships: fp32, eager
    bf16           `torch.autocast(device, dtype=torch.bfloat16)` around the public call (only where the
                   device runs bf16 natively: lewm_fast.capability.native_bf16; elsewhere it is emulated)
    compile        `torch.compile` of the public model's hot modules (mode "reduce-overhead" on CUDA, as
                   there; the default mode on the CPU, where "reduce-overhead" adds nothing)
    compile+bf16   both

Each benchmark times every variant in the same run and reports, per row, `x_public` (the shipped public
time / the row's) and `x_best_public` (the fastest public variant's time / the row's). A variant that
fails, or whose compile takes longer than the time limit, is recorded with the reason instead of a time.
"""

from __future__ import annotations

import contextlib
import signal
import time

import torch

VARIANTS = ("shipped", "bf16", "compile", "compile+bf16")
LABELS = {
    "shipped": "public stable-worldmodel",
    "bf16": "public +bf16 autocast",
    "compile": "public +torch.compile",
    "compile+bf16": "public +torch.compile +bf16 autocast",
}
COMPILE_LIMIT_S = 600.0  # "where it works within a few minutes"


def usable_variants(requested, device: torch.device) -> tuple[list[str], list[str]]:
    """(variants to time on `device`, why the others are skipped)."""
    from lewm_fast.capability import native_bf16

    keep, skipped = [], []
    for v in requested:
        if "bf16" in v and not native_bf16(device):
            skipped.append(f"{LABELS[v]}: bf16 is emulated on this {device.type} (no native bf16), not timed")
        else:
            keep.append(v)
    return keep, skipped


def autocast(variant: str, device: torch.device):
    """The variant's autocast context (a null context for the fp32 variants)."""
    if "bf16" in variant:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_mode(device: torch.device) -> str:
    return "reduce-overhead" if device.type == "cuda" else "default"


def compile_modules(owner: torch.nn.Module, names: tuple[str, ...], device: torch.device) -> None:
    """Replace owner.<name> by torch.compile(owner.<name>) for each name (its state_dict is loaded first)."""
    for name in names:
        setattr(owner, name, torch.compile(getattr(owner, name), mode=compile_mode(device)))


class CompileTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise CompileTimeout in the main thread after `seconds` (SIGALRM; no limit where there is none)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def expired(signum, frame):
        raise CompileTimeout(f"{what} did not finish in {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def first_call(run, variant: str, limit_s: float = COMPILE_LIMIT_S) -> tuple[float, str | None]:
    """Run a variant's first call (for a compiled variant: the compile) within the time limit.
    Returns (seconds, None) or (seconds, why it failed)."""
    t0 = time.perf_counter()
    try:
        with time_limit(limit_s if "compile" in variant else 0, f"torch.compile ({LABELS[variant]})"):
            run()
    except Exception as e:  # noqa: BLE001 - a failing variant is a result, recorded with its reason
        return time.perf_counter() - t0, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return time.perf_counter() - t0, None


def add_ratios(rows: list[dict], group: tuple[str, ...], time_key: str) -> None:
    """x_public and x_best_public (and the name of the best public variant) for every timed row, within
    rows of equal `group` fields; public rows carry `public_variant`."""
    for r in rows:
        if r.get(time_key) is None:
            continue
        same = [x for x in rows if all(x.get(k) == r.get(k) for k in group) and x.get(time_key) is not None]
        public = [x for x in same if x.get("public_variant")]
        shipped = next((x for x in public if x["public_variant"] == "shipped"), None)
        best = min(public, key=lambda x: x[time_key], default=None)
        r["x_public"] = shipped[time_key] / r[time_key] if shipped else None
        r["x_best_public"] = best[time_key] / r[time_key] if best else None
        r["best_public"] = LABELS[best["public_variant"]] if best else None
