"""Environments for data collection and evaluation (gymnasium API): the registry.

make_env(name, image_size=64, **kw) -> env with reset/step/render(size), get_state()/set_state() (teleport),
set_colors(...) (recolour), set_goal_state(goal_state) and is_success(goal_state).
make_policy(env_name, env, policy, seed) -> callable(state) -> action (with .reset(seed)).

| name | what | optional packages (pip extra) |
|---|---|---|
| tworoom | ours, after the public TwoRoom (numpy) | - |
| pusht | adapter over gym-pusht | `pusht` |
| reacher | DeepMind Control reacher, the public qpos-match task | `reacher` (dm-control, mujoco) |
| cube | OGBench single-cube manipulation | `cube` (ogbench, mujoco) |
"""

from __future__ import annotations

import importlib

import gymnasium as gym

from lewm_fast.envs.tworoom import RandomPolicy, TwoRoomEnv, TwoRoomExpert

# name -> "module:Class". Optional packages are imported only when an env is made.
_ENTRY = {
    "tworoom": "lewm_fast.envs.tworoom:TwoRoomEnv",
    "pusht": "lewm_fast.envs.pusht:PushTEnv",
    "reacher": "lewm_fast.envs.reacher:ReacherEnv",
    "cube": "lewm_fast.envs.cube:CubeEnv",
}
ENVS = tuple(_ENTRY)
# The first policy of each env is its default: the public collection policy where there is one.
POLICIES = {
    "tworoom": ("mixed", "expert", "random"),
    "pusht": ("weak", "random"),
    "reacher": ("uniform", "random"),
    "cube": ("expert", "random", "uniform"),
}
DEFAULT_POLICY = {name: policies[0] for name, policies in POLICIES.items()}
# Policy name -> "module:Class" (called as Class(env, seed=...)); env-specific entries first.
_POLICY_ENTRY = {
    ("tworoom", "expert"): "lewm_fast.envs.tworoom:TwoRoomExpert",
    ("tworoom", "mixed"): "lewm_fast.envs.tworoom:TwoRoomExpert",
    ("pusht", "weak"): "lewm_fast.envs.pusht:PushTWeakPolicy",
    ("cube", "expert"): "lewm_fast.envs.cube:CubeExpertPolicy",
    (None, "random"): "lewm_fast.envs.tworoom:RandomPolicy",
    (None, "uniform"): "lewm_fast.envs.policies:UniformPolicy",
}


def _load(entry: str):
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


def check_env_name(name: str) -> str:
    if name not in _ENTRY:
        raise ValueError(f"env: expected one of {list(ENVS)}, got {name!r}")
    return name


def make_env(name: str, **kwargs) -> gym.Env:
    """A fresh environment by name (see the table in this module's docstring)."""
    return _load(_ENTRY[check_env_name(name)])(**kwargs)


def make_policy(env_name: str, env: gym.Env, policy: str | None = None, seed: int | None = None):
    """A data-collection policy for `env` (callable state -> action, with reset(seed))."""
    check_env_name(env_name)
    policy = policy or DEFAULT_POLICY[env_name]
    if policy not in POLICIES[env_name]:
        raise ValueError(f"policy: expected one of {list(POLICIES[env_name])} for env '{env_name}', got {policy!r}")
    cls = _load(_POLICY_ENTRY.get((env_name, policy)) or _POLICY_ENTRY[(None, policy)])
    if env_name == "tworoom" and policy in ("expert", "mixed"):
        return cls(env, seed=seed, mixed=policy == "mixed")
    return cls(env, seed=seed)


def register() -> None:
    """Register 'lewm_fast/<Name>-v0' for every env with gymnasium (idempotent)."""
    for entry in _ENTRY.values():
        env_id = f"lewm_fast/{entry.rsplit(':', 1)[1].removesuffix('Env')}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


__all__ = [
    "DEFAULT_POLICY",
    "ENVS",
    "POLICIES",
    "RandomPolicy",
    "TwoRoomEnv",
    "TwoRoomExpert",
    "check_env_name",
    "make_env",
    "make_policy",
    "register",
]
