"""Uncertainty measures, priority signals, diversity and the AL simulation (synthetic data only)."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.ranking.diversity import TextIndex, diversify, rank_within
from prelabel.ranking.priority import rank
from prelabel.ranking.signals import task_signals
from prelabel.ranking.simulate import simulate, write_curves
from prelabel.ranking.uncertainty import entropy, least_confidence, margin


def test_uncertainty_measures_order_and_range() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    for measure in (least_confidence, margin, entropy):
        values = measure(probs)
        assert values[0] == pytest.approx(0.0, abs=1e-9)
        assert values[-1] == pytest.approx(1.0)
        assert list(np.argsort(values)) == [0, 1, 2, 3], measure.__name__
    # margin looks only at the two best labels
    assert margin(np.array([[0.5, 0.5, 0.0]]))[0] == pytest.approx(1.0)
    assert least_confidence(np.array([[0.5, 0.5, 0.0]]))[0] == pytest.approx(0.75)
    # unnormalised rows and all-zero rows are handled
    assert entropy(np.array([[2.0, 2.0], [0.0, 0.0]])) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        margin(np.array([0.5, 0.5]))


def test_rank_within_groups_and_diversify() -> None:
    groups = np.array([0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    assert list(rank_within(groups, scores)) == [1, 2, 0, 0, 1]
    out = diversify(scores, groups, decay=0.5)
    assert out[3] == pytest.approx(0.95) and out[2] == pytest.approx(0.7)
    assert out[0] == pytest.approx(0.45) and out[1] == pytest.approx(0.2)


def test_index_clusters_near_duplicates_together() -> None:
    texts = ["cheap flights to rome from paris", "cheap flights to rome from paris today",
             "how tall is mount everest in meters", "how tall is mount everest in meters really",
             "python tutorial for absolute beginners", "python tutorial for absolute beginners free"]
    index = TextIndex.build(texts * 5, n_clusters=3)
    assert index.features.shape[0] == 30
    groups = index.groups[:6]
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[4] == groups[5]
    assert len({groups[0], groups[2], groups[4]}) == 3


def _task(tid: int, text: str, pred: str | None, score: float | None, review: str = "", reviewed: str | None = None,
          human: str | None = None) -> dict:
    preds = []
    if pred is not None:
        preds.append({"id": tid * 10, "model_version": "m@p-1", "score": score,
                      "result": [{"from_name": "intent", "value": {"choices": [pred]}}]})
    if review:
        preds.append({"id": tid * 10 + 1, "model_version": f"review:r@p-1#{review}", "score": 0.5,
                      "result": [{"from_name": "intent", "value": {"choices": [reviewed or pred]}}]})
    anns = [{"id": tid, "was_cancelled": False, "result": [{"from_name": "intent", "value": {"choices": [human]}}]}] \
        if human else []
    return {"id": tid, "data": {"text": text}, "predictions": preds, "annotations": anns}


def test_task_signals_read_the_contract() -> None:
    s = task_signals(_task(1, "a", "x", 0.7, "rejected", "y"), "intent", "text")
    assert (s.predicted, s.reviewed, s.score, s.review_status, s.labeled) == ("x", "y", 0.7, "rejected", False)
    assert s.disagreement
    cancelled = _task(2, "b", "x", 0.9, human="x")
    cancelled["annotations"][0]["was_cancelled"] = True
    assert not task_signals(cancelled, "intent", "text").labeled
    assert task_signals(_task(3, "c", "x", 0.9, human="z"), "intent", "text").human == "z"
    incomplete = _task(4, "d", None, None)
    incomplete["predictions"] = [{"id": 9, "model_version": "m@p-1#needs_human", "score": 0, "result": []}]
    s = task_signals(incomplete, "intent", "text")
    assert s.pre_status == "needs_human" and s.score is None


def test_priority_puts_uncertain_disagreeing_abnormal_first_and_labeled_last() -> None:
    labels = ["x", "y"]
    signals = [task_signals(t, "intent", "text") for t in [
        _task(1, "sure thing alpha", "x", 0.99, "passed"),
        _task(2, "unsure thing beta", "x", 0.55, "passed"),
        _task(3, "reviewer disagrees gamma", "x", 0.9, "rejected", "y"),
        _task(4, "already labeled delta", "x", 0.2, "rejected", "y", human="y"),
    ]]
    ranking = rank(signals, labels, index=TextIndex.build([x.text for x in signals], n_clusters=1))
    order = [ranking.ids[i] for i in np.argsort(-ranking.priority)]
    assert order[0] == 3 and order[-1] == 4
    assert ranking.priority[ranking.ids.index(2)] > ranking.priority[ranking.ids.index(1)]
    assert ranking.priority[ranking.ids.index(4)] == 0.0
    assert set(ranking.source) == {"score"}


def test_the_fallback_classifier_supplies_uncertainty_without_logprobs() -> None:
    rng = np.random.default_rng(0)
    tasks = []
    for i in range(40):
        label = "x" if i % 2 else "y"
        word = "apple banana" if label == "x" else "engine wheel"
        tasks.append(_task(i + 1, f"{word} {rng.integers(1000)}", label, None, human=label if i < 20 else None))
    signals = [task_signals(t, "intent", "text") for t in tasks]
    ranking = rank(signals, ["x", "y"])
    unlabeled = [i for i, s in enumerate(signals) if not s.labeled]
    assert {ranking.source[i] for i in unlabeled} == {"fallback_classifier"}


def _synthetic(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Three classes with their own vocabularies and a shared noise vocabulary, plus label noise."""
    rng = np.random.default_rng(seed)
    vocab = {c: [f"{c}{i}" for i in range(30)] for c in ("sport", "tech", "food")}
    noise = [f"w{i}" for i in range(300)]
    texts, labels = [], []
    for _ in range(n):
        c = rng.choice(list(vocab))
        words = list(rng.choice(vocab[c], size=2)) + list(rng.choice(noise, size=12))
        texts.append(" ".join(rng.permutation(words)))
        labels.append(c if rng.random() > 0.05 else rng.choice(list(vocab)))
    return texts, labels


def test_simulation_uncertainty_beats_random_on_synthetic_data(tmp_path) -> None:
    texts, labels = _synthetic(1500)
    result = simulate(texts, labels, budget=400, batch=50, initial=30, strategies=("random", "margin"), seed=1)
    random_curve, margin_curve = result.curves["random"], result.curves["margin"]
    assert random_curve.labels == margin_curve.labels and random_curve.labels[-1] == 400
    area = lambda c: float(np.trapezoid(c.accuracy, c.labels))  # noqa: E731
    assert area(margin_curve) > area(random_curve)
    savings = result.savings()
    assert savings["random"]["labels_saved"] == 0
    assert savings["margin"]["labels_needed"] is not None and savings["margin"]["labels_saved"] > 0
    csv_path, png_path = write_curves(result, tmp_path)
    assert csv_path.read_text().count("\n") == 1 + len(random_curve.labels) * 2
    assert png_path.stat().st_size > 10_000


def test_simulation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="two classes"):
        simulate(["a b", "c d", "e f"], ["x", "x", "x"])
    with pytest.raises(ValueError, match="unknown strategies"):
        simulate(["a b", "c d"] * 10, ["x", "y"] * 10, strategies=("random", "magic"))
