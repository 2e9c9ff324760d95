"""`lewm-fast surprise`: the violation-of-expectation test (unperturbed / colour change / teleport), with
paired t-tests; prints the p-values, writes surprise.json and surprise.png."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.evaluation.surprise import EPISODES

    p = parser
    p.add_argument("--ckpt", required=True, help="run folder (its 'checkpoint' link) or checkpoint folder")
    p.add_argument("--env", required=True, help="tworoom | pusht | reacher | cube")
    p.add_argument("--episodes", type=int, default=EPISODES, help=f"trajectories ({EPISODES})")
    p.add_argument("--steps", type=int, default=60, help="env steps per trajectory (60)")
    p.add_argument("--perturb-step", type=int, default=30, help="env step of the perturbation (30)")
    p.add_argument("--window", type=int, default=2, help="frames from the perturbation averaged per trajectory (2)")
    p.add_argument(
        "--colour",
        default=None,
        help="R,G,B (0..255) of the colour perturbation (default: tworoom 0,90,255, the red agent turns blue; "
        "pusht 230,90,40, the grey block turns orange; reacher 0,90,255, the arm; cube 0,90,255, the red cube)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="surprise_out", help="folder for surprise.json and surprise.png")


# Library argument names -> this command's flags, for errors raised below `surprise_test` (lewm_fast.cli).
API_FLAGS = {"path": "--ckpt", "ckpt": "--ckpt", "colour": "--colour"}


def check_flags(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """Every flag before anything runs (the ones that depend on the checkpoint's frameskip are checked by
    `surprise_test` when it loads it, before any rollout). Returns the colour."""
    from lewm_fast.commands import _validate as v

    v.env(args)
    v.at_least(args, 2, "episodes")  # a paired t-test needs two trajectories
    v.at_least(args, 1, "steps", "perturb_step", "window")
    v.seed(args)
    v.existing("--ckpt", args.ckpt, "checkpoint")
    v.output_dir(args)
    if args.colour is None:
        return None
    try:
        colour = tuple(int(c) for c in args.colour.split(","))
    except ValueError:
        colour = ()
    if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
        raise ValueError(f"--colour: expected R,G,B integers in 0..255, got {args.colour!r}")
    return colour


def run(args: argparse.Namespace) -> int:
    from lewm_fast.evaluation.surprise import surprise_test

    colour = check_flags(args)
    surprise_test(args.ckpt, args.env, episodes=args.episodes, steps=args.steps, perturb_step=args.perturb_step,
                  window=args.window, seed=args.seed, out=args.out, colour=colour)  # fmt: skip
    return 0
