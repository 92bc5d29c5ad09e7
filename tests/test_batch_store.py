"""The batch directory as a database: damaged records quarantined at start (the server
still serves), links never followed, journals trusted only for their own batch and input,
a duplicated journal line counted once, an input deleted under a batch; and a full disk
(a real one: a small tmpfs) while uploading, journaling and finalizing, with nothing lost."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_helpers import FakeUpstream, chat, serving, wait_for
from tests.test_batches import _client, _create, _jsonl, _lines, _wait, _write

HEX = "0123456789abcdef01234567"


def _held_lines(n: int, first: int, tokens: int = 6) -> list[dict[str, Any]]:
    """``n`` lines; the first ``first`` wait for key ``a``, the rest for ``b``."""
    lines = _lines(n, tokens=lambda i: tokens)
    for i, line in enumerate(lines):
        line["body"]["messages"][0]["content"] = f"tokens {tokens} wait:{'a' if i < first else 'b'} #{i}"
    return lines


def _started(root: Path, lines: list[dict[str, Any]], answered: int) -> str:
    """A batch left in progress by a server that stopped with ``answered`` lines journaled."""
    inp = _write(root / "in.jsonl", lines)
    fake = FakeUpstream(seconds_per_token=0.001)
    with serving(fake, batch_dir=root / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        fake.released.add("a")
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed == answered, "answers", 20)
    assert json.loads((root / "d" / "batches" / f"{batch.id}.json").read_text())["status"] == "in_progress"
    return str(batch.id)


def _finish(root: Path, batch_id: str) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    fake = FakeUpstream(seconds_per_token=0.001)
    fake.released |= {"a", "b"}
    with serving(fake, batch_dir=root / "d") as url:
        client = _client(url)
        batch = _wait(client, batch_id)
        return batch, _jsonl(client, batch.output_file_id), _jsonl(client, batch.error_file_id)


def _quarantined(root: Path) -> dict[str, str]:
    found = {}
    for reason in (root / "d" / "quarantine").glob("*.reason"):
        found[reason.name.split(".")[0] + "." + reason.name.split(".")[1]] = reason.read_text()
    return found


def test_damaged_records_are_quarantined_and_the_server_still_serves(tmp_path: Path) -> None:
    d = tmp_path / "d"
    for sub in ("files", "batches"):
        (d / sub).mkdir(parents=True)
    (d / "batches" / f"batch_{HEX[:-1]}1.json").write_text("{}")
    (d / "batches" / f"batch_{HEX[:-1]}2.json").write_text(json.dumps(
        {"id": f"batch_{HEX[:-1]}2", "object": "batch", "endpoint": "/v1/completions", "input_file_id": "file-1",
         "created_at": "yesterday", "status": "in_progress"}))  # fmt: skip
    (d / "batches" / f"batch_{HEX[:-1]}3.journal").write_text('{"custom_id": "r0"}\n')
    (d / "files" / f"file-{HEX[:-1]}4.json").write_text("{}")
    (d / "files" / f"file-{HEX[:-1]}4.jsonl").write_text("{}\n")
    linked = {"id": f"file-{HEX[:-1]}5", "object": "file", "bytes": 10, "created_at": 1, "filename": "x.jsonl",
              "purpose": "batch", "status": "processed"}  # fmt: skip
    (d / "files" / f"file-{HEX[:-1]}5.json").write_text(json.dumps(linked))
    os.symlink("/etc/passwd", d / "files" / f"file-{HEX[:-1]}5.jsonl")
    with serving(FakeUpstream(), batch_dir=d) as url:
        files = httpx.get(f"{url}/v1/files")
        batches = httpx.get(f"{url}/v1/batches")
        content = httpx.get(f"{url}/v1/files/file-{HEX[:-1]}5/content")
        answer = chat(url, "tokens 3")
    assert files.status_code == 200 and files.json()["data"] == []
    assert batches.status_code == 200 and batches.json()["data"] == []
    assert content.status_code == 404 and "root:" not in content.text
    assert answer.status_code == 200
    reasons = _quarantined(tmp_path)
    assert "field 'id' is missing" in reasons[f"batch_{HEX[:-1]}1.json"]
    assert "field 'created_at'" in reasons[f"batch_{HEX[:-1]}2.json"]
    assert "no batch record" in reasons[f"batch_{HEX[:-1]}3.journal"]
    assert "field 'id' is missing" in reasons[f"file-{HEX[:-1]}4.json"]
    assert "symbolic link" in reasons[f"file-{HEX[:-1]}5.json"]
    assert "symbolic link" in reasons[f"file-{HEX[:-1]}5.jsonl"]
    assert os.path.exists("/etc/passwd")


def test_a_link_planted_after_start_is_never_served(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(1))
    with serving(FakeUpstream(), batch_dir=tmp_path / "d") as url:
        file_id = _client(url).files.create(file=inp.open("rb"), purpose="batch").id
        path = tmp_path / "d" / "files" / f"{file_id}.jsonl"
        path.unlink()
        os.symlink("/etc/passwd", path)
        content = httpx.get(f"{url}/v1/files/{file_id}/content")
    assert content.status_code == 404 and "root:" not in content.text


def test_a_journal_line_written_twice_counts_once(tmp_path: Path) -> None:
    batch_id = _started(tmp_path, _held_lines(6, first=3), answered=3)
    journal = tmp_path / "d" / "batches" / f"{batch_id}.journal"
    rows = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join([*rows, rows[2]]))
    batch, output, errors = _finish(tmp_path, batch_id)
    assert batch.status == "completed" and errors == []
    assert (batch.request_counts.total, batch.request_counts.completed) == (6, 6)
    assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(6)]


def test_a_journal_copied_from_another_batch_is_not_trusted(tmp_path: Path) -> None:
    batch_id = _started(tmp_path, _held_lines(6, first=3), answered=3)
    journal = tmp_path / "d" / "batches" / f"{batch_id}.journal"
    head, *rows = [json.loads(x) for x in journal.read_text().splitlines()]
    head["seqsched_batch"]["id"] = f"batch_{HEX}"  # as if copied from another batch
    for row in rows:
        row["response"]["body"]["choices"][0]["message"]["content"] = "FORGED"
    journal.write_text("".join(json.dumps(x) + "\n" for x in [head, *rows]))
    batch, output, _ = _finish(tmp_path, batch_id)
    assert batch.status == "completed" and batch.request_counts.completed == 6
    assert all(x["response"]["body"]["choices"][0]["message"]["content"] == "abcdef" for x in output)
    assert "does not match this batch" in _quarantined(tmp_path)[f"{batch_id}.journal"]


def test_a_batch_whose_input_was_deleted_keeps_its_journaled_answers(tmp_path: Path) -> None:
    batch_id = _started(tmp_path, _held_lines(5, first=3), answered=3)
    record = json.loads((tmp_path / "d" / "batches" / f"{batch_id}.json").read_text())
    (tmp_path / "d" / "files" / f"{record['input_file_id']}.jsonl").unlink()
    batch, output, _ = _finish(tmp_path, batch_id)
    assert batch.status == "failed" and "cannot be read" in batch.errors.data[0].message
    assert [x["custom_id"] for x in output] == ["r0", "r1", "r2"]
    assert (batch.request_counts.total, batch.request_counts.completed) == (5, 3)


# -- a full disk -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("a small file system for a full disk needs mount (root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(root: Path, leave: int = 0) -> Path:
    """Fill the file system of ``root``, leaving about ``leave`` bytes."""
    filler = root / "filler"
    free = shutil.disk_usage(root).free - leave
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while free > 0:
            f.write(b"\0" * min(free, 1 << 20))
            f.flush()
            free -= 1 << 20
    return filler


def _journaled(root: Path, batch_id: str) -> int:
    path = root / "batches" / f"{batch_id}.journal"
    return sum(1 for line in path.read_text().splitlines() if '"custom_id"' in line)


def test_an_upload_onto_a_full_disk_gets_507_and_leaves_nothing(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        with serving(FakeUpstream(), batch_dir=disk / "d") as url:
            _fill(disk)
            answer = httpx.post(f"{url}/v1/files", files={"file": ("a.jsonl", b"x" * 300_000)},
                                data={"purpose": "batch"})  # fmt: skip
            listed = httpx.get(f"{url}/v1/files").json()["data"]
        assert answer.status_code == 507 and answer.json()["error"]["type"] == "insufficient_storage"
        assert listed == [] and not [p for p in (disk / "d" / "files").iterdir()]


def test_a_disk_that_fills_while_answers_are_journaled_pauses_the_batch_and_loses_nothing(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        inp = _write(tmp_path / "in.jsonl", _lines(40, tokens=lambda i: 30))
        with serving(FakeUpstream(seconds_per_token=0.005), max_inflight=4, batch_dir=disk / "d") as url:
            client = _client(url)
            batch = _create(client, inp)
            wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, "four answers", 20)
            filler = _fill(disk)
            wait_for(lambda: client.batches.retrieve(batch.id).errors is not None, "the pause", 20)
            paused = client.batches.retrieve(batch.id)
            on_disk = _journaled(disk / "d", batch.id)
            filler.unlink()
            batch = _wait(client, batch.id)
            output = _jsonl(client, batch.output_file_id)
        assert paused.status == "in_progress" and paused.errors.data[0].code == "disk_error"
        assert paused.request_counts.completed == on_disk < 40, "the counts are what is on disk"
        assert batch.status == "completed" and batch.errors is None
        assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(40)]


def test_a_disk_full_while_finalizing_finalizes_once_space_returns_even_after_a_restart(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        lines = _lines(60, tokens=lambda i: 300)
        lines[-1]["body"]["messages"][0]["content"] = "tokens 300 wait:last"
        inp = _write(tmp_path / "in.jsonl", lines)
        fake = FakeUpstream(seconds_per_token=0.0001)
        with serving(fake, max_inflight=8, batch_dir=disk / "d") as url:
            client = _client(url)
            batch = _create(client, inp)
            wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed == 59, "59 answers", 30)
            filler = _fill(disk, leave=12 << 10)  # room for the last answer, not for the output file
            fake.released.add("last")
            wait_for(lambda: client.batches.retrieve(batch.id).errors is not None, "the failed finalize", 20)
            stuck = client.batches.retrieve(batch.id)
        assert stuck.status == "finalizing" and "output could not be written" in stuck.errors.data[0].message
        assert stuck.request_counts.completed == 60
        with serving(FakeUpstream(), batch_dir=disk / "d") as url:  # a restart, the disk still full
            client = _client(url)
            wait_for(lambda: client.batches.retrieve(batch.id).errors is not None, "the failed finalize", 20)
            assert client.batches.retrieve(batch.id).status == "finalizing"
            filler.unlink()
            batch = _wait(client, batch.id)
            output = _jsonl(client, batch.output_file_id)
        assert batch.status == "completed" and batch.errors is None
        assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(60)]
        assert not (disk / "d" / "batches" / f"{batch.id}.journal").exists()
