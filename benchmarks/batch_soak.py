"""A soak of the Files and Batches API under faults, loopback only: many batches at once
against a fake upstream that streams token ids as vLLM does and fails on purpose, a disk
that fills up and frees once mid-run, and `seqsched serve` killed with -9 and restarted.

- ``--batches`` (20) batches of ``--lines`` (1,000) lines, created at once;
- the upstream fails ``--chaos`` (5%) of the batch calls (500, 503, 429, 408, a stream cut
  without a finish, a malformed event, a reset connection) and hangs ``--hang`` (1%)
  (seqsched's ``--upstream-timeout`` ends those);
- ``--batch-dir`` is a tmpfs of ``--disk-mb`` (needs root: ``mount``), filled to the last
  byte when ``--full-at`` of the lines have ended, and freed ``--full-for`` seconds later;
- kill -9 when ``--kill-at`` of the lines have ended (each a fraction), restarted at once;
- an interactive client sends a chat request every 0.2 s throughout.

It reports, per batch and in all: every line in the output or the error file exactly once
(missing and doubled lines counted), batches still not ended at ``--deadline``, the
interactive requests' p50 / p99 latency and failures, and the server's peak memory (RSS).

    sudo python benchmarks/batch_soak.py [--batches 20] [--lines 1000] [-o runs/batch_soak.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqsched.serve.launch import free_port  # noqa: E402

ENDED = ("completed", "failed", "cancelled", "expired")
_UPSTREAM = """
import sys, uvicorn
from tests.serve_helpers import FakeUpstream
fake = FakeUpstream(seconds_per_token=float(sys.argv[2]), chaos=float(sys.argv[3]), hang=float(sys.argv[4]), seed=7)
uvicorn.run(fake.app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error", backlog=4096)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--chaos", type=float, default=0.05)
    p.add_argument("--hang", type=float, default=0.01)
    p.add_argument("--seconds-per-token", type=float, default=0.002, help="the fake upstream's pace")
    p.add_argument("--max-inflight", type=int, default=64)
    p.add_argument("--upstream-timeout", type=float, default=5.0)
    p.add_argument("--disk-mb", type=int, default=512)
    p.add_argument("--full-at", type=float, default=0.4, help="fraction of lines ended when the disk fills")
    p.add_argument("--full-for", type=float, default=10.0, help="seconds the disk stays full")
    p.add_argument("--kill-at", default="0.25,0.7", help="fractions of lines ended at which to kill -9")
    p.add_argument("--deadline", type=float, default=1800.0, help="seconds before a batch not ended counts stuck")
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    kills = sorted(float(x) for x in args.kill_at.split(",") if x)
    work = Path(tempfile.mkdtemp(prefix="batch-soak-"))
    disk = work / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs", str(disk)]).returncode:
        sys.exit("batch_soak: mounting a tmpfs for the full disk needs root")
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM, str(up_port), str(args.seconds_per_token),
                                 str(args.chaos), str(args.hang)], cwd=ROOT)  # fmt: skip
    command = [sys.executable, "-m", "seqsched", "serve", "--upstream", f"http://127.0.0.1:{up_port}",
               "--port", str(port), "--batch-dir", str(disk / "d"), "--max-inflight", str(args.max_inflight),
               "--upstream-timeout", str(args.upstream_timeout), "--max-active-batches", str(args.batches)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server = Server(command, url, work / "serve.log")
    try:
        server.start()
        report = soak(args, url, server, disk, kills, work)
    finally:
        server.kill()
        upstream.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report["summary"], indent=2))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")


class Server:
    """`seqsched serve` in its own process, killed with -9 and started again; its peak RSS."""

    def __init__(self, command: list[str], url: str, log: Path) -> None:
        self.command, self.url, self.log = command, url, log
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.starts: list[float] = []
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stderr=log, stdout=log)
        deadline = time.monotonic() + 180
        while not _healthy(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"seqsched serve did not start: see {self.log}")
            time.sleep(0.2)
        self.starts.append(time.monotonic())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _sample(self) -> None:
        while True:
            process = self.process
            if process is not None:
                with contextlib.suppress(psutil.Error):
                    self.peak_rss = max(self.peak_rss, psutil.Process(process.pid).memory_info().rss)
            time.sleep(0.25)


def soak(args: argparse.Namespace, url: str, server: Server, disk: Path, kills: list[float],
         work: Path) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(3)
    client = httpx.Client(base_url=url, timeout=60)
    ids: list[str] = []
    for b in range(args.batches):
        path = work / f"in{b}.jsonl"
        with path.open("w") as f:
            for i in range(args.lines):
                body = {"model": "fake", "messages": [{"role": "user", "content": f"tokens {rng.randint(4, 40)} chaos "
                                                                                   f"b{b} #{i}"}]}  # fmt: skip
                f.write(json.dumps({"custom_id": f"b{b}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": body}) + "\n")  # fmt: skip
        with path.open("rb") as f:
            file_id = client.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "batch"}).json()["id"]
        created = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"})  # fmt: skip
        created.raise_for_status()
        ids.append(created.json()["id"])
    print(f"batch_soak: {args.batches} batches of {args.lines} lines created", file=sys.stderr)
    probe = Probe(url, server)
    probe.start()
    total = args.batches * args.lines
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    filler: Path | None = None
    full_since: float | None = None
    last_print = 0.0
    while True:
        ended, done = _progress(client, ids)
        fraction = done / total
        now = time.monotonic()
        if now - last_print > 10:
            print(f"batch_soak: {done:,} of {total:,} lines ended, {ended} batches ended, "
                  f"{now - started:.0f} s", file=sys.stderr)  # fmt: skip
            last_print = now
        if kills and fraction >= kills[0]:
            kills.pop(0)
            server.kill()
            events.append({"event": "kill -9", "at_s": round(now - started, 1), "lines_ended": done})
            server.start()
            events.append({"event": "restarted", "at_s": round(time.monotonic() - started, 1)})
        if filler is None and full_since is None and fraction >= args.full_at:
            filler, full_since = _fill(disk), now
            events.append({"event": "disk full", "at_s": round(now - started, 1), "lines_ended": done})
        if filler is not None and full_since is not None and now - full_since >= args.full_for:
            filler.unlink()
            filler = None
            events.append({"event": "disk freed", "at_s": round(now - started, 1), "lines_ended": done})
        if ended == len(ids) or now - started > args.deadline:
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    probe.stop()
    per_batch = [_check(client, batch_id, args.lines) for batch_id in ids]
    metrics = client.get("/metrics").text
    latencies = sorted(probe.latencies)
    summary = {
        "lines": total,
        "in_output": sum(b["answered"] for b in per_batch),
        "in_error_file": sum(b["failed"] for b in per_batch),
        "missing": sum(b["missing"] for b in per_batch),
        "doubled": sum(b["doubled"] for b in per_batch),
        "batches_not_ended": sum(1 for b in per_batch if b["status"] not in ENDED),
        "statuses": sorted({b["status"] for b in per_batch}),
        "wall_s": round(wall, 1),
        "interactive_requests": len(latencies) + probe.failures,
        "interactive_failures": probe.failures,
        "interactive_failure_reasons": probe.reasons[:10],
        "interactive_p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "interactive_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 4) if latencies else None,
        "peak_rss_mib": round(server.peak_rss / 2**20, 1),
        "events": events,
        "retries_since_last_start": _retries(metrics),
    }
    return {"summary": summary, "batches": per_batch, "args": {k: str(v) for k, v in vars(args).items()}}


class Probe:
    """An interactive client: one chat request every 0.2 s, its latency (failures counted)."""

    def __init__(self, url: str, server: Server) -> None:
        self.url, self.server = url, server
        self.latencies: list[float] = []
        self.failures = 0
        self.reasons: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.wait(0.2):
                i += 1
                body = {"model": "fake", "messages": [{"role": "user", "content": f"tokens 8 probe {i}"}]}
                t0 = time.perf_counter()
                try:
                    answer = client.post(f"{self.url}/v1/chat/completions", json=body)
                    why = None if answer.status_code == 200 else f"{answer.status_code}: {answer.text[:200]}"
                except httpx.HTTPError as e:
                    why = f"{type(e).__name__}: {e}"
                if why is None:
                    self.latencies.append(time.perf_counter() - t0)
                elif time.monotonic() - self.server.starts[-1] > 1 and _healthy(self.url):
                    self.failures += 1  # not one lost to a kill -9 (the server was up before and after)
                    self.reasons.append(why)


def _progress(client: httpx.Client, ids: list[str]) -> tuple[int, int]:
    """Batches ended, and lines ended (answered or failed) over all batches."""
    try:
        data = client.get("/v1/batches", params={"limit": 100}).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return 0, 0
    mine = [b for b in data if b["id"] in ids]
    ended = sum(1 for b in mine if b["status"] in ENDED)
    return ended, sum(b["request_counts"]["completed"] + b["request_counts"]["failed"] for b in mine)


def _check(client: httpx.Client, batch_id: str, lines: int) -> dict[str, Any]:
    batch = client.get(f"/v1/batches/{batch_id}").json()
    seen: dict[str, int] = {}
    answered = failed = 0
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            for row in client.get(f"/v1/files/{batch[key]}/content").text.splitlines():
                custom_id = json.loads(row)["custom_id"]
                seen[custom_id] = seen.get(custom_id, 0) + 1
                answered += key == "output_file_id"
                failed += key == "error_file_id"
    return {"id": batch_id, "status": batch["status"], "answered": answered, "failed": failed,
            "missing": lines - len(seen), "doubled": sum(n - 1 for n in seen.values()),
            "request_counts": batch["request_counts"]}  # fmt: skip


def _retries(metrics: str) -> dict[str, float]:
    """seqsched_batch_retries_total by kind (since the server last started)."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith("seqsched_batch_retries_total{"):
            found[line.split('"')[1]] = float(line.split()[-1])
    return found


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
    return filler


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
