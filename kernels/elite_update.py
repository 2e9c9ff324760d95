"""The CEM elite update in one kernel: top-k of S costs, then the mean and unbiased std of the elites.

Math (the reference is `lewm_fast.planning.ops.elite_update`): per environment e,
    idx = the K indices of the lowest cost[e, :]     elite_cost[e] = mean(cost[e, idx])
    mean[e] = mean_k cand[e, idx_k]                  std[e] = sqrt(sum_k (cand[e, idx_k] - mean)^2 / (K - 1))

Design: one program per environment. The S costs (S = 300 -> BLOCK_S = 512) sit in registers; the K
elites are found by K rounds of (min, argmin, knock out): K x S comparisons, trivial next to the rollout,
and no sort, no host round trip. The elites' rows are then gathered as one (BLOCK_K, BLOCK_C) tile per
column block of T x A and reduced twice (mean, then the centred sum of squares: the two-pass form,
as exact as torch.std). Replaces topk + gather + mean + std (four launches and two temporaries).
Ties: the lowest index wins among equal costs (torch.topk does not promise an order among ties).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _elite_update_fwd_kernel(
    COST,  # (E, S) fp32, contiguous
    CAND,  # (E, S, C) fp32, contiguous (C = T x A)
    MEAN,  # (E, C) fp32 output
    STD,  # (E, C) fp32 output
    ELITE_COST,  # (E,) fp32 output
    S, C,
    K: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    e = tl.program_id(0)
    offs = tl.arange(0, BLOCK_S)
    cost = tl.load(COST + e * S + offs, mask=offs < S, other=float("inf"))
    slots = tl.arange(0, BLOCK_K)
    idx = tl.zeros((BLOCK_K,), tl.int32)
    top = tl.zeros((BLOCK_K,), tl.float32)
    for r in range(K):
        low = tl.min(cost, axis=0)
        at = tl.min(tl.where(cost == low, offs, BLOCK_S), axis=0)  # first index of the minimum
        idx = tl.where(slots == r, at, idx)
        top = tl.where(slots == r, low, top)
        cost = tl.where(offs == at, float("inf"), cost)
    kmask = slots < K
    tl.store(ELITE_COST + e, tl.sum(tl.where(kmask, top, 0.0), axis=0) / K)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = kmask[:, None] & (cols[None, :] < C)
        x = tl.load(CAND + (e * S + idx[:, None]).to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
        mean = tl.sum(x, axis=0) / K
        xc = tl.where(mask, x - mean[None, :], 0.0)
        std = tl.sqrt(tl.sum(xc * xc, axis=0) / (K - 1))
        tl.store(MEAN + e * C + cols, mean, mask=cols < C)
        tl.store(STD + e * C + cols, std, mask=cols < C)


def elite_update(cost: torch.Tensor, cand: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cost (E, S) fp32, cand (E, S, T, A) fp32 -> mean (E, T, A), std (E, T, A), elite_cost (E,)."""
    e, s = cost.shape
    if cand.shape[:2] != (e, s):
        raise ValueError(f"elite_update: cand {tuple(cand.shape)} does not match cost {tuple(cost.shape)}")
    if not 2 <= topk <= s:
        raise ValueError(f"elite_update: expected 2 <= topk <= S={s}, got {topk}")
    cost, flat = cost.float().contiguous(), cand.float().reshape(e, s, -1).contiguous()
    c = flat.shape[-1]
    mean = torch.empty(e, c, device=cand.device, dtype=torch.float32)
    std, elite_cost = torch.empty_like(mean), torch.empty(e, device=cand.device, dtype=torch.float32)
    _elite_update_fwd_kernel[(e,)](
        cost, flat, mean, std, elite_cost, s, c,
        K=topk, BLOCK_S=triton.next_power_of_2(s), BLOCK_K=triton.next_power_of_2(topk),
        BLOCK_C=min(64, triton.next_power_of_2(c)),
    )  # fmt: skip
    shape = (e, *cand.shape[2:])
    return mean.view(shape), std.view(shape), elite_cost
