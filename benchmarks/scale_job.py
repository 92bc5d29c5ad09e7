"""A job's own cost as it grows: wall time, overhead per request outside the engine, and
peak memory of `seqsched run` at 1k to 1M lines, each in a fresh process.

    python benchmarks/scale_job.py [--sizes 1000,10000,100000,1000000] [--run-up-to 100000]

Per size N it measures, with the built-in model and ``max_tokens`` 1 on every line:
- ``dry-run``: ``seqsched run IN --dry-run`` (read, validate, plan; no model), without a
  predictor and with the shipped proxy (predicted group by group);
- ``run`` (N <= --run-up-to): a real job; overhead per request = (job wall time less the
  pipeline's own clock, both from its summary line, less the fixed cost of a 10-line job:
  imports, model load, warm-up) / N;
- ``resume``: ``--resume`` of a job whose journal holds all N answers (built with the
  library's own fingerprint functions, as a finished run writes them), so nothing runs:
  reading the input and the journal and writing the output is all there is.
Peak RSS is the child's ``ru_maxrss`` (``os.wait4``). Prints a table; ``-o`` writes JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "seqsched" / "assets" / "default_model"
PROXY = ROOT / "seqsched" / "assets" / "default_proxy"
TOPICS = ["the sea", "a robot", "bread", "the moon", "a garden", "trains", "music", "winter"]


def request_line(i: int) -> bytes:
    obj = {
        "custom_id": f"q{i}",
        "prompt": f"Write a short poem about {TOPICS[i % len(TOPICS)]} ({i}).",
        "max_tokens": 1,
    }
    return json.dumps(obj).encode()


def write_input(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            f.write(request_line(i) + b"\n")


def write_journal(inp: Path, out: Path, n: int) -> None:
    """The journal a finished run leaves: one answer per line, fingerprinted as the job does."""
    from seqsched.api import run_config
    from seqsched.data.batch_input import request_fingerprint
    from seqsched.data.journal import answer_fingerprint
    from seqsched.job import journal_path
    from seqsched.job.plan import settings_of

    settings = settings_of(run_config(inp, out, model=str(MODEL), max_new_tokens=512, num_threads=1))
    with journal_path(out).open("w") as f:
        for i in range(n):
            digest = hashlib.sha1(f"q{i}".encode()).hexdigest()[:24]
            body = {"id": f"cmpl-{digest}", "object": "text_completion", "created": 0, "model": "default_model",
                    "choices": [{"index": 0, "text": "A", "logprobs": None, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}}  # fmt: skip
            fingerprint = answer_fingerprint(request_fingerprint(request_line(i)), settings)
            line = {"id": f"batch_req_{digest}", "custom_id": f"q{i}",
                    "response": {"status_code": 200, "request_id": f"seqsched-{digest}", "body": body},
                    "error": None, "seqsched": {"predicted_len": None, "length": 1, "num_runs": 1,
                                                "fingerprint": fingerprint}}  # fmt: skip
            f.write(json.dumps(line) + "\n")


def measure(argv: list[str]) -> dict[str, Any]:
    """Run one command in a fresh process: wall seconds, peak RSS (MB, from wait4), stderr."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "rc": child.returncode, "stderr": text[-3000:]}


def _pipeline_seconds(stderr: str) -> float:
    found = re.search(r"over ([\d.]+) s \(the pipeline's clock\)", stderr)
    assert found, stderr
    return float(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--run-up-to", type=int, default=100_000, help="real runs only up to this many lines")
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    seqsched = [sys.executable, "-m", "seqsched", "run"]
    common = ["--model", str(MODEL), "--threads", "1", "--device", "cpu"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-job-") as tmp:
        # The fixed cost (imports, model load, warm-up): a 10-line job's wall less its pipeline clock.
        write_input(Path(tmp) / "in10.jsonl", 10)
        fixed_run = measure([*seqsched, str(Path(tmp) / "in10.jsonl"), "-o", str(Path(tmp) / "o10"), *common])
        assert fixed_run["rc"] == 0, fixed_run["stderr"]
        fixed = fixed_run["seconds"] - _pipeline_seconds(fixed_run["stderr"])
        print(f"fixed cost of a job (10 lines: wall less the pipeline's clock): {fixed:.2f} s", flush=True)
        for n in (int(x) for x in args.sizes.split(",")):
            inp, out = Path(tmp) / f"in{n}.jsonl", Path(tmp) / f"out{n}.jsonl"
            write_input(inp, n)
            row: dict[str, Any] = {"lines": n}
            dry = measure([*seqsched, str(inp), "--dry-run", *common])
            assert dry["rc"] == 0, dry["stderr"]
            row["dry_run"] = {k: dry[k] for k in ("seconds", "rss_mb")}
            proxy = measure([*seqsched, str(inp), "--dry-run", *common, "--predictor", str(PROXY)])
            assert proxy["rc"] == 0, proxy["stderr"]
            row["dry_run_proxy"] = {k: proxy[k] for k in ("seconds", "rss_mb")}
            if n <= args.run_up_to:
                run = measure([*seqsched, str(inp), "-o", str(out), *common, "--batch-size", "64"])
                assert run["rc"] == 0, run["stderr"]
                pipeline = _pipeline_seconds(run["stderr"])
                row["run"] = {"seconds": run["seconds"], "rss_mb": run["rss_mb"], "pipeline_s": pipeline,
                              "fixed_s": fixed,
                              "overhead_ms_per_request": (run["seconds"] - pipeline - fixed) / n * 1e3}  # fmt: skip
                out.unlink()
            write_journal(inp, out, n)
            resume = measure([*seqsched, str(inp), "-o", str(out), *common, "--resume"])
            assert resume["rc"] == 0, resume["stderr"]
            assert f"{n} answers kept, 0 re-run" in resume["stderr"], resume["stderr"]
            row["resume"] = {k: resume[k] for k in ("seconds", "rss_mb")}
            assert sum(1 for _ in out.open()) == n
            rows.append(row)
            print(_row(row), flush=True)
            for path in Path(tmp).iterdir():
                path.unlink()
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=1))


def _row(row: dict[str, Any]) -> str:
    dry, resume, run = row["dry_run"], row["resume"], row.get("run")
    ran = (f"run {run['seconds']:.1f} s, {run['rss_mb']:.0f} MB, overhead {run['overhead_ms_per_request']:.3f} ms/req"
           if run else "run -")  # fmt: skip
    proxy = row["dry_run_proxy"]
    return (f"{row['lines']:>9,} lines | dry-run {dry['seconds']:.1f} s, {dry['rss_mb']:.0f} MB | dry-run with the "
            f"proxy {proxy['seconds']:.1f} s, {proxy['rss_mb']:.0f} MB | {ran} | "
            f"resume {resume['seconds']:.1f} s, {resume['rss_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
