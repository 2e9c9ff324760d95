"""What the safety checks cost a training run (docs/reliability.md, "What the checks cost").

1. Per step: the one check added on the training hot path is SIGReg's finiteness check of its input on
   the CPU (`lewm_fast.sigreg.check_finite_inputs`). One training step of a preset (forward, backward,
   clipping, AdamW; synthetic inputs) is timed with the check as shipped and with it replaced by a no-op,
   interleaved in one process on the CPU-time clock of one thread (robust to other jobs on the machine).
2. Per run: identifying the data file a checkpoint records, the sha256 of its bytes and the sampled content
   fingerprint (`--data FILE`, optional), computed once when a run starts or resumes.

    python benchmarks/check_overhead.py [--preset small] [--batch 64] [--pairs 20] [--data tworoom.h5]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.training.presets import get_preset  # noqa: E402
from lewm_fast.training.trainer import LossModule  # noqa: E402

sigreg_module = importlib.import_module("lewm_fast.sigreg")  # `lewm_fast.sigreg` is also the function


def training_step(preset: str, batch: int):
    torch.manual_seed(0)
    cfg = get_preset(preset).model
    model = lf.LeWM(cfg).train()
    objective = LossModule(model, lf.SIGReg(), 0.09)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    t = cfg.num_frames + 1
    pixels = torch.randn(batch, t, 3, cfg.image_size, cfg.image_size)
    actions = torch.randn(batch, t, cfg.action_block_dim)

    def step():
        loss = objective(pixels, actions)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def cpu_seconds(fn) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def identity_seconds(path: str) -> dict:
    """What a run spends identifying its data file once (training/resume.py's data_identity): the sha256 of
    every byte (what a resume checks) and the sampled fingerprint (what evaluation recognises)."""
    from lewm_fast.data.hdf5 import file_digest, fingerprint

    out = {}
    for name, fn in (("sha256_s", file_digest), ("fingerprint_s", fingerprint)):
        t0 = time.perf_counter()
        fn(path)
        out[name] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=20, help="interleaved (checked, unchecked) step pairs")
    p.add_argument("--data", default=None, help="an episode file to time the identification of")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()
    torch.set_num_threads(1)
    step = training_step(args.preset, args.batch)
    shipped, noop = sigreg_module.check_finite_inputs, lambda *a: None
    for _ in range(2):  # warm-up
        step()
    times = {"checked": [], "unchecked": []}
    for _ in range(args.pairs):
        for name, check in (("checked", shipped), ("unchecked", noop)):
            sigreg_module.check_finite_inputs = check
            times[name].append(cpu_seconds(step))
    sigreg_module.check_finite_inputs = shipped
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"preset": args.preset, "batch": args.batch, "pairs": args.pairs, "clock": "thread_time, 1 thread",
              "step_ms_checked": med["checked"] * 1e3, "step_ms_unchecked": med["unchecked"] * 1e3,
              "overhead": med["checked"] / med["unchecked"] - 1}  # fmt: skip
    if args.data:
        result.update(data=str(args.data), data_bytes=Path(args.data).stat().st_size, **identity_seconds(args.data))
    _common.print_table([result], [(k, k) for k in result])
    print(_common.write_result("check_overhead", {"rows": [result]}, torch.device("cpu"), args.out))


if __name__ == "__main__":
    main()
