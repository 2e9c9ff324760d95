"""`lewm-fast collect`: roll out a data policy and write episodes in the stable-worldmodel HDF5 layout."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.envs import ENVS, POLICIES

    policies = sorted({p for ps in POLICIES.values() for p in ps})
    parser.add_argument("--env", required=True, help=f"environment: one of {list(ENVS)}")
    parser.add_argument("--episodes", type=int, required=True, help="total episodes in the file")
    parser.add_argument("--image-size", type=int, default=64, help="rendered frame side in pixels (64; 8 to 1024)")
    parser.add_argument("--policy", default=None, help=f"data policy ({policies}; default per env)")
    parser.add_argument("--max-steps", type=int, default=100, help="steps per episode (100)")
    parser.add_argument("--out", required=True, help="output .h5 file")
    parser.add_argument("--seed", type=int, default=0, help="episode i is a function of (seed, i)")
    parser.add_argument("--resume", action="store_true", help="continue an existing file (same env/seed/size)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lewm_fast.commands._validate import flag
    from lewm_fast.data.collect import check_collect, collect

    check_collect(args.env, args.out, args.episodes, args.image_size, args.policy, args.max_steps, args.seed,
                  args.resume, args.overwrite, name=flag)  # fmt: skip
    summary = collect(args.env, args.out, args.episodes, image_size=args.image_size, policy=args.policy,
                      seed=args.seed, max_steps=args.max_steps, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress)  # fmt: skip
    print(json.dumps(summary))
    return 0
