"""The planning optimizers: one file each, one registry (names "cem", "icem", "mppi", "ps", "grad").

Each is a frozen dataclass of the public stable-worldmodel 0.1.1 solver's parameters, with the same
names and defaults (`optimizer_defaults(name)`), and reproduces that solver's arithmetic in the same
order, so that with the same generator and the same costs it returns the public plan bit for bit.

Interface of a sampling optimizer (CEM, ICEM, MPPI, PredictiveSampling): all tensor ops on the
device, no host sync, static shapes (an engine may capture a whole solve in a CUDA graph):

    opt.steps, opt.num_samples, opt.initial_std       iterations per chunk, S, the initial std
    state = opt.init(mean, std)                        mean, std (b, T, A) -> PlanState
    cand = opt.candidates(state, generator)            (b, S, T, A): exactly the public draws (same
                                                       shapes, order and dtype from the generator)
    state, info = opt.update(state, cand, costs)       costs (b, S); info = the public callback's keyword
                                                       arguments besides step/candidates/costs (topk_vals,
                                                       topk_inds, topk_candidates, mean, var, prev_mean,
                                                       prev_var; iCEM also action_low/high)
    state = opt.fast_update(state, cand, costs, ops)   the same update through an engine's fused op set
    actions, std, cost = opt.result(state)             (b, T, A), (b, T, A) or None, (b,)

`PlanState` (base.py) holds mean, std, the reported cost and the last elites. The gradient optimizer
(GradientDescent, "grad") differentiates the cost instead and has no candidates/update split.

Every optimizer also has `prepare(mean, std, generator)` (per-environment inputs drawn before chunking)
and `solve_chunk(inputs, cost_fn, generator, callback)` (one chunk, the public loop); `loop.solve_chunks`
runs them over environments in chunks of `batch_size` exactly as the public solvers do. Both return a
`PlanResult` (lewm_fast/planning/plan_result.py), the one result type of planning.
"""

from __future__ import annotations

import dataclasses

from lewm_fast.planning.optimizers.base import PlanState, SamplingOptimizer
from lewm_fast.planning.optimizers.cem import CEM
from lewm_fast.planning.optimizers.gradient import GradientDescent
from lewm_fast.planning.optimizers.icem import ICEM
from lewm_fast.planning.optimizers.loop import solve_chunks
from lewm_fast.planning.optimizers.mppi import MPPI
from lewm_fast.planning.optimizers.predictive_sampling import PredictiveSampling

_OPTIMIZERS: dict[str, type] = {
    "cem": CEM,
    "icem": ICEM,
    "mppi": MPPI,
    "ps": PredictiveSampling,
    "grad": GradientDescent,
}


def available_optimizers() -> list[str]:
    """The registered names, in a stable order."""
    return list(_OPTIMIZERS)


def optimizer_class(name: str) -> type:
    """The optimizer class registered as `name` (ValueError naming `solver` otherwise)."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"solver: expected one of {available_optimizers()}, got {name!r}")
    return _OPTIMIZERS[name]


def public_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of an optimizer class that are the public solver's parameters (a field marked
    `metadata={"public": False}` is a variant of the public behaviour, set with `dataclasses.replace`)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("public", True)]


def optimizer_params(name: str) -> list[str]:
    """The parameter names `name` accepts (the public solver's names)."""
    return [f.name for f in public_fields(optimizer_class(name))]


def optimizer_defaults(name: str) -> dict:
    """{parameter: default} of `name`, equal to the public solver's defaults."""
    out = {}
    for f in public_fields(optimizer_class(name)):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def make_optimizer(name: str, **params):
    """An optimizer from its registry name and public parameters; an unknown parameter is a TypeError
    naming it and the accepted ones, a bad value a ValueError naming the parameter."""
    cls = optimizer_class(name)
    unknown = sorted(set(params) - set(optimizer_params(name)))
    if unknown:
        accepted = optimizer_params(name)
        raise TypeError(f"{', '.join(unknown)}: not a parameter of solver {name!r} (accepted: {accepted})")
    return cls(**params)


__all__ = [
    "CEM",
    "ICEM",
    "MPPI",
    "GradientDescent",
    "PlanState",
    "PredictiveSampling",
    "SamplingOptimizer",
    "available_optimizers",
    "make_optimizer",
    "optimizer_class",
    "optimizer_defaults",
    "optimizer_params",
    "solve_chunks",
]
