"""`lewm-fast eval`: closed-loop evaluation of a checkpoint (the paper's protocol, all episodes planned in
one batch). Prints `success rate: X%`, time per plan and per episode; writes eval.json and eval_frames.png.
`--world swm/NAME` evaluates on a stable-worldmodel World instead of a lewm_fast env. Under
`torchrun --nproc-per-node N -m lewm_fast.cli eval ...` the episodes are sharded over the processes."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lewm_fast.capability import DTYPE_CHOICES
    from lewm_fast.evaluation.protocol import BUDGET, EPISODES, GOAL_OFFSET, HORIZON, ITERS, SAMPLES, TOPK

    p = parser
    p.add_argument("--ckpt", default=None, help="run folder (its 'checkpoint' link) or checkpoint folder")
    p.add_argument("--env", default=None, help="tworoom | pusht | reacher | cube")
    p.add_argument("--world", default=None, help="a stable-worldmodel World (swm/NAME) instead of --env")
    p.add_argument("--data", default=None, help="episode file with held-out episodes (.h5; optional with --world)")
    p.add_argument("--episodes", type=int, default=EPISODES, help=f"start/goal problems ({EPISODES})")
    p.add_argument("--goal-offset", type=int, default=GOAL_OFFSET,
                   help=f"goal = the dataset frame this many steps ahead ({GOAL_OFFSET})")  # fmt: skip
    p.add_argument("--budget", type=int, default=BUDGET, help=f"env steps allowed per episode ({BUDGET})")
    p.add_argument("--horizon", type=int, default=HORIZON, help=f"action blocks per plan ({HORIZON})")
    p.add_argument("--receding", type=int, default=HORIZON,
                   help=f"action blocks executed per plan ({HORIZON}; 1 = replan every block)")  # fmt: skip
    p.add_argument("--solver", default="cem", help="cem | icem | mppi | ps | grad (the planner's optimizer; cem)")
    p.add_argument("--samples", type=int, default=SAMPLES, help=f"samples per iteration ({SAMPLES})")
    p.add_argument("--topk", type=int, default=TOPK, help=f"elites ({TOPK}; CEM, iCEM, MPPI)")
    p.add_argument("--iters", type=int, default=ITERS, help=f"iterations ({ITERS}; predictive sampling draws once)")
    p.add_argument("--planner-backend", default="auto", help="auto | torch | triton | reference")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="planning dtype; auto: bf16 where the hardware runs it natively, else fp32 (auto)")  # fmt: skip
    p.add_argument("--policy", default="planner", choices=("planner", "random"),
                   help="planner (CEM in latent space) or random (uniform actions: the baseline)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval_frames.png (eval_out)")
    p.add_argument(
        "--plan-group",
        type=int,
        default=None,
        help="episodes per planner batch, reseeded per group: the same result for any number of "
        "processes (default: all in one batch; under torchrun ceil(episodes / processes))",
    )
    p.add_argument("--callables", default=None, help="--world: the envs' set-up calls as JSON (public format)")


# Library argument names -> this command's flags, for errors raised below `evaluate` (lewm_fast.cli).
API_FLAGS = {"num_samples": "--samples", "backend": "--planner-backend", "path": "--ckpt", "ckpt": "--ckpt"}


def check_flags(args: argparse.Namespace) -> None:
    """Every flag, before the data is read or an env built (lewm_fast/commands/_validate.py)."""
    from lewm_fast._checks import check_choice
    from lewm_fast.commands import _validate as v
    from lewm_fast.planning.backends import BACKENDS
    from lewm_fast.planning.optimizers import available_optimizers

    if (args.env is None) == (args.world is None):
        raise ValueError("--env, --world: expected exactly one of them (a lewm_fast env or swm/NAME)")
    if args.env is not None:
        v.env(args)
        if args.data is None:
            raise ValueError("--data: expected an episode file with --env, got none")
    if args.world is not None and args.solver != "cem":
        raise ValueError(f"--solver: --world plans with lf.interop.CEMSolver ('cem'), got {args.solver!r}")
    if args.callables is not None:
        if args.world is None:
            raise ValueError("--callables: the set-up calls of a World; expected --world with it")
        from lewm_fast.evaluation.world import check_callables

        try:
            args.callables = check_callables(json.loads(args.callables), "--callables")
        except json.JSONDecodeError as e:
            raise ValueError(f"--callables: expected JSON, got {args.callables!r} ({e})") from None
    v.at_least(args, 1, "episodes", "goal_offset", "budget")
    if args.plan_group is not None:
        v.at_least(args, 1, "plan_group")
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
    common = dict(episodes=args.episodes, goal_offset=args.goal_offset, budget=args.budget, horizon=args.horizon,
                  receding=args.receding, num_samples=args.samples, topk=args.topk, iters=args.iters,
                  backend=args.planner_backend, dtype=args.dtype, seed=args.seed, policy=args.policy,
                  out=args.out)  # fmt: skip
    if args.world is not None:
        return _world(args, common)
    from lewm_fast.evaluation.sharding import init_from_torchrun
    from lewm_fast.training.distributed import teardown

    rank, _ = init_from_torchrun()
    log = print if rank == 0 else (lambda msg: None)  # rank 0 speaks for all
    try:
        evaluate(args.env, args.data, args.ckpt, solver=args.solver, plan_group=args.plan_group, log=log, **common)
    finally:
        teardown()
    return 0


def _world(args: argparse.Namespace, common: dict) -> int:
    from lewm_fast.evaluation.world import evaluate_world

    evaluate_world(args.world, args.ckpt, args.data, callables=args.callables, **common)
    return 0
