"""iCEM, the improved Cross-Entropy Method (Pinneri et al., CoRL 2020): stable-worldmodel 0.1.1's
`ICEMSolver` semantics, batched over b environments.

Per iteration: coloured noise (white noise (b, S, A, T) through an FFT over the horizon, scaled by
f^(-noise_beta / 2), back, normalised to unit std per sequence), cand = noise * std + mean,
cand[:, 0] = mean, cand[:, 1 : 1 + n] = the previous iteration's n = min(n_elite_keep, topk) best
elites, then clipped to the action box when bounds are given. Elites: the `topk` lowest costs; then
mean = alpha * mean + (1 - alpha) * elite mean, std = alpha * std + (1 - alpha) * elite std (unbiased).
The result is the mean (`return_mean`) or the last iteration's best candidate. The reported cost is the
last elites' mean cost (release 0.1.1), or with `best_cost` the returned best candidate's own cost (the
current source, where `return_mean=False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lewm_fast.planning import ops
from lewm_fast.planning.optimizers.base import (
    PlanState,
    SamplingOptimizer,
    check_action_box,
    check_float,
    check_int,
    check_topk,
)


def noise_scale(horizon: int, noise_beta: float, device, dtype) -> torch.Tensor:
    """(horizon // 2 + 1,) the amplitude per FFT frequency: f^(-beta/2), the zero frequency as the first."""
    freqs = torch.fft.rfftfreq(horizon, device=device).to(dtype)
    freqs[0] = 1.0
    scale = freqs.pow(-noise_beta / 2)
    scale[0] = scale[1]
    return scale


def coloured_noise(shape: tuple[int, ...], noise_beta: float, generator: torch.Generator, device, dtype):
    """(b, S, T, A) noise, coloured along T: drawn as (b, S, A, T) white noise, as the public solver does."""
    b, s, horizon, a = shape
    white = torch.randn((b, s, a, horizon), generator=generator, device=device, dtype=dtype)
    if horizon <= 1:
        return white.transpose(-1, -2)
    spectrum = torch.fft.rfft(white, dim=-1) * noise_scale(horizon, noise_beta, device, dtype)
    coloured = torch.fft.irfft(spectrum, n=horizon, dim=-1)
    std = coloured.std(dim=-1, keepdim=True).clamp(min=1e-8)
    return (coloured / std).transpose(-1, -2)


@dataclass(frozen=True)
class ICEM(SamplingOptimizer):
    """The public ICEMSolver's parameters and defaults. action_low, action_high: (A,) tensors (the action
    box tiled over the action block, as the public `configure` builds them) or None (no clipping)."""

    num_samples: int = 300
    var_scale: float = 1.0
    n_steps: int = 30
    topk: int = 30
    noise_beta: float = 2.0
    alpha: float = 0.1
    n_elite_keep: int = 5
    return_mean: bool = True
    action_low: torch.Tensor | None = None
    action_high: torch.Tensor | None = None
    best_cost: bool = field(default=False, metadata={"public": False})

    name = "icem"
    public_name = "ICEMSolver"

    def __post_init__(self):
        check_int("num_samples", self.num_samples)
        check_float("var_scale", self.var_scale)
        check_int("n_steps", self.n_steps)
        check_topk("topk", self.topk, self.num_samples)
        check_float("noise_beta", self.noise_beta, low=float("-inf"))
        check_float("alpha", self.alpha, strict=False, high=1.0)
        check_int("n_elite_keep", self.n_elite_keep, low=0)
        if min(self.n_elite_keep, self.topk) > self.num_samples - 1:
            raise ValueError(f"n_elite_keep: expected at most num_samples - 1 = {self.num_samples - 1} elites "
                             f"carried over, got {self.n_elite_keep}")  # fmt: skip
        for flag in ("return_mean", "best_cost"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag}: expected a bool, got {type(getattr(self, flag)).__name__}")
        check_action_box(self.action_low, self.action_high)

    def check_action_dim(self, action_dim: int) -> None:
        """The action box has one bound per entry of an action block (frameskip x action_dim)."""
        if self.action_low is not None and self.action_low.shape[0] != action_dim:
            raise ValueError(f"action_low: expected {action_dim} bounds (frameskip x action_dim, one action block), "
                             f"got {self.action_low.shape[0]}")  # fmt: skip

    @property
    def selection_size(self) -> int:
        """The update depends on the costs only through the ranks of the `topk` lowest (the kept elites in order)."""
        return self.topk

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        """(b, S, T, A) candidates: coloured noise, the mean, the carried elites, clipped to the box."""
        mean, std = state.mean, state.std
        shape = (mean.shape[0], self.num_samples, *mean.shape[1:])
        noise = coloured_noise(shape, self.noise_beta, generator, mean.device, mean.dtype)
        cand = noise * std.unsqueeze(1) + mean.unsqueeze(1)
        cand[:, 0] = mean
        if state.elites is not None:
            n = min(self.n_elite_keep, state.elites.shape[1])
            cand[:, 1 : 1 + n] = state.elites[:, :n]
        if self.action_low is not None:
            cand = cand.clamp(self.action_low.to(cand.device, cand.dtype), self.action_high.to(cand.device, cand.dtype))
        return cand

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        """Elites, then the momentum update; also the public callback's keyword arguments."""
        new = ops.elites(costs, cand, self.topk, self.alpha, state.mean, state.std)
        info = dict(topk_vals=new.costs, topk_inds=new.indices, topk_candidates=new.candidates, mean=new.mean,
                    var=new.std, prev_mean=state.mean, prev_var=state.std, action_low=self.action_low,
                    action_high=self.action_high)  # fmt: skip
        cost = new.costs[:, 0] if self.best_cost else new.costs.mean(dim=1)  # the values are lowest first
        return PlanState(new.mean, new.std, cost, new.candidates), info

    def fast_update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor, op_set) -> PlanState:
        """One fused op (top-k, elite statistics and momentum); only the elites still needed are gathered."""
        mean, std, cost, idx = op_set.elite_update(costs, cand, self.topk, alpha=self.alpha, prev_mean=state.mean,
                                                   prev_std=state.std, return_indices=True)  # fmt: skip
        keep = max(min(self.n_elite_keep, self.topk), 0 if self.return_mean else 1)
        elites = None
        if keep:
            flat = cand.flatten(2)
            rows = torch.gather(flat, 1, idx[:, :keep, None].expand(-1, -1, flat.shape[-1]))
            elites = rows.view(cand.shape[0], keep, *cand.shape[2:])
        if self.best_cost:
            cost = torch.gather(costs, 1, idx[:, :1]).squeeze(1)
        return PlanState(mean, std, cost, elites)

    def result(self, state: PlanState):
        actions = state.mean if self.return_mean else state.elites[:, 0]
        return actions, state.std, state.cost
