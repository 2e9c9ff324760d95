"""How much planning in bf16 changes the plan: bf16 fast engine against the fp32 fast engine.

Over N random problems (default 20, solved as one batch of N environments: random observation, random
goal image; or, with --goal reachable, a goal embedding that is the model's own prediction for a random
"true" action sequence, so a cost near 0 exists), both planners start from the same seed, so their
first iteration draws identical candidates:

- elites: how often the bf16 costs pick exactly the fp32 elites of those identical candidates, and the
  mean overlap of the two elite sets;
- plans: the fp32-evaluated cost of the final bf16 plan against that of the final fp32 plan (relative
  difference of the means over problems; the goal is within 2%), and the share of fp32's CEM
  improvement (from the initial mean's cost) that bf16 keeps. As a yardstick, the same numbers for an
  fp32 plan from another seed: CEM's own run-to-run spread.

    python benchmarks/plan_exactness.py                    # published-size model, random weights, 20 problems
    python benchmarks/plan_exactness.py --goal reachable   # goals the model can reach
    python benchmarks/plan_exactness.py --ckpt DIR         # a trained checkpoint (the figures that matter)

Random weights: the AdaLN modulation is drawn N(0, --adaln-std = 0.3) so that actions move the
prediction (plan_speed.py uses 0.02, which is enough for timing but leaves every plan nearly equal).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HORIZON, ITERS, SAMPLES, TOPK, print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402
from plan_speed import build_model, observations  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.planning.rollout import rollout_last  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="published-format checkpoint (folder with weights.pt + config.json)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default="auto", help="fast engine to check (torch, triton, auto)")
    p.add_argument("--problems", type=int, default=20)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--topk", type=int, default=TOPK)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--horizon", type=int, default=HORIZON)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--goal", choices=["image", "reachable"], default="image")
    p.add_argument("--adaln-std", type=float, default=0.3, help="random weights: std of the AdaLN modulation")
    p.add_argument("--control", action="store_true", help="also plan in fp32 from another seed (CEM's own spread)")
    p.add_argument("--quick", action="store_true", help="5 problems, 10 iterations")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def problem_model(args, device: torch.device):
    """The checkpoint, or the published-size model with random weights whose AdaLN modulation moves the
    prediction (std --adaln-std)."""
    model = build_model(args, device)
    if not args.ckpt:
        gen = torch.Generator(device).manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "adaLN_modulation" in name:
                    param.normal_(0, args.adaln_std, generator=gen)
    return model


def embedded_problems(args, model, p32, device: torch.device):
    """(history (E, 1, D), goal (E, D), the "true" actions (E, 1, horizon, A)) of --problems problems: a random
    goal image's embedding, or (--goal reachable) the model's own prediction for the true actions."""
    cfg, e = model.cfg, args.problems
    pixels, goal_pixels = observations(cfg, e, 1, device, seed=args.seed)
    hist, goal = p32.engine.embed(pixels, goal_pixels)
    g = torch.Generator().manual_seed(args.seed + 1)
    true_actions = torch.randn(e, 1, args.horizon, cfg.action_block_dim, generator=g).to(device)
    if args.goal == "reachable":
        with torch.inference_mode():
            goal = rollout_last(p32.engine.packed, p32.engine.ops, hist, true_actions)[:, 0]
    return hist, goal, true_actions


def elite_overlap(args, p32, p16, hist, goal, device: torch.device) -> torch.Tensor:
    """(E,) the share of the fp32 elites the bf16 costs pick among the first iteration's identical candidates."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    cand = torch.randn(args.problems, args.samples, args.horizon, p32.action_block_dim, generator=gen, device=device)
    cand[:, 0] = 0.0
    elites32 = p32.engine.cost_embedded(hist, goal, cand).topk(args.topk, dim=1, largest=False).indices
    elites16 = p16.engine.cost_embedded(hist, goal, cand).topk(args.topk, dim=1, largest=False).indices
    return torch.tensor([len(set(a.tolist()) & set(b.tolist())) / args.topk for a, b in zip(elites32, elites16)])


def plan_rows(plans: dict, c32: torch.Tensor, start_cost: torch.Tensor) -> list[dict]:
    """Each plan's fp32 cost against the fp32 plan's, and the share of its improvement kept."""
    rows = []
    for name, c in plans.items():
        rows.append(dict(plan=name, mean_cost=c.mean().item(), fp32_mean_cost=c32.mean().item(),
                         rel_diff_of_means=(c.mean() / c32.mean() - 1).item(),
                         mean_abs_rel_diff=((c - c32).abs() / c32).mean().item(),
                         improvement_kept=((start_cost - c) / (start_cost - c32)).mean().item()))  # fmt: skip
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.problems, args.iters = min(args.problems, 5), min(args.iters, 10)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = problem_model(args, device)
    e = args.problems
    kw = dict(num_samples=args.samples, topk=args.topk, iters=args.iters, horizon=args.horizon, backend=args.backend)
    p32 = lf.CEMPlanner(model, dtype=torch.float32, seed=args.seed, **kw)
    p16 = lf.CEMPlanner(model, dtype=torch.bfloat16, seed=args.seed, **kw)
    hist, goal, true_actions = embedded_problems(args, model, p32, device)
    # 1. identical candidates (the first iteration's draw): do the bf16 costs pick the fp32 elites?
    overlap = elite_overlap(args, p32, p16, hist, goal, device)

    # 2. whole plans, evaluated with the fp32 cost
    def solve(planner, seed):
        planner.reseed(seed)
        mean, std = planner.initial_distribution(e)
        t0 = time.perf_counter()
        plan = planner.engine.plan_embedded(hist, goal, mean, std).actions
        print(f"  {planner.dtype} seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)
        return p32.engine.cost_embedded(hist, goal, plan[:, None])[:, 0]

    start_cost = p32.engine.cost_embedded(hist, goal, torch.zeros_like(true_actions))[:, 0]
    c32, c16 = solve(p32, args.seed), solve(p16, args.seed)
    plans = {"bf16 (same seed)": c16}
    if args.control:
        plans["fp32 (another seed)"] = solve(p32, args.seed + 1000)
    rows = plan_rows(plans, c32, start_cost)
    summary = dict(
        problems=e,
        elites_identical=(overlap == 1).float().mean().item(),
        elite_overlap=overlap.mean().item(),
        start_cost=start_cost.mean().item(),
    )
    print(f"\n{e} problems ({args.goal} goals), {args.samples} x {args.iters} x horizon {args.horizon}, backend "
          f"{p32.backend}, {device.type}: first-iteration elites identical in {summary['elites_identical']:.0%} "
          f"of problems, mean overlap {summary['elite_overlap']:.1%}; mean cost of the initial mean "
          f"{summary['start_cost']:.3g}\n")  # fmt: skip
    print_table(rows, [("plan", "plan"), ("mean_cost", "mean fp32 cost"), ("fp32_mean_cost", "fp32 plan's"),
                       ("rel_diff_of_means", "rel. diff of means"), ("mean_abs_rel_diff", "mean |rel. diff|"),
                       ("improvement_kept", "improvement kept")])  # fmt: skip
    payload = {"args": vars(args), "summary": summary, "rows": rows,
               "per_problem": {"fp32": c32.tolist(), **{k: v.tolist() for k, v in plans.items()},
                               "start": start_cost.tolist(), "elite_overlap": overlap.tolist()}}  # fmt: skip
    path = write_result("plan_exactness", payload, device, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
