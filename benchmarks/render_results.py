"""Render the latest results files into README.md's Results section (between its markers).

    python benchmarks/render_results.py            # rewrite README.md in place
    python benchmarks/render_results.py --check    # exit 1 if README.md is out of date

For each benchmark and device, the newest file in benchmarks/results/ becomes a table; every table
names its results file, so each figure in the README can be traced to a run. Planning tables show
`x public` (the public solver as shipped) and `x best public` (its fastest configuration in the same run,
benchmarks/public_variants.py; only for files that have it: older runs did not time it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
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
        ("pct_ceiling", "% GEMM ceiling"),
    ],  # fmt: skip
}
OPTIONAL = {"x_best_public"}  # columns shown only where some row has them (results files before them lack them)
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
    """The newest results file of each (benchmark, device) pair that holds a table (a list of row dicts);
    GPU reports and profiles (`rollout_profile`: `rows` is a candidate count) are not tables here."""
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
        key = (data.get("benchmark", path.stem), env.get("device", "?"))
        if key not in newest or env.get("date", "") >= newest[key][0]:
            newest[key] = (env.get("date", ""), path)
    return [p for _, p in sorted(newest.values(), key=lambda t: t[1].name)]


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    name, env, rows = data.get("benchmark", path.stem), data["environment"], data["rows"]
    columns = COLUMNS.get(name) or [(k, k) for k, v in rows[0].items() if not isinstance(v, (dict, list))]
    columns = [(k, h) for k, h in columns if k not in OPTIONAL or any(r.get(k) is not None for r in rows)]
    machine = env.get("machine") or {}  # the CPU's ISA and native bf16, where the file records them
    cpu = f", {machine['isa']}{', native bf16' if machine.get('native_bf16') else ''}" if machine.get("isa") else ""
    lines = [
        f"**{TITLES.get(name, name)}** on {env['device']}{cpu} (torch {env['torch']}, {env['date'][:10]}; "
        f"`benchmarks/results/{path.name}`)",
        "",
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def render(results: Path = RESULTS) -> str:
    files = latest_files(results)
    if not files:
        return "No results yet: run the benchmarks (they write to benchmarks/results/)."
    return "\n\n".join(table(p) for p in files)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md: no {START} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}\n{END}{tail}"
    if args.check:
        if new != text:
            print("README.md results are out of date: run python benchmarks/render_results.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
