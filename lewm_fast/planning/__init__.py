"""Planning with LeWM: the CEM planner, its reference (public semantics) and fast engines."""

from lewm_fast.planning import engine as _engine  # noqa: F401  (registers the "torch" and "triton" engines)
from lewm_fast.planning.planner import CEMPlanner, PlanResult
from lewm_fast.planning.reference import cem_reference, rollout_cost_reference

__all__ = ["CEMPlanner", "PlanResult", "cem_reference", "rollout_cost_reference"]
