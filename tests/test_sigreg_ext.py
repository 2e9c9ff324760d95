"""The C++ extension lewm_fast._C: the installed build, the build on first use (ninja, into a cache
folder), and the fallback when it cannot be built (one warning, the reference path, never a crash)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import lewm_fast as lf
from lewm_fast import _ext

SIGREG = sys.modules["lewm_fast.sigreg"]  # the module: `lewm_fast.sigreg` as an attribute is the function


def check_kernels(module) -> None:
    """The module's kernels agree with plain torch on a small input."""
    z = torch.randn(2, 7, 19)
    t = torch.linspace(0, 3, 5, dtype=torch.float64)
    cos_sum = torch.empty(2, 5, 19, dtype=torch.float64)
    sin_sum = torch.empty_like(cos_sum)
    module.charfn_sums(z.numpy(), 5, 0.75, cos_sum.numpy(), sin_sum.numpy(), 2)
    arg = z.double().unsqueeze(-1) * t
    torch.testing.assert_close(cos_sum, arg.cos().sum(1).transpose(1, 2), rtol=0, atol=1e-9)
    torch.testing.assert_close(sin_sum, arg.sin().sum(1).transpose(1, 2), rtol=0, atol=1e-9)
    p, q = torch.randn(2, 5, 19, dtype=torch.float64), torch.randn(2, 5, 19, dtype=torch.float64)
    dz = torch.empty_like(z)
    module.charfn_grad(z.numpy(), p.numpy(), q.numpy(), 0.75, dz.numpy(), 1)
    pt, qt = p.transpose(1, 2).unsqueeze(1), q.transpose(1, 2).unsqueeze(1)
    expected = (pt * arg.cos() + qt * arg.sin())[..., 1:].sum(-1)
    torch.testing.assert_close(dz.double(), expected, rtol=1e-6, atol=1e-6)


def test_installed_build():
    spec = importlib.util.find_spec("lewm_fast._C")
    if spec is None:
        pytest.skip("lewm_fast._C is not installed (pip install -e . builds it)")
    module, why = _ext._installed()
    if module is None:
        pytest.skip(f"the installed build is not used: {why}")
    assert module.API_VERSION == _ext.API_VERSION
    check_kernels(module)


FIRST_USE = """
import torch, lewm_fast as lf
from lewm_fast import _ext
module = _ext.load()
x, a = torch.randn(2, 9, 5, requires_grad=True), lf.draw_directions(5, 30)
lf.sigreg(x, a, backend="cpp").backward()
g = x.grad.clone()
x.grad = None
lf.sigreg(x, a, backend="reference").backward()
assert torch.allclose(g, x.grad, rtol=1e-5, atol=1e-7)
print(module.__file__)
"""


def test_build_on_first_use_into_a_folder(tmp_path):
    """A fresh process that may not use an installed build builds csrc/ with ninja into the cache folder."""
    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        pytest.skip("ninja unavailable")
    if importlib.util.find_spec("pybind11") is None:
        pytest.skip("pybind11 (a build dependency) unavailable")
    env = {**os.environ, "LEWM_FAST_FORCE_JIT": "1", "LEWM_FAST_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", FIRST_USE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    library = Path(done.stdout.strip().splitlines()[-1])
    assert library.parent.parent == tmp_path / "lewm_fast" and library.parent.name.startswith("ext-")
    assert (library.parent / "build.ninja").exists() and library.exists()
    assert "warn" not in done.stderr.lower()


def test_cache_key_follows_the_sources_and_flags(monkeypatch):
    key = _ext.source_hash()
    assert key == _ext.source_hash() and len(key) == 16
    monkeypatch.setattr(_ext, "CXXFLAGS", [*_ext.CXXFLAGS, "-DLEWM_TEST"])
    assert _ext.source_hash() != key


def test_both_builds_take_the_flags_written_once():
    """setup.py (the build at install) and _ext.py (the build on first use) read one definition of the
    compiler flags, lewm_fast/_build_flags.py; setup.py reads it by its path, without importing lewm_fast."""
    import ast

    from lewm_fast import _build_flags

    root = Path(__file__).resolve().parents[1]
    setup_source = (root / "setup.py").read_text()
    literals = {n.value for n in ast.walk(ast.parse(setup_source)) if isinstance(n, ast.Constant)}
    assert not literals & set(_build_flags.OPT_FLAGS), "setup.py writes a flag of _build_flags.py again"
    assert "_build_flags.py" in setup_source and "import lewm_fast" not in setup_source
    assert _ext.CXXFLAGS == ["-O3", f"-std=c++{_build_flags.CXX_STD}", "-fPIC", *_build_flags.OPT_FLAGS[1:]]
    assert _build_flags.OPT_FLAGS[0] == "-O3" and "-ffast-math" not in _build_flags.OPT_FLAGS


def test_no_compiler_warns_once_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("LEWM_FAST_FORCE_JIT", "1")  # ignore an installed build
    monkeypatch.setenv("LEWM_FAST_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(_ext, "_loaded", _ext._UNSET)
    monkeypatch.setattr(SIGREG, "_warned_fallback", set())
    with pytest.warns(RuntimeWarning, match="lewm_fast._C is unavailable") as record:
        assert _ext.load() is None
    assert len([w for w in record if "lewm_fast._C" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ext.load() is None  # settled: no second warning, no second build
    with pytest.warns(UserWarning, match="wanted 'cpp' on cpu, which is unavailable"):
        assert SIGREG.resolve_backend("auto", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="backend: 'cpp' is unavailable"):
        SIGREG.resolve_backend("cpp", torch.device("cpu"))
    x = torch.randn(2, 8, 4)
    a = lf.draw_directions(4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lf.sigreg(x, a).item() == lf.sigreg(x, a, backend="reference").item()


def test_no_ext_switch(monkeypatch):
    monkeypatch.setenv("LEWM_FAST_FORCE_JIT", "1")
    monkeypatch.setenv("LEWM_FAST_NO_EXT", "1")
    monkeypatch.setattr(_ext, "_loaded", _ext._UNSET)
    with pytest.warns(RuntimeWarning, match="LEWM_FAST_NO_EXT=1"):
        assert _ext.load() is None
