"""Checks of command-line flags shared by the subcommands, run before any collection, training or planning
starts. Each error names the flag (`--topk: expected at most --samples=8 elites, got 9`); `lewm_fast.cli`
prints it as one line."""

from __future__ import annotations

import argparse
from pathlib import Path

from lewm_fast._checks import SEED_MAX, check_choice, check_device, check_int, check_number
from lewm_fast._io import check_output_dir, parse_json_object
from lewm_fast.training.train_config import AMP_CHOICES

_RENAMED = {"lambd": "--lambda"}  # destinations whose flag is not the name with dashes


def flag(name: str) -> str:
    """The flag of an argparse destination: image_size -> --image-size."""
    return _RENAMED.get(name, "--" + name.replace("_", "-"))


def at_least(args: argparse.Namespace, lo: int, *names: str) -> None:
    """Each named flag is an int >= lo."""
    for name in names:
        check_int(flag(name), getattr(args, name), lo=lo)


def env(args: argparse.Namespace) -> None:
    from lewm_fast.envs import ENVS

    check_choice("--env", args.env, ENVS)


def seed(args: argparse.Namespace) -> None:
    check_int("--seed", args.seed, lo=0, hi=SEED_MAX)


def existing(name: str, path: str | None, what: str = "file or folder") -> None:
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"{name}: no {what} at {path}")


def json_object(name: str, text: str | None) -> dict | None:
    """A flag holding a JSON object ({"embed_dim": 32}); None stays None."""
    return None if text is None else parse_json_object(text, name)


def planner(args: argparse.Namespace, horizon: int) -> None:
    """--samples, --topk, --iters, --horizon, --receding (in that order: a bad horizon is blamed, not receding)."""
    at_least(args, 1, "samples", "iters")
    check_int("--horizon", horizon, lo=1)
    check_int("--topk", args.topk, lo=1)
    if args.topk > args.samples:
        raise ValueError(f"--topk: expected at most --samples={args.samples} elites, got {args.topk}")
    check_int("--receding", args.receding, lo=1)
    if args.receding > horizon:
        raise ValueError(f"--receding: expected at most --horizon={horizon} action blocks, got {args.receding}")


def positive_number(args: argparse.Namespace, *names: str, zero: bool = False) -> None:
    """Each named flag (if given) is a finite number > 0 (>= 0 with zero=True)."""
    for name in names:
        value = getattr(args, name)
        if value is not None:
            check_number(flag(name), value, lo=0, lo_open=not zero)


def output_dir(args: argparse.Namespace) -> None:
    check_output_dir("--out", args.out)


def device(args: argparse.Namespace) -> None:
    check_device("--device", args.device)


def amp(args: argparse.Namespace) -> None:
    if args.amp is not None:
        check_choice("--amp", args.amp, AMP_CHOICES)
