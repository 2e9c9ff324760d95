"""DDP: `lewm-fast train` under torchrun with 2 gloo processes on CPU trains, checkpoints from rank 0 only,
and with SyncBatchNorm its first step's loss (prediction, SIGReg and total) equals one process over the same
global batch."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import lewm_fast as lf
from lewm_fast.data import WindowDataset
from lewm_fast.data.collect import collect
from lewm_fast.training.checkpoint import latest_checkpoint
from lewm_fast.training.trainer import LossModule, TrainConfig, build_model

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip
LOCAL_BATCH, NUM_PROJ, SEED = 6, 64, 3


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no torch.distributed with the gloo backend")  # fmt: skip
def test_torchrun_two_gloo_processes_with_sync_bn(tmp_path):
    data, out = tmp_path / "d.h5", tmp_path / "run"
    collect("tworoom", data, 6, image_size=28, max_steps=30, seed=0, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lewm_fast.cli", "train", "--data", str(data), "--out", str(out), "--steps", "3",
           "--batch-size", str(2 * LOCAL_BATCH), "--amp", "off", "--sync-bn", "--log-every", "1",
           "--ckpt-every", "3", "--val-every", "3", "--seed", str(SEED), "--num-proj", str(NUM_PROJ),
           "--model", json.dumps(TINY), "--no-progress", "--val-fraction", "0.2"]  # fmt: skip
    # A new session, so that on a timeout the whole group (torchrun and both ranks) is killed.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun did not finish in 240 s (a collective waiting on one rank?)")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "batch=12 (2 x 6)" in stdout

    # rank 0 alone wrote one checkpoint and one set of metrics; the checkpoint loads
    assert [p.name for p in sorted(out.glob("ckpt-*"))] == ["ckpt-0000003"]
    lf.interop.load_official(latest_checkpoint(out))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]

    # one process over the same global batch: rank 0's first local batch, then rank 1's
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "x"), seed=SEED, model_overrides=TINY, val_fraction=0.2)
    from lewm_fast.data.dataset import split_episodes

    train_eps, _ = split_episodes(6, 0.2, SEED)
    ds = WindowDataset(data, image_size=28, episodes=train_eps)
    batches = []
    for rank in (0, 1):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=SEED,
                                                      drop_last=True)  # fmt: skip
        sampler.set_epoch(0)
        batches.append(ds.__getitems__(list(sampler)[:LOCAL_BATCH]))
    pixels = torch.cat([b["pixels"] for b in batches])
    actions = torch.cat([b["action"] for b in batches])
    torch.manual_seed(SEED)
    model = build_model(cfg, action_dim=2)
    objective = LossModule(model, lf.SIGReg(num_proj=NUM_PROJ, backend="auto"), 0.09).train()
    loss, pred, sig = objective(pixels, actions).tolist()
    first = train_rows[0]
    assert first["pred_loss"] == pytest.approx(pred, rel=1e-4, abs=1e-6)
    # SIGReg over the global batch (all-reduced sums, rank 0's directions): the same value as one process
    assert "sigreg=global batch" in stdout, stdout[-3000:]
    assert first["sigreg_loss"] == pytest.approx(sig, rel=1e-4, abs=1e-6)
    assert first["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6)
