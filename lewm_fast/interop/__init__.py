"""Interop with the public LeWM code (stable-worldmodel): live modules, published checkpoints, drop-in
solvers (CEM, iCEM, MPPI, predictive sampling, gradient) and one-line acceleration. Nothing here
imports stable_worldmodel or transformers unless asked to convert their objects."""

from lewm_fast.interop.accelerate import Acceleration, accelerate
from lewm_fast.interop.names import to_lewm_fast_names, to_transformers_4x_names, vit_naming
from lewm_fast.interop.official import load_official, save_official
from lewm_fast.interop.solvers import CEMSolver, GradientSolver, ICEMSolver, MPPISolver, PredictiveSamplingSolver
from lewm_fast.interop.swm import config_from_swm, from_swm, load_public_state_dict, to_swm

__all__ = [
    "Acceleration",
    "CEMSolver",
    "GradientSolver",
    "ICEMSolver",
    "MPPISolver",
    "PredictiveSamplingSolver",
    "accelerate",
    "config_from_swm",
    "from_swm",
    "load_official",
    "load_public_state_dict",
    "save_official",
    "to_lewm_fast_names",
    "to_swm",
    "to_transformers_4x_names",
    "vit_naming",
]
