"""The headline benchmark: time per CEM plan (300 samples x 30 iterations x horizon 5 by default).

Rows: planner backend x dtype x number of environments on one device, plus the public
stable-worldmodel solver when it is importable, all in one process on the same weights. Slow rows run
fewer iterations (said in the `iters_run` column); time per iteration is what is compared, and ms per
plan is time per iteration x the requested iterations plus the once-per-plan encoding.

Work is counted two ways (lewm_fast/planning/flops.py): `TFLOP/s public` divides the public rollout's
matmul work by the time (the same numerator for every row: a speed), `TFLOP/s own` divides the work
the row's solver actually does (the fast engines skip ~1/3 of it: K/V reuse, newest-token-only).

    python benchmarks/plan_speed.py                 # published-size model, random weights, CPU
    python benchmarks/plan_speed.py --ckpt DIR      # a published-format checkpoint
    python benchmarks/plan_speed.py --quick         # a smaller, faster run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# OpenMP's wait policy is left to the environment (recorded in the results): on a quiet machine the
# default is fastest (PASSIVE measured 1.5x slower for a bf16 plan here); on a machine shared with other
# jobs, OMP_WAIT_POLICY=PASSIVE keeps spinning threads from starving each other (measured 6-8x there).
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name, print_table, public_lewm, synchronize, write_result  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.planning import planner as planner_module  # noqa: E402
from lewm_fast.planning.flops import fast_iteration_flops, public_iteration_flops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="published-format checkpoint (folder with weights.pt + config.json)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16], help="numbers of environments E")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--topk", type=int, default=30)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--history", type=int, default=1)
    p.add_argument("--backends", nargs="+", default=None, help="planner backends (default: all available)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed work per row and round, at most")
    p.add_argument("--rounds", type=int, default=2, help="measurements per row (the fastest is kept)")
    p.add_argument("--no-public", action="store_true", help="skip the public stable-worldmodel row")
    p.add_argument("--quick", action="store_true", help="E=1 only, a shorter budget")
    p.add_argument("--eager-too", action="store_true", help="on CUDA, also time the fast rows without CUDA graphs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, i.e. the cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (with --threads 1: robust when shared)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="on CPU, add torch rows with LEWM_PLAN_COMPILE=1")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def build_model(args, device):
    if args.ckpt:
        return lf.interop.load_official(args.ckpt, map_location=device)
    torch.manual_seed(0)
    model = lf.LeWM(lf.LeWMConfig())
    with torch.no_grad():  # AdaLN starts at zero; random weights should exercise every block
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.02)
    return model.to(device).eval()


def observations(cfg, e, history, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = (cfg.in_channels, cfg.image_size, cfg.image_size)
    return torch.rand(e, history, *size, generator=g).to(device), torch.rand(e, *size, generator=g).to(device)


class PlanTimer:
    """Times one solver: a 1-iteration plan (encode + one iteration) and a k-iteration plan, k chosen to
    fit `budget` seconds; their difference isolates iterations. Building it warms up (allocations, graph
    capture, autotuning; skipped with warm=False: nothing to warm) and measures once; `measure()` measures
    again, interleaved with the other rows, and the fastest run is kept: on a shared machine other jobs
    only ever add time, and interleaving exposes every row to the same conditions."""

    def __init__(self, make_plan, iters_full, budget, device, clock=time.perf_counter, warm=True):
        self.device, self.clock = device, clock
        self.plan_1 = make_plan(1)
        if warm:
            self.plan_1()
        self.one = self._time(self.plan_1)
        self.k = max(1, min(iters_full, int(budget / max(self.one, 1e-6))))
        self.plan_k = make_plan(self.k) if self.k > 1 else None
        if self.plan_k is not None and warm:
            self.plan_k()
        self.total = self._time(self.plan_k) if self.plan_k is not None else None

    def _time(self, run) -> float:
        synchronize(self.device)
        t0 = self.clock()
        run()
        synchronize(self.device)
        return self.clock() - t0

    def measure(self) -> None:
        self.one = min(self.one, self._time(self.plan_1))
        if self.plan_k is not None:
            self.total = min(self.total, self._time(self.plan_k))

    def result(self) -> tuple[float, int, float]:
        """(seconds per iteration, iterations run, seconds of encoding per plan)."""
        if self.plan_k is None:
            return self.one, 1, self.one
        per_iter = max((self.total - self.one) / (self.k - 1), 1e-9)
        return per_iter, self.k, max(self.one - per_iter, 0.0)


def public_solver_row(model, args, e, device):
    """The public CEMSolver on the same weights (transformers 5.x names equal ours)."""
    import types

    import gymnasium as gym
    from stable_worldmodel.solver.cem import CEMSolver

    cfg = model.cfg
    public = public_lewm(model, device)
    pixels, goal = observations(cfg, e, args.history, device)

    def make_plan(k):
        solver = CEMSolver(public, num_samples=args.samples, n_steps=k, topk=args.topk, device=device, seed=0)
        solver.configure(action_space=gym.spaces.Box(-1, 1, shape=(e, cfg.action_dim)), n_envs=e,
                         config=types.SimpleNamespace(horizon=args.horizon, action_block=cfg.frameskip))  # fmt: skip
        info = {
            "pixels": pixels.cpu(),
            "goal": goal[:, None].cpu(),
            "action": torch.zeros(e, args.history, cfg.action_block_dim),
        }
        import contextlib
        import io

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                solver.solve({k2: v.clone() for k2, v in info.items()})

        return run

    return make_plan


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.envs, args.budget = [1], min(args.budget, 3.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = build_model(args, device)
    cfg = model.cfg
    backends = args.backends or [b for b in ("reference", "torch", "triton") if b in planner_module._ENGINES]
    if device.type != "cuda" and "triton" in backends and args.backends is None:
        backends.remove("triton")  # Triton on the CPU is the interpreter: a correctness tool, not a speed row
    flops_iter = {e: public_iteration_flops(cfg, args.samples, args.horizon, args.history) * e for e in args.envs}
    fast_flops_iter = {e: fast_iteration_flops(cfg, args.samples, args.horizon, args.history) * e for e in args.envs}
    user_compile = os.environ.get("LEWM_PLAN_COMPILE", "0")
    graph_modes = [True, False] if (device.type == "cuda" and args.eager_too) else [True]
    specs = []  # (row fields, timer), built and measured once in order, then measured again in reverse
    for e in args.envs:
        pixels, goal = observations(cfg, e, args.history, device)
        for backend in backends:
            for dname in args.dtypes:
                if backend == "reference" and dname != "fp32":
                    continue  # the public semantics run in the model's dtype
                variants = [(g, False) for g in graph_modes] if backend != "reference" else [(False, False)]
                if backend == "torch" and device.type == "cpu" and args.compile:
                    variants.append((False, True))
                for graph, compiled in variants:

                    def make_plan(k, backend=backend, dname=dname, pixels=pixels, goal=goal, graph=graph, c=compiled):
                        os.environ["LEWM_PLAN_COMPILE"] = "1" if c else user_compile  # read when the engine is built
                        planner = lf.CEMPlanner(
                            model, num_samples=args.samples, topk=args.topk, iters=k, horizon=args.horizon,
                            seed=0, backend=backend, dtype=DTYPES[dname], cuda_graph=graph,
                        )  # fmt: skip
                        return lambda: planner.plan(pixels, goal)

                    name = f"lewm_fast:{backend}" + ("" if graph or device.type != "cuda" else " (no graph)")
                    name += "+compile" if compiled else ""
                    own = flops_iter[e] if backend == "reference" else fast_flops_iter[e]
                    timer = PlanTimer(make_plan, args.iters, args.budget, device, clock, warm=backend != "reference")
                    specs.append(
                        (dict(solver=name, dtype=dname, device=device.type, envs=e, own_flops_iter=own), timer)
                    )
                    print(f"  {name:>22} {dname} E={e}: {timer.result()[0] * 1e3:.1f} ms/iteration "
                          f"({timer.k} iterations run)", flush=True)  # fmt: skip
        if not args.no_public:
            try:
                make_plan = public_solver_row(model, args, e, device)
            except ImportError:
                make_plan = None
            if make_plan is not None:
                timer = PlanTimer(make_plan, args.iters, args.budget, device, clock, warm=False)
                specs.append((dict(solver="public stable-worldmodel", dtype="fp32", device=device.type, envs=e,
                                   own_flops_iter=flops_iter[e]), timer))  # fmt: skip
                print(f"     public fp32 E={e}: {timer.result()[0] * 1e3:.1f} ms/iteration", flush=True)
    for _ in range(args.rounds - 1):
        print("  measuring again (interleaved, reverse order)", flush=True)
        for _, timer in reversed(specs):
            timer.measure()
    rows = []
    for fields, timer in specs:
        per_iter, k, encode = timer.result()
        rows.append(dict(fields, iters_run=k, ms_per_iter=per_iter * 1e3, encode_ms=encode * 1e3))

    for r in rows:
        e = r["envs"]
        r["ms_per_plan"] = r["ms_per_iter"] * args.iters + r["encode_ms"]
        r["plans_per_s"] = e * 1e3 / r["ms_per_plan"]
        r["tflops"] = flops_iter[e] / (r["ms_per_iter"] * 1e-3) / 1e12
        r["tflops_own"] = r["own_flops_iter"] / (r["ms_per_iter"] * 1e-3) / 1e12
        ref = next((x for x in rows if x["solver"] == "lewm_fast:reference" and x["envs"] == e), None)
        pub = next((x for x in rows if x["solver"].startswith("public") and x["envs"] == e), None)
        r["x_reference"] = ref["ms_per_iter"] / r["ms_per_iter"] if ref else None
        r["x_public"] = pub["ms_per_iter"] / r["ms_per_iter"] if pub else None

    e0 = args.envs[0]
    os.environ["LEWM_PLAN_COMPILE"] = user_compile
    print(f"\nplan: {args.samples} samples x {args.iters} iterations x horizon {args.horizon}, history "
          f"{args.history}, published-size model{' from ' + args.ckpt if args.ckpt else ' (random weights)'}, "
          f"{device_name(device)}, {args.clock} clock, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"matmul work per iteration per env: public rollout "
          f"{flops_iter[e0] / e0 / 1e9:.1f} GFLOP, fast rollout "
          f"{fast_flops_iter[e0] / e0 / 1e9:.1f} GFLOP\n")  # fmt: skip
    print_table(rows, [("solver", "solver"), ("dtype", "dtype"), ("device", "device"), ("envs", "E"),
                       ("iters_run", "iters run"), ("ms_per_plan", "ms/plan"), ("plans_per_s", "plans/s"),
                       ("ms_per_iter", "ms/iter"), ("tflops", "TFLOP/s public"), ("tflops_own", "TFLOP/s own"),
                       ("x_reference", "x reference"), ("x_public", "x public")])  # fmt: skip
    payload = {"args": vars(args), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows}
    path = write_result("plan_speed", payload, device, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
