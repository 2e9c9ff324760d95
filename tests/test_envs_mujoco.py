"""The MuJoCo environments: Reacher (dm-control) and Cube (OGBench), on tiny settings. Each test skips when
its env's package is missing (`pip install -e ".[reacher,cube]"`); rendering uses EGL (MUJOCO_GL=egl)."""

import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from lewm_fast.envs import make_env, make_policy  # noqa: E402


@pytest.fixture(scope="module")
def reacher():
    pytest.importorskip("dm_control")
    env = make_env("reacher", image_size=32, max_episode_steps=6)
    yield env
    env.close()


@pytest.fixture(scope="module")
def cube():
    pytest.importorskip("ogbench")
    env = make_env("cube", image_size=32, max_episode_steps=6)
    yield env
    env.close()


# ---- Reacher ---------------------------------------------------------------------------------------


def test_reacher_reset_is_seeded_and_renders_any_size(reacher):
    s, info = reacher.reset(seed=3)
    other = make_env("reacher", image_size=32)
    np.testing.assert_array_equal(other.reset(seed=3)[0], s)
    other.close()
    assert s.shape == (4,) and np.all(s[2:] == 0)  # joint angles, at rest
    assert -np.pi <= s[0] <= np.pi and abs(s[1]) <= np.deg2rad(160)
    assert not np.array_equal(reacher.reset(seed=4)[0], s)
    for size in (17, 32, 64):
        img = reacher.render(size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8 and img.std() > 0


def test_reacher_step_moves_the_arm_clips_actions_and_truncates(reacher):
    reacher.reset(seed=0)
    frame0, s0 = reacher.render(), reacher.get_state()
    for t in range(6):
        s, _, terminated, truncated, info = reacher.step([5.0, -5.0])  # clipped to [1, -1]
        assert not terminated and truncated == (t == 5) and "is_success" in info
    assert s[0] > s0[0] and s[1] < s0[1]  # torques of opposite signs turn the joints apart
    assert np.abs(reacher.render().astype(int) - frame0.astype(int)).sum() > 0
    a, b = make_env("reacher"), make_env("reacher")
    for env, act in ((a, [5.0, -5.0]), (b, [1.0, -1.0])):
        env.reset(seed=0)
        env.step(act)
    np.testing.assert_array_equal(a.get_state(), b.get_state())


def test_reacher_state_roundtrip_teleport_and_recolour(reacher):
    reacher.reset(seed=0)
    reacher.set_state([0.3, -1.2, 0.5, 0.0])
    np.testing.assert_allclose(reacher.get_state(), [0.3, -1.2, 0.5, 0.0])
    before = reacher.render()
    reacher.set_state([0.3, -1.2])  # angles only: at rest
    np.testing.assert_allclose(reacher.get_state(), [0.3, -1.2, 0, 0])
    np.testing.assert_array_equal(reacher.render(), before)  # velocities are not drawn
    reacher.teleport(np.random.default_rng(0))
    assert np.linalg.norm(reacher.get_state()[:2] - [0.3, -1.2]) >= 1.5
    assert not np.array_equal(reacher.render(), before)
    reacher.set_state([0.3, -1.2])
    saved = reacher.get_colors()
    reacher.set_colors(arm=(0, 0, 255))
    assert not np.array_equal(reacher.render(), before)
    reacher.set_colors(**saved)
    np.testing.assert_array_equal(reacher.render(), before)
    with pytest.raises(ValueError, match="state: expected"):
        reacher.set_state([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="arm: expected three numbers"):
        reacher.set_colors(arm=(0, 300, 0))


def test_reacher_success_is_the_public_qpos_rule(reacher):
    from lewm_fast.envs.reacher import reacher_success

    goal = np.array([0.5, -0.5, 0.0, 0.0])
    assert reacher_success(goal, goal + [0.049, -0.049, 9, 9])  # velocities do not count
    assert not reacher_success(goal, goal + [0.051, 0, 0, 0])
    assert not reacher_success(goal, goal + [0, -0.051, 0, 0])
    assert not reacher_success(goal, goal + [2 * np.pi, 0, 0, 0])  # raw angles, as the public task compares
    reacher.reset(seed=0)
    reacher.set_goal_state(goal)
    reacher.set_state(goal[:2] + [0.2, 0])
    assert not reacher.is_success()
    reacher.set_state(goal[:2] + [0.02, 0])
    assert reacher.is_success() and reacher.is_success(goal) and not reacher.is_success(goal + [1, 0, 0, 0])


def test_reacher_success_is_checked_after_every_physics_step(reacher):
    reacher.reset(seed=0)
    reacher.set_state([0.0, 0.0, 4.0, 0.0])  # spinning fast: ~0.08 rad per physics step
    reacher.step([0.0, 0.0])
    mid, end = reacher._sub_qpos[0], reacher.get_state()
    assert abs(end[0] - mid[0]) > 0.05
    assert reacher.is_success(np.r_[mid, 0, 0])  # passed through the goal pose within the env step
    assert reacher.is_success(end) and not reacher.is_success(np.r_[mid - [0.1, 0], 0, 0])


def test_reacher_policies_are_seeded_and_bounded(reacher):
    for name in ("uniform", "random"):
        p, q = make_policy("reacher", reacher, name, seed=1), make_policy("reacher", reacher, name, seed=1)
        a = np.stack([p(None) for _ in range(20)])
        np.testing.assert_array_equal(a, np.stack([q(None) for _ in range(20)]))
        assert a.shape == (20, 2) and np.abs(a).max() <= 1.0
    uniform = make_policy("reacher", reacher, "uniform", seed=2)
    assert not np.array_equal(uniform(None), uniform(None))  # a fresh action every step (the public policy)


# ---- Cube ------------------------------------------------------------------------------------------


def test_cube_reset_is_seeded_and_renders_any_size(cube):
    s, _ = cube.reset(seed=3)
    assert s.shape == (41,)
    np.testing.assert_allclose(cube.cube_position(), s[14:17])
    assert 0.3 <= s[14] <= 0.55 and -0.3 <= s[15] <= 0.3
    assert not np.array_equal(cube.reset(seed=4)[0], s)
    np.testing.assert_array_equal(cube.reset(seed=3)[0], s)
    for size in (24, 32):
        img = cube.render(size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8 and img.std() > 0
    np.testing.assert_array_equal(cube.render(32), cube.render())


@pytest.mark.parametrize("name, package", [("reacher", "dm_control"), ("cube", "ogbench")])
def test_public_look_from_128_px(name, package):
    pytest.importorskip(package)
    frames = []
    for size in (32, 128):
        env = make_env(name, image_size=size)
        env.reset(seed=0)
        frames.append(env.render(64).astype(float))  # the same frame size: only the look differs
        model = env.inner._model if name == "cube" else env.physics.model
        assert model.vis.quality.offsamples == (4 if size == 128 else 0)
        env.close()
    assert np.abs(frames[0] - frames[1]).mean() > 5  # shadows change the lighting of the whole frame


def test_cube_step_state_roundtrip_teleport_and_recolour(cube):
    s, _ = cube.reset(seed=0)
    for t in range(6):
        s2, _, terminated, truncated, info = cube.step([0.0, 0.0, 1.0, 0.0, 0.0])  # effector up
        assert not terminated and truncated == (t == 5)
    assert not np.allclose(s2[:6], s[:6])
    cube.set_state(s)
    np.testing.assert_allclose(cube.get_state(), s, atol=1e-12)
    before = cube.render()
    cube.teleport(np.random.default_rng(0))
    assert np.linalg.norm(cube.cube_position()[:2] - s[14:16]) >= 0.15
    assert not np.array_equal(cube.render(), before)
    cube.set_state(s)
    saved = cube.get_colors()
    cube.set_colors(cube=(0, 0, 255))
    assert not np.array_equal(cube.render(), before)
    cube.set_colors(**saved)
    np.testing.assert_array_equal(cube.render(), before)
    with pytest.raises(ValueError, match="state: expected"):
        cube.set_state(s[:21])


def test_cube_success_is_the_ogbench_rule(cube):
    from lewm_fast.envs.cube import cube_success

    assert cube_success([0.4, 0.0, 0.02], [0.4, 0.04, 0.02])  # <= 0.04 m
    assert not cube_success([0.4, 0.0, 0.02], [0.43, 0.03, 0.02])  # 0.042 m
    s, _ = cube.reset(seed=0)
    goal = s.copy()
    assert cube.is_success(goal)
    goal[14] += 0.05
    assert not cube.is_success(goal)
    cube.set_goal_state(goal)  # the env's own target follows the goal
    target = cube.inner._data.mocap_pos[cube.inner._cube_target_mocap_ids[0]]
    np.testing.assert_allclose(target, goal[14:17])
    assert not cube.is_success()
    goal[14] -= 0.02
    cube.set_goal_state(goal)
    assert cube.is_success()


def test_cube_expert_policy_is_seeded_bounded_and_picks_the_cube(cube):
    env2 = make_env("cube", image_size=32)
    runs = []
    for env in (cube, env2):
        s, _ = env.reset(seed=5)
        policy = make_policy("cube", env, "expert", seed=7)
        actions = []
        for _ in range(40):
            actions.append(policy(s))
            s, *_ = env.step(actions[-1])
        runs.append((np.stack(actions), s))
    env2.close()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(runs[0][0]).max() <= 1.0 and runs[0][0].shape == (40, 5)


# ---- through collect, and without the packages ------------------------------------------------------


@pytest.mark.parametrize("name, package", [("reacher", "dm_control"), ("cube", "ogbench")])
def test_collect_resume_equals_an_uninterrupted_run(tmp_path, name, package):
    pytest.importorskip(package)
    h5py = pytest.importorskip("h5py")
    from lewm_fast.data.collect import collect

    kw = {"image_size": 16, "max_steps": 7, "seed": 3, "progress": False}
    collect(name, tmp_path / "whole.h5", 2, **kw)
    collect(name, tmp_path / "part.h5", 1, **kw)
    collect(name, tmp_path / "part.h5", 2, resume=True, **kw)
    with h5py.File(tmp_path / "whole.h5", "r") as a, h5py.File(tmp_path / "part.h5", "r") as b:
        assert a.attrs["env"] == name and list(a["ep_len"][:]) == [8, 8]
        for col in ("pixels", "action", "state", "proprio", "ep_len", "ep_offset"):
            np.testing.assert_array_equal(a[col][:], b[col][:])
        assert a["action"].shape[1] == {"reacher": 2, "cube": 5}[name]


MODULES = [
    ("reacher", "dm_control.suite.reacher", "dm-control"),
    ("cube", "ogbench.manipspace.envs.cube_env", "ogbench"),
]


@pytest.mark.parametrize("name, module, package", MODULES)
def test_missing_package_is_named_with_its_extra(monkeypatch, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    expected = rf"env '{name}' needs the {package} package: pip install 'lewm-fast\[{name}\]'"
    with pytest.raises(ImportError, match=expected):
        make_env(name)


# ---- the whole pipeline: collect, train, eval (planner and random), surprise ----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, package", [("reacher", "dm_control"), ("cube", "ogbench")])
def test_collect_train_eval_surprise_from_the_command_line(tmp_path, name, package, capsys):
    pytest.importorskip(package)
    pytest.importorskip("h5py")
    pytest.importorskip("scipy")
    import json

    from lewm_fast.cli import main as cli_main

    tiny = {"image_size": 28, "patch_size": 7, "enc_dim": 48, "enc_depth": 2, "enc_heads": 3, "enc_mlp_dim": 96,
            "embed_dim": 32, "proj_hidden_dim": 64, "pred_depth": 2, "pred_heads": 2, "pred_dim_head": 16,
            "pred_mlp_dim": 64, "pred_hidden_dim": 32, "pred_output_dim": 32, "pred_proj_hidden_dim": 64}  # fmt: skip
    data, run = tmp_path / "d.h5", tmp_path / "run"
    assert cli_main(["collect", "--env", name, "--episodes", "5", "--max-steps", "35", "--image-size", "28",
                     "--out", str(data), "--no-progress"]) == 0  # fmt: skip
    assert cli_main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "4",
                     "--amp", "off", "--num-proj", "16", "--val-fraction", "0.4", "--model", json.dumps(tiny),
                     "--no-progress"]) == 0  # fmt: skip
    fast = ["--episodes", "2", "--budget", "10", "--goal-offset", "20", "--samples", "8", "--topk", "2", "--iters", "2",
            "--dtype", "fp32"]  # fmt: skip
    for policy in ("planner", "random"):
        assert cli_main(["eval", "--ckpt", str(run), "--env", name, "--data", str(data), "--policy", policy,
                         "--out", str(tmp_path / "eval"), *fast]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["env"] == name and summary["episodes"] == 2 and len(summary["per_episode"][0]["final_state"]) > 2
    assert (tmp_path / "eval" / "eval_random.json").exists()
    assert cli_main(["surprise", "--ckpt", str(run), "--env", name, "--episodes", "3", "--steps", "20",
                     "--perturb-step", "10", "--out", str(tmp_path / "surprise")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "surprise" / "surprise.json").read_text())
    assert result["frames_changed"]["colour"] == 1.0 and result["frames_changed"]["teleport"] == 1.0
    assert result["states_changed"]["teleport"] == 1.0 and result["states_changed"]["colour"] == 0.0
    assert "success rate: " in capsys.readouterr().out
