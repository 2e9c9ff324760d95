"""The stable-worldmodel HDF5 layout: one `.h5` file, one dataset per column, plus `ep_len`/`ep_offset`.

    pixels     uint8   (N, H, W, C)   one row per environment step
    action     float32 (N, A)         the action taken at that step (NaN on an episode's last row)
    state, proprio, ...               any other per-step column
    ep_len     int32   (E,)           episode lengths
    ep_offset  int64   (E,)           first row of each episode

Crash safety (an interrupted writer leaves a valid file of whole episodes):
- the file is created complete (schema, empty datasets) under a temporary name, then renamed;
- an episode's rows are written and flushed *before* `ep_len`/`ep_offset` are extended and flushed, so
  the episode index only ever names rows that are on disk; rows past the index (an episode cut short)
  are ignored by every reader and trimmed by `EpisodeWriter(resume=True)`;
- SIGINT/SIGTERM during an episode's write are held until the episode is committed;
- the file uses HDF5's default (earliest) format: its superblock has no "open for writing" flag, so a
  killed writer does not lock readers out (libver='latest' files need `h5clear` after a crash).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
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


# ---- writing --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM until the block ends (only in the main thread), then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in caught:
            signal.raise_signal(s)


class EpisodeWriter:
    """Append whole episodes to an HDF5 file in the stable-worldmodel layout (see the module docstring).

    Args:
        path: the `.h5` file.
        resume: open an existing file and append (trimming rows of an episode cut short); otherwise the
            file must not exist unless `overwrite`.
        attrs: file attributes (env, image size, seed, ...); on resume they must match the file's.
        chunk_rows: rows per chunk for non-image columns (images are chunked one frame per chunk, as the
            public writer does, so that random windows read only what they need).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                 attrs: dict | None = None, chunk_rows: int = 256):  # fmt: skip
        self.path = Path(path)
        self.attrs = dict(attrs or {})
        self.chunk_rows = chunk_rows
        self.f: h5py.File | None = None
        if self.path.exists() and resume:
            self._open_existing()
        elif self.path.exists() and not overwrite:
            raise FileExistsError(f"out: {self.path} exists; pass --resume to continue it or --overwrite to replace it")
        elif self.path.exists():
            self.path.unlink()

    # ---- state ----

    @property
    def num_episodes(self) -> int:
        return 0 if self.f is None else int(self.f["ep_len"].shape[0])

    @property
    def num_rows(self) -> int:
        return 0 if self.f is None else int(self.f["ep_len"][:].sum())

    def _open_existing(self) -> None:
        try:
            f = _h5py().File(self.path, "a")
        except OSError as e:
            raise DataFormatError(f"out: cannot reopen {self.path} to resume ({e})") from e
        self.f = f
        read_index(f)
        for key, value in self.attrs.items():
            old = f.attrs.get(key)
            if old is not None and _plain(old) != _plain(value):
                f.close()
                self.f = None
                raise ValueError(f"resume: {self.path} was written with {key}={_plain(old)!r}, not {value!r}")
        rows = self.num_rows
        for col in f:
            if col not in INDEX and f[col].shape[0] != rows:  # rows of an episode cut short
                f[col].resize(rows, axis=0)
        f.flush()

    def _create(self, episode: dict[str, np.ndarray]) -> None:
        """Create the file with the episode's schema under a temporary name, then rename it in place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with _h5py().File(tmp, "w") as f:
            for col, values in episode.items():
                row = values.shape[1:]
                chunk = (1, *row) if values.ndim == 4 else (self.chunk_rows, *row)
                f.create_dataset(col, shape=(0, *row), maxshape=(None, *row), dtype=values.dtype, chunks=chunk)
            f.create_dataset("ep_len", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            f.create_dataset("ep_offset", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
            for key, value in self.attrs.items():
                f.attrs[key] = value
        os.replace(tmp, self.path)
        self.f = _h5py().File(self.path, "a")

    # ---- appending ----

    def write_episode(self, episode: dict[str, np.ndarray]) -> None:
        """Append one episode: {column: array (L, ...)} with the same L for every column."""
        episode = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: v.shape[0] for k, v in episode.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"episode: every column must have the same number of rows, got {lengths}")
        n = next(iter(lengths.values()))
        with _signals_held():
            if self.f is None:
                self._create(episode)
            f = self.f
            cols = set(f.keys()) - set(INDEX)
            if cols != set(episode):
                raise ValueError(f"episode: columns {sorted(episode)} do not match the file's {sorted(cols)}")
            start = self.num_rows
            for col, values in episode.items():
                if values.shape[1:] != f[col].shape[1:]:
                    raise ValueError(f"episode: column '{col}' rows have shape {values.shape[1:]}, "
                                     f"the file's have {f[col].shape[1:]}")  # fmt: skip
                f[col].resize(start + n, axis=0)
                f[col][start:] = values
            f.flush()  # the rows reach the file before the index names them
            e = f["ep_len"].shape[0]
            f["ep_len"].resize(e + 1, axis=0)
            f["ep_offset"].resize(e + 1, axis=0)
            f["ep_len"][e] = n
            f["ep_offset"][e] = start
            f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(v):
    """HDF5 attributes come back as numpy scalars/bytes: compare them as plain Python values."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
