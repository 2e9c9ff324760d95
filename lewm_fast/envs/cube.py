"""Cube: OGBench's single-cube manipulation (a UR5e arm with a Robotiq gripper), from pixels (optional extra:
`pip install lewm-fast[cube]`).

An adapter over `ogbench.manipspace.envs.cube_env.CubeEnv(env_type='single')`, with the conventions of the
public stable-worldmodel evaluation (`swm/OGBCube-v0`, scripts/plan/config/cube.yaml there):
- an action is OGBench's 5-D relative end-effector command in [-1, 1]^5 (x, y, z, yaw, gripper), one
  control step of 0.05 s; the planner's action block is 5 actions (frameskip 5);
- frames from the `front_pixels` camera, the gripper in the public purple, the goal marker invisible;
- state (float64 (41,)): MuJoCo qpos (21: arm 6, gripper 8, cube position 3 + quaternion 4) then qvel (20);
- success against a goal state: the cube within 0.04 m of the goal state's cube position (OGBench's
  rule, `CubeEnv._compute_successes`; the public evaluation sets the env's target to the goal frame's
  cube position, as `set_goal_state` does here).
A reset draws the arm pose, the cube pose and a target like OGBench's data-collection mode.

Rendering: MuJoCo's OpenGL renderer through EGL; the public look from 128 px frames, a cheaper one below
(lewm_fast/envs/_mujoco.py says why and what it costs).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lewm_fast.envs._mujoco import check_image_size, import_optional, public_look, rgb255, set_look, step_result

SUCCESS_DISTANCE = 0.04  # m (OGBench CubeEnv._compute_successes)
CAMERA = "front_pixels"
GRIPPER_COLOUR = (155.55, 71.4, 209.1)  # OGBench's purple (0.61, 0.28, 0.82), the public agent colour
CUBE_COLOUR = (244.8, 66.3, 84.15)  # OGBench's red (0.96, 0.26, 0.33), the single cube's colour
GRIPPER_MATERIALS = ("ur5e/robotiq/black", "ur5e/robotiq/pad_gray")
NQ, NV = 21, 20
CUBE_BOUNDS = np.array([[0.3, -0.3], [0.55, 0.3]])  # OGBench's object sampling bounds (x, y)


class CubeEnv(gym.Env):
    """OGBench single-cube manipulation with a goal state. Observation: the state (41,); `render(size)`
    gives (size, size, 3) uint8.

    Args:
        image_size: side of rendered frames in pixels. max_episode_steps: truncation (None: never).
    `reset(seed, options)` accepts options `state` (a (41,) state) and `goal_state`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, image_size: int = 64, max_episode_steps: int | None = 200, render_mode: str = "rgb_array"):
        self.image_size = check_image_size(image_size)
        ogb = import_optional("ogbench.manipspace.envs.cube_env", "cube", "cube", "ogbench")
        self.mujoco = import_optional("mujoco", "cube", "cube", "mujoco")
        self.inner = ogb.CubeEnv(env_type="single", ob_type="states", mode="data_collection", visualize_info=False,
                                 terminate_at_goal=False, width=image_size, height=image_size)  # fmt: skip
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(5,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(NQ + NV,), dtype=np.float64)
        self.colors: dict[str, tuple] = {"gripper": GRIPPER_COLOUR, "cube": CUBE_COLOUR}
        self._renderers: dict[int, object] = {}
        self.inner.reset(seed=0)  # builds and compiles the MuJoCo model
        model = self.inner._model
        if (model.nq, model.nv) != (NQ, NV):
            raise RuntimeError(f"cube: expected OGBench's single-cube model (nq {NQ}, nv {NV}), got "
                               f"({model.nq}, {model.nv}); this ogbench release is not supported")  # fmt: skip
        self.cube_adr = int(model.jnt_qposadr[model.joint("object_joint_0").id])
        self.goal_state: np.ndarray | None = None
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        self.inner.reset(seed=int(self.np_random.integers(2**31)))
        self._apply_colors()  # OGBench recolours the cube at every reset
        self.goal_state = None
        if "state" in options:
            self.set_state(options["state"])
        if "goal_state" in options:
            self.set_goal_state(options["goal_state"])
        self.steps = 0
        return self.get_state(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(5), -1.0, 1.0)
        self.inner.step(a)
        return step_result(self)

    def render(self, size: int | None = None) -> np.ndarray:
        size = self.image_size if size is None else size
        renderer = self._renderers.get(size) or self._make_renderer(size)
        renderer.update_scene(self.inner._data, camera=CAMERA, scene_option=self.inner._scene_option)
        return renderer.render().copy()

    def _make_renderer(self, size: int):
        check_image_size(size)
        model = self.inner._model
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        set_look(self.mujoco, model, None, public_look(self.image_size))
        renderer = self.mujoco.Renderer(model, height=size, width=size)
        set_look(self.mujoco, model, renderer.scene.flags, public_look(self.image_size))
        self._renderers[size] = renderer
        return renderer

    # ---- state, success, variations ----------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """(41,) float64: qpos (arm 6, gripper 8, cube xyz + quaternion) then qvel."""
        return np.concatenate([self.inner._data.qpos, self.inner._data.qvel]).astype(np.float64)

    def set_state(self, state) -> None:
        """Teleport to a (41,) state (qpos then qvel), as the public evaluation's `set_state(qpos, qvel)`."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.size != NQ + NV:
            raise ValueError(f"state: expected qpos + qvel ({NQ + NV},), got {s.shape}")
        self.inner.set_state(s[:NQ].copy(), s[NQ:].copy())
        self.inner.pre_step()  # OGBench's bookkeeping of the previous state, as its own reset does
        self.inner.post_step()

    def cube_position(self, state=None) -> np.ndarray:
        s = self.get_state() if state is None else np.asarray(state, dtype=np.float64).reshape(-1)
        return s[self.cube_adr : self.cube_adr + 3].copy()

    def set_goal_state(self, goal_state) -> None:
        """The goal is the cube position of `goal_state`; the env's own target marker moves there too."""
        self.goal_state = np.asarray(goal_state, dtype=np.float64).reshape(-1).copy()
        self.inner._data.mocap_pos[self.inner._cube_target_mocap_ids[0]] = self.cube_position(self.goal_state)

    def is_success(self, goal_state=None) -> bool:
        """The cube within 0.04 m of the goal state's cube (default: the env's current target)."""
        if goal_state is None and self.goal_state is None:
            goal = self.inner._data.mocap_pos[self.inner._cube_target_mocap_ids[0]].copy()
        else:
            goal = self.cube_position(self.goal_state if goal_state is None else goal_state)
        return cube_success(goal, self.cube_position())

    def set_colors(self, cube=None, gripper=None) -> None:
        """Recolour the cube and/or the gripper (RGB 0..255), e.g. for a surprise test."""
        if cube is not None:
            rgb255(cube, "cube")
            self.colors["cube"] = tuple(float(v) for v in cube)
        if gripper is not None:
            rgb255(gripper, "gripper")
            self.colors["gripper"] = tuple(float(v) for v in gripper)
        self._apply_colors()

    def get_colors(self) -> dict:
        return dict(self.colors)

    def _apply_colors(self) -> None:
        model = self.inner._model
        for name in GRIPPER_MATERIALS:
            model.mat_rgba[model.material(name).id, :3] = rgb255(self.colors["gripper"], "gripper")
        for gid in self.inner._cube_geom_ids_list[0]:
            model.geom_rgba[gid, :3] = rgb255(self.colors["cube"], "cube")

    def teleport(self, rng: np.random.Generator) -> None:
        """Put the cube down at least 0.15 m from where it is (within OGBench's object area), at rest."""
        s = self.get_state()
        while True:
            xy = rng.uniform(CUBE_BOUNDS[0], CUBE_BOUNDS[1])
            if np.linalg.norm(xy - s[self.cube_adr : self.cube_adr + 2]) >= 0.15:
                break
        s[self.cube_adr : self.cube_adr + 3] = (*xy, 0.02)
        vel = NQ + int(self.inner._model.jnt_dofadr[self.inner._model.joint("object_joint_0").id])
        s[vel : vel + 6] = 0.0
        self.set_state(s)

    def proprio_of(self, states: np.ndarray) -> np.ndarray:
        """Proprioception (..., 14) of states (..., 41): the arm's and the gripper's joint angles."""
        return np.asarray(states)[..., : self.cube_adr]

    def _info(self) -> dict:
        s = self.get_state()
        goal = None if self.goal_state is None else self.goal_state.copy()
        return {"state": s, "goal_state": goal, "proprio": self.proprio_of(s)}

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def cube_success(goal_position: np.ndarray, cube_position: np.ndarray) -> bool:
    """OGBench's rule: the cube within 0.04 m (Euclidean, 3-D) of its target."""
    return bool(np.linalg.norm(np.asarray(cube_position) - np.asarray(goal_position)) <= SUCCESS_DISTANCE)


class CubeExpertPolicy:
    """The public collection policy (stable-worldmodel's OGBench `ExpertPolicy`, markov oracle): OGBench's
    `CubeMarkovOracle` (pick the cube, place it on the env's target, move the arm away) plus Gaussian noise
    of std (xi, xi, xi, 3 xi, 10 xi) on (x, y, z, yaw, gripper), xi drawn per episode in [0, noise]; a new
    target when the oracle is done. Seeded: the oracle's own global-RNG draws are replaced by ours."""

    def __init__(self, env: CubeEnv, noise: float = 0.1, min_norm: float = 0.4, seed: int | None = None):
        markov = import_optional("ogbench.manipspace.oracles.markov.cube_markov", "cube", "cube", "ogbench")
        self.env, self.noise = env, noise
        self.oracle = markov.CubeMarkovOracle(env=env.inner, min_norm=min_norm)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.xi = float(self.rng.uniform(0.0, self.noise))
        self._started = False

    def _restart_oracle(self, info: dict) -> None:
        self.oracle.reset(None, info)
        self.oracle._final_pos = self.rng.uniform(*self.env.inner._arm_sampling_bounds)
        self.oracle._final_yaw = float(self.rng.uniform(-np.pi, np.pi))

    def __call__(self, state: np.ndarray) -> np.ndarray:
        inner = self.env.inner
        info = inner.compute_ob_info()
        if not self._started:
            self._restart_oracle(info)
            self._started = True
        action = np.asarray(self.oracle.select_action(None, info), dtype=np.float64)
        action = action + self.rng.normal(0.0, [self.xi, self.xi, self.xi, 3 * self.xi, 10 * self.xi])
        if self.oracle.done:
            inner.set_new_target(return_info=False)
            self._restart_oracle(inner.compute_ob_info())
        return np.clip(action, -1.0, 1.0).astype(np.float32)
