"""LeWMConfig: every size of the LeWM model, with the published defaults.

The config also converts to and from the published `config.json` (the resolved Hydra config of the
public code), reading sizes from its fields only: `_target_` strings vary between releases and are
ignored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# The ViT sizes that the public encoder factory names ("size": "tiny", ...): width, depth, heads, MLP.
VIT_SIZES = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}


@dataclass
class LeWMConfig:
    """Sizes of the LeWM model. Defaults are the published LeWM (~18.0M parameters).

    Attributes (grouped by part):
        encoder: image_size, patch_size, in_channels, enc_dim (ViT width), enc_depth, enc_heads,
            enc_mlp_dim, enc_ln_eps (Hugging Face ViT uses 1e-12).
        projector: proj_hidden_dim; the embedding width `embed_dim` (D) is its output.
        action encoder: action_dim (per env step), frameskip (env steps per action block),
            action_smoothed_dim (Conv1d channels), action_mlp_scale.
        predictor: num_frames (window), pred_depth, pred_heads, pred_dim_head, pred_mlp_dim,
            pred_hidden_dim, pred_output_dim, dropout, emb_dropout.
        pred_proj: pred_proj_hidden_dim.
    """

    image_size: int = 224
    patch_size: int = 14
    in_channels: int = 3
    enc_dim: int = 192
    enc_depth: int = 12
    enc_heads: int = 3
    enc_mlp_dim: int = 768
    enc_ln_eps: float = 1e-12
    embed_dim: int = 192
    proj_hidden_dim: int = 2048
    action_dim: int = 2
    frameskip: int = 5
    action_smoothed_dim: int = 10
    action_mlp_scale: int = 4
    num_frames: int = 3
    pred_depth: int = 6
    pred_heads: int = 16
    pred_dim_head: int = 64
    pred_mlp_dim: int = 2048
    pred_hidden_dim: int = 192
    pred_output_dim: int = 192
    pred_proj_hidden_dim: int = 2048
    dropout: float = 0.1
    emb_dropout: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"LeWMConfig.{f.name}: expected a positive int, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"LeWMConfig.{f.name}: expected a finite number, got {value!r}")
        if not self.enc_ln_eps > 0:
            raise ValueError(f"LeWMConfig.enc_ln_eps: expected a positive number, got {self.enc_ln_eps}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"LeWMConfig.image_size: expected a multiple of patch_size={self.patch_size}, got {self.image_size}"
            )
        if self.enc_dim % self.enc_heads:
            raise ValueError(
                f"LeWMConfig.enc_dim: expected a multiple of enc_heads={self.enc_heads}, got {self.enc_dim}"
            )
        for name in ("dropout", "emb_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"LeWMConfig.{name}: expected a value in [0, 1), got {getattr(self, name)}")

    @property
    def action_block_dim(self) -> int:
        """Width of one action block: frameskip x action_dim (10 for the published model)."""
        return self.frameskip * self.action_dim

    def replace(self, **changes: Any) -> LeWMConfig:
        """A copy with some fields changed (validated; an unknown field name is a ValueError naming it)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"LeWMConfig: unknown field(s) {unknown}; fields are {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- the published config.json -------------------------------------------------------------

    def to_published(self) -> dict[str, Any]:
        """The published `config.json` shape: a named ViT size where one fits, explicit sizes otherwise;
        only fields the public modules accept, plus a `lewm_fast` section the public code ignores."""

        def mlp(input_dim: int, hidden_dim: int, output_dim: int) -> dict[str, Any]:
            return {
                "_target_": "stable_worldmodel.wm.lewm.module.MLP",
                "input_dim": input_dim,
                "output_dim": output_dim,
                "hidden_dim": hidden_dim,
                "norm_fn": {"_target_": "torch.nn.BatchNorm1d", "_partial_": True},
            }

        named = [
            k for k, v in VIT_SIZES.items() if v == (self.enc_dim, self.enc_depth, self.enc_heads, self.enc_mlp_dim)
        ]
        encoder: dict[str, Any] = {"_target_": "stable_pretraining.backbone.utils.vit_hf"}
        if named and self.enc_ln_eps == 1e-12 and self.in_channels == 3:
            encoder["size"] = named[0]  # the published form
        else:
            encoder.update(hidden_size=self.enc_dim, num_hidden_layers=self.enc_depth,
                           num_attention_heads=self.enc_heads, intermediate_size=self.enc_mlp_dim,
                           layer_norm_eps=self.enc_ln_eps, num_channels=self.in_channels)  # fmt: skip
        encoder.update(patch_size=self.patch_size, image_size=self.image_size, pretrained=False, use_mask_token=False)
        action_encoder: dict[str, Any] = {
            "_target_": "stable_worldmodel.wm.lewm.module.Embedder",
            "input_dim": self.action_block_dim,
            "emb_dim": self.embed_dim,
        }
        if (self.action_smoothed_dim, self.action_mlp_scale) != (10, 4):
            action_encoder.update(smoothed_dim=self.action_smoothed_dim, mlp_scale=self.action_mlp_scale)
        return {
            "_target_": "stable_worldmodel.wm.lewm.LeWM",
            "encoder": encoder,
            "predictor": {
                "_target_": "stable_worldmodel.wm.lewm.module.Predictor",
                "num_frames": self.num_frames,
                "input_dim": self.embed_dim,
                "hidden_dim": self.pred_hidden_dim,
                "output_dim": self.pred_output_dim,
                "depth": self.pred_depth,
                "heads": self.pred_heads,
                "mlp_dim": self.pred_mlp_dim,
                "dim_head": self.pred_dim_head,
                "dropout": self.dropout,
                "emb_dropout": self.emb_dropout,
            },
            "action_encoder": action_encoder,
            "projector": mlp(self.enc_dim, self.proj_hidden_dim, self.embed_dim),
            "pred_proj": mlp(self.pred_output_dim, self.pred_proj_hidden_dim, self.embed_dim),
            # Not read by the public code (its LeWM takes **kwargs): how the action block splits.
            "lewm_fast": {"action_dim": self.action_dim, "frameskip": self.frameskip},
        }

    @classmethod
    def from_published(cls, config: dict[str, Any], action_dim: int | None = None) -> LeWMConfig:
        """Read sizes from a published `config.json` dict. `_target_` strings do not matter.

        The action encoder stores only `input_dim` = frameskip x action_dim; `action_dim` splits it
        (default: the `lewm_fast.action_dim` field when present, else frameskip 5 when it divides).
        Every field is checked: a missing section or field, or a value of the wrong type (a str, a
        non-integral float such as 32.7 where a size goes), raises a ValueError/TypeError naming it.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a JSON object with encoder/predictor/... sections, got "
                            f"{type(config).__name__}")  # fmt: skip
        enc, pred, act, proj = (
            _section(config, part) for part in ("encoder", "predictor", "action_encoder", "projector")
        )
        pred_proj = _section(config, "pred_proj") if config.get("pred_proj") is not None else proj
        width, depth, heads, mlp = _encoder_sizes(enc)
        block = _int(act, "input_dim", "action_encoder")
        action_dim = _action_dim(config, block, action_dim)
        emb_dim, pred_in = _int(act, "emb_dim", "action_encoder"), _int(pred, "input_dim", "predictor")
        if emb_dim != pred_in:
            raise ValueError(f"config.action_encoder.emb_dim: expected predictor.input_dim={pred_in}, got {emb_dim}")
        return cls(
            image_size=_int(enc, "image_size", "encoder"),
            patch_size=_int(enc, "patch_size", "encoder"),
            in_channels=_int(enc, "num_channels", "encoder", 3),
            enc_dim=width,
            enc_depth=depth,
            enc_heads=heads,
            enc_mlp_dim=mlp,
            enc_ln_eps=_float(enc, "layer_norm_eps", "encoder", 1e-12),
            embed_dim=_int(proj, "output_dim", "projector"),
            proj_hidden_dim=_int(proj, "hidden_dim", "projector"),
            action_dim=action_dim,
            frameskip=block // action_dim,
            action_smoothed_dim=_int(act, "smoothed_dim", "action_encoder", 10),
            action_mlp_scale=_int(act, "mlp_scale", "action_encoder", 4),
            num_frames=_int(pred, "num_frames", "predictor"),
            pred_depth=_int(pred, "depth", "predictor"),
            pred_heads=_int(pred, "heads", "predictor"),
            pred_dim_head=_int(pred, "dim_head", "predictor", 64),
            pred_mlp_dim=_int(pred, "mlp_dim", "predictor"),
            pred_hidden_dim=_int(pred, "hidden_dim", "predictor"),
            pred_output_dim=pred_in if pred.get("output_dim") is None else _int(pred, "output_dim", "predictor"),
            pred_proj_hidden_dim=_int(pred_proj, "hidden_dim", "pred_proj"),
            dropout=_float(pred, "dropout", "predictor", 0.0),
            emb_dropout=_float(pred, "emb_dropout", "predictor", 0.0),
        )


# ---- reading config.json fields: each error names the field ----------------------------------------


def _encoder_sizes(enc: dict[str, Any]) -> tuple[int, int, int, int]:
    """(width, depth, heads, MLP) of the encoder: explicit Hugging Face sizes, or a named ViT size."""
    if "hidden_size" in enc:
        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        return tuple(_int(enc, k, "encoder") for k in keys)
    size = _field(enc, "size", "encoder")
    if not isinstance(size, str) or size not in VIT_SIZES:
        raise ValueError(f"config.encoder.size: expected one of {sorted(VIT_SIZES)}, got {size!r}")
    return VIT_SIZES[size]


def _action_dim(config: dict[str, Any], block: int, action_dim: int | None) -> int:
    """How the action block (`input_dim` = frameskip x action_dim) splits: the argument, else the
    `lewm_fast.action_dim` field, else frameskip 5 where it divides."""
    if action_dim is None and config.get("lewm_fast") is not None:
        action_dim = _section(config, "lewm_fast").get("action_dim")
        where = "config.lewm_fast.action_dim"
    else:
        where = "action_dim"
    if action_dim is None:
        action_dim = block // (5 if block % 5 == 0 else 1)
    action_dim = _as_int(action_dim, where)
    if block % action_dim:
        raise ValueError(
            f"config.action_encoder.input_dim: expected a multiple of action_dim={action_dim}, got {block}"
        )
    return action_dim


_MISSING = object()


def _section(config: dict[str, Any], part: str) -> dict[str, Any]:
    section = config.get(part)
    if not isinstance(section, dict):
        raise ValueError(f"config: expected a '{part}' section (a dict), got {section!r}")
    return section


def _field(section: dict[str, Any], name: str, where: str, default: Any = _MISSING) -> Any:
    if name not in section:
        if default is _MISSING:
            raise ValueError(f"config.{where}: missing field '{name}'")
        return default
    return section[name]


def _as_int(value: Any, where: str) -> int:
    """A positive int; an integral float (224.0) is accepted, 32.7 or '224' are not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: expected a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{where}: expected a positive int, got {value}")
    return value


def _int(section: dict[str, Any], name: str, where: str, default: Any = _MISSING) -> int:
    return _as_int(_field(section, name, where, default), f"config.{where}.{name}")


def _float(section: dict[str, Any], name: str, where: str, default: Any = _MISSING) -> float:
    value = _field(section, name, where, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"config.{where}.{name}: expected a finite number, got {value!r}")
    return float(value)
