"""Train/val/test assignment while streaming: stratified by label, shuffled by a seed, grouped.

Within each stratum (a label), records are taken in blocks of ``block`` (10 for 8:1:1) and each
block's slots (8 train, 1 val, 1 test) are shuffled by a generator seeded with ``(seed, stratum,
block number)``. So every class is spread 8:1:1 exactly per block without holding data in memory,
different seeds give different splits, and which arrival position lands in val or test is random
(no "every 10th task" pattern that arrival order, e.g. labeling order, could bias). A group (user,
source, near-duplicate cluster) is assigned once, at its first record, and all later records
follow it, so nothing leaks across splits.
"""

from __future__ import annotations

import random
from collections import defaultdict
from fractions import Fraction

SPLITS = ("train", "val", "test")
MAX_BLOCK = 100


def _slots(ratios: tuple[float, ...]) -> list[int]:
    """The split index of each slot of one block: the smallest block the ratios fill exactly
    (10 for 8:1:1, 20 for 0.9/0.05/0.05), else 100 slots by largest remainder."""
    for size in range(1, MAX_BLOCK + 1):
        counts = [r * size for r in ratios]
        if all(abs(c - round(c)) < 1e-9 for c in counts):
            whole = [round(c) for c in counts]
            break
    else:
        size = MAX_BLOCK
        exact = [Fraction(r).limit_denominator(10**6) * size for r in ratios]
        whole = [int(c) for c in exact]
        for i in sorted(range(len(ratios)), key=lambda i: exact[i] - whole[i], reverse=True)[: size - sum(whole)]:
            whole[i] += 1
    return [index for index, count in enumerate(whole) for _ in range(count)]


class Splitter:
    def __init__(self, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> None:
        total = sum(ratios)
        if total <= 0 or any(r < 0 for r in ratios) or len(ratios) != len(SPLITS):
            raise ValueError(f"bad split ratios {ratios}")
        self.ratios = tuple(r / total for r in ratios)
        self.seed = seed
        self.slots = _slots(self.ratios)
        self.placed: dict[str, int] = defaultdict(int)  # records that took a slot, per stratum
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.groups: dict[str, str] = {}
        self._blocks: dict[str, tuple[int, list[int]]] = {}

    def _block(self, stratum: str, number: int) -> list[int]:
        cached = self._blocks.get(stratum)
        if cached is None or cached[0] != number:
            order = list(self.slots)
            random.Random(f"prelabel-split:{self.seed}:{stratum}:{number}").shuffle(order)
            cached = self._blocks[stratum] = (number, order)
        return cached[1]

    def assign(self, stratum: str, group: str | None = None) -> str:
        """The split of the next record of ``stratum`` (of its group, once the group has one)."""
        if group is not None and group in self.groups:
            split = self.groups[group]
        else:
            number, position = divmod(self.placed[stratum], len(self.slots))
            self.placed[stratum] += 1
            split = SPLITS[self._block(stratum, number)[position]]
            if group is not None:
                self.groups[group] = split
        self.counts[stratum][SPLITS.index(split)] += 1
        return split
