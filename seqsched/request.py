"""The one request type every layer shares, and the outcome of running it.

Counting convention, used everywhere: a request's ``num_output_tokens`` counts every
token it generated, the end-of-sequence token included. A response of ``n`` tokens
that ends on EOS therefore takes exactly ``n`` decode steps, and a length trace's
``L`` is the number of decode steps that request needs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestStatus(enum.IntEnum):
    """Ordered so that ``status >= FINISHED_STOPPED`` means finished."""

    WAITING = 0
    RUNNING = 1
    FINISHED_STOPPED = 2  # ended on its own EOS
    FINISHED_LENGTH = 3  # cut at its max_new_tokens
    FINISHED_ERROR = 4  # could not run (bad prompt, over the context, ...)

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED


# Temperatures below this are greedy, as in vLLM (its _SAMPLING_EPS): dividing logits by a
# tiny temperature overflows to inf, and a float32 1e-300 is 0.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


GREEDY = SamplingParams()


@dataclass(slots=True)
class Request:
    """One generation request. ``index`` is its position in the input. Slotted: a job of a
    million holds a million of these."""

    index: int
    request_id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int = 512
    sampling: SamplingParams = GREEDY  # frozen, so one instance serves every greedy request
    prompt_token_ids: list[int] | None = None
    num_prompt_tokens_hint: int | None = None  # for engines that never tokenize
    predicted_len: int | None = None
    target_len: int | None = None  # replay and simulate: the output length to force
    # Tokens already generated and kept (an FCR failure under ``fcr_mode="resume"``):
    # the next run continues after prompt + prefix instead of starting over.
    output_prefix: tuple[int, ...] = ()
    # Strings that end the response (not included in its text), as in the OpenAI API.
    stop: tuple[str, ...] = ()
    # A hash of the request as given (its input line): resume reuses an answer only for
    # the same request.
    fingerprint: str | None = None
    status: RequestStatus = RequestStatus.WAITING
    error: str | None = None
    model: str | None = None  # the model name the request gave (its answer echoes it)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"request {self.request_id!r}: give exactly one of prompt or messages")
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.request_id!r}: max_new_tokens ({self.max_new_tokens}) must be >= 1")

    @property
    def text(self) -> str:
        """The user-visible text, for predictors that read prompts."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return "\n".join(m.get("content", "") for m in self.messages)

    @property
    def num_prompt_tokens(self) -> int:
        if self.prompt_token_ids is not None:
            return len(self.prompt_token_ids)
        if self.num_prompt_tokens_hint is not None:
            return self.num_prompt_tokens_hint
        return max(1, len(self.text) // 4)

    @property
    def remaining_tokens(self) -> int:
        """How many tokens this request may still generate: its limit less the kept prefix."""
        return self.max_new_tokens - len(self.output_prefix)

    def fail(self, message: str) -> None:
        self.status = RequestStatus.FINISHED_ERROR
        self.error = message


@dataclass(slots=True)
class Outcome:
    """What one run of a request in a micro-batch produced.

    ``num_steps`` is the number of decode steps the request's micro-batch ran: its
    padding included. That is the paper's per-request *length*.
    """

    index: int
    token_ids: list[int]
    finished: bool  # ended on EOS
    num_steps: int
    scheduled_at: float = 0.0
    completed_at: float = 0.0

    def __post_init__(self) -> None:
        assert 0 <= len(self.token_ids) <= self.num_steps or self.num_steps == 0, (
            f"request {self.index}: {len(self.token_ids)} tokens in {self.num_steps} steps"
        )

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(slots=True)
class Result:
    """The final answer for one request, after any FCR re-runs."""

    request: Request
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    length: int = 0  # decode steps over all its runs, padding and discarded runs included
    num_runs: int = 0
    num_wasted_steps: int = 0  # steps of runs that were thrown away (FCR failures)
    arrived_at: float = 0.0
    scheduled_at: float = 0.0
    completed_at: float = 0.0

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def status(self) -> RequestStatus:
        return self.request.status

    @property
    def latency(self) -> float:
        return self.completed_at - self.arrived_at
