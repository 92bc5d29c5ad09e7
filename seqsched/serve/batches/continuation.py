"""A batch request that may be stopped and continued: what it has so far, the body of its
next call, and its answer once it finishes.

NOTE on continuing exactly. Every call streams with ``return_token_ids`` (vLLM sends the
prompt's token ids in its first chunk, and each token's id as it comes). When the front
door stops a request, the ids received so far are kept; the next call goes to
``/v1/completions`` with the prompt *and those ids* as a prompt of token ids, asking only
for the tokens left. Greedy decoding is a function of the token sequence, so the
continuation produces the tokens the uninterrupted request would have (vLLM's prefix cache
usually still holds the blocks, so little is recomputed). The last chunk received is made
again rather than kept: it may hold the end-of-sequence token whose finish chunk never came,
and a prompt that ends with it would let the model run on. The answer's text is the pieces
of every call joined: vLLM detokenizes a continuation with the prompt's last tokens as
context, so the seam does not split a word (``tests/test_batches_vllm.py`` checks text
and ids against uninterrupted runs). Requests that ask for anything that depends on how
the output was produced (``stop`` strings, whose text vLLM holds back; output penalties,
logprobs, ``n`` > 1, grammars) are never stopped (``lines.CONTINUABLE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from seqsched.serve.protocol import Endpoint

# The sampling fields a continuation carries over (the rest describe the prompt).
_CARRIED = ("model", "temperature", "top_p", "top_k", "min_p", "seed", "stop_token_ids", "ignore_eos",
            "repetition_penalty", "skip_special_tokens", "spaces_between_special_tokens", "logit_bias",
            "user")  # fmt: skip


@dataclass
class Progress:
    """What one batch request has, across its calls."""

    prompt_token_ids: list[int] | None = None
    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    pieces: list[int] = field(default_factory=list)  # ids per text piece, chunk by chunk
    finish_reason: str | None = None
    stop_reason: Any = None
    meta: dict[str, Any] = field(default_factory=dict)  # the first chunk's id, created, model
    usage: dict[str, Any] = field(default_factory=dict)  # the last call's usage chunk
    num_calls: int = 0
    num_recomputed: int = 0  # tokens sent again as a prompt to continue

    @property
    def continued(self) -> bool:
        return self.num_calls > 1 and bool(self.token_ids)

    def forget(self) -> None:
        """Start over (a call that ended with nothing to continue from)."""
        self.prompt_token_ids, self.token_ids, self.text, self.pieces = None, [], [], []

    def drop_last_chunk(self) -> None:
        """Forget the last chunk that carried ids (and its text): it is made again."""
        while self.pieces and self.pieces[-1] == 0:
            self.pieces.pop()
            self.text.pop()
        if self.pieces:
            count = self.pieces.pop()
            self.text.pop()
            del self.token_ids[len(self.token_ids) - count :]


def next_call(original: dict[str, Any], endpoint: Endpoint, progress: Progress) -> tuple[str, dict[str, Any]]:
    """The path and body of the request's next call: the original, streamed with token ids,
    or a continuation from the ids it has."""
    progress.drop_last_chunk()
    if progress.prompt_token_ids is None or not progress.token_ids:
        progress.forget()
        body = {**original, "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    else:
        progress.num_recomputed += len(progress.prompt_token_ids) + len(progress.token_ids)
        body = {k: original[k] for k in _CARRIED if k in original}
        body.update(prompt=progress.prompt_token_ids + progress.token_ids, stream=True, return_token_ids=True,
                    stream_options={"include_usage": True})  # fmt: skip
        limit = original.get("max_completion_tokens", original.get("max_tokens"))
        if isinstance(limit, int):
            body["max_tokens"] = limit - len(progress.token_ids)
        if isinstance(original.get("min_tokens"), int):
            body["min_tokens"] = max(0, original["min_tokens"] - len(progress.token_ids))
        path = "/v1/completions"
    body.pop("priority", None)
    progress.num_calls += 1
    return path, body


def encode(body: dict[str, Any], priority: int | None = None) -> bytes:
    """Compact UTF-8 JSON, with vLLM's ``priority`` when given."""
    if priority is not None:
        body = {"priority": priority, **body}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Malformed(ValueError):
    """An upstream event that is not a chunk of the endpoint's stream."""


def absorb(progress: Progress, data: bytes) -> bytes:
    """Take in a call's streamed events; return the bytes of an event not yet complete.
    The first event that is not a chunk raises :class:`Malformed`; those before it are kept
    (each is checked whole before it changes ``progress``)."""
    *events, rest = data.split(b"\n\n")
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                _chunk(progress, _checked(line[6:]))
    return rest


def _checked(raw: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(raw)
    except ValueError:
        raise Malformed(f"not JSON: {raw[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise Malformed(f"not a JSON object: {raw[:80]!r}")
    choices = chunk.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, dict) for c in choices)):
        raise Malformed(f"'choices' is not a list of objects: {raw[:80]!r}")
    for choice in choices or []:
        if not _ids(choice.get("token_ids"), optional=True) or not _ids(choice.get("prompt_token_ids"), optional=True):
            raise Malformed(f"token ids that are not a list of integers: {raw[:80]!r}")
        delta = choice.get("delta")
        piece = choice.get("text") if "text" in choice else (delta or {}).get("content") if isinstance(delta, dict) \
            else delta  # fmt: skip
        if piece is not None and not isinstance(piece, str):
            raise Malformed(f"text that is not a string: {raw[:80]!r}")
    if not _ids(chunk.get("prompt_token_ids"), optional=True):
        raise Malformed(f"prompt token ids that are not a list of integers: {raw[:80]!r}")
    return chunk


def _ids(value: Any, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


def _chunk(progress: Progress, chunk: dict[str, Any]) -> None:
    if isinstance(chunk.get("usage"), dict):
        progress.usage = chunk["usage"]
    if not progress.meta:
        progress.meta = {k: chunk.get(k) for k in ("id", "created", "model")}
    if progress.prompt_token_ids is None and isinstance(chunk.get("prompt_token_ids"), list):
        progress.prompt_token_ids = list(chunk["prompt_token_ids"])  # a chat's first chunk
    for choice in chunk.get("choices") or []:
        if progress.prompt_token_ids is None and isinstance(choice.get("prompt_token_ids"), list):
            progress.prompt_token_ids = list(choice["prompt_token_ids"])  # a completion's first chunk
        ids = choice.get("token_ids") or []
        progress.token_ids.extend(ids)
        delta = choice.get("delta")
        piece = choice.get("text") if "text" in choice else delta.get("content") if isinstance(delta, dict) else None
        progress.text.append(piece if isinstance(piece, str) else "")
        progress.pieces.append(len(ids))
        if choice.get("finish_reason") is not None:
            progress.finish_reason = choice["finish_reason"]
            progress.stop_reason = choice.get("stop_reason")


def answer(progress: Progress, endpoint: Endpoint, original: dict[str, Any]) -> dict[str, Any]:
    """The finished request's body, as the endpoint answers when not streamed."""
    content = "".join(progress.text)
    choice: dict[str, Any] = {"index": 0}
    if endpoint == "chat":
        choice["message"] = {"role": "assistant", "content": content}
    else:
        choice["text"] = content
    choice.update(logprobs=None, finish_reason=progress.finish_reason, stop_reason=progress.stop_reason)
    body: dict[str, Any] = {
        "id": progress.meta.get("id"),
        "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "created": progress.meta.get("created"),
        "model": progress.meta.get("model") or original.get("model"),
        "choices": [choice],
    }
    if progress.prompt_token_ids is not None:  # vLLM gave ids: count them
        prompt, completion = len(progress.prompt_token_ids), len(progress.token_ids)
    else:  # an upstream that does not send ids: its own count (it was never continued)
        prompt = _int(progress.usage.get("prompt_tokens"))
        completion = _int(progress.usage.get("completion_tokens"))
    body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if original.get("return_token_ids"):
        choice["token_ids"] = list(progress.token_ids)
        body["prompt_token_ids"] = progress.prompt_token_ids
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
