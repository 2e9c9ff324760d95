"""The CPU rollout in chunks over worker threads (lewm_fast/planning/cpu_parallel.py): the same costs
as one batch for any chunking and thread count, the same plans, and no leak of the workers' one-thread
setting into the caller."""

import multiprocessing
import os
import threading

import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast import capability
from lewm_fast.planning import cpu_parallel
from lewm_fast.planning.cpu_ops import CpuOps
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost


@pytest.fixture(scope="module")
def model():
    model = tiny_model(seed=7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.5)  # costs that depend strongly on the actions
    return model


@pytest.fixture
def threads():
    old = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(old)


def packed_and_ops(model, dtype=torch.float32):
    ops = CpuOps(dtype)
    return PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight), ops


# (E, S, H, horizon, max_rows, threads): one env split in samples, chunks across environments, uneven
# chunks, chunks of one row, more threads than rows, history > window.
CASES = [(1, 300, 1, 5, 1024, 2), (3, 7, 1, 5, 4, 2), (5, 13, 2, 4, 0, 3), (2, 3, 1, 3, 1, 2), (1, 2, 1, 5, 0, 4),
         (2, 5, 4, 6, 3, 2), (4, 9, 1, 5, 8, 1)]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("e, s, h, horizon, max_rows, n_threads", CASES)
def test_chunks_equal_one_batch(model, threads, dtype, e, s, h, horizon, max_rows, n_threads):
    packed, ops = packed_and_ops(model, dtype)
    g = torch.Generator().manual_seed(e * 100 + s)
    hist, goal = torch.randn(e, h, 32, generator=g), torch.randn(e, 32, generator=g)
    cand = torch.randn(e, s, horizon, 10, generator=g)
    with torch.inference_mode():
        whole = rollout_cost(packed, ops, hist, goal, cand)
        threads(n_threads)
        got = cpu_parallel.rollout_cost(packed, ops, hist, goal, cand, max_rows)
    assert got.shape == (e, s) and got.dtype == torch.float32
    # rows are independent: only the matmul blocking of a different row count may round differently
    torch.testing.assert_close(got, whole, rtol=1e-6 if dtype == torch.float32 else 1e-2, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_limit_by_default_follows_the_matmul(model, threads, monkeypatch, dtype):
    """Without max_rows a rollout is cut as `capability.planner_chunk_rows` says for the packed dtype's
    matmul (the fp32 C++ matmul and oneDNN prefer different chunk sizes)."""
    packed, ops = packed_and_ops(model, dtype)
    limit = {"cpp": 7, "onednn": 9, "torch": 11}
    monkeypatch.setattr(capability, "MAX_CHUNK_ROWS", limit)
    sizes = []
    real = cpu_parallel._rollout_cost
    monkeypatch.setattr(
        cpu_parallel, "_rollout_cost", lambda p, o, h, g, c: sizes.append(c.shape[0]) or real(p, o, h, g, c)
    )
    threads(2)
    with torch.inference_mode():
        cpu_parallel.rollout_cost(packed, ops, torch.randn(2, 1, 32), torch.randn(2, 32), torch.randn(2, 30, 5, 10))
    assert max(sizes) <= limit[capability.planner_matmul(dtype)] < 60 and sum(sizes) == 60
    assert max(sizes) > limit[capability.planner_matmul(dtype)] - 2  # equal chunks, as few as fit


def test_plans_do_not_depend_on_the_thread_count(model, threads):
    g = torch.Generator().manual_seed(0)
    pixels, goal = torch.rand(2, 1, 3, 28, 28, generator=g), torch.rand(2, 3, 28, 28, generator=g)
    kw = dict(num_samples=300, topk=10, iters=2, seed=3, backend="torch")
    threads(1)
    one = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    threads(2)
    two = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)


def test_workers_do_not_change_the_callers_threads(model, threads):
    threads(2)
    cpu_parallel._pool(2)
    assert torch.get_num_threads() == 2
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [2]  # a thread started later still starts from the caller's setting


def test_a_worker_keeps_one_thread_when_the_caller_changes_its_own(threads):
    """The race `_one_thread` closes: a worker set to one thread before torch's lazy per-thread initialisation, then
    the caller sets another count (as `_pool` gives the caller's back), then the worker's first query: one thread.
    (Setting without querying first gave the worker the caller's count: one process in five ran a 2-thread worker.)"""
    threads(2)
    ready, go, seen = threading.Event(), threading.Event(), []

    def worker():
        cpu_parallel._one_thread()
        ready.set()
        go.wait()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    torch.set_num_threads(3)
    go.set()
    t.join()
    assert seen == [1]


def test_an_op_set_that_is_not_thread_safe_rolls_out_on_the_calling_thread(model, threads, monkeypatch):
    """`thread_safe = False` (the Triton op set: its CPU interpreter is not): chunks inline, the same costs."""
    packed, ops = packed_and_ops(model)
    threads(2)
    hist, goal = torch.randn(2, 1, 32), torch.randn(2, 32)
    cand = torch.randn(2, 300, 5, 10)
    with torch.inference_mode():
        want = cpu_parallel.rollout_cost(packed, ops, hist, goal, cand)
    monkeypatch.setattr(ops, "thread_safe", False)
    monkeypatch.setattr(cpu_parallel, "_pool", lambda workers: pytest.fail("a worker pool for a thread-unsafe op set"))
    with torch.inference_mode():
        assert torch.equal(cpu_parallel.rollout_cost(packed, ops, hist, goal, cand), want)
    from lewm_fast.planning.ops import TritonOps

    assert TritonOps.thread_safe is False and CpuOps.thread_safe is True


def test_a_worker_error_reaches_the_caller(model, threads):
    packed, ops = packed_and_ops(model)
    threads(2)
    hist, goal = torch.randn(1, 1, 32), torch.randn(1, 32)
    cand = torch.randn(1, 300, 5, 7)  # a wrong action width: every chunk fails
    with pytest.raises(RuntimeError), torch.inference_mode():
        cpu_parallel.rollout_cost(packed, ops, hist, goal, cand)


def test_planner_chunks_cover_the_rows_evenly():
    for rows in (1, 2, 7, 300, 301, 4800):
        for n_threads in (1, 2, 3, 16):
            for max_rows in (0, 1, 5, 150, 1024):
                bounds = capability.planner_chunks(rows, n_threads, max_rows)
                assert bounds[0][0] == 0 and bounds[-1][1] == rows
                assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
                sizes = [hi - lo for lo, hi in bounds]
                assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
                assert len(bounds) >= min(n_threads, rows)
                if max_rows:
                    assert max(sizes) <= max_rows or len(bounds) == rows
                if len(bounds) < rows:
                    assert len(bounds) % min(n_threads, rows) == 0  # every thread gets as many chunks


_FORKED: tuple = ()  # the child's inputs, inherited through fork (oneDNN-packed weights do not pickle)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_plans_with_its_own_workers(model, threads):
    """A child forked after planning inherits the pool object but not its threads: it must not hang."""
    global _FORKED
    packed, ops = packed_and_ops(model)
    threads(2)
    hist, goal, cand = torch.randn(1, 1, 32), torch.randn(1, 32), torch.randn(1, 300, 5, 10)
    with torch.inference_mode():
        want = cpu_parallel.rollout_cost(packed, ops, hist, goal, cand)
    _FORKED = (packed, ops, hist, goal, cand)
    with multiprocessing.get_context("fork").Pool(1) as child:
        got = child.apply_async(_costs_in_child).get(timeout=300)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def _costs_in_child():
    torch.set_num_threads(2)
    with torch.inference_mode():
        return cpu_parallel.rollout_cost(*_FORKED)


@pytest.mark.parametrize(
    "changes",
    [
        dict(pred_hidden_dim=48, pred_output_dim=40),  # input_proj, cond_proj and output_proj are Linears
        dict(pred_heads=1, pred_dim_head=32),  # attention without an output projection (W_ov = W_v)
        dict(num_frames=4, pred_depth=3),  # a longer window
    ],
)
@pytest.mark.parametrize("h, horizon", [(1, 1), (1, 5), (2, 2), (3, 5), (4, 6)])
def test_cpu_rollout_without_unread_queries_equals_the_reference(changes, h, horizon):
    """The CPU op set skips queries nobody reads (rollout._attention_out): same costs as the reference."""
    from helpers import rel_err

    from lewm_fast.planning.reference import rollout_cost_reference

    model = tiny_model(seed=5, **changes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.5)
    g = torch.Generator().manual_seed(h * 10 + horizon)
    d = model.cfg.embed_dim
    hist, goal, cand = torch.randn(2, h, d, generator=g), torch.randn(2, d, generator=g), torch.randn(2, 7, horizon, 10)
    packed, ops = packed_and_ops(model)
    assert ops.skip_unread_queries
    with torch.no_grad():
        want = rollout_cost_reference(model, hist, goal, cand)
    with torch.inference_mode():
        got = rollout_cost(packed, ops, hist, goal, cand)
    assert rel_err(got, want) <= 1e-5  # measured ~2e-7; a 0.1 error in one bias of W_ov gives ~2e-4


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("h, horizon", [(1, 5), (2, 4), (3, 5), (4, 6)])
def test_counted_work_is_the_work_done(model, skip, h, horizon):
    """benchmarks/flops.py counts what the rollout computes: its matmuls (recorded) and attention."""
    from flops import fast_iteration_flops

    packed, ops = packed_and_ops(model)
    ops.skip_unread_queries = skip
    ops.fused_steps = False  # the op-by-op loop, so each matmul and attention is seen
    done = []
    linear, attention = ops.linear, ops.window_attention

    def counted_linear(x, w, b):
        done.append(2 * x.numel() * w.shape[0])
        return linear(x, w, b)

    def counted_attention(q, k, v, heads):
        done.append(2 * 2 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2])
        return attention(q, k, v, heads)

    ops.linear, ops.window_attention = counted_linear, counted_attention
    ops.linear_gelu = lambda x, w, b: torch.nn.functional.gelu(counted_linear(x, w, b))
    ops.linear_into = lambda x, w, b, out: out.copy_(counted_linear(x, w, b))
    rows = 5
    with torch.inference_mode():
        rollout_cost(packed, ops, torch.randn(1, h, 32), torch.randn(1, 32), torch.randn(1, rows, horizon, 10))
    want = fast_iteration_flops(model.cfg, rows, horizon, h, skip_unread_queries=skip)
    assert sum(done) == want
