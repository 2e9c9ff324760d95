"""The MPPI update in one kernel: (optional) top-k of S costs, softmax weights, the weighted mean.

Math (the reference is `lewm_fast.planning.ops.mppi_update`): per environment e, over the K lowest costs
(K = topk) or all S of them (topk None),
    w_k = exp(-(c_k - min c) / temperature) / sum_j exp(-(c_j - min c) / temperature)
    mean[e] = sum_k w_k cand[e, k]            cost[e] = mean_k c_k

Design: one program per environment. With top-k, the K elites are selected in registers as in
lewm_fast/kernels/elite_update.py (`select_lowest`), weighted there, and their rows gathered as one (BLOCK_K,
BLOCK_C) tile per column block. Without, the S weights are formed in registers (max = 1 at the
minimum, so exp never overflows) and the candidates stream through in tiles of BLOCK_R rows per column
block. Replaces topk + gather + min + softmax + multiply + sum (six launches and their temporaries).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lewm_fast.kernels.elite_update import select_lowest


@triton.jit
def _mppi_update_fwd_kernel(
    COST,  # (E, S) fp32, contiguous
    CAND,  # (E, S, C) fp32, contiguous (C = T x A)
    MEAN,  # (E, C) fp32 output: the weighted mean
    OUT_COST,  # (E,) fp32 output: the mean cost of the weighted candidates
    S, C, inv_temperature,
    K: tl.constexpr,  # weighted candidates (K = S without top-k)
    SELECT: tl.constexpr,  # True: the K lowest costs; False: all S
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    e = tl.program_id(0)
    offs = tl.arange(0, BLOCK_S)
    cost = tl.load(COST + e * S + offs, mask=offs < S, other=float("inf"))
    if SELECT:
        idx, top = select_lowest(cost, offs, K, BLOCK_S, BLOCK_K)
        kmask = tl.arange(0, BLOCK_K) < K
        low = tl.min(tl.where(kmask, top, float("inf")), axis=0)
        w = tl.where(kmask, tl.exp(-(top - low) * inv_temperature), 0.0)
        w = w / tl.sum(w, axis=0)
        tl.store(OUT_COST + e, tl.sum(tl.where(kmask, top, 0.0), axis=0) / K)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = kmask[:, None] & (cols[None, :] < C)
            x = tl.load(CAND + (e * S + idx[:, None]).to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
            tl.store(MEAN + e * C + cols, tl.sum(w[:, None] * x, axis=0), mask=cols < C)
    else:
        valid = offs < S
        low = tl.min(cost, axis=0)
        total = tl.sum(tl.where(valid, tl.exp(-(cost - low) * inv_temperature), 0.0), axis=0)
        tl.store(OUT_COST + e, tl.sum(tl.where(valid, cost, 0.0), axis=0) / S)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            acc = tl.zeros((BLOCK_C,), tl.float32)
            for r0 in range(0, S, BLOCK_R):
                rows = r0 + tl.arange(0, BLOCK_R)
                rmask = rows < S
                c_r = tl.load(COST + e * S + rows, mask=rmask, other=float("inf"))
                w = tl.where(rmask, tl.exp(-(c_r - low) * inv_temperature), 0.0) / total
                mask = rmask[:, None] & (cols[None, :] < C)
                x = tl.load(CAND + (e * S + rows[:, None]).to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
                acc += tl.sum(w[:, None] * x, axis=0)
            tl.store(MEAN + e * C + cols, acc, mask=cols < C)


def mppi_update(
    cost: torch.Tensor, cand: torch.Tensor, topk: int | None, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cost (E, S) fp32, cand (E, S, T, A) fp32 -> mean (E, T, A), cost (E,); topk None weights all S."""
    e, s = cost.shape
    if cand.shape[:2] != (e, s):
        raise ValueError(f"mppi_update: cand {tuple(cand.shape)} does not match cost {tuple(cost.shape)}")
    if topk is not None and not 1 <= topk <= s:
        raise ValueError(f"mppi_update: expected 1 <= topk <= S={s} or None, got {topk}")
    if not temperature > 0:
        raise ValueError(f"mppi_update: expected temperature > 0, got {temperature}")
    cost, flat = cost.float().contiguous(), cand.float().reshape(e, s, -1).contiguous()
    c = flat.shape[-1]
    mean = torch.empty(e, c, device=cand.device, dtype=torch.float32)
    out_cost = torch.empty(e, device=cand.device, dtype=torch.float32)
    k = s if topk is None else topk
    _mppi_update_fwd_kernel[(e,)](
        cost, flat, mean, out_cost, s, c, 1.0 / float(temperature),
        K=k, SELECT=topk is not None, BLOCK_S=triton.next_power_of_2(s), BLOCK_K=triton.next_power_of_2(k),
        BLOCK_R=32, BLOCK_C=min(64, triton.next_power_of_2(c)),
    )  # fmt: skip
    return mean.view(e, *cand.shape[2:]), out_cost
