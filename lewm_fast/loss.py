"""The LeWM training objective: loss = pred_loss + lambda * SIGReg(emb).

pred_loss is the teacher-forced next-embedding MSE over a window of T frames (T = num_frames + 1 = 4
for the published model): pred = predict(emb[:, :-1], act_emb[:, :-1]), target emb[:, 1:].
SIGReg is applied to the encoder embeddings of all T frames, time-major (T, B, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lewm_fast._checks import check_number, check_tensor


def lewm_loss(
    model, pixels: torch.Tensor, actions: torch.Tensor, sigreg, lambd: float = 0.09
) -> dict[str, torch.Tensor]:
    """The two-loss objective.

    Args:
        model: an `lf.LeWM`.
        pixels: (B, T, C, H, W) float, normalised frames, 2 <= T <= num_frames + 1.
        actions: (B, T, frameskip*action_dim) action blocks (the last one is not used).
        sigreg: a callable (T, B, D) -> scalar, e.g. `lf.SIGReg()`.
        lambd: weight of SIGReg, a finite number >= 0.
    Returns:
        dict with `loss`, `pred_loss`, `sigreg_loss` (scalars; `loss` has the graph) and `emb` (B, T, D).
    """
    check_number("lambd", lambd, lo=0)  # NaN or a negative weight would train towards collapse without a word
    t = pixels.shape[1] if isinstance(pixels, torch.Tensor) and pixels.ndim == 5 else None
    if t is not None and not 2 <= t <= model.cfg.num_frames + 1:
        raise ValueError(f"pixels: expected 2 <= T <= num_frames + 1 = {model.cfg.num_frames + 1} frames, got {t}")
    emb = model.encode(pixels)
    check_tensor("actions", actions, (emb.shape[0], emb.shape[1], model.cfg.action_block_dim))
    act_emb = model.embed_actions(actions)
    pred = model.predict_unchecked(emb[:, :-1], act_emb[:, :-1])
    pred_loss = F.mse_loss(pred, emb[:, 1:])
    sigreg_loss = sigreg(emb.transpose(0, 1))
    return {
        "loss": pred_loss + lambd * sigreg_loss,
        "pred_loss": pred_loss,
        "sigreg_loss": sigreg_loss,
        "emb": emb,
    }
