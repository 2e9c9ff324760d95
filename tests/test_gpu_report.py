"""benchmarks/gpu_report.py keeps what it measured: killed (SIGKILL or SIGTERM) after its first stage, the
report in --out is readable JSON holding that stage; a failing, hanging or over-budget stage is recorded
and the next one still runs. The kill tests run the real command at CPU quick sizes (two stages); the rest
drive `main` with small stage tables whose commands are plain Python one-liners."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
import gpu_report  # noqa: E402
from gpu_report import Mode, Stage  # noqa: E402


def read_report(folder: Path) -> dict | None:
    """The report in `folder` (None before the first write); a half-written file fails the test."""
    files = list(folder.glob("*.json"))
    assert len(files) <= 1, files
    return json.loads(files[0].read_text()) if files else None


def wait_for_stage(folder: Path, proc: subprocess.Popen, stage: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = read_report(folder)
        if report and report["stages"][stage]["status"] not in ("pending", "running"):
            return report
        assert proc.poll() is None, f"the report exited ({proc.returncode}) before {stage} finished"
        time.sleep(0.05)
    raise AssertionError(f"{stage} did not finish within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_report_keeps_every_finished_stage(tmp_path, sig):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--device", "cpu", "--quick",
           "--out", str(tmp_path), "--stages", "ceilings", "sigreg_speed"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_stage(tmp_path, proc, "ceilings")
        if sig == signal.SIGKILL:  # as `timeout -s KILL` does: the whole process group
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # the report alone: it must stop its stage and record the interruption
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    report = read_report(tmp_path)
    ceilings = report["stages"]["ceilings"]
    assert ceilings["status"] == "ok", ceilings
    assert report["ceilings"]["copy_GBps"] > 0 and report["ceilings"]["matmul_fp32_TFLOPs"] > 0
    assert report["environment"]["device_type"] == "cpu" and report["run"]["finished"] is False
    assert next(tmp_path.glob("*.md")).read_text().startswith("# lewm_fast GPU report: ")
    if sig == signal.SIGKILL:  # (it may leave a hidden .tmp file beside the report: killed mid-write)
        assert rc == -signal.SIGKILL
        # pending: killed before it started; ok: it finished before the kill
        assert report["stages"]["sigreg_speed"]["status"] in ("pending", "running", "ok")
    else:
        assert rc == 128 + signal.SIGTERM, proc.stderr.read()
        assert report["stages"]["sigreg_speed"]["status"] in ("pending", "interrupted", "ok")
        if report["stages"]["sigreg_speed"]["status"] == "interrupted":
            assert report["run"]["interrupted"] == "interrupted by SIGTERM during sigreg_speed"
        with pytest.raises(ProcessLookupError):  # the stage's process went with the report
            os.killpg(proc.pid, 0)
        assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


# ---- the stage runner, on small stage tables -----------------------------------------------------


def fake_environment(device):
    env = {"device": "Test CPU (2 threads)", "device_type": "cpu", "torch": "x", "triton": None,
           "python": "3", "cuda": None, "commit": None, "date": "2026-01-02T03:04:05+00:00"}  # fmt: skip
    return env, ""


def python(code: str):
    """A stage command: `python -c code FOLDER` (the code may write a results file into sys.argv[1])."""
    return lambda mode, folder: ["-c", code, str(folder)]


WRITE = "import json, sys; open(sys.argv[1] + '/r.json', 'w').write(json.dumps({}))"
WRITES_ROWS = WRITE.format("{'rows': [{'tflops': 2.0}]}")
CEILINGS = WRITE.format("{'ceilings': {'matmul_fp32_TFLOPs': 4.0}}")
GARBLED = "import sys; open(sys.argv[1] + '/r.json', 'w').write('{not json')"
SEGFAULT = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


def run(tmp_path, monkeypatch, stages, *args):
    monkeypatch.setattr(gpu_report, "probe_environment", fake_environment)
    rc = gpu_report.main(["--device", "cpu", "--quick", "--out", str(tmp_path), *args], stages=stages)
    return rc, json.loads((tmp_path / "2026-01-02-test-cpu.json").read_text())


def test_a_failing_or_hanging_stage_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    stages = (
        Stage("ceilings", 1, "yardsticks", python(CEILINGS), {"cpu-quick": 1}),
        Stage("fails", 2, "something", python("import sys; print('boom'); sys.exit(3)"), {"cpu-quick": 1}),
        Stage("hangs", 2, "something", python("import time; time.sleep(60)"), {"cpu-quick": 1}, timeout_s=1.5),
        Stage("crashes", 3, "something", python(SEGFAULT), {"cpu-quick": 1}),
        Stage("garbled", 3, "something", python(GARBLED), {"cpu-quick": 1}),
        Stage("speed", 3, "a rate", python(WRITES_ROWS), {"cpu-quick": 1}),
    )
    rc, report = run(tmp_path, monkeypatch, stages)
    s = report["stages"]
    assert rc == 1 and report["run"]["finished"] and report["run"]["failed"] == ["fails", "hangs", "crashes", "garbled"]
    assert s["fails"]["status"] == "failed" and "boom" in s["fails"]["tail"]
    assert s["hangs"]["status"] == "timed out" and s["hangs"]["seconds"] < 30
    assert s["crashes"]["status"] == "crashed" and "SIGSEGV" in s["crashes"]["result"]["error"]
    assert s["garbled"]["status"] == "failed" and "could not be read" in s["garbled"]["result"]["error"]
    assert s["speed"]["status"] == "ok"
    assert s["speed"]["result"]["rows"][0]["fraction_of_matmul_peak"] == pytest.approx(0.5)  # 2 of 4 TFLOP/s
    md = (tmp_path / "2026-01-02-test-cpu.md").read_text()
    assert "| 2 | hangs | timed out |" in md and "| 3 | speed | ok |" in md


def test_the_budget_skips_what_does_not_fit_and_cuts_off_an_overrun(tmp_path, monkeypatch):
    stages = (
        Stage("quick", 1, "x", python(WRITES_ROWS), {"cpu-quick": 0.1}),
        Stage("too_big", 2, "x", python(WRITES_ROWS), {"cpu-quick": 1000}),
        Stage("overruns", 3, "x", python("import time; time.sleep(60)"), {"cpu-quick": 0.1}),
        Stage("elsewhere", 4, "x", lambda mode, folder: "needs a CUDA device", {"cpu-quick": 0}),
    )
    rc, report = run(tmp_path, monkeypatch, stages, "--budget", "8")
    s = report["stages"]
    assert s["quick"]["status"] == "ok"
    assert s["too_big"]["status"] == "skipped" and "of the budget left" in s["too_big"]["reason"]
    assert s["overruns"]["status"] == "cut off" and "budget" in s["overruns"]["reason"]
    assert s["elsewhere"] == s["elsewhere"] | {"status": "skipped", "reason": "needs a CUDA device"}
    assert rc == 0 and report["run"]["failed"] == [] and report["run"]["elapsed_s"] < 30


def test_selected_stages_only(tmp_path, monkeypatch):
    stages = (Stage("a", 1, "x", python(WRITES_ROWS), {"cpu-quick": 1}),
              Stage("b", 1, "x", python("import sys; sys.exit(1)"), {"cpu-quick": 1}))  # fmt: skip
    rc, report = run(tmp_path, monkeypatch, stages, "--stages", "a")
    assert rc == 0 and report["stages"]["a"]["status"] == "ok" and report["stages"]["b"]["status"] == "not selected"


def test_pytest_results_come_from_junit(tmp_path):
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_x" name="test_a"><failure message="no"/></testcase>'
        '</testsuite></testsuites>'
    )  # fmt: skip
    status, result = gpu_report.pytest_result(tmp_path, 1)
    assert status == "failed" and result["passed"] == 3 and result["failing"] == ["tests.test_x::test_a"]
    (tmp_path / "junit.xml").write_text('<testsuite tests="2" failures="0" errors="0" skipped="2"></testsuite>')
    status, result = gpu_report.pytest_result(tmp_path, 0)
    assert status == "failed" and "no test ran" in result["error"]  # all skipped is not evidence
    assert gpu_report.pytest_result(tmp_path / "missing", 2)[0] == "failed"


def test_stage_table_covers_every_mode():
    """Every stage has a command (or a reason) and an estimate in each of the four modes."""
    for stage in gpu_report.STAGES:
        for mode in (Mode("cuda", False), Mode("cuda", True), Mode("cpu", False), Mode("cpu", True)):
            assert stage.estimate(mode) >= 0
            command = stage.command(mode, Path("/tmp/x"))
            assert isinstance(command, str) or command[0] in ("-m",) or command[0].endswith(".py"), command
    gpu = Mode("cuda", False)
    commands = {s.name: s.command(gpu, Path("/tmp/x")) for s in gpu_report.STAGES}
    assert all(isinstance(c, list) for c in commands.values()), commands  # on a GPU every stage runs
    per_tier = {t: sum(s.estimate(gpu) for s in gpu_report.STAGES if s.tier == t) for t in (1, 2, 3)}
    assert per_tier[2] <= 240 and per_tier[3] <= 180, per_tier  # correctness first, < 4 min; headline speed < 3


def test_cuda_where_torch_sees_none_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--device", "cuda", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_report: --device cuda: torch sees no CUDA device here")
    assert read_report(tmp_path)["run"]["failed"] == ["environment"]
