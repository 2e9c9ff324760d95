"""Test setup: Triton kernels run under the interpreter when there is no CUDA device; GPU tests are
skipped without one; the recorded outputs of the public code (tests/fixtures/)."""

import fnmatch
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Tests of the benchmark scripts import them (and benchmarks/flops.py) by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _fix_interpreter_scalar_index() -> str | None:
    """Triton's interpreter up to 3.6 holds a scalar as a (1,) numpy array and calls int() on it (e.g. for
    `range(0, C, BLOCK)` with a runtime C), which numpy >= 2.4 refuses ("only 0-dimensional arrays can be
    converted to Python scalars", triton-lang/triton#9171). Where a probe kernel shows exactly that, give
    the interpreter's tensors the `__index__` later Triton releases have. Returns what was done, or None."""
    if os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None:
        return None
    import triton
    import triton.language as tl
    from triton.runtime import interpreter

    @triton.jit
    def _probe(X, N):
        for i in range(0, N, 1):
            tl.store(X + i, 1.0)

    def runs() -> bool:
        try:
            _probe[(1,)](torch.zeros(2), 2)
            return True
        except Exception as exc:  # noqa: BLE001 - triton.runtime.errors.InterpreterError wraps the TypeError
            if "0-dimensional" not in str(exc):
                raise
            return False

    if runs() or not hasattr(interpreter, "_patch_lang_tensor"):
        return None
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched
    if not runs():
        interpreter._patch_lang_tensor = original
        return None
    return f"triton {triton.__version__}: interpreter scalars made indexable under numpy (triton-lang/triton#9171)"


_TRITON_FIX = _fix_interpreter_scalar_index()

PUBLIC_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "public_lewm_small.pt"


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
    lines = ["lewm_fast: optional packages are checked per test file (tests/conftest.py NEEDS)"]
    return lines + ([f"lewm_fast: {_TRITON_FIX}"] if _TRITON_FIX else [])


def pytest_terminal_summary(terminalreporter):
    if _not_collected:
        terminalreporter.write_line("not collected, missing packages: " + "; ".join(_not_collected.values()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # the marker, not `"gpu" in item.keywords`: keywords hold every parent's name, so a checkout in a
        # folder named gpu would skip everything
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def public_fixture():
    """The recorded outputs of the public LeWM code (tests/fixtures/record_public.py made them)."""
    return torch.load(PUBLIC_FIXTURE, weights_only=True)  # tensors and plain containers: nothing runs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a disk that really fills up. Skipped, with the reason, where this process cannot mount
    one (not root, no CAP_SYS_ADMIN in a container, not Linux)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
