"""The trainer: checkpoints in the published format, exact resume, non-finite loss, kills, bad input."""

import json
import subprocess
import sys
import time

import pytest
import torch
from tiny_runs import assert_same_weights

import lewm_fast as lf
from lewm_fast.data.collect import collect
from lewm_fast.training import NonFiniteLoss, TrainConfig, train
from lewm_fast.training import trainer as trainer_module
from lewm_fast.training.checkpoint import latest_checkpoint

# A tiny model (tests/helpers.tiny_config sizes) trained on 28 px TwoRoom frames.
TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "tworoom.h5"
    collect("tworoom", path, 8, image_size=28, max_steps=30, seed=0, progress=False)
    return path


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="small", steps=6, batch_size=8, lr=1e-3, warmup=2, amp="off",
                val_every=3, val_batches=2, log_every=1, ckpt_every=3, num_proj=64, progress=False,
                model_overrides=TINY, val_fraction=0.25)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_a_published_checkpoint_metrics_and_plot(data, tmp_path):
    summary = train(_cfg(data, tmp_path))
    assert summary["steps"] == 6 and all(torch.isfinite(torch.tensor(list(summary["final"].values()))))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "ckpt-0000006"
    model = lf.interop.load_official(ckpt)  # the published format loads
    assert model.cfg.image_size == 28 and model.cfg.action_dim == 2 and model.cfg.frameskip == 5
    norm = json.loads((ckpt / "normalization.json").read_text())
    assert len(norm["action_mean"]) == 2 and len(norm["action_std"]) == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert any(r["split"] == "val" for r in rows)
    assert (tmp_path / "metrics.csv").read_text().startswith("split,step")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # linear warm-up over 2 steps
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 2e-4  # then cosine decay


def test_resume_restores_model_optimiser_scheduler_step_and_rng(data, tmp_path):
    full = tmp_path / "full"
    train(_cfg(data, full, steps=6, ckpt_every=6, model_overrides={**TINY, "dropout": 0.1}))
    part = tmp_path / "part"
    train(_cfg(data, part, steps=6, ckpt_every=3, max_seconds=0.0, model_overrides={**TINY, "dropout": 0.1}))
    assert latest_checkpoint(part).name == "ckpt-0000001"  # stopped by the time limit after one step
    train(_cfg(data, part, steps=6, ckpt_every=3, resume=True, model_overrides={**TINY, "dropout": 0.1}))
    assert_same_weights(part, full)
    la = [json.loads(x)["loss"] for x in (full / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    lb = [json.loads(x)["loss"] for x in (part / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert la == lb


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    forward = trainer_module.LossModule.forward
    calls = {"n": 0}

    def poisoned(self, pixels, actions):
        calls["n"] += self.training  # count training steps only (validation also calls forward)
        out = forward(self, pixels, actions)
        return out * float("nan") if self.training and calls["n"] == 3 else out

    monkeypatch.setattr(trainer_module.LossModule, "forward", poisoned)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 3.*Last good checkpoint: .*ckpt-0000002"):
        train(_cfg(data, tmp_path, ckpt_every=2))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "ckpt-0000002"
    lf.interop.load_official(ckpt)


def test_killed_training_keeps_a_loadable_checkpoint_and_resumes(data, tmp_path):
    out = tmp_path / "killed"
    overrides = json.dumps(TINY)
    script = (
        "import json, sys; from lewm_fast.training import TrainConfig, train; "
        f"train(TrainConfig(data={str(data)!r}, out={str(out)!r}, steps=100000, batch_size=8, amp='off', "
        f"ckpt_every=1, log_every=1, val_every=10**9, num_proj=64, progress=False, "
        f"model_overrides=json.loads({overrides!r})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and latest_checkpoint(out) is None:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.kill()
    proc.wait(timeout=30)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None
    lf.interop.load_official(ckpt)
    step = json.loads((ckpt / "config.json").read_text())["lewm_fast_training"]["step"]
    cfg = TrainConfig(data=str(data), out=str(out), steps=step + 2, batch_size=8, amp="off", ckpt_every=1,
                      num_proj=64, progress=False, model_overrides=TINY, resume=True)  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == step + 2


def test_bad_preset_image_size_and_short_episodes(data, tmp_path):
    with pytest.raises(ValueError, match="preset: expected one of \\['paper', 'small'\\], got 'huge'"):
        train(_cfg(data, tmp_path, preset="huge"))
    with pytest.raises(ValueError, match="image_size: expected a multiple of patch_size=7, got 30"):
        train(_cfg(data, tmp_path, model_overrides={**TINY, "image_size": 30}))
    short = tmp_path / "short.h5"
    collect("tworoom", short, 2, image_size=28, max_steps=10, seed=0, progress=False)
    with pytest.raises(ValueError, match="shorter than a training window"):
        train(_cfg(short, tmp_path / "s"))
    r = subprocess.run([sys.executable, "-m", "lewm_fast.cli", "train", "--data", str(data), "--out", str(tmp_path),
                        "--preset", "nope"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "preset: expected one of ['paper', 'small'], got 'nope'" in r.stderr


def test_presets():
    from lewm_fast.training.presets import get_preset

    paper = get_preset("paper")
    assert paper.model == lf.LeWMConfig() and paper.batch_size == 128 and paper.model.image_size == 224
    small = get_preset("small").model
    assert small.image_size == 64 and small.image_size % small.patch_size == 0
