"""`lewm-fast eval --world swm/NAME`: a checkpoint on a stable-worldmodel World. The pieces run everywhere; the
World itself where stable_worldmodel imports (the side venv), skipped elsewhere."""

import types

import numpy as np
import pytest
import torch

from lewm_fast.cli import main as cli_main
from lewm_fast.data.dataset import Normalizer, prepare_pixels
from lewm_fast.evaluation import EvalConfigError
from lewm_fast.evaluation.world import ActionScaler, check_columns, dataset_problems, frame_transform

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip


def test_frames_and_actions_reach_the_model_as_in_training():
    img = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    out = frame_transform(12)(img)
    torch.testing.assert_close(out, prepare_pixels(img.permute(1, 2, 0)[None], 12)[0], rtol=0, atol=0)
    norm = Normalizer(np.array([0.5, -1.0], np.float32), np.array([2.0, 0.25], np.float32))
    scaler, a = ActionScaler(norm), np.array([[1.5, -0.75], [np.nan, 0.0]], np.float32)
    np.testing.assert_allclose(scaler.transform(a)[0], [0.5, 1.0])
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(a))[0], a[0], rtol=1e-6)
    assert np.isnan(scaler.transform(a)[1, 0])


def test_dataset_problems_are_valid_distinct_sorted_and_seeded():
    ds = types.SimpleNamespace(lengths=np.array([30, 10, 60, 26]))
    eps, starts = dataset_problems(ds, 20, 25, seed=1)
    pairs = list(zip(eps, starts))
    assert len(set(pairs)) == 20 and pairs == sorted(pairs)
    assert all(s + 25 < ds.lengths[e] for e, s in pairs) and 1 not in eps
    assert dataset_problems(ds, 20, 25, seed=1) == (eps, starts)
    with pytest.raises(EvalConfigError, match="only 41 start rows"):
        dataset_problems(ds, 42, 25, seed=0)


def test_set_up_calls_must_find_their_columns():
    calls = [{"method": "_set_state", "args": {"state": {"value": "state"}}},
             {"method": "_set_goal_state", "args": {"goal_state": {"value": "goal_state"}}},
             {"method": "set_target_pos", "args": {"cube_id": {"value": 0, "in_dataset": False}}}]  # fmt: skip
    check_columns(calls, ["pixels", "action", "state", "goal_state"], "d.h5")  # goal_state = `state` at the goal
    with pytest.raises(EvalConfigError, match=r"no column for \['state'\]"):
        check_columns(calls[:1], ["pixels", "action", "pos_agent"], "d.h5")


def test_eval_command_line_wants_one_of_env_and_world(capsys):
    for argv, message in [
        (["--env", "tworoom", "--world", "swm/TwoRoom-v1", "--data", "x.h5"], "--env, --world: expected exactly one"),
        (["--data", "x.h5"], "--env, --world: expected exactly one"),
        (["--env", "tworoom"], "--data: expected an episode file with --env"),
        (["--world", "swm/TwoRoom-v1", "--solver", "icem"], "--solver: --world plans with"),
        (["--world", "swm/TwoRoom-v1", "--callables", "{"], "--callables: expected JSON"),
    ]:
        assert cli_main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


# ---- on a World (needs stable_worldmodel) -----------------------------------------------------------


@pytest.fixture(scope="module")
def world_setup(tmp_path_factory):
    swm = pytest.importorskip("stable_worldmodel")
    from stable_worldmodel.envs.two_room import ExpertPolicy

    from lewm_fast.data.collect import collect
    from lewm_fast.training import TrainConfig, train

    root = tmp_path_factory.mktemp("world")
    collect("tworoom", root / "ours.h5", 6, image_size=28, max_steps=40, seed=0, progress=False)
    cfg = TrainConfig(data=str(root / "ours.h5"), out=str(root / "run"), steps=2, batch_size=8, warmup=1, amp="off",
                      num_proj=32, progress=False, model_overrides=TINY, log_every=1)  # fmt: skip
    train(cfg)
    world = swm.World("swm/TwoRoom-v1", num_envs=3, image_shape=(28, 28), max_episode_steps=60)
    world.set_policy(ExpertPolicy(action_noise=2.0, action_repeat_prob=0.05, seed=0))
    world.collect(root / "swm.h5", episodes=6, seed=0, format="hdf5", progress=False)
    world.close()
    return root


FAST = dict(episodes=4, budget=10, goal_offset=20, num_samples=8, topk=2, iters=2, dtype="fp32", log=lambda m: None)


@pytest.mark.peer
def test_a_checkpoint_on_a_world_plans_every_episode_in_one_batch(world_setup, tmp_path):
    from lewm_fast.evaluation.world import evaluate_world

    root = world_setup
    s = evaluate_world("swm/TwoRoom-v1", root / "run", root / "swm.h5", out=tmp_path, **FAST)
    assert s["episodes"] == 4 and 0 <= s["successes"] <= 4 and len(s["per_episode_success"]) == 4
    assert s["plan_calls"] >= 1 and s["mean_batch_per_plan_call"] > 1  # the episodes share planner batches
    assert (tmp_path / "eval_world.json").exists()
    auto = evaluate_world("swm/TwoRoom-v1", root / "run", root / "swm.h5", **{**FAST, "dtype": "auto"})
    assert auto["dtype"] in ("fp32", "bf16")  # `lewm-fast eval --world`'s default, resolved by the capability
    r = evaluate_world("swm/TwoRoom-v1", None, root / "swm.h5", policy="random", image_size=28, **FAST)
    assert r["episodes"] == 4 and r["plan_calls"] == 0


@pytest.mark.peer
def test_world_mismatches_are_named(world_setup):
    from lewm_fast.evaluation.world import evaluate_world

    root = world_setup
    with pytest.raises(EvalConfigError, match="not a registered World"):
        evaluate_world("swm/Nope-v0", root / "run", root / "swm.h5", **FAST)
    with pytest.raises(EvalConfigError, match="give no goal image"):
        evaluate_world("swm/TwoRoom-v1", root / "run", None, **FAST)
    with pytest.raises(EvalConfigError, match="28x28 frames, the World renders 14x14"):
        evaluate_world("swm/TwoRoom-v1", None, root / "swm.h5", policy="random", image_size=14, **FAST)
    car = "swm/MountainCarContinuousControl-v0"
    with pytest.raises(EvalConfigError, match=f"takes actions of width 2, World {car} has 1"):
        evaluate_world(car, root / "run", None, **FAST)
