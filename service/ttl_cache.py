"""A small per-process cache whose entries expire: API keys and action names, read per request."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """Values kept ``seconds`` after they were computed; never more than ``max_entries``.

    ``None`` (not found) is never cached, so lookups of random strings cannot fill memory and
    something created elsewhere is seen at once. Safe across threads (dict operations are atomic;
    two threads missing at once both compute, which is harmless).
    """

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable, compute: Callable[[], V | None]) -> V | None:
        value = self.peek(key)
        if value is not None:
            return value
        value = compute()
        if value is not None:
            self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.seconds, value)

    def peek(self, key: Hashable) -> V | None:
        """The live cached value, or None; never computes."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def clear(self) -> None:
        self._entries.clear()
