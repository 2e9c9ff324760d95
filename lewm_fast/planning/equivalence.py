"""Equivalence of a fast planner with the reference, stated so that it holds on any arithmetic.

A fast engine computes in another arithmetic than the reference (other kernels, summation orders, ISAs,
bf16), so its costs differ in the last bits, and elite selection turns a difference at a near-tie into
another plan: two arithmetics asked for the same plan after 30 iterations agree or not by luck. What is
claimed instead, each against the exact (float64) reference cost (docs/numerics.md):

1. Costs (`check_costs`): on the same candidates, |fast - exact| <= bound, where the bound is derived
   from the arithmetic at hand: OWN_ERROR_FACTOR x the error of the reference path run in the planner's
   dtype on the same inputs (PyTorch's own rounding on this machine, fp32 or bf16), plus FLOOR_ULPS units
   of roundoff of the costs' magnitude (flash-attention's rule: a kernel may be at most a small multiple
   less accurate than PyTorch itself).
2. One iteration (`replay`): given the same candidates and the fast costs, the fast update (the engine's
   op set) equals the optimizer's reference update: bit for bit where the op set updates with the
   reference's operations (the CPU), within UPDATE_ULPS units of roundoff per summed value where a fused
   kernel sums in another order (Triton). Among exactly equal costs torch.topk promises no order, so a
   kernel that takes the lowest index first is replayed with that tie rule.
3. Whole plans (`trace`): the planner's own solve is observed iteration by iteration (its engine runs
   it eagerly with an observer). Every iteration satisfies 1 and 2, and its selection
   (the elites, their order, the argmin) differs from the selection by exact costs only at near-ties:
   the candidate at rank p has an exact cost within twice the bound of the p-th lowest exact cost (which
   1 implies for a correct selection). Beside it runs the exact plan (the optimizer on exact costs, on
   the same draws). A rank-based optimizer (CEM, iCEM, predictive sampling: the new distribution depends
   on the costs only through their order) whose update replays bit for bit and whose selections never
   differ from the exact run's ends in the exact plan, bit for bit.
   After a flip at a near-tie (or with MPPI's weights, which move continuously with the costs), plans are
   compared by quality instead of value (`compare_quality`): the exact cost of the final plans, over
   several seeds.

The reference backend itself is the public arithmetic: it equals the public solvers bit for bit
(tests/test_fixture_parity.py, tests/test_solvers_peer.py); this module is about the fast backends.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from lewm_fast.planning.reference import encode_reference, rollout_cost_reference

# A fast cost may be this many times further from the exact cost than the reference path in the same dtype.
OWN_ERROR_FACTOR = 2.0
# ... plus this many units of roundoff of the costs' magnitude (a floor for inputs the reference rounds exactly).
FLOOR_ULPS = 8
# A fused update may differ from the reference update by this many units of roundoff per summed value.
UPDATE_ULPS = 4
# After a flip, the fast plans may lose at most this fraction of the exact plans' improvement, over the seeds.
QUALITY_TOLERANCE = 0.25


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1 to the next number in `dtype`: 2^-24 for fp32, 2^-8 for bf16."""
    return torch.finfo(dtype).eps / 2


@dataclass(frozen=True)
class CostCheck:
    """error: max |fast - exact|; own_error: max |reference in the planner's dtype - exact|; bound: what
    `error` may be (claim 1)."""

    error: float
    own_error: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.error <= self.bound


def _max_abs(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """max |a - b| in float64 (0 where either is absent)."""
    if a is None or b is None:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def derived_bound(exact: torch.Tensor, own: torch.Tensor, dtype: torch.dtype) -> float:
    """How far from `exact` (float64) another arithmetic in `dtype` may land: OWN_ERROR_FACTOR x the error
    of `own` (the reference computed in `dtype`, same inputs) + FLOOR_ULPS units of roundoff of the
    magnitude. The bound of claim 1 for costs; any reference output's (tests/test_fixture_parity.py)."""
    return _bound(exact, _max_abs(own, exact), dtype)


def _bound(exact: torch.Tensor, own_error: float, dtype: torch.dtype) -> float:
    return OWN_ERROR_FACTOR * own_error + FLOOR_ULPS * unit_roundoff(dtype) * exact.abs().max().item()


def check_costs(fast: torch.Tensor, exact: torch.Tensor, own: torch.Tensor, dtype: torch.dtype) -> CostCheck:
    """Claim 1 for fast, exact and own costs (any equal shapes) of the same candidates."""
    own_error = _max_abs(own, exact)
    return CostCheck(_max_abs(fast, exact), own_error, _bound(exact, own_error, dtype))


class ReferenceCosts:
    """The reference cost of one model in float64 (the exact costs) and in a planner's dtype (its rounding).

    `encode(pixels, goal)` (or `use_embeddings`) once per problem, then `exact(cand)` (E, S) float64 and
    `own(cand)` (E, S) costs.
    """

    def __init__(self, model, dtype: torch.dtype):
        self.dtype = dtype
        self.exact_model = copy.deepcopy(model).double().eval()
        params = next(model.parameters())
        self.own_model = model if params.dtype == dtype else copy.deepcopy(model).to(dtype).eval()
        self._emb: tuple | None = None

    def encode(self, pixels: torch.Tensor, goal: torch.Tensor) -> None:
        """pixels (E, H, C, h, w), goal (E, C, h, w): the embeddings every later cost rolls out from."""
        exact = encode_reference(self.exact_model, pixels.double(), goal.double())
        own = encode_reference(self.own_model, pixels.to(self.dtype), goal.to(self.dtype))
        self._emb = (exact, own)

    def use_embeddings(self, hist: torch.Tensor, goal: torch.Tensor) -> None:
        """hist (E, H, D), goal (E, D): roll out from given embeddings instead (a rollout checked alone)."""
        self._emb = ((hist.double(), goal.double()), (hist.to(self.dtype), goal.to(self.dtype)))

    @torch.no_grad()
    def exact(self, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S) float64 costs."""
        (hist, goal), _ = self._emb
        return rollout_cost_reference(self.exact_model, hist, goal, cand.double())

    @torch.no_grad()
    def own(self, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S) costs of the reference path in the planner's dtype."""
        _, (hist, goal) = self._emb
        return rollout_cost_reference(self.own_model, hist, goal, cand.to(self.dtype))


def check_planner_costs(planner, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> CostCheck:
    """Claim 1 for `planner.cost` (a fast planner) on candidates cand (E, S, T, A), from the pixels."""
    ref = ReferenceCosts(planner.model, planner.dtype)
    ref.encode(pixels, goal)
    return check_costs(planner.cost(pixels, goal, cand), ref.exact(cand), ref.own(cand), planner.dtype)


# ---- one iteration ----------------------------------------------------------------------------------


def replay_error(fast, reference) -> float:
    """Max |difference| between two optimizer states (mean, std, reported cost, carried elites)."""
    errors = [_max_abs(fast.mean, reference.mean), _max_abs(fast.std, reference.std),
              _max_abs(fast.cost, reference.cost)]  # fmt: skip
    if fast.elites is not None and reference.elites is not None:
        n = min(fast.elites.shape[1], reference.elites.shape[1])
        errors.append(_max_abs(fast.elites[:, :n], reference.elites[:, :n]))
    return max(errors)


def ties_to_lowest_index(costs: torch.Tensor) -> torch.Tensor:
    """costs (E, S) as float64 with exact ties broken towards the lowest index and every other order kept:
    each cost moves by |c| x index x 2^-40, less than half its fp32 spacing (|c| x 2^-24) for S < 2^16.
    torch.topk promises no order among equal costs; a fused kernel takes the lowest index first."""
    index = torch.arange(costs.shape[1], device=costs.device, dtype=torch.float64)
    return costs.double() + costs.double().abs() * index * 2.0**-40


def replay(optimizer, op_set, state, cand: torch.Tensor, costs: torch.Tensor, new_state) -> tuple[float, float]:
    """Claim 2 for one iteration: (error, bound) of the fast update's `new_state` against the optimizer's
    reference update on the same candidates and costs; where exact ties among the costs were broken
    otherwise, against the reference update with ties to the lowest index (the smaller error)."""
    bound = replay_bound(optimizer, op_set, cand, costs)
    error = replay_error(new_state, optimizer.update(state, cand, costs)[0])
    if error > bound:
        error = min(error, replay_error(new_state, optimizer.update(state, cand, ties_to_lowest_index(costs))[0]))
    return error, bound


def replay_bound(optimizer, ops, cand: torch.Tensor, costs: torch.Tensor) -> float:
    """0 where the op set updates with the reference's operations; else UPDATE_ULPS units of roundoff per
    summed value (the selected candidates, or all S for MPPI without top-k) of the values' magnitude."""
    if getattr(ops, "updates_as_reference", False):
        return 0.0
    summed = optimizer.selection_size or cand.shape[1]
    scale = max(cand.abs().max().item(), costs.abs().max().item())
    return UPDATE_ULPS * summed * unit_roundoff(torch.float32) * scale


def selection(optimizer, costs: torch.Tensor) -> torch.Tensor | None:
    """(E, k) indices of the k = `optimizer.selection_size` lowest costs, best first (what every sampling
    optimizer's update selects); None for an optimizer that selects none (MPPI weighting all samples)."""
    k = optimizer.selection_size
    return torch.topk(costs, k, dim=1, largest=False).indices if k else None


def selection_gap(optimizer, costs: torch.Tensor, exact: torch.Tensor) -> tuple[float, bool]:
    """(max over ranks p of |exact cost of the candidate the costs rank p-th - the p-th lowest exact cost|,
    whether the two rankings select differently). 0 and False for an optimizer that selects nothing."""
    chosen = selection(optimizer, costs)
    if chosen is None:
        return 0.0, False
    best = torch.topk(exact, chosen.shape[1], dim=1, largest=False)
    gap = (exact.gather(1, chosen) - best.values).abs().max().item()
    return gap, not torch.equal(chosen, best.indices)


@dataclass(frozen=True)
class IterationCheck:
    """One iteration of a traced fast solve: its cost check (claim 1), replay error and bound (claim 2),
    selection gap (near-ties: at most twice the cost bound) and whether its selection differs from the
    selection by exact costs."""

    step: int
    costs: CostCheck
    replay_error: float
    replay_bound: float
    selection_gap: float
    selection_differs: bool

    @property
    def ok(self) -> bool:
        near_tie = self.selection_gap <= 2 * self.costs.bound
        return self.costs.ok and self.replay_error <= self.replay_bound and near_tie


# ---- whole plans -------------------------------------------------------------------------------------


@dataclass
class Trace:
    """A fast solve observed iteration by iteration beside the exact run on the same draws (claim 3).

    iterations: one check per iteration; flip_step: the first iteration whose selection differs from the
    exact run's (None: none); plans_equal: the fast plan equals the exact run's bit for bit; must_equal:
    claim 3 requires it (a rank-based optimizer, an update that replays bit for bit, no flip);
    fast_cost, exact_cost, start_cost: (E,) exact costs of the fast plan, the exact run's plan and the
    initial mean.
    """

    iterations: list[IterationCheck] = field(default_factory=list)
    flip_step: int | None = None
    plans_equal: bool = False
    must_equal: bool = False
    fast_cost: torch.Tensor | None = None
    exact_cost: torch.Tensor | None = None
    start_cost: torch.Tensor | None = None

    @property
    def ok(self) -> bool:
        """Claims 1-3 held at every iteration (quality after a flip is judged over seeds: `compare_quality`)."""
        return all(it.ok for it in self.iterations) and (self.plans_equal or not self.must_equal)

    def failures(self) -> list[str]:
        """What failed, one line each (empty when `ok`)."""
        out = [f"iteration {it.step}: {it}" for it in self.iterations if not it.ok]
        if self.must_equal and not self.plans_equal:
            out.append("no selection flipped, yet the fast plan is not the exact run's plan")
        return out

    def summary(self) -> dict:
        """The trace in numbers (JSON-able): worst ratios to the bounds, flips, qualities."""
        its = self.iterations
        return {
            "ok": self.ok, "iterations": len(its), "flip_step": self.flip_step, "plans_equal": self.plans_equal,
            "worst_cost_error_over_bound": max(it.costs.error / it.costs.bound for it in its),
            "worst_replay_error": max(it.replay_error for it in its),
            "selection_differs_at": [it.step for it in its if it.selection_differs],
            "fast_cost": self.fast_cost.tolist(), "exact_cost": self.exact_cost.tolist(),
            "start_cost": self.start_cost.tolist(),
        }  # fmt: skip


def _same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


class _ExactRun:
    """The optimizer on exact costs, on the draws of a generator seeded like the fast solve's, one iteration
    per fast iteration (claim 3's lockstep)."""

    def __init__(self, optimizer, ref: ReferenceCosts, mean0: torch.Tensor, seed: int):
        self.opt, self.ref = optimizer, ref
        self.state = optimizer.init(mean0, torch.full_like(mean0, optimizer.initial_std))
        self.generator = torch.Generator(device=mean0.device).manual_seed(seed)

    def step(self, fast_cand: torch.Tensor, fast_exact: torch.Tensor) -> torch.Tensor | None:
        """One iteration; returns its selection. fast_exact: the exact costs of the fast iteration's
        candidates (reused while both runs draw the same candidates)."""
        cand = self.opt.candidates(self.state, self.generator)
        costs = fast_exact if torch.equal(cand, fast_cand) else self.ref.exact(cand)
        self.state = self.opt.update(self.state, cand, costs)[0]
        return selection(self.opt, costs)


def trace(planner, pixels: torch.Tensor, goal: torch.Tensor, seed: int = 0) -> Trace:
    """Solve (pixels (E, H, C, h, w), goal (E, C, h, w)) with a fast planner from `seed` (reseeding it),
    observing every iteration of the real solve, and check claims 1-3 beside the exact run."""
    opt, engine, dev = planner.optimizer, planner.engine, planner.device
    if opt.kind != "sampling" or not hasattr(engine, "embed"):
        raise ValueError(f"planner: expected a fast backend and a sampling solver, got {planner.backend!r}, "
                         f"{planner.solver!r}")  # fmt: skip
    ref = ReferenceCosts(planner.model, planner.dtype)
    ref.encode(pixels.to(dev), goal.to(dev))
    mean0 = torch.zeros(pixels.shape[0], planner.horizon, planner.action_block_dim, device=dev)
    exact_run = _ExactRun(opt, ref, mean0, seed)
    out = Trace(must_equal=opt.rank_based and getattr(engine.ops, "updates_as_reference", False))

    def observe(step, state, cand, costs, new_state):
        exact, own = ref.exact(cand), ref.own(cand)
        error, bound = replay(opt, engine.ops, state, cand, costs, new_state)
        gap, differs = selection_gap(opt, costs, exact)
        check = check_costs(costs, exact, own, planner.dtype)
        out.iterations.append(IterationCheck(step, check, error, bound, gap, differs))
        exact_selection = exact_run.step(cand, exact)
        if out.flip_step is None and not _same_tensor(selection(opt, costs), exact_selection):
            out.flip_step = step

    planner.reseed(seed)
    hist, goal_emb = engine.embed(pixels, goal)
    actions = engine.plan_embedded(hist, goal_emb, mean0, torch.full_like(mean0, opt.initial_std), observe).actions
    exact_actions = opt.result(exact_run.state)[0]
    out.plans_equal = torch.equal(actions, exact_actions)
    out.must_equal = out.must_equal and out.flip_step is None
    out.fast_cost, out.exact_cost = ref.exact(actions[:, None])[:, 0], ref.exact(exact_actions[:, None])[:, 0]
    out.start_cost = ref.exact(mean0[:, None])[:, 0]
    return out


@dataclass(frozen=True)
class QualityCheck:
    """Over the traces whose fast and exact plans differ: the mean exact cost of the fast plans, of the
    exact plans, and of the initial means; ok when the fast plans lose at most QUALITY_TOLERANCE of the
    exact plans' improvement."""

    parted: int
    fast_cost: float
    exact_cost: float
    start_cost: float

    @property
    def ok(self) -> bool:
        improvement = self.start_cost - self.exact_cost
        return self.parted == 0 or self.fast_cost - self.exact_cost <= QUALITY_TOLERANCE * max(improvement, 0.0)


def compare_quality(traces: list[Trace]) -> QualityCheck:
    """Plan quality where the fast and exact plans parted (after a flip, or MPPI's continuous weights)."""
    parted = [t for t in traces if not t.plans_equal]
    if not parted:
        return QualityCheck(0, 0.0, 0.0, 0.0)

    def mean(name: str) -> float:
        return torch.cat([getattr(t, name) for t in parted]).mean().item()

    return QualityCheck(len(parted), mean("fast_cost"), mean("exact_cost"), mean("start_cost"))
