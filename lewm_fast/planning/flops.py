"""Counted work of planning, for benchmarks: FLOPs of the matrix products (2 per multiply-add).

`public` counts what the public rollout computes: every predict call runs the whole window through
every block and pred_proj. Elementwise work (LayerNorm, softmax, GELU) is not counted.
"""

from __future__ import annotations

from lewm_fast.config import LeWMConfig


def token_flops(cfg: LeWMConfig, window: int, with_adaln: bool = True) -> int:
    """FLOPs of one token through the predictor (all blocks, final projections, pred_proj)."""
    d, inner = cfg.pred_hidden_dim, cfg.pred_heads * cfg.pred_dim_head
    block = 2 * d * 3 * inner + 2 * 2 * window * inner + 2 * inner * d + 2 * 2 * d * cfg.pred_mlp_dim
    if with_adaln:
        block += 2 * d * 6 * d
    head = 2 * 2 * cfg.pred_output_dim * cfg.pred_proj_hidden_dim
    return cfg.pred_depth * block + head


def action_flops(cfg: LeWMConfig) -> int:
    """FLOPs of embedding one action block."""
    hid = cfg.action_mlp_scale * cfg.embed_dim
    return 2 * (cfg.action_block_dim * cfg.action_smoothed_dim + cfg.action_smoothed_dim * hid + hid * cfg.embed_dim)


def public_iteration_flops(cfg: LeWMConfig, samples: int, horizon: int, history: int = 1) -> int:
    """FLOPs of one CEM iteration (cost of `samples` candidates) as the public rollout computes it."""
    per_sample = horizon * action_flops(cfg)
    for t in range(horizon - history + 1):
        window = min(cfg.num_frames, history + t)
        per_sample += window * token_flops(cfg, window)
    return samples * per_sample
