"""Render the results files of benchmarks/results/ into README.md and benchmarks/results/HISTORY.md
(each between its `<!-- results:start -->` and `<!-- results:end -->` markers).

    python benchmarks/render_results.py            # rewrite both in place
    python benchmarks/render_results.py --check    # exit 1 if either is out of date

README.md gets one headline table: for each measurement (benchmark, what was timed) on each machine, the
newest row that compares lewm_fast with a baseline, naming the CPU (model, ISA) or GPU, the date and the
results file. Runs with deliberate neighbour processes (`--neighbours`, a busy machine) are left out of it.
HISTORY.md gets the full table of the newest file of each benchmark, machine and set of measurements.
Planning tables show `x public` (the public solver as shipped) and `x best public` (its fastest configuration
in the same run, benchmarks/public_variants.py; only for files that have it: older runs did not time it), and a
CPU row's rate against the GEMM rate of its matmuls alone: `% GEMM ceiling` timed in the same spell as the row
(benchmarks/plan_speed.py; files since 2026-12-08), `% GEMM peak` against each shape's best short call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
HISTORY = RESULTS / "HISTORY.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# benchmark -> [(row key, column header)]; unknown benchmarks show every scalar column.
COLUMNS = {
    "plan_speed": [
        ("solver", "solver"),
        ("impl", "implementation"),
        ("dtype", "dtype"),
        ("envs", "E"),
        ("iters_run", "iters run"),
        ("ms_per_plan", "ms/plan"),
        ("plans_per_s", "plans/s"),
        ("tflops", "TFLOP/s (public work)"),
        ("x_reference", "x reference"),
        ("x_public", "x public"),
        ("x_best_public", "x best public"),
        ("pct_ceiling_paired", "% GEMM ceiling"),
        ("pct_ceiling", "% GEMM peak"),
    ],  # fmt: skip
}
# Columns shown only where some row has them (results files before them lack them): `x best public` since
# 2026-12-07, the ceiling timed in the same spell as the row since 2026-12-08 (before, `% GEMM peak` was the only one).
OPTIONAL = {"x_best_public", "pct_ceiling_paired"}
TITLES = {
    "plan_speed": "Planning (300 samples x 30 iterations x horizon 5, published-size model)",
    "sigreg_speed": "SIGReg forward + backward",
    "train_speed": "Training throughput",
    "plan_exactness": "bf16 vs fp32 plans",
}


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def latest_files(results: Path) -> list[Path]:
    """The newest results file of each benchmark, machine (device, core and ISA) and set of measurements (the
    headline's names of its rows: solvers, E, dtypes) that holds a table (a list of row dicts), so that a run of
    other solvers on the same machine does not hide one; GPU reports and profiles (`rollout_profile`: `rows` is
    a candidate count) are not tables here."""
    newest: dict[tuple[str, str], tuple[str, Path]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows = data.get("rows")
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            continue
        env = data.get("environment", {})
        key = (data.get("benchmark", path.stem), machine(env)[1], _measured(data.get("benchmark", ""), rows))
        if key not in newest or env.get("date", "") >= newest[key][0]:
            newest[key] = (env.get("date", ""), path)
    return [p for _, p in sorted(newest.values(), key=lambda t: t[1].name)]


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    name, env, rows = data.get("benchmark", path.stem), data["environment"], data["rows"]
    columns = COLUMNS.get(name) or [(k, k) for k, v in rows[0].items() if not isinstance(v, (dict, list))]
    columns = [(k, h) for k, h in columns if k not in OPTIONAL or any(r.get(k) is not None for r in rows)]
    lines = [
        f"**{TITLES.get(name, name)}** on {machine(env)[1]} (torch {env['torch']}, {env['date'][:10]}; "
        f"`benchmarks/results/{path.name}`)",
        "",
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def _measured(benchmark: str, rows: list) -> frozenset:
    """What a file's rows measure, by the headline's names of them (e.g. "CEM plan, E = 1, bf16"); empty for a
    benchmark without headline rows."""
    pick = HEADLINE_ROWS.get(benchmark.split("-")[0])
    return frozenset(got[1] for r in rows if pick is not None and isinstance(r, dict) and (got := pick(r)))


def render(results: Path = RESULTS) -> str:
    """The full table of the newest file of each benchmark, machine and set of measurements (HISTORY.md)."""
    files = latest_files(results)
    if not files:
        return "No results yet: run the benchmarks (they write to benchmarks/results/)."
    return "\n\n".join(table(p) for p in files)


# ---- the README's headline table -----------------------------------------------------------------

SOLVER_NAMES = {"cem": "CEM", "icem": "iCEM", "mppi": "MPPI", "ps": "predictive sampling", "grad": "gradient"}
RATIOS = ("x_reference", "x_public", "x_best_public")
HEADLINE_COLUMNS = ("what", "machine", "date", "lewm_fast", "x reference", "x public", "x best public", "results file")
SIGREG_SIZES = ("train", "large")  # the training size and a large one; `small` is a test size


def _plan_row(r: dict) -> tuple[tuple, str, float] | None:
    """(order, what, ms) of a planning row of lewm_fast's fast backends with their defaults (no
    torch.compile). Files before the `impl` column name the implementation in `solver` and timed CEM only."""
    impl, solver = (r["impl"], r.get("solver")) if "impl" in r else (r.get("solver", ""), "cem")
    if impl not in ("lewm_fast:torch", "lewm_fast:triton") or "ms_per_plan" not in r:
        return None
    names = list(SOLVER_NAMES)
    order = (names.index(solver) if solver in names else len(names), r["envs"], r["dtype"])
    return order, f"{SOLVER_NAMES.get(solver, solver)} plan, E = {r['envs']}, {r['dtype']}", r["ms_per_plan"]


def _sigreg_row(r: dict) -> tuple[tuple, str, float] | None:
    """A lewm_fast SIGReg backend's forward + backward; not the baselines beside it (the reference, the public
    module's rows, and the `gemm`/`floor` rows of the work any implementation needs)."""
    backend = r.get("backend")
    if backend in (None, "reference", "gemm", "floor") or str(backend).startswith("public"):
        return None
    if r.get("phase") != "both" or r.get("size") not in SIGREG_SIZES:
        return None
    what = f"SIGReg forward + backward, {r['T']} x {r['B']} x {r['D']}, {r['M']} slices, {r['dtype']}"
    return (SIGREG_SIZES.index(r["size"]), r["dtype"]), what, r["ms"]


def _train_row(r: dict) -> tuple[tuple, str, float] | None:
    """lewm_fast's training step with its defaults: eager, SIGReg backend "auto" (not its reference rows)."""
    if r.get("impl", "lewm_fast") != "lewm_fast" or r.get("compile") or r.get("sigreg", "auto") != "auto":
        return None
    if "step_ms" not in r:
        return None
    return (r["preset"], r["batch"], r["dtype"]), f"training step, {r['preset']} preset, batch {r['batch']}, " \
        f"{r['dtype']}", r["step_ms"]  # fmt: skip


HEADLINE_ROWS = {"plan_speed": _plan_row, "sigreg_speed": _sigreg_row, "train_speed": _train_row}


def machine(env: dict) -> tuple[str, str]:
    """(the CPU model, core and ISA, or the GPU; the same with the thread count) a file was measured on. The
    core (e.g. "Zen 5", from lewm_fast.capability) tells apart CPUs of one name; files before it lack it. A run
    under ISA limits (another CPU's code paths on this one) is its own machine, named with them."""
    device = env.get("device", "?").replace("(R)", "")
    name = device.split(" (")[0]
    if env.get("device_type", "cpu") != "cpu":
        return name, device
    m = env.get("machine") or {}
    core = (m.get("core") or "").split(",")[0]
    if core and not core.startswith("family"):
        name, device = f"{name} {core}", f"{name} {core}{device[len(name) :]}"
    limits = " ".join(f"{k}={v}" for k, v in sorted((m.get("isa_limits") or {}).items()))
    detail = f", limited by {limits}" if limits else ", native bf16" if m.get("native_bf16") else ""
    isa = f"{m['isa']}{detail}" if m.get("isa") else "ISA not recorded"
    return f"{name}, {isa}", f"{device}, {isa}"


def _ms(ms: float) -> str:
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def headline_rows(results: Path = RESULTS) -> list[dict]:
    """The newest row of each (benchmark, machine, what) that has a ratio to a baseline, whatever its thread
    count or clock; runs with deliberate neighbours or under ISA limits (a stand-in for another CPU, not one)
    left out. Sorted by benchmark, machine, solver and E."""
    newest: dict[tuple, dict] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        bench, env, args = data.get("benchmark", "").split("-")[0], data.get("environment") or {}, data.get("args")
        pick = HEADLINE_ROWS.get(bench)
        limited = (env.get("machine") or {}).get("isa_limits")
        if pick is None or not isinstance(data.get("rows"), list) or (args or {}).get("neighbours") or limited:
            continue
        cpu, where = machine(env)
        for r in data["rows"]:
            got = pick(r) if isinstance(r, dict) and any(r.get(k) is not None for k in RATIOS) else None
            if got is None:
                continue
            key = (list(HEADLINE_ROWS).index(bench), cpu, got[0])
            if key not in newest or env.get("date", "") >= newest[key]["date"]:
                clock = ", CPU-time clock" if "cpu" in ((args or {}).get("clock"), data.get("clock")) else ""
                newest[key] = {"what": got[1], "machine": where + clock, "date": env.get("date", ""), "ms": got[2],
                               "file": path.name, **{k: r.get(k) for k in RATIOS}}  # fmt: skip
    return [newest[k] for k in sorted(newest)]


def render_headline(results: Path = RESULTS) -> str:
    rows = headline_rows(results)
    if not rows:
        return "No results yet: run the benchmarks with `--out benchmarks/results`."
    lines = ["| " + " | ".join(HEADLINE_COLUMNS) + " |", "|" + "---|" * len(HEADLINE_COLUMNS)]
    for r in rows:
        ratios = [_cell(r[k]) for k in RATIOS]
        cells = [r["what"], r["machine"], r["date"][:10], _ms(r["ms"]), *ratios, f"`{r['file']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- writing -----------------------------------------------------------------------------------------


def rendered(path: Path, body: str) -> str | None:
    """The text of `path` with `body` between its markers; None when it has no markers."""
    text = path.read_text()
    if START not in text or END not in text:
        return None
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    status = 0
    for path, body in ((README, render_headline()), (HISTORY, render())):
        new = rendered(path, body)
        if new is None:
            print(f"{path.name}: no {START} ... {END} markers", file=sys.stderr)
            return 1
        if not args.check:
            path.write_text(new)
        elif new != path.read_text():
            print(f"{path.name}: results are out of date: run python benchmarks/render_results.py", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
