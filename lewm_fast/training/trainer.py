"""The LeWM trainer: loss = pred_loss + lambda * SIGReg (lf.lewm_loss), AdamW, warm-up + cosine, gradient
clipping, bf16 autocast where it is faster, periodic validation, atomic checkpoints, exact resume, and
DDP when launched under torchrun (gloo on CPU, NCCL on GPU).

train(TrainConfig(...)) -> summary dict. The `lewm-fast train` command is a thin wrapper.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lewm_fast as lf
from lewm_fast.capability import amp_needs_probe, native_bf16
from lewm_fast.data.dataset import Normalizer, WindowDataset, collate_batch, split_episodes
from lewm_fast.data.hdf5 import open_h5, read_index
from lewm_fast.interop.swm import load_public_state_dict
from lewm_fast.training import distributed as D
from lewm_fast.training.checkpoint import latest_checkpoint, load_train_state, rng_state, save_checkpoint, set_rng_state
from lewm_fast.training.metrics import MetricsLog
from lewm_fast.training.presets import get_preset
from lewm_fast.training.sync_bn import convert_sync_batchnorm

AMP_CHOICES = ("auto", "bf16", "off")


class NonFiniteLoss(RuntimeError):
    """Raised when the loss becomes NaN/Inf; the last good checkpoint is left as it was."""


@dataclass
class TrainConfig:
    """Everything a run needs. None means "the preset's value" (steps, batch_size, lr, warmup)."""

    data: str
    out: str
    preset: str = "small"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None  # global batch (split over ranks)
    lr: float | None = None
    lambd: float = 0.09
    weight_decay: float = 1e-3
    warmup: int | None = None
    grad_clip: float = 1.0
    amp: str = "auto"
    val_fraction: float = 0.1
    val_every: int = 250
    val_batches: int = 8
    log_every: int = 10
    ckpt_every: int = 500
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    sync_bn: bool = False
    compile: bool = False
    sigreg_backend: str = "auto"
    num_proj: int = 1024
    device: str = "auto"
    progress: bool = True
    model_overrides: dict | None = None  # LeWMConfig fields to change (tests, experiments)
    max_seconds: float | None = None  # stop (with a checkpoint) after this much training time

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LossModule(nn.Module):
    """The objective as a module, so DDP sees one forward: (pixels, actions) -> (loss, pred, sigreg)."""

    def _sigreg_fp32(self, emb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(emb.device.type, enabled=False):
            return self.sigreg(emb.float())

    def __init__(self, model: lf.LeWM, sigreg: nn.Module, lambd: float):
        super().__init__()
        self.model, self.sigreg, self.lambd = model, sigreg, lambd

    def forward(self, pixels: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # SIGReg is computed in fp32 whatever the autocast dtype (the reference upcasts anyway; this
        # keeps every backend on its fp32 path).
        out = lf.lewm_loss(self.model, pixels, actions, self._sigreg_fp32, self.lambd)
        return torch.stack([out["loss"], out["pred_loss"].float(), out["sigreg_loss"].float()])


def lr_lambda(warmup: int, total: int):
    """Linear warm-up from 0 over `warmup` steps, then cosine decay to 0 at `total`."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class EpochBatches(torch.utils.data.Sampler):
    """Batches of a DistributedSampler's shard for one epoch, starting at batch `skip` (for resume)."""

    def __init__(self, sampler: torch.utils.data.DistributedSampler, batch_size: int, skip: int = 0):
        self.sampler, self.batch_size, self.skip = sampler, batch_size, skip

    def __iter__(self):
        idx = list(self.sampler)
        n = len(idx) // self.batch_size
        for b in range(self.skip, n):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size - self.skip


def choose_amp(amp: str, device: torch.device, step_fn) -> bool:
    """Whether to autocast to bf16. 'auto': bf16 where native on CUDA, fp32 on a CPU that only emulates
    bf16; on a CPU with native bf16, time a few steps each way and keep the faster (bf16 wins for large
    matmuls on CPUs with AMX, fp32 for small ones)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp: expected one of {list(AMP_CHOICES)}, got {amp!r}")
    if amp != "auto":
        return amp == "bf16"
    if not amp_needs_probe(amp, device):  # "auto" without a probe: bf16 where native (lewm_fast.capability)
        return native_bf16(device)
    times = {}
    for use in (False, True) * 4:  # interleaved; the first of each pays one-time set-up, min() drops it
        t0 = time.perf_counter()
        step_fn(use)
        times.setdefault(use, []).append(time.perf_counter() - t0)
    return min(times[True]) < 0.9 * min(times[False])


def _sigreg_is_distributed(sigreg: nn.Module) -> bool:
    """Whether SIGReg computes the global-batch statistic here (lewm_fast.sigreg.process_group)."""
    import importlib

    # (`lewm_fast.sigreg` as an attribute is the function; the module is found by its full name)
    sigreg_module = importlib.import_module("lewm_fast.sigreg")

    if not hasattr(sigreg_module, "process_group"):
        return False
    return sigreg_module.process_group(getattr(sigreg, "distributed", None), getattr(sigreg, "group", None)) is not None


def _local_sigreg(cfg: TrainConfig) -> nn.Module:
    """A SIGReg that computes the statistic of this process's batch only (no collectives)."""
    try:
        return lf.SIGReg(num_proj=cfg.num_proj, backend=cfg.sigreg_backend, distributed=False)
    except TypeError:  # a SIGReg without multi-process support is local anyway
        return lf.SIGReg(num_proj=cfg.num_proj, backend=cfg.sigreg_backend)


def build_model(cfg: TrainConfig, action_dim: int) -> lf.LeWM:
    preset = get_preset(cfg.preset)
    model_cfg = preset.model.replace(action_dim=action_dim, **(cfg.model_overrides or {}))
    return lf.LeWM(model_cfg)


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary (steps, final losses, seconds, checkpoint path)."""
    preset = get_preset(cfg.preset)
    info = D.setup(cfg.device)
    try:
        return _train(cfg, preset, info)
    finally:
        D.teardown()


def _train(cfg: TrainConfig, preset, info: D.DistInfo) -> dict:
    out = Path(cfg.out)
    device = info.device
    batch = cfg.batch_size or preset.batch_size
    if batch % info.world_size:
        raise ValueError(f"batch_size: expected a multiple of the {info.world_size} processes, got {batch}")
    local_batch = batch // info.world_size

    # ---- data ----
    with open_h5(cfg.data) as f:
        lengths, _ = read_index(f, ("pixels", "action"))
    train_eps, val_eps = split_episodes(lengths.size, cfg.val_fraction, cfg.seed)
    model_cfg = preset.model.replace(**(cfg.model_overrides or {}))
    window = dict(image_size=model_cfg.image_size, num_frames=model_cfg.num_frames + 1, frameskip=model_cfg.frameskip)
    train_ds = WindowDataset(cfg.data, episodes=train_eps, **window)
    normalizer = train_ds.normalizer
    val_ds = None
    if val_eps.size and (lengths[val_eps] >= train_ds.span).any():
        val_ds = WindowDataset(cfg.data, episodes=val_eps, normalizer=normalizer, **window)
    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=cfg.seed, drop_last=True)  # fmt: skip
    per_epoch = len(sampler) // local_batch
    if per_epoch < 1:
        raise ValueError(f"batch_size: {batch} is larger than the {len(train_ds)} training windows")
    total = cfg.steps or (int(math.ceil(cfg.epochs * per_epoch)) if cfg.epochs else preset.steps)
    warmup = min(cfg.warmup if cfg.warmup is not None else preset.warmup, max(1, total // 2))

    # ---- model, objective, optimiser ----
    torch.manual_seed(cfg.seed)  # same on every rank: same init, same SIGReg directions per step
    model = build_model(cfg, train_ds.action_dim).to(device)
    if cfg.sync_bn and info.enabled:
        model = convert_sync_batchnorm(model)
    sigreg = lf.SIGReg(num_proj=cfg.num_proj, backend=cfg.sigreg_backend)
    objective = LossModule(model, sigreg, cfg.lambd).to(device)
    # Validation runs on rank 0 alone: its SIGReg must not wait for the other ranks.
    val_objective = LossModule(model, _local_sigreg(cfg), cfg.lambd).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr or preset.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
    step, epoch, skip = 0, 0, 0

    if cfg.resume and latest_checkpoint(out) is not None:
        folder = latest_checkpoint(out)
        state = load_train_state(folder)
        saved = state["config"]
        for key in ("data", "preset", "model_overrides", "seed", "batch_size"):
            if saved.get(key) != getattr(cfg, key):
                raise ValueError(
                    f"resume: {folder} was trained with {key}={saved.get(key)!r}, not {getattr(cfg, key)!r}"
                )
        sd = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        load_public_state_dict(model, sd)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        normalizer = Normalizer.from_dict(state["normalization"])
        train_ds.normalizer = normalizer
        if val_ds is not None:
            val_ds.normalizer = normalizer
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
    elif cfg.resume and info.is_main:
        print(f"lewm-fast train: --resume: no checkpoint in {out} yet, starting from scratch")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = MetricsLog(out, resume_step=step) if info.is_main else None

    net = objective
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(objective, device_ids=[device] if device.type == "cuda" else None)
    fwd = torch.compile(net) if cfg.compile else net

    def loader_for(epoch_: int, skip_: int):
        sampler.set_epoch(epoch_)
        return torch.utils.data.DataLoader(
            train_ds, batch_sampler=EpochBatches(sampler, local_batch, skip_), collate_fn=collate_batch,
            num_workers=cfg.num_workers, persistent_workers=False, pin_memory=device.type == "cuda",
            generator=torch.Generator(),  # its own: creating a loader must not draw from the global RNG
        )  # fmt: skip

    def run_step(b: dict, amp: bool) -> torch.Tensor:
        px, ac = b["pixels"].to(device, non_blocking=True), b["action"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = fwd(px, ac)
        opt.zero_grad(set_to_none=True)
        losses[0].backward()
        return losses

    # ---- bf16 or not (decided on a real batch; the probe steps are not applied) ----
    if amp_needs_probe(cfg.amp, device):
        probe = next(iter(loader_for(epoch, 0)))
        saved_rng, saved_buffers = rng_state(), {k: v.clone() for k, v in model.state_dict().items()}
        use_amp = choose_amp(cfg.amp, device, lambda a: run_step(probe, a))
        opt.zero_grad(set_to_none=True)
        model.load_state_dict(saved_buffers)  # the probe moved BatchNorm running statistics
        set_rng_state(saved_rng)
    else:
        use_amp = choose_amp(cfg.amp, device, None)
    if info.enabled:  # every rank must agree
        flag = torch.tensor([float(use_amp)], device=device)
        torch.distributed.broadcast(flag, 0)
        use_amp = bool(flag.item())

    if info.is_main:
        params = model.num_parameters()["total"]
        sigreg_mode = "global batch" if _sigreg_is_distributed(sigreg) else "per process" if info.enabled else "single"
        print(f"lewm-fast train: preset={cfg.preset} params={params / 1e6:.2f}M image={model_cfg.image_size} "
              f"batch={batch} ({info.world_size} x {local_batch}) steps={total} warmup={warmup} "
              f"windows={len(train_ds)} val={len(val_ds) if val_ds else 0} device={device} "
              f"amp={'bf16' if use_amp else 'fp32'} sigreg={sigreg_mode}")  # fmt: skip

    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (cfg.progress and info.is_main))
    t_start, t_log, last = time.perf_counter(), time.perf_counter(), None
    imgs_since = 0
    stop_reason = "steps"

    def validate() -> dict | None:
        if val_ds is None or not info.is_main:
            return None
        saved = rng_state()  # validation draws SIGReg directions: keep the training RNG stream intact
        model.eval()
        g = torch.Generator().manual_seed(cfg.seed + 1)  # the same windows every time
        idx = torch.randperm(len(val_ds), generator=g)[: cfg.val_batches * local_batch].tolist()
        sums = torch.zeros(3)
        n = 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            for i in range(0, len(idx), local_batch):
                vb = val_ds.__getitems__(idx[i : i + local_batch])
                if len(vb["pixels"]) < 2:
                    continue
                sums += val_objective(vb["pixels"].to(device), vb["action"].to(device)).float().cpu()
                n += 1
        model.train()
        set_rng_state(saved)
        return None if n == 0 else dict(zip(("loss", "pred_loss", "sigreg_loss"), (sums / n).tolist()))

    last_plot = [time.perf_counter()]

    def checkpoint() -> Path | None:
        rngs = _gather_rng(info)  # a collective: every rank takes part
        if not info.is_main:
            return None
        state = {
            "step": step, "epoch": epoch, "batch_in_epoch": skip, "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": rngs, "config": cfg.to_dict(),
            "normalization": normalizer.to_dict(), "amp": use_amp,
        }  # fmt: skip
        folder = save_checkpoint(out, model, normalizer, state)
        if step >= total or time.perf_counter() - last_plot[0] > 120:  # drawing costs seconds on a busy CPU
            log.plot()
            last_plot[0] = time.perf_counter()
        return folder

    model.train()
    folder = None
    while step < total:
        for b in loader_for(epoch, skip):
            losses = run_step(b, use_amp)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            mean = D.all_mean(losses.detach().float(), info)
            if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(grad_norm)):
                bar.close()
                good = latest_checkpoint(out)
                raise NonFiniteLoss(
                    f"lewm-fast train: non-finite loss at step {step + 1} (loss={mean[0].item()}, "
                    f"pred={mean[1].item()}, sigreg={mean[2].item()}, grad_norm={grad_norm.item()}); "
                    "stopped without saving. "
                    f"Last good checkpoint: {good if good else 'none (no checkpoint was written yet)'}. "
                    "Try a lower --lr or --amp off."
                )
            lr_used = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            step += 1
            skip += 1
            imgs_since += local_batch * info.world_size * train_ds.num_frames
            last = mean
            bar.update(1)
            if info.is_main and (step % cfg.log_every == 0 or step == total):
                now = time.perf_counter()
                row = {"split": "train", "step": step, "epoch": epoch, "loss": mean[0].item(),
                       "pred_loss": mean[1].item(), "sigreg_loss": mean[2].item(), "lr": lr_used,
                       "grad_norm": float(grad_norm), "images_per_s": imgs_since / max(now - t_log, 1e-9),
                       "elapsed_s": now - t_start}  # fmt: skip
                log.log(row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}", pred=f"{row['pred_loss']:.4f}", sig=f"{row['sigreg_loss']:.3f}"
                )
                t_log, imgs_since = now, 0
            if step % cfg.val_every == 0 or step == total:
                v = validate()
                if v is not None:
                    log.log(
                        {"split": "val", "step": step, "epoch": epoch, **v, "elapsed_s": time.perf_counter() - t_start}
                    )
            out_of_time = cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds
            if cfg.max_seconds is not None and info.enabled:  # every rank stops at rank 0's step
                flag = torch.tensor([float(out_of_time)], device=device)
                torch.distributed.broadcast(flag, 0)
                out_of_time = bool(flag.item())
            if out_of_time:
                stop_reason, total = "max_seconds", step
            if step % cfg.ckpt_every == 0 or step == total:
                folder = checkpoint() or folder
                D.barrier(info)
            if step >= total:
                break
        else:
            epoch, skip = epoch + 1, 0
    bar.close()
    seconds = time.perf_counter() - t_start
    final = None if last is None else dict(zip(("loss", "pred_loss", "sigreg_loss"), last.tolist()))
    return {"steps": step, "seconds": seconds, "final": final, "checkpoint": str(folder) if folder else None,
            "amp": "bf16" if use_amp else "fp32", "stop": stop_reason, "world_size": info.world_size}  # fmt: skip


def _gather_rng(info: D.DistInfo) -> list[dict]:
    """RNG states of every rank (rank 0 saves them all, so each rank resumes its own stream)."""
    state = rng_state()
    if not info.enabled:
        return [state]
    states: list = [None] * info.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
