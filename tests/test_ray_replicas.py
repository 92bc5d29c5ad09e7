"""`seqsched serve --model M --replicas 2`: two vLLM replicas (the CPU build, the built-in
model) that a local Ray places and restarts, behind one front door, with Ray's token
authentication on (its default). The official `openai` client chats, streams and runs a
batch; one replica's vLLM is killed with -9 mid-batch: the batch completes with every line
once, interactive requests are answered, and the replica comes back at a new address and
takes work again. Plus the clear errors: a cluster without the resources, and --replicas
with --upstream. CI sets SEQSCHED_REQUIRE_VLLM=1, so a missing vLLM fails instead of skipping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from openai import OpenAI

from tests.serve_helpers import seqsched_serve, wait_for

MODEL = str(Path(__file__).parent.parent / "seqsched" / "assets" / "default_model")
ENDED = ("completed", "failed", "cancelled", "expired")


def _vllm_serving(url: str) -> psutil.Process:
    """The vLLM server process listening at ``url``'s port."""
    port = url.rsplit(":", 1)[1]
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if "vllm.entrypoints" in line and f"--port {port}" in line:
            return p
    raise AssertionError(f"no vLLM process serves {url}")


def _served(url: str) -> float:
    """Requests a vLLM server has answered (its own metric)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            total += float(line.split()[-1])
    return total


def test_two_replicas_on_ray_survive_one_killed_mid_batch(tmp_path: Path) -> None:
    env_auth = os.environ.pop("RAY_AUTH_MODE", None)  # Ray's default: token authentication on
    try:
        with seqsched_serve("--model", MODEL, "--replicas", "2", "--replica-cpus", "1", "--max-num-seqs", "4",
                            "--dtype", "float32", "--batch-dir", str(tmp_path / "d"), timeout=600) as url:  # fmt: skip
            _exercise(url, tmp_path)
    finally:
        if env_auth is not None:
            os.environ["RAY_AUTH_MODE"] = env_auth


def _exercise(url: str, tmp_path: Path) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    model = client.models.list().data[0].id
    assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=8).choices[0].message.content  # fmt: skip
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=8, stream=True)  # fmt: skip
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in stream)
    before = httpx.get(f"{url}/health").json()["upstreams"]
    assert len(before) == 2
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "user", "content": f"Tell me about {i}"}],
                       "max_tokens": 96, "temperature": 0}} for i in range(24)]  # fmt: skip
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    batch = client.batches.create(input_file_id=client.files.create(file=path.open("rb"), purpose="batch").id,
                                  endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, "four answers", 120)
    victim = _vllm_serving(before[0])
    os.killpg(victim.pid, signal.SIGKILL)  # the server and its engine
    asks = [{"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"hi {i}"}]} for i in range(4)]
    chats = [httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=120) for ask in asks]
    assert [r.status_code for r in chats] == [200] * 4, [r.text[:200] for r in chats]
    deadline = time.monotonic() + 300
    while (done := client.batches.retrieve(batch.id)).status not in ENDED:
        assert time.monotonic() < deadline, f"the batch is still {done.status}"
        time.sleep(0.5)
    output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()] if \
        done.error_file_id else []  # fmt: skip
    assert done.status == "completed" and done.request_counts.completed == 24, errors
    assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(24)], "every line once, in order"
    wait_for(lambda: httpx.get(f"{url}/health").json()["upstreams"][0] != before[0], "the replica back", 300)
    back = httpx.get(f"{url}/health").json()["upstreams"][0]
    served = _served(back)
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Count to ten."}]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert _served(back) > served, "the replica Ray brought back takes work again"


def test_a_cluster_without_the_resources_gets_a_clear_error() -> None:
    done = subprocess.run([sys.executable, "-m", "seqsched", "serve", "--model", MODEL, "--replicas", "2",
                           "--replica-gpus", "1"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    assert done.returncode == 2
    assert "need 2 GPUs (the cluster has 0)" in done.stderr
    wrong = subprocess.run([sys.executable, "-m", "seqsched", "serve", "--upstream", "http://127.0.0.1:1",
                            "--replicas", "2"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wrong.returncode == 2 and "go with --model" in wrong.stderr
