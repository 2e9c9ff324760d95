"""lewm_fast: a fast and faithful engine for LeWorldModel (LeWM).

import lewm_fast as lf
model = lf.LeWM(lf.LeWMConfig())
planner = lf.CEMPlanner(model)
actions = planner.plan(pixels, goal)
"""

from lewm_fast import interop
from lewm_fast.config import LeWMConfig
from lewm_fast.loss import lewm_loss
from lewm_fast.model import LeWM
from lewm_fast.planning import CEMPlanner, Planner, PlanResult
from lewm_fast.sigreg import SIGReg, draw_directions, sigreg, sigreg_reference

__version__ = "0.1.0"

__all__ = [
    "CEMPlanner",
    "LeWM",
    "LeWMConfig",
    "PlanResult",
    "Planner",
    "SIGReg",
    "draw_directions",
    "interop",
    "lewm_loss",
    "sigreg",
    "sigreg_reference",
]
