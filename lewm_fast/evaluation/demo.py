"""The whole mission on one machine, as a new user would run it first (`lewm-fast demo --out DIR`):

1. collect TwoRoom episodes (the `mixed` data policy) into DIR/data/tworoom.h5;
2. train LeWM (the `small` preset with the demo's model changes, below) into DIR/run;
3. evaluate closed-loop planning on held-out episodes (the paper's protocol) and, on the very same
   problems, the random-action baseline, into DIR/eval;
4. run the surprise test into DIR/surprise;
5. write DIR/report.md (figures and numbers) and DIR/demo.json; print `success rate: X%`.

Every stage reuses what an earlier run left in DIR (collection and training resume), so a re-run after
an interruption continues instead of starting over.

The demo model is the `small` preset with a 32-wide embedding (`embed_dim` 32 instead of 128). Measured
here: the 128-wide embedding planned 40-44% of the protocol's problems after 2,000 steps, the 32-wide one
80-86%. TwoRoom's only varying factor is the agent's 2-D position, and SIGReg spreads embeddings into an
isotropic Gaussian in all D dimensions, so the wider the embedding the more the 2-D manifold of
positions has to curl, and the sooner latent distance stops growing with distance in the room (the
planner's cost is that latent distance). README "What it looks like" has the figures.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

DEMO_MODEL = {"embed_dim": 32}


@dataclass
class DemoConfig:
    """Knobs of the demo. The defaults meet the CPU target (2 cores, < 30 minutes); scale up with more
    episodes / steps / a larger image for a GPU or more time."""

    out: str
    episodes: int = 300  # TwoRoom episodes collected (10% held out for validation and evaluation)
    max_steps: int = 100  # env steps per episode
    image_size: int = 64  # frames and model (a multiple of the patch size, 16)
    # Training steps. Measured here (TwoRoom, 50 problems): 2,000 steps gave 84% (seed 0) and 56% (seed 1);
    # 4,000 steps 82% and 72%, 14-15 minutes in all on 2 cores (README "What it looks like").
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    lambd: float = 0.09
    model: dict = field(default_factory=lambda: dict(DEMO_MODEL))  # LeWMConfig changes to the small preset
    amp: str | None = None  # None: "off" on CPU (fp32 is faster at this size), "auto" elsewhere
    device: str = "auto"
    eval_episodes: int = 50
    goal_offset: int = 25
    budget: int = 50
    receding: int = 5
    samples: int = 300  # CEM: the paper's 300 samples, 30 iterations, top 30
    iters: int = 30
    topk: int = 30
    dtype: str = "auto"  # planning: bf16 where the CPU/GPU runs it natively, else fp32 (lewm_fast.capability)
    surprise_episodes: int = 50
    seed: int = 0
    progress: bool = True


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run every stage; returns the summary written to OUT/demo.json."""
    from lewm_fast.evaluation.closed_loop import evaluate
    from lewm_fast.evaluation.surprise import surprise_test
    from lewm_fast.training import TrainConfig, train
    from lewm_fast.training.checkpoint import latest_checkpoint

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    times: dict[str, float] = {}

    def stage(name: str, fn):
        log(f"demo: {name} ...")
        t0 = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - t0
        log(f"demo: {name} done in {times[name]:.1f} s")
        return value

    data = out / "data" / "tworoom.h5"
    data.parent.mkdir(exist_ok=True)
    collected = stage("collect", lambda: _collect(cfg, data))

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    amp = cfg.amp or ("off" if device == "cpu" else "auto")
    run = out / "run"
    train_cfg = TrainConfig(data=str(data), out=str(run), preset="small", steps=cfg.steps, batch_size=cfg.batch_size,
                            lr=cfg.lr, lambd=cfg.lambd, amp=amp, device=device, seed=cfg.seed,
                            resume=run.exists(),  # continue what an interrupted demo left
                            model_overrides={**cfg.model, "image_size": cfg.image_size}, progress=cfg.progress,
                            val_every=max(cfg.steps // 4, 1), ckpt_every=max(cfg.steps // 4, 1))  # fmt: skip
    trained = stage("train", lambda: train(train_cfg))
    ckpt = latest_checkpoint(run)

    common = dict(episodes=cfg.eval_episodes, goal_offset=cfg.goal_offset, budget=cfg.budget, receding=cfg.receding,
                  num_samples=cfg.samples, iters=cfg.iters, topk=cfg.topk, seed=cfg.seed, out=out / "eval",
                  log=log)  # fmt: skip
    planned = stage("evaluate", lambda: evaluate("tworoom", data, run, dtype=cfg.dtype, **common))
    random = stage("random baseline", lambda: evaluate("tworoom", data, run, policy="random", **common))
    surprise = stage("surprise", lambda: surprise_test(run, "tworoom", episodes=cfg.surprise_episodes,
                                                       seed=cfg.seed, out=out / "surprise", log=log))  # fmt: skip
    total = time.perf_counter() - t_start
    summary = {
        "config": asdict(cfg), "seconds": total, "stage_seconds": times, "checkpoint": str(ckpt),
        "collect": collected, "train": trained,
        "success_rate": planned["success_rate"], "successes": planned["successes"], "episodes": planned["episodes"],
        "random_success_rate": random["success_rate"],
        "seconds_per_plan_call": planned["seconds_per_plan_call"],
        "seconds_per_episode": planned["seconds_per_episode"],
        "surprise": {k: v for k, v in surprise.items() if not k.startswith("_")},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
    }  # fmt: skip
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(out, summary, planned, random, surprise)
    log(f"demo: report in {out / 'report.md'}; total wall time {total / 60:.1f} min")
    log(f"success rate: {100 * planned['success_rate']:.0f}% ({planned['successes']}/{planned['episodes']}; "
        f"random actions: {100 * random['success_rate']:.0f}%)")  # fmt: skip
    return summary


def _collect(cfg: DemoConfig, data: Path) -> dict:
    """Collect the demo's episodes, or reuse a file that already holds all of them."""
    from lewm_fast.data.collect import collect
    from lewm_fast.data.hdf5 import open_h5, read_index

    if data.exists():
        with open_h5(data) as f:
            have = read_index(f)[0].size
        if have == cfg.episodes:  # reading only: the file stays untouched
            return {"out": str(data), "episodes": have, "new_rows": 0, "reused": True}
    return collect("tworoom", data, cfg.episodes, image_size=cfg.image_size, policy="mixed", seed=cfg.seed,
                   max_steps=cfg.max_steps, resume=data.exists(), progress=cfg.progress)  # fmt: skip


def write_report(out: Path, summary: dict, planned: dict, random: dict, surprise: dict) -> None:
    """OUT/report.md: what ran, the figures, the numbers (paths relative to OUT)."""
    cfg, t = summary["config"], summary["stage_seconds"]
    final = {"loss": float("nan"), "pred_loss": float("nan"), "sigreg_loss": float("nan")}
    final.update(summary["train"].get("final") or {})
    sc = surprise["conditions"]
    lines = [
        "# LeWM on TwoRoom: the whole mission on this machine",
        "",
        f"Total wall time: **{summary['seconds'] / 60:.1f} min** on {summary['cpu_count']} CPU cores "
        f"({summary['torch_threads']} torch threads).",
        "",
        "| stage | what | seconds |",
        "|---|---|---|",
        f"| collect | {cfg['episodes']} episodes x {cfg['max_steps']} steps, {cfg['image_size']} px, `mixed` policy "
        f"| {t['collect']:.0f} |",
        f"| train | small preset + {json.dumps(cfg['model'])}, {cfg['steps']} steps x batch {cfg['batch_size']}, "
        f"lr {cfg['lr']}, lambda {cfg['lambd']} | {t['train']:.0f} |",
        f"| evaluate | {planned['episodes']} held-out problems, CEM {planned['num_samples']} x {planned['iters']} "
        f"(top {planned['topk']}), horizon {planned['horizon']}, receding {planned['receding']}, {planned['dtype']} "
        f"| {t['evaluate']:.0f} |",
        f"| random baseline | same problems, uniform random actions | {t['random baseline']:.0f} |",
        f"| surprise | {surprise['episodes']} trajectories x 3 conditions | {t['surprise']:.0f} |",
        "",
        "## Training",
        "",
        f"Final training loss {final['loss']:.4f} (prediction {final['pred_loss']:.4f}, "
        f"SIGReg {final['sigreg_loss']:.3f}).",
        "",
        "![training loss](run/loss.png)",
        "",
        "## Planning (closed loop)",
        "",
        f"Protocol: start and goal from held-out episodes ({planned['held_out']}); goal = the frame "
        f"{planned['goal_offset']} steps ahead; budget {planned['budget']} env steps; action block = frameskip "
        f"{planned['frameskip']}; all episodes planned in one batch.",
        "",
        "| policy | success |",
        "|---|---|",
        f"| LeWM + CEM | **{100 * planned['success_rate']:.0f}%** ({planned['successes']}/{planned['episodes']}) |",
        f"| random actions | {100 * random['success_rate']:.0f}% ({random['successes']}/{random['episodes']}) |",
        "",
        f"Planning: {planned['plan_calls']} batched plan calls, {planned['seconds_per_plan_call']:.1f} s each "
        f"({planned['mean_batch_per_plan_call']:.0f} episodes per call on average), "
        f"{planned['seconds_per_episode']:.2f} s per episode.",
        "",
        "Start / goal / final frame of every episode (green: reached the goal):",
        "",
        "![evaluation frames](eval/eval_frames.png)",
        "",
        "## Surprise",
        "",
        f"Surprise = the predictor's error on the next embedding, averaged over frames {surprise['window_frames']} "
        f"(the perturbation happens at env step {surprise['perturb_step']}); paired t-tests over "
        f"{surprise['episodes']} trajectories:",
        "",
        "| condition | surprise | x unperturbed | p (vs unperturbed) |",
        "|---|---|---|---|",
        f"| unperturbed | {sc['unperturbed']['mean_surprise_around_t']:.4f} | 1 | - |",
        f"| colour change | {sc['colour']['mean_surprise_around_t']:.4f} | {sc['colour']['ratio_to_unperturbed']:.1f} "
        f"| {sc['colour']['p']:.2g} |",
        f"| teleport | {sc['teleport']['mean_surprise_around_t']:.4f} | {sc['teleport']['ratio_to_unperturbed']:.1f} "
        f"| {sc['teleport']['p']:.2g} |",
        "",
        f"Teleport vs colour change: x{surprise['teleport_vs_colour']['ratio']:.2f}, "
        f"p = {surprise['teleport_vs_colour']['p']:.2g}.",
        "",
        "![surprise](surprise/surprise.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
