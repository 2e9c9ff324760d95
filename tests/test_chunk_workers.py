"""benchmarks/chunk_workers.py times one chunk alone, two in two threads and two in two processes, and records
per worker the chunk's wall and CPU time and its voluntary context switches (a tiny chunk, two repeats)."""

import json

import chunk_workers


def test_every_mode_and_worker_is_timed(tmp_path):
    argv = ["--rows", "4", "--dtype", "fp32", "--repeats", "2", "--out", str(tmp_path)]
    assert chunk_workers.main(argv) == 0
    (path,) = tmp_path.glob("chunk_workers-*.json")
    result = json.loads(path.read_text())
    assert result["dtype"] == "fp32" and result["rows_per_chunk"] == 4
    modes = [(r["mode"], r["worker"]) for r in result["rows"]]
    assert modes == [("one thread alone", 0), ("two threads, one process", 0), ("two threads, one process", 1),
                     ("two processes", 0), ("two processes", 1)]  # fmt: skip
    for r in result["rows"]:
        assert len(r["wall_ms"]) == 2 and 0 < r["wall_ms_min"] <= r["wall_ms_median"]
        assert r["cpu_ms_median"] > 0 and r["switches_median"] >= 0
