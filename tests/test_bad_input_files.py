"""Bad files and bad API input, table-driven: config.json, weights.pt, normalization.json, episode files,
SIGReg and the model. Each error is a ValueError/TypeError naming the file (and the field) or the
argument, what was expected and what came."""

import json
import math
import os

import h5py
import numpy as np
import pytest
import torch
from helpers import tiny_model
from tiny_runs import tiny_data

import lewm_fast as lf
from lewm_fast._io import FileFormatError
from lewm_fast.cli import main as cli_main
from lewm_fast.data.dataset import WindowDataset
from lewm_fast.data.hdf5 import DataFormatError
from lewm_fast.evaluation.protocol import load_checkpoint

# ---- config.json ----------------------------------------------------------------------------------


def _with(path: str, value=None, delete: bool = False):
    """A change to the published config: set (or delete) the field at a dotted path, on a copy."""

    def change(config: dict) -> dict:
        config = json.loads(json.dumps(config))
        *parents, last = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        if delete:
            del node[last]
        else:
            node[last] = value
        return config

    return change


CONFIGS = [  # (change to the published config, error type, message fragment)
    (_with("encoder", [1]), ValueError, "config: expected a 'encoder' section (a dict), got [1]"),
    (_with("encoder.image_size", "28"), TypeError, "encoder.image_size: expected a positive int, got '28' (str)"),
    (_with("encoder.image_size", 32.7), TypeError, "config.encoder.image_size: expected a positive int, got 32.7"),
    (_with("encoder.patch_size", 0), ValueError, "config.encoder.patch_size: expected a positive int, got 0"),
    (_with("lewm_fast.action_dim", 0), ValueError, "config.lewm_fast.action_dim: expected a positive int, got 0"),
    (_with("action_encoder.input_dim", 0), ValueError, "config.action_encoder.input_dim: expected a positive int"),
    (_with("predictor.dropout", "x"), TypeError, "config.predictor.dropout: expected a finite number"),
    (_with("predictor.depth", delete=True), ValueError, "config.predictor: missing field 'depth'"),
]  # fmt: skip


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpt"
    lf.interop.save_official(tiny_model(), folder)
    return folder


@pytest.mark.parametrize("change, error, message", CONFIGS, ids=[c[2][:40] for c in CONFIGS])
def test_bad_config_json_names_the_file_and_the_field(ckpt, change, error, message):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(change(config)))
    with pytest.raises(error) as e:
        lf.interop.load_official(ckpt)
    assert str(ckpt / "config.json") in str(e.value) and message in str(e.value)


def test_config_json_null_and_garbage(ckpt):
    for text, message in (("null", "expected a JSON object"), ("[1, 2]", "expected a JSON object"),
                          ("{not json", "not valid JSON")):  # fmt: skip
        (ckpt / "config.json").write_text(text)
        with pytest.raises(FileFormatError, match=f"{ckpt / 'config.json'}: {message}"):
            lf.interop.load_official(ckpt)
    with pytest.raises(TypeError, match="config: expected a JSON object with encoder/predictor/... sections, got list"):
        lf.LeWMConfig.from_published([1])


WEIGHTS = [
    (b"", "the file is empty"),
    (b"hello world" * 10, "not a readable PyTorch file"),  # was `KeyError: 101`
    (bytes(range(256)) * 4, "not a readable PyTorch file"),
]


@pytest.mark.parametrize("content, message", WEIGHTS, ids=["empty", "text", "bytes"])
def test_bad_weights_name_the_file(ckpt, content, message):
    (ckpt / "weights.pt").write_bytes(content)
    with pytest.raises(FileFormatError, match=f"{ckpt / 'weights.pt'}: {message}"):
        lf.interop.load_official(ckpt)


def test_truncated_and_mismatched_weights(ckpt):
    good = (ckpt / "weights.pt").read_bytes()
    (ckpt / "weights.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(FileFormatError, match="weights.pt: not a readable PyTorch file, corrupt or truncated"):
        lf.interop.load_official(ckpt)
    torch.save({"something": torch.zeros(2)}, ckpt / "weights.pt")
    with pytest.raises(ValueError, match="weights.pt: state_dict: does not match the model's parameters"):
        lf.interop.load_official(ckpt)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [({"map_location": "tpu"}, ValueError, "map_location: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
     ({"map_location": 3.5}, ValueError, "map_location: "),
     ({"action_dim": 0}, ValueError, "action_dim: expected an int >= 1, got 0"),
     ({"action_dim": "2"}, TypeError, "action_dim: ")],
)  # fmt: skip
def test_load_official_arguments(ckpt, kwargs, error, message):
    with pytest.raises(error, match=message):
        lf.interop.load_official(ckpt, **kwargs)


@pytest.mark.parametrize("text", ["", "[]", '{"action_mean": [0, 0]}', '{"action_mean": [0], "action_std": [0]}',
                                  '{"action_mean": ["a"], "action_std": [1]}'])  # fmt: skip
def test_bad_normalization_json_names_the_file(ckpt, text, tmp_path, capsys):
    (ckpt / "normalization.json").write_text(text)
    with pytest.raises(ValueError, match=str(ckpt / "normalization.json")):
        load_checkpoint(ckpt)


def test_the_cli_names_a_bad_checkpoint_file_on_one_line(ckpt, tmp_path, capsys):
    (ckpt / "normalization.json").write_text('{"action_mean": [0, 0], "action_std": [1, 1]}')
    (ckpt / "config.json").write_text('{"encoder": null}')
    assert cli_main(["surprise", "--ckpt", str(ckpt), "--env", "tworoom", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ckpt / 'config.json'}: config: expected a 'encoder' section" in err


# ---- episode files ----------------------------------------------------------------------------------


def _write(path, pixels, ep_len, ep_offset, action=None, compression=None):
    n = len(pixels)
    action = np.zeros((n, 2), np.float32) if action is None else action
    with h5py.File(path, "w") as f:
        f.create_dataset("pixels", data=pixels, chunks=(1, *pixels.shape[1:]), compression=compression)
        f.create_dataset("action", data=action)
        f.create_dataset("ep_len", data=np.asarray(ep_len))
        f.create_dataset("ep_offset", data=np.asarray(ep_offset))
    return path


FRAMES = np.random.default_rng(0).integers(0, 255, (60, 16, 16, 3), dtype=np.uint8)
NAN_MID = np.zeros((60, 2), np.float32)
NAN_MID[10] = np.nan

DATA = [
    ("overlap", dict(pixels=FRAMES, ep_len=[30, 30], ep_offset=[0, 0]), "episodes 0 and 1 overlap"),
    ("1x1", dict(pixels=FRAMES[:, :1, :1], ep_len=[30, 30], ep_offset=[0, 30]), "at least 8x8 pixels, got 1x1"),
    ("non-square", dict(pixels=FRAMES[:, :, :12], ep_len=[30, 30], ep_offset=[0, 30]), "square frames"),
    ("nan action", dict(pixels=FRAMES, ep_len=[30, 30], ep_offset=[0, 30], action=NAN_MID),
     "column 'action' has NaN/Inf at row 10 (episode 0, step 10 of 30)"),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, message", DATA, ids=[d[0] for d in DATA])
def test_bad_episode_files_are_refused_naming_the_file(tmp_path, name, kwargs, message):
    path = _write(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(DataFormatError, match=f"bad.h5.*{message}".replace("(", r"\(").replace(")", r"\)")):
        WindowDataset(path, image_size=16)


def test_scrambled_bytes_mid_file_name_the_file_and_the_column(tmp_path, capsys):
    """20 kB of random bytes in the middle of a (compressed) episode file: an HDF5 read error, named."""
    frames = np.random.default_rng(1).integers(0, 255, (400, 32, 32, 3), dtype=np.uint8)
    path = _write(tmp_path / "scrambled.h5", frames, [200, 200], [0, 200], compression="gzip")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(2).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(DataFormatError, match="scrambled.h5: cannot read column 'pixels' \\(the file is damaged"):
        WindowDataset(path, image_size=32)
    args = ["train", "--data", str(path), "--out", str(tmp_path / "run"), "--no-progress", "--steps", "1"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scrambled.h5: cannot read column 'pixels'" in err


def test_overlapping_episodes_are_refused_by_train_before_anything_is_written(tmp_path, capsys):
    path = _write(tmp_path / "overlap.h5", FRAMES, [30, 30], [0, 0])
    out = tmp_path / "run"
    assert cli_main(["train", "--data", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "overlap.h5: episodes 0 and 1 overlap" in capsys.readouterr().err and not out.exists()


def test_fingerprint_sees_a_changed_file(tmp_path):
    from lewm_fast.data.hdf5 import fingerprint

    a = tiny_data(tmp_path / "a.h5", episodes=3)
    b = tiny_data(tmp_path / "b.h5", episodes=3, seed=1)
    assert fingerprint(a) == fingerprint(a) and fingerprint(a) != fingerprint(b)


# ---- SIGReg and the model -----------------------------------------------------------------------------


def _nan(*shape):
    x = torch.randn(*shape)
    x.view(-1)[0] = float("nan")
    return x


SIGREG = [
    (lambda: lf.SIGReg(num_proj=8)(torch.randn(4, 0, 8)), "proj: expected T, B and D >= 1, got shape (4, 0, 8)"),
    (lambda: lf.SIGReg(num_proj=8)(torch.randn(0, 4, 8)), "proj: expected T, B and D >= 1"),
    (lambda: lf.SIGReg(num_proj=8)(torch.randn(4, 8, 0)), "proj: expected T, B and D >= 1"),  # was 3.216
    (lambda: lf.SIGReg(num_proj=8)(_nan(2, 4, 8)), "proj: expected finite values, got NaN or Inf"),
    (lambda: lf.SIGReg(num_proj=0), "num_proj: expected a positive int, got 0"),
    (lambda: lf.sigreg(torch.randn(2, 4, 8), torch.randn(8, 0)), "directions: expected M >= 1"),
    (lambda: lf.sigreg(torch.randn(2, 4, 8), _nan(8, 16)), "directions: expected finite values"),
    (lambda: lf.sigreg(torch.randn(2, 0, 8), torch.randn(8, 16)), "proj: expected T, B and D >= 1"),
    (lambda: lf.sigreg(torch.full((2, 4, 8), float("inf")), torch.randn(8, 16)), "proj: expected finite values"),
]


@pytest.mark.parametrize("call, message", SIGREG, ids=[s[1][:30] for s in SIGREG])
def test_sigreg_refuses(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)


def test_sigreg_still_computes_a_number_on_good_input():
    assert math.isfinite(lf.SIGReg(num_proj=8)(torch.randn(2, 4, 8)).item())


def test_predict_refuses_nan_like_encode():
    model = tiny_model()
    emb, act = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    with pytest.raises(ValueError, match="emb: expected finite values"):
        model.predict(_nan(1, 3, 32), act)
    with pytest.raises(ValueError, match="act_emb: expected finite values"):
        model.predict(emb, _nan(1, 3, 32))
    with pytest.raises(ValueError, match="emb: expected at least 1 and at most num_frames=3 frames, got 0"):
        model.predict(emb[:, :0], act[:, :0])


@pytest.mark.parametrize("changes, message", [(dict(dropout="x"), "LeWMConfig.dropout: expected a finite number"),
                                              (dict(enc_ln_eps=0.0), "LeWMConfig.enc_ln_eps: expected a positive"),
                                              (dict(bogus=1), "unknown field(s) ['bogus']")])  # fmt: skip
def test_config_replace_checks_types_and_names(changes, message):
    with pytest.raises(ValueError) as e:
        lf.LeWMConfig().replace(**changes)
    assert message in str(e.value)
