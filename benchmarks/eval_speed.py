"""End-to-end evaluation, the number a user feels: the paper's protocol (50 episodes, goal 25 steps ahead,
budget 50 env steps, CEM 300 samples x 30 iterations, horizon 5, receding 5) on TwoRoom with one checkpoint,
wall time and success side by side:

1. public: `swm.World("swm/TwoRoom-v1")` + `WorldModelPolicy` + the public `CEMSolver` on the public `LeWM`
   holding the checkpoint's weights (what `scripts/plan/eval_wm.py` of stable-worldmodel runs);
2. the same World and policy with lewm_fast's solver (`lewm-fast eval --world swm/TwoRoom-v1`): every
   episode that needs a plan is planned in one batch;
3. `lewm-fast eval --env tworoom`: lewm_fast's TwoRoom and its batched MPC loop (held-out problems of the
   checkpoint's own data).
Rows 1 and 2 solve the same problems (start and goal rows drawn from a TwoRoom-v1 data set that the public
`World.collect` writes with the public expert policy, made once into benchmarks/.cache); row 3 its own.

    python benchmarks/eval_speed.py --ckpt RUN --data tworoom.h5      # in the side venv (public code)
    python benchmarks/eval_speed.py ... --episodes 20 --iters 10       # reduced: the same for every row
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _files import OUT_HELP  # noqa: E402

from lewm_fast.capability import PLAN_DTYPES  # noqa: E402
from lewm_fast.evaluation import evaluate, load_checkpoint  # noqa: E402
from lewm_fast.evaluation.world import evaluate_world  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
WORLD = "swm/TwoRoom-v1"


def public_data(episodes: int, max_steps: int, seed: int, image_size: int) -> Path:
    """A TwoRoom-v1 data set written by the public World.collect with the public expert policy (the public
    collection script's noise settings), in the HDF5 format, made once."""
    import stable_worldmodel as swm
    from stable_worldmodel.envs.two_room import ExpertPolicy

    path = CACHE / f"swm-tworoom-v1-{episodes}x{max_steps}-{image_size}px-seed{seed}.h5"
    if not path.exists():
        print(f"collecting {path} with the public World ...", flush=True)
        tmp = path.with_suffix(".part.h5")
        tmp.unlink(missing_ok=True)
        world = swm.World(WORLD, num_envs=10, image_shape=(image_size, image_size), max_episode_steps=max_steps)
        world.set_policy(ExpertPolicy(action_noise=2.0, action_repeat_prob=0.05, seed=seed))
        world.collect(tmp, episodes=episodes, seed=seed, format="hdf5", progress=False)
        world.close()
        os.replace(tmp, path)
    return path


def run_rows(args) -> list[dict]:
    from stable_worldmodel.solver.cem import CEMSolver as PublicCEM

    checkpoint = load_checkpoint(args.ckpt)
    plan = {"episodes": args.episodes, "goal_offset": args.goal_offset, "budget": args.budget,
            "horizon": _common.HORIZON, "receding": _common.HORIZON, "num_samples": args.samples, "topk": args.topk,
            "iters": args.iters, "seed": args.seed, "dtype": args.dtype,
            "log": lambda m: print("   ", m, flush=True)}  # fmt: skip
    swm_data = public_data(args.public_episodes, 100, args.seed, checkpoint.model.cfg.image_size)
    rows = []

    def row(name, fn):
        print(f"{name} ...", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        s = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append({"pipeline": name, "episodes": s["episodes"], "successes": s["successes"],
                     "success_rate": s["success_rate"], "wall_s": wall, "cpu_s": cpu, "plan_calls": s["plan_calls"],
                     "mean_batch_per_plan_call": s["mean_batch_per_plan_call"],
                     "seconds_per_plan_call": s["seconds_per_plan_call"]})  # fmt: skip

    public = PublicCEM(_common.public_lewm(checkpoint.model), num_samples=args.samples, n_steps=args.iters,
                       topk=args.topk, device="cpu", seed=args.seed)  # fmt: skip
    if not args.skip_public:
        row("public: World + WorldModelPolicy + public CEMSolver",
            lambda: evaluate_world(WORLD, args.ckpt, swm_data, solver=public, **plan))  # fmt: skip
    row("lewm_fast solver in the public World (lewm-fast eval --world)",
        lambda: evaluate_world(WORLD, args.ckpt, swm_data, backend=args.backend, **plan))  # fmt: skip
    if args.data:
        row("lewm-fast eval --env tworoom",
            lambda: evaluate("tworoom", args.data, args.ckpt, backend=args.backend, **plan))  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a TwoRoom run or checkpoint folder (lewm-fast train)")
    p.add_argument("--data", default=None, help="its TwoRoom episode file, for the `lewm-fast eval --env` row")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--goal-offset", type=int, default=25)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--samples", type=int, default=_common.SAMPLES)
    p.add_argument("--topk", type=int, default=_common.TOPK)
    p.add_argument("--iters", type=int, default=_common.ITERS)
    p.add_argument("--dtype", default="fp32", choices=list(PLAN_DTYPES), help="lewm_fast's planning dtype (fp32)")
    p.add_argument("--backend", default="auto", help="lewm_fast's planner backend (auto)")
    p.add_argument("--public-episodes", type=int, default=100, help="episodes of the public TwoRoom-v1 data (100)")
    p.add_argument("--skip-public", action="store_true", help="leave out the public solver's row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--tag", default="")
    args = p.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}; {args.episodes} episodes, budget {args.budget}, CEM {args.samples} x "
          f"{args.iters}, torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    rows = run_rows(args)
    base = next((r for r in rows if r["pipeline"].startswith("public")), None)
    for r in rows:
        r["x_public_wall"] = base["wall_s"] / r["wall_s"] if base else None
    columns = [("pipeline", "pipeline"), ("successes", "successes"), ("episodes", "episodes"), ("wall_s", "wall s"),
               ("cpu_s", "CPU s"), ("plan_calls", "plan calls"), ("mean_batch_per_plan_call", "episodes/call"),
               ("x_public_wall", "x public")]  # fmt: skip
    _common.print_table(rows, columns)
    payload = {"checkpoint": str(args.ckpt), "world": WORLD, "episodes": args.episodes, "goal_offset": args.goal_offset,
               "budget": args.budget, "samples": args.samples, "topk": args.topk, "iters": args.iters,
               "dtype": args.dtype, "backend": args.backend, "seed": args.seed, "load_average_start": load,
               "load_average_end": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows}  # fmt: skip
    name = "eval_speed" + (f"-{args.tag}" if args.tag else "")
    print("results:", _common.write_result(name, payload, torch.device("cpu"), args.out))


if __name__ == "__main__":
    main()
