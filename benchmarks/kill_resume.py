"""Stop a real `seqsched run` at random points, resume it, and count what went wrong.

    python benchmarks/kill_resume.py --trials 30 [--model DIR] [--requests 60] [--seed 0]

Each trial starts a job, stops it after a random delay (from model loading to past the
end of the run) with SIGKILL, SIGTERM or SIGINT, in a third of the trials stops the
resumed job once more (a double kill), then resumes it to the end. Its output is compared
with an uninterrupted run's, line by line and byte for byte (SOURCE_DATE_EPOCH fixes the
``created`` stamps): answers lost, duplicated, corrupt (not JSON) or differing must all
be 0, and a job stopped by SIGTERM / SIGINT must exit 143 / 130 and write no output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
# 143 / 130 once seqsched's handlers are in; before that (interpreter start-up), the default action.
EXPECTED_EXIT = {"SIGKILL": {-9}, "SIGTERM": {143, -15}, "SIGINT": {130, -2}}


def write_requests(path: Path, n: int) -> None:
    topics = ["the sea", "a robot", "bread", "the moon", "a garden", "trains", "music", "winter"]
    lines = []
    for i in range(n):
        task = "Write a short poem about" if i % 3 else "Name one fact about"
        lines.append({"custom_id": f"q{i}", "prompt": f"{task} {topics[i % len(topics)]} ({i}).", "max_tokens": 48})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def command(model: str, requests: Path, out: Path, resume: bool) -> list[str]:
    argv = [sys.executable, "-m", "seqsched", "run", str(requests), "-o", str(out), "--model", model]
    argv += ["--device", "cpu", "--batch-size", "4", "--threads", "1"]
    return [*argv, "--resume"] if resume else argv


def environment() -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_to_end(model: str, requests: Path, out: Path, resume: bool) -> float:
    start = time.monotonic()
    done = subprocess.run(command(model, requests, out, resume), env=environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"seqsched run exited {done.returncode}: {done.stderr[-2000:]}")
    return time.monotonic() - start


def stop_after(model: str, requests: Path, out: Path, resume: bool, delay: float, how: str) -> int | None:
    """Start a job and send it ``how`` after ``delay`` seconds; its exit code, or None if it
    had already finished."""
    job = subprocess.Popen(
        command(model, requests, out, resume), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        job.wait(timeout=delay)
        return None
    except subprocess.TimeoutExpired:
        return _stop(job, how)


def stop_once_answering(model: str, requests: Path, out: Path, how: str, timeout: float = 120.0) -> int:
    """Start a job and send it ``how`` once its journal holds an answer (so the signal lands
    mid-run, however long start-up takes on a loaded machine); its exit code."""
    journal = out.with_name(out.name + ".partial")
    job = subprocess.Popen(
        command(model, requests, out, False), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    while not (journal.exists() and journal.stat().st_size > 0):
        if job.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the job ended (or stalled) before its first answer: exit {job.returncode}")
        time.sleep(0.02)
    return _stop(job, how)


def _stop(job: subprocess.Popen[bytes], how: str) -> int:
    job.send_signal(SIGNALS[how])
    job.wait()
    stderr = job.stderr.read().decode() if job.stderr else ""
    if job.returncode in (130, 143) and "stopped by" not in stderr:
        raise RuntimeError(f"{how}: no 'stopped by' line on stderr: {stderr[-1000:]}")
    return job.returncode


def _state(out: Path) -> str | None:
    """The job's state from its status file (a signal may land after the job completed)."""
    status = out.with_name(out.name + ".status.json")
    return json.loads(status.read_text())["state"] if status.exists() else None


def unbatched(output: bytes) -> bytes:
    """An output with seqsched's "length" blanked: the steps of the micro-batch a request
    ran in, which after a stop mid-batch are the resumed run's batches (its tokens are not)."""
    return re.sub(rb'"length": \d+, "num_runs"', b'"length": 0, "num_runs"', output)


def compare(reference: bytes, output: bytes) -> dict[str, int]:
    """Lost, duplicated, corrupt and differing lines (differing: anything but "length")."""
    want = unbatched(reference).decode().splitlines()
    got = unbatched(output).decode(errors="replace").splitlines()
    ids: list[str] = []
    corrupt = 0
    for line in got:
        try:
            ids.append(json.loads(line)["custom_id"])
        except (ValueError, KeyError, TypeError):
            corrupt += 1
    want_ids = [json.loads(line)["custom_id"] for line in want]
    counts = Counter(ids)
    return {
        "lost": sum(1 for i in want_ids if i not in counts),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "corrupt": corrupt,
        "differing": sum(1 for a, b in zip(want, got, strict=False) if a != b) + abs(len(want) - len(got)),
    }


def trial(model: str, requests: Path, workdir: Path, rng: random.Random, span: float, reference: bytes) -> dict:
    out = workdir / "out.jsonl"
    how = rng.choice(list(SIGNALS))
    delays = [rng.uniform(0.2, span * 1.1)]
    if rng.random() < 1 / 3:
        delays.append(rng.uniform(0.2, span * 1.1))
    codes = []
    for k, delay in enumerate(delays):
        code = stop_after(model, requests, out, resume=k > 0, delay=delay, how=how)
        codes.append(code)
        if code is not None and out.exists() and _state(out) != "completed":
            raise RuntimeError(f"{how} left an output file, but the job did not complete")
        finished_first = code == 0 and _state(out) == "completed"  # the signal came while it wrote its output
        if code is not None and code not in EXPECTED_EXIT[how] and not finished_first:
            raise RuntimeError(f"{how}: exit {code}, expected {EXPECTED_EXIT[how]}")
    if codes[-1] is not None or not out.exists():
        run_to_end(model, requests, out, resume=True)
    counts = compare(reference, out.read_bytes())
    return {"signal": how, "delays": [round(d, 2) for d in delays], "exits": codes, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--model", default=str(ROOT / "seqsched" / "assets" / "default_model"))
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "kill_resume")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    requests = args.workdir / "requests.jsonl"
    write_requests(requests, args.requests)
    reference_out = args.workdir / "reference.jsonl"
    reference_out.unlink(missing_ok=True)
    span = run_to_end(args.model, requests, reference_out, resume=False)
    reference = reference_out.read_bytes()
    print(f"uninterrupted run: {span:.1f} s, {len(reference.splitlines())} answers")
    rng = random.Random(args.seed)
    totals: Counter[str] = Counter()
    for t in range(args.trials):
        workdir = args.workdir / f"trial-{t}"
        for stale in workdir.glob("out.jsonl*"):
            stale.unlink()
        workdir.mkdir(exist_ok=True)
        result = trial(args.model, requests, workdir, rng, span, reference)
        totals.update({k: result[k] for k in ("lost", "duplicated", "corrupt", "differing")})
        totals[result["signal"]] += 1
        totals["double"] += len(result["delays"]) > 1
        print(json.dumps({"trial": t, **result}), flush=True)
    print(
        f"{args.trials} trials ({totals['SIGKILL']} SIGKILL, {totals['SIGTERM']} SIGTERM, {totals['SIGINT']} SIGINT; "
        f"{totals['double']} stopped twice): lost {totals['lost']}, duplicated {totals['duplicated']}, "
        f"corrupt {totals['corrupt']}, differing {totals['differing']}"
    )


if __name__ == "__main__":
    main()
