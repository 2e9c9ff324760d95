"""The README and docs/ as a user meets them: every Python block runs as written (each in a fresh process, in an
empty folder), every command line of a shell block names commands and flags that exist, every link points to
a file of the repository, the Quickstart keeps the shape `.ci/run` reads, and the README stays short with its
Python quickstart near the top."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "results" / "HISTORY.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block of `language` in `page`."""
    text = page.read_text()
    return [(text[: m.start()].count("\n") + 1, m[2]) for m in FENCE.finditer(text) if m[1] == language]


def quickstart_block(text: str) -> list[str]:
    """The lines of the first fenced block under `## Quickstart`, as `.ci/run` extracts them."""
    section = text.split("\n## Quickstart", 1)[1]
    return section.split("```", 2)[1].split("\n", 1)[1].rstrip("\n").split("\n")


def test_quickstart_has_the_two_commands_ci_runs():
    first, second = quickstart_block(README.read_text())  # exactly two lines
    assert "pip install" in first and "benchmarks/plan_speed.py" in first
    assert "pip install" in second and "pytest" in second


def test_readme_is_short_with_its_python_quickstart_in_the_first_80_lines():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    first_python = blocks(README, "python")[0][0]
    assert first_python <= 80, f"the first Python block starts at line {first_python}"
    for word in ("DESIGN.md", "../shared", "side venv", "this project's"):
        for page in PAGES:
            assert word not in page.read_text(), f"{page.name} mentions {word!r}, which a user's clone does not have"


PYTHON_BLOCKS = [pytest.param(page, line, code, id=f"{page.name}:{line}") for page in PAGES
                 for line, code in blocks(page, "python")]  # fmt: skip


def missing_modules(code: str) -> list[str]:
    """Top-level modules the block imports that are not installed here (e.g. stable_worldmodel)."""
    names = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", code, re.M)
    return [n for n in names if importlib.util.find_spec(n) is None]


@pytest.mark.parametrize("page, line, code", PYTHON_BLOCKS)
def test_python_block_runs_as_written(page, line, code, tmp_path):
    missing = missing_modules(code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"{page.name} line {line}:\n{proc.stderr[-3000:]}"


def command_lines(code: str) -> list[list[str]]:
    """Each command of a shell block as tokens: continuations joined, comments and VAR=value prefixes dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
            tokens = tokens[1:]
        if tokens:
            out.append(tokens)
    return out


def cli_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments of a `lewm-fast` command (also `python -m lewm_fast.cli`, `torchrun ... -m lewm_fast.cli`)."""
    if tokens[0] == "lewm-fast":
        return tokens[1:]
    if "lewm_fast.cli" in tokens and tokens[tokens.index("lewm_fast.cli") - 1] == "-m":
        return tokens[tokens.index("lewm_fast.cli") + 1 :]
    return None


def script(tokens: list[str]) -> Path | None:
    """The benchmark script a `python benchmarks/NAME.py ...` command runs."""
    if len(tokens) > 1 and tokens[0] == "python" and tokens[1].startswith("benchmarks/"):
        return ROOT / tokens[1]
    return None


def checkable(tokens: list[str]) -> bool:
    """A command this test can check without running it (pip, git and the like are left alone)."""
    return cli_arguments(tokens) is not None or script(tokens) is not None or tokens[:3] == ["python", "-m", "pytest"]


def shell_commands() -> list:
    """Every checkable command of every shell block but the Quickstart's (which CI runs)."""
    quickstart = quickstart_block(README.read_text())
    out = []
    for page in PAGES:
        for line, code in blocks(page, "bash"):
            if page == README and code.rstrip("\n").split("\n") == quickstart:
                continue
            for i, tokens in enumerate(command_lines(code)):
                if checkable(tokens):
                    out.append(pytest.param(tokens, id=f"{page.name}:{line}+{i}:{' '.join(tokens[:2])}"))
    return out


@pytest.mark.parametrize("tokens", shell_commands())
def test_shell_command_names_commands_and_flags_that_exist(tokens):
    """`lewm-fast` lines parse with the real parser (nothing runs); benchmark lines name a script whose --help
    lists every flag used; pytest lines name test files that exist."""
    args = cli_arguments(tokens)
    if args is not None:
        from lewm_fast.cli import build_parser

        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"lewm-fast {' '.join(args)}: the parser refused it (exit {exc.code})")
        return
    path = script(tokens)
    if path is not None:
        assert path.is_file(), path
        help_text = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300).stdout  # fmt: skip
        for flag in (t.split("=")[0] for t in tokens[2:] if t.startswith("--")):
            assert flag in help_text, f"{path.name} has no {flag}"
    else:
        names = [t for t in tokens if t.startswith("tests/")]
        assert names and all((ROOT / name).exists() for name in names), names


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_point_to_files_and_headings_that_exist(page):
    text = FENCE.sub("", page.read_text())  # prose only: a `# comment` in a code block is no heading
    titles = re.findall(r"^#+ (.*)$", text, re.M)
    headings = {re.sub(r"[^\w\- ]", "", t).strip().lower().replace(" ", "-") for t in titles}  # GitHub's anchors
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (page.parent / path).exists(), f"{page.name}: {target} does not exist"
        elif anchor:
            assert anchor in headings, f"{page.name}: no heading for #{anchor}"


def test_readme_links_to_each_docs_page():
    text = README.read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README.md does not link docs/{page.name}"
