"""The Files and Batches API in `seqsched serve`, against a fake upstream that streams
token ids as vLLM does: the official `openai` client end to end, bad lines, cancel, paging,
limits, a batch request preempted by interactive traffic and continued exactly, and a
server killed with -9 mid-batch and restarted. The same on the real vLLM:
test_batches_vllm.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_helpers import (
    OUTPUT_ID,
    FakeUpstream,
    chat,
    killable_serve,
    letter,
    metric,
    running,
    serving,
    wait_for,
)

ENDED = ("completed", "failed", "cancelled", "expired")


def _lines(n: int, tokens: Any = lambda i: 5 + i % 7, url: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        if url == "/v1/chat/completions":
            body: dict[str, Any] = {
                "model": "fake",
                "messages": [{"role": "user", "content": f"tokens {tokens(i)} #{i}"}],
            }
        else:
            body = {"model": "fake", "prompt": f"tokens {tokens(i)} #{i}"}
        out.append({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body})
    return out


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _client(url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def _wait(client: Any, batch_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ENDED:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.1)


def _create(client: Any, path: Path, endpoint: str = "/v1/chat/completions") -> Any:
    """A batch of the file at ``path``, uploaded, through the official client."""
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")


def _jsonl(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    return [] if file_id is None else [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_the_openai_client_uploads_creates_waits_and_downloads(tmp_path: Path) -> None:
    bad = ["{not json", {"custom_id": "r3", "method": "POST", "url": "/v1/chat/completions", "body": {}},
           {"custom_id": "wrong-url", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}]  # fmt: skip
    inp = _write(tmp_path / "in.jsonl", [*_lines(12), *bad])
    with serving(FakeUpstream(seconds_per_token=0.002), max_inflight=4, batch_dir=tmp_path / "d") as url:
        client = _client(url)
        uploaded = client.files.create(file=inp.open("rb"), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == inp.stat().st_size
        assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
        assert client.files.content(uploaded.id).content == inp.read_bytes()
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"team": "eval"})  # fmt: skip
        assert batch.status in ("validating", "in_progress") and batch.metadata == {"team": "eval"}
        batch = _wait(client, batch.id)
        assert batch.status == "completed"
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (15, 12, 3)
        output, errors = _jsonl(client, batch.output_file_id), _jsonl(client, batch.error_file_id)
        metrics = httpx.get(f"{url}/metrics").text
    assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(12)], "in input order, every line once"
    for i, line in enumerate(output):
        n = 5 + i % 7
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "".join(
            letter(k) for k in range(n)
        )
        assert body["usage"]["completion_tokens"] == n
    assert [x["custom_id"] for x in errors] == [None, "r3", "wrong-url"]
    assert "line 13: invalid JSON" in errors[0]["error"]["message"]
    assert "duplicate of line 4" in errors[1]["error"]["message"]
    assert "field 'url'" in errors[2]["error"]["message"]
    assert 'seqsched_batch_requests_total{outcome="completed"} 12.0' in metrics
    assert "seqsched_lane_running" in metrics and 'lane="batch"' in metrics


def test_a_request_the_upstream_refuses_fails_alone(tmp_path: Path) -> None:
    lines = _lines(3)
    lines[1]["body"]["messages"][0]["content"] = "priority-word"  # the fake answers 400
    inp = _write(tmp_path / "in.jsonl", lines)
    with serving(FakeUpstream(seconds_per_token=0.001), batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        batch = _wait(client, batch.id)
        errors = _jsonl(client, batch.error_file_id)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    assert errors[0]["custom_id"] == "r1" and errors[0]["response"]["status_code"] == 400


def test_completions_batches_run_too(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(4, url="/v1/completions"))
    with serving(FakeUpstream(seconds_per_token=0.001), batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp, "/v1/completions")
        output = _jsonl(client, _wait(client, batch.id).output_file_id)
    assert [x["response"]["body"]["choices"][0]["text"] for x in output] == ["abcde", "abcdef", "abcdefg", "abcdefgh"]


def test_a_batch_request_preempted_by_interactive_traffic_continues_exactly(tmp_path: Path) -> None:
    """Two slots, both held by long batch requests; interactive requests arrive: each takes
    the slot of the batch request with the most predicted work left, which is continued
    later from the token ids it had. Every answer equals an uninterrupted one."""
    fake = FakeUpstream(seconds_per_token=0.01)
    inp = _write(tmp_path / "in.jsonl", _lines(4, tokens=lambda i: 60 + 10 * i))
    with serving(fake, max_inflight=2, batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        wait_for(lambda: metric(url, 'seqsched_lane_running{lane="batch"}') == 2, "the batch to fill both slots")
        time.sleep(0.2)  # some tokens made
        answers = [chat(url, f"tokens 3 interactive {k}", timeout=30) for k in range(2)]
        batch = _wait(client, batch.id)
        output = _jsonl(client, batch.output_file_id)
        preemptions = metric(url, "seqsched_batch_preemptions")
    assert [a.status_code for a in answers] == [200, 200]
    assert preemptions >= 1
    assert sum(line["seqsched"]["num_preemptions"] for line in output) == preemptions
    continued = [b for b in fake.received if isinstance(b.get("prompt"), list)]
    assert continued, "a preempted request went on from its token ids"
    assert all(b["prompt"][-1] >= OUTPUT_ID for b in continued), "...its prompt ends with the tokens it had"
    for i, line in enumerate(output):
        n = 60 + 10 * i
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == "".join(letter(k) for k in range(n))
        assert body["usage"]["completion_tokens"] == n and body["choices"][0]["finish_reason"] == "stop"


def test_cancel_stops_the_batch_and_keeps_what_finished(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(30, tokens=lambda i: 40))
    with serving(FakeUpstream(seconds_per_token=0.01), max_inflight=2, batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2, "two answers", 30)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        batch = _wait(client, batch.id)
        output, errors = _jsonl(client, batch.output_file_id), _jsonl(client, batch.error_file_id)
        again = httpx.post(f"{url}/v1/batches/{batch.id}/cancel")
        running_after = metric(url, 'seqsched_lane_running{lane="batch"}')
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert len(output) >= 2 and len(output) + len(errors) == 30, "every line in one file or the other"
    assert all(e["error"]["code"] == "batch_cancelled" for e in errors)
    assert again.status_code == 409 and running_after == 0


def test_batches_list_newest_first_with_paging(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(1))
    with serving(FakeUpstream(seconds_per_token=0.0), batch_dir=tmp_path / "d") as url:
        client = _client(url)
        file_id = client.files.create(file=inp.open("rb"), purpose="batch").id
        made = []
        for _ in range(5):
            made.append(client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                              completion_window="24h").id)  # fmt: skip
            time.sleep(1.05)  # created_at is in seconds
        first = client.batches.list(limit=2)
        assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
        rest = client.batches.list(limit=10, after=first.data[-1].id)
        assert [b.id for b in rest.data] == made[::-1][2:] and not rest.has_more
        assert [b.id for b in client.batches.list(limit=2)] == made[::-1], "the client's pager walks every page"


@pytest.mark.parametrize(
    ("what", "status", "message"),
    [
        ("big file", 413, "over this server's limit of 1,000 bytes"),
        ("many lines", 400, "over this server's limit of 3 a batch"),
        ("many batches", 429, "the most this server runs at once"),
        ("bad window", 400, "completion_window must be '24h'"),
        ("bad endpoint", 400, "endpoint must be one of"),
        ("no such file", 404, "no file"),
        ("bad purpose", 400, "purpose must be 'batch'"),
    ],
)
def test_limits_and_mistakes_get_a_clear_4xx(tmp_path: Path, what: str, status: int, message: str) -> None:
    from seqsched.serve.config import BatchLimits

    small = _write(tmp_path / "small.jsonl", _lines(2))
    options = {"batch_limits": BatchLimits(max_file_bytes=1000, max_batch_lines=3, max_active_batches=1)}
    with serving(FakeUpstream(seconds_per_token=0.05), batch_dir=tmp_path / "d", **options) as url:

        def upload(path: Path, purpose: str = "batch") -> httpx.Response:
            return httpx.post(
                f"{url}/v1/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": purpose}
            )

        def create(file_id: str, endpoint: str = "/v1/chat/completions", window: str = "24h") -> httpx.Response:
            return httpx.post(f"{url}/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint,
                                                         "completion_window": window})  # fmt: skip

        file_id = upload(small).json()["id"]
        if what == "big file":
            answer = upload(_write(tmp_path / "big.jsonl", _lines(40)))
        elif what == "many lines":
            answer = create(upload(_write(tmp_path / "many.jsonl", _lines(4))).json()["id"])
        elif what == "many batches":
            assert create(file_id).status_code == 200
            answer = create(file_id)
        elif what == "bad window":
            answer = create(file_id, window="1h")
        elif what == "bad endpoint":
            answer = create(file_id, endpoint="/v1/embeddings")
        elif what == "no such file":
            answer = create("file-0123456789abcdef01234567")
        else:
            answer = upload(small, purpose="fine-tune")
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]["message"]


def test_a_file_a_running_batch_reads_cannot_be_deleted(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(4, tokens=lambda i: 50))
    with serving(FakeUpstream(seconds_per_token=0.02), max_inflight=1, batch_dir=tmp_path / "d") as url:
        client = _client(url)
        file_id = client.files.create(file=inp.open("rb"), purpose="batch").id
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        refused = httpx.delete(f"{url}/v1/files/{file_id}")
        client.batches.cancel(batch.id)
        _wait(client, batch.id)
        assert client.files.delete(file_id).deleted
        assert httpx.get(f"{url}/v1/files/{file_id}").status_code == 404
    assert refused.status_code == 409 and batch.id in refused.json()["error"]["message"]


def test_a_server_killed_mid_batch_resumes_with_nothing_lost_or_repeated(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(40, tokens=lambda i: 20 + i % 9))
    fake = FakeUpstream(seconds_per_token=0.01)
    with (
        running(fake.app()) as upstream,
        killable_serve("--upstream", upstream, "--batch-dir", str(tmp_path / "d"), "--max-inflight", "4",
                       timeout=60) as server,  # fmt: skip
    ):
        client = _client(server.url)
        batch = _create(client, inp)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10, "ten answers", 60)
        server.kill()
        answered_before = len(fake.finished)
        server.start()
        done = _wait(client, batch.id, timeout=120)
        output = _jsonl(client, done.output_file_id)
    assert done.status == "completed" and done.request_counts.completed == 40
    assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(40)], "each line once, in input order"
    for i, line in enumerate(output):
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        assert content == "".join(letter(k) for k in range(20 + i % 9))
    assert answered_before >= 10 and len(fake.finished) <= 40 + 4, "only the lines in flight at the kill ran twice"


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_interactive_requests_go_first_and_the_batch_fills_the_rest(tmp_path: Path) -> None:
    """With a batch queued behind every slot, an interactive request still starts at once."""
    inp = _write(tmp_path / "in.jsonl", _lines(20, tokens=lambda i: 30))
    fake = FakeUpstream(seconds_per_token=0.01)
    with serving(fake, max_inflight=3, batch_dir=tmp_path / "d") as url:
        client = _client(url)
        _create(client, inp)
        wait_for(lambda: metric(url, 'seqsched_lane_running{lane="batch"}') == 3, "the batch to fill the slots")
        started = time.monotonic()
        assert chat(url, "tokens 2").status_code == 200
        took = time.monotonic() - started
    assert took < 0.25, f"the interactive request waited {took:.2f} s"
    batch = [b["priority"] for b in fake.received if b.get("return_token_ids")]
    interactive = [b["priority"] for b in fake.received if not b.get("return_token_ids")]
    assert min(batch) > max(interactive) == 2, "vLLM runs (and keeps) interactive requests before batch ones"


def test_a_batch_cancelled_while_its_lines_are_checked_accounts_for_every_line(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(40, tokens=lambda i: 50))
    with serving(FakeUpstream(seconds_per_token=0.01), batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        client.batches.cancel(batch.id)
        batch = _wait(client, batch.id)
        output, errors = _jsonl(client, batch.output_file_id), _jsonl(client, batch.error_file_id)
    assert batch.status == "cancelled" and batch.request_counts.total == 40
    assert len(output) + len(errors) == 40
