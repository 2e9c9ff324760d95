"""Hostile collection: a disk that fills up (a real 1 MiB tmpfs, the `small_disk` fixture of conftest.py;
a file-size limit, which needs no mount), a request that cannot fit, a file of another layout given to
--resume, a kill. Whatever happens, the command ends in one line naming the file, never a traceback or a
crash, and the file holds whole episodes (equal to an uninterrupted run's) that --resume continues, or it
is refused before a byte changes."""

import os
import signal

import h5py
import numpy as np
import pytest
from hostile import cli, grow, one_line_error, snapshot

from lewm_fast.data.collect import collect
from lewm_fast.data.hdf5 import open_h5, read_index
from lewm_fast.data.writer import EpisodeWriter, episode_bytes

# 64 px TwoRoom episodes of 31 frames: ~0.4 MiB each, so a 1 MiB disk holds one or two.
ARGS = ["collect", "--env", "tworoom", "--image-size", "64", "--max-steps", "30", "--no-progress"]
# The library as a user's process sees it after another writer took the room collect had checked for.
ANOTHER_WRITER = """import sys
import lewm_fast.data.collect as c
c.check_room = lambda *a, **k: None
{extra}
from lewm_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Six episodes collected on a roomy disk: what any interrupted and resumed file must equal."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    collect("tworoom", path, 6, image_size=64, max_steps=30, progress=False)
    return path


def _rows(path, columns=("pixels", "action", "state", "proprio")):
    with open_h5(path) as f:
        lengths, offsets = read_index(f, columns)
        n = int(lengths.sum())
        return lengths, offsets, {c: f[c][:n] for c in columns}


def assert_prefix_of(path, reference):
    """`path` holds whole episodes, each equal to the reference's, and they read back."""
    lengths, offsets, cols = _rows(path)
    ref_lengths, ref_offsets, ref = _rows(reference)
    k = lengths.size
    assert k >= 1 and np.array_equal(lengths, ref_lengths[:k]) and np.array_equal(offsets, ref_offsets[:k])
    for c in cols:
        np.testing.assert_array_equal(cols[c], ref[c][: len(cols[c])], err_msg=c)
    return k


def test_a_request_larger_than_the_disk_is_refused_before_a_byte_is_written(small_disk):
    out = small_disk / "d.h5"
    err = one_line_error(cli(*ARGS, "--episodes", "20", "--out", out))
    assert err.startswith("--out: ") and str(out) in err and "MiB" in err and "free" in err
    assert list(small_disk.iterdir()) == []


def test_a_disk_filled_by_another_writer_stops_at_an_episode_boundary_and_resumes(small_disk, reference):
    out = small_disk / "d.h5"
    err = one_line_error(cli(*ARGS, "--episodes", "6", "--out", out, code=ANOTHER_WRITER.format(extra="")))
    assert err.startswith("--out: no room for episode") and str(out) in err and "--resume" in err
    held = assert_prefix_of(out, reference)
    assert f"holds {held} complete episode(s)" in err
    assert [p.name for p in small_disk.iterdir()] == ["d.h5"]  # no temporary left behind
    grow(small_disk, "8m")
    done = cli(*ARGS, "--episodes", "6", "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert assert_prefix_of(out, reference) == 6


def test_hdf5_meeting_a_full_disk_is_one_line_not_a_crash(small_disk, reference):
    """Even with the reservation gone (a filesystem that lies about room), HDF5's write error ends in one
    line (exit 2, not a segfault at exit) and the file holds whole episodes, read back to say so."""
    out = small_disk / "d.h5"
    no_reservation = "import lewm_fast.data.writer as w\nw.reserve = lambda *a, **k: None"
    err = one_line_error(cli(*ARGS, "--episodes", "6", "--out", out, code=ANOTHER_WRITER.format(extra=no_reservation)))
    assert err.startswith("--out: writing episode") and "No space left on device" in err
    if "is damaged" in err:  # recognisably: --resume refuses it rather than continuing
        assert one_line_error(cli(*ARGS, "--episodes", "6", "--out", out, "--resume"))
    else:
        assert f"holds {assert_prefix_of(out, reference)} complete episode(s)" in err
        grow(small_disk, "8m")
        assert cli(*ARGS, "--episodes", "6", "--out", out, "--resume").returncode == 0
        assert assert_prefix_of(out, reference) == 6


def test_a_file_size_limit_stops_at_an_episode_boundary(tmp_path, reference):
    """`ulimit -f` (RLIMIT_FSIZE): the same guarantee on any Linux machine, no mount needed."""
    out = tmp_path / "d.h5"
    limit = """import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))"""
    err = one_line_error(cli(*ARGS, "--episodes", "6", "--out", out, code=ANOTHER_WRITER.format(extra=limit)))
    assert "file-size limit" in err and str(out) in err
    assert 1 <= assert_prefix_of(out, reference) < 6
    assert cli(*ARGS, "--episodes", "6", "--out", out, "--resume").returncode == 0
    assert assert_prefix_of(out, reference) == 6


def test_a_failed_first_episode_leaves_an_overwritten_file_as_it_was(small_disk, tmp_path):
    """--overwrite replaces the old file only once the new one holds a complete episode."""
    out = small_disk / "d.h5"
    collect("tworoom", out, 1, image_size=16, max_steps=10, progress=False)
    before = snapshot(out)
    big = ["collect", "--env", "tworoom", "--image-size", "128", "--max-steps", "30", "--no-progress"]  # 1.5 MiB
    err = one_line_error(
        cli(*big, "--episodes", "3", "--out", out, "--overwrite", code=ANOTHER_WRITER.format(extra=""))
    )
    assert f"{out} is unchanged" in err and snapshot(out) == before
    assert [p.name for p in small_disk.iterdir()] == ["d.h5"]


@pytest.mark.parametrize(
    "change, message",
    [
        ("per_episode_column", "column 'ep_score' has 8 rows but the episode index needs"),
        ("group", "must be a dataset"),
        ("no_attrs", "was not written by lewm-fast collect"),
        ("gapped_offsets", "not stored one after another"),
        ("truncated", "not a readable HDF5 file"),
    ],
)  # fmt: skip
def test_resume_refuses_another_layout_before_changing_a_byte(tmp_path, change, message):
    out = tmp_path / "d.h5"
    collect("tworoom", out, 4, image_size=16, max_steps=10, progress=False)
    with h5py.File(out, "r+") as f:
        if change == "per_episode_column":
            f.create_dataset("ep_score", data=np.arange(8, dtype=np.float32), maxshape=(None,))
            del f["ep_len"]
            f["ep_len"] = np.full(8, 5, np.int32)
            del f["ep_offset"]
            f["ep_offset"] = np.arange(8, dtype=np.int64) * 5
            for col in ("pixels", "action", "state", "proprio"):
                f[col].resize(40, axis=0)
        elif change == "group":
            f.create_group("extra")
        elif change == "no_attrs":
            for key in list(f.attrs):
                del f.attrs[key]
        elif change == "gapped_offsets":
            f["ep_offset"][1] += 2
            f["ep_len"][1] -= 2
    if change == "truncated":  # a copy cut short, a disk that lost the end
        out.write_bytes(out.read_bytes()[:-4096])
    before = snapshot(out)
    err = one_line_error(cli("collect", "--env", "tworoom", "--image-size", "16", "--max-steps", "10", "--episodes",
                             "9", "--out", out, "--resume", "--no-progress"))  # fmt: skip
    assert err.startswith(f"--resume: {out} cannot be continued: ") and message in err
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-steps", "1000000000", "--episodes", "1"], "--max-steps: an episode of 1000000000 steps"),
        (["--max-steps", "100000", "--episodes", "100000000"], "--out: 100000000 more episode(s)"),
    ],
)  # fmt: skip
def test_requests_that_cannot_be_met_are_refused_at_once(tmp_path, flags, message):
    out = tmp_path / "d.h5"
    err = one_line_error(cli("collect", "--env", "tworoom", "--out", out, *flags, timeout=60))
    assert err.startswith(message) and "GiB" in err
    assert not out.exists()


def test_the_reservation_covers_what_an_episode_adds(tmp_path):
    """episode_bytes is an upper bound of what appending an episode grows the file by, for frames from 8 to
    96 px and episodes from 1 to 400 rows (the bound a full disk's safety rests on)."""
    rng = np.random.default_rng(0)
    for side, length in ((8, 400), (8, 1), (32, 60), (96, 31), (64, 3)):
        path = tmp_path / f"{side}-{length}.h5"
        with EpisodeWriter(path) as w:
            for _ in range(4):
                ep = {"pixels": rng.integers(0, 255, (length, side, side, 3), dtype=np.uint8),
                      "action": rng.standard_normal((length, 7)).astype(np.float32),
                      "state": rng.standard_normal((length, 9)).astype(np.float32)}  # fmt: skip
                before = os.path.getsize(w._tmp or path) if (w._tmp or path).exists() else 0
                w.write_episode(ep)
                assert os.path.getsize(path) - before <= episode_bytes(ep, w.chunk_rows), (side, length)


def test_a_killed_collection_resumes_to_the_uninterrupted_file(tmp_path, reference):
    """SIGKILL at a random moment: the file opens, holds whole episodes, and --resume completes it."""
    import subprocess
    import sys
    import time

    out = tmp_path / "d.h5"
    proc = subprocess.Popen([sys.executable, "-m", "lewm_fast.cli", *ARGS, "--episodes", "6", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not out.exists():
        time.sleep(0.02)
    time.sleep(np.random.default_rng().uniform(0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if out.exists():
        assert_prefix_of(out, reference)
    assert cli(*ARGS, "--episodes", "6", "--out", out, "--resume" if out.exists() else "--no-progress").returncode == 0
    assert assert_prefix_of(out, reference) == 6
