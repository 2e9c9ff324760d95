"""The drop-in solvers (stable-worldmodel's Solver protocol on lewm_fast's optimizers), without the public
code: any `get_cost` model, callbacks, warm starts, info_dict keys, outputs, and LeWM models on the
packed path. Parity with the public solvers is in test_interop_solver_peer.py."""

import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast.interop import CEMSolver, GradientSolver, ICEMSolver, MPPISolver, PredictiveSamplingSolver

SAMPLING = {
    "cem": (CEMSolver, dict(num_samples=20, n_steps=3, topk=5)),
    "icem": (ICEMSolver, dict(num_samples=20, n_steps=3, topk=5)),
    "mppi": (MPPISolver, dict(num_samples=20, n_steps=3, topk=5)),
    "ps": (PredictiveSamplingSolver, dict(num_samples=20)),
}
ALL = {**SAMPLING, "grad": (GradientSolver, dict(n_steps=3, num_samples=4, optimizer_kwargs={"lr": 0.1}))}


class Quadratic:
    """A model that only implements the public Costable protocol (no parameters, no LeWM)."""

    def __init__(self, target=0.3):
        self.target, self.seen = target, []

    def get_cost(self, info_dict, candidates):
        self.seen.append(info_dict)
        return (candidates - self.target).pow(2).sum(dim=(-1, -2))


class Recorder:
    """A callback with the public `Callback` protocol (reset, start_batch, __call__, end_solve, history)."""

    def __init__(self, name="Recorder"):
        self.output_key, self.history, self._current, self.keys = name, [], [], set()

    def reset(self):
        self.history, self._current = [], []

    def start_batch(self):
        if self._current:
            self.history.append(self._current)
        self._current = []

    def __call__(self, **state):
        self.keys |= set(state)
        self._current.append(state["costs"].min(dim=1).values.mean().item())

    def end_solve(self):
        if self._current:
            self.history.append(self._current)
            self._current = []


def make(name, model, n_envs=2, horizon=3, action_block=1, action_dim=2, **kw):
    cls, defaults = ALL[name]
    solver = cls(model, **{**defaults, **kw})
    space = gym.spaces.Box(-1, 1, shape=(n_envs, action_dim), dtype=np.float32)
    solver.configure(action_space=space, n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=horizon, action_block=action_block))  # fmt: skip
    return solver


def info(e=2):
    return {"pixels": torch.randn(e, 1, 3, 8, 8)}


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("name", list(ALL))
def test_a_get_cost_model_and_callbacks_work_through_every_drop_in(name, backend):
    model, cbs = Quadratic(), [Recorder("a"), Recorder("b")]
    solver = make(name, model, n_envs=3, batch_size=2, callbacks=cbs, backend=backend)
    assert solver.model is model and solver.cost is model
    out = solver(info(3))
    assert out["actions"].shape == (3, 3, 2) and out["actions"].device.type == "cpu"
    assert set(out["callbacks"]) == {"a", "b"}
    steps = 1 if name == "ps" else 3
    chunks = [2, 1] if backend == "reference" else [3]  # the public chunks of batch_size; one on a fast backend
    assert [len(h) for h in out["callbacks"]["a"]] == [steps] * len(chunks)
    per_chunk = list({id(d): d for d in model.seen}.values())  # one expanded dict per chunk, reused per step
    assert [len(d["pixels"]) for d in per_chunk] == chunks
    public_keys = {
        "cem": {"step", "candidates", "costs", "topk_vals", "topk_inds", "topk_candidates", "mean", "var",
                "prev_mean", "prev_var"},
        "icem": {"step", "candidates", "costs", "topk_vals", "topk_inds", "topk_candidates", "mean", "var",
                 "prev_mean", "prev_var", "action_low", "action_high"},
        "grad": {"step", "params", "cost", "costs"},
    }  # fmt: skip
    assert public_keys.get(name, {"step", "candidates", "costs"}) <= cbs[0].keys
    out2 = solver(info(3))  # histories restart with every solve
    assert [len(h) for h in out2["callbacks"]["a"]] == [steps] * len(chunks)


@pytest.mark.parametrize("name", list(ALL))
def test_outputs_are_the_public_ones(name):
    out = make(name, Quadratic())(info())
    keys = {"ps": {"costs", "actions"}, "grad": {"cost", "actions"}}.get(name, {"costs", "actions", "mean", "var"})
    assert set(out) == keys
    if "costs" in out:
        assert len(out["costs"]) == 2 and all(isinstance(c, float) for c in out["costs"])
    if "mean" in out:
        torch.testing.assert_close(out["mean"][0], out["actions"], rtol=0, atol=0)
        assert out["var"][0].shape == (2, 3, 2)
    if name == "grad":
        assert len(out["cost"]) == 1 and len(out["cost"][0]) == 3  # one chunk (batch_size None), 3 steps


@pytest.mark.parametrize("name", list(ALL))
def test_the_plan_improves_on_a_quadratic(name):
    model = Quadratic(target=0.5)
    solver = make(name, model, **({"n_steps": 20} if name != "ps" else {"num_samples": 200}))
    plan = solver(info())["actions"]
    assert (plan - 0.5).pow(2).sum(dim=(1, 2)).max() < 6 * 0.25  # better than the zero plan (its first candidate)


@pytest.mark.parametrize("name", list(SAMPLING))
def test_reference_and_fast_agree_for_one_environment(name):
    """One environment is one chunk either way: the same draws, the same plan."""
    a = make(name, Quadratic(), n_envs=1, backend="reference", seed=3)(info(1))["actions"]
    b = make(name, Quadratic(), n_envs=1, backend="auto", seed=3)(info(1))["actions"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_generator_persists_across_solves():
    solver = make("cem", Quadratic())
    first, second = solver(info())["actions"], solver(info())["actions"]
    assert not torch.equal(first, second)
    torch.testing.assert_close(make("cem", Quadratic())(info())["actions"], first, rtol=0, atol=0)


def test_initial_distributions_follow_the_public_ones():
    cem = make("cem", Quadratic(), horizon=5, action_dim=3, var_scale=0.5)
    mean, var = cem.init_action_distrib(2)
    assert mean.shape == var.shape == (2, 5, 3) and mean.abs().sum() == 0 and (var == 0.5).all()
    init = torch.randn(2, 2, 3)
    mean, _ = cem.init_action_distrib(2, init)
    torch.testing.assert_close(mean[:, :2], init)
    assert mean[:, 2:].abs().sum() == 0
    ps = make("ps", Quadratic(), horizon=5, action_dim=3)
    assert ps.init_nominal(2).shape == (2, 5, 3)
    gd = make("grad", Quadratic(), horizon=5, action_dim=3, num_samples=3, var_scale=0.2)
    gd.init_action(2, init)
    assert gd.init.shape == (2, 3, 5, 3) and isinstance(gd.init, torch.nn.Parameter)
    torch.testing.assert_close(gd.init[:, 0, :2], init)  # sample 0 is the plan itself, the others are shifted
    assert not torch.equal(gd.init[:, 1], gd.init[:, 0])


class Actor(Quadratic):
    """An `Actionable` model: its `get_action` fills the rest of a warm start."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def get_action(self, info, horizon=1, prefix_actions=None):
        self.calls.append((horizon, None if prefix_actions is None else prefix_actions.shape))
        return torch.full((len(info["pixels"]), horizon, 2), 0.25)


class FirstPlan(Recorder):
    """Records the plan the solve starts from: the mean before the first update (sampling solvers), or
    sample 0 of the gradient solver's parameters at its first step (the plan itself, unshifted)."""

    def __call__(self, **state):
        super().__call__(**state)
        if state["step"] == 0:
            start = state["prev_mean"] if "prev_mean" in state else state["params"][:, 0]
            self.start = start.detach().clone()


@pytest.mark.parametrize("name", ["cem", "icem", "mppi", "grad"])
def test_warm_start_through_get_action(name):
    model, cb = Actor(), FirstPlan()
    solver = make(name, model, horizon=4, callbacks=[cb])
    solver(info(), init_action=torch.full((2, 1, 2), -0.5))
    assert model.calls == [(3, (2, 1, 2))]  # the 3 missing steps, after the 1 given
    torch.testing.assert_close(cb.start[:, 0], torch.full((2, 2), -0.5))
    torch.testing.assert_close(cb.start[:, 1:], torch.full((2, 3, 2), 0.25))


def test_info_dict_keys_are_handled_as_the_public_code_does():
    model = Quadratic()
    d = {"pixels": torch.randn(3, 1, 2), "state": np.arange(6.0).reshape(3, 2), "names": ["a", "b", "c"],
         "episode": 7, "ids": torch.arange(3)}  # fmt: skip
    make("cem", model, n_envs=3, batch_size=2, backend="reference")(d)
    chunk = model.seen[0]
    assert chunk["pixels"].shape == (2, 20, 1, 2) and chunk["pixels"].dtype == torch.float32
    assert chunk["ids"].dtype == torch.int64 and chunk["ids"].shape == (2, 20)
    assert isinstance(chunk["state"], np.ndarray) and chunk["state"].shape == (2, 20, 2)
    assert chunk["names"] == ["a", "b"] and chunk["episode"] == 7
    assert len(model.seen[-1]["pixels"]) == 1  # the last chunk of batch_size 2 over 3 environments


def test_discrete_space_warns(caplog):
    """Through loguru where it is installed (the public 0.1.1 logger), else the standard logging."""
    try:
        from loguru import logger
    except ImportError:
        logger = None
    messages = []
    sink = logger.add(messages.append, level="WARNING") if logger is not None else None
    try:
        solver = CEMSolver(Quadratic(), n_steps=2)
        solver.configure(action_space=gym.spaces.Discrete(5), n_envs=1,
                         config=types.SimpleNamespace(horizon=5, action_block=1))  # fmt: skip
    finally:
        if sink is not None:
            logger.remove(sink)
    text = " ".join(map(str, messages)) if logger is not None else caplog.text
    assert solver._configured and "action space is discrete" in text.lower()


def test_bad_input():
    no_cost = make("cem", object())  # accepted at construction, as the public solvers accept it
    with pytest.raises(TypeError, match="cost: expected an object with a get_cost"):
        no_cost(info())
    with pytest.raises(TypeError, match="model, cost: expected one of them"):
        CEMSolver(Quadratic(), cost=Quadratic())
    with pytest.raises(ValueError, match="backend: expected one of"):
        CEMSolver(Quadratic(), backend="fast")
    with pytest.raises(TypeError, match="n_steps: required"):
        GradientSolver(Quadratic())
    with pytest.raises(RuntimeError, match="configure"):
        CEMSolver(Quadratic()).solve(info())
    solver = make("cem", Quadratic())
    with pytest.raises(ValueError, match=r"init_action: expected shape \(2, t <= 3, 2\)"):
        solver(info(), init_action=torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="info_dict: expected a non-empty dict"):
        solver({})
    bad = make("cem", types.SimpleNamespace(get_cost=lambda d, c: c.sum(-1)))
    with pytest.raises(ValueError, match=r"cost: expected shape \(2, 20\)"):
        bad(info())


def test_cost_keyword_is_the_current_sources_name():
    model = Quadratic()
    assert CEMSolver(cost=model).model is model


# ---- LeWM models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lewm():
    return tiny_model(seed=5)


def lewm_info(e=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixels": torch.rand(e, 1, 3, 28, 28, generator=g), "goal": torch.rand(e, 1, 3, 28, 28, generator=g),
            "action": torch.zeros(e, 1, 10)}  # fmt: skip


@pytest.mark.parametrize("name", list(ALL))
def test_lewm_reference_runs_its_get_cost_per_chunk(lewm, name):
    kw = dict(n_envs=2, horizon=5, action_block=5, backend="reference", batch_size=1)
    out = make(name, lewm, **kw)(lewm_info())
    assert out["actions"].shape == (2, 5, 10) and torch.isfinite(out["actions"]).all()


@pytest.mark.parametrize("name", list(ALL))
def test_lewm_fast_equals_reference_for_one_environment(lewm, name):
    kw = dict(n_envs=1, horizon=5, action_block=5, seed=4)
    ref = make(name, lewm, backend="reference", **kw)(lewm_info(1))
    fast = make(name, lewm, backend="torch", **kw)(lewm_info(1))
    torch.testing.assert_close(fast["actions"], ref["actions"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(ALL))
def test_lewm_fast_plans_every_environment_in_one_batch(lewm, name):
    solver = make(name, lewm, n_envs=3, horizon=5, action_block=5, backend="torch")
    out = solver(lewm_info(3), init_action=torch.zeros(3, 2, 10))
    assert out["actions"].shape == (3, 5, 10) and torch.isfinite(out["actions"]).all()
    if name != "grad":  # the gradient solver's planner is built per solve (it holds that solve's samples)
        assert solver.planner_cache.planner.backend == "torch" and solver.planner_cache.planner.solver == name


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradient_solver_leaves_the_optimised_samples_in_init_and_reports_every_step(lewm, backend):
    """As the public GradientSolver: `init` holds the optimised samples after a solve (the plan is each
    environment's lowest-cost one of them) and "cost" has the summed cost of every step, per chunk, on
    the packed engine too (there all environments are one chunk)."""
    solver = make("grad", lewm, n_envs=3, horizon=5, action_block=5, backend=backend)
    out = solver(lewm_info(3))
    assert solver.init.shape == (3, 4, 5, 10)
    best = [min(range(4), key=lambda j: (solver.init[e, j] - out["actions"][e]).abs().max().item()) for e in range(3)]
    torch.testing.assert_close(solver.init[torch.arange(3), best].detach(), out["actions"], rtol=0, atol=0)
    assert len(out["cost"]) == 1 and len(out["cost"][0]) == 3  # batch_size None: one chunk, 3 steps
    assert all(isinstance(c, float) for h in out["cost"] for c in h)


def test_lewm_with_callbacks_runs_the_eager_loop_in_one_chunk(lewm):
    """Callbacks read tensors on the host every iteration: the solve leaves the packed engine and runs the
    optimizer loop around the model's get_cost, every environment in one chunk."""
    cb = Recorder()
    solver = make("cem", lewm, n_envs=3, horizon=5, action_block=5, backend="torch", callbacks=[cb])
    out = solver(lewm_info(3))
    assert solver.planner_cache.planner is None
    assert [len(h) for h in out["callbacks"]["Recorder"]] == [3]  # one chunk, 3 iterations
    assert out["actions"].shape == (3, 5, 10)


def test_lewm_action_block_must_match(lewm):
    with pytest.raises(ValueError, match="action_space: expected action_dim x action_block = 10"):
        make("cem", lewm, action_dim=3, action_block=5)


def test_reference_equals_the_reference_planner_with_separate_encodes(lewm):
    """The drop-in's reference runs the public get_cost (goal and history encoded apart) for 30 iterations:
    the same plan as driving the reference optimizer loop by hand over `lf.LeWM.get_cost`."""
    from lewm_fast.planning.optimizers import make_optimizer, solve_chunks

    d = lewm_info(2, seed=9)
    solver = make("cem", lewm, horizon=5, action_block=5, backend="reference", n_steps=30, num_samples=40, topk=6)
    got = solver(d)["actions"]
    opt = make_optimizer("cem", num_samples=40, n_steps=30, topk=6, var_scale=1)
    mean, std = torch.zeros(2, 5, 10), torch.ones(2, 5, 10)

    def chunk_cost(lo, hi):
        expanded = {k: v[lo:hi].unsqueeze(1).expand(hi - lo, 40, *v.shape[1:]) for k, v in d.items()}
        return lambda cand: lewm.get_cost(expanded, cand)

    expected = solve_chunks(opt, mean, std, chunk_cost, torch.Generator().manual_seed(1234), batch_size=1)
    torch.testing.assert_close(got, expected.actions, rtol=0, atol=0)


def test_top_level_names():
    for name in ("CEMSolver", "ICEMSolver", "MPPISolver", "PredictiveSamplingSolver", "GradientSolver"):
        assert getattr(lf.interop, name).__module__.startswith("lewm_fast.interop.solvers")
