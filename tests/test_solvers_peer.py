"""The reference optimizers against the public stable-worldmodel 0.1.1 solvers, 30 iterations, on a
small public LeWM and the same weights converted (`lf.interop.from_swm`): the loop of
`lewm_fast.planning.optimizers` with the reference LeWM cost must return the public plan exactly
(max abs difference 0; the issue's bound is 1e-6), with random observations and with TwoRoom frames,
batch_size 1 and 2 (E = 3: not a multiple), history 1 and 3.

Runs where stable_worldmodel imports (the peer venv); skipped elsewhere.

The public `LeWM.criterion` of 0.1.1 cannot broadcast the goal over a chunk of several environments
(`expand_as` fails unless b == 1), so batch_size > 1 uses `BatchableLeWM`: the public class with that
one line fixed (same arithmetic). batch_size 1 uses the public class unchanged.
"""

import contextlib
import io
import types

import numpy as np
import pytest
import torch
from helpers import randomize

import lewm_fast as lf
from lewm_fast.planning.optimizers import make_optimizer, optimizer_class, solve_chunks
from lewm_fast.planning.reference import lewm_cost_reference

swm_lewm = pytest.importorskip("stable_worldmodel.wm.lewm.lewm", reason="needs stable_worldmodel")
transformers = pytest.importorskip("transformers", reason="needs transformers")
gym = pytest.importorskip("gymnasium")
pytestmark = pytest.mark.peer

IMAGE, PATCH, D, A = 28, 7, 48, 10


class BatchableLeWM(swm_lewm.LeWM):
    """The public LeWM whose criterion broadcasts each environment's goal over its samples."""

    def criterion(self, info_dict):
        pred_emb = info_dict["predicted_emb"]  # (b, S, T, D)
        goal_emb = info_dict["goal_emb"][:, None, -1:, :].expand_as(pred_emb[..., -1:, :])
        return torch.nn.functional.mse_loss(pred_emb[..., -1:, :], goal_emb.detach(), reduction="none").sum(
            dim=tuple(range(2, pred_emb.ndim))
        )


def small_public_lewm(cls=swm_lewm.LeWM, seed=0):
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor

    torch.manual_seed(seed)
    enc = transformers.ViTModel(
        transformers.ViTConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                               image_size=IMAGE, patch_size=PATCH),
        add_pooling_layer=False,
    )  # fmt: skip
    pred = Predictor(num_frames=3, depth=2, heads=4, dim_head=16, mlp_dim=96, input_dim=D, hidden_dim=D,
                     output_dim=D, dropout=0.0)  # fmt: skip
    bn = torch.nn.BatchNorm1d
    model = cls(enc, pred, Embedder(input_dim=A, emb_dim=D), MLP(D, 64, D, norm_fn=bn), MLP(D, 64, D, norm_fn=bn))
    randomize(model)
    with torch.no_grad():  # costs that depend strongly on the actions: elites are decided by the rollout
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    public = small_public_lewm()
    batchable = small_public_lewm(BatchableLeWM)
    batchable.load_state_dict(public.state_dict())
    return public, batchable.eval(), lf.interop.from_swm(public)


def random_observations(e, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(e, h, 3, IMAGE, IMAGE, generator=g), torch.rand(e, 3, IMAGE, IMAGE, generator=g)


def tworoom_observations(e, h, seed=0):
    """TwoRoom frames: agents at random places, the goal another room's frame, ImageNet-normalised."""
    from lewm_fast.data.dataset import prepare_pixels
    from lewm_fast.envs import make_env

    env = make_env("tworoom", image_size=IMAGE)
    rng = np.random.default_rng(seed)
    frames, goals = [], []
    for _ in range(e):
        env.reset(seed=int(rng.integers(1 << 30)))
        hist = []
        for _ in range(h):
            env.step(rng.uniform(-1, 1, size=2).astype(np.float32))
            hist.append(env.render(IMAGE))
        frames.append(np.stack(hist))
        env.reset(seed=int(rng.integers(1 << 30)))
        goals.append(env.render(IMAGE))
    return prepare_pixels(torch.from_numpy(np.stack(frames)), IMAGE), prepare_pixels(
        torch.from_numpy(np.stack(goals)), IMAGE
    )


PUBLIC_MODULES = {"cem": "cem", "icem": "icem", "mppi": "mppi", "ps": "predictive_sampling", "grad": "gd"}


def public_solve(name, model, pixels, goal, batch_size, seed, init_action=None, **params):
    import importlib

    module = importlib.import_module(f"stable_worldmodel.solver.{PUBLIC_MODULES[name]}")
    solver = getattr(module, optimizer_class(name).public_name)(model, batch_size=batch_size, seed=seed, **params)
    e, h = pixels.shape[:2]
    solver.configure(action_space=gym.spaces.Box(-1.5, 1.5, shape=(e, 2), dtype=np.float32), n_envs=e,
                     config=types.SimpleNamespace(horizon=5, action_block=5))  # fmt: skip
    info = {"pixels": pixels.clone(), "goal": goal[:, None].clone(), "action": torch.zeros(e, h, A)}
    with contextlib.redirect_stdout(io.StringIO()):
        return solver.solve(info, init_action=None if init_action is None else init_action.clone())


def ours_solve(name, model, pixels, goal, batch_size, seed, init_action=None, **params):
    if name == "icem":  # the public configure() tiles the Box bounds over the action block
        params = dict(params, action_low=torch.full((A,), -1.5), action_high=torch.full((A,), 1.5))
    opt = make_optimizer(name, **params)
    e = pixels.shape[0]
    mean = torch.zeros(e, 5, A)
    if init_action is not None:
        mean[:, : init_action.shape[1]] = init_action
    std = torch.full_like(mean, opt.initial_std)
    gen = torch.Generator().manual_seed(seed)

    def chunk_cost(lo, hi):
        return lewm_cost_reference(model, pixels[lo:hi], goal[lo:hi])

    return solve_chunks(opt, mean, std, chunk_cost, gen, batch_size=batch_size)


SMALL = dict(num_samples=100, topk=10)  # the public defaults (300, 30) in the first two cases
SAMPLING = {
    "cem": {},
    "icem": {},
    "icem_best": dict(SMALL, return_mean=False, noise_beta=1.0, n_elite_keep=7),
    "mppi": SMALL,
    "mppi_all": dict(num_samples=100, topk=None, temperature=0.3),
    "ps": dict(num_samples=100),
}


def compare(name, models, pixels, goal, batch_size, init_action=None, **params):
    public, batchable, ours = models
    model = public if batch_size == 1 else batchable
    want = public_solve(name, model, pixels, goal, batch_size, 1234, init_action, **params)
    got = ours_solve(name, ours, pixels, goal, batch_size, 1234, init_action, **params)
    assert torch.isfinite(want["actions"]).all()
    assert (got.actions - want["actions"]).abs().max().item() == 0.0
    return want, got


@pytest.mark.parametrize("case", sorted(SAMPLING))
@pytest.mark.parametrize("batch_size, history", [(1, 1), (2, 1), (2, 3)])
def test_sampling_solvers_equal_public_after_30_iterations(models, case, batch_size, history):
    name = case.split("_")[0]
    pixels, goal = random_observations(3, history, seed=history)
    want, got = compare(name, models, pixels, goal, batch_size, **SAMPLING[case])
    assert got.cost.tolist() == want["costs"]
    if "var" in want:
        assert (got.std - want["var"][0]).abs().max().item() == 0.0


@pytest.mark.parametrize("name", ["cem", "icem", "mppi", "ps"])
def test_sampling_solvers_equal_public_on_tworoom_frames(models, name):
    pixels, goal = tworoom_observations(2, 1)
    init = torch.randn(2, 3, A, generator=torch.Generator().manual_seed(5))  # a warm start (receding horizon)
    params = dict(num_samples=100) if name == "ps" else SMALL
    compare(name, models, pixels, goal, 1, init_action=init, **params)


@pytest.mark.parametrize("optimizer_cls, kwargs", [(torch.optim.SGD, None), (torch.optim.Adam, dict(lr=0.1))])
@pytest.mark.parametrize("batch_size", [1, None])
def test_gradient_solver_equals_public(models, optimizer_cls, kwargs, batch_size):
    pixels, goal = random_observations(3, 1, seed=4)
    params = dict(n_steps=30, num_samples=8, var_scale=0.5, optimizer_cls=optimizer_cls, optimizer_kwargs=kwargs,
                  action_noise=0.01, grad_clip=5.0)  # fmt: skip
    want, got = compare("grad", models, pixels, goal, batch_size, **params)
    assert got.history == want["cost"]


def test_gradient_solver_equals_public_on_tworoom_frames(models):
    pixels, goal = tworoom_observations(2, 3)
    compare("grad", models, pixels, goal, 1, n_steps=30, num_samples=4)


@pytest.mark.parametrize("name", ["cem", "icem", "mppi", "ps", "grad"])
def test_defaults_and_names_are_the_public_signatures(name):
    import importlib
    import inspect

    from lewm_fast.planning.optimizers import optimizer_defaults

    module = importlib.import_module(f"stable_worldmodel.solver.{PUBLIC_MODULES[name]}")
    public = inspect.signature(getattr(module, optimizer_class(name).public_name).__init__).parameters
    for key, value in optimizer_defaults(name).items():
        if key in ("action_low", "action_high"):  # iCEM's box comes from configure(), not the constructor
            continue
        if public[key].default is inspect.Parameter.empty:
            assert (name, key) == ("grad", "n_steps")  # required there; 30 in its planning config
            continue
        assert public[key].default == value, key
