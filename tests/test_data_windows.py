"""Training windows, fast paths against their references: `prepare_pixels` against the plain formula, and
windows read from the file (`in_memory=False`) against windows from RAM, on awkward shapes."""

import numpy as np
import pytest
import torch

from lewm_fast.data import EpisodeWriter, WindowDataset, prepare_pixels
from lewm_fast.data.dataset import prepare_pixels_reference


@pytest.mark.parametrize("shape, size", [((1, 7, 7, 3), 7), ((2, 3, 13, 13, 3), 13), ((5, 16, 16, 1), 16),
                                         ((4, 20, 20, 3), 9), ((2, 2, 9, 9, 3), 24), ((3, 1, 1, 3), 1)])  # fmt: skip
def test_prepare_pixels_equals_the_plain_formula(shape, size):
    frames = torch.randint(0, 256, shape, dtype=torch.uint8)
    ref = prepare_pixels_reference(frames, size)
    for shared in (False, True):
        out = prepare_pixels(frames, size, shared=shared)
        assert out.shape == ref.shape and out.is_contiguous()
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same operations: bit-identical
    assert prepare_pixels(frames, size, shared=True).is_shared()


@pytest.fixture(scope="module")
def episode_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "w.h5"
    rng = np.random.default_rng(0)
    with EpisodeWriter(path) as w:
        for length in (23, 7, 41, 30):  # one episode shorter than a window
            act = rng.normal(size=(length, 3)).astype(np.float32)
            act[-1] = np.nan
            w.write_episode({"pixels": rng.integers(0, 256, (length, 11, 11, 3), dtype=np.uint8), "action": act,
                             "state": rng.normal(size=(length, 2)).astype(np.float32)})  # fmt: skip
    return path


@pytest.mark.parametrize("num_frames, frameskip, size", [(4, 5, 11), (3, 2, 8), (1, 1, 11), (2, 7, 16)])
def test_windows_from_the_file_equal_windows_from_ram(episode_file, num_frames, frameskip, size):
    kw = {"image_size": size, "num_frames": num_frames, "frameskip": frameskip}
    ram, disk = WindowDataset(episode_file, in_memory=True, **kw), WindowDataset(episode_file, in_memory=False, **kw)
    assert len(ram) == len(disk) > 0
    idx = np.random.default_rng(1).permutation(len(ram))[:37].tolist() + [0, len(ram) - 1, 0]  # repeats too
    a, b = ram.__getitems__(idx), disk.__getitems__(idx)
    for key in ("pixels", "action"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert a["pixels"].shape == (len(idx), num_frames, 3, size, size)
    assert a["action"].shape == (len(idx), num_frames, frameskip * 3)
