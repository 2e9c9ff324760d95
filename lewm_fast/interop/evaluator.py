"""stable-worldmodel's planning cost objects, recognised so that the drop-ins plan them on the packed LeWM
rollout (stable-worldmodel's current source; release 0.1.1 has none of these).

There a LeWM reaches a solver as `ShootingCostEvaluator(model, objective)`: the evaluator encodes the goal
(`default_goal_encode` / `flat_goal_encode`), rolls the candidates out (`model.rollout`: candidates are
strictly future actions, `info["action_history"]` holds the H - 1 executed blocks between H context
frames) and scores the rollout with the objective. Recognised, by class name, defining module and
structure (nothing here imports stable_worldmodel):
- the evaluator class itself (a subclass that overrides `get_cost` or `_rollout` is not), with the
  default goal encoder, over a LeWM (`lf.LeWM` or the public one, its `encode`/`rollout`/`predict` its
  class's own);
- objectives built from `GoalMSE()` (default keys, reduction "sum": the packed rollout's cost),
  `ControlPenalty()` (default key: sum of squared candidates) and `WeightedSum` of those, nested or not.
The packed cost of a recognised objective is the same expression evaluated in the same order: each
`GoalMSE` is the packed goal cost, each `ControlPenalty` is computed on the candidates, each
`WeightedSum` adds `weight * term` left to right. Anything else (another objective, a custom goal
encoder, a pre-filled `goal_emb` or `emb`, H > 1 context frames) runs on the generic loop around the
evaluator's own `get_cost`, which is exact for every cost object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PLANNING_MODULE = "stable_worldmodel.planning"
GOAL_ENCODERS = ("default_goal_encode", "flat_goal_encode")


def public_class(obj, name: str, module_prefix: str) -> type | None:
    """The class called `name` defined under `module_prefix` in `obj`'s class hierarchy, or None."""
    for cls in type(obj).__mro__:
        if cls.__name__ == name and cls.__module__.startswith(module_prefix):
            return cls
    return None


def _own(obj, cls: type, methods: tuple[str, ...]) -> bool:
    """Every one of `methods` is `cls`'s own on `obj` (not overridden by a subclass)."""
    return all(getattr(type(obj), m, None) is getattr(cls, m, None) for m in methods)


# ---- objectives: a small tree of the recognised terms -----------------------------------------------


@dataclass(frozen=True)
class GoalTerm:
    """`GoalMSE()`: sum over D of (last predicted embedding - last goal embedding)^2, (E, S)."""


@dataclass(frozen=True)
class ControlTerm:
    """`ControlPenalty()`: the candidates' squared sum over (horizon, A), (E, S)."""


@dataclass(frozen=True)
class SumTerm:
    """`WeightedSum([(w, term), ...])`: sum of w * term, added left to right."""

    terms: tuple[tuple[float, object], ...]


def objective_terms(objective) -> GoalTerm | ControlTerm | SumTerm | None:
    """The recognised tree of a public objective, or None (it runs on the generic loop)."""
    if public_class(objective, "GoalMSE", PLANNING_MODULE) is not None:
        plain = (objective.pred_key, objective.goal_key, objective.reduction)
        return GoalTerm() if plain == ("predicted_emb", "goal_emb", "sum") else None
    if public_class(objective, "ControlPenalty", PLANNING_MODULE) is not None:
        return ControlTerm() if objective.action_key == "action_candidates" else None
    if public_class(objective, "WeightedSum", PLANNING_MODULE) is not None:
        terms = [objective_terms(term) for term in objective.objectives]
        if any(t is None for t in terms) or len(terms) != len(objective.weights):
            return None
        return SumTerm(tuple(zip(objective.weights, terms)))
    return None


def objective_value(term, goal_cost: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """The objective's (E, S) cost from the goal cost (E, S) and the candidates (E, S, horizon, A), with
    the public objectives' operations in their order."""
    if isinstance(term, GoalTerm):
        return goal_cost
    if isinstance(term, ControlTerm):
        return cand.pow(2).sum(dim=tuple(range(2, cand.ndim)))
    total = None
    for weight, sub in term.terms:
        value = weight * objective_value(sub, goal_cost, cand)
        total = value if total is None else total + value
    return total


def uses_goal(term) -> bool:
    return isinstance(term, GoalTerm) or (isinstance(term, SumTerm) and any(uses_goal(t) for _, t in term.terms))


# ---- the evaluator ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecognisedEvaluator:
    """A `ShootingCostEvaluator` the packed rollout can run: its model (a LeWM) and its objective's tree."""

    model: object
    objective: GoalTerm | ControlTerm | SumTerm

    def accepts(self, info_dict: dict) -> bool:
        """Whether a solve's info_dict has what the packed path computes: one context frame (no executed
        action blocks to feed), no pre-filled embeddings."""
        if any(k in info_dict for k in ("goal_emb", "emb")):
            return False
        pixels, history = info_dict.get("pixels"), info_dict.get("action_history")
        if not torch.is_tensor(pixels) or pixels.ndim != 5 or pixels.shape[1] != 1:
            return False
        return history is None or (torch.is_tensor(history) and history.ndim == 3 and history.shape[1] == 0)

    def total(self, goal_cost: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        return objective_value(self.objective, goal_cost, cand)


def recognise_evaluator(cost) -> RecognisedEvaluator | None:
    """The recognised form of a public `ShootingCostEvaluator` over a LeWM, or None."""
    cls = public_class(cost, "ShootingCostEvaluator", PLANNING_MODULE)
    if cls is None or not _own(cost, cls, ("get_cost", "_rollout", "criterion")):
        return None
    encode_goal = getattr(cost, "encode_goal", None)
    if not (getattr(encode_goal, "__name__", None) in GOAL_ENCODERS
            and getattr(encode_goal, "__module__", "").startswith(PLANNING_MODULE)):  # fmt: skip
        return None
    objective = objective_terms(getattr(cost, "objective", None))
    if objective is None or not uses_goal(objective) or not is_dynamics_lewm(getattr(cost, "model", None)):
        return None
    return RecognisedEvaluator(cost.model, objective)


def is_dynamics_lewm(model) -> bool:
    """An `lf.LeWM` or the current source's public LeWM, with its class's own encode/rollout/predict."""
    from lewm_fast.model import LeWM

    if isinstance(model, LeWM):
        return _own(model, LeWM, ("encode", "rollout", "predict_unchecked"))
    cls = public_class(model, "LeWM", "stable_worldmodel.wm.lewm")
    return cls is not None and callable(getattr(cls, "rollout", None)) and _own(model, cls, ("encode", "rollout",
                                                                                               "predict"))  # fmt: skip


class WithObjective:
    """An optimizer of the registry whose costs are the objective's: every cost it receives from the
    rollout (the goal cost) becomes `objective(goal cost, candidates)` before the update, on every engine
    (the fast engines' `fast_update`, the eager loop's `solve_chunk`). Everything else is the optimizer's."""

    def __init__(self, optimizer, objective):
        self._optimizer, self.objective = optimizer, objective

    def __getattr__(self, name):
        return getattr(self._optimizer, name)

    def to(self, device) -> WithObjective:
        return WithObjective(self._optimizer.to(device), self.objective)

    def fast_update(self, state, cand, costs, ops):
        return self._optimizer.fast_update(state, cand, objective_value(self.objective, costs, cand), ops)

    def solve_chunk(self, inputs, cost_fn, generator, callback=None):
        def total(cand):
            return objective_value(self.objective, cost_fn(cand), cand)

        return self._optimizer.solve_chunk(inputs, total, generator, callback)
