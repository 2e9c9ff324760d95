"""Nobody in: a pickle payload planted in any file a command reads runs nowhere, and the error names the
file. Every command is run the way a user runs it (`lewm_fast.cli.main`), on a checkpoint folder someone
could have shared."""

import json
import os
import shutil

import pytest
import torch
from tiny_runs import TINY, tiny_data, tiny_run

import lewm_fast as lf
from lewm_fast._io import UnsafeFileError
from lewm_fast.cli import main as cli_main
from lewm_fast.evaluation.demo import DemoConfig, run_demo
from lewm_fast.training.checkpoint import latest_checkpoint


class _Payload:
    """Unpickling this runs a shell command (what a hostile checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, marker, legacy: bool = False) -> None:
    """Replace `path` by a torch file holding the payload (zip or legacy torch.save format)."""
    path.unlink()
    torch.save({"weight": torch.zeros(1), "x": _Payload(marker)}, path, _use_new_zipfile_serialization=not legacy)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    data = tiny_data(root / "tworoom.h5")
    tiny_run(data, root / "run")
    return data, root / "run"


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PAYLOAD_RAN"
    yield m
    assert not m.exists(), "the pickle payload ran"


def test_the_payload_is_live(tmp_path):
    """The planted file does run code when loaded without weights_only (so the tests below can fail)."""
    path, m = tmp_path / "x.pt", tmp_path / "ran"
    path.write_bytes(b"")
    plant(path, m)
    torch.load(path, weights_only=False)  # on purpose, on our own payload: proof that it would run
    assert m.exists()


def _shared_copy(run, tmp_path):
    """A copy of the run folder, as someone would share it."""
    data, folder = run
    copy = tmp_path / "shared_run"
    shutil.copytree(folder, copy, symlinks=True)
    return data, copy, latest_checkpoint(copy)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lewm-fast: error: "), err
    return err


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("name", ["weights.pt", "train_state.pt"])
def test_train_resume_refuses_a_planted_file(run, tmp_path, marker, capsys, name, legacy):
    data, copy, ckpt = _shared_copy(run, tmp_path)
    plant(ckpt / name, marker, legacy)
    args = ["train", "--data", str(data), "--out", str(copy), "--resume", "--steps", "5", "--no-progress"]
    assert cli_main(args) == 2
    err = _one_line_error(capsys)
    assert str(ckpt / name) in err and "refused" in err and "run code" in err


EVAL = ["--env", "tworoom", "--episodes", "2", "--budget", "5", "--samples", "8", "--topk", "2", "--iters", "2",
        "--dtype", "fp32"]  # fmt: skip
SURPRISE = ["--env", "tworoom", "--episodes", "2", "--steps", "20", "--perturb-step", "10"]


@pytest.mark.parametrize("command", ["eval", "surprise"])
def test_eval_and_surprise_refuse_planted_weights(run, tmp_path, marker, capsys, command):
    data, copy, ckpt = _shared_copy(run, tmp_path)
    plant(ckpt / "weights.pt", marker)
    extra = [*EVAL, "--data", str(data)] if command == "eval" else SURPRISE
    assert cli_main([command, "--ckpt", str(copy), *extra, "--out", str(tmp_path / "o")]) == 2
    assert str(ckpt / "weights.pt") in _one_line_error(capsys)


@pytest.mark.parametrize("command", ["eval", "surprise"])
def test_eval_and_surprise_never_read_train_state(run, tmp_path, marker, command):
    """They need the JSON config and the weights only: a payload in train_state.pt is not even opened."""
    data, copy, ckpt = _shared_copy(run, tmp_path)
    plant(ckpt / "train_state.pt", marker)
    extra = [*EVAL, "--data", str(data)] if command == "eval" else SURPRISE
    assert cli_main([command, "--ckpt", str(copy), *extra, "--out", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("legacy", [False, True])
def test_load_official_refuses_a_planted_file(run, tmp_path, marker, legacy):
    _, copy, ckpt = _shared_copy(run, tmp_path)
    plant(ckpt / "weights.pt", marker, legacy)
    with pytest.raises(UnsafeFileError, match=f"{ckpt / 'weights.pt'}: refused: .*posix.system.*run code"):
        lf.interop.load_official(ckpt)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    cfg = DemoConfig(out=str(out), episodes=10, max_steps=40, image_size=28, steps=2, batch_size=8, model=TINY,
                     eval_episodes=2, samples=8, iters=2, topk=2, surprise_episodes=2, dtype="fp32",
                     progress=False)  # fmt: skip
    run_demo(cfg, log=lambda m: None)
    return out


@pytest.mark.parametrize("name", ["weights.pt", "train_state.pt"])
def test_demo_rerun_refuses_a_planted_file(demo_folder, tmp_path, marker, capsys, name):
    copy = tmp_path / "demo"
    shutil.copytree(demo_folder, copy, symlinks=True)
    ckpt = latest_checkpoint(copy / "run")
    plant(ckpt / name, marker)
    args = ["demo", "--out", str(copy), "--episodes", "10", "--max-steps", "40", "--image-size", "28", "--steps",
            "2", "--batch-size", "8", "--model", json.dumps(TINY), "--eval-episodes", "2",
            "--surprise-episodes", "2", "--samples", "8", "--iters", "2", "--topk", "2", "--dtype", "fp32",
            "--no-progress", "--resume"]  # fmt: skip
    assert cli_main(args) == 2
    assert str(ckpt / name) in _one_line_error(capsys)


def test_an_old_pickled_train_state_is_not_loaded_by_resume(run, tmp_path, marker, capsys):
    """A checkpoint from before train_state.json (format 1: pickled numpy RNG state) is named, not loaded."""
    data, copy, ckpt = _shared_copy(run, tmp_path)
    for folder in copy.glob("ckpt-*"):
        (folder / "train_state.json").unlink()
        plant(folder / "train_state.pt", marker)
    assert cli_main(["train", "--data", str(data), "--out", str(copy), "--resume", "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "no intact checkpoint" in err and "older lewm_fast" in err
