"""`lewm-fast info`: what this machine offers lewm_fast (versions, devices, backends)."""

from __future__ import annotations

import argparse
import json
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of lines")


def collect() -> dict:
    import torch

    import lewm_fast
    from lewm_fast.kernels import HAS_TRITON
    from lewm_fast.planning import planner
    from lewm_fast.sigreg import _BACKENDS as SIGREG_BACKENDS

    return {
        "lewm_fast": lewm_fast.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "triton": HAS_TRITON,
        "sigreg_backends": sorted(SIGREG_BACKENDS),
        "planner_backends": sorted(planner._ENGINES),
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>18}: {value}")
    return 0
