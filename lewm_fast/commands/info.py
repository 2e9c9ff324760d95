"""`lewm-fast info`: what this machine offers lewm_fast (versions, devices, backends) and what lewm_fast
chooses on its CPU (lewm_fast.capability: dtype "auto", matmul path, kernel clone, threads, chunks)."""

from __future__ import annotations

import argparse
import importlib
import json
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of lines")


def collect() -> dict:
    import torch

    import lewm_fast
    from lewm_fast import planning
    from lewm_fast.capability import cpu_choices
    from lewm_fast.kernels import HAS_TRITON

    sigreg_module = importlib.import_module("lewm_fast.sigreg")  # `lewm_fast.sigreg` is also the function
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    return {
        "lewm_fast": lewm_fast.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "triton": HAS_TRITON,
        "cpp_extension": importlib.import_module("lewm_fast._ext").load() is not None,
        **{f"sigreg_backends_{d}": sigreg_module.available_backends(d) for d in devices},
        **{f"planner_backends_{d}": planning.available_backends(d) for d in devices},
        "planner_solvers": planning.available_optimizers(),
        **{f"cpu_{k}" if not k.startswith("cpu") else k: v for k, v in cpu_choices().items()},
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>22}: {value}")
    return 0
