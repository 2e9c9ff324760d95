"""`MPPISolver`: stable-worldmodel's `MPPISolver` (same signature and defaults, same outputs) on lewm_fast.

Per iteration: candidates mean + randn * std (the first = the mean), costs, then the mean becomes the
softmax(-(cost - min) / temperature)-weighted sum of the `topk` lowest (all when topk >= num_samples);
the std stays `var_scale`. The backends and the model rules: lewm_fast/interop/solvers/base.py.
"""

from __future__ import annotations

import torch

from lewm_fast.interop.solvers.base import DropInSolver, resolve_model


class MPPISolver(DropInSolver):
    """Model Predictive Path Integral with the public `Solver` protocol.

    The public arguments (model, batch_size, num_samples, var_scale, n_steps, topk, temperature, device,
    seed) plus callbacks (the public `Callback` objects, as for CEM: the public MPPI has none) and
    backend / dtype / cuda_graph / cost= / layout as `CEMSolver`.
    """

    optimizer_name = "mppi"
    public_params = ("num_samples", "var_scale", "n_steps", "topk", "temperature")

    def __init__(
        self,
        model=None,
        batch_size: int = 1,
        num_samples: int = 300,
        var_scale: float = 1.0,
        n_steps: int = 30,
        topk: int = 30,
        temperature: float = 0.5,
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
        self.temperature = temperature
        self._setup(resolve_model(model, cost), batch_size=batch_size, device=device, seed=seed, callbacks=callbacks,
                    backend=backend, dtype=dtype, cuda_graph=cuda_graph, layout=layout)  # fmt: skip
