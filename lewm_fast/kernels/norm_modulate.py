"""LayerNorm + AdaLN modulate (+ the sub-layer's own LayerNorm), fused: the input of every attention and
MLP in the LeWM predictor's rollout.

Math (per token row x of width D; the reference is `lewm_fast.planning.ops.norm_modulate`):

    y = LN(x; eps1) * (1 + scale) + shift        # the block's non-affine norm and AdaLN modulation
    out = LN(y; eps2)                            # the sub-layer's norm (its affine is folded into the next matmul)

With HAS_MOD=False the kernel is a plain non-affine LayerNorm (the predictor's final norm).

Design: D = 192 fits in registers, so a program holds BLOCK_R whole rows and does both normalisations
in one read of x (fp32, the residual stream) and of shift/scale (strided views into the per-iteration
modulation table (N, T, depth, 6, D), read in place: no copy of the table). Statistics in fp32; the
output is written in the matmul dtype. Row r of the (N, n) token grid is (r // n, r % n), so every
operand may have its own strides.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from lewm_fast.kernels.rounding import EMULATE, round_to

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter: bigger tiles, fewer programs


@triton.jit
def _norm_modulate_fwd_kernel(
    X,  # (N, n, D) fp32
    SHIFT,  # (N, n, D) any float (unused without HAS_MOD)
    SCALE,  # (N, n, D) any float
    Y,  # (N * n, D) output, contiguous, in the matmul dtype
    R,  # N * n rows
    n_tok,  # n
    D,
    stride_xn, stride_xt,
    stride_sn, stride_st,
    stride_cn, stride_ct,
    eps1, eps2,
    HAS_MOD: tl.constexpr,
    EMULATE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    i, j = rows // n_tok, rows % n_tok
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < D)
    x = tl.load(X + i[:, None] * stride_xn + j[:, None] * stride_xt + cols[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    y = xc * tl.rsqrt(tl.sum(xc * xc, axis=1) / D + eps1)[:, None]
    if HAS_MOD:
        shift = tl.load(SHIFT + i[:, None] * stride_sn + j[:, None] * stride_st + cols[None, :], mask=mask, other=0.0)
        scale = tl.load(SCALE + i[:, None] * stride_cn + j[:, None] * stride_ct + cols[None, :], mask=mask, other=0.0)
        y = tl.where(mask, y * (1.0 + scale.to(tl.float32)) + shift.to(tl.float32), 0.0)
        mean2 = tl.sum(y, axis=1) / D
        yc = tl.where(mask, y - mean2[:, None], 0.0)
        y = yc * tl.rsqrt(tl.sum(yc * yc, axis=1) / D + eps2)[:, None]
    tl.store(Y + rows[:, None] * D + cols[None, :], round_to(y, Y.dtype.element_ty, EMULATE), mask=mask)


def _as3d(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.ndim == 2 else t


def _launch(x, shift, scale, eps1, eps2, out_dtype):
    x3 = _as3d(x)
    n, n_tok, d = x3.shape
    for name, t in (("x", x3), ("shift", shift), ("scale", scale)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"norm_modulate: {name} must be contiguous in its last dimension")
    has_mod = shift is not None
    sh = _as3d(shift) if has_mod else x3
    sc = _as3d(scale) if has_mod else x3
    if has_mod and (sh.shape != x3.shape or sc.shape != x3.shape):
        raise ValueError(
            f"norm_modulate: shift {tuple(sh.shape)} and scale {tuple(sc.shape)} must match x {tuple(x3.shape)}"
        )
    y = torch.empty(n * n_tok, d, device=x.device, dtype=out_dtype)
    block_d = triton.next_power_of_2(d)
    block_r = max(1, min(64 if _INTERPRET else 16, 4096 // block_d))
    grid = (triton.cdiv(n * n_tok, block_r),)
    _norm_modulate_fwd_kernel[grid](
        x3, sh, sc, y, n * n_tok, n_tok, d,
        x3.stride(0), x3.stride(1), sh.stride(0), sh.stride(1), sc.stride(0), sc.stride(1),
        float(eps1), float(eps2 if eps2 is not None else eps1),
        HAS_MOD=has_mod, EMULATE=EMULATE, BLOCK_R=block_r, BLOCK_D=block_d,
    )  # fmt: skip
    return y.view(*x.shape[:-1], d)


def norm_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps1: float, eps2: float, out_dtype: torch.dtype
) -> torch.Tensor:
    """LN(LN(x; eps1) * (1 + scale) + shift; eps2). x (N, n, D) fp32; shift, scale (N, n, D) views
    (last dim contiguous). Returns (N, n, D) in out_dtype."""
    return _launch(x, shift, scale, eps1, eps2, out_dtype)


def layer_norm(x: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """Non-affine LayerNorm: x (N, D) or (N, n, D), last dim contiguous -> same shape in out_dtype."""
    return _launch(x, None, None, eps, None, out_dtype)
