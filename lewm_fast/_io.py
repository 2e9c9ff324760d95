"""Files we read and write, handled so that nothing is lost and nothing a user gives us runs code.

- `load_tensors`: `torch.load` with `weights_only=True` only: a checkpoint someone shares may hold a
  pickle payload, and the weights-only unpickler refuses every Python object that is not a tensor or a
  plain container (dict, list, tuple, str, number). Corrupt or truncated files and refused payloads
  raise `FileFormatError` / `UnsafeFileError` naming the file.
- `read_json`: a JSON object, or an error naming the file.
- `atomic_write`: through a temporary file in the same folder, then renamed: a crash leaves the old
  file or the new one, never a torn one.
- `check_output_dir` / `check_output_file`: an output path is not the wrong kind of thing and can be
  written, checked before the long work that will write it starts (nothing is created).
- `move_aside`: a folder in the way is renamed to NAME.old-N, never deleted.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch


class FileFormatError(ValueError):
    """A file that cannot be read as what it should be; the message names it."""


class UnsafeFileError(FileFormatError):
    """A `.pt` file holding pickled Python objects beyond tensors and plain containers (refused)."""


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(e).__name__}: {line[:limit]}" if line else type(e).__name__


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers, nothing that runs code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise FileFormatError(f"{path}: the file is empty (expected a PyTorch file written by torch.save)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # the weights-only unpickler met a Python object it will not build
            found = re.search(r"GLOBAL (\S+)", str(e))
            raise UnsafeFileError(
                f"{path}: refused: it holds a pickled Python object ({found[1] if found else '?'}), not only tensors "
                "and plain containers; loading it could run code, so it is not loaded"
            ) from e
        raise FileFormatError(f"{path}: not a readable PyTorch file (corrupt or not written by torch.save)") from e
    except Exception as e:  # noqa: BLE001 - garbage bytes raise anything (KeyError, RuntimeError, EOFError...)
        raise FileFormatError(f"{path}: not a readable PyTorch file, corrupt or truncated ({_first_line(e)})") from e


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from `path`; FileFormatError naming the file for anything else."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path}: cannot be read ({_first_line(e)})") from e
    return parse_json_object(text, str(path), FileFormatError)


def parse_json_object(text: str, where: str, error: type[ValueError] = ValueError) -> dict:
    """A JSON object ({...}) from `text`; `error` naming `where` (a file, a flag) for anything else."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where}: not valid JSON ({e}): {text[:60]!r}") from e
    if not isinstance(value, dict):
        raise error(f"{where}: expected a JSON object ({{...}}), got {type(value).__name__}: {text[:60]!r}")
    return value


def _default_mode() -> int:
    """The permissions a plain open() would give a new file (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Write `path` through a temporary file in the same folder and rename it into place, so a crash
    leaves the old file or the new one, never a torn one. `write(f)` gets a binary file object."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600 files; checkpoints are shared like any other
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_writable_parent(name: str, path: Path) -> None:
    """The nearest existing ancestor of `path` is a folder we can create files in (probed, not guessed:
    os.access is wrong for root and for read-only mounts)."""
    parent = path.parent if path.parent != path else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: cannot create {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".lewm-fast-write-check.")
    except OSError as e:
        raise ValueError(f"{name}: cannot write to {parent} ({e.strerror or _first_line(e)})") from e
    os.close(fd)
    os.unlink(probe)


def check_output_dir(name: str, path: str | os.PathLike) -> Path:
    """An output folder: not an existing file, and writable (or creatable). Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} is a file, expected a folder (it would be written into)")
    _check_writable_parent(name, path / "x" if path.is_dir() else path)
    return path


def check_output_file(name: str, path: str | os.PathLike) -> Path:
    """An output file: not an existing folder, and its folder writable (or creatable). Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder, expected a file path (for example {path / 'data.h5'})")
    _check_writable_parent(name, path)
    return path


def folder_contents(path: Path, shown: int = 4) -> str:
    """'a, b, c, d and 3 more': what a folder holds, for a message."""
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def move_aside(path: Path) -> Path:
    """Rename `path` to the first free PATH.old-N and return that name (nothing is deleted)."""
    n = 1
    while path.with_name(f"{path.name}.old-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.old-{n}")
    os.replace(path, target)
    return target
