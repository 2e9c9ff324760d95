"""Appending whole episodes to an episode file (the layout of lewm_fast/data/hdf5.py) so that no failure
loses an episode or fakes one.

Whatever stops a writer (a full disk, a kill, an exception, Ctrl-C), the file at `path` holds complete
episodes only, and its episode index says which:
- room first: before an episode is written, the bytes it can add are reserved on the disk (fallocate past
  the end of the file where the filesystem has it, else compared with the free space) and checked
  against the process's file-size limit. Without room the writer stops before writing (`DiskFullError`,
  naming the file and how many complete episodes it holds). HDF5 must never meet a full disk: h5py drops
  write errors raised while it closes objects, and a bookkeeping write cut short can leave every episode
  unreadable;
- rows, then index: an episode's rows are written and flushed before `ep_len`/`ep_offset` name them. Rows
  past the index (an episode cut short) are ignored by every reader and trimmed before the next episode
  is appended. The file is synced to the disk every SYNC_SECONDS and when it is closed;
- a new file, or one replacing an old file (overwrite=True), is written under a temporary name and renamed
  into place once its first episode is complete: a failure before that leaves the old file, or none;
- resuming checks before it changes a byte: the index (episodes one after another from row 0), the
  attributes that make episode i a function of (seed, i), that every column has a row for every indexed
  step and reads back, and, when the first new episode comes, that its columns are the file's;
- SIGINT/SIGTERM during an episode are held until it is committed;
- the file uses HDF5's default (earliest) format: its superblock has no "open for writing" flag, so a
  killed writer does not lock readers out (libver='latest' files need `h5clear` after a crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lewm_fast.data.hdf5 import INDEX, DataFormatError, _h5py, check_readable, open_h5, read_index

try:
    import resource
except ImportError:  # pragma: no cover - not a POSIX system: no file-size limit to respect
    resource = None

# Attributes that describe the writer, not the episodes: a resumed file may have been written by another
# version.
INFO_ATTRS = ("writer",)
# What HDF5's bookkeeping can add per chunk (a chunk-index entry, node splits) and per episode (object
# headers, a grown index): bounds that tests/test_hostile_collect.py checks against real files.
CHUNK_OVERHEAD_BYTES = 128
EPISODE_OVERHEAD_BYTES = 256 << 10
_FALLOC_FL_KEEP_SIZE = 1  # reserve blocks past the end of a file without changing its size
# How often the file is synced to the disk: a sync per episode would cost about as much as rolling out a small
# episode; a kill needs none (the operating system keeps what was written), a
# power cut loses at most what was written since.
SYNC_SECONDS = 1.0


class DiskFullError(OSError):
    """No room for the next episode (disk space or the file-size limit); nothing of it was written."""


class EpisodeWriteError(OSError):
    """Writing an episode failed (an I/O error); the episode is not in the index."""


def episode_bytes(episode: dict[str, np.ndarray], chunk_rows: int) -> int:
    """An upper bound of what appending `episode` ({column: (L, ...)}) adds to a file: its rows, a
    partly filled chunk per chunked column, and HDF5's bookkeeping."""
    raw = sum(int(v.nbytes) for v in episode.values())
    length = len(next(iter(episode.values())))
    chunks = sum(length if v.ndim == 4 else length // chunk_rows + 2 for v in episode.values())
    partial = sum(chunk_rows * int(v[:1].nbytes) for v in episode.values() if v.ndim != 4)
    return raw + partial + chunks * CHUNK_OVERHEAD_BYTES + EPISODE_OVERHEAD_BYTES


def _libc_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _libc_fallocate()


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def file_size_limit() -> int | None:
    """The process's file-size limit in bytes (`ulimit -f`), or None when there is none."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def reserve(fd: int, folder: Path, nbytes: int) -> str | None:
    """Make room for `nbytes` more at the end of the open file `fd` (in `folder`): None when there is,
    else why not (for an error message). Where fallocate works the room is held for this file alone."""
    size = os.fstat(fd).st_size
    limit = file_size_limit()
    if limit is not None and size + nbytes > limit:
        return f"the process's file-size limit (ulimit -f) is {_mib(limit)} and the file is {_mib(size)}"
    if _FALLOCATE is not None:
        if _FALLOCATE(fd, _FALLOC_FL_KEEP_SIZE, size, nbytes) == 0:
            return None
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # else: no fallocate here, look
            return f"{os.strerror(err)}; {_mib(shutil.disk_usage(folder).free)} free"
    free = shutil.disk_usage(folder).free
    return None if free >= nbytes else f"{_mib(free)} free"


def release(fd: int) -> None:
    """Give back what a reservation held past the end of the file (truncating to its own size)."""
    os.ftruncate(fd, os.fstat(fd).st_size)


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


def _plain(v):
    """HDF5 attributes come back as numpy scalars/bytes: compare them as plain Python values."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


class EpisodeWriter:
    """Append whole episodes to an HDF5 episode file (see the module docstring).

    Args:
        path: the `.h5` file.
        resume: continue an existing file; otherwise it must not exist unless `overwrite` (it is replaced
            when the new file's first episode is complete).
        attrs: file attributes (env, image size, seed, ...); on resume the file must carry the same.
        chunk_rows: rows per chunk for non-image columns (images are chunked one frame per chunk, as the
            public writer does, so that random windows read only what they need).
        on_rows: progress of resume's check, called with the number of rows read.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                 attrs: dict | None = None, chunk_rows: int = 256, on_rows=None):  # fmt: skip
        self.path = Path(path)
        self.attrs = dict(attrs or {})
        self.chunk_rows = chunk_rows
        self.f: h5py.File | None = None  # noqa: F821 - h5py is imported on first use
        self._datasets: dict = {}  # held open: h5py reports write errors of objects it closes only on stderr
        self._fd: int | None = None  # for reserving room
        self._tmp: Path | None = None  # a new file's temporary name until its first episode is complete
        self._schema: dict[str, tuple] | None = None  # an existing file's columns: (row shape, dtype)
        self._synced = time.monotonic()
        self.lengths: list[int] = []
        if self.path.exists() and resume:
            self._check_resumable(on_rows)
        elif self.path.exists() and not overwrite:
            raise FileExistsError(f"out: {self.path} exists; pass --resume to continue it or --overwrite to replace it")

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    @property
    def num_rows(self) -> int:
        return int(sum(self.lengths))

    # ---- resume: every check before any change ----

    def _check_resumable(self, on_rows) -> None:
        try:
            with open_h5(self.path) as f:
                self._check_file(f, on_rows)
        except DataFormatError as e:
            detail = str(e).removeprefix(f"data: {self.path.name}: ").removeprefix("data: ").removeprefix("resume: ")
            raise DataFormatError(f"resume: {self.path} cannot be continued: {detail}") from e

    def _check_file(self, f, on_rows) -> None:
        """Index, layout, attributes and every row of an open existing file (module docstring)."""
        columns = tuple(sorted(k for k in f.keys() if k not in INDEX))
        lengths, offsets = read_index(f, columns)
        if not np.array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)[:-1]])[: offsets.size]):
            raise DataFormatError("its episodes are not stored one after another from row 0 (ep_offset); only a "
                                  "file written that way can be continued")  # fmt: skip
        for key, value in self.attrs.items():
            if key in INFO_ATTRS:
                continue
            if key not in f.attrs:
                raise DataFormatError(f"it has no '{key}' attribute: it was not written by lewm-fast collect, so it "
                                      "cannot be continued episode for episode")  # fmt: skip
            if _plain(f.attrs[key]) != _plain(value):
                raise ValueError(f"resume: {self.path} was written with {key}={_plain(f.attrs[key])!r}, not {value!r}")
        check_readable(f, int(lengths.sum()), on_rows)
        self._schema = {c: (tuple(f[c].shape[1:]), f[c].dtype) for c in columns}
        self.lengths = [int(n) for n in lengths]

    def _check_schema(self, episode: dict[str, np.ndarray]) -> None:
        have = {c: (tuple(v.shape[1:]), v.dtype) for c, v in episode.items()}
        if set(have) != set(self._schema):
            raise ValueError(f"episode: columns {sorted(have)} do not match the file's {sorted(self._schema)}; "
                             f"{self.path} is unchanged")  # fmt: skip
        for col, (shape, dtype) in have.items():
            if (shape, dtype) != self._schema[col]:
                file_shape, file_dtype = self._schema[col]
                raise ValueError(f"episode: column '{col}' rows are {shape} {dtype}, the file's {file_shape} "
                                 f"{file_dtype}; {self.path} is unchanged")  # fmt: skip

    # ---- opening for writing ----

    def _open(self, episode: dict[str, np.ndarray]) -> None:
        """The existing file (rows past its index trimmed), or a new one under a temporary name."""
        h5py = _h5py()
        if self._schema is not None:
            self._check_schema(episode)
            self.f = h5py.File(self.path, "a")
            self._fd = os.open(self.path, os.O_RDWR)
            rows = self.num_rows
            for col in self._schema:
                if self.f[col].shape[0] != rows:  # rows of an episode cut short
                    self.f[col].resize(rows, axis=0)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self.f = h5py.File(self._tmp, "w")
            self._fd = os.open(self._tmp, os.O_RDWR)
            for col, values in episode.items():
                row = values.shape[1:]
                chunk = (1, *row) if values.ndim == 4 else (self.chunk_rows, *row)
                self.f.create_dataset(col, shape=(0, *row), maxshape=(None, *row), dtype=values.dtype, chunks=chunk)
            self.f.create_dataset("ep_len", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            self.f.create_dataset("ep_offset", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
            for key, value in self.attrs.items():
                self.f.attrs[key] = value
        self._datasets = {k: self.f[k] for k in self.f.keys()}
        self.f.flush()

    # ---- appending ----

    def write_episode(self, episode: dict[str, np.ndarray]) -> None:
        """Append one episode: {column: array (L, ...)} with the same L for every column. Raises
        DiskFullError (nothing written) or EpisodeWriteError; either way the file holds whole episodes."""
        episode = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: v.shape[0] for k, v in episode.items()}
        if not episode or len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
            raise ValueError(f"episode: expected columns with the same number (>= 1) of rows, got {lengths}")
        with _signals_held():
            try:
                if self.f is None:
                    self._open(episode)
                self._append(episode)
            except OSError as e:
                self._abandon()
                if isinstance(e, DiskFullError):
                    raise
                why = os.strerror(e.errno) if e.errno else str(e).strip().splitlines()[0]
                raise EpisodeWriteError(f"out: writing episode {self.num_episodes} to {self.path} failed ({why}); "
                                        f"{self._check_after_failure()}") from e  # fmt: skip
            if self._tmp is not None:  # the new file's first episode is complete: it takes the name
                os.replace(self._tmp, self.path)
                self._tmp = None

    def _append(self, episode: dict[str, np.ndarray]) -> None:
        need = episode_bytes(episode, self.chunk_rows)
        why = reserve(self._fd, self.path.parent, need)
        if why is not None:
            raise DiskFullError(f"out: no room for episode {self.num_episodes} in {self.path} (up to {_mib(need)} "
                                f"needed; {why}); {self._holds()}")  # fmt: skip
        start, n, e = self.num_rows, len(next(iter(episode.values()))), self.num_episodes
        for col, values in episode.items():
            self._datasets[col].resize(start + n, axis=0)
            self._datasets[col][start:] = values
        self.f.flush()  # the rows reach the file before the index names them
        for key, value in (("ep_len", n), ("ep_offset", start)):
            self._datasets[key].resize(e + 1, axis=0)
            self._datasets[key][e] = value
        self.f.flush()
        self.lengths.append(n)
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        """Onto the disk, not only into the operating system's memory (which a kill does not lose)."""
        if hasattr(os, "fdatasync"):
            os.fdatasync(self._fd)
        else:  # pragma: no cover - macOS
            os.fsync(self._fd)
        self._synced = time.monotonic()

    def _holds(self) -> str:
        if self._tmp is not None:
            return f"{self.path} is unchanged" if self.path.exists() else "nothing was written"
        return (f"{self.path} holds {self.num_episodes} complete episode(s): make room and continue it with "
                "--resume")  # fmt: skip

    def _check_after_failure(self) -> str:
        """What the file holds after a failed write (read back once: a failure in HDF5's bookkeeping can
        damage rows the index already named)."""
        if self._tmp is not None:
            return self._holds()
        try:
            with open_h5(self.path) as f:
                lengths, _ = read_index(f)
                check_readable(f, int(lengths.sum()))
        except (OSError, ValueError) as e:
            return (f"{self.path} is damaged and cannot be continued ({str(e).strip().splitlines()[0]}); "
                    "collect again with --overwrite")  # fmt: skip
        self.lengths = [int(n) for n in lengths]
        return self._holds()

    def _abandon(self) -> None:
        """Close after a failed write without meeting the failure again. HDF5 still holds what it could not
        write and retries at close and at exit (where it can crash the interpreter): its file descriptor is
        pointed at /dev/null first, so those retries go nowhere and the file keeps what reached it. A new
        file's temporary is removed."""
        if self.f is not None:
            with contextlib.suppress(Exception):
                sink = os.open(os.devnull, os.O_RDWR)
                os.dup2(sink, self.f.id.get_vfd_handle())
                os.close(sink)
        f, self.f, self._datasets = self.f, None, {}
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        del f
        gc.collect()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                release(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def close(self) -> None:
        if self.f is not None:
            self._datasets = {}
            self.f.close()
            self.f = None
        if self._fd is not None:
            self._sync()
            release(self._fd)  # the reservation left past the last episode (the next one reuses it until then)
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:  # created, but no episode completed: nothing to keep
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
