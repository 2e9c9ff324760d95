"""The surprise test: the perturbations change what they claim to (frames for a colour change, the state
for a teleport), the teacher-forced surprise, the paired t-test, the command."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_model
from scipy import stats

import lewm_fast as lf
from lewm_fast.cli import main as cli_main
from lewm_fast.data.dataset import Normalizer
from lewm_fast.evaluation.closed_loop import make_eval_env
from lewm_fast.evaluation.surprise import frame_surprise, record_actions, replay, surprise_test


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny model (28 px) saved as a checkpoint with action statistics."""
    folder = tmp_path_factory.mktemp("surprise") / "ckpt"
    lf.interop.save_official(tiny_model(seed=1), folder)
    Normalizer(np.zeros(2, np.float32), np.full(2, 0.6, np.float32)).save(folder / "normalization.json")
    return folder


def _replays(env_name, size, steps=20, at=10):
    env = make_eval_env(env_name, size)
    start, actions = record_actions(env_name, env, steps, seed=0, index=0)
    return {c: replay(env_name, env, start, actions, 5, c, at, seed=0) for c in ("unperturbed", "colour", "teleport")}


@pytest.mark.parametrize("env_name", ["tworoom", "pusht"])
def test_colour_changes_the_frames_and_teleport_the_state_from_step_t(env_name):
    if env_name == "pusht":
        pytest.importorskip("gym_pusht")
    r = _replays(env_name, 32)
    (f0, s0), (fc, sc), (ft, st) = r["unperturbed"], r["colour"], r["teleport"]
    assert f0.shape == (5, 32, 32, 3) and s0.shape[0] == 5
    m = 2  # step 10 / frameskip 5
    for f in (fc, ft):  # identical before the perturbation
        np.testing.assert_array_equal(f[:m], f0[:m])
    np.testing.assert_allclose(sc, s0)  # a colour change is not physical: the same trajectory
    assert (fc[m:] != f0[m:]).any(axis=(1, 2, 3)).all()  # but every frame from t on looks different
    moved = np.linalg.norm(st[m, :2] - s0[m, :2]) if env_name == "tworoom" else np.linalg.norm(st[m, 2:4] - s0[m, 2:4])
    assert moved >= (70 if env_name == "tworoom" else 90)
    assert (ft[m] != f0[m]).any()
    # the replayed env got its colours back: a fresh unperturbed replay equals the first one
    again = _replays(env_name, 32)["unperturbed"][0]
    np.testing.assert_array_equal(again, f0)


def test_frame_surprise_is_the_teacher_forced_prediction_error():
    model = tiny_model(seed=2)
    px = torch.randn(3, 6, 3, 28, 28)
    act = torch.randn(3, 5, 10)
    s = frame_surprise(model, px, act)
    assert s.shape == (3, 6) and torch.isnan(s[:, 0]).all() and (s[:, 1:] > 0).all()
    with torch.no_grad():
        emb, a = model.encode(px), model.embed_actions(act)
        k = 5  # window of num_frames = 3 frames: 2, 3, 4 -> 5
        pred = model.predict(emb[:, 2:5], a[:, 2:5])[:, -1]
        torch.testing.assert_close(s[:, k], (pred - emb[:, k]).pow(2).mean(-1))
        pred1 = model.predict(emb[:, :1], a[:, :1])[:, -1]
        torch.testing.assert_close(s[:, 1], (pred1 - emb[:, 1]).pow(2).mean(-1))


def test_surprise_test_reports_paired_t_tests_and_writes_a_plot(ckpt, tmp_path):
    r = surprise_test(
        ckpt, "tworoom", episodes=4, steps=20, perturb_step=10, window=2, out=tmp_path, log=lambda m: None
    )
    curves = r["_curves"]
    assert set(curves) == {"unperturbed", "colour", "teleport"} and curves["teleport"].shape == (4, 5)
    around = {c: curves[c][:, 2:4].mean(1) for c in curves}
    for c in ("colour", "teleport"):
        expected = stats.ttest_rel(around[c], around["unperturbed"])
        assert r["conditions"][c]["p"] == pytest.approx(expected.pvalue)
        assert r["conditions"][c]["t"] == pytest.approx(expected.statistic)
    # before the perturbation the three versions are the same frames, so the same surprise
    np.testing.assert_allclose(curves["teleport"][:, 1:2], curves["unperturbed"][:, 1:2])
    assert r["frames_changed"] == {"unperturbed": 0.0, "colour": 1.0, "teleport": 1.0}
    assert r["states_changed"] == {"unperturbed": 0.0, "colour": 0.0, "teleport": 1.0}
    saved = json.loads((tmp_path / "surprise.json").read_text())
    assert saved["conditions"]["teleport"]["p"] == r["conditions"]["teleport"]["p"]
    assert (tmp_path / "surprise.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="multiple of frameskip"):
        surprise_test(ckpt, "tworoom", episodes=4, steps=20, perturb_step=12)
    with pytest.raises(ValueError, match="colour: expected three ints in 0..255"):
        surprise_test(ckpt, "tworoom", episodes=4, steps=20, perturb_step=10, colour=(0, 300, 0))


def test_the_colour_perturbation_uses_the_colour_asked_for():
    env = make_eval_env("tworoom", 32)
    start, actions = record_actions("tworoom", env, 20, seed=0, index=0)
    frames = {c: replay("tworoom", env, start, actions, 5, "colour", 10, seed=0, colour=c)[0] for c in ((0, 255, 0),
              (0, 0, 255))}  # fmt: skip
    green, blue = frames[(0, 255, 0)][2].astype(int), frames[(0, 0, 255)][2].astype(int)
    assert (green[..., 1] - green[..., 2]).max() > 100 and (blue[..., 2] - blue[..., 1]).max() > 100
    np.testing.assert_array_equal(frames[(0, 255, 0)][:2], frames[(0, 0, 255)][:2])  # same until step 10


def test_surprise_command_prints_p_values(ckpt, tmp_path, capsys):
    args = ["surprise", "--ckpt", str(ckpt), "--env", "tworoom", "--episodes", "3", "--steps", "20",
            "--perturb-step", "10", "--out", str(tmp_path)]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "p-values: teleport" in out and "colour" in out
    assert cli_main(args + ["--colour", "0,200,0"]) == 0
    assert json.loads((tmp_path / "surprise.json").read_text())["colour"] == [0, 200, 0]
    capsys.readouterr()
    assert cli_main(args + ["--colour", "green"]) == 2
    assert capsys.readouterr().err.startswith("lewm-fast: error: --colour: expected R,G,B")
    # a checkpoint for 3-d actions does not fit TwoRoom: refused with a one-line message
    bad = tmp_path / "bad"
    lf.interop.save_official(lf.LeWM(lf.LeWMConfig(**{**tiny_model().cfg.__dict__, "action_dim": 3})), bad)
    Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32)).save(bad / "normalization.json")
    assert (
        cli_main(["surprise", "--ckpt", str(bad), "--env", "tworoom", "--episodes", "3", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lewm-fast: error: ") and "actions of width 3" in err
