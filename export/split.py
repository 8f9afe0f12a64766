"""Train/val/test assignment while streaming: stratified by label, grouped by a key, deterministic.

Each record goes to the split furthest below its target share within its stratum (its label),
so every class is spread 8:1:1 without holding the data in memory. A group (user, source,
near-duplicate cluster) is assigned once, at its first record, and all later records follow it,
so nothing leaks across splits. The seed breaks ties, so a different seed gives a different but
equally balanced split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

SPLITS = ("train", "val", "test")


class Splitter:
    def __init__(self, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> None:
        total = sum(ratios)
        if total <= 0 or any(r < 0 for r in ratios):
            raise ValueError(f"bad split ratios {ratios}")
        self.ratios = tuple(r / total for r in ratios)
        self.seed = seed
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.groups: dict[str, str] = {}

    def _tiebreak(self, key: str) -> list[float]:
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        return [digest[i] / 255.0 * 1e-6 for i in range(3)]

    def assign(self, stratum: str, group: str | None = None, key: str = "") -> str:
        if group is not None and group in self.groups:
            split = self.groups[group]
        else:
            counts = self.counts[stratum]
            n = sum(counts) + 1
            jitter = self._tiebreak(key or group or str(n))
            deficits = [self.ratios[i] * n - counts[i] + jitter[i] for i in range(3)]
            split = SPLITS[max(range(3), key=deficits.__getitem__)]
            if group is not None:
                self.groups[group] = split
        self.counts[stratum][SPLITS.index(split)] += 1
        return split
