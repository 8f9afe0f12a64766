"""Bounded memory for things keyed by what callers send: an LRU map and a "first time?" set.

Everything a long-running process remembers per config, project, host or tag name must have a
ceiling, or a stream of distinct inputs grows it until the process is killed. Both classes are
thread-safe: the server builds contexts in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A map that keeps at most ``maxsize`` entries, dropping the least recently used one.

    With ``max_weight`` and ``weigh`` (an entry's size in bytes, say), it also keeps the entries'
    total weight under ``max_weight``: a count alone bounds nothing when one entry may be 20 MB.
    """

    def __init__(self, maxsize: int, max_weight: int | None = None, weigh: Callable[[V], int] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        if (max_weight is None) != (weigh is None):
            raise ValueError("max_weight and weigh go together")
        self.maxsize = maxsize
        self.max_weight = max_weight
        self._weigh = weigh
        self._weights: dict[K, int] = {}
        self.weight = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if self._weigh is not None:
                self.weight += self._weigh(value) - self._weights.get(key, 0)
                self._weights[key] = self._weigh(value)
            while self._items and (len(self._items) > self.maxsize
                                   or (self.max_weight is not None and self.weight > self.max_weight)):
                dropped, _ = self._items.popitem(last=False)
                self.weight -= self._weights.pop(dropped, 0)

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """The cached value, or ``build()`` stored under ``key`` (built outside the lock)."""
        value = self.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def values(self) -> list[V]:
        with self._lock:
            return list(self._items.values())


class Once:
    """``first(key)`` is True the first time a key is seen (among the last ``maxsize`` keys).

    For "log this once" where the keys come from requests: an attacker sending a new key each
    time gets a bounded set, and at worst a repeated log line, never unbounded growth.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._seen: LRU[Hashable, bool] = LRU(maxsize)

    def first(self, key: Hashable) -> bool:
        if key in self._seen:
            self._seen.get(key)  # refresh its place
            return False
        self._seen.put(key, True)
        return True
