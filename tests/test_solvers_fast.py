"""The fast engines with every optimizer beyond tests/test_equivalence.py (which holds the costs, the
replayed updates and whole 30-iteration plans to the exact reference): no host sync inside any solve;
the gradient path's derivatives equal autograd through the reference rollout and its plans the
reference's (gradient descent has no selection to flip)."""

import copy

import pytest
import torch
from test_equivalence import CASES
from test_planner_fast import observations, sensitive_model
from test_solvers_optimizers import NoHostSync

import lewm_fast as lf
from lewm_fast.planning import ops
from lewm_fast.planning.equivalence import derived_bound
from lewm_fast.planning.optimizers import make_optimizer, solve_chunks
from lewm_fast.planning.reference import lewm_cost_reference, rollout_cost_reference
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost


@pytest.fixture(scope="module")
def model():
    return sensitive_model()


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_host_sync_inside_a_solve(model, case):
    pixels, goal = observations(2, 1)
    solver, params = CASES[case]
    planner = lf.Planner(model, solver, backend="torch", **params, **({} if case == "ps" else dict(n_steps=2)))
    planner.plan(pixels, goal)  # builds the solve of shape (2, 1)
    solve = planner.engine._solve_for(2, 1)
    with NoHostSync(), torch.inference_mode():
        solve.body()


def cost_and_gradient(cost_fn, cand):
    """(costs (E, S), d sum(costs) / d cand (E, S, T, A)) of cost_fn at cand."""
    cand = cand.detach().clone().requires_grad_(True)
    costs = cost_fn(cand)
    return costs.detach(), torch.autograd.grad(costs.sum(), cand)[0]


@pytest.mark.parametrize("h, horizon", [(1, 1), (1, 5), (2, 2), (3, 5), (4, 6)])
def test_differentiable_rollout_gradient_equals_reference(model, h, horizon):
    """The fast rollout's costs and gradients within the derived bound of the exact (float64) reference's."""
    hist, goal = torch.randn(2, h, 32), torch.randn(2, 32)
    cand = torch.randn(2, 6, horizon, 10)
    packed, exact_model = PackedPredictor(model, torch.float32, "cpu"), copy.deepcopy(model).double()
    fast = cost_and_gradient(lambda c: rollout_cost(packed, ops.TorchOps(), hist, goal, c, differentiable=True), cand)
    own = cost_and_gradient(lambda c: rollout_cost_reference(model, hist, goal, c), cand)
    exact = cost_and_gradient(lambda c: rollout_cost_reference(exact_model, hist.double(), goal.double(), c), cand)
    for f, o, e in zip(fast, own, exact):
        assert (f.double() - e).abs().max() <= derived_bound(e, o, torch.float32)


def gradient_plan_on_reference_costs(model, params, pixels, goal, seed, dtype):
    """The reference loop's gradient plan with costs and gradients in `dtype` (the samples, their draws and
    the optimizer's steps in fp32, as every planner keeps them)."""
    opt = make_optimizer("grad", **params)
    cost_model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    mean = torch.zeros(pixels.shape[0], 5, 10, device=pixels.device)

    def chunk_cost(lo, hi):
        return lewm_cost_reference(cost_model, pixels[lo:hi].to(dtype), goal[lo:hi].to(dtype))

    gen = torch.Generator(device=pixels.device).manual_seed(seed)
    return solve_chunks(opt, mean, torch.full_like(mean, opt.initial_std), chunk_cost, gen, opt.public_batch_size)


@pytest.mark.parametrize("optimizer_cls, kwargs", [(torch.optim.SGD, dict(lr=0.05)), (torch.optim.Adam, dict(lr=0.05))])
def test_gradient_plan_equals_reference(model, optimizer_cls, kwargs):
    """Every environment in one batch (the public default batch_size None), 30 steps: the reference planner
    is the reference loop on fp32 costs, and the fast plan is within the derived bound of the loop on exact
    (float64) costs and gradients."""
    pixels, goal = observations(3, 1)
    params = dict(num_samples=5, n_steps=30, optimizer_cls=optimizer_cls, optimizer_kwargs=kwargs, grad_clip=50.0,
                  action_noise=0.001)  # fmt: skip
    ref, fast = (lf.Planner(model, "grad", backend=b, seed=2, **params) for b in ("reference", "torch"))
    r, f = ref.plan_with_info(pixels, goal), fast.plan_with_info(pixels, goal)
    own = gradient_plan_on_reference_costs(model, params, pixels, goal, 2, torch.float32).actions
    exact = gradient_plan_on_reference_costs(model, params, pixels, goal, 2, torch.float64).actions
    assert torch.equal(r.actions, own)
    assert (f.actions.double() - exact.double()).abs().max() <= derived_bound(exact.double(), own, torch.float32)
    assert f.std is None and f.cost.shape == (3,)
    assert not any(p.grad is not None for p in model.parameters())  # the model gets no gradients


def test_gradient_planning_lowers_the_cost(model):
    pixels, goal = observations(2, 1)
    planner = lf.Planner(model, "grad", backend="torch", num_samples=4, n_steps=20, optimizer_kwargs=dict(lr=0.05))
    start = planner.cost(pixels, goal, torch.zeros(2, 1, 5, 10))[:, 0]
    plan = planner.plan(pixels, goal)
    assert (planner.cost(pixels, goal, plan[:, None])[:, 0] < start).all()
