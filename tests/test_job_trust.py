"""A job under hostile input: poison lines fail alone, one job per output, paths that
cannot be turned, files no more readable than the input."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from seqsched.cli import main
from seqsched.data.lock import JobLocked, job_lock
from tests.helpers import read_lines as _read
from tests.helpers import write_lines as _write

GOOD = [{"custom_id": c, "prompt": f"the queue {c} waits for", "max_tokens": 5} for c in "abcdef"]


def _run(model: Path, inp: Path, out: Path, *extra: str) -> int:
    argv = ["run", str(inp), "--model", str(model), "--output", str(out), "--device", "cpu", "--batch-size", "4"]
    return main([*argv, "--max-new-tokens", "8", *extra])


def test_a_tiny_temperature_is_greedy_and_the_job_completes(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines = [*GOOD[:3], {"custom_id": "tiny", "prompt": "the queue tiny", "temperature": 1e-300, "top_p": 1e-300},
             *GOOD[3:]]  # fmt: skip
    inp = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 0
    answers = {x["custom_id"]: x for x in _read(out)}
    assert sorted(answers) == sorted(["tiny", *"abcdef"])
    assert _run(tiny_model_dir, inp, out, "--resume") == 0 and {x["custom_id"]: x for x in _read(out)} == answers
    greedy = _write(tmp_path / "greedy.jsonl", [{"custom_id": "tiny", "prompt": "the queue tiny"}])
    assert _run(tiny_model_dir, greedy, tmp_path / "greedy-out.jsonl") == 0
    reference = _read(tmp_path / "greedy-out.jsonl")[0]["response"]["body"]["choices"][0]["text"]
    assert answers["tiny"]["response"]["body"]["choices"][0]["text"] == reference, "below 1e-5 is greedy"


def test_a_row_the_engine_raises_on_fails_alone(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seqsched.engine.hf import HFEngine

    real_run = HFEngine.run

    def poisoned(self: HFEngine, batch: Any, requests: Any) -> Any:
        if any(r.request_id == "c" for r in requests):
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real_run(self, batch, requests)

    monkeypatch.setattr(HFEngine, "run", poisoned)
    inp = _write(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 3, "some lines failed: exit 3"
    assert [x["custom_id"] for x in _read(out)] == ["a", "b", "d", "e", "f"]
    (error,) = _read(tmp_path / "out.jsonl.errors.jsonl")
    assert error["custom_id"] == "c" and error["line"] == 3
    assert "the engine failed on this request: RuntimeError: probability tensor" in error["error"]["message"]
    monkeypatch.setattr(HFEngine, "run", real_run)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0, "resume answers the failed row now"
    assert [x["custom_id"] for x in _read(out)] == list("abcdef")


@pytest.mark.parametrize("role", ["tool", "User", "foo"])
def test_unknown_roles_are_refused_per_line(tiny_model_dir: Path, tmp_path: Path, role: str) -> None:
    lines = [GOOD[0], {"custom_id": "r", "messages": [{"role": role, "content": "hi"}]},
             {"custom_id": "dev", "messages": [{"role": "developer", "content": "be brief"},
                                               {"role": "user", "content": "hi"}]}]  # fmt: skip
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, _write(tmp_path / "in.jsonl", lines), out) == 3
    assert [x["custom_id"] for x in _read(out)] == ["a", "dev"], "developer is read as system"
    (error,) = _read(tmp_path / "out.jsonl.errors.jsonl")
    assert "messages[0].role" in error["error"]["message"] and json.dumps(role) in error["error"]["message"]


def test_a_huge_prompt_is_refused_before_it_is_tokenized(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seqsched.engine.prompts as prompts

    real_encode, encoded = prompts.encode, []
    monkeypatch.setattr(prompts, "encode", lambda t, r, c: encoded.append(r.request_id) or real_encode(t, r, c))
    lines = [GOOD[0], {"custom_id": "huge", "prompt": "word " * 200_000}]
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, _write(tmp_path / "in.jsonl", lines), out, "--max-line-bytes", str(2 << 20)) == 3
    (error,) = _read(tmp_path / "out.jsonl.errors.jsonl")
    assert "1,000,000 characters has at least" in error["error"]["message"]
    assert "huge" not in encoded


def test_stream_only_options_are_refused_with_the_static_engine(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = _write(tmp_path / "in.jsonl", GOOD)
    assert _run(tiny_model_dir, inp, tmp_path / "o.jsonl", "--policy", "sjf", "--max-num-seqs", "8") == 2
    assert "--policy, --max-num-seqs: only continuous engines use them" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl.partial").exists()


def _hold_lock(output: str, ready: Any, release: Any) -> None:
    with job_lock(Path(output)):
        ready.set()
        release.wait(30)


def test_a_second_job_on_the_same_output_is_refused(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        assert _run(tiny_model_dir, _write(tmp_path / "in.jsonl", GOOD), out) == 2
        assert f"another seqsched job (pid {holder.pid}) is writing {out}" in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / "out.jsonl.partial").exists()
    finally:
        release.set()
        holder.join(30)
    assert _run(tiny_model_dir, tmp_path / "in.jsonl", out) == 0, "the lock goes with its holder"
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_the_lock_is_exclusive_in_one_process_too(tmp_path: Path) -> None:
    with job_lock(tmp_path / "o"), pytest.raises(JobLocked, match=f"pid {os.getpid()}"), job_lock(tmp_path / "o"):
        pass
    with job_lock(tmp_path / "o"):  # released: taken again
        pass


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda d: (d / "out.jsonl.partial").symlink_to(d / "elsewhere"),
            "the journal {d}/out.jsonl.partial is a symbolic link",
        ),
        (lambda d: (d / "out.jsonl.status.json").mkdir(), "the status file path {d}/out.jsonl.status.json is a dir"),
        (lambda d: (d / "out.jsonl.lock").symlink_to("/etc/passwd"), "lock file {d}/out.jsonl.lock is a symbolic"),
        (lambda d: (d / "out.jsonl").symlink_to(d / "target"), "the output {d}/out.jsonl is a symbolic link"),
    ],
)
def test_planted_links_and_directories_are_refused_before_anything_runs(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Any, message: str
) -> None:
    inp = _write(tmp_path / "in.jsonl", GOOD)
    setup(tmp_path)
    started = time.monotonic()
    assert _run(tiny_model_dir, inp, tmp_path / "out.jsonl", "--overwrite") == 2
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert time.monotonic() - started < 10, "refused before the model loads"
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "target").exists()


def test_an_input_that_is_the_journal_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "out.jsonl.partial", GOOD)
    assert _run(tiny_model_dir, inp, tmp_path / "out.jsonl", "--overwrite") == 2
    assert inp.read_text().count("\n") == len(GOOD), "the input is untouched"


def test_the_job_files_are_no_more_readable_than_the_input(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", [*GOOD, "not json"])
    inp.chmod(0o600)
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 3
    for path in (out, tmp_path / "out.jsonl.errors.jsonl", tmp_path / "out.jsonl.status.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_stale_temporaries_of_a_killed_write_are_removed(tiny_model_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".out.jsonl.tmp-999999"
    stale.write_text("half an output")
    other = tmp_path / ".another.jsonl.tmp-1"
    other.write_text("not this job's")
    assert _run(tiny_model_dir, _write(tmp_path / "in.jsonl", GOOD), tmp_path / "out.jsonl") == 0
    assert not stale.exists() and other.exists()


def test_a_missing_model_or_device_is_refused_before_any_file_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    import torch

    inp = _write(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    assert _run(tmp_path / "no-model", inp, out) == 2
    assert "no-model' does not exist" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["run", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cuda"]) == 2
        assert "--device cuda: no CUDA device here" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"], "no journal, status or lock left"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_pickled_weights_that_are_not_tensors_are_refused_with_a_message(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import torch

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, model / "pytorch_model.bin")
    assert _run(model, _write(tmp_path / "in.jsonl", GOOD), tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "Traceback" not in err
    assert not marker.exists()


def test_the_journal_fsyncs_at_most_every_50_ms_and_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqsched.data import journal

    clock = [0.0]
    synced: list[float] = []
    monkeypatch.setattr(journal.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(journal.os, "fsync", lambda fd: synced.append(clock[0]))
    log = journal.Journal(tmp_path / "j", fresh=True)
    for i in range(10):
        clock[0] = i / 100
        log.append({"i": i})
    log.close()
    assert synced == [0.05, 0.09] and len((tmp_path / "j").read_text().splitlines()) == 10


def test_weights_changed_in_place_with_the_mtime_restored_are_not_resumed(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    from seqsched.data.journal import model_files

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = model_files(str(model))
    weights = model / "model.safetensors"
    info = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))  # the mtime put back
    assert weights.stat().st_mtime_ns == info.st_mtime_ns and weights.stat().st_size == info.st_size
    assert model_files(str(model)) != before


def test_resume_streams_answers_instead_of_holding_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    """20,000 answers of 4 KB each (80 MB of text) resumed with every one kept: the job's
    peak Python memory stays far below the answers' size (it holds offsets, not lines)."""
    import hashlib
    import tracemalloc

    import seqsched
    from seqsched.api import run_config
    from seqsched.data.batch_input import request_fingerprint
    from seqsched.data.journal import answer_fingerprint
    from seqsched.job.plan import settings_of

    n, text = 20_000, "x" * 4096
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps({"custom_id": f"q{i}", "prompt": f"p {i}", "max_tokens": 1}).encode() for i in range(n)]
    inp.write_bytes(b"".join(line + b"\n" for line in lines))
    settings = settings_of(run_config(inp, out, model=tiny_model_dir))
    with (tmp_path / "out.jsonl.partial").open("w") as f:
        for i, line in enumerate(lines):
            digest = hashlib.sha1(f"q{i}".encode()).hexdigest()[:24]
            body = {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "length"}]}
            extra = {"fingerprint": answer_fingerprint(request_fingerprint(line), settings)}
            answer = {"id": digest, "custom_id": f"q{i}", "response": {"status_code": 200, "body": body},
                      "error": None, "seqsched": extra}  # fmt: skip
            f.write(json.dumps(answer) + "\n")
    tracemalloc.start()
    try:
        summary = seqsched.run(inp, out, model=tiny_model_dir, resume=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.num_resumed == n and summary.num_answered == 0
    assert sum(1 for _ in out.open()) == n
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB for 80 MB of answers"


def test_a_hub_id_that_cannot_load_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = _write(tmp_path / "in.jsonl", GOOD)
    started = time.monotonic()
    assert _run(Path("no-such-org/no-such-model-xyz"), inp, tmp_path / "out.jsonl") == 2
    assert "'no-such-org/no-such-model-xyz' is not a local directory, not in the hub cache" in capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_two_jobs_started_together_on_one_output_one_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    inp = _write(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "seqsched", "run", str(inp), "-o", str(out), "--model", str(tiny_model_dir),
            "--device", "cpu", "--max-new-tokens", "8", "--threads", "1"]  # fmt: skip
    jobs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(job.wait(120), job.stderr.read() if job.stderr else "") for job in jobs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code != 0]
    # The second either finds the lock held, or (if the first already finished) the output there.
    assert codes == [0, 2], results
    assert "another seqsched job (pid" in refused[0] or "exists: resume that job" in refused[0]
    assert [x["custom_id"] for x in _read(out)] == [g["custom_id"] for g in GOOD]
