"""Gradient planning: stable-worldmodel 0.1.1's `GradientSolver` semantics, batched over b environments.

Initialisation (all environments, before chunking): every environment's initial plan repeated for
`num_samples` samples, samples 1.. shifted by randn * var_scale (sample 0 is the plan itself). Per chunk:
the samples are the parameters of a fresh `optimizer_cls(**optimizer_kwargs)` (SGD with lr 1 by
default); `n_steps` times: costs = cost(params) (b, S); costs.sum().backward(); clip the gradient norm
to `grad_clip` (over the chunk's parameters) when given; step; zero the gradients; add
randn * action_noise when > 0. The result per environment is the sample whose cost was lowest at the
last evaluation (before the last step), taken after that step, as the public solver returns it.
Like the public solver, nothing clips the actions to the action box. Unlike it, the model's parameters
get no gradients (the samples' gradient is taken with `torch.autograd.grad`: the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lewm_fast.planning.optimizers.base import check_costs, check_float, check_int, check_number_kwargs
from lewm_fast.planning.plan_result import PlanResult


def _sgd() -> type:
    return torch.optim.SGD


@dataclass(frozen=True)
class GradientDescent:
    """The public GradientSolver's parameters and defaults (n_steps has none there: 30 as in its
    planning config). optimizer_kwargs None means {"lr": 1.0}."""

    n_steps: int = 30
    num_samples: int = 1
    var_scale: float = 1.0
    action_noise: float = 0.0
    optimizer_cls: type = field(default_factory=_sgd)
    optimizer_kwargs: dict | None = None
    grad_clip: float | None = None

    name = "grad"
    public_name = "GradientSolver"
    kind = "gradient"
    public_batch_size = None  # the public GradientSolver's default: every environment in one chunk

    def __post_init__(self):
        check_int("n_steps", self.n_steps)
        check_int("num_samples", self.num_samples)
        check_float("var_scale", self.var_scale, strict=False)
        check_float("action_noise", self.action_noise, strict=False)
        if not (isinstance(self.optimizer_cls, type) and issubclass(self.optimizer_cls, torch.optim.Optimizer)):
            raise TypeError(f"optimizer_cls: expected a torch.optim.Optimizer subclass, got {self.optimizer_cls!r}")
        if self.optimizer_kwargs is not None and not isinstance(self.optimizer_kwargs, dict):
            raise TypeError(f"optimizer_kwargs: expected a dict or None, got {type(self.optimizer_kwargs).__name__}")
        # torch's optimizers refuse lr < 0 but not NaN, which plans NaN without a word
        check_number_kwargs("optimizer_kwargs", self.optimizer_kwargs or {}, nonnegative=("lr", "weight_decay"))
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip)

    @property
    def steps(self) -> int:
        return self.n_steps

    def check_action_dim(self, action_dim: int) -> None:
        """Nothing here depends on the action width."""

    def to(self, device: torch.device | str) -> GradientDescent:
        return self  # no tensor parameters

    @property
    def initial_std(self) -> float:
        return float(self.var_scale)

    @property
    def kwargs(self) -> dict:
        return dict(self.optimizer_kwargs) if self.optimizer_kwargs is not None else {"lr": 1.0}

    @torch.no_grad()
    def prepare(self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor]:
        """mean (E, T, A) -> the initial samples (E, S, T, A), drawn for every environment at once."""
        actions = mean.unsqueeze(1).repeat_interleave(self.num_samples, dim=1)
        actions[:, 1:] += (torch.randn(actions[:, 1:].shape, generator=generator, device=actions.device,
                                       dtype=actions.dtype) * self.var_scale)  # fmt: skip
        return (actions,)

    def solve_chunk(self, inputs, cost_fn, generator: torch.Generator, callback=None) -> PlanResult:
        """One chunk: n_steps optimizer steps on its samples (b, S, T, A); cost_fn must be differentiable."""
        (init,) = inputs
        b = init.shape[0]
        params = init.clone().detach()
        params.requires_grad = True
        optim = self.optimizer_cls([params], **self.kwargs)
        history = []
        with torch.enable_grad():
            for step in range(self.n_steps):
                costs = check_costs(cost_fn(params), b, self.num_samples)
                if not costs.requires_grad:
                    raise ValueError(
                        "cost: expected costs that depend on the candidates through autograd (the gradient "
                        "solver differentiates them); got a tensor without a graph"
                    )
                cost = costs.sum()
                # The samples' gradient only: the public `cost.backward()` also fills the model's .grad
                (params.grad,) = torch.autograd.grad(cost, params)
                if callback is not None:
                    callback(step=step, params=params, cost=cost, costs=costs)
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                optim.step()
                optim.zero_grad(set_to_none=True)
                if self.action_noise > 0:
                    noise = torch.randn(params.shape, generator=generator, device=params.device)
                    params.data += noise * self.action_noise
                history.append(cost.detach())
        rows, best = torch.arange(b, device=params.device), torch.argsort(costs.detach(), dim=1)[:, 0]
        samples = params.detach()
        return PlanResult(samples[rows, best], None, costs.detach()[rows, best], [history], samples)
