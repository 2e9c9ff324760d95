"""SIGReg, the Sketched Isotropic Gaussian Regulariser (DESIGN.md section 3).

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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from lewm_fast._checks import check_choice, check_positive_int

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
    weights[[0, -1]] = dt
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


def check_sigreg_inputs(proj: object, directions: object) -> None:
    if not isinstance(proj, torch.Tensor):
        raise TypeError(f"proj: expected a torch.Tensor of shape (T, B, D) or (B, D), got {type(proj).__name__}")
    if proj.ndim not in (2, 3):
        raise ValueError(f"proj: expected shape (T, B, D) or (B, D), got {tuple(proj.shape)}")
    if not proj.is_floating_point():
        raise TypeError(f"proj: expected a floating dtype (float32 or bfloat16), got {proj.dtype}")
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


# name -> function(proj, directions, t, phi, weights) -> scalar. Fused backends register here.
_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {"reference": sigreg_reference}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that `backend` means on `device` ('auto' = the best one available)."""
    check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        if backend not in _BACKENDS:
            raise ValueError(f"backend: '{backend}' is not available in this build (have {sorted(_BACKENDS)})")
        return backend
    preferred = "triton" if device.type == "cuda" else "cpp" if device.type == "cpu" else "reference"
    if preferred in _BACKENDS:
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


def sigreg(
    proj: torch.Tensor,
    directions: torch.Tensor,
    knots: int = 17,
    t_max: float = 3.0,
    backend: str = "auto",
) -> torch.Tensor:
    """SIGReg of proj (T, B, D) or (B, D) along explicit unit directions (D, M). Returns a scalar."""
    check_sigreg_inputs(proj, directions)
    t, phi, weights = knot_tables(knots, t_max, proj.device)
    return _BACKENDS[resolve_backend(backend, proj.device)](proj, directions, t, phi, weights)


class SIGReg(nn.Module):
    """SIGReg as a module: forward(proj (T, B, D) or (B, D)) -> scalar.

    Args:
        knots: K, number of knots on [0, t_max] (17). num_proj: M, directions per call (1024).
        t_max: last knot (3.0). backend: "auto" | "reference" | "triton" | "cpp".
        generator: draw directions from this generator instead of torch's global RNG.

    Buffers `t`, `phi`, `weights` have the public module's names and values.
    """

    def __init__(
        self,
        knots: int = 17,
        num_proj: int = 1024,
        t_max: float = 3.0,
        backend: str = "auto",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        self.num_proj = check_positive_int("num_proj", num_proj)
        self.knots, self.t_max, self.backend, self.generator = knots, t_max, backend, generator
        t, phi, weights = knot_tables(knots, t_max)
        self.register_buffer("t", t)
        self.register_buffer("phi", phi)
        self.register_buffer("weights", weights)

    def forward(self, proj: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
        if directions is None:
            if not isinstance(proj, torch.Tensor) or proj.ndim not in (2, 3):
                check_sigreg_inputs(proj, None)
            directions = draw_directions(proj.shape[-1], self.num_proj, proj.device, self.generator)
        check_sigreg_inputs(proj, directions)
        fn = _BACKENDS[resolve_backend(self.backend, proj.device)]
        return fn(proj, directions, self.t, self.phi, self.weights)

    def extra_repr(self) -> str:
        return f"knots={self.knots}, num_proj={self.num_proj}, t_max={self.t_max}, backend={self.backend!r}"
