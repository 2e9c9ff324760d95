"""The "torch" engine's ops on the CPU: the same maths as `ops.TorchOps`, arranged for a CPU.

- Matmuls go to oneDNN with weights reordered once into its blocked layout (`pack_weight`), bf16 on
  AMX where the CPU has it; the MLP's GELU runs as a oneDNN post-op on the fp32 accumulator (one pass
  over the (rows, 2048) hidden activations saved, and one bf16 rounding fewer). Without oneDNN's
  linear op (other builds) this falls back to `F.linear`.
- Attention over the window uses PyTorch's CPU attention kernel on the bf16 K/V in place (scores and
  softmax in fp32 inside it): dtype conversions of whole K/V windows cost more than the attention.
- The elementwise chains (norm + modulate + norm, gate + residual) are many tiny ops in eager
  PyTorch: at 300 rows each op is a few tens of microseconds of loop plus a thread-pool round trip,
  and on a busy 2-core machine the round trips dominate. With `compile=True` TorchInductor fuses each
  chain, and the single-query attention, into one C++ loop (static shapes: compiled once per row
  count and window shape; the first plan pays ~15-25 s of compilation, cached on disk afterwards;
  ~1.2x faster in bf16, measured). Off by default: see `LEWM_PLAN_COMPILE` in engine.py.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from lewm_fast.planning import ops


@functools.cache
def onednn_linear_available(dtype: torch.dtype) -> bool:
    """Whether this build has oneDNN's fused linear (mkldnn::_linear_pointwise) for `dtype`."""
    try:
        x, w = torch.ones(2, 8, dtype=dtype), torch.ones(4, 8, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 2)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, torch.zeros(4, dtype=dtype), "gelu", [], "none")
        return bool(torch.allclose(y.float(), F.gelu(torch.full((2, 4), 8.0))))
    except (AttributeError, RuntimeError):
        return False


class PackedWeight:
    """A Linear weight (out, in) in oneDNN's layout, with the plain tensor kept for shape checks."""

    def __init__(self, w: torch.Tensor, rows_hint: int):
        self.plain = w
        self.shape = w.shape
        self.dtype = w.dtype
        self.onednn = torch.ops.mkldnn._reorder_linear_weight(w, rows_hint)


def _gate_residual(res: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(res, gate, y)  # mixed dtypes: computed and returned in fp32


def sdpa_one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """`ops.one_query_attention` by PyTorch's CPU attention kernel: it reads bf16 q/k/v in place and
    keeps scores and softmax in fp32 internally, where the plain formula would first convert the
    whole K/V window to fp32 (conversions are slow on the CPU). q (N, 1, I), k, v (N, L, I) -> (N, 1, I)."""
    qh, kh, vh = (u.unflatten(-1, (heads, -1)).transpose(1, 2) for u in (q, k, v))
    return F.scaled_dot_product_attention(qh, kh, vh, scale=1.0).transpose(1, 2).flatten(2)


class CpuOps(ops.TorchOps):
    """TorchOps with oneDNN matmuls (prepacked weights, fused GELU) and, optionally, compiled
    elementwise chains."""

    name = "torch-cpu"

    def __init__(self, dtype: torch.dtype, rows_hint: int = 300, compile: bool = False):
        self.onednn = onednn_linear_available(dtype)
        self.rows_hint = rows_hint
        self._gate_residual = _gate_residual
        self._one_query = sdpa_one_query
        if compile:
            self._compile()

    def _compile(self) -> None:
        try:
            import torch._dynamo
            import torch._inductor.config  # noqa: F401  (fails early where inductor is unavailable)

            # Static shapes (dynamic ones compile to slower loops here): one graph per row count, window
            # shape, stride pattern and dtype, i.e. a few tens per process: above dynamo's default of 8.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.norm_modulate = torch.compile(ops.norm_modulate, dynamic=False)
            self._gate_residual = torch.compile(_gate_residual, dynamic=False)
            # the plain formula, fused: reads bf16 K/V in place like the CPU attention kernel, less overhead
            self._one_query = torch.compile(ops.one_query_attention, dynamic=False)
        except Exception as err:  # pragma: no cover - no compiler: eager ops, one warning
            warnings.warn(f"lewm_fast planner: torch.compile unavailable ({err}); using eager ops", stacklevel=2)

    def window_attention(self, q, k, v, heads: int) -> torch.Tensor:
        return ops.window_attention(q, k, v, heads, one_query=self._one_query)

    def pack_weight(self, w: torch.Tensor):
        return PackedWeight(w, self.rows_hint) if self.onednn else w

    def linear(self, x: torch.Tensor, w, b: torch.Tensor) -> torch.Tensor:
        if isinstance(w, PackedWeight):
            return torch.ops.mkldnn._linear_pointwise(x, w.onednn, b, "none", [], "")
        return F.linear(x, w, b)

    def linear_gelu(self, x: torch.Tensor, w, b: torch.Tensor) -> torch.Tensor:
        if isinstance(w, PackedWeight):
            return torch.ops.mkldnn._linear_pointwise(x, w.onednn, b, "gelu", [], "none")
        return F.gelu(F.linear(x, w, b))

    def linear_gate_residual(self, x, w, b, gate, res) -> torch.Tensor:
        return self._gate_residual(res, gate, self.linear(x, w, b))
