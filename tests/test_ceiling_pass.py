"""benchmarks/_common.py's CeilingPass: the GEMM ceiling timed like a plan. One pass is the fast rollout's matmul
work of one chunk (`benchmarks/flops.py` less the window attention), each thread runs whole passes for at least
the time asked, and a pass's calls compute what the op set's matmul computes (published-size model, a small
chunk)."""

import linear_kernels
import pytest
import torch
from _common import CeilingPass
from flops import fast_iteration_flops
from test_linear_kernels_bench import attention_flops

from lewm_fast import LeWMConfig, capability
from lewm_fast.planning.cpu_ops import CpuOps


@pytest.mark.parametrize("matmul", [None, "onednn"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_pass_is_one_chunks_matmul_work_timed_for_as_long_as_asked(dtype, matmul):
    """On this CPU's matmul and on oneDNN's (an AMX CPU's bf16 choice, called through the op set)."""
    if dtype == "bf16" and not capability.native_bf16("cpu"):
        pytest.skip("bf16 is emulated on this CPU: the planner runs fp32 here")
    if matmul == "onednn" and not capability.onednn_linear(capability.DTYPE_NAMES[dtype]):
        pytest.skip(f"oneDNN has no {dtype} linear in this build or under ONEDNN_MAX_CPU_ISA")
    rows = 6
    ceiling = CeilingPass(linear_kernels.build_model(), capability.DTYPE_NAMES[dtype], rows, threads=2, matmul=matmul)
    counted = fast_iteration_flops(LeWMConfig(), rows, horizon=5, skip_unread_queries=True) - attention_flops(rows)
    assert ceiling.flops == pytest.approx(counted, rel=1e-9)
    rate = ceiling.rate(0.05, clock="cpu")
    assert rate["seconds"] >= 0.05 and rate["passes"] >= 2  # every thread at least one whole pass
    assert rate["gflops"] == pytest.approx(ceiling.flops * rate["passes"] / rate["seconds"] / 1e9)
    assert rate["per_thread_gflops"] > 0 and ceiling.rate(0.0)["per_thread_gflops"] is None


def test_a_pass_computes_what_the_op_sets_matmul_computes():
    ceiling = CeilingPass(linear_kernels.build_model(), torch.float32, 5, threads=1)
    run, outputs = ceiling._pass(with_outputs=True)
    if all(out is None for out in outputs):
        pytest.skip("this CPU's fp32 matmul is oneDNN's: the pass calls the op set's own linear")
    run()
    for (_, x, w, b), out in zip(ceiling.calls, outputs):
        if out is not None:  # the extension's kernel called directly, as the fused step calls it
            assert torch.equal(out, CpuOps.linear(ceiling.ops, x, w, b).reshape(out.shape))
