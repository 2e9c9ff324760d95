"""Triton kernels of lewm_fast, one op per file; installed as `lewm_fast.kernels`.

Every kernel has a plain PyTorch reference in `lewm_fast/` and tests against it (on the CPU under
TRITON_INTERPRET=1). Importing this package never requires Triton: `HAS_TRITON` says whether it is there.
"""

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - machines without Triton use the other backends
    HAS_TRITON = False
