"""Collection, the HDF5 layout (and the public reader), crash safety, and training windows."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from lewm_fast.data import DataFormatError, EpisodeWriter, Normalizer, WindowDataset, prepare_pixels, split_episodes
from lewm_fast.data.collect import collect

SIZE = 28


def _collect(path, episodes, **kw):
    kw = {"image_size": SIZE, "max_steps": 30, "seed": 0, "progress": False, **kw}
    return collect("tworoom", path, episodes, **kw)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tworoom.h5"
    _collect(path, 6)
    return path


def test_layout_matches_stable_worldmodel(small_file):
    with h5py.File(small_file, "r") as f:
        assert {"pixels", "action", "state", "proprio", "ep_len", "ep_offset"} <= set(f)
        n = int(f["ep_len"][:].sum())
        assert f["pixels"].shape == (n, SIZE, SIZE, 3) and f["pixels"].dtype == np.uint8
        assert f["action"].shape == (n, 2) and f["action"].dtype == np.float32
        np.testing.assert_array_equal(f["ep_offset"][:], np.r_[0, np.cumsum(f["ep_len"][:])[:-1]])
        ends = f["ep_offset"][:] + f["ep_len"][:] - 1
        assert np.isnan(f["action"][:][ends]).all()  # no action from an episode's final observation
        assert np.isfinite(np.delete(f["action"][:], ends, axis=0)).all()
        assert f.attrs["env"] == "tworoom"


def test_collection_is_deterministic_and_resume_continues_it(tmp_path, small_file):
    part = tmp_path / "part.h5"
    _collect(part, 2)
    _collect(part, 6, resume=True)
    with h5py.File(part, "r") as a, h5py.File(small_file, "r") as b:
        for col in ("pixels", "action", "state", "ep_len", "ep_offset"):
            np.testing.assert_array_equal(a[col][:], b[col][:])
    with pytest.raises(FileExistsError, match="--resume"):
        _collect(part, 6)
    with pytest.raises(ValueError, match="seed"):
        _collect(part, 8, resume=True, seed=1)


def _episodes(path):
    with h5py.File(path, "r") as f:
        lengths, offsets = f["ep_len"][:], f["ep_offset"][:]
        return lengths, offsets, {c: f[c].shape[0] for c in ("pixels", "action", "state")}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_collection_leaves_whole_episodes_and_resumes(tmp_path, small_file, sig):
    path = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "lewm_fast.cli", "collect", "--env", "tworoom", "--episodes", "100000",
           "--image-size", str(SIZE), "--max-steps", "30", "--out", str(path), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)
    time.sleep(0.3 + np.random.default_rng().uniform(0, 0.3))  # somewhere in the middle of a write
    proc.send_signal(sig)
    proc.wait(timeout=30)
    lengths, offsets, rows = _episodes(path)  # opens: the file survived
    assert lengths.size >= 1 and (lengths == 31).all()
    assert all(r >= offsets[-1] + lengths[-1] for r in rows.values())
    # resume to 6 episodes (or trim to them): the first 6 equal an uninterrupted run
    if lengths.size < 6:
        _collect(path, 6, resume=True)
        with h5py.File(path, "r") as a, h5py.File(small_file, "r") as b:
            np.testing.assert_array_equal(a["pixels"][:], b["pixels"][:])
            np.testing.assert_array_equal(a["action"][:], b["action"][:])
    else:
        with h5py.File(path, "r") as a, h5py.File(small_file, "r") as b:
            n = int(b["ep_len"][:].sum())
            np.testing.assert_array_equal(a["pixels"][:n], b["pixels"][:])


def test_resume_trims_rows_of_an_episode_cut_short(tmp_path):
    """Rows past the index (an episode cut short) are left alone until the next episode is appended, then
    trimmed so that it starts right after the last complete one."""
    path = tmp_path / "cut.h5"
    _collect(path, 2)
    with h5py.File(path, "a") as f:  # simulate rows written but never indexed
        for col in ("pixels", "action", "state", "proprio"):
            f[col].resize(f[col].shape[0] + 7, axis=0)
    with EpisodeWriter(path, resume=True, attrs={"env": "tworoom"}) as w:
        assert w.num_episodes == 2
    assert _episodes(path)[2]["pixels"] == 2 * 31 + 7  # a writer that wrote nothing changed nothing
    _collect(path, 3, resume=True)
    lengths, offsets, rows = _episodes(path)
    assert lengths.tolist() == [31, 31, 31] and offsets.tolist() == [0, 31, 62]
    assert all(r == lengths.sum() for r in rows.values())


# ---- windows -------------------------------------------------------------------------------------


def test_windows_frames_actions_and_normalisation(small_file):
    ds = WindowDataset(small_file, image_size=SIZE, num_frames=4, frameskip=5)
    assert len(ds) == 6 * (31 - 20 + 1)
    with h5py.File(small_file, "r") as f:
        pixels, actions = f["pixels"][:], f["action"][:]
    i = 13  # episode 1, start row 1 -> flat row 32
    item = ds[i]
    s = int(ds.starts[i])
    assert s == 31 + 1
    expect_px = prepare_pixels(torch.from_numpy(pixels[[s, s + 5, s + 10, s + 15]]), SIZE)
    torch.testing.assert_close(item["pixels"], expect_px)
    blocks = torch.from_numpy(actions[s : s + 20]).reshape(4, 10)
    torch.testing.assert_close(item["action"], torch.nan_to_num(ds.normalizer.normalize(blocks)))
    # ImageNet normalisation of a white pixel (the background)
    white = prepare_pixels(torch.full((1, 2, 2, 3), 255, dtype=torch.uint8), 2)
    torch.testing.assert_close(
        white[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    )
    batch = ds.__getitems__([0, 5, 9])
    assert batch["pixels"].shape == (3, 4, 3, SIZE, SIZE) and batch["action"].shape == (3, 4, 10)
    resized = WindowDataset(small_file, image_size=14, in_memory=False)
    assert resized[0]["pixels"].shape == (4, 3, 14, 14)
    torch.testing.assert_close(resized.__getitems__([3, 1])["action"], ds.__getitems__([3, 1])["action"])


def test_normalizer_roundtrip_and_split_by_episode(tmp_path):
    a = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 2)).astype(np.float32)
    a[7] = np.nan
    n = Normalizer.fit(a)
    np.testing.assert_allclose(n.mean, np.nanmean(a, 0), rtol=1e-4)
    blocks = torch.randn(5, 4, 10)
    torch.testing.assert_close(n.denormalize(n.normalize(blocks)), blocks, atol=1e-5, rtol=1e-5)
    n.save(tmp_path / "n.json")
    np.testing.assert_array_equal(Normalizer.load(tmp_path / "n.json").std, n.std)
    train, val = split_episodes(20, 0.1, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 20
    assert split_episodes(2, 0.1, 0)[1].size == 1


# ---- bad input -----------------------------------------------------------------------------------


def _write(path, **cols):
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f[k] = v


def test_bad_files_give_clear_errors(tmp_path):
    px = np.zeros((30, 8, 8, 3), np.uint8)
    act = np.zeros((30, 2), np.float32)
    idx = {"ep_len": np.array([30]), "ep_offset": np.array([0])}
    with pytest.raises(DataFormatError, match="no 'action' column"):
        _write(tmp_path / "a.h5", pixels=px, **idx)
        WindowDataset(tmp_path / "a.h5", 8)
    with pytest.raises(DataFormatError, match="no 'ep_len'"):
        _write(tmp_path / "b.h5", pixels=px, action=act)
        WindowDataset(tmp_path / "b.h5", 8)
    with pytest.raises(DataFormatError, match="'pixels' must be uint8"):
        _write(tmp_path / "c.h5", pixels=px.astype(np.float32), action=act, **idx)
        WindowDataset(tmp_path / "c.h5", 8)
    with pytest.raises(DataFormatError, match="shorter than a training window .* 20 steps"):
        _write(tmp_path / "d.h5", pixels=px, action=act, ep_len=np.array([15, 15]), ep_offset=np.array([0, 15]))
        WindowDataset(tmp_path / "d.h5", 8)
    with pytest.raises(DataFormatError, match="has 30 rows but the episode index needs 40"):
        _write(tmp_path / "e.h5", pixels=px, action=act, ep_len=np.array([40]), ep_offset=np.array([0]))
        WindowDataset(tmp_path / "e.h5", 8)
    (tmp_path / "f.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        WindowDataset(tmp_path / "f.h5", 8)
    with pytest.raises(FileNotFoundError, match="no HDF5 file"):
        WindowDataset(tmp_path / "missing.h5", 8)


def test_collect_cli_errors():
    r = subprocess.run([sys.executable, "-m", "lewm_fast.cli", "collect", "--env", "nope", "--episodes", "1",
                        "--out", "/tmp/x.h5"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0
    assert "--env: expected one of ['tworoom', 'pusht', 'reacher', 'cube'], got 'nope'" in r.stderr


# ---- the public stable-worldmodel reader and writer (run where stable_worldmodel imports) ----------


def test_public_reader_opens_our_file(small_file):
    pytest.importorskip("stable_worldmodel")
    from stable_worldmodel.data import HDF5Dataset

    theirs = HDF5Dataset(path=small_file, frameskip=5, num_steps=4)
    ours = WindowDataset(small_file, image_size=SIZE)
    assert len(theirs) == len(ours)
    item = theirs[13]
    with h5py.File(small_file, "r") as f:
        s = int(ours.starts[13])
        np.testing.assert_array_equal(item["pixels"].numpy(), f["pixels"][s : s + 20 : 5].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(item["action"].numpy(), f["action"][s : s + 20].reshape(4, 10))


def test_our_reader_opens_a_public_file(tmp_path):
    pytest.importorskip("stable_worldmodel")
    from stable_worldmodel.data import HDF5Dataset, HDF5Writer

    rng = np.random.default_rng(0)
    path = tmp_path / "public.h5"
    with HDF5Writer(path) as w:
        for length in (25, 30):
            w.write_episode({"pixels": rng.integers(0, 255, (length, 16, 16, 3), dtype=np.uint8),
                             "action": rng.normal(size=(length, 2)).astype(np.float32),
                             "proprio": rng.normal(size=(length, 2)).astype(np.float32)})  # fmt: skip
    ours = WindowDataset(path, image_size=16)
    theirs = HDF5Dataset(path=path, frameskip=5, num_steps=4)
    assert len(ours) == len(theirs) == (25 - 19) + (30 - 19)
    item = theirs[7]
    raw = item["action"].reshape(4, 10)
    torch.testing.assert_close(ours[7]["action"], ours.normalizer.normalize(raw))
    torch.testing.assert_close(ours[7]["pixels"], prepare_pixels(item["pixels"].permute(0, 2, 3, 1), 16))


def test_writer_signals_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    _collect(tmp_path / "s.h5", 1)
    assert signal.getsignal(signal.SIGTERM) == before
    assert os.path.exists(tmp_path / "s.h5")
