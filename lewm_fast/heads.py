"""Small heads of LeWM: the BatchNorm MLP (projector and pred_proj) and the action encoder.

Names mirror the public `stable_worldmodel.wm.lewm.module.MLP` and `Embedder`.
"""

from __future__ import annotations

import torch
from torch import nn


class BNMLP(nn.Module):
    """Linear, BatchNorm1d, GELU, Linear (names net.0, net.1, net.3). Input (N, input_dim)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, input_dim) -> (N, output_dim)."""
        return self.net(x)


class ActionEncoder(nn.Module):
    """Action block -> embedding: Conv1d(k=1) to `smoothed_dim` channels, Linear, SiLU, Linear.

    Args:
        input_dim: width of one action block (frameskip x action_dim).
        smoothed_dim: Conv1d output channels. emb_dim: output width. mlp_scale: hidden = mlp_scale * emb_dim.
    """

    def __init__(self, input_dim: int, smoothed_dim: int, emb_dim: int, mlp_scale: int = 4):
        super().__init__()
        self.input_dim = input_dim
        self.patch_embed = nn.Conv1d(input_dim, smoothed_dim, kernel_size=1)
        self.embed = nn.Sequential(
            nn.Linear(smoothed_dim, mlp_scale * emb_dim),
            nn.SiLU(),
            nn.Linear(mlp_scale * emb_dim, emb_dim),
        )

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, T, input_dim) -> (B, T, emb_dim)."""
        x = actions.to(self.patch_embed.weight.dtype)
        x = self.patch_embed(x.transpose(1, 2)).transpose(1, 2)
        return self.embed(x)
