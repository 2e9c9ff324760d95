"""Data loading: training windows per second from one HDF5 file, lewm_fast's `WindowDataset` beside the public
`stable_worldmodel.data.HDF5Dataset`, with and without DataLoader workers.

The public setting (stable-worldmodel README, scripts/benchmark/compare_h5_lance.py there): windows of 4
frames with frameskip 5, batch 64, columns pixels + action + proprio, 4 workers, the DataLoader's default
sequential order, raw uint8 frames; "cached" keeps action and proprio in RAM. They report 1,416 samples/s
(no cache) for HDF5 on their PushT data. Here both readers read the same file; rows:

- public: HDF5Dataset as their benchmark builds it (raw uint8 frames: no resize, no normalisation), and with
  the public evaluation script's image transform (ToDtype + ImageNet Normalize: training-ready frames);
- lewm_fast: WindowDataset as the trainer uses it (frames resized to the model size and ImageNet-normalised,
  actions regrouped and z-scored: more work per sample than the public rows), reading the file per batch
  (`in_memory=False`) and from RAM (`in_memory=True`, the default for files up to 4 GiB).

Orders: `sequential` (the public benchmark) and `random` (how training samples: shuffled windows).

    python benchmarks/data_speed.py                      # makes a 224 px TwoRoom file first (cached)
    python benchmarks/data_speed.py --data pusht.h5 --workers 0 2 4
Run it where stable_worldmodel imports (the side venv) for the public rows; elsewhere they are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _files import OUT_HELP  # noqa: E402

from lewm_fast.data import WindowDataset, collate_batch  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
NUM_STEPS, FRAMESKIP = 4, 5  # the public benchmark's windows (= lewm_fast's)


def default_file(episodes: int, image_size: int) -> Path:
    """A TwoRoom file at the public image size, collected once and kept in benchmarks/.cache."""
    from lewm_fast.data.collect import collect

    path = CACHE / f"tworoom-{episodes}x100-{image_size}px.h5"
    if not path.exists():
        print(f"collecting {path} ...", flush=True)
        collect("tworoom", path, episodes, image_size=image_size, max_steps=100, progress=False, resume=True)
    return path


def public_dataset(path: Path, cached: bool, transform: bool = False):
    """The public reader as their benchmark builds it; transform=True adds the image transform of the public
    evaluation script (torchvision ToDtype(scale=True) + ImageNet Normalize, per sample), which makes its
    frames training-ready like lewm_fast's."""
    from stable_worldmodel.data import HDF5Dataset

    cache = ["action", "proprio"] if cached else []
    keys = ["pixels", "action", "proprio"]
    tf = _public_image_transform() if transform else None
    return HDF5Dataset(path=path, num_steps=NUM_STEPS, frameskip=FRAMESKIP, keys_to_load=keys, keys_to_cache=cache,
                       transform=tf)  # fmt: skip


def _public_image_transform():
    from torchvision.transforms import v2

    from lewm_fast.data import IMAGENET_MEAN, IMAGENET_STD

    image = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def transform(steps: dict) -> dict:
        steps["pixels"] = image(steps["pixels"])
        return steps

    return transform


def loader(ds, batch: int, workers: int, order: str, ours: bool) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    kw = {"num_workers": workers, "prefetch_factor": 2 if workers else None, "persistent_workers": workers > 0}
    if ours:  # the trainer's way: a batch sampler, one __getitems__ call per batch
        sampler = torch.utils.data.RandomSampler(ds, generator=g) if order == "random" else range(len(ds))
        batches = torch.utils.data.BatchSampler(sampler, batch, drop_last=True)
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate_batch, **kw)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=order == "random", generator=g, **kw)


def _forever(dl):
    """Batches of `dl`, starting over when an epoch ends (as the public benchmark loop does)."""
    while True:
        yield from dl


def measure(make, batch: int, workers: int, order: str, ours: bool, steps: int, warmup: int) -> dict:
    """Samples/s over `steps` batches after `warmup` (the public benchmark's loop); CPU seconds of this
    process (workers are other processes) per batch alongside."""
    ds = make()
    it = _forever(loader(ds, batch, workers, order, ours))
    for _ in range(warmup):
        _ = next(it)["pixels"].shape
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(steps):
        n += next(it)["pixels"].shape[0]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    del it
    return {"samples_per_s": n / dt, "ms_per_batch": 1e3 * dt / steps, "main_cpu_ms_per_batch": 1e3 * cpu / steps}


def cases(path: Path, image_size: int, public: bool):
    """(reader, variant, factory, ours) for every row."""
    rows = []
    if public:
        for variant, cached, tf in (("raw uint8", False, False), ("raw uint8, action+proprio cached", True, False),
                                    ("training-ready (+ ToDtype, Normalize), cached", True, True)):  # fmt: skip
            rows.append(("public HDF5Dataset", variant, lambda c=cached, t=tf: public_dataset(path, c, t), False))
    window = {"image_size": image_size, "num_frames": NUM_STEPS, "frameskip": FRAMESKIP}
    for variant, in_memory in (("training-ready, reads the file", False), ("training-ready, in RAM", True)):
        rows.append(("lewm_fast WindowDataset", variant, lambda m=in_memory: WindowDataset(path, in_memory=m, **window),
                     True))  # fmt: skip
    return rows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="an .h5 file (default: a 224 px TwoRoom file, made once)")
    p.add_argument("--episodes", type=int, default=100, help="episodes of the default file (100)")
    p.add_argument("--file-image-size", type=int, default=224, help="frame size of the default file (224)")
    p.add_argument("--image-size", type=int, default=None, help="lewm_fast's model image size (default: the file's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try (0 2)")
    p.add_argument("--orders", nargs="+", default=["sequential", "random"], choices=("sequential", "random"))
    p.add_argument("--steps", type=int, default=100, help="timed batches per row (100, as the public benchmark)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    p.add_argument("--quick", action="store_true", help="few steps, a small default file (CI)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--tag", default="", help="suffix for the results file name")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup, args.episodes, args.file_image_size = 5, 1, 4, 64
    return args


def public_importable() -> bool:
    try:
        import stable_worldmodel  # noqa: F401
    except ImportError:
        print("stable_worldmodel is not importable here: the public rows are skipped (run in the side venv)")
        return False
    return True


def measure_rows(path: Path, image_size: int, public: bool, args) -> list[dict]:
    """One row per (order, workers, reader), each with its ratio to the public reader without a cache."""
    rows = []
    for order in args.orders:
        for workers in args.workers:
            for reader, variant, make, ours in cases(path, image_size, public):
                r = measure(make, args.batch_size, workers, order, ours, args.steps, args.warmup)
                rows.append({"reader": reader, "variant": variant, "order": order, "workers": workers, **r})
                print(f"  {order:>10}  workers {workers}  {reader} ({variant}): {r['samples_per_s']:,.0f} samples/s",
                      flush=True)  # fmt: skip
    for r in rows:
        pub = [q for q in rows if q["reader"].startswith("public") and q["order"] == r["order"]
               and q["workers"] == r["workers"] and "cached" not in q["variant"]]  # fmt: skip
        r["x_public_no_cache"] = r["samples_per_s"] / pub[0]["samples_per_s"] if pub else None
    return rows


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.data) if args.data else default_file(args.episodes, args.file_image_size)
    public = public_importable()
    import h5py

    load_start = os.getloadavg()[0]
    with h5py.File(path, "r") as f:
        frame, n_rows = f["pixels"].shape[1:], f["pixels"].shape[0]
    image_size = args.image_size or frame[0]
    print(f"{path} ({n_rows:,} frames of {frame}, {path.stat().st_size / 2**30:.2f} GiB); batch {args.batch_size}, "
          f"{NUM_STEPS} frames x frameskip {FRAMESKIP}; load average {load_start:.1f}", flush=True)  # fmt: skip
    rows = measure_rows(path, image_size, public, args)
    _common.print_table(rows, [("order", "order"), ("workers", "workers"), ("reader", "reader"), ("variant", "variant"),
                               ("samples_per_s", "samples/s"), ("ms_per_batch", "ms/batch"),
                               ("x_public_no_cache", "x public (no cache)")])  # fmt: skip
    payload = {"data": str(path), "rows_in_file": n_rows, "frame_shape": list(frame), "model_image_size": image_size,
               "batch_size": args.batch_size, "num_steps": NUM_STEPS, "frameskip": FRAMESKIP, "steps": args.steps,
               "load_average_start": load_start, "load_average_end": os.getloadavg()[0], "cpu_count": os.cpu_count(),
               "rows": rows}  # fmt: skip
    if public:
        import stable_worldmodel

        payload["stable_worldmodel"] = getattr(stable_worldmodel, "__version__", "?")
    name = "data_speed" + (f"-{args.tag}" if args.tag else "")
    print("results:", _common.write_result(name, payload, torch.device("cpu"), args.out))


if __name__ == "__main__":
    main()
