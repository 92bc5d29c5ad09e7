"""KV-aware admission at the front door: a request goes to an upstream only if, with it,
the predicted KV usage of what runs there fits that upstream's cache at every future step
(``stream.KVAdmission``, the job path's rule, one per upstream). No torch, no I/O.

NOTE on why. On a full KV cache, forwarding by slot count is not enough: vLLM admits what
fits now, then preempts (and recomputes) the lowest-priority request when running ones
grow, and the rest of what the door forwarded waits in vLLM's own queue, in vLLM's order,
not the door's. Holding back at the door what would not fit keeps the waiting requests in
the door's queue, in its order (with its aging), and spares the recomputation.

Each request is charged its prompt plus ``margin`` x its predicted output; the first on an
empty upstream always goes (an empty engine must make progress). A request's growth is
known when the caller reports progress; without it, running requests are taken to be at
their start, which over-reserves (a request ends sooner than the rule thinks), never under.
"""

from __future__ import annotations

import math

from seqsched.schedule.stream import KVAdmission


class DoorKV:
    def __init__(self, num_upstreams: int, blocks: int, block_size: int, margin: float = 1.0) -> None:
        if blocks < 1 or block_size < 1:
            raise ValueError(f"KV admission needs blocks >= 1 and block_size >= 1, got {blocks} and {block_size}")
        self.margin = margin
        self.caches = [KVAdmission(blocks * block_size, {}, {}, block_size) for _ in range(num_upstreams)]
        self._where: dict[int, int] = {}  # lease -> upstream
        self._prompt: dict[int, int] = {}  # lease -> prompt tokens (for growth)

    def fits(self, upstream: int, prompt_tokens: int, predicted_len: int, generated: int = 0) -> bool:
        """Whether a request of this size may go to ``upstream`` now."""
        cache = self.caches[upstream]
        if not cache.held:
            return True
        probe = -1  # a key no lease has
        cache.prompt[probe] = prompt_tokens + generated
        cache.final[probe] = prompt_tokens + math.ceil(self.margin * max(predicted_len, generated + 1))
        try:
            return cache.peak(probe) <= cache.capacity
        finally:
            del cache.prompt[probe], cache.final[probe]

    def admit(self, upstream: int, lease: int, prompt_tokens: int, predicted_len: int, generated: int = 0) -> None:
        cache = self.caches[upstream]
        cache.prompt[lease] = prompt_tokens + generated
        cache.final[lease] = prompt_tokens + math.ceil(self.margin * max(predicted_len, generated + 1))
        cache.held[lease] = prompt_tokens + generated
        self._where[lease] = upstream
        self._prompt[lease] = prompt_tokens

    def grow(self, lease: int, generated: int) -> None:
        upstream = self._where.get(lease)
        if upstream is not None:
            self.caches[upstream].grow(lease, self._prompt[lease] + generated)

    def release(self, lease: int) -> None:
        upstream = self._where.pop(lease, None)
        if upstream is not None:
            cache = self.caches[upstream]
            cache.release(lease)
            cache.prompt.pop(lease, None)
            cache.final.pop(lease, None)
            self._prompt.pop(lease, None)

    def used(self, upstream: int) -> int:
        return self.caches[upstream].used
