"""PushT: an adapter over the `gym-pusht` package (optional extra: `pip install lewm-fast[pusht]`).

It follows the public stable-worldmodel PushT conventions on top of gym-pusht's physics:
- actions are relative, in [-1, 1]^2: the PD target is agent_xy + 100 * action;
- state (float64 (7,)): agent xy, block xy, block angle (mod 2 pi), agent velocity xy;
- success against a goal state (public `eval_state`): the agent+block positions within 20 units
  (L2 norm of the 4-vector difference) and the block angle within pi/9.
The goal state defaults to the T's target pose (256, 256, pi/4) with the agent where it is.
Rendering draws gym-pusht's 512 x 512 pygame canvas and resizes it to any size (INTER_AREA).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_SCALE = 100.0
WORLD = 512.0


def _import_pusht():
    try:
        from gym_pusht.envs.pusht import PushTEnv as _Inner
    except ImportError as e:  # a clear message instead of a bare ModuleNotFoundError deep in a call
        raise ImportError(
            "env 'pusht' needs the gym-pusht package: pip install 'lewm-fast[pusht]' (or pip install gym-pusht)"
        ) from e
    return _Inner


class PushTEnv(gym.Env):
    """PushT with relative actions, a 7-d state and the public success rule.

    Args:
        image_size: side of rendered frames in pixels. max_episode_steps: truncation (None: never).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, image_size: int = 64, max_episode_steps: int | None = 200, render_mode: str = "rgb_array"):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
        self.inner = _import_pusht()(obs_type="state", render_mode="rgb_array")
        self.image_size = image_size
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(7,), dtype=np.float64)
        self.goal_state = np.array([256.0, 256.0, 256.0, 256.0, np.pi / 4, 0.0, 0.0])
        self.colors: dict[str, tuple] = {}
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        # gym-pusht draws its start state from its own np_random: seed it from ours.
        self.inner.reset(seed=int(self.np_random.integers(2**31)))
        self._apply_colors()
        if "state" in options:
            self.set_state(options["state"])
        self.goal_state = np.array(options.get("goal_state", [*self.get_state()[:2], 256.0, 256.0, np.pi / 4, 0, 0]),
                                   dtype=np.float64)  # fmt: skip
        self.steps = 0
        return self.get_state(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.inner.step(np.asarray(self.inner.agent.position) + a * ACTION_SCALE)
        self.steps += 1
        success = self.is_success()
        truncated = self.max_episode_steps is not None and self.steps >= self.max_episode_steps
        info = self._info()
        info["is_success"] = success
        return self.get_state(), 0.0, False, bool(truncated), info

    def render(self, size: int | None = None) -> np.ndarray:
        import cv2

        size = self.image_size if size is None else size
        import pygame

        screen = self.inner._draw()
        img = np.ascontiguousarray(np.transpose(pygame.surfarray.array3d(screen), (1, 0, 2)))
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)

    # ---- state, success, variations ----------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """(7,) float64: agent xy, block xy, block angle in [0, 2 pi), agent velocity xy."""
        inner = self.inner
        return np.array([*inner.agent.position, *inner.block.position, inner.block.angle % (2 * np.pi),
                         *inner.agent.velocity], dtype=np.float64)  # fmt: skip

    def set_state(self, state) -> None:
        """Teleport to a (5,) or (7,) state (agent xy, block xy, angle[, agent velocity])."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.size not in (5, 7):
            raise ValueError(f"state: expected (5,) or (7,) values, got {s.shape}")
        inner = self.inner
        inner.agent.velocity = tuple(s[5:7]) if s.size == 7 else (0.0, 0.0)
        inner.agent.position = tuple(s[:2])
        inner.block.angle = float(s[4])
        inner.block.position = tuple(s[2:4])
        inner.space.step(inner.dt)  # let pymunk take the new positions into account (as gym-pusht does)

    def set_goal_state(self, goal_state) -> None:
        self.goal_state = np.asarray(goal_state, dtype=np.float64).reshape(-1).copy()

    def is_success(self, goal_state=None) -> bool:
        goal = self.goal_state if goal_state is None else np.asarray(goal_state, dtype=np.float64).reshape(-1)
        return pusht_success(goal, self.get_state())

    def set_colors(self, agent=None, block=None) -> None:
        """Recolour the agent and/or the block (RGB 0..255)."""
        if agent is not None:
            self.colors["agent"] = tuple(int(c) for c in agent) + (255,)
        if block is not None:
            self.colors["block"] = tuple(int(c) for c in block) + (255,)
        self._apply_colors()

    def _apply_colors(self) -> None:
        import pygame

        for name, body in (("agent", self.inner.agent), ("block", self.inner.block)):
            if name in self.colors:
                for shape in body.shapes:
                    shape.color = pygame.Color(*self.colors[name])

    def _info(self) -> dict:
        s = self.get_state()
        return {"state": s, "goal_state": self.goal_state.copy(), "proprio": np.concatenate([s[:2], s[5:7]])}


def pusht_success(goal_state: np.ndarray, state: np.ndarray) -> bool:
    """The public rule: ||(agent, block) xy difference|| < 20 and block angle difference < pi/9."""
    pos = float(np.linalg.norm(np.asarray(goal_state[:4]) - np.asarray(state[:4])))
    ang = abs(float(goal_state[4]) - float(state[4])) % (2 * np.pi)
    ang = min(ang, 2 * np.pi - ang)
    return pos < 20 and ang < np.pi / 9


class PushTWeakPolicy:
    """The public PushT collection policy: a uniform relative action, with the resulting PD target kept
    within `dist` units of the block so that the agent often touches it."""

    def __init__(self, env: PushTEnv, dist: float = 100.0, seed: int | None = None):
        self.env, self.dist = env, dist
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        agent, block = state[:2], state[2:4]
        target = agent + self.rng.uniform(-1, 1, size=2) * ACTION_SCALE
        target = np.clip(target, block - self.dist, block + self.dist)
        return np.clip((target - agent) / ACTION_SCALE, -1, 1).astype(np.float32)
