"""Interop with the public LeWM code (stable-worldmodel): conversion of live modules and weights."""

from lewm_fast.interop.names import to_lewm_fast_names, to_transformers_4x_names, vit_naming
from lewm_fast.interop.official import load_official, save_official
from lewm_fast.interop.swm import config_from_swm, from_swm, load_public_state_dict

__all__ = [
    "config_from_swm",
    "from_swm",
    "load_official",
    "load_public_state_dict",
    "save_official",
    "to_lewm_fast_names",
    "to_transformers_4x_names",
    "vit_naming",
]
