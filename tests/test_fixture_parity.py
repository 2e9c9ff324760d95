"""Parity with the recorded outputs of the public LeWM code (../shared/fixtures/public_lewm_small.pt):
loading its state_dict, encode, predict, the reference SIGReg (value and gradient under a seed), the
planning cost and a CEM plan under a seed."""

import pytest
import torch
from helpers import rel_err

import lewm_fast as lf


@pytest.fixture(scope="module")
def model(public_fixture):
    cfg = lf.LeWMConfig.from_published(public_fixture["config"])
    m = lf.LeWM(cfg)
    lf.interop.load_public_state_dict(m, public_fixture["state_dict"])
    return m.eval()


def test_encode(model, public_fixture):
    rec = public_fixture["encode"]
    with torch.no_grad():
        assert rel_err(model.encode(rec["pixels"]), rec["emb"]) <= 1e-5


def test_predict(model, public_fixture):
    rec = public_fixture["predict"]
    with torch.no_grad():
        act_emb = model.embed_actions(rec["actions"])
        assert rel_err(act_emb, rec["act_emb"]) <= 1e-5
        assert rel_err(model.predict(rec["emb"], rec["act_emb"]), rec["out"]) <= 1e-5


@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])
def test_sigreg_value_and_gradient_under_seed(public_fixture, backend):
    from lewm_fast.sigreg import _BACKENDS, _unavailable

    device = torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")
    if backend not in _BACKENDS or _unavailable(backend, device) is not None:
        pytest.skip(f"backend {backend!r} unavailable here")
    rec = public_fixture["sigreg"]
    x = rec["x"].clone().to(device).requires_grad_(True)
    torch.manual_seed(rec["seed"])
    reg = lf.SIGReg(knots=rec["knots"], num_proj=rec["num_proj"], backend=backend).to(device)
    # The public draw is on the CPU's RNG: on a GPU, draw there as the module does for CPU inputs, then move.
    directions = None if device.type == "cpu" else lf.draw_directions(x.shape[-1], rec["num_proj"]).to(device)
    value = reg(x, directions=directions)
    value.backward()
    assert rel_err(value.detach().cpu(), rec["value"]) <= 1e-5
    assert rel_err(x.grad.cpu(), rec["grad"]) <= 1e-5


def test_cost(model, public_fixture):
    rec = public_fixture["cost"]
    planner = lf.CEMPlanner(model, backend="reference")
    cost = planner.cost(rec["pixels"], rec["goal"], rec["candidates"])
    assert cost.shape == rec["cost"].shape
    assert rel_err(cost, rec["cost"]) <= 1e-5


def test_plan_under_seed(model, public_fixture):
    rec = public_fixture["plan"]
    planner = lf.CEMPlanner(
        model, num_samples=rec["num_samples"], topk=rec["topk"], iters=rec["iters"], horizon=rec["horizon"],
        var_scale=rec["var_scale"], seed=rec["seed"], backend="reference",
    )  # fmt: skip
    actions = planner.plan(rec["pixels"], rec["goal"])
    assert rel_err(actions, rec["actions"]) <= 1e-3
