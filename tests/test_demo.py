"""`lewm-fast demo` end to end at a tiny scale: every stage runs, the report names files that exist, the
last line is the success rate, and a resumed run reuses the data and the trained run."""

import dataclasses
import json
import re

from lewm_fast.cli import main as cli_main
from lewm_fast.evaluation.demo import DemoConfig, run_demo

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip


def test_demo_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--episodes", "10", "--max-steps", "40", "--image-size", "28", "--steps", "3",
            "--batch-size", "8", "--model", json.dumps(TINY), "--eval-episodes", "3", "--surprise-episodes", "3",
            "--dtype", "fp32", "--no-progress"]  # fmt: skip
    args += ["--samples", "8", "--iters", "2", "--topk", "2"]  # a tiny CEM (the demo's default: 300 x 30, top 30)
    assert cli_main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"success rate: \d+% \(\d+/3; random actions: \d+%\)", lines[-1])
    summary = json.loads((out / "demo.json").read_text())
    assert summary["episodes"] == 3 and 0 <= summary["success_rate"] <= 1
    assert set(summary["stage_seconds"]) == {"collect", "train", "evaluate", "random baseline", "surprise"}
    assert summary["train"]["steps"] == 3
    report = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(images) == 3 and all((out / p).exists() for p in images)
    assert "random actions" in report and "teleport" in report


def test_demo_rerun_reuses_data_and_training(tmp_path):
    cfg = DemoConfig(out=str(tmp_path), episodes=10, max_steps=40, image_size=28, steps=2, batch_size=8, model=TINY,
                     eval_episodes=2, samples=8, iters=2, topk=2, surprise_episodes=2, dtype="fp32",
                     progress=False)  # fmt: skip
    first = run_demo(cfg, log=lambda m: None)
    weights = tmp_path / "run" / "checkpoint" / "weights.pt"
    stamp, data_stamp = weights.stat().st_mtime_ns, (tmp_path / "data" / "tworoom.h5").stat().st_mtime_ns
    second = run_demo(dataclasses.replace(cfg, resume=True), log=lambda m: None)
    assert weights.stat().st_mtime_ns == stamp and (tmp_path / "data" / "tworoom.h5").stat().st_mtime_ns == data_stamp
    assert second["collect"]["new_rows"] == 0 and second["train"]["steps"] == 2
    assert second["success_rate"] == first["success_rate"]  # same problems, same seed, same model


def _fit(tmp_path, monkeypatch, step_s, plan_s, minutes, **kw):
    """The demo's step choice with the two timings replaced by given values (no model is run)."""
    import h5py

    from lewm_fast.evaluation import demo

    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as f:
        f["action"] = [[0.0, 0.0]]
    monkeypatch.setattr(demo, "time_train_step", lambda *a: step_s)
    monkeypatch.setattr(demo, "time_plan_iteration", lambda *a: plan_s)
    cfg = DemoConfig(out=str(tmp_path), minutes=minutes, **kw)
    return demo._training_steps(cfg, tmp_path / "run", "cpu", "off", data, minutes * 60)


def test_demo_fits_training_steps_to_the_time_target(tmp_path, monkeypatch):
    from lewm_fast.evaluation.demo import MAX_STEPS, MIN_STEPS, RESERVE_SECONDS, STEP_OVERHEAD

    # 20 min; 2 plan calls x 30 iterations x 2 s of planning; the rest at 0.5 s per bare step (x 1.15 for
    # the run's own work) -> 1,773 steps, rounded down to hundreds
    steps, why = _fit(tmp_path, monkeypatch, step_s=0.5, plan_s=2.0, minutes=20)
    assert steps == int((20 * 60 - 2 * 30 * 2.0 - RESERVE_SECONDS) / (0.5 * STEP_OVERHEAD)) // 100 * 100 == 1700
    assert "0.50 s per training step" in why
    assert _fit(tmp_path, monkeypatch, step_s=0.01, plan_s=0.1, minutes=20)[0] == MAX_STEPS  # a fast machine
    assert _fit(tmp_path, monkeypatch, step_s=5.0, plan_s=2.0, minutes=20)[0] == MIN_STEPS  # never below
    assert _fit(tmp_path, monkeypatch, step_s=5.0, plan_s=2.0, minutes=20, steps=7) == (7, "given")


def test_demo_resume_keeps_the_interrupted_runs_steps(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"steps": 2300}))
    assert _fit(tmp_path, monkeypatch, step_s=0.01, plan_s=0.1, minutes=20)[0] == 2300


def test_demo_refuses_a_bad_minutes(capsys):
    assert cli_main(["demo", "--out", "x", "--minutes", "0"]) == 2
    assert "--minutes" in capsys.readouterr().err
