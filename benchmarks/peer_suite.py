"""stable-worldmodel's own tests as the judge of `lf.interop.accelerate()`.

Exports the public source's tests at a release tag (0.1.1) into a scratch folder (never into this
repository), runs `tests/solver`, `tests/wm` and `tests/test_policy.py` against the INSTALLED
stable-worldmodel of that release twice, without and with `tests/peer/accelerate_plugin.py` (which
calls `accelerate()` before the tests import stable_worldmodel), and compares the outcomes test by
test: a test that passes without lewm_fast and fails with it is a regression (exit status 1).

    /path/to/peer-venv/bin/python benchmarks/peer_suite.py [--source MIRROR_OR_CLONE] [--tag 0.1.1]

Run it with the Python of an environment where stable-worldmodel is installed (build one with
make-peer-venv: torch, stable-worldmodel, transformers; `tests/wm/test_utils.py` also needs
omegaconf and hydra-core). The counts go to <--out>/peer_suite-<date>-<cpu>.json
(`--out benchmarks/results` to record them).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

DEFAULT_SOURCE = "/work/.mirror/galilai-group+stable-worldmodel/repo"
SUITE = ("tests/solver", "tests/wm", "tests/test_policy.py")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=os.environ.get("SWM_SOURCE", DEFAULT_SOURCE),
                   help="a git clone or mirror of github.com/galilai-group/stable-worldmodel")  # fmt: skip
    p.add_argument("--tag", default="0.1.1", help="the release whose tests to run (must be the installed one)")
    p.add_argument("--scratch", type=Path, default=None, help="where to export the tests (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return p.parse_args(argv)


def export_tests(source: str, tag: str, scratch: Path) -> Path:
    """`git archive <tag> tests` of the public source into scratch/<tag>/ (only the tests: the installed
    package, not a source tree beside them, must be what they import)."""
    dest = scratch / tag
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", source, "archive", tag, "tests"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"peer_suite: --source {source}: git archive {tag} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_suite(tests_root: Path, with_plugin: bool, scratch: Path) -> dict[str, str]:
    """{test id: passed | failed | error | skipped} of one pytest run (read from its JUnit XML)."""
    xml = scratch / f"junit-{'with' if with_plugin else 'without'}.xml"
    env = dict(os.environ)
    if with_plugin:
        paths = [str(ROOT), str(ROOT / "tests" / "peer"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["LEWM_PEER_REPORT"] = str(scratch / "patched.json")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *SUITE]
    if with_plugin:
        cmd[4:4] = ["-p", "accelerate_plugin"]
    print("peer_suite:", "with" if with_plugin else "without", "accelerate():", " ".join(cmd[3:]), flush=True)
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


def main(argv=None) -> int:
    args = parse_args(argv)
    installed = importlib.metadata.version("stable-worldmodel")
    if installed != args.tag:
        raise SystemExit(f"peer_suite: --tag {args.tag}: the installed stable-worldmodel is {installed}")
    with tempfile.TemporaryDirectory(prefix="peer-suite-") as tmp:
        scratch = args.scratch or Path(tmp)
        tests_root = export_tests(args.source, args.tag, scratch)
        without = run_suite(tests_root, False, scratch)
        with_ = run_suite(tests_root, True, scratch)
        patched = json.loads((scratch / "patched.json").read_text())
    regressions = sorted(t for t, o in without.items() if o == "passed" and with_.get(t) != "passed")
    fixed = sorted(t for t, o in with_.items() if o == "passed" and without.get(t) != "passed")
    payload = {
        "stable_worldmodel": installed,
        "patched_by_accelerate": patched,
        "tests": list(SUITE),
        "without_accelerate": counts(without),
        "with_accelerate": counts(with_),
        "regressions": regressions,
        "passing_only_with_accelerate": fixed,
        "not_passing_either_way": sorted(t for t, o in without.items() if o != "passed" and with_.get(t) != "passed"),
    }
    path = write_result("peer_suite", payload, torch.device("cpu"), args.out)
    print(f"without: {payload['without_accelerate']}\nwith:    {payload['with_accelerate']}")
    print(f"regressions: {len(regressions)} {regressions}\nwrote {path}")
    return 1 if regressions else 0


if __name__ == "__main__":
    raise SystemExit(main())
