"""Pool-based active-learning simulation: do the ranking strategies save labels?

A labeled data set plays both the pool and the oracle. Every strategy starts from the same
random seed set, then repeatedly trains the same light model (TF-IDF + logistic regression, the
ranking's refresh model family), asks for the ``batch`` pool items it ranks highest and "labels"
them, until the budget is spent. Accuracy and macro-F1 on a held-out test split are recorded
after each round; the learning curves answer "how many labels does uncertainty sampling need
to match random sampling's accuracy?".
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import normalize

from prelabel.ranking.uncertainty import uncertainty

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "margin+diversity")
CANDIDATES_PER_PICK = 5  # diversity picks among the 5 x batch most uncertain items


@dataclass
class Curve:
    strategy: str
    labels: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    macro_f1: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def labels_to_reach(self, accuracy: float) -> int | None:
        return next((n for n, acc in zip(self.labels, self.accuracy) if acc >= accuracy), None)


@dataclass
class SimulationResult:
    curves: dict[str, Curve]
    pool_size: int
    test_size: int
    classes: list[str]
    seconds: float

    def savings(self, reference: str = "random") -> dict[str, dict[str, float | int | None]]:
        """Labels each strategy needed to reach the reference's final accuracy, and how many fewer
        than the reference itself needed for it."""
        ref = self.curves[reference]
        target = ref.accuracy[-1]
        spent = ref.labels_to_reach(target) or ref.labels[-1]
        out: dict[str, dict[str, float | int | None]] = {}
        for name, curve in self.curves.items():
            needed = curve.labels_to_reach(target)
            out[name] = {"target_accuracy": round(target, 4), "labels_needed": needed,
                         "labels_saved": None if needed is None else spent - needed,
                         "final_accuracy": round(curve.accuracy[-1], 4)}
        return out


def _k_center(vectors: np.ndarray, k: int) -> list[int]:
    """Greedy k-center on unit vectors: each pick is the farthest from those already picked."""
    chosen = [0]
    distance = 1.0 - vectors @ vectors[0]
    while len(chosen) < min(k, len(vectors)):
        nxt = int(distance.argmax())
        chosen.append(nxt)
        distance = np.minimum(distance, 1.0 - vectors @ vectors[nxt])
    return chosen


def _select(strategy: str, probs: np.ndarray, candidates: np.ndarray, embeddings: np.ndarray, batch: int,
            rng: np.random.Generator) -> np.ndarray:
    if strategy == "random":
        return rng.choice(candidates, size=min(batch, len(candidates)), replace=False)
    measure = "margin" if strategy == "margin+diversity" else strategy
    scores = uncertainty(probs, measure)  # type: ignore[arg-type]
    if strategy != "margin+diversity":
        return candidates[np.argsort(-scores, kind="stable")[:batch]]
    top = np.argsort(-scores, kind="stable")[: batch * CANDIDATES_PER_PICK]
    picks = _k_center(embeddings[candidates[top]], batch)
    return candidates[top[picks]]


def simulate(texts: Sequence[str], labels: Sequence[str], *, budget: int = 3000, batch: int = 100,
             initial: int = 50, test_fraction: float = 0.2, strategies: Sequence[str] = STRATEGIES,
             seed: int = 0, progress: Callable[[str, int], None] | None = None) -> SimulationResult:
    started = time.perf_counter()
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies: {sorted(unknown)}; choose from {STRATEGIES}")
    y = np.asarray(labels, dtype=object)
    classes = sorted(set(y))
    if len(classes) < 2:
        raise ValueError("the data needs at least two classes")
    index = np.arange(len(y))
    pool_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=y)
    # Unsupervised features over all texts (no labels involved, so nothing leaks from the test split).
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=50_000)
    features = vectorizer.fit_transform(texts)
    dims = max(2, min(64, features.shape[1] - 1, len(y) - 1))
    embeddings = normalize(TruncatedSVD(n_components=dims, random_state=seed).fit_transform(features))
    budget = min(budget, len(pool_idx))
    rng0 = np.random.default_rng(seed)
    seed_set = rng0.choice(len(pool_idx), size=min(initial, budget), replace=False)

    curves: dict[str, Curve] = {}
    for strategy in strategies:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed + 1)
        labeled = np.zeros(len(pool_idx), dtype=bool)
        labeled[seed_set] = True
        curve = Curve(strategy)
        while True:
            train = pool_idx[labeled]
            model = _fit(features[train], y[train], seed)
            predicted = _predict(model, features[test_idx], y[train])
            curve.labels.append(int(labeled.sum()))
            curve.accuracy.append(float(accuracy_score(y[test_idx], predicted)))
            curve.macro_f1.append(float(f1_score(y[test_idx], predicted, average="macro", zero_division=0)))
            if progress:
                progress(strategy, curve.labels[-1])
            if labeled.sum() >= budget:
                break
            candidates = np.flatnonzero(~labeled)
            probs = _proba(model, features[pool_idx[candidates]], len(candidates))
            take = min(batch, budget - int(labeled.sum()))
            labeled[_select(strategy, probs, candidates, embeddings[pool_idx], take, rng)] = True
        curve.seconds = time.perf_counter() - t0
        curves[strategy] = curve
    return SimulationResult(curves, len(pool_idx), len(test_idx), classes, time.perf_counter() - started)


def _fit(x, y: np.ndarray, seed: int) -> LogisticRegression | None:
    if len(set(y)) < 2:
        return None  # one class so far: predict it
    return LogisticRegression(solver="saga", max_iter=100, tol=1e-3, C=10.0, random_state=seed).fit(x, y)


def _predict(model: LogisticRegression | None, x, seen: np.ndarray) -> np.ndarray:
    return model.predict(x) if model is not None else np.full(x.shape[0], seen[0], dtype=object)


def _proba(model: LogisticRegression | None, x, n: int) -> np.ndarray:
    return model.predict_proba(x) if model is not None else np.full((n, 2), 0.5)


def write_curves(result: SimulationResult, out: Path, title: str = "active learning") -> tuple[Path, Path]:
    """learning_curves.csv and learning_curves.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "learning_curves.csv", out / "learning_curves.png"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "labels", "accuracy", "macro_f1"])
        for curve in result.curves.values():
            for row in zip(curve.labels, curve.accuracy, curve.macro_f1):
                writer.writerow([curve.strategy, row[0], f"{row[1]:.4f}", f"{row[2]:.4f}"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for curve in result.curves.values():
        style = "--" if curve.strategy == "random" else "-"
        axes[0].plot(curve.labels, curve.accuracy, style, label=curve.strategy)
        axes[1].plot(curve.labels, curve.macro_f1, style, label=curve.strategy)
    for ax, metric in zip(axes, ("accuracy", "macro F1")):
        ax.set_xlabel(f"labels (pool size {result.pool_size}, test {result.test_size})")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path
