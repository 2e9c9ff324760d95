"""The whole mission on one machine, as a new user would run it first (`lewm-fast demo --out DIR`):

1. collect TwoRoom episodes (the `mixed` data policy) into DIR/data/tworoom.h5;
2. train LeWM (the `small` preset with the demo's model changes, below) into DIR/run;
3. evaluate closed-loop planning on held-out episodes (the paper's protocol) and, on the very same
   problems, the random-action baseline, into DIR/eval;
4. run the surprise test into DIR/surprise;
5. write DIR/report.md (figures and numbers) and DIR/demo.json; print `success rate: X%`.

The demo fits its training to a wall-time target (`minutes`, 20 by default): after collecting, it times
a training step and a planning iteration of the demo's model on this machine and trains MAX_STEPS steps
where they fit, fewer (at least MIN_STEPS) where they do not (a CPU without native bf16 fits fewer).
`steps=` fixes the count instead.

DIR must be empty or new, as for `lewm-fast train`: with `--resume` the demo continues one that an
interruption left in DIR (every stage reuses what it finds: collection and training resume), with
`--overwrite` it moves DIR aside (DIR.old-N) and starts afresh. A resumed demo must be asked for the same
thing (DIR/demo_config.json records it), and DIR must hold nothing the demo did not write; both are
checked before anything is written.

The demo model is the `small` preset with a 32-wide embedding (`embed_dim` 32 instead of 128): after the
same training it plans about twice as many of the protocol's problems (figures:
benchmarks/results/design_choices-history.json). TwoRoom's only varying factor is the agent's 2-D position,
and SIGReg spreads embeddings into an isotropic Gaussian in all D dimensions, so the wider the embedding the
more the 2-D manifold of positions has to curl, and the sooner latent distance stops growing with distance
in the room (the planner's cost is that latent distance).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lewm_fast._io import atomic_write, check_output_dir, folder_contents, move_aside, read_json
from lewm_fast.evaluation.protocol import BUDGET, EPISODES, GOAL_OFFSET, HORIZON, ITERS, SAMPLES, TOPK
from lewm_fast.evaluation.surprise import EPISODES as SURPRISE_EPISODES
from lewm_fast.training.checkpoint import latest_checkpoint
from lewm_fast.training.presets import get_preset

DEMO_MODEL = {"embed_dim": 32}
# What a demo writes into DIR (a resumed DIR must hold nothing else) and the file that records its request.
DEMO_FILES = ("data", "run", "eval", "surprise", "report.md", "demo.json", "demo_config.json")
RECORD = "demo_config.json"
# DemoConfig fields that may differ when a demo is resumed (they change nothing it computes or where).
RESUMABLE = ("out", "minutes", "device", "progress", "resume", "overwrite")

# Training steps of the demo: 4,000 steps plan more reliably across seeds than 2,000
# (benchmarks/results/design_choices-history.json).
MAX_STEPS = 4000
MIN_STEPS = 1000  # below this the model does not plan usefully; a slower machine takes longer instead
# A training step of the run against the bare step `time_train_step` times: data loading, validation and
# checkpoints add about a seventh (benchmarks/results/design_choices-history.json).
STEP_OVERHEAD = 1.15
# Time after planning that the fitted budget reserves: the random baseline, the surprise test, figures
# and the report (with a margin for a busier machine).
RESERVE_SECONDS = 60.0


@dataclass
class DemoConfig:
    """Knobs of the demo. The defaults meet the CPU target (2 cores, < 30 minutes); scale up with more
    episodes / steps / a larger image for a GPU or more time."""

    out: str
    episodes: int = 300  # TwoRoom episodes collected (10% held out for validation and evaluation)
    max_steps: int = 100  # env steps per episode
    image_size: int = 64  # frames and model (a multiple of the patch size, 16)
    steps: int | None = None  # training steps; None: MAX_STEPS, or fewer to finish within `minutes`
    minutes: float = 20.0  # the whole demo's wall-time target, for choosing the training steps
    batch_size: int = 64
    lr: float = 1e-3
    lambd: float = 0.09
    model: dict = field(default_factory=lambda: dict(DEMO_MODEL))  # LeWMConfig changes to the small preset
    amp: str | None = None  # None: "off" on CPU (fp32 is faster at this size), "auto" elsewhere
    device: str = "auto"
    eval_episodes: int = EPISODES
    goal_offset: int = GOAL_OFFSET
    budget: int = BUDGET
    receding: int = HORIZON
    samples: int = SAMPLES  # CEM: the paper's 300 samples, 30 iterations, top 30
    iters: int = ITERS
    topk: int = TOPK
    dtype: str = "auto"  # planning: bf16 where the CPU/GPU runs it natively, else fp32 (lewm_fast.capability)
    surprise_episodes: int = SURPRISE_EPISODES
    seed: int = 0
    progress: bool = True
    resume: bool = False  # continue the demo an interruption left in `out`
    overwrite: bool = False  # move what `out` holds aside (OUT.old-N) and start afresh


def check_demo_folder(cfg: DemoConfig) -> None:
    """`out` is new or empty, or (resume) holds an earlier demo of the same request and nothing else, or
    (overwrite) will be moved aside. Changes nothing; errors name the flag."""
    out = check_output_dir("--out", cfg.out)
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume, --overwrite: expected one of them, got both")
    if not out.is_dir() or not any(out.iterdir()) or cfg.overwrite:
        return
    if not cfg.resume:
        raise ValueError(f"--out: {out} is not empty (it holds {folder_contents(out)}); pass --resume to continue a "
                         "demo there, or --overwrite to move it aside and start afresh")  # fmt: skip
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_FILES)
    if not (out / RECORD).is_file() or foreign:
        why = f"it holds {', '.join(foreign)}, which a demo does not write" if foreign else f"it has no {RECORD}"
        raise ValueError(f"--resume: {out} is not a demo folder ({why}); nothing was changed")
    before = read_json(out / RECORD)
    for name, value in asdict(cfg).items():
        if name not in RESUMABLE and before.get(name) != value:
            flag = "--lambda" if name == "lambd" else "--" + name.replace("_", "-")
            raise ValueError(f"{flag}: the demo in {out} was asked for {name}={before.get(name)!r}, not {value!r}; "
                             f"resume it as it was, or use another --out")  # fmt: skip


def _prepare_folder(cfg: DemoConfig, log) -> Path:
    """The checked `out`: an old one moved aside (overwrite), the request recorded."""
    check_demo_folder(cfg)
    out = Path(cfg.out)
    if cfg.overwrite and out.is_dir() and any(out.iterdir()):
        log(f"demo: --overwrite: moved the previous {out} to {move_aside(out)}")
    out.mkdir(parents=True, exist_ok=True)
    record = json.dumps(asdict(cfg), indent=2).encode()
    atomic_write(out / RECORD, lambda f: f.write(record))
    return out


def check_demo(cfg: DemoConfig) -> None:
    """Every field and the output folder, before anything is collected or written (a bad --topk must not
    wait for training). Errors name the `lewm-fast demo` flag, for the API as for the CLI."""
    from lewm_fast._checks import SEED_MAX, check_choice, check_device, check_int, check_number
    from lewm_fast.data.collect import MAX_IMAGE_SIZE
    from lewm_fast.data.hdf5 import MIN_FRAME
    from lewm_fast.evaluation.protocol import DTYPES, EvalSettings
    from lewm_fast.training.train_config import AMP_CHOICES

    check_int("--episodes", cfg.episodes, lo=2)  # one episode held out at least
    check_int("--surprise-episodes", cfg.surprise_episodes, lo=2)  # a paired t-test
    check_int("--batch-size", cfg.batch_size, lo=1)
    if cfg.steps is not None:
        check_int("--steps", cfg.steps, lo=1)
    check_number("--minutes", cfg.minutes, lo=0, lo_open=True)
    check_int("--image-size", cfg.image_size, lo=MIN_FRAME, hi=MAX_IMAGE_SIZE)
    check_int("--max-steps", cfg.max_steps, lo=1)
    if cfg.max_steps <= cfg.goal_offset:
        raise ValueError(f"--max-steps: expected more than {cfg.goal_offset} steps per episode (evaluation goals are "
                         f"{cfg.goal_offset} steps ahead), got {cfg.max_steps}")  # fmt: skip
    check_number("--lr", cfg.lr, lo=0, lo_open=True)
    check_number("--lambda", cfg.lambd, lo=0)
    if cfg.amp is not None:
        check_choice("--amp", cfg.amp, AMP_CHOICES)
    check_device("--device", cfg.device)
    check_int("--seed", cfg.seed, lo=0, hi=SEED_MAX)
    if not isinstance(cfg.model, dict):
        raise TypeError(f"--model: expected a JSON object of LeWMConfig fields, got {cfg.model!r}")
    try:
        get_preset("small").model.replace(**{**cfg.model, "image_size": cfg.image_size})
    except (TypeError, ValueError) as e:
        raise type(e)(f"--model, --image-size: {e}") from e
    for flag, value in (("--eval-episodes", cfg.eval_episodes), ("--samples", cfg.samples), ("--iters", cfg.iters)):
        check_int(flag, value, lo=1)
    check_int("--topk", cfg.topk, lo=1)
    if cfg.topk > cfg.samples:
        raise ValueError(f"--topk: expected at most --samples={cfg.samples} elites, got {cfg.topk}")
    check_int("--receding", cfg.receding, lo=1)
    if cfg.receding > HORIZON:
        raise ValueError(
            f"--receding: expected at most the planning horizon {HORIZON} action blocks, got {cfg.receding}"
        )
    check_choice("--dtype", cfg.dtype, DTYPES)
    EvalSettings(cfg.eval_episodes, cfg.goal_offset, cfg.budget, HORIZON, cfg.receding, cfg.samples, cfg.topk,
                 cfg.iters, dtype=cfg.dtype, seed=cfg.seed)  # the rest, as evaluate checks it  # fmt: skip
    check_demo_folder(cfg)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run every stage (module docstring); returns the summary written to OUT/demo.json."""
    from lewm_fast.evaluation.closed_loop import evaluate
    from lewm_fast.evaluation.surprise import surprise_test
    from lewm_fast.training import train

    check_demo(cfg)
    out = _prepare_folder(cfg, log)
    stages = _Stages(log)
    data = out / "data" / "tworoom.h5"
    collected = stages.run("collect", lambda: _collect(cfg, data))
    train_cfg, fitted = _train_config(cfg, out, data, cfg.minutes * 60 - stages.elapsed(), log)
    trained = stages.run("train", lambda: train(train_cfg))
    common = dict(episodes=cfg.eval_episodes, goal_offset=cfg.goal_offset, budget=cfg.budget, receding=cfg.receding,
                  num_samples=cfg.samples, iters=cfg.iters, topk=cfg.topk, seed=cfg.seed, out=out / "eval",
                  log=log)  # fmt: skip
    run = out / "run"
    planned = stages.run("evaluate", lambda: evaluate("tworoom", data, run, dtype=cfg.dtype, **common))
    random = stages.run("random baseline", lambda: evaluate("tworoom", data, run, policy="random", **common))
    surprise = stages.run("surprise", lambda: surprise_test(run, "tworoom", episodes=cfg.surprise_episodes,
                                                            seed=cfg.seed, out=out / "surprise", log=log))  # fmt: skip
    summary = {
        "config": asdict(cfg), "train_steps": train_cfg.steps, "train_steps_chosen": fitted,
        "seconds": stages.elapsed(), "stage_seconds": stages.seconds, "checkpoint": str(latest_checkpoint(run)),
        "collect": collected, "train": trained,
        "success_rate": planned["success_rate"], "successes": planned["successes"], "episodes": planned["episodes"],
        "random_success_rate": random["success_rate"],
        "seconds_per_plan_call": planned["seconds_per_plan_call"],
        "seconds_per_episode": planned["seconds_per_episode"],
        "surprise": {k: v for k, v in surprise.items() if not k.startswith("_")},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
    }  # fmt: skip
    text = json.dumps(summary, indent=2, default=str).encode()
    atomic_write(out / "demo.json", lambda f: f.write(text))
    write_report(out, summary, planned, random, surprise)
    log(f"demo: report in {out / 'report.md'}; total wall time {summary['seconds'] / 60:.1f} min")
    log(f"success rate: {100 * planned['success_rate']:.0f}% ({planned['successes']}/{planned['episodes']}; "
        f"random actions: {100 * random['success_rate']:.0f}%)")  # fmt: skip
    return summary


class _Stages:
    """Runs the demo's stages with a line before and after each, and keeps their wall times."""

    def __init__(self, log):
        self.log, self.start, self.seconds = log, time.perf_counter(), {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, name: str, fn):
        self.log(f"demo: {name} ...")
        t0 = time.perf_counter()
        value = fn()
        self.seconds[name] = time.perf_counter() - t0
        self.log(f"demo: {name} done in {self.seconds[name]:.1f} s")
        return value


def _train_config(cfg: DemoConfig, out: Path, data: Path, seconds_left: float, log):
    """The training run's TrainConfig (resuming what an interrupted demo left) and how its steps were chosen."""
    from lewm_fast.training import TrainConfig

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    amp = cfg.amp or ("off" if device == "cpu" else "auto")
    run = out / "run"
    steps, fitted = _training_steps(cfg, run, device, amp, data, seconds_left)
    log(f"demo: {steps} training steps ({fitted})")
    train_cfg = TrainConfig(data=str(data), out=str(run), preset="small", steps=steps, batch_size=cfg.batch_size,
                            lr=cfg.lr, lambd=cfg.lambd, amp=amp, device=device, seed=cfg.seed,
                            resume=run.exists(),  # continue what an interrupted demo left
                            model_overrides={**cfg.model, "image_size": cfg.image_size}, progress=cfg.progress,
                            val_every=max(steps // 4, 1), ckpt_every=max(steps // 4, 1))  # fmt: skip
    return train_cfg, fitted


def _training_steps(cfg: DemoConfig, run: Path, device: str, amp: str, data: Path, seconds_left: float):
    """(steps, how they were chosen): `cfg.steps` when given; an interrupted demo's own count (its run
    folder's train_config.json: a resume must not change it); else MAX_STEPS, or as many as fit in
    `seconds_left` after the planning and RESERVE_SECONDS (at least MIN_STEPS), from a timed training
    step and a timed planning iteration of the demo's model on this machine."""
    if cfg.steps is not None:
        return cfg.steps, "given"
    if (run / "train_config.json").exists():
        from lewm_fast._io import read_json

        return int(read_json(run / "train_config.json")["steps"]), "the interrupted run's"
    from lewm_fast.data.hdf5 import open_h5

    with open_h5(data) as f:
        action_dim = f["action"].shape[1]
    model_cfg = get_preset("small").model.replace(action_dim=action_dim, image_size=cfg.image_size, **cfg.model)
    step_s = time_train_step(model_cfg, cfg.batch_size, device, amp == "bf16")
    plan_calls = -(-cfg.budget // (cfg.receding * model_cfg.frameskip))  # per episode, all planned in one batch
    plan_s = time_plan_iteration(model_cfg, cfg.eval_episodes, cfg.samples, cfg.topk, device, cfg.dtype)
    train_s = seconds_left - plan_calls * cfg.iters * plan_s - RESERVE_SECONDS
    fit = int(train_s / (step_s * STEP_OVERHEAD)) // 100 * 100
    steps = max(MIN_STEPS, min(MAX_STEPS, fit))
    return steps, (f"to finish within {cfg.minutes:g} min: {step_s:.2f} s per training step, {plan_s:.2f} s per "
                   f"planning iteration measured here")  # fmt: skip


def time_train_step(model_cfg, batch_size: int, device: str, amp: bool) -> float:
    """Seconds of one training step (forward, SIGReg, backward, AdamW) of a fresh model on random windows:
    the fastest of 3 after a warm-up."""
    import lewm_fast as lf
    from lewm_fast.training.trainer import LossModule

    model = lf.LeWM(model_cfg).to(device).train()
    loss_fn = LossModule(model, lf.SIGReg(), lambd=0.09)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t, s = model_cfg.num_frames + 1, model_cfg.image_size
    pixels = torch.randn(batch_size, t, 3, s, s, device=device)
    actions = torch.randn(batch_size, t, model_cfg.action_block_dim, device=device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            loss_fn(pixels, actions)[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def time_plan_iteration(model_cfg, envs: int, samples: int, topk: int, device: str, dtype: str) -> float:
    """Seconds of one planning iteration for `envs` environments at once (the evaluation's batch), from a
    one-iteration plan of a fresh model for a few of them (the second of two: the first packs and
    allocates), scaled by the number of environments (the rollout's work is linear in it)."""
    import lewm_fast as lf

    model = lf.LeWM(model_cfg).to(device).eval()
    probe, s = min(envs, 8), model_cfg.image_size
    pixels, goal = torch.randn(probe, 1, 3, s, s, device=device), torch.randn(probe, 3, s, s, device=device)
    planner = lf.CEMPlanner(model, num_samples=samples, topk=topk, iters=1, dtype=dtype)
    planner.plan(pixels, goal)
    t0 = time.perf_counter()
    planner.plan(pixels, goal)
    return (time.perf_counter() - t0) * envs / probe


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
    lines = [*_report_stages(summary, planned, surprise), *_report_training(summary),
             *_report_planning(planned, random), *_report_surprise(surprise)]  # fmt: skip
    text = "\n".join(lines).encode()
    atomic_write(out / "report.md", lambda f: f.write(text))


def _report_stages(summary: dict, planned: dict, surprise: dict) -> list[str]:
    cfg, t = summary["config"], summary["stage_seconds"]
    return [
        "# LeWM on TwoRoom: the whole mission on this machine",
        "",
        f"Total wall time: **{summary['seconds'] / 60:.1f} min** on {summary['cpu_count']} CPU cores "
        f"({summary['torch_threads']} torch threads).",
        "",
        "| stage | what | seconds |",
        "|---|---|---|",
        f"| collect | {cfg['episodes']} episodes x {cfg['max_steps']} steps, {cfg['image_size']} px, `mixed` policy "
        f"| {t['collect']:.0f} |",
        f"| train | small preset + {json.dumps(cfg['model'])}, {summary['train_steps']} steps x batch "
        f"{cfg['batch_size']}, lr {cfg['lr']}, lambda {cfg['lambd']} (steps {summary['train_steps_chosen']}) "
        f"| {t['train']:.0f} |",
        f"| evaluate | {planned['episodes']} held-out problems, CEM {planned['num_samples']} x {planned['iters']} "
        f"(top {planned['topk']}), horizon {planned['horizon']}, receding {planned['receding']}, {planned['dtype']} "
        f"| {t['evaluate']:.0f} |",
        f"| random baseline | same problems, uniform random actions | {t['random baseline']:.0f} |",
        f"| surprise | {surprise['episodes']} trajectories x 3 conditions | {t['surprise']:.0f} |",
        "",
    ]


def _report_training(summary: dict) -> list[str]:
    final = {"loss": float("nan"), "pred_loss": float("nan"), "sigreg_loss": float("nan")}
    final.update(summary["train"].get("final") or {})
    return [
        "## Training",
        "",
        f"Final training loss {final['loss']:.4f} (prediction {final['pred_loss']:.4f}, "
        f"SIGReg {final['sigreg_loss']:.3f}).",
        "",
        "![training loss](run/loss.png)",
        "",
    ]


def _report_planning(planned: dict, random: dict) -> list[str]:
    return [
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
    ]


def _report_surprise(surprise: dict) -> list[str]:
    sc = surprise["conditions"]
    return [
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
