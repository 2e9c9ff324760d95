"""The drop-ins against the public solvers of stable-worldmodel 0.1.1 (peer: runs where it imports):
signatures and defaults, the reference backend's plan bit for bit after 30 iterations (a `get_cost`-only
model, an `Actionable` one, the public LeWM and the converted `lf.LeWM`), callbacks' histories, the
public LeWM on the packed engine, and `accelerate()` converting public solvers and policies."""

import inspect
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import rel_err

import lewm_fast as lf

solver_pkg = pytest.importorskip("stable_worldmodel.solver", reason="needs stable_worldmodel")
pytest.importorskip("transformers", reason="needs transformers")
pytestmark = pytest.mark.peer

NAMES = ["CEMSolver", "ICEMSolver", "MPPISolver", "PredictiveSamplingSolver", "GradientSolver"]
OURS_ONLY = {"cost", "backend", "dtype", "cuda_graph", "callbacks", "layout"}
SETTINGS = {  # 30 iterations, as a user runs them (S small to keep the test short)
    "CEMSolver": dict(num_samples=40, n_steps=30, topk=6),
    "ICEMSolver": dict(num_samples=40, n_steps=30, topk=6, n_elite_keep=3),
    "MPPISolver": dict(num_samples=40, n_steps=30, topk=6),
    "PredictiveSamplingSolver": dict(num_samples=40),
    "GradientSolver": dict(n_steps=30, num_samples=3, optimizer_kwargs={"lr": 0.05}),
}


@pytest.fixture(scope="module")
def public_pair():
    from test_interop_swm import public_lewm

    public = public_lewm(D=48, image=28, patch=7, enc_layers=2, pred_depth=2, seed=3)
    return public, lf.interop.from_swm(public)


class Quadratic:
    """A get_cost-only model whose cost also reads the info_dict (so its expansion must be the public one)."""

    def get_cost(self, info_dict, candidates):
        offset = info_dict["pixels"].flatten(2).mean(-1) + torch.as_tensor(info_dict["state"]).sum(-1)
        return (candidates - 0.3).pow(2).sum(dim=(-1, -2)) + offset


class Actor(Quadratic):
    def get_action(self, info, horizon=1, prefix_actions=None):
        return info["pixels"].flatten(1)[:, :1, None].expand(-1, horizon, 10) * 0.2


def configure(solver, n_envs=3):
    solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(n_envs, 2)), n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=4, action_block=5))  # fmt: skip
    return solver


def observation(n_envs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(2, n_envs, 1, 3, 28, 28, generator=g)
    return {"pixels": frames[0], "goal": frames[1], "action": torch.zeros(n_envs, 1, 10),
            "state": np.arange(2.0 * n_envs).reshape(n_envs, 2)}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_signature_and_defaults_are_the_public_ones(name):
    public = inspect.signature(getattr(solver_pkg, name).__init__).parameters
    ours = inspect.signature(getattr(lf.interop, name).__init__).parameters
    assert list(public)[: len(public)] == [p for p in ours if p not in OURS_ONLY or p in public][: len(public)]
    for p, spec in public.items():
        if p not in ("self", "model", "n_steps") and spec.default is not inspect.Parameter.empty:
            assert ours[p].default == spec.default, p
    assert set(ours) - set(public) <= OURS_ONLY


def solve_both(name, public_model, our_model, batch_size=1, init=True, callbacks=None, seed=7):
    outs = []
    for cls, model, extra in ((getattr(solver_pkg, name), public_model, {}),
                              (getattr(lf.interop, name), our_model, {"backend": "reference"})):  # fmt: skip
        cbs = {"callbacks": callbacks()} if callbacks else {}
        solver = configure(cls(model, batch_size=batch_size, seed=seed, **SETTINGS[name], **cbs, **extra))
        init_action = torch.linspace(-0.2, 0.2, 3 * 2 * 10).view(3, 2, 10) if init else None
        outs.append(solver.solve(observation(), init_action=init_action))
    return outs


@pytest.mark.parametrize("model", ["get_cost-only", "actionable", "public LeWM", "lf.LeWM"])
@pytest.mark.parametrize("name", NAMES)
def test_reference_returns_the_public_plan_after_30_iterations(public_pair, name, model):
    public, ours = public_pair
    models = {"get_cost-only": (Quadratic(), Quadratic()), "actionable": (Actor(), Actor()),
              "public LeWM": (public, public), "lf.LeWM": (public, ours)}[model]  # fmt: skip
    expected, got = solve_both(name, *models)
    assert set(got) == set(expected)
    torch.testing.assert_close(got["actions"], expected["actions"], rtol=0, atol=0)
    for key in ("costs", "cost"):
        if key in expected:
            assert got[key] == expected[key]
    for key in ("mean", "var"):
        if key in expected:
            torch.testing.assert_close(got[key][0], expected[key][0], rtol=0, atol=0)


def test_gradient_solver_init_after_a_solve_is_the_public_one():
    """The public GradientSolver writes each chunk's optimised samples back into its `init` parameter."""
    solvers = []
    for cls, extra in ((solver_pkg.GradientSolver, {}), (lf.interop.GradientSolver, {"backend": "reference"})):
        solver = configure(cls(Quadratic(), batch_size=2, seed=7, **SETTINGS["GradientSolver"], **extra))
        solver.solve(observation(), init_action=torch.linspace(-0.2, 0.2, 60).view(3, 2, 10))
        solvers.append(solver)
    public, ours = solvers
    torch.testing.assert_close(ours.init.detach(), public.init.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["CEMSolver", "ICEMSolver", "GradientSolver"])
def test_chunks_of_several_environments_and_callbacks(name):
    """batch_size 2 over 3 environments (two chunks, joint draws) and the public callbacks' histories."""
    from stable_worldmodel.solver import callbacks as cb

    def callbacks():
        if name == "GradientSolver":
            return [cb.BestCostRecorder(), cb.GradNormRecorder(reduction="none"), cb.ActionNormRecorder()]
        return [cb.BestCostRecorder(), cb.EliteCostRecorder(), cb.VarNormRecorder(), cb.MeanShiftRecorder(),
                cb.EliteSpreadRecorder(reduction="none")]  # fmt: skip

    expected, got = solve_both(name, Quadratic(), Quadratic(), batch_size=2, callbacks=callbacks)
    torch.testing.assert_close(got["actions"], expected["actions"], rtol=0, atol=0)
    assert got["callbacks"] == expected["callbacks"]
    assert all(len(h) == 2 for h in got["callbacks"].values())  # two chunks


@pytest.mark.parametrize("name", NAMES)
def test_public_lewm_on_the_packed_engine(public_pair, name):
    """A public LeWM on a fast backend: converted once, every environment in one batch (the public solver
    cannot take several environments per chunk); for one environment, the reference's plan (after 3
    iterations: the restructured rollout's ~1e-6 cost differences flip near-tied elites later on)."""
    public, _ = public_pair
    one = {k: v[:1] for k, v in observation().items()}
    short = {**SETTINGS[name], **({"n_steps": 3} if "n_steps" in SETTINGS[name] else {})}
    ref = configure(getattr(lf.interop, name)(public, seed=2, backend="reference", **short), 1).solve(one)
    fast_solver = configure(getattr(lf.interop, name)(public, seed=2, backend="torch", **short), 1)
    fast = fast_solver.solve(one)
    assert fast_solver.planner_cache.planner.backend == "torch"
    assert rel_err(fast["actions"], ref["actions"]) <= 1e-3
    many = configure(getattr(lf.interop, name)(public, backend="torch", **SETTINGS[name])).solve(observation())
    assert many["actions"].shape == (3, 4, 10) and torch.isfinite(many["actions"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_accelerate_converts_public_solvers_and_policies(name):
    from stable_worldmodel.policy import PlanConfig, WorldModelPolicy

    def public_solver():
        return configure(getattr(solver_pkg, name)(Quadratic(), seed=5, **SETTINGS[name]))

    expected = public_solver()
    expected.solve(observation())  # the converted solver continues the public noise stream
    fast = lf.interop.accelerate(expected, backend="reference")
    assert type(fast) is getattr(lf.interop, name) and fast.n_envs == 3 and fast.horizon == 4
    for p, value in SETTINGS[name].items():
        assert getattr(fast, p) == value
    torch.testing.assert_close(fast.solve(observation())["actions"], expected.solve(observation())["actions"],
                               rtol=0, atol=0)  # fmt: skip
    policy = WorldModelPolicy(solver=public_solver(), config=PlanConfig(horizon=4, receding_horizon=2, action_block=5))
    assert lf.interop.accelerate(policy) is policy and type(policy.solver) is getattr(lf.interop, name)
