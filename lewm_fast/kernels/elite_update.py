"""The CEM / iCEM elite update in one kernel: top-k of S costs, the mean and unbiased std of the elites,
iCEM's momentum, and the elites' indices.

Math (the reference is `lewm_fast.planning.ops.elite_update`): per environment e,
    idx = the K indices of the lowest cost[e, :], best first      elite_cost[e] = mean(cost[e, idx])
    m = mean_k cand[e, idx_k]                  s = sqrt(sum_k (cand[e, idx_k] - m)^2 / (K - 1))
    CEM: mean[e] = m, std[e] = s;    iCEM: mean[e] = alpha * prev_mean[e] + (1 - alpha) * m (std alike)

Design: one program per environment. The S costs (S = 300 -> BLOCK_S = 512) sit in registers; the K
elites are found by K rounds of (min, argmin, knock out): K x S comparisons, trivial next to the rollout,
and no sort, no host round trip; the rounds give the indices best first, as torch.topk does. The
elites' rows are then gathered as one (BLOCK_K, BLOCK_C) tile per column block of T x A and reduced
twice (mean, then the centred sum of squares: the two-pass form, as exact as torch.std). Replaces
topk + gather + mean + std (+ two momentum axpys for iCEM): four to eight launches and their temporaries.
Ties: the lowest index wins among equal costs (torch.topk does not promise an order among ties).
`select_lowest` is shared with lewm_fast/kernels/mppi_update.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def select_lowest(cost, offs, K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr):
    """cost (BLOCK_S,) fp32 with +inf past S, offs = arange(BLOCK_S) -> (idx (BLOCK_K,) int32,
    top (BLOCK_K,) fp32): the K lowest costs and their indices, best first (slots >= K hold 0)."""
    slots = tl.arange(0, BLOCK_K)
    idx = tl.zeros((BLOCK_K,), tl.int32)
    top = tl.zeros((BLOCK_K,), tl.float32)
    for r in range(K):
        low = tl.min(cost, axis=0)
        at = tl.min(tl.where(cost == low, offs, BLOCK_S), axis=0)  # first index of the minimum
        idx = tl.where(slots == r, at, idx)
        top = tl.where(slots == r, low, top)
        cost = tl.where(offs == at, float("inf"), cost)
    return idx, top


@triton.jit
def _elite_update_fwd_kernel(
    COST,  # (E, S) fp32, contiguous
    CAND,  # (E, S, C) fp32, contiguous (C = T x A)
    PREV_MEAN,  # (E, C) fp32: the previous mean (read when MOMENTUM)
    PREV_STD,  # (E, C) fp32: the previous std (read when MOMENTUM)
    MEAN,  # (E, C) fp32 output
    STD,  # (E, C) fp32 output
    ELITE_COST,  # (E,) fp32 output
    IDX,  # (E, K) int64 output: the elites' indices, best first (written when WRITE_IDX)
    S, C, alpha,
    K: tl.constexpr,
    MOMENTUM: tl.constexpr,
    WRITE_IDX: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    e = tl.program_id(0)
    offs = tl.arange(0, BLOCK_S)
    cost = tl.load(COST + e * S + offs, mask=offs < S, other=float("inf"))
    idx, top = select_lowest(cost, offs, K, BLOCK_S, BLOCK_K)
    slots = tl.arange(0, BLOCK_K)
    kmask = slots < K
    tl.store(ELITE_COST + e, tl.sum(tl.where(kmask, top, 0.0), axis=0) / K)
    if WRITE_IDX:
        tl.store(IDX + e * K + slots, idx.to(tl.int64), mask=kmask)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mask = kmask[:, None] & cmask[None, :]
        x = tl.load(CAND + (e * S + idx[:, None]).to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
        mean = tl.sum(x, axis=0) / K
        xc = tl.where(mask, x - mean[None, :], 0.0)
        std = tl.sqrt(tl.sum(xc * xc, axis=0) / (K - 1))
        if MOMENTUM:
            mean = alpha * tl.load(PREV_MEAN + e * C + cols, mask=cmask, other=0.0) + (1 - alpha) * mean
            std = alpha * tl.load(PREV_STD + e * C + cols, mask=cmask, other=0.0) + (1 - alpha) * std
        tl.store(MEAN + e * C + cols, mean, mask=cmask)
        tl.store(STD + e * C + cols, std, mask=cmask)


def elite_update(
    cost: torch.Tensor,
    cand: torch.Tensor,
    topk: int,
    alpha: float = 0.0,
    prev_mean: torch.Tensor | None = None,
    prev_std: torch.Tensor | None = None,
    return_indices: bool = False,
):
    """cost (E, S) fp32, cand (E, S, T, A) fp32 -> mean (E, T, A), std (E, T, A), elite_cost (E,) and,
    with return_indices, the elites' indices (E, topk) int64, best first. With prev_mean and prev_std
    (E, T, A): iCEM's momentum, mean = alpha * prev_mean + (1 - alpha) * elite mean (std alike)."""
    e, s = cost.shape
    if cand.shape[:2] != (e, s):
        raise ValueError(f"elite_update: cand {tuple(cand.shape)} does not match cost {tuple(cost.shape)}")
    if not 2 <= topk <= s:
        raise ValueError(f"elite_update: expected 2 <= topk <= S={s}, got {topk}")
    if (prev_mean is None) != (prev_std is None):
        raise ValueError("elite_update: expected prev_mean and prev_std together")
    cost, flat = cost.float().contiguous(), cand.float().reshape(e, s, -1).contiguous()
    c = flat.shape[-1]
    mean = torch.empty(e, c, device=cand.device, dtype=torch.float32)
    std, elite_cost = torch.empty_like(mean), torch.empty(e, device=cand.device, dtype=torch.float32)
    idx = torch.empty(e, topk, device=cand.device, dtype=torch.int64)
    momentum = prev_mean is not None
    prev_m = prev_mean.float().reshape(e, c).contiguous() if momentum else mean
    prev_s = prev_std.float().reshape(e, c).contiguous() if momentum else std
    _elite_update_fwd_kernel[(e,)](
        cost, flat, prev_m, prev_s, mean, std, elite_cost, idx, s, c, float(alpha),
        K=topk, MOMENTUM=momentum, WRITE_IDX=return_indices, BLOCK_S=triton.next_power_of_2(s),
        BLOCK_K=triton.next_power_of_2(topk), BLOCK_C=min(64, triton.next_power_of_2(c)),
    )  # fmt: skip
    shape = (e, *cand.shape[2:])
    out = (mean.view(shape), std.view(shape), elite_cost)
    return (*out, idx) if return_indices else out
