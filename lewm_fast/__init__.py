"""lewm_fast: a fast and faithful engine for LeWorldModel (LeWM).

import lewm_fast as lf
model = lf.LeWM(lf.LeWMConfig())
planner = lf.CEMPlanner(model)
actions = planner.plan(pixels, goal)
"""

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path


def _source_checkout_kernels() -> None:
    """In a source checkout, `kernels/` beside this package is `lewm_fast.kernels`: register it under
    that name so imports work the same with or without `pip install`. The checkout's own folder wins
    over an editable install of another checkout (a git worktree imported with PYTHONPATH)."""
    if "lewm_fast.kernels" in _sys.modules:
        return
    root = _Path(__file__).resolve().parent.parent
    init = root / "kernels" / "__init__.py"
    checkout = init.exists() and (root / "setup.py").exists() and (root / "csrc").is_dir()
    if not checkout and _importlib_util.find_spec("lewm_fast.kernels") is not None:
        return
    if init.exists():
        spec = _importlib_util.spec_from_file_location(
            "lewm_fast.kernels", init, submodule_search_locations=[str(init.parent)]
        )
        module = _importlib_util.module_from_spec(spec)
        _sys.modules["lewm_fast.kernels"] = module
        spec.loader.exec_module(module)


_source_checkout_kernels()

from lewm_fast import interop  # noqa: E402
from lewm_fast.config import LeWMConfig  # noqa: E402
from lewm_fast.loss import lewm_loss  # noqa: E402
from lewm_fast.model import LeWM  # noqa: E402
from lewm_fast.planning import CEMPlanner, Planner, PlanResult  # noqa: E402
from lewm_fast.sigreg import SIGReg, draw_directions, sigreg, sigreg_reference  # noqa: E402

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
