"""Duplicates in training data: exact (content hash), near (MinHash LSH) and long common prefixes.

Streaming: each record is checked against what was kept so far, so memory grows with the kept
records' signatures (64 x 8 bytes for MinHash), never with their texts.
"""

from __future__ import annotations

import hashlib

from datasketch import MinHash, MinHashLSH

from prelabel.text import normalise


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class Deduper:
    """``check(key, text)`` -> None when new, else the reason it is a duplicate.

    ``near_threshold`` is the estimated Jaccard similarity of word 3-shingles above which two
    texts are near-duplicates (None disables); ``prefix_chars`` drops a text whose first N
    normalised characters equal an earlier text's (InstructGPT's long-common-prefix rule; 0
    disables). ``keep_near`` keeps near-duplicates but reports the group they belong to.
    """

    def __init__(self, near_threshold: float | None = 0.9, prefix_chars: int = 0, num_perm: int = 64,
                 keep_near: bool = False) -> None:
        self.exact: set[str] = set()
        self.prefixes: set[str] = set()
        self.prefix_chars = prefix_chars
        self.num_perm = num_perm
        self.keep_near = keep_near
        self.lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm) if near_threshold else None
        self.group_of: dict[str, str] = {}

    def _minhash(self, text: str) -> MinHash:
        words = normalise(text).split()
        shingles = {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))}
        m = MinHash(num_perm=self.num_perm, seed=1)
        for shingle in shingles:
            m.update(shingle.encode())
        return m

    def check(self, key: str, text: str) -> tuple[str | None, str]:
        """(duplicate reason or None, near-duplicate group id)."""
        digest = content_hash(text)
        if digest in self.exact:
            return "exact_duplicate", digest
        norm = normalise(text)
        if self.prefix_chars and len(norm) > self.prefix_chars:
            prefix = norm[: self.prefix_chars]
            if prefix in self.prefixes:
                return "common_prefix", digest
        group = key
        if self.lsh is not None:
            m = self._minhash(text)
            similar = self.lsh.query(m)
            if similar:
                group = self.group_of[similar[0]]
                if not self.keep_near:
                    return "near_duplicate", group
            self.lsh.insert(key, m)
            self.group_of[key] = group
        self.exact.add(digest)
        if self.prefix_chars and len(norm) > self.prefix_chars:
            self.prefixes.add(norm[: self.prefix_chars])
        return None, group
