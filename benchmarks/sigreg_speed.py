"""SIGReg speed and memory: backends x sizes, forward, backward and both, against the reference.

The reference backend is the public formula (it builds (T, B, M, K) tensors); every other row is a fused
backend on the same inputs and directions, timed interleaved with the reference in this process (the
machines this runs on are shared: interleaving keeps a neighbour's load out of the ratios). Where
stable-worldmodel is importable, the public SIGReg module itself is timed beside them, as shipped (fp32)
and in its best configurations (benchmarks/public_variants.py: bf16 autocast where bf16 is native,
torch.compile): `x public` and `x best public` compare with those (it draws its own directions, as it
does in training).

    python benchmarks/sigreg_speed.py             # CPU: reference vs cpp; CUDA: reference vs triton (+ floor)
    python benchmarks/sigreg_speed.py --quick     # the small and training sizes only
    python benchmarks/sigreg_speed.py --sizes train --phases both --repeats 15
    PYTHONPATH=$PWD /path/to/peer-venv/bin/python benchmarks/sigreg_speed.py --out benchmarks/results
                                                  # the recorded figures, with the public module's rows

Columns:
- `ms`: median wall time of one call (CUDA: synchronised) over `repeats` interleaved calls, or with
  `--clock cpu` the CPU time this process used (all its threads): on a shared machine with `--threads 1`
  that is the compute time, whatever the neighbours do;
  phase `fwd` = forward with autograd recording (as in training), `bwd` = backward alone (its forward
  run untimed before each call), `both` = forward + backward.
- `x_reference`: reference ms / this row's ms, same size, phase and dtype.
- `x_public`, `x_best_public`: the public module's ms as shipped (fp32), and of its fastest configuration,
  / this row's ms, same size, phase and dtype group (the public fp32 rows run on an fp32 copy of the input).
- `peak_extra_MiB` (phase `both` only): the peak of tensor memory allocated during forward + backward
  above what was live before (inputs and directions excluded; outputs, autograd-saved tensors,
  temporaries and the gradient included). CUDA: torch.cuda.max_memory_allocated. CPU: the running sum of
  the allocation/free events of torch's allocator recorded by torch.profiler(profile_memory=True); memory
  a C++ kernel takes for itself (a few KiB of per-thread accumulators here) is not seen.
  `mem_ratio` = reference peak / this row's peak.
- `tflops`: counted work / time. Counted work (the same for every backend): each GEMM 2 T B D M FLOP
  (forward: Z = X @ A; backward: dX = dZ @ A^T), per (t, b, m) 16 FLOP for one sincos, per (t, b, m, k>=1)
  8 FLOP forward (angle addition + two sums) and 10 backward (angle addition + two multiply-adds).
- On CUDA a `floor` row per size (phase `both`): cuBLAS X @ A, sin and cos of Z, dZ @ A^T: the two GEMMs
  and the transcendentals that any implementation needs, run back to back. `x_floor` = this row / floor.
  On the CPU a `gemm` row instead (phase `both`): the two GEMMs alone, the part no CPU kernel can beat
  MKL/oneDNN at; `x_gemm` = this row / gemm, and its TFLOP/s is the GEMM rate at this size.
- dtype: `auto` (the CPU default) is bf16 where the CPU runs it natively, else fp32 (lewm_fast.capability).
  Every results file records the machine (_common.machine_info: CPU model, ISA, flags, cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import public_variants as pv  # noqa: E402
from _common import print_table, synchronize, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.capability import PLAN_DTYPES, dtype_name, resolve_dtype  # noqa: E402
from lewm_fast.sigreg import available_backends  # noqa: E402

SIZES = {  # name -> (T, B, D, M, K)
    "small": (2, 64, 32, 128, 17),
    "train": (4, 128, 192, 1024, 17),  # LeWM training: 4 frames x batch 128 x 192, 1024 slices
    "large": (1, 4096, 512, 1024, 17),
}
DTYPES = PLAN_DTYPES
PHASES = ("fwd", "bwd", "both")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--backends", nargs="+", default=None, help="fast backends (default: cpp on CPU, triton on CUDA)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["auto", *DTYPES],
                   help="default: fp32 and bf16 on CUDA, auto on the CPU (bf16 where native, else fp32)")  # fmt: skip
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    p.add_argument("--repeats", type=int, default=9, help="timed calls per row (fewer for slow rows)")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timed work per (size, phase), at most")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time, or this process's CPU time")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads; default: torch's)")
    p.add_argument("--quick", action="store_true", help="small and training sizes, fewer repeats")
    p.add_argument("--no-public", action="store_true", help="skip the public SIGReg rows")
    p.add_argument("--public", nargs="+", default=list(pv.VARIANTS), choices=pv.VARIANTS,
                   help="public configurations to time (default: all; the bf16 ones where bf16 is native)")  # fmt: skip
    p.add_argument("--compile-limit", type=float, default=pv.COMPILE_LIMIT_S,
                   help="seconds the public torch.compile may take before its rows say it was too slow")  # fmt: skip
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def counted_flops(T: int, B: int, D: int, M: int, K: int, phase: str) -> float:
    gemm, sincos, knots = 2.0 * T * B * D * M, 16.0 * T * B * M, T * B * M * (K - 1)
    fwd, bwd = gemm + sincos + 8.0 * knots, gemm + sincos + 10.0 * knots
    return {"fwd": fwd, "bwd": bwd, "both": fwd + bwd}[phase]


def make_call(backend: str, x: torch.Tensor, a: torch.Tensor, K: int, phase: str):
    """A zero-argument callable doing one `phase` of SIGReg with `backend` (a fresh graph each call)."""

    def forward():
        return lf.sigreg(x, a, knots=K, backend=backend, distributed=False)

    if phase == "fwd":
        return forward, None
    if phase == "both":
        return lambda: forward().backward(), None
    state = {}

    def prepare():  # untimed: build the graph the timed backward consumes
        state["loss"] = forward()

    return lambda: state.pop("loss").backward(), prepare


def floor_call(x: torch.Tensor, a: torch.Tensor):
    """cuBLAS X @ A, sin(Z), cos(Z) and Z @ A^T: the work any fused forward + backward must do."""
    x2 = x.reshape(-1, x.shape[-1])

    def run():
        z = x2 @ a
        z.sin()
        z.cos()
        return z @ a.T

    return run


def gemm_call(x: torch.Tensor, a: torch.Tensor):
    """X @ A and Z @ A^T alone: the GEMMs of a forward + backward (the CPU's `gemm` row)."""
    x2 = x.reshape(-1, x.shape[-1])

    def run():
        return (x2 @ a) @ a.T

    return run


_PUBLIC: dict = {}


def public_sigreg(K: int, M: int, device: torch.device, compiled: bool):
    """The public SIGReg module (stable-worldmodel), one per (K, M, device, compiled) for the whole run."""
    from stable_worldmodel.wm.loss import SIGReg

    key = (K, M, str(device), compiled)
    if key not in _PUBLIC:
        module = SIGReg(knots=K, num_proj=M).to(device)
        _PUBLIC[key] = torch.compile(module, mode=pv.compile_mode(device)) if compiled else module
    return _PUBLIC[key]


def public_call(variant: str, x: torch.Tensor, K: int, M: int, phase: str):
    """One `phase` of the public SIGReg in a public configuration (fp32 variants on an fp32 copy of x)."""
    module = public_sigreg(K, M, x.device, "compile" in variant)
    xp = x.detach().clone().requires_grad_(True) if "bf16" in variant else x.detach().float().requires_grad_(True)

    def forward():
        with pv.autocast(variant, x.device):
            return module(xp)

    if phase == "fwd":
        return forward, None
    if phase == "both":
        return lambda: forward().backward(), None
    state = {}

    def prepare():
        state["loss"] = forward()

    return lambda: state.pop("loss").backward(), prepare


def public_calls(x: torch.Tensor, K: int, M: int, phase: str, args, failed: dict) -> dict:
    """{label: (call, prepare)} of every usable public configuration; a configuration whose first call
    fails (or compiles too long) goes to `failed` {label: reason} instead."""
    calls = {}
    for v in args.public_variants:
        call, prepare = public_call(v, x, K, M, phase)
        label = pv.LABELS[v]
        if "compile" in v and label not in failed:

            def first(call=call, prepare=prepare):
                if prepare:
                    prepare()
                call()

            seconds, error = pv.first_call(first, v, args.compile_limit)
            args.compile_s.setdefault(label, seconds)  # the first one: the compile
            if error:
                failed[label] = error
        if label not in failed:
            calls[label] = (call, prepare)
    return calls


def time_interleaved(calls: dict, device: torch.device, repeats: int, budget: float, clock=time.perf_counter) -> dict:
    """Median ms per call of each (call, prepare) in `calls`, calling them in turn `repeats` times."""
    for call, prepare in calls.values():  # warm-up (allocations, compilation, the C++ build)
        if prepare:
            prepare()
        call()
    synchronize(device)
    times = {name: [] for name in calls}
    started = time.perf_counter()
    for i in range(repeats):
        for name, (call, prepare) in calls.items():
            if prepare:
                prepare()
            synchronize(device)
            t0 = clock()
            call()
            synchronize(device)
            times[name].append(clock() - t0)
        if i >= 2 and time.perf_counter() - started > budget:
            break
    repeats = min(len(ts) for ts in times.values())
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()} | {"_repeats": repeats}


def peak_extra_bytes(call, device: torch.device) -> int:
    """Peak tensor bytes allocated during call() above those live before it (see the module docstring)."""
    call()  # warm-up outside the measurement
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def bench(size: str, dname: str, backends: list[str], args, device: torch.device) -> list[dict]:
    """Rows of one (size, dtype): every phase, the reference and `backends` interleaved."""
    T, B, D, M, K = SIZES[size]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, D, generator=g).to(device, DTYPES[dname]).requires_grad_(True)
    a = lf.draw_directions(D, M, generator=g).to(device)
    backends = ["reference", *backends]
    rows, failed = [], {}
    for phase in args.phases:
        calls = {b: make_call(b, x, a, K, phase) for b in backends}
        calls.update(public_calls(x, K, M, phase, args, failed))
        if device.type == "cuda" and phase == "both":
            calls["floor"] = (floor_call(x.detach(), a.to(x.dtype)), None)
        if device.type == "cpu" and phase == "both":
            calls["gemm"] = (gemm_call(x.detach(), a.to(x.dtype)), None)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        ms = time_interleaved(calls, device, args.repeats, args.budget, clock)
        repeats = ms.pop("_repeats")
        mem = {b: peak_extra_bytes(calls[b][0], device) for b in backends} if phase == "both" else {}
        for name, t in ms.items():
            row = dict(size=size, T=T, B=B, D=D, M=M, K=K, dtype=dname, backend=name, phase=phase, ms=t,
                       x_reference=ms["reference"] / t, repeats=repeats,
                       tflops=(2 * 2.0 * T * B * D * M if name == "gemm" else counted_flops(T, B, D, M, K, phase))
                       / (t * 1e-3) / 1e12)  # fmt: skip
            if name in mem:
                row["peak_extra_MiB"] = mem[name] / 2**20
                row["mem_ratio"] = mem["reference"] / max(mem[name], 1)
            if "floor" in ms and name != "floor":
                row["x_floor"] = t / ms["floor"]
            if "gemm" in ms and name != "gemm":
                row["x_gemm"] = t / ms["gemm"]
            variant = next((v for v, label in pv.LABELS.items() if label == name), None)
            if variant:
                row.update(public_variant=variant, compile_s=args.compile_s.get(name))
            rows.append(row)
            print(f"  {size:>5} {dname} {phase:>4} {name:>9}: {t:9.3f} ms  x{row['x_reference']:.1f}", flush=True)
    for label, error in failed.items():
        rows.append(dict(size=size, T=T, B=B, D=D, M=M, K=K, dtype=dname, backend=label, error=error,
                         public_variant=next(v for v, name in pv.LABELS.items() if name == label)))  # fmt: skip
    return rows


def public_setup(args, device: torch.device) -> tuple[list[str], list[str]]:
    """(public configurations to time, why others are not timed)."""
    if args.no_public:
        return [], []
    try:
        import stable_worldmodel.wm.loss  # noqa: F401
    except ImportError as exc:
        return [], [f"public rows: stable-worldmodel is not importable here ({exc})"]
    return pv.usable_variants(args.public, device)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes = [s for s in args.sizes if s != "large"] or ["small"]
        args.repeats = min(args.repeats, 5)
    if args.backends:
        fast = args.backends
    else:  # the device's fused backend; where it cannot run here (no C++ build), the reference alone, said so
        wanted = "triton" if device.type == "cuda" else "cpp"
        fast = [b for b in (wanted,) if b in available_backends(device)]
        if not fast:
            print(f"sigreg_speed: the {wanted!r} backend is unavailable on {device}; timing the reference only")
    dtypes = args.dtypes or (list(PLAN_DTYPES) if device.type == "cuda" else ["auto"])
    # "auto" resolved by lewm_fast.capability; duplicates dropped
    dtypes = list(dict.fromkeys(dtype_name(resolve_dtype(d, device)) for d in dtypes))
    args.public_variants, skipped = public_setup(args, device)
    args.compile_s = {}
    rows = [row for size in args.sizes for dname in dtypes for row in bench(size, dname, fast, args, device)]
    pv.add_ratios(rows, ("size", "phase", "dtype"), "ms")
    columns = [("size", "size"), ("dtype", "dtype"), ("phase", "phase"), ("backend", "backend"), ("ms", "ms"),
               ("x_reference", "x ref"), ("x_public", "x public"), ("x_best_public", "x best public"),
               ("tflops", "TFLOP/s"), ("peak_extra_MiB", "peak MiB"), ("mem_ratio", "mem ratio"),
               ("x_floor", "x floor"), ("x_gemm", "x gemm"), ("error", "note")]  # fmt: skip
    print_table(rows, columns)
    for line in skipped + [f"{k}: first call (compile) {v:.1f} s" for k, v in args.compile_s.items()]:
        print(f"  {line}")
    payload = {"rows": rows, "sizes": {s: SIZES[s] for s in args.sizes}, "threads": torch.get_num_threads(),
               "clock": args.clock, "skipped": skipped, "public_compile_s": args.compile_s,
               "compile_mode": pv.compile_mode(device)}  # fmt: skip
    path = write_result("sigreg_speed", payload, device, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
