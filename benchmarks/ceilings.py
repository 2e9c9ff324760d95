"""A device's ceilings: copy bandwidth and dense matmul rate, the yardsticks for every achieved rate.

    python benchmarks/ceilings.py [--device cuda] [--quick] [--out DIR]

- copy: `dst.copy_(src)` of a large fp32 buffer; bytes read + written per second.
- matmul: (n, n) @ (n, n) in bf16 and in fp32 (TF32 as torch is set, recorded: off by default), 2 n^3 FLOP.
Median of timed calls after warm-up (synchronised on CUDA). gpu_report.py divides each benchmark row's
TFLOP/s or GB/s by these.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_call, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

SIZES = {  # (device type, quick) -> (copy bytes, bf16 matmul n, fp32 matmul n)
    ("cuda", False): (1 << 30, 8192, 8192),
    ("cuda", True): (1 << 28, 4096, 4096),
    ("cpu", False): (256 << 20, 1024, 1024),
    ("cpu", True): (32 << 20, 256, 512),  # bf16 without native support is ~100x slower than fp32 on a CPU
}


def _copy(n_bytes: int, device: torch.device):
    """dst.copy_(src) of two n_bytes fp32 buffers (freed with the returned closure)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def measure(device: torch.device, quick: bool) -> dict:
    """Copy GB/s (read + written) and bf16 / fp32 matmul TFLOP/s on `device`."""
    n_bytes, n_bf16, n_fp32 = SIZES[(device.type, quick)]
    repeats = 20 if device.type == "cuda" else 5
    copy_s = time_call(_copy(n_bytes, device), device, repeats=repeats, warmup=2)["median_s"]
    out = {"copy_bytes": 2 * n_bytes, "copy_GBps": 2 * n_bytes / copy_s / 1e9}
    for name, dtype, n in (("bf16", torch.bfloat16, n_bf16), ("fp32", torch.float32, n_fp32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        s = time_call(lambda a=a, b=b: a @ b, device, repeats=repeats, warmup=2)["median_s"]
        out[f"matmul_{name}_n"] = n
        out[f"matmul_{name}_TFLOPs"] = 2 * n**3 / s / 1e12
    out["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smaller buffers and matrices")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    ceilings = measure(device, args.quick)
    print(f"copy {ceilings['copy_GBps']:.1f} GB/s, bf16 matmul {ceilings['matmul_bf16_TFLOPs']:.3g} TFLOP/s, "
          f"fp32 matmul {ceilings['matmul_fp32_TFLOPs']:.3g} TFLOP/s")  # fmt: skip
    path = write_result("ceilings", {"ceilings": ceilings, "quick": args.quick}, device, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
