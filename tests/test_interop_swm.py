"""Parity with the live public LeWM code at the published sizes (runs where stable_worldmodel and
transformers import: a venv with stable-worldmodel 0.1.1, docs/interop.md; skipped elsewhere)."""

import types

import pytest
import torch
from helpers import randomize, rel_err

import lewm_fast as lf

swm_lewm = pytest.importorskip("stable_worldmodel.wm.lewm.lewm", reason="needs stable_worldmodel")
transformers = pytest.importorskip("transformers", reason="needs transformers")
pytestmark = pytest.mark.peer


def public_lewm(D=192, image=224, patch=14, enc_layers=12, pred_depth=6, seed=0):
    """A public LeWM built like the published one (random weights; AdaLN and BN made non-trivial)."""
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor

    torch.manual_seed(seed)
    enc = transformers.ViTModel(
        transformers.ViTConfig(hidden_size=D, num_hidden_layers=enc_layers, num_attention_heads=3,
                               intermediate_size=4 * D, image_size=image, patch_size=patch),
        add_pooling_layer=False,
    )  # fmt: skip
    pred = Predictor(num_frames=3, depth=pred_depth, heads=16, dim_head=64, mlp_dim=2048,
                     input_dim=D, hidden_dim=D, output_dim=D, dropout=0.1)  # fmt: skip
    bn = torch.nn.BatchNorm1d
    model = swm_lewm.LeWM(
        enc, pred, Embedder(input_dim=10, emb_dim=D), MLP(D, 2048, D, norm_fn=bn), MLP(D, 2048, D, norm_fn=bn)
    )
    randomize(model)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    public = public_lewm()
    return public, lf.interop.from_swm(public)


def test_config_is_the_published_one(pair):
    assert pair[1].cfg == lf.LeWMConfig()


def test_encode_matches_at_published_size(pair):
    public, ours = pair
    pixels = torch.rand(2, 3, 3, 224, 224)
    with torch.no_grad():
        expected = public.encode({"pixels": pixels.clone()})["emb"]
        assert rel_err(ours.encode(pixels), expected) <= 1e-4


def test_encode_matches_at_another_image_size(pair):
    public, ours = pair
    pixels = torch.rand(1, 2, 3, 112, 112)
    with torch.no_grad():
        expected = public.encode({"pixels": pixels.clone()})["emb"]
        assert rel_err(ours.encode(pixels), expected) <= 1e-4


def test_predict_matches_at_published_size(pair):
    public, ours = pair
    emb, actions = torch.randn(4, 3, 192), torch.randn(4, 3, 10)
    with torch.no_grad():
        act_emb = public.action_encoder(actions)
        assert rel_err(ours.embed_actions(actions), act_emb) <= 1e-4
        assert rel_err(ours.predict(emb, act_emb), public.predict(emb, act_emb)) <= 1e-4


def test_sigreg_matches_public_module():
    from stable_worldmodel.wm.loss import SIGReg

    x1 = torch.randn(4, 128, 192, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    torch.manual_seed(9)
    v1 = SIGReg()(x1)
    v1.backward()
    torch.manual_seed(9)
    v2 = lf.SIGReg(backend="reference")(x2)
    v2.backward()
    assert rel_err(v2.detach(), v1.detach()) <= 1e-5
    assert rel_err(x2.grad, x1.grad) <= 1e-5


def public_info(pixels, goal, s, a):
    return {
        "pixels": pixels[:, None].expand(-1, s, *pixels.shape[1:]).clone(),
        "goal": goal[:, None, None].expand(-1, s, 1, *goal.shape[1:]).clone(),
        "action": torch.zeros(pixels.shape[0], s, 1, a),
    }


@pytest.mark.parametrize("history", [1, 3])
def test_cost_matches_get_cost(pair, history):
    public, ours = pair
    pixels, goal = torch.rand(1, history, 3, 224, 224), torch.rand(1, 3, 224, 224)
    cand = torch.randn(1, 8, 5, 10)
    with torch.inference_mode():
        expected = public.get_cost(public_info(pixels, goal, 8, 10), cand.clone())
    got = lf.CEMPlanner(ours, backend="reference").cost(pixels, goal, cand)
    assert rel_err(got, expected) <= 1e-4


def test_plan_matches_public_cem_solver(pair):
    import gymnasium as gym
    from stable_worldmodel.solver.cem import CEMSolver

    public, ours = pair
    pixels, goal = torch.rand(2, 1, 3, 224, 224), torch.rand(2, 3, 224, 224)
    solver = CEMSolver(public, num_samples=32, n_steps=3, topk=5, seed=7)
    solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(2, 2)), n_envs=2,
                     config=types.SimpleNamespace(horizon=5, action_block=5))  # fmt: skip
    expected = solver.solve({"pixels": pixels.clone(), "goal": goal[:, None].clone(), "action": torch.zeros(2, 1, 10)})
    planner = lf.CEMPlanner(ours, num_samples=32, topk=5, iters=3, seed=7, backend="reference")
    assert rel_err(planner.plan(pixels, goal), expected["actions"]) <= 1e-3


def solve_public_and_ours(public, ours_or_public, batch_size, init_action=None, backend="reference"):
    import gymnasium as gym
    from stable_worldmodel.solver.cem import CEMSolver as PublicCEMSolver

    pixels, goal = torch.rand(3, 1, 3, 224, 224), torch.rand(3, 3, 224, 224)
    config = types.SimpleNamespace(horizon=5, action_block=5)
    space = gym.spaces.Box(-1, 1, shape=(3, 2))
    outs = []
    for cls, model in ((PublicCEMSolver, public), (lf.interop.CEMSolver, ours_or_public)):
        kw = {"backend": backend} if cls is lf.interop.CEMSolver else {}
        solver = cls(model, batch_size=batch_size, num_samples=24, n_steps=3, topk=5, seed=13, **kw)
        solver.configure(action_space=space, n_envs=3, config=config)
        info = {"pixels": pixels.clone(), "goal": goal[:, None].clone(), "action": torch.zeros(3, 1, 10)}
        init = None if init_action is None else init_action.clone()
        outs.append(solver.solve(info, init_action=init))
    return outs


def test_drop_in_solver_returns_the_public_plan(pair):
    # batch_size 1 only: the public LeWM.get_cost cannot broadcast its goal over a batch of several
    # environments (expand_as fails), so the public solver only works one environment at a time.
    public, _ = pair
    expected, got = solve_public_and_ours(public, public, 1, init_action=torch.randn(3, 2, 10))
    assert rel_err(got["actions"], expected["actions"]) <= 1e-3
    assert got["costs"] == pytest.approx(expected["costs"], rel=1e-4)
    assert rel_err(got["var"][0], expected["var"][0]) <= 1e-3


@pytest.mark.parametrize("naming", ["5.x", "4.x"])
def test_load_official_from_public_modules(pair, tmp_path, naming):
    """A published-format folder built from the public module's own state_dict and config."""
    import json

    public, _ = pair
    state = public.state_dict()
    if naming == "4.x":
        state = lf.interop.to_transformers_4x_names(state)
    torch.save(state, tmp_path / "weights.pt")
    config = lf.LeWMConfig().to_published()
    config.pop("lewm_fast")
    config["_target_"] = "some.release.module.JEPA"  # _target_ strings must not matter
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = lf.interop.load_official(tmp_path)
    pixels = torch.rand(1, 2, 3, 224, 224)
    emb, act = torch.randn(2, 3, 192), torch.randn(2, 3, 10)
    with torch.no_grad():
        assert rel_err(loaded.encode(pixels), public.encode({"pixels": pixels.clone()})["emb"]) <= 1e-4
        act_emb = public.action_encoder(act)
        assert rel_err(loaded.predict(emb, act_emb), public.predict(emb, act_emb)) <= 1e-4
