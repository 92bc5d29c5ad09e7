"""Result files out, in the OpenAI Batch output shape; reading request files is in
``batch_input.py`` (re-exported here)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from seqsched.data.atomic import atomic_file
from seqsched.data.batch_input import DEFAULT_MAX_LINE_BYTES, InputError, read_requests
from seqsched.request import RequestStatus, Result

__all__ = ["DEFAULT_MAX_LINE_BYTES", "InputError", "read_requests"]

INVALID_REQUEST = "invalid_request"
REQUEST_FAILED = "request_failed"


# --- output ---------------------------------------------------------------------------


def result_line(result: Result, model: str) -> dict[str, Any]:
    """One OpenAI Batch output line for a request that ran (or failed in the engine), in
    the shape vLLM's ``BatchRequestOutput`` validates (a test checks it). Its ids are
    digests of the ``custom_id``, not random, so a resumed job's output is byte-identical
    to an uninterrupted one's (with ``SOURCE_DATE_EPOCH`` fixing ``created``)."""
    request = result.request
    if request.status == RequestStatus.FINISHED_ERROR:
        return error_line(request.request_id, request.error or "request failed", REQUEST_FAILED)
    assert request.status.is_finished, f"request {request.request_id!r} has not finished"
    chat = request.messages is not None
    reason = "stop" if request.status == RequestStatus.FINISHED_STOPPED else "length"
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    choice.update(logprobs=None, finish_reason=reason)  # as OpenAI and vLLM send it: null when not asked
    usage = {
        "prompt_tokens": request.num_prompt_tokens,
        "completion_tokens": result.num_output_tokens,
        "total_tokens": request.num_prompt_tokens + result.num_output_tokens,
    }
    body = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{_digest(request.request_id)}",
        "object": "chat.completion" if chat else "text_completion",
        "created": _created(),
        "model": request.model or model,
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": None,
    }
    return {
        "id": f"batch_req_{_digest(request.request_id)}",
        "custom_id": request.request_id,
        "response": {"status_code": 200, "request_id": f"seqsched-{_digest(request.request_id)}", "body": body},
        "error": None,
        "seqsched": {
            "predicted_len": request.predicted_len,
            "length": result.length,
            "num_runs": result.num_runs,
        },
    }


def _created() -> int:
    """Now, or ``SOURCE_DATE_EPOCH`` when set (reproducible outputs, as for builds)."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(fixed) if fixed.isdigit() else int(time.time())


def error_line(custom_id: str | None, message: str, code: str = INVALID_REQUEST) -> dict[str, Any]:
    return {
        "id": f"batch_req_{_digest(custom_id if custom_id is not None else message)}",
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


def dumps_line(line: dict[str, Any]) -> str:
    """One JSONL line: UTF-8 text as is, but the characters that ``str.splitlines`` (and
    some JSON readers) take for line ends escaped, so every consumer sees one line."""
    text = json.dumps(line, ensure_ascii=False)
    for char in _LINE_BREAKS:
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text + "\n"


_LINE_BREAKS = ("\u0085", "\u2028", "\u2029", "\x1c", "\x1d", "\x1e")


def write_jsonl(path: str | Path, lines: list[dict[str, Any]], mode: int = 0o666) -> None:
    """Write atomically: a crash mid-write leaves the old file, never a torn one. ``mode``
    is the new file's permissions (less the umask): a job passes its input's."""
    _write_atomic(Path(path), "".join(dumps_line(line) for line in lines), mode)


def write_json(path: str | Path, obj: dict[str, Any], mode: int = 0o666) -> None:
    _write_atomic(Path(path), json.dumps(obj, indent=2, ensure_ascii=False) + "\n", mode)


def _write_atomic(path: Path, text: str, mode: int = 0o666) -> None:
    with atomic_file(path, mode) as f:
        f.write(text.encode("utf-8"))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:24]
