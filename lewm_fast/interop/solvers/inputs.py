"""What a public solver does to its inputs before optimizing, written once for every drop-in:
the warm start (`prepare_init_action`), the initial distribution (`init_action_distrib`) and the
per-chunk `info_dict` a model's `get_cost` receives (stable-worldmodel 0.1.1, `solver/utils.py` and
each solver's `solve`)."""

from __future__ import annotations

import numpy as np
import torch


def is_actionable(model) -> bool:
    """The public `Actionable` protocol (runtime-checkable): the model has a `get_action` method."""
    return callable(getattr(model, "get_action", None))


def check_init_action(init_action, n_envs: int, horizon: int, action_dim: int) -> torch.Tensor | None:
    """init_action: None or a (n_envs, t <= horizon, action_dim) tensor (the public solvers fail later on a
    longer one; here it is refused up front)."""
    if init_action is None:
        return None
    if not torch.is_tensor(init_action):
        raise TypeError(f"init_action: expected a torch.Tensor or None, got {type(init_action).__name__}")
    shape = tuple(init_action.shape)
    if len(shape) != 3 or shape[0] != n_envs or shape[1] > horizon or shape[2] != action_dim:
        raise ValueError(f"init_action: expected shape ({n_envs}, t <= {horizon}, {action_dim}), got {shape}")
    return init_action


def prepare_init_action(model, info_dict: dict, init_action, horizon: int, n_envs: int, action_dim: int, device):
    """The public warm start: (n_envs, horizon, action_dim) on `device` (the solver's) from a partial plan
    (n_envs, t, action_dim) on any device.

    Missing steps come from `model.get_action(info_dict, horizon=remaining, prefix_actions=init_action)`
    when the model is `Actionable`, else zeros; a plan already covering the horizon is returned as is
    (moved to `device`, as the current source does; release 0.1.1 moved it later).
    """
    init_action = check_init_action(init_action, n_envs, horizon, action_dim)
    if init_action is not None:
        init_action = init_action.to(device)
    remaining = horizon - (init_action.shape[1] if init_action is not None else 0)
    if remaining <= 0:
        return init_action
    if not is_actionable(model):
        tail = torch.zeros(n_envs, remaining, action_dim, device=device)
        return tail if init_action is None else torch.cat([init_action, tail], dim=1)
    with torch.no_grad():
        tail = model.get_action(info_dict, horizon=remaining, prefix_actions=init_action)
    tail = tail.to(device)
    return tail if init_action is None else torch.cat([init_action, tail], dim=1)


def pad_to_horizon(actions, n_envs: int, horizon: int, action_dim: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The public `init_action_distrib` mean: `actions` (or nothing) followed by zeros up to `horizon`, on
    `actions`' device (`device`, the solver's, without them)."""
    device = actions.device if actions is not None else torch.device(device)
    mean = torch.zeros([n_envs, 0, action_dim], dtype=dtype, device=device) if actions is None else actions
    remaining = horizon - mean.shape[1]
    if remaining > 0:
        tail = torch.zeros([n_envs, remaining, action_dim], dtype=dtype, device=device)
        mean = torch.cat([mean, tail], dim=1)
    return mean


def expand_info(info_dict: dict, lo: int, hi: int, num_samples: int, device, dtype: torch.dtype) -> dict:
    """Environments lo:hi of `info_dict` as a public solver hands them to `get_cost`.

    Tensors: sliced, moved to `device` (floating ones cast to `dtype`) and expanded over the samples,
    (b, ...) -> (b, S, ...) without a copy. NumPy arrays: sliced and repeated over the samples.
    Lists and tuples: sliced. Anything else: passed through unchanged.
    """
    out = {}
    for k, v in info_dict.items():
        if torch.is_tensor(v):
            v = v[lo:hi]
            v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            v = v.unsqueeze(1).expand(hi - lo, num_samples, *v.shape[1:])
        elif isinstance(v, np.ndarray):
            v = np.repeat(v[lo:hi][:, None, ...], num_samples, axis=1)
        elif isinstance(v, (list, tuple)):
            v = v[lo:hi]
        out[k] = v
    return out


def count_envs(info_dict: dict) -> int:
    """The number of environments of a solve: the length of the dict's first value (the public rule)."""
    if not isinstance(info_dict, dict) or not info_dict:
        got = type(info_dict).__name__ if not isinstance(info_dict, dict) else "an empty dict"
        raise ValueError(f"info_dict: expected a non-empty dict of per-environment values, got {got}")
    first = next(iter(info_dict.values()))
    try:
        return len(first)
    except TypeError:
        raise ValueError(
            f"info_dict: its first value sets the number of environments and must have a length, "
            f"got {type(first).__name__}"
        ) from None
