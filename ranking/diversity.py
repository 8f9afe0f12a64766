"""Text features and diversity: keep the top of the queue from being fifty copies of one case.

Texts are hashed into word uni/bi-gram features once (no vocabulary to fit, no model to
download); the same sparse matrix feeds the refresh model, and a random projection of it feeds
mini-batch k-means. Each task's priority is then discounted by how many higher-priority tasks of
its own cluster come before it: the first task of every cluster keeps its priority, the tenth
near-duplicate of a case is pushed far down. Building the index is the expensive part (about a
second per 100k short texts); it depends only on the texts, so callers cache it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import MiniBatchKMeans
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize
from sklearn.random_projection import SparseRandomProjection

N_FEATURES = 2**18
EMBED_DIMS = 64


def hashed_features(texts: Sequence[str]) -> sp.csr_matrix:
    return HashingVectorizer(ngram_range=(1, 2), n_features=N_FEATURES, alternate_sign=False).transform(texts)


def default_clusters(n: int) -> int:
    return int(np.clip(np.sqrt(n / 2), 2, 200))


@dataclass
class TextIndex:
    """Features and cluster of every task text, in the order given."""

    features: sp.csr_matrix
    groups: np.ndarray

    @classmethod
    def build(cls, texts: Sequence[str], n_clusters: int | None = None, seed: int = 0) -> TextIndex:
        features = hashed_features(texts)
        n = len(texts)
        k = max(1, min(n_clusters or default_clusters(n), n))
        if k == 1:
            return cls(features, np.zeros(n, dtype=np.int64))
        vectors = normalize(SparseRandomProjection(EMBED_DIMS, random_state=seed).fit_transform(features))
        groups = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=2048).fit_predict(vectors)
        return cls(features, groups)


def rank_within(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """0 for the best-scored task of each group, 1 for the next, ... (vectorised)."""
    order = np.lexsort((-scores, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - run_start
    return ranks


def diversify(scores: np.ndarray, groups: np.ndarray, decay: float = 0.85) -> np.ndarray:
    """Discount each score by ``decay`` per better task of the same group before it."""
    return scores * np.power(decay, rank_within(groups, scores))
