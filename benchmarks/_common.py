"""Shared pieces of the benchmarks: environment tags, timing, a printed table and JSON results.

Every result file is tagged with the device, the versions and the date, and lands in
benchmarks/results/<name>-<date>-<device>.json (written atomically).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    """Device, versions and date for a results file."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1, min_seconds: float = 0.0
) -> dict:
    """Median and min wall time of fn() in seconds over `repeats` calls (after `warmup` calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Print rows as an aligned table; columns = [(key, header)]."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_result(
    name: str, payload: dict, device: torch.device, out_dir: Path | None = None, prefix: bool = True
) -> Path:
    """Write payload (+ environment tags) to <out_dir>/<name>-<date>-<device>.json atomically
    (<date>-<device>.json with prefix=False)."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    device_label = re.sub(r"\s*\(\d+ threads\)$", "", env["device"]).replace("(R)", "").replace("(TM)", "")
    tag = re.sub(r"[^A-Za-z0-9]+", "-", device_label).strip("-").lower()[:40].strip("-")
    path = out_dir / ((f"{name}-" if prefix else "") + f"{env['date'][:10]}-{tag}.json")
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes 0600 files
    with os.fdopen(fd, "w") as f:
        json.dump({"benchmark": name, "environment": env, **payload}, f, indent=2)
    os.replace(tmp, path)
    return path


def public_lewm(model, device: torch.device | str = "cpu"):
    """The public stable-worldmodel `LeWM` with the weights of an `lf.LeWM` (transformers 5.x ViT names equal
    ours), in eval mode: the side venv's way to run the public code on our checkpoints."""
    import transformers
    from stable_worldmodel.wm.lewm.lewm import LeWM as PublicLeWM
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor

    cfg = model.cfg
    vit = transformers.ViTModel(
        transformers.ViTConfig(hidden_size=cfg.enc_dim, num_hidden_layers=cfg.enc_depth,
                               num_attention_heads=cfg.enc_heads, intermediate_size=cfg.enc_mlp_dim,
                               image_size=cfg.image_size, patch_size=cfg.patch_size, layer_norm_eps=cfg.enc_ln_eps),
        add_pooling_layer=False,
    )  # fmt: skip
    pred = Predictor(num_frames=cfg.num_frames, depth=cfg.pred_depth, heads=cfg.pred_heads, mlp_dim=cfg.pred_mlp_dim,
                     input_dim=cfg.embed_dim, hidden_dim=cfg.pred_hidden_dim, output_dim=cfg.pred_output_dim,
                     dim_head=cfg.pred_dim_head)  # fmt: skip
    bn = torch.nn.BatchNorm1d
    public = PublicLeWM(vit, pred, Embedder(input_dim=cfg.action_block_dim, emb_dim=cfg.embed_dim),
                        MLP(cfg.enc_dim, cfg.proj_hidden_dim, cfg.embed_dim, norm_fn=bn),
                        MLP(cfg.pred_output_dim, cfg.pred_proj_hidden_dim, cfg.embed_dim, norm_fn=bn))  # fmt: skip
    public.load_state_dict(model.state_dict())
    return public.to(device).eval()
