"""`GradientSolver`: stable-worldmodel's `GradientSolver` (same signature and defaults, same outputs) on
lewm_fast.

The initial plan (warm start padded to the horizon) is repeated for `num_samples` samples, samples 1..
shifted by randn * var_scale (the public `init` parameter); then per chunk of `batch_size` environments
(all of them by default) `n_steps` steps of `optimizer_cls(**optimizer_kwargs)` (SGD, lr 1 by default)
on the summed cost, with optional gradient clipping and action noise; the plan is each environment's
lowest-cost sample. The model's `get_cost` must be differentiable in the candidates. The backends and
the model rules: lewm_fast/interop/solvers/base.py.

The two public layouts differ here. Release 0.1.1 picks each environment's sample by the costs of the last
step (evaluated before that step's update) and returns "cost": per chunk, the summed cost of every step.
The current source evaluates the final samples once more, picks by those costs and returns "costs": the
picked sample's final cost per environment.
"""

from __future__ import annotations

import torch

from lewm_fast.interop.solvers import inputs
from lewm_fast.interop.solvers.base import DropInSolver, resolve_model
from lewm_fast.planning.plan_result import PlanResult


class _Drawn:
    """An optimizer whose per-environment inputs are already drawn (the solver's `init` parameter)."""

    def __init__(self, optimizer, drawn: tuple):
        self._optimizer, self._drawn = optimizer, drawn

    def __getattr__(self, name):
        return getattr(self._optimizer, name)

    def to(self, device) -> _Drawn:
        return _Drawn(self._optimizer.to(device), self._drawn)

    def prepare(self, mean, std, generator):
        return self._drawn


class _PickByFinalCost:
    """The current source's choice: after a chunk's steps, its samples' costs once more (no gradient), and
    each environment's lowest-cost sample by those."""

    def __init__(self, optimizer):
        self._optimizer = optimizer

    def __getattr__(self, name):
        return getattr(self._optimizer, name)

    def to(self, device) -> _PickByFinalCost:
        return _PickByFinalCost(self._optimizer.to(device))

    def solve_chunk(self, inputs, cost_fn, generator, callback=None) -> PlanResult:
        out = self._optimizer.solve_chunk(inputs, cost_fn, generator, callback)
        with torch.no_grad():
            final = cost_fn(out.samples).detach()
        rows, best = torch.arange(final.shape[0], device=final.device), torch.argsort(final, dim=1)[:, 0]
        return PlanResult(out.samples[rows, best], None, final[rows, best], out.history, out.samples)


class GradientSolver(DropInSolver, torch.nn.Module):
    """Gradient planning with the public `Solver` protocol (an nn.Module, as the public solver).

    The public arguments (model, n_steps, batch_size, var_scale, num_samples, action_noise, device, seed,
    optimizer_cls, optimizer_kwargs, grad_clip, callbacks) plus backend / dtype / cuda_graph / cost= / layout as
    `CEMSolver`. solve(...) -> {"cost": [per chunk, the summed cost of every step], "actions": (E,
    horizon, A)} in release 0.1.1's layout, {"costs": [E floats], "actions"} in the current source's
    (the module docstring); plus "callbacks". After a solve `init` holds the optimised samples, as the public
    solver leaves it. Unlike the public solver, the model's parameters get no gradients (the samples'
    gradient is the same).
    """

    optimizer_name = "grad"
    public_params = ("n_steps", "num_samples", "var_scale", "action_noise", "optimizer_cls", "optimizer_kwargs",
                     "grad_clip")  # fmt: skip

    def __init__(
        self,
        model=None,
        n_steps: int | None = None,
        batch_size: int | None = None,
        var_scale: float = 1,
        num_samples: int = 1,
        action_noise: float = 0.0,
        device: str | torch.device = "cpu",
        seed: int = 1234,
        optimizer_cls: type[torch.optim.Optimizer] = torch.optim.SGD,
        optimizer_kwargs: dict | None = None,
        grad_clip: float | None = None,
        callbacks: list | None = None,
        *,
        cost=None,
        backend: str = "auto",
        dtype: torch.dtype | str = torch.float32,
        cuda_graph: bool = True,
        layout: str | None = None,
    ):
        torch.nn.Module.__init__(self)
        if n_steps is None:
            raise TypeError("n_steps: required (the number of gradient steps), got None")
        self.n_steps, self.num_samples, self.var_scale = n_steps, num_samples, var_scale
        self.action_noise = action_noise
        self.optimizer_cls = optimizer_cls
        self.optimizer_kwargs = optimizer_kwargs if optimizer_kwargs is not None else {"lr": 1.0}
        self.grad_clip = grad_clip
        self._setup(resolve_model(model, cost), batch_size=batch_size, device=device, seed=seed, callbacks=callbacks,
                    backend=backend, dtype=dtype, cuda_graph=cuda_graph, layout=layout)  # fmt: skip
        self._n_envs = self._action_dim = self._config = None

    def init_action(self, n_envs: int, actions: torch.Tensor | None = None) -> None:
        """The public initial samples (n_envs, num_samples, horizon, A), registered as the `init` parameter."""
        mean = inputs.pad_to_horizon(actions, n_envs, self.horizon, self.action_dim, self.dtype, self.device)
        (samples,) = self.optimizer().prepare(mean.to(torch.device(self.device)), None, self.torch_gen)
        if "init" in self._parameters and self.init.shape == samples.shape:
            with torch.no_grad():
                self.init.copy_(samples)
        else:
            self._parameters.pop("init", None)
            self.register_parameter("init", torch.nn.Parameter(samples))

    def solve(self, info_dict: dict, init_action: torch.Tensor | None = None) -> dict:
        """Plan for every environment of `info_dict` (the length of its first value)."""
        total, warm = self._start(info_dict, init_action)
        with torch.no_grad():
            self.init_action(total, warm)
        optimizer = _Drawn(self.optimizer(), (self.init.detach(),))
        if self.layout == "source":
            optimizer = _PickByFinalCost(optimizer)
        mean = self.init.detach()[:, 0]
        result = self._run(optimizer, info_dict, mean, torch.full_like(mean, float(self.var_scale)))
        with torch.no_grad():  # the public solver writes each chunk's optimised samples back into `init`
            self.init.copy_(result.samples.to(self.init.device, self.init.dtype))
        actions = result.actions.detach().cpu()
        if self.layout == "source":
            return self._with_callbacks({"costs": result.cost.detach().cpu().tolist(), "actions": actions})
        return self._with_callbacks({"cost": result.history, "actions": actions})
