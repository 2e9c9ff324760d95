"""Closed-loop evaluation: held-out problem selection, batched MPC bookkeeping, success counting,
checkpoint/env mismatch, failed episodes, the `lewm-fast eval` command."""

import json

import numpy as np
import pytest

import lewm_fast as lf
from lewm_fast.cli import main as cli_main
from lewm_fast.data.collect import collect
from lewm_fast.data.dataset import Normalizer, split_episodes
from lewm_fast.data.hdf5 import open_h5, read_index
from lewm_fast.evaluation import EvalConfigError, evaluate
from lewm_fast.evaluation.closed_loop import make_eval_env, place
from lewm_fast.evaluation.mpc import EpisodeResult, RandomController, run_mpc
from lewm_fast.evaluation.protocol import held_out_episodes, load_checkpoint, select_problems
from lewm_fast.training import TrainConfig, train

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip
FAST_CEM = dict(num_samples=8, topk=2, iters=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny TwoRoom file (12 episodes x 40 steps, 28 px) and a tiny model trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "tworoom.h5"
    collect("tworoom", data, 12, image_size=28, max_steps=40, seed=0, progress=False)
    cfg = TrainConfig(data=str(data), out=str(root / "run"), steps=2, batch_size=8, warmup=1, amp="off",
                      val_fraction=0.25, num_proj=32, progress=False, model_overrides=TINY, log_every=1)  # fmt: skip
    train(cfg)
    return data, root / "run"


def test_problems_come_from_held_out_episodes_with_the_goal_offset_ahead(run):
    data, ckpt = run
    eps, how = held_out_episodes(data, load_checkpoint(ckpt).train_config)
    _, val = split_episodes(12, 0.25, 0)
    assert list(eps) == list(val) and "validation split" in how
    problems = select_problems(data, eps, 10, goal_offset=25, seed=3)  # more problems than held-out episodes
    assert len(problems) == 10 and len({(p.episode, p.start_row) for p in problems}) == 10
    with open_h5(data) as f:
        lengths, offsets = read_index(f)
        for p in problems:
            assert p.episode in set(val.tolist())
            assert p.goal_row == p.start_row + 25 and p.goal_row < lengths[p.episode]
            row = offsets[p.episode] + p.goal_row
            np.testing.assert_array_equal(p.goal_frame, f["pixels"][row])
            np.testing.assert_allclose(p.goal_state, f["state"][row])
            np.testing.assert_allclose(p.start_state, f["state"][offsets[p.episode] + p.start_row])
    assert [p.start_row for p in select_problems(data, eps, 10, 25, seed=3)] == [p.start_row for p in problems]


def test_a_file_the_model_never_saw_is_used_whole(run, tmp_path):
    data, ckpt = run
    other = tmp_path / "other.h5"
    collect("tworoom", other, 3, image_size=28, max_steps=30, seed=5, progress=False)
    eps, how = held_out_episodes(other, load_checkpoint(ckpt).train_config)
    assert list(eps) == [0, 1, 2] and "not the checkpoint's training file" in how
    with pytest.raises(EvalConfigError, match="goal_offset=40"):
        select_problems(other, eps, 2, goal_offset=40, seed=0)


class Oracle:
    """Heads straight for each episode's goal at a per-episode speed; records which episodes it was asked for."""

    def __init__(self, envs, goals, speeds, blocks=1, frameskip=5):
        self.envs, self.goals, self.speeds, self.blocks, self.fs = envs, goals, speeds, blocks, frameskip
        self.calls = []

    def __call__(self, idx, frames):
        assert frames.shape[0] == len(idx)
        self.calls.append(list(idx))
        out = np.zeros((len(idx), self.blocks, self.fs, 2), dtype=np.float32)
        for j, i in enumerate(idx):
            d = self.goals[i][:2] - self.envs[i].agent
            out[j] = self.speeds[i] * d / max(np.linalg.norm(d), 1e-9)
        return out


def _envs(starts, goals):
    envs = []
    for s, g in zip(starts, goals):
        env = make_eval_env("tworoom", 28)
        env.reset(seed=0)
        env.set_state(np.asarray(s, dtype=float))
        env.set_target(g)
        envs.append(env)
    return envs


def test_batched_mpc_finishes_episodes_at_different_times_within_the_budget():
    starts = [(40, 100), (40, 100), (40, 100), (40, 100)]
    goals = [np.array(g, dtype=float) for g in ((40, 100), (40, 140), (40, 190), (40, 190))]
    speeds = [1.0, 1.0, 1.0, 0.0]  # episode 0 starts at its goal; episode 3 never moves
    envs = _envs(starts, goals)
    ctl = Oracle(envs, goals, speeds)
    results, stats = run_mpc(envs, goals, ctl, budget=20)
    # success when within 16 units: 40 -> 24 units to go at 5 per step = 5 steps; 90 -> 74 = 15 steps
    assert [r.success for r in results] == [True, True, True, False]
    assert [r.success_step for r in results] == [0, 5, 15, None]
    assert [r.steps for r in results] == [0, 5, 15, 20]  # the failure used exactly the budget
    assert [r.plans for r in results] == [0, 1, 3, 4]  # one block of 5 steps per plan
    assert ctl.calls == [[1, 2, 3], [2, 3], [2, 3], [3]]  # E shrinks as episodes end
    assert stats.batch_sizes == [3, 2, 2, 1]
    assert all(r.final_frame is not None and r.final_frame.shape == (28, 28, 3) for r in results)


def test_a_failing_env_is_a_logged_failure_and_the_others_carry_on():
    goals = [np.array((40.0, 140.0))] * 3
    envs = _envs([(40, 100)] * 3, goals)
    step = envs[1].step

    def broken(action, calls=[0]):  # noqa: B006 - a counter
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("the physics exploded")
        return step(action)

    envs[1].step = broken
    envs[2].render = lambda *a: (_ for _ in ()).throw(OSError("no display"))
    messages = []
    results, _ = run_mpc(envs, goals, Oracle(envs, goals, [1.0] * 3), budget=50, log=messages.append)
    assert results[0].success and results[0].error is None
    assert not results[1].success and "physics exploded" in results[1].error and results[1].steps == 2
    assert not results[2].success and "no display" in results[2].error
    assert any("episode 1 failed" in m for m in messages) and any("episode 2 failed" in m for m in messages)
    # an episode that already failed during set-up (no env) is never planned
    asked = []

    def still(idx, frames):
        asked.extend(idx)
        return np.zeros((len(idx), 1, 5, 2))

    envs = _envs([(40, 100)] * 2, goals[:2])
    pre = [EpisodeResult(), EpisodeResult(error="setting up: boom"), EpisodeResult()]
    results, _ = run_mpc([envs[0], None, envs[1]], goals, still, budget=10, results=pre)
    assert results[1].error == "setting up: boom" and not results[1].success and 1 not in asked
    assert results[0].steps == results[2].steps == 10


def test_evaluate_plans_all_episodes_in_one_batch_and_writes_json_and_png(run, tmp_path, capsys, monkeypatch):
    data, ckpt = run
    sizes = []
    plan = lf.CEMPlanner.plan_with_info

    def spy(self, pixels, goal, init_mean=None):
        sizes.append((pixels.shape[0], None if init_mean is None else tuple(init_mean.shape)))
        return plan(self, pixels, goal, init_mean)

    monkeypatch.setattr(lf.CEMPlanner, "plan_with_info", spy)
    s = evaluate("tworoom", data, ckpt, episodes=4, budget=10, receding=2, dtype="auto", out=tmp_path, **FAST_CEM)
    assert s["dtype"] == ("bf16" if lf.capability.native_bf16("cpu") else "fp32")  # what "auto" resolved to
    assert "success rate: " in capsys.readouterr().out
    assert s["episodes"] == 4 and s["successes"] == sum(e["success"] for e in s["per_episode"])
    assert s["success_rate"] == s["successes"] / 4
    assert sizes and sizes[0][0] == 4 - s["solved_at_start"]  # every running episode in the first call
    assert all(init == (n, 3, 10) for n, init in sizes)  # warm start: the 3 blocks not executed
    assert all(e["steps"] <= 10 for e in s["per_episode"])
    assert all(e["steps"] == 10 for e in s["per_episode"] if not e["success"])
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["success_rate"] == s["success_rate"] and (tmp_path / "eval_frames.png").stat().st_size > 1000
    # the random baseline runs on the very same problems
    r = evaluate("tworoom", data, ckpt, episodes=4, budget=10, policy="random", out=tmp_path)
    assert [e["start_state"] for e in r["per_episode"]] == [e["start_state"] for e in s["per_episode"]]
    assert (tmp_path / "eval_random.json").exists()


def test_success_is_counted_by_the_env_criterion(run, monkeypatch):
    """A frozen controller succeeds only where it starts within 16 units of the goal; one heading
    straight for the goal succeeds everywhere (25 data steps are at most 125 units, the budget 250)."""
    data, ckpt = run
    import lewm_fast.evaluation.closed_loop as ev

    made = []

    def factory(name, size):  # evaluate makes env i for problem i
        made.append(make_eval_env(name, size))
        return made[-1]

    def frozen(*a):
        return lambda idx, frames: np.zeros((len(idx), 1, 5, 2), dtype=np.float32)

    def straight(*a):
        def act(idx, frames):
            d = np.stack([made[i].target - made[i].agent for i in idx])
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
            return np.repeat(d[:, None, None, :], 5, axis=2).astype(np.float32)

        return act

    monkeypatch.setattr(ev, "RandomController", frozen)
    s = evaluate("tworoom", data, ckpt, episodes=8, budget=50, policy="random", env_factory=factory)
    assert [e["success"] for e in s["per_episode"]] == [e["start_goal_agent_distance"] < 16 for e in s["per_episode"]]
    assert s["successes"] == s["solved_at_start"] < 8  # some problems need moving: a failure here is real
    made.clear()
    monkeypatch.setattr(ev, "RandomController", straight)
    s2 = evaluate("tworoom", data, ckpt, episodes=8, budget=50, policy="random", env_factory=factory)
    assert s2["success_rate"] == 1.0 and s2["successes"] == 8
    assert [e["start_state"] for e in s2["per_episode"]] == [e["start_state"] for e in s["per_episode"]]
    assert any(e["success_step"] > 0 for e in s2["per_episode"])


def test_a_checkpoint_that_does_not_fit_is_refused_before_planning(run, tmp_path, monkeypatch, capsys):
    data, ckpt = run
    monkeypatch.setattr(lf, "CEMPlanner", lambda *a, **k: pytest.fail("planning started"))
    # action width: a model for 3-d actions
    bad = tmp_path / "bad_action"
    model = lf.LeWM(lf.LeWMConfig(**TINY, action_dim=3))
    lf.interop.save_official(model, bad)
    Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32)).save(bad / "normalization.json")
    with pytest.raises(EvalConfigError, match="actions of width 3"):
        evaluate("tworoom", data, bad, episodes=2)
    # image size: the data were collected at 32 px, the model takes 28
    data32 = tmp_path / "d32.h5"
    collect("tworoom", data32, 2, image_size=32, max_steps=30, seed=0, progress=False)
    with pytest.raises(EvalConfigError, match="28 px images but the data hold 32 px"):
        evaluate("tworoom", data32, ckpt, episodes=2)
    # the data's env is not the one asked for
    with pytest.raises(EvalConfigError, match="collected in env 'tworoom'"):
        evaluate("pusht", data, ckpt, episodes=2)
    # the command line turns it into a one-line error (exit status 2)
    capsys.readouterr()
    assert cli_main(["eval", "--ckpt", str(ckpt), "--env", "tworoom", "--data", str(data32), "--episodes", "2",
                     "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lewm-fast: error: ") and "28 px images" in err


def test_eval_command_line(run, tmp_path, capsys):
    data, ckpt = run
    args = ["eval", "--ckpt", str(ckpt), "--env", "tworoom", "--data", str(data), "--episodes", "3", "--budget", "10",
            "--samples", "8", "--topk", "2", "--iters", "2", "--dtype", "fp32", "--out", str(tmp_path)]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "success rate: " in out and "s per call" in out and "s per episode" in out
    assert json.loads((tmp_path / "eval.json").read_text())["episodes"] == 3


def test_place_teleports_and_sets_the_goal(run):
    data, ckpt = run
    p = select_problems(data, np.arange(12), 1, 25, seed=0)[0]
    env = make_eval_env("tworoom", 28)
    place("tworoom", env, p, seed=0)
    np.testing.assert_allclose(env.get_state()[:2], p.start_state[:2])
    np.testing.assert_allclose(env.target, p.goal_state[:2])
    np.testing.assert_array_equal(env.render(), p.start_frame)  # the start frame is the dataset's
    a = RandomController(env.action_space, 2, 5, 0)([0, 1], None)
    assert a.shape == (2, 2, 5, 2) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.3
