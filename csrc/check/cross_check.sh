#!/usr/bin/env bash
# The CPU kernels beyond this machine's build (CI, seconds): csrc/check/kernels_check.cpp against its
# double-precision references
#   1. natively, as the extension builds them (-fopenmp): every matmul kernel this CPU runs; then with the
#      kernel choice forced down (LEWM_CPU_KERNEL=avx2, portable), as on a CPU without AVX-512 or AVX2;
#   2. natively without an OpenMP runtime (-fopenmp-simd: how Apple's clang builds them);
#   3. the same x86-64 build on emulated CPUs under qemu-user: an AVX2-only one (Haswell) and one without AVX
#      (Nehalem), so that the run-time dispatch is shown to pick what the CPU has (no SIGILL from the AVX-512
#      code in the binary). qemu's emulator has no AVX-512, so the AVX-512 kernels run only on a CPU with it;
#   4. for aarch64 with a cross compiler (g++-aarch64-linux-gnu), and the pybind11 binding layer compiled
#      for aarch64 too; run under qemu-user where it is installed.
# Installs the cross compiler and qemu-user with apt-get when they are missing and it can (root).
set -euo pipefail
cd "$(dirname "$0")/../.."

cross=${AARCH64_CXX:-aarch64-linux-gnu-g++}
if ! command -v "$cross" >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "cross_check: installing g++-aarch64-linux-gnu qemu-user"
    (apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null; }) ||
      echo "cross_check: apt-get could not install them"
  fi
fi
command -v "$cross" >/dev/null || { echo "cross_check: $cross not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }

# The extension's own flags (lewm_fast/_ext.py, read without importing the package), warnings as errors.
flags=$(python3 -c "import importlib.util as u; s = u.spec_from_file_location('e', 'lewm_fast/_ext.py'); \
m = u.module_from_spec(s); s.loader.exec_module(m); print(' '.join(f for f in m.CXXFLAGS if f != '-fPIC'))")
flags="$flags -Wall -Werror -Icsrc"
kernels="csrc/check/kernels_check.cpp $(ls csrc/*.cpp | grep -v module.cpp | tr '\n' ' ')"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# shellcheck disable=SC2086  # word splitting of the flag and file lists is meant
{
  ${CXX:-c++} $flags -fopenmp $kernels -o "$out/native" && "$out/native"
  for level in avx2 portable; do
    echo "cross_check: LEWM_CPU_KERNEL=$level"
    LEWM_CPU_KERNEL=$level "$out/native"
  done
  ${CXX:-c++} $flags -fopenmp-simd $kernels -o "$out/native-simd" && "$out/native-simd"
  "$cross" $flags -fopenmp $kernels -o "$out/aarch64"
  pyinc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  pbinc=$(python3 -c "import pybind11; print(pybind11.get_include())" 2>/dev/null || true)
  if [ -n "$pbinc" ]; then
    # Python's and pybind11's headers are the same on aarch64 for a compile check (LP64 both).
    "$cross" $flags -fopenmp -fsyntax-only -I"$pyinc" -I"$pbinc" csrc/module.cpp
    echo "cross_check: csrc/module.cpp compiles for aarch64"
  else
    echo "cross_check: pybind11 not installed: csrc/module.cpp not compiled for aarch64"
  fi
}
if command -v qemu-x86_64 >/dev/null && [ "$(uname -m)" = x86_64 ]; then
  for cpu in Haswell Nehalem; do
    echo "cross_check: the native build on an emulated $cpu CPU"
    qemu-x86_64 -cpu "$cpu" "$out/native" 2> >(grep -v "TCG doesn't support" >&2)
  done
else
  echo "cross_check: qemu-x86_64 not found: the dispatch was not run on an emulated AVX2-only CPU"
fi
if command -v qemu-aarch64 >/dev/null; then
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/aarch64"
else
  echo "cross_check: qemu-aarch64 not found: the aarch64 build was compiled, not run"
fi
