"""Calibration maps: fitted on human labels, measured out of fold, applied to predictions."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.label_config.schema import build_schema
from prelabel.prediction.calibration import UNCALIBRATED, CalibrationMap, calibrate, is_calibrated
from prelabel.quality.calibration_fit import (
    MIN_PAIRS,
    Pairs,
    calibration_pairs,
    calibration_report,
    ece,
    fit_map,
    reliability_png,
)

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>"""


def overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores that say p but are right only p**3 of the time (a typical small model)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.3, 1.0, n)
    correct = rng.uniform(size=n) < scores ** 3
    return scores, correct


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence():
    scores = np.repeat([0.25, 0.75], 400)
    correct = np.concatenate([np.arange(400) < 100, np.arange(400) < 300])
    assert ece(scores, correct) == pytest.approx(0.0, abs=1e-9)
    assert ece(np.full(100, 0.9), np.zeros(100, dtype=bool)) == pytest.approx(0.9)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_fitted_map_lowers_ece_out_of_fold_and_keeps_the_order(method):
    scores, correct = overconfident()
    report = calibration_report(Pairs("m", list(scores), list(correct)), method)
    assert report.status == "calibrated" and report.cmap.method == method
    assert report.after["ece"] < report.before["ece"] / 2, (report.before["ece"], report.after["ece"])
    mapped = report.cmap.apply(np.sort(scores))
    assert np.all(np.diff(mapped) >= -1e-12), "calibration must be monotone"
    assert report.cmap.metrics["ece_before"] == pytest.approx(report.before["ece"])


def test_auto_uses_platt_for_few_labels_and_isotonic_for_many():
    scores, correct = overconfident(600)
    assert fit_map(scores[:50], correct[:50], "m").method == "platt"
    assert fit_map(scores, correct, "m").method == "isotonic"


def test_too_few_labels_or_one_outcome_stay_uncalibrated():
    few = calibration_report(Pairs("m", [0.9] * (MIN_PAIRS - 1), [True] * (MIN_PAIRS - 1)))
    assert few.cmap is None and few.status.startswith("uncalibrated")
    same = calibration_report(Pairs("m", [0.9, 0.8] * 10, [True] * 20))
    assert same.cmap is None and "all right or all wrong" in same.status


def prediction(score: float, source: str = "label_probs", label: str = "a") -> dict:
    return {"result": [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]},
                        "prelabel": {"raw_score": score}}],
            "score": score, "model_version": "m@p",
            "meta": {"status": "ok", "provenance": {"raw_score": score, "score_source": source,
                                                    "calibration": UNCALIBRATED}}}


def test_calibrate_replaces_the_score_and_records_the_raw_one_and_the_map():
    cmap = CalibrationMap("platt", "m", {"a": 1.0, "b": -2.0}, 50, id="cal-x")
    p = calibrate(prediction(0.9), cmap)
    assert p["score"] == pytest.approx(cmap(0.9), abs=1e-6) and p["score"] < 0.9
    assert p["meta"]["provenance"]["raw_score"] == 0.9 and p["meta"]["provenance"]["calibration"] == "cal-x"
    assert p["result"][0]["prelabel"]["calibration"] == "cal-x" and is_calibrated(p)
    # Calibrating again maps the raw score, not the already calibrated one.
    assert calibrate(p, cmap)["score"] == pytest.approx(cmap(0.9), abs=1e-6)


def test_no_map_or_no_logprobs_leaves_the_score_and_says_uncalibrated():
    cmap = CalibrationMap("platt", "m", {"a": 1.0, "b": -2.0}, 50, id="cal-x")
    assert calibrate(prediction(0.9), None)["score"] == 0.9
    fallback = calibrate(prediction(0.5, source="none"), cmap)
    assert fallback["score"] == 0.5 and not is_calibrated(fallback)


def test_map_round_trips_through_redis_encoding():
    cmap = fit_map(*overconfident(300), "m", "isotonic")
    again = CalibrationMap.decode(cmap.encode())
    assert again.id == cmap.id and again(0.7) == pytest.approx(cmap(0.7))


def task(human: str | None, predicted: str, score: float, version: str = "smollm2@p-1") -> dict:
    annotations = [{"id": 1, "result": [{"from_name": "intent", "to_name": "text", "type": "choices",
                                         "value": {"choices": [human]}}], "was_cancelled": False}] if human else []
    pre = prediction(score, label=predicted)
    pre["result"][0]["prelabel"]["model"] = version.split("@")[0]
    pre["result"][0]["prelabel"]["raw_score"] = score
    return {"id": 1, "data": {"text": "x"}, "annotations": annotations,
            "predictions": [{"id": 7, "model_version": version, "score": 0.1, "result": pre["result"]}]}


def test_pairs_use_the_raw_score_per_answering_model_and_skip_unlabeled_or_incomplete():
    schema = build_schema(CONFIG)
    tasks = [task("a", "a", 0.9), task("a", "b", 0.6), task(None, "a", 0.9),
             task("a", "a", 0.8, version="smollm2@p-1#needs_human"), task("a", "a", 0.7, version="big@p-1")]
    pairs = calibration_pairs(tasks, schema)
    assert set(pairs) == {"smollm2", "big"}
    assert pairs["smollm2"].scores == [0.9, 0.6]  # raw scores, not the stored (calibrated) 0.1
    assert pairs["smollm2"].correct == [True, False]


def test_reliability_png_is_written(tmp_path):
    report = calibration_report(Pairs("m", *map(list, overconfident(200))))
    path = reliability_png(report, tmp_path / "r.png", "test")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
