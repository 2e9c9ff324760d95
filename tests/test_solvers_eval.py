"""`lewm-fast eval --solver`: closed-loop evaluation with every solver of the registry (tiny model,
tiny budget: the wiring, not the success rate), iCEM's action box carried into the z-scored action
space, and a bad solver name refused in one line before any planning."""

import json

import numpy as np
import pytest
import torch
from test_eval import TINY, run  # noqa: F401  (the module-scoped tiny data + checkpoint fixture)

from lewm_fast.cli import main as cli_main
from lewm_fast.data.dataset import Normalizer
from lewm_fast.evaluation.mpc import make_planner


@pytest.mark.parametrize("solver", ["cem", "icem", "mppi", "ps", "grad"])
def test_eval_command_line_with_each_solver(run, tmp_path, capsys, solver):  # noqa: F811
    data, ckpt = run
    args = ["eval", "--ckpt", str(ckpt), "--env", "tworoom", "--data", str(data), "--episodes", "2", "--budget", "10",
            "--samples", "8", "--topk", "2", "--iters", "2", "--dtype", "fp32", "--solver", solver,
            "--out", str(tmp_path)]  # fmt: skip
    assert cli_main(args) == 0
    assert "success rate: " in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["solver"] == solver and summary["episodes"] == 2 and summary["plan_calls"] >= 1


def test_bad_solver_is_one_line(run, capsys):  # noqa: F811
    data, ckpt = run
    assert cli_main(["eval", "--ckpt", str(ckpt), "--env", "tworoom", "--data", str(data), "--solver", "pgd"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "lewm-fast: error: --solver: expected one of ['cem', 'icem', 'mppi', 'ps', 'grad'], got 'pgd'"


def test_icem_clips_to_the_env_box_in_normalised_units():
    import gymnasium as gym
    from helpers import tiny_model

    norm = Normalizer(np.array([0.5, -0.2], np.float32), np.array([0.25, 2.0], np.float32))
    planner = make_planner(tiny_model(), "icem", norm, gym.spaces.Box(-1.0, 1.0, shape=(2,)), 8, 2, 1, 5, 0,
                           "reference", torch.float32)  # fmt: skip
    low, high = planner.optimizer.action_low, planner.optimizer.action_high
    assert low.shape == (10,) and torch.allclose(low[:2], torch.tensor([-6.0, -0.4]))
    assert torch.allclose(high[:2], torch.tensor([2.0, 0.6])) and torch.equal(low[2:4], low[:2])
    assert torch.allclose(norm.denormalize(high[None])[0], torch.ones(10))
