"""The CPU engine's packed encoder (lewm_fast/planning/encoder.py) against its specification,
`model.encode_frames`: the same embeddings up to fp32 summation order, on a tiny model at its own and an
interpolated image size, on the published size, with the C++ matmul and with oneDNN / F.linear; and the
engine encodes with it (history and goal as the reference encodes them)."""

import pytest
import torch

import lewm_fast as lf
from lewm_fast import capability
from lewm_fast.planning.cpu_ops import CpuOps
from lewm_fast.planning.encoder import PackedEncoder
from lewm_fast.planning.reference import encode_reference
from tests.helpers import tiny_model

MATMULS = ["cpp", "onednn", "torch"]


def op_set(matmul: str, monkeypatch) -> CpuOps:
    if matmul == "cpp" and capability.planner_matmul(torch.float32) != "cpp":
        pytest.skip("the C++ matmul is not this CPU's fp32 choice (no AVX2 or AVX-512 kernel runs here)")
    monkeypatch.setattr(capability, "planner_matmul", lambda dtype: matmul)
    return CpuOps(torch.float32)


@pytest.mark.parametrize("matmul", MATMULS)
@pytest.mark.parametrize("image", [28, 35])  # 35: position embeddings interpolated (5 x 5 patches)
def test_packed_encoder_equals_encode_frames(matmul, image, monkeypatch):
    model = tiny_model(seed=1)
    frames = torch.rand(7, 3, image, image)
    with torch.no_grad():
        want = model.encode_frames(frames)
    got = PackedEncoder(model, op_set(matmul, monkeypatch))(frames)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_packed_encoder_at_the_published_size():
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig()).eval()
    frames = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = model.encode_frames(frames)
    torch.testing.assert_close(PackedEncoder(model, CpuOps(torch.float32))(frames), want, rtol=1e-5, atol=1e-5)


def test_a_wrong_encoder_would_fail_this_check():
    """The check above can fail: the CLS row after every layer but the last is far outside it."""
    model = tiny_model(seed=1)
    frames = torch.rand(3, 3, 28, 28)
    encoder = PackedEncoder(model, CpuOps(torch.float32))
    encoder.layers = encoder.layers[:-1]
    with torch.no_grad():
        want = model.encode_frames(frames)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(encoder(frames), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cpu_engine_encodes_with_it(dtype):
    model = tiny_model(seed=2)
    planner = lf.CEMPlanner(model, backend="torch", dtype=dtype)
    assert isinstance(planner.engine.encoder, PackedEncoder)
    pixels, goal = torch.rand(3, 2, 3, 28, 28), torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        want_hist, want_goal = encode_reference(model, pixels, goal)
    hist, goal_emb = planner.engine.embed(pixels, goal)
    torch.testing.assert_close(hist, want_hist, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(goal_emb, want_goal, rtol=1e-5, atol=1e-5)


def _at_threads(threads: int, fn):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn()
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2, 3])  # 3: more workers than cores here
@pytest.mark.parametrize("goal_frames", [None, 2])  # None: goal (E, C, h, w); 2: (E, 2, C, h, w), the last counts
def test_embed_equals_encode_reference_bit_for_bit(threads, goal_frames):
    """The goal and history frames in one pass over the workers, projected as two batches: the same bits as
    `encode_reference` with the packed encoder (two calls), and as at one thread."""
    model = tiny_model(seed=3)
    encoder = PackedEncoder(model, CpuOps(torch.float32))
    pixels = torch.rand(3, 2, 3, 28, 28)
    goal = torch.rand(3, 3, 28, 28) if goal_frames is None else torch.rand(3, goal_frames, 3, 28, 28)
    hist, goal_emb = _at_threads(threads, lambda: encoder.embed(pixels, goal))
    with torch.no_grad():
        want_hist, want_goal = encode_reference(model, pixels, goal, encoder)
    assert hist.shape == want_hist.shape and goal_emb.shape == want_goal.shape and not hist.requires_grad
    assert torch.equal(hist, want_hist) and torch.equal(goal_emb, want_goal)
    one_hist, one_goal = _at_threads(1, lambda: encoder.embed(pixels, goal))
    assert torch.equal(hist, one_hist) and torch.equal(goal_emb, one_goal)


def test_a_frames_cls_row_does_not_depend_on_the_batch_or_the_threads():
    """One frame alone (inline), and inside a batch of 9 over 1, 2 or 3 workers: the same CLS row, bit for bit
    (PyTorch's SDPA sums the last layer's CLS query in another order on two threads: each frame's rows run on one;
    the projector after it is a batched matmul, run as `encode_reference` batches it)."""
    model = tiny_model(seed=3)
    encoder = PackedEncoder(model, CpuOps(torch.float32))
    frames = torch.rand(9, 3, 28, 28)
    alone = torch.cat([_at_threads(2, lambda f=f: encoder.cls_rows(f[None])) for f in frames])
    for t in (1, 2, 3):
        assert torch.equal(_at_threads(t, lambda: encoder.cls_rows(frames)), alone)
