"""The GPU suite in one command: tests, ceilings, benchmarks, and one results file.

    python benchmarks/gpu_report.py              # on a GPU machine (~<10 min); --quick for ~2 min
    python benchmarks/gpu_report.py --device cpu --quick    # the same structure on a CPU (CI runs it)

Steps, each recorded in the report (a failing step makes the exit status 1, the others still run):
1. environment: device, versions, date;
2. ceilings: a large device-to-device copy (bytes read + written per second) and large bf16 / fp32
   matrix products (FLOP/s), measured first so every figure below can be read against them;
3. tests: the GPU tests (`-m gpu`: compiled Triton kernels vs reference, CUDA-graph capture/replay,
   `set_sync_debug_mode("error")` around a solve, multi-environment planning) and, without --quick,
   the kernel/SIGReg/planner equivalence tests on this device; on the CPU the interpreter and C++
   paths of the same tests;
4. benchmarks: plan_speed, sigreg_speed, train_speed at sizes that fit the time, each row's achieved
   rate as a fraction of the matching ceiling.
Writes benchmarks/results/<date>-<device>.json and a Markdown summary (to $OUT/gpu_report.md when
$OUT is set, else beside the JSON). Runs from a source checkout without installing (PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from _common import RESULTS, environment, write_result  # noqa: E402

# The CPU's quick check: the C++ kernels against their references, and parity with the public code.
QUICK_CPU_TESTS = ("tests/test_planner_cpu_kernels.py", "tests/test_fixture_parity.py")
# Test files that compare fast paths with their references (they pick the device themselves).
COUNT_WORDS = ("passed", "failed", "error", "skipped", "deselected", "no tests ran")
EQUIVALENCE_TESTS = ("tests/test_kernels_*.py", "tests/test_sigreg_*.py", "tests/test_planner_*.py")


def benchmark_argv(name: str, device: torch.device, quick: bool) -> list[str] | None:
    """The arguments of benchmarks/<name>.py for this run (None: not run on this device)."""
    gpu = device.type == "cuda"
    out = {
        "plan_speed": ["--quick", "--no-public"] if quick else ["--envs", "1", "16", "--budget", "6"],
        "sigreg_speed": ["--quick"] if quick else [],
        "train_speed": ["--quick", "--no-compile"] + ([] if gpu else ["--skip-paper"]) if quick else ["--quick"],
        "plan_exactness": ["--quick"] if quick else [],
        "planner_kernels": (["--envs", "1"] if quick else []) if gpu else None,  # Triton vs cuBLAS: GPU only
    }[name]
    if out is None:
        return None
    return out + (["--device", device.type] if name != "planner_kernels" else [])


BENCHMARKS = ("plan_speed", "sigreg_speed", "train_speed", "plan_exactness", "planner_kernels")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="a ~2 minute run: GPU tests only, short benchmarks")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-benchmarks", action="store_true")
    p.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


# ---- ceilings ----------------------------------------------------------------------------------


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Mean seconds per call of fn() after warm-up (CUDA events on a GPU)."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure_ceilings(device: torch.device, quick: bool) -> dict:
    """Copy bandwidth (bytes read + written per second) and bf16 / fp32 matmul FLOP/s on `device`."""
    gpu = device.type == "cuda"
    n_bytes = (1 << 30) if gpu else (256 << 20)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_s = _timed(lambda: dst.copy_(src), device, 20 if gpu else 5)
    out = {"copy_bytes": 2 * n_bytes, "copy_GBps": 2 * n_bytes / copy_s / 1e9}
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        n = (4096 if quick else 8192) if gpu else 2048
        if not gpu and dtype == torch.float32:
            n = 1024
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        s = _timed(lambda a=a, b=b: a @ b, device, 10 if gpu else 3)
        out[f"matmul_{name}_n"] = n
        out[f"matmul_{name}_TFLOPs"] = 2 * n**3 / s / 1e12
    return out


# ---- tests -------------------------------------------------------------------------------------


def run_tests(device: torch.device, quick: bool) -> dict:
    """pytest in a subprocess: `-m gpu` on a GPU (plus the equivalence files without --quick)."""
    files = sorted({str(p.relative_to(ROOT)) for pattern in EQUIVALENCE_TESTS for p in ROOT.glob(pattern)})
    if device.type == "cuda":
        args = ["-m", "gpu", "tests"] if quick else ["-m", "not peer and not slow", "tests"]
    else:
        # On the CPU the GPU tests skip; run the C++ / interpreter equivalence tests instead.
        args = ["-m", "not peer and not slow", *(QUICK_CPU_TESTS if quick else files)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in reversed(proc.stdout.splitlines()) if line.strip()]
    # pytest's count line ("3 passed, 1 skipped in ..."); conftest may print a note after it
    summary = next(
        (line for line in lines if " in " in line and any(w in line for w in COUNT_WORDS)), lines[0] if lines else ""
    )
    return {
        "command": " ".join(["python -m pytest -q", *args]),
        "returncode": proc.returncode,
        "summary": summary,
        "seconds": time.perf_counter() - t0,
        "tail": proc.stdout[-3000:] + proc.stderr[-2000:],
    }


# ---- benchmarks --------------------------------------------------------------------------------


def run_benchmark(name: str, device: torch.device, quick: bool, out_dir: Path) -> dict:
    """Run benchmarks/<name>.py's main() in this process; return the rows of the JSON it wrote."""
    argv = benchmark_argv(name, device, quick)
    if argv is None:
        return {"status": "skipped", "error": f"not run on {device.type}"}
    argv = [*argv, "--out", str(out_dir)]
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        return {"status": "missing", "error": str(e)}
    try:
        status = module.main(argv)
    except SystemExit as e:  # argparse errors
        status = e.code
    except Exception as e:  # a broken benchmark must not hide the others
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "argv": argv}
    files = sorted(out_dir.glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime)
    rows = json.loads(files[-1].read_text()).get("rows", []) if files else []
    return {"status": "ok" if not status else f"exit {status}", "argv": argv, "seconds": time.perf_counter() - t0,
            "rows": rows}  # fmt: skip


def relate_to_ceilings(bench: dict, ceilings: dict) -> None:
    """Add each row's fraction of the matching ceiling (TFLOP/s vs matmul, GB/s vs copy)."""
    for result in bench.values():
        for row in result.get("rows", []):
            peak = ceilings["matmul_bf16_TFLOPs"] if row.get("dtype") == "bf16" else ceilings["matmul_fp32_TFLOPs"]
            for key in ("tflops", "TFLOPs"):
                if isinstance(row.get(key), (int, float)):
                    row["fraction_of_matmul_peak"] = row[key] / peak
            if isinstance(row.get("GBps"), (int, float)):
                row["fraction_of_copy_bandwidth"] = row["GBps"] / ceilings["copy_GBps"]


# ---- report ------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    env, ceil = report["environment"], report["ceilings"]
    lines = [
        f"# lewm_fast GPU report: {env['device']}",
        "",
        f"{env['date']}, torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, "
        f"{'quick' if report['quick'] else 'full'} run, {report['seconds']:.0f} s.",
        "",
        "## Ceilings",
        "",
        f"- copy: {ceil['copy_GBps']:.0f} GB/s (bytes read + written)",
        f"- bf16 matmul ({ceil['matmul_bf16_n']}^3): {ceil['matmul_bf16_TFLOPs']:.1f} TFLOP/s",
        f"- fp32 matmul ({ceil['matmul_fp32_n']}^3): {ceil['matmul_fp32_TFLOPs']:.2f} TFLOP/s",
    ]
    if report.get("tests"):
        t = report["tests"]
        lines += ["", "## Tests", "", f"`{t['command']}`: {t['summary']} (exit {t['returncode']})"]
    for name, result in report.get("benchmarks", {}).items():
        lines += ["", f"## {name}", ""]
        rows = result.get("rows") or []
        if not rows:
            lines.append(f"{result.get('status')}: {result.get('error', 'no rows')}")
            continue
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row.get(k) for k in keys)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    report = {"quick": args.quick, "environment": environment(device)}
    print(f"[gpu_report] {report['environment']['device']}: ceilings", flush=True)
    report["ceilings"] = measure_ceilings(device, args.quick)
    print(json.dumps(report["ceilings"], indent=1), flush=True)
    failed = False
    if not args.skip_tests:
        print("[gpu_report] tests", flush=True)
        report["tests"] = run_tests(device, args.quick)
        print(report["tests"]["summary"], flush=True)
        failed |= report["tests"]["returncode"] not in (0, 5)  # 5: no tests collected
    if not args.skip_benchmarks:
        report["benchmarks"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.benchmarks:
                print(f"[gpu_report] benchmark {name}", flush=True)
                result = run_benchmark(name, device, args.quick, Path(tmp))
                report["benchmarks"][name] = result
                failed |= result["status"] not in ("ok", "missing", "skipped")
        relate_to_ceilings(report["benchmarks"], report["ceilings"])
    report["seconds"] = time.perf_counter() - t0
    report["failed"] = failed
    out_dir = Path(args.out or RESULTS)
    path = write_result("gpu_report", report, device, out_dir, prefix=False)
    md = markdown(report)
    md_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else path.parent
    md_dir.mkdir(parents=True, exist_ok=True)
    (md_dir / "gpu_report.md").write_text(md)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / path.name).write_text(path.read_text())
    print(md)
    print(f"wrote {path} and {md_dir / 'gpu_report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
