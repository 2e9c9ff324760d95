"""The drop-ins against stable-worldmodel's current source (its `ShootingCostEvaluator` and objectives;
runs where they import: a venv with that source installed; skipped elsewhere, e.g. beside release 0.1.1).

Proven here: each recognised composition's packed cost equals the public evaluator's cost bit for bit on
the reference rollout; what is not recognised stays on the generic loop; the drop-ins plan a recognised
evaluator on the packed engine (close to their reference plan) and an H > 1 context with
`action_history` on the generic loop exactly as the public solver; `lf.LeWM` works inside the evaluator;
a model from `swm.wm.utils.load_pretrained` is recognised."""

import json
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import rel_err

import lewm_fast as lf
from lewm_fast.interop.solvers.lewm import packed_cost

planning = pytest.importorskip("stable_worldmodel.planning", reason="needs stable-worldmodel's current source")
pytest.importorskip("transformers", reason="needs transformers")
pytestmark = pytest.mark.peer
from stable_worldmodel.planning import ControlPenalty, GoalMSE, ShootingCostEvaluator, WeightedSum  # noqa: E402

IMAGE, HORIZON = 28, 4


@pytest.fixture(scope="module")
def public():
    from test_interop_swm import public_lewm

    return public_lewm(D=48, image=IMAGE, patch=7, enc_layers=2, pred_depth=2, seed=5)


def compositions():
    return {
        "goal": GoalMSE(),
        "goal+control": WeightedSum([(1.0, GoalMSE()), (0.05, ControlPenalty())]),
        "nested": WeightedSum([(0.5, WeightedSum([(2.0, GoalMSE()), (0.3, ControlPenalty())])), (0.7, GoalMSE())]),
    }


def observations(e=2, h=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(e, h, 3, IMAGE, IMAGE, generator=g), torch.rand(e, 1, 3, IMAGE, IMAGE, generator=g)


def expanded(info: dict, s: int) -> dict:
    return {k: v.unsqueeze(1).expand(v.shape[0], s, *v.shape[1:]) for k, v in info.items()}


@pytest.mark.parametrize("name", list(compositions()))
def test_recognised_cost_equals_the_public_evaluator_bit_for_bit(public, name):
    evaluator = ShootingCostEvaluator(public, compositions()[name])
    packed = packed_cost(evaluator)
    assert packed is not None and packed.evaluator is not None
    pixels, goal = observations(2)
    cand = torch.randn(2, 7, HORIZON, 10, generator=torch.Generator().manual_seed(1))
    info = expanded({"pixels": pixels, "goal": goal, "action": torch.zeros(2, 1, 10)}, 7)
    with torch.no_grad():
        want = evaluator.get_cost(info, cand)
    goal_cost = lf.Planner(packed.lewm, backend="reference", horizon=HORIZON).cost(pixels, goal[:, -1], cand)
    got = packed.evaluator.total(goal_cost, cand)
    assert torch.equal(got, want), rel_err(got, want)


def test_lewm_fast_inside_the_evaluator_equals_the_public_model(public):
    """`lf.LeWM` has the Dynamics surface (encode(info), rollout): the evaluator runs it unchanged, with
    the same cost as over the public model, for an H = 2 context with its executed action block too."""
    ours = lf.interop.from_swm(public)
    pixels, goal = observations(2, h=2)
    cand = torch.randn(2, 5, HORIZON, 10, generator=torch.Generator().manual_seed(2))
    base = {"pixels": pixels, "goal": goal, "action": torch.zeros(2, 1, 10), "action_history": torch.randn(2, 1, 10)}
    with torch.no_grad():
        costs = [ShootingCostEvaluator(m, GoalMSE()).get_cost(expanded(base, 5), cand) for m in (public, ours)]
    assert torch.equal(costs[0], costs[1]), rel_err(costs[0], costs[1])


class Custom(torch.nn.Module):
    def forward(self, info):
        return info["predicted_emb"][:, :, -1].abs().sum(-1)


class OwnCost(ShootingCostEvaluator):
    def get_cost(self, info_dict, action_candidates):
        return super().get_cost(info_dict, action_candidates) * 2


def test_what_is_not_recognised_stays_on_the_generic_loop(public):
    assert packed_cost(ShootingCostEvaluator(public, GoalMSE(reduction="mean"))) is None
    assert packed_cost(ShootingCostEvaluator(public, Custom())) is None
    assert packed_cost(ShootingCostEvaluator(public, WeightedSum([(1.0, GoalMSE()), (1.0, Custom())]))) is None
    assert packed_cost(ShootingCostEvaluator(public, ControlPenalty())) is None  # no rollout to pack
    assert packed_cost(ShootingCostEvaluator(public, GoalMSE(), encode_goal=None)) is None
    assert packed_cost(OwnCost(public, GoalMSE())) is None
    assert packed_cost(public) is None  # the current source's LeWM has no get_cost of its own


def configure(solver, n_envs):
    solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(n_envs, 2), dtype=np.float32), n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=HORIZON, action_block=5))  # fmt: skip
    return solver


@pytest.mark.parametrize("name", ["goal", "goal+control"])
def test_drop_in_plans_a_recognised_evaluator_on_the_packed_engine(public, name):
    evaluator = ShootingCostEvaluator(public, compositions()[name])
    pixels, goal = observations(1)
    info = {"pixels": pixels, "goal": goal, "action": torch.zeros(1, 1, 10)}
    kw = dict(num_samples=30, n_steps=5, topk=5, seed=3)
    fast = configure(lf.interop.CEMSolver(cost=evaluator, backend="torch", **kw), 1)
    ref = configure(lf.interop.CEMSolver(cost=evaluator, backend="reference", **kw), 1)
    got, want = fast.solve(dict(info)), ref.solve(dict(info))
    assert fast.planner_cache.planner is not None and ref.planner_cache.planner is None
    torch.testing.assert_close(got["actions"], want["actions"], rtol=1e-4, atol=1e-5)
    assert len(got["costs"]) == 1 and abs(got["costs"][0] - want["costs"][0]) <= 1e-4 * abs(want["costs"][0])


def test_context_with_action_history_runs_the_generic_loop_as_the_public_solver(public):
    """history_len > 1: candidates are strictly future, `action_history` the executed blocks. The drop-in's
    reference is the public solver's plan bit for bit; its fast backend runs the evaluator on every
    environment in one chunk (the packed engine has no executed-block input)."""
    from stable_worldmodel.planning.solver.cem import CEMSolver as PublicCEM

    evaluator = ShootingCostEvaluator(public, GoalMSE())
    pixels, goal = observations(2, h=2)
    info = {"pixels": pixels, "goal": goal, "action": torch.zeros(2, 1, 10),
            "action_history": torch.randn(2, 1, 10, generator=torch.Generator().manual_seed(4))}  # fmt: skip
    kw = dict(num_samples=20, n_steps=3, topk=4, seed=2)
    want = configure(PublicCEM(evaluator, **kw), 2).solve(dict(info))
    ref = configure(lf.interop.CEMSolver(cost=evaluator, backend="reference", **kw), 2).solve(dict(info))
    assert torch.equal(ref["actions"], want["actions"]) and ref["costs"] == want["costs"]
    fast = configure(lf.interop.CEMSolver(cost=evaluator, backend="torch", **kw), 2)
    out = fast.solve(dict(info))
    assert fast.planner_cache.planner is None and out["actions"].shape == (2, HORIZON, 10)


def test_accelerate_patches_the_current_layout_and_takes_the_packed_path(public):
    handle = lf.interop.accelerate()
    try:
        solver = planning.CEMSolver(cost=ShootingCostEvaluator(public, GoalMSE()), num_samples=20, n_steps=2, topk=4)
        assert isinstance(solver, lf.interop.CEMSolver) and solver.layout == "source"
        pixels, goal = observations(3)
        out = configure(solver, 3).solve({"pixels": pixels, "goal": goal, "action": torch.zeros(3, 1, 10)})
        assert solver.planner_cache.planner is not None and len(out["costs"]) == 3
    finally:
        handle.undo()


def test_a_model_from_load_pretrained_is_recognised(public, tmp_path):
    """`swm.wm.utils.load_pretrained` (a folder of weights.pt + config.json, instantiated with Hydra) gives
    the public LeWM: converted, recognised inside the evaluator, the same weights as the saved model."""
    from stable_worldmodel.wm.utils import load_pretrained

    vit = public.encoder.config
    act, pred = public.action_encoder, public.predictor
    mlp = {"_target_": "stable_worldmodel.wm.lewm.module.MLP", "input_dim": 48, "hidden_dim": 2048, "output_dim": 48,
           "norm_fn": {"_target_": "torch.nn.BatchNorm1d", "_partial_": True}}  # fmt: skip
    config = {
        "_target_": "stable_worldmodel.wm.lewm.LeWM",
        "encoder": {"_target_": "transformers.ViTModel", "add_pooling_layer": False,
                    "config": {"_target_": "transformers.ViTConfig", "hidden_size": vit.hidden_size,
                               "num_hidden_layers": vit.num_hidden_layers, "num_attention_heads": 3,
                               "intermediate_size": vit.intermediate_size, "image_size": IMAGE, "patch_size": 7}},
        "predictor": {"_target_": "stable_worldmodel.wm.lewm.module.Predictor", "num_frames": pred.num_frames,
                      "depth": pred.depth, "heads": pred.heads, "dim_head": pred.dim_head, "mlp_dim": pred.mlp_dim,
                      "input_dim": 48, "hidden_dim": 48, "output_dim": 48},
        "action_encoder": {"_target_": "stable_worldmodel.wm.lewm.module.Embedder", "input_dim": act.input_dim,
                           "emb_dim": 48},
        "projector": mlp,
        "pred_proj": mlp,
    }  # fmt: skip
    folder = tmp_path / "checkpoints" / "tiny"
    folder.mkdir(parents=True)
    torch.save(public.state_dict(), folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_pretrained("tiny", cache_dir=str(tmp_path)).eval()
    packed = packed_cost(ShootingCostEvaluator(loaded, GoalMSE()))
    assert packed is not None
    reference = lf.interop.from_swm(public)
    for (name, a), b in zip(packed.lewm.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
