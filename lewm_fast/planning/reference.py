"""Reference planning: the public LeWM cost (`LeWM.get_cost`) and CEM solver, written plainly.

This is the specification of DESIGN.md section 4. Fast planners are tested against it.

Cost of a candidate: encode the H history frames and the goal once; embed the candidate's action
blocks; then predict autoregressively horizon - H + 1 times, each time feeding the last `num_frames`
embeddings with the action embeddings of the same frames (the position embedding restarts at the
window start) and appending the last output. Cost = sum_D (last prediction - goal embedding)^2.

CEM: per iteration, cand = randn(1, S, horizon, A) * std + mean, cand[:, 0] = mean, keep the topk
lowest costs, mean = elites.mean, std = elites.std (unbiased). Environments are solved one after
another from one generator, in the public order (env-major, then iteration).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def rollout_cost_reference(model, hist_emb: torch.Tensor, goal_emb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Cost of each candidate.

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


def cem_reference(
    cost_fn: Callable[[torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    num_samples: int,
    topk: int,
    iters: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CEM for a batch of b environments drawn jointly, exactly the public loop (b = its batch_size;
    the public default, and `CEMPlanner(backend="reference")`, solve one environment at a time: b = 1).

    Args:
        cost_fn: cand (b, S, horizon, A) -> costs (b, S).
        mean, std: (b, horizon, A) initial distribution.
        generator: source of the per-iteration noise randn(b, S, horizon, A).
    Returns:
        (mean, std, elite_cost): the final distribution (b, horizon, A) and the mean elite cost (b,)
        of the last iteration.
    """
    elite_cost = None
    rows = torch.arange(mean.shape[0], device=mean.device).unsqueeze(1)
    for _ in range(iters):
        noise = torch.randn(
            mean.shape[0], num_samples, *mean.shape[1:], generator=generator, device=mean.device, dtype=mean.dtype
        )
        cand = noise * std.unsqueeze(1) + mean.unsqueeze(1)
        cand[:, 0] = mean
        costs = cost_fn(cand)
        top_costs, top_idx = torch.topk(costs, k=topk, dim=1, largest=False)
        elites = cand[rows, top_idx]
        mean, std = elites.mean(dim=1), elites.std(dim=1)
        elite_cost = top_costs.mean(dim=1)
    return mean, std, elite_cost
