"""`lewm-fast train`: train LeWM on an HDF5 episode file. Runs as is, or under
`torchrun --nproc-per-node N lewm-fast train ...` for DDP (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.training.presets import DEFAULTS as D
    from lewm_fast.training.presets import PRESETS

    # The choices that change the numbers default to None: the preset's value / DEFAULTS in a new run,
    # the run's own value on --resume (giving another one there is refused).
    p = parser
    p.add_argument("--data", required=True, help="episode file (.h5, stable-worldmodel layout)")
    p.add_argument("--preset", default=None, help=f"model and defaults: one of {sorted(PRESETS)} ({D['preset']})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training windows")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the preset's)")
    p.add_argument("--lambda", dest="lambd", type=float, default=None, help=f"SIGReg weight ({D['lambd']})")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay ({D['weight_decay']})")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: the preset's)")
    p.add_argument("--grad-clip", type=float, default=None, help=f"gradient norm clipping ({D['grad_clip']})")
    p.add_argument("--amp", default=None, help="auto (bf16 on GPU; on CPU when measured faster) | bf16 | off (auto)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics, loss.png)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true", help="move a run already in OUT aside (OUT.old-N), start anew")
    p.add_argument("--val-fraction", type=float, default=None,
                   help=f"episodes held out for validation ({D['val_fraction']})")  # fmt: skip
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (0: load in this process)")
    p.add_argument("--seed", type=int, default=None, help=f"initialisation, data order, SIGReg ({D['seed']})")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (DDP)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--sigreg-backend", default="auto", help="auto | reference | cpp | triton")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    p.add_argument("--model", default=None, help="LeWMConfig fields to change, as JSON (e.g. '{\"pred_depth\": 2}')")
    p.add_argument("--num-proj", type=int, default=None, help=f"SIGReg directions per step ({D['num_proj']})")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from lewm_fast.commands import _validate
    from lewm_fast.training.trainer import NonFiniteLoss, TrainConfig, train

    _validate.positive_number(args, "max_minutes")  # 0 would mean "no limit" by accident
    cfg = TrainConfig(
        data=args.data, out=args.out, preset=args.preset, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, lambd=args.lambd, weight_decay=args.weight_decay,
        warmup=args.warmup, grad_clip=args.grad_clip, amp=args.amp, val_fraction=args.val_fraction,
        val_every=args.val_every, log_every=args.log_every, ckpt_every=args.ckpt_every,
        num_workers=args.num_workers, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
        sync_bn=args.sync_bn, compile=args.compile, sigreg_backend=args.sigreg_backend, device=args.device,
        progress=not args.no_progress, max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        model_overrides=_validate.json_object("--model", args.model), num_proj=args.num_proj,
    )  # fmt: skip
    try:
        summary = train(cfg)  # checks every flag before reading the data
    except NonFiniteLoss as e:
        print(str(e), file=sys.stderr)
        return 3
    print(json.dumps(summary))
    return 0
