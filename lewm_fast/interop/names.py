"""Parameter names of the public LeWM state_dict, and their mapping onto lewm_fast's.

lewm_fast's names equal the public ones with a transformers 5.x ViT encoder. The published weights
were saved with transformers 4.x, whose ViT names differ; `VIT_LAYER_NAMES` maps them (LeWM's ViT has
no pooler; a pooler or mask token found in a public dict is dropped: LeWM's forward never uses them).
"""

from __future__ import annotations

import re

import torch

# (transformers 4.x name, 5.x name) of each ViT layer parameter prefix, inside `encoder.`; {i} = layer.
VIT_LAYER_NAMES = (
    ("encoder.layer.{i}.attention.attention.query.", "layers.{i}.attention.q_proj."),
    ("encoder.layer.{i}.attention.attention.key.", "layers.{i}.attention.k_proj."),
    ("encoder.layer.{i}.attention.attention.value.", "layers.{i}.attention.v_proj."),
    ("encoder.layer.{i}.attention.output.dense.", "layers.{i}.attention.o_proj."),
    ("encoder.layer.{i}.intermediate.dense.", "layers.{i}.mlp.fc1."),
    ("encoder.layer.{i}.output.dense.", "layers.{i}.mlp.fc2."),
    ("encoder.layer.{i}.layernorm_before.", "layers.{i}.layernorm_before."),
    ("encoder.layer.{i}.layernorm_after.", "layers.{i}.layernorm_after."),
)
DROPPED = (r"^encoder\.pooler\.", r"^encoder\.embeddings\.mask_token$")


def _pattern(template: str) -> str:
    return "^" + re.escape(template).replace(re.escape("{i}"), r"(\d+)")


def _rename_encoder(state_dict: dict[str, torch.Tensor], pairs) -> dict[str, torch.Tensor]:
    rules = [(_pattern(src), dst.replace("{i}", r"\1")) for src, dst in pairs]
    out = {}
    for key, value in state_dict.items():
        if key.startswith("encoder."):
            inner = key[len("encoder.") :]
            for pattern, repl in rules:
                inner, n = re.subn(pattern, repl, inner)
                if n:
                    break
            key = "encoder." + inner
        out[key] = value
    return out


def vit_naming(state_dict: dict[str, torch.Tensor]) -> str:
    """'4.x' or '5.x': which transformers ViT naming a LeWM state_dict uses."""
    return "4.x" if any(k.startswith("encoder.encoder.layer.") for k in state_dict) else "5.x"


def to_lewm_fast_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A public LeWM state_dict (4.x or 5.x ViT names) -> lewm_fast names (a new dict, same tensors)."""
    kept = {k: v for k, v in state_dict.items() if not any(re.search(p, k) for p in DROPPED)}
    return _rename_encoder(kept, VIT_LAYER_NAMES)


def to_transformers_4x_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lewm_fast (= 5.x) names -> transformers 4.x names, the layout of the published weights."""
    return _rename_encoder(state_dict, [(dst, src) for src, dst in VIT_LAYER_NAMES])
