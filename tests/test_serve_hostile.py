"""`seqsched serve` against hostile clients and faulty upstreams: every slot comes back,
every error is OpenAI's shape, slow clients are shed, bookkeeping never fails an answer.
Each of these broke the server once (issue 27)."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_helpers import (
    FakeUpstream,
    chat,
    free_port,
    healthy,
    metric,
    running,
    seqsched_serve,
    serving,
    wait_for,
)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _error(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"].startswith("application/json"), answer.text[:200]
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return dict(error)


# -- 1. slots ------------------------------------------------------------------------------


def test_a_client_that_leaves_while_an_error_body_arrives_gives_its_slot_back() -> None:
    with serving(FakeUpstream(), max_inflight=1) as url:
        payload = {"model": "fake", "messages": [{"role": "user", "content": "slowerror"}], "stream": True}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=0.5)
        wait_for(lambda: metric(url, 'seqsched_lane_running{lane="interactive"}') == 0, "the slot to come back")
        assert chat(url, "tokens 2", timeout=10).status_code == 200


# -- 2. error answers ------------------------------------------------------------------------

BAD_BODIES = {
    "nested 3,000 deep": b'{"messages": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "an integer of 5,000 digits": b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"7" * 5000 + b"}",
    "NaN": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "Infinity": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
    "1e999": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    "a lone surrogate": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_a_body_that_is_not_valid_input_is_a_400_in_openais_shape(name: str) -> None:
    fake = FakeUpstream()
    with serving(fake) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", content=BAD_BODIES[name],
                            headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 400, answer.text[:200]
    assert _error(answer)["type"] == "invalid_request_error"
    assert fake.received == []


def test_unknown_routes_and_methods_are_openai_shaped() -> None:
    with serving(FakeUpstream()) as url:
        missing = httpx.get(f"{url}/v1/nothing")
        wrong = httpx.get(f"{url}/v1/chat/completions")
    assert missing.status_code == 404 and "no such route: GET /v1/nothing" in _error(missing)["message"]
    assert wrong.status_code == 405 and _error(wrong)["code"] == 405


@contextmanager
def _closer() -> Iterator[str]:
    """An 'upstream' that accepts each connection and closes it without a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_an_upstream_that_closes_without_answering_fails_over_then_is_openai_shaped() -> None:
    fake = FakeUpstream()
    with _closer() as closer:
        with serving(closer, fake, routing="round-robin") as url:
            answers = [chat(url, f"tokens {n}") for n in (1, 2, 3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        with serving(closer) as url:
            alone = chat(url, "tokens 2")
    assert alone.status_code == 503 and f"upstream {closer}" in _error(alone)["message"]


def test_an_odd_usage_never_turns_an_answer_into_an_error() -> None:
    with serving(FakeUpstream(), trace_path=None) as url:
        answer = chat(url, "badusage tokens 3")
        assert answer.status_code == 200 and answer.json()["usage"] == [3]
        assert metric(url, 'seqsched_requests_total{endpoint="chat",status="200"}') == 1


# -- 3. limits on clients ------------------------------------------------------------------------


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed(conn: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``conn`` within ``within`` s; None if still open."""
    conn.settimeout(within)
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return data


def test_idle_and_slow_header_clients_are_closed_and_a_connection_cap_holds() -> None:
    fake = FakeUpstream()
    options = ("--header-timeout", "1", "--max-connections", "20")
    with running(fake.app()) as upstream, seqsched_serve("--upstream", upstream, *options) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = _raw(port)
        slow = _raw(port)
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        assert _closed(idle, 5) == b"", "an idle connection is closed after the header timeout"
        said = _closed(slow, 5)
        assert said is not None and said.startswith(b"HTTP/1.1 408"), said
        crowd = [_raw(port) for _ in range(25)]
        refused = [c for c in crowd if (_closed(c, 0.5) or b"").startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 5, "connections beyond the cap get a 503"
        for c in crowd:
            c.close()
        assert chat(url, "tokens 2").status_code == 200


def test_a_stream_nobody_reads_gives_its_slot_back() -> None:
    fake = FakeUpstream(seconds_per_token=0.0005)
    with serving(fake, max_inflight=1, stall_timeout_s=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "tokens 200000"}], "stream": True})
        reader = _raw(port)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}".encode())  # fmt: skip
        time.sleep(0.5)  # the stream is open: the client reads nothing
        started = time.monotonic()
        assert chat(url, "tokens 2", timeout=30).status_code == 200
        assert time.monotonic() - started < 10, "the unread stream's slot came back after the stall timeout"
        assert metric(url, "seqsched_stalled_streams_total") == 1
        reader.close()


# -- 4. the trace ------------------------------------------------------------------------------------


def test_a_trace_that_cannot_be_written_never_fails_a_request(tmp_path: Path) -> None:
    with serving(FakeUpstream(), trace_path=Path("/dev/full")) as url:
        assert chat(url, "tokens 3").status_code == 200
        payload = {"model": "fake", "messages": [{"role": "user", "content": "tokens 4"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload) as answer:
            text = "".join(answer.iter_text())
        assert answer.status_code == 200 and "[DONE]" in text and '"error"' not in text
        wait_for(lambda: metric(url, "seqsched_trace_errors_total") == 2, "both write errors counted")


def test_the_trace_is_private_refuses_links_and_repairs_a_torn_line(tmp_path: Path) -> None:
    from seqsched.data.traces import read_trace

    trace = tmp_path / "served.jsonl"
    trace.write_text('{"id": "old", "instruction": "x", "L_served": 3}\n{"id": "torn", "L_ser')
    assert len(read_trace(trace)) == 1, "the reader skips a torn last line"
    with serving(FakeUpstream(), trace_path=trace) as url:
        assert chat(url, "tokens 3").status_code == 200
    ids = [r.id for r in read_trace(trace)]
    assert ids[0] == "old" and len(ids) == 2, "the writer cut the tear"
    fresh = tmp_path / "fresh.jsonl"
    with serving(FakeUpstream(), trace_path=fresh) as url:
        chat(url, "tokens 2")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(ValueError, match="symbolic link"), serving(FakeUpstream(), trace_path=link):
        pass


# -- 5. priority ---------------------------------------------------------------------------------------


def test_only_vllms_own_refusal_turns_priority_off() -> None:
    fake = FakeUpstream()
    with serving(fake) as url:
        assert chat(url, "priority-word").status_code == 400  # the client's own mistake, passed through
        assert chat(url, "tokens 2").status_code == 200
    assert "priority" in fake.received[-1], "priority stays on"


# -- 6. prediction -------------------------------------------------------------------------------------


def test_one_clients_huge_prompts_cannot_delay_anothers_prediction() -> None:
    from seqsched.serve.predictor import Batcher

    def predict(text: str, max_tokens: int | None) -> int:
        time.sleep(len(text) * 2e-7)  # a predictor's cost grows with the text: 0.2 s a megabyte
        return 1

    async def race() -> float:
        batcher = Batcher(predict)
        huge = [asyncio.ensure_future(batcher.predict("x" * (1 << 20), None)) for _ in range(8)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        await batcher.predict("tiny", None)
        took = time.perf_counter() - started
        await asyncio.gather(*huge)
        return took

    assert asyncio.run(race()) < 0.5


# -- 7. the rest ------------------------------------------------------------------------------------------


def test_a_gzip_stream_is_relayed_with_its_encoding() -> None:
    with serving(FakeUpstream()) as url:
        payload = {"model": "fake", "messages": [{"role": "user", "content": "gzip tokens 5"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload) as answer:
            text = "".join(answer.iter_text())
    assert answer.headers.get("content-encoding") == "gzip"
    assert text.count('"content": "x"') == 5 and "[DONE]" in text


def test_an_upstream_down_at_start_is_found_when_it_comes_back() -> None:
    port = free_port()
    fake = FakeUpstream()
    with serving(f"http://127.0.0.1:{port}") as url:
        assert httpx.get(f"{url}/v1/models").json()["data"] == []
        with running(fake.app(), port=port):
            assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["fake"]
            assert chat(url, "tokens 2").status_code == 200
    assert "priority" in fake.received[-1], "found to be vLLM: priority on"


def test_upstream_errors_name_the_upstream() -> None:
    with serving(FakeUpstream()) as url:
        failed = chat(url, "fail")
        payload = {"model": "fake", "messages": [{"role": "user", "content": "die tokens 6"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload) as answer:
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert failed.status_code == 502 and "upstream http://127.0.0.1:" in _error(failed)["message"]
    message = json.loads(lines[-1][6:])["error"]["message"]
    assert "upstream http://127.0.0.1:" in message and "upstream ?" not in message


def test_an_api_key_is_asked_for_and_the_upstreams_key_is_sent() -> None:
    fake = FakeUpstream()
    with serving(fake, api_key="client-key", upstream_api_key="upstream-key") as url:
        assert chat(url, "tokens 2").status_code == 401
        assert _error(chat(url, "tokens 2"))["code"] == "invalid_api_key"
        good = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer client-key"},
                          json={"model": "fake", "messages": [{"role": "user", "content": "tokens 2"}]})  # fmt: skip
        assert good.status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200, "health and metrics need no key"
    assert fake.headers[-1]["authorization"] == "Bearer upstream-key"
    with serving(fake) as url:
        httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer theirs"},
                   json={"model": "fake", "messages": [{"role": "user", "content": "tokens 2"}]})  # fmt: skip
    assert fake.headers[-1]["authorization"] == "Bearer theirs", "with no key of its own, the client's goes on"


def test_serving_beyond_loopback_is_warned_about() -> None:
    from seqsched.serve.config import ServeConfig
    from seqsched.serve.run import warnings

    assert warnings(ServeConfig(upstreams=("http://127.0.0.1:1",))) == []
    said = warnings(ServeConfig(upstreams=("http://127.0.0.1:1",), host="0.0.0.0"))
    assert any("beyond this machine" in w for w in said) and any("no --api-key" in w for w in said)
    assert len(warnings(ServeConfig(upstreams=("http://127.0.0.1:1",), host="0.0.0.0", api_key="k"))) == 1


def test_a_short_drain_ends_on_time_with_openai_shaped_503s() -> None:
    import signal
    import subprocess
    import sys

    fake = FakeUpstream(seconds_per_token=0.05)
    with running(fake.app()) as upstream:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "seqsched", "serve", "--upstream", upstream, "--port",
                                    str(port), "--max-inflight", "1", "--drain-timeout", "2"],
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: healthy(url), "seqsched serve to start", timeout=60)
            results: dict[str, Any] = {}

            def stream() -> None:
                payload = {"model": "fake", "messages": [{"role": "user", "content": "tokens 400"}], "stream": True}
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload, timeout=30) as answer:
                    results["stream"] = [x for x in answer.iter_lines() if x.startswith("data: ")][-1]

            def queued() -> None:
                results["queued"] = chat(url, "tokens 3", timeout=30)

            threads = [threading.Thread(target=stream)]
            threads[0].start()
            wait_for(lambda: len(fake.received) == 1, "the stream to reach the upstream")
            threads.append(threading.Thread(target=queued))
            threads[1].start()
            wait_for(lambda: metric(url, "seqsched_queue_length") == 1, "a request to queue")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            took = time.monotonic() - started
            for t in threads:
                t.join(10)
        finally:
            if process.poll() is None:
                process.kill()
    assert took < 2 + 4, f"the drain took {took:.1f} s for a 2 s timeout"
    assert results["queued"].status_code == 503 and "shutting down" in _error(results["queued"])["message"]
    assert json.loads(results["stream"][6:])["error"]["code"] == 503
