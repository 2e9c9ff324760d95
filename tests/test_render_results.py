"""benchmarks/render_results.py: the README's headline table holds the newest comparison of each measurement
on each machine (busy runs and non-default configurations left out), HISTORY.md the newest table of each
benchmark, machine and set of measurements; files that hold no table (profiles, reports) are passed over
instead of breaking the render; both files in the repository are up to date with benchmarks/results/."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
import render_results  # noqa: E402


def _write(folder: Path, name: str, benchmark: str, date: str, rows, isa=None, args=None, core=None,
           limits=None) -> Path:  # fmt: skip
    path = folder / name
    env = {"device": "AMD EPYC (2 threads)", "device_type": "cpu", "torch": "2.13.0", "date": date}
    if isa:
        env["machine"] = {"isa": isa, "native_bf16": isa == "AVX512", **({"core": core} if core else {}),
                          **({"isa_limits": limits} if limits else {})}  # fmt: skip
    path.write_text(json.dumps({"benchmark": benchmark, "environment": env, "rows": rows, "args": args or {}}))
    return path


def test_newest_table_per_benchmark_and_profiles_passed_over(tmp_path):
    _write(tmp_path, "a-old.json", "plan_speed", "2026-12-01T10:00:00", [{"solver": "cem", "x_public": 2.0}])
    newest = _write(tmp_path, "a-new.json", "plan_speed", "2026-12-03T10:00:00", [{"solver": "cem", "x_public": 2.3}])
    _write(tmp_path, "profile.json", "rollout_profile", "2026-12-04T10:00:00", 150)  # a count, not a table
    _write(tmp_path, "empty.json", "gpu_report", "2026-12-04T10:00:00", [])
    (tmp_path / "broken.json").write_text("{not json")
    assert render_results.latest_files(tmp_path) == [newest]
    text = render_results.render(tmp_path)
    assert "a-new.json" in text and "| cem |" in text and "2.3" in text and "profile.json" not in text


def test_history_keeps_a_table_per_machine_and_set_of_measurements(tmp_path):
    """A run of other solvers, or on another CPU of the same name, does not hide a table; a newer run of the same
    measurements on the same machine does."""
    _write(tmp_path, "cem-old.json", "plan_speed", "2026-12-01T10:00:00", [plan_row(x_public=2.0)], isa="AVX512")
    cem = _write(tmp_path, "cem-new.json", "plan_speed", "2026-12-02T10:00:00", [plan_row(x_public=2.1)],
                 isa="AVX512")  # fmt: skip
    solvers = _write(tmp_path, "solvers.json", "plan_speed", "2026-12-03T10:00:00", [plan_row("icem", x_public=2.2)],
                     isa="AVX512")  # fmt: skip
    zen3 = _write(tmp_path, "zen3.json", "plan_speed", "2026-12-04T10:00:00", [plan_row(x_public=2.3)], isa="AVX2")
    assert set(render_results.latest_files(tmp_path)) == {cem, solvers, zen3}


def test_readme_and_history_are_rendered_from_the_results_folder():
    assert render_results.main(["--check"]) == 0, "run: python benchmarks/render_results.py"


def plan_row(solver="cem", impl="lewm_fast:torch", envs=1, ms=10_000.0, **ratios):
    return {"solver": solver, "impl": impl, "dtype": "fp32", "envs": envs, "ms_per_plan": ms, **ratios}


def test_headline_keeps_the_newest_comparison_of_each_measurement_on_each_machine(tmp_path):
    _write(tmp_path, "old.json", "plan_speed", "2026-12-01T10:00:00", [plan_row(x_public=2.0)], isa="AVX2")
    _write(tmp_path, "new.json", "plan_speed", "2026-12-03T10:00:00",
           [plan_row(x_public=2.3), plan_row(envs=16, ms=160_000.0, x_public=2.25),
            plan_row(impl="lewm_fast:reference", x_public=1.0), plan_row(impl="public stable-worldmodel", x_public=1.0),
            plan_row(impl="lewm_fast:torch+compile", x_public=2.5), plan_row(solver="icem", envs=4)],
           isa="AVX2")  # fmt: skip
    _write(tmp_path, "busy.json", "plan_speed", "2026-12-04T10:00:00", [plan_row(x_public=9.0)], isa="AVX2",
           args={"neighbours": 2})  # fmt: skip
    _write(tmp_path, "zen4.json", "plan_speed", "2026-12-07T10:00:00",
           [plan_row(x_public=4.87, x_best_public=2.56)], isa="AVX512")  # fmt: skip
    rows = render_results.headline_rows(tmp_path)
    assert [(r["what"], r["file"]) for r in rows] == [("CEM plan, E = 1, fp32", "new.json"),
                                                      ("CEM plan, E = 16, fp32", "new.json"),
                                                      ("CEM plan, E = 1, fp32", "zen4.json")]  # fmt: skip
    lines = render_results.render_headline(tmp_path).splitlines()
    assert lines[0].startswith("| what | machine | date | lewm_fast | x reference | x public | x best public |")
    assert "| CEM plan, E = 1, fp32 | AMD EPYC (2 threads), AVX2 | 2026-12-03 | 10 s | - | 2.3 | - |" in lines[2]
    assert "| AMD EPYC (2 threads), AVX512, native bf16 | 2026-12-07 | 10 s | - | 4.87 | 2.56 |" in lines[4]


def test_cpus_of_one_name_and_isa_are_told_apart_by_their_core(tmp_path):
    """A Zen 5 and a Zen 4 both report "AMD EPYC" and AVX512: the core keeps each one's rows."""
    zen4 = _write(tmp_path, "zen4.json", "plan_speed", "2026-12-07T10:00:00", [plan_row(x_best_public=3.5)],
                  isa="AVX512", core="Zen 4, family 25 model 17")  # fmt: skip
    zen5 = _write(tmp_path, "zen5.json", "plan_speed", "2026-12-08T10:00:00", [plan_row(x_best_public=4.1)],
                  isa="AVX512", core="Zen 5, family 26 model 2")  # fmt: skip
    assert set(render_results.latest_files(tmp_path)) == {zen4, zen5}
    machines = [r["machine"] for r in render_results.headline_rows(tmp_path)]
    assert machines == [f"AMD EPYC Zen {n} (2 threads), AVX512, native bf16" for n in (4, 5)]


def test_a_run_under_isa_limits_is_its_own_table_and_not_a_headline(tmp_path):
    """AVX2 code paths on an AVX-512 CPU (ONEDNN_MAX_CPU_ISA=AVX2 ...) stand in for an AVX2 CPU; they are not one."""
    native = _write(tmp_path, "native.json", "plan_speed", "2026-12-07T10:00:00", [plan_row(x_best_public=2.8)],
                    isa="AVX512")  # fmt: skip
    limits = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    capped = _write(tmp_path, "capped.json", "plan_speed", "2026-12-08T10:00:00", [plan_row(x_best_public=2.7)],
                    isa="AVX2", limits=limits)  # fmt: skip
    assert set(render_results.latest_files(tmp_path)) == {native, capped}
    assert [r["file"] for r in render_results.headline_rows(tmp_path)] == ["native.json"]
    assert "AVX2, limited by ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2" in render_results.render(tmp_path)


def test_sigreg_headline_is_lewm_fasts_backend_not_a_baseline_beside_it(tmp_path):
    def sigreg_row(backend, ms, x_reference):
        return {"size": "train", "T": 4, "B": 128, "D": 192, "M": 1024, "dtype": "bf16", "phase": "both",
                "backend": backend, "ms": ms, "x_reference": x_reference}  # fmt: skip

    rows = [sigreg_row("reference", 167.0, 1.0), sigreg_row("cpp", 10.2, 16.4),
            sigreg_row("public +torch.compile", 28.6, 5.8), sigreg_row("gemm", 1.28, 130.0)]  # fmt: skip
    _write(tmp_path, "s.json", "sigreg_speed", "2026-12-07T10:00:00", rows, isa="AVX512")
    (row,) = render_results.headline_rows(tmp_path)
    assert row["what"].startswith("SIGReg forward + backward, 4 x 128 x 192") and row["x_reference"] == 16.4


def test_planning_tables_show_x_best_public(tmp_path):
    rows = [{"solver": "cem", "impl": "lewm_fast:torch", "x_public": 4.87, "x_best_public": 2.56},
            {"solver": "cem", "impl": "public +bf16 autocast", "x_public": 1.58, "x_best_public": 1.0}]  # fmt: skip
    _write(tmp_path, "p.json", "plan_speed", "2026-12-07T10:00:00", rows)
    header, _, first, second = render_results.render(tmp_path).splitlines()[2:6]
    assert "| x public | x best public |" in header
    assert "| 4.87 | 2.56 |" in first and "| 1.58 | 1 |" in second
    _write(tmp_path, "p.json", "plan_speed", "2026-12-07T10:00:00", [{"solver": "cem", "x_public": 2.0}])
    assert "x best public" not in render_results.render(tmp_path)  # a run from before the best-public rows


def test_benchmarks_write_to_a_scratch_folder_unless_told(tmp_path, monkeypatch):
    """A trial run (the Quickstart's first command) must not change benchmarks/results/, which the README's
    tables are rendered from: without --out a results file goes to $XDG_CACHE_HOME/lewm_fast/results."""
    import _files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = {"device": "AMD EPYC (2 threads)", "date": "2026-12-07T10:00:00"}
    path = _files.result_path("plan_speed", env)
    assert path == tmp_path / "lewm_fast" / "results" / "plan_speed-2026-12-07-amd-epyc.json"
    assert _files.result_path("plan_speed", env, tmp_path / "rec").parent == tmp_path / "rec"


def test_results_files_do_not_record_where_they_were_written(tmp_path):
    """`--out` is a path on the machine that ran the benchmark: the recorded args leave it out, the rest stays."""
    import _common
    import torch

    path = _common.write_result("plan_speed", {"args": {"out": str(tmp_path), "envs": [1, 16]}, "rows": []},
                                torch.device("cpu"), tmp_path)  # fmt: skip
    assert json.loads(path.read_text())["args"] == {"envs": [1, 16]}
