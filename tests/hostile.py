"""What the hostile tests share: the command line run as a user runs it (a fresh process, so a crash at exit
or a traceback shows), a byte-exact snapshot of files, and growing the real small disk of the `small_disk`
fixture (tests/conftest.py)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env: dict | None = None, timeout: float = 300, code: str | None = None) -> subprocess.CompletedProcess:
    """`lewm-fast ARGS` in a new process (or `python -c CODE ARGS`: CODE may change the library first and then
    call lewm_fast.cli.main). The checkout under test comes first on the path."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", **(env or {})}
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "lewm_fast.cli"]
    return subprocess.run([*argv, *map(str, args)], capture_output=True, text=True, env=environ, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The refusal of a finished CLI process: exit status 2, one line on stderr, no traceback, no crash."""
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lewm-fast: error: "), proc.stderr[-2000:]
    return proc.stderr[len("lewm-fast: error: ") :].strip()


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself), by relative name."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p.relative_to(path)) if p != path else p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def grow(disk: Path, size: str) -> None:
    """Make room on the small disk (remount the tmpfs larger)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True, capture_output=True)
