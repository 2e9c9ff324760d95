"""Training throughput: steps/s and images/s of one full training step (forward, backward, AdamW).

Cases: the `paper` preset (224 px, ~18M parameters, batch 128; on GPU when present, a smaller batch on
CPU) and the `small` preset (64 px, batch 64) on CPU; each with SIGReg backend "reference" vs "auto"
(the fused one where built), eager vs torch.compile. Synthetic inputs (the data path is not timed);
`small`: fp32 and bf16 autocast on CPU; `paper`: dtype "auto", bf16 autocast where the device runs bf16
natively (GPU, AMX), fp32 elsewhere (lewm_fast.capability). An image is one frame: a window of 4 frames
counts 4.

Beside them, where stable-worldmodel is importable, the public code's training step on the same weights
and inputs: the public LeWM modules and the public SIGReg joined by the same objective (its training script
is not packaged), as shipped (fp32, eager) and in its best configurations (benchmarks/public_variants.py:
bf16 autocast where bf16 is native, torch.compile of the whole objective). `x public` / `x best public`:
the shipped / fastest public step time over the row's, same preset and device.

    python benchmarks/train_speed.py [--quick] [--no-compile] [--paper-batch N] [--small-batch N]
    PYTHONPATH=$PWD /path/to/peer-venv/bin/python benchmarks/train_speed.py --out benchmarks/results
                                                  # the recorded figures, with the public rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import public_variants as pv  # noqa: E402
from _files import OUT_HELP  # noqa: E402

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
    return {"preset": preset, "device": device.type, "batch": batch, "impl": "lewm_fast", "sigreg": backend,
            "sigreg_resolved": _resolved(backend, device), "compile": compiled,
            "dtype": "bf16" if bf16 else "fp32", "step_ms": s * 1e3, "min_step_ms": timing["min_s"] * 1e3,
            "steps_per_s": 1 / s, "images_per_s": batch * t / s, "warmup_s": warm_s}  # fmt: skip


class PublicObjective(torch.nn.Module):
    """The LeWM objective on the public modules: the public LeWM's encode and predict and the public SIGReg
    (stable-worldmodel), joined as lewm_fast.lewm_loss joins its own (pred MSE + lambd * SIGReg)."""

    def __init__(self, public, lambd: float):
        from stable_worldmodel.wm.loss import SIGReg

        super().__init__()
        self.public, self.sigreg, self.lambd = public, SIGReg(), lambd

    def forward(self, pixels: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        info = self.public.encode({"pixels": pixels, "action": actions})
        emb, act_emb = info["emb"], info["act_emb"]
        pred = self.public.predict(emb[:, :-1], act_emb[:, :-1])
        pred_loss = torch.nn.functional.mse_loss(pred, emb[:, 1:])
        return pred_loss + self.lambd * self.sigreg(emb.transpose(0, 1))


def measure_public(preset: str, device: torch.device, batch: int, variant: str, steps: int, warmup: int,
                   compile_limit: float) -> dict:  # fmt: skip
    """The public training step in one public configuration, on the weights and inputs `measure` uses."""
    torch.manual_seed(0)
    cfg = get_preset(preset).model
    public = _common.public_lewm(lf.LeWM(cfg), device).train()
    objective = PublicObjective(public, 0.09).to(device)
    fwd = torch.compile(objective, mode=pv.compile_mode(device)) if "compile" in variant else objective
    opt = torch.optim.AdamW(public.parameters(), lr=1e-4, weight_decay=1e-3)
    t = cfg.num_frames + 1
    pixels = torch.randn(batch, t, 3, cfg.image_size, cfg.image_size, device=device)
    actions = torch.randn(batch, t, cfg.action_block_dim, device=device)

    def step():
        with pv.autocast(variant, device):
            loss = fwd(pixels, actions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(public.parameters(), 1.0)
        opt.step()

    row = {"preset": preset, "device": device.type, "batch": batch, "impl": pv.LABELS[variant],
           "public_variant": variant, "sigreg": "public", "compile": "compile" in variant,
           "dtype": "bf16" if "bf16" in variant else "fp32"}  # fmt: skip
    first_s, error = pv.first_call(step, variant, compile_limit)
    if error:
        return dict(row, error=error, first_call_s=first_s)
    for _ in range(warmup - 1):
        step()
    _common.synchronize(device)
    s = _common.time_call(step, device, repeats=steps, warmup=0)["median_s"]
    if "compile" in variant:
        row.update(first_call_s=first_s, compile_s=max(first_s - s, 0.0), compile_mode=pv.compile_mode(device))
    return dict(row, step_ms=s * 1e3, steps_per_s=1 / s, images_per_s=batch * t / s)


def public_cases(cases: list[tuple], args) -> tuple[list[tuple], list[str]]:
    """(preset, device, batch, variant) of each public configuration for each (preset, device, batch) of
    the lewm_fast cases, and why public configurations are not timed."""
    if args.no_public:
        return [], []
    try:
        import stable_worldmodel.wm.lewm  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return [], [f"public rows: stable-worldmodel is not importable here ({exc})"]
    out, skipped = [], []
    for preset, dev, batch in dict.fromkeys(c[:3] for c in cases):
        variants, why = pv.usable_variants(args.public, dev)
        if args.no_compile:
            variants = [v for v in variants if "compile" not in v]
        out += [(preset, dev, batch, v) for v in variants]
        skipped += why
    return out, sorted(set(skipped))


def _resolved(backend: str, device: torch.device) -> str:
    import importlib

    try:
        return importlib.import_module("lewm_fast.sigreg").resolve_backend(backend, device)
    except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
        return f"error: {e}"


def parse_args(argv=None) -> argparse.Namespace:
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
    ap.add_argument("--no-public", action="store_true", help="skip the public training step's rows")
    ap.add_argument("--public", nargs="+", default=list(pv.VARIANTS), choices=pv.VARIANTS,
                    help="public configurations (default: all; the bf16 ones where bf16 is native)")  # fmt: skip
    ap.add_argument("--compile-limit", type=float, default=pv.COMPILE_LIMIT_S,
                    help="seconds a public torch.compile may take before its row says it was too slow")  # fmt: skip
    ap.add_argument("--out", default=None, help=OUT_HELP)
    return ap.parse_args(argv)


def lewm_fast_cases(args, cpu: torch.device, gpu: torch.device | None) -> list[tuple]:
    """(preset, device, batch, sigreg backend, compiled, bf16) of every lewm_fast row asked for."""
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
    return cases


def measure_all(cases: list[tuple], args, steps: int, warmup: int) -> tuple[list[dict], list[str]]:
    """Every lewm_fast case, then the public configurations beside them: (rows, skipped public cases)."""
    rows = []
    if cases:  # one untimed run first: the process's first steps pay one-time initialisation (oneDNN, AMX)
        measure(*cases[0], steps=1, warmup=2)
    for case in cases:
        try:
            rows.append(measure(*case, steps=steps, warmup=warmup + (2 if case[4] else 0)))
        except Exception as e:  # noqa: BLE001 - one failing case (e.g. compile) must not hide the others
            rows.append({"preset": case[0], "device": case[1].type, "batch": case[2], "impl": "lewm_fast",
                         "sigreg": case[3], "compile": case[4], "dtype": "bf16" if case[5] else "fp32",
                         "error": repr(e)[:200]})  # fmt: skip
        print(rows[-1], flush=True)
    publics, skipped = public_cases(cases, args)
    for preset, dev, batch, variant in publics:
        try:
            rows.append(measure_public(preset, dev, batch, variant, steps, warmup, args.compile_limit))
        except Exception as e:  # noqa: BLE001 - as above
            rows.append({"preset": preset, "device": dev.type, "batch": batch, "impl": pv.LABELS[variant],
                         "public_variant": variant, "error": repr(e)[:200]})  # fmt: skip
        print(rows[-1], flush=True)
    return rows, skipped


def main(argv=None) -> int:
    args = parse_args(argv)
    steps, warmup = (3, 2) if args.quick else (10, 3)
    cpu = torch.device("cuda" if args.device == "cuda" else "cpu")
    gpu = torch.device("cuda") if torch.cuda.is_available() and args.device != "cpu" else None
    rows, skipped = measure_all(lewm_fast_cases(args, cpu, gpu), args, steps, warmup)
    pv.add_ratios(rows, ("preset", "device"), "step_ms")
    print()
    columns = [("preset", "preset"), ("device", "device"), ("batch", "batch"), ("impl", "implementation"),
               ("sigreg", "sigreg"), ("sigreg_resolved", "resolved"), ("compile", "compile"), ("dtype", "dtype"),
               ("step_ms", "ms/step"), ("steps_per_s", "steps/s"), ("images_per_s", "images/s"),
               ("x_public", "x public"), ("x_best_public", "x best public"), ("error", "note")]  # fmt: skip
    _common.print_table(rows, columns)
    for line in skipped:
        print(f"  {line}")
    name = "train_speed" + (f"-{args.only}" if args.only else "")
    payload = {"rows": rows, "threads": torch.get_num_threads(), "skipped": skipped}
    path = _common.write_result(name, payload, gpu or cpu, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
