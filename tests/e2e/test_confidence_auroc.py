"""Does ``score`` rank wrong pre-annotations below right ones? Measured with the real model.

SmolLM2-135M is far too small to be accurate, so no bar is asserted on the AUROC itself: the
test checks that scores come from logprobs, lie in [0, 1], vary, and writes the measured AUROC
and accuracy to ``artifacts/confidence_auroc.json`` (and the test output) for the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"navigational", "informational", "transactional", "entertainment", "educational", "other"}


def test_score_ranks_wrong_answers_lower(backend_factory) -> None:
    backend = backend_factory.start(name="auroc-backend", env={"PRELABEL_GUIDELINE": "search_intent"})
    rows = [json.loads(line) for line in (ROOT / "tests/data/search_intent_labeled.jsonl").read_text().splitlines()]
    config = (ROOT / "label_config/templates/search_intent.xml").read_text()
    response = httpx.post(
        f"{backend.url}/predict",
        json={"tasks": [{"id": i, "data": {"text": r["text"]}} for i, r in enumerate(rows)], "label_config": config},
        timeout=600,
    )
    response.raise_for_status()
    results = response.json()["results"]
    scores, correct, distribution_scores = [], [], []
    for row, prediction in zip(rows, results):
        assert 0.0 <= prediction["score"] <= 1.0
        if not prediction["result"]:
            continue  # left for a human: no label to be right or wrong about
        assert prediction["meta"]["provenance"]["score_source"] == "logprobs"
        scores.append(prediction["score"])
        region = prediction["result"][0]
        chosen = region["value"]["choices"][0]
        correct.append(chosen == row["label"])
        probs = region["prelabel"].get("label_probs")
        if probs is not None:  # the label distribution, when the server returned alternatives
            assert set(probs) == set(LABELS) and abs(sum(probs.values()) - 1) < 1e-3
            assert probs[chosen] == max(probs.values()) or probs[chosen] > 0
        distribution_scores.append(probs[chosen] if probs else None)
    assert len(scores) >= len(rows) // 2, "most tasks should get a valid label"
    assert len(set(scores)) > 1, "scores must vary with the model's certainty"
    report = {
        "tasks": len(rows),
        "labeled": len(scores),
        "accuracy": sum(correct) / len(correct),
        "mean_score_correct": sum(s for s, c in zip(scores, correct) if c) / max(1, sum(correct)),
        "mean_score_wrong": sum(s for s, c in zip(scores, correct) if not c) / max(1, len(correct) - sum(correct)),
        "auroc": roc_auc_score(correct, scores) if 0 < sum(correct) < len(correct) else None,
        "with_label_distribution": sum(p is not None for p in distribution_scores),
    }
    if all(p is not None for p in distribution_scores) and 0 < sum(correct) < len(correct):
        report["auroc_label_distribution"] = roc_auc_score(correct, distribution_scores)
    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "confidence_auroc.json").write_text(json.dumps(report, indent=2))
    print("confidence report:", json.dumps(report))
