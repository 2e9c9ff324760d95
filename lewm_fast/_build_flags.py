"""The C++ extension's compiler flags, written once: setup.py (the build at install) reads this file by its
path (without importing lewm_fast), and lewm_fast/_ext.py (the build on first use) imports it. Standard
library only.

No -ffast-math: csrc/sigreg_cpu.cpp's range reduction must not be reassociated. OpenMP is added by each
build (setup.py: -fopenmp; _ext.py: whatever flag the compiler takes, or none).
"""

CXX_STD = 17
# Optimisation and floating-point flags, the same for both builds.
OPT_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"]
