"""Drop-ins for stable-worldmodel's solvers: the public signatures, defaults and outputs on lewm_fast's
optimizers (`lewm_fast.planning.optimizers`), one small file each; what they share is in base.py.

`PUBLIC_SOLVERS` maps each public class name to its drop-in: the one table `accelerate()` patches from.
"""

from lewm_fast.interop.solvers.cem import CEMSolver
from lewm_fast.interop.solvers.gd import GradientSolver
from lewm_fast.interop.solvers.icem import ICEMSolver
from lewm_fast.interop.solvers.mppi import MPPISolver
from lewm_fast.interop.solvers.predictive_sampling import PredictiveSamplingSolver

PUBLIC_SOLVERS: dict[str, type] = {
    "CEMSolver": CEMSolver,
    "ICEMSolver": ICEMSolver,
    "MPPISolver": MPPISolver,
    "PredictiveSamplingSolver": PredictiveSamplingSolver,
    "GradientSolver": GradientSolver,
}

__all__ = ["PUBLIC_SOLVERS", "CEMSolver", "GradientSolver", "ICEMSolver", "MPPISolver", "PredictiveSamplingSolver"]
