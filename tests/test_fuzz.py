"""Property-based fuzzing (hypothesis): arbitrary bytes and JSON values per line never crash
the reader or the job; every bad line gets an error naming its line; every valid line is
answered. The strategies and properties live in benchmarks/fuzz_reader.py, which runs
more of them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from benchmarks.fuzz_reader import AnswerAllEngine, fuzz


def test_the_reader_never_crashes_and_accounts_for_every_line() -> None:
    tally = fuzz(300)
    assert tally.files == 300 and tally.lines > 1000


def test_a_job_answers_every_valid_line_and_lists_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seqsched.build

    monkeypatch.setattr(seqsched.build, "build_engine", lambda *a, **k: AnswerAllEngine())
    assert fuzz(60, tmp_path).files == 60
