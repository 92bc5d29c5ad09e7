"""A soak of `seqsched serve` under hostile load, against a fake upstream, loopback only.

For ``--seconds`` (60) it holds, at once:
- ``--concurrent`` (2,000) requests in flight, each answered by the fake upstream only after
  ``--hold`` seconds (the upstream is slow, not seqsched);
- ``--idle`` (2,000) connections that connect and send nothing (closed by the header
  deadline, they reconnect);
- ``--loris`` (200) slow-loris clients, sending one header byte every few seconds (closed
  by the header deadline, they reconnect);
while ordinary requests, one at a time, measure the latency a normal client sees. The
ordinary requests' median is compared with an idle server's, measured first. At the end
it waits for the in-flight requests, and checks that every slot came back (the front door's
ledger is empty, nothing waits) and that seqsched's open file descriptors are back to what
they were before the load.

    python benchmarks/serve_soak.py [--seconds 60] [--concurrent 2000] [--idle 2000] [--loris 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqsched.serve.launch import free_port  # noqa: E402

_UPSTREAM = """
import sys, uvicorn
from tests.serve_helpers import FakeUpstream
uvicorn.run(FakeUpstream(seconds_per_token=0.0).app(), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error", backlog=8192, timeout_keep_alive=120)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--concurrent", type=int, default=2000)
    p.add_argument("--hold", type=float, default=20.0, help="seconds the upstream holds each concurrent request")
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--loris", type=int, default=200)
    p.add_argument("--header-timeout", type=float, default=10.0, help="seqsched's --header-timeout")
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    _lift_fd_limit()
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM, str(up_port)], cwd=ROOT)
    seqsched = subprocess.Popen(
        [sys.executable, "-m", "seqsched", "serve", "--upstream", f"http://127.0.0.1:{up_port}", "--port", str(port),
         "--max-inflight", str(args.concurrent + 100), "--header-timeout", str(args.header_timeout),
         "--policy", "fcfs"],
        cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        report = asyncio.run(_soak(f"http://127.0.0.1:{port}", port, seqsched.pid, args))
    finally:
        for proc in (seqsched, upstream):
            proc.terminate()
            proc.wait(30)
    print(_table(report, args))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1))


async def _soak(url: str, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process(pid)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await _until_up(session, url)
        for _ in range(40):  # warm up
            await _probe(session, url)
        idle_ms = [await _probe(session, url) for _ in range(100)]
        fds_before = proc.num_fds()
        stop = asyncio.Event()
        counts = {"held_ok": 0, "held_failed": 0, "idle_reconnects": 0, "loris_reconnects": 0}
        tasks = [asyncio.create_task(_held(session, url, args.hold, stop, counts)) for _ in range(args.concurrent)]
        for key, drip, n in (("idle_reconnects", False, args.idle), ("loris_reconnects", True, args.loris)):
            tasks += [asyncio.create_task(_hostile(port, stop, counts, key, drip)) for _ in range(n)]
        await asyncio.sleep(min(5.0, args.seconds / 4))  # everyone connected
        loaded_ms, failed_probes, peak = [], 0, {"fds": 0, "rss_mb": 0.0}
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            try:
                loaded_ms.append(await _probe(session, url))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                failed_probes += 1
            peak["fds"] = max(peak["fds"], proc.num_fds())
            peak["rss_mb"] = max(peak["rss_mb"], proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
        async with session.get(f"{url}/metrics") as answer:
            metrics = _gauges(await answer.text())
    # Idle keep-alive connections close on their own: the clients' after uvicorn's 5 s, the
    # upstream pool's after aiohttp's 15 s. Wait for that, 30 s at most.
    settle = time.monotonic()
    while proc.num_fds() > fds_before and time.monotonic() - settle < 30:
        await asyncio.sleep(0.5)
    return {
        "fds_settle_s": round(time.monotonic() - settle, 1),
        "idle_median_ms": statistics.median(idle_ms),
        "loaded_median_ms": statistics.median(loaded_ms) if loaded_ms else None,
        "loaded_p99_ms": sorted(loaded_ms)[int(0.99 * len(loaded_ms))] if loaded_ms else None,
        "probes": len(loaded_ms),
        "failed_probes": failed_probes,
        **counts,
        "peak_fds": peak["fds"],
        "peak_rss_mb": round(peak["rss_mb"], 1),
        "fds_before": fds_before,
        "fds_after": proc.num_fds(),
        "running_after": metrics.get('seqsched_lane_running{lane="interactive"}'),
        "waiting_after": metrics.get("seqsched_queue_length"),
    }


async def _probe(session: aiohttp.ClientSession, url: str) -> float:
    body = {"model": "fake", "messages": [{"role": "user", "content": "tokens 8"}]}
    start = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=30)) as a:
        await a.read()
        assert a.status == 200, a.status
    return 1000 * (time.perf_counter() - start)


async def _held(session: aiohttp.ClientSession, url: str, hold: float, stop: asyncio.Event,
                counts: dict[str, int]) -> None:  # fmt: skip
    body = {"model": "fake", "messages": [{"role": "user", "content": f"sleep:{hold} tokens 4"}]}
    while not stop.is_set():
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body) as answer:
                await answer.read()
                counts["held_ok" if answer.status == 200 else "held_failed"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            counts["held_failed"] += 1
            await asyncio.sleep(1.0)


async def _hostile(port: int, stop: asyncio.Event, counts: dict[str, int], key: str, drip: bool) -> None:
    """A connection that sends nothing (``drip`` False: idle) or one header byte every 2 s
    (slow loris), until the server closes it; then another."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if drip:
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    if drip:
                        writer.write(b"X")
                        await writer.drain()
                    with contextlib.suppress(asyncio.TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), 2.0) == b"":
                            break
            writer.close()
            counts[key] += 1
        await asyncio.sleep(0.1)


async def _until_up(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/health") as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.3)
    raise TimeoutError("seqsched serve did not start")


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _lift_fd_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _table(r: dict[str, Any], args: argparse.Namespace) -> str:
    ratio = r["loaded_median_ms"] / r["idle_median_ms"] if r["loaded_median_ms"] else float("nan")
    lines = [
        f"seqsched serve soak: {args.seconds:g} s of {args.concurrent} requests in flight (each held {args.hold:g} s "
        f"upstream), {args.idle} idle connections, {args.loris} slow-loris clients; --header-timeout "
        f"{args.header_timeout:g}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| ordinary request, idle server: median | {r['idle_median_ms']:.1f} ms |",
        f"| ordinary request, under the soak: median (p99) | {r['loaded_median_ms']:.1f} ms "
        f"({r['loaded_p99_ms']:.1f} ms), {ratio:.2f}x idle; {r['probes']} sent, {r['failed_probes']} failed |",
        f"| held requests answered / failed | {r['held_ok']} / {r['held_failed']} |",
        f"| idle and slow-loris connections closed by the deadline (reconnected) | {r['idle_reconnects']} / "
        f"{r['loris_reconnects']} |",
        f"| seqsched's open files: before, peak, after | {r['fds_before']}, {r['peak_fds']}, {r['fds_after']} "
        f"({r['fds_settle_s']:.0f} s after the load, idle keep-alive connections timed out) |",
        f"| seqsched's peak memory | {r['peak_rss_mb']:.0f} MiB |",
        f"| slots held, requests waiting after | {r['running_after']:.0f}, {r['waiting_after']:.0f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
