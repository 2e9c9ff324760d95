"""The headline benchmark: time per plan (300 samples x 30 iterations x horizon 5 by default) for each
solver of the registry (cem, icem, mppi, ps, grad).

Rows: solver x planner backend x dtype x number of environments on one device, plus the public
stable-worldmodel solver of the same name when it is importable (the public class, a public LeWM
converted from the same weights, its default batch_size 1), all in one process, as shipped and in its
best configurations (benchmarks/public_variants.py: bf16 autocast where bf16 is native, torch.compile of
the public encoder and predictor; the compile's time is in the row's note and the JSON, a failed or
too-long compile is a row with the reason; inductor keeps compiled code on disk, so a later run compiles
faster: an empty TORCHINDUCTOR_CACHE_DIR gives a first run's figure). `x public` compares with the
public solver as shipped, `x best public` with the fastest public configuration of the same solver and
E, both on whole plans (ms per plan: time per iteration x the requested iterations plus the once-per-plan
encoding). Slow rows run fewer iterations (said in the `iters_run` column); each row's 1- and k-iteration
plans are timed once per round (rounds interleaved across rows, every timing in the JSON as `runs_ms`) and
the fastest of each is kept. A row whose iteration comes out longer than its whole 1-iteration plan held a
slow spell in every round: it is flagged (`consistent: false`). Predictive sampling draws once: its
"iteration" is the plan less its encoding, timed apart (lewm_fast rows: `Planner.engine.embed`), or the
whole plan (public rows, whose encoding is inside their cost function). dtypes default to `auto` (bf16
where the hardware runs it natively, `lewm_fast.capability`) and fp32; an explicit bf16 row runs only where
bf16 is native, elsewhere it is skipped and the JSON says so. On the CPU each fast row also reports its own
GFLOP/s per iteration against the GEMM rate of the matmuls of its chunks alone, two ways: `% GEMM ceiling`, that
rate timed right after each of the row's rounds for as long as its plan took, all of a chunk's matmuls pass after
pass (`_common.CeilingPass`; the fastest round of each is kept), so that both meet the same spell of a shared
host; `% GEMM peak`, each matmul shape's best of many short calls (`_common.gemm_ceiling`), which catches the
host's quietest moments and was the only figure before 2026-12-08. `--neighbours N` runs N CPU-bound neighbour
processes beside the whole measurement (a busy machine).

Work is counted two ways (benchmarks/flops.py): `TFLOP/s public` divides the public rollout's
matmul work by the time (the same numerator for every row: a speed), `TFLOP/s own` divides the work
the row's solver actually does (the fast engines skip ~1/3 of it: K/V reuse, newest-token-only); the
gradient solver's work is counted as 3x the forward's (forward + backward). `GFLOP/s` is `TFLOP/s public`
x 1000, the readable unit on a CPU.

    python benchmarks/plan_speed.py                 # every solver, published-size model, random weights, CPU
    python benchmarks/plan_speed.py --solver cem    # one solver
    python benchmarks/plan_speed.py --ckpt DIR      # a published-format checkpoint
    python benchmarks/plan_speed.py --quick         # a smaller, faster run

The public rows need a Python where stable-worldmodel (and transformers) are installed, with this checkout
first on the path. The recorded figures (every sampling solver, E = 1 and 16, fp32 and auto, beside every
public configuration; about an hour on a 2-core CPU):

    PYTHONPATH=$PWD /path/to/peer-venv/bin/python benchmarks/plan_speed.py --solver cem icem mppi ps \
        --envs 1 16 --budget 20 --rounds 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

# OpenMP's wait policy is left to the environment (recorded in the results): on a quiet machine the
# default is fastest (PASSIVE measured 1.5x slower for a bf16 plan here); on a machine shared with other
# jobs, OMP_WAIT_POLICY=PASSIVE keeps spinning threads from starving each other (measured 6-8x there).
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import public_variants as pv  # noqa: E402
from _common import (  # noqa: E402
    HORIZON,
    ITERS,
    SAMPLES,
    TOPK,
    CeilingPass,
    busy_neighbours,
    device_name,
    gemm_ceiling,
    print_table,
    public_lewm,
    synchronize,
    write_result,
)
from _files import OUT_HELP  # noqa: E402
from flops import fast_iteration_flops, public_iteration_flops  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast import capability  # noqa: E402
from lewm_fast.capability import PLAN_DTYPES  # noqa: E402
from lewm_fast.planning import available_backends, available_optimizers  # noqa: E402
from lewm_fast.planning.optimizers import optimizer_class  # noqa: E402

DTYPES = PLAN_DTYPES
PUBLIC_MODULES = {"cem": "cem", "icem": "icem", "mppi": "mppi", "ps": "predictive_sampling", "grad": "gd"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--solver", nargs="+", default=available_optimizers(), choices=available_optimizers(),
                   help="solvers to time (default: all)")  # fmt: skip
    p.add_argument("--grad-samples", type=int, default=100, help="samples of the gradient solver (100, its config's)")
    p.add_argument("--ckpt", help="published-format checkpoint (folder with weights.pt + config.json)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16], help="numbers of environments E")
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--topk", type=int, default=TOPK)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--horizon", type=int, default=HORIZON)
    p.add_argument("--history", type=int, default=1)
    p.add_argument("--backends", nargs="+", default=None, help="planner backends (default: all available)")
    p.add_argument("--dtypes", nargs="+", default=["auto", "fp32"], choices=["auto", *DTYPES],
                   help="auto: bf16 where the hardware runs it natively, else fp32 (default: auto, fp32)")  # fmt: skip
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed work per row and round, at most")
    p.add_argument("--rounds", type=int, default=2,
                   help="measurements per row, interleaved (the fastest 1- and k-iteration plans are kept; "
                        "each round's timings go to the JSON as runs_ms)")  # fmt: skip
    p.add_argument("--no-public", action="store_true", help="skip the public stable-worldmodel rows")
    p.add_argument("--public", nargs="+", default=list(pv.VARIANTS), choices=pv.VARIANTS,
                   help="public configurations to time (benchmarks/public_variants.py; default: all, the bf16 ones "
                        "where bf16 is native)")  # fmt: skip
    p.add_argument("--compile-limit", type=float, default=pv.COMPILE_LIMIT_S,
                   help="seconds a public torch.compile may take before its row is recorded as too slow")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="E=1 only, a shorter budget")
    p.add_argument("--eager-too", action="store_true", help="on CUDA, also time the fast rows without CUDA graphs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, i.e. the cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (with --threads 1: robust when shared)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="on CPU, add torch rows with LEWM_PLAN_COMPILE=1")
    p.add_argument("--neighbours", type=int, default=0, help="CPU-bound neighbour processes during the run (busy)")
    p.add_argument("--out", default=None, help=OUT_HELP)
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
    fit `budget` seconds; their difference isolates iterations. A solver of one iteration (predictive
    sampling) has no k-iteration plan: where its plan has an `encode` attribute (a callable doing the plan's
    encoding alone), that is timed beside it and the iteration is the plan less the encoding, as the
    difference isolates it for the others; otherwise (the public solvers) the iteration is the whole plan.
    Building it warms up (allocations, graph capture, autotuning; skipped with warm=False: nothing to warm)
    and measures once; `measure()` measures again, interleaved with the other rows, and the fastest run is
    kept: on a shared machine other jobs only ever add time, and interleaving exposes every row to the same
    conditions. `ceiling(seconds) -> dict`, where given, runs after each round for as long as the round's longest
    plan took (the GEMM ceiling in the same spell, `_common.CeilingPass`); its results go to `ceilings`."""

    def __init__(self, make_plan, iters_full, budget, device, clock=time.perf_counter, warm=True, ceiling=None):
        self.device, self.clock, self.ceiling = device, clock, ceiling
        self.ceilings: list[dict] = []  # ceiling(seconds) after each round, for as long as its longest plan took
        self.plan_1 = make_plan(1)
        if warm:
            self.plan_1()
        one = self._time(self.plan_1)
        # at least 2 iterations where the plan has them: a plan's fixed work (encoding, its first
        # iteration's allocations: ~1 s at E = 4 on a 2-core CPU) must not count as an iteration's
        self.k = max(min(2, iters_full), min(iters_full, int(budget / max(one, 1e-6))))
        self.plan_k = make_plan(self.k) if self.k > 1 else None
        if self.plan_k is not None and warm:
            self.plan_k()
        self.encode = getattr(self.plan_1, "encode", None) if self.plan_k is None else None
        self.runs = [(one, *self._others())]
        self._ceiling()

    def _time(self, run) -> float:
        synchronize(self.device)
        t0 = self.clock()
        run()
        synchronize(self.device)
        return self.clock() - t0

    def _others(self) -> tuple[float | None, float | None]:
        """(the k-iteration plan's time, the encoding's time), each None where the timer has none."""
        return (self._time(self.plan_k) if self.plan_k is not None else None,
                self._time(self.encode) if self.encode is not None else None)  # fmt: skip

    def measure(self) -> None:
        self.runs.append((self._time(self.plan_1), *self._others()))
        self._ceiling()

    def _ceiling(self) -> None:
        """The ceiling's rate in the same spell as the round just timed, for as long as its longest plan."""
        if self.ceiling is not None:
            one, k, _ = self.runs[-1]
            self.ceilings.append(self.ceiling(k if k is not None else one))

    def result(self) -> tuple[float, int, float, bool]:
        """(seconds per iteration, iterations run, seconds of encoding per plan, consistent), from the
        fastest 1-iteration plan, the fastest k-iteration plan (or encoding) of all rounds. Not consistent:
        the fastest k-iteration plan still held a slow spell, so an iteration comes out longer than the whole
        1-iteration plan (one iteration plus the encoding); more --rounds give every row more chances. A
        one-iteration solver without a timed encoding counts none (its iteration is its whole plan)."""
        one = min(r[0] for r in self.runs)
        if self.plan_k is None:
            encode = min(r[2] for r in self.runs) if self.encode is not None else 0.0
            return max(one - encode, 1e-9), 1, encode, encode < one
        per_iter = max((min(r[1] for r in self.runs) - one) / (self.k - 1), 1e-9)
        return per_iter, self.k, max(one - per_iter, 0.0), per_iter <= one


def progress(timer: PlanTimer) -> str:
    """The first round's time per iteration, or why there is none yet (a first 1-iteration plan slower
    than the k-iteration one: its warm-up; later rounds measure it)."""
    per_iter, _, _, consistent = timer.result()
    return f"{per_iter * 1e3:.1f} ms/iteration" if consistent else "first round held a warm-up, measured in the rounds"


def solver_params(solver: str, args, k: int) -> dict:
    """The solver's parameters for a k-iteration plan (public names; the rest at the public defaults)."""
    if solver == "ps":
        return dict(num_samples=args.samples)
    if solver == "grad":
        return dict(num_samples=args.grad_samples, n_steps=k)
    return dict(num_samples=args.samples, topk=args.topk, n_steps=k)


_PUBLIC_MODELS: dict = {}


def public_model(model, device, compiled: bool):
    """The public LeWM on the model's weights, one per (device, compiled) for the whole run: the compiled one
    has its encoder and predictor compiled (what the public code's own speed work compiles) once, and
    every solver and E reuse it (dynamo's compile caches hold per module)."""
    key = (str(device), compiled)
    if key not in _PUBLIC_MODELS:
        public = public_lewm(model, device)
        if compiled:
            pv.compile_modules(public, ("encoder", "predictor"), torch.device(device))
        _PUBLIC_MODELS[key] = public
    return _PUBLIC_MODELS[key]


def public_solver_row(model, args, e, device, solver="cem", variant="shipped"):
    """The public solver of the same name on the same weights (transformers 5.x names equal ours), in one
    of the public configurations (public_variants.py)."""
    import importlib
    import types

    import gymnasium as gym

    cfg = model.cfg
    public = public_model(model, device, "compile" in variant)
    pixels, goal = observations(cfg, e, args.history, device)

    public_cls = getattr(importlib.import_module(f"stable_worldmodel.solver.{PUBLIC_MODULES[solver]}"),
                         optimizer_class(solver).public_name)  # fmt: skip

    def make_plan(k):
        solver_obj = public_cls(public, batch_size=1, device=device, seed=0, **solver_params(solver, args, k))
        config = types.SimpleNamespace(horizon=args.horizon, action_block=cfg.frameskip)
        solver_obj.configure(action_space=gym.spaces.Box(-1, 1, shape=(e, cfg.action_dim)), n_envs=e, config=config)
        info = {
            "pixels": pixels.cpu(),
            "goal": goal[:, None].cpu(),
            "action": torch.zeros(e, args.history, cfg.action_block_dim),
        }
        import contextlib
        import io

        def run():
            with contextlib.redirect_stdout(io.StringIO()), pv.autocast(variant, device):
                solver_obj.solve({k2: v.clone() for k2, v in info.items()})

        return run

    return make_plan


def lewm_fast_rows(model, args, solver, e, pixels, goal, device, clock, flops, skipped):
    """(row fields, timer) of every lewm_fast backend x dtype for one solver and E."""
    backends = args.backends or available_backends(device)
    if device.type != "cuda" and "triton" in backends and args.backends is None:
        backends.remove("triton")  # Triton on the CPU is the interpreter: a correctness tool, not a speed row
    user_compile = os.environ.get("LEWM_PLAN_COMPILE", "0")
    graph_modes = [True, False] if (device.type == "cuda" and args.eager_too) else [True]
    iters = 1 if solver == "ps" else args.iters
    specs = []
    for backend in backends:
        for dname in args.dtypes:
            if backend == "reference" and dname != "fp32":
                continue  # the public semantics run in the model's dtype
            if dname == "bf16" and not capability.native_bf16(device):
                skipped.add(f"bf16: emulated on {device_name(device)} (no AMX/AVX512-BF16), rows skipped")
                continue
            variants = [(g, False) for g in graph_modes] if backend != "reference" else [(False, False)]
            if backend == "torch" and device.type == "cpu" and args.compile:
                variants.append((False, True))
            for graph, compiled in variants:

                def make_plan(k, backend=backend, dname=dname, graph=graph, c=compiled):
                    os.environ["LEWM_PLAN_COMPILE"] = "1" if c else user_compile  # read when the engine is built
                    params = solver_params(solver, args, k)
                    planner = lf.Planner(model, solver, horizon=args.horizon, seed=0, backend=backend,
                                         dtype=DTYPES[dname], cuda_graph=graph, **params)  # fmt: skip
                    run = lambda: planner.plan(pixels, goal)  # noqa: E731
                    if hasattr(planner.engine, "embed"):  # a one-iteration solver's encoding is timed apart
                        run.encode = lambda: planner.engine.embed(pixels, goal)
                    return run

                name = f"lewm_fast:{backend}" + ("" if graph or device.type != "cuda" else " (no graph)")
                name += "+compile" if compiled else ""
                own = flops["public"] if backend == "reference" else flops["fast"]
                paired = device.type == "cpu" and backend == "torch" and solver != "grad" and not compiled
                ceiling = ceiling_beside(model, args, dname, e) if paired else None
                timer = PlanTimer(make_plan, iters, args.budget, device, clock, warm=backend != "reference",
                                  ceiling=ceiling)  # fmt: skip
                fields = dict(solver=solver, impl=name, dtype=dname, device=device.type, envs=e, own_flops_iter=own)
                specs.append((fields, timer))
                print(f"  {solver:>4} {name:>22} {dname} E={e}: {progress(timer)} ({timer.k} iterations run)",
                      flush=True)  # fmt: skip
    os.environ["LEWM_PLAN_COMPILE"] = user_compile
    return specs


def public_rows(model, args, solver, e, device, clock, flops, skipped):
    """(row fields, timer) of each public configuration; a configuration that fails (or compiles too long)
    gets a row with the reason and no timer."""
    if args.no_public:
        return []
    try:
        import stable_worldmodel  # noqa: F401
    except ImportError as exc:
        skipped.add(f"public rows: stable-worldmodel is not importable here ({exc})")
        return []
    variants, why = pv.usable_variants(args.public, device)
    skipped.update(why)
    iters, out = 1 if solver == "ps" else args.iters, []
    for v in variants:
        make_plan = public_solver_row(model, args, e, device, solver, v)
        fields = dict(solver=solver, impl=pv.LABELS[v], public_variant=v, dtype="bf16" if "bf16" in v else "fp32",
                      device=device.type, envs=e, own_flops_iter=flops["public"])  # fmt: skip
        first_s, error = pv.first_call(make_plan(1), v, args.compile_limit) if "compile" in v else (None, None)
        if error:
            out.append((dict(fields, note=f"failed: {error}", error=error, first_call_s=first_s), None))
            print(f"  {solver:>4} {pv.LABELS[v]} E={e}: {error}", flush=True)
            continue
        timer = PlanTimer(make_plan, iters, args.budget, device, clock, warm=False)
        if first_s is not None:  # the first call compiled (or found an earlier row's compile) and planned once
            mode = pv.compile_mode(device)
            fields.update(first_call_s=first_s, compile_s=max(first_s - timer.runs[0][0], 0.0),
                          note=f"first call {first_s:.0f} s (compile + 1 plan), {mode} mode")  # fmt: skip
        print(f"  {solver:>4} {pv.LABELS[v]} E={e}: {progress(timer)}", flush=True)
        out.append((fields, timer))
    return out


def iteration_flops(cfg, args, solver: str, e: int) -> dict:
    """Matmul work of one iteration of E environments: the public rollout's and the fast rollout's."""
    samples, factor = (args.grad_samples, 3) if solver == "grad" else (args.samples, 1)  # backward ~ 2x forward
    public = public_iteration_flops(cfg, samples, args.horizon, args.history) * e * factor
    skip = args.device == "cpu" and solver != "grad"  # the CPU op set computes no query nobody reads (flops.py)
    fast = fast_iteration_flops(cfg, samples, args.horizon, args.history, skip) * e * factor
    return {"public": public, "fast": fast}


def finish_rows(specs, args, model) -> list[dict]:
    rows = []
    for fields, timer in specs:
        if timer is None:  # a public configuration that failed: its row says why
            rows.append(dict(fields))
            continue
        per_iter, k, encode, consistent = timer.result()
        runs_ms = [[round(t * 1e3, 1) if t is not None else None for t in run] for run in timer.runs]
        rows.append(dict(fields, iters_run=k, ms_per_iter=per_iter * 1e3, encode_ms=encode * 1e3,
                         runs_ms=runs_ms, consistent=consistent))  # fmt: skip
        if timer.ceilings:
            rows[-1]["ceiling_runs"] = timer.ceilings
        if not consistent:
            print(f"  warning: {fields['solver']} {fields['impl']} E={fields['envs']}: an iteration measured longer "
                  f"than a 1-iteration plan (a slow spell in every round); run again with more --rounds")  # fmt: skip
    for r in (r for r in rows if "ms_per_iter" in r):
        iters = 1 if r["solver"] == "ps" else args.iters
        r["ms_per_plan"] = r["ms_per_iter"] * iters + r["encode_ms"]
    pv.add_ratios(rows, ("solver", "envs"), "ms_per_plan")  # whole plans, as a user meets them
    for r in (r for r in rows if "ms_per_iter" in r):
        r["plans_per_s"] = r["envs"] * 1e3 / r["ms_per_plan"]
        r["tflops"] = r["public_flops_iter"] / (r["ms_per_iter"] * 1e-3) / 1e12
        r["gflops"] = r["tflops"] * 1e3
        r["tflops_own"] = r["own_flops_iter"] / (r["ms_per_iter"] * 1e-3) / 1e12
        same = [x for x in rows if x["solver"] == r["solver"] and x["envs"] == r["envs"]]
        ref = next((x for x in same if x["impl"] == "lewm_fast:reference" and "ms_per_iter" in x), None)
        r["x_reference"] = ref["ms_per_plan"] / r["ms_per_plan"] if ref else None
        r["gflops_own"] = r["tflops_own"] * 1e3
        if r["device"] == "cpu" and r["impl"] == "lewm_fast:torch" and r["solver"] != "grad":
            rate = "per_thread_gflops" if args.clock == "cpu" else "gflops"  # a CPU clock sums the threads
            r["pct_ceiling"] = 100 * r["gflops_own"] / cpu_ceiling(model, args, r["dtype"], r["envs"])[rate]
            if r.get("ceiling_runs"):  # the rounds' ceilings: the fastest, as the row keeps its fastest plans
                r["ceiling_gflops"] = max(c[rate] for c in r["ceiling_runs"])
                r["pct_ceiling_paired"] = 100 * r["gflops_own"] / r["ceiling_gflops"]
    return rows


_CEILINGS: dict = {}
_PASSES: dict = {}


def chunk_shape(args, dname: str, e: int) -> tuple[int, int]:
    """(rows of the first chunk, worker threads) of E environments' rollout, as the planner splits it."""
    threads = capability.planner_threads(e * args.samples)
    lo, hi = capability.planner_chunks(e * args.samples, threads, capability.planner_chunk_rows(DTYPES[dname]))[0]
    return hi - lo, threads


def cpu_ceiling(model, args, dname: str, e: int) -> dict:
    """The GEMM peak (_common.gemm_ceiling: each shape's best of many short calls) at the matmul shapes of E
    environments' chunks, on the planner's threads, with the run's clock; measured once per (dtype, chunk)."""
    rows, threads = chunk_shape(args, dname, e)
    key = (dname, rows, threads)
    if key not in _CEILINGS:
        _CEILINGS[key] = gemm_ceiling(model, DTYPES[dname], rows, threads, args.horizon, args.history,
                                      clock=args.clock)  # fmt: skip
    return _CEILINGS[key]


def ceiling_beside(model, args, dname: str, e: int):
    """ceiling(seconds) -> dict: the GEMM ceiling of E environments' chunks timed like a plan, for `seconds`
    (_common.CeilingPass), to run beside each round of the row; one pass object per (dtype, chunk)."""
    rows, threads = chunk_shape(args, dname, e)
    key = (dname, rows, threads)
    if key not in _PASSES:
        _PASSES[key] = CeilingPass(model, DTYPES[dname], rows, threads, args.horizon, args.history)
    return functools.partial(_PASSES[key].rate, clock=args.clock)


def main(argv=None) -> int:
    args = parse_args(argv)
    with busy_neighbours(args.neighbours):
        return run(args)


def run(args) -> int:
    device = torch.device(args.device)
    if args.quick:
        args.envs, args.budget = [1], min(args.budget, 3.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = build_model(args, device)
    cfg = model.cfg
    # "auto" resolved by lewm_fast.capability; duplicates dropped
    args.dtypes = list(dict.fromkeys(capability.dtype_name(capability.resolve_dtype(d, device)) for d in args.dtypes))
    specs, skipped = [], set()  # (row fields, timer), measured once in order, then again in reverse
    for solver in args.solver:
        for e in args.envs:
            pixels, goal = observations(cfg, e, args.history, device)
            flops = iteration_flops(cfg, args, solver, e)
            rows = lewm_fast_rows(model, args, solver, e, pixels, goal, device, clock, flops, skipped)
            rows += public_rows(model, args, solver, e, device, clock, flops, skipped)
            specs += [(dict(fields, public_flops_iter=flops["public"]), timer) for fields, timer in rows]
    for _ in range(args.rounds - 1):
        print("  measuring again (interleaved, reverse order)", flush=True)
        for _, timer in reversed(specs):
            if timer is not None:
                timer.measure()
    rows = finish_rows(specs, args, model)

    print(
        f"\nplan: {args.samples} samples (gradient: {args.grad_samples}) x {args.iters} iterations x horizon "
        f"{args.horizon}, history {args.history}, published-size model"
        f"{' from ' + args.ckpt if args.ckpt else ' (random weights)'}, {device_name(device)}, {args.clock} clock, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}" + "".join(f"; {s}" for s in sorted(skipped)) + "\n"
    )
    print_table(rows, [("solver", "solver"), ("impl", "implementation"), ("dtype", "dtype"), ("envs", "E"),
                       ("iters_run", "iters run"), ("ms_per_plan", "ms/plan"), ("plans_per_s", "plans/s"),
                       ("ms_per_iter", "ms/iter"), ("gflops", "GFLOP/s public"), ("tflops_own", "TFLOP/s own"),
                       ("x_reference", "x reference"), ("x_public", "x public"), ("x_best_public", "x best public"),
                       ("gflops_own", "GFLOP/s own"), ("pct_ceiling_paired", "% GEMM ceiling"),
                       ("pct_ceiling", "% GEMM peak"), ("note", "note")])  # fmt: skip
    best = {(r["solver"], r["envs"]): r["best_public"] for r in rows if r.get("best_public")}
    for (solver, e), name in sorted(best.items()):
        print(f"best public configuration, {solver} E={e}: {name}")
    payload = {"args": vars(args), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "skipped": sorted(skipped),
               "rows": rows, "gemm_ceiling": list(_CEILINGS.values()), "ratios": "whole plans"}  # fmt: skip
    path = write_result("plan_speed", payload, device, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
