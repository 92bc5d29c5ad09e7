"""OpenAI request bodies as the server needs them, and errors in OpenAI's shape.

The server reads only what it schedules by (the prompt's text, ``max_tokens``,
``stream``) and checks only what it must; every other field goes upstream untouched, and
the upstream answers for it, as a proxy should.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Endpoint = Literal["chat", "completions"]


class ApiError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.status)


def error_body(message: str, kind: str, param: str | None = None, code: int | str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class ParsedRequest:
    body: dict[str, Any]
    text: str  # what the predictor reads: the prompt, or the messages' text joined
    max_tokens: int | None
    stream: bool
    include_usage: bool  # the client asked for the usage chunk of a stream
    encoded: bytes = b"{}"  # the body as sent upstream (compact JSON, UTF-8), without ``priority``

    def with_priority(self, priority: int) -> bytes:
        """The body with vLLM's ``priority`` first (seqsched's; a client's own was dropped)."""
        head = b'{"priority":%d' % priority
        return head + b"}" if self.encoded == b"{}" else head + b"," + self.encoded[1:]


def parse_body(raw: bytes, endpoint: Endpoint, max_tokens_limit: int | None = None) -> ParsedRequest:
    """Parse and check a request body; an ApiError names the field and its value. A body
    that parses but that JSON cannot carry on (NaN, Infinity, a number out of range, a
    lone surrogate) is refused here, not turned into a server error later."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be valid input") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        if "integer string conversion" in str(e):
            raise ApiError(
                400, "the request body holds an integer too long to be valid input (over 4300 digits)"
            ) from None
        raise ApiError(400, f"the request body is not valid JSON: {_short(e)}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    body.pop("priority", None)  # seqsched sends its own (``with_priority``)
    encoded = encode_body(body)
    text = _chat_text(body) if endpoint == "chat" else _prompt_text(body)
    max_tokens = _max_tokens(body, endpoint, max_tokens_limit)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {json.dumps(stream)}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, f"'stream_options' must be an object, got {json.dumps(options)}", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    return ParsedRequest(body, text, max_tokens, stream, include_usage, encoded)


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, or a 400 naming what cannot be encoded."""
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be valid input") from None
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end] if isinstance(e.object, str) else ""
        shown = "".join(f"\\u{ord(c):04x}" for c in bad)
        raise ApiError(
            400, f"the request body holds text that is not valid Unicode ({shown}: a lone surrogate)"
        ) from None
    except ValueError as e:
        raise ApiError(
            400, f"the request body holds a number JSON cannot carry (NaN, Infinity or out of range): {e}"
        ) from None


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:200] + "..."


def _chat_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' must be a non-empty list, got {json.dumps(messages)[:80]}", "messages")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a 'role' string", f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content parts: the text ones are what a predictor reads
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        elif content is not None:
            raise ApiError(400, f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
    return "\n".join(parts)


def _prompt_text(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        got = json.dumps(prompt)[:80]
        message = f"'prompt' must be one string (seqsched schedules one prompt a request), got {got}"
        raise ApiError(400, message, "prompt")
    return prompt


def _max_tokens(body: dict[str, Any], endpoint: Endpoint, limit: int | None) -> int | None:
    key = "max_completion_tokens" if endpoint == "chat" and "max_completion_tokens" in body else "max_tokens"
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, f"'{key}' must be an integer >= 1, got {json.dumps(value)}", key)
    if limit is not None and value > limit:
        raise ApiError(400, f"'{key}' ({value}) is over this server's limit ({limit})", key)
    return value
