"""GPU readiness without a GPU: every Triton kernel compiled for sm_80 (A100) and sm_90 (H100) exactly as
the engine launches it at the published sizes, and its registers, spills and shared memory checked
against each target's limits.

How, with no device: a stand-in Triton driver reports the target, and Triton's `jit_cache_hook` records
each launch's specialization (argument dtypes, alignment of every pointer and integer, constexprs,
warps, stages: Triton's own binder computes it) instead of compiling and launching it. The launches come
from the code the GPU runs, on `meta` tensors (shapes and alignment without memory or arithmetic):
the planner's rollout cost (`rollout_cost` with `TritonOps`, E in {1, 16} x 300 samples x horizon 5,
`lf.LeWMConfig()` defaults, fp32 and bf16), each sampling optimizer's fused update (CEM, iCEM, MPPI with
and without top-k) and SIGReg's forward and backward kernels at the training size (4 x 128 x 192,
1024 slices, 17 knots). An autotuned kernel launches every config (each is compiled on a GPU). Each
recorded specialization is then compiled with Triton's bundled compiler for each target, and ptxas's own
report of that compile gives registers per thread, stack frame and spill bytes.

Limits (CUDA C++ Programming Guide, compute capabilities 8.0 and 9.0; Ampere and Hopper tuning guides):
255 registers per thread, 64K 32-bit registers per SM and per block (allocated per warp in units of 256),
shared memory per SM 164 KB (sm_80) / 228 KB (sm_90), of which 1 KB per block is reserved for the
system, so at most 163 KB / 227 KB per block. A kernel passes when it fits, with no spills.

    python benchmarks/triton_static.py            # the table, JSON to the scratch results folder
    python benchmarks/triton_static.py --out benchmarks/results
    python benchmarks/triton_static.py --check    # exit 1 when a kernel is over a limit or spills (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

KB = 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """One target's per-thread, per-block and per-SM resources."""

    name: str
    arch: int  # compute capability x 10
    shared_per_sm: int  # bytes
    shared_per_block: int  # bytes: the per-SM capacity less the 1 KB reserved per block
    regs_per_thread: int = 255
    regs_per_block: int = 64 * KB
    regs_per_sm: int = 64 * KB
    reg_alloc_unit: int = 256  # registers are allocated per warp in units of 256


TARGETS = {
    "sm_80": Limits("sm_80", 80, shared_per_sm=164 * KB, shared_per_block=163 * KB),
    "sm_90": Limits("sm_90", 90, shared_per_sm=228 * KB, shared_per_block=227 * KB),
}
ENVS = (1, 16)  # environments per plan
# Known spills, accepted until the kernel is tuned on that GPU: (kernel, target, pointer dtypes) -> bytes of
# spill stores + loads. Triton 3.9's ptxas holds SIGReg's fp32 forward to 128 registers on sm_90.
ACCEPTED_SPILLS = {("_sigreg_fwd_kernel", "sm_90", "fp32"): 64}


def unavailable(targets=tuple(TARGETS)) -> str | None:
    """Why Triton cannot compile for the NVIDIA targets here (None when it can): a tiny kernel is
    compiled for each, with Triton's bundled ptxas."""
    try:
        import triton
        from triton import knobs
        from triton.backends import backends
    except ImportError as e:
        return f"Triton is not installed ({e})"
    if "nvidia" not in backends:
        return f"Triton {triton.__version__} has no CUDA backend (backends: {sorted(backends)})"
    if not hasattr(knobs.runtime, "jit_cache_hook") or not hasattr(triton.runtime.JITFunction, "preload"):
        return f"Triton {triton.__version__} cannot record launches (jit_cache_hook and preload: Triton >= 3.3)"
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for name in targets:
        try:
            triton.compile(ASTSource(fn=_probe_kernel(), signature={"X": "*fp32"}, constexprs={}),
                           target=GPUTarget("cuda", TARGETS[name].arch, 32))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - whatever stops the compile is the reason
            return f"Triton {triton.__version__} cannot compile for {name} here: {type(e).__name__}: {e}"[:500]
    return None


def _probe_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _probe(X):
        tl.store(X + tl.arange(0, 32), tl.full((32,), 1.0, tl.float32))

    return _probe


class _TargetDriver:
    """A stand-in for Triton's CUDA driver: it names the target and never launches. The device id is the
    target's arch, so each target gets its own slot in every kernel's compile cache."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target, self.arch = GPUTarget("cuda", arch, 32), arch

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.arch

    def get_current_stream(self, device=None):
        return 0

    def get_benchmarker(self):  # the autotuner "times" each config: one recorded launch each
        def bench(kernel_call, quantiles=None):
            kernel_call()
            return [1.0, 1.0, 1.0]

        return bench


@dataclasses.dataclass
class Launch:
    kernel: str
    workload: str  # what launched it first
    fn: object  # the JITFunction
    specialization: str  # Triton's specialization data (JSON)


@contextlib.contextmanager
def _target(arch: int, hook=None):
    """Triton's active driver is the stand-in for `arch`; `hook` (if any) intercepts every compile."""
    from triton import knobs
    from triton.runtime.driver import driver

    old_hook, old_driver = knobs.runtime.jit_cache_hook, driver._active  # None until a driver is asked for
    driver.set_active(_TargetDriver(arch))
    knobs.runtime.jit_cache_hook = hook
    try:
        yield
    finally:
        knobs.runtime.jit_cache_hook = old_hook
        driver._active = old_driver  # not reset_active(): without a GPU, Triton has no default driver to make


def published_sizes() -> dict:
    """The defaults the engine runs at: the model's (lf.LeWMConfig), the planner's and SIGReg's."""
    import inspect

    import lewm_fast as lf
    from lewm_fast.planning.optimizers import optimizer_defaults
    from lewm_fast.training.presets import get_preset

    sigreg, paper = inspect.signature(lf.SIGReg).parameters, get_preset("paper")  # SIGReg at the paper's training
    return dict(samples=optimizer_defaults("cem")["num_samples"], envs=list(ENVS),
                horizon=inspect.signature(lf.Planner).parameters["horizon"].default,
                sigreg_input=[paper.model.num_frames + 1, paper.batch_size, paper.model.embed_dim],
                num_proj=sigreg["num_proj"].default, knots=sigreg["knots"].default)  # fmt: skip


def _workloads():
    """(label, callable) pairs that launch every kernel as the GPU engine does, on meta tensors."""
    import lewm_fast as lf
    from lewm_fast.kernels import sigreg as sigreg_kernels
    from lewm_fast.planning.ops import TritonOps
    from lewm_fast.planning.optimizers import make_optimizer
    from lewm_fast.planning.rollout import PackedPredictor, rollout_cost

    cfg, ops, meta, sizes = lf.LeWMConfig(), TritonOps(), torch.device("meta"), published_sizes()
    with torch.device(meta):
        model = lf.LeWM(cfg).eval()
    d, a, horizon, samples = cfg.embed_dim, cfg.action_block_dim, sizes["horizon"], sizes["samples"]
    jobs = []
    for e in ENVS:
        for dtype in (torch.float32, torch.bfloat16):
            packed = PackedPredictor(model, dtype, meta, pack=ops.pack_weight)
            hist, goal, cand = torch.empty(e, 1, d, device=meta), torch.empty(e, d, device=meta), \
                torch.empty(e, samples, horizon, a, device=meta)  # fmt: skip
            jobs.append((f"rollout {str(dtype)[6:]} E={e}", lambda p=packed, h=hist, g=goal, c=cand:
                         rollout_cost(p, ops, h, g, c)))  # fmt: skip
        for name, params in (("cem", {}), ("icem", {}), ("mppi", {}), ("mppi", {"topk": None})):
            opt = make_optimizer(name, num_samples=samples, **params).to(meta)
            label = f"{name}{' (all samples)' if params else ''} update E={e}"

            def update(opt=opt, e=e):
                state = opt.init(torch.zeros(e, horizon, a, device=meta), torch.ones(e, horizon, a, device=meta))
                opt.fast_update(state, opt.candidates(state, None), torch.empty(e, samples, device=meta), ops)

            jobs.append((label, update))
    (t, b, d_sig), m, k = sizes["sigreg_input"], sizes["num_proj"], sizes["knots"]
    for dtype in (torch.float32, torch.bfloat16):
        x, dirs = torch.empty(t, b, d_sig, device=meta, dtype=dtype), torch.empty(d_sig, m, device=meta)
        pq = torch.empty(t, k, m, device=meta)

        def sigreg(x=x, dirs=dirs, pq=pq):
            # the launchers accept CUDA tensors only: meta tensors stand in for them here
            with _patched(sigreg_kernels, "_check_device", lambda x: None):
                sigreg_kernels.charfn_sums(x, dirs, k, 3.0 / (k - 1))
                sigreg_kernels.charfn_grad(x, dirs, pq, pq, 3.0 / (k - 1))

        jobs.append((f"sigreg {str(dtype)[6:]} {t}x{b}x{d_sig}, M={m}", sigreg))
    return jobs


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _clear_autotuners() -> None:
    """Forget every autotuner's choice, so that each target's capture launches every config."""
    import importlib
    import pkgutil

    from triton.runtime.autotuner import Autotuner

    import lewm_fast.kernels as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        for value in vars(importlib.import_module(f"{pkg.__name__}.{info.name}")).values():
            if isinstance(value, Autotuner):
                value.cache.clear()


def capture(arch: int) -> list[Launch]:
    """Every distinct launch of the workloads, as Triton specialises it for `arch`."""
    launches: dict[str, Launch] = {}
    workload = [""]

    def record(**kw) -> bool:
        info = kw["fn"]
        key = f"{info.module}.{info.name}:{kw['key']}"
        spec = kw["compile"]["specialization_data"]
        launches.setdefault(key, Launch(info.name, workload[0], info.jit_function, spec))
        return True  # handled: Triton compiles nothing and launches nothing

    _clear_autotuners()
    with _target(arch, record), torch.inference_mode():
        for label, run in _workloads():
            workload[0] = label
            run()
    return list(launches.values())


def compile_log(launch: Launch, arch: int) -> tuple[object, dict]:
    """Compile one launch for `arch` (always, not from Triton's cache: the log is only written by a
    compile); the compiled kernel and what ptxas reported: registers, stack frame, spill stores/loads."""
    from triton import knobs

    log = io.StringIO()
    with _target(arch), _patched(knobs.compilation, "always_compile", True), \
            _patched(knobs.nvidia, "dump_ptxas_log", True), contextlib.redirect_stdout(log):  # fmt: skip
        kernel = launch.fn.preload(launch.specialization)
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not regs or not frame:
        raise RuntimeError(f"{launch.kernel}: no ptxas report in Triton's compile log:\n{text[-2000:]}")
    stack, stores, loads = map(int, frame.groups())
    return kernel, dict(registers=int(regs.group(1)), stack_bytes=stack, spill_bytes=stores + loads)


def resources(launch: Launch, limits: Limits) -> dict:
    """One launch compiled for the target: its resources, blocks per SM and what breaks the limits."""
    kernel, usage = compile_log(launch, limits.arch)
    spec = json.loads(launch.specialization)
    warps, shared = kernel.metadata.num_warps, kernel.metadata.shared
    block_regs = -(-usage["registers"] * 32 // limits.reg_alloc_unit) * limits.reg_alloc_unit * warps
    names = list(spec["signature"])
    pointers = [v[1:] for v in spec["signature"].values() if isinstance(v, str) and v.startswith("*")]
    row = dict(kernel=launch.kernel, target=limits.name, workload=launch.workload,
               dtype="/".join(dict.fromkeys(pointers)),
               constexprs={names[k[0]]: v for k, v in zip(spec["constant_keys"], spec["constant_vals"])},
               num_warps=warps, num_stages=kernel.metadata.num_stages, **usage, shared_bytes=shared,
               block_registers=block_regs,
               blocks_per_sm=min(limits.regs_per_sm // block_regs,
                                 limits.shared_per_sm // (shared + KB) if shared else 32))  # fmt: skip
    row["problems"] = problems(row, limits)
    return row


def problems(row: dict, limits: Limits) -> list[str]:
    """What in `row` breaks the target's limits or spills (empty: the kernel fits)."""
    out = []
    if row["registers"] > limits.regs_per_thread:
        out.append(f"{row['registers']} registers per thread > {limits.regs_per_thread}")
    if row["block_registers"] > limits.regs_per_block:
        out.append(f"{row['block_registers']} registers per block > {limits.regs_per_block}")
    if row["shared_bytes"] > limits.shared_per_block:
        out.append(f"{row['shared_bytes']} bytes of shared memory > {limits.shared_per_block} per block")
    accepted = ACCEPTED_SPILLS.get((row["kernel"], row["target"], row["dtype"]), 0)
    if row["spill_bytes"] > accepted:
        out.append(f"{row['spill_bytes']} bytes of spill stores + loads (accepted: {accepted})")
    return out


def report(targets: list[str]) -> list[dict]:
    """One row per (distinct launch, target)."""
    rows = []
    for name in targets:
        limits = TARGETS[name]
        launches = capture(limits.arch)
        print(f"  {name}: {len(launches)} distinct launches; compiling", flush=True)
        rows += [resources(launch, limits) for launch in launches]
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per (kernel, target): how many specializations and the worst of each resource."""
    out: dict[tuple, dict] = {}
    for r in rows:
        first = dict(kernel=r["kernel"], target=r["target"], launches=0, max_registers=0, max_spill_bytes=0,
                     max_shared_KiB=0.0, min_blocks_per_sm=None, problems=0, accepted=None)  # fmt: skip
        s = out.setdefault((r["kernel"], r["target"]), first)
        s["launches"] += 1
        s["max_registers"] = max(s["max_registers"], r["registers"])
        s["max_spill_bytes"] = max(s["max_spill_bytes"], r["spill_bytes"])
        s["max_shared_KiB"] = max(s["max_shared_KiB"], r["shared_bytes"] / KB)
        s["min_blocks_per_sm"] = min(s["min_blocks_per_sm"] or r["blocks_per_sm"], r["blocks_per_sm"])
        s["problems"] += len(r["problems"])
        if r["spill_bytes"] and not r["problems"]:
            s["accepted"] = "spill (ACCEPTED_SPILLS)"
    return list(out.values())


def package_kernels() -> set[str]:
    """The name of every kernel lewm_fast launches (`_<op>_<fwd|bwd>_kernel`, house style), from the sources
    of lewm_fast/kernels/."""
    import lewm_fast.kernels as pkg

    files = [f for folder in pkg.__path__ for f in sorted(Path(folder).glob("*.py"))]
    return {name for f in files for name in re.findall(r"^def (_\w+_kernel)\(", f.read_text(), re.M)}


def unlaunched(rows: list[dict], targets: list[str]) -> list[str]:
    """Kernels of the package that no workload launched for a target (a kernel the check would miss)."""
    seen = {(r["kernel"], r["target"]) for r in rows}
    return sorted(f"{k} ({t})" for k in package_kernels() for t in targets if (k, t) not in seen)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a kernel is over a limit, spills or is not launched by any workload")  # fmt: skip
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("triton_static: compiles the kernels for a GPU: unset TRITON_INTERPRET")
    why = unavailable(args.targets)
    if why:
        print(f"triton_static: cannot compile here: {why}")
        return 2
    import triton

    rows = report(args.targets)
    print_table(summary(rows), [("kernel", "kernel"), ("target", "target"), ("launches", "specializations"),
                                ("max_registers", "max regs/thread"), ("max_spill_bytes", "max spill bytes"),
                                ("max_shared_KiB", "max shared KiB"), ("min_blocks_per_sm", "min blocks/SM"),
                                ("problems", "over limits"), ("accepted", "accepted")])  # fmt: skip
    bad = [r for r in rows if r["problems"]]
    for r in bad:
        print(f"  over a limit: {r['kernel']} {r['target']} ({r['workload']}, {r['constexprs']}): "
              + "; ".join(r["problems"]))  # fmt: skip
    missing = unlaunched(rows, args.targets)
    if missing:
        print(f"  never launched by the workloads (not checked): {', '.join(missing)}")
    payload = {"args": vars(args), "triton": triton.__version__, "sizes": published_sizes(),
               "limits": {k: dataclasses.asdict(v) for k, v in TARGETS.items()}, "unlaunched": missing,
               "rows": rows}  # fmt: skip
    print(f"\nwrote {write_result('triton_static', payload, torch.device('cpu'), args.out)}")
    return 1 if (bad or missing) and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
