"""The fast CPU engine ("torch": fp32 and bf16) against the exact reference, with the claims of
lewm_fast/planning/equivalence.py, which hold on any arithmetic (any ISA PyTorch or oneDNN dispatches to,
any matmul the capability picks):

1. costs within the derived bound of the float64 reference cost, over awkward shapes;
2. one iteration: the fast update on the fast costs replays the optimizer's reference update bit for bit;
3. whole 30-iteration plans of every sampling solver: every iteration within 1 and 2, selections differing
   from the exact ones only at near-ties, the exact plan bit for bit where no selection flipped, and
   after a flip the plans' quality over several seeds.
Each check is also shown to fail on a wrong rollout or a wrong update. The Triton engine runs the same
checks in tests/test_planner_triton.py, the GPU report on a GPU."""

import pytest
import torch
from test_planner_fast import observations, sensitive_model

import lewm_fast as lf
from lewm_fast.capability import PLAN_DTYPES
from lewm_fast.planning import equivalence as eq
from lewm_fast.planning import ops
from lewm_fast.planning.cpu_ops import CpuOps

BOX = dict(action_low=torch.full((10,), -0.8), action_high=torch.full((10,), 0.8))
# Every sampling solver, with its options that change the update (iCEM's kept elites, best sample and box;
# MPPI's top-k or all samples). S = 37: not a power of two.
CASES = {
    "cem": ("cem", dict(num_samples=37, topk=5)),
    "icem": ("icem", dict(num_samples=37, topk=5)),
    "icem_best_box": ("icem", dict(num_samples=37, topk=5, return_mean=False, n_elite_keep=3, **BOX)),
    "mppi": ("mppi", dict(num_samples=37, topk=5)),
    "mppi_all": ("mppi", dict(num_samples=37, topk=None, temperature=0.2)),
    "ps": ("ps", dict(num_samples=37)),
}  # fmt: skip
SEEDS = (0, 1, 2)
DTYPES = PLAN_DTYPES


@pytest.fixture(scope="module")
def model():
    return sensitive_model()


def planner(model, case, dtype=torch.float32, backend="torch", **changes):
    solver, params = CASES[case]
    steps = {} if solver == "ps" else dict(n_steps=30)
    return lf.Planner(model, solver, backend=backend, dtype=dtype, **{**params, **steps, **changes})


# (E, S, H, horizon): one environment, odd sample counts, every window regime (growing, sliding, history
# as long as the horizon, longer than the window).
SHAPES = [(1, 1, 1, 1), (1, 13, 1, 5), (2, 7, 2, 2), (3, 5, 3, 5), (2, 9, 4, 6), (5, 3, 1, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("e, s, h, horizon", SHAPES)
def test_fast_costs_are_within_the_derived_bound_of_the_exact_costs(model, dtype, e, s, h, horizon):
    pixels, goal = observations(e, h, seed=e + s)
    cand = torch.randn(e, s, horizon, 10, generator=torch.Generator().manual_seed(h))
    check = eq.check_planner_costs(lf.CEMPlanner(model, horizon=horizon, dtype=DTYPES[dtype]), pixels, goal, cand)
    assert check.ok, check


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_wrong_rollout_fails_the_cost_bound(model, dtype):
    """The bound is tight enough to catch a rollout that feeds the action blocks in the wrong order."""
    pixels, goal = observations(2, 1)
    cand = torch.randn(2, 9, 5, 10)
    fast = lf.CEMPlanner(model, dtype=DTYPES[dtype])
    ref = eq.ReferenceCosts(model, DTYPES[dtype])
    ref.encode(pixels, goal)
    wrong = fast.cost(pixels, goal, cand.roll(1, dims=2))
    assert not eq.check_costs(wrong, ref.exact(cand), ref.own(cand), DTYPES[dtype]).ok


def random_state(opt, e=3, t=5, a=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.randn(e, t, a, generator=g), torch.rand(e, t, a, generator=g) + 0.1
    return opt.init(mean, std), g


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("op_set", ["torch", "cpu"])
def test_one_iteration_replays_the_reference_update_bit_for_bit(model, case, op_set):
    """The fast update on fast costs is the optimizer's reference update (the same operations), for random
    states, carried elites and costs with exact ties."""
    opt = planner(model, case).optimizer
    op = ops.TorchOps() if op_set == "torch" else CpuOps(torch.float32)
    state, g = random_state(opt)
    for _ in range(3):  # the second and third iterations carry iCEM's elites
        cand = opt.candidates(state, g)
        costs = torch.randn(cand.shape[:2], generator=g).round(decimals=1)  # exact ties among 37
        fast, reference = opt.fast_update(state, cand, costs, op), opt.update(state, cand, costs)[0]
        assert eq.replay_error(fast, reference) == 0.0
        state = fast if opt.steps > 1 else state


def test_a_wrong_update_fails_the_replay(model):
    opt = planner(model, "cem").optimizer
    state, g = random_state(opt)
    cand = opt.candidates(state, g)
    costs = torch.randn(cand.shape[:2], generator=g)
    highest = opt.fast_update(state, cand, -costs, ops.TorchOps())  # elites of the highest costs
    assert eq.replay_error(highest, opt.update(state, cand, costs)[0]) > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_whole_plans_are_equivalent_over_30_iterations(model, case, dtype):
    """Two environments (one batch), history 2 and 1: every iteration of every seed within claims 1-3, and
    the plans' quality where the fast and exact runs parted."""
    fast = planner(model, case, DTYPES[dtype])
    traces = [eq.trace(fast, *observations(2, 1 + seed % 2, seed=seed), seed=seed) for seed in SEEDS]
    assert all(t.ok for t in traces), [t.failures() for t in traces]
    assert eq.compare_quality(traces).ok, eq.compare_quality(traces)
    if dtype == "fp32" and fast.optimizer.rank_based:
        assert any(t.plans_equal for t in traces)  # the claim of bit-for-bit plans was exercised


class WrongOps(CpuOps):
    """An op set whose elite update keeps one elite too few (a plausible off-by-one)."""

    def elite_update(self, cost, cand, topk, **kw):
        return ops.elite_update(cost, cand, topk - 1, **kw)


def test_a_wrong_solve_fails_the_trace(model):
    fast = planner(model, "cem", n_steps=3)
    fast.engine.ops = WrongOps(torch.float32)
    trace = eq.trace(fast, *observations(1, 1))
    assert not trace.ok and any("replay" in f or "iteration" in f for f in trace.failures())


def test_a_flip_is_judged_by_quality_and_a_bad_plan_fails_it():
    """Plans that parted are compared by their exact costs: losing more than the tolerance of the exact
    plans' improvement fails."""
    start, exact = torch.tensor([2.0]), torch.tensor([1.0])

    def parted(fast_cost):
        return eq.Trace(plans_equal=False, fast_cost=torch.tensor([fast_cost]), exact_cost=exact, start_cost=start)

    assert eq.compare_quality([parted(1.1), parted(0.9)]).ok
    assert not eq.compare_quality([parted(1.0 + 2 * eq.QUALITY_TOLERANCE)]).ok
    assert eq.compare_quality([]).ok  # nothing parted: nothing to judge
