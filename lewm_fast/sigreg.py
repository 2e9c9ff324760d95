"""SIGReg, the Sketched Isotropic Gaussian Regulariser (docs/numerics.md: how each backend is checked).

For embeddings `proj` (T, B, D) (or (B, D), treated as T = 1) and unit directions A (D, M):

    Z = proj @ A                                   (T, B, M)
    C_tmk = mean_b cos(t_k Z_tbm),  S_tmk = mean_b sin(t_k Z_tbm)
    stat_tm = B * sum_k w_k [(C_tmk - phi_k)^2 + S_tmk^2]
    SIGReg = mean_{t,m} stat_tm

with knots t_k = linspace(0, t_max, K), phi_k = exp(-t_k^2 / 2) and trapezoid weights
w_k = dt * (1, 2, ..., 2, 1) * phi_k. By default the directions are drawn from torch's global RNG on
every call, exactly like the public code, so `torch.manual_seed(s)` reproduces its value.

`sigreg_reference` is the specification (the public formula, written plainly); fused backends plug
into `sigreg()` through `_BACKENDS`.

Fused backends (`cpp` on CPU, `triton` on CUDA) never build the (T, B, M, K) tensors: a kernel returns the
(T, K, M) sums of cos/sin(t_k Z) over the batch, the value is formed from them, and the backward
recomputes cos/sin(t_k Z) (one sincos per (b, m), the other knots by angle addition) to form

    dZ = 2 / (T M) * sum_k w_k t_k [S_k cos(t_k Z) - (C_k - phi_k) sin(t_k Z)],   dproj = dZ @ A^T

(the derivative of stat_tm above); see `_SIGRegFunction`.

Several processes. When torch.distributed is initialised with more than one process (or
`distributed=True`), SIGReg is the statistic of the GLOBAL batch: the module draws its directions on every
rank as usual (so the global RNG advances identically) and uses rank 0's (a broadcast); the (T, K, M)
sums and the batch size are all-reduced inside autograd, so every rank gets the value one process would
get on the concatenated batch. Explicit directions are used as given: pass the same ones on every rank.

Gradient convention (DDP). The backward of that all-reduce sums the incoming gradient over ranks, as
autograd of an all-reduce must. With the usual identical loss on every rank, each rank's gradient is
therefore W * dL/dproj_r (W = world size): the rank's exact share of dL/dtheta times W. DDP averages
parameter gradients (sum over ranks / W), which then gives exactly dL/dtheta of the global SIGReg, and
a per-rank mean loss next to it (e.g. the prediction MSE) keeps its usual DDP meaning. Without DDP,
sum (do not average) gradients over ranks, or divide by W. Every rank must call forward and backward.

Bad input. Empty input (T, B or D = 0) and M = 0 raise a ValueError (the statistic of nothing is NaN, and
D = 0 would give a constant). NaN/Inf in proj or explicit directions raise a ValueError on the CPU in one
process; on CUDA and across processes they are not checked (a check costs a host sync per call, and a
rank refusing alone would leave the others waiting): the value is then non-finite, which the trainer
stops on with a message (`check_finite_inputs`).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from lewm_fast._checks import check_choice, check_positive_int
from lewm_fast._memory import check_fits

BACKENDS = ("auto", "reference", "triton", "cpp")


def knot_tables(knots: int = 17, t_max: float = 3.0, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, phi, weights), each (K,) float32: knots, Gaussian characteristic function, trapezoid weights."""
    check_positive_int("knots", knots)
    if knots < 2:
        raise ValueError(f"knots: expected at least 2, got {knots}")
    if not t_max > 0:
        raise ValueError(f"t_max: expected a positive float, got {t_max}")
    t = torch.linspace(0, t_max, knots, dtype=torch.float32, device=device)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=torch.float32, device=device)
    weights[0] = weights[-1] = dt  # scalar fills: no index tensor to copy to a GPU (a host sync)
    phi = torch.exp(-t.square() / 2.0)
    return t, phi, weights * phi


def draw_directions(dim: int, num_proj: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random unit directions (dim, num_proj) float32, drawn as the public code draws them.

    Without a generator this uses torch's global RNG (of `device`), like the public SIGReg.
    """
    if generator is not None:
        a = torch.randn(dim, num_proj, generator=generator, device=generator.device)
        a = a.to(device) if device is not None else a
    else:
        a = torch.randn(dim, num_proj, device=device)
    return a.div_(a.norm(p=2, dim=0))


def sigreg_reference(
    proj: torch.Tensor, directions: torch.Tensor, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The public SIGReg formula. proj (T, B, D) or (B, D); directions (D, M); t, phi, weights (K,).

    Computed in float32 (bf16 inputs are upcast). Returns a scalar.
    """
    x_t = (proj.float() @ directions.float()).unsqueeze(-1) * t
    err = (x_t.cos().mean(-3) - phi).square() + x_t.sin().mean(-3).square()
    statistic = (err @ weights) * proj.size(-2)
    return statistic.mean()


def check_sigreg_inputs(proj: object, directions: object, directions_drawn: bool = False) -> None:
    """Types, shapes and devices of SIGReg's inputs; `directions_drawn`: the module draws them (not checked)."""
    if not isinstance(proj, torch.Tensor):
        raise TypeError(f"proj: expected a torch.Tensor of shape (T, B, D) or (B, D), got {type(proj).__name__}")
    if proj.ndim not in (2, 3):
        raise ValueError(f"proj: expected shape (T, B, D) or (B, D), got {tuple(proj.shape)}")
    if not proj.is_floating_point():
        raise TypeError(f"proj: expected a floating dtype (float32 or bfloat16), got {proj.dtype}")
    if proj.numel() == 0:  # a statistic of nothing: NaN, or a constant passed off as a value (D = 0)
        raise ValueError(f"proj: expected T, B and D >= 1, got shape {tuple(proj.shape)}")
    if directions_drawn:
        return
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"directions: expected a torch.Tensor of shape (D, M), got {type(directions).__name__}")
    if directions.ndim != 2 or directions.shape[0] != proj.shape[-1]:
        raise ValueError(
            f"directions: expected shape (D={proj.shape[-1]}, M) to match proj, got {tuple(directions.shape)}"
        )
    if not directions.is_floating_point():
        raise TypeError(f"directions: expected a floating dtype, got {directions.dtype}")
    if directions.device != proj.device:
        raise ValueError(f"directions: expected device {proj.device} like proj, got {directions.device}")
    if directions.shape[1] == 0:
        raise ValueError(f"directions: expected M >= 1 directions, got shape {tuple(directions.shape)}")


def check_sigreg_memory(name: str, proj: torch.Tensor, num_proj: int) -> None:
    """Refuse (naming `name`) a call whose directions (D, M) and projections (T, B, M) alone cannot fit on
    proj's device, before either is allocated (lewm_fast/_memory.py)."""
    t, b, d = (1, *proj.shape) if proj.ndim == 2 else proj.shape
    need = (d * num_proj + t * b * num_proj) * 4
    check_fits(name, need, proj.device, f"SIGReg of proj {tuple(proj.shape)} along {num_proj} directions",
               "use fewer directions")  # fmt: skip


def check_finite_inputs(proj: torch.Tensor, directions: torch.Tensor | None, group) -> None:
    """Refuse NaN/Inf in proj (and explicit directions) where the check is free of consequences: on the
    CPU (one fused pass, microseconds against SIGReg's milliseconds) and in one process. On CUDA the
    check would cost a host sync per call, and across processes one rank refusing alone would leave the
    others waiting in the all-reduce; there non-finite input gives a non-finite value (the trainer stops
    on it), as documented in the module docstring."""
    if proj.device.type != "cpu" or group is not None:
        return
    for name, x in (("proj", proj), ("directions", directions)):
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or Inf")


# ------------------------------------------------------------------------------------------ fused path
# A backend's kernels ("ops"): two static methods on (T, N, D) inputs, everything else is shared.
#   sums(x, a, t, dt) -> (cos_sum, sin_sum (T, K, M) float64, saved): sums over n of cos/sin(t_k (x @ a));
#       `saved` (a tensor or None) is kept for the backward.
#   grad(x, a, saved, p, q, t, dt) -> dZ (T, N, M) = sum_k p_k cos(t_k z) + q_k sin(t_k z), p, q (T, K, M).
#   gemm_operand(x, a) -> A as the dX = dZ @ A^T GEMM takes it.


class _TorchOps:
    """Plain PyTorch (materialises (T, N, M, K)): the reference's kernels, for several processes."""

    @staticmethod
    def sums(x, a, t, dt):
        z = x.float() @ a.float()
        arg = z.unsqueeze(-1) * t  # (T, N, M, K), the public formula's x_t
        cos_sum = arg.cos().sum(1).transpose(1, 2).double()
        return cos_sum, arg.sin().sum(1).transpose(1, 2).double(), z

    @staticmethod
    def grad(x, a, z, p, q, t, dt):
        arg = z.unsqueeze(-1) * t
        return (arg.cos() * p.transpose(1, 2).unsqueeze(1) + arg.sin() * q.transpose(1, 2).unsqueeze(1)).sum(-1).float()

    @staticmethod
    def gemm_operand(x, a):
        return a.float()


class _CppOps:
    """C++ kernels (csrc/sigreg_cpu.cpp) between two torch GEMMs; Z (T, N, M) fp32 is kept for the backward.

    Keeping Z (4 T N M bytes, 2 MiB at the training size) instead of recomputing it saves the third GEMM,
    the largest single cost left on a CPU.
    """

    @staticmethod
    def sums(x, a, t, dt):
        z = (x.float() @ a.float()).contiguous()
        T, _, M = z.shape
        cos_sum = torch.empty(T, t.numel(), M, dtype=torch.float64)
        sin_sum = torch.empty_like(cos_sum)
        _cpp().charfn_sums(z.numpy(), t.numel(), dt, cos_sum.numpy(), sin_sum.numpy(), torch.get_num_threads())
        return cos_sum, sin_sum, z

    @staticmethod
    def grad(x, a, z, p, q, t, dt):
        dz = torch.empty_like(z)
        p, q = p.contiguous(), q.contiguous()
        _cpp().charfn_grad(z.numpy(), p.numpy(), q.numpy(), dt, dz.numpy(), torch.get_num_threads())
        return dz

    @staticmethod
    def gemm_operand(x, a):
        return a.float()


class _TritonOps:
    """Triton kernels (lewm_fast/kernels/sigreg.py): Z is never stored; the backward recomputes it."""

    @staticmethod
    def sums(x, a, t, dt):
        cos_sum, sin_sum = _triton().charfn_sums(x, a, t.numel(), dt)
        return cos_sum, sin_sum, None

    @staticmethod
    def grad(x, a, saved, p, q, t, dt):
        return _triton().charfn_grad(x, a, p, q, dt)

    @staticmethod
    def gemm_operand(x, a):
        return _triton().dot_operand(x, a)


class _SIGRegFunction(torch.autograd.Function):
    """SIGReg from a backend's (T, K, M) sums, with the analytic backward; all-reduces across `group`.

    forward(proj (T, B, D) or (B, D), directions (D, M), t, phi, weights (K,), ops, dt, group) -> scalar fp32.
    The value is formed in float64 from the sums. See the module docstring for the gradient convention
    across processes (the backward all-reduces the incoming gradient, the adjoint of the forward sum).
    """

    @staticmethod
    def forward(ctx, proj, directions, t, phi, weights, ops, dt, group):
        x = proj if proj.ndim == 3 else proj.unsqueeze(0)
        T, N, _ = x.shape
        M = directions.shape[1]
        cos_sum, sin_sum, saved = ops.sums(x, directions, t, dt)
        n: float | torch.Tensor = float(N)
        if group is not None:  # the global batch: sum the sums and the batch sizes (no host sync)
            count = torch.full((1,), float(N), dtype=torch.float64, device=cos_sum.device)
            flat = torch.cat([cos_sum.flatten(), sin_sum.flatten(), count])
            dist.all_reduce(flat, group=group)
            cos_sum, sin_sum, n = flat[:-1].view(2, *cos_sum.shape).unbind(0) + (flat[-1],)
        # With C = cos_sum / n, S = sin_sum / n and u = cos_sum - n phi = n (C - phi):
        # value = mean_{t,m} n sum_k w_k [(C - phi)^2 + S^2] = sum_k w_k sum_{t,m} (u^2 + sin_sum^2) / (n T M).
        u = cos_sum - n * phi.double()[:, None]
        per_knot = (torch.linalg.vecdot(u, u) + torch.linalg.vecdot(sin_sum, sin_sum)).sum(0)  # (K,)
        value = (per_knot @ weights.double()) / (n * T * M)
        ctx.save_for_backward(proj, directions, saved, u, sin_sum, t, weights)
        ctx.ops, ctx.dt, ctx.group, ctx.n, ctx.tm = ops, dt, group, n, T * M
        return value.float()

    @staticmethod
    def backward(ctx, grad_value):
        with torch.autocast(grad_value.device.type, enabled=False):
            return _SIGRegFunction._backward(ctx, grad_value)

    @staticmethod
    def _backward(ctx, grad_value):
        proj, directions, saved, u, sin_sum, t, weights = ctx.saved_tensors
        x = proj if proj.ndim == 3 else proj.unsqueeze(0)
        g = grad_value.double()
        if ctx.group is not None:  # adjoint of the forward all-reduce: sum the upstream gradients
            g = g.clone()
            dist.all_reduce(g, group=ctx.group)
        # dValue/dcos_sum = 2 w (C - phi) / (T M) = 2 w u / (n T M), dValue/dsin_sum = 2 w sin_sum / (n T M);
        # d cos(t z)/dz = -t sin(t z), d sin(t z)/dz = t cos(t z).
        tw = (g * 2.0 / (ctx.n * ctx.tm)) * (t.double() * weights.double())[:, None]  # (K, 1)
        p, q = tw * sin_sum, -tw * u  # coefficients of cos(t_k z) and of sin(t_k z), (T, K, M)
        dz = ctx.ops.grad(x, directions, saved, p, q, t, ctx.dt)
        grad_proj = grad_directions = None
        if ctx.needs_input_grad[0]:
            a = ctx.ops.gemm_operand(x, directions)
            grad_proj = (dz.reshape(-1, a.shape[1]) @ a.T).view(proj.shape).to(proj.dtype)
        if ctx.needs_input_grad[1]:
            d, m = directions.shape
            grad_directions = (x.reshape(-1, d).float().T @ dz.reshape(-1, m).float()).to(directions.dtype)
        return grad_proj, grad_directions, None, None, None, None, None, None


def _cpp():
    from lewm_fast import _ext

    return _ext.load()


def _triton():
    from lewm_fast.kernels import sigreg as kernels

    return kernels


def _reference_backend(proj, directions, t, phi, weights, *, dt: float, group=None) -> torch.Tensor:
    if group is None:
        return sigreg_reference(proj, directions, t, phi, weights)
    return _SIGRegFunction.apply(proj, directions, t, phi, weights, _TorchOps, dt, group)


def _fused_backend(ops) -> Callable[..., torch.Tensor]:
    def run(proj, directions, t, phi, weights, *, dt: float, group=None) -> torch.Tensor:
        # Under autocast the GEMMs inside would drop to bf16; the fused backends take bf16 inputs
        # themselves and accumulate in fp32, so autocast is off inside (its backward too, below).
        with torch.autocast(proj.device.type, enabled=False):
            return _SIGRegFunction.apply(proj, directions, t, phi, weights, ops, dt, group)

    return run


# name -> function(proj, directions, t, phi, weights, *, dt, group) -> scalar. `cpp` is registered always
# (its availability is settled on first use, which may build the extension); `triton` when it imports.
_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": _reference_backend,
    "cpp": _fused_backend(_CppOps),
}
if importlib.util.find_spec("triton") is not None:
    _BACKENDS["triton"] = _fused_backend(_TritonOps)


def _unavailable(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` (None if it can)."""
    if backend == "cpp":
        if device.type != "cpu":
            return f"'cpp' runs on CPU tensors, got {device.type}"
        if _cpp() is None:
            return "'cpp' is unavailable: the C++ extension lewm_fast._C could not be loaded or built"
    if backend == "triton" and device.type != "cuda" and not _triton().INTERPRETED:
        return f"'triton' runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1 set before import), got {device.type}"
    return None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on `device` here (may build the C++ extension on first call)."""
    device = torch.device(device)
    return [name for name in _BACKENDS if _unavailable(name, device) is None]


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that `backend` means on `device` ('auto' = the best one available)."""
    check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        if backend not in _BACKENDS:
            raise ValueError(f"backend: '{backend}' is not available in this build (have {sorted(_BACKENDS)})")
        why = _unavailable(backend, device)
        if why is not None:
            raise ValueError(f"backend: {why}")
        return backend
    preferred = "triton" if device.type == "cuda" else "cpp" if device.type == "cpu" else "reference"
    if preferred in _BACKENDS and _unavailable(preferred, device) is None:
        return preferred
    if preferred not in _warned_fallback:
        _warned_fallback.add(preferred)
        warnings.warn(
            f"lewm_fast.SIGReg: backend 'auto' wanted '{preferred}' on {device.type}, which is "
            "unavailable; using the slower 'reference' backend",
            stacklevel=3,
        )
    return "reference"


_warned_fallback: set[str] = set()


def process_group(distributed: bool | None = None, group=None):
    """The process group SIGReg reduces over, or None for a one-process statistic.

    distributed: None = when torch.distributed is initialised with more than one process; False = never;
    True = always (an error if torch.distributed is not initialised). group: None = the default group.
    """
    if distributed is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if distributed:
            raise ValueError("distributed: True needs torch.distributed to be initialised (init_process_group)")
        return None
    group = group if group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


@functools.lru_cache(maxsize=16)
def _cached_knot_tables(knots: int, t_max: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """knot_tables for the functional API, made once per (K, t_max, device): no small launches per call."""
    return knot_tables(knots, t_max, device)


def sigreg(
    proj: torch.Tensor,
    directions: torch.Tensor,
    knots: int = 17,
    t_max: float = 3.0,
    backend: str = "auto",
    distributed: bool | None = None,
    group=None,
) -> torch.Tensor:
    """SIGReg of proj (T, B, D) or (B, D) along explicit unit directions (D, M). Returns a scalar.

    Across processes (see the module docstring) the statistic is the global batch's; `directions` must
    then be the same on every rank (they are used as given).
    """
    check_sigreg_inputs(proj, directions)
    check_sigreg_memory("directions", proj, directions.shape[1])  # before the finite-value scan below
    check_positive_int("knots", knots)  # before the cache, which needs hashable arguments
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)):
        raise ValueError(f"t_max: expected a positive float, got {t_max!r}")
    t, phi, weights = _cached_knot_tables(knots, float(t_max), proj.device)
    run = _BACKENDS[resolve_backend(backend, proj.device)]
    group = process_group(distributed, group)
    check_finite_inputs(proj, directions, group)
    return run(proj, directions, t, phi, weights, dt=t_max / (knots - 1), group=group)


class SIGReg(nn.Module):
    """SIGReg as a module: forward(proj (T, B, D) or (B, D)) -> scalar.

    Args:
        knots: K, number of knots on [0, t_max] (17). num_proj: M, directions per call (1024).
        t_max: last knot (3.0). backend: "auto" | "reference" | "triton" | "cpp".
        generator: draw directions from this generator instead of torch's global RNG.
        distributed: None (default) = the global-batch statistic whenever torch.distributed is initialised
            with more than one process; False = this process's batch only; True = always global.
        group: the process group (None = the default group).

    Buffers `t`, `phi`, `weights` have the public module's names and values. Across processes the drawn
    directions are rank 0's (every rank still draws, so RNG states stay in step) and gradients follow the
    DDP convention of the module docstring.
    """

    def __init__(
        self,
        knots: int = 17,
        num_proj: int = 1024,
        t_max: float = 3.0,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        distributed: bool | None = None,
        group=None,
    ):
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        self.num_proj = check_positive_int("num_proj", num_proj)
        self.knots, self.t_max, self.backend, self.generator = knots, t_max, backend, generator
        self.distributed, self.group = distributed, group
        t, phi, weights = knot_tables(knots, t_max)
        # Any call holds at least the directions, their projections and two (M, K) tables.
        check_fits("num_proj", num_proj * (2 + 2 * knots) * 4, "cpu", f"SIGReg with {num_proj} directions",
                   "use fewer directions")  # fmt: skip
        self.register_buffer("t", t)
        self.register_buffer("phi", phi)
        self.register_buffer("weights", weights)

    def forward(self, proj: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
        group = process_group(self.distributed, self.group)
        check_sigreg_inputs(proj, directions, directions_drawn=directions is None)
        check_sigreg_memory("num_proj" if directions is None else "directions", proj,
                            self.num_proj if directions is None else directions.shape[1])  # fmt: skip
        check_finite_inputs(proj, directions, group)
        if directions is None:
            directions = draw_directions(proj.shape[-1], self.num_proj, proj.device, self.generator)
            if group is not None:
                dist.broadcast(directions, src=dist.get_global_rank(group, 0), group=group)
        run = _BACKENDS[resolve_backend(self.backend, proj.device)]
        return run(proj, directions, self.t, self.phi, self.weights, dt=self.t_max / (self.knots - 1), group=group)

    def extra_repr(self) -> str:
        return f"knots={self.knots}, num_proj={self.num_proj}, t_max={self.t_max}, backend={self.backend!r}"
