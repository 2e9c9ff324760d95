"""`ICEMSolver`: stable-worldmodel's `ICEMSolver` (same signature and defaults, same outputs) on lewm_fast.

Per iteration: coloured noise (exponent `noise_beta`) * std + mean, the first candidate = the mean, the
next `n_elite_keep` = the previous iteration's best elites, all clipped to the action box; then a
momentum (`alpha`) update towards the elites' mean and std. `return_mean=False` returns the best
candidate of the last iteration; its reported cost is the last elites' mean in release 0.1.1's layout, the
returned candidate's own in the current source's. The backends and the model rules: lewm_fast/interop/solvers/base.py.
"""

from __future__ import annotations

import dataclasses

import torch

from lewm_fast.interop.solvers.base import DropInSolver, resolve_model


class ICEMSolver(DropInSolver):
    """Improved Cross-Entropy Method with the public `Solver` protocol.

    The public arguments (model, batch_size, num_samples, var_scale, n_steps, topk, noise_beta, alpha,
    n_elite_keep, return_mean, device, seed, callbacks) plus backend / dtype / cuda_graph / cost= / layout as
    `CEMSolver`.
    """

    optimizer_name = "icem"
    public_params = ("num_samples", "var_scale", "n_steps", "topk", "noise_beta", "alpha", "n_elite_keep",
                     "return_mean")  # fmt: skip

    def __init__(
        self,
        model=None,
        batch_size: int = 1,
        num_samples: int = 300,
        var_scale: float = 1,
        n_steps: int = 30,
        topk: int = 30,
        noise_beta: float = 2.0,
        alpha: float = 0.1,
        n_elite_keep: int = 5,
        return_mean: bool = True,
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
        self.num_samples, self.var_scale, self.n_steps, self.topk = num_samples, var_scale, n_steps, topk
        self.noise_beta, self.alpha, self.n_elite_keep, self.return_mean = noise_beta, alpha, n_elite_keep, return_mean
        self._action_low = self._action_high = None
        self._setup(resolve_model(model, cost), batch_size=batch_size, device=device, seed=seed, callbacks=callbacks,
                    backend=backend, dtype=dtype, cuda_graph=cuda_graph, layout=layout)  # fmt: skip

    def configure(self, *, action_space, n_envs: int, config) -> None:
        """As the public solver: a Box space's bounds, tiled over the action block, clip the candidates."""
        super().configure(action_space=action_space, n_envs=n_envs, config=config)
        self._action_low = self._action_high = None
        if hasattr(action_space, "low") and hasattr(action_space, "high") and action_space.shape:
            tile = config.action_block
            kw = dict(device=self.device, dtype=self.dtype)
            self._action_low = torch.tensor(action_space.low[0], **kw).repeat(tile)
            self._action_high = torch.tensor(action_space.high[0], **kw).repeat(tile)

    def optimizer(self):
        """The current source reports the returned best candidate's own cost where `return_mean=False`."""
        opt = super().optimizer()
        return dataclasses.replace(opt, best_cost=True) if self.layout == "source" and not self.return_mean else opt

    def optimizer_settings(self) -> dict:
        return {**super().optimizer_settings(), "action_low": self._action_low, "action_high": self._action_high}
