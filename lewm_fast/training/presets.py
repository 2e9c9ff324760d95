"""Training presets: a model config plus the optimisation defaults that go with it.

- `paper`: the published LeWM (`LeWMConfig()`'s defaults) at 224 px, batch 128, lr 5e-5 (the public recipe).
- `small`: a CPU-trainable LeWM at 64 px (patch 16 -> 16 patches) with a 4-layer, 128-wide encoder and
  a 3-layer predictor (~2.3M parameters). Chosen by measurement so that TwoRoom trains to good
  planning in well under 20 minutes on 2 CPU cores (docs/training.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lewm_fast.config import LeWMConfig


@dataclass(frozen=True)
class Preset:
    """A model config and default optimisation settings (each overridable on the command line)."""

    model: LeWMConfig
    batch_size: int
    lr: float
    steps: int
    warmup: int
    extra: dict = field(default_factory=dict)


def _small() -> LeWMConfig:
    return LeWMConfig(
        image_size=64, patch_size=16, enc_dim=128, enc_depth=4, enc_heads=4, enc_mlp_dim=512,
        embed_dim=128, proj_hidden_dim=512, pred_depth=3, pred_heads=4, pred_dim_head=32, pred_mlp_dim=512,
        pred_hidden_dim=128, pred_output_dim=128, pred_proj_hidden_dim=512, dropout=0.0,
    )  # fmt: skip


# Defaults of the training choices no preset sets, written once (a TrainConfig field left None means
# "the preset's value, or on --resume the run's"; this is what a fresh run gets otherwise).
DEFAULTS = {"preset": "small", "lambd": 0.09, "weight_decay": 1e-3, "grad_clip": 1.0, "val_fraction": 0.1,
            "num_proj": 1024, "seed": 0, "amp": "auto"}  # fmt: skip

PRESETS: dict[str, Preset] = {
    "paper": Preset(model=LeWMConfig(), batch_size=128, lr=5e-5, steps=100_000, warmup=1000),
    "small": Preset(model=_small(), batch_size=64, lr=1e-3, steps=2000, warmup=200),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]
