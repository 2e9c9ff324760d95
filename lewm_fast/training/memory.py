"""What a training step surely holds in memory, estimated before anything is allocated, so that a request
that cannot fit (`--num-proj 1000000000`, a model of billions of parameters, a huge batch) is refused
naming the flag that asks for the most, with the estimate (lewm_fast/_memory.py).

The estimate is a lower bound (every term is held at once during a step; activations count only the
encoder's residual stream per layer, attention and MLP temporaries come on top):
- parameters with their gradients and AdamW's two moments: 16 bytes per fp32 parameter (counted on the
  meta device: nothing is allocated);
- the batch: frames as float32, (B, T, 3, S, S);
- the encoder's residual stream, kept for backward: B x T x tokens x width x depth floats;
- SIGReg: the directions (D, M) and the projections (T, B, M).
"""

from __future__ import annotations

import torch

from lewm_fast._memory import check_fits, gib
from lewm_fast.config import LeWMConfig

FLOAT = 4


def parameter_count(cfg: LeWMConfig) -> int:
    """Parameters of `lf.LeWM(cfg)`, counted on the meta device (no memory is allocated)."""
    from lewm_fast.model import LeWM

    with torch.device("meta"):
        return sum(p.numel() for p in LeWM(cfg).parameters())


def train_step_bytes(cfg: LeWMConfig, local_batch: int, num_proj: int) -> dict[str, int]:
    """{flag: bytes} of a training step's lower bound (module docstring), per flag that sets the term."""
    frames = cfg.num_frames + 1
    tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
    batch = local_batch * frames * (3 * cfg.image_size**2 + tokens * cfg.enc_dim * cfg.enc_depth) * FLOAT
    sigreg = (cfg.embed_dim * num_proj + frames * local_batch * num_proj) * FLOAT
    return {"--model": 4 * FLOAT * parameter_count(cfg), "--batch-size": batch, "--num-proj": sigreg}


def check_train_memory(cfg: LeWMConfig, local_batch: int, num_proj: int, device: torch.device) -> None:
    """Refuse a step that cannot fit on `device`, naming the flag with the largest share and the estimate."""
    parts = train_step_bytes(cfg, local_batch, num_proj)
    largest = max(parts, key=parts.get)
    what = "a training step (" + ", ".join(f"{gib(v)} for {k}" for k, v in parts.items()) + ")"
    hints = {"--model": "a smaller model", "--batch-size": "a smaller batch", "--num-proj": "fewer SIGReg directions"}
    check_fits(largest, sum(parts.values()), device, what, f"ask for {hints[largest]}")
