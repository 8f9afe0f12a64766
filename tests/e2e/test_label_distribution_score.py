"""The score of a real model's single-choice answer is its chosen label's probability in a full
label distribution (``label_probs``), and it varies with the model's certainty.

SmolLM2-135M is far too small to be accurate, so no bar is put on how well the score separates
right from wrong answers: the AUROC and ECE (before/after calibration) are measured by
``benchmarks/quality_signals.py`` and committed with their real output.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"navigational", "informational", "transactional", "entertainment", "educational", "other"}


def test_score_is_the_chosen_labels_probability_in_a_full_label_distribution(backend_factory) -> None:
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
    scores = []
    for prediction in results:
        assert 0.0 <= prediction["score"] <= 1.0
        if not prediction["result"]:
            continue  # left for a human: no label to be right or wrong about
        provenance = prediction["meta"]["provenance"]
        assert provenance["score_source"] == "label_probs", provenance
        assert provenance["calibration"] == "uncalibrated"  # no human labels: said so, not hidden
        region = prediction["result"][0]
        chosen = region["value"]["choices"][0]
        probs = region["prelabel"]["label_probs"]
        assert region["prelabel"]["label_probs_kind"] == "distribution"
        assert set(probs) == LABELS and abs(sum(probs.values()) - 1) < 1e-3
        assert prediction["score"] == pytest.approx(probs[chosen], abs=1e-6)
        assert probs[chosen] >= max(probs.values()) - 0.05, "near-greedy decoding writes the most likely label"
        scores.append(prediction["score"])
    assert len(scores) >= len(rows) // 2, "most tasks should get a valid label"
    assert len(set(scores)) > 1, "scores must vary with the model's certainty"
    assert min(scores) < 0.99, "a distribution that is always certain carries no signal"
