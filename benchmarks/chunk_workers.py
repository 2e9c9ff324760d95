"""What two chunk workers cost each other: one CPU rollout chunk alone, two at once in two threads of one process
(as the planner's workers run them, lewm_fast/planning/cpu_parallel.py), and two at once in two processes.

    python benchmarks/chunk_workers.py                    # 150 candidates, bf16 where native, 15 chunks each
    python benchmarks/chunk_workers.py --dtype fp32 --repeats 30

Each worker rolls out its own chunk (`rollout.rollout_cost` on the planner's CPU op set, one intra-op thread) over
and over, the workers of a mode released together at each repeat by a barrier; per chunk it records the wall time,
its thread's CPU time and its voluntary context switches (`getrusage(RUSAGE_THREAD)`: a thread that sleeps waiting
for the GIL switches voluntarily). Threads share the packed weights and the GIL; processes share neither. If two
processes run as fast as one alone but two threads do not, the cost is the threads' turns on the GIL (their Python
between the C++ calls), not the shared caches or memory (docs/cpu-planner.md, "Two chunks at once").
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HORIZON, print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast import capability  # noqa: E402
from lewm_fast.planning.cpu_ops import CpuOps  # noqa: E402
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost  # noqa: E402

WARMUP = 2  # repeats not recorded: first-touch pages, allocator growth


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=150, help="candidates per chunk (150: E = 1 on 2 cores)")
    p.add_argument("--dtype", choices=capability.DTYPE_CHOICES, default="auto")
    p.add_argument("--repeats", type=int, default=15, help="chunks recorded per worker and mode")
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def _chunk(rows: int, dtype: torch.dtype, seed: int):
    """A rollout of one chunk as a zero-argument callable, on its own packed model and candidates."""
    torch.manual_seed(seed)
    model = lf.LeWM(lf.LeWMConfig()).eval()
    ops = CpuOps(dtype, rows_hint=rows)
    packed = PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight)
    d, a = model.cfg.embed_dim, model.cfg.action_block_dim
    hist, goal, cand = torch.randn(1, 1, d), torch.randn(1, d), torch.randn(1, rows, HORIZON, a)
    return lambda: rollout_cost(packed, ops, hist, goal, cand)


def _timed_chunks(run, barrier, repeats: int) -> list[tuple[float, float, int]]:
    """(wall s, thread CPU s, voluntary context switches) of `repeats` chunks, each started at the barrier."""
    torch.set_num_threads(1)
    out = []
    with torch.inference_mode():
        for i in range(WARMUP + repeats):
            barrier.wait()
            switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
            t0, c0 = time.perf_counter(), time.thread_time()
            run()
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if i >= WARMUP:
                out.append((wall, cpu, resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - switches))
    return out


def _in_threads(workers: int, rows: int, dtype: torch.dtype, repeats: int) -> list[list]:
    runs = [_chunk(rows, dtype, seed) for seed in range(workers)]
    barrier, results = threading.Barrier(workers), [None] * workers

    def work(i):
        results[i] = _timed_chunks(runs[i], barrier, repeats)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def _process_worker(i, rows, dtype, repeats, barrier, queue) -> None:
    queue.put((i, _timed_chunks(_chunk(rows, dtype, i), barrier, repeats)))


def _in_processes(workers: int, rows: int, dtype: torch.dtype, repeats: int) -> list[list]:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no threads inherited from this one
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    args = [(i, rows, dtype, repeats, barrier, queue) for i in range(workers)]
    procs = [ctx.Process(target=_process_worker, args=a) for a in args]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return [results[i] for i in range(workers)]


def summarise(mode: str, results: list[list]) -> list[dict]:
    rows = []
    for worker, chunks in enumerate(results):
        wall, cpu, switches = zip(*chunks)
        rows.append({"mode": mode, "worker": worker, "wall_ms_min": 1e3 * min(wall),
                     "wall_ms_median": 1e3 * statistics.median(wall), "cpu_ms_median": 1e3 * statistics.median(cpu),
                     "switches_median": statistics.median(switches),
                     "wall_ms": [round(1e3 * w, 2) for w in wall]})  # fmt: skip
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = capability.resolve_dtype(args.dtype, "cpu")
    rows = []
    rows += summarise("one thread alone", _in_threads(1, args.rows, dtype, args.repeats))
    rows += summarise("two threads, one process", _in_threads(2, args.rows, dtype, args.repeats))
    rows += summarise("two processes", _in_processes(2, args.rows, dtype, args.repeats))
    print(f"one chunk of {args.rows} candidates, {capability.dtype_name(dtype)}, {args.repeats} chunks per worker")
    print_table(rows, [("mode", "mode"), ("worker", "worker"), ("wall_ms_min", "wall ms min"),
                       ("wall_ms_median", "wall ms median"), ("cpu_ms_median", "CPU ms median"),
                       ("switches_median", "voluntary switches")])  # fmt: skip
    payload = {"rows_per_chunk": args.rows, "dtype": capability.dtype_name(dtype), "repeats": args.repeats,
               "rows": rows}  # fmt: skip
    path = write_result("chunk_workers", payload, torch.device("cpu"), Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
