"""The README's batch walk-through runs as written: a server with --batch-dir, 64 batch lines
from the prompt generator, the `openai` client uploading, creating, waiting and reading the
output, then SIGTERM. Here the server fronts a fake upstream instead of starting vLLM (the
vLLM path is tests/test_batches_vllm.py); everything else is the README's own text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_helpers import FakeUpstream, free_port, running
from tests.test_docs import ROOT


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Interactive and batch traffic on one server", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README's batch section has its commands"
    return block.group(1)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_the_readme_batch_walkthrough_runs(tmp_path: Path) -> None:
    script = _walkthrough()
    assert "seqsched serve --model seqsched/assets/default_model" in script
    with running(FakeUpstream(seconds_per_token=0.001).app()) as upstream:
        port = free_port()
        script = script.replace("source .venv/bin/activate && ", "")
        script = script.replace("--model seqsched/assets/default_model --dtype float32 --max-num-seqs 16",
                                f"--upstream {upstream}")  # fmt: skip
        script = script.replace("8000", str(port)).replace("python ", f"{sys.executable} ")
        script = re.sub(r"^seqsched ", f"{sys.executable} -m seqsched ", script, flags=re.M)
        (tmp_path / "seqsched").symlink_to(ROOT / "seqsched")
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed BatchRequestCounts(completed=64, failed=0, total=64)" in done.stdout
    assert '"custom_id": "default-0"' in done.stdout
