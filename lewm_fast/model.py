"""LeWM: ViT encoder + BN projector, action encoder, AdaLN-zero causal predictor + pred_proj.

This is the reference model (docs/architecture.md). Submodule and parameter names equal the
public `stable_worldmodel.wm.lewm.LeWM` (transformers 5.x ViT names), so `load_state_dict` of a
public state_dict works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from lewm_fast import model_surfaces
from lewm_fast._checks import check_tensor
from lewm_fast.config import LeWMConfig
from lewm_fast.heads import BNMLP, ActionEncoder
from lewm_fast.predictor import Predictor
from lewm_fast.vit import ViTEncoder


class LeWM(nn.Module):
    """The LeWorldModel.

    encode(pixels (B, T, C, H, W)) -> (B, T, D); embed_actions(actions (B, T, A)) -> (B, T, D);
    predict(emb (B, T, D), act_emb (B, T, D)) -> (B, T, D) with T <= num_frames.
    D = cfg.embed_dim; A = cfg.frameskip * cfg.action_dim.
    """

    def __init__(self, cfg: LeWMConfig | None = None):
        super().__init__()
        cfg = cfg or LeWMConfig()
        if not isinstance(cfg, LeWMConfig):
            raise TypeError(f"cfg: expected a LeWMConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = ViTEncoder(
            cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.enc_dim, cfg.enc_depth,
            cfg.enc_heads, cfg.enc_mlp_dim, cfg.enc_ln_eps,
        )  # fmt: skip
        self.predictor = Predictor(
            num_frames=cfg.num_frames,
            depth=cfg.pred_depth,
            heads=cfg.pred_heads,
            mlp_dim=cfg.pred_mlp_dim,
            input_dim=cfg.embed_dim,
            hidden_dim=cfg.pred_hidden_dim,
            output_dim=cfg.pred_output_dim,
            dim_head=cfg.pred_dim_head,
            dropout=cfg.dropout,
            emb_dropout=cfg.emb_dropout,
        )
        self.action_encoder = ActionEncoder(
            cfg.action_block_dim, cfg.action_smoothed_dim, cfg.embed_dim, cfg.action_mlp_scale
        )
        self.projector = BNMLP(cfg.enc_dim, cfg.proj_hidden_dim, cfg.embed_dim)
        self.pred_proj = BNMLP(cfg.pred_output_dim, cfg.pred_proj_hidden_dim, cfg.embed_dim)

    # ---- checked public API ----------------------------------------------------------------------

    def check_pixels(self, name: str, pixels: torch.Tensor, leading: tuple = ("B", "T")) -> torch.Tensor:
        """Check (..., C, H, W) pixels: channel count, sizes divisible by the patch, finite values."""
        cfg = self.cfg
        check_tensor(name, pixels, (*leading, cfg.in_channels, "H", "W"), finite=True)
        h, w = pixels.shape[-2:]
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"{name}: expected height and width divisible by patch_size={cfg.patch_size}, got {h}x{w}")
        return pixels

    def encode(self, pixels: torch.Tensor | dict) -> torch.Tensor | dict:
        """pixels (B, T, C, H, W) float -> embeddings (B, T, D) = projector(CLS(ViT(frame))).

        Given a dict (stable-worldmodel's `Dynamics.encode(info)`), fills and returns it: `emb` from
        `pixels`, `act_emb` from `action` when present (lewm_fast/model_surfaces.py).
        """
        if isinstance(pixels, dict):
            return model_surfaces.encode_info(self, pixels)
        self.check_pixels("pixels", pixels)
        b, t = pixels.shape[:2]
        return self.encode_frames(pixels.flatten(0, 1)).view(b, t, -1)

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, T, frameskip*action_dim) -> action embeddings (B, T, D)."""
        check_tensor("actions", actions, ("B", "T", self.cfg.action_block_dim), finite=True)
        return self.action_encoder(actions)

    def predict(self, emb: torch.Tensor, act_emb: torch.Tensor) -> torch.Tensor:
        """Next-embedding prediction for every position of the window.

        emb (B, T, D), act_emb (B, T, D) with T <= num_frames -> (B, T, D).
        """
        d = self.cfg.embed_dim
        check_tensor("emb", emb, ("B", "T", d), finite=True)  # like encode: NaN in, an error out
        check_tensor("act_emb", act_emb, (emb.shape[0], emb.shape[1], d), finite=True)
        t, n = emb.shape[1], self.cfg.num_frames
        if not 1 <= t <= n:
            raise ValueError(f"emb: expected at least 1 and at most num_frames={n} frames, got {t}")
        return self.predict_unchecked(emb, act_emb)

    def get_cost(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        """The public `LeWM.get_cost` (stable-worldmodel), so this model works with any public solver.

        info_dict: `pixels` (B, S, H, C, h, w) and `goal` (B, S, T, C, h, w), expanded over samples;
        the goal and history embeddings are cached in it (`goal_emb`, `emb`) as the public code does.
        action_candidates (B, S, horizon, A) -> costs (B, S), differentiable w.r.t. the candidates.
        The conventions are spelled out in lewm_fast/model_surfaces.py.
        """
        return model_surfaces.get_cost(self, info_dict, action_candidates)

    def rollout(self, info: dict, action_candidates: torch.Tensor, history_size: int | None = None) -> dict:
        """stable-worldmodel's `Dynamics.rollout` (its current source's `LeWM.rollout`), so this model works
        inside its `ShootingCostEvaluator`: `info["predicted_emb"]` (B, S, H + T, D) from context frames
        `pixels` (B, S, H, C, h, w), strictly future candidates (B, S, T, A) and, when H > 1,
        `info["action_history"]` (B, S, H - 1, A). Conventions: lewm_fast/model_surfaces.py."""
        return model_surfaces.dynamics_rollout(self, info, action_candidates, history_size)

    # ---- unchecked building blocks (used inside hot loops) ---------------------------------------

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, C, H, W) -> (N, D), no argument checks."""
        frames = frames.to(self.encoder.embeddings.cls_token.dtype)
        return self.projector(self.encoder(frames))

    def predict_unchecked(self, emb: torch.Tensor, act_emb: torch.Tensor) -> torch.Tensor:
        b, t = emb.shape[:2]
        out = self.predictor(emb, act_emb)
        return self.pred_proj(out.reshape(b * t, -1)).view(b, t, -1)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per part and in total."""
        parts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
        parts["total"] = sum(parts.values())
        return parts
