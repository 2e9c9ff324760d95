"""Hostile training: resume on data changed anywhere, resume with any setting that changes the numbers,
requests too large for memory. Every TrainConfig field is of a known kind, and each kind is proved:
choices and settings are refused when changed on resume, the neutral ones do not change the weights."""

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from hostile import cli, one_line_error, snapshot
from tiny_runs import TINY, assert_same_weights, tiny_config, tiny_data, tiny_run, train_flags

from lewm_fast.data.hdf5 import fingerprint
from lewm_fast.training import TrainConfig, train
from lewm_fast.training.checkpoint import latest_checkpoint
from lewm_fast.training.resume import FIELD_KINDS, flag


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("hostile_train") / "tworoom.h5")


@pytest.fixture(scope="module")
def one_step(data, tmp_path_factory):
    """A run stopped after its first step (of 3): the run every resume below starts from."""
    out = tmp_path_factory.mktemp("one") / "run"
    tiny_run(data, out, max_seconds=0.0)
    return out


def test_every_train_config_field_has_one_kind():
    """A new TrainConfig field must be classified (resume.FIELD_KINDS), or this test fails."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    kinds = [name for members in FIELD_KINDS.values() for name in members]
    assert sorted(kinds) == sorted(fields) and len(kinds) == len(set(kinds))


def test_one_changed_frame_anywhere_is_refused_on_resume(data, one_step, tmp_path):
    """A frame the sampled fingerprint does not look at: the whole-file digest sees it."""
    changed = tmp_path / "changed.h5"
    shutil.copy(data, changed)
    with h5py.File(changed, "r+") as f:
        n = f["pixels"].shape[0]
        sampled = set(np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64)).tolist())
        row = next(i for i in range(n) if i not in sampled)
        f["pixels"][row] = 255 - f["pixels"][row]
    assert fingerprint(changed) == fingerprint(data)  # the old check would have let it through
    run = tmp_path / "run"
    shutil.copytree(one_step, run, symlinks=True)
    before = snapshot(run)
    err = one_line_error(cli(*train_flags(changed, run, "--resume")))
    assert err.startswith("--data: ") and "content differs" in err
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sigreg-backend", "reference"], "--sigreg-backend: "),
        (["--compile"], "--compile: "),
        (["--sync-bn"], "--sync-bn: "),
    ],
)  # fmt: skip
def test_a_setting_that_changes_the_numbers_is_refused_on_resume(data, one_step, tmp_path, extra, message):
    """The run used the C++ SIGReg, no compile, no SyncBatchNorm (as resolved on this CPU)."""
    run = tmp_path / "run"
    shutil.copytree(one_step, run, symlinks=True)
    before = snapshot(run)
    err = one_line_error(cli(*train_flags(data, run, "--resume", *extra)))
    assert err.startswith(message) and "changes the numbers" in err
    assert snapshot(run) == before


def test_a_run_from_another_device_is_refused_on_resume(data, one_step, tmp_path):
    """A run trained on CUDA, resumed here (on the CPU, by 'auto'): refused naming --device."""
    run = tmp_path / "run"
    shutil.copytree(one_step, run, symlinks=True)
    for state in run.glob("ckpt-*/train_state.json"):
        meta = json.loads(state.read_text())
        meta["config"]["device"] = "cuda"
        state.write_text(json.dumps(meta))
    err = one_line_error(cli(*train_flags(data, run, "--resume")))
    assert err.startswith("--device: ") and "'cuda'" in err and "'cpu'" in err


def test_the_resolved_settings_are_recorded(one_step):
    meta = json.loads((latest_checkpoint(one_step) / "train_state.json").read_text())
    config = meta["config"]
    assert config["device"] == "cpu" and config["sigreg_backend"] in ("cpp", "reference")
    assert config["compile"] is False and config["sync_bn"] is False
    assert len(meta["data"]["digest"]) == 64 and len(meta["data"]["fingerprint"]) == 64


NEUTRAL_CHANGES = {"val_every": 1, "val_batches": 2, "log_every": 2, "ckpt_every": 2, "num_workers": 1,
                   "progress": True}  # fmt: skip


@pytest.fixture(scope="module")
def three_steps(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("three") / "run"
    tiny_run(data, out)
    return out


@pytest.mark.parametrize("field", sorted(FIELD_KINDS["neutral"]))
def test_a_neutral_field_does_not_change_the_weights(data, three_steps, tmp_path, field):
    assert field in NEUTRAL_CHANGES, f"give the neutral field {field} a value to try here"
    tiny_run(data, tmp_path / "run", **{field: NEUTRAL_CHANGES[field]})
    assert_same_weights(tmp_path / "run", three_steps, f"{flag(field)} changed the weights")


@pytest.mark.parametrize(
    "extra, name",
    [
        (["--num-proj", "1000000000"], "--num-proj"),
        (["--model", json.dumps({**TINY, "enc_dim": 120000, "enc_heads": 1})], "--model"),
        (["--batch-size", "100000000"], "--batch-size"),
    ],
)  # fmt: skip
def test_a_request_too_large_is_refused_before_the_run_folder_exists(data, tmp_path, extra, name):
    out = tmp_path / "run"
    err = one_line_error(cli(*train_flags(data, out, *extra), timeout=120))
    assert err.startswith(f"{name}: ")
    assert not out.exists()


def test_the_memory_estimate_names_the_flag_and_the_size(data, tmp_path):
    with pytest.raises(ValueError, match=r"^--num-proj: a training step \(.*\) needs at least ~[\d.]+ GiB, more than"):
        train(tiny_config(data, tmp_path / "run", num_proj=10**9))
    assert not (tmp_path / "run").exists()


def test_an_unavailable_sigreg_backend_names_its_flag(data, tmp_path):
    """Triton on a CPU without the interpreter (the test session sets TRITON_INTERPRET=1 where no GPU is)."""
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the Triton backend runs")
    err = one_line_error(cli(*train_flags(data, tmp_path / "run", "--sigreg-backend", "triton"),
                             env={"TRITON_INTERPRET": "0"}))  # fmt: skip
    assert err.startswith("--sigreg-backend: ") and not (tmp_path / "run").exists()
