"""The fused operations of the fast rollout, as plain PyTorch: the specification of each Triton kernel
in `lewm_fast/kernels/` and the ops of the "torch" engine (the CPU fast path).

Every op names its shapes. `R` is a number of rows (tokens), `D` the residual width, `I` = heads x
dim_head, `F` a hidden width. The residual stream is fp32; matmul inputs and outputs are in the
compute dtype (fp32 or bf16); statistics (LayerNorm, softmax) are taken in fp32.

Two op sets share one interface (`TorchOps`, `TritonOps`): the rollout in `rollout.py` is written once
against it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def layer_norm(x: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """LayerNorm without affine (the affine is folded into the next matmul): x (..., D) -> (..., D)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(out_dtype)


def norm_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps1: float, eps2: float, out_dtype: torch.dtype
) -> torch.Tensor:
    """The input of an AdaLN block's attention or MLP: LN2(LN1(x) * (1 + scale) + shift).

    LN1 is the block's non-affine norm (eps1 = 1e-6); LN2 is the sub-layer's own norm (eps2), whose
    affine is folded into the following matmul. Args: x (N, n, D) fp32; shift, scale (N, n, D) any
    float dtype (strided views of the modulation table). Returns (N, n, D) in out_dtype.
    """
    y = F.layer_norm(x.float(), x.shape[-1:], eps=eps1)
    y = torch.addcmul(shift, y, scale).add_(y)  # y * (1 + scale) + shift; mixed dtypes compute in fp32
    return F.layer_norm(y, x.shape[-1:], eps=eps2).to(out_dtype)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, one_query=None) -> torch.Tensor:
    """Causal attention over a short window; the queries are its last n positions.

    Args: q (N, n, I), k and v (N, L, I) with 1 <= n <= L (L <= num_frames): query i sits at window
    position L - n + i and sees keys 0 .. L - n + i; the 1/sqrt(dim_head) scale is already in q.
    Returns (N, n, I) in q's dtype. The softmax is taken in fp32.
    `one_query` replaces `one_query_attention` (e.g. by a compiled version of it).
    """
    one_query = one_query or one_query_attention
    n, length = q.shape[1], k.shape[1]
    outs = []
    for i in range(n):
        pos = length - n + i
        if pos == 0:  # one key: the softmax is 1
            outs.append(v[:, :1].to(q.dtype))
        else:
            outs.append(one_query(q[:, i : i + 1], k[:, : pos + 1], v[:, : pos + 1], heads))
    return outs[0] if n == 1 else torch.cat(outs, 1)


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q (N, 1, I) against all L keys: per-head dot products, fp32 softmax, weighted sum -> (N, 1, I)."""
    qh, kh, vh = (u.unflatten(-1, (heads, -1)).float() for u in (q, k, v))  # (N, ., h, dh)
    p = (kh * qh).sum(-1).softmax(1)  # (N, L, h)
    return (p.unsqueeze(-1) * vh).sum(1, keepdim=True).flatten(2).to(q.dtype)


def linear_gelu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu(x @ w.T + b) with the exact (erf) GELU. x (R, K), w (F, K), b (F,) -> (R, F) in x's dtype."""
    return F.gelu(F.linear(x, w, b))


def linear_gate_residual(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, res: torch.Tensor
) -> torch.Tensor:
    """res + gate * (x @ w.T + b): an AdaLN-zero sub-layer's output joining the residual stream.

    x (N, n, K) compute dtype, w (D, K), b (D,); gate (N, n, D) any float dtype (a strided view);
    res (N, n, D) fp32. Returns (N, n, D) fp32.
    """
    return torch.addcmul(res, gate, F.linear(x, w, b))  # mixed dtypes: computed and returned in fp32


def linear_join_norm(
    h: torch.Tensor,
    w,
    b,
    gate: torch.Tensor,
    x: torch.Tensor,
    shift,
    scale,
    eps1: float,
    eps2: float,
    out_dtype,
    ops=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sub-layer's output joins the residual, then the norm that follows it:
    x = x + gate * (h @ w.T + b) (or + gate * h when w is None), then y = norm_modulate(x, shift, scale)
    or, when shift is None, the plain LayerNorm(x) with eps1. Returns (x fp32, y in out_dtype).
    `ops` supplies linear_gate_residual / norm_modulate / layer_norm (default: this module's)."""
    ops = ops or TorchOps()
    x = ops.linear_gate_residual(h, w, b, gate, x) if w is not None else torch.addcmul(x, gate, h)
    if shift is None:
        return x, ops.layer_norm(x, eps1, out_dtype)
    return x, ops.norm_modulate(x, shift, scale, eps1, eps2, out_dtype)


class Elites(NamedTuple):
    """An elite update's selection and result. costs, indices: (E, K) the K lowest costs and their samples'
    indices, lowest first; candidates: (E, K, T, A) those samples; mean, std: (E, T, A) the new distribution."""

    costs: torch.Tensor
    indices: torch.Tensor
    candidates: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def select_lowest(cost: torch.Tensor, cand: torch.Tensor, k: int):
    """The public solvers' selection: (values (E, k), indices (E, k), candidates (E, k, T, A)) of the k
    lowest costs, lowest first, gathered as they gather them (`cand[rows, indices]`)."""
    values, indices = torch.topk(cost, k, dim=1, largest=False)
    rows = torch.arange(cand.shape[0], device=cand.device).unsqueeze(1).expand(-1, k)
    return values, indices, cand[rows, indices]


def elites(
    cost: torch.Tensor,
    cand: torch.Tensor,
    topk: int,
    alpha: float = 0.0,
    prev_mean: torch.Tensor | None = None,
    prev_std: torch.Tensor | None = None,
) -> Elites:
    """The CEM update, written once (CEM, iCEM and the op sets use it): the topk lowest-cost candidates'
    mean and unbiased std; with prev_mean/prev_std (iCEM's momentum) mean = alpha * prev_mean +
    (1 - alpha) * elite mean, std alike. cost (E, S); cand (E, S, T, A); prev_mean, prev_std (E, T, A)."""
    values, indices, chosen = select_lowest(cost, cand, topk)
    mean, std = chosen.mean(dim=1), chosen.std(dim=1)
    if prev_mean is not None:
        mean = alpha * prev_mean + (1 - alpha) * mean
        std = alpha * prev_std + (1 - alpha) * std
    return Elites(values, indices, chosen, mean, std)


def elite_update(
    cost: torch.Tensor,
    cand: torch.Tensor,
    topk: int,
    alpha: float = 0.0,
    prev_mean: torch.Tensor | None = None,
    prev_std: torch.Tensor | None = None,
    return_indices: bool = False,
):
    """`elites` as the op sets return it (the fused kernel's specification): mean (E, T, A), std (E, T, A),
    the mean elite cost (E,) and, with return_indices, the elites' indices (E, topk), best first."""
    out = elites(cost, cand, topk, alpha, prev_mean, prev_std)
    result = (out.mean, out.std, out.costs.mean(dim=1))
    return (*result, out.indices) if return_indices else result


class Weighting(NamedTuple):
    """An MPPI update. indices: (E, K) the K lowest costs' samples (None: every sample takes part); costs,
    candidates, weights: (E, K'), (E, K', T, A), (E, K') of those taking part; mean: (E, T, A) the new mean."""

    indices: torch.Tensor | None
    costs: torch.Tensor
    candidates: torch.Tensor
    weights: torch.Tensor
    mean: torch.Tensor


def mppi_weighting(cost: torch.Tensor, cand: torch.Tensor, topk: int | None, temperature: float) -> Weighting:
    """The MPPI update, written once (MPPI and the op sets use it): softmax(-(cost - min) / temperature)
    over the topk lowest costs (all S when topk is None), then the weighted mean of those candidates.
    cost (E, S); cand (E, S, T, A)."""
    indices = None
    if topk is not None:
        cost, indices, cand = select_lowest(cost, cand, topk)
    min_cost = cost.min(dim=1, keepdim=True)[0]
    weights = torch.softmax(-(cost - min_cost) / temperature, dim=1)
    mean = (weights.unsqueeze(-1).unsqueeze(-1) * cand).sum(dim=1)
    return Weighting(indices, cost, cand, weights, mean)


def mppi_update(
    cost: torch.Tensor, cand: torch.Tensor, topk: int | None, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mppi_weighting` as the op sets return it (the fused kernel's specification): the new mean
    (E, T, A) and the mean cost of the weighted candidates (E,)."""
    out = mppi_weighting(cost, cand, topk, temperature)
    return out.mean, out.costs.mean(dim=1)


class TorchOps:
    """The PyTorch compositions above (the CPU fast path; also correct on CUDA)."""

    name = "torch"
    updates_as_reference = True  # elite_update and mppi_update are the optimizers' own operations
    thread_safe = True  # the CPU's chunk workers may call its ops at once (cpu_parallel)
    linear = staticmethod(F.linear)
    pack_weight = staticmethod(lambda w: w)  # weights stay plain tensors
    layer_norm = staticmethod(layer_norm)
    norm_modulate = staticmethod(norm_modulate)
    window_attention = staticmethod(window_attention)
    linear_gelu = staticmethod(linear_gelu)
    linear_gate_residual = staticmethod(linear_gate_residual)
    elite_update = staticmethod(elite_update)
    mppi_update = staticmethod(mppi_update)

    def linear_join_norm(self, h, w, b, gate, x, shift, scale, eps1, eps2, out_dtype):
        return linear_join_norm(h, w, b, gate, x, shift, scale, eps1, eps2, out_dtype, ops=self)

    def blocks_step(self, packed, x: torch.Tensor, mods: torch.Tensor, kv, first: int) -> torch.Tensor | None:
        """A rollout step's blocks (`rollout._blocks`) in one call, or None: the rollout then runs them op by op.
        Here None; the CPU op set runs them in C++ (`CpuOps.blocks_step`)."""
        return None

    def linear_into(self, x: torch.Tensor, w, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x @ w.T + b written into `out` (..., N), a view (e.g. the K/V cache); returns out. Here computed,
        then copied; an op set whose matmul writes strided rows (the CPU's) writes it there itself."""
        return out.copy_(self.linear(x, w, b))

    def linear_planes(self, x: torch.Tensor, w, b: torch.Tensor, plane_cols: int) -> torch.Tensor:
        """x @ w.T + b as column planes: x (M, K) -> (N / plane_cols, M, plane_cols), plane c = columns
        c * plane_cols ... of every row. Here a strided view of the row-major result; an op set whose
        matmul can write the planes themselves (the CPU's) does, so that a plane's rows are contiguous."""
        out = self.linear(x, w, b)
        return out.view(out.shape[0], -1, plane_cols).transpose(0, 1)


class TritonOps(TorchOps):
    """The fused Triton kernels of `lewm_fast/kernels/` (GPU, or the CPU under TRITON_INTERPRET=1). Plain
    matmuls without an epilogue stay with cuBLAS (`F.linear`)."""

    name = "triton"
    updates_as_reference = False  # the fused updates sum in another order
    thread_safe = False  # the Triton interpreter, which runs its kernels on the CPU, is not: one thread there

    def __init__(self):
        # Imported here, not at module import: TRITON_INTERPRET must be read after the test setup sets it.
        from lewm_fast.kernels.elite_update import elite_update as _elite_update
        from lewm_fast.kernels.linear_epilogue import linear_gate_residual as _linear_gate_residual
        from lewm_fast.kernels.linear_epilogue import linear_gelu as _linear_gelu
        from lewm_fast.kernels.mppi_update import mppi_update as _mppi_update
        from lewm_fast.kernels.norm_modulate import layer_norm as _layer_norm
        from lewm_fast.kernels.norm_modulate import norm_modulate as _norm_modulate
        from lewm_fast.kernels.window_attention import window_attention as _window_attention

        self.layer_norm = _layer_norm
        self.norm_modulate = _norm_modulate
        self.window_attention = _window_attention
        self.linear_gelu = _linear_gelu
        self.linear_gate_residual = _linear_gate_residual
        self.elite_update = _elite_update
        self.mppi_update = _mppi_update
