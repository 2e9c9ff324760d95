"""The fast planner engines ("torch"; "triton" in test_planner_triton.py) beyond tests/test_equivalence.py:
the restructured rollout for other model shapes and with or without the C++ kernels (costs within the
derived bound of the exact costs), determinism, warm start, bad input, the CPU's chunks and compiled ops.
"""

import pytest
import torch
from helpers import assert_rollout_within_bound, tiny_model

import lewm_fast as lf
from lewm_fast.planning import equivalence as eq
from lewm_fast.planning import ops
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost


def sensitive_model(seed=3, **changes):
    """A tiny model whose costs depend strongly on the actions (AdaLN weights ~N(0, 0.5)): with the
    default ~N(0, 0.05) the cost is mostly the goal distance and a wrong rollout could hide in 1e-4."""
    model = tiny_model(seed=seed, **changes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def model():
    return sensitive_model()


def observations(e=2, h=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(e, h, 3, 28, 28, generator=g), torch.rand(e, 3, 28, 28, generator=g)


@pytest.mark.parametrize(
    "changes",
    [
        dict(pred_hidden_dim=48, pred_output_dim=40),  # input_proj, cond_proj and output_proj are Linears
        dict(pred_heads=1, pred_dim_head=32),  # attention without an output projection
        dict(num_frames=4, pred_depth=3),  # a longer window
    ],
)
def test_cost_equals_reference_for_other_shapes(changes):
    model = sensitive_model(seed=5, **changes)
    hist, goal, cand = torch.randn(2, 2, 32), torch.randn(2, 32), torch.randn(2, 7, 6, 10)
    got = rollout_cost(PackedPredictor(model, torch.float32, "cpu"), ops.TorchOps(), hist, goal, cand)
    assert_rollout_within_bound(model, hist, goal, cand, got)


@pytest.mark.parametrize("h, horizon", [(1, 5), (3, 5)])
def test_cpu_ops_with_and_without_the_extension(model, h, horizon):
    """The CPU op set takes the C++ kernels when the extension is built and PyTorch ops otherwise:
    both must give the reference costs (the fused C++ chain also updates the residual in place)."""
    pixels, goal = observations(2, h)
    cand = torch.randn(2, 11, horizon, 10)
    planner = lf.CEMPlanner(model, horizon=horizon, backend="torch")
    assert eq.check_planner_costs(planner, pixels, goal, cand).ok
    planner.engine.ops.ext = None
    assert eq.check_planner_costs(planner, pixels, goal, cand).ok


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plans_are_deterministic_and_the_generator_persists(model, dtype):
    pixels, goal = observations(2)
    kw = dict(num_samples=16, topk=4, iters=2, seed=4, backend="torch", dtype=dtype)
    a = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    planner = lf.CEMPlanner(model, **kw)
    b = planner.plan(pixels, goal)
    c = planner.plan(pixels, goal)  # the generator moved on: a different draw
    planner.reseed(4)
    d = planner.plan(pixels, goal)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, d, rtol=0, atol=0)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_an_engine_needs_only_its_arguments(model, backend):
    """An engine is built from what it is given (no planner behind it): the same plan as the planner's, and the
    planner's optimizer and generator are the ones its engine holds, not to be replaced from outside."""
    from lewm_fast.planning.backends import engine_class
    from lewm_fast.planning.optimizers import make_optimizer

    pixels, goal = observations(2)
    params = dict(num_samples=16, topk=4, n_steps=2)
    planner = lf.Planner(model, "cem", backend=backend, seed=4, **params)
    gen = torch.Generator().manual_seed(4)
    engine = engine_class(backend)(model, make_optimizer("cem", **params), gen, horizon=5, dtype=torch.float32,
                                   device=torch.device("cpu"))  # fmt: skip
    mean = torch.zeros(2, 5, 10)
    alone = engine.plan(pixels, goal, mean, torch.ones_like(mean)).actions
    torch.testing.assert_close(alone, planner.plan(pixels, goal), rtol=0, atol=0)
    assert planner.engine.optimizer is planner.optimizer and planner.engine.generator is planner.generator
    with pytest.raises(AttributeError):
        planner.generator = torch.Generator()
    with pytest.raises(AttributeError):
        planner.optimizer = make_optimizer("cem")


def test_warm_start_is_the_first_mean(model):
    """With iters=1 and topk=S every candidate is an elite: the plan is the mean of the candidates,
    whose sample 0 is the warm-start mean."""
    pixels, goal = observations(1)
    init = torch.full((1, 3, 10), 2.0)
    planner = lf.CEMPlanner(model, num_samples=4, topk=4, iters=1, seed=1, backend="torch")
    gen = torch.Generator().manual_seed(1)
    mean = torch.zeros(1, 5, 10)
    mean[:, :3] = 2.0
    cand = torch.randn(1, 4, 5, 10, generator=gen) + mean[:, None]
    cand[:, 0] = mean
    torch.testing.assert_close(planner.plan(pixels, goal, init_mean=init), cand.mean(1))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_input_goes_through_the_planner_checks(model, backend):
    if backend not in lf.planning.available_backends():
        pytest.skip("Triton not installed")
    pixels, goal = observations(2)
    planner = lf.CEMPlanner(model, backend=backend, num_samples=8, topk=2, iters=1)
    with pytest.raises(ValueError, match=r"goal: expected shape \(2, 3, H, W\), got \(3, 3, 28, 28\)"):
        planner.plan(pixels, torch.rand(3, 3, 28, 28))
    with pytest.raises(ValueError, match=r"cand: expected shape \(2, S, horizon, 10\), got \(2, 4, 5, 9\)"):
        planner.cost(pixels, goal, torch.randn(2, 4, 5, 9))
    with pytest.raises(ValueError, match=r"cand: expected shape \(2, S, horizon, 10\), got \(3, 4, 5, 10\)"):
        planner.cost(pixels, goal, torch.randn(3, 4, 5, 10))
    bad = pixels.clone()
    bad[1, 0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="pixels: expected finite values"):
        planner.plan(bad, goal)
    with pytest.raises(ValueError, match="init_mean: expected shape"):
        planner.plan(pixels, goal, init_mean=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="topk: expected 2 <= topk <= num_samples=8"):
        lf.CEMPlanner(model, backend=backend, num_samples=8, topk=30)


def test_auto_picks_the_fast_engine_on_cpu(model):
    assert lf.CEMPlanner(model).backend == "torch"


def test_triton_without_a_gpu_or_the_interpreter_is_refused(model, monkeypatch):
    if "triton" not in lf.planning.available_backends() or torch.cuda.is_available():
        pytest.skip("needs Triton and no CUDA device")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="'triton' is not available here: it needs a CUDA device"):
        lf.CEMPlanner(model, backend="triton")


def test_cpu_ops_with_compiled_elementwise_chains(model, monkeypatch):
    """LEWM_PLAN_COMPILE=1: TorchInductor-fused norm/modulate and gate/residual, same costs."""
    pytest.importorskip("torch._inductor")
    monkeypatch.setenv("LEWM_PLAN_COMPILE", "1")
    pixels, goal = observations(1, 1)
    cand = torch.randn(1, 6, 5, 10)
    planner = lf.CEMPlanner(model, backend="torch")
    assert planner.engine.ops._norm_modulate is not ops.norm_modulate  # the compiled one is in use
    assert eq.check_planner_costs(planner, pixels, goal, cand).ok


def test_cpu_chunks_of_environments_change_nothing(model, monkeypatch):
    """The CPU engine rolls out in chunks of whole environments: costs and whole plans within the claims of
    planning/equivalence.py, as one batch is."""
    pixels, goal = observations(5, 1)
    cand = torch.randn(5, 7, 5, 10)
    monkeypatch.setenv("LEWM_PLAN_CHUNK_ROWS", "14")  # 2 environments per chunk: chunks of 2, 2, 1
    chunked = lf.CEMPlanner(model, num_samples=7, topk=3, iters=30, backend="torch")
    assert chunked.engine.chunk_rows == 14
    assert eq.check_planner_costs(chunked, pixels, goal, cand).ok
    trace = eq.trace(chunked, pixels, goal, seed=1)
    assert trace.ok, trace.failures()
