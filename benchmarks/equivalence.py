"""An equivalence verdict for the fast planner backends on this device: the claims of
lewm_fast/planning/equivalence.py (docs/numerics.md), at the published size, for every sampling solver.

    python benchmarks/equivalence.py --device cuda --out DIR            # the GPU report's stage (triton, torch)
    python benchmarks/equivalence.py --device cpu --quick --out DIR     # the CPU engine on a tiny model (CI)

For each backend and dtype: (1) costs of random candidates within the derived bound of the exact (float64)
costs, histories of 1 and 3 frames; (2, 3) every sampling solver's whole plans, traced over several seeds:
every iteration's costs within the bound, its fused update replaying the reference update, its selections
differing from the exact ones only at near-ties, plans equal to the exact plan where no selection flipped
and of the exact plan's quality where one did. Prints a table, writes JSON (every number behind the
verdict) and exits 1 when any claim fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ITERS, SAMPLES, print_table, write_result  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.capability import DTYPE_NAMES, PLAN_DTYPES  # noqa: E402
from lewm_fast.planning import equivalence as eq  # noqa: E402

# Every sampling solver, with the options that change its update; topk etc. scale with --samples.
CASES = {
    "cem": ("cem", {}),
    "icem": ("icem", {}),
    "icem_best_box": ("icem", dict(return_mean=False, n_elite_keep=3, box=0.8)),
    "mppi": ("mppi", {}),
    "mppi_all": ("mppi", dict(topk=None, temperature=0.2)),
    "ps": ("ps", {}),
}
TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backends", nargs="+", help="default: triton and torch on CUDA, torch on a CPU")
    p.add_argument("--dtypes", nargs="+", default=list(PLAN_DTYPES), choices=list(PLAN_DTYPES))
    p.add_argument("--solvers", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--adaln-std", type=float, default=0.05, help="random AdaLN weights: costs that follow actions")
    p.add_argument("--quick", action="store_true", help="a tiny model, 37 samples, 2 seeds")
    p.add_argument("--out", type=Path, help="folder for the JSON (default: the printed table only)")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.seeds = min(args.samples, 37), min(args.seeds, 2)
    if args.backends is None:
        args.backends = ["triton", "torch"] if args.device.startswith("cuda") else ["torch"]
    return args


def build_model(args, device: torch.device) -> lf.LeWM:
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig(**TINY) if args.quick else lf.LeWMConfig())
    with torch.no_grad():  # AdaLN starts at zero: without it the actions would not change the cost
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.5 if args.quick else args.adaln_std)
    return model.to(device).eval()


def solver_params(case: str, samples: int, iters: int, action_dim: int, device) -> tuple[str, dict]:
    solver, extra = CASES[case]
    params = dict(num_samples=samples)
    if solver != "ps":
        params.update(n_steps=iters, topk=max(2, samples // 10))
    params.update({k: v for k, v in extra.items() if k != "box"})
    if "box" in extra:
        params.update(action_low=torch.full((action_dim,), -extra["box"], device=device),
                      action_high=torch.full((action_dim,), extra["box"], device=device))  # fmt: skip
    return solver, params


def observations(model, e: int, h: int, seed: int, device):
    cfg, g = model.cfg, torch.Generator().manual_seed(seed)
    size = (cfg.in_channels, cfg.image_size, cfg.image_size)
    return torch.rand(e, h, *size, generator=g).to(device), torch.rand(e, *size, generator=g).to(device)


def cost_rows(model, args, backend: str, dtype_name: str, device) -> list[dict]:
    """Claim 1 on random candidates, histories of 1 and 3 frames."""
    rows, dtype = [], DTYPE_NAMES[dtype_name]
    for h in (1, 3):
        planner = lf.CEMPlanner(model, backend=backend, dtype=dtype, cuda_graph=False)
        pixels, goal = observations(model, args.envs, h, h, device)
        cand = torch.randn(args.envs, args.samples, planner.horizon, planner.action_block_dim, device=device)
        check = eq.check_planner_costs(planner, pixels, goal, cand)
        rows.append(dict(check="costs", backend=backend, dtype=dtype_name, case=f"H={h}", ok=check.ok,
                         error=check.error, bound=check.bound, own_error=check.own_error))  # fmt: skip
    return rows


def plan_row(model, args, backend: str, dtype_name: str, case: str, device) -> dict:
    """Claims 1-3 on whole plans of one solver, over the seeds, and the quality after flips."""
    solver, params = solver_params(case, args.samples, args.iters, model.cfg.action_block_dim, device)
    planner = lf.Planner(model, solver, backend=backend, dtype=DTYPE_NAMES[dtype_name], cuda_graph=False, **params)
    start = time.perf_counter()
    traces = [eq.trace(planner, *observations(model, args.envs, 1 + seed % 2, seed, device), seed=seed)
              for seed in range(args.seeds)]  # fmt: skip
    quality = eq.compare_quality(traces)
    summaries, ok = [t.summary() for t in traces], all(t.ok for t in traces) and quality.ok
    return dict(check="plans", backend=backend, dtype=dtype_name, case=case, ok=ok,
                worst_error_over_bound=max(s["worst_cost_error_over_bound"] for s in summaries),
                worst_replay_error=max(s["worst_replay_error"] for s in summaries),
                flips=[s["flip_step"] for s in summaries], plans_equal=sum(s["plans_equal"] for s in summaries),
                quality=dict(parted=quality.parted, fast=quality.fast_cost, exact=quality.exact_cost,
                             start=quality.start_cost, ok=quality.ok),
                failures=[f for t in traces for f in t.failures()][:5], traces=summaries,
                seconds=time.perf_counter() - start)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    model = build_model(args, device)
    rows = []
    for backend in args.backends:
        for name in args.dtypes:
            rows += cost_rows(model, args, backend, name, device)
            rows += [plan_row(model, args, backend, name, case, device) for case in args.solvers]
    print_table(rows, [("check", "check"), ("backend", "backend"), ("dtype", "dtype"), ("case", "case"),
                       ("ok", "ok"), ("error", "cost error"), ("bound", "bound"),
                       ("worst_error_over_bound", "worst error/bound"), ("flips", "flip at"),
                       ("plans_equal", "plans equal")])  # fmt: skip
    verdict = "pass" if all(r["ok"] for r in rows) else "fail"
    print(f"equivalence: {verdict}")
    if args.out:
        size = "tiny" if args.quick else "published"
        payload = dict(verdict=verdict, size=size, samples=args.samples, iters=args.iters, seeds=args.seeds,
                       envs=args.envs, rows=rows)  # fmt: skip
        print("wrote", write_result("equivalence", payload, device, args.out))
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
