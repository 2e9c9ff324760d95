"""Nothing lost: a run folder is never overwritten, checkpoints are kept by this run's recency, outputs are
checked before the work; and a resumed run computes what an uninterrupted one computes (every choice
restored or a change refused, the same data under any path, the newest intact checkpoint)."""

import json
import os
import shutil

import pytest
import torch
from tiny_runs import assert_same_weights, tiny_data, tiny_run, train_flags

from lewm_fast.cli import main as cli_main
from lewm_fast.training import TrainConfig, train
from lewm_fast.training import trainer as trainer_module
from lewm_fast.training.checkpoint import checkpoints, latest_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("resume") / "tworoom.h5")


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """An uninterrupted 5-step run: what every resumed run below must equal exactly."""
    out = tmp_path_factory.mktemp("full") / "run"
    tiny_run(data, out, steps=5)
    return out


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lewm-fast: error: "), err
    return err


# ---- nothing lost ----------------------------------------------------------------------------------


def test_train_into_an_existing_run_is_refused_and_touches_nothing(data, full, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(full, run, symlinks=True)
    before = _snapshot(run)
    assert cli_main(train_flags(data, run)) == 2
    err = _one_line_error(capsys)
    assert "--out" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(run) == before


def test_overwrite_moves_the_old_run_aside(data, full, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(full, run, symlinks=True)
    before = _snapshot(run)
    assert cli_main(train_flags(data, run, "--overwrite")) == 0
    assert "moved the previous" in capsys.readouterr().out
    assert _snapshot(tmp_path / "run.old-1") == before  # every file of the old run, unchanged
    assert latest_checkpoint(run).name == "ckpt-0000003"
    assert cli_main(train_flags(data, run, "--overwrite")) == 0  # again: a second folder aside
    assert (tmp_path / "run.old-2").is_dir() and (tmp_path / "run.old-1").is_dir()


def test_resume_and_overwrite_together_are_refused(data, tmp_path, capsys):
    assert cli_main(train_flags(data, tmp_path / "r", "--resume", "--overwrite")) == 2
    assert "--resume, --overwrite: expected one of them" in _one_line_error(capsys)


def test_retention_keeps_what_this_run_wrote(data, tmp_path):
    """A stale checkpoint with a higher step (from a run this one did not continue) neither evicts the new
    checkpoints nor is deleted: retention follows this run's line."""
    run = tmp_path / "run"
    tiny_run(data, run, steps=2)
    shutil.copytree(run / "ckpt-0000002", run / "ckpt-0000900")  # higher step, not in this run's line
    tiny_run(data, run, steps=5, resume=True)
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt-"))
    assert names == ["ckpt-0000004", "ckpt-0000005", "ckpt-0000900"]
    assert latest_checkpoint(run).name == "ckpt-0000005"


@pytest.mark.parametrize("command", ["eval", "surprise"])
@pytest.mark.parametrize("bad", ["file", "unwritable"])
def test_outputs_are_checked_before_the_work(data, full, tmp_path, capsys, monkeypatch, command, bad):
    if bad == "unwritable":
        out = tmp_path / "ro" / "out"
        out.parent.mkdir()
        out.parent.chmod(0o500)
        if os.access(out.parent, os.W_OK):  # root ignores permission bits: /sys refuses even root
            out = "/sys/lewm-fast-test-out"
    else:
        out = tmp_path / "a_file"
        out.write_text("x")
    monkeypatch.setattr("lewm_fast.evaluation.closed_loop.describe_data", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr("lewm_fast.evaluation.surprise.load_checkpoint", lambda *a: pytest.fail("work started"))
    extra = ["--data", str(data), "--env", "tworoom"] if command == "eval" else ["--env", "tworoom"]
    assert cli_main([command, "--ckpt", str(full), *extra, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "--out" in err and str(out if bad == "file" else "") in err


# ---- exact resume -----------------------------------------------------------------------------------


def test_resume_restores_the_run_choices(data, full, tmp_path):
    """`--resume` with none of the choices given continues with the run's own (lr, lambda, num_proj,
    model, batch, precision...) and equals the uninterrupted run bit for bit."""
    run = tmp_path / "run"
    tiny_run(data, run, steps=5, max_seconds=0.0)  # stops after one step
    assert latest_checkpoint(run).name == "ckpt-0000001"
    train(TrainConfig(data=str(data), out=str(run), resume=True, progress=False, val_every=10**6, log_every=1,
                      ckpt_every=1))  # fmt: skip
    assert_same_weights(run, full)
    resolved = json.loads((run / "train_config.json").read_text())
    assert resolved["lr"] == 1e-3 and resolved["num_proj"] == 32 and resolved["amp"] == "off"


@pytest.mark.parametrize(
    "flag, value",
    [("--lr", "0.0005"), ("--lambda", "0.5"), ("--num-proj", "64"), ("--seed", "1"), ("--batch-size", "4"),
     ("--amp", "bf16"), ("--weight-decay", "0.1"), ("--grad-clip", "2"), ("--warmup", "3"),
     ("--val-fraction", "0.5"), ("--preset", "paper"), ("--model", '{"pred_depth": 1}')],
)  # fmt: skip
def test_resume_refuses_a_changed_choice_naming_the_flag(data, full, tmp_path, capsys, flag, value):
    run = tmp_path / "run"
    shutil.copytree(full, run, symlinks=True)
    before = _snapshot(run)
    args = ["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress", flag, value]
    assert cli_main(args) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"lewm-fast: error: {flag}: ") and "was trained with" in err
    assert _snapshot(run) == before


def test_resume_keeps_the_measured_precision(data, tmp_path, monkeypatch):
    """--amp auto measured once; a resume takes that choice instead of measuring again."""
    run = tmp_path / "run"
    monkeypatch.setattr(trainer_module, "amp_needs_probe", lambda amp, device: amp == "auto")  # a native-bf16 CPU
    monkeypatch.setattr(trainer_module, "choose_amp", lambda amp, device, fn: amp == "bf16" or amp == "auto")
    assert tiny_run(data, run, steps=1, amp="auto")["amp"] == "bf16"
    monkeypatch.setattr(trainer_module, "choose_amp", lambda *a: pytest.fail("measured again"))
    assert tiny_run(data, run, steps=2, amp=None, resume=True)["amp"] == "bf16"
    assert tiny_run(data, run, steps=3, amp="auto", resume=True)["amp"] == "bf16"


def test_the_same_data_under_another_path_resumes_a_changed_file_does_not(data, full, tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(data, run, steps=5, max_seconds=0.0)
    copy = tmp_path / "elsewhere" / "copy.h5"
    copy.parent.mkdir()
    shutil.copy(data, copy)
    cwd = os.getcwd()
    try:
        os.chdir(copy.parent)  # a relative path to a copy of the file
        tiny_run(os.path.join(".", "copy.h5"), run, steps=5, resume=True)
    finally:
        os.chdir(cwd)
    assert_same_weights(run, full)
    other = tiny_data(tmp_path / "other.h5", seed=3)
    assert cli_main(train_flags(other, run, "--resume")) == 2
    assert "--data: " in _one_line_error(capsys)


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(data, full, tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(data, run, steps=5, max_seconds=0.0)
    tiny_run(data, run, steps=2, resume=True)  # ckpt-1, ckpt-2 (kept: the newest two)
    state = run / "ckpt-0000002" / "train_state.pt"
    cut = state.stat().st_size // 2
    state.write_bytes(state.read_bytes()[:cut])  # cut short (a full disk, a bad copy)
    capsys.readouterr()
    tiny_run(data, run, steps=5, resume=True)
    out = capsys.readouterr().out
    assert "skipped" in out and "ckpt-0000002" in out and "resuming from ckpt-0000001" in out
    assert_same_weights(run, full)
    assert (run / "ckpt-0000002.old" / "train_state.pt").stat().st_size == cut  # moved aside, not deleted
    assert [p.name for p in checkpoints(run)] == ["ckpt-0000004", "ckpt-0000005"]


def test_states_load_weights_only(data, full):
    """train_state.pt holds tensors and plain containers only; evaluation needs train_state.json alone."""
    ckpt = latest_checkpoint(full)
    state = torch.load(ckpt / "train_state.pt", weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "rng"}
    meta = json.loads((ckpt / "train_state.json").read_text())
    assert meta["step"] == 5 and meta["config"]["data"] == str(data) and len(meta["data"]["fingerprint"]) == 64


def test_held_out_episodes_follow_the_data_not_its_path(data, full, tmp_path):
    """The training file under another path (or a copy) is still the training file: its validation split
    is used, not all episodes (some of which the model trained on)."""
    from lewm_fast.evaluation.protocol import held_out_episodes, load_checkpoint

    copy = tmp_path / "copy.h5"
    shutil.copy(data, copy)
    eps, how = held_out_episodes(copy, load_checkpoint(full).train_config)
    assert "validation split" in how and len(eps) == 2
