"""A real stable-worldmodel planning loop with every accelerated solver: `swm.World` (TwoRoom), a
`WorldModelPolicy`, and per solver three runs from the same seed on the same weights:

    public     the public solver of the installed stable-worldmodel (its LeWM, its get_cost)
    reference  the drop-in after `lf.interop.accelerate()`, backend="reference": must take the very same
               actions, step for step (max |difference| reported; 0 expected)
    fast       the drop-in, backend="auto": every environment in one batch on the packed engine

Each run records the success rate, the time per `solve` call and per environment step. The model is a
published-format checkpoint (`--ckpt DIR`, e.g. from `lewm-fast train`) or, by default, the `small`
preset with random weights: then successes say nothing about planning quality (use `lewm-fast eval`
for that); the loop, the equality and the timings are the point.

    /path/to/peer-venv/bin/python benchmarks/swm_world_loop.py [--solvers cem,icem] [--envs 4]

Writes <--out>/swm_world_loop-<date>-<cpu>.json (`--out benchmarks/results` to record the run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ITERS, SAMPLES, TOPK, print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.training.presets import get_preset  # noqa: E402

SOLVERS = {"cem": "CEMSolver", "icem": "ICEMSolver", "mppi": "MPPISolver", "ps": "PredictiveSamplingSolver",
           "grad": "GradientSolver"}  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--solvers", default=",".join(SOLVERS), help=f"comma-separated, of {list(SOLVERS)}")
    p.add_argument("--envs", type=int, default=4, help="environments (one episode each)")
    p.add_argument("--max-steps", type=int, default=50, help="environment steps per episode (the budget)")
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--iters", type=int, default=ITERS, help="n_steps of every solver but predictive sampling")
    p.add_argument("--topk", type=int, default=TOPK)
    p.add_argument("--grad-lr", type=float, default=0.1, help="GradientSolver's SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=None, help="a published-format checkpoint (default: random weights)")
    p.add_argument("--size", choices=["small", "tiny"], default="small",
                   help="the random model: the `small` training preset (64 px) or a tiny one (28 px)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    unknown = sorted(set(args.solvers.split(",")) - set(SOLVERS))
    if unknown:
        p.error(f"--solvers: unknown {unknown}; expected some of {list(SOLVERS)}")
    return args


def random_model(size: str) -> lf.LeWM:
    """The `small` preset, or a tiny LeWM (28 px, 32-wide) for a quick loop; random weights."""
    if size == "small":
        return lf.LeWM(get_preset("small").model).eval()
    cfg = lf.LeWMConfig(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96,
                        embed_dim=32, proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16,
                        pred_mlp_dim=64, pred_hidden_dim=32, pred_output_dim=32, pred_proj_hidden_dim=64)  # fmt: skip
    return lf.LeWM(cfg).eval()


def solver_kwargs(name: str, args) -> dict:
    """The same settings for the public solver and the drop-in (batch_size 1: the public LeWM.get_cost
    compares with one environment's goal only, so the public solvers run one environment per chunk)."""
    kw = {"seed": args.seed, "batch_size": 1}
    if name == "ps":
        return {**kw, "num_samples": args.samples}
    if name == "grad":
        return {**kw, "n_steps": args.iters, "num_samples": 1, "optimizer_kwargs": {"lr": args.grad_lr}}
    return {**kw, "num_samples": args.samples, "n_steps": args.iters, "topk": args.topk}


def run_row(label, cls, public_model, name, args, **extra) -> tuple[dict, np.ndarray]:
    from lewm_fast.interop.world import run_world

    solver = cls(public_model, **solver_kwargs(name, args), **extra)
    run = run_world(solver, public_model.encoder.config.image_size, args.envs, args.max_steps, args.seed)
    steps = len(run.actions)
    row = {
        "solver": SOLVERS[name],
        "run": label,
        "success_rate": 100.0 * float(np.mean(run.success)),
        "solve_calls": len(run.solve_s),
        "s_per_solve": float(np.mean(run.solve_s)) if run.solve_s else None,
        "s_per_env_step": sum(run.solve_s) / max(steps, 1),
        "env_steps": steps,
    }
    print(f"{row['solver']} {label}: {row['success_rate']:.0f}% success, {row['s_per_env_step']:.3f} s per env step",
          flush=True)  # fmt: skip
    return row, run.actions


def main(argv=None) -> int:
    args = parse_args(argv)
    import stable_worldmodel.solver as public_solvers

    torch.manual_seed(args.seed)
    model = lf.interop.load_official(args.ckpt) if args.ckpt else random_model(args.size)
    public_model = lf.interop.to_swm(model).eval()
    originals = {name: getattr(public_solvers, cls) for name, cls in SOLVERS.items()}
    handle = lf.interop.accelerate()  # from here on, stable_worldmodel's solver names are the drop-ins
    rows = []
    try:
        for name in args.solvers.split(","):
            accelerated = getattr(public_solvers, SOLVERS[name])
            public_row, public_actions = run_row("public", originals[name], public_model, name, args)
            ref_row, ref_actions = run_row("reference", accelerated, public_model, name, args, backend="reference")
            fast_row, _ = run_row("fast", accelerated, public_model, name, args, backend="auto")
            same_shape = ref_actions.shape == public_actions.shape
            ref_row["max_abs_diff_vs_public"] = (
                float(np.abs(ref_actions - public_actions).max()) if same_shape else float("inf")
            )
            ref_row["speedup_vs_public"] = public_row["s_per_env_step"] / max(ref_row["s_per_env_step"], 1e-12)
            fast_row["speedup_vs_public"] = public_row["s_per_env_step"] / max(fast_row["s_per_env_step"], 1e-12)
            rows += [public_row, ref_row, fast_row]
    finally:
        handle.undo()
    print_table(rows, [("solver", "solver"), ("run", "run"), ("success_rate", "success %"),
                       ("s_per_solve", "s/solve"), ("s_per_env_step", "s/env step"),
                       ("speedup_vs_public", "x public"), ("max_abs_diff_vs_public", "max|d| vs public")])  # fmt: skip
    payload = {
        "env": "swm/TwoRoom-v1",
        "model": str(args.ckpt) if args.ckpt else f"{args.size}, random weights (successes say nothing)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "ckpt")},
        "parameters": model.num_parameters()["total"],
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    print("wrote", write_result("swm_world_loop", payload, torch.device("cpu"), args.out))
    bad = [r["solver"] for r in rows if r["run"] == "reference" and r["max_abs_diff_vs_public"] != 0.0]
    if bad:
        print(f"reference differs from the public solver for {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
