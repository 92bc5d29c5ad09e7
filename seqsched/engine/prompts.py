"""Prompts to token ids, and generated ids to a request's own tokens: shared by every
engine that runs a real model, so HF ``generate``, transformers' continuous batching and
vLLM see the same prompt tokens and cut outputs the same way. No torch here."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from seqsched.request import Request

TEMPLATE_SECONDS = 10.0  # the longest a chat template may take to render one request
TEMPLATE_TIMEOUTS = 3  # after this many, the rest of a job's requests are refused at once


class TemplateTimeout(Exception):
    """A chat template that took too long to render (a template is a program: a nested
    ``range(100000)`` loop would run for hours)."""


def encode(tokenizer: Any, request: Request, chat_template: bool) -> list[int]:
    """The request's prompt tokens: in the tokenizer's chat template when asked and the
    tokenizer has one (a ``prompt`` becomes a single user message), else as plain text.
    The template gets ``TEMPLATE_SECONDS`` to render (in the main thread, where a job runs)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = request.messages if request.messages is not None else [{"role": "user", "content": request.text}]
        with time_limit(TEMPLATE_SECONDS):
            encoded: Any = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        return list(encoded["input_ids"])
    text = request.prompt if request.prompt is not None else request.text
    return list(tokenizer(text)["input_ids"])


def tokenize_all(tokenizer: Any, requests: Iterable[Request], chat_template: bool, max_context: int | None) -> None:
    """Tokenize each unfinished request and fail the ones that are empty or do not fit
    the context with their ``max_new_tokens``; one bad request never stops the others.
    A long prompt that cannot fit whatever its tokens is refused before it is tokenized
    (a 1 MiB prompt would cost seconds and a gigabyte to count); a shorter one is counted
    exactly, for the exact message."""
    longest = longest_token_chars(tokenizer) if max_context is not None else None
    timeouts = 0
    for r in requests:
        if r.status.is_finished:
            continue
        if timeouts >= TEMPLATE_TIMEOUTS:
            r.fail(f"not tokenized: the chat template took over {TEMPLATE_SECONDS:g} s on {timeouts} requests already")
            continue
        chars = prompt_chars(r) if r.prompt_token_ids is None else 0
        if chars > CHEAP_BOUND_CHARS and longest is not None and max_context is not None:
            at_least = -(-chars // longest)
            if at_least + r.max_new_tokens > max_context:
                r.fail(
                    f"prompt of {chars:,} characters has at least {at_least:,} tokens; with "
                    f"max_new_tokens {r.max_new_tokens} it exceeds the model's context of {max_context}"
                )
                continue
        if r.prompt_token_ids is None:
            try:
                r.prompt_token_ids = encode(tokenizer, r, chat_template)
            except Exception as e:  # a broken template or message must not stop the others
                timeouts += isinstance(e, TemplateTimeout)
                r.fail(f"cannot tokenize the prompt: {type(e).__name__}: {e}")
                continue
        error = check_fits(r, max_context)
        if error is not None:
            r.fail(error)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TemplateTimeout` in the main thread after ``seconds`` (SIGALRM; a
    template renders in Python, so the alarm lands between its steps). Elsewhere: no limit."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise TemplateTimeout(f"the chat template took over {seconds:g} s to render")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


CHEAP_BOUND_CHARS = 65_536  # above this, the bound is tried first (tokenizing costs ~0.1 s)


def prompt_chars(request: Request) -> int:
    if request.messages is not None:
        return sum(len(m["content"]) for m in request.messages)
    return len(request.prompt if request.prompt is not None else request.text)


def longest_token_chars(tokenizer: Any) -> int | None:
    """The most characters one vocabulary entry stands for, so a text of ``c`` characters
    has at least ``ceil(c / longest)`` tokens. A vocabulary entry is spelled with at least
    one character per character it decodes to (byte-level entries spell each byte with
    one; ``<0x0A>``-style byte tokens spell one character with six), so its spelled length
    bounds it. None when the tokenizer has no vocabulary to read."""
    try:
        vocabulary = tokenizer.get_vocab()
    except Exception:  # a tokenizer without one: no bound, tokenize everything
        return None
    longest = max((len(t) for t in vocabulary), default=0)
    return longest if longest >= 1 else None


def check_fits(request: Request, max_context: int | None) -> str | None:
    n = request.num_prompt_tokens
    if n == 0:
        return "prompt has 0 tokens"
    if max_context is not None and n + request.max_new_tokens > max_context:
        return (
            f"prompt has {n} tokens; with max_new_tokens {request.max_new_tokens} it exceeds "
            f"the model's context of {max_context}"
        )
    return None


def cut(generated: Sequence[int], limit: int, eos_token_ids: Iterable[int]) -> tuple[list[int], bool]:
    """A row's own tokens: up to its limit, and up to and including its first EOS."""
    tokens = list(generated[:limit])
    eos = set(eos_token_ids)
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1], True
    return tokens, False


def eos_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """EOS ids from a generation config (a checkpoint's own), else the tokenizer's."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def stop_at(tokens: Sequence[int], stop: Sequence[str], decode: Callable[[Sequence[int]], str]) -> int | None:
    """The length of the shortest prefix of ``tokens`` whose text holds one of the ``stop``
    strings, or None: a response ends with the token that completes a stop string."""
    if not stop or not any(s in decode(tokens) for s in stop):
        return None
    low, high = 1, len(tokens)
    while low < high:  # "some stop string occurs in the prefix" only turns on as the prefix grows
        mid = (low + high) // 2
        if any(s in decode(tokens[:mid]) for s in stop):
            high = mid
        else:
            low = mid + 1
    return low


def text_before_stop(text: str, stop: Sequence[str]) -> str:
    """The response text up to the first stop string, which the OpenAI API leaves out."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
