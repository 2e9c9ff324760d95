"""Counted work of planning, for benchmarks: FLOPs of the matrix products (2 per multiply-add).

`public` counts what the public rollout computes: every predict call runs the whole window through
every block and pred_proj. `fast` counts what the restructured rollout (rollout.py) computes: AdaLN
modulation once per frame, K/V reuse while the window grows, only the newest token's query, MLP and
pred_proj where that is all that is needed. Elementwise work (LayerNorm, softmax, GELU) is not counted.
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


def fast_iteration_flops(
    cfg: LeWMConfig, samples: int, horizon: int, history: int = 1, skip_unread_queries: bool = False
) -> int:
    """FLOPs of one CEM iteration as the fast rollout (`rollout.rollout_cost`) computes it.

    `skip_unread_queries`: the op sets that compute no query nobody reads (the CPU's; rollout.py
    `_attention_out`): a token at window position 0 gets W_ov y instead of its query, attention and
    output projection, and in the last block only the newest token has a query.
    """
    d, inner, depth = cfg.pred_hidden_dim, cfg.pred_heads * cfg.pred_dim_head, cfg.pred_depth
    hid = cfg.action_mlp_scale * cfg.embed_dim
    q_flops, out, mlp, ov = 2 * d * inner, 2 * inner * d, 2 * 2 * d * cfg.pred_mlp_dim, 2 * d * d
    qkv = 3 * q_flops
    # per frame: the action encoder (Conv1d folded into its first Linear) and every block's modulation
    per_sample = horizon * (2 * (cfg.action_block_dim * hid + hid * cfg.embed_dim) + 2 * d * depth * 6 * d)
    for t in range(horizon - history + 1):
        length, lo = min(cfg.num_frames, history + t), max(0, history + t - cfg.num_frames)
        grows = t > 0 and lo == 0
        new = 1 if grows else length  # tokens run through the blocks at this step
        attend = 2 * 2 * length * inner  # one query against the window: scores and weighted sum
        if skip_unread_queries:
            at_zero = 0 if grows else 1  # new tokens at window position 0: no query, W_ov instead
            token = 2 * q_flops + mlp  # K/V and MLP, for every token
            earlier = new * token + at_zero * ov + (new - at_zero) * (q_flops + attend + out)
            newest = ov if (new == 1 and at_zero) else q_flops + attend + out
            per_sample += (depth - 1) * earlier + new * 2 * q_flops + newest + mlp
        else:
            per_sample += (depth - 1) * new * (qkv + attend + out + mlp)  # earlier blocks: every new token
            per_sample += new * qkv + (attend + out + mlp)  # last block: K/V of every new token, the rest once
        per_sample += 2 * 2 * cfg.pred_output_dim * cfg.pred_proj_hidden_dim  # pred_proj, newest token
    return samples * per_sample
