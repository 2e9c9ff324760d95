"""Build hook: the package and the optional C++
extension `lewm_fast._C` from `csrc/` (pybind11 + OpenMP, no torch headers, so it builds in seconds
and without torch in the build environment).

The extension is optional: if it cannot be compiled (no compiler), installation goes on and
lewm_fast builds it on first use with ninja, or warns once and uses the reference paths.
Set LEWM_FAST_NO_EXT=1 to skip it at install.
"""

import glob
import importlib.util
import os

from setuptools import find_packages, setup


def _build_flags():
    """lewm_fast/_build_flags.py, read by its path: importing lewm_fast would import torch."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lewm_fast", "_build_flags.py")
    spec = importlib.util.spec_from_file_location("lewm_fast_build_flags", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ext_modules = []
sources = sorted(glob.glob("csrc/*.cpp"))
if sources and os.environ.get("LEWM_FAST_NO_EXT") != "1":
    from pybind11.setup_helpers import Pybind11Extension

    flags = _build_flags()  # the flags lewm_fast/_ext.py's build on first use takes too
    ext_modules.append(
        Pybind11Extension(
            "lewm_fast._C",
            sources,
            extra_compile_args=[*flags.OPT_FLAGS, "-fopenmp"],
            extra_link_args=["-fopenmp"],
            cxx_std=flags.CXX_STD,
            optional=True,
        )
    )

setup(
    packages=find_packages(include=["lewm_fast", "lewm_fast.*"]),
    ext_modules=ext_modules,
)
