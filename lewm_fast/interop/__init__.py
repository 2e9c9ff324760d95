"""Interop with the public LeWM code (stable-worldmodel): live modules, published checkpoints, a
drop-in CEM solver and one-line acceleration. Nothing here imports stable_worldmodel or transformers
unless asked to convert their objects."""

from lewm_fast.interop.accelerate import Acceleration, accelerate
from lewm_fast.interop.names import to_lewm_fast_names, to_transformers_4x_names, vit_naming
from lewm_fast.interop.official import load_official, save_official
from lewm_fast.interop.solver import CEMSolver
from lewm_fast.interop.swm import config_from_swm, from_swm, load_public_state_dict

__all__ = [
    "Acceleration",
    "CEMSolver",
    "accelerate",
    "config_from_swm",
    "from_swm",
    "load_official",
    "load_public_state_dict",
    "save_official",
    "to_lewm_fast_names",
    "to_transformers_4x_names",
    "vit_naming",
]
