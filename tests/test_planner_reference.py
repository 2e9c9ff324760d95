"""The reference planner: the public cost and CEM semantics, several environments at once, the
public (env-major) noise order, determinism and bad input."""

import pytest
import torch
from helpers import rel_err, tiny_model

import lewm_fast as lf
from lewm_fast.planning import cem_reference, rollout_cost_reference


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def observations(e=2, h=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(e, h, 3, 28, 28, generator=g), torch.rand(e, 3, 28, 28, generator=g)


def manual_cost(model, pixels, goal, cand):
    """The public rollout, step by step with explicit windows, for one environment."""
    with torch.no_grad():
        hist = model.encode(pixels)  # (1, H, D)
        g = model.encode(goal[:, None])[:, 0]
        s, horizon = cand.shape[1:3]
        h = hist.shape[1]
        act = model.embed_actions(cand[0])  # (S, horizon, D)
        embs = [hist[0, i].expand(s, -1) for i in range(h)]
        for t in range(horizon - h + 1):
            lo = max(0, h + t - model.cfg.num_frames)
            window = torch.stack(embs[lo:], 1)
            embs.append(model.predict(window, act[:, lo : h + t])[:, -1])
        return (embs[-1] - g).square().sum(-1)[None]


@pytest.mark.parametrize("h, horizon", [(1, 5), (3, 5), (2, 2), (1, 1)])
def test_cost_matches_stepwise_public_rollout(model, h, horizon):
    pixels, goal = observations(1, h)
    cand = torch.randn(1, 7, horizon, 10)
    got = lf.CEMPlanner(model, horizon=horizon, backend="reference").cost(pixels, goal, cand)
    assert rel_err(got, manual_cost(model, pixels, goal, cand)) <= 1e-5


def test_cost_of_several_environments_equals_one_at_a_time(model):
    pixels, goal = observations(3, 2)
    cand = torch.randn(3, 5, 5, 10)
    planner = lf.CEMPlanner(model, backend="reference")
    together = planner.cost(pixels, goal, cand)
    for i in range(3):
        alone = planner.cost(pixels[i : i + 1], goal[i : i + 1], cand[i : i + 1])
        assert rel_err(together[i : i + 1], alone) <= 1e-5


def test_plan_follows_public_env_major_order(model):
    pixels, goal = observations(2)
    kw = dict(num_samples=16, topk=4, iters=3, seed=11, backend="reference")
    together = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    sequential = lf.CEMPlanner(model, **kw)  # one generator, env 0 then env 1, like the public solver
    first = sequential.plan(pixels[:1], goal[:1])
    second = sequential.plan(pixels[1:], goal[1:])
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=0, atol=0)


def test_cem_reference_step_by_step(model):
    """One iteration by hand: noise from the generator, mean kept as sample 0, unbiased elite std."""
    pixels, goal = observations(1)
    planner = lf.CEMPlanner(model, num_samples=12, topk=3, iters=1, seed=2, backend="reference")
    mean0, std0 = torch.zeros(1, 5, 10), torch.full((1, 5, 10), 1.0)
    g = torch.Generator().manual_seed(2)
    cand = torch.randn(1, 12, 5, 10, generator=g) * std0[:, None] + mean0[:, None]
    cand[:, 0] = mean0
    costs = planner.cost(pixels, goal, cand)
    elites = cand[0, costs[0].argsort()[:3]]
    result = planner.plan_with_info(pixels, goal)
    torch.testing.assert_close(result.actions[0], elites.mean(0))
    torch.testing.assert_close(result.std[0], elites.std(0))
    torch.testing.assert_close(result.cost, costs[0].sort().values[:3].mean()[None])


@pytest.mark.parametrize("solver, backend", [("cem", "reference"), ("cem", "torch"), ("grad", "reference"),
                                             ("grad", "torch")])  # fmt: skip
def test_one_result_type_at_every_level(model, solver, backend):
    """The planner, its engine, the chunk loop and one chunk all return `lf.PlanResult`; its deprecated
    `elite_cost` warns and is `cost`; gradient planning returns its samples and per-chunk step costs."""
    from lewm_fast.planning.optimizers import make_optimizer, solve_chunks

    pixels, goal = observations(2)
    params = dict(num_samples=6, n_steps=2, **(dict(topk=2) if solver == "cem" else {}))
    planner = lf.Planner(model, solver, backend=backend, **params)
    result = planner.plan_with_info(pixels, goal)
    assert type(result) is lf.PlanResult and result.cost.shape == (2,)
    with pytest.warns(DeprecationWarning, match="elite_cost"):
        assert result.elite_cost is result.cost
    if solver == "grad":
        # the gradient solver's public batch_size None: one chunk of both environments, two steps
        assert result.samples.shape == (2, 6, 5, 10) and [len(h) for h in result.history] == [2]
    opt = make_optimizer(solver, **params)
    mean = torch.zeros(3, 5, 10)
    gen = torch.Generator().manual_seed(0)
    chunk = opt.solve_chunk(opt.prepare(mean, torch.ones_like(mean), gen), lambda c: c.square().sum((2, 3)), gen)
    whole = solve_chunks(opt, mean, torch.ones_like(mean), lambda lo, hi: lambda c: c.square().sum((2, 3)), gen, 2)
    assert type(chunk) is type(whole) is lf.PlanResult and whole.actions.shape == (3, 5, 10)
    assert len(whole.history) == (2 if solver == "grad" else 0)  # per chunk of 2 environments: 2 chunks


def test_plan_is_deterministic_and_warm_start_is_used(model):
    pixels, goal = observations(2)
    kw = dict(num_samples=16, topk=4, iters=2, seed=4, backend="reference")
    a = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    b = lf.CEMPlanner(model, **kw).plan(pixels, goal)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    warm = lf.CEMPlanner(model, **kw).plan(pixels, goal, init_mean=torch.full((2, 3, 10), 5.0))
    assert not torch.allclose(a, warm)


def test_reference_functions_directly(model):
    hist, goal = torch.randn(2, 1, 32), torch.randn(2, 32)
    cand = torch.randn(2, 6, 5, 10)
    with torch.no_grad():
        cost = rollout_cost_reference(model, hist, goal, cand)
    assert cost.shape == (2, 6) and (cost >= 0).all()
    mean, std, elite_cost = cem_reference(
        lambda c: c.square().sum((2, 3)), torch.zeros(1, 5, 10), torch.ones(1, 5, 10), 32, 4, 5,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert mean.abs().max() < 1.0 and elite_cost.shape == (1,)


def test_bad_input(model):
    pixels, goal = observations(2)
    planner = lf.CEMPlanner(model, backend="reference", num_samples=8, topk=2, iters=1)
    with pytest.raises(ValueError, match=r"goal: expected shape \(2, 3, H, W\), got \(3, 3, 28, 28\)"):
        planner.plan(pixels, torch.rand(3, 3, 28, 28))
    with pytest.raises(ValueError, match=r"cand: expected shape \(2, S, horizon, 10\), got \(2, 4, 5, 9\)"):
        planner.cost(pixels, goal, torch.randn(2, 4, 5, 9))
    bad = pixels.clone()
    bad[1, 0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="pixels: expected finite values"):
        planner.plan(bad, goal)
    with pytest.raises(ValueError, match="at most horizon=5 history frames"):
        planner.plan(torch.rand(2, 6, 3, 28, 28), goal)
    with pytest.raises(ValueError, match="init_mean: expected shape"):
        planner.plan(pixels, goal, init_mean=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="topk: expected 2 <= topk <= num_samples=8"):
        lf.CEMPlanner(model, num_samples=8, topk=30)
    with pytest.raises(ValueError, match="backend"):
        lf.CEMPlanner(model, backend="cuda")
    with pytest.raises(ValueError, match="dtype"):
        lf.CEMPlanner(model, dtype=torch.float16)
