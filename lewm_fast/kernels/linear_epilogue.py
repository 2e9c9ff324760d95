"""Linear layers of the rollout with their elementwise epilogue fused into the GEMM.

Math (references in `lewm_fast.planning.ops`):

    linear_gelu:           out = gelu(x @ w^T + b)                 (exact erf GELU; the MLP's and pred_proj's fc1)
    linear_gate_residual:  out = res + gate * (x @ w^T + b)        (AdaLN-zero: a sub-layer joining the residual)

Design: a plain tiled GEMM (fp32 accumulation; bf16 operands on tensor cores, fp32 operands with an
IEEE dot, no TF32, so the fp32 path matches the reference to ~1e-6) whose epilogue runs on the
accumulator before the single store. What it saves against cuBLAS + an elementwise kernel: one
write and one read of the (M, N) output (for fc1, M x 2048 in bf16) and one launch per call; the GELU
is applied to the fp32 accumulator, before rounding. The gate is a strided view into the modulation
table and the residual stream is fp32, both addressed per token (row m = (m // n_tok, m % n_tok)).
Whether this beats cuBLAS at M = 300..4800 and K = 192..2048 must be measured on a GPU
(`benchmarks/planner_kernels.py`); the GEMM itself is not autotuned beyond a few configs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from lewm_fast.kernels.rounding import EMULATE, round_to

_INV_SQRT2 = tl.constexpr(0.7071067811865476)

# Tiles that compile without register spills on sm_90 for both dtypes and both epilogues (checked
# without a device: triton.compile for GPUTarget("cuda", 90, 32) + cuobjdump --dump-resource-usage;
# 64x64x64 and 128x128 tiles spill). Autotuned among these on the device, during the warm-up.
_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if _INTERPRET:  # the interpreter: one small config, no tuning
    _CONFIGS = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64})]


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "EPILOGUE"])
@triton.jit
def _linear_epilogue_fwd_kernel(
    X,  # (M, K) row-major
    W,  # (N, K) row-major (an nn.Linear weight)
    B,  # (N,)
    GATE,  # (rows, n_tok, N) view, last dim contiguous (EPILOGUE == 2)
    RES,  # (rows, n_tok, N) fp32 view, last dim contiguous (EPILOGUE == 2)
    OUT,  # (M, N) contiguous
    M, N, K,
    n_tok,
    stride_xm,
    stride_gn, stride_gt,
    stride_rn, stride_rt,
    EPILOGUE: tl.constexpr,  # 1: gelu(acc + b); 2: res + gate * (acc + b)
    IEEE: tl.constexpr,  # an IEEE fp32 dot (fp32 operands: no TF32)
    EMULATE: tl.constexpr,  # round to bf16 by integer arithmetic (the interpreter; see rounding.py)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(X + rm[:, None] * stride_xm + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(W + rn[None, :] * K + kk[:, None], mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)
        if IEEE:  # fp32 operands; or bf16 under the interpreter, whose dot mishandles bf16 (the products
            # of two bf16 values are exact in fp32, so this is the tensor-core result up to summation order)
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
    acc += tl.load(B + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if EPILOGUE == 1:
        acc = 0.5 * acc * (1.0 + tl.erf(acc * _INV_SQRT2))
    if EPILOGUE == 2:
        i, j = rm // n_tok, rm % n_tok
        gate = tl.load(GATE + i[:, None] * stride_gn + j[:, None] * stride_gt + rn[None, :], mask=mask, other=0.0)
        res = tl.load(RES + i[:, None] * stride_rn + j[:, None] * stride_rt + rn[None, :], mask=mask, other=0.0)
        acc = res.to(tl.float32) + gate.to(tl.float32) * acc
    tl.store(OUT + rm[:, None] * N + rn[None, :], round_to(acc, OUT.dtype.element_ty, EMULATE), mask=mask)


def _launch(x, w, b, epilogue, gate, res, out_dtype):
    k = x.shape[-1]
    n_out = w.shape[0]
    if w.shape != (n_out, k) or b.shape != (n_out,):
        raise ValueError(f"linear: weight {tuple(w.shape)} / bias {tuple(b.shape)} do not fit an input width {k}")
    if x.dtype != w.dtype:
        raise ValueError(f"linear: x is {x.dtype} but the weight is {w.dtype}")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    w, b = w.contiguous(), b.contiguous()
    m = x2.shape[0]
    out = torch.empty(m, n_out, device=x.device, dtype=out_dtype)
    if epilogue == 2:
        g3, r3 = (t.unsqueeze(1) if t.ndim == 2 else t for t in (gate, res))
        if g3.shape[-1] != n_out or r3.shape != g3.shape or g3.shape[0] * g3.shape[1] != m:
            raise ValueError(f"linear_gate_residual: gate {tuple(gate.shape)} and res {tuple(res.shape)} must be "
                             f"(N, n, {n_out}) with N * n = {m} rows")  # fmt: skip
        if g3.stride(-1) != 1 or r3.stride(-1) != 1:
            raise ValueError("linear_gate_residual: gate and res must be contiguous in their last dimension")
        n_tok, strides = g3.shape[1], (g3.stride(0), g3.stride(1), r3.stride(0), r3.stride(1))
    else:
        g3 = r3 = out
        n_tok, strides = 1, (0, 0, 0, 0)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n_out, meta["BLOCK_N"]))

    _linear_epilogue_fwd_kernel[grid](
        x2, w, b, g3, r3, out, m, n_out, k, n_tok, x2.stride(0), *strides,
        EPILOGUE=epilogue, IEEE=x.dtype == torch.float32 or _INTERPRET, EMULATE=EMULATE,
    )  # fmt: skip
    return out


def linear_gelu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu(x @ w^T + b): x (..., K), w (F, K), b (F,), same dtype -> (..., F) in x's dtype."""
    return _launch(x, w, b, 1, None, None, x.dtype).view(*x.shape[:-1], w.shape[0])


def linear_gate_residual(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, res: torch.Tensor
) -> torch.Tensor:
    """res + gate * (x @ w^T + b): x (N, n, K), w (D, K), b (D,); gate (N, n, D) view; res (N, n, D) fp32
    -> (N, n, D) fp32."""
    return _launch(x, w, b, 2, gate, res, torch.float32).view(*res.shape)
