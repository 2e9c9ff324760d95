"""The `lewm-fast` command line. Each subcommand lives in `lewm_fast/commands/<name>.py` and defines
`add_arguments(parser)` and `run(args) -> int`; it is imported only when used.

Bad input (a ValueError/TypeError, a missing file, a missing optional package) is printed as one line,
`lewm-fast: error: <what, naming the flag or file>`, with exit status 2 and no traceback
(`LEWM_FAST_DEBUG=1` shows it). Library messages that name an API argument (`num_samples: ...`) are
shown with the command's flag (`--samples: ...`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
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
# The errors a user's input causes (the rest are bugs and keep their traceback).
BAD_INPUT = (ValueError, TypeError, OSError, ImportError)
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"lewm-fast: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lewm-fast", description="LeWorldModel, fast: plan, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _parser=p)
        importlib.import_module(module).add_arguments(p)
    return parser


def one_line(error: BaseException, parser: argparse.ArgumentParser | None = None, module=None) -> str:
    """The message of `error` on one line; a leading API name (`num_samples:`) becomes its flag."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError) or (isinstance(error, OSError) and not str(error).strip()):
        text = f"{type(error).__name__}: {text}"
    m = re.match(r"([a-z_]+): ", text)
    if m and parser is not None:
        name = getattr(module, "API_FLAGS", {}).get(m[1], "--" + m[1].replace("_", "-"))
        if name in parser._option_string_actions:
            text = name + text[len(m[1]) :]
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("lewm-fast: interrupted", file=sys.stderr)
        return 130
    except BAD_INPUT as e:
        if os.environ.get("LEWM_FAST_DEBUG") == "1":
            raise
        print(f"lewm-fast: error: {one_line(e, args._parser, module)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
