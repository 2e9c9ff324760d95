"""`lewm-fast demo --out DIR`: collect TwoRoom data, train, evaluate (and the random baseline), run the
surprise test, write DIR/report.md; prints `success rate: X%` at the end. DIR must be new or empty
(`--resume` continues an interrupted demo there, `--overwrite` moves it aside)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.capability import DTYPE_CHOICES
    from lewm_fast.evaluation.demo import DEMO_MODEL, MAX_STEPS, MIN_STEPS, DemoConfig

    d = DemoConfig(out="")
    p = parser
    p.add_argument("--out", required=True, help="folder for the data, the run, the figures and report.md")
    p.add_argument("--episodes", type=int, default=d.episodes, help=f"TwoRoom episodes to collect ({d.episodes})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help=f"steps per episode ({d.max_steps})")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"frame and model size ({d.image_size})")
    fit = f"default: {MAX_STEPS}, or fewer (at least {MIN_STEPS}) to fit --minutes"
    p.add_argument("--steps", type=int, default=None, help=f"training steps ({fit})")
    p.add_argument("--minutes", type=float, default=d.minutes, help=f"the demo's wall-time target ({d.minutes:g})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"training batch ({d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate ({d.lr})")
    p.add_argument("--lambda", dest="lambd", type=float, default=d.lambd, help=f"SIGReg weight ({d.lambd})")
    p.add_argument(
        "--model", default=None, help=f"LeWMConfig changes to the small preset, JSON ({json.dumps(DEMO_MODEL)})"
    )
    p.add_argument("--amp", default=None, help="off | bf16 | auto (default: off on CPU, auto on GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--eval-episodes", type=int, default=d.eval_episodes, help=f"evaluation problems ({d.eval_episodes})"
    )
    p.add_argument("--receding", type=int, default=d.receding, help=f"action blocks executed per plan ({d.receding})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"CEM samples ({d.samples})")
    p.add_argument("--iters", type=int, default=d.iters, help=f"CEM iterations ({d.iters})")
    p.add_argument("--topk", type=int, default=d.topk, help=f"CEM elites ({d.topk})")
    p.add_argument("--dtype", default=d.dtype, choices=DTYPE_CHOICES,
                   help=f"planning dtype; auto: bf16 where native, else fp32 ({d.dtype})")  # fmt: skip
    p.add_argument("--surprise-episodes", type=int, default=d.surprise_episodes,
                   help=f"surprise-test trajectories ({d.surprise_episodes})")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue the demo an interruption left in --out")
    p.add_argument("--overwrite", action="store_true", help="move what --out holds aside (OUT.old-N), start anew")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def config(args: argparse.Namespace):
    """The DemoConfig of the flags, every one checked (with the folder) before collection starts."""
    from lewm_fast.commands import _validate as v
    from lewm_fast.evaluation.demo import DEMO_MODEL, DemoConfig, check_demo

    model = v.json_object("--model", args.model)
    cfg = DemoConfig(out=args.out, episodes=args.episodes, max_steps=args.max_steps, image_size=args.image_size,
                     steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, lambd=args.lambd,
                     model=dict(DEMO_MODEL) if model is None else model, amp=args.amp, device=args.device,
                     eval_episodes=args.eval_episodes, receding=args.receding, samples=args.samples,
                     iters=args.iters, topk=args.topk, dtype=args.dtype, surprise_episodes=args.surprise_episodes,
                     seed=args.seed, progress=not args.no_progress, resume=args.resume,
                     overwrite=args.overwrite)  # fmt: skip
    check_demo(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    from lewm_fast.evaluation.demo import run_demo

    run_demo(config(args))
    return 0
