"""Rounding fp32 to the output dtype inside the planner's kernels, identically on a GPU and under the
interpreter.

On a GPU `x.to(tl.bfloat16)` rounds to nearest even. The interpreter (TRITON_INTERPRET=1) truncates
instead, and its "rtne" mode is not quite round-to-nearest-even either, so CPU tests of bf16 kernels
would see a bias that the GPU does not have. `round_to` therefore rounds by integer arithmetic when
EMULATE is set (the interpreter); on the GPU it is the native conversion.
"""

import os

import triton
import triton.language as tl

EMULATE = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def round_to(x, DTYPE: tl.constexpr, EMULATE: tl.constexpr):
    """x fp32 -> DTYPE (fp32: unchanged; bf16: round to nearest even; finite inputs)."""
    if DTYPE == tl.bfloat16 and EMULATE:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)
