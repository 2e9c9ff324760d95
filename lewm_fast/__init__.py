"""lewm_fast: a fast and faithful engine for LeWorldModel (LeWM).

import lewm_fast as lf
model = lf.LeWM(lf.LeWMConfig())
planner = lf.CEMPlanner(model)
actions = planner.plan(pixels, goal)

`lf.interop` (stable-worldmodel interoperability) is imported on first use: it sits above the model and
planning layers (docs/architecture.md), and importing lewm_fast does not pull it in.
"""

import importlib

from lewm_fast._version import __version__ as __version__
from lewm_fast.config import LeWMConfig
from lewm_fast.loss import lewm_loss
from lewm_fast.model import LeWM
from lewm_fast.planning import CEMPlanner, Planner, PlanResult
from lewm_fast.sigreg import SIGReg, draw_directions, sigreg, sigreg_reference

_LAZY_SUBMODULES = ("interop",)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"lewm_fast.{name}")  # also binds it as an attribute of the package
    raise AttributeError(f"module 'lewm_fast' has no attribute {name!r}")


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
