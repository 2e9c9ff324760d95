"""The `lewm-fast` command line. Each subcommand lives in `lewm_fast/commands/<name>.py` and defines
`add_arguments(parser)` and `run(args) -> int`; it is imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Subcommands are added here as they land.
COMMANDS = {
    "info": ("lewm_fast.commands.info", "versions, devices and the backends available here"),
    "collect": ("lewm_fast.commands.collect", "roll out a data policy, write episodes to HDF5"),
    "train": ("lewm_fast.commands.train", "train LeWM on an HDF5 episode file (single process or torchrun)"),
    "eval": ("lewm_fast.commands.eval", "closed-loop planning success on held-out start/goal pairs"),
    "surprise": ("lewm_fast.commands.surprise", "the surprise test: colour change vs teleport vs unperturbed"),
    "demo": ("lewm_fast.commands.demo", "the whole mission on a CPU: collect, train, evaluate, surprise, report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lewm-fast", description="LeWorldModel, fast: plan, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
