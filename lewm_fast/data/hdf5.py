"""The stable-worldmodel HDF5 layout: one `.h5` file, one dataset per column, plus `ep_len`/`ep_offset`.

    pixels     uint8   (N, H, W, C)   one row per environment step
    action     float32 (N, A)         the action taken at that step (NaN on an episode's last row)
    state, proprio, ...               any other per-step column
    ep_len     int32   (E,)           episode lengths
    ep_offset  int64   (E,)           first row of each episode

The episode index is the file's record of what is complete: readers use the rows it names and ignore
any past them (an episode cut short). Writing is in lewm_fast/data/writer.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import h5py

INDEX = ("ep_len", "ep_offset")
MIN_FRAME = 8  # the smallest frame side accepted (a 1x1 frame carries nothing to learn or plan from)


def _h5py():
    """h5py, imported on first use: the model, planner and benchmarks work on a Python without it
    (a GPU machine's stock environment); only episode files need it."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError("lewm_fast's episode files (.h5) need h5py: pip install h5py") from e
    return h5py


class DataFormatError(ValueError):
    """A file that does not follow the layout (missing or malformed column), named in the message."""


# ---- reading --------------------------------------------------------------------------------------


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an episode file read-only (SWMR read as a fallback, for files a live writer holds)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data: no HDF5 file at {path}")
    try:
        return _h5py().File(path, "r")
    except OSError as first:
        try:
            return _h5py().File(path, "r", swmr=True)
        except OSError:
            raise DataFormatError(f"data: {path} is not a readable HDF5 file ({first})") from first


def read_index(f: h5py.File, columns: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Validated (ep_len int64 (E,), ep_offset int64 (E,)) of an open file; checks that every column
    in `columns` exists and has a row for every indexed step."""
    name = Path(f.filename).name
    for key in INDEX:
        if key not in f:
            raise DataFormatError(f"data: {name} has no '{key}' dataset (the stable-worldmodel layout needs "
                                  f"'ep_len' and 'ep_offset'); columns found: {sorted(f.keys())}")  # fmt: skip
        if f[key].ndim != 1 or f[key].dtype.kind not in "iu":
            raise DataFormatError(f"data: {name}: '{key}' must be a 1-D integer array, got shape "
                                  f"{f[key].shape} dtype {f[key].dtype}")  # fmt: skip
    lengths, offsets = (read_rows(f, key).astype(np.int64) for key in INDEX)
    if lengths.shape != offsets.shape:
        raise DataFormatError(f"data: {name}: 'ep_len' has {lengths.size} entries but 'ep_offset' has {offsets.size}")
    if (lengths < 0).any() or (offsets < 0).any():
        raise DataFormatError(f"data: {name}: 'ep_len'/'ep_offset' must be non-negative")
    _check_disjoint(name, lengths, offsets)
    end = int((offsets + lengths).max()) if lengths.size else 0
    for col in columns:
        if col not in f:
            found = sorted(k for k in f.keys() if k not in INDEX)
            raise DataFormatError(f"data: {name} has no '{col}' column; columns found: {found}")
        if not isinstance(f[col], _h5py().Dataset) or f[col].ndim < 1:
            raise DataFormatError(f"data: {name}: column '{col}' must be a dataset with one row per step")
        if f[col].shape[0] < end:
            raise DataFormatError(f"data: {name}: column '{col}' has {f[col].shape[0]} rows but the episode "
                                  f"index needs {end}")  # fmt: skip
    return lengths, offsets


def _check_disjoint(name: str, lengths: np.ndarray, offsets: np.ndarray) -> None:
    """Episodes must not share rows (e.g. every ep_offset 0 would train on one episode's rows many times)."""
    used = np.flatnonzero(lengths > 0)
    order = used[np.argsort(offsets[used], kind="stable")]
    ends = offsets[order] + lengths[order]
    clash = np.flatnonzero(ends[:-1] > offsets[order[1:]])
    if clash.size:
        a, b = int(order[clash[0]]), int(order[clash[0] + 1])
        raise DataFormatError(f"data: {name}: episodes {a} and {b} overlap (rows {offsets[a]}..{ends[clash[0]] - 1} "
                              f"and {offsets[b]}..{offsets[b] + lengths[b] - 1}); 'ep_offset' must give each "
                              "episode its own rows")  # fmt: skip


def read_rows(f: h5py.File, column: str, rows=slice(None)) -> np.ndarray:
    """f[column][rows], with an HDF5 read error (a damaged file) named with the file and the column."""
    try:
        return f[column][rows]
    except OSError as e:
        raise DataFormatError(f"data: {Path(f.filename).name}: cannot read column '{column}' (the file is "
                              f"damaged: {str(e).strip() or type(e).__name__})") from e  # fmt: skip


def check_pixels(f: h5py.File, column: str = "pixels") -> tuple[int, int, int]:
    """(H, W, C) of a uint8 (N, H, W, C) pixel column of square frames of at least MIN_FRAME pixels, or a
    DataFormatError naming what is wrong (the model takes square images: non-square frames would train,
    then be refused by planning)."""
    ds = f[column]
    name = Path(f.filename).name
    if ds.ndim != 4 or ds.shape[-1] not in (1, 3) or ds.dtype != np.uint8:
        raise DataFormatError(f"data: {name}: column '{column}' must be uint8 (N, H, W, C) with C in (1, 3), "
                              f"got shape {ds.shape} dtype {ds.dtype}")  # fmt: skip
    h, w, c = (int(s) for s in ds.shape[1:])
    if h != w or h < MIN_FRAME:
        raise DataFormatError(f"data: {name}: column '{column}' must hold square frames of at least "
                              f"{MIN_FRAME}x{MIN_FRAME} pixels, got {h}x{w}")  # fmt: skip
    return h, w, c


def check_actions(name: str, actions: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> None:
    """Actions (N, A) are finite except on an episode's first or last row (NaN there marks "no action": our
    writer puts it on the last row, the public one on the first). NaN or Inf elsewhere is damage."""
    bad = ~np.isfinite(actions).all(axis=1)
    for e in np.flatnonzero(lengths > 2):
        lo, hi = int(offsets[e]), int(offsets[e] + lengths[e])
        inner = np.flatnonzero(bad[lo + 1 : hi - 1])
        if inner.size:
            row = lo + 1 + int(inner[0])
            raise DataFormatError(f"data: {name}: column 'action' has NaN/Inf at row {row} (episode {e}, "
                                  f"step {row - lo} of {hi - lo}); only an episode's first or last row may be "
                                  "NaN")  # fmt: skip


def fingerprint(path: str | os.PathLike, samples: int = 64) -> str:
    """A content fingerprint of an episode file, cheap at any size: sha256 over the episode index, each
    column's name, shape and dtype, and `samples` rows spread evenly over each column. A resumed run
    compares it to the one its checkpoint recorded (the same data under another path passes, a changed
    file does not)."""
    h = hashlib.sha256()
    with open_h5(path) as f:
        for col in sorted(f.keys()):
            ds = f[col]
            if not isinstance(ds, _h5py().Dataset):
                continue
            h.update(f"{col}{ds.shape}{ds.dtype}".encode())
            n = ds.shape[0] if ds.ndim else 0
            rows = np.arange(n) if col in INDEX else np.unique(np.linspace(0, n - 1, min(n, samples)).astype(np.int64))
            if rows.size:
                h.update(np.ascontiguousarray(read_rows(f, col, rows)).tobytes())
    return h.hexdigest()


def read_episode(path: str | os.PathLike, episode: int, columns: tuple[str, ...] = ("pixels", "action", "state")):
    """One whole episode as {column: array (L, ...)}."""
    with open_h5(path) as f:
        lengths, offsets = read_index(f, columns)
        if not 0 <= episode < lengths.size:
            raise IndexError(f"episode: expected 0 <= episode < {lengths.size}, got {episode}")
        lo, hi = int(offsets[episode]), int(offsets[episode] + lengths[episode])
        return {c: read_rows(f, c, slice(lo, hi)) for c in columns}


def check_readable(f: h5py.File, end: int, on_rows=None, block_bytes: int = 64 << 20) -> None:
    """Read rows [0, end) of every column once (in blocks of ~`block_bytes`): a file whose writer was cut
    off mid-flush (a full disk, a kill) can hold an index that reads while its rows do not. A damaged
    block raises DataFormatError naming the file and the column. on_rows(n): progress, n rows read."""
    for col in sorted(k for k in f.keys() if k not in INDEX):
        ds = f[col]
        step = max(1, block_bytes // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        for lo in range(0, end, step):
            read_rows(f, col, slice(lo, min(end, lo + step)))
            if on_rows is not None:
                on_rows(min(end, lo + step) - lo)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the whole file's bytes: any changed byte changes it (a copy under another path does not)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()
