"""Environments for data collection and evaluation (gymnasium API).

make_env("tworoom" | "pusht", image_size=64, **kw) -> env with reset/step/render(size),
get_state()/set_state() (teleport), set_colors(...) (recolour) and is_success(goal_state).
make_policy(env_name, env, policy, seed) -> callable(state) -> action (with .reset(seed)).
"""

from __future__ import annotations

import gymnasium as gym

from lewm_fast.envs.tworoom import RandomPolicy, TwoRoomEnv, TwoRoomExpert

ENVS = ("tworoom", "pusht")
POLICIES = {"tworoom": ("expert", "random", "mixed"), "pusht": ("weak", "random")}
DEFAULT_POLICY = {"tworoom": "mixed", "pusht": "weak"}


def make_env(name: str, **kwargs) -> gym.Env:
    """A fresh environment by name: 'tworoom' (ours) or 'pusht' (over gym-pusht)."""
    if name == "tworoom":
        return TwoRoomEnv(**kwargs)
    if name == "pusht":
        from lewm_fast.envs.pusht import PushTEnv

        return PushTEnv(**kwargs)
    raise ValueError(f"env: expected one of {list(ENVS)}, got {name!r}")


def make_policy(env_name: str, env: gym.Env, policy: str | None = None, seed: int | None = None):
    """A data-collection policy for `env` (callable state -> action, with reset(seed))."""
    if env_name not in ENVS:
        raise ValueError(f"env: expected one of {list(ENVS)}, got {env_name!r}")
    policy = policy or DEFAULT_POLICY[env_name]
    if policy not in POLICIES[env_name]:
        raise ValueError(f"policy: expected one of {list(POLICIES[env_name])} for env '{env_name}', got {policy!r}")
    if policy == "random":
        return RandomPolicy(env, seed=seed)
    if env_name == "tworoom":
        return TwoRoomExpert(env, seed=seed, mixed=policy == "mixed")
    from lewm_fast.envs.pusht import PushTWeakPolicy

    return PushTWeakPolicy(env, seed=seed)


def register() -> None:
    """Register 'lewm_fast/TwoRoom-v0' and 'lewm_fast/PushT-v0' with gymnasium (idempotent)."""
    for env_id, entry in (("lewm_fast/TwoRoom-v0", "lewm_fast.envs.tworoom:TwoRoomEnv"),
                          ("lewm_fast/PushT-v0", "lewm_fast.envs.pusht:PushTEnv")):  # fmt: skip
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


__all__ = ["ENVS", "POLICIES", "RandomPolicy", "TwoRoomEnv", "TwoRoomExpert", "make_env", "make_policy", "register"]
