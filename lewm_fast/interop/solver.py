"""`CEMSolver`: a drop-in for stable-worldmodel's `CEMSolver` (its `Solver` protocol) on lewm_fast.

Same constructor arguments as the public solver (model, batch_size, num_samples, var_scale, n_steps,
topk, device, seed) plus `backend`, `dtype` and `cuda_graph` (`callbacks` must be empty). It accepts
a public `LeWM` (converted once with `from_swm`) or an `lf.LeWM`.

- `backend="reference"` reproduces the public solver exactly: environments in chunks of
  `batch_size`, noise randn(chunk, S, horizon, A) per iteration from one generator seeded at
  construction (it persists across `solve` calls), so the plan equals the public plan.
- Fast backends ("auto", "torch", "triton") plan every environment of the call in one batch with
  `lf.CEMPlanner`; `batch_size` is then ignored (more environments per batch is the point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lewm_fast.model import LeWM
from lewm_fast.planning.planner import CEMPlanner
from lewm_fast.planning.reference import cem_reference, rollout_cost_reference


def _as_lewm(model) -> LeWM:
    if isinstance(model, LeWM):
        return model
    from lewm_fast.interop.swm import from_swm

    return from_swm(model)


class CEMSolver:
    """Cross-Entropy Method solver with stable-worldmodel's Solver protocol.

    solve(info_dict, init_action=None) -> {"actions": (E, horizon, A), "costs": [E floats],
    "mean": [(E, horizon, A)], "var": [(E, horizon, A)]} (tensors on the CPU, like the public solver;
    "var" holds the std, as the public solver's does).
    info_dict: "pixels" (E, H, C, h, w) and "goal" (E, C, h, w) or (E, T, C, h, w) (last frame used).
    """

    def __init__(
        self,
        model,
        batch_size: int = 1,
        num_samples: int = 300,
        var_scale: float = 1,
        n_steps: int = 30,
        topk: int = 30,
        device: str | torch.device = "cpu",
        seed: int = 1234,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
        cuda_graph: bool = True,
        callbacks: list | None = None,
    ):
        if callbacks:
            raise ValueError("callbacks: lewm_fast's CEMSolver runs the solve on the device without per-iteration "
                             "host callbacks; got a non-empty list")  # fmt: skip
        self.model = _as_lewm(model).to(device).eval()
        self.batch_size, self.num_samples, self.var_scale = batch_size, num_samples, var_scale
        self.n_steps, self.topk, self.device, self.seed = n_steps, topk, torch.device(device), seed
        self.backend, self._dtype, self.cuda_graph = backend, dtype, cuda_graph
        self.torch_gen = torch.Generator(device=self.device).manual_seed(seed)
        self._configured = False
        self._planner: CEMPlanner | None = None

    # ---- the Solver protocol ---------------------------------------------------------------------

    def configure(self, *, action_space, n_envs: int, config: Any) -> None:
        """action_space: the vectorised env's space (n_envs, action_dim); config: .horizon, .action_block."""
        self._action_space, self._n_envs, self._config = action_space, n_envs, config
        self._action_dim = int(np.prod(action_space.shape[1:]))
        if self.action_dim != self.model.cfg.action_block_dim:
            raise ValueError(
                f"action_space: expected action_dim x action_block = {self.model.cfg.action_block_dim} "
                f"(the model's action block), got {self._action_dim} x {config.action_block}"
            )
        self._configured = True
        if self.backend != "reference":
            self._planner = CEMPlanner(
                self.model, num_samples=self.num_samples, topk=self.topk, iters=self.n_steps,
                horizon=self.horizon, var_scale=self.var_scale, seed=self.seed, backend=self.backend,
                dtype=self._dtype, cuda_graph=self.cuda_graph,
            )  # fmt: skip

    @property
    def n_envs(self) -> int:
        return self._n_envs

    @property
    def action_dim(self) -> int:
        """Flattened action dimension including the action_block grouping."""
        return self._action_dim * self._config.action_block

    @property
    def horizon(self) -> int:
        return self._config.horizon

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def __call__(self, *args, **kwargs) -> dict:
        return self.solve(*args, **kwargs)

    # ---- solving ---------------------------------------------------------------------------------

    def _observations(self, info_dict: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._configured:
            raise RuntimeError("CEMSolver.solve: call configure(action_space=, n_envs=, config=) first")
        for key in ("pixels", "goal"):
            if key not in info_dict:
                raise ValueError(f"info_dict: expected a '{key}' entry, got keys {sorted(info_dict)}")
        pixels = torch.as_tensor(info_dict["pixels"]).to(self.device, torch.float32)
        goal = torch.as_tensor(info_dict["goal"]).to(self.device, torch.float32)
        if goal.ndim == 5:
            goal = goal[:, -1]
        return pixels, goal

    def _initial_mean(self, e: int, init_action: torch.Tensor | None) -> torch.Tensor:
        mean = torch.zeros(e, self.horizon, self.action_dim, device=self.device)
        if init_action is not None:
            init_action = torch.as_tensor(init_action)
            if init_action.ndim != 3 or init_action.shape[0] != e or init_action.shape[2] != self.action_dim:
                raise ValueError(
                    f"init_action: expected shape ({e}, t <= {self.horizon}, {self.action_dim}), "
                    f"got {tuple(init_action.shape)}"
                )
            t = min(init_action.shape[1], self.horizon)
            mean[:, :t] = init_action[:, :t].to(self.device, mean.dtype)
        return mean

    @torch.inference_mode()
    def _solve_reference(self, pixels, goal, mean) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The public loop: chunks of batch_size environments, one generator."""
        model = self.model
        self.model.check_pixels("pixels", pixels, leading=("E", "H"))
        self.model.check_pixels("goal", goal, leading=(pixels.shape[0],))
        e, h = pixels.shape[:2]
        emb = model.encode_frames(torch.cat([pixels.flatten(0, 1), goal]))
        hist_emb, goal_emb = emb[: e * h].view(e, h, -1), emb[e * h :]
        means, stds, costs = [], [], []
        for lo in range(0, e, self.batch_size):
            hi = min(lo + self.batch_size, e)

            def cost_fn(cand, lo=lo, hi=hi):
                return rollout_cost_reference(model, hist_emb[lo:hi], goal_emb[lo:hi], cand)

            std = torch.full_like(mean[lo:hi], float(self.var_scale))
            m, s, c = cem_reference(
                cost_fn, mean[lo:hi], std, self.num_samples, self.topk, self.n_steps, self.torch_gen
            )
            means.append(m)
            stds.append(s)
            costs.append(c)
        return torch.cat(means), torch.cat(stds), torch.cat(costs)

    def solve(self, info_dict: dict, init_action: torch.Tensor | None = None) -> dict:
        """Plan for every environment of `info_dict` (its first dimension)."""
        pixels, goal = self._observations(info_dict)
        mean0 = self._initial_mean(pixels.shape[0], init_action)
        if self.backend == "reference":
            mean, std, cost = self._solve_reference(pixels, goal, mean0)
        else:
            result = self._planner.plan_with_info(pixels, goal, init_mean=mean0)
            mean, std, cost = result.actions, result.std, result.elite_cost
        mean, std = mean.detach().float().cpu(), std.detach().float().cpu()
        return {"actions": mean, "costs": cost.float().cpu().tolist(), "mean": [mean], "var": [std]}
