"""Fuzz the request reader and the job with garbage lines; count what was tried and what crashed.

    python benchmarks/fuzz_reader.py [--files 400]

Each generated file mixes valid request lines with arbitrary bytes, arbitrary JSON values
and broken variants of valid lines (hypothesis draws them). For every file, reading it
must not raise; every non-blank line must end as exactly one request or one error that
names its file and line; and a whole job over it (with a stand-in engine that answers
every request) must answer every valid line and list every other one in the error file.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqsched.data.batch_input import read_requests
from seqsched.engine.base import BatchRun, Engine
from seqsched.request import Outcome, Request
from seqsched.schedule import MicroBatch

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "body", "url"]


@st.composite
def valid_line(draw: Any, k: int) -> bytes:
    prompt = draw(st.text(min_size=1, max_size=40).filter(lambda t: t.strip() != ""))
    body: dict[str, Any] = (
        {"prompt": prompt} if draw(st.booleans()) else {"messages": [{"role": "user", "content": prompt}]}
    )
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        body["stop"] = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4))
    line = {"custom_id": f"valid-{k}", "body": body} if draw(st.booleans()) else {"custom_id": f"valid-{k}", **body}
    return json.dumps(line, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def garbage_line(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "broken"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    line = {"custom_id": draw(st.text(max_size=8)), draw(st.sampled_from(FIELDS)): draw(JSON)}
    return json.dumps(line).encode()


@st.composite
def request_file(draw: Any) -> tuple[bytes, set[str]]:
    """A file's bytes, and the custom_ids of its valid lines."""
    lines, valid = [], set()
    for k in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            lines.append(draw(valid_line(k)))
            valid.add(f"valid-{k}")
        else:
            lines.append(draw(garbage_line()))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"])), valid


def check_reader(data: bytes, valid: set[str]) -> int:
    """The reader's properties on one file; returns the number of non-blank lines."""
    requests, errors = read_requests("fuzz.jsonl", data=data)
    numbered = [(n, line) for n, line in enumerate(_lines(data), start=1) if line.strip()]
    assert sorted([r.index + 1 for r in requests] + [e.line for e in errors]) == [n for n, _ in numbered]
    assert all(e.message.startswith(f"fuzz.jsonl:{e.line}: ") for e in errors)
    assert valid <= {r.request_id for r in requests}, "every valid line becomes a request"
    return len(numbered)


def check_job(data: bytes, valid: set[str], workdir: Path) -> None:
    """A whole job with an engine that answers everything: valid lines answered, the rest listed."""
    from seqsched.config import RunConfig
    from seqsched.engine.config import EngineConfig
    from seqsched.job import execute

    out = workdir / "out.jsonl"
    config = RunConfig(Path("-"), out, EngineConfig("stand-in"), overwrite=True)
    execute(config, stdin=io.BytesIO(data))
    answered = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    failed = [json.loads(x) for x in out.with_name("out.jsonl.errors.jsonl").read_text().splitlines()]
    # str.splitlines splits at U+0085 and U+2028 too: the writer escapes them, so it is safe here.
    assert valid <= set(answered)
    lines = sum(1 for line in _lines(data) if line.strip())
    assert len(answered) + len(failed) == lines


def _lines(data: bytes) -> list[bytes]:
    """The file's lines as the format defines them: a leading byte-order mark dropped,
    split at ``\\n``, a ``\\r`` before it dropped."""
    return [line.removesuffix(b"\r") for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n")]


class AnswerAllEngine(Engine):
    """A stand-in engine: every request gets one token, at once."""

    def run(self, batch: MicroBatch, requests: Any) -> BatchRun:
        rows: list[Request] = list(requests)
        return BatchRun([Outcome(r.index, [7], True, 1) for r in rows], 0.0)


class Tally:
    files = 0
    lines = 0


def fuzz(num_files: int, workdir: Path | None = None) -> Tally:
    tally = Tally()

    @settings(max_examples=num_files, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request_file())
    def one(case: tuple[bytes, set[str]]) -> None:
        data, valid = case
        tally.files += 1
        tally.lines += check_reader(data, valid)
        if workdir is not None:
            check_job(data, valid, workdir)

    one()
    return tally


def main() -> None:
    import tempfile

    import seqsched.build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400)
    args = parser.parse_args()
    seqsched.build.build_engine = lambda *a, **k: AnswerAllEngine()  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        tally = fuzz(args.files, Path(tmp))
    print(
        f"fuzzed {tally.files} files, {tally.lines} non-blank lines (valid and garbage): 0 crashes, every line "
        "answered or listed in the error file with its line"
    )


if __name__ == "__main__":
    main()
