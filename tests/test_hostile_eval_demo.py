"""Hostile evaluation and demo: more problems than the held-out split holds, malformed set-up calls, a demo
pointed at a folder of the user's files, a resumed demo asked for something else. Each is refused in one
line naming the flag before anything is built or written; long loops say how far they are."""

import inspect
import json

import pytest
from hostile import cli, one_line_error, snapshot
from tiny_runs import TINY, tiny_data, tiny_run

import lewm_fast as lf
from lewm_fast.evaluation import closed_loop, demo, world
from lewm_fast.evaluation.mpc import Every
from lewm_fast.evaluation.protocol import BUDGET, EPISODES, GOAL_OFFSET, HORIZON, ITERS, SAMPLES, TOPK
from lewm_fast.planning.optimizers import optimizer_defaults


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_eval")
    data = tiny_data(root / "tworoom.h5")
    tiny_run(data, root / "run", steps=1)
    return data, root / "run"


def test_more_problems_than_the_split_holds_are_refused_at_once(run, tmp_path):
    data, ckpt = run
    err = one_line_error(
        cli(
            "eval",
            "--env",
            "tworoom",
            "--data",
            data,
            "--ckpt",
            ckpt,
            "--episodes",
            "1000000",
            "--samples",
            "8",
            "--topk",
            "2",
            "--iters",
            "1",
            "--out",
            tmp_path / "ev",
            timeout=120,
        )
    )
    assert err.startswith("--episodes: 1000000 problems asked for") and "distinct start rows" in err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "callables, message",
    [
        ("5", "--callables: expected a JSON list of set-up calls"),
        ('{"a": 1}', "--callables: expected a JSON list of set-up calls"),
        ("[1]", "--callables[0]: expected"),
        ('[{"method": "set_state", "args": {"state": 3}}]', "--callables[0].args.state: expected"),
        ('[{"method": "set_state", "args": [1]}]', "--callables[0].args: expected"),
        ('[{"method": "m", "args": {"a": {"value": 1, "in_dataset": "no"}}}]', "--callables[0].args.a.in_dataset"),
        ("{not json", "--callables: expected JSON"),
    ],
)  # fmt: skip
def test_malformed_set_up_calls_name_the_flag(run, callables, message):
    _, ckpt = run
    err = one_line_error(cli("eval", "--world", "swm/TwoRoom-v1", "--ckpt", ckpt, "--callables", callables))
    assert err.startswith(message), err


def test_evaluate_and_evaluate_world_share_one_validation(tmp_path, monkeypatch):
    """The same refusal from both, before any file is read (evaluate_world: even without stable-worldmodel)."""
    monkeypatch.setattr(closed_loop, "describe_data", lambda *a: pytest.fail("read the data"))
    monkeypatch.setattr(world, "_import_swm", lambda: pytest.fail("reached the World"))
    for bad, message in ((dict(topk=400), "^topk: expected at most num_samples=300"),
                         (dict(receding=9), "^receding: expected at most horizon=5"),
                         (dict(seed=2**70), "^seed: "), (dict(budget=0), "^budget: "),
                         (dict(dtype="fp16"), "^dtype: "), (dict(policy="greedy"), "^policy: ")):  # fmt: skip
        with pytest.raises((TypeError, ValueError), match=message):
            closed_loop.evaluate("tworoom", tmp_path / "d.h5", tmp_path, **bad)
        with pytest.raises((TypeError, ValueError), match=message):
            world.evaluate_world("swm/TwoRoom-v1", tmp_path, **bad)


def test_evaluation_defaults_are_written_once():
    """The protocol's sizes and CEM's, in every signature that shows them, come from one place."""
    cem = optimizer_defaults("cem")
    assert (SAMPLES, TOPK, ITERS) == (cem["num_samples"], cem["topk"], cem["n_steps"])
    assert HORIZON == inspect.signature(lf.Planner).parameters["horizon"].default
    expected = dict(episodes=EPISODES, goal_offset=GOAL_OFFSET, budget=BUDGET, horizon=HORIZON, receding=HORIZON,
                    num_samples=SAMPLES, topk=TOPK, iters=ITERS)  # fmt: skip
    for fn in (closed_loop.evaluate, world.evaluate_world):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in expected} == expected, fn.__name__
    d = demo.DemoConfig(out="")
    assert (d.eval_episodes, d.goal_offset, d.budget, d.receding, d.samples, d.topk, d.iters) == (
        EPISODES, GOAL_OFFSET, BUDGET, HORIZON, SAMPLES, TOPK, ITERS)  # fmt: skip
    from lewm_fast.cli import build_parser

    args = build_parser().parse_args(["eval", "--env", "tworoom"])
    assert (args.episodes, args.goal_offset, args.budget, args.horizon, args.receding, args.samples, args.topk,
            args.iters) == tuple(expected.values())  # fmt: skip


def test_progress_is_said_every_so_often():
    said = []
    progress = Every(said.append, seconds=0.0)
    progress("eval: 1 of 3")
    quiet = Every(said.append, seconds=3600.0)
    quiet("never")
    assert said == ["eval: 1 of 3"]


DEMO = ["--episodes", "10", "--max-steps", "40", "--image-size", "28", "--steps", "2", "--batch-size", "8",
        "--model", json.dumps(TINY), "--eval-episodes", "2", "--surprise-episodes", "2", "--samples", "8",
        "--iters", "2", "--topk", "2", "--dtype", "fp32", "--no-progress"]  # fmt: skip


def test_demo_refuses_a_folder_of_the_users_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    before = snapshot(out)
    err = one_line_error(cli("demo", "--out", out, *DEMO))
    assert err.startswith(f"--out: {out} is not empty (it holds report.md)") and "--resume" in err
    err = one_line_error(cli("demo", "--out", out, "--resume", *DEMO))
    assert err.startswith(f"--resume: {out} is not a demo folder") and snapshot(out) == before


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    done = cli("demo", "--out", out, *DEMO)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_a_resumed_demo_must_ask_for_the_same(demo_folder, tmp_path):
    before = snapshot(demo_folder)
    changed = list(DEMO)
    changed[changed.index("--iters") + 1] = "3"
    err = one_line_error(cli("demo", "--out", demo_folder, "--resume", *changed))
    assert err.startswith("--iters: the demo in") and "iters=2" in err
    (demo_folder / "notes.txt").write_text("mine")
    err = one_line_error(cli("demo", "--out", demo_folder, "--resume", *DEMO))
    assert "notes.txt, which a demo does not write" in err
    (demo_folder / "notes.txt").unlink()
    assert snapshot(demo_folder) == before


def test_overwrite_moves_the_old_demo_aside(demo_folder, tmp_path):
    import shutil

    out = tmp_path / "demo"
    shutil.copytree(demo_folder, out, symlinks=True)
    before = snapshot(out)
    done = cli("demo", "--out", out, "--overwrite", *DEMO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "moved the previous" in done.stdout
    assert snapshot(tmp_path / "demo.old-1") == before and (out / "report.md").exists()
