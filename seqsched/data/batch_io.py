"""Request files in, result files out: the OpenAI Batch API shapes, and plain JSONL.

Input, one JSON object per line, either an OpenAI Batch request line
``{"custom_id", "method", "url", "body": {"messages" | "prompt", "max_tokens", ...}}``
or a plain line ``{"custom_id"?, "prompt" | "messages", "max_tokens"?, ...}``.
``max_completion_tokens`` is accepted for ``max_tokens``; fields the engine does not
use (``model``, ``stop``, ...) are ignored.

Positions: a request's ``index`` is its 0-based line number in the file (blank lines
count), so indices are unique and in input order, with gaps where a line was blank or
bad. A bad line never stops the others: it becomes an :class:`InputError` that the
runner writes as an error line at the same position.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.request import Request, RequestStatus, Result, SamplingParams

INVALID_REQUEST = "invalid_request"
REQUEST_FAILED = "request_failed"


@dataclass(frozen=True)
class InputError:
    """A line that could not become a request. ``line`` is 1-based."""

    line: int
    custom_id: str
    message: str


class _Bad(Exception):
    """One line's problem, worded ``field 'body.max_tokens': must be ..., got -3``."""

    def __init__(self, field: str | None, problem: str, value: Any) -> None:
        shown = _clip(value if field is None else json.dumps(value, ensure_ascii=False))
        super().__init__(f"{f'field {field!r}: ' if field else ''}{problem}, got {shown}")


def read_requests(path: str | Path, max_new_tokens: int = 512) -> tuple[list[Request], list[InputError]]:
    """Parse a request file; ``max_new_tokens`` is the limit for lines that give none."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path}: empty file: no requests in it")
    requests: list[Request] = []
    errors: list[InputError] = []
    seen: dict[str, int] = {}  # custom_id -> line
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        custom_id = f"request-{number}"
        try:
            obj = _load(text)
            custom_id = _custom_id(obj, number)
            if custom_id in seen:
                raise _Bad("custom_id", f"duplicate of line {seen[custom_id]}", custom_id)
            seen[custom_id] = number
            requests.append(_request(obj, number, custom_id, max_new_tokens))
        except _Bad as e:
            errors.append(InputError(number, custom_id, f"{path.name}:{number}: {e}"))
    return requests, errors


def _load(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Bad(None, f"invalid JSON ({e.msg} at column {e.colno})", text) from None
    if not isinstance(obj, dict):
        raise _Bad(None, "a line must be a JSON object", obj)
    return obj


def _custom_id(obj: dict[str, Any], number: int) -> str:
    value = obj.get("custom_id")
    if value is None:
        return f"request-{number}"
    if not isinstance(value, str) or not value:
        raise _Bad("custom_id", "must be a non-empty string", value)
    return value


def _request(obj: dict[str, Any], number: int, custom_id: str, default_limit: int) -> Request:
    prefix = ""
    if "body" in obj:  # an OpenAI Batch request line
        body, prefix = obj["body"], "body."
        if not isinstance(body, dict):
            raise _Bad("body", "must be a JSON object", body)
    else:
        body = obj
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        given = "both" if prompt is not None else "neither"
        raise _Bad(f"{prefix}prompt", f"give exactly one of prompt or messages ({given} given)", prompt)
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise _Bad(f"{prefix}prompt", "must be a non-empty string", prompt)
    if messages is not None:
        messages = _messages(messages, f"{prefix}messages")
    return Request(
        index=number - 1,
        request_id=custom_id,
        prompt=prompt,
        messages=messages,
        max_new_tokens=_limit(body, prefix, default_limit),
        sampling=_sampling(body, prefix),
    )


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _Bad(field, "must be a non-empty list of {role, content} objects", value)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise _Bad(f"{field}[{i}]", "must be a {role, content} object", m)
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise _Bad(f"{field}[{i}].role", "must be a non-empty string", role)
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
                raise _Bad(f"{field}[{i}].content", "parts must be {type: text, text} objects", content)
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _Bad(f"{field}[{i}].content", "must be a string", content)
        out.append({"role": role, "content": content})
    return out


def _limit(body: dict[str, Any], prefix: str, default: int) -> int:
    given = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    if len(given) > 1:
        raise _Bad(f"{prefix}max_tokens", "give max_tokens or max_completion_tokens, not both", body[given[0]])
    if not given:
        return default
    value = body[given[0]]
    if not _is_int(value) or value < 1:
        raise _Bad(f"{prefix}{given[0]}", "must be a positive integer", value)
    return int(value)


def _sampling(body: dict[str, Any], prefix: str) -> SamplingParams:
    temperature, top_p, seed = body.get("temperature", 0.0), body.get("top_p", 1.0), body.get("seed")
    if temperature is None:
        temperature = 0.0
    if top_p is None:
        top_p = 1.0
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise _Bad(f"{prefix}temperature", "must be a number in [0, 2]", temperature)
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise _Bad(f"{prefix}top_p", "must be a number in (0, 1]", top_p)
    if seed is not None and not _is_int(seed):
        raise _Bad(f"{prefix}seed", "must be an integer", seed)
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise _Bad(f"{prefix}n", "only n = 1 is supported", n)
    return SamplingParams(temperature=float(temperature), top_p=float(top_p), seed=seed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --- output ---------------------------------------------------------------------------


def result_line(result: Result, model: str) -> dict[str, Any]:
    """One OpenAI Batch output line for a request that ran (or failed in the engine)."""
    request = result.request
    if request.status == RequestStatus.FINISHED_ERROR:
        return error_line(request.request_id, request.error or "request failed", REQUEST_FAILED)
    assert request.status.is_finished, f"request {request.request_id!r} has not finished"
    chat = request.messages is not None
    reason = "stop" if request.status == RequestStatus.FINISHED_STOPPED else "length"
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    usage = {
        "prompt_tokens": request.num_prompt_tokens,
        "completion_tokens": result.num_output_tokens,
        "total_tokens": request.num_prompt_tokens + result.num_output_tokens,
    }
    body = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{_digest(request.request_id)}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    return {
        "id": f"batch_req_{_digest(request.request_id)}",
        "custom_id": request.request_id,
        "response": {"status_code": 200, "body": body},
        "error": None,
        "seqsched": {
            "predicted_len": request.predicted_len,
            "length": result.length,
            "num_runs": result.num_runs,
        },
    }


def error_line(custom_id: str, message: str, code: str = INVALID_REQUEST) -> dict[str, Any]:
    return {
        "id": f"batch_req_{_digest(custom_id)}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def is_answered(line: dict[str, Any]) -> bool:
    """A line that holds a successful answer (resume keeps these)."""
    response = line.get("response")
    return line.get("error") is None and isinstance(response, dict) and response.get("status_code") == 200


def read_answered(path: str | Path) -> dict[str, dict[str, Any]]:
    """custom_id -> line, for the successful lines of a previous output file.

    Unreadable lines (a torn last line after a crash) are skipped: they are re-run."""
    answered: dict[str, dict[str, Any]] = {}
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str) and is_answered(line):
            answered.setdefault(line["custom_id"], line)
    return answered


def write_jsonl(path: str | Path, lines: list[dict[str, Any]]) -> None:
    """Write atomically: a crash mid-write leaves the old file, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:24]
