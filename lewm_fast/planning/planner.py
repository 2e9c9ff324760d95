"""Planners: plan action blocks for E environments in LeWM's latent space with any optimizer of the
registry (`optimizers/`: "cem", "icem", "mppi", "ps", "grad") on any backend of `backends.py`.

`backend="reference"` runs the public semantics (`engine_reference.py`): the public solver's loop and
chunking, noise from one `torch.Generator` seeded once at construction (it persists across calls, like
the public solver's), so a plan equals the public plan under the same seed. The fast backends
("torch", "triton": `engine.py`) plan all environments in one batch; they draw their noise on the device
from the same generator, keep the distribution in fp32 and return fp32 plans and costs.

A planner is safe to share between threads: each call holds the planner's lock (its generator and
static buffers are shared state), so concurrent calls run one after another.
"""

from __future__ import annotations

import threading

import torch

from lewm_fast._checks import GENERATOR_SEED_MAX, check_int, check_positive_int, check_tensor
from lewm_fast._memory import memory_limit
from lewm_fast.capability import resolve_dtype
from lewm_fast.model import LeWM
from lewm_fast.planning.backends import engine_class, resolve_backend
from lewm_fast.planning.optimizers import available_optimizers, make_optimizer, optimizer_defaults
from lewm_fast.planning.plan_result import PlanResult

_CEM = optimizer_defaults("cem")
HORIZON = 5  # action blocks per plan: the paper's (every other default horizon is this one)


def check_model(model: object) -> LeWM:
    """An `lf.LeWM` with real (not meta), finite parameters and buffers (one host sync, at construction)."""
    if not isinstance(model, LeWM):
        raise TypeError(f"model: expected an lf.LeWM (lf.interop.from_swm converts a public one), got "
                        f"{type(model).__name__}")  # fmt: skip
    tensors = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    meta = [n for n, t in tensors if t.is_meta]
    if meta:
        raise ValueError(f"model: parameters on the meta device have no values ({meta[0]}, ...); load weights first")
    with torch.no_grad():
        bad = torch.stack([~torch.isfinite(t).all() for _, t in tensors]).cpu()
    if bad.any():
        raise ValueError(f"model: parameter {tensors[int(bad.nonzero()[0])][0]} has NaN or Inf values")
    return model


def solve_bytes(cfg, e: int, num_samples: int, horizon: int, dtype: torch.dtype) -> int:
    """An estimate of the memory one solve of E environments needs (candidates, rollout activations)."""
    inner, elt = cfg.pred_heads * cfg.pred_dim_head, torch.finfo(dtype).bits // 8
    per_row = horizon * cfg.action_block_dim * 4 * 3  # noise, candidates, their copy
    per_row += horizon * cfg.pred_depth * 6 * cfg.pred_hidden_dim * elt  # AdaLN modulation table
    per_row += cfg.pred_depth * 2 * cfg.num_frames * inner * elt  # K/V kept while the window grows
    per_row += cfg.num_frames * (3 * inner + cfg.pred_mlp_dim + 4 * cfg.pred_hidden_dim) * 4  # one block's activations
    per_row += (horizon + 1) * cfg.embed_dim * 4
    return e * num_samples * per_row


def resolve_optimizer(solver, solver_params: dict):
    """The planner's optimizer: a registry name and its parameters, or an optimizer built by the caller
    (`make_optimizer`, or an object with the same interface and a registered `name`)."""
    if isinstance(solver, str):
        return make_optimizer(solver, **solver_params)
    if getattr(solver, "name", None) not in available_optimizers():
        raise TypeError(f"solver: expected one of {available_optimizers()} or an optimizer of that registry, "
                        f"got {type(solver).__name__}")  # fmt: skip
    if solver_params:
        raise TypeError(f"{', '.join(sorted(solver_params))}: not accepted with an optimizer instance (its "
                        f"parameters are its own)")  # fmt: skip
    return solver


def check_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A caller's generator must draw on the planner's device (the model's)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator: expected one on the model's device ({device.type}), got {generator.device}")
    return generator


class Planner:
    """Plan with one optimizer of the registry over LeWM rollouts.

    Args:
        model: an `lf.LeWM` (put in eval mode; the planner never trains it).
        solver: "cem" | "icem" | "mppi" | "ps" | "grad" (`lewm_fast.planning.optimizers`), or an optimizer
            of that registry built by the caller (`make_optimizer(...)`; then no **solver_params).
        horizon: action blocks per plan (HORIZON, 5).
        seed: seed of the planner's generator (persists across calls, like the public solver's).
        backend: "reference" (the public loop), "torch" (the batched restructured rollout: the CPU fast
            path), "triton" (fused Triton kernels: the GPU fast path), "auto" (`backends.resolve_backend`).
        dtype: torch.float32 | torch.bfloat16 | "auto" (bf16 where the device runs it natively).
        cuda_graph: capture a whole sampling solve in a CUDA graph (fast backends on CUDA).
        generator: the caller's torch.Generator on the model's device (e.g. a solver's own noise stream);
            None: a new one seeded with `seed`. The planner draws all its noise from it.
        **solver_params: the public solver's parameters (num_samples, var_scale, n_steps, topk,
            noise_beta, alpha, n_elite_keep, return_mean, temperature, noise_scale, optimizer_cls,
            optimizer_kwargs, action_noise, grad_clip, action_low/high); defaults are the public ones.

    plan(pixels (E, H, C, h, w), goal (E, C, h, w)) -> actions (E, horizon, A);
    cost(pixels, goal, cand (E, S, horizon, A)) -> (E, S), the exact public cost.
    """

    def __init__(self, model, solver="cem", horizon: int = HORIZON, seed: int = 0, backend: str = "auto",
                 dtype: torch.dtype | str = torch.float32, cuda_graph: bool = True,
                 generator: torch.Generator | None = None, **solver_params):  # fmt: skip
        self.model = check_model(model).eval()
        self.device = next(model.parameters()).device
        self._optimizer = resolve_optimizer(solver, solver_params).to(self.device)
        self._optimizer.check_action_dim(self.action_block_dim)
        self.solver = self._optimizer.name
        self.horizon = check_positive_int("horizon", horizon)
        check_int("seed", seed, lo=0, hi=GENERATOR_SEED_MAX)
        self.dtype = resolve_dtype(dtype, self.device)
        self.cuda_graph = cuda_graph
        self.seed = seed
        self._generator = check_generator(generator, self.device) or torch.Generator(self.device).manual_seed(seed)
        self._check_memory(1)
        self.backend = resolve_backend(backend, self.device)
        self._lock = threading.RLock()
        engine = engine_class(self.backend)
        self.engine = engine(self.model, self._optimizer, self._generator, horizon=self.horizon, dtype=self.dtype,
                             device=self.device, cuda_graph=cuda_graph)  # fmt: skip

    @property
    def optimizer(self):
        """The planner's optimizer (read-only: the engine holds it; a planner for another optimizer is a new one)."""
        return self._optimizer

    @property
    def generator(self) -> torch.Generator:
        """The planner's noise stream (read-only: the engine draws from it; `reseed` restarts it)."""
        return self._generator

    @property
    def num_samples(self) -> int:
        return self.optimizer.num_samples

    @property
    def action_block_dim(self) -> int:
        return self.model.cfg.action_block_dim

    def reseed(self, seed: int) -> None:
        """Restart the planner's noise stream from `seed`."""
        check_int("seed", seed, lo=0, hi=GENERATOR_SEED_MAX)
        with self._lock:
            self.seed = seed
            self._generator.manual_seed(seed)

    # ---- argument checks -------------------------------------------------------------------------

    def _check_memory(self, e: int, name: str = "num_samples") -> None:
        """Refuse a solve that cannot fit, naming `name`: num_samples at construction, pixels (E) per call."""
        need = solve_bytes(self.model.cfg, e, self.num_samples, self.horizon, self.dtype)
        have = memory_limit(self.device)
        if need > have:
            raise ValueError(
                f"{name}: a solve of {e} environment(s) x {self.num_samples} samples x horizon {self.horizon} "
                f"needs ~{need / 2**30:.1f} GiB, more than this {self.device.type} device's "
                f"{have / 2**30:.1f} GiB; use fewer samples or environments"
            )

    def _check_observations(self, pixels, goal) -> None:
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 5:
            self._check_memory(pixels.shape[0], "pixels")  # before the finite-value scan of a huge (expanded) input
        for name, x in (("pixels", pixels), ("goal", goal)):
            if isinstance(x, torch.Tensor) and x.is_meta:
                raise ValueError(f"{name}: expected a tensor with values, got one on the meta device")
        self.model.check_pixels("pixels", pixels, leading=("E", "H"))
        self.model.check_pixels("goal", goal, leading=(pixels.shape[0],))
        e, h = pixels.shape[:2]
        if e == 0:
            raise ValueError("pixels: expected at least one environment (E >= 1), got E = 0")
        if h == 0:
            raise ValueError("pixels: expected at least one history frame (H >= 1), got H = 0")
        if h > self.horizon:
            raise ValueError(f"pixels: expected at most horizon={self.horizon} history frames, got {h}")
        if goal.shape[-2:] != pixels.shape[-2:]:
            raise ValueError(f"goal: expected frames of the pixels' size {tuple(pixels.shape[-2:])}, "
                             f"got {tuple(goal.shape[-2:])}")  # fmt: skip

    # ---- public API ------------------------------------------------------------------------------

    def initial_distribution(
        self, e: int, init_mean: torch.Tensor | None = None, init_std: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The distribution a plan of E environments starts from: (mean, std) (E, horizon, A) in the engine's
        distribution dtype; mean the warm start `init_mean` (E, t <= horizon, A) followed by zeros, std
        `init_std` (E, horizon, A) or the optimizer's initial std everywhere."""
        a, dtype = self.action_block_dim, self.engine.distribution_dtype
        mean = torch.zeros(e, self.horizon, a, device=self.device, dtype=dtype)
        if init_mean is not None:
            check_tensor("init_mean", init_mean, (e, "t", a), finite=True)
            if init_mean.shape[1] > self.horizon:
                raise ValueError(f"init_mean: expected at most horizon={self.horizon} blocks, got {init_mean.shape[1]}")
            mean[:, : init_mean.shape[1]] = init_mean.to(self.device, dtype)
        if init_std is None:
            return mean, torch.full_like(mean, self.optimizer.initial_std)
        check_tensor("init_std", init_std, (e, self.horizon, a), finite=True)
        return mean, init_std.to(self.device, dtype)

    def cost(self, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """pixels (E, H, C, h, w), goal (E, C, h, w), cand (E, S, horizon, A) -> costs (E, S)."""
        self._check_observations(pixels, goal)
        check_tensor("cand", cand, (pixels.shape[0], "S", "horizon", self.action_block_dim), finite=True)
        if cand.shape[1] == 0:
            raise ValueError("cand: expected at least one candidate (S >= 1), got S = 0")
        if cand.shape[2] < pixels.shape[1]:
            raise ValueError(
                f"cand: expected a horizon of at least H={pixels.shape[1]} history frames, got {cand.shape[2]}"
            )
        with self._lock:
            return self.engine.cost(pixels, goal, cand.to(self.device))

    def plan_with_info(
        self,
        pixels: torch.Tensor,
        goal: torch.Tensor,
        init_mean: torch.Tensor | None = None,
        init_std: torch.Tensor | None = None,
    ) -> PlanResult:
        """Like `plan`, also returning the final std and the reported cost (`PlanResult`).

        init_mean (E, t <= horizon, A) warm-starts the first t blocks of the mean (the rest is 0);
        init_std (E, horizon, A) is the initial std (default: the optimizer's `initial_std` everywhere).
        """
        self._check_observations(pixels, goal)
        with self._lock:
            mean, std = self.initial_distribution(pixels.shape[0], init_mean, init_std)
            return self.engine.plan(pixels, goal, mean, std)

    def plan(self, pixels: torch.Tensor, goal: torch.Tensor, init_mean: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (E, H, C, h, w), goal (E, C, h, w) -> planned action blocks (E, horizon, A)."""
        return self.plan_with_info(pixels, goal, init_mean).actions


class CEMPlanner(Planner):
    """`Planner(model, "cem", ...)` under its historical signature (`iters` is CEM's n_steps).

    Args: num_samples (300), topk (30), iters (30), horizon (5), var_scale (1.0), seed, backend, dtype,
    cuda_graph: as `Planner`.
    """

    def __init__(self, model, num_samples: int = _CEM["num_samples"], topk: int = _CEM["topk"],
                 iters: int = _CEM["n_steps"], horizon: int = HORIZON, var_scale: float = _CEM["var_scale"],
                 seed: int = 0, backend: str = "auto", dtype: torch.dtype | str = torch.float32,
                 cuda_graph: bool = True):  # fmt: skip
        super().__init__(model, "cem", horizon=horizon, seed=seed, backend=backend, dtype=dtype,
                         cuda_graph=cuda_graph, num_samples=num_samples, topk=topk, n_steps=iters,
                         var_scale=var_scale)  # fmt: skip

    @property
    def topk(self) -> int:
        return self.optimizer.topk

    @property
    def iters(self) -> int:
        return self.optimizer.n_steps

    @property
    def var_scale(self) -> float:
        return self.optimizer.var_scale
