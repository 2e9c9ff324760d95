"""Planning with LeWM: the planners, their optimizers (`optimizers/`), backends (`backends.py`), the
reference (public semantics) and the fast engines."""

from lewm_fast.planning.backends import available_backends, resolve_backend
from lewm_fast.planning.optimizers import available_optimizers, make_optimizer
from lewm_fast.planning.plan_result import PlanResult
from lewm_fast.planning.planner import CEMPlanner, Planner
from lewm_fast.planning.reference import cem_reference, lewm_cost_reference, rollout_cost_reference

__all__ = [
    "CEMPlanner",
    "PlanResult",
    "Planner",
    "available_backends",
    "available_optimizers",
    "cem_reference",
    "lewm_cost_reference",
    "make_optimizer",
    "resolve_backend",
    "rollout_cost_reference",
]
