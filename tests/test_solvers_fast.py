"""The fast engines with every optimizer against the reference engine (and against the optimizer's own
reference update): for one environment in fp32 on the CPU the fast engine draws the reference's noise,
so whole plans compare (30 iterations); for several environments in one batch the engine must equal the
optimizer's public update applied to its own batched draws with reference costs; the gradient path's
derivatives equal autograd through the reference rollout. No host sync inside any solve."""

import pytest
import torch
from helpers import rel_err
from test_planner_fast import observations, sensitive_model
from test_solvers_optimizers import NoHostSync

import lewm_fast as lf
from lewm_fast.planning import ops
from lewm_fast.planning.reference import encode_reference, rollout_cost_reference
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost

CASES = {
    "cem": ("cem", dict(num_samples=37, topk=5)),
    "icem": ("icem", dict(num_samples=37, topk=5)),
    "icem_best_box": ("icem", dict(num_samples=37, topk=5, return_mean=False, n_elite_keep=3,
                                   action_low=torch.full((10,), -0.8), action_high=torch.full((10,), 0.8))),
    "mppi": ("mppi", dict(num_samples=37, topk=5)),
    "mppi_all": ("mppi", dict(num_samples=37, topk=None, temperature=0.2)),
    "ps": ("ps", dict(num_samples=37)),
}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return sensitive_model()


def planners(model, case, **kw):
    solver, params = CASES[case]
    params = dict(params, **kw)
    return (lf.Planner(model, solver, backend=b, seed=3, **params) for b in ("reference", "torch"))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("h", [1, 3])
def test_one_environment_plan_equals_reference_over_30_iterations(model, case, h):
    pixels, goal = observations(1, h)
    kw = {} if case == "ps" else dict(n_steps=30)
    ref, fast = (p.plan_with_info(pixels, goal) for p in planners(model, case, **kw))
    torch.testing.assert_close(fast.actions, ref.actions, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(fast.elite_cost, ref.elite_cost, rtol=1e-4, atol=1e-6)
    assert (fast.std is None) == (ref.std is None)
    if "box" in case:
        assert fast.actions.abs().max() <= 0.8


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_engine_is_the_public_update_on_its_draws(model, case):
    """E = 3 in one batch: replay the engine's draws (the planner's generator, (E, S, T, A) at once) through
    the optimizer's reference update with reference costs; the plans must agree."""
    pixels, goal = observations(3, 2)
    solver, params = CASES[case]
    kw = {} if case == "ps" else dict(n_steps=4)
    fast = lf.Planner(model, solver, backend="torch", seed=5, **params, **kw)
    opt, gen = fast.optimizer, torch.Generator().manual_seed(5)
    hist, g_emb = encode_reference(model, pixels, goal)
    state = opt.init(torch.zeros(3, 5, 10), torch.full((3, 5, 10), opt.initial_std))
    for _ in range(opt.steps):
        cand = opt.candidates(state, gen)
        with torch.no_grad():
            state, _ = opt.update(state, cand, rollout_cost_reference(model, hist, g_emb, cand))
    want, _, want_cost = opt.result(state)
    got = fast.plan_with_info(pixels, goal)
    torch.testing.assert_close(got.actions, want, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(got.elite_cost, want_cost, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_host_sync_inside_a_solve(model, case):
    pixels, goal = observations(2, 1)
    solver, params = CASES[case]
    planner = lf.Planner(model, solver, backend="torch", **params, **({} if case == "ps" else dict(n_steps=2)))
    planner.plan(pixels, goal)  # builds the solve of shape (2, 1)
    solve = planner.engine._solve_for(2, 1)
    with NoHostSync(), torch.inference_mode():
        solve.body()


@pytest.mark.parametrize("h, horizon", [(1, 1), (1, 5), (2, 2), (3, 5), (4, 6)])
def test_differentiable_rollout_gradient_equals_reference(model, h, horizon):
    hist, goal = torch.randn(2, h, 32), torch.randn(2, 32)
    cand = torch.randn(2, 6, horizon, 10)
    packed = PackedPredictor(model, torch.float32, "cpu")
    a, b = cand.clone().requires_grad_(), cand.clone().requires_grad_()
    fast = rollout_cost(packed, ops.TorchOps(), hist, goal, a, differentiable=True)
    ref = rollout_cost_reference(model, hist, goal, b)
    (ga,) = torch.autograd.grad(fast.sum(), a)
    (gb,) = torch.autograd.grad(ref.sum(), b)
    assert rel_err(fast.detach(), ref.detach()) <= 1e-4
    assert rel_err(ga, gb) <= 1e-4


@pytest.mark.parametrize("optimizer_cls, kwargs", [(torch.optim.SGD, dict(lr=0.05)), (torch.optim.Adam, dict(lr=0.05))])
def test_gradient_plan_equals_reference(model, optimizer_cls, kwargs):
    """Every environment in one batch (the public default batch_size None) against the reference loop."""
    pixels, goal = observations(3, 1)
    params = dict(num_samples=5, n_steps=30, optimizer_cls=optimizer_cls, optimizer_kwargs=kwargs, grad_clip=50.0,
                  action_noise=0.001)  # fmt: skip
    ref, fast = (lf.Planner(model, "grad", backend=b, seed=2, **params) for b in ("reference", "torch"))
    r, f = ref.plan_with_info(pixels, goal), fast.plan_with_info(pixels, goal)
    torch.testing.assert_close(f.actions, r.actions, rtol=1e-3, atol=1e-4)
    assert f.std is None and f.elite_cost.shape == (3,)
    assert not any(p.grad is not None for p in model.parameters())  # the model gets no gradients


def test_gradient_planning_lowers_the_cost(model):
    pixels, goal = observations(2, 1)
    planner = lf.Planner(model, "grad", backend="torch", num_samples=4, n_steps=20, optimizer_kwargs=dict(lr=0.05))
    start = planner.cost(pixels, goal, torch.zeros(2, 1, 5, 10))[:, 0]
    plan = planner.plan(pixels, goal)
    assert (planner.cost(pixels, goal, plan[:, None])[:, 0] < start).all()
