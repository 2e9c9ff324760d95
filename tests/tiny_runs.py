"""Tiny TwoRoom data and training runs shared by the safety and bad-input tests (seconds each)."""

import json
from pathlib import Path

import torch

from lewm_fast.data.collect import collect
from lewm_fast.training import TrainConfig, train
from lewm_fast.training.checkpoint import latest_checkpoint

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip


def tiny_data(path: Path, episodes: int = 8, seed: int = 0) -> Path:
    """TwoRoom episodes of 31 frames at 28 px."""
    collect("tworoom", path, episodes, image_size=28, max_steps=30, seed=seed, progress=False)
    return path


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="small", steps=3, batch_size=8, lr=1e-3, warmup=1, amp="off",
                val_every=10**6, log_every=1, ckpt_every=1, num_proj=32, progress=False,
                model_overrides=dict(TINY), val_fraction=0.25)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def tiny_run(data: Path, out: Path, **kw) -> dict:
    return train(tiny_config(data, out, **kw))


def train_flags(data: Path, out: Path, *extra: str) -> list[str]:
    """`lewm-fast train` arguments for the tiny run (the CLI form of tiny_config)."""
    return ["train", "--data", str(data), "--out", str(out), "--steps", "3", "--batch-size", "8", "--warmup", "1",
            "--amp", "off", "--ckpt-every", "1", "--num-proj", "32", "--val-fraction", "0.25", "--no-progress",
            "--model", json.dumps(TINY), *extra]  # fmt: skip


def run_weights(out: Path) -> dict:
    """The state dict of a run's newest checkpoint."""
    return torch.load(latest_checkpoint(out) / "weights.pt", weights_only=True)


def assert_same_weights(a: Path, b: Path, why: str = "") -> None:
    """The newest checkpoints of runs a and b hold the same weights, bit for bit."""
    wa, wb = run_weights(a), run_weights(b)
    assert wa.keys() == wb.keys(), why
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=f"{why} {k}".strip())
