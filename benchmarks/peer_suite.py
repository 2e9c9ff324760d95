"""stable-worldmodel's own tests as the judge of `lf.interop.accelerate()`, in both of its layouts.

- release: the PyPI release (0.1.1, `stable_worldmodel.solver`): its `tests/solver`, `tests/wm` and
  `tests/test_policy.py`, against that release installed in a venv;
- source: its current source at a pinned commit (`stable_worldmodel.planning`): `tests/planning`,
  `tests/wm`, `tests/test_policy.py` and `tests/test_protocols.py`, against that commit's source installed
  in a venv of its own (the commit's files are checked against the installed package).

For each layout the tests are exported from a clone of the public repository (`git archive`, into a scratch
folder, never into this repository), run twice with that venv's Python, without and with
`tests/peer/accelerate_plugin.py` (which calls `accelerate()` before the tests import stable_worldmodel),
and compared test by test: a test that passes without lewm_fast and fails with it is a regression (exit
status 1). The counts go to benchmarks/results/peer_suite-<date>-<cpu>-<layout>.json.

    python benchmarks/peer_suite.py --source CLONE --release-python VENV/bin/python \\
        --source-python SRC_VENV/bin/python [--layouts release source]

CLONE, the two Pythons: arguments or SWM_SOURCE, SWM_RELEASE_PYTHON, SWM_SOURCE_PYTHON. A venv needs
torch, transformers, pytest, hydra-core and omegaconf beside stable-worldmodel (docs/interop.md: how to
build both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

PINNED_COMMIT = "addbab40377da680dadbfbc90250fe749f6f57e3"  # galilai-group/stable-worldmodel, 2026-08-18


@dataclass(frozen=True)
class Layout:
    ref: str  # the tag or commit whose tests run
    tests: tuple[str, ...]  # what pytest runs
    export: tuple[str, ...]  # what git archive exports (the tests and the files they read)


LAYOUTS = {
    "release": Layout("0.1.1", ("tests/solver", "tests/wm", "tests/test_policy.py"), ("tests",)),
    "source": Layout(
        PINNED_COMMIT,
        ("tests/planning", "tests/wm", "tests/test_policy.py", "tests/test_protocols.py"),
        ("tests", "scripts/plan/config"),
    ),  # fmt: skip
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=os.environ.get("SWM_SOURCE"),
                   help="a clone of github.com/galilai-group/stable-worldmodel (or SWM_SOURCE)")  # fmt: skip
    p.add_argument("--release-python", default=os.environ.get("SWM_RELEASE_PYTHON"),
                   help="Python of a venv with the release installed (or SWM_RELEASE_PYTHON)")  # fmt: skip
    p.add_argument("--source-python", default=os.environ.get("SWM_SOURCE_PYTHON"),
                   help="Python of a venv with the source at --commit installed (or SWM_SOURCE_PYTHON)")  # fmt: skip
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--tag", default=LAYOUTS["release"].ref, help="the release whose tests to run (installed)")
    p.add_argument("--commit", default=PINNED_COMMIT, help="the source commit whose tests to run (installed)")
    p.add_argument("--scratch", type=Path, default=None, help="where to export the tests (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    for flag, value in (("--source", args.source), *((f"--{n}-python", getattr(args, f"{n}_python"))
                                                       for n in args.layouts)):  # fmt: skip
        if not value:
            p.error(f"{flag}: required (or its environment variable)")
    return args


def git(source: str, *cmd: str) -> bytes:
    done = subprocess.run(["git", "-C", source, *cmd], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"peer_suite: --source {source}: git {' '.join(cmd)} failed: {done.stderr.decode().strip()}")
    return done.stdout


def export_tests(source: str, layout: Layout, ref: str, scratch: Path) -> Path:
    """`git archive <ref> <tests...>` into scratch/<ref>/ (only the tests and their data files: the
    installed package, not a source tree beside them, must be what they import)."""
    dest = scratch / ref
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=git(source, "archive", ref, *layout.export), check=True)
    return dest


def probe(python: str, code: str) -> str:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"peer_suite: {python}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def check_release(python: str, tag: str) -> str:
    installed = probe(python, "import importlib.metadata as m; print(m.version('stable-worldmodel'))")
    if installed != tag:
        raise SystemExit(f"peer_suite: --tag {tag}: {python} has stable-worldmodel {installed}")
    return installed


def check_source(python: str, source: str, commit: str) -> str:
    """The installed `stable_worldmodel` package holds the commit's files (git blob hashes compared)."""
    folder = Path(probe(python, "import importlib.util as u; print(u.find_spec('stable_worldmodel').origin)")).parent
    listing = git(source, "ls-tree", "-r", commit, "stable_worldmodel").decode().splitlines()
    differ = []
    for line in listing:
        meta, path = line.split("\t", 1)
        blob = meta.split()[2]
        local = folder.parent / path
        data = local.read_bytes() if local.exists() else None
        if data is None or hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != blob:
            differ.append(path)
    if differ:
        raise SystemExit(f"peer_suite: --commit {commit}: {python}'s stable_worldmodel differs in {len(differ)} "
                         f"files ({', '.join(differ[:5])} ...)")  # fmt: skip
    return commit


def run_suite(python: str, tests_root: Path, tests: tuple[str, ...], with_plugin: bool, scratch: Path) -> dict:
    """{test id: passed | failed | error | skipped} of one pytest run (read from its JUnit XML)."""
    label = "with" if with_plugin else "without"
    xml = scratch / f"junit-{tests_root.name}-{label}.xml"
    env = dict(os.environ)
    if with_plugin:
        paths = [str(ROOT), str(ROOT / "tests" / "peer"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["LEWM_PEER_REPORT"] = str(scratch / f"patched-{tests_root.name}.json")
    plugin = ["-p", "accelerate_plugin"] if with_plugin else []
    cmd = [python, "-m", "pytest", "-q", *plugin, "-p", "no:cacheprovider", f"--junitxml={xml}", *tests]
    print(f"peer_suite: {label} accelerate():", " ".join(cmd[3:]), flush=True)
    done = subprocess.run(cmd, cwd=tests_root, env=env, capture_output=True, text=True)
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:], flush=True)
    if not xml.exists():
        raise SystemExit(f"peer_suite: pytest wrote no report (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return outcomes(xml)


def outcomes(xml: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        out[name] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                     else "skipped" if "skipped" in kinds else "passed")  # fmt: skip
    return out


def counts(result: dict[str, str]) -> dict[str, int]:
    keys = ("passed", "failed", "error", "skipped")
    return {k: sum(v == k for v in result.values()) for k in keys} | {"total": len(result)}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Tests that pass in `before` and not in `after`."""
    return sorted(t for t, o in before.items() if o == "passed" and after.get(t) != "passed")


def run_layout(args, name: str, scratch: Path) -> dict:
    layout = LAYOUTS[name]
    python = getattr(args, f"{name}_python")
    ref = args.tag if name == "release" else args.commit
    installed = check_release(python, ref) if name == "release" else check_source(python, args.source, ref)
    tests_root = export_tests(args.source, layout, ref, scratch)
    without = run_suite(python, tests_root, layout.tests, False, scratch)
    with_ = run_suite(python, tests_root, layout.tests, True, scratch)
    patched = json.loads((scratch / f"patched-{tests_root.name}.json").read_text())
    return {
        "layout": name,
        "stable_worldmodel": installed,
        "patched_by_accelerate": patched,
        "tests": list(layout.tests),
        "without_accelerate": counts(without),
        "with_accelerate": counts(with_),
        "regressions": changed(without, with_),
        "passing_only_with_accelerate": changed(with_, without),
        "not_passing_either_way": sorted(t for t, o in without.items() if o != "passed" and with_.get(t) != "passed"),
    }


def judge_ran(payload: dict) -> bool:
    """The tests ran as a judge: some pass without lewm_fast and none errors (a collection error, e.g. a
    module the venv lacks, would hide every test of its file from the comparison)."""
    without = payload["without_accelerate"]
    return without["passed"] > 0 and without["error"] == 0


def main(argv=None) -> int:
    args = parse_args(argv)
    regressions, incomplete = 0, []
    with tempfile.TemporaryDirectory(prefix="peer-suite-") as tmp:
        scratch = args.scratch or Path(tmp)
        for name in args.layouts:
            payload = run_layout(args, name, scratch)
            path = write_result("peer_suite", payload, torch.device("cpu"), args.out)
            path = path.rename(path.with_name(f"{path.stem}-{name}.json"))  # peer_suite-<date>-<cpu>-<layout>
            regressions += len(payload["regressions"])
            print(f"{name} ({payload['stable_worldmodel']}):\n  without: {payload['without_accelerate']}\n"
                  f"  with:    {payload['with_accelerate']}\n  regressions: {len(payload['regressions'])} "
                  f"{payload['regressions']}\n  wrote {path}")  # fmt: skip
            if not judge_ran(payload):
                incomplete.append(name)
    if incomplete:
        print(f"peer_suite: {', '.join(incomplete)}: errors without lewm_fast (see the junit XML under --scratch); "
              f"the venv lacks what the tests import (docs/interop.md lists it)", file=sys.stderr)  # fmt: skip
    return 1 if regressions or incomplete else 0


if __name__ == "__main__":
    raise SystemExit(main())
