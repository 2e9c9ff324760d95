"""Planning in a stable-worldmodel `swm.World` with a `WorldModelPolicy`: the pieces a closed loop needs
that the public package leaves to its scripts (used by benchmarks/swm_world_loop.py and the peer tests).

- `TargetAsGoal`: TwoRoom's episodic mode puts no goal image in `info`; this wrapper (a `pre_wrappers`
  entry of `swm.World`) adds the rendered target as `info["goal"]`, which the World then resizes like
  the pixels.
- `pixel_transforms(image_size)`: the `transform=` dict of a `WorldModelPolicy`: uint8 frames to the
  model's ImageNet-normalised float frames, as lewm_fast's data pipeline prepares them.
- `run_world(...)`: one evaluation of a solver in a World, recording every action taken, the
  successes and the time spent in `solve`.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from lewm_fast.config import LeWMConfig
from lewm_fast.data.dataset import prepare_pixels
from lewm_fast.planning.planner import HORIZON


class TargetAsGoal(gym.Wrapper):
    """Adds the TwoRoom target frame (HWC uint8, the env's own rendering) as `info["goal"]`."""

    def _goal(self) -> np.ndarray:
        return self.env.unwrapped._target_img.permute(1, 2, 0).cpu().numpy()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["goal"] = self._goal()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["goal"] = self._goal()
        return obs, reward, terminated, truncated, info


def pixel_transforms(image_size: int) -> dict:
    """{"pixels", "goal"}: a (C, H, W) uint8 frame -> (C, image_size, image_size) float32, normalised."""

    def transform(image) -> torch.Tensor:
        frame = torch.as_tensor(image).as_subclass(torch.Tensor).permute(1, 2, 0)
        return prepare_pixels(frame, image_size)

    return {"pixels": transform, "goal": transform}


@dataclass
class WorldRun:
    """success: per episode; actions: every action the policy returned, in order (steps, E, action_dim);
    solve_s: the wall time of each `solve` call; envs_planned: environments in each call."""

    success: list[bool]
    actions: np.ndarray
    solve_s: list[float] = field(default_factory=list)
    envs_planned: list[int] = field(default_factory=list)


def run_world(
    solver,
    image_size: int,
    num_envs: int,
    max_steps: int,
    seed: int,
    config=None,
    env_name: str = "swm/TwoRoom-v1",
) -> WorldRun:
    """Evaluate `solver` (any public-protocol solver) for one episode per environment of `env_name`.

    config: the `swm.PlanConfig` (default: the planner's horizon, executed in full, and the published model's
    action block: the paper's 5, 5, 5).
    """
    import stable_worldmodel as swm

    world = swm.World(env_name, num_envs=num_envs, image_shape=(image_size, image_size),
                      max_episode_steps=max_steps, pre_wrappers=[TargetAsGoal])  # fmt: skip
    config = config or swm.PlanConfig(horizon=HORIZON, receding_horizon=HORIZON, action_block=LeWMConfig.frameskip)
    policy = swm.policy.WorldModelPolicy(solver=solver, config=config, transform=pixel_transforms(image_size))
    run = WorldRun([], np.zeros(0))
    solve, get_action, actions = solver.solve, policy.get_action, []

    def timed_solve(info_dict, init_action=None):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the public solvers print their solve time
            out = solve(info_dict, init_action=init_action)
        run.solve_s.append(time.perf_counter() - t0)
        run.envs_planned.append(len(out["actions"]))
        return out

    def recorded_action(info_dict, **kwargs):
        action = get_action(info_dict, **kwargs)
        actions.append(np.array(action, copy=True))
        return action

    solver.solve, policy.get_action = timed_solve, recorded_action
    try:
        world.set_policy(policy)
        results = world.evaluate(episodes=num_envs, seed=seed)
    finally:
        world.close()
    run.success = [bool(s) for s in results["episode_successes"]]
    run.actions = np.stack(actions) if actions else np.zeros((0, num_envs, 0))
    return run
