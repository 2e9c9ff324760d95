"""`CEMSolver`: stable-worldmodel's `CEMSolver` (same signature and defaults, same outputs) on lewm_fast.

Per iteration: candidates randn * std + mean (the first = the mean), costs, then mean and std of the
`topk` lowest. The backends, what a callback costs and the model rules: lewm_fast/interop/solvers/base.py.
"""

from __future__ import annotations

import torch

from lewm_fast.interop.solvers.base import DropInSolver, resolve_model


class CEMSolver(DropInSolver):
    """Cross-Entropy Method with the public `Solver` protocol.

    The public arguments (model, batch_size, num_samples, var_scale, n_steps, topk, device, seed,
    callbacks) plus backend ("auto" | "reference" | "torch" | "triton"), dtype (the LeWM rollout's
    precision: torch.float32, torch.bfloat16 or "auto") and cuda_graph (capture the packed solve on a GPU).
    `cost=` is accepted for `model` (the name in stable-worldmodel's current source); layout ("0.1.1" |
    "source" | None: the installed stable-worldmodel's) picks whose outputs to reproduce where they differ.

    callbacks: the public `Callback` objects, called after every iteration with the public keyword
    arguments; their histories come back in `outputs["callbacks"]`. Each costs a host sync per iteration
    (callbacks read their tensors on the host), and a solve with callbacks runs on the eager loop: never
    in the packed LeWM engine or a CUDA graph.
    """

    optimizer_name = "cem"
    public_params = ("num_samples", "var_scale", "n_steps", "topk")

    def __init__(
        self,
        model=None,
        batch_size: int = 1,
        num_samples: int = 300,
        var_scale: float = 1,
        n_steps: int = 30,
        topk: int = 30,
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
        self._setup(resolve_model(model, cost), batch_size=batch_size, device=device, seed=seed, callbacks=callbacks,
                    backend=backend, dtype=dtype, cuda_graph=cuda_graph, layout=layout)  # fmt: skip
