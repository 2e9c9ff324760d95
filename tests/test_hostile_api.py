"""Hostile API calls: NaN, infinite, negative and crossed hyperparameters, seeds out of range, requests
too large for memory, objects of the wrong kind, integer weights. Each is refused with the argument named
(before anything is allocated or written), never answered with NaN or a traceback from deep inside."""

import math

import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf

NAN, INF = float("nan"), float("inf")
A = 10  # the tiny model's action block: frameskip 5 x action_dim 2


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _px(e=1):
    return torch.randn(e, 1, 3, 28, 28), torch.randn(e, 3, 28, 28)


@pytest.mark.parametrize("lambd", [NAN, INF, -0.1, "0.1", None])
def test_lewm_loss_refuses_a_bad_lambda(model, lambd):
    with pytest.raises((TypeError, ValueError), match="^lambd: "):
        lf.lewm_loss(model, torch.randn(2, 4, 3, 28, 28), torch.randn(2, 4, A), lf.SIGReg(num_proj=8), lambd=lambd)


SMALL = dict(num_samples=8, n_steps=2)


@pytest.mark.parametrize(
    "solver, params, name",
    [
        ("grad", dict(optimizer_kwargs={"lr": NAN}), r"optimizer_kwargs\['lr'\]"),
        ("grad", dict(optimizer_kwargs={"lr": INF}), r"optimizer_kwargs\['lr'\]"),
        ("grad", dict(optimizer_kwargs={"lr": -1.0}), r"optimizer_kwargs\['lr'\]"),
        ("grad", dict(optimizer_kwargs={"lr": torch.tensor(NAN)}), r"optimizer_kwargs\['lr'\]"),
        ("grad", dict(optimizer_cls=torch.optim.Adam, optimizer_kwargs={"lr": 0.1, "betas": (0.9, NAN)}),
         r"optimizer_kwargs\['betas'\]"),
        ("grad", dict(var_scale=NAN), "var_scale"),
        ("grad", dict(action_noise=-1.0), "action_noise"),
        ("grad", dict(grad_clip=0.0), "grad_clip"),
        ("cem", dict(var_scale=NAN, topk=4), "var_scale"),
        ("cem", dict(var_scale=-1.0, topk=4), "var_scale"),
        ("mppi", dict(temperature=0.0, topk=4), "temperature"),
        ("mppi", dict(temperature=NAN, topk=4), "temperature"),
        ("ps", dict(noise_scale=INF, n_steps=None), "noise_scale"),
        ("icem", dict(alpha=1.5, topk=4), "alpha"),
        ("icem", dict(noise_beta=NAN, topk=4), "noise_beta"),
        ("icem", dict(topk=4, action_low=torch.ones(A), action_high=-torch.ones(A)), "action_low, action_high"),
        ("icem", dict(topk=4, action_low=torch.full((A,), NAN), action_high=torch.ones(A)), "action_low"),
        ("icem", dict(topk=4, action_low=-torch.ones(A), action_high=torch.full((A,), NAN)), "action_high"),
        ("icem", dict(topk=4, action_low=-torch.ones(3), action_high=torch.ones(3)), "action_low"),
        ("icem", dict(topk=4, action_low=-torch.ones(A), action_high=torch.ones(A - 1)), "action_high"),
        ("icem", dict(topk=4, action_low=-torch.ones(A, dtype=torch.long), action_high=torch.ones(A)), "action_low"),
        ("icem", dict(topk=4, action_low=-torch.ones(A)), "action_low, action_high"),
    ],
)  # fmt: skip
def test_planner_hyperparameters_are_refused_at_construction(model, solver, params, name):
    params = {**SMALL, **params}
    if params.get("n_steps", 1) is None:
        del params["n_steps"]
    with pytest.raises((TypeError, ValueError), match=f"^{name}: "):
        lf.Planner(model, solver, **params)


def test_an_unbounded_action_box_is_no_bound(model):
    """An infinite bound (an unbounded gymnasium Box) is accepted; NaN is not."""
    planner = lf.Planner(model, "icem", topk=4, **SMALL, action_low=torch.full((A,), -INF),
                         action_high=torch.full((A,), INF))  # fmt: skip
    assert torch.isfinite(planner.plan(*_px())).all()


@pytest.mark.parametrize("seed", [2**70, -1, 1.5, True, "0"])
def test_seeds_out_of_range_are_refused(model, seed):
    with pytest.raises((TypeError, ValueError), match="^seed: "):
        lf.Planner(model, "cem", seed=seed, **SMALL, topk=4)
    with pytest.raises((TypeError, ValueError), match="^seed: "):
        lf.CEMPlanner(model, num_samples=8, topk=4, iters=1, seed=seed)
    with pytest.raises((TypeError, ValueError), match="^seed: "):
        lf.interop.CEMSolver(model, num_samples=8, topk=4, n_steps=1, seed=seed)
    planner = lf.Planner(model, "cem", **SMALL, topk=4)
    with pytest.raises((TypeError, ValueError), match="^seed: "):
        planner.reseed(seed)


def test_a_huge_batch_of_environments_is_refused_before_allocation(model):
    """10^7 environments as an expanded view (no memory): refused with the estimate, naming pixels."""
    px, goal = _px()
    planner = lf.CEMPlanner(model, num_samples=8, topk=4, iters=1)
    with pytest.raises(ValueError, match=r"^pixels: a solve of 10000000 environment\(s\) .* GiB"):
        planner.plan(px.expand(10**7, -1, -1, -1, -1), goal.expand(10**7, -1, -1, -1))


def test_sigreg_directions_too_many_for_memory_are_refused():
    with pytest.raises(ValueError, match=r"^num_proj: SIGReg with 10000000000 directions needs at least ~[\d.]+ GiB"):
        lf.SIGReg(num_proj=10**10)
    reg = lf.SIGReg(num_proj=10**8)  # fits alone, not with this batch's projections
    with pytest.raises(ValueError, match=r"^num_proj: SIGReg of proj \(4, 100000, 32\)"):
        reg(torch.zeros(1, 1, 32).expand(4, 100_000, 32))
    with pytest.raises(ValueError, match="^directions: "):
        lf.sigreg(torch.zeros(1, 1, 32).expand(4, 10**9, 32), torch.randn(32, 64))


@pytest.mark.parametrize(
    "model_arg, kwargs, error, name",
    [
        ("object", {}, TypeError, "model"),
        ("model", {"extra_config": {"x": object()}}, TypeError, "extra_config"),
        ("model", {"extra_config": {"x": math.nan}}, ValueError, "extra_config"),
        ("model", {"extra_config": ["not", "a", "dict"]}, TypeError, "extra_config"),
    ],
)  # fmt: skip
def test_save_official_refuses_before_creating_anything(model, tmp_path, model_arg, kwargs, error, name):
    target = tmp_path / "ckpt"
    with pytest.raises(error, match=f"^{name}: "):
        lf.interop.save_official(object() if model_arg == "object" else model, target, **kwargs)
    assert not target.exists()


def test_save_official_into_a_file_is_refused(model, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("mine")
    with pytest.raises(ValueError, match="^path: "):
        lf.interop.save_official(model, target)
    assert target.read_text() == "mine"


def test_integer_weights_are_refused_not_cast(model, tmp_path):
    lf.interop.save_official(model, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / "weights.pt", weights_only=True)
    torch.save({k: v.to(torch.int64) for k, v in state.items()}, tmp_path / "ckpt" / "weights.pt")
    with pytest.raises(ValueError, match=r"weights\.pt: state_dict: tensor dtypes differ.*expected a floating tensor"):
        lf.interop.load_official(tmp_path / "ckpt")
