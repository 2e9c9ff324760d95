"""`lewm-fast collect`: roll out a data policy and write episodes in the stable-worldmodel HDF5 layout."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.envs import ENVS, POLICIES

    policies = sorted({p for ps in POLICIES.values() for p in ps})
    parser.add_argument("--env", required=True, help=f"environment: one of {list(ENVS)}")
    parser.add_argument("--episodes", type=int, required=True, help="total episodes in the file")
    parser.add_argument("--image-size", type=int, default=64, help="rendered frame side in pixels (64)")
    parser.add_argument("--policy", default=None, help=f"data policy ({policies}; default per env)")
    parser.add_argument("--max-steps", type=int, default=100, help="steps per episode (100)")
    parser.add_argument("--out", required=True, help="output .h5 file")
    parser.add_argument("--seed", type=int, default=0, help="episode i is a function of (seed, i)")
    parser.add_argument("--resume", action="store_true", help="continue an existing file (same env/seed/size)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lewm_fast.data.collect import collect
    from lewm_fast.envs import ENVS

    if args.env not in ENVS:
        raise SystemExit(f"lewm-fast collect: --env: expected one of {list(ENVS)}, got {args.env!r}")
    for name in ("episodes", "image_size", "max_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"lewm-fast collect: --{name.replace('_', '-')}: expected a positive int")
    try:
        summary = collect(args.env, args.out, args.episodes, image_size=args.image_size, policy=args.policy,
                          seed=args.seed, max_steps=args.max_steps, resume=args.resume, overwrite=args.overwrite,
                          progress=not args.no_progress)  # fmt: skip
    except (ValueError, FileExistsError, ImportError) as e:
        raise SystemExit(f"lewm-fast collect: {e}") from e
    print(json.dumps(summary))
    return 0
