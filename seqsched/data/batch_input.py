"""Reading request files: the OpenAI Batch request shape, and plain JSONL.

Input, one JSON object per line, either an OpenAI Batch request line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
"body": {"messages" | "prompt", "max_tokens", ...}}`` or a plain line
``{"custom_id", "prompt" | "messages", "max_tokens"?, ...}``.

NOTE on what a line must be, and what happens when it is not:
- Lines end at ``\\n`` only (``\\r\\n`` too). A U+2028 or U+0085 inside a JSON string is
  part of its line, as JSON allows. A UTF-8 byte-order mark before line 1 is dropped.
- A bad line never stops the others. It becomes an :class:`InputError` naming the file,
  the line, the field and the value: bytes that are not UTF-8, a line longer than
  ``max_line_bytes`` (rejected before it is parsed, so a 10 MB line costs nothing), JSON
  that is not an object, a missing or duplicate ``custom_id``, a bad value, or a field
  seqsched does not support (``stream``, ``logprobs``, ``response_format``, tools, ``n``
  above 1, a ``url`` other than the two completions endpoints, a ``method`` other than
  POST, and any other body field it does not know), as vLLM's ``run_batch`` refuses them.
- ``custom_id`` is required, as the OpenAI Batch format requires it, a string of at most
  1,024 characters that is valid Unicode (JSON can spell a lone surrogate, ``"\\ud800"``,
  which no file can hold) (``require_custom_id``
  off gives ``request-<line>`` instead, for prompt files read by ``bench`` and ``lengths``).
- ``body.model`` is echoed in the answer's ``body.model`` (else the model's name), not
  enforced; ``body.user`` is accepted and ignored. A request without
  ``temperature`` is greedy (temperature 0), unlike the OpenAI API's default of 1.
Positions: a request's ``index`` is its 0-based line number, so indices are unique and in
input order, with gaps where a line was blank or bad.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from seqsched.request import GREEDY, Request, SamplingParams

MAX_CUSTOM_ID_CHARS = 1024  # an id, not a payload: it is echoed in every answer and error line
DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB: far above any prompt a context window holds
CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
MAX_STOP_STRINGS = 4
_SUPPORTED = frozenset(
    {"model", "user", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed"}
    | {"n", "stop", "stream", "logprobs", "top_logprobs", "response_format"}
)
_LINE_FIELDS = frozenset({"custom_id", "method", "url", "body"})


@dataclass(frozen=True)
class InputError:
    """A line that could not become a request. ``line`` is 1-based; ``custom_id`` is None
    when the line has none that can be read."""

    line: int
    custom_id: str | None
    message: str


class BadLine(Exception):
    """One line's problem, worded ``field 'body.max_tokens': must be ..., got -3``."""

    def __init__(self, field: str | None, problem: str, value: Any = None, show: bool = True) -> None:
        shown = ""
        if show:
            shown = f", got {_clip(_show(value) if field is not None or not isinstance(value, str) else value)}"
        super().__init__(f"{f'field {field!r}: ' if field else ''}{problem}{shown}")


def read_requests(
    path: str | Path,
    max_new_tokens: int = 512,
    *,
    data: bytes | None = None,
    stream: BinaryIO | None = None,
    require_custom_id: bool = True,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    fingerprints: bool = True,
) -> tuple[list[Request], list[InputError]]:
    """Parse a request file (or ``data``, its bytes, or ``stream``, e.g. stdin, read under
    the name ``path``); ``max_new_tokens`` is the limit for lines that give none. An empty
    file gives no requests and no errors. A line is read whole only up to
    ``max_line_bytes``: a longer one is counted and skipped, never held. ``fingerprints``
    off: no request carries its line's hash (what only resume reads: 113 bytes a request)."""
    path = Path(path)
    requests: list[Request] = []
    errors: list[InputError] = []
    seen: dict[str, int] = {}  # custom_id -> line
    source = stream if stream is not None else io.BytesIO(data) if data is not None else path.open("rb")
    with contextlib.nullcontext(source) if stream is not None else source as f:
        for number, line, size in bounded_lines(f, max_line_bytes):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if size <= max_line_bytes and not line.strip():
                continue
            custom_id: str | None = None
            try:
                if size > max_line_bytes:
                    limit = f"over the limit of {max_line_bytes:,} (--max-line-bytes)"
                    raise BadLine(None, f"line is {size:,} bytes, {limit}", show=False)
                obj = load_line(line, max_line_bytes)
                custom_id = custom_id_of(obj, number, require_custom_id)
                if custom_id in seen:
                    raise BadLine("custom_id", f"duplicate of line {seen[custom_id]}", custom_id)
                seen[custom_id] = number
                request = _request(obj, number, custom_id, max_new_tokens)
                if fingerprints:
                    request.fingerprint = request_fingerprint(line)
                requests.append(request)
            except BadLine as e:
                errors.append(InputError(number, custom_id, f"{path.name}:{number}: {e}"))
    return requests, errors


def bounded_lines(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line without its end, its size) a line at a time; a line over
    ``max_line_bytes`` is read past in blocks and given as ``b""`` with its size, so no
    line, however long (``/dev/zero`` has no end), is ever held in memory."""
    number = 0
    while True:
        raw = f.readline(max_line_bytes + 2)
        if not raw:
            return
        number += 1
        size = len(raw)
        if raw.endswith(b"\n") or size <= max_line_bytes:
            line = raw.removesuffix(b"\n").removesuffix(b"\r")
            yield number, line, len(line)
            continue
        while not raw.endswith(b"\n"):  # too long: skip to the end of the line
            raw = f.readline(1 << 20)
            if not raw:
                break
            size += len(raw)
        yield number, b"", size - (1 if raw.endswith(b"\n") else 0)


def request_fingerprint(line: bytes) -> str:
    """What resume compares a request by: a hash of its input line as given."""
    return hashlib.sha256(line).hexdigest()


def load_line(line: bytes, max_line_bytes: int) -> dict[str, Any]:
    if len(line) > max_line_bytes:
        limit = f"over the limit of {max_line_bytes:,} (--max-line-bytes)"
        raise BadLine(None, f"line is {len(line):,} bytes, {limit}", show=False)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line"
        raise BadLine(None, f"not UTF-8 ({where})", show=False) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadLine(None, f"invalid JSON ({e.msg} at column {e.colno})", text) from None
    except (ValueError, RecursionError) as e:  # an integer of over 4300 digits, nesting too deep
        raise BadLine(None, f"invalid JSON ({type(e).__name__}: {str(e)[:80]})", text) from None
    if not isinstance(obj, dict):
        raise BadLine(None, "a line must be a JSON object", obj)
    return obj


def custom_id_of(obj: dict[str, Any], number: int, required: bool) -> str:
    value = obj.get("custom_id")
    if value is None:
        if required:
            message = "missing: every request line needs a custom_id (OpenAI Batch format)"
            raise BadLine("custom_id", message, show=False)
        return f"request-{number}"
    if not isinstance(value, str) or not value:
        raise BadLine("custom_id", "must be a non-empty string", value)
    if len(value) > MAX_CUSTOM_ID_CHARS:
        raise BadLine("custom_id", f"is {len(value):,} characters, over the limit of {MAX_CUSTOM_ID_CHARS:,}",
                      show=False)  # fmt: skip
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # valid JSON ("\ud800"), but no text: it could not be written back
        raise BadLine("custom_id", f"is not valid Unicode (a lone surrogate at character {e.start})",
                      show=False) from None  # fmt: skip
    return value


def _request(obj: dict[str, Any], number: int, custom_id: str, default_limit: int) -> Request:
    prefix, url = "", None
    if "body" in obj:  # an OpenAI Batch request line
        body, prefix = obj["body"], "body."
        if not isinstance(body, dict):
            raise BadLine("body", "must be a JSON object", body)
        unknown = sorted(set(obj) - _LINE_FIELDS)
        if unknown:
            raise BadLine(unknown[0], "not a field of an OpenAI Batch request line", obj[unknown[0]])
        method, url = obj.get("method", "POST"), obj.get("url")
        if method != "POST":
            raise BadLine("method", "only POST is supported", method)
        if url is not None and url not in (CHAT_URL, COMPLETIONS_URL):
            raise BadLine("url", f"only {CHAT_URL} and {COMPLETIONS_URL} are supported", url)
    else:
        body = {k: v for k, v in obj.items() if k != "custom_id"}
    _check_supported(body, prefix)
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        given = "both" if prompt is not None else "neither"
        raise BadLine(f"{prefix}prompt", f"give exactly one of prompt or messages ({given} given)", prompt)
    if url == CHAT_URL and messages is None:
        raise BadLine(f"{prefix}messages", f"{CHAT_URL} needs messages", None)
    if url == COMPLETIONS_URL and prompt is None:
        raise BadLine(f"{prefix}prompt", f"{COMPLETIONS_URL} needs a prompt", None)
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise BadLine(f"{prefix}prompt", "must be a non-empty string", prompt)
    if messages is not None:
        messages = _messages(messages, f"{prefix}messages")
    return Request(
        index=number - 1,
        request_id=custom_id,
        prompt=prompt,
        messages=messages,
        max_new_tokens=_limit(body, prefix, default_limit),
        sampling=_sampling(body, prefix),
        stop=_stop(body.get("stop"), f"{prefix}stop"),
        model=_model(body.get("model"), f"{prefix}model"),
    )


def _model(value: Any, field: str) -> str | None:
    """The model name the request asked for: echoed in its answer, as servers do."""
    if value is not None and (not isinstance(value, str) or not value):
        raise BadLine(field, "must be a non-empty string", value)
    return value


def _check_supported(body: dict[str, Any], prefix: str) -> None:
    unknown = sorted(set(body) - _SUPPORTED)
    if unknown:
        raise BadLine(f"{prefix}{unknown[0]}", "not supported by seqsched", body[unknown[0]])
    if body.get("stream") not in (None, False):
        raise BadLine(f"{prefix}stream", "streaming is not supported in a batch job", body["stream"])
    for field in ("logprobs", "top_logprobs", "response_format"):
        if body.get(field) not in (None, False):
            raise BadLine(f"{prefix}{field}", "not supported by seqsched", body[field])


_ROLES = ("system", "user", "assistant")
_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system turn


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadLine(field, "must be a non-empty list of {role, content} objects", value)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadLine(f"{field}[{i}]", "must be a {role, content} object", m)
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise BadLine(f"{field}[{i}].role", "must be a non-empty string", role)
        role = _ROLE_ALIASES.get(role, role)
        if role not in _ROLES:  # a template drops roles it does not know: the model would see nothing
            raise BadLine(f"{field}[{i}].role", "must be system, user or assistant (developer is read as system)", role)
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
                raise BadLine(f"{field}[{i}].content", "parts must be {type: text, text} objects", content)
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise BadLine(f"{field}[{i}].content", "must be a string", content)
        out.append({"role": role, "content": content})
    return out


def _limit(body: dict[str, Any], prefix: str, default: int) -> int:
    given = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    if len(given) > 1:
        raise BadLine(f"{prefix}max_tokens", "give max_tokens or max_completion_tokens, not both", body[given[0]])
    if not given:
        return default
    value = body[given[0]]
    if not _is_int(value) or value < 1:
        raise BadLine(f"{prefix}{given[0]}", "must be a positive integer", value)
    return int(value)


def _sampling(body: dict[str, Any], prefix: str) -> SamplingParams:
    temperature, top_p, seed = body.get("temperature", 0.0), body.get("top_p", 1.0), body.get("seed")
    if temperature is None:
        temperature = 0.0
    if top_p is None:
        top_p = 1.0
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise BadLine(f"{prefix}temperature", "must be a number in [0, 2]", temperature)
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise BadLine(f"{prefix}top_p", "must be a number in (0, 1]", top_p)
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise BadLine(f"{prefix}seed", "must be an integer >= 0", seed)
    n = body.get("n", 1)
    if n is not None and (n != 1 or isinstance(n, bool)):
        raise BadLine(f"{prefix}n", "only n = 1 is supported", n)
    if temperature == 0 and top_p == 1 and seed is None:
        return GREEDY  # shared: most lines are greedy, and a million copies would cost 100 MB
    return SamplingParams(temperature=float(temperature), top_p=float(top_p), seed=seed)


def _stop(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not 1 <= len(stops) <= MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise BadLine(field, f"must be a non-empty string or a list of 1 to {MAX_STOP_STRINGS} of them", value)
    return tuple(stops)


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
