"""Environments: TwoRoom (ours) and the PushT adapter (skipped without gym-pusht)."""

import numpy as np
import pytest

from lewm_fast.envs import make_env, make_policy
from lewm_fast.envs.tworoom import DOOR_CENTER, SUCCESS_RADIUS, WALL_CENTER, TwoRoomEnv, TwoRoomExpert


def test_tworoom_reset_is_seeded_and_renders_any_size():
    a, b = make_env("tworoom"), make_env("tworoom")
    sa, _ = a.reset(seed=3)
    sb, _ = b.reset(seed=3)
    np.testing.assert_array_equal(sa, sb)
    assert sa.shape == (10,) and sa.dtype == np.float32
    for size in (17, 64, 224):
        img = a.render(size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert not np.array_equal(a.reset(seed=4)[0], sa)


def test_tworoom_teleport_recolour_and_state_roundtrip():
    env = make_env("tworoom", image_size=64)
    env.reset(seed=0)
    env.set_state([50.0, 150.0, 170.0, 60.0])
    s = env.get_state()
    np.testing.assert_allclose(s[:4], [50, 150, 170, 60])
    before = env.render()
    env.set_state(s[:2] + [100.0, 0.0])  # teleport the agent only
    moved = env.render()
    assert np.abs(moved.astype(int) - before.astype(int)).sum() > 0
    env.set_state(s)
    np.testing.assert_array_equal(env.render(), before)
    env.set_colors(agent=(0, 0, 255))
    recoloured = env.render()
    assert recoloured[..., 2].astype(int).sum() > before[..., 2].astype(int).sum() - 1  # blue appears
    assert not np.array_equal(recoloured, before)


def test_tworoom_wall_blocks_outside_the_door_and_lets_through_it():
    env = make_env("tworoom")
    env.reset(seed=0)
    env.set_state([80.0, 150.0])  # left room, far from the door (y = 150)
    for _ in range(20):
        env.step([1.0, 0.0])
    assert env.agent[0] < WALL_CENTER  # stopped by the wall
    env.set_state([80.0, DOOR_CENTER])  # level with the door
    for _ in range(20):
        env.step([1.0, 0.0])
    assert env.agent[0] > WALL_CENTER  # went through
    env.step([5.0, 0.0])  # actions are clipped to [-1, 1] and scaled by speed 5
    x = env.agent[0]
    env.step([9.0, 0.0])
    assert env.agent[0] - x <= 5.0 + 1e-9


def test_tworoom_success_radius_and_expert_reaches_through_the_door():
    env = make_env("tworoom", max_episode_steps=200)
    env.reset(seed=0)
    env.set_state([40.0, 180.0, 180.0, 180.0])  # target in the other room
    policy = TwoRoomExpert(env, noise=0.0, repeat=0.0, retarget=False)
    state, done, info = env.get_state(), False, {}
    while not done:
        state, _, terminated, truncated, info = env.step(policy(state))
        done = terminated or truncated
    assert info["is_success"] and env.distance_to_target() < SUCCESS_RADIUS
    assert env.is_success([env.agent[0] + SUCCESS_RADIUS - 1, env.agent[1]])
    assert not env.is_success([env.agent[0] + SUCCESS_RADIUS + 1, env.agent[1]])


def test_tworoom_render_builds_its_background_once():
    # What keeps a render cheap (no timing here: timings belong to benchmarks/): the static frame is built once
    # per size and never drawn on; a render copies it and blends only the dot's patch.
    env = TwoRoomEnv(image_size=64)
    env.reset(seed=0)
    first = env.render()
    background = env._backgrounds[64]
    kept = background.copy()
    env.set_state([40.0, 60.0, 180.0, 180.0])
    second = env.render()
    assert env._backgrounds[64] is background and np.array_equal(background, kept)
    assert not np.array_equal(first, second)  # the agent moved, the frame followed
    untouched = (second == (kept + 0.5).astype(np.uint8)).all(-1)
    assert untouched.mean() > 0.9  # only the dot's neighbourhood differs from the background


def test_unknown_env_and_policy_are_named():
    with pytest.raises(ValueError, match="env: expected one of .*'nope'"):
        make_env("nope")
    with pytest.raises(ValueError, match="policy: .*'weak'"):
        make_policy("tworoom", make_env("tworoom"), "weak")
    with pytest.raises(ValueError, match="image_size"):
        make_env("tworoom", image_size=0)


def test_random_policy_is_seeded_and_bounded():
    env = make_env("tworoom")
    p, q = make_policy("tworoom", env, "random", seed=1), make_policy("tworoom", env, "random", seed=1)
    a = np.stack([p(None) for _ in range(50)])
    b = np.stack([q(None) for _ in range(50)])
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1.0


# ---- PushT -----------------------------------------------------------------------------------------


@pytest.fixture
def pusht_env():
    pytest.importorskip("gym_pusht")
    return make_env("pusht", image_size=64)


def test_pusht_state_render_teleport_and_recolour(pusht_env):
    env = pusht_env
    s, _ = env.reset(seed=0)
    s2, _ = make_env("pusht").reset(seed=0)
    np.testing.assert_allclose(s, s2)
    assert s.shape == (7,)
    for size in (32, 96):
        img = env.render(size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    target = np.array([100.0, 120.0, 300.0, 310.0, 1.0, 0.0, 0.0])
    env.set_state(target)
    np.testing.assert_allclose(env.get_state()[:5], target[:5], atol=1.0)
    before = env.render()
    env.set_colors(block=(255, 0, 0))
    assert not np.array_equal(env.render(), before)
    s, _, _, _, info = env.step([0.5, -0.5])
    assert "is_success" in info and np.isfinite(s).all()


def test_pusht_success_rule_is_the_public_one():
    from lewm_fast.envs.pusht import pusht_success

    goal = np.array([256.0, 256.0, 256.0, 256.0, np.pi / 4, 0, 0])
    assert pusht_success(goal, goal)
    assert pusht_success(goal, goal + [10, 0, 0, 10, 0.3, 0, 0])  # |(10, 0, 0, 10)| = 14.1 < 20, 0.3 < pi/9
    assert not pusht_success(goal, goal + [15, 0, 15, 0, 0, 0, 0])  # 21.2 >= 20
    assert not pusht_success(goal, goal + [0, 0, 0, 0, np.pi / 9 + 0.01, 0, 0])
    wrapped = goal.copy()
    wrapped[4] = 2 * np.pi - 0.1
    near = goal.copy()
    near[4] = 0.1
    assert pusht_success(wrapped, near)  # the angle difference wraps around 2 pi


def test_pusht_weak_policy_is_bounded(pusht_env):
    p = make_policy("pusht", pusht_env, "weak", seed=0)
    s, _ = pusht_env.reset(seed=0)
    for _ in range(5):
        a = p(s)
        assert a.shape == (2,) and np.abs(a).max() <= 1.0
        s, *_ = pusht_env.step(a)
