"""Reference planning: the public LeWM cost (`LeWM.get_cost` of stable-worldmodel 0.1.1), written plainly.

This is the specification of the cost (docs/cpu-planner.md); the fast rollout is tested against it.
The optimizers' specifications are in `optimizers/` (one file each), their loop in `optimizers/loop.py`.

Cost of a candidate: encode the goal frame(s) and the H history frames once per chunk of environments
(two separate encoder batches, goal first, exactly as the public `get_cost` does: batch composition
changes the encoder's rounding, and near-tied elites flip over 30 iterations); embed the candidate's
action blocks; then predict autoregressively horizon - H + 1 times, each time feeding the last
`num_frames` embeddings with the action embeddings of the same frames (the position embedding restarts
at the window start) and appending the last output. Cost = sum_D (last prediction - goal embedding)^2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lewm_fast.planning.optimizers import CEM


def rollout_cost_reference(model, hist_emb: torch.Tensor, goal_emb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Cost of each candidate (differentiable in `cand` when grad mode is on).

    Args:
        model: an `lf.LeWM` (eval mode).
        hist_emb: (E, H, D) embeddings of the history frames.
        goal_emb: (E, D) embedding of the goal frame.
        cand: (E, S, horizon, A) candidate action blocks, horizon >= H.
    Returns:
        (E, S) costs.
    """
    e, s, horizon, _ = cand.shape
    h = hist_emb.shape[1]
    window = model.cfg.num_frames
    act_emb = model.action_encoder(cand.flatten(0, 1))  # (E*S, horizon, D)
    emb_list = list(hist_emb.unsqueeze(1).expand(e, s, h, -1).flatten(0, 1).unbind(1))
    for t in range(horizon - h + 1):
        lo = max(0, h + t - window)
        emb_window = torch.stack(emb_list[lo:], dim=1)
        emb_list.append(model.predict_unchecked(emb_window, act_emb[:, lo : h + t])[:, -1])
    last = emb_list[-1].view(e, s, -1)
    return (last - goal_emb.unsqueeze(1)).square().sum(-1)


@torch.no_grad()
def encode_reference(
    model, pixels: torch.Tensor, goal: torch.Tensor, encode_frames: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The public `get_cost`'s encodings of one chunk: pixels (b, H, C, h, w), goal (b, C, h, w) or
    (b, Tg, C, h, w) (the last goal frame counts) -> history (b, H, D), goal (b, D) embeddings.
    The goal frames are one encoder batch, the history frames another, as in the public code.
    `encode_frames` (N, C, h, w) -> (N, D) replaces `model.encode_frames` (the CPU engine's packed encoder)."""
    encode_frames = encode_frames or model.encode_frames
    if goal.ndim == pixels.ndim - 1:
        goal = goal.unsqueeze(1)
    b, tg = goal.shape[:2]
    goal_emb = encode_frames(goal.flatten(0, 1)).view(b, tg, -1)[:, -1]
    hist_emb = encode_frames(pixels.flatten(0, 1)).view(b, pixels.shape[1], -1)
    return hist_emb, goal_emb


def lewm_cost_reference(model, pixels: torch.Tensor, goal: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The public `LeWM.get_cost` of one chunk of b environments as a callable cand (b, S, T, A) -> (b, S):
    the chunk is encoded once, here (the public code caches its embeddings in the chunk's info dict);
    each call rolls out. Differentiable in cand when grad mode is on (the gradient solver)."""
    hist_emb, goal_emb = encode_reference(model, pixels, goal)

    def cost(cand: torch.Tensor) -> torch.Tensor:
        return rollout_cost_reference(model, hist_emb, goal_emb, cand.to(hist_emb.dtype))

    return cost


def cem_reference(
    cost_fn: Callable[[torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    num_samples: int,
    topk: int,
    iters: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CEM for one chunk of b environments drawn jointly (`optimizers.CEM`, the public loop).

    cost_fn: cand (b, S, horizon, A) -> costs (b, S); mean, std: (b, horizon, A); generator: the source
    of the per-iteration noise randn(b, S, horizon, A). Returns the final mean and std (b, horizon, A) and
    the mean elite cost (b,) of the last iteration.
    """
    out = CEM(num_samples=num_samples, n_steps=iters, topk=topk).solve_chunk((mean, std), cost_fn, generator)
    return out.actions, out.std, out.cost
