"""`PredictiveSamplingSolver`: stable-worldmodel's `PredictiveSamplingSolver` (same signature and
defaults, same outputs) on lewm_fast.

One draw: candidates nominal + randn * noise_scale (the first = the nominal, so the plan is never worse
than the warm start); the plan is the lowest-cost candidate. As in the public solver the nominal is the
given `init_action` padded with zeros (no `get_action` warm start). The backends and the model rules:
lewm_fast/interop/solvers/base.py.
"""

from __future__ import annotations

import torch

from lewm_fast.interop.solvers import inputs
from lewm_fast.interop.solvers.base import DropInSolver, resolve_model


class PredictiveSamplingSolver(DropInSolver):
    """Predictive sampling with the public `Solver` protocol.

    The public arguments (model, batch_size, num_samples, noise_scale, device, seed) plus callbacks
    (called once, after the draw) and backend / dtype / cuda_graph / cost= / layout as `CEMSolver`.
    solve(...) -> {"costs": [E floats], "actions": (E, horizon, A)} (plus "callbacks").
    """

    optimizer_name = "ps"
    public_params = ("num_samples", "noise_scale")

    def __init__(
        self,
        model=None,
        batch_size: int = 1,
        num_samples: int = 300,
        noise_scale: float = 1.0,
        device: str | torch.device = "cpu",
        seed: int = 1234,
        callbacks: list | None = None,
        *,
        cost=None,
        backend: str = "auto",
        dtype: torch.dtype | str = torch.float32,
        cuda_graph: bool = True,
        layout: str | None = None,
    ):
        self.num_samples, self.noise_scale = num_samples, noise_scale
        self._setup(resolve_model(model, cost), batch_size=batch_size, device=device, seed=seed, callbacks=callbacks,
                    backend=backend, dtype=dtype, cuda_graph=cuda_graph, layout=layout)  # fmt: skip

    def init_nominal(self, n_envs: int, actions: torch.Tensor | None = None) -> torch.Tensor:
        """The public initial nominal: `actions` padded with zeros to the horizon (n_envs, horizon, A)."""
        return inputs.pad_to_horizon(actions, n_envs, self.horizon, self.action_dim, self.dtype, self.device)

    def solve(self, info_dict: dict, init_action: torch.Tensor | None = None) -> dict:
        """Plan for every environment of `info_dict` (the length of its first value)."""
        total = self._count(info_dict)
        init_action = inputs.check_init_action(init_action, total, self.horizon, self.action_dim)
        nominal = self.init_nominal(total, init_action).to(torch.device(self.device))
        result = self._run(self.optimizer(), info_dict, nominal, torch.full_like(nominal, float(self.noise_scale)))
        actions = result.actions.detach().to(nominal.dtype).cpu()  # written back into the nominal, as the public
        return self._with_callbacks({"costs": result.cost.detach().cpu().tolist(), "actions": actions})
