"""Parity with the recorded outputs of the public LeWM code (tests/fixtures/public_lewm_small.pt, made by
tests/fixtures/record_public.py): loading its state_dict, encode, predict, SIGReg (value and gradient under
a seed), the planning cost and a 30-iteration CEM plan under a seed.

The public outputs were recorded on another machine, in another arithmetic: each must lie within the
derived bound (`equivalence.derived_bound`) of the exact (float64) output of the same weights and inputs,
the bound that our own fp32 reference path's rounding sets on this machine.
"""

import pytest
import torch

import lewm_fast as lf
from lewm_fast.planning.equivalence import derived_bound
from lewm_fast.planning.reference import lewm_cost_reference
from lewm_fast.sigreg import draw_directions, knot_tables


@pytest.fixture(scope="module")
def model(public_fixture):
    cfg = lf.LeWMConfig.from_published(public_fixture["config"])
    m = lf.LeWM(cfg)
    lf.interop.load_public_state_dict(m, public_fixture["state_dict"])
    return m.eval()


def _double(model):
    exact = lf.LeWM(model.cfg).eval()
    exact.load_state_dict(model.state_dict())
    return exact.double()


def assert_within_bound(recorded: torch.Tensor, compute) -> None:
    """recorded (fp32, another machine) within the derived bound of compute(float64) given compute(float32)."""
    exact, own = compute(torch.float64), compute(torch.float32)
    error = (recorded.double() - exact).abs().max().item()
    assert error <= derived_bound(exact, own, torch.float32), error


def test_encode(model, public_fixture):
    rec, exact_model = public_fixture["encode"], _double(model)

    def encode(dtype):
        m = exact_model if dtype == torch.float64 else model
        with torch.no_grad():
            return m.encode(rec["pixels"].to(dtype))

    assert_within_bound(rec["emb"], encode)


def test_predict(model, public_fixture):
    rec, exact_model = public_fixture["predict"], _double(model)

    def embed_actions(dtype):
        m = exact_model if dtype == torch.float64 else model
        with torch.no_grad():
            return m.embed_actions(rec["actions"].to(dtype))

    def predict(dtype):
        m = exact_model if dtype == torch.float64 else model
        with torch.no_grad():
            return m.predict(rec["emb"].to(dtype), rec["act_emb"].to(dtype))

    assert_within_bound(rec["act_emb"], embed_actions)
    assert_within_bound(rec["out"], predict)


def sigreg_exact(x, directions, knots):
    """The SIGReg formula in float64, knot tables included: (value, gradient)."""
    t = torch.linspace(0, 3.0, knots, dtype=torch.float64)
    phi = torch.exp(-t.square() / 2)
    weights = torch.full((knots,), 2 * 3.0 / (knots - 1), dtype=torch.float64) * phi
    weights[[0, -1]] /= 2
    x = x.double().requires_grad_(True)
    z = (x @ directions.double()).unsqueeze(-1) * t
    err = (z.cos().mean(-3) - phi).square() + z.sin().mean(-3).square()
    value = ((err @ weights) * x.size(-2)).mean()
    return value.detach(), torch.autograd.grad(value, x)[0]


def sigreg_own(x, directions, knots):
    """The reference SIGReg (fp32): (value, gradient)."""
    x = x.clone().requires_grad_(True)
    value = lf.sigreg_reference(x, directions, *knot_tables(knots))
    return value.detach(), torch.autograd.grad(value, x)[0]


@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])
def test_sigreg_value_and_gradient_under_seed(public_fixture, backend):
    from lewm_fast.sigreg import _BACKENDS, _unavailable

    device = torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")
    if backend not in _BACKENDS or _unavailable(backend, device) is not None:
        pytest.skip(f"backend {backend!r} unavailable here")
    rec = public_fixture["sigreg"]
    torch.manual_seed(rec["seed"])
    directions = draw_directions(rec["x"].shape[-1], rec["num_proj"])  # the public draw, on the CPU's RNG
    exact = sigreg_exact(rec["x"], directions, rec["knots"])
    own = sigreg_own(rec["x"], directions, rec["knots"])
    x = rec["x"].clone().to(device).requires_grad_(True)
    torch.manual_seed(rec["seed"])
    reg = lf.SIGReg(knots=rec["knots"], num_proj=rec["num_proj"], backend=backend).to(device)
    value = reg(x, directions=None if device.type == "cpu" else directions.to(device))
    value.backward()
    for name, recorded, ours, e, o in (("value", rec["value"], value.detach().cpu(), *(v[0] for v in (exact, own))),
                                       ("grad", rec["grad"], x.grad.cpu(), *(v[1] for v in (exact, own)))):  # fmt: skip
        bound = derived_bound(e, o, torch.float32)
        assert (recorded.double() - e).abs().max() <= bound, f"the public {name}"
        assert (ours.double() - e).abs().max() <= bound, f"the {backend} {name}"


def reference_costs(model, rec, dtype):
    """The reference cost (the public `get_cost`, written plainly) of the recorded candidates in `dtype`."""
    m = _double(model) if dtype == torch.float64 else model
    with torch.no_grad():
        return lewm_cost_reference(m, rec["pixels"].to(dtype), rec["goal"].to(dtype))(rec["candidates"].to(dtype))


def test_cost(model, public_fixture):
    rec = public_fixture["cost"]
    exact, own = reference_costs(model, rec, torch.float64), reference_costs(model, rec, torch.float32)
    assert own.shape == rec["cost"].shape
    assert (rec["cost"].double() - exact).abs().max() <= derived_bound(exact, own, torch.float32)


def test_plan_under_seed_over_30_iterations(model, public_fixture):
    """The recorded plan's elites are separated by more than any fp32 arithmetic's cost error (its elite
    margin against four times the derived cost bound here), so the reference reproduces its selections
    on any machine and ends in the public plan within fp32 rounding."""
    rec, cost = public_fixture["plan"], public_fixture["cost"]
    exact, own = reference_costs(model, cost, torch.float64), reference_costs(model, cost, torch.float32)
    relative_bound = derived_bound(exact, own, torch.float32) / exact.abs().max().item()
    assert rec["n_steps"] == 30 and rec["elite_margin"] > 4 * relative_bound
    params = {k: rec[k] for k in ("num_samples", "topk", "n_steps", "var_scale")}
    planner = lf.Planner(model, "cem", horizon=rec["horizon"], seed=rec["seed"], backend="reference", **params)
    plan = planner.plan(rec["pixels"], rec["goal"])
    # the same selections, other reduction orders (the recording machine's kernels): each iteration's mean and
    # std add a few (8) fp32 roundings of the plan's magnitude, carried linearly into the next iteration
    atol = rec["n_steps"] * 8 * torch.finfo(torch.float32).eps * rec["actions"].abs().max().item()
    torch.testing.assert_close(plan, rec["actions"], rtol=0, atol=atol)
