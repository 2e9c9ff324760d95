"""Bad flags, table-driven: every case exits with status 2 and one line `lewm-fast: error: <flag>: ...`
on stderr, before any collection, training or planning (nothing is written)."""

import json

import pytest
import torch
from tiny_runs import TINY, tiny_data, tiny_run

from lewm_fast.cli import main as cli_main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_cli")
    data = tiny_data(root / "tworoom.h5")
    tiny_run(data, root / "run", steps=1)
    (root / "a_file").write_text("not a folder")
    (root / "a_folder").mkdir()
    (root / "garbage.h5").write_bytes(b"not hdf5" * 100)
    return {"data": data, "run": root / "run", "file": root / "a_file", "folder": root / "a_folder",
            "garbage": root / "garbage.h5", "missing": root / "missing"}  # fmt: skip


def fill(args, files) -> list[str]:
    """Case flags with `{name}` replaced by the fixture's path of that name."""
    out = []
    for a in args:
        for name, path in files.items():
            a = a.replace("{" + name + "}", str(path))
        out.append(a)
    return out


def run_cli(argv, capsys) -> str:
    """The CLI's stderr for argv, checked to be one error line and exit status 2."""
    capsys.readouterr()
    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("lewm-fast: error: "), err
    return err[len("lewm-fast: error: ") :]


# (extra flags, the start of the message). `{x}` is filled from the `files` fixture.
TRAIN = [
    (["--grad-clip", "-1"], "--grad-clip: expected a finite number > 0, got -1.0"),
    (["--grad-clip", "0"], "--grad-clip: "),
    (["--lambda", "-1"], "--lambda: expected a finite number >= 0, got -1.0"),
    (["--lambda", "nan"], "--lambda: "),
    (["--max-minutes", "-1"], "--max-minutes: "),
    (["--max-minutes", "0"], "--max-minutes: "),
    (["--epochs", "0"], "--epochs: "),
    (["--epochs", "-1"], "--epochs: "),
    (["--steps", "0"], "--steps: "),
    (["--val-every", "0"], "--val-every: "),
    (["--log-every", "0"], "--log-every: "),
    (["--ckpt-every", "0"], "--ckpt-every: "),
    (["--batch-size", "0"], "--batch-size: "),
    (["--lr", "0"], "--lr: "),
    (["--lr", "inf"], "--lr: "),
    (["--num-proj", "0"], "--num-proj: "),
    (["--warmup", "-1"], "--warmup: "),
    (["--weight-decay", "-0.1"], "--weight-decay: "),
    (["--val-fraction", "1"], "--val-fraction: "),
    (["--num-workers", "-1"], "--num-workers: "),
    (["--seed", "-1"], "--seed: expected an int in [0, 4294967295], got -1"),
    (["--device", "bogus"], "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'bogus'"),
    (["--model", "[1]"], "--model: expected a JSON object"),
    (["--model", "{"], "--model: not valid JSON"),
    (["--model", '{"nope": 1}'], "--model: LeWMConfig: unknown field(s) ['nope']"),
    (["--model", '{"embed_dim": "32"}'], "--model: LeWMConfig.embed_dim: expected a positive int, got '32'"),
    (["--model", '{"image_size": 30}'], "--model: LeWMConfig.image_size: expected a multiple of patch_size=16"),
    (["--amp", "fp16"], "--amp: expected one of ['auto', 'bf16', 'off'], got 'fp16'"),
    (["--preset", "huge"], "--preset: expected one of ['paper', 'small'], got 'huge'"),
    (["--sigreg-backend", "fast"], "--sigreg-backend: "),
    (["--resume", "--overwrite"], "--resume, --overwrite: expected one of them"),
    (["--out", "{file}"], "--out: "),
    (["--data", "{missing}"], "--data: no file at"),
    (["--data", "{garbage}"], "--data: {garbage} is not a readable HDF5 file"),
]
if not torch.cuda.is_available():
    TRAIN.append((["--device", "cuda"], "--device: 'cuda' needs a CUDA GPU"))


@pytest.mark.parametrize("extra, message", TRAIN, ids=[" ".join(c[0]) for c in TRAIN])
def test_train(files, tmp_path, capsys, extra, message):
    out = tmp_path / "new_run"
    argv = ["train", "--data", files["data"], "--out", out, "--no-progress"]
    argv += fill(extra, files)
    assert run_cli(argv, capsys).startswith(fill([message], files)[0])
    assert not out.exists()  # refused before anything was written


COLLECT = [
    (["--image-size", "100000"], "--image-size: expected an int in [8, 1024], got 100000"),
    (["--image-size", "1"], "--image-size: "),
    (["--out", "{folder}"], "--out: "),
    (["--seed", "-1"], "--seed: "),
    (["--episodes", "0"], "--episodes: "),
    (["--env", "nope"], "--env: expected one of ['tworoom', 'pusht', 'reacher', 'cube'], got 'nope'"),
    (["--policy", "weak"], "--policy: expected one of ['mixed', 'expert', 'random']"),
    (["--max-steps", "0"], "--max-steps: "),
    (["--resume", "--overwrite"], "--resume, --overwrite: "),
]


@pytest.mark.parametrize("extra, message", COLLECT, ids=[" ".join(c[0]) for c in COLLECT])
def test_collect(files, tmp_path, capsys, extra, message):
    out = tmp_path / "d.h5"
    argv = ["collect", "--env", "tworoom", "--episodes", "2", "--out", out, "--no-progress"]
    assert run_cli(argv + fill(extra, files), capsys).startswith(message)
    assert not out.exists()


EVAL = [
    (["--horizon", "0"], "--horizon: "),  # not blamed on --receding
    (["--receding", "0"], "--receding: "),
    (["--receding", "6"], "--receding: expected at most --horizon=5 action blocks, got 6"),
    (["--topk", "0"], "--topk: "),
    (["--samples", "8", "--topk", "9"], "--topk: expected at most --samples=8 elites, got 9"),
    (["--samples", "0"], "--samples: "),
    (["--iters", "0"], "--iters: "),
    (["--episodes", "0"], "--episodes: "),
    (["--budget", "0"], "--budget: "),
    (["--goal-offset", "0"], "--goal-offset: "),
    (["--seed", "-1"], "--seed: "),
    (["--env", "nope"], "--env: "),
    (["--planner-backend", "bogus"], "--planner-backend: "),
    (["--out", "{file}"], "--out: "),
    (["--ckpt", "{missing}"], "--ckpt: no checkpoint at"),
    (["--data", "{missing}"], "--data: no episode file at"),
]


@pytest.mark.parametrize("extra, message", EVAL, ids=[" ".join(c[0]) for c in EVAL])
def test_eval(files, tmp_path, capsys, extra, message):
    out = tmp_path / "eval_out"
    argv = ["eval", "--ckpt", files["run"], "--env", "tworoom", "--data", files["data"], "--out", out]
    assert run_cli(argv + fill(extra, files), capsys).startswith(message)
    assert not out.exists()


SURPRISE = [
    (["--window", "0"], "--window: "),
    (["--window", "100"], "--window: expected 1 to 7 frames"),  # refused, not clamped
    (["--episodes", "1"], "--episodes: "),
    (["--colour", "1,2"], "--colour: expected R,G,B integers in 0..255"),
    (["--colour", "0,0,300"], "--colour: "),
    (["--seed", "-1"], "--seed: "),
    (["--steps", "0"], "--steps: "),
    (["--perturb-step", "7"], "--perturb-step: expected a multiple of frameskip=5"),
    (["--env", "nope"], "--env: "),
    (["--ckpt", "{missing}"], "--ckpt: no checkpoint at"),
]


@pytest.mark.parametrize("extra, message", SURPRISE, ids=[" ".join(c[0]) for c in SURPRISE])
def test_surprise(files, tmp_path, capsys, extra, message):
    out = tmp_path / "surprise_out"
    argv = ["surprise", "--ckpt", files["run"], "--env", "tworoom", "--out", out]
    assert run_cli(argv + fill(extra, files), capsys).startswith(message)
    assert not out.exists()


DEMO = [
    (["--samples", "0"], "--samples: "),
    (["--topk", "400"], "--topk: expected at most --samples=300 elites, got 400"),
    (["--receding", "6"], "--receding: "),
    (["--lr", "0"], "--lr: "),
    (["--lambda", "-1"], "--lambda: "),
    (["--model", "[1]"], "--model: expected a JSON object"),
    (["--image-size", "30"], "--model, --image-size: LeWMConfig.image_size: expected a multiple of patch_size=7"),
    (["--image-size", "100000"], "--image-size: "),
    (["--device", "bogus"], "--device: "),
    (["--amp", "fp16"], "--amp: "),
    (["--max-steps", "10"], "--max-steps: expected more than 25 steps"),
    (["--episodes", "1"], "--episodes: "),
    (["--surprise-episodes", "1"], "--surprise-episodes: "),
    (["--eval-episodes", "0"], "--eval-episodes: "),
    (["--iters", "0"], "--iters: "),
    (["--steps", "0"], "--steps: "),
    (["--batch-size", "0"], "--batch-size: "),
    (["--seed", "-1"], "--seed: "),
    (["--out", "{file}"], "--out: "),
]


@pytest.mark.parametrize("extra, message", DEMO, ids=[" ".join(c[0]) for c in DEMO])
def test_demo_refuses_before_collecting(files, tmp_path, capsys, extra, message):
    out = tmp_path / "demo"
    argv = ["demo", "--out", out, "--no-progress", "--model", json.dumps(TINY), "--image-size", "28"]
    assert run_cli(argv + fill(extra, files), capsys).startswith(message)
    assert not out.exists()


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--steps", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("lewm-fast: error: ")


def test_debug_shows_the_traceback(files, tmp_path, monkeypatch):
    monkeypatch.setenv("LEWM_FAST_DEBUG", "1")
    with pytest.raises(ValueError, match="--grad-clip"):
        cli_main(["train", "--data", str(files["data"]), "--out", str(tmp_path / "o"), "--grad-clip", "-1"])
