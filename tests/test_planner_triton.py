"""The "triton" planner engine (fused kernels) with the claims of lewm_fast/planning/equivalence.py, as
tests/test_equivalence.py holds the CPU engine to them: costs within the derived bound of the exact
costs (fp32 and bf16), and whole 30-iteration plans of every sampling solver (fp32 and bf16) whose every
iteration is within the bounds, whose fused updates replay the reference update (within the fused sums'
rounding, ties to the lowest index) and whose plans equal the exact plan or, after a flip at a near-tie,
match its quality. Without a GPU the kernels run under TRITON_INTERPRET=1 (conftest.py): sizes stay small
(9 samples, horizon 3, one seed: the interpreter runs a rollout in about a second).
"""

import pytest
import torch
from test_equivalence import CASES, DTYPES
from test_planner_fast import observations, sensitive_model

import lewm_fast as lf
from lewm_fast.planning import equivalence as eq

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model():
    return sensitive_model().to(DEVICE)


def on_device(*tensors):
    return (t.to(DEVICE) for t in tensors)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("e, s, h, horizon", [(1, 7, 1, 5), (2, 5, 3, 3), (1, 6, 1, 1), (2, 3, 2, 4)])
def test_costs_are_within_the_derived_bound_of_the_exact_costs(model, dtype, e, s, h, horizon):
    pixels, goal = on_device(*observations(e, h))
    cand = torch.randn(e, s, horizon, 10, device=DEVICE)
    planner = lf.CEMPlanner(model, horizon=horizon, backend="triton", dtype=DTYPES[dtype])
    check = eq.check_planner_costs(planner, pixels, goal, cand)
    assert check.ok, check


def small(params: dict) -> dict:
    """A case's parameters at the interpreter's sizes: 9 samples, at most 3 elites."""
    out = dict(params, num_samples=9)
    if out.get("topk"):
        out["topk"] = 3
    if "n_elite_keep" in out:
        out["n_elite_keep"] = 2
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in out.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_whole_plans_are_equivalent_over_30_iterations(model, case, dtype):
    solver, params = CASES[case]
    steps = {} if solver == "ps" else dict(n_steps=30)
    planner = lf.Planner(model, solver, backend="triton", horizon=3, dtype=DTYPES[dtype], cuda_graph=False,
                         **small(params), **steps)  # fmt: skip
    trace = eq.trace(planner, *on_device(*observations(2, 1)), seed=0)
    assert trace.ok, trace.failures()
    assert eq.compare_quality([trace]).ok, eq.compare_quality([trace])
