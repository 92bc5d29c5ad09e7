"""`seqsched run --engine vllm` answers, errs and resumes as with the HF engine.

Each run builds its own vLLM engine in this process and drops it at the end, which tears
down vLLM's process-wide state; so these tests live apart from test_vllm.py's
long-lived engines (pytest finishes one module's fixtures before the next module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401 - CI: vLLM must be there
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from seqsched.cli import main
from tests.tiny_model import save_tiny_model

SMALL_KV = "0.02"  # GiB


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-vllm-run"), seed=0, eos_scale=2.5, num_heads=2)


def _run_cli(model: Path, inp: Path, out: Path, *extra: str) -> int:
    argv = ["run", str(inp), "-o", str(out), "--model", str(model), "--device", "cpu", "--max-new-tokens", "8"]
    return main([*argv, "--kv-cache-gib", SMALL_KV, *extra])


def _answers(path: Path) -> list[tuple[str, Any]]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [(x["custom_id"], x["error"] or x["response"]["body"]["choices"][0]) for x in lines]


def _errors(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.with_name(out.name + ".errors.jsonl").read_text().splitlines()]


def test_run_with_vllm_answers_and_errs_as_the_hf_engine_does(model_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "requests.jsonl"
    lines = [
        {"custom_id": "a", "prompt": "the model predicts", "max_tokens": 6},
        '{"prompt": "x",',
        {"custom_id": "n", "prompt": "p", "max_tokens": -3},
        {"custom_id": "b", "messages": [{"role": "user", "content": "my cat sorts the queue"}]},
        {"custom_id": "long", "prompt": "the batch", "max_tokens": 300},  # over the context
        {"custom_id": "c", "prompt": "a request waits for", "max_tokens": 3},
    ]
    inp.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    assert _run_cli(model_dir, inp, tmp_path / "hf.jsonl") == 3, "some lines fail: exit 3"
    assert _run_cli(model_dir, inp, tmp_path / "vllm.jsonl", "--engine", "vllm", "--policy", "sjf") == 3
    hf, vl = _answers(tmp_path / "hf.jsonl"), _answers(tmp_path / "vllm.jsonl")
    assert [x[0] for x in vl] == ["a", "b", "c"]
    assert vl == hf
    errors = [_errors(tmp_path / f"{name}.jsonl") for name in ("hf", "vllm")]
    assert errors[0] == errors[1]
    assert [(e["line"], e["custom_id"]) for e in errors[1]] == [(2, None), (3, "n"), (5, "long")]
    assert "exceeds the model's context" in errors[1][2]["error"]["message"]
    for name in ("hf", "vllm"):
        out = tmp_path / f"{name}.jsonl"
        _validate_as_vllm(out)
        _validate_as_vllm(out.with_name(out.name + ".errors.jsonl"))


def _validate_as_vllm(path: Path) -> None:
    """Every line parses as vLLM's own batch output line. vLLM's ``run_batch`` answers only
    chat, so a completion's body is checked against vLLM's ``CompletionResponse`` and the
    line around it with the body set aside. A line whose input had no readable custom_id
    keeps ``null`` there (vLLM's model wants a string; its run_batch stops at such a line)."""
    from vllm.entrypoints.launchers.run_batch import BatchRequestOutput
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse

    for text in path.read_text().splitlines():
        line = json.loads(text)
        if line["custom_id"] is None:
            assert line["error"] is not None and line["response"] is None
            continue
        body = (line.get("response") or {}).get("body")
        if body is not None and body["object"] == "text_completion":
            CompletionResponse.model_validate(body)
            line = {**line, "response": {**line["response"], "body": None}}
        BatchRequestOutput.model_validate(line)


def test_run_with_vllm_resumes_after_a_kill(model_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "requests.jsonl"
    inp.write_text(
        "".join(json.dumps({"custom_id": f"q{i}", "prompt": f"our team writes {i}"}) + "\n" for i in range(40))
    )
    out = tmp_path / "out.jsonl"
    journal = out.with_name(out.name + ".partial")
    argv = [sys.executable, "-m", "seqsched", "run", str(inp), "-o", str(out), "--model", str(model_dir)]
    argv += ["--engine", "vllm", "--max-new-tokens", "64", "--max-num-seqs", "2", "--kv-cache-gib", SMALL_KV]
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    saved = journal.read_text().count("\n") if journal.exists() else 0
    assert 3 <= saved < 40, f"the kill should land mid-run ({saved} answers saved)"
    assert _run_cli(model_dir, inp, out, "--engine", "vllm", "--max-new-tokens", "64", "--resume") == 0
    assert _run_cli(model_dir, inp, tmp_path / "whole.jsonl", "--engine", "vllm", "--max-new-tokens", "64") == 0
    assert _answers(out) == _answers(tmp_path / "whole.jsonl")


def test_the_python_api_runs_on_vllm(model_dir: Path, tmp_path: Path) -> None:
    import seqsched
    from seqsched.engine.config import VLLMConfig

    inp = tmp_path / "requests.jsonl"
    inp.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"a request {i}"}) + "\n" for i in range(5)))
    summary = seqsched.run(
        inp,
        tmp_path / "out.jsonl",
        model=model_dir,
        engine="vllm",
        vllm=VLLMConfig(max_num_seqs=2, kv_cache_gib=float(SMALL_KV)),
        max_new_tokens=8,
        device="cpu",
    )
    assert summary.num_lines == 5 and summary.num_errors == 0
    assert summary.metrics.num_requests == 5
