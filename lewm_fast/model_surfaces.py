"""The public LeWM's planning surfaces for an `lf.LeWM` (its `get_cost`, `encode(info)` and `rollout` call
these), so it works with any public solver (CEM, iCEM, MPPI, predictive sampling, gradient, PGD, ...) in both
stable-worldmodel layouts:
- release 0.1.1: `LeWM.get_cost(info_dict, candidates)` (`get_cost` below);
- the current source: the `Dynamics` surface a `ShootingCostEvaluator` composes with an objective,
  `encode(info)` and `rollout(info, candidates)` (`encode_info`, `dynamics_rollout` below).

The public conventions, step by step (each solver hands the model the same dict on every iteration):
- `info_dict` holds tensors expanded over the S samples: `pixels` (B, S, H, C, h, w) the history,
  `goal` (B, S, T, C, h, w), optional `goal_<key>` entries (the goal's own `<key>`, e.g. `goal_pixels`
  replaces `goal`), `action`, and anything else (ignored here).
- The goal is encoded once, from sample 0 (`v[:, 0]`), and cached as `info_dict["goal_emb"]` (B, T, D).
- The history is encoded once, separately from the goal (so the arithmetic, batch for batch, is the
  public one), and cached as `info_dict["emb"]` (B, S, H, D), expanded over samples and detached.
- `info_dict["action"]` becomes the candidates' first H blocks; `info_dict["predicted_emb"]`
  (B, S, horizon + 1, D) the rollout: the history embeddings then one prediction per step.
- The cost of a candidate is sum_D (last prediction - last goal embedding)^2, (B, S), differentiable
  with respect to the candidates (the gradient solver backpropagates through it).

One difference on purpose: the public criterion broadcasts the goal embedding (B, 1, D) against
(B, S, horizon + 1, D), which works for B = 1 only (the public solvers' default batch_size) and for
B = horizon + 1 silently pairs environment b's goal with time step b. Here environment b is always
compared with its own goal; for B = 1 the two are the same arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _goal_inputs(info_dict: dict) -> dict:
    """The public goal dict: every tensor's sample 0, `goal` as `pixels`, `goal_<key>` as `<key>`."""
    goal = {k: v[:, 0] for k, v in info_dict.items() if torch.is_tensor(v)}
    goal["pixels"] = goal["goal"]
    for k in info_dict:
        if k.startswith("goal_") and k in goal:
            goal[k[len("goal_") :]] = goal.pop(k)
    goal.pop("action", None)
    return goal


def _check(model, info_dict, candidates) -> None:
    if not isinstance(info_dict, dict):
        raise TypeError(f"info_dict: expected a dict, got {type(info_dict).__name__}")
    for key in ("pixels", "goal"):
        if key not in info_dict and not (key == "goal" and "goal_emb" in info_dict):
            raise ValueError(f"info_dict: expected a '{key}' entry, got keys {sorted(info_dict)}")
    if not torch.is_tensor(candidates) or candidates.ndim != 4:
        got = tuple(candidates.shape) if torch.is_tensor(candidates) else type(candidates).__name__
        raise ValueError(f"action_candidates: expected a tensor (B, S, horizon, A), got {got}")
    a = model.cfg.action_block_dim
    pixels = info_dict["pixels"]
    if not torch.is_tensor(pixels) or pixels.ndim != 6:
        got = tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__
        raise ValueError(f"info_dict['pixels']: expected a tensor (B, S, H, C, h, w), got {got}")
    b, s, h = pixels.shape[:3]
    if candidates.shape[0] != b or candidates.shape[1] != s or candidates.shape[3] != a or candidates.shape[2] < h:
        raise ValueError(
            f"action_candidates: expected shape ({b}, {s}, horizon >= {h}, {a}) (pixels' B, S, history), "
            f"got {tuple(candidates.shape)}"
        )


def public_rollout(model, info_dict: dict, candidates: torch.Tensor) -> torch.Tensor:
    """The public `LeWM.rollout`: (B, S, horizon + 1, D) embeddings; caches `emb`, sets `action`.

    candidates: (B, S, horizon, A); the first H blocks go with the H history frames.
    """
    h = info_dict["pixels"].size(2)
    b, s, horizon = candidates.shape[:3]
    info_dict["action"] = candidates[:, :, :h]
    if "emb" not in info_dict:
        emb = model.encode(info_dict["pixels"][:, 0])  # (B, H, D), the history alone
        info_dict["emb"] = emb.detach().unsqueeze(1).expand(b, s, -1, -1)
    act_emb = model.action_encoder(candidates.flatten(0, 1))  # (B*S, horizon, D)
    emb_list = list(info_dict["emb"].flatten(0, 1).unbind(1))  # H tensors (B*S, D)
    window = model.cfg.num_frames
    for t in range(horizon - h + 1):
        lo = max(0, h + t - window)  # the last `window` frames; positions restart at the window start
        emb_window = torch.stack(emb_list[lo:], dim=1)
        emb_list.append(model.predict_unchecked(emb_window, act_emb[:, lo : h + t])[:, -1])
    return torch.stack(emb_list, dim=1).unflatten(0, (b, s))


def get_cost(model, info_dict: dict, candidates: torch.Tensor) -> torch.Tensor:
    """The public `LeWM.get_cost` for an `lf.LeWM` (see the module docstring): (B, S) costs."""
    _check(model, info_dict, candidates)
    if "goal_emb" not in info_dict:
        goal_pixels = _goal_inputs(info_dict)["pixels"]  # (B, T, C, h, w)
        info_dict["goal_emb"] = model.encode(goal_pixels).detach()  # (B, T, D), encoded on its own
    pred = public_rollout(model, info_dict, candidates)
    info_dict["predicted_emb"] = pred
    last = pred[:, :, -1]  # (B, S, D)
    goal = info_dict["goal_emb"][..., -1, :]  # (B, D), or (B, S, D) for a goal_emb given per sample
    goal = goal.unsqueeze(1) if goal.ndim == 2 else goal
    return F.mse_loss(last, goal.detach().expand_as(last), reduction="none").sum(-1)


def encode_info(model, info: dict) -> dict:
    """The current source's `LeWM.encode(info)`: `emb` (B, T, D) from `pixels` (B, T, C, h, w), and `act_emb`
    from `action` when there is one; returns `info`."""
    info["emb"] = model.encode(info["pixels"])
    if "action" in info:
        info["act_emb"] = model.action_encoder(info["action"])
    return info


def dynamics_rollout(model, info: dict, candidates: torch.Tensor, history_size: int | None = None) -> dict:
    """The current source's `LeWM.rollout`: `predicted_emb` (B, S, H + T, D) into `info`, returned.

    pixels (B, S, H, C, h, w) H context frames; candidates (B, S, T, A) strictly future action blocks;
    `info["action_history"]` (B, S, H - 1, A) the executed blocks between the context frames (needed when
    H > 1). Context frame k is paired with the block leaving it, the current frame with the first
    candidate; each of the T predictions feeds the last `history_size` (num_frames) embeddings.
    """
    if "pixels" not in info:
        raise ValueError(f"info: expected a 'pixels' entry, got keys {sorted(info)}")
    h = info["pixels"].size(2)
    b, s, t = candidates.shape[:3]
    past = info.get("action_history")
    past = candidates.new_zeros(b, s, 0, candidates.size(-1)) if past is None else past
    if past.size(2) != h - 1:
        raise ValueError(f"info['action_history']: expected H - 1 = {h - 1} executed blocks, got {past.size(2)}")
    info["action"] = torch.cat([past, candidates[:, :, :1]], dim=2)
    if "emb" not in info:
        emb = model.encode(info["pixels"][:, 0])  # (B, H, D): the context, once, without gradient
        info["emb"] = emb.detach().unsqueeze(1).expand(b, s, -1, -1)
    act_emb = model.action_encoder(torch.cat([past.flatten(0, 1), candidates.flatten(0, 1)], dim=1))
    emb_list = list(info["emb"].flatten(0, 1).unbind(1))  # H tensors (B*S, D)
    window = history_size or model.cfg.num_frames
    for step in range(t):
        lo = max(0, h + step - window)
        emb_list.append(model.predict_unchecked(torch.stack(emb_list[lo:], dim=1), act_emb[:, lo : h + step])[:, -1])
    info["predicted_emb"] = torch.stack(emb_list, dim=1).unflatten(0, (b, s))
    return info
