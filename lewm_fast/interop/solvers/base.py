"""What every drop-in solver shares: stable-worldmodel's `Solver` protocol (`configure`, `solve`, the
properties) around one optimizer of `lewm_fast.planning.optimizers`, and the choice of how to run it.

How a solve runs (`backend`):
- "reference": the public loop exactly: environments in chunks of `batch_size`, one `info_dict` per
  chunk expanded over the samples and handed to `model.get_cost`, noise from the solver's generator in
  the public order. With the same seed it returns the public solver's plan.
- a fast backend ("auto", "torch", "triton") and a cost object the packed path computes (an `lf.LeWM` or
  release 0.1.1's public `LeWM`, its own `get_cost`; the current source's `ShootingCostEvaluator` over a
  LeWM with a recognised objective: lewm_fast/interop/solvers/lewm.py): the packed LeWM rollout of
  `lewm_fast.planning`, all environments in one batch, noise on the device, no host sync inside the
  solve (on a GPU one CUDA graph).
- a fast backend and any other cost object (anything with `get_cost`): the same optimizer loop with every
  environment in one chunk around its own `get_cost`; no host sync of ours inside the solve.
The cost object is checked at its first use (a solve), as the public solvers do: they accept any object
at construction.

Layouts: release 0.1.1 (`stable_worldmodel.solver`) and the current source (`stable_worldmodel.planning`)
differ in a few outputs (the gradient solver's). A drop-in follows the stable-worldmodel installed beside
it (`installed_layout`), or `layout="0.1.1"` / `"source"` given to its constructor.

Callbacks (`callbacks=[...]`, the public `Callback` objects) are called after every iteration with the
public keyword arguments, and their histories come back as `outputs["callbacks"][cb.output_key]`. They
run on the eager loop (with a LeWM: `get_cost` on all environments in one chunk), never in the packed
engine: a callback reads its tensors on the host (`.item()`, `.tolist()`), one host sync per
iteration, and a solve with callbacks is not captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Any

import numpy as np
import torch

from lewm_fast._checks import GENERATOR_SEED_MAX, check_int
from lewm_fast.capability import resolve_dtype
from lewm_fast.interop.solvers import inputs
from lewm_fast.interop.solvers.lewm import PlannerCache, packed_cost, solve_packed
from lewm_fast.planning.backends import BACKENDS
from lewm_fast.planning.optimizers import make_optimizer, solve_chunks

LAYOUTS = ("0.1.1", "source")


@functools.cache
def installed_layout() -> str:
    """ "source" where the installed stable_worldmodel has the current source's layout (a `planning/solver`
    package), else "0.1.1" (the PyPI release; also the choice without stable_worldmodel). Found without
    importing stable_worldmodel."""
    spec = importlib.util.find_spec("stable_worldmodel")
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    return "source" if any(os.path.isdir(os.path.join(f, "planning", "solver")) for f in folders) else "0.1.1"


def warn(message: str, layout: str) -> None:
    """A warning through the public solvers' logger: loguru in release 0.1.1 (where it is installed), the
    standard `logging` in the current source."""
    try:
        from loguru import logger
    except ImportError:
        logger = None
    if logger is None or layout == "source":
        logging.getLogger("lewm_fast.interop").warning(message)
    else:
        logger.warning(message)


def resolve_model(model, cost):
    """The model passed positionally or as `model=` (stable-worldmodel 0.1.1) or `cost=` (its current source)."""
    if model is not None and cost is not None:
        raise TypeError("model, cost: expected one of them (the same argument under two names), got both")
    return model if model is not None else cost


def _is_box(space) -> bool:
    try:
        from gymnasium.spaces import Box
    except ImportError:
        return hasattr(space, "low") and hasattr(space, "high")
    return isinstance(space, Box)


class DropInSolver:
    """Base of the drop-ins. Subclasses set `optimizer_name` (the registry name) and `public_params`
    (their public constructor's optimizer parameters, read from the instance at every solve, so a
    changed attribute takes effect as in the public solvers)."""

    optimizer_name: str = ""
    public_params: tuple[str, ...] = ()

    def _setup(self, model, *, batch_size, device, seed, callbacks, backend, dtype, cuda_graph, layout) -> None:
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {list(LAYOUTS)} or None, got {layout!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        check_int("seed", seed, lo=0, hi=GENERATOR_SEED_MAX)
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.torch_gen = torch.Generator(device=device).manual_seed(seed)
        self.callbacks = list(callbacks) if callbacks else []
        self.backend, self.cuda_graph = backend, cuda_graph
        self.layout = layout or installed_layout()
        self.planner_cache = PlannerCache()  # the packed path's planner (lewm.py)
        # The rollout precision of the packed engine; the distribution and the candidates stay in `dtype`
        # below (the model's parameter dtype), as in the public solvers.
        self.plan_dtype = resolve_dtype(dtype, device)
        try:
            self._dtype = next(model.parameters()).dtype
        except (AttributeError, StopIteration, TypeError):
            self._dtype = torch.float32
        self._configured = False

    # ---- the Solver protocol ---------------------------------------------------------------------

    def configure(self, *, action_space, n_envs: int, config: Any) -> None:
        """action_space: the vectorised env's space (n_envs, action_dim); config: .horizon, .action_block."""
        self._action_space, self._n_envs, self._config = action_space, n_envs, config
        self._action_dim = int(np.prod(action_space.shape[1:]))
        self._configured = True
        if not _is_box(action_space):
            warn(f"Action space is discrete, got {type(action_space)}. {type(self).__name__} may not work as expected.",
                 self.layout)  # fmt: skip
        packed = packed_cost(self.model)
        lewm = packed.lewm if packed is not None else None
        if lewm is not None and self.action_dim != lewm.cfg.action_block_dim:
            raise ValueError(
                f"action_space: expected action_dim x action_block = {lewm.cfg.action_block_dim} (the model's "
                f"action block), got {self._action_dim} x {config.action_block}"
            )

    @property
    def cost(self):
        """The model (stable-worldmodel's current source calls it `cost`)."""
        return self.model

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
        """The distribution's and the candidates' dtype: the model's parameter dtype (fp32 without one)."""
        return self._dtype

    def __call__(self, *args, **kwargs) -> dict:
        return self.solve(*args, **kwargs)

    def init_action_distrib(self, n_envs: int, actions: torch.Tensor | None = None):
        """The public initial distribution: mean = `actions` padded with zeros to the horizon,
        var (the std) = var_scale everywhere; both (n_envs, horizon, action_dim), on `actions`' device
        (the solver's without them)."""
        mean = inputs.pad_to_horizon(actions, n_envs, self.horizon, self.action_dim, self.dtype, self.device)
        var = self.var_scale * torch.ones([n_envs, self.horizon, self.action_dim], dtype=self.dtype, device=mean.device)
        return mean, var

    # ---- solving ---------------------------------------------------------------------------------

    def optimizer_settings(self) -> dict:
        """The optimizer's parameters, read from this solver's current public attributes."""
        return {p: getattr(self, p) for p in self.public_params}

    def optimizer(self):
        """This solver's optimizer (`lewm_fast.planning.optimizers`)."""
        return make_optimizer(self.optimizer_name, **self.optimizer_settings())

    def _count(self, info_dict: dict) -> int:
        if not getattr(self, "_configured", False):
            raise RuntimeError(f"{type(self).__name__}.solve: call configure(action_space=, n_envs=, config=) first")
        return inputs.count_envs(info_dict)

    def _start(self, info_dict: dict, init_action) -> tuple[int, torch.Tensor | None]:
        total = self._count(info_dict)
        warm = inputs.prepare_init_action(self.model, info_dict, init_action, self.horizon, total, self.action_dim,
                                          self.device)  # fmt: skip
        return total, warm

    def _run(self, optimizer, info_dict: dict, mean: torch.Tensor, std: torch.Tensor):
        """Run `optimizer` from (mean, std) (E, T, A) on the path `backend` chooses (module docstring)."""
        packed = packed_cost(self.model)
        fast = self.backend != "reference"
        if fast and packed is not None and packed.accepts(info_dict) and not self.callbacks:
            return solve_packed(self, packed, optimizer, info_dict, mean, std)
        model = packed.generic if fast and packed is not None else self.model
        if not callable(getattr(model, "get_cost", None)):
            raise TypeError(f"cost: expected an object with a get_cost(info_dict, action_candidates) method (the "
                            f"public Costable protocol), got {type(model).__name__}")  # fmt: skip
        batch_size = self.batch_size if self.backend == "reference" else None
        device = torch.device(self.device)

        def chunk_cost(lo: int, hi: int):
            expanded = inputs.expand_info(info_dict, lo, hi, optimizer.num_samples, device, self.dtype)
            return lambda cand: model.get_cost(expanded, cand)

        for cb in self.callbacks:
            cb.reset()
        callback = self._call_callbacks if self.callbacks else None
        start = self._start_batch if self.callbacks else None
        return solve_chunks(optimizer, mean, std, chunk_cost, self.torch_gen, batch_size, callback, start)

    def _call_callbacks(self, **state) -> None:
        for cb in self.callbacks:
            cb(**state)

    def _start_batch(self, lo: int, hi: int) -> None:
        for cb in self.callbacks:
            cb.start_batch()

    def _with_callbacks(self, outputs: dict) -> dict:
        if self.callbacks:
            outputs["callbacks"] = {}
            for cb in self.callbacks:
                cb.end_solve()
                outputs["callbacks"][cb.output_key] = cb.history
        return outputs

    def solve(self, info_dict: dict, init_action: torch.Tensor | None = None) -> dict:
        """Plan for every environment of `info_dict` (the length of its first value).

        Returns the public output dict: "actions" (E, horizon, A) on the CPU, "costs" (E floats), "mean"
        and "var" ([(E, horizon, A)]; "var" holds the std, as in the public solvers), and "callbacks"
        when there are callbacks.
        """
        total, warm = self._start(info_dict, init_action)
        mean, var = self.init_action_distrib(total, warm)
        device = torch.device(self.device)
        result = self._run(self.optimizer(), info_dict, mean.to(device), var.to(device))
        # Written back into the distribution's dtype, as the public solvers write each chunk into theirs.
        actions = result.actions.detach().to(mean.dtype).cpu()
        std = (result.std if result.std is not None else var).detach().to(var.dtype).cpu()
        outputs = {"costs": result.cost.detach().cpu().tolist(), "actions": actions, "mean": [actions],
                   "var": [std]}  # fmt: skip
        return self._with_callbacks(outputs)
