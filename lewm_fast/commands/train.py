"""`lewm-fast train`: train LeWM on an HDF5 episode file. Runs as is, or under
`torchrun --nproc-per-node N lewm-fast train ...` for DDP (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.training.presets import PRESETS

    p = parser
    p.add_argument("--data", required=True, help="episode file (.h5, stable-worldmodel layout)")
    p.add_argument("--preset", default="small", help=f"model and defaults: one of {sorted(PRESETS)} (small)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training windows")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the preset's)")
    p.add_argument("--lambda", dest="lambd", type=float, default=0.09, help="SIGReg weight (0.09)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: the preset's)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--amp", default="auto", help="auto (bf16 on GPU; on CPU when measured faster) | bf16 | off")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics, loss.png)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out for validation (0.1)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (0: load in this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (DDP)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--sigreg-backend", default="auto", help="auto | reference | cpp | triton")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    p.add_argument("--model", default=None, help="LeWMConfig fields to change, as JSON (e.g. '{\"pred_depth\": 2}')")
    p.add_argument("--num-proj", type=int, default=1024, help="SIGReg directions per step (1024)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from lewm_fast.data.hdf5 import DataFormatError
    from lewm_fast.training.trainer import NonFiniteLoss, TrainConfig, train

    for name in ("steps", "batch_size", "warmup"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise SystemExit(f"lewm-fast train: --{name.replace('_', '-')}: expected a positive int, got {v}")
    try:
        overrides = json.loads(args.model) if args.model else None
    except json.JSONDecodeError as e:
        raise SystemExit(f"lewm-fast train: --model: expected a JSON object, got {args.model!r} ({e})") from e
    cfg = TrainConfig(
        data=args.data, out=args.out, preset=args.preset, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, lambd=args.lambd, weight_decay=args.weight_decay,
        warmup=args.warmup, grad_clip=args.grad_clip, amp=args.amp, val_fraction=args.val_fraction,
        val_every=args.val_every, log_every=args.log_every, ckpt_every=args.ckpt_every,
        num_workers=args.num_workers, seed=args.seed, resume=args.resume, sync_bn=args.sync_bn,
        compile=args.compile, sigreg_backend=args.sigreg_backend, device=args.device,
        progress=not args.no_progress, max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        model_overrides=overrides, num_proj=args.num_proj,
    )  # fmt: skip
    try:
        summary = train(cfg)
    except NonFiniteLoss as e:
        print(str(e))
        return 3
    except (ValueError, TypeError, FileNotFoundError, DataFormatError) as e:
        raise SystemExit(f"lewm-fast train: {e}") from e
    print(json.dumps(summary))
    return 0
