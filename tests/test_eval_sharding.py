"""Evaluation over several processes: `torchrun` with 2 gloo processes gives, episode by episode, what one process
gives with the same planning groups; the groups (not the process count) define the planner's batches."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from lewm_fast.data.collect import collect
from lewm_fast.evaluation import evaluate
from lewm_fast.evaluation.sharding import owned_episodes
from lewm_fast.training import TrainConfig, train

TINY = dict(image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96, embed_dim=32,
            proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64, pred_hidden_dim=32,
            pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0)  # fmt: skip
EVAL = dict(episodes=5, budget=10, goal_offset=20, num_samples=8, topk=2, iters=2, dtype="fp32", seed=4)


@pytest.mark.parametrize("n, group, world", [(5, 2, 2), (7, 3, 2), (4, 1, 3), (3, 5, 2), (10, 2, 4)])
def test_ranks_own_whole_groups_and_together_every_episode(n, group, world):
    owned = [owned_episodes(n, group, r, world) for r in range(world)]
    assert sorted(i for o in owned for i in o) == list(range(n))
    for r, o in enumerate(owned):
        assert all((i // group) % world == r for i in o)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    data = root / "tworoom.h5"
    collect("tworoom", data, 8, image_size=28, max_steps=40, seed=0, progress=False)
    cfg = TrainConfig(data=str(data), out=str(root / "run"), steps=2, batch_size=8, warmup=1, amp="off",
                      val_fraction=0.25, num_proj=32, progress=False, model_overrides=TINY, log_every=1)  # fmt: skip
    train(cfg)
    return data, root / "run"


def _torchrun(args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lewm_fast.cli", "eval", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def _outcomes(summary):
    return [(e["episode"], e["start_row"], e["success"], e["steps"], e["plans"], e["final_state"])
            for e in summary["per_episode"]]  # fmt: skip


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("policy", ["planner", "random"])
def test_two_gloo_processes_equal_one_process_with_the_same_groups(run, tmp_path, policy):
    data, ckpt = run
    one = evaluate("tworoom", data, ckpt, plan_group=2, policy=policy, log=lambda m: None, **EVAL)
    args = ["--ckpt", str(ckpt), "--env", "tworoom", "--data", str(data), "--plan-group", "2", "--policy", policy,
            "--out", str(tmp_path)] + [f"--{k.replace('_', '-')}={v}" for k, v in EVAL.items()]  # fmt: skip
    args = [a.replace("--num-samples", "--samples") for a in args]
    stdout = _torchrun(args)
    assert stdout.count("success rate: ") == 1  # rank 0 speaks for both
    name = "eval.json" if policy == "planner" else "eval_random.json"
    two = json.loads((tmp_path / name).read_text())
    assert two["processes"] == 2 and two["plan_group"] == 2 and one["processes"] == 1
    assert _outcomes(two) == _outcomes(one)  # final states too: every executed action was the same
    if policy == "planner":
        other = evaluate("tworoom", data, ckpt, plan_group=5, policy=policy, log=lambda m: None, **EVAL)
        finals = [np.asarray(e["final_state"]) for e in other["per_episode"]]
        assert any(not np.allclose(f, e["final_state"]) for f, e in zip(finals, one["per_episode"]))  # groups matter
