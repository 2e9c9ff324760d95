"""SIGReg on the GPU: the sketched projection fused with the characteristic-function statistics.

Math (lewm_fast/sigreg.py forms the value; docs/numerics.md says how it is checked). For X (T, N, D), unit
directions A (D, M) and evenly spaced knots t_k = k dt (k = 0..K-1), with Z = X @ A:

    forward   cos_sum[t, k, m] = sum_n cos(k dt Z[t, n, m]),   sin_sum[t, k, m] = sum_n sin(k dt Z[t, n, m])
    backward  dZ[t, n, m] = sum_{k >= 1} P[t, k, m] cos(k dt Z[t, n, m]) + Q[t, k, m] sin(k dt Z[t, n, m])

The SIGReg value, the all-reduce over processes and the gradient tables P, Q are formed from these (T, K, M)
sums on the host (lewm_fast/sigreg.py); dX = dZ @ A^T.

Design and trade-offs:
- Forward: one program owns a (t, BLOCK_M slices, range of rows) cell. Per BLOCK_N row tile it computes the
  Z tile with `tl.dot` over D, then ONE sin/cos per (row, slice) and every knot by the angle-addition
  recurrence (cos((k+1)a) = cos(ka) cos(a) - sin(ka) sin(a), ...), summing over rows in registers. Z never
  reaches memory; the only output is a (K-1, BLOCK_M) fp32 partial per program. Partials are reduced over
  the row ranges by a fixed-order `sum` on the host (in float64): deterministic, no atomics, and the
  partial buffer is K/rows_per_program the size of Z.
- Backward: one program per (t, row tile, slice block) recomputes its Z tile (the forward keeps nothing
  N x M), runs the same recurrence against the tables P, Q and writes its dZ tile. dX = dZ @ A^T is then a
  library GEMM (cuBLAS), not fused: dX[n, :] sums over ALL M slices, so fusing it would need either
  atomics across slice blocks (non-deterministic) or one program per row tile holding a (BLOCK_N, D)
  accumulator while recomputing Z for every slice block (register-bound for D = 512). The unfused cost
  is one write + read of dZ (N*M*4 bytes) and the GEMM runs at cuBLAS speed (benchmarks/sigreg_speed.py
  times the whole).
- Precision: fp32 inputs use an IEEE fp32 dot (no TF32: Z must match the fp32 reference to ~1e-6).
  bf16/fp16 inputs use the tensor-core dot with A rounded to the input dtype and fp32 accumulation, as
  torch autocast would run `proj @ A`; everything after the dot is fp32. sin/cos of the angle come from
  `_sincos` (one shared reduction by pi/2, short polynomials) rather than `tl.sin`/`tl.cos`, which lower
  to libdevice's sinf and cosf: two separate reductions, each with a large-argument path that needs a
  local-memory array. Same fp32 accuracy for |angle| < 6400 (7e-8 measured), and the interpreter runs
  exactly the arithmetic the GPU runs.
- Knot 0 (t = 0) is never computed: cos = 1, sin = 0 for every row, so its sums are N and 0 (filled on
  the host) and its gradient is 0.

Runs on CPU tensors under TRITON_INTERPRET=1 (the tests); `tl.dot` needs tiles of at least 16 in every
dimension, so small D, M and N are padded by masking.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# pi/2 = _PIO2_A + _PIO2_B + _PIO2_C with A and B of 12 significant bits: q * A and q * B are exact in fp32
# for |q| < 2^12 (|theta| < 6400), so the reduced angle keeps full fp32 accuracy there.
_TWO_OVER_PI = tl.constexpr(0.6366197723675814)
_PIO2_A = tl.constexpr(1.57080078125)
_PIO2_B = tl.constexpr(-4.453584551811218e-06)
_PIO2_C = tl.constexpr(-8.705515695504166e-10)


@triton.jit
def _sincos(theta):
    """(sin, cos) of an fp32 tile: reduction by pi/2, Taylor polynomials on |r| <= pi/4 (truncation
    < 2e-9, under fp32 rounding), quadrant fix-up. One reduction serves both (see the module docstring)."""
    q = tl.floor(theta * _TWO_OVER_PI + 0.5)
    r = ((theta - q * _PIO2_A) - q * _PIO2_B) - q * _PIO2_C
    r2 = r * r
    sin_r = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))))
    cos_r = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0))))
    quadrant = q - 4.0 * tl.floor(q * 0.25)  # q mod 4 in {0, 1, 2, 3}, exact
    odd = (quadrant == 1.0) | (quadrant == 3.0)
    s = tl.where(odd, cos_r, sin_r)
    c = tl.where(odd, sin_r, cos_r)
    s = tl.where(quadrant >= 2.0, -s, s)
    c = tl.where((quadrant == 1.0) | (quadrant == 2.0), -c, c)
    return s, c


@triton.jit
def _z_tile(x_ptr, a_ptr, t, offs_n, offs_m, n_mask, m_mask, D, stride_xt, stride_xn, stride_xd, stride_ad,
            stride_am, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
            INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr):  # fmt: skip
    """Z[t, offs_n, offs_m] = X[t, offs_n, :] @ A[:, offs_m] as a (BLOCK_N, BLOCK_M) fp32 tile (0 where masked)."""
    z = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    # 64-bit row offsets: T * N * D may pass 2^31 elements at large batch sizes.
    x_rows = x_ptr + t.to(tl.int64) * stride_xt + offs_n[:, None].to(tl.int64) * stride_xn
    a_cols = a_ptr + offs_m[None, :] * stride_am
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        d_mask = d < D
        x = tl.load(x_rows + d[None, :] * stride_xd, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        a = tl.load(a_cols + d[:, None] * stride_ad, mask=d_mask[:, None] & m_mask[None, :], other=0.0)
        if DOT_IN_FP32:  # the same products (bf16 x bf16 is exact in fp32), for the interpreter
            x = x.to(tl.float32)
            a = a.to(tl.float32)
        z = tl.dot(x, a, z, input_precision=INPUT_PRECISION)
    return z


@triton.jit
def _sigreg_fwd_kernel(
    x_ptr,  # X: (T, N, D) fp32 / bf16 / fp16, any strides
    a_ptr,  # A: (D, M), the dtype of X, any strides
    part_ptr,  # partial sums: (T, SPLIT, 2, K - 1, M) fp32, contiguous; [.., 0, k-1, m] cos, [.., 1, k-1, m] sin
    N,  # rows per time step
    D,  # embedding dimension
    M,  # number of slices (directions)
    rows_per_prog,  # rows summed by one program (a multiple of BLOCK_N); SPLIT = cdiv(N, rows_per_prog)
    dt,  # knot spacing t_max / (K - 1)
    stride_xt, stride_xn, stride_xd,  # strides of X
    stride_ad, stride_am,  # strides of A
    K: tl.constexpr,  # number of knots (>= 2)
    BLOCK_K: tl.constexpr,  # next power of two >= K - 1
    BLOCK_N: tl.constexpr,  # rows per tile (>= 16)
    BLOCK_M: tl.constexpr,  # slices per program (>= 16)
    BLOCK_D: tl.constexpr,  # reduction tile of the dot (>= 16)
    INPUT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs
    DOT_IN_FP32: tl.constexpr,  # upcast 16-bit tiles before the dot (the interpreter's dot needs it)
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M), SPLIT, T): partial cos/sin sums of knots 1..K-1 over one range of rows."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    t = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    kk = tl.arange(0, BLOCK_K)
    acc_c = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    acc_s = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    row_start = pid_s * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, N)
    for n0 in range(row_start, row_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < row_end
        z = _z_tile(x_ptr, a_ptr, t, offs_n, offs_m, n_mask, m_mask, D, stride_xt, stride_xn, stride_xd,
                    stride_ad, stride_am, BLOCK_N, BLOCK_M, BLOCK_D, INPUT_PRECISION, DOT_IN_FP32)  # fmt: skip
        s1, c1 = _sincos(z * dt)
        # Rows past the end contribute nothing: with (sin, cos) = (0, 0) every knot stays 0.
        s1 = tl.where(n_mask[:, None], s1, 0.0)
        c1 = tl.where(n_mask[:, None], c1, 0.0)
        s = s1
        c = c1
        for k in tl.static_range(1, K):
            if k > 1:
                c_next = c * c1 - s * s1
                s = s * c1 + c * s1
                c = c_next
            # Row sums of this knot go to accumulator row k - 1 (a select: accumulators cannot be indexed).
            here = (kk == k - 1)[:, None]
            acc_c += tl.where(here, tl.sum(c, axis=0)[None, :], 0.0)
            acc_s += tl.where(here, tl.sum(s, axis=0)[None, :], 0.0)
    split = tl.num_programs(1)
    base = part_ptr + ((t * split + pid_s) * 2 * (K - 1)) * M
    out = kk[:, None] * M + offs_m[None, :]
    mask = (kk < K - 1)[:, None] & m_mask[None, :]
    tl.store(base + out, acc_c, mask=mask)
    tl.store(base + (K - 1) * M + out, acc_s, mask=mask)


@triton.jit
def _sigreg_bwd_kernel(
    x_ptr,  # X: (T, N, D) fp32 / bf16 / fp16, any strides
    a_ptr,  # A: (D, M), the dtype of X, any strides
    p_ptr,  # P: (T, K, M) fp32, contiguous: coefficient of cos(k dt z) (row k = 0 unused)
    q_ptr,  # Q: (T, K, M) fp32, contiguous: coefficient of sin(k dt z) (row k = 0 unused)
    dz_ptr,  # dZ: (T, N, M) contiguous, fp32 (or the dtype of X), written
    N,  # rows per time step
    D,  # embedding dimension
    M,  # number of slices
    dt,  # knot spacing
    stride_xt, stride_xn, stride_xd,  # strides of X
    stride_ad, stride_am,  # strides of A
    K: tl.constexpr,  # number of knots (>= 2)
    BLOCK_N: tl.constexpr,  # rows per program (>= 16)
    BLOCK_M: tl.constexpr,  # slices per program (>= 16)
    BLOCK_D: tl.constexpr,  # reduction tile of the dot (>= 16)
    INPUT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs
    DOT_IN_FP32: tl.constexpr,  # upcast 16-bit tiles before the dot (the interpreter's dot needs it)
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N), T): dZ = sum_k P cos(k dt Z) + Q sin(k dt Z) on one tile."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    t = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    z = _z_tile(x_ptr, a_ptr, t, offs_n, offs_m, n_mask, m_mask, D, stride_xt, stride_xn, stride_xd,
                stride_ad, stride_am, BLOCK_N, BLOCK_M, BLOCK_D, INPUT_PRECISION, DOT_IN_FP32)  # fmt: skip
    s1, c1 = _sincos(z * dt)
    s = s1
    c = c1
    dz = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    table = t * K * M + offs_m
    for k in tl.static_range(1, K):
        if k > 1:
            c_next = c * c1 - s * s1
            s = s * c1 + c * s1
            c = c_next
        p = tl.load(p_ptr + table + k * M, mask=m_mask, other=0.0)
        q = tl.load(q_ptr + table + k * M, mask=m_mask, other=0.0)
        dz += c * p[None, :] + s * q[None, :]
    out = dz_ptr + (t * N + offs_n[:, None]).to(tl.int64) * M + offs_m[None, :]
    tl.store(out, dz.to(dz_ptr.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


# ---------------------------------------------------------------------------------------------- launchers

# Tiles chosen without a device, from static resource usage on sm_90 (triton.compile + cuobjdump): the
# largest tiles that compile without register spills (no stack) for fp32 and bf16, forward and backward
# (192 / 104 registers per thread in fp32). 64-row tiles spill: the fp32 FMA dot keeps both operand tiles
# in registers. To be autotuned on an H100.
_FWD = dict(BLOCK_N=32, BLOCK_M=64, BLOCK_D=32, num_warps=8)
_BWD = dict(BLOCK_N=32, BLOCK_M=64, BLOCK_D=32, num_warps=8)


# Triton picks the interpreter when a kernel is defined (TRITON_INTERPRET=1 at import), not when it runs.
INTERPRETED = type(_sigreg_fwd_kernel).__name__ == "InterpretedFunction"


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            f"proj: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before import), got {x.device}"
        )


def _operands(x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """X and A in the dot's dtype, and the dot's constexprs."""
    if x.dtype in (torch.bfloat16, torch.float16):
        # The interpreter multiplies the raw 16-bit patterns in its dot (Triton 3.x): upcast the tiles.
        upcast = INTERPRETED
        return x, a.to(x.dtype), dict(INPUT_PRECISION="ieee" if upcast else "tf32", DOT_IN_FP32=upcast)
    return x.float(), a.float(), dict(INPUT_PRECISION="ieee", DOT_IN_FP32=False)


def _block_d(d: int, largest: int) -> int:
    return max(16, min(largest, triton.next_power_of_2(d)))


def charfn_sums(x: torch.Tensor, a: torch.Tensor, knots: int, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos_sum, sin_sum (T, K, M) float64: sums over n of cos/sin(k dt (x @ a)[t, n, m]).

    x: (T, N, D) float32/bfloat16/float16; a: (D, M); knots: K >= 2; dt: knot spacing.
    """
    _check_device(x)
    x, a, dot = _operands(x, a)
    T, N, D = x.shape
    M = a.shape[1]
    block_n, block_m = _FWD["BLOCK_N"], _FWD["BLOCK_M"]
    m_blocks = triton.cdiv(M, block_m)
    row_tiles = triton.cdiv(N, block_n)
    # Enough programs to fill the GPU (~4 per SM) without shrinking each program's row range below a tile.
    target = 4 * (torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1)
    split = max(1, min(row_tiles, triton.cdiv(target, T * m_blocks)))
    rows_per_prog = triton.cdiv(row_tiles, split) * block_n
    split = triton.cdiv(N, rows_per_prog)
    part = torch.empty(T, split, 2, knots - 1, M, device=x.device, dtype=torch.float32)
    _sigreg_fwd_kernel[(m_blocks, split, T)](
        x, a, part, N, D, M, rows_per_prog, dt,
        x.stride(0), x.stride(1), x.stride(2), a.stride(0), a.stride(1),
        K=knots, BLOCK_K=max(2, triton.next_power_of_2(knots - 1)), BLOCK_N=block_n, BLOCK_M=block_m,
        BLOCK_D=_block_d(D, _FWD["BLOCK_D"]), num_warps=_FWD["num_warps"], **dot,
    )  # fmt: skip
    sums = part.sum(1, dtype=torch.float64)  # (T, 2, K - 1, M): fixed-order reduction over row ranges
    cos_sum = torch.cat([sums.new_full((T, 1, M), float(N)), sums[:, 0]], dim=1)
    sin_sum = torch.cat([sums.new_zeros((T, 1, M)), sums[:, 1]], dim=1)
    return cos_sum, sin_sum


def charfn_grad(x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, q: torch.Tensor, dt: float) -> torch.Tensor:
    """dZ (T, N, M) = sum_{k>=1} p[t, k, m] cos(k dt z) + q[t, k, m] sin(k dt z), z = x @ a.

    x: (T, N, D); a: (D, M); p, q: (T, K, M) (any float dtype; used in fp32). dZ is fp32 for fp32 x and
    the dtype of x otherwise (it feeds the dX GEMM in that dtype).
    """
    _check_device(x)
    x, a, dot = _operands(x, a)
    T, N, D = x.shape
    M = a.shape[1]
    knots = p.shape[1]
    p = p.to(torch.float32).contiguous()
    q = q.to(torch.float32).contiguous()
    dz = torch.empty(T, N, M, device=x.device, dtype=x.dtype)
    block_n, block_m = _BWD["BLOCK_N"], _BWD["BLOCK_M"]
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), T)
    _sigreg_bwd_kernel[grid](
        x, a, p, q, dz, N, D, M, dt,
        x.stride(0), x.stride(1), x.stride(2), a.stride(0), a.stride(1),
        K=knots, BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_D=_block_d(D, _BWD["BLOCK_D"]), num_warps=_BWD["num_warps"],
        **dot,
    )  # fmt: skip
    return dz


def dot_operand(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A as the kernels use it for inputs like x (rounded to bf16/fp16 for such inputs): for dX = dZ @ A^T."""
    return _operands(x, a)[1]
