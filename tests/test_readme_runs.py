"""The README's cheap commands run as written (test_docs.py only parses them): the prompt
generator, dry runs and the simulator, in a scratch directory that sees the repository's
shipped files (seqsched/assets, data/) and nothing of `../shared`. A command that names a
placeholder (M, P, requests.jsonl) or loads a model for minutes is left to the fresh-clone
walk; one that reads `../shared` fails here, since a fresh clone has no such directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import ROOT

CHEAP = ("seqsched.workload.default_prompts", "--dry-run", "seqsched simulate")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if language not in ("", "bash"):
            continue
        for line in block.replace("\\\n", " ").split("\n"):
            line = line.split(" #")[0].strip()
            if line and any(c in line for c in CHEAP):
                found.append(line)
    return found


def test_the_readme_has_cheap_commands() -> None:
    commands = _readme_commands()
    assert any("default_prompts" in c for c in commands) and any("simulate" in c for c in commands)


@pytest.mark.parametrize("command", _readme_commands())
def test_a_cheap_readme_command_runs_as_written(command: str, tmp_path: Path) -> None:
    for name in ("seqsched", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "runs").mkdir()  # as each README block's `mkdir -p runs` makes it
    if "runs/requests.jsonl" in command and "default_prompts" not in command:  # made by the line before it
        subprocess.run([sys.executable, "-m", "seqsched.workload.default_prompts", "-n", "64", "--jsonl"],
                       stdout=(tmp_path / "runs" / "requests.jsonl").open("w"), check=True)  # fmt: skip
    shell = command.replace("python -m", f"{sys.executable} -m")
    shell = re.sub(r"(^|&& |\| )seqsched ", rf"\1{sys.executable} -m seqsched ", shell)
    done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"`{command}` exited {done.returncode}: {done.stderr[-1500:]}"
