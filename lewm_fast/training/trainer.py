"""The LeWM trainer: loss = pred_loss + lambda * SIGReg (lf.lewm_loss), AdamW, warm-up + cosine, gradient
clipping, bf16 autocast where it is faster, periodic validation, atomic checkpoints, exact resume, and
DDP when launched under torchrun (gloo on CPU, NCCL on GPU).

train(TrainConfig(...)) -> summary dict. The `lewm-fast train` command is a thin wrapper. A run is a few
named steps (`_train`): check the config and the run folder, find the checkpoint to resume, resolve every
choice, load the data, check the step fits in memory, and only then create (or move aside) the run
folder; build the objective, restore, choose the precision, then the loop of `_Run.train_step`,
`_Run.validate` and `_Run.checkpoint`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import lewm_fast as lf
from lewm_fast._io import atomic_write
from lewm_fast.capability import amp_needs_probe, native_bf16
from lewm_fast.data.dataset import WindowDataset, collate_batch, split_episodes
from lewm_fast.data.hdf5 import open_h5, read_index
from lewm_fast.interop.swm import load_public_state_dict
from lewm_fast.sigreg import process_group
from lewm_fast.training import distributed as D
from lewm_fast.training.checkpoint import (
    Saved,
    checkpoint_step,
    checkpoints,
    latest_checkpoint,
    newest_intact,
    prune,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lewm_fast.training.memory import check_train_memory
from lewm_fast.training.metrics import MetricsLog
from lewm_fast.training.presets import DEFAULTS, get_preset
from lewm_fast.training.resume import check_run_folder, data_identity, make_run_folder, resolve
from lewm_fast.training.sync_bn import convert_sync_batchnorm
from lewm_fast.training.train_config import AMP_CHOICES, TrainConfig, check_train_config

__all__ = ["LossModule", "NonFiniteLoss", "TrainConfig", "build_model", "train"]


class NonFiniteLoss(RuntimeError):
    """Raised when the loss becomes NaN/Inf; the last good checkpoint is left as it was."""


class LossModule(nn.Module):
    """The objective as a module, so DDP sees one forward: (pixels, actions) -> (loss, pred, sigreg)."""

    def __init__(self, model: lf.LeWM, sigreg: nn.Module, lambd: float):
        super().__init__()
        self.model, self.sigreg, self.lambd = model, sigreg, lambd

    def _sigreg_fp32(self, emb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(emb.device.type, enabled=False):
            return self.sigreg(emb.float())

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


def model_config(cfg: TrainConfig, action_dim: int) -> lf.LeWMConfig:
    """The preset's model with the run's changes (`--model`) and the data's action width."""
    preset = get_preset(cfg.preset or DEFAULTS["preset"])
    return preset.model.replace(action_dim=action_dim, **(cfg.model_overrides or {}))


def build_model(cfg: TrainConfig, action_dim: int) -> lf.LeWM:
    return lf.LeWM(model_config(cfg, action_dim))


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary (steps, final losses, seconds, checkpoint path)."""
    check_train_config(cfg)  # every range, before any data is read or any process group waits
    info = D.setup(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        D.teardown()


def _train(cfg: TrainConfig, info: D.DistInfo) -> dict:
    out = Path(cfg.out)
    check_run_folder(out, cfg.resume, cfg.overwrite)  # every refusal comes before OUT is created or moved
    saved = newest_intact(out, log=print if info.is_main else _quiet) if cfg.resume and out.is_dir() else None
    if cfg.resume and saved is None and info.is_main:
        print(f"lewm-fast train: --resume: no checkpoint in {out} yet, starting from scratch")
    cfg = resolve(cfg, saved, info.device)  # every choice that changes the numbers: given, restored or refused
    data = _Data.load(cfg, info)
    check_train_memory(model_config(cfg, data.train.action_dim), data.local_batch, cfg.num_proj, info.device)
    make_run_folder(out, cfg.overwrite, info.is_main, lambda: D.barrier(info))
    run = _Run(cfg, info, data)
    if saved is not None:
        run.restore(saved)
    run.use_amp = run.choose_precision()
    run.open_log()
    return run.loop()


def _quiet(*_) -> None:
    pass


@dataclass
class _Data:
    """The training and validation windows, the sampler, and the run's length."""

    train: WindowDataset
    val: WindowDataset | None
    sampler: torch.utils.data.DistributedSampler
    local_batch: int
    total: int
    warmup: int
    identity: dict  # data_identity(cfg.data): real path and content fingerprint

    @classmethod
    def load(cls, cfg: TrainConfig, info: D.DistInfo) -> _Data:
        if cfg.batch_size % info.world_size:
            raise ValueError(f"--batch-size: expected a multiple of the {info.world_size} processes, "
                             f"got {cfg.batch_size}")  # fmt: skip
        local_batch = cfg.batch_size // info.world_size
        with open_h5(cfg.data) as f:
            lengths, _ = read_index(f, ("pixels", "action"))
        train_eps, val_eps = split_episodes(lengths.size, cfg.val_fraction, cfg.seed)
        model_cfg = model_config(cfg, action_dim=1)  # the sizes that shape a window
        window = dict(image_size=model_cfg.image_size, num_frames=model_cfg.num_frames + 1,
                      frameskip=model_cfg.frameskip)  # fmt: skip
        train_ds = WindowDataset(cfg.data, episodes=train_eps, **window)
        val_ds = None
        if val_eps.size and (lengths[val_eps] >= train_ds.span).any():
            val_ds = WindowDataset(cfg.data, episodes=val_eps, normalizer=train_ds.normalizer, **window)
        sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                      shuffle=True, seed=cfg.seed, drop_last=True)  # fmt: skip
        per_epoch = len(sampler) // local_batch
        if per_epoch < 1:
            raise ValueError(f"--batch-size: {cfg.batch_size} is larger than the {len(train_ds)} training windows")
        total = cfg.steps or int(math.ceil(cfg.epochs * per_epoch))
        warmup = min(cfg.warmup, max(1, total // 2))
        return cls(train_ds, val_ds, sampler, local_batch, total, warmup, data_identity(cfg.data))


@dataclass
class _Clock:
    start: float = field(default_factory=time.perf_counter)
    last_log: float = field(default_factory=time.perf_counter)
    last_plot: float = field(default_factory=time.perf_counter)
    images: int = 0  # since the last train row


class _Run:
    """One run's model, objective, optimiser and position, and the steps of its loop."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, data: _Data):
        self.cfg, self.info, self.data, self.device = cfg, info, data, info.device
        self.out, self.total = Path(cfg.out), data.total
        torch.manual_seed(cfg.seed)  # same on every rank: same init, same SIGReg directions per step
        self.model = build_model(cfg, data.train.action_dim).to(self.device)
        if cfg.sync_bn and info.enabled:
            self.model = convert_sync_batchnorm(self.model)
        sigreg = lf.SIGReg(num_proj=cfg.num_proj, backend=cfg.sigreg_backend)
        self.sigreg_global = process_group(sigreg.distributed, sigreg.group) is not None
        objective = LossModule(self.model, sigreg, cfg.lambd).to(self.device)
        # Validation runs on rank 0 alone: its SIGReg must not wait for the other ranks.
        local = lf.SIGReg(num_proj=cfg.num_proj, backend=cfg.sigreg_backend, distributed=False)
        self.val_objective = LossModule(self.model, local, cfg.lambd).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(data.warmup, data.total))
        net = objective
        if info.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
        self.forward = torch.compile(net) if cfg.compile else net
        self.normalizer = data.train.normalizer
        self.step = self.epoch = self.skip = 0  # skip: batches of this epoch already done
        self.use_amp = False
        self.lineage: list[Path] = []  # this run's checkpoints, oldest first (training/checkpoint.py `prune`)
        self.log: MetricsLog | None = None
        self.folder: Path | None = None

    # ---- resume, precision, logging -----------------------------------------------------------------

    def restore(self, saved: Saved) -> None:
        """Weights, optimiser, schedule, position, action statistics and this rank's RNG streams."""
        load_public_state_dict(self.model, saved.weights)
        self.opt.load_state_dict(saved.tensors["optimizer"])
        self.sched.load_state_dict(saved.tensors["scheduler"])
        self.step, self.epoch, self.skip = (int(saved.state[k]) for k in ("step", "epoch", "batch_in_epoch"))
        self.normalizer = saved.normalizer
        for ds in (self.data.train, self.data.val):
            if ds is not None:
                ds.normalizer = saved.normalizer
        rngs = saved.tensors["rng"]
        set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        self.lineage = [p for p in checkpoints(self.out) if checkpoint_step(p) <= saved.step]

    def choose_precision(self) -> bool:
        """bf16 autocast or not: given, restored ('bf16'/'off'), or 'auto' (measured on a real batch on a
        CPU with native bf16 only, lewm_fast.capability; the probe steps are not applied). Every rank takes
        rank 0's answer."""
        if self.cfg.amp != "auto":
            use = self.cfg.amp == "bf16"
        elif not amp_needs_probe("auto", self.device):  # bf16 where native (CUDA), fp32 where emulated
            use = native_bf16(self.device)
        else:
            probe = next(iter(self.loader()))
            saved_rng, saved_buffers = rng_state(), {k: v.clone() for k, v in self.model.state_dict().items()}
            use = choose_amp("auto", self.device, lambda a: self.forward_backward(probe, a))
            self.opt.zero_grad(set_to_none=True)
            self.model.load_state_dict(saved_buffers)  # the probe moved BatchNorm running statistics
            set_rng_state(saved_rng)
        if self.info.enabled:
            flag = torch.tensor([float(use)], device=self.device)
            torch.distributed.broadcast(flag, 0)
            use = bool(flag.item())
        return use

    def open_log(self) -> None:
        """train_config.json (the resolved choices), the metrics log, and the one-line summary of the run."""
        if not self.info.is_main:
            return
        config = json.dumps(self.cfg.to_dict(), indent=2).encode()
        atomic_write(self.out / "train_config.json", lambda f: f.write(config))
        self.log = MetricsLog(self.out, resume_step=self.step)
        cfg, info, data = self.cfg, self.info, self.data
        sigreg = "global batch" if self.sigreg_global else "per process" if info.enabled else "single"
        print(f"lewm-fast train: preset={cfg.preset} params={self.model.num_parameters()['total'] / 1e6:.2f}M "
              f"image={self.model.cfg.image_size} batch={cfg.batch_size} ({info.world_size} x {data.local_batch}) "
              f"steps={self.total} warmup={data.warmup} windows={len(data.train)} "
              f"val={len(data.val) if data.val else 0} device={self.device} "
              f"amp={'bf16' if self.use_amp else 'fp32'} sigreg={sigreg}")  # fmt: skip

    # ---- the loop ------------------------------------------------------------------------------------

    def loop(self) -> dict:
        from tqdm import tqdm

        cfg, clock, stop, last = self.cfg, _Clock(), "steps", None
        bar = tqdm(total=self.total, initial=self.step, desc="train", unit="step",
                   disable=not (cfg.progress and self.info.is_main))  # fmt: skip
        self.model.train()
        try:
            while self.step < self.total:
                for batch in self.loader():
                    last, grad_norm, lr = self.train_step(batch)
                    clock.images += self.data.local_batch * self.info.world_size * self.data.train.num_frames
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total:
                        bar.set_postfix(self.log_train(last, grad_norm, lr, clock))
                    if self.step % cfg.val_every == 0 or self.step == self.total:
                        self.validate(clock)
                    if self.out_of_time(clock):
                        stop, self.total = "max_seconds", self.step
                    if self.step % cfg.ckpt_every == 0 or self.step == self.total:
                        self.checkpoint(clock)
                        D.barrier(self.info)
                    if self.step >= self.total:
                        break
                else:
                    self.epoch, self.skip = self.epoch + 1, 0
        finally:
            bar.close()
        final = None if last is None else dict(zip(("loss", "pred_loss", "sigreg_loss"), last.tolist()))
        return {"steps": self.step, "seconds": time.perf_counter() - clock.start, "final": final,
                "checkpoint": str(self.folder) if self.folder else None, "amp": "bf16" if self.use_amp else "fp32",
                "stop": stop, "world_size": self.info.world_size}  # fmt: skip

    def loader(self) -> torch.utils.data.DataLoader:
        """The rest of the current epoch's batches (from batch `skip`)."""
        self.data.sampler.set_epoch(self.epoch)
        return torch.utils.data.DataLoader(
            self.data.train, batch_sampler=EpochBatches(self.data.sampler, self.data.local_batch, self.skip),
            collate_fn=collate_batch, num_workers=self.cfg.num_workers, persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # its own: creating a loader must not draw from the global RNG
        )  # fmt: skip

    def forward_backward(self, batch: dict, amp: bool) -> torch.Tensor:
        px = batch["pixels"].to(self.device, non_blocking=True)
        ac = batch["action"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            losses = self.forward(px, ac)
        self.opt.zero_grad(set_to_none=True)
        losses[0].backward()
        return losses

    def train_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimiser step: (mean losses over ranks, gradient norm, the learning rate used). A non-finite
        loss or gradient stops the run before the step is applied (NonFiniteLoss)."""
        losses = self.forward_backward(batch, self.use_amp)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        mean = D.all_mean(losses.detach().float(), self.info)
        if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(grad_norm)):
            good = latest_checkpoint(self.out)
            raise NonFiniteLoss(
                f"lewm-fast train: non-finite loss at step {self.step + 1} (loss={mean[0].item()}, "
                f"pred={mean[1].item()}, sigreg={mean[2].item()}, grad_norm={grad_norm.item()}); "
                "stopped without saving. "
                f"Last good checkpoint: {good if good else 'none (no checkpoint was written yet)'}. "
                "Try a lower --lr or --amp off."
            )
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.step, self.skip = self.step + 1, self.skip + 1
        return mean, grad_norm, lr

    def log_train(self, mean: torch.Tensor, grad_norm: torch.Tensor, lr: float, clock: _Clock) -> dict:
        """A train row in the metrics log (rank 0); returns the progress bar's postfix."""
        loss, pred, sig = mean.tolist()
        if self.log is not None:
            now = time.perf_counter()
            self.log.log({"split": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "pred_loss": pred,
                          "sigreg_loss": sig, "lr": lr, "grad_norm": float(grad_norm),
                          "images_per_s": clock.images / max(now - clock.last_log, 1e-9),
                          "elapsed_s": now - clock.start})  # fmt: skip
            clock.last_log, clock.images = now, 0
        return {"loss": f"{loss:.4f}", "pred": f"{pred:.4f}", "sig": f"{sig:.3f}"}

    def validate(self, clock: _Clock) -> None:
        """Mean losses over fixed held-out windows in eval mode (rank 0), logged as a val row."""
        if self.data.val is None or self.log is None:
            return
        val, batch = self.data.val, self.data.local_batch
        saved = rng_state()  # validation draws SIGReg directions: keep the training RNG stream intact
        self.model.eval()
        g = torch.Generator().manual_seed(self.cfg.seed + 1)  # the same windows every time
        idx = torch.randperm(len(val), generator=g)[: self.cfg.val_batches * batch].tolist()
        sums, n = torch.zeros(3), 0
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            for i in range(0, len(idx), batch):
                vb = val.__getitems__(idx[i : i + batch])
                if len(vb["pixels"]) < 2:
                    continue
                sums += self.val_objective(vb["pixels"].to(self.device), vb["action"].to(self.device)).float().cpu()
                n += 1
        self.model.train()
        set_rng_state(saved)
        if n:
            losses = dict(zip(("loss", "pred_loss", "sigreg_loss"), (sums / n).tolist()))
            self.log.log({"split": "val", "step": self.step, "epoch": self.epoch, **losses,
                          "elapsed_s": time.perf_counter() - clock.start})  # fmt: skip

    def out_of_time(self, clock: _Clock) -> bool:
        """Past --max-minutes (every rank stops at rank 0's step)."""
        if self.cfg.max_seconds is None:
            return False
        late = time.perf_counter() - clock.start > self.cfg.max_seconds
        if self.info.enabled:
            flag = torch.tensor([float(late)], device=self.device)
            torch.distributed.broadcast(flag, 0)
            late = bool(flag.item())
        return late

    def checkpoint(self, clock: _Clock) -> None:
        """Write ckpt-<step> (rank 0; every rank hands in its RNG state), keep the newest two of this run."""
        rngs = _gather_rng(self.info)  # a collective: every rank takes part
        if not self.info.is_main:
            return
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.skip, "config": self.cfg.to_dict(),
                 "amp": "bf16" if self.use_amp else "fp32", "data": self.data.identity}  # fmt: skip
        tensors = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "rng": rngs}
        self.folder = save_checkpoint(self.out, self.model, self.normalizer, state, tensors)
        self.lineage.append(self.folder)
        prune(self.lineage)
        now = time.perf_counter()
        if self.step >= self.total or now - clock.last_plot > 120:  # drawing costs seconds on a busy CPU
            self.log.plot()
            clock.last_plot = now


def _gather_rng(info: D.DistInfo) -> list[dict]:
    """RNG states of every rank (rank 0 saves them all, so each rank resumes its own stream)."""
    state = rng_state()
    if not info.enabled:
        return [state]
    states: list = [None] * info.world_size
    torch.distributed.all_gather_object(states, state)
    return states
