"""Training throughput: steps/s and images/s of one full training step (forward, backward, AdamW).

Cases: the `paper` preset (224 px, ~18M parameters, batch 128; on GPU when present, a smaller batch on
CPU) and the `small` preset (64 px, batch 64) on CPU; each with SIGReg backend "reference" vs "auto"
(the fused one where built), eager vs torch.compile. Synthetic inputs (the data path is not timed);
`small`: fp32 and bf16 autocast on CPU; `paper`: dtype "auto", bf16 autocast where the device runs bf16
natively (GPU, AMX), fp32 elsewhere (lewm_fast.capability). An image is one frame: a window of 4 frames
counts 4.

    python benchmarks/train_speed.py [--quick] [--no-compile] [--paper-batch N] [--small-batch N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.capability import resolve_dtype  # noqa: E402
from lewm_fast.training.presets import get_preset  # noqa: E402
from lewm_fast.training.trainer import LossModule  # noqa: E402


def measure(preset: str, device: torch.device, batch: int, backend: str, compiled: bool, bf16: bool,
            steps: int, warmup: int) -> dict:  # fmt: skip
    torch.manual_seed(0)
    cfg = get_preset(preset).model
    model = lf.LeWM(cfg).to(device).train()
    objective = LossModule(model, lf.SIGReg(backend=backend), 0.09).to(device)
    fwd = torch.compile(objective) if compiled else objective
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    t = cfg.num_frames + 1
    pixels = torch.randn(batch, t, 3, cfg.image_size, cfg.image_size, device=device)
    actions = torch.randn(batch, t, cfg.action_block_dim, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(pixels, actions)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _common.synchronize(device)
    warm_s = time.perf_counter() - t0
    timing = _common.time_call(step, device, repeats=steps, warmup=0)
    s = timing["median_s"]
    return {"preset": preset, "device": device.type, "batch": batch, "sigreg": backend,
            "sigreg_resolved": _resolved(backend, device), "compile": compiled,
            "dtype": "bf16" if bf16 else "fp32", "step_ms": s * 1e3, "min_step_ms": timing["min_s"] * 1e3,
            "steps_per_s": 1 / s, "images_per_s": batch * t / s, "warmup_s": warm_s}  # fmt: skip


def _resolved(backend: str, device: torch.device) -> str:
    import importlib

    try:
        return importlib.import_module("lewm_fast.sigreg").resolve_backend(backend, device)
    except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
        return f"error: {e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    ap.add_argument("--paper-batch", type=int, default=None, help="paper-preset batch (128 on GPU, 8 on CPU)")
    ap.add_argument("--small-batch", type=int, default=64, help="small-preset batch")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--only", choices=("small", "paper"), default=None, help="one preset only")
    ap.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="auto: small on the CPU, paper on the GPU when there is one; cpu/cuda: every case there",
    )  # fmt: skip
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    steps, warmup = (3, 2) if args.quick else (10, 3)
    cpu = torch.device("cuda" if args.device == "cuda" else "cpu")
    gpu = torch.device("cuda") if torch.cuda.is_available() and args.device != "cpu" else None
    compiles = (False,) if args.no_compile else (False, True)
    cases = []
    for backend in ("reference", "auto"):
        for compiled in compiles:
            for bf16 in (False, True):
                if args.only in (None, "small"):
                    cases.append(("small", cpu, args.small_batch, backend, compiled, bf16))
            if not args.skip_paper and args.only in (None, "paper"):  # bf16 where native (dtype "auto")
                dev = gpu if gpu is not None else cpu
                bf16 = resolve_dtype("auto", dev) == torch.bfloat16
                cases.append(
                    ("paper", dev, args.paper_batch or (128 if gpu is not None else 8), backend, compiled, bf16)
                )
    rows = []
    if cases:  # one untimed run first: the process's first steps pay one-time initialisation (oneDNN, AMX)
        measure(*cases[0], steps=1, warmup=2)
    for case in cases:
        try:
            rows.append(measure(*case, steps=steps, warmup=warmup + (2 if case[4] else 0)))
        except Exception as e:  # noqa: BLE001 - one failing case (e.g. compile) must not hide the others
            rows.append({"preset": case[0], "device": case[1].type, "batch": case[2], "sigreg": case[3],
                         "compile": case[4], "dtype": "bf16" if case[5] else "fp32",
                         "error": repr(e)[:200]})  # fmt: skip
        print(rows[-1], flush=True)
    print()
    columns = [("preset", "preset"), ("device", "device"), ("batch", "batch"), ("sigreg", "sigreg"),
               ("sigreg_resolved", "resolved"), ("compile", "compile"), ("dtype", "dtype"), ("step_ms", "ms/step"),
               ("steps_per_s", "steps/s"), ("images_per_s", "images/s")]  # fmt: skip
    _common.print_table(rows, columns)
    name = "train_speed" + (f"-{args.only}" if args.only else "")
    path = _common.write_result(name, {"rows": rows, "threads": torch.get_num_threads()}, gpu or cpu, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
