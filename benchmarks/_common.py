"""Shared pieces of the benchmarks: environment tags, timing, a printed table and JSON results.

Every result file is tagged with the device, the versions and the date, and lands in
<out>/<name>-<date>-<device>.json (written atomically): by default a scratch folder
(`_files.scratch_results`), with `--out benchmarks/results` the recorded results the README renders.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _files import result_path, write_text_atomic

from lewm_fast.planning.optimizers import optimizer_defaults
from lewm_fast.planning.planner import HORIZON

# The benchmarks' planning sizes, from where they are defined: CEM's in the optimizer registry (the public
# solver's), the horizon in the planner.
_CEM = optimizer_defaults("cem")
SAMPLES, TOPK, ITERS = _CEM["num_samples"], _CEM["topk"], _CEM["n_steps"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def machine_info(device: torch.device | None = None) -> dict:
    """The machine a figure was measured on: CPU model, architecture, ISA (PyTorch's dispatch level),
    flags, cores, native bf16, the CPU choices lewm_fast makes there (lewm_fast.capability), the GPU if
    `device` is one, torch's version and threads, the load average when the file is written (1, 5, 15
    minutes: how busy the machine was), and the date."""
    from lewm_fast.capability import cpu_choices

    info = {**cpu_choices(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # other jobs' share
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def environment(device: torch.device) -> dict:
    """Device, versions, date and the machine (`machine_info`) for a results file."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
    }


@contextlib.contextmanager
def busy_neighbours(count: int):
    """`count` CPU-bound neighbour processes (a Python busy loop each) for the duration: a machine
    shared with other jobs, made reproducible (one per core is what the README's busy figures mean)."""
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1, min_seconds: float = 0.0
) -> dict:
    """Median and min wall time of fn() in seconds over `repeats` calls (after `warmup` calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Print rows as an aligned table; columns = [(key, header)]."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_result(
    name: str, payload: dict, device: torch.device, out_dir: Path | None = None, prefix: bool = True
) -> Path:
    """Write payload (+ environment tags) to <out_dir>/<name>-<date>-<device>.json atomically
    (<date>-<device>.json with prefix=False). The payload's `args` are recorded without `out`: where the file
    was written is a path on the machine that ran it, not part of the measurement."""
    if isinstance(payload.get("args"), dict):
        payload = {**payload, "args": {k: v for k, v in payload["args"].items() if k != "out"}}
    env = environment(device)
    path = result_path(name, env, out_dir, prefix)
    write_text_atomic(path, json.dumps({"benchmark": name, "environment": env, **payload}, indent=2))
    return path


def gemm_ceiling(
    model,
    dtype: torch.dtype,
    rows: int,
    threads: int,
    horizon: int = HORIZON,
    history: int = 1,
    seconds: float = 0.5,
    clock: str = "wall",
    matmul: str | None = None,
) -> dict:
    """The rate of the CPU rollout's own matmuls, alone: the ceiling a plan's GFLOP/s is measured against.

    Records the matmuls one chunk of `rows` candidates makes in a fast rollout (`rollout_cost` on the
    planner's CPU op set: shapes, weights, oneDNN or F.linear as the planner runs them), then times each
    distinct one alone (without a GELU epilogue: not matmul work), warm, best of repeats within
    `seconds`, on `threads` threads at once (each its own copy, as the planner's chunk workers run).
    `clock="cpu"`: each thread's CPU time (`time.thread_time`) instead of wall time, for a machine shared
    with other jobs. `matmul`: another of the planner's matmul choices than this CPU's (`CpuOps`). Returns
    GFLOP/s over the whole list (each matmul weighted by its count) and the per-shape rates.
    """
    from lewm_fast.planning.cpu_ops import CpuOps

    ops = CpuOps(dtype, matmul=matmul)
    calls = _rollout_matmuls(model, dtype, ops, rows, horizon, history)
    old = torch.get_num_threads()
    total_flops = total_s = 0.0
    shapes = []
    try:
        for (name, xs, ws), (count, (x, w, b)) in calls.items():
            fn = CpuOps.linear.__get__(ops)  # the matmul alone (a GELU epilogue is not matmul work)
            best = _slowest_thread_best(fn, x, w, b, threads, seconds, clock)
            flops = 2.0 * x.numel() * w.shape[0]
            total_flops += count * flops
            total_s += count * best
            shapes.append({"op": name, "x": list(xs), "w": list(ws), "count": count, "gflops": flops / best / 1e9})
    finally:
        torch.set_num_threads(old)
    return {
        "gflops": threads * total_flops / total_s / 1e9,
        "per_thread_gflops": total_flops / total_s / 1e9,
        "rows": rows,
        "threads": threads,
        "dtype": str(dtype).removeprefix("torch."),
        "clock": clock,
        "shapes": shapes,
    }


class CeilingPass:
    """The GEMM ceiling timed the way a plan is: the matmuls of one chunk's rollout (`_rollout_matmuls`, each
    shape at its count, warm, without GELU epilogues), one whole pass after another on `threads` threads at
    once for as long as the plan beside it took. Why: a plan is timed over seconds and keeps the fastest of a
    few rounds, while `gemm_ceiling` keeps each shape's fastest of hundreds of short calls; on a host whose
    speed moves by spells (other tenants of the cores), the second catches a quiet moment the first rarely
    does, so their ratio measured the host as much as the plan. Timed right after the plan, for as long, the
    ceiling meets the same spell.

    Each call goes straight to the op set's matmul on a fixed output (the extension's kernel where the weight is
    packed for it: the planner's fused step calls it from C++, without the Python wrapper's microseconds)."""

    def __init__(self, model, dtype: torch.dtype, rows: int, threads: int, horizon: int = HORIZON,
                 history: int = 1, matmul: str | None = None):  # fmt: skip
        from lewm_fast.planning.cpu_ops import CpuOps

        ops = CpuOps(dtype, matmul=matmul)
        self.calls = [(count, x, w, b) for count, (x, w, b) in _rollout_matmuls(model, dtype, ops, rows, horizon,
                                                                               history).values()]  # fmt: skip
        self.flops = sum(count * 2.0 * x.numel() * w.shape[0] for count, x, w, _ in self.calls)  # one pass
        self.ops, self.threads = ops, threads

    def _pass(self, with_outputs: bool = False):
        """One thread's pass as a zero-argument callable, on its own copies of the inputs and outputs (and, with
        `with_outputs`, the list of those outputs, one per shape; None where the op set's matmul makes its own)."""
        from lewm_fast.planning.cpu_ops import CppPackedWeight

        steps, outputs = [], []
        for count, x, w, b in self.calls:
            x, out = x.reshape(-1, x.shape[-1]).clone(), None
            if isinstance(w, CppPackedWeight):  # the extension's call, as cpp_linear makes it
                out = torch.empty(x.shape[0], w.shape[0], dtype=x.dtype)
                steps.append((count, w.bound(x, b, out, gelu=False, threads=1)))
            else:
                steps.append((count, functools.partial(type(self.ops).linear, self.ops, x, w, b)))
            outputs.append(out)

        def run():
            for count, step in steps:
                for _ in range(count):
                    step()

        return (run, outputs) if with_outputs else run

    def rate(self, seconds: float, clock: str = "wall") -> dict:
        """Whole passes on every thread for `seconds` (at least one each): {"gflops": all threads' work over
        the wall time from the start to the last thread's end, "per_thread_gflops": the slowest thread's work
        over its own CPU time (`clock="cpu"`), "seconds", "passes"}."""
        import threading

        done, cpu = [0] * self.threads, [0.0] * self.threads
        spans = [(0.0, 0.0)] * self.threads  # each thread's (start, end) on the wall clock
        start = threading.Barrier(self.threads)

        def worker(i):
            torch.set_num_threads(1)
            run = self._pass()
            run()  # warm: this thread's copies, first-touch pages
            start.wait()
            c0, t0 = time.thread_time(), time.perf_counter()
            while done[i] == 0 or time.perf_counter() < t0 + seconds:
                run()
                done[i] += 1
            cpu[i], spans[i] = time.thread_time() - c0, (t0, time.perf_counter())

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(self.threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = max(end for _, end in spans) - min(t0 for t0, _ in spans)
        return {
            "gflops": self.flops * sum(done) / wall / 1e9,
            "per_thread_gflops": min(self.flops * n / c / 1e9 for n, c in zip(done, cpu)) if clock == "cpu" else None,
            "seconds": wall,
            "passes": sum(done),
        }


# The op set's matmul methods (`CpuOps`): linear_into writes into a view (the K/V cache), the same matmul.
MATMUL_OPS = ("linear", "linear_gelu", "linear_planes", "linear_into")


def _rollout_matmuls(model, dtype: torch.dtype, ops, rows: int, horizon: int, history: int) -> dict[tuple, list]:
    """{(op name, x shape, w shape): [count, (x, w, b) of one call]} of the matmuls one fast rollout of `rows`
    candidates makes on the op set `ops` (whose matmul ops are wrapped to record them)."""
    from lewm_fast.planning.rollout import PackedPredictor, rollout_cost

    packed = PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight)
    calls: dict[tuple, list] = {}
    depth = [0]  # a matmul op that calls another (linear_planes without the C++ matmul) is one matmul

    def recording(name, fn):
        def record(x, w, b, *rest):
            depth[0] += 1
            try:
                out = fn(x, w, b, *rest)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                key = (name, tuple(x.shape), tuple(w.shape))
                calls.setdefault(key, [0, (x, w, b)])[0] += 1
            return out

        return record

    for name in MATMUL_OPS:
        setattr(ops, name, recording(name, getattr(ops, name)))
    ops.fused_steps = False  # the op-by-op loop, so each matmul is seen (the fused step runs the same ones)
    d, a = model.cfg.embed_dim, model.cfg.action_block_dim
    with torch.inference_mode():
        rollout_cost(packed, ops, torch.randn(1, history, d), torch.randn(1, d), torch.randn(1, rows, horizon, a))
    return calls


def _slowest_thread_best(fn, x, w, b, threads: int, seconds: float, clock: str) -> float:
    """`fn(x, w, b)` timed on `threads` threads at once (one intra-op thread each, its own copy of x), warm,
    each thread's best within `seconds`; returns the slowest thread's best (the rate all threads sustain)."""
    import threading

    best = [float("inf")] * threads

    def worker(i):
        torch.set_num_threads(1)
        xi = x.clone()
        fn(xi, w, b)
        timer = time.thread_time if clock == "cpu" else time.perf_counter
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or best[i] == float("inf"):
            t0 = timer()
            fn(xi, w, b)
            best[i] = min(best[i], timer() - t0)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return max(best)


def public_lewm(model, device: torch.device | str = "cpu"):
    """The public stable-worldmodel `LeWM` with the weights of an `lf.LeWM` (transformers 5.x ViT names equal
    ours), in eval mode: the side venv's way to run the public code on our checkpoints."""
    import transformers
    from stable_worldmodel.wm.lewm.lewm import LeWM as PublicLeWM
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor

    cfg = model.cfg
    vit = transformers.ViTModel(
        transformers.ViTConfig(hidden_size=cfg.enc_dim, num_hidden_layers=cfg.enc_depth,
                               num_attention_heads=cfg.enc_heads, intermediate_size=cfg.enc_mlp_dim,
                               image_size=cfg.image_size, patch_size=cfg.patch_size, layer_norm_eps=cfg.enc_ln_eps),
        add_pooling_layer=False,
    )  # fmt: skip
    pred = Predictor(num_frames=cfg.num_frames, depth=cfg.pred_depth, heads=cfg.pred_heads, mlp_dim=cfg.pred_mlp_dim,
                     input_dim=cfg.embed_dim, hidden_dim=cfg.pred_hidden_dim, output_dim=cfg.pred_output_dim,
                     dim_head=cfg.pred_dim_head)  # fmt: skip
    bn = torch.nn.BatchNorm1d
    public = PublicLeWM(vit, pred, Embedder(input_dim=cfg.action_block_dim, emb_dim=cfg.embed_dim),
                        MLP(cfg.enc_dim, cfg.proj_hidden_dim, cfg.embed_dim, norm_fn=bn),
                        MLP(cfg.pred_output_dim, cfg.pred_proj_hidden_dim, cfg.embed_dim, norm_fn=bn))  # fmt: skip
    public.load_state_dict(model.state_dict())
    return public.to(device).eval()
