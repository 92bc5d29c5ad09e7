"""Every `seqsched ...` command in the README and docs/ parses with the real CLI: a renamed
or removed option fails here, not in a reader's shell. (Running them is a separate check,
on a fresh clone; this one is about what is written.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from seqsched.cli import _subparser, build_parser

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = ("...", "[", "<", " N ", "|")  # a command that names a shape, not a command


def commands(text: str) -> list[str]:
    """Commands in fenced blocks (one a line, continuations joined) and in inline code."""
    found = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if language not in ("", "bash"):
            continue  # a Python example's lines are not commands
        for line in block.replace("\\\n", " ").split("\n"):
            line = line.split(" #")[0].strip().removesuffix("&").strip()  # a server started in the background
            match = re.search(r"(?:^|\| |&& )(?:\.venv/bin/)?(seqsched .*)$", line)
            if match:
                found.append(" ".join(match.group(1).split()))
    for span in re.findall(r"`((?:\.venv/bin/)?seqsched [^`]+)`", text, re.S):
        found.append(" ".join(span.split()).removeprefix(".venv/bin/"))
    return [c for c in found if not any(p in c + " " for p in PLACEHOLDERS)]


def _cases() -> list[tuple[str, str]]:
    return [(path.name, command) for path in DOCS for command in commands(path.read_text(encoding="utf-8"))]


def test_the_docs_have_commands() -> None:
    names = {name for name, _ in _cases()}
    assert {"README.md", "recipe.md", "results.md"} <= names


@pytest.mark.parametrize(("doc", "command"), _cases())
def test_a_documented_command_parses(doc: str, command: str) -> None:
    parser = build_parser()
    argv = shlex.split(command)[1:]
    if len(argv) < 2:  # prose naming a subcommand (`seqsched run`), or the bare built-in bench
        assert not argv or argv[0] in ("run", "bench", "simulate", "calibrate", "lengths", "predictor", "serve")
        return
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as stop:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {stop.code})")
    assert not unknown, f"{doc}: `{command}`: {_subparser(parser, args).prog} has no {' '.join(unknown)}"


def test_the_check_can_fail() -> None:
    block = "```bash\nseqsched run a.jsonl \\\n  --predicter p   # x\n```"
    assert commands(block) == ["seqsched run a.jsonl --predicter p"]
    with pytest.raises(AssertionError, match="seqsched run has no --no-such-option"):
        test_a_documented_command_parses("x.md", "seqsched run a.jsonl --no-such-option")
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        test_a_documented_command_parses("x.md", "seqsched run a.jsonl --batch-size many")
