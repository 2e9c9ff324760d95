"""`lewm-fast eval`: closed-loop evaluation of a checkpoint (the paper's protocol, all episodes planned in
one batch). Prints `success rate: X%`, time per plan and per episode; writes eval.json and eval_frames.png."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--ckpt", default=None, help="run folder (its 'checkpoint' link) or checkpoint folder")
    p.add_argument("--env", required=True, help="tworoom | pusht")
    p.add_argument("--data", required=True, help="episode file with held-out episodes (.h5)")
    p.add_argument("--episodes", type=int, default=50, help="start/goal problems (50)")
    p.add_argument("--goal-offset", type=int, default=25, help="goal = the dataset frame this many steps ahead (25)")
    p.add_argument("--budget", type=int, default=50, help="env steps allowed per episode (50)")
    p.add_argument("--horizon", type=int, default=5, help="action blocks per plan (5)")
    p.add_argument(
        "--receding", type=int, default=5, help="action blocks executed per plan (5; 1 = replan every block)"
    )
    p.add_argument("--solver", default="cem", help="cem | icem | mppi | ps | grad (the planner's optimizer; cem)")
    p.add_argument("--samples", type=int, default=300, help="samples per iteration (300)")
    p.add_argument("--topk", type=int, default=30, help="elites (30; CEM, iCEM, MPPI)")
    p.add_argument("--iters", type=int, default=30, help="iterations (30; predictive sampling draws once)")
    p.add_argument("--planner-backend", default="auto", help="auto | torch | triton | reference")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                   help="planning dtype; auto: bf16 where the hardware runs it natively, else fp32 (auto)")  # fmt: skip
    p.add_argument("--policy", default="planner", choices=("planner", "random"),
                   help="planner (CEM in latent space) or random (uniform actions: the baseline)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval_frames.png (eval_out)")


# Library argument names -> this command's flags, for errors raised below `evaluate` (lewm_fast.cli).
API_FLAGS = {"num_samples": "--samples", "backend": "--planner-backend", "path": "--ckpt", "ckpt": "--ckpt"}


def check_flags(args: argparse.Namespace) -> None:
    """Every flag, before the data is read or an env built (lewm_fast/commands/_validate.py)."""
    from lewm_fast._checks import check_choice
    from lewm_fast.commands import _validate as v
    from lewm_fast.planning.backends import BACKENDS
    from lewm_fast.planning.optimizers import available_optimizers

    v.env(args)
    v.at_least(args, 1, "episodes", "goal_offset", "budget")
    v.planner(args, args.horizon)
    check_choice("--planner-backend", args.planner_backend, BACKENDS)
    check_choice("--solver", args.solver, available_optimizers())
    v.seed(args)
    v.existing("--data", args.data, "episode file")
    v.existing("--ckpt", args.ckpt, "checkpoint")
    v.output_dir(args)


def run(args: argparse.Namespace) -> int:
    from lewm_fast.evaluation import evaluate

    check_flags(args)
    evaluate(args.env, args.data, args.ckpt, episodes=args.episodes, goal_offset=args.goal_offset,
             budget=args.budget, horizon=args.horizon, receding=args.receding, num_samples=args.samples,
             topk=args.topk, iters=args.iters, solver=args.solver, backend=args.planner_backend, dtype=args.dtype,
             seed=args.seed, policy=args.policy, out=args.out)  # fmt: skip
    return 0
