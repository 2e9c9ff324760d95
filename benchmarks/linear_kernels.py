"""The planner's CPU matmul choices side by side: oneDNN against the C++ extension's kernels
(csrc/linear_cpu.cpp) at the shapes of one rollout chunk, then the whole chunk with each: the A/B behind
`capability.planner_matmul`.

    python benchmarks/linear_kernels.py                   # 150 candidates (E = 1 on 2 cores), CPU-time clock
    python benchmarks/linear_kernels.py --rows 160 --reps 40 --clock wall

Per shape (rows x in -> out, as one chunk's rollout calls it; a GELU shape runs as the planner runs it: oneDNN
fp32 then PyTorch's GELU, oneDNN bf16 with its GELU post-op, the C++ kernels with their epilogue; the
modulations' shape writes column planes), each choice runs on one thread
- warm: the same input and weight over and over (they stay in cache: the rate alone), and
- cold: `--copies` different inputs and weights in turn (each call finds its weight in memory, as in a
  rollout, which uses each weight once per step),
interleaved across choices, `--reps` rounds; min and median. GFLOP/s count the matmul (2 M K N). `% best`
divides by the best warm rate of any choice at that shape and dtype: the GEMM ceiling there.
Then one rollout chunk (`rollout_cost`, `--rows` candidates, one thread) with each choice, interleaved, min
and median of `--chunk-reps`; its GFLOP/s count the chunk's matmul work, against the ceiling of its shapes
(each shape at its best warm rate, weighted by its calls). Clock: `cpu` (the thread's CPU time, default:
robust on a shared machine) or `wall`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MATMUL_OPS, print_table, write_result  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast import _ext, capability  # noqa: E402
from lewm_fast.planning.cpu_ops import CpuOps  # noqa: E402
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=150, help="candidates in the chunk (150: E = 1 on 2 threads)")
    p.add_argument("--reps", type=int, default=20, help="rounds of calls per shape and choice")
    p.add_argument("--copies", type=int, default=16, help="inputs and weights the cold calls cycle through")
    p.add_argument("--chunk-reps", type=int, default=8, help="rollout chunks per choice")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--dtypes", nargs="+", choices=list(capability.PLAN_DTYPES), default=list(capability.PLAN_DTYPES),
                   help="bf16 runs only where the CPU has native bf16")  # fmt: skip
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def choices(dtype: torch.dtype) -> list[str]:
    """oneDNN and each native C++ kernel of `dtype` this CPU runs, as "onednn" / "cpp:<kernel>"."""
    ext = _ext.load()
    runs = ext.linear_kernels() if ext is not None else []
    names = ["onednn"] if capability.onednn_linear(dtype) else []
    return names + [f"cpp:{k}" for k in capability.PLANNER_CPP_KERNELS[dtype] if k in runs]


def op_set(dtype: torch.dtype, choice: str, rows: int) -> CpuOps:
    matmul, _, kernel = choice.partition(":")
    return CpuOps(dtype, rows_hint=rows, matmul=matmul, cpp_kernel=kernel or None)


def build_model():
    """The published size with random weights, AdaLN modulations too (plan_speed.py's model)."""
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.02)
    return model.eval()


def chunk_inputs(model, rows: int):
    d, a = model.cfg.embed_dim, model.cfg.action_block_dim
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 1, d, generator=g), torch.randn(1, d, generator=g), torch.randn(1, rows, 5, a, generator=g)


def recorded_shapes(model, rows: int) -> dict[tuple, int]:
    """{(op, M, K, N): calls} of one chunk's rollout (a matmul op that calls another counts once)."""
    ops = CpuOps(torch.float32, rows_hint=rows)
    calls: dict[tuple, int] = {}
    depth = [0]

    def recording(name, fn):
        def record(x, w, *rest):
            depth[0] += 1
            try:
                return fn(x, w, *rest)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    op = "linear" if name == "linear_into" else name  # timed as the matmul it is, fresh output
                    key = (op, x.numel() // w.shape[1], w.shape[1], w.shape[0])
                    calls[key] = calls.get(key, 0) + 1

        return record

    for name in MATMUL_OPS:
        setattr(ops, name, recording(name, getattr(ops, name)))
    ops.fused_steps = False  # the op-by-op loop, so each matmul is seen (the fused step runs the same ones)
    packed = PackedPredictor(model, torch.float32, "cpu", pack=ops.pack_weight)
    with torch.inference_mode():
        rollout_cost(packed, ops, *chunk_inputs(model, rows))
    return calls


def timer(clock: str):
    return time.thread_time if clock == "cpu" else time.perf_counter


def time_shape(dtype, shape, names, args, plane_cols: int) -> dict:
    """{choice: {"warm": [s], "cold": [s]}} for one shape, the choices interleaved."""
    op, m, k, n = shape
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(m, k, generator=g).to(dtype) for _ in range(args.copies)]
    ws = [torch.randn(n, k, generator=g).to(dtype) for _ in range(args.copies)]
    b = torch.randn(n, generator=g).to(dtype)
    calls = {}
    for name in names:
        ops = op_set(dtype, name, m)
        packed = [ops.pack_weight(w) for w in ws]
        fn = getattr(ops, op)
        calls[name] = (lambda i, fn=fn, packed=packed: fn(xs[i], packed[i], b, plane_cols)) if op == "linear_planes" \
            else (lambda i, fn=fn, packed=packed: fn(xs[i], packed[i], b))  # fmt: skip
    now = timer(args.clock)
    times = {name: {"warm": [], "cold": []} for name in names}
    with torch.inference_mode():
        for call in calls.values():
            call(0), call(1)
        for _ in range(args.reps):
            for name, call in calls.items():
                t0 = now()
                call(0)
                times[name]["warm"].append(now() - t0)
            for i in range(args.copies):
                for name, call in calls.items():
                    t0 = now()
                    call(i)
                    times[name]["cold"].append(now() - t0)
    return times


def shape_rows(dtype, shapes, args, plane_cols: int) -> tuple[list[dict], dict]:
    """The per-shape table of one dtype and each shape's best warm rate (the ceiling there)."""
    names, rows, best = choices(dtype), [], {}
    for shape, count in shapes.items():
        op, m, k, n = shape
        flops = 2.0 * m * k * n
        times = time_shape(dtype, shape, names, args, plane_cols)
        best[shape] = max(flops / min(t["warm"]) for t in times.values())
        for name, t in times.items():
            rows.append({"dtype": capability.dtype_name(dtype), "op": op, "shape": f"{m} x {k} -> {n}", "calls": count,
                         "choice": name, "warm_gflops": flops / min(t["warm"]) / 1e9,
                         "cold_gflops_min": flops / min(t["cold"]) / 1e9,
                         "cold_gflops_median": flops / statistics.median(t["cold"]) / 1e9,
                         "cold_pct_best": 100 * flops / statistics.median(t["cold"]) / best[shape]})  # fmt: skip
    return rows, best


def chunk_rows(model, dtype, shapes, best, args) -> list[dict]:
    """One rollout chunk per choice, interleaved; GFLOP/s of its matmul work against the shapes' ceiling."""
    work = sum(2.0 * m * k * n * c for (_, m, k, n), c in shapes.items())
    ceiling = work / sum(2.0 * m * k * n * c / best[(op, m, k, n)] for (op, m, k, n), c in shapes.items())
    inputs = chunk_inputs(model, args.rows)
    runs = {}
    for name in choices(dtype):
        ops = op_set(dtype, name, args.rows)
        runs[name] = (ops, PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight), [])
    now = timer(args.clock)
    with torch.inference_mode():
        for ops, packed, _ in runs.values():
            rollout_cost(packed, ops, *inputs)
        for _ in range(args.chunk_reps):
            for ops, packed, times in runs.values():
                t0 = now()
                rollout_cost(packed, ops, *inputs)
                times.append(now() - t0)
    return [{"dtype": capability.dtype_name(dtype), "choice": name, "min_ms": 1e3 * min(t),
             "median_ms": 1e3 * statistics.median(t), "gflops": work / statistics.median(t) / 1e9,
             "pct_ceiling": 100 * work / statistics.median(t) / ceiling, "ceiling_gflops": ceiling / 1e9}
            for name, (_, _, t) in runs.items()]  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model()
        shapes = recorded_shapes(model, args.rows)
        native = capability.native_bf16("cpu")
        dtypes = [capability.DTYPE_NAMES[d] for d in args.dtypes if d == "fp32" or native]
        per_shape, per_chunk = [], []
        for dtype in dtypes:
            rows, best = shape_rows(dtype, shapes, args, model.cfg.pred_hidden_dim)
            per_shape += rows
            per_chunk += chunk_rows(model, dtype, shapes, best, args)
    finally:
        torch.set_num_threads(threads)
    print_table(per_shape, [("dtype", "dtype"), ("op", "op"), ("shape", "shape"), ("choice", "choice"),
                            ("warm_gflops", "warm GFLOP/s"), ("cold_gflops_median", "cold (median)"),
                            ("cold_pct_best", "% best")])  # fmt: skip
    print_table(per_chunk, [("dtype", "dtype"), ("choice", "choice"), ("min_ms", "chunk min ms"),
                            ("median_ms", "median"), ("gflops", "GFLOP/s"), ("pct_ceiling", "% ceiling")])  # fmt: skip
    payload = {"rows": args.rows, "clock": args.clock, "reps": args.reps, "copies": args.copies,
               "chunk_reps": args.chunk_reps, "shapes": per_shape, "chunk": per_chunk}  # fmt: skip
    path = write_result("linear_kernels", payload, torch.device("cpu"), Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
