"""Test setup: Triton kernels run under the interpreter when there is no CUDA device; GPU tests are
skipped without one; the public-code fixture is found beside the checkout when it exists."""

import fnmatch
import importlib.util
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURE_CANDIDATES = [
    Path(os.environ.get("LEWM_FIXTURES", "/nonexistent")) / "public_lewm_small.pt",
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "public_lewm_small.pt",
    Path(__file__).resolve().parents[1] / "shared" / "fixtures" / "public_lewm_small.pt",
]


# Test files -> the optional packages they need. Where one is missing (e.g. a GPU machine's stock Python
# without gymnasium) the file is not collected and the session header says so.
NEEDS = {
    "test_envs.py": ("gymnasium",),
    "test_data*.py": ("gymnasium", "h5py"),
    "test_train*.py": ("gymnasium", "h5py"),
    "test_eval*.py": ("gymnasium", "h5py"),
    "test_surprise*.py": ("gymnasium", "h5py", "scipy"),
    "test_demo*.py": ("gymnasium", "h5py"),
    "test_interop_solver*.py": ("gymnasium",),
    "test_sigreg_fused_random.py": ("hypothesis",),
}
_not_collected: dict[str, str] = {}  # file name -> why (pytest may ask about a file more than once)


def _missing(name: str) -> list[str]:
    needs = {pkg for pattern, pkgs in NEEDS.items() if fnmatch.fnmatch(name, pattern) for pkg in pkgs}
    return sorted(pkg for pkg in needs if importlib.util.find_spec(pkg) is None)


def pytest_ignore_collect(collection_path, config):
    missing = _missing(collection_path.name)
    if missing:
        _not_collected[collection_path.name] = f"{collection_path.name} (needs {', '.join(missing)})"
        return True
    return None


def pytest_report_header(config):
    return ["lewm_fast: optional packages are checked per test file (tests/conftest.py NEEDS)"]


def pytest_terminal_summary(terminalreporter):
    if _not_collected:
        terminalreporter.write_line("not collected, missing packages: " + "; ".join(_not_collected.values()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def public_fixture():
    """The recorded outputs of the public LeWM code (../shared/fixtures), or skip."""
    for path in FIXTURE_CANDIDATES:
        if path.exists():
            return torch.load(path, weights_only=False)
    pytest.skip("public fixture not found (../shared/fixtures/public_lewm_small.pt)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
