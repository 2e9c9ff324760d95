"""`lf.LeWM.get_cost`: the public cost conventions (always runs), and bit-for-bit equality with the public
`LeWM.get_cost` and every public solver driven by a converted model (peer: where stable_worldmodel imports)."""

import types

import pytest
import torch
from helpers import tiny_model

from lewm_fast.planning.reference import rollout_cost_reference


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=11)


def public_info(pixels, goal, s, **extra):
    """What a public solver hands the model: every tensor expanded over the S samples."""
    b = pixels.shape[0]
    info = {"pixels": pixels, "goal": goal, "action": torch.zeros(b, 1, 10), **extra}
    return {k: v.unsqueeze(1).expand(b, s, *v.shape[1:]) for k, v in info.items()}


def frames(b, t, seed):
    return torch.rand(b, t, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("history", [1, 3])
def test_equals_the_reference_rollout_on_separately_encoded_frames(model, history):
    pixels, goal = frames(3, history, 0), frames(3, 1, 1)
    cand = torch.randn(3, 7, 5, 10)
    with torch.no_grad():
        got = model.get_cost(public_info(pixels, goal, 7), cand)
        expected = rollout_cost_reference(model, model.encode(pixels), model.encode(goal)[:, -1], cand)
    assert got.shape == (3, 7)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_each_environment_is_compared_with_its_own_goal(model):
    pixels, goal = frames(4, 1, 2), frames(4, 1, 3)
    cand = torch.randn(4, 5, 6, 10)  # B = horizon + 1 - 3: no accidental broadcast either
    with torch.no_grad():
        together = model.get_cost(public_info(pixels, goal, 5), cand)
        alone = [model.get_cost(public_info(pixels[i : i + 1], goal[i : i + 1], 5), cand[i : i + 1]) for i in range(4)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-6, atol=1e-6)


def test_embeddings_are_cached_in_the_dict(model):
    info = public_info(frames(2, 2, 4), frames(2, 1, 5), 3)
    cand = torch.randn(2, 3, 5, 10)
    with torch.no_grad():
        model.get_cost(info, cand)
        assert info["goal_emb"].shape == (2, 1, 32) and info["emb"].shape == (2, 3, 2, 32)
        assert info["predicted_emb"].shape == (2, 3, 6, 32)
        torch.testing.assert_close(info["action"], cand[:, :, :2], rtol=0, atol=0)
        info["goal_emb"] = torch.zeros_like(info["goal_emb"])  # a cached entry is used as it is
        info["pixels"] = torch.full_like(info["pixels"], float("nan"))
        cost = model.get_cost(info, cand)
    torch.testing.assert_close(cost, info["predicted_emb"][:, :, -1].square().sum(-1), rtol=0, atol=0)


def test_goal_keys_follow_the_public_renaming(model):
    pixels, goal, other = frames(1, 1, 6), frames(1, 1, 7), frames(1, 1, 8)
    cand = torch.randn(1, 4, 5, 10)
    with torch.no_grad():
        renamed = model.get_cost(public_info(pixels, goal, 4, goal_pixels=other), cand)
        direct = model.get_cost(public_info(pixels, other, 4), cand)
    torch.testing.assert_close(renamed, direct, rtol=0, atol=0)


def test_differentiable_in_the_candidates():
    model = tiny_model(seed=12).double()
    info = public_info(frames(1, 1, 9).double(), frames(1, 1, 10).double(), 2)
    cand = torch.randn(1, 2, 3, 10, dtype=torch.float64, requires_grad=True)
    assert model.get_cost(dict(info), cand).requires_grad
    assert torch.autograd.gradcheck(lambda c: model.get_cost(dict(info), c), (cand,), eps=1e-6, atol=1e-5)


def test_bad_input(model):
    info = public_info(frames(1, 2, 0), frames(1, 1, 1), 3)
    with pytest.raises(ValueError, match="info_dict: expected a 'pixels' entry"):
        model.get_cost({"goal": info["goal"]}, torch.zeros(1, 3, 5, 10))
    with pytest.raises(ValueError, match=r"action_candidates: expected shape \(1, 3, horizon >= 2, 10\)"):
        model.get_cost(dict(info), torch.zeros(1, 3, 1, 10))
    with pytest.raises(ValueError, match=r"info_dict\['pixels'\]: expected a tensor \(B, S, H, C, h, w\)"):
        model.get_cost({**info, "pixels": info["pixels"][:, 0]}, torch.zeros(1, 3, 5, 10))
    with pytest.raises(TypeError, match="info_dict: expected a dict"):
        model.get_cost([info], torch.zeros(1, 3, 5, 10))


# ---- peer: the public code ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def public_pair():
    pytest.importorskip("stable_worldmodel.wm.lewm.lewm", reason="needs stable_worldmodel")
    pytest.importorskip("transformers", reason="needs transformers")
    from test_interop_swm import public_lewm

    import lewm_fast as lf

    public = public_lewm(D=48, image=28, patch=7, enc_layers=2, pred_depth=2, seed=3)
    return public, lf.interop.from_swm(public)


@pytest.mark.peer
@pytest.mark.parametrize("history", [1, 3])
def test_equals_public_get_cost_bit_for_bit(public_pair, history):
    public, ours = public_pair
    pixels, goal = frames(1, history, 20), frames(1, 1, 21)
    with torch.inference_mode():
        theirs_info, our_info = public_info(pixels, goal, 9), public_info(pixels, goal, 9)
        for _ in range(2):  # the second call runs on the cached embeddings
            cand = torch.randn(1, 9, 5, 10)
            expected = public.get_cost(theirs_info, cand.clone())
            got = ours.get_cost(our_info, cand.clone())
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        for key in ("emb", "goal_emb", "predicted_emb", "action"):
            torch.testing.assert_close(our_info[key], theirs_info[key], rtol=0, atol=0)


def _public_solvers():
    from stable_worldmodel.solver import CEMSolver, GradientSolver, ICEMSolver, MPPISolver, PredictiveSamplingSolver

    small = dict(num_samples=12, seed=5)
    return {
        "cem": lambda m: CEMSolver(m, n_steps=4, topk=3, **small),
        "icem": lambda m: ICEMSolver(m, n_steps=4, topk=3, **small),
        "mppi": lambda m: MPPISolver(m, n_steps=4, topk=3, **small),
        "ps": lambda m: PredictiveSamplingSolver(m, **small),
        "grad": lambda m: GradientSolver(m, 3, batch_size=1, num_samples=3, seed=5, optimizer_kwargs={"lr": 0.1}),
    }


@pytest.mark.peer
@pytest.mark.parametrize("name", ["cem", "icem", "mppi", "ps", "grad"])
def test_every_public_solver_runs_on_the_converted_model(public_pair, name):
    """The converted model is a drop-in for the public one under each public solver: the same plan."""
    import gymnasium as gym

    public, ours = public_pair
    pixels, goal = frames(2, 1, 30), frames(2, 1, 31)
    outs = []
    for m in (public, ours):
        solver = _public_solvers()[name](m)
        solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(2, 2)), n_envs=2,
                         config=types.SimpleNamespace(horizon=4, action_block=5))  # fmt: skip
        info = {"pixels": pixels.clone(), "goal": goal.clone(), "action": torch.zeros(2, 1, 10)}
        outs.append(solver.solve(info)["actions"])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
