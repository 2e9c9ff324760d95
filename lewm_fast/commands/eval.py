"""`lewm-fast eval`: closed-loop evaluation of a checkpoint (the paper's protocol, all episodes planned in
one batch). Prints `success rate: X%`, time per plan and per episode; writes eval.json and eval_frames.png.
`--world swm/NAME` evaluates on a stable-worldmodel World instead of a lewm_fast env. Under
`torchrun --nproc-per-node N -m lewm_fast.cli eval ...` the episodes are sharded over the processes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--ckpt", default=None, help="run folder (its 'checkpoint' link) or checkpoint folder")
    p.add_argument("--env", default=None, help="tworoom | pusht | reacher | cube")
    p.add_argument("--world", default=None, help="a stable-worldmodel World (swm/NAME) instead of --env")
    p.add_argument("--data", default=None, help="episode file with held-out episodes (.h5; optional with --world)")
    p.add_argument("--episodes", type=int, default=50, help="start/goal problems (50)")
    p.add_argument("--goal-offset", type=int, default=25, help="goal = the dataset frame this many steps ahead (25)")
    p.add_argument("--budget", type=int, default=50, help="env steps allowed per episode (50)")
    p.add_argument("--horizon", type=int, default=5, help="action blocks per plan (5)")
    p.add_argument(
        "--receding", type=int, default=5, help="action blocks executed per plan (5; 1 = replan every block)"
    )
    p.add_argument("--samples", type=int, default=300, help="CEM samples (300)")
    p.add_argument("--topk", type=int, default=30, help="CEM elites (30)")
    p.add_argument("--iters", type=int, default=30, help="CEM iterations (30)")
    p.add_argument("--planner-backend", default="auto", help="auto | torch | triton | reference")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"), help="planning dtype (bf16)")
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


def run(args: argparse.Namespace) -> int:
    from lewm_fast.data.hdf5 import DataFormatError
    from lewm_fast.evaluation import EvalConfigError, evaluate

    if (args.env is None) == (args.world is None):
        raise SystemExit("lewm-fast eval: give exactly one of --env (a lewm_fast env) and --world (swm/NAME)")
    if args.env is not None and args.data is None:
        raise SystemExit("lewm-fast eval: --data: an episode file is needed with --env")
    if args.plan_group is not None and args.plan_group < 1:
        raise SystemExit(f"lewm-fast eval: --plan-group: expected a positive int, got {args.plan_group}")
    common = dict(episodes=args.episodes, goal_offset=args.goal_offset, budget=args.budget, horizon=args.horizon,
                  receding=args.receding, num_samples=args.samples, topk=args.topk, iters=args.iters,
                  backend=args.planner_backend, dtype=args.dtype, seed=args.seed, policy=args.policy,
                  out=args.out)  # fmt: skip
    try:
        if args.world is not None:
            return _world(args, common)
        from lewm_fast.evaluation.sharding import init_from_torchrun
        from lewm_fast.training.distributed import teardown

        rank, _ = init_from_torchrun()
        log = print if rank == 0 else (lambda msg: None)  # rank 0 speaks for all
        try:
            evaluate(args.env, args.data, args.ckpt, plan_group=args.plan_group, log=log, **common)
        finally:
            teardown()
    except (EvalConfigError, DataFormatError, FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"lewm-fast eval: {e}") from e
    return 0


def _world(args: argparse.Namespace, common: dict) -> int:
    import json

    from lewm_fast.evaluation.world import evaluate_world

    try:
        callables = json.loads(args.callables) if args.callables else None
    except json.JSONDecodeError as e:
        raise SystemExit(f"lewm-fast eval: --callables: expected JSON, got {args.callables!r} ({e})") from e
    evaluate_world(args.world, args.ckpt, args.data, callables=callables, **common)
    return 0
