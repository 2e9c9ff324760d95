"""`lewm-fast demo --out DIR`: collect TwoRoom data, train, evaluate (and the random baseline), run the
surprise test, write DIR/report.md; prints `success rate: X%` at the end."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.evaluation.demo import DEMO_MODEL, DemoConfig

    d = DemoConfig(out="")
    p = parser
    p.add_argument("--out", required=True, help="folder for the data, the run, the figures and report.md")
    p.add_argument("--episodes", type=int, default=d.episodes, help=f"TwoRoom episodes to collect ({d.episodes})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help=f"steps per episode ({d.max_steps})")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"frame and model size ({d.image_size})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps ({d.steps})")
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
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "bf16", "fp32"),
                   help=f"planning dtype; auto: bf16 where native, else fp32 ({d.dtype})")  # fmt: skip
    p.add_argument("--surprise-episodes", type=int, default=d.surprise_episodes,
                   help=f"surprise-test trajectories ({d.surprise_episodes})")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from lewm_fast.data.hdf5 import DataFormatError
    from lewm_fast.evaluation import EvalConfigError
    from lewm_fast.evaluation.demo import DEMO_MODEL, DemoConfig, run_demo

    try:
        model = json.loads(args.model) if args.model else dict(DEMO_MODEL)
    except json.JSONDecodeError as e:
        raise SystemExit(f"lewm-fast demo: --model: expected a JSON object, got {args.model!r} ({e})") from e
    for name in ("episodes", "max_steps", "image_size", "steps", "batch_size", "eval_episodes", "surprise_episodes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"lewm-fast demo: --{name.replace('_', '-')}: expected a positive int")
    cfg = DemoConfig(out=args.out, episodes=args.episodes, max_steps=args.max_steps, image_size=args.image_size,
                     steps=args.steps, batch_size=args.batch_size, lr=args.lr, lambd=args.lambd, model=model,
                     amp=args.amp, device=args.device, eval_episodes=args.eval_episodes, receding=args.receding,
                     samples=args.samples, iters=args.iters, topk=args.topk, dtype=args.dtype,
                     surprise_episodes=args.surprise_episodes, seed=args.seed,
                     progress=not args.no_progress)  # fmt: skip
    try:
        run_demo(cfg)
    except (EvalConfigError, DataFormatError, FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"lewm-fast demo: {e}") from e
    return 0
