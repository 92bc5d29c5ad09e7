"""A batch job against hostile input and mistakes: endless stdin, a signal while reading
it, sampling values that underflow, another job's files in the way, a model that fails to
load. Each of these broke a job once (issue 27)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from seqsched.cli import main
from tests.helpers import read_lines as _read
from tests.helpers import write_lines as _write

GOOD = [{"custom_id": c, "prompt": f"the queue {c} waits for", "max_tokens": 5} for c in "abcdef"]


def _run(model: Path, inp: Path, out: Path, *extra: str) -> int:
    argv = ["run", str(inp), "--model", str(model), "--output", str(out), "--device", "cpu", "--batch-size", "4"]
    return main([*argv, "--max-new-tokens", "8", "--threads", "1", *extra])


def _command(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "seqsched", "run", "-", "--model", str(model), "-o", str(out), "--device", "cpu",
            "--max-new-tokens", "4", "--threads", "1", "--max-line-bytes", "4096"]  # fmt: skip


def _feed(stdin: object, chunks: int, tail: bytes) -> None:
    block = b"0" * (1 << 20)
    try:
        for _ in range(chunks):
            stdin.write(block)  # type: ignore[attr-defined]
        stdin.write(tail)  # type: ignore[attr-defined]
    finally:
        stdin.close()  # type: ignore[attr-defined]


def _piped(model: Path, out: Path, megabytes: int) -> tuple[int, int]:
    """A job reading ``megabytes`` MiB of one line from stdin, then a good line: (exit, peak RSS KiB)."""
    process = subprocess.Popen(_command(model, out), stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    good = b'\n{"custom_id": "a", "prompt": "the queue a waits for"}\n'
    feeder = threading.Thread(target=_feed, args=(process.stdin, megabytes, good))
    feeder.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    feeder.join()
    return process.returncode, usage.ru_maxrss


@pytest.fixture(scope="module")
def baseline_rss(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A job's peak RSS (KiB) with a one-byte line: torch, the model, the reader."""
    return _piped(tiny_model_dir, tmp_path_factory.mktemp("baseline") / "out.jsonl", 0)[1]


def test_stdin_is_read_a_line_at_a_time_under_the_line_limit(
    tiny_model_dir: Path, tmp_path: Path, baseline_rss: int
) -> None:
    """600 MiB without a newline, then a good line: the long line is one error, the good one
    answered, and the job's memory never holds the long line (it held all of stdin)."""
    out = tmp_path / "out.jsonl"
    code, rss = _piped(tiny_model_dir, out, 600)
    assert code == 3, "a line failed: exit 3"
    assert [x["custom_id"] for x in _read(out)] == ["a"]
    errors = _read(out.with_name("out.jsonl.errors.jsonl"))
    assert len(errors) == 1 and "line is 629,145,600 bytes, over the limit of 4,096" in errors[0]["error"]["message"]
    assert rss < baseline_rss + 200_000, f"peak RSS {rss} KiB against {baseline_rss}: the long line was held"


def test_a_signal_while_reading_an_endless_stdin_stops_the_job(
    tiny_model_dir: Path, tmp_path: Path, baseline_rss: int
) -> None:
    out = tmp_path / "out.jsonl"
    with open("/dev/zero", "rb") as zero:
        process = subprocess.Popen(_command(tiny_model_dir, out), stdin=zero, stderr=subprocess.PIPE)
        time.sleep(6)  # started, and reading
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (ended := os.wait4(process.pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if ended[0] == 0:  # still reading: it ignored the signal
            process.kill()
            ended = os.wait4(process.pid, 0)
        _, status, usage = ended
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
    assert usage.ru_maxrss < baseline_rss + 200_000, f"peak RSS {usage.ru_maxrss} KiB while reading /dev/zero"
    assert not out.exists() and not out.with_name("out.jsonl.partial").exists()


def test_a_top_p_that_is_zero_in_float32_answers_among_the_first_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    """top_p 1e-300 keeps just the top token: greedy. It was lost with every other answer,
    because the warm-up runs the first two lines outside the per-row error handling."""
    tiny = {"custom_id": "tiny", "prompt": "the queue tiny", "temperature": 0.7, "top_p": 1e-300, "max_tokens": 5}
    inp = _write(tmp_path / "in.jsonl", [tiny, *GOOD])
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 0
    answers = {x["custom_id"]: x for x in _read(out)}
    assert sorted(answers) == sorted(["tiny", *"abcdef"])
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    greedy = _write(tmp_path / "greedy.jsonl", [{"custom_id": "tiny", "prompt": "the queue tiny", "max_tokens": 5}])
    assert _run(tiny_model_dir, greedy, tmp_path / "greedy-out.jsonl") == 0
    reference = _read(tmp_path / "greedy-out.jsonl")[0]["response"]["body"]["choices"][0]["text"]
    assert answers["tiny"]["response"]["body"]["choices"][0]["text"] == reference


def test_another_jobs_file_at_the_error_path_is_never_replaced(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", [*GOOD[:2], {"custom_id": "bad", "prompt": ""}])
    theirs = tmp_path / "their-output.jsonl"
    theirs.write_text('{"custom_id": "x", "finished": "work"}\n')
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out, "--errors", str(theirs)) == 2
    assert theirs.read_text() == '{"custom_id": "x", "finished": "work"}\n'
    assert not out.exists()
    assert _run(tiny_model_dir, inp, out, "--errors", str(theirs), "--overwrite") == 3
    assert [x["custom_id"] for x in _read(theirs)] == ["bad"]


def test_a_status_file_left_by_another_job_is_refused_too(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", GOOD[:2])
    out = tmp_path / "out.jsonl"
    out.with_name("out.jsonl.status.json").write_text("{}\n")
    assert _run(tiny_model_dir, inp, out) == 2
    assert _run(tiny_model_dir, inp, out, "--overwrite") == 0


def test_a_model_that_fails_to_load_leaves_nothing_that_blocks_the_next_command(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn download
    inp = _write(tmp_path / "in.jsonl", GOOD[:3])
    out = tmp_path / "out.jsonl"
    assert _run(broken, inp, out) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken-model", "in.jsonl"]
    assert _run(tiny_model_dir, inp, out) == 0, "the corrected command runs as it is, without --resume"


def test_a_dry_run_predicts_group_by_group() -> None:
    """A million-line dry run with the proxy peaked at 10.6 GB: every request was predicted
    in one call. Calls are bounded now, whatever the input's size."""
    from seqsched.dry_run import PREDICT_CHUNK, dry_run
    from seqsched.predict.constant import ConstantPredictor
    from seqsched.request import Request
    from seqsched.schedule import ScheduleConfig
    from seqsched.simulate.cost_model import load_cost_model

    calls: list[int] = []

    class Counting(ConstantPredictor):
        def predict_requests(self, requests):  # type: ignore[no-untyped-def]
            calls.append(len(requests))
            return super().predict_requests(requests)

    requests = [Request(i, f"r{i}", prompt="hi", max_new_tokens=8) for i in range(2 * PREDICT_CHUNK + 5)]
    plan = dry_run(requests, Counting(), ScheduleConfig(), load_cost_model("cpu-default-model"), "x", True, 16)
    assert len(plan.predicted) == len(requests)
    assert max(calls) <= PREDICT_CHUNK and sum(calls) == len(requests)


def test_a_chat_template_that_never_ends_fails_its_requests_not_the_job(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nested range(100000) loops in the template hung a job with no limit."""
    import json

    from seqsched.engine import prompts

    monkeypatch.setattr(prompts, "TEMPLATE_SECONDS", 0.5)
    hostile = tmp_path / "hostile-model"
    shutil.copytree(tiny_model_dir, hostile)
    config = hostile / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings.pop("chat_template", None)
    config.write_text(json.dumps(settings))
    (hostile / "chat_template.jinja").write_text(
        "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{{ m['content'] }}{% endfor %}"
    )
    lines = [
        {"custom_id": c, "messages": [{"role": "user", "content": f"hello {c}"}], "max_tokens": 4} for c in "abcde"
    ]
    inp = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    assert _run(hostile, inp, out) == 3
    assert time.monotonic() - started < 60
    errors = _read(out.with_name("out.jsonl.errors.jsonl"))
    assert [e["custom_id"] for e in errors] == list("abcde")
    assert "took over 0.5 s to render" in errors[0]["error"]["message"]
    assert "on 3 requests already" in errors[-1]["error"]["message"], "after three, the rest are refused at once"
