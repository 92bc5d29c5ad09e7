"""What each replica's prefix cache probably holds: the prompts routed to it, as chains of
block hashes, so a router can send a request where its prefix was sent before. No torch,
no I/O.

NOTE on blocks. A prompt is cut into blocks of ``BLOCK_CHARS`` characters; block ``i``'s
key hashes block ``i`` with the key of block ``i - 1``, so equal keys mean equal prefixes up
to there (as vLLM's prefix cache hashes its KV blocks). The router cannot see the
replica's tokens, so characters stand in for them, as Ray Serve's
``PrefixCacheAffinityRouter`` and SGLang's router do. Each replica's index forgets its least
recently routed blocks past ``capacity`` (its cache evicts too). At most ``MAX_CHARS`` of a
prompt are hashed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

BLOCK_CHARS = 64
MAX_CHARS = 16_384  # of a prompt, the most that is hashed (a megabyte prompt costs no more)
Blocks = tuple[int, ...]


def prefix_blocks(text: str, block_chars: int = BLOCK_CHARS) -> Blocks:
    """The chained keys of ``text``'s whole blocks (a last partial block is not cached)."""
    keys, previous = [], b""
    text = text[:MAX_CHARS]
    for start in range(0, len(text) - block_chars + 1, block_chars):
        digest = hashlib.blake2b(previous + text[start : start + block_chars].encode("utf-8", "surrogatepass"),
                                 digest_size=8).digest()  # fmt: skip
        keys.append(int.from_bytes(digest, "little"))
        previous = digest
    return tuple(keys)


class PrefixIndex:
    """One replica's routed prefixes, least recently used first out."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, blocks: Blocks) -> int:
        """How many leading blocks of ``blocks`` were routed here (and are still held)."""
        n = 0
        for key in blocks:
            if key not in self._keys:
                break
            n += 1
        return n

    def insert(self, blocks: Blocks) -> None:
        for key in blocks:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def clear(self) -> None:
        """The replica restarted: its cache is empty."""
        self._keys.clear()
