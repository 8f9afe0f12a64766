"""Diversity: keep the top of the queue from being fifty copies of one case.

Tasks are embedded cheaply (hashed character n-grams -> TF-IDF -> SVD, no model to download),
clustered with mini-batch k-means, and each task's priority is discounted by how many
higher-priority tasks of its own cluster come before it. The first task of every cluster keeps
its priority; the tenth near-duplicate of a case is pushed far down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.preprocessing import normalize


def embed(texts: Sequence[str], dims: int = 64, seed: int = 0) -> np.ndarray:
    """Dense, L2-normalised text vectors (n x <= dims)."""
    hashed = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 4), n_features=2**18,
                               alternate_sign=False, norm=None).transform(texts)
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(hashed)
    k = max(1, min(dims, tfidf.shape[0] - 1, tfidf.shape[1] - 1))
    if tfidf.shape[0] < 3:
        return normalize(tfidf.toarray()[:, :k] if tfidf.shape[1] else np.zeros((tfidf.shape[0], 1)))
    return normalize(TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf))


def clusters(vectors: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    n_clusters = max(1, min(n_clusters, len(vectors)))
    if n_clusters == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    model = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, batch_size=2048)
    return model.fit_predict(vectors)


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
