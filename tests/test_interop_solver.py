"""The drop-in CEMSolver (stable-worldmodel's Solver protocol) on lf.LeWM models (always runs)."""

import types

import gymnasium as gym
import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast.interop import CEMSolver


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5)


def configured(model, n_envs=2, backend="reference", **kw):
    solver = CEMSolver(model, num_samples=16, n_steps=2, topk=4, seed=3, backend=backend, **kw)
    solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(n_envs, 2)), n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=5, action_block=5))  # fmt: skip
    return solver


def info(e=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixels": torch.rand(e, 1, 3, 28, 28, generator=g), "goal": torch.rand(e, 1, 3, 28, 28, generator=g)}


def test_protocol(model):
    solver = configured(model)
    assert (solver.n_envs, solver.action_dim, solver.horizon, solver.dtype) == (2, 10, 5, torch.float32)
    out = solver.solve(info())
    assert set(out) == {"actions", "costs", "mean", "var"}
    assert out["actions"].shape == (2, 5, 10) and out["actions"].device.type == "cpu"
    assert len(out["costs"]) == 2 and all(isinstance(c, float) for c in out["costs"])
    torch.testing.assert_close(out["mean"][0], out["actions"])
    assert out["var"][0].shape == (2, 5, 10)
    try:
        from stable_worldmodel.solver.solver import Solver
    except ImportError:
        return
    assert isinstance(solver, Solver)


def test_reference_batch_size_one_equals_reference_planner(model):
    d = info()
    planner = lf.CEMPlanner(model, num_samples=16, topk=4, iters=2, seed=3, backend="reference")
    expected = planner.plan(d["pixels"], d["goal"][:, -1])
    torch.testing.assert_close(configured(model).solve(d)["actions"], expected, rtol=0, atol=0)


def test_batch_size_draws_environments_jointly(model):
    """batch_size > 1 follows the public joint draw: a different (but deterministic) stream."""
    d = info()
    a = configured(model, batch_size=2).solve(d)["actions"]
    b = configured(model, batch_size=2).solve(d)["actions"]
    c = configured(model, batch_size=1).solve(d)["actions"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_generator_persists_across_solves_and_warm_start(model):
    solver = configured(model)
    d = info()
    first, second = solver.solve(d)["actions"], solver.solve(d)["actions"]
    assert not torch.allclose(first, second)  # the noise stream continues, as in the public solver
    warm = configured(model).solve(d, init_action=torch.full((2, 2, 10), 3.0))["actions"]
    assert not torch.allclose(first, warm)


def test_bad_input(model):
    solver = CEMSolver(model, num_samples=8, topk=2, n_steps=1)
    with pytest.raises(RuntimeError, match="configure"):
        solver.solve(info())
    with pytest.raises(ValueError, match="action_space: expected action_dim x action_block = 10"):
        solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(2, 3)), n_envs=2,
                         config=types.SimpleNamespace(horizon=5, action_block=5))  # fmt: skip
    solver = configured(model)
    with pytest.raises(ValueError, match="info_dict: expected a 'goal' entry"):
        solver.solve({"pixels": torch.rand(2, 1, 3, 28, 28)})
    with pytest.raises(ValueError, match=r"init_action: expected shape \(2, t <= 5, 10\)"):
        solver.solve(info(), init_action=torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="callbacks"):
        CEMSolver(model, callbacks=[object()])


def test_fast_backend_plans_every_environment_in_one_batch(model):
    """backend="torch": all environments in one batch; for one environment its fp32 noise is the
    reference's draw, so the plan equals the reference solver's."""
    one = info(1)
    fast = configured(model, n_envs=1, backend="torch").solve(one)
    ref = configured(model, n_envs=1, backend="reference").solve(one)
    torch.testing.assert_close(fast["actions"], ref["actions"], rtol=1e-4, atol=1e-5)
    solver = configured(model, n_envs=3, backend="torch")
    out = solver.solve(info(3), init_action=torch.zeros(3, 2, 10))
    assert out["actions"].shape == (3, 5, 10) and len(out["costs"]) == 3
    assert solver._planner.backend == "torch"
