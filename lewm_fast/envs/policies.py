"""Data-collection policies that fit any env with a box action space (env-specific ones live with their env)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from lewm_fast.envs.tworoom import RandomPolicy


class UniformPolicy:
    """A fresh uniform action from the action box at every step: the public stable-worldmodel
    `RandomPolicy` (`action_space.sample()`), seeded here so that episode i is reproducible."""

    def __init__(self, env: gym.Env, seed: int | None = None):
        self.low = np.asarray(env.action_space.low, dtype=np.float64)
        self.high = np.asarray(env.action_space.high, dtype=np.float64)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


__all__ = ["RandomPolicy", "UniformPolicy"]
