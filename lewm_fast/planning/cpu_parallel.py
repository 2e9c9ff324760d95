"""The CPU rollout in parallel by chunks of candidates: each worker thread rolls out whole chunks on
one core, so the cores meet once per rollout, not once per matmul.

Why: with PyTorch's own threading every op of the rollout (~130 per iteration) splits over all cores
and ends at a barrier. Where other processes share the cores, a worker descheduled by the kernel holds
up every barrier while its peers spin at it (on a busy 2-core host an iteration took over twice the wall
time: benchmarks/results/cpu_planner_choices-history-amd-epyc-zen3.json). On a quiet machine the chunks
run the same single-core matmuls at the same rate, without the per-op hand-offs. Rows are independent,
so the costs do not depend on the chunking. docs/cpu-planner.md says more.

The workers are plain Python threads (torch releases the GIL inside each op) with torch's
intra-op threads set to one; they block on a queue between rollouts (no spinning) and live for the
process. Thread and chunk counts are decisions of `lewm_fast.capability` (`planner_chunks`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from lewm_fast import capability
from lewm_fast.planning.rollout import rollout_cost as _rollout_cost


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run with n intra-op CPU threads on the calling thread (None: leave torch's setting alone, e.g. on a GPU)."""
    old = torch.get_num_threads()
    n = old if n is None else n
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


def _one_thread() -> None:
    """A worker's start: one intra-op thread (thread-local in torch's OpenMP build). torch initialises a thread's
    count lazily, from the process-wide value, on the thread's first query or parallel op; a worker whose first
    query came after `_pool` had given the calling thread its count back ran its ops on that many OpenMP threads
    (one process in five here: two workers, three threads on two cores). Query first, then set."""
    torch.get_num_threads()
    torch.set_num_threads(1)


_pool_lock = threading.Lock()
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """`workers` threads with one intra-op thread each, started on first use. Keyed by process id too:
    a process forked from one that planned inherits the pool object but none of its threads."""
    key = (os.getpid(), workers)
    with _pool_lock:
        pool = _pools.get(key)
        if pool is None:
            main_threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(workers, thread_name_prefix="lewm-rollout", initializer=_one_thread)
            list(pool.map(lambda _: None, range(workers)))  # start them all (ThreadPoolExecutor starts lazily)
            # set_num_threads also sets the default that threads created later start from: give it back
            torch.set_num_threads(main_threads)
            _pools[key] = pool
        return pool


def rollout_cost(
    packed, ops, hist_emb: torch.Tensor, goal_emb: torch.Tensor, cand: torch.Tensor, max_rows: int | None = None
) -> torch.Tensor:
    """`rollout.rollout_cost` on the CPU, in chunks of rows run by worker threads (or inline).

    hist_emb (E, H, D), goal_emb (E, D) fp32; cand (E, S, T, A). Returns (E, S) fp32 costs. The thread
    budget is torch's intra-op thread count at the call (the planner sets it per solve; one where the op set is
    not `thread_safe`); `max_rows` caps
    a chunk (None: `capability.planner_chunk_rows` for the packed dtype; 0: one chunk per thread).
    """
    e, s = cand.shape[:2]
    threads = torch.get_num_threads() if ops.thread_safe else 1
    if max_rows is None:
        max_rows = capability.planner_chunk_rows(packed.dtype)
    bounds = capability.planner_chunks(e * s, threads, max_rows)
    if len(bounds) == 1:
        return _rollout_cost(packed, ops, hist_emb, goal_emb, cand)
    # One row per candidate: each row carries its environment's history and goal.
    rows = cand.reshape(e * s, 1, *cand.shape[2:])
    hist = hist_emb.repeat_interleave(s, 0)
    goal = goal_emb.repeat_interleave(s, 0)
    out = torch.empty(e * s, 1, device=cand.device, dtype=torch.float32)

    def run(lo_hi: tuple[int, int]) -> None:
        lo, hi = lo_hi
        with torch.inference_mode():
            out[lo:hi] = _rollout_cost(packed, ops, hist[lo:hi], goal[lo:hi], rows[lo:hi])

    run_chunks(run, bounds, threads)
    return out.view(e, s)


def run_chunks(run, bounds: list[tuple[int, int]], threads: int) -> None:
    """run((lo, hi)) for every chunk: on `threads` workers (one intra-op thread each), or inline where there
    is one thread or one chunk. A worker's exception is re-raised here. A worker's grad mode is its own:
    `run` sets what it needs."""
    if threads == 1 or len(bounds) == 1:
        for lo_hi in bounds:
            run(lo_hi)
    else:
        list(_pool(threads).map(run, bounds))
