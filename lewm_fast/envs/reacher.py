"""Reacher: DeepMind Control's two-link planar reacher, from pixels (optional extra: `pip install lewm-fast[reacher]`).

The public stable-worldmodel conventions (`swm/ReacherDMControl-v0`, its `qpos_match` task as the paper's
evaluation uses it):
- an action is the two joint torques in [-1, 1]^2 (action_dim 2), repeated for 2 physics steps of 0.02 s
  (the public wrapper's action repeat); the planner's action block is 5 actions (frameskip 5);
- frames from the fixed top-down camera (camera 0), rendered at any size (the public 224 px by default
  there; 64 px here by default; the public look from 128 px, a cheaper one below: lewm_fast/envs/_mujoco.py);
  the reach target is invisible (the public `render_target = 0`): the goal is a pose, shown only by the
  goal image;
- state (float64 (4,)): joint angles (shoulder, wrist) and joint velocities (qpos, qvel);
- success against a goal state: every joint angle within 0.05 rad of the goal's (the public
  `ReacherQPosMatchTask` rule: |qpos - target_qpos| < 0.05 for all joints, checked after every physics
  step, raw angles without wrapping).
A reset draws the joint angles like dm_control's reacher (shoulder uniform in [-pi, pi], wrist uniform in
its +-160 degree range), seeded from the env's own generator.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lewm_fast.envs._mujoco import check_image_size, import_optional, public_look, rgb255, set_look, step_result

ACTION_REPEAT = 2  # physics steps per env step (public DMControlWrapper.action_repeat)
QPOS_THRESHOLD = 0.05  # rad, per joint (public ReacherQPosMatchTask)
TARGET_SIZE = 0.015  # dm_control's 'hard' target, the public qpos_match default; invisible either way
CAMERA = 0  # the fixed top-down camera (public DMControlWrapper.camera_id for reacher)
ARM_COLOUR = (178.5, 127.5, 76.5)  # dm_control's 'self' material, 0.7 0.5 0.3 (the public agent colour)
WRIST_LIMIT = np.deg2rad(160.0)


class ReacherEnv(gym.Env):
    """DeepMind Control reacher with a goal pose. Observation: the state (4,); `render(size)` gives
    (size, size, 3) uint8.

    Args:
        image_size: side of rendered frames in pixels. max_episode_steps: truncation (None: never).
    `reset(seed, options)` accepts options `state` (qpos (2,) or qpos + qvel (4,)) and `goal_state`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, image_size: int = 64, max_episode_steps: int | None = 200, render_mode: str = "rgb_array"):
        self.image_size = check_image_size(image_size)
        suite_reacher = import_optional("dm_control.suite.reacher", "reacher", "reacher", "dm-control")
        control = import_optional("dm_control.rl.control", "reacher", "reacher", "dm-control")
        self.physics = suite_reacher.Physics.from_xml_string(*suite_reacher.get_model_and_assets())
        self._task = suite_reacher.Reacher(target_size=TARGET_SIZE, random=0)
        self._dmc = control.Environment(self.physics, self._task, time_limit=float("inf"))
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self.goal_state = np.zeros(4)
        self._sub_qpos: list[np.ndarray] = []  # joint angles after each physics step of the last env step
        self.steps = 0
        self.set_colors(arm=ARM_COLOUR)
        self._public_look = public_look(self.image_size)
        set_look(None, self.physics.model, None, self._public_look)  # before the first render makes the context
        self.physics.named.model.mat_rgba["target", 3] = 0.0  # the public default: target not rendered

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        self._task._random = np.random.RandomState(int(self.np_random.integers(2**31)))
        self._dmc.reset()
        self._sub_qpos = []
        if "state" in options:
            self.set_state(options["state"])
        self.goal_state = np.asarray(options.get("goal_state", self.get_state()), dtype=np.float64).reshape(-1).copy()
        self.steps = 0
        return self.get_state(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._sub_qpos = []
        for _ in range(ACTION_REPEAT):
            self._dmc.step(a)
            self._sub_qpos.append(self.physics.data.qpos.copy())
        return step_result(self)

    def render(self, size: int | None = None) -> np.ndarray:
        size = self.image_size if size is None else size
        flags = None if self._public_look else {"shadow": False, "reflection": False}
        return np.ascontiguousarray(self.physics.render(height=size, width=size, camera_id=CAMERA,
                                                        render_flag_overrides=flags))  # fmt: skip

    # ---- state, success, variations ----------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """(4,) float64: shoulder and wrist angles (rad), their velocities."""
        return np.concatenate([self.physics.data.qpos, self.physics.data.qvel]).astype(np.float64)

    def set_state(self, state) -> None:
        """Teleport to joint angles (2,) (at rest) or angles + velocities (4,)."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.size not in (2, 4):
            raise ValueError(f"state: expected qpos (2,) or qpos + qvel (4,), got {s.shape}")
        with self.physics.reset_context():  # recomputes positions (forward kinematics) on exit
            self.physics.data.qpos[:] = s[:2]
            self.physics.data.qvel[:] = s[2:4] if s.size == 4 else 0.0
        self._sub_qpos = []

    def set_goal_state(self, goal_state) -> None:
        self.goal_state = np.asarray(goal_state, dtype=np.float64).reshape(-1).copy()

    def is_success(self, goal_state=None) -> bool:
        """Every joint within 0.05 rad of the goal's, now or after the first physics step of the last env
        step (the public task checks after every physics step)."""
        goal = self.goal_state if goal_state is None else np.asarray(goal_state, dtype=np.float64).reshape(-1)
        poses = [*self._sub_qpos[:-1], self.physics.data.qpos]
        return any(reacher_success(goal, q) for q in poses)

    def set_colors(self, arm=None) -> None:
        """Recolour the arm (RGB 0..255), e.g. for a surprise test."""
        if arm is not None:
            self.physics.named.model.mat_rgba["self", :3] = rgb255(arm, "arm")

    def get_colors(self) -> dict:
        return {"arm": tuple(float(v) * 255.0 for v in self.physics.named.model.mat_rgba["self", :3])}

    def teleport(self, rng: np.random.Generator) -> None:
        """Jump to joint angles at least 1.5 rad (L2) from the current ones, velocities kept."""
        s = self.get_state()
        while True:
            q = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-WRIST_LIMIT, WRIST_LIMIT)])
            if np.linalg.norm(q - s[:2]) >= 1.5:
                break
        self.set_state(np.concatenate([q, s[2:4]]))

    def _info(self) -> dict:
        s = self.get_state()
        return {"state": s, "goal_state": self.goal_state.copy(), "proprio": s.copy()}

    def close(self) -> None:
        self.physics.free()


def reacher_success(goal_state: np.ndarray, state: np.ndarray) -> bool:
    """The public rule: |qpos - goal qpos| < 0.05 for both joints (raw angles, as the public task compares)."""
    return bool(np.all(np.abs(np.asarray(state)[:2] - np.asarray(goal_state)[:2]) < QPOS_THRESHOLD))
