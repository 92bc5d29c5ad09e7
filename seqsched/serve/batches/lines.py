"""A batch input file's lines, checked one at a time: the OpenAI Batch request shape
(``custom_id``, ``method``, ``url``, ``body``), the body as the endpoint takes it. A bad line
becomes an error for the error file (its line, ``custom_id`` and what is wrong) and never
stops the others; the body's own fields go to the upstream untouched, which answers for
them, as it does for interactive requests.

Only a line's place in the file is kept (offset and length), never its body: a batch of
50,000 lines costs a few megabytes, and its body is read back when the line runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.data.batch_input import BadLine, bounded_lines, custom_id_of, load_line
from seqsched.serve.batches.store import open_regular
from seqsched.serve.protocol import ApiError, Endpoint, ParsedRequest, parse_body

ENDPOINTS: dict[str, Endpoint] = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
MAX_LINE_BYTES = 10 << 20
# A request can be stopped and continued from its token ids, giving the same greedy answer,
# when it asks for nothing that depends on how its output was produced (stop strings, whose
# text vLLM holds back; n > 1, logprobs, penalties on output tokens, grammars, tools):
# anything outside this list runs uninterrupted (``continuation.py``).
CONTINUABLE = frozenset(
    {"model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
     "min_p", "seed", "stop_token_ids", "ignore_eos", "min_tokens", "repetition_penalty", "user", "n",
     "skip_special_tokens", "spaces_between_special_tokens", "return_token_ids", "logit_bias", "stream"}
)  # fmt: skip


@dataclass(slots=True)
class Line:
    number: int  # 1-based
    offset: int  # where the line starts in the file
    length: int
    custom_id: str
    max_tokens: int | None
    continuable: bool
    predicted_len: int = 0
    prompt_chars: int = 0  # for the door's estimate of its KV need


@dataclass(frozen=True)
class LineError:
    number: int
    custom_id: str | None
    message: str


def read_lines(path: Path, url: str, max_tokens_limit: int | None) -> Iterator[tuple[Line | LineError, str]]:
    """Each non-blank line, checked: (a line to run, the text its length is predicted from),
    or (an error, "")."""
    endpoint = ENDPOINTS[url]
    seen: dict[str, int] = {}
    offset = 0
    with os.fdopen(open_regular(path), "rb") as f:
        for number, raw, size in bounded_lines(f, MAX_LINE_BYTES):
            start, offset = offset, f.tell()  # the reader stands after the line
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                raw, start = raw[3:], start + 3
            if size <= MAX_LINE_BYTES and not raw.strip():
                continue
            custom_id: str | None = None
            try:
                if size > MAX_LINE_BYTES:
                    raise BadLine(None, f"line is {size:,} bytes, over the limit of {MAX_LINE_BYTES:,}", show=False)
                obj = load_line(raw, MAX_LINE_BYTES)
                custom_id = custom_id_of(obj, number, required=True)
                if custom_id in seen:
                    raise BadLine("custom_id", f"duplicate of line {seen[custom_id]}", custom_id)
                seen[custom_id] = number
                parsed = _request(obj, url, endpoint, max_tokens_limit)
            except BadLine as e:
                yield LineError(number, custom_id, f"line {number}: {e}"), ""
                continue
            continuable = set(parsed.body) <= CONTINUABLE and parsed.body.get("n") in (None, 1)
            line = Line(number, start, len(raw), custom_id, parsed.max_tokens, continuable, 0, len(parsed.text))
            yield line, parsed.text


def body_of(path: Path, line: Line) -> dict[str, Any]:
    """A checked line's request body, read back from the file."""
    with os.fdopen(open_regular(path), "rb") as f:
        f.seek(line.offset)
        obj = json.loads(f.read(line.length))
    body: dict[str, Any] = obj["body"]
    return body


def count_lines(path: Path) -> int:
    """Lines that are not blank, counted a block at a time (a 200 MB file: about a second)."""
    count, tail = 0, b""
    with os.fdopen(open_regular(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            *whole, tail = (tail + block).split(b"\n")
            count += sum(1 for line in whole if line.strip())
    return count + bool(tail.strip())


def input_digest(path: Path) -> str:
    """The input file's SHA-256: a batch's journal is trusted only for the input it was made from."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _request(obj: dict[str, Any], url: str, endpoint: Endpoint, limit: int | None) -> ParsedRequest:
    unknown = sorted(set(obj) - {"custom_id", "method", "url", "body"})
    if unknown:
        raise BadLine(unknown[0], "not a field of an OpenAI Batch request line", obj[unknown[0]])
    if obj.get("method", "POST") != "POST":
        raise BadLine("method", "only POST is supported", obj.get("method"))
    if obj.get("url") != url:
        raise BadLine("url", f"must be the batch's endpoint, {url}", obj.get("url"))
    body = obj.get("body")
    if not isinstance(body, dict):
        raise BadLine("body", "must be a JSON object", body)
    if body.get("stream") not in (None, False):
        raise BadLine("body.stream", "a batch request is not streamed", body.get("stream"))
    try:
        return parse_body(json.dumps(body).encode(), endpoint, limit)
    except ApiError as e:
        raise BadLine(f"body.{e.param}" if e.param else "body", e.message, show=False) from None
