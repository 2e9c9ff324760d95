"""What every optimizer shares: the per-chunk state of a sampling optimizer, the loop of one chunk
(candidates -> cost -> update, as the public solvers run it) and the argument checks.

The interface itself is described in `lewm_fast/planning/optimizers/__init__.py`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from lewm_fast.planning.plan_result import PlanResult

CostFn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[..., None]


@dataclass(frozen=True)
class PlanState:
    """The state of a sampling optimizer for a chunk of b environments (all tensors on the device).

    mean, std: (b, T, A) the distribution (PS: the nominal; its std is unused).
    cost: (b,) the cost the public solver reports for the last iteration (None before the first).
    elites: (b, K, T, A) the last iteration's elites, best first (iCEM carries them over and may return
        the best one; CEM and MPPI keep them for `result`-free inspection), or None.
    """

    mean: torch.Tensor
    std: torch.Tensor
    cost: torch.Tensor | None = None
    elites: torch.Tensor | None = None

    def replace(self, **changes) -> PlanState:
        return replace(self, **changes)


def check_costs(costs: object, b: int, s: int) -> torch.Tensor:
    """The cost callable's answer must be a (b, S) tensor, as the public solvers assert."""
    if not isinstance(costs, torch.Tensor):
        raise TypeError(f"cost: expected a torch.Tensor of shape ({b}, {s}), got {type(costs).__name__}")
    if costs.ndim != 2 or tuple(costs.shape) != (b, s):
        raise ValueError(f"cost: expected shape ({b}, {s}), got {tuple(costs.shape)}")
    return costs


class SamplingOptimizer:
    """Base of the sampling optimizers (CEM, iCEM, MPPI, predictive sampling).

    Subclasses are frozen dataclasses of the public parameters and define `candidates`, `update`
    and `result`; `fast_update` defaults to `update` (an engine may give a fused op set).
    """

    kind = "sampling"
    rank_based = True  # the new distribution depends on the costs only through their order (not MPPI's)
    public_batch_size: int | None = 1  # the public solvers' default batch_size

    @property
    def steps(self) -> int:
        """Iterations per chunk (the public `n_steps`; predictive sampling draws once)."""
        return self.n_steps

    @property
    def initial_std(self) -> float:
        """The std the distribution starts from (the public `var_scale`)."""
        return float(self.var_scale)

    def to(self, device: torch.device | str):
        """The same optimizer with its tensor parameters (iCEM's action box) on `device`: inside a captured
        solve a host-to-device copy is not allowed."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}  # fmt: skip
        return dataclasses.replace(self, **moved) if moved else self

    @property
    def selection_size(self) -> int:
        """k: the update selects the k lowest-cost candidates, in order (0: it selects none)."""
        raise NotImplementedError

    def init(self, mean: torch.Tensor, std: torch.Tensor) -> PlanState:
        """mean, std (b, T, A) -> the state before the first iteration."""
        return PlanState(mean, std)

    def candidates(self, state: PlanState, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor) -> tuple[PlanState, dict]:
        raise NotImplementedError

    def fast_update(self, state: PlanState, cand: torch.Tensor, costs: torch.Tensor, op_set) -> PlanState:
        """The update as a fast engine runs it (`op_set`: the engine's op set); the same state as `update`."""
        return self.update(state, cand, costs)[0]

    def result(self, state: PlanState) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(actions (b, T, A), std (b, T, A) or None, cost (b,)) after the last iteration."""
        return state.mean, state.std, state.cost

    def prepare(self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Per-environment inputs of every chunk, drawn before chunking (sampling: the distribution)."""
        return mean, std

    def check_action_dim(self, action_dim: int) -> None:
        """Refuse parameters that do not fit actions of width A = action_dim (the planner asks at construction)."""

    @torch.inference_mode()
    def solve_chunk(
        self, inputs, cost_fn: CostFn, generator: torch.Generator, callback: Callback | None = None
    ) -> PlanResult:
        """One chunk as the public solver runs it: `steps` x (candidates -> cost_fn -> update)."""
        mean, std = inputs
        state = self.init(mean, std)
        b, s = mean.shape[0], self.num_samples
        for step in range(self.steps):
            cand = self.candidates(state, generator)
            costs = check_costs(cost_fn(cand), b, s)
            state, info = self.update(state, cand, costs)
            if callback is not None:
                callback(step=step, candidates=cand, costs=costs, **info)
        actions, std, cost = self.result(state)
        return PlanResult(actions, std, cost)


# ---- argument checks (each error names the parameter) ----------------------------------------------


def check_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def check_float(name: str, value: object, low: float = 0.0, strict: bool = True, high: float | None = None) -> float:
    """A finite real number > low (>= low when strict is False), <= high when given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def check_action_box(low: object, high: object) -> None:
    """iCEM's action_low/high: both None, or 1-D floating tensors of one length, no NaN, low <= high (an
    infinite bound is no bound, as in an unbounded gymnasium Box)."""
    if (low is None) != (high is None):
        raise ValueError("action_low, action_high: expected both tensors or both None")
    if low is None:
        return
    for name, bound in (("action_low", low), ("action_high", high)):
        if not isinstance(bound, torch.Tensor) or bound.ndim != 1 or not bound.is_floating_point():
            got = (bound.dtype, tuple(bound.shape)) if isinstance(bound, torch.Tensor) else type(bound).__name__
            raise TypeError(f"{name}: expected a 1-D floating tensor of (action_block x action_dim,) bounds or None, "
                            f"got {got}")  # fmt: skip
        if bool(torch.isnan(bound).any()):
            raise ValueError(f"{name}: expected bounds without NaN, got {bound.tolist()}")
    if low.shape != high.shape:
        raise ValueError(f"action_high: expected {tuple(low.shape)} like action_low, got {tuple(high.shape)}")
    crossed = (low.detach().cpu() > high.detach().cpu()).nonzero()
    if crossed.numel():
        i = int(crossed[0])
        raise ValueError(f"action_low, action_high: expected action_low <= action_high, got {float(low[i])} > "
                         f"{float(high[i])} at index {i}")  # fmt: skip


def check_number_kwargs(name: str, kwargs: dict, nonnegative: tuple[str, ...] = ()) -> None:
    """Every number in `kwargs` (also in tuples, and one-element tensors) is finite; those named in
    `nonnegative` are >= 0. Errors name the entry: `optimizer_kwargs['lr']: ...`."""
    for key, value in kwargs.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                check_float(f"{name}[{key!r}]", v, low=0.0 if key in nonnegative else -math.inf, strict=False)


def check_topk(name: str, topk: object, num_samples: int, low: int = 2) -> int:
    check_int(name, topk, low)
    if topk > num_samples:
        raise ValueError(f"{name}: expected {low} <= {name} <= num_samples={num_samples}, got {topk}")
    return topk
