"""Conversion of live public LeWM modules (stable-worldmodel, transformers ViT) into `lf.LeWM`.

Nothing here imports stable_worldmodel or transformers: the public module is read through its
attributes and its state_dict.
"""

from __future__ import annotations

import torch

from lewm_fast.config import LeWMConfig
from lewm_fast.interop.names import to_lewm_fast_names
from lewm_fast.model import LeWM


def load_public_state_dict(model: LeWM, state_dict: dict[str, torch.Tensor]) -> LeWM:
    """Load a public LeWM state_dict (transformers 4.x or 5.x ViT names) into `model`, strictly.

    A mismatched or truncated dict raises ValueError listing the missing and unexpected keys.
    """
    converted = to_lewm_fast_names(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise ValueError(
            "state_dict: does not match the model's parameters; "
            f"missing keys ({len(missing)}): {missing[:12]}{' ...' if len(missing) > 12 else ''}; "
            f"unexpected keys ({len(unexpected)}): {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}"
        )
    wrong = [
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise ValueError(f"state_dict: tensor shapes differ from the config's: {wrong[:8]}")
    # load_state_dict casts silently: integer weights would be evaluated as if they were the trained floats
    kinds = [f"{k}: expected a floating tensor, got {v.dtype}" for k, v in converted.items()
             if own[k].is_floating_point() and not v.is_floating_point()]  # fmt: skip
    if kinds:
        raise ValueError(f"state_dict: tensor dtypes differ from the model's: {kinds[:8]}")
    model.load_state_dict(converted)
    return model


def config_from_swm(swm_model, action_dim: int | None = None) -> LeWMConfig:
    """Read the sizes of a live public `LeWM` (its ViT config and module attributes)."""
    for part in ("encoder", "predictor", "action_encoder", "projector", "pred_proj"):
        if not hasattr(swm_model, part):
            raise TypeError(f"swm_model: expected a stable_worldmodel LeWM with a '{part}' attribute")
    vit = getattr(swm_model.encoder, "config", None)
    if vit is None or not hasattr(vit, "hidden_size"):
        raise TypeError("swm_model.encoder: expected a transformers ViTModel (with a .config)")
    if getattr(vit, "hidden_act", "gelu") != "gelu" or not getattr(vit, "qkv_bias", True):
        raise ValueError(
            f"swm_model.encoder.config: expected hidden_act='gelu' and qkv_bias=True, "
            f"got {vit.hidden_act!r}, {vit.qkv_bias!r}"
        )
    pred, act = swm_model.predictor, swm_model.action_encoder
    for name in ("projector", "pred_proj"):
        head = getattr(swm_model, name)
        net = getattr(head, "net", None)
        if net is None or len(net) != 4 or not isinstance(net[1], torch.nn.BatchNorm1d):
            raise ValueError(f"swm_model.{name}: expected the public MLP with BatchNorm1d, got {type(head).__name__}")
    first_block = pred.transformer.layers[0]
    published = {
        "encoder": {
            "hidden_size": vit.hidden_size,
            "num_hidden_layers": vit.num_hidden_layers,
            "num_attention_heads": vit.num_attention_heads,
            "intermediate_size": vit.intermediate_size,
            "layer_norm_eps": vit.layer_norm_eps,
            "patch_size": vit.patch_size,
            "image_size": vit.image_size,
            "num_channels": vit.num_channels,
        },
        "predictor": {
            "num_frames": pred.num_frames,
            "input_dim": pred.input_dim,
            "hidden_dim": pred.hidden_dim,
            "output_dim": pred.output_dim,
            "depth": pred.depth,
            "heads": pred.heads,
            "mlp_dim": pred.mlp_dim,
            "dim_head": pred.dim_head,
            "dropout": float(getattr(first_block.attn, "dropout", 0.0)),
            "emb_dropout": float(getattr(pred, "emb_dropout", 0.0)),
        },
        "action_encoder": {
            "input_dim": act.input_dim,
            "smoothed_dim": act.smoothed_dim,
            "emb_dim": act.emb_dim,
            "mlp_scale": act.mlp_scale,
        },
        "projector": {"hidden_dim": swm_model.projector.hidden_dim, "output_dim": swm_model.projector.output_dim},
        "pred_proj": {"hidden_dim": swm_model.pred_proj.hidden_dim},
    }
    return LeWMConfig.from_published(published, action_dim=action_dim)


def from_swm(swm_model, action_dim: int | None = None) -> LeWM:
    """A live stable_worldmodel `LeWM` -> `lf.LeWM` with the same weights, device, dtype and mode.

    Args:
        swm_model: the public module (its encoder a transformers `ViTModel`).
        action_dim: per-step action width (the public model only knows frameskip x action_dim);
            default: frameskip 5 when it divides the action block, else 1.
    """
    cfg = config_from_swm(swm_model, action_dim)
    param = next(swm_model.parameters())
    model = LeWM(cfg).to(device=param.device, dtype=param.dtype)
    load_public_state_dict(model, swm_model.state_dict())
    return model.train(swm_model.training)


def to_swm(model: LeWM):
    """An `lf.LeWM` -> a live stable_worldmodel `LeWM` (transformers ViT) with the same weights, device,
    dtype and mode: the public code's own model, for running it beside lewm_fast (parity checks, the
    public solvers' timings). Needs stable_worldmodel and transformers."""
    if not isinstance(model, LeWM):
        raise TypeError(f"model: expected an lf.LeWM, got {type(model).__name__}")
    import transformers
    from stable_worldmodel.wm.lewm.lewm import LeWM as PublicLeWM
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor

    cfg = model.cfg
    vit = transformers.ViTModel(
        transformers.ViTConfig(hidden_size=cfg.enc_dim, num_hidden_layers=cfg.enc_depth,
                               num_attention_heads=cfg.enc_heads, intermediate_size=cfg.enc_mlp_dim,
                               image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.in_channels,
                               layer_norm_eps=cfg.enc_ln_eps),
        add_pooling_layer=False,
    )  # fmt: skip
    pred = Predictor(num_frames=cfg.num_frames, depth=cfg.pred_depth, heads=cfg.pred_heads, mlp_dim=cfg.pred_mlp_dim,
                     input_dim=cfg.embed_dim, hidden_dim=cfg.pred_hidden_dim, output_dim=cfg.pred_output_dim,
                     dim_head=cfg.pred_dim_head, dropout=cfg.dropout, emb_dropout=cfg.emb_dropout)  # fmt: skip
    act = Embedder(input_dim=cfg.action_block_dim, smoothed_dim=cfg.action_smoothed_dim, emb_dim=cfg.embed_dim,
                   mlp_scale=cfg.action_mlp_scale)  # fmt: skip
    bn = torch.nn.BatchNorm1d
    public = PublicLeWM(vit, pred, act, MLP(cfg.enc_dim, cfg.proj_hidden_dim, cfg.embed_dim, norm_fn=bn),
                        MLP(cfg.pred_output_dim, cfg.pred_proj_hidden_dim, cfg.embed_dim, norm_fn=bn))  # fmt: skip
    public.load_state_dict(model.state_dict())  # lewm_fast's names are the public (transformers 5.x) ones
    param = next(model.parameters())
    return public.to(device=param.device, dtype=param.dtype).train(model.training)
