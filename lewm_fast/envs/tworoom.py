"""TwoRoom: a point agent navigates between two rooms through one door (close to the public TwoRoom).

Geometry (world units, the public defaults): a 224 x 224 square; a black border line 4 units thick just
inside a 14-unit margin; a vertical wall centred at x = 112, 10 units thick (x in [107, 117]), with one
door centred at y = 49 of half-extent 14. The agent is a red soft dot (a Gaussian of std = radius = 7,
peak-normalised) on a white background; the target is not drawn unless `render_target=True`.

Dynamics: an action is a 2-D velocity in [-1, 1]^2 (clipped), scaled by the agent speed (5 units per
step); the border and the wall stop the agent (same rule as the public code: the wall blocks unless the
agent's y lies in the door, with a 1.75 margin). Success: within 16 units of the target.

State layout (`get_state()` / observation, float32 (10,)): agent xy, target xy, door centres
(MAX_DOOR = 3 slots of xy; unused slots are 0), like the public observation.

Rendering is numpy: a cached static background per image size plus a separable Gaussian blob in a
small window around the agent, so one 64 x 64 frame costs a few microseconds of arithmetic.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

WORLD = 224.0
BORDER = 14.0  # margin to the inside of the border line
BORDER_LINE = 4.0  # thickness of the border line, drawn in [BORDER - 4, BORDER)
WALL_CENTER = 112.0
WALL_HALF = 5.0  # wall thickness 10 -> half 5 (the public code uses thickness // 2)
DOOR_CENTER = 49.0
DOOR_HALF = 14.0
DOOR_MARGIN = 1.75
MAX_DOOR = 3
AGENT_RADIUS = 7.0
AGENT_SPEED = 5.0
SUCCESS_RADIUS = 16.0
STATE_DIM = 4 + 2 * MAX_DOOR


class TwoRoomEnv(gym.Env):
    """TwoRoom navigation. Observation: the state vector (10,); `render()` gives (S, S, 3) uint8.

    Args:
        image_size: side of rendered frames in pixels (any positive int; geometry scales with it).
        max_episode_steps: truncate after this many steps (None: never).
        render_target: also draw the target as a green dot.
        terminate_on_success: end the episode when the agent is within 16 units of the target.

    `reset(seed, options)` samples agent and target uniformly inside the border (agent not in the wall),
    unless options give `state` (a full state vector or agent xy) and/or `target` (xy).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        image_size: int = 64,
        max_episode_steps: int | None = 100,
        render_target: bool = False,
        terminate_on_success: bool = True,
        render_mode: str = "rgb_array",
    ):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
        self.image_size = image_size
        self.max_episode_steps = max_episode_steps
        self.render_target = render_target
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.speed = AGENT_SPEED
        self.agent_radius = AGENT_RADIUS
        self.agent_color = np.array([255, 0, 0], dtype=np.float32)
        self.target_color = np.array([0, 255, 0], dtype=np.float32)
        self.observation_space = spaces.Box(0.0, WORLD, shape=(STATE_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.agent = np.array([60.0, 112.0], dtype=np.float64)
        self.target = np.array([164.0, 112.0], dtype=np.float64)
        self.steps = 0
        self._backgrounds: dict[int, np.ndarray] = {}

    # ---- gymnasium API ---------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        lo, hi = BORDER, WORLD - BORDER - 1
        while True:  # rejection sampling: the agent may not start inside the wall
            agent = self.np_random.uniform(lo, hi, size=2)
            if not self._in_wall_zone(agent[0]):
                break
        target = self.np_random.uniform(lo, hi, size=2)
        self.agent, self.target = agent, target
        if "state" in options:
            self.set_state(options["state"])
        if "target" in options:
            self.target = np.asarray(options["target"], dtype=np.float64).reshape(2).copy()
        self.steps = 0
        return self.get_state(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.agent = self._collide(self.agent, self.agent + a * self.speed)
        self.steps += 1
        dist = self.distance_to_target()
        success = dist < SUCCESS_RADIUS
        terminated = bool(success and self.terminate_on_success)
        truncated = self.max_episode_steps is not None and self.steps >= self.max_episode_steps
        info = self._info()
        info["is_success"] = bool(success)
        return self.get_state(), 0.0, terminated, bool(truncated and not terminated), info

    def render(self, size: int | None = None) -> np.ndarray:
        """The current frame, (size, size, 3) uint8 (size defaults to `image_size`)."""
        return self.render_state(self.agent, size)

    # ---- state, success, variations ----------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """(10,) float32: agent xy, target xy, door centres (3 slots of xy, unused = 0)."""
        state = np.zeros(STATE_DIM, dtype=np.float32)
        state[0:2], state[2:4], state[4:6] = self.agent, self.target, (WALL_CENTER, DOOR_CENTER)
        return state

    def set_state(self, state) -> None:
        """Teleport: a full state vector (>= 4 values: agent xy, target xy) or agent xy only."""
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.size < 2:
            raise ValueError(f"state: expected agent xy (2,) or a state vector ({STATE_DIM},), got {state.shape}")
        self.agent = state[:2].copy()
        if state.size >= 4:
            self.target = state[2:4].copy()

    def set_target(self, xy) -> None:
        self.target = np.asarray(xy, dtype=np.float64).reshape(2).copy()

    def set_colors(self, agent=None, target=None) -> None:
        """Recolour the agent and/or target (RGB, 0..255), e.g. for a surprise test."""
        if agent is not None:
            self.agent_color = np.asarray(agent, dtype=np.float32).reshape(3)
        if target is not None:
            self.target_color = np.asarray(target, dtype=np.float32).reshape(3)

    def distance_to_target(self) -> float:
        return float(np.linalg.norm(self.agent - self.target))

    def is_success(self, goal_state=None) -> bool:
        """Within 16 units of the target (or of the agent xy in `goal_state`)."""
        goal = self.target if goal_state is None else np.asarray(goal_state, dtype=np.float64).reshape(-1)[:2]
        return bool(np.linalg.norm(self.agent - goal) < SUCCESS_RADIUS)

    def _info(self) -> dict:
        return {"state": self.agent.astype(np.float32), "goal_state": self.target.astype(np.float32),
                "distance_to_target": self.distance_to_target()}  # fmt: skip

    # ---- physics (the public collision rule) -------------------------------------------------------

    def _in_wall_zone(self, x: float) -> bool:
        r = self.agent_radius
        return WALL_CENTER - WALL_HALF - r <= x <= WALL_CENTER + WALL_HALF + r

    def _collide(self, pos: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        r = self.agent_radius
        x = min(max(nxt[0], BORDER + r), WORLD - BORDER - r)
        y = min(max(nxt[1], BORDER + r), WORLD - BORDER - r)
        in_door = DOOR_CENTER - DOOR_HALF - DOOR_MARGIN <= y <= DOOR_CENTER + DOOR_HALF + DOOR_MARGIN
        if not in_door:
            if pos[0] < WALL_CENTER:  # started on the left: may not reach past the wall's left face
                if x > WALL_CENTER - WALL_HALF - r:
                    x = WALL_CENTER - WALL_HALF - r - 0.5
            elif x < WALL_CENTER + WALL_HALF + r:
                x = WALL_CENTER + WALL_HALF + r + 0.5
        return np.array([x, y], dtype=np.float64)

    # ---- rendering --------------------------------------------------------------------------------

    def _background(self, size: int) -> np.ndarray:
        """Static (size, size, 3) float32 frame: white, black border line, black wall with a white door."""
        bg = self._backgrounds.get(size)
        if bg is None:
            c = self._pixel_centres(size)  # world coordinate of each pixel centre
            border = ((c >= BORDER - BORDER_LINE) & (c < BORDER)) | (
                (c >= WORLD - BORDER) & (c < WORLD - BORDER + BORDER_LINE)
            )
            wall_x = (c >= WALL_CENTER - WALL_HALF) & (c <= WALL_CENTER + WALL_HALF)
            door_y = (c >= DOOR_CENTER - DOOR_HALF) & (c <= DOOR_CENTER + DOOR_HALF)
            black = border[None, :] | border[:, None] | (wall_x[None, :] & ~door_y[:, None])
            bg = np.full((size, size, 3), 255.0, dtype=np.float32)
            bg[black] = 0.0
            self._backgrounds[size] = bg
        return bg

    @staticmethod
    def _pixel_centres(size: int) -> np.ndarray:
        # At size 224 pixel i sits at world coordinate i, as in the public renderer.
        return (np.arange(size, dtype=np.float32) + 0.5) * (WORLD / size) - 0.5

    def _blend_dot(self, img: np.ndarray, xy: np.ndarray, color: np.ndarray, size: int) -> None:
        """Alpha-blend a peak-normalised Gaussian dot of std = radius into img (in place, float32)."""
        scale = size / WORLD
        sigma = self.agent_radius * scale
        cx, cy = (xy[0] + 0.5) * scale - 0.5, (xy[1] + 0.5) * scale - 0.5  # pixel coordinates
        reach = int(np.ceil(4.0 * sigma)) + 1
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, size)
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, size)
        if x0 >= x1 or y0 >= y1:
            return
        gx = np.exp(-((np.arange(x0, x1, dtype=np.float32) - cx) ** 2) / (2 * sigma * sigma))
        gy = np.exp(-((np.arange(y0, y1, dtype=np.float32) - cy) ** 2) / (2 * sigma * sigma))
        alpha = gy[:, None] * gx[None, :]
        alpha /= max(float(alpha.max()), 1e-12)  # peak-normalised, like the public renderer
        patch = img[y0:y1, x0:x1]
        patch += alpha[..., None] * (color - patch)

    def render_state(self, agent_xy, size: int | None = None) -> np.ndarray:
        """Frame with the agent at agent_xy, (size, size, 3) uint8."""
        size = self.image_size if size is None else size
        img = self._background(size).copy()
        if self.render_target:
            self._blend_dot(img, self.target, self.target_color, size)
        self._blend_dot(img, np.asarray(agent_xy, dtype=np.float64), self.agent_color, size)
        return (img + 0.5).astype(np.uint8)


# ---- data-collection policies ----------------------------------------------------------------------


class TwoRoomExpert:
    """Noisy heuristic: head for the door centre when the target is in the other room, then for the
    target (the public expert's rule), plus Gaussian action noise and a chance of repeating the last
    action. On reaching the target it picks a new random one (`env.set_target`), so an episode keeps
    moving for its whole length: long, varied episodes for world-model training.

    mixed=True varies the behaviour per episode (seeded): the noise std is drawn in [0.2, 1.0] and one
    episode in five is a random walk, so the data cover actions a planner will try, not only the expert's.
    """

    def __init__(self, env: TwoRoomEnv, noise: float = 0.3, repeat: float = 0.1, seed: int | None = None,
                 mixed: bool = False, retarget: bool = True):  # fmt: skip
        self.env, self.base_noise, self.repeat, self.mixed, self.retarget = env, noise, repeat, mixed, retarget
        self.walk = RandomPolicy(env)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.last = None
        self.noise, self.random_walk = self.base_noise, False
        if self.mixed:
            self.noise = float(self.rng.uniform(0.2, 1.0))
            self.random_walk = bool(self.rng.uniform() < 0.2)
            self.walk.reset(int(self.rng.integers(2**31)))

    def __call__(self, state: np.ndarray) -> np.ndarray:
        env = self.env
        if self.retarget and env.distance_to_target() < SUCCESS_RADIUS:
            lo, hi = BORDER + env.agent_radius, WORLD - BORDER - env.agent_radius
            env.set_target(self.rng.uniform(lo, hi, size=2))
        if self.random_walk:
            return self.walk(state)
        agent, target = env.agent, env.target
        waypoint = target
        if (agent[0] > WALL_CENTER) != (target[0] > WALL_CENTER):
            door = np.array([WALL_CENTER, DOOR_CENTER])
            if np.linalg.norm(door - agent) > 10.5:
                waypoint = door
        d = waypoint - agent
        n = float(np.linalg.norm(d))
        action = d / n if n > 1e-8 else np.zeros(2)
        action = action + self.rng.normal(0.0, self.noise, size=2)
        if self.last is not None and self.rng.uniform() < self.repeat:
            action = self.last
        self.last = np.clip(action, -1.0, 1.0).astype(np.float32)
        return self.last


class RandomPolicy:
    """Uniform actions in [-1, 1]^action_dim, held for a random number of steps (1..hold) so that the
    agent travels instead of jittering in place."""

    def __init__(self, env: gym.Env, hold: int = 5, seed: int | None = None):
        self.env, self.hold = env, hold
        self.dim = int(np.prod(env.action_space.shape))
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.left, self.action = 0, np.zeros(self.dim, dtype=np.float32)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        if self.left <= 0:
            self.action = self.rng.uniform(-1.0, 1.0, size=self.dim).astype(np.float32)
            self.left = int(self.rng.integers(1, self.hold + 1))
        self.left -= 1
        return self.action
