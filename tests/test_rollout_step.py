"""The rollout's blocks in one C++ call per step (`CpuOps.blocks_step`, csrc/rollout_step.cpp) against the op-by-op
loop it replaces (`rollout._blocks` on the same op set): the same kernels in the same order on the same operands, so
the costs must be equal bit for bit, for every kind of step (the window growing from 1-4 history frames, with 1 or
more new tokens; sliding; the last block's newest-token-only path; the self-only token at window position 0), row
counts off every tile, fp32 and bf16, one block or several, a block without an output projection; and the binding
refuses what it cannot read, naming the argument."""

import pytest
import torch
from helpers import tiny_model

from lewm_fast import _ext
from lewm_fast.planning.cpu_ops import CpuOps, _numpy_view, rollout_step_model
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost

ext = _ext.load()
pytestmark = pytest.mark.skipif(ext is None, reason="the C++ extension is not built")

MODELS = {
    "tiny": {},
    "window 4": {"num_frames": 4},
    "no output projection": {"pred_heads": 1, "pred_dim_head": 32},  # I == D: the attention output is the delta
    "one block": {"pred_depth": 1},
}


def cpp_ops(dtype: torch.dtype) -> CpuOps:
    ops = CpuOps(dtype)
    if ops.matmul != "cpp":
        pytest.skip(f"this CPU's {dtype} planner matmul is {ops.matmul}, not the C++ one the fused step needs")
    return ops


def costs(ops, packed, inputs, fused: bool) -> tuple[torch.Tensor, int]:
    """The rollout's costs with the fused step on or off, and how many steps ran fused."""
    ops.fused_steps, used = fused, [0]
    step = CpuOps.blocks_step.__get__(ops)

    def counted(*args):
        y = step(*args)
        used[0] += y is not None
        return y

    ops.blocks_step = counted
    try:
        with torch.inference_mode():
            return rollout_cost(packed, ops, *inputs), used[0]
    finally:
        del ops.blocks_step


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("h, horizon, rows", [(1, 5, 7), (2, 5, 1), (3, 6, 33), (4, 6, 2), (1, 2, 9)])
def test_fused_step_is_the_loop_bit_for_bit(dtype, name, h, horizon, rows):
    model = tiny_model(seed=11, **MODELS[name])
    ops = cpp_ops(dtype)
    packed = PackedPredictor(model, dtype, "cpu", pack=ops.pack_weight)
    g = torch.Generator().manual_seed(rows + 10 * h)
    d, a = model.cfg.embed_dim, model.cfg.action_block_dim
    inputs = (torch.randn(2, h, d, generator=g), torch.randn(2, d, generator=g),
              torch.randn(2, rows, horizon, a, generator=g))  # fmt: skip
    fused, steps = costs(ops, packed, inputs, True)
    loop, none = costs(ops, packed, inputs, False)
    assert steps == horizon - h + 1 and none == 0  # every step fused, then none
    assert torch.equal(fused, loop)


def test_other_matmuls_and_the_full_attention_run_the_loop():
    """Without the C++ matmul, or with every query computed (skip_unread_queries off), there is no fused step."""
    model = tiny_model(seed=3)
    ops = CpuOps(torch.float32, matmul="torch")
    packed = PackedPredictor(model, torch.float32, "cpu", pack=ops.pack_weight)
    inputs = (torch.randn(1, 1, 32), torch.randn(1, 32), torch.randn(1, 4, 3, model.cfg.action_block_dim))
    assert costs(ops, packed, inputs, True)[1] == 0
    ops = cpp_ops(torch.float32)
    ops.skip_unread_queries = False
    packed = PackedPredictor(model, torch.float32, "cpu", pack=ops.pack_weight)
    assert costs(ops, packed, inputs, True)[1] == 0


def test_binding_refuses_what_it_cannot_read():
    model = tiny_model(seed=5)
    ops = cpp_ops(torch.float32)
    packed = PackedPredictor(model, torch.float32, "cpu", pack=ops.pack_weight)
    step = rollout_step_model(ext, packed)
    depth, n_rows, d, inner = len(packed.blocks), 3, 32, 32
    x = torch.randn(n_rows, 2, d)
    mods = torch.randn(n_rows, 2, depth, 6, d)
    caches = [torch.zeros(n_rows, 3, 2 * inner) for _ in range(depth)]
    y = torch.empty(n_rows, 1, d)

    def call(x=x, mods=mods, caches=caches, first=0, y=y):
        views = None if caches is None else [c.numpy() for c in caches]
        ext.rollout_step(step, x.numpy(), _numpy_view(mods), views, first, y.numpy(), 1)

    call()  # well-formed
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="x: expected"):
        call(x=torch.randn(n_rows, 2, d + 1))
    with pytest.raises(ValueError, match="mods: expected"):
        call(mods=torch.randn(n_rows, 2, depth, 5, d))
    with pytest.raises(ValueError, match="kv: expected one cache per block"):
        call(caches=caches[:1])
    with pytest.raises(ValueError, match="kv: expected writeable"):
        call(first=2)  # positions 2, 3 do not fit a window of 3
    with pytest.raises(ValueError, match="first: expected 0 without a cache"):
        call(caches=None, first=1)
    with pytest.raises(ValueError, match="y_out: expected"):
        call(y=torch.empty(n_rows, 2, d))
    with pytest.raises(ValueError, match="x: expected"):
        ext.rollout_step(step, x.double().numpy(), _numpy_view(mods), None, 0, y.numpy(), 1)
    with pytest.raises(ValueError, match=r"blocks\[0\]: expected"):
        ext.rollout_step_model([(None,) * 9], ops.cpp_kernel, d, inner, 64, 2, 1e-6)
