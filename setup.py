"""Build hook: the package and the optional C++
extension `lewm_fast._C` from `csrc/` (pybind11 + OpenMP, no torch headers, so it builds in seconds
and without torch in the build environment).

The extension is optional: if it cannot be compiled (no compiler), installation goes on and
lewm_fast builds it on first use with ninja, or warns once and uses the reference paths.
Set LEWM_FAST_NO_EXT=1 to skip it at install.
"""

import glob
import os

from setuptools import find_packages, setup

ext_modules = []
sources = sorted(glob.glob("csrc/*.cpp"))
if sources and os.environ.get("LEWM_FAST_NO_EXT") != "1":
    from pybind11.setup_helpers import Pybind11Extension

    ext_modules.append(
        Pybind11Extension(
            "lewm_fast._C",
            sources,
            # As lewm_fast/_ext.py (the build on first use). No -ffast-math: csrc/sigreg_cpu.cpp's range
            # reduction must not be reassociated.
            extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"],
            extra_link_args=["-fopenmp"],
            cxx_std=17,
            optional=True,
        )
    )

setup(
    packages=find_packages(include=["lewm_fast", "lewm_fast.*"]),
    ext_modules=ext_modules,
)
