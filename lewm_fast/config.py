"""LeWMConfig: every size of the LeWM model, with the published defaults (DESIGN.md section 2).

The config also converts to and from the published `config.json` (the resolved Hydra config of the
public code), reading sizes from its fields only: `_target_` strings vary between releases and are
ignored.
"""

from __future__ import annotations

import dataclasses
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
        """A copy with some fields changed (validated)."""
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
        """
        for part in ("encoder", "predictor", "action_encoder", "projector"):
            if not isinstance(config.get(part), dict):
                raise ValueError(f"config: expected a '{part}' section (a dict), got {config.get(part)!r}")
        enc, pred, act, proj = config["encoder"], config["predictor"], config["action_encoder"], config["projector"]
        pred_proj = config.get("pred_proj") or proj

        def need(section: dict[str, Any], name: str, where: str) -> Any:
            if name not in section:
                raise ValueError(f"config.{where}: missing field '{name}'")
            return section[name]

        if "hidden_size" in enc:
            width, depth, heads, mlp = (
                enc["hidden_size"],
                need(enc, "num_hidden_layers", "encoder"),
                need(enc, "num_attention_heads", "encoder"),
                need(enc, "intermediate_size", "encoder"),
            )
        else:
            size = need(enc, "size", "encoder")
            if size not in VIT_SIZES:
                raise ValueError(f"config.encoder.size: expected one of {sorted(VIT_SIZES)}, got {size!r}")
            width, depth, heads, mlp = VIT_SIZES[size]
        block = int(need(act, "input_dim", "action_encoder"))
        if action_dim is None:
            action_dim = (config.get("lewm_fast") or {}).get("action_dim")
        if action_dim is None:
            action_dim = block // (5 if block % 5 == 0 else 1)
        if block % action_dim:
            raise ValueError(
                f"config.action_encoder.input_dim: expected a multiple of action_dim={action_dim}, got {block}"
            )
        emb_dim = int(need(act, "emb_dim", "action_encoder"))
        pred_in = int(need(pred, "input_dim", "predictor"))
        if emb_dim != pred_in:
            raise ValueError(f"config.action_encoder.emb_dim: expected predictor.input_dim={pred_in}, got {emb_dim}")
        return cls(
            image_size=int(need(enc, "image_size", "encoder")),
            patch_size=int(need(enc, "patch_size", "encoder")),
            in_channels=int(enc.get("num_channels", 3)),
            enc_dim=int(width),
            enc_depth=int(depth),
            enc_heads=int(heads),
            enc_mlp_dim=int(mlp),
            enc_ln_eps=float(enc.get("layer_norm_eps", 1e-12)),
            embed_dim=int(need(proj, "output_dim", "projector")),
            proj_hidden_dim=int(need(proj, "hidden_dim", "projector")),
            action_dim=int(action_dim),
            frameskip=block // int(action_dim),
            action_smoothed_dim=int(act.get("smoothed_dim", 10)),
            action_mlp_scale=int(act.get("mlp_scale", 4)),
            num_frames=int(need(pred, "num_frames", "predictor")),
            pred_depth=int(need(pred, "depth", "predictor")),
            pred_heads=int(need(pred, "heads", "predictor")),
            pred_dim_head=int(pred.get("dim_head", 64)),
            pred_mlp_dim=int(need(pred, "mlp_dim", "predictor")),
            pred_hidden_dim=int(need(pred, "hidden_dim", "predictor")),
            pred_output_dim=int(pred.get("output_dim") or pred_in),
            pred_proj_hidden_dim=int(need(pred_proj, "hidden_dim", "pred_proj")),
            dropout=float(pred.get("dropout", 0.0)),
            emb_dropout=float(pred.get("emb_dropout", 0.0)),
        )
