"""GPU checks of the fast planner (skipped without CUDA; run on a GPU machine with
`python -m pytest -q -m gpu tests/`): for every sampling optimizer the captured CUDA graph replays the
eager solve exactly and a solve or a replay makes no host sync; replays advance the generator like eager
calls, costs and gradient plans within the derived bounds of the exact reference (planning/equivalence.py;
whole-plan equivalence on the GPU: benchmarks/gpu_report.py's equivalence stage).
"""

import pytest
import torch
from test_planner_fast import observations, sensitive_model
from test_solvers_fast import gradient_plan_on_reference_costs

import lewm_fast as lf
from lewm_fast.planning import equivalence as eq
from lewm_fast.planning.equivalence import derived_bound

pytestmark = pytest.mark.gpu
BACKENDS = ["torch", "triton"]
SOLVERS = {
    "cem": dict(num_samples=40, topk=6, n_steps=3),
    "icem": dict(num_samples=40, topk=6, n_steps=3, action_low=torch.full((10,), -1.0),
                 action_high=torch.full((10,), 1.0)),
    "icem_best": dict(num_samples=40, topk=6, n_steps=3, return_mean=False),
    "mppi": dict(num_samples=40, topk=6, n_steps=3),
    "mppi_all": dict(num_samples=40, topk=None, n_steps=3),
    "ps": dict(num_samples=40),
}  # fmt: skip


def planner_for(model, case, **kw):
    params = dict(SOLVERS[case])
    for key in ("action_low", "action_high"):
        if key in params:
            params[key] = params[key].cuda()
    return lf.Planner(model, case.split("_")[0], **params, **kw)


@pytest.fixture(scope="module")
def model():
    return sensitive_model().cuda()


def cuda_obs(e, h=1):
    return tuple(t.cuda() for t in observations(e, h))


@pytest.mark.parametrize("case", sorted(SOLVERS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_replay_equals_eager(model, case, backend, dtype):
    pixels, goal = cuda_obs(3)
    graphed = planner_for(model, case, seed=2, backend=backend, dtype=dtype, cuda_graph=True)
    eager = planner_for(model, case, seed=2, backend=backend, dtype=dtype, cuda_graph=False)
    for _ in range(3):  # first call captures; later calls replay with a generator that moved on
        a, b = graphed.plan_with_info(pixels, goal), eager.plan_with_info(pixels, goal)
        torch.testing.assert_close(a.actions, b.actions, rtol=0, atol=0)
        torch.testing.assert_close(a.cost, b.cost, rtol=0, atol=0)
    assert graphed.engine._solves[(3, 1)].graph is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_replay_follows_new_inputs_and_reseed(model, backend):
    kw = dict(num_samples=32, topk=4, iters=2, seed=0, backend=backend)
    planner = lf.CEMPlanner(model, **kw)
    p1, g1 = cuda_obs(2)
    p2, g2 = cuda_obs(2, 1)
    p2 = p2.flip(-1)
    planner.reseed(5)
    a = planner.plan(p1, g1)
    planner.reseed(5)
    b = planner.plan(p2, g2)  # same noise, other observations: must differ (inputs copied in)
    planner.reseed(5)
    c = planner.plan(p1, g1)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("case", sorted(SOLVERS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph", [False, True])
def test_a_solve_or_replay_makes_no_host_sync(model, case, backend, graph):
    pixels, goal = cuda_obs(2)
    planner = planner_for(model, case, backend=backend, cuda_graph=graph)
    mean, std = planner.initial_distribution(2)
    planner.engine.plan(pixels, goal, mean, std)  # warm-up (Triton compilation may sync) or capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = planner.engine.plan(pixels, goal, mean, std)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.actions.is_cuda


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_costs_on_cuda_are_within_the_derived_bound(model, backend, dtype):
    pixels, goal = cuda_obs(2, 1)
    cand = torch.randn(2, 37, 5, 10, device="cuda")
    check = eq.check_planner_costs(lf.CEMPlanner(model, backend=backend, dtype=dtype), pixels, goal, cand)
    assert check.ok, check


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_planning_on_cuda_is_within_the_derived_bound(model, backend):
    pixels, goal = cuda_obs(2)
    params = dict(num_samples=4, n_steps=5, optimizer_kwargs=dict(lr=0.05))
    fast = lf.Planner(model, "grad", backend=backend, seed=1, **params).plan(pixels, goal)
    own = gradient_plan_on_reference_costs(model, params, pixels, goal, 1, torch.float32).actions
    exact = gradient_plan_on_reference_costs(model, params, pixels, goal, 1, torch.float64).actions.double()
    assert (fast.double() - exact).abs().max() <= derived_bound(exact, own, torch.float32)
