"""A real `seqsched run` subprocess on the tiny model, stopped at points spread over its
run (start-up included) with SIGKILL, SIGTERM and SIGINT, then resumed: the final output
equals an uninterrupted run's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.kill_resume import compare, run_to_end, stop_after, stop_once_answering, unbatched, write_requests

NUM_REQUESTS = 40


@pytest.fixture(scope="module")
def job(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, bytes, float]:
    workdir = tmp_path_factory.mktemp("kill")
    requests = workdir / "requests.jsonl"
    write_requests(requests, NUM_REQUESTS)
    span = run_to_end(str(tiny_model_dir), requests, workdir / "reference.jsonl", resume=False)
    return str(tiny_model_dir), requests, (workdir / "reference.jsonl").read_bytes(), span


def _resumed(job: tuple[str, Path, bytes, float], out: Path) -> dict[str, int]:
    model, requests, reference, _ = job
    run_to_end(model, requests, out, resume=True)
    # Byte for byte, except seqsched's "length": the steps of the micro-batch a request ran in,
    # which after a stop mid-batch are the resumed run's batches (its tokens are the same).
    assert unbatched(out.read_bytes()) == unbatched(reference), "the resumed output must equal the uninterrupted one"
    return compare(reference, out.read_bytes())


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0])
def test_sigkill_at_any_point_then_resume(job: tuple[str, Path, bytes, float], tmp_path: Path, fraction: float) -> None:
    model, requests, _, span = job
    out = tmp_path / "out.jsonl"
    stop_after(model, requests, out, resume=False, delay=fraction * span, how="SIGKILL")
    assert _resumed(job, out) == {"lost": 0, "duplicated": 0, "corrupt": 0, "differing": 0}


def test_a_second_kill_during_the_resume(job: tuple[str, Path, bytes, float], tmp_path: Path) -> None:
    model, requests, _, span = job
    out = tmp_path / "out.jsonl"
    stop_after(model, requests, out, resume=False, delay=0.5 * span, how="SIGKILL")
    stop_after(model, requests, out, resume=True, delay=0.6 * span, how="SIGKILL")
    assert _resumed(job, out)["differing"] == 0


@pytest.mark.parametrize(("how", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_sigint_stop_cleanly(
    job: tuple[str, Path, bytes, float], tmp_path: Path, how: str, code: int
) -> None:
    model, requests, _, _ = job
    out = tmp_path / "out.jsonl"
    assert stop_once_answering(model, requests, out, how=how) == code
    assert not out.exists(), "a stopped job writes no output that looks complete"
    assert out.with_name("out.jsonl.partial").exists()
    assert '"state": "interrupted"' in out.with_name("out.jsonl.status.json").read_text()
    assert _resumed(job, out)["lost"] == 0
