"""The fast planner engines ("torch"; "triton" in test_planner_triton.py) against the reference planner:
costs of identical candidates (fp32 within 1e-4 relative, the DESIGN target), the restructured rollout
over every window regime (growing, sliding, history > window), the CEM loop step by step, determinism,
warm start, bad input.

On the CPU the fast engines draw randn(E, S, horizon, A) fp32 from the planner's generator; for E = 1
that is the reference's draw too, so a one-environment fp32 plan must equal the reference plan.
"""

import pytest
import torch
from helpers import rel_err, tiny_model

import lewm_fast as lf
from lewm_fast.planning import ops
from lewm_fast.planning.reference import rollout_cost_reference
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


def assert_same_costs(got, want, rel=1e-4):
    """Within `rel` of the reference, and the candidate-to-candidate differences (what CEM ranks) within
    `rel` x 10 of their spread."""
    assert rel_err(got, want) <= rel
    spread = (want.amax(1) - want.amin(1)).min()
    centred = (got - got.mean(1, keepdim=True)) - (want - want.mean(1, keepdim=True))
    assert centred.abs().max() <= 10 * rel * spread


@pytest.fixture(scope="module")
def model():
    return sensitive_model()


def observations(e=2, h=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(e, h, 3, 28, 28, generator=g), torch.rand(e, 3, 28, 28, generator=g)


# (H, horizon): growing only (1, 3), growing then sliding (1, 5), horizon == history (2, 2) and (3, 3),
# horizon 1, history == window (3, 5), history > window (4, 6).
WINDOWS = [(1, 1), (1, 3), (1, 5), (2, 2), (3, 3), (3, 5), (4, 6)]


@pytest.mark.parametrize("h, horizon", WINDOWS)
def test_cost_equals_reference(model, h, horizon):
    pixels, goal = observations(2, h)
    cand = torch.randn(2, 13, horizon, 10)
    want = lf.CEMPlanner(model, horizon=horizon, backend="reference").cost(pixels, goal, cand)
    got = lf.CEMPlanner(model, horizon=horizon, backend="torch").cost(pixels, goal, cand)
    assert got.dtype == torch.float32 and got.shape == (2, 13)
    assert_same_costs(got, want)


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
    with torch.no_grad():
        want = rollout_cost_reference(model, hist, goal, cand)
    got = rollout_cost(PackedPredictor(model, torch.float32, "cpu"), ops.TorchOps(), hist, goal, cand)
    assert_same_costs(got, want)


@pytest.mark.parametrize("h, horizon", [(1, 5), (3, 5)])
def test_cpu_ops_with_and_without_the_extension(model, h, horizon):
    """The CPU op set takes the C++ kernels when the extension is built and PyTorch ops otherwise:
    both must give the reference costs (the fused C++ chain also updates the residual in place)."""
    pixels, goal = observations(2, h)
    cand = torch.randn(2, 11, horizon, 10)
    want = lf.CEMPlanner(model, horizon=horizon, backend="reference").cost(pixels, goal, cand)
    planner = lf.CEMPlanner(model, horizon=horizon, backend="torch")
    assert_same_costs(planner.cost(pixels, goal, cand), want)
    planner.engine.ops.ext = None
    assert_same_costs(planner.cost(pixels, goal, cand), want)


def test_bf16_cost_is_close_to_reference(model):
    pixels, goal = observations(2, 1)
    cand = torch.randn(2, 31, 5, 10)
    want = lf.CEMPlanner(model, backend="reference").cost(pixels, goal, cand)
    got = lf.CEMPlanner(model, backend="torch", dtype=torch.bfloat16).cost(pixels, goal, cand)
    assert rel_err(got, want) <= 3e-2
    # the ranking, which is what CEM uses, is nearly the same
    for g, w in zip(got, want):
        assert torch.corrcoef(torch.stack([g, w]))[0, 1] > 0.95


def test_a_wrong_rollout_would_fail_these_checks(model):
    """The checks above can fail: the cost of the same candidates in another order of action blocks
    (what a misplaced window or a stale K/V cache would compute) is far outside them."""
    hist, goal, cand = torch.randn(2, 1, 32), torch.randn(2, 32), torch.randn(2, 9, 5, 10)
    with torch.no_grad():
        want = rollout_cost_reference(model, hist, goal, cand)
        shuffled = rollout_cost_reference(model, hist, goal, cand.roll(1, dims=2))
    with pytest.raises(AssertionError):
        assert_same_costs(shuffled, want)


def test_one_environment_plan_equals_reference_plan(model):
    """Same generator, same draw (E = 1, fp32, CPU): the whole CEM trajectory must match."""
    pixels, goal = observations(1, 1)
    kw = dict(num_samples=37, topk=5, iters=4, seed=7)
    ref = lf.CEMPlanner(model, backend="reference", **kw).plan_with_info(pixels, goal)
    fast = lf.CEMPlanner(model, backend="torch", **kw).plan_with_info(pixels, goal)
    torch.testing.assert_close(fast.actions, ref.actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.std, ref.std, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.elite_cost, ref.elite_cost, rtol=1e-4, atol=1e-6)


def test_cem_loop_step_by_step(model):
    """Two iterations by hand from the planner's generator: noise * std + mean, the mean as sample 0,
    top-k elites, mean and unbiased std; several environments in one batch."""
    pixels, goal = observations(3, 2)
    planner = lf.CEMPlanner(model, num_samples=11, topk=3, iters=2, seed=5, backend="torch")
    hist, g_emb = planner.engine.embed(pixels, goal)
    gen = torch.Generator().manual_seed(5)
    mean, std = torch.zeros(3, 5, 10), torch.ones(3, 5, 10)
    for _ in range(2):
        cand = torch.randn(3, 11, 5, 10, generator=gen) * std[:, None] + mean[:, None]
        cand[:, 0] = mean
        with torch.no_grad():
            cost = rollout_cost_reference(model, hist, g_emb, cand)
        idx = cost.argsort(1)[:, :3]
        elites = torch.stack([cand[i, idx[i]] for i in range(3)])
        mean, std, elite_cost = elites.mean(1), elites.std(1), cost.gather(1, idx).mean(1)
    got = planner.plan_with_info(pixels, goal)
    torch.testing.assert_close(got.actions, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.std, std, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.elite_cost, elite_cost, rtol=1e-4, atol=1e-6)


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
    want = lf.CEMPlanner(model, backend="reference").cost(pixels, goal, cand)
    planner = lf.CEMPlanner(model, backend="torch")
    assert planner.engine.ops.norm_modulate is not ops.norm_modulate  # the compiled one is in use
    assert_same_costs(planner.cost(pixels, goal, cand), want)


def test_cpu_chunks_of_environments_change_nothing(model, monkeypatch):
    """The CPU engine rolls out in chunks of whole environments: the same costs and plans as one batch."""
    pixels, goal = observations(5, 1)
    cand = torch.randn(5, 7, 5, 10)
    kw = dict(num_samples=7, topk=3, iters=2, seed=1, backend="torch")
    monkeypatch.setenv("LEWM_PLAN_CHUNK_ROWS", "14")  # 2 environments per chunk: chunks of 2, 2, 1
    chunked = lf.CEMPlanner(model, **kw)
    monkeypatch.setenv("LEWM_PLAN_CHUNK_ROWS", "0")
    whole = lf.CEMPlanner(model, **kw)
    assert chunked.engine.chunk_rows == 14 and whole.engine.chunk_rows == 0
    torch.testing.assert_close(chunked.cost(pixels, goal, cand), whole.cost(pixels, goal, cand), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked.plan(pixels, goal), whole.plan(pixels, goal), rtol=1e-5, atol=1e-6)
