"""What the drop-ins do for stable-worldmodel's current source, checked without it installed: every tensor
a drop-in makes is on the solver's device (the current source's tests use the meta device), the per-
environment `costs` output and the final re-evaluation of its gradient solver, `lf.LeWM`'s Dynamics surface
(`action_history` for H > 1 context frames, candidates strictly future), the objective terms on the packed
engine, the drop-ins' defaults equal to the optimizer registry's, and a Planner that owns what it is given.
The comparisons with the public classes themselves are in test_interop_evaluator.py (peer)."""

import inspect
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast.interop.evaluator import ControlTerm, GoalTerm, SumTerm, WithObjective, objective_value
from lewm_fast.interop.solvers import PUBLIC_SOLVERS
from lewm_fast.interop.solvers.inputs import pad_to_horizon, prepare_init_action
from lewm_fast.model_surfaces import dynamics_rollout, public_rollout
from lewm_fast.planning.optimizers import make_optimizer, optimizer_class, optimizer_defaults

SAMPLING = ["CEMSolver", "ICEMSolver", "MPPISolver"]


class NoCost:
    """A cost object the tests never call (the current source's tests pass such stand-ins)."""


def configure(solver, n_envs=2, horizon=5, action_dim=4, action_block=1):
    space = gym.spaces.Box(-1, 1, shape=(1, action_dim), dtype=np.float32)
    solver.configure(action_space=space, n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=horizon, action_block=action_block))  # fmt: skip
    return solver


# ---- devices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLING)
def test_warm_start_padding_stays_on_the_warm_starts_device(name):
    solver = configure(PUBLIC_SOLVERS[name](cost=NoCost(), batch_size=2, num_samples=8))
    mean, var = solver.init_action_distrib(2, actions=torch.zeros(2, 4, 4, device="meta"))
    assert mean.shape == var.shape == (2, 5, 4) and mean.device.type == var.device.type == "meta"


def test_without_a_warm_start_the_distribution_is_on_the_solvers_device():
    solver = configure(lf.interop.CEMSolver(cost=NoCost()))
    solver.device = "meta"  # a plain attribute, read when a tensor is made (as in the public solvers)
    mean, var = solver.init_action_distrib(2)
    assert mean.device.type == var.device.type == "meta"


def test_predictive_sampling_nominal_on_the_warm_starts_device():
    solver = configure(lf.interop.PredictiveSamplingSolver(cost=NoCost(), batch_size=2, num_samples=8))
    nominal = solver.init_nominal(2, actions=torch.zeros(2, 4, 4, device="meta"))
    assert nominal.shape == (2, 5, 4) and nominal.device.type == "meta"


@pytest.mark.parametrize("length", [4, 5])
def test_gradient_solver_samples_on_the_solvers_device(length):
    solver = lf.interop.GradientSolver(cost=NoCost(), n_steps=3, num_samples=3)
    solver.device = "meta"
    configure(solver)
    solver.init_action(2, actions=torch.zeros(2, length, 4))  # a CPU warm start, short or full
    assert solver.init.shape == (2, 3, 5, 4) and solver.init.device.type == "meta"


@pytest.mark.parametrize("given", [None, "short", "full"])
def test_prepare_init_action_returns_the_solvers_device(given):
    init = {None: None, "short": torch.zeros(2, 3, 4), "full": torch.zeros(2, 5, 4)}[given]
    out = prepare_init_action(NoCost(), {"x": torch.zeros(2)}, init, 5, 2, 4, "meta")
    assert out.shape == (2, 5, 4) and out.device.type == "meta"
    assert pad_to_horizon(None, 2, 5, 4, torch.float32, "meta").device.type == "meta"


def test_cost_object_is_checked_at_first_use():
    solver = configure(lf.interop.CEMSolver(cost=NoCost(), num_samples=8, topk=2, n_steps=1), n_envs=1)
    with pytest.raises(TypeError, match="cost: expected an object with a get_cost"):
        solver.solve({"pixels": torch.zeros(1, 1, 3, 8, 8)})


# ---- outputs ------------------------------------------------------------------------------------------


class Quadratic:
    def get_cost(self, info_dict, candidates):
        return (candidates - 0.3).pow(2).sum(dim=(-1, -2)) + info_dict["pixels"].flatten(2).mean(-1)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_gradient_solver_current_layout_returns_each_environments_final_cost(backend):
    """The current source evaluates the final samples once more, picks each environment's lowest-cost one
    by those costs and reports them ("costs"); release 0.1.1 reports the per-step history ("cost")."""
    info = {"pixels": torch.randn(3, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))}
    kw = dict(cost=Quadratic(), n_steps=4, num_samples=5, batch_size=2, optimizer_kwargs={"lr": 0.1}, backend=backend)
    new = configure(lf.interop.GradientSolver(layout="source", **kw), n_envs=3)
    out = new.solve(dict(info))
    assert set(out) == {"costs", "actions"} and len(out["costs"]) == 3
    final = Quadratic().get_cost({"pixels": info["pixels"].unsqueeze(1)}, new.init.detach())
    rows = torch.arange(3)
    best = final.argmin(dim=1)
    torch.testing.assert_close(out["actions"], new.init.detach()[rows, best], rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(out["costs"]), final[rows, best], rtol=1e-6, atol=1e-6)
    old = configure(lf.interop.GradientSolver(layout="0.1.1", **kw), n_envs=3).solve(dict(info))
    assert set(old) == {"cost", "actions"} and [len(h) for h in old["cost"]] == ([4, 4] if backend == "reference"
                                                                                 else [4])  # fmt: skip


@pytest.mark.parametrize("name", ["CEMSolver", "ICEMSolver", "MPPISolver", "PredictiveSamplingSolver"])
def test_sampling_solvers_return_one_cost_per_environment(name):
    steps = {} if "Predictive" in name else dict(n_steps=2, topk=3)
    solver = configure(PUBLIC_SOLVERS[name](cost=Quadratic(), num_samples=12, **steps), n_envs=3)
    out = solver.solve({"pixels": torch.randn(3, 1, 3, 8, 8)})
    assert len(out["costs"]) == 3 and all(isinstance(c, float) for c in out["costs"])


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_icem_best_candidate_reports_its_own_cost_in_the_current_layout(backend):
    """return_mean=False: the current source reports the returned (best) candidate's cost, 0.1.1 the
    last elites' mean cost (larger, unless the elites tie)."""
    info = {"pixels": torch.randn(2, 1, 3, 8, 8, generator=torch.Generator().manual_seed(1))}
    kw = dict(cost=Quadratic(), num_samples=16, n_steps=3, topk=4, return_mean=False, backend=backend)
    outs = {lay: configure(lf.interop.ICEMSolver(layout=lay, **kw)).solve(dict(info)) for lay in ("source", "0.1.1")}
    own = Quadratic().get_cost({"pixels": info["pixels"].unsqueeze(1)}, outs["source"]["actions"].unsqueeze(1))
    # the same sums over a (16, ...) and a (1, ...) batch: within a few fp32 roundings of each other
    torch.testing.assert_close(torch.tensor(outs["source"]["costs"]), own[:, 0], rtol=1e-6, atol=0)
    assert torch.equal(outs["source"]["actions"], outs["0.1.1"]["actions"])
    assert all(a < b for a, b in zip(outs["source"]["costs"], outs["0.1.1"]["costs"]))


def test_layout_is_checked():
    with pytest.raises(ValueError, match="layout: expected one of"):
        lf.interop.CEMSolver(cost=Quadratic(), layout="0.2")


# ---- lf.LeWM's Dynamics surface ----------------------------------------------------------------------


def test_rollout_with_action_history_is_the_release_rollout_of_history_then_candidates():
    """The current source's rollout (H context frames, H - 1 executed blocks, T strictly future
    candidates) is release 0.1.1's rollout of the candidates [executed blocks, candidates]: the same T
    predictions, bit for bit."""
    model = tiny_model(seed=2)
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 4, 3, 3, 28, 28, generator=g)  # (B, S, H = 3, C, h, w)
    history, cand = torch.randn(2, 4, 2, 10, generator=g), torch.randn(2, 4, 5, 10, generator=g)
    with torch.no_grad():
        new = dynamics_rollout(model, {"pixels": pixels, "action_history": history}, cand)["predicted_emb"]
        old = public_rollout(model, {"pixels": pixels}, torch.cat([history, cand], dim=2))
    assert new.shape == (2, 4, 3 + 5, model.cfg.embed_dim)
    assert torch.equal(new, old)
    with pytest.raises(ValueError, match="action_history"):
        model.rollout({"pixels": pixels}, cand)  # H = 3 needs its 2 executed blocks


def test_encode_takes_the_public_info_dict():
    model = tiny_model(seed=3)
    pixels, actions = torch.rand(2, 2, 3, 28, 28), torch.randn(2, 2, 10)
    with torch.no_grad():
        info = model.encode({"pixels": pixels, "action": actions})
        assert torch.equal(info["emb"], model.encode(pixels))
        assert torch.equal(info["act_emb"], model.action_encoder(actions))


# ---- objective terms on the packed engine -----------------------------------------------------------


def test_objective_value_is_the_public_weighted_sum():
    goal, cand = torch.rand(2, 6), torch.randn(2, 6, 5, 10)
    control = cand.pow(2).sum(dim=(2, 3))
    tree = SumTerm(((0.5, SumTerm(((2.0, GoalTerm()), (0.3, ControlTerm())))), (0.7, GoalTerm())))
    want = 0.5 * (2.0 * goal + 0.3 * control) + 0.7 * goal
    assert torch.equal(objective_value(tree, goal, cand), want)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_with_objective_plans_the_objective(backend):
    """An optimizer wrapped with a control penalty plans as the reference loop over (goal cost + penalty)."""
    from lewm_fast.planning.optimizers import solve_chunks
    from lewm_fast.planning.reference import lewm_cost_reference

    model = tiny_model(seed=4)
    g = torch.Generator().manual_seed(0)
    pixels, goal = torch.rand(1, 1, 3, 28, 28, generator=g), torch.rand(1, 3, 28, 28, generator=g)
    tree = SumTerm(((1.0, GoalTerm()), (0.2, ControlTerm())))
    opt = make_optimizer("cem", num_samples=24, topk=4, n_steps=4)
    planner = lf.Planner(model, WithObjective(opt, tree), backend=backend, seed=7)
    got = planner.plan_with_info(pixels, goal)
    cost = lewm_cost_reference(model, pixels, goal)
    want = solve_chunks(opt, torch.zeros(1, 5, 10), torch.ones(1, 5, 10),
                        lambda lo, hi: lambda c: cost(c) + 0.2 * c.pow(2).sum(dim=(2, 3)),
                        torch.Generator().manual_seed(7))  # fmt: skip
    tol = dict(rtol=0, atol=0) if backend == "reference" else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.actions, want.actions, **tol)


# ---- defaults and ownership ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PUBLIC_SOLVERS))
def test_drop_in_defaults_equal_the_optimizer_registry(name):
    """Each default a drop-in's signature shows is the registry's (written once there)."""
    cls = PUBLIC_SOLVERS[name]
    registry = optimizer_defaults(cls.optimizer_name)
    params = inspect.signature(cls.__init__).parameters
    assert set(cls.public_params) <= set(params)
    for key in cls.public_params:
        if name == "GradientSolver" and key == "n_steps":  # required by the public solver; the registry's 30
            assert params[key].default is None and registry[key] == 30
            continue
        assert params[key].default == registry[key], key
    assert optimizer_class(cls.optimizer_name).public_name == name


def test_planner_uses_the_optimizer_and_generator_it_is_given():
    model = tiny_model(seed=5)
    opt, gen = make_optimizer("cem", num_samples=6, topk=2, n_steps=2), torch.Generator().manual_seed(3)
    planner = lf.Planner(model, opt, generator=gen, backend="reference")
    assert planner.optimizer is opt and planner.generator is gen and planner.solver == "cem"
    pixels, goal = torch.rand(1, 1, 3, 28, 28), torch.rand(1, 3, 28, 28)
    mean = torch.randn(1, 5, 10)
    out = planner.plan_with_info(pixels, goal, init_mean=mean, init_std=torch.zeros(1, 5, 10))
    torch.testing.assert_close(out.actions, mean, rtol=0, atol=0)  # no spread: every candidate is the mean
    with pytest.raises(TypeError, match="num_samples: not accepted with an optimizer instance"):
        lf.Planner(model, opt, num_samples=3)
    with pytest.raises(TypeError, match="generator: expected a torch.Generator"):
        lf.Planner(model, "cem", generator=3)
    with pytest.raises(TypeError, match="solver: expected one of"):
        lf.Planner(model, object())
    with pytest.raises(ValueError, match="init_std: expected shape"):
        planner.plan_with_info(pixels, goal, init_std=torch.ones(1, 4, 10))
