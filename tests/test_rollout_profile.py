"""benchmarks/rollout_profile.py accounts for a chunk's time and work: the op times and the time outside
the ops add up to the rollout, and the work it saw (matmuls and attention) is the work `benchmarks/flops.py`
counts for the fast rollout (published-size model, a small chunk)."""

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
import rollout_profile  # noqa: E402
from flops import fast_iteration_flops  # noqa: E402

from lewm_fast import LeWMConfig, capability  # noqa: E402


def test_profile_adds_up_to_the_rollout_and_its_counted_work(tmp_path):
    rows, threads = 6, torch.get_num_threads()
    argv = ["--rows", str(rows), "--repeats", "2", "--alone-seconds", "0.02", "--out", str(tmp_path)]
    assert rollout_profile.main(argv) == 0
    assert torch.get_num_threads() == threads  # the profile's one thread is given back
    (path,) = tmp_path.glob("rollout_profile-*.json")
    result = json.loads(path.read_text())
    ops = result["ops"]
    assert ops[-1]["op"] == "outside the ops" and ops[-1]["ms"] >= 0
    assert sum(op["ms"] for op in ops) == pytest.approx(result["total_ms"], rel=1e-9)
    counting = [op for op in ops if "gflops" in op]
    kinds = {op["op"].split(" ", 1)[0] for op in counting}
    # A GELU applied after the matmul leaves linear_gelu no work of its own (its nested linear counts it).
    fused_gelu = {"linear_gelu"} if capability.planner_gelu(torch.float32) != "after" else set()
    assert {"linear", "window_attention", *fused_gelu} <= kinds <= {*rollout_profile.MATMULS, "window_attention"}
    seen = sum(op["gflops"] * op["ms"] * 1e6 for op in counting)  # FLOP = GFLOP/s x ms x 1e6
    counted = fast_iteration_flops(LeWMConfig(), rows, horizon=5, skip_unread_queries=True)
    assert seen == pytest.approx(counted, rel=1e-9)
    matmuls = [op for op in counting if op["op"].startswith("linear")]
    assert all(op["alone_gflops"] is not None for op in matmuls)  # every matmul shape also timed alone
