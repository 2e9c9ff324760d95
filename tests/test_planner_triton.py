"""The "triton" planner engine (fused kernels) against the reference planner and the "torch" engine.
Without a GPU the kernels run under TRITON_INTERPRET=1 (conftest.py): sizes stay small.

Same rules as test_planner_fast.py: fp32 costs within 1e-4 of the reference (and candidate differences
within 1e-3 of their spread); E = 1 fp32 plans equal the reference plan on the CPU (same draw); bf16
costs close to the reference.
"""

import pytest
import torch
from helpers import rel_err
from test_planner_fast import assert_same_costs, observations, sensitive_model

import lewm_fast as lf

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model():
    return sensitive_model().to(DEVICE)


def planner(model, **kw):
    return lf.CEMPlanner(model, backend="triton", **kw)


@pytest.mark.parametrize("e, s, h, horizon", [(1, 7, 1, 5), (2, 5, 3, 3), (1, 6, 1, 1), (2, 3, 2, 4)])
def test_cost_equals_reference(model, e, s, h, horizon):
    pixels, goal = (t.to(DEVICE) for t in observations(e, h))
    cand = torch.randn(e, s, horizon, 10, device=DEVICE)
    want = lf.CEMPlanner(model, horizon=horizon, backend="reference").cost(pixels, goal, cand)
    assert_same_costs(planner(model, horizon=horizon).cost(pixels, goal, cand), want)


def test_bf16_cost_is_close_to_reference(model):
    pixels, goal = (t.to(DEVICE) for t in observations(2, 1))
    cand = torch.randn(2, 9, 5, 10, device=DEVICE)
    want = lf.CEMPlanner(model, backend="reference").cost(pixels, goal, cand)
    got = planner(model, dtype=torch.bfloat16).cost(pixels, goal, cand)
    torch_bf16 = lf.CEMPlanner(model, backend="torch", dtype=torch.bfloat16).cost(pixels, goal, cand)
    assert rel_err(got, want) <= 3e-2
    assert rel_err(got, want) <= 2 * rel_err(torch_bf16, want) + 1e-3


def test_plan_equals_reference_plan_and_elites(model):
    """E = 1, fp32: the same noise as the reference on the CPU, so the same elites every iteration."""
    if DEVICE != "cpu":
        pytest.skip("the reference draws the same noise only on the CPU")
    pixels, goal = observations(1, 1)
    kw = dict(num_samples=9, topk=3, iters=2, seed=3)
    ref = lf.CEMPlanner(model, backend="reference", **kw).plan_with_info(pixels, goal)
    fast = planner(model, **kw).plan_with_info(pixels, goal)
    torch.testing.assert_close(fast.actions, ref.actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.std, ref.std, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.elite_cost, ref.elite_cost, rtol=1e-4, atol=1e-6)


def test_plan_equals_torch_engine_for_several_environments(model):
    """Both fast engines draw the same batched noise: the same plan for E = 3 (S = 5, not a power of two)."""
    pixels, goal = (t.to(DEVICE) for t in observations(3, 2))
    kw = dict(num_samples=5, topk=2, iters=2, seed=8, cuda_graph=False)
    a = planner(model, **kw).plan(pixels, goal)
    b = lf.CEMPlanner(model, backend="torch", **kw).plan(pixels, goal)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "solver, params",
    [("icem", dict(topk=3, n_elite_keep=2)), ("icem", dict(topk=3, return_mean=False)), ("mppi", dict(topk=3)),
     ("mppi", dict(topk=None)), ("ps", {})],
)  # fmt: skip
def test_every_optimizer_on_the_triton_engine_equals_the_torch_engine(model, solver, params):
    """The fused updates (iCEM's momentum and elite indices, MPPI's weighted mean) in a whole solve: both
    fast engines draw the same batched noise, so E = 2 plans must agree."""
    pixels, goal = (t.to(DEVICE) for t in observations(2, 1))
    kw = dict(num_samples=9, seed=6, cuda_graph=False, **params, **({} if solver == "ps" else dict(n_steps=2)))
    a = lf.Planner(model, solver, backend="triton", **kw).plan_with_info(pixels, goal)
    b = lf.Planner(model, solver, backend="torch", **kw).plan_with_info(pixels, goal)
    torch.testing.assert_close(a.actions, b.actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.elite_cost, b.elite_cost, rtol=1e-4, atol=1e-6)
