"""The server's length prediction: a saved predictor read once, then prompts predicted in
batches off the event loop.

NOTE on why batches. The shipped proxy costs about 0.25 ms a prompt inside a batch and
0.6 ms alone (other predictors cost more): predicted one at a time on the event loop, a
burst of 300 arrivals would hold every stream for a fifth of a second. So arrivals are
predicted together, whatever is waiting when the last batch ends, in a worker thread,
while the loop keeps relaying streams. BLAS is held to one thread in this process (the
products are small, and the engine beside it needs the cores).

NOTE on cost per request. A predictor reads at most ``PREDICT_CHARS`` of a prompt: its
start, where the instruction usually is, and its end, where a chat's last turn is. So one
client's megabyte prompt costs what a long ordinary one does, and cannot hold up the
predictions of the requests batched with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from seqsched.build import DEFAULT_PROXY, load_saved_predictor
from seqsched.request import Request

PredictFn = Callable[[str, int | None], int]  # (prompt text, max_tokens) -> predicted output tokens
UNBOUNDED = 1 << 20  # a request without max_tokens: the prediction is not clamped
PREDICT_CHARS = 8192  # of a prompt, the most a prediction reads (half from each end)


def bounded(text: str, limit: int = PREDICT_CHARS) -> str:
    """``text``, or its first and last ``limit // 2`` characters when it is longer."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n" + text[-half:]


Item = tuple[str, int | None]  # (prompt text, max_tokens)


class BatchPredict:
    """``predict(text, max_tokens)`` for one prompt; ``many(items)`` for a batch."""

    def __init__(self, path: Path | None = None) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)  # once, for the process: a context per call costs ~2.5 ms
        self.predictor = load_saved_predictor(path if path is not None else DEFAULT_PROXY)

    def __call__(self, text: str, max_tokens: int | None) -> int:
        return self.many([(text, max_tokens)])[0]

    def many(self, items: Sequence[Item]) -> list[int]:
        limits = [m if m is not None else UNBOUNDED for _, m in items]
        pairs = zip(items, limits, strict=True)
        requests = [Request(i, "served", prompt=text, max_new_tokens=n) for i, ((text, _), n) in enumerate(pairs)]
        return [max(1, min(n, int(p))) for p, n in zip(self.predictor.predict_requests(requests), limits, strict=True)]


def load_predict(path: Path | None = None) -> BatchPredict:
    """The shipped text proxy, or the saved predictor at ``path``."""
    return BatchPredict(path)


class Batcher:
    """Predictions for the event loop: whatever waits is predicted in one call, in a thread."""

    def __init__(self, predict: PredictFn) -> None:
        many = getattr(predict, "many", None)
        self._many: Callable[[Sequence[Item]], list[int]] = many or (lambda items: [predict(t, m) for t, m in items])
        self._pending: list[tuple[str, int | None, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def predict(self, text: str, max_tokens: int | None) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((bounded(text), max_tokens, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def predict_many(self, items: Sequence[Item], chunk: int = 256) -> list[int]:
        """A batch file's lines, ``chunk`` at a time in a thread, so that interactive
        arrivals are predicted in between rather than after all of them."""
        out: list[int] = []
        for start in range(0, len(items), chunk):
            part = [(bounded(text), m) for text, m in items[start : start + chunk]]
            out += await asyncio.to_thread(self._many, part)
        return out

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                values = await asyncio.to_thread(self._many, [(t, m) for t, m, _ in batch])
            except Exception as e:  # every request of the batch gets the error
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, _, future), value in zip(batch, values, strict=True):
                if not future.done():
                    future.set_result(value)
