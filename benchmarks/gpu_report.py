"""The GPU suite in one command, in stages that each leave their results on disk.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_report.py --out DIR          # a GPU machine: ~8 min
    python benchmarks/gpu_report.py --device cpu --quick --out DIR       # the same stages on a CPU (CI)

Stages run cheapest and most decisive first (tier 1 environment and ceilings, 2 correctness, 3 headline
speed, 4 the rest), each in its own process with its own time-out. The report,
DIR/<date>-<device>.json and .md, is rewritten atomically when the run starts and after every stage, so a
run killed at any point keeps every stage that finished (and names the one that was running). A stage
that fails, crashes or hangs is recorded and the next one runs; any such stage makes the exit status 1.
`--budget SECONDS` skips a stage whose estimate no longer fits (recorded, with the reason) and caps the
time-out of the one that runs. Each stage's log, and its benchmark's results file or pytest's junit XML,
lie in DIR/<date>-<device>.d/<stage>/. Runs from a source checkout without installing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# No torch in this process: it writes its first report at once, and a torch that fails to import (or a
# CUDA call that hangs) is a recorded failure of a child process, not the end of the report.
from _files import OUT_HELP, result_path, scratch_results, write_text_atomic  # noqa: E402
from render_results import _cell  # noqa: E402

PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
DEFAULT_BUDGET = {"gpu": 480.0, "gpu-quick": 240.0, "cpu": 3600.0, "cpu-quick": 900.0}
# a stage that is killed past its budget share was not wrong, only late: recorded, not a failure
FAILED = ("failed", "timed out", "crashed")
GRACE_S = 10.0  # after SIGTERM, before SIGKILL


@dataclass(frozen=True)
class Mode:
    device: str  # "cuda" or "cpu"
    quick: bool

    @property
    def key(self) -> str:  # "gpu", "gpu-quick", "cpu", "cpu-quick"
        return ("gpu" if self.device == "cuda" else "cpu") + ("-quick" if self.quick else "")


def _pick(table: dict, mode: Mode):
    """table[mode.key], where a quick mode falls back to the full one and a full CPU run to the quick one."""
    for key in (mode.key, mode.key.replace("-quick", ""), mode.key + "-quick"):
        if key in table:
            return table[key]
    raise KeyError(mode.key)


@dataclass(frozen=True)
class Stage:
    """One step of the report: a command run in its own process, and what it is evidence for."""

    name: str
    tier: int  # 1 environment + ceilings, 2 correctness, 3 headline speed, 4 the rest
    backs: str  # the claim this stage's result backs
    command: Callable[[Mode, Path], list[str] | str]  # argv after `python` (given the stage folder), or why not
    seconds: dict  # estimated seconds per mode key ("gpu" = H100/H200 class, full sizes)
    timeout_s: float | None = None  # default: a minute for the process to start, then 3x the estimate

    def estimate(self, mode: Mode) -> float:
        return float(_pick(self.seconds, mode))

    def timeout(self, mode: Mode) -> float:
        return self.timeout_s if self.timeout_s is not None else 60.0 + 3.0 * self.estimate(mode)


def tests(patterns: dict, marks: str = "not peer and not slow") -> Callable[[Mode, Path], list[str] | str]:
    """A pytest stage: `patterns` maps mode keys to test file globs (or to why it does not run there)."""

    def command(mode: Mode, folder: Path) -> list[str] | str:
        chosen = _pick(patterns, mode)
        if isinstance(chosen, str):
            return chosen
        files = sorted({str(p.relative_to(ROOT)) for pattern in chosen for p in ROOT.glob(pattern)})
        if not files:
            return f"no test files match {' '.join(chosen)}"
        return [*PYTEST, "-m", marks, f"--junitxml={folder / 'junit.xml'}", *files]

    return command


def script(name: str, args: dict, device_flag: str = "--device") -> Callable[[Mode, Path], list[str] | str]:
    """A benchmark stage: benchmarks/<name>.py with `args` per mode key (or why it does not run there)."""

    def command(mode: Mode, folder: Path) -> list[str] | str:
        chosen = _pick(args, mode)
        if isinstance(chosen, str):
            return chosen
        device = [device_flag, mode.device] if device_flag else []
        return [str(HERE / f"{name}.py"), *device, *chosen, "--out", str(folder)]

    return command


KERNEL_TESTS = ["tests/test_kernels_*.py", "tests/test_sigreg_fused*.py", "tests/test_planner_triton.py",
                "tests/test_planner_cpu_kernels.py"]  # fmt: skip
NEEDS_CUDA = "needs a CUDA device"
# The stages, in the order they run. Add one by adding a row; `seconds` are estimates (update them from a
# report's measured `seconds`); CPU figures are for a shared 2-core machine.
STAGES = (
    Stage("ceilings", 1, "copy bytes/s and bf16/fp32 matmul FLOP/s: the yardsticks of every rate below",
          script("ceilings", {"gpu": [], "gpu-quick": ["--quick"], "cpu-quick": ["--quick"], "cpu": []}),
          {"gpu": 20, "cpu-quick": 30}),
    Stage("kernels", 2, "every Triton kernel compiled on the device equals its PyTorch reference (fp32 and bf16, "
          "random inputs, awkward shapes); on a CPU the interpreter and the C++ kernels",
          tests({"gpu": KERNEL_TESTS, "cpu-quick": ["tests/test_kernels_*.py", "tests/test_planner_cpu_kernels.py"],
                 "cpu": KERNEL_TESTS}),
          {"gpu": 80, "cpu-quick": 120, "cpu": 600}),
    Stage("equivalence", 2, "the fast backends' costs within the derived bound of the exact costs and every sampling "
          "solver's 30-iteration plans equivalent to the exact plans (planning/equivalence.py), fp32 and bf16",
          script("equivalence", {"gpu": ["--backends", "triton", "--seeds", "2"],
                                 "gpu-quick": ["--backends", "triton", "--seeds", "1"],
                                 "cpu-quick": ["--quick", "--seeds", "1", "--solvers", "cem", "ps", "--dtypes", "fp32"],
                                 "cpu": ["--quick"]}),
          {"gpu": 100, "gpu-quick": 50, "cpu-quick": 40, "cpu": 600}),
    Stage("cuda_graph_sync", 2, "the CUDA-graph solve replays the eager one exactly; a solve and a replay make no "
          "host sync (torch.cuda.set_sync_debug_mode('error')); fused SIGReg on the GPU without host sync",
          tests({"gpu": ["tests"], "cpu": NEEDS_CUDA}, marks="gpu"),
          {"gpu": 40, "cpu-quick": 0}),
    Stage("plan_speed", 3, "CEM plan time at the published size: E = 1 and 16, fp32 and bf16, reference vs fast "
          "engines, CUDA graph vs eager",
          script("plan_speed", {
              "gpu": ["--envs", "1", "16", "--eager-too", "--no-public", "--budget", "2", "--rounds", "2"],
              "gpu-quick": ["--envs", "1", "16", "--eager-too", "--no-public", "--budget", "0.5", "--rounds", "1"],
              "cpu-quick": ["--envs", "1", "--no-public", "--samples", "32", "--topk", "4", "--iters", "3",
                            "--dtypes", "fp32", "--budget", "0.5", "--rounds", "1"],
              "cpu": ["--no-public"]}),
          {"gpu": 120, "cpu-quick": 60, "cpu": 300}),
    Stage("sigreg_speed", 3, "SIGReg forward + backward time and memory, fused vs reference, training and large sizes",
          script("sigreg_speed", {"gpu": ["--sizes", "train", "large", "--budget", "3"],
                                  "gpu-quick": ["--sizes", "train", "large", "--repeats", "5", "--budget", "1"],
                                  "cpu-quick": ["--sizes", "small", "--repeats", "3", "--budget", "1"],
                                  "cpu": ["--quick"]}),
          {"gpu": 45, "cpu-quick": 40}),
    Stage("train_speed", 4, "training steps/s at the paper preset (batch 128, bf16), SIGReg reference vs fused",
          script("train_speed", {"gpu": ["--only", "paper", "--no-compile"],
                                 "gpu-quick": ["--only", "paper", "--no-compile", "--quick"],
                                 "cpu-quick": ["--only", "small", "--no-compile", "--quick", "--small-batch", "2"],
                                 "cpu": ["--skip-paper", "--no-compile", "--quick"]}),
          {"gpu": 50, "cpu-quick": 60}),
    Stage("plan_exactness", 4, "how much a bf16 plan differs from the fp32 plan (elites, final cost)",
          script("plan_exactness", {"gpu": ["--control"], "gpu-quick": ["--quick"],
                                    "cpu-quick": ["--problems", "2", "--samples", "16", "--topk", "4", "--iters", "2"],
                                    "cpu": ["--quick"]}),
          {"gpu": 40, "cpu-quick": 40}),
    Stage("planner_kernels", 4, "each planner Triton kernel against the cuBLAS/PyTorch composition it replaces",
          script("planner_kernels", {"gpu": [], "gpu-quick": ["--envs", "1"], "cpu": NEEDS_CUDA}, device_flag=""),
          {"gpu": 40, "cpu-quick": 0}),
    Stage("test_suite", 4, "the whole test suite passes on the device's Python, torch and Triton",
          tests({"gpu": ["tests"], "cpu-quick": "CI runs the whole suite before this report", "cpu": ["tests"]},
                marks="not peer and not slow and not gpu"),
          {"gpu": 240, "cpu-quick": 0, "cpu": 1800}),
)  # fmt: skip


# ---- running one stage ---------------------------------------------------------------------------


class Interrupted(Exception):
    """The report itself got SIGTERM/SIGHUP (SIGINT arrives as KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _child_env(device: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    if device == "cpu":  # a CPU report on a machine with a GPU still measures the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
        # spinning OpenMP threads starve each other on a shared machine (a training step measured 10-30x
        # slower here with the default policy under load); a user's own setting wins
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after GRACE_S: a stage stuck in a CUDA call may not answer the first."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _echo(log, prefix: str, final: bool = False) -> None:
    """Print the lines the stage wrote to its log since the last call (the report's output is the live view);
    a line still being written waits for the next call, unless this is the last."""
    while True:
        where = log.tell()
        line = log.readline()
        if not line:
            return
        if not line.endswith("\n") and not final:
            log.seek(where)
            return
        print(prefix + line.rstrip("\n"), flush=True)


def run_command(argv: list[str], folder: Path, timeout: float, mode: Mode, prefix: str) -> tuple[int | None, float]:
    """Run `python argv` with its output in folder/log.txt, echoed; (exit status or None if timed out, seconds).

    The child stays in the report's process group, so a signal to the group (timeout(1), Ctrl-C) reaches it
    too; an Interrupted raised here stops it before propagating."""
    log_path = folder / "log.txt"
    t0 = time.monotonic()
    with open(log_path, "w") as out, open(log_path) as log:
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=_child_env(mode.device), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    _echo(log, prefix)
                    if time.monotonic() - t0 > timeout:
                        _stop(proc)
                        rc = None
                        break
        except BaseException:
            _stop(proc)
            raise
        finally:
            _echo(log, prefix, final=True)
    return rc, time.monotonic() - t0


def _tail(path: Path, chars: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def pytest_result(folder: Path, rc: int) -> tuple[str, dict]:
    """(status, counts and failing tests) from pytest's junit XML; ok needs exit 0 and one test passed."""
    try:
        root = ET.parse(folder / "junit.xml").getroot()
    except (OSError, ET.ParseError) as e:
        return "failed", {"error": f"no junit XML from pytest (exit {rc}): {e}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
               if c.find("failure") is not None or c.find("error") is not None]  # fmt: skip
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    result = {"passed": passed, "failed": count["failures"], "errors": count["errors"],
              "skipped": count["skipped"], "failing": failing[:50], "pytest_exit": rc}  # fmt: skip
    result["tests"] = f"{passed} passed, {count['failures']} failed, {count['errors']} errors, " + (
        f"{count['skipped']} skipped"
    )
    if rc == 0 and passed == 0:
        return "failed", {**result, "error": "no test ran (all skipped or deselected)"}
    return ("ok" if rc == 0 else "failed"), result


def script_result(folder: Path, rc: int) -> tuple[str, dict]:
    """(status, payload) from the newest results file the benchmark wrote into `folder`."""
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return "failed", {"error": f"exit {rc} and no results file"}
    payload = json.loads(files[-1].read_text())
    payload.pop("environment", None)  # the report's own environment says it
    payload["results_file"] = files[-1].name
    return ("ok" if rc == 0 else "failed"), payload


def run_stage(stage: Stage, mode: Mode, folder: Path, seconds_left: float) -> dict:
    """Run one stage (unless it cannot run here or its estimate does not fit); its entry in the report."""
    entry = {"tier": stage.tier, "backs": stage.backs, "estimate_s": stage.estimate(mode)}
    argv = stage.command(mode, folder)
    if isinstance(argv, str):
        return {**entry, "status": "skipped", "reason": argv}
    if entry["estimate_s"] > seconds_left:
        why = f"estimated {entry['estimate_s']:.0f} s, {max(seconds_left, 0):.0f} s of the budget left"
        return {**entry, "status": "skipped", "reason": why}
    timeout = min(stage.timeout(mode), seconds_left)
    shown = [str(Path(a).relative_to(ROOT)) if Path(a).is_relative_to(ROOT) else a for a in argv]
    entry |= {"command": shlex.join(["python", *shown]), "timeout_s": timeout, "log": str(folder / "log.txt")}
    folder.mkdir(parents=True, exist_ok=True)
    rc, seconds = run_command(argv, folder, timeout, mode, prefix=f"  [{stage.name}] ")
    entry["seconds"] = seconds
    if rc is None:
        own = timeout >= stage.timeout(mode)
        why = "its time-out" if own else "the end of the budget"
        return {**entry, "status": "timed out" if own else "cut off", "reason": f"stopped at {why}, {timeout:.0f} s",
                "tail": _tail(folder / "log.txt")}  # fmt: skip
    parse = pytest_result if argv[:2] == PYTEST[:2] else script_result
    try:
        status, result = parse(folder, rc)
    except Exception as exc:  # noqa: BLE001 - an unreadable result is this stage's failure, not the report's
        status, result = "failed", {"error": f"its results could not be read: {type(exc).__name__}: {exc}"}
    if rc < 0:
        status, result["error"] = "crashed", f"killed by {signal.Signals(-rc).name}"
    entry |= {"status": status, "result": result}
    if status != "ok":
        entry["tail"] = _tail(folder / "log.txt")
    return entry


# ---- the report ----------------------------------------------------------------------------------


def relate_to_ceilings(entry: dict, ceilings: dict) -> None:
    """Add each row's fraction of the matching ceiling (TFLOP/s vs matmul, GB/s vs copy)."""
    for row in entry.get("result", {}).get("rows", []):
        peak = ceilings.get("matmul_bf16_TFLOPs" if row.get("dtype") == "bf16" else "matmul_fp32_TFLOPs")
        for key in ("tflops", "triton_tflops"):
            if isinstance(row.get(key), (int, float)) and peak:
                row["fraction_of_matmul_peak"] = row[key] / peak
        for key in ("GBps", "triton_gbs"):
            if isinstance(row.get(key), (int, float)) and ceilings.get("copy_GBps"):
                row["fraction_of_copy_bandwidth"] = row[key] / ceilings["copy_GBps"]


def _rows_table(rows: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if not isinstance(v, (dict, list))))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]


def _stage_markdown(name: str, entry: dict) -> list[str]:
    lines = ["", f"## {name}: {entry['status']}", "", f"Backs: {entry['backs']}."]
    if "command" in entry:
        took = f"{entry.get('seconds', 0):.0f} s, estimated {entry['estimate_s']:.0f} s"
        lines += ["", f"`{entry['command']}` ({took})"]
    result = entry.get("result", {})
    for key in ("reason", "error"):
        if entry.get(key) or result.get(key):
            lines += ["", f"{key}: {entry.get(key) or result.get(key)}"]
    if isinstance(result.get("tests"), str):
        lines += ["", result["tests"]] + [f"- failing: `{t}`" for t in result.get("failing", [])]
    if isinstance(result.get("ceilings"), dict):
        lines += [""] + [f"- {k}: {_cell(v)}" for k, v in result["ceilings"].items()]
    if result.get("rows"):
        lines += ["", *_rows_table(result["rows"])]
    if entry.get("tail") and entry["status"] != "ok":
        lines += ["", "```", entry["tail"][-1500:].strip(), "```"]
    return lines


def note(entry: dict) -> str:
    """One line on a stage's outcome: why it did not run or failed, its test counts, or what it measured."""
    result = entry.get("result", {})
    if entry.get("reason") or result.get("error"):
        return str(entry.get("reason") or result.get("error"))
    if isinstance(result.get("tests"), str):
        return result["tests"]
    if isinstance(result.get("ceilings"), dict):
        c = result["ceilings"]
        return (f"copy {_cell(c.get('copy_GBps'))} GB/s, bf16 {_cell(c.get('matmul_bf16_TFLOPs'))} TFLOP/s, "
                f"fp32 {_cell(c.get('matmul_fp32_TFLOPs'))} TFLOP/s")  # fmt: skip
    if "rows" in result:
        return f"{len(result['rows'])} rows ({result.get('results_file')})"
    return ""


def markdown(report: dict) -> str:
    env, run = report["environment"], report["run"]
    state = "finished" if run["finished"] else (run.get("interrupted") or "in progress")
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("python", "torch", "triton", "cuda", "commit"))
    lines = [f"# lewm_fast GPU report: {env['device'] or 'device not known yet'}", "",
             f"{env['date']}; {versions}; mode {run['mode']}, budget {_cell(run['budget_s'])} s, "
             f"{run['elapsed_s']:.0f} s, {state}." + (f" Error: {run['error']}" if run.get("error") else ""), "",
             "| tier | stage | status | seconds | estimate | note |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in report["stages"].items():
        lines.append(f"| {e['tier']} | {name} | {e['status']} | {_cell(e.get('seconds'))} | "
                     f"{_cell(e['estimate_s'])} | {note(e)} |")  # fmt: skip
    for name, e in report["stages"].items():
        if e["status"] not in ("pending", "not selected"):
            try:  # a benchmark's unexpected payload must not cost the report (the JSON has it whole)
                lines += _stage_markdown(name, e)
            except Exception as exc:  # noqa: BLE001
                lines += ["", f"## {name}: {e['status']}", "", f"(not rendered: {type(exc).__name__}: {exc})"]
    return "\n".join(lines) + "\n"


def save(report: dict, path: Path, t0: float) -> None:
    """Write the report's JSON and Markdown, each atomically (a kill leaves the previous complete pair)."""
    report["run"]["elapsed_s"] = time.monotonic() - t0
    write_text_atomic(path, json.dumps(report, indent=2))
    write_text_atomic(path.with_suffix(".md"), markdown(report))


# ---- the command ---------------------------------------------------------------------------------

# The environment as every benchmark records it (_common.environment), from a child process.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from _common import environment
device = sys.argv[2] if sys.argv[2] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("--device cuda: torch sees no CUDA device here (use --device cpu)")
print(json.dumps(environment(torch.device(device))))
"""


def probe_environment(device: str, timeout: float = 300.0) -> tuple[dict | None, str]:
    """(device, versions, date and commit as the benchmarks record them, or None; why not)."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, str(HERE), device], capture_output=True, text=True,
                              timeout=timeout, env=_child_env(device), cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"the environment probe (import torch) took over {timeout:.0f} s"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"the environment probe exited {done.returncode}"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def parse_args(argv, stages) -> argparse.Namespace:
    table = "\n".join(f"  {s.tier}  {s.name:<16} ~{_cell(s.seconds.get('gpu')):>4} s: {s.backs}" for s in stages)
    epilog = "stages (tier, name, estimate on a GPU, what it backs):\n" + table
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, epilog=epilog, formatter_class=fmt)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: CUDA where torch sees it")
    p.add_argument("--quick", action="store_true", help="smaller sizes (on a CPU: tiny ones, as CI runs it)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole report; a stage whose estimate does not fit is skipped (default: "
                   + ", ".join(f"{k} {v:.0f}" for k, v in DEFAULT_BUDGET.items()) + ")")  # fmt: skip
    p.add_argument("--stages", nargs="+", default=None, choices=[s.name for s in stages], help="run only these")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget: expected a positive number of seconds, got {args.budget}")
    return args


def new_report(args: argparse.Namespace, argv: list[str], stages) -> dict:
    """The report before anything ran: every stage pending (or not selected); mode and device unknown."""
    selected = args.stages or [s.name for s in stages]
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "benchmark": "gpu_report",
        "environment": {"device": None, "date": date, "python": platform.python_version()},
        "run": {"argv": argv, "mode": None, "budget_s": args.budget, "elapsed_s": 0.0, "finished": False,
                "failed": []},
        "ceilings": None,
        "stages": {s.name: {"tier": s.tier, "backs": s.backs, "estimate_s": None,
                            "status": "pending" if s.name in selected else "not selected"} for s in stages},
    }  # fmt: skip


def _move(path: Path, new: Path) -> Path:
    """Rename the report (JSON, Markdown) to its final name once the device is known."""
    if new != path:
        os.replace(path, new)
        os.replace(path.with_suffix(".md"), new.with_suffix(".md"))
    return new


def run_stages(report: dict, stages, mode: Mode, budget: float, path: Path, t0: float) -> None:
    """Run the pending stages in order, saving the report before and after each."""
    for stage in (s for s in stages if report["stages"][s.name]["status"] == "pending"):
        name, left = stage.name, budget - (time.monotonic() - t0)
        report["stages"][name]["status"] = "running"
        save(report, path, t0)
        print(f"[gpu_report] {name} (tier {stage.tier}, ~{stage.estimate(mode):.0f} s)", flush=True)
        entry = run_stage(stage, mode, path.with_suffix(".d") / name, left)
        if name == "ceilings" and entry["status"] == "ok":
            report["ceilings"] = entry["result"].get("ceilings")
        elif report["ceilings"]:
            relate_to_ceilings(entry, report["ceilings"])
        report["stages"][name] = entry
        save(report, path, t0)
        print(f"[gpu_report] {name}: {entry['status']}, {note(entry)}", flush=True)


def _interrupted(report: dict, exc: BaseException) -> int:
    """Record an interruption of the report itself; the exit status of a process killed by that signal."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    running = [n for n, e in report["stages"].items() if e["status"] == "running"]
    report["run"]["interrupted"] = f"interrupted by {name}" + (f" during {running[0]}" if running else "")
    for n in running:
        report["stages"][n] |= {"status": "interrupted", "reason": f"the report got {name}"}
    return 128 + signum


def main(argv=None, stages=STAGES) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, t0 = parse_args(argv, stages), time.monotonic()
    report = new_report(args, argv, stages)
    path = Path(args.out or scratch_results()) / f"{report['environment']['date'][:10]}-starting.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(report, path, t0)
    handlers = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        env, why = probe_environment(args.device)
        if env is None:
            report["run"] |= {"error": why, "finished": True, "failed": ["environment"]}
            save(report, path, t0)
            print(f"gpu_report: {why} (report: {path})", file=sys.stderr)
            return 2
        mode = Mode(env["device_type"], args.quick)
        budget = args.budget if args.budget is not None else DEFAULT_BUDGET[mode.key]
        report["environment"] = env
        report["run"] |= {"mode": mode.key, "budget_s": budget}
        for stage in stages:
            report["stages"][stage.name]["estimate_s"] = stage.estimate(mode)
        path = _move(path, result_path("gpu_report", env, path.parent, prefix=False))
        save(report, path, t0)
        print(f"[gpu_report] {env['device']}, mode {mode.key}, budget {budget:.0f} s: writing {path}", flush=True)
        run_stages(report, stages, mode, budget, path, t0)
    except (Interrupted, KeyboardInterrupt) as exc:
        status = _interrupted(report, exc)
        save(report, path, t0)
        print(f"[gpu_report] {report['run']['interrupted']}; kept {path}", flush=True)
        return status
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    report["run"]["finished"] = True
    report["run"]["failed"] = [n for n, e in report["stages"].items() if e["status"] in FAILED]
    save(report, path, t0)
    print("\n" + markdown(report).split("\n## ")[0], flush=True)
    print(f"wrote {path} and {path.with_suffix('.md')}", flush=True)
    return 1 if report["run"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
