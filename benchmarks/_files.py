"""Results files of the benchmarks: their names and atomic writes. No torch here: the GPU report's own
process imports this and runs everything that needs torch in child processes."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

OUT_HELP = "results folder (default: a scratch folder, printed; --out benchmarks/results to record a run)"


def scratch_results() -> Path:
    """Where a benchmark writes unless told (`--out`): $XDG_CACHE_HOME/lewm_fast/results (~/.cache/...). Not
    the repository: the README's tables are rendered from benchmarks/results/, and a trial run must not
    change them (or the test that checks them)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lewm_fast" / "results"


def result_path(name: str, env: dict, out_dir: Path | None = None, prefix: bool = True) -> Path:
    """<out_dir>/<name>-<date>-<device>.json (<date>-<device>.json with prefix=False); makes out_dir
    (default: `scratch_results()`)."""
    out_dir = Path(out_dir or scratch_results())
    out_dir.mkdir(parents=True, exist_ok=True)
    device_label = re.sub(r"\s*\(\d+ threads\)$", "", env["device"]).replace("(R)", "").replace("(TM)", "")
    tag = re.sub(r"[^A-Za-z0-9]+", "-", device_label).strip("-").lower()[:40].strip("-")
    return out_dir / ((f"{name}-" if prefix else "") + f"{env['date'][:10]}-{tag}.json")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a process killed mid-write) sees the old file or the new
    one, never half of one: a temporary file in the same folder, fsync, then an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
