"""benchmarks/linear_kernels.py times every matmul choice of this CPU at every shape of a chunk, and the chunk
with each: the shapes' work is the fast rollout's matmul work (`benchmarks/flops.py`), every choice appears
for every shape, and the rates are positive (published-size model, a small chunk)."""

import json
import math

import linear_kernels
import torch
from flops import fast_iteration_flops

from lewm_fast import LeWMConfig, capability
from lewm_fast.planning.cpu_ops import CpuOps
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost


def attention_flops(rows: int) -> float:
    """The window attention's share of `fast_iteration_flops`, counted by wrapping the op in one rollout."""
    model = linear_kernels.build_model()
    ops, seen = CpuOps(torch.float32, rows_hint=rows), [0.0]
    ops.fused_steps = False  # the op-by-op loop, so each attention call is seen
    attend = ops.window_attention

    def counted(q, k, v, heads):
        seen[0] += 2.0 * 2 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]
        return attend(q, k, v, heads)

    ops.window_attention = counted
    with torch.inference_mode():
        rollout_cost(PackedPredictor(model, torch.float32, "cpu", pack=ops.pack_weight), ops,
                     *linear_kernels.chunk_inputs(model, rows))  # fmt: skip
    return seen[0]


def test_every_choice_at_every_shape_and_the_chunk(tmp_path):
    rows, threads = 6, torch.get_num_threads()
    argv = ["--rows", str(rows), "--reps", "1", "--copies", "2", "--chunk-reps", "1", "--out", str(tmp_path)]
    assert linear_kernels.main(argv) == 0
    assert torch.get_num_threads() == threads  # its one thread is given back
    (path,) = tmp_path.glob("linear_kernels-*.json")
    result = json.loads(path.read_text())
    dtypes = ["fp32"] + (["bf16"] if capability.native_bf16("cpu") else [])
    for dtype in dtypes:
        names = set(linear_kernels.choices(capability.DTYPE_NAMES[dtype]))
        shapes = [r for r in result["shapes"] if r["dtype"] == dtype]
        by_shape: dict[tuple, set] = {}
        for r in shapes:
            by_shape.setdefault((r["op"], r["shape"]), set()).add(r["choice"])
            assert r["warm_gflops"] > 0 and r["cold_gflops_median"] > 0
        assert all(seen == names for seen in by_shape.values())
        one = sorted(names)[0]
        work = sum(2.0 * math.prod(int(v) for v in r["shape"].replace("->", "x").split("x")) * r["calls"]
                   for r in shapes if r["choice"] == one)  # fmt: skip
        counted = fast_iteration_flops(LeWMConfig(), rows, horizon=5, skip_unread_queries=True) - attention_flops(rows)
        assert abs(work - counted) <= 1e-9 * work
        assert {r["choice"] for r in result["chunk"] if r["dtype"] == dtype} == names
