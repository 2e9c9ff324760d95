"""Where one CPU rollout chunk's time goes: each op of the planner's CPU op set timed in place.

    python benchmarks/rollout_profile.py                 # published size, 150 candidates, fp32, 1 thread
    python benchmarks/rollout_profile.py --rows 800 --dtype bf16 --repeats 5
    python benchmarks/rollout_profile.py --dtype bf16 --matmul onednn --clock cpu   # another matmul, CPU time

Runs the fast rollout (`rollout.rollout_cost`) of one chunk of candidates on one thread, as a planner's
chunk worker does, with every method of the op set (`CpuOps`) wrapped by a timer, and keeps the fastest
of `--repeats` rollouts. Matmuls are reported by shape (rows x in -> out, with or without the GELU
epilogue) with their GFLOP/s in place; beside them, each shape timed alone on a warm copy of its input
(the GEMM ceiling of `_common.gemm_ceiling`), so the gap between a matmul in a rollout and the same
matmul alone shows. The window attention's GFLOP/s counts its scores and weighted sum as
`benchmarks/flops.py` does. Everything not inside an op (Python, views, allocation) is "outside the ops";
nested ops (a matmul inside `linear_join_norm`) count once, in the innermost op. The planner runs the blocks of
a step in one C++ call (`CpuOps.blocks_step`, the same kernels in the same order); the profile runs them op by op
to see each, and times the fused rollout beside it (`fused_total_ms`: what the Python between the ops costs).
`--matmul` profiles another of the planner's matmul choices than this CPU's (`capability.planner_matmul`);
`--clock cpu` times by the thread's CPU time (a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HORIZON, MATMUL_OPS, gemm_ceiling, print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.capability import PLAN_DTYPES  # noqa: E402
from lewm_fast.planning.cpu_ops import CpuOps  # noqa: E402
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost  # noqa: E402

DTYPES = PLAN_DTYPES
MATMULS = MATMUL_OPS
OPS = (*MATMULS, "window_attention", "norm_modulate", "layer_norm", "linear_join_norm", "linear_gate_residual")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=150, help="candidates in the chunk (150: E = 1 on 2 threads)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--horizon", type=int, default=HORIZON)
    p.add_argument("--repeats", type=int, default=8, help="rollouts timed; the fastest is reported")
    p.add_argument("--alone-seconds", type=float, default=0.5, help="timing of each matmul shape alone")
    p.add_argument("--matmul", choices=("cpp", "onednn", "torch"), default=None,
                   help="the planner's matmul to profile (default: this CPU's choice)")  # fmt: skip
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or the thread's CPU time")
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def shape_key(rows: int, k: int, n: int) -> str:
    """How a matmul shape is named in the table: rows x in -> out."""
    return f"{rows} x {k} -> {n}"


class OpTimer:
    """Wraps an op set's methods; `spent[key]` is the time inside each op less the ops it called."""

    def __init__(self, ops, clock=time.perf_counter):
        self.clock = clock
        self.spent: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [time, work] of the nested ops, per open op
        for name in OPS:
            setattr(ops, name, self._wrap(name, getattr(ops, name)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            self._stack.append([0.0, 0.0])
            t0 = self.clock()
            out = fn(*args, **kwargs)
            elapsed = self.clock() - t0
            nested, nested_work = self._stack.pop()
            key, work = name, 0.0
            if name in MATMULS:
                x, w = args[0], args[1]
                k, n = w.shape[1], w.shape[0]
                key = f"{name} {shape_key(x.numel() // k, k, n)}"
                work = 2.0 * (x.numel() // k) * k * n - nested_work  # a matmul it called counts its own
            elif name == "window_attention":  # scores and weighted sum, counted as benchmarks/flops.py does
                q, k = args[0], args[1]
                work = 2.0 * 2 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]
            if work:
                self.flops[key] += work
            self.spent[key] += elapsed - nested
            if self._stack:
                self._stack[-1][0] += elapsed
                self._stack[-1][1] += work + nested_work
            return out

        return timed


def profile(args) -> dict:
    """The table for one chunk, on one thread (torch's thread count is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _profile(args)
    finally:
        torch.set_num_threads(threads)


def _profile(args) -> dict:
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig()).eval()
    dtype = DTYPES[args.dtype]
    ops = CpuOps(dtype, rows_hint=args.rows, matmul=args.matmul)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    packed = PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight)
    d, a = model.cfg.embed_dim, model.cfg.action_block_dim
    hist, goal = torch.randn(1, 1, d), torch.randn(1, d)
    cand = torch.randn(1, args.rows, args.horizon, a)
    best, fused_best = None, float("inf")
    with torch.inference_mode():
        rollout_cost(packed, ops, hist, goal, cand)  # warm: allocations, first-touch pages
        for _ in range(args.repeats):
            ops.fused_steps = True  # as the planner runs it
            t0 = clock()
            rollout_cost(packed, ops, hist, goal, cand)
            fused_best = min(fused_best, clock() - t0)
            ops.fused_steps = False  # op by op, each op timed
            timer = OpTimer(ops, clock)
            t0 = clock()
            rollout_cost(packed, ops, hist, goal, cand)
            total = clock() - t0
            if best is None or total < best[0]:
                best = (total, dict(timer.spent), dict(timer.flops))
            for name in OPS:  # unwrap (the class's methods again) for the next round
                delattr(ops, name)
    total, spent, flops = best
    alone = gemm_ceiling(model, dtype, args.rows, threads=1, horizon=args.horizon, seconds=args.alone_seconds,
                         clock=args.clock, matmul=ops.matmul)  # fmt: skip
    alone_rate = {shape_key(math.prod(s["x"][:-1]), s["w"][1], s["w"][0]): s["gflops"] for s in alone["shapes"]}
    matmul_flops = {k: f for k, f in flops.items() if k.split(" ", 1)[0] in MATMULS}
    rows = []
    for key, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        row = {"op": key, "ms": s * 1e3, "share_pct": 100 * s / total}
        if key in flops:
            row["gflops"] = flops[key] / s / 1e9
        if key in matmul_flops:
            row["alone_gflops"] = alone_rate.get(key.split(" ", 1)[1])
        rows.append(row)
    outside = total - sum(spent.values())
    rows.append({"op": "outside the ops", "ms": outside * 1e3, "share_pct": 100 * outside / total})
    return {
        "rows": args.rows,
        "dtype": args.dtype,
        "matmul": ops.matmul,
        "matmul_kernel": ops.cpp_kernel,
        "clock": args.clock,
        "total_ms": total * 1e3,
        "fused_total_ms": fused_best * 1e3,
        "gflops": sum(flops.values()) / total / 1e9,
        "matmul_gflops_in_place": sum(matmul_flops.values()) / sum(spent[k] for k in matmul_flops) / 1e9,
        "matmul_gflops_alone": alone["per_thread_gflops"],
        "ops": rows,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    result = profile(args)
    r = result
    print(f"one chunk of {r['rows']} candidates, {r['dtype']} ({r['matmul']} matmul), 1 thread: {r['total_ms']:.1f} "
          f"ms, {r['gflops']:.1f} GFLOP/s overall; matmuls {r['matmul_gflops_in_place']:.1f} GFLOP/s in place, "
          f"{r['matmul_gflops_alone']:.1f} alone; with each step's blocks in one call "
          f"{r['fused_total_ms']:.1f} ms")  # fmt: skip
    print_table(r["ops"], [("op", "op"), ("ms", "ms"), ("share_pct", "%"), ("gflops", "GFLOP/s"),
                                ("alone_gflops", "alone")])  # fmt: skip
    path = write_result("rollout_profile", r, torch.device("cpu"), Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
