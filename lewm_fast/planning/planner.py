"""CEMPlanner: plan action blocks for E environments by CEM in LeWM's latent space.

`backend="reference"` runs the public semantics (`reference.py`): one environment after another,
noise randn(1, S, horizon, A) per iteration from one `torch.Generator` seeded once at construction
(it persists across calls, like the public solver), so a plan equals the public plan under the same
seed. Fast backends ("torch", "triton": `engine.py`) register in `_ENGINES` and plan all environments
in one batch; they draw their noise on the device from the same generator (a different stream from
the reference's), keep the CEM distribution in fp32 and return fp32 plans and costs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lewm_fast._checks import check_choice, check_positive_int, check_tensor
from lewm_fast.planning.reference import cem_reference, rollout_cost_reference

BACKENDS = ("auto", "reference", "torch", "triton")
DTYPES = (torch.float32, torch.bfloat16)


@dataclass
class PlanResult:
    """actions: (E, horizon, A) the final mean; std: (E, horizon, A); elite_cost: (E,) the mean cost
    of the elites of the last iteration."""

    actions: torch.Tensor
    std: torch.Tensor
    elite_cost: torch.Tensor


class ReferenceEngine:
    """The public semantics, plainly: encode, then per environment `cem_reference`."""

    def __init__(self, planner: CEMPlanner):
        self.p = planner
        model = planner.model
        if planner.dtype != next(model.parameters()).dtype:
            model = copy.deepcopy(model).to(planner.dtype)
        self.model = model

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (E, H, C, h, w), goal (E, C, h, w) -> history (E, H, D), goal (E, D) embeddings."""
        e, h = pixels.shape[:2]
        frames = torch.cat([pixels.flatten(0, 1), goal]).to(self.p.device, self.p.dtype)
        emb = self.model.encode_frames(frames)
        return emb[: e * h].view(e, h, -1), emb[e * h :]

    @torch.inference_mode()
    def cost(self, hist_emb, goal_emb, cand) -> torch.Tensor:
        return rollout_cost_reference(self.model, hist_emb, goal_emb, cand.to(self.p.dtype))

    @torch.inference_mode()
    def plan(self, hist_emb, goal_emb, mean, std) -> PlanResult:
        p = self.p
        out = []
        for i in range(hist_emb.shape[0]):

            def cost_fn(cand, i=i):
                return rollout_cost_reference(self.model, hist_emb[i : i + 1], goal_emb[i : i + 1], cand)

            out.append(
                cem_reference(cost_fn, mean[i : i + 1], std[i : i + 1], p.num_samples, p.topk, p.iters, p.generator)
            )
        means, stds, costs = zip(*out)
        return PlanResult(torch.cat(means), torch.cat(stds), torch.cat(costs))


# backend name -> engine class(planner). Fast engines register here.
_ENGINES: dict[str, Callable[[CEMPlanner], object]] = {"reference": ReferenceEngine}


class CEMPlanner:
    """Cross-Entropy Method planner over LeWM rollouts.

    Args:
        model: an `lf.LeWM` (put in eval mode; the planner never trains it).
        num_samples: S candidates per iteration (300). topk: elites (30). iters: iterations (30).
        horizon: action blocks per plan (5). var_scale: initial std (1.0).
        seed: seed of the planner's generator (persists across calls, like the public solver).
        backend: "reference" (the public loop), "torch" (the batched, restructured rollout in PyTorch
            ops: the CPU fast path), "triton" (the same with fused Triton kernels: the GPU fast path),
            "auto" (triton on CUDA, torch elsewhere). dtype: torch.float32 | torch.bfloat16.
        cuda_graph: capture the whole solve in a CUDA graph (fast GPU backend).

    plan(pixels (E, H, C, h, w), goal (E, C, h, w)) -> actions (E, horizon, A);
    cost(pixels, goal, cand (E, S, horizon, A)) -> (E, S), the exact public cost.
    """

    def __init__(
        self,
        model,
        num_samples: int = 300,
        topk: int = 30,
        iters: int = 30,
        horizon: int = 5,
        var_scale: float = 1.0,
        seed: int = 0,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
        cuda_graph: bool = True,
    ):
        check_choice("backend", backend, BACKENDS)
        check_choice("dtype", dtype, DTYPES)
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.topk = check_positive_int("topk", topk)
        if topk < 2 or topk > num_samples:
            raise ValueError(f"topk: expected 2 <= topk <= num_samples={num_samples}, got {topk}")
        self.iters = check_positive_int("iters", iters)
        self.horizon = check_positive_int("horizon", horizon)
        if not var_scale > 0:
            raise ValueError(f"var_scale: expected a positive float, got {var_scale}")
        self.var_scale = float(var_scale)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = dtype
        self.cuda_graph = cuda_graph
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.backend = resolve_backend(backend, self.device)
        self.engine = _ENGINES[self.backend](self)

    @property
    def action_block_dim(self) -> int:
        return self.model.cfg.action_block_dim

    def reseed(self, seed: int) -> None:
        """Restart the planner's noise stream from `seed`."""
        self.seed = seed
        self.generator.manual_seed(seed)

    # ---- argument checks -------------------------------------------------------------------------

    def _check_observations(self, pixels, goal) -> None:
        self.model.check_pixels("pixels", pixels, leading=("E", "H"))
        self.model.check_pixels("goal", goal, leading=(pixels.shape[0],))
        if pixels.shape[1] > self.horizon:
            raise ValueError(f"pixels: expected at most horizon={self.horizon} history frames, got {pixels.shape[1]}")

    def _initial_distribution(self, e: int, init_mean: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.action_block_dim
        dtype = getattr(self.engine, "cem_dtype", self.dtype)  # fast engines keep the distribution in fp32
        mean = torch.zeros(e, self.horizon, a, device=self.device, dtype=dtype)
        if init_mean is not None:
            check_tensor("init_mean", init_mean, (e, "t", a), finite=True)
            if init_mean.shape[1] > self.horizon:
                raise ValueError(f"init_mean: expected at most horizon={self.horizon} blocks, got {init_mean.shape[1]}")
            mean[:, : init_mean.shape[1]] = init_mean.to(self.device, dtype)
        std = torch.full_like(mean, self.var_scale)
        return mean, std

    # ---- public API ------------------------------------------------------------------------------

    def cost(self, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """pixels (E, H, C, h, w), goal (E, C, h, w), cand (E, S, horizon, A) -> costs (E, S)."""
        self._check_observations(pixels, goal)
        check_tensor("cand", cand, (pixels.shape[0], "S", "horizon", self.action_block_dim), finite=True)
        if cand.shape[2] < pixels.shape[1]:
            raise ValueError(
                f"cand: expected a horizon of at least H={pixels.shape[1]} history frames, got {cand.shape[2]}"
            )
        hist_emb, goal_emb = self.engine.embed(pixels, goal)
        return self.engine.cost(hist_emb, goal_emb, cand.to(self.device))

    def plan_with_info(
        self, pixels: torch.Tensor, goal: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> PlanResult:
        """Like `plan`, also returning the final std and the last iteration's mean elite cost.

        init_mean (E, t <= horizon, A) warm-starts the first t blocks of the mean (the rest is 0).
        """
        self._check_observations(pixels, goal)
        mean, std = self._initial_distribution(pixels.shape[0], init_mean)
        hist_emb, goal_emb = self.engine.embed(pixels, goal)
        return self.engine.plan(hist_emb, goal_emb, mean, std)

    def plan(self, pixels: torch.Tensor, goal: torch.Tensor, init_mean: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (E, H, C, h, w), goal (E, C, h, w) -> planned action blocks (E, horizon, A)."""
        return self.plan_with_info(pixels, goal, init_mean).actions


def resolve_backend(backend: str, device: torch.device) -> str:
    """What `backend` means on `device`: 'auto' = the fast engine for the device when it is built."""
    if backend != "auto":
        if backend not in _ENGINES:
            raise ValueError(f"backend: '{backend}' is not available in this build (have {sorted(_ENGINES)})")
        return backend
    preferred = "triton" if device.type == "cuda" else "torch"
    return preferred if preferred in _ENGINES else "reference"
