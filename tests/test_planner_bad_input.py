"""Planner robustness: every bad argument is refused with a ValueError/TypeError naming it (before any
large allocation), a planner shared by threads gives the plans of sequential calls, and the per-shape
solve buffers stay a bounded cache."""

import threading
import weakref

import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast.planning import available_backends, resolve_backend
from lewm_fast.planning.engine import MAX_SOLVE_SHAPES
from lewm_fast.planning.settings import plan_settings


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


def observations(e=2, h=1, size=28):
    g = torch.Generator().manual_seed(0)
    return torch.rand(e, h, 3, size, size, generator=g), torch.rand(e, 3, size, size, generator=g)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 0.0])
def test_var_scale_must_be_finite_and_positive(model, value):
    with pytest.raises(ValueError, match="var_scale"):
        lf.CEMPlanner(model, var_scale=value)
    with pytest.raises(ValueError, match="var_scale"):
        lf.Planner(model, "icem", var_scale=value)


def test_non_finite_weights_are_refused_naming_the_parameter(model):
    bad = tiny_model(seed=1)
    with torch.no_grad():
        bad.predictor.transformer.layers[1].mlp.net[1].weight[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"predictor\.transformer\.layers\.1\.mlp\.net\.1\.weight has NaN or Inf"):
        lf.CEMPlanner(bad)
    bad = tiny_model(seed=1)
    bad.pred_proj.net[1].running_var[0] = float("inf")
    with pytest.raises(ValueError, match=r"pred_proj\.net\.1\.running_var"):
        lf.Planner(bad, "mppi")


def test_not_a_lewm_and_meta_models_are_refused():
    with pytest.raises(TypeError, match="model: expected an lf.LeWM"):
        lf.CEMPlanner(torch.nn.Linear(2, 2))
    with torch.device("meta"):
        meta = lf.LeWM(tiny_model().cfg)
    with pytest.raises(ValueError, match="model: parameters on the meta device"):
        lf.CEMPlanner(meta)


@pytest.mark.parametrize("seed", ["a", 1.5, None, True])
def test_seed_must_be_an_int(model, seed):
    with pytest.raises(TypeError, match="seed: expected an int"):
        lf.CEMPlanner(model, seed=seed)


def test_empty_sizes_are_refused_naming_the_argument(model):
    planner = lf.CEMPlanner(model, num_samples=8, topk=2, iters=1)
    pixels, goal = observations()
    with pytest.raises(ValueError, match=r"pixels: expected at least one environment \(E >= 1\)"):
        planner.plan(pixels[:0], goal[:0])
    with pytest.raises(ValueError, match=r"pixels: expected at least one history frame \(H >= 1\)"):
        planner.plan(pixels[:, :0], goal)
    with pytest.raises(ValueError, match=r"cand: expected at least one candidate \(S >= 1\)"):
        planner.cost(pixels, goal, torch.zeros(2, 0, 5, 10))
    with pytest.raises(ValueError, match="num_samples"):
        lf.CEMPlanner(model, num_samples=0)
    with pytest.raises(ValueError, match="horizon"):
        lf.Planner(model, "ps", horizon=0)


def test_pixels_and_goal_of_different_sizes_are_refused(model):
    planner = lf.CEMPlanner(model, num_samples=8, topk=2, iters=1)
    pixels, _ = observations()
    _, goal = observations(size=56)
    with pytest.raises(ValueError, match=r"goal: expected frames of the pixels' size \(28, 28\), got \(56, 56\)"):
        planner.plan(pixels, goal)


def test_meta_observations_are_refused(model):
    planner = lf.CEMPlanner(model, num_samples=8, topk=2, iters=1)
    pixels, goal = observations()
    with pytest.raises(ValueError, match="pixels: expected a tensor with values, got one on the meta device"):
        planner.plan(pixels.to("meta"), goal)
    with pytest.raises(ValueError, match="goal: expected a tensor with values"):
        planner.plan(pixels, goal.to("meta"))


def test_a_huge_solve_is_refused_before_any_allocation(model):
    with pytest.raises(ValueError, match=r"num_samples: a solve of 1 environment\(s\) x 1000000000 samples"):
        lf.CEMPlanner(model, num_samples=10**9, topk=30)
    planner = lf.CEMPlanner(model, num_samples=200_000, topk=30, iters=1)  # fits for one environment
    pixels = torch.zeros(1, 1, 3, 28, 28).expand(4000, 1, 3, 28, 28)
    with pytest.raises(ValueError, match=r"a solve of 4000 environment\(s\)"):
        planner.plan(pixels, pixels[:, 0])


def test_bad_backend_and_knobs_are_refused(model, monkeypatch):
    with pytest.raises(ValueError, match="backend: expected one of"):
        lf.CEMPlanner(model, backend="cuda")
    with pytest.raises(ValueError, match="solver: expected one of"):
        lf.Planner(model, "pgd")
    with pytest.raises(TypeError, match="temperature: not a parameter of solver 'cem'"):
        lf.Planner(model, "cem", temperature=0.1)
    for var, value in (("LEWM_PLAN_THREADS", "0"), ("LEWM_PLAN_CHUNK_ROWS", "many"), ("LEWM_PLAN_COMPILE", "yes")):
        monkeypatch.setenv(var, value)
        with pytest.raises(ValueError, match=var):
            plan_settings()
        monkeypatch.delenv(var)
    assert plan_settings().chunk_rows is None  # the capability's choice (`capability.planner_chunk_rows`)


def test_backend_registry():
    assert available_backends("cpu")[:2] == ["reference", "torch"]
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("reference", "cpu") == "reference"


def test_dtype_auto_is_accepted(model):
    planner = lf.CEMPlanner(model, dtype="auto", num_samples=8, topk=2, iters=1)
    assert planner.dtype in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        lf.CEMPlanner(model, dtype=torch.float16)


@pytest.mark.parametrize("solver", ["cem", "icem", "grad"])
def test_a_planner_shared_by_two_threads_gives_sequential_plans(model, solver):
    """Each call holds the planner's lock: the two threaded plans equal the two plans of one planner called
    sequentially, in one order or the other (the generator is shared)."""
    params = dict(num_samples=4, n_steps=3) if solver == "grad" else dict(num_samples=16, topk=4, n_steps=3)
    (p1, g1), (p2, g2) = observations(e=2), observations(e=3)
    p2, g2 = p2.flip(0), g2.flip(0)

    def sequential(order):
        planner = lf.Planner(model, solver, seed=4, **params)
        return {i: planner.plan(*obs) for i, obs in order}

    first = sequential([(1, (p1, g1)), (2, (p2, g2))])
    second = sequential([(2, (p2, g2)), (1, (p1, g1))])

    def plan_into(planner, got, i, obs):
        got[i] = planner.plan(*obs)

    for _ in range(3):
        shared, got = lf.Planner(model, solver, seed=4, **params), {}
        threads = [
            threading.Thread(target=plan_into, args=(shared, got, i, o)) for i, o in ((1, (p1, g1)), (2, (p2, g2)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert any(all(torch.equal(got[i], ref[i]) for i in (1, 2)) for ref in (first, second))


def test_solve_buffers_are_a_bounded_lru_cache(model):
    planner = lf.CEMPlanner(model, num_samples=6, topk=2, iters=1)
    pixels, goal = observations(e=40)
    planner.plan(pixels[:1], goal[:1])
    first = weakref.ref(planner.engine._solves[(1, 1)])
    for e in range(1, 41):
        planner.plan(pixels[:e], goal[:e])
        assert len(planner.engine._solves) <= MAX_SOLVE_SHAPES
    assert first() is None  # evicted and freed
    assert list(planner.engine._solves) == [(e, 1) for e in range(41 - MAX_SOLVE_SHAPES, 41)]
