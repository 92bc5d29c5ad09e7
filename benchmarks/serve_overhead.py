"""What `seqsched serve` itself costs: the latency it adds to one request at a time (light
load), and its CPU per streamed token under concurrent streams. The upstream is a fake
OpenAI server that answers at once (tests/serve_helpers.py), so only the proxy is measured.

    python benchmarks/serve_overhead.py [--requests 200] [--tokens 64] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serve_helpers import FakeUpstream, free_port, running  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="serial requests for the added latency")
    p.add_argument("--tokens", type=int, default=64, help="tokens per streamed answer")
    p.add_argument("--concurrency", type=int, default=32, help="streams at once for the CPU figure")
    p.add_argument("--predictor", default=None, help="seqsched serve's predictor (default: the shipped proxy)")
    args = p.parse_args()
    fake = FakeUpstream(seconds_per_token=0.0)
    with running(fake.app()) as upstream:
        port = free_port()
        command = [sys.executable, "-m", "seqsched", "serve", "--upstream", upstream, "--port", str(port)]
        command += ["--predictor", args.predictor] if args.predictor else []
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        proxy = f"http://127.0.0.1:{port}"
        try:
            _wait(proxy)
            for url in (upstream, proxy):  # warm both paths
                _serial(url, 20, args.tokens, stream=False)
            direct = _serial(upstream, args.requests, args.tokens, stream=False)
            through = _serial(proxy, args.requests, args.tokens, stream=False)
            direct_s = _serial(upstream, args.requests, args.tokens, stream=True)
            through_s = _serial(proxy, args.requests, args.tokens, stream=True)
            cpu, tokens, seconds = _cpu_per_token(proxy, process.pid, args)
        finally:
            process.terminate()
            process.wait(30)
    print(f"seqsched serve in front of a fake upstream that answers at once ({args.tokens} tokens an answer)")
    print("| measure | direct | through seqsched | added |")
    print("|---|---|---|---|")
    for name, a, b in (("one request at a time, not streamed: median ms", direct, through),
                       ("one request at a time, streamed: median ms", direct_s, through_s)):  # fmt: skip
        ma, mb = 1000 * statistics.median(a), 1000 * statistics.median(b)
        print(f"| {name} | {ma:.2f} | {mb:.2f} | {mb - ma:.2f} |")
    print(f"| {args.concurrency} streams at once: seqsched's CPU per streamed token | | "
          f"{1e6 * cpu / tokens:.0f} us | {tokens / seconds:.0f} tokens/s relayed |")  # fmt: skip


def _serial(url: str, n: int, tokens: int, stream: bool) -> list[float]:
    body = {"model": "fake", "messages": [{"role": "user", "content": f"tokens {tokens}"}], "stream": stream}
    seconds = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            if stream:
                with client.stream("POST", f"{url}/v1/chat/completions", json=body) as answer:
                    for _ in answer.iter_bytes():
                        pass
            else:
                client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
            seconds.append(time.perf_counter() - start)
    return seconds


def _cpu_per_token(url: str, pid: int, args: argparse.Namespace) -> tuple[float, int, float]:
    proc = psutil.Process(pid)
    before = sum(proc.cpu_times()[:2])
    start = time.perf_counter()
    per_thread = max(1, args.requests // args.concurrency)
    threads = [threading.Thread(target=_serial, args=(url, per_thread, args.tokens, True))
               for _ in range(args.concurrency)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return sum(proc.cpu_times()[:2]) - before, per_thread * args.concurrency * args.tokens, seconds


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "seqsched serve did not start"
        time.sleep(0.2)


if __name__ == "__main__":
    main()
