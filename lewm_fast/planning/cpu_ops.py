"""The "torch" engine's ops on the CPU: the same maths as `ops.TorchOps`, arranged for a CPU.

- Matmuls (`capability.planner_matmul`): the extension's register-tiled kernels (csrc/linear_cpu.cpp: AVX2
  or AVX-512 in fp32, AVX512-BF16 in bf16) on weights packed once into panels, with the MLP's GELU and the
  modulations' column planes written by the matmul itself; elsewhere (no such kernel, or AMX in bf16)
  oneDNN with weights reordered once into its blocked layout (`pack_weight`), the GELU as its post-op in
  bf16 and PyTorch's after it in fp32 (`capability.planner_gelu`). Without oneDNN's linear op (other
  builds) this falls back to `F.linear`. docs/cpu-planner.md says how and why.
- Attention over the window uses PyTorch's CPU attention kernel on the bf16 K/V in place (scores and
  softmax in fp32 inside it): dtype conversions of whole K/V windows cost more than the attention.
- The elementwise chains (norm + modulate + norm, gate + residual) are many tiny ops in eager
  PyTorch: at 300 rows each op is a few tens of microseconds of loop plus a thread-pool round trip,
  and on a busy 2-core machine the round trips dominate. With `compile=True` TorchInductor fuses each
  chain, and the single-query attention, into one C++ loop (static shapes: compiled once per row
  count and window shape; the first plan pays the compilation, cached on disk afterwards). Off by default:
  see `LEWM_PLAN_COMPILE` in engine.py; benchmarks/results/design_choices-history.json has the figures.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import warnings
import weakref

import torch
import torch.nn.functional as F

from lewm_fast import capability
from lewm_fast.planning import ops


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc malloc to serve large blocks from its heap instead of fresh mmap()s, and not to hand
    freed memory back to the OS (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD, process-wide).

    Why: every matmul output of a planning step is a fresh multi-MB tensor. By default glibc maps each
    one anew, and the page faults that first-touch it cost as much as the matmul
    (benchmarks/results/design_choices-history.json). The cost is memory that stays with the process after
    use. LEWM_FAST_NO_MALLOPT=1 leaves malloc alone. Returns whether it applied."""
    if os.environ.get("LEWM_FAST_NO_MALLOPT") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


class CppPackedWeight:
    """A Linear weight (out, in), fp32 or bf16, packed for one of the extension's matmul kernels
    (csrc/linear_cpu.cpp: panels of `ext.linear_panel(kernel)` columns), which it keeps: the packed weight
    is only usable by that kernel. The unpacked weight is not kept. kernel: an `ext.linear_kernels()` name
    of the weight's dtype (default: `ext.linear_kernel`, the widest this CPU runs)."""

    def __init__(self, ext, w: torch.Tensor, kernel: str | None = None):
        self.ext, self.shape, self.dtype = ext, w.shape, w.dtype
        self.kernel = kernel or ext.linear_kernel(capability.dtype_name(w.dtype))
        self.panel = ext.linear_panel(self.kernel)
        out_features, in_features = w.shape
        shape = ext.linear_packed_shape(self.kernel, out_features, in_features)
        self.packed = torch.empty(shape, dtype=torch.int16 if w.dtype == torch.bfloat16 else torch.float32)
        self.packed_np = self.packed.numpy()  # views made once: a rollout calls the matmul ~200 times per chunk
        ext.pack_linear_weight(_numpy_view(w.detach().contiguous()), self.packed_np, self.kernel)
        self._bias: tuple[torch.Tensor, object] | None = None

    def bias_view(self, b: torch.Tensor | None):
        """b (N,) as the numpy view the extension takes, in the weight's dtype. The view of the last bias that
        needed no copy is kept (a packed weight meets the same bias tensor on every call; a view follows its
        tensor's in-place changes)."""
        if b is None:
            return None
        if b.dtype != self.dtype or not b.is_contiguous():
            return _numpy_view(b.to(self.dtype).contiguous())
        if self._bias is None or self._bias[0] is not b:
            self._bias = (b, _numpy_view(b))
        return self._bias[1]

    def bound(self, rows: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor, gelu: bool, threads: int):
        """The extension's matmul of rows (M, K), rows one stride apart, into out ((M, N) rows one stride apart, or
        (planes, M, plane_cols)), as a zero-argument callable: its views made once (cpp_linear calls it at once,
        benchmarks/_common.py's ceiling over and over)."""
        return functools.partial(self.ext.linear, _numpy_view(rows), self.packed_np, self.shape[0],
                                 self.bias_view(b), _numpy_view(out), gelu, threads, self.kernel)  # fmt: skip


def cpp_linear(
    x: torch.Tensor, w: CppPackedWeight, b: torch.Tensor | None, gelu: bool = False, plane_cols: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """x @ w.T + b by the extension's matmul, then the erf GELU on the fp32 sums if `gelu`; in the weight's
    dtype (bf16: fp32 sums rounded once to bf16). x (..., K) (rows may be strided) -> (..., N); with
    `plane_cols` (a multiple of the weight's panel dividing N) x (M, K) -> (N / plane_cols, M, plane_cols)
    planes of the columns, the same sums. `out`: a (..., N) view to write instead, whose rows are one stride
    apart (`rows_of`)."""
    n_out, k = w.shape
    if x.shape[-1] != k or x.dtype != w.dtype:  # RuntimeError, as F.linear raises for its mismatches
        raise RuntimeError(f"linear: expected x (..., {k}) {w.dtype} for a ({n_out}, {k}) weight, got "
                           f"{tuple(x.shape)} {x.dtype}")  # fmt: skip
    rows = x.reshape(-1, k)
    if rows.stride(-1) != 1 or rows.stride(0) < k:
        rows = rows.contiguous()
    if out is not None:
        out_rows = rows_of(out)
        if out_rows is None or out.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"out: expected a ({', '.join(map(str, x.shape[:-1]))}, {n_out}) view with rows one "
                             f"stride apart, got {tuple(out.shape)} with strides {out.stride()}")  # fmt: skip
    elif plane_cols is None:
        out = torch.empty(*x.shape[:-1], n_out, dtype=x.dtype)
        out_rows = out.view(-1, n_out)
    else:
        out = out_rows = torch.empty(n_out // plane_cols, rows.shape[0], plane_cols, dtype=x.dtype)
    w.bound(rows, b, out_rows, gelu, torch.get_num_threads())()
    return out


def rows_of(t: torch.Tensor) -> torch.Tensor | None:
    """t (..., N) as (M, N) rows one stride apart (a view), or None where its layout has no such view."""
    if t.stride(-1) != 1:
        return None
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:  # e.g. several tokens of each row of a K/V cache: two strides
        return None


class PackedWeight:
    """A Linear weight (out, in) in oneDNN's layout, with the plain tensor kept for shape checks."""

    def __init__(self, w: torch.Tensor, rows_hint: int):
        self.plain = w
        self.shape = w.shape
        self.dtype = w.dtype
        self.onednn = torch.ops.mkldnn._reorder_linear_weight(w, rows_hint)


def _numpy_view(t: torch.Tensor):
    """A numpy view (no copy) of a CPU tensor; bf16 as its 16-bit patterns (numpy has no bfloat16)."""
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def cpp_window_attention(ext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """`ops.window_attention` by the C++ kernel (csrc/planner_cpu.cpp): reads the strided bf16/fp32
    views in place, one fp32 softmax per (row, head, query). q (N, n, I), k, v (N, L, I) -> (N, n, I)."""
    out = torch.empty(q.shape, dtype=q.dtype)
    ext.window_attention(_numpy_view(q), _numpy_view(k), _numpy_view(v), _numpy_view(out), heads,
                         torch.get_num_threads())  # fmt: skip
    return out


def _as3(t: torch.Tensor | None, dtype: torch.dtype):
    """An optional operand as a 3-d numpy view in `dtype` (the C++ kernel takes one element type)."""
    if t is None:
        return None
    if t.dtype != dtype:
        t = t.to(dtype)
    return _numpy_view(t if t.ndim == 3 else t.unsqueeze(1))


def cpp_residual_norm_modulate(ext, x, gate, delta, shift, scale, eps1: float, eps2: float, out_dtype) -> torch.Tensor:
    """x += gate * delta (in place; skipped when delta is None); then LN2(LN1(x) * (1 + scale) + shift),
    or LN1(x) when shift is None, in out_dtype. x (N, n, D) or (N, D) fp32; the others alike, strided views."""
    out = torch.empty(x.shape, dtype=out_dtype)
    ext.residual_norm_modulate(
        _as3(x, torch.float32), _as3(gate, out_dtype), _as3(delta, out_dtype), _as3(shift, out_dtype),
        _as3(scale, out_dtype), _as3(out, out_dtype), out_dtype == torch.bfloat16, eps1, eps2, torch.get_num_threads(),
    )  # fmt: skip
    return out


def cpp_gate_residual(ext, res: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """res += gate * y, in place on the fp32 residual `res` (which is returned)."""
    ext.residual_norm_modulate(_as3(res, torch.float32), _as3(gate, y.dtype), _as3(y, y.dtype), None, None, None,
                               y.dtype == torch.bfloat16, 0.0, 0.0, torch.get_num_threads())  # fmt: skip
    return res


def _gate_residual(res: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(res, gate, y)  # mixed dtypes: computed and returned in fp32


def sdpa_one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """`ops.one_query_attention` by PyTorch's CPU attention kernel: it reads bf16 q/k/v in place and
    keeps scores and softmax in fp32 internally, where the plain formula would first convert the
    whole K/V window to fp32 (conversions are slow on the CPU). q (N, 1, I), k, v (N, L, I) -> (N, 1, I)."""
    qh, kh, vh = (u.unflatten(-1, (heads, -1)).transpose(1, 2) for u in (q, k, v))
    return F.scaled_dot_product_attention(qh, kh, vh, scale=1.0).transpose(1, 2).flatten(2)


def _step_weight(w, b) -> tuple | None:
    """A block weight as `ext.rollout_step_model` takes it: (packed, bias view, out, in)."""
    return None if w is None else (w.packed_np, w.bias_view(b), *w.shape)


def rollout_step_model(ext, packed):
    """The blocks of `packed` (rollout.PackedPredictor) for `ext.rollout_step`, or None where a block weight is not
    packed for the C++ matmul (oneDNN, F.linear). The binding checks each packed weight against the kernel."""
    weights = [w for blk in packed.blocks for w in (blk.w_q, blk.w_kv, blk.w_ov, blk.w_o, blk.w_1, blk.w_2)]
    if not all(isinstance(w, CppPackedWeight) for w in weights if w is not None):
        return None
    blocks = [(_step_weight(blk.w_q, blk.b_q), _step_weight(blk.w_kv, blk.b_kv), _step_weight(blk.w_ov, blk.b_ov),
               _step_weight(blk.w_o, blk.b_o), _step_weight(blk.w_1, blk.b_1), _step_weight(blk.w_2, blk.b_2),
               blk.eps1, blk.eps_attn, blk.eps2, blk.eps_mlp) for blk in packed.blocks]  # fmt: skip
    blk, cfg = packed.blocks[0], packed.cfg
    return ext.rollout_step_model(blocks, weights[0].kernel, cfg.pred_hidden_dim, blk.w_q.shape[0], blk.w_1.shape[0],
                                  packed.heads, packed.eps_final)  # fmt: skip


class CpuOps(ops.TorchOps):
    """TorchOps with oneDNN matmuls (prepacked weights, fused GELU) and the C++ kernels of
    csrc/planner_cpu.cpp for the attention and the elementwise chains (one pass each, in place on the
    residual); without the extension, PyTorch ops (optionally compiled)."""

    name = "torch-cpu"
    skip_unread_queries = True  # rollout._attention_out: ~7% less matmul work, in smaller matmuls
    fused_steps = True  # rollout._blocks in one C++ call per step where it can (`blocks_step`); False: the Python loop

    def __init__(
        self, dtype: torch.dtype, rows_hint: int = 300, compile: bool = False, matmul: str | None = None,
        cpp_kernel: str | None = None,
    ):  # fmt: skip
        """matmul: "cpp", "onednn" or "torch" (default `capability.planner_matmul`); cpp_kernel: the C++
        matmul's kernel (default `capability.cpp_linear_kernel`). Benchmarks set them to compare choices."""
        from lewm_fast import _ext

        self.ext = _ext.load()  # the C++ kernels; None: PyTorch ops
        keep_freed_memory()
        self.matmul = matmul or capability.planner_matmul(dtype)
        if self.matmul not in ("cpp", "onednn", "torch") or (self.matmul == "cpp" and self.ext is None):
            raise ValueError(f"matmul: expected 'onednn', 'torch' or (with the extension) 'cpp', got {matmul!r}")
        self.cpp_kernel = (cpp_kernel or capability.cpp_linear_kernel(dtype)) if self.matmul == "cpp" else None
        self.gelu_post_op = capability.planner_gelu(dtype, self.matmul) == "post-op"
        self.rows_hint = rows_hint
        self._step_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per PackedPredictor
        self._gate_residual = _gate_residual
        self._norm_modulate = ops.norm_modulate
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
            self._norm_modulate = torch.compile(ops.norm_modulate, dynamic=False)
            self._gate_residual = torch.compile(_gate_residual, dynamic=False)
            # the plain formula, fused: reads bf16 K/V in place like the CPU attention kernel, less overhead
            self._one_query = torch.compile(ops.one_query_attention, dynamic=False)
        except Exception as err:  # pragma: no cover - no compiler: eager ops, one warning
            warnings.warn(f"lewm_fast planner: torch.compile unavailable ({err}); using eager ops", stacklevel=2)

    def blocks_step(self, packed, x: torch.Tensor, mods: torch.Tensor, kv, first: int) -> torch.Tensor | None:
        """`rollout._blocks` in one C++ call (csrc/rollout_step.cpp: the same kernels in the same order, so bit for
        bit the Python loop's result) where every block weight is packed for the C++ matmul and unread queries are
        skipped; None otherwise, and for a differentiable cache (the caller then runs the loop). x (N, n, D) fp32
        (updated in place); mods (N, n, depth, 6, D); kv a `rollout.WindowKV` or None. Returns the newest token's
        final norm (N, D). Why: the loop's ~250 op calls a chunk spend ~4% of it in Python between the kernels,
        and the chunk workers take turns on the GIL for it (docs/cpu-planner.md)."""
        if not (self.fused_steps and self.skip_unread_queries) or self.ext is None or self.matmul != "cpp":
            return None  # (the C++ step skips unread queries, as rollout._attention_out)
        if kv is not None and kv.differentiable:
            return None
        if packed not in self._step_models:
            self._step_models[packed] = rollout_step_model(self.ext, packed)
        model = self._step_models[packed]
        if model is None:
            return None
        y = torch.empty(x.shape[0], 1, x.shape[2], dtype=packed.dtype)
        caches = None if kv is None else [_numpy_view(b) for b in kv.bufs]
        self.ext.rollout_step(model, x.numpy(), _numpy_view(mods), caches, first, _numpy_view(y),
                              torch.get_num_threads())  # fmt: skip
        return y[:, 0]

    def norm_modulate(self, x, shift, scale, eps1: float, eps2: float, out_dtype: torch.dtype) -> torch.Tensor:
        if self.ext is None:
            return self._norm_modulate(x, shift, scale, eps1, eps2, out_dtype)
        return cpp_residual_norm_modulate(self.ext, x, None, None, shift, scale, eps1, eps2, out_dtype)

    def layer_norm(self, x: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
        if self.ext is None:
            return ops.layer_norm(x, eps, out_dtype)
        return cpp_residual_norm_modulate(self.ext, x, None, None, None, None, eps, 0.0, out_dtype)

    def window_attention(self, q, k, v, heads: int) -> torch.Tensor:
        if self.ext is not None and q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.bfloat16):
            return cpp_window_attention(self.ext, q, k, v, heads)
        return ops.window_attention(q, k, v, heads, one_query=self._one_query)

    def pack_weight(self, w: torch.Tensor):
        if self.matmul == "cpp":
            return CppPackedWeight(self.ext, w, self.cpp_kernel)
        return PackedWeight(w, self.rows_hint) if self.matmul == "onednn" else w

    def linear(self, x: torch.Tensor, w, b: torch.Tensor) -> torch.Tensor:
        if isinstance(w, CppPackedWeight):
            return cpp_linear(x, w, b)
        if isinstance(w, PackedWeight):
            return torch.ops.mkldnn._linear_pointwise(x, w.onednn, b, "none", [], "")
        return F.linear(x, w, b)

    def linear_into(self, x: torch.Tensor, w, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`TorchOps.linear_into`; the C++ matmul writes `out` itself where its rows are one stride apart."""
        if isinstance(w, CppPackedWeight) and out.dtype == w.dtype and rows_of(out) is not None:
            return cpp_linear(x, w, b, out=out)
        return super().linear_into(x, w, b, out)

    def linear_planes(self, x: torch.Tensor, w, b: torch.Tensor, plane_cols: int) -> torch.Tensor:
        """`TorchOps.linear_planes`; the C++ matmul writes the planes themselves (plane_cols a multiple of its
        panel), so that a plane's rows follow each other in memory."""
        if isinstance(w, CppPackedWeight) and plane_cols % w.panel == 0:
            return cpp_linear(x, w, b, plane_cols=plane_cols)
        return super().linear_planes(x, w, b, plane_cols)

    def linear_gelu(self, x: torch.Tensor, w, b: torch.Tensor) -> torch.Tensor:
        if isinstance(w, CppPackedWeight):
            return cpp_linear(x, w, b, gelu=True)
        if isinstance(w, PackedWeight) and self.gelu_post_op:
            return torch.ops.mkldnn._linear_pointwise(x, w.onednn, b, "gelu", [], "none")
        return F.gelu(self.linear(x, w, b))

    def linear_join_norm(self, h, w, b, gate, x, shift, scale, eps1, eps2, out_dtype):
        """`ops.linear_join_norm` with one C++ pass for the residual update and the norm (x in place)."""
        if self.ext is None:
            return ops.linear_join_norm(h, w, b, gate, x, shift, scale, eps1, eps2, out_dtype, ops=self)
        delta = self.linear(h, w, b) if w is not None else h
        return x, cpp_residual_norm_modulate(self.ext, x, gate, delta, shift, scale, eps1, eps2, out_dtype)

    def linear_gate_residual(self, x, w, b, gate, res) -> torch.Tensor:
        """res + gate * (x @ w.T + b); with the extension `res` (fp32) is updated in place and returned."""
        if self.ext is None:
            return self._gate_residual(res, gate, self.linear(x, w, b))
        return cpp_gate_residual(self.ext, res, gate, self.linear(x, w, b))
