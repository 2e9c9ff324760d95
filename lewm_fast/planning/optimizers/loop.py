"""The public solvers' loop, written once: environments in chunks of `batch_size`, each chunk solved by
the optimizer against a cost callable obtained once for that chunk, noise from one generator in the
public order (chunk by chunk, iteration by iteration).

It serves any cost: the reference backend passes the reference LeWM cost (`lewm_cost_reference`,
which encodes each chunk's goal and history as the public `LeWM.get_cost` does), and a drop-in solver
may pass a model's own `get_cost`. The fast engines do not use it: they run every environment in one
batch on the device (engine.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lewm_fast.planning.optimizers.base import Callback, CostFn
from lewm_fast.planning.plan_result import PlanResult


def solve_chunks(
    optimizer,
    mean: torch.Tensor,
    std: torch.Tensor,
    chunk_cost: Callable[[int, int], CostFn],
    generator: torch.Generator,
    batch_size: int | None = None,
    callback: Callback | None = None,
    chunk_start: Callable[[int, int], None] | None = None,
) -> PlanResult:
    """Run `optimizer` over E environments as the public solvers do.

    Args:
        optimizer: an optimizer of the registry (`make_optimizer`).
        mean, std: (E, T, A) the initial distribution (std: `optimizer.initial_std` everywhere, as the
            public `init_action_distrib`; mean: zeros or the warm start).
        chunk_cost: (lo, hi) -> cost callable for environments lo:hi, called once per chunk before its
            first iteration: cand (hi - lo, S, T, A) -> costs (hi - lo, S).
        generator: the solver's generator (persists across solves, like the public `torch_gen`).
        batch_size: environments per chunk (None: all in one chunk).
        callback: called after every update with the public callback's keyword arguments (step, ...).
        chunk_start: called with (lo, hi) after `chunk_cost`, before the chunk's first iteration (where the
            public solvers call each callback's `start_batch()`).
    """
    e = mean.shape[0]
    size = e if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
    inputs = optimizer.prepare(mean, std, generator)
    actions, stds, costs, history, samples = [], [], [], [], []
    for lo in range(0, e, size):
        hi = min(lo + size, e)
        cost_fn = chunk_cost(lo, hi)
        if chunk_start is not None:
            chunk_start(lo, hi)
        out = optimizer.solve_chunk(tuple(t[lo:hi] for t in inputs), cost_fn, generator, callback)
        actions.append(out.actions)
        stds.append(out.std)
        costs.append(out.cost)
        history.extend(out.history)
        samples.append(out.samples)
    std_all = None if any(s is None for s in stds) else torch.cat(stds)
    samples_all = None if any(s is None for s in samples) else torch.cat(samples)
    history_f = [torch.stack(h).tolist() if h else [] for h in history]  # one host sync per chunk, at the end
    return PlanResult(torch.cat(actions), std_all, torch.cat(costs), history_f, samples_all)
