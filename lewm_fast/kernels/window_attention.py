"""Causal attention over the rollout's short window (<= num_frames tokens), all heads of a query in one
program, keys and values streamed through registers.

Math (the reference is `lewm_fast.planning.ops.window_attention`): the window holds L tokens, the n
queries are its last n positions (n == 1 or n == L); query i sits at position L - n + i and sees keys
0 .. L - n + i. Per head h: out = softmax(q_h . k_h^T) v_h (the 1/sqrt(dim_head) scale is folded into W_q).

Design: the window is tiny (L <= 3 in LeWM), far below any tile a tensor-core dot wants, so this is
not FlashAttention: one program owns one (row, query) pair (BLOCK_Q of them under the interpreter) and
its (heads, dim_head) = (16, 64) tile,
loops over the L keys with an online softmax in fp32 (statically unrolled over MAX_L = L keys),
and writes (heads * dim_head) outputs. Every byte of q, k, v is read once. Inputs may be strided views
(q, k, v are slices of the fused qkv matmul output); the last dimension must be contiguous.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from lewm_fast.kernels.rounding import EMULATE, round_to

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _window_attention_fwd_kernel(
    Q,  # (N, n, H * DH)
    K,  # (N, L, H * DH)
    V,  # (N, L, H * DH)
    OUT,  # (N, n, H * DH) contiguous output
    R,  # N * n (row, query) pairs
    n_q,  # n
    L,  # window length
    stride_qn, stride_qt,
    stride_kn, stride_kt,
    stride_vn, stride_vt,
    H: tl.constexpr,
    DH: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_DH: tl.constexpr,
    MAX_L: tl.constexpr,
    EMULATE: tl.constexpr,
):  # fmt: skip
    pairs = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # (row, query) pairs of this program
    row, qi = pairs // n_q, pairs % n_q
    heads = tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_DH)
    feat = (heads[:, None] * DH + dims[None, :])[None, :, :]  # (1, BLOCK_H, BLOCK_DH)
    mask = (pairs < R)[:, None, None] & ((heads[:, None] < H) & (dims[None, :] < DH))[None, :, :]
    q_off = (row * stride_qn + qi * stride_qt)[:, None, None]
    q = tl.load(Q + q_off + feat, mask=mask, other=0.0).to(tl.float32)
    last_key = L - n_q + qi  # (BLOCK_Q,) causal: query qi sees keys 0..last_key
    m = tl.full((BLOCK_Q, BLOCK_H), float("-inf"), tl.float32)
    denom = tl.zeros((BLOCK_Q, BLOCK_H), tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_H, BLOCK_DH), tl.float32)
    for j in tl.static_range(MAX_L):
        valid = j <= last_key  # (BLOCK_Q,)
        kv_mask = mask & valid[:, None, None]
        k = tl.load(K + (row * stride_kn + j * stride_kt)[:, None, None] + feat, mask=kv_mask, other=0.0)
        v = tl.load(V + (row * stride_vn + j * stride_vt)[:, None, None] + feat, mask=kv_mask, other=0.0)
        s = tl.where(valid[:, None], tl.sum(q * k.to(tl.float32), axis=2), float("-inf"))  # (BLOCK_Q, BLOCK_H)
        m_new = tl.maximum(m, s)
        alpha = tl.exp(m - m_new)  # 0 on the first key (m = -inf); 1 for a masked key
        p = tl.where(valid[:, None], tl.exp(s - m_new), 0.0)
        denom = denom * alpha + p
        acc = acc * alpha[:, :, None] + p[:, :, None] * v.to(tl.float32)
        m = m_new
    out = acc / denom[:, :, None]  # key 0 is always valid, so denom >= 1 even for padding lanes
    tl.store(OUT + (pairs * (H * DH))[:, None, None] + feat, round_to(out, OUT.dtype.element_ty, EMULATE), mask=mask)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q (N, n, I), k and v (N, L, I) with n == 1 or n == L, I = heads * dim_head -> (N, n, I) in q's dtype."""
    n_rows, n_q, inner = q.shape
    length = k.shape[1]
    if k.shape != (n_rows, length, inner) or v.shape != k.shape:
        raise ValueError(f"window_attention: k {tuple(k.shape)} and v {tuple(v.shape)} must be (N, L, {inner})")
    if n_q not in (1, length):
        raise ValueError(f"window_attention: expected 1 or L={length} queries, got {n_q}")
    if inner % heads:
        raise ValueError(f"window_attention: width {inner} is not a multiple of heads={heads}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"window_attention: {name} must be contiguous in its last dimension")
    dh = inner // heads
    out = torch.empty(n_rows, n_q, inner, device=q.device, dtype=q.dtype)
    pairs = n_rows * n_q
    block_q = 32 if _INTERPRET else 1  # the interpreter runs programs one by one: give each many pairs
    _window_attention_fwd_kernel[(triton.cdiv(pairs, block_q),)](
        q, k, v, out, pairs, n_q, length,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        H=heads, DH=dh, BLOCK_Q=block_q, BLOCK_H=triton.next_power_of_2(heads), BLOCK_DH=triton.next_power_of_2(dh),
        MAX_L=length, EMULATE=EMULATE,
    )  # fmt: skip
    return out
