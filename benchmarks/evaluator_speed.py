"""Planning through stable-worldmodel's current source: `CEMSolver(cost=ShootingCostEvaluator(lewm, GoalMSE()))`,
the public solver against lewm_fast's drop-in, same weights, same run.

Rows (each a whole plan: `--samples` x `--iters`, horizon `--horizon`, `--envs` environments, fp32):
- public: the current source's `CEMSolver` with `batch_size = E` (every environment in one chunk, its
  fastest setting) over its own `LeWM` with the weights of an `lf.LeWM(lf.LeWMConfig())` (the published
  sizes, random weights);
- reference: lewm_fast's drop-in on backend="reference" (the public loop; its plan must equal the public
  plan bit for bit, checked and recorded as `reference_equals_public`);
- fast (the headline): the drop-in on backend="auto" with the same evaluator (recognised: the packed rollout),
  and over the `lf.LeWM` itself in the evaluator (`--lewm-fast-model`).
Rounds are interleaved (public, reference, fast, ... then again); the fastest of each row's runs is kept and
every run is in the JSON. Run it with the Python of a venv where the current source is installed:

    /path/to/src-venv/bin/python benchmarks/evaluator_speed.py [--envs 4] [--rounds 2] [--tag busy]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HORIZON, ITERS, SAMPLES, TOPK, print_table, public_lewm, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--topk", type=int, default=TOPK)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--horizon", type=int, default=HORIZON)
    p.add_argument("--image", type=int, default=None, help="frame size (default: the config's, 224)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved measurements per row (the fastest is kept)")
    p.add_argument("--no-reference", action="store_true", help="skip the drop-in's reference row")
    p.add_argument("--tag", default="", help="a word for the results file name (e.g. the machine's load)")
    p.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return p.parse_args(argv)


def observations(cfg: lf.LeWMConfig, e: int, image: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"pixels": torch.rand(e, 1, cfg.in_channels, image, image, generator=g),
            "goal": torch.rand(e, 1, cfg.in_channels, image, image, generator=g),
            "action": torch.zeros(e, 1, cfg.action_block_dim)}  # fmt: skip


def make_solver(cls, cost, args, cfg, **kw):
    import gymnasium as gym

    solver = cls(cost=cost, num_samples=args.samples, topk=args.topk, n_steps=args.iters, seed=0, **kw)
    solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(args.envs, cfg.action_dim)), n_envs=args.envs,
                     config=types.SimpleNamespace(horizon=args.horizon, action_block=cfg.frameskip))  # fmt: skip
    return solver


def timed(solver, info: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the public solver prints its solve time
        out = solver.solve({k: v.clone() for k, v in info.items()})
    return time.perf_counter() - start, out


def rows(args, model: lf.LeWM) -> dict:
    from stable_worldmodel.planning import GoalMSE, ShootingCostEvaluator
    from stable_worldmodel.planning.solver.cem import CEMSolver as PublicCEM

    cfg, public = model.cfg, public_lewm(model)
    evaluator = ShootingCostEvaluator(public, GoalMSE())
    solvers = {"public": make_solver(PublicCEM, evaluator, args, cfg, batch_size=args.envs)}
    if not args.no_reference:
        solvers["reference"] = make_solver(lf.interop.CEMSolver, evaluator, args, cfg, batch_size=args.envs,
                                           backend="reference")  # fmt: skip
    solvers["fast"] = make_solver(lf.interop.CEMSolver, evaluator, args, cfg, backend="auto")
    solvers["fast, lf.LeWM model"] = make_solver(lf.interop.CEMSolver, ShootingCostEvaluator(model, GoalMSE()), args,
                                                 cfg, backend="auto")  # fmt: skip
    return solvers


def measure(args, solvers: dict, info: dict) -> tuple[dict, dict]:
    runs, outputs = {name: [] for name in solvers}, {}
    for rnd in range(args.rounds):
        for name, solver in solvers.items():
            solver.torch_gen.manual_seed(0)  # every run draws the same noise
            seconds, outputs[name] = timed(solver, info)
            runs[name].append(seconds)
            print(f"round {rnd + 1}: {name:22s} {seconds:8.2f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
    return runs, outputs


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig()).eval()
    image = args.image or model.cfg.image_size
    if image % model.cfg.patch_size:  # before any row runs: the packed encoder takes whole patches only
        raise SystemExit(f"--image: expected a multiple of the patch size {model.cfg.patch_size}, got {image}")
    info = observations(model.cfg, args.envs, image)
    solvers = rows(args, model)
    load_before = os.getloadavg()
    runs, outputs = measure(args, solvers, info)
    best = {name: min(r) for name, r in runs.items()}
    table = [{"row": name, "s_per_plan": best[name], "vs_public": best["public"] / best[name]} for name in runs]
    print_table(table, [("row", "row"), ("s_per_plan", "s / plan"), ("vs_public", "x public")])
    packed = solvers["fast"].planner_cache.planner
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"dtype": "fp32", "model": "LeWMConfig()"},
        "packed_backend": None if packed is None else packed.backend,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "runs_s": runs,
        "rows": table,
        "reference_equals_public": None if args.no_reference
        else bool(torch.equal(outputs["reference"]["actions"], outputs["public"]["actions"])),
    }  # fmt: skip
    path = write_result("evaluator_speed", payload, torch.device("cpu"), args.out)
    if args.tag:  # evaluator_speed-<date>-<cpu>-<tag>.json
        path = path.rename(path.with_name(f"{path.stem}-{args.tag}.json"))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
