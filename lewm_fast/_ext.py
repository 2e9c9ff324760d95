"""The optional C++ extension `lewm_fast._C` (csrc/): the installed build, or one built on first use.

`load()` returns the module or None, once per process:
1. `lewm_fast._C` as installed by `pip install -e .` (setup.py builds it in place), unless csrc/ is newer
   than it (an edited checkout) or its API_VERSION is not the one this Python code expects;
2. otherwise a build of csrc/*.cpp with ninja into a cache folder keyed by the hash of the sources, the
   flags and the Python ABI ($LEWM_FAST_CACHE or ~/.cache/lewm_fast/ext-<hash>/), imported from there;
3. otherwise (no compiler, no ninja, no sources, LEWM_FAST_NO_EXT=1) ONE warning and None: callers use
   the reference paths. Importing lewm_fast never builds or fails because of this module.

Only the standard library is imported at module level (the flags come from _build_flags.py, which setup.py reads
by its path).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType

from lewm_fast._build_flags import CXX_STD, OPT_FLAGS

API_VERSION = 7  # must equal kApiVersion in csrc/module.cpp
CSRC = Path(__file__).resolve().parents[1] / "csrc"
# The flags setup.py uses too (_build_flags.py). OpenMP comes from `openmp_flags()` (a compiler without it, like
# Apple's clang, still builds the kernels).
CXXFLAGS = [OPT_FLAGS[0], f"-std=c++{CXX_STD}", "-fPIC", *OPT_FLAGS[1:]]
# macOS: a Python extension leaves the interpreter's symbols to be resolved when it is loaded.
LDFLAGS = ["-shared", *(["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else [])]

_UNSET = object()
_loaded: object = _UNSET  # the module, or None after a failure


def load() -> ModuleType | None:
    """The extension module, or None (after one warning) when it is neither installed nor buildable."""
    global _loaded
    if _loaded is _UNSET:
        _loaded = _load()
    return _loaded  # type: ignore[return-value]


def _load() -> ModuleType | None:
    module, why = _installed()
    if module is not None:
        return module
    if os.environ.get("LEWM_FAST_NO_EXT") == "1":
        reason = "LEWM_FAST_NO_EXT=1 is set"
    else:
        try:
            return build()
        except Exception as exc:  # no compiler, no ninja, a compile error: all mean "use the reference"
            reason = f"building it failed: {_first_line(exc)}"
    warnings.warn(
        f"lewm_fast: the C++ extension lewm_fast._C is unavailable ({why}; {reason}); the 'cpp' backends are "
        "off and the reference paths are used. Install a C++ compiler with OpenMP (g++) and ninja to enable it.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _installed() -> tuple[ModuleType | None, str]:
    """The installed `lewm_fast._C` if it is present, current and importable; else (None, why not)."""
    if os.environ.get("LEWM_FAST_FORCE_JIT") == "1":
        return None, "LEWM_FAST_FORCE_JIT=1 is set"
    spec = importlib.util.find_spec("lewm_fast._C")
    if spec is None or spec.origin is None:
        return None, "it is not installed"
    built = Path(spec.origin).stat().st_mtime
    if _sources() and max(p.stat().st_mtime for p in _sources()) > built:
        return None, "the installed build is older than csrc/"
    try:
        module = importlib.import_module("lewm_fast._C")
    except ImportError as exc:
        return None, f"the installed build does not import ({_first_line(exc)})"
    if getattr(module, "API_VERSION", None) != API_VERSION:
        return None, f"the installed build has API_VERSION {getattr(module, 'API_VERSION', None)}, not {API_VERSION}"
    return module, ""


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.cpp")) + sorted(CSRC.glob("*.h")) if CSRC.is_dir() else []


def source_hash() -> str:
    """16 hex digits over the sources, the flags, the compiler, pybind11 and the Python ABI."""
    h = hashlib.sha256()
    for part in [*CXXFLAGS, *LDFLAGS, _compiler(), sysconfig.get_config_var("EXT_SUFFIX") or "", _pybind11_version()]:
        h.update(part.encode() + b"\0")
    for path in _sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    root = os.environ.get("LEWM_FAST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(root) / "lewm_fast" / f"ext-{source_hash()}"


def build(directory: str | os.PathLike | None = None, verbose: bool = False) -> ModuleType:
    """Build csrc/*.cpp with ninja into `directory` (default `cache_dir()`) unless already built; import it.

    Raises on any failure (missing sources, compiler or ninja; a compile error). Safe to call from several
    processes at once: the build holds a file lock and the library appears by an atomic rename.
    """
    sources = [p for p in _sources() if p.suffix == ".cpp"]
    if not sources:
        raise FileNotFoundError(f"no C++ sources in {CSRC}")
    out = Path(directory) if directory is not None else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    library = out / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    import fcntl  # POSIX only, like the build itself

    with open(out / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not library.exists():
            (out / "build.ninja").write_text(_ninja_file(sources, library.name))
            done = subprocess.run([_ninja(), "-C", str(out)], capture_output=True, text=True)
            if verbose or done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
            if done.returncode != 0:
                raise RuntimeError(f"ninja failed in {out}: {_first_error(done.stdout + done.stderr)}")
    return _import_from(library)


def _import_from(library: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("lewm_fast._C", library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if getattr(module, "API_VERSION", None) != API_VERSION:
        raise ImportError(f"{library} has API_VERSION {getattr(module, 'API_VERSION', None)}, not {API_VERSION}")
    return module


@functools.cache
def openmp_flags(compiler: str) -> list[str]:
    """-fopenmp where `compiler` builds and links an OpenMP program (kernels then split their loops over
    threads); otherwise -fopenmp-simd (Apple's clang has no OpenMP runtime): the vectorised loops stay and
    each kernel runs on its calling thread, which is how the planner's chunk workers call them anyway.
    A pure function of the compiler, so not part of the cache key."""
    for flag in ("-fopenmp", "-fopenmp-simd"):
        try:
            done = subprocess.run([compiler, flag, "-x", "c++", "-", "-o", os.devnull], input="int main() {}",
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return []
        if done.returncode == 0:
            return [flag]
    return []


def _ninja_file(sources: list[Path], library: str) -> str:
    import pybind11  # a build dependency of lewm_fast; imported only when building

    includes = [pybind11.get_include(), sysconfig.get_paths()["include"], str(CSRC)]
    omp = openmp_flags(_compiler())
    cflags = " ".join(CXXFLAGS + omp + [f"-I{_quote(i)}" for i in includes])
    lines = [
        f"cxx = {_compiler()}",
        f"cflags = {cflags}",
        f"ldflags = {' '.join(LDFLAGS + omp)}",
        "rule compile",
        "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "rule link",  # link to a temporary name, then rename: a half-written library is never imported
        "  command = $cxx $in $ldflags -o $out.tmp && mv -f $out.tmp $out",
    ]
    objects = []
    for src in sources:
        obj = f"{src.stem}.o"
        objects.append(obj)
        lines.append(f"build {obj}: compile {_ninja_path(src)}")
    lines.append(f"build {library}: link {' '.join(objects)}")
    return "\n".join(lines) + "\n"


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def _ninja() -> str:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # the PyPI wheel ships the binary

        return str(Path(ninja.BIN_DIR) / "ninja")
    except ImportError as exc:
        raise FileNotFoundError("ninja not found (pip install ninja)") from exc


def _pybind11_version() -> str:
    spec = importlib.util.find_spec("pybind11")
    if spec is None:
        return "none"
    import pybind11

    return pybind11.__version__


def _quote(path: str) -> str:
    return path if " " not in path else f'"{path}"'


def _ninja_path(path: Path) -> str:
    return str(path).replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error" in line.lower() or "not found" in line.lower():
            return line.strip()
    return log.strip().splitlines()[-1] if log.strip() else "no output"
