"""Scoring of prompt versions against human labels (no model: predictions are given)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from prelabel.export.verify import VerifyOptions
from prelabel.label_config.schema import build_schema
from prelabel.prediction.predictor import ContextBuilder
from prelabel.settings import Settings
from prelabel.train.prompt_eval import (
    Version,
    VersionRun,
    compare,
    expected_calibration_error,
    markdown,
    verified_cases,
    write_outputs,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
CONFIG = (TEMPLATES / "search_intent.xml").read_text()
NER = (TEMPLATES / "ner.xml").read_text()


def choice(label: str) -> list[dict]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def task(task_id: int, text: str, label: str | None, *, cancelled: bool = False) -> dict:
    annotations = [] if label is None else [{"id": task_id, "completed_by": 1, "was_cancelled": cancelled,
                                              "result": choice(label)}]
    return {"id": task_id, "data": {"text": text}, "annotations": annotations}


def prediction(label: str | None, score: float, status: str = "ok", errors: dict | None = None,
               tokens: int = 100, latency_ms: float = 500.0) -> dict:
    return {"result": choice(label) if label else [], "score": score,
            "meta": {"status": status, "errors": errors or {},
                     "provenance": {"usage": {"total_tokens": tokens, "prompt_tokens": tokens - 10,
                                              "completion_tokens": 10}, "latency_ms": latency_ms}}}


def run(label: str, guideline: dict | str, predictions: list[dict], wall_s: float) -> VersionRun:
    ctx = ContextBuilder(Settings()).context(CONFIG, guideline)
    return VersionRun(Version(label, guideline, "m", ["http://x/v1"]), ctx, predictions, wall_s)


def test_verified_cases_follow_the_export_rules():
    schema = build_schema(CONFIG)
    tasks = [task(1, "facebook login", "navigational"), task(2, "ok", None), task(3, "zzz", "other", cancelled=True),
             {"id": 4, "data": {}, "annotations": [{"id": 9, "completed_by": 1, "result": choice("other")}]}]
    selection = verified_cases(tasks, schema, VerifyOptions())
    assert [c.task_id for c in selection.cases] == [1]
    assert selection.cases[0].human == {"intent": "navigational"}
    assert selection.skipped == {"unlabeled": 1, "skipped": 1, "bad_task_data": 1} and selection.total == 4
    assert verified_cases(tasks, schema, VerifyOptions(ground_truth_only=True)).cases == []


def test_expected_calibration_error():
    assert expected_calibration_error([], []) is None
    assert expected_calibration_error([0.95, 0.95], [True, True]) == pytest.approx(0.05)
    # two bins: 0.2 (wrong) and 0.8 (right twice, wrong once)
    assert expected_calibration_error([0.2, 0.8, 0.8, 0.8], [False, True, True, False]) == pytest.approx(
        0.25 * 0.2 + 0.75 * abs(2 / 3 - 0.8))


def test_two_versions_compared_on_the_same_tasks(tmp_path):
    schema = build_schema(CONFIG)
    texts = ["facebook login", "buy shoes", "funny cats", "python course"]
    human = ["navigational", "transactional", "entertainment", "educational"]
    cases = verified_cases([task(i + 1, t, h) for i, (t, h) in enumerate(zip(texts, human))], schema,
                           VerifyOptions()).cases
    current = run("current", "search_intent", [
        prediction("navigational", 0.9), prediction("informational", 0.8), prediction("entertainment", 0.7),
        prediction(None, 0.0, "needs_human", {"intent": "label_not_in_set: 'course' is not one of [...]"}),
    ], wall_s=2.0)
    variant = {**current.ctx.guideline.model_dump(mode="json"), "when_unsure": "Choose other, always."}
    candidate = run("candidate", variant, [
        prediction("navigational", 0.9), prediction("transactional", 0.6), prediction("other", 0.4),
        prediction("educational", 0.8, tokens=140, latency_ms=900.0),
    ], wall_s=4.0)
    assert candidate.ctx.prompt.version != current.ctx.prompt.version

    report = compare([current, candidate], cases, {"project": 3, "time": "t", "verification": "default"})
    cur, cand = report["current"], report["candidate"]
    assert cur["exact_match"] == pytest.approx(2 / 4) and cand["exact_match"] == pytest.approx(3 / 4)
    predicted = ["navigational", "transactional", "other", "educational"]
    assert cand["macro_f1"] == pytest.approx(f1_score(human, predicted, labels=schema.fields[0].label_values,
                                                      average="macro", zero_division=0))
    assert cand["controls"]["intent"]["per_class"]["transactional"] == 1.0
    assert cur["invalid_rate"] == 0.25 and cur["needs_human_rate"] == 0.25 and cand["invalid_rate"] == 0.0
    assert cand["tokens_per_task"] == pytest.approx(110) and cand["seconds_per_task"] == pytest.approx(1.0)
    assert cur["ece"] == pytest.approx(expected_calibration_error([0.9, 0.8, 0.7], [True, False, True]))
    assert report["changed_count"] == 3 and report["improved"] == 2 and report["worsened"] == 1
    changed = {row["task_id"]: row for row in report["changed"]}
    assert changed[3] == {"task_id": 3, "text": "funny cats", "human": {"intent": "entertainment"},
                          "current": {"intent": "entertainment"}, "candidate": {"intent": "other"},
                          "current_correct": True, "candidate_correct": False}
    assert changed[4]["current"] == {"intent": None}  # left for a human

    files = write_outputs(report, tmp_path / "out")
    assert files["current:intent"].read_bytes().startswith(b"\x89PNG")
    text = markdown(report)
    assert "| exact match | 0.500 | 0.750 |" in text and "3 tasks changed: 2 now right, 1 now wrong." in text


def test_span_controls_score_per_label():
    schema = build_schema(NER)
    span = [{"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 0, "end": 5, "text": "Paris", "labels": ["LOC"]}}]
    annotation = {"id": 1, "completed_by": 1, "result": span}
    tasks = [{"id": 1, "data": {"text": "Paris is nice"}, "annotations": [annotation]}]
    cases = verified_cases(tasks, schema, VerifyOptions()).cases
    ctx = ContextBuilder(Settings()).context(NER, "ner")
    wrong = [{**span[0], "value": {**span[0]["value"], "labels": ["PER"]}}]
    runs = [VersionRun(Version(side, "ner", "m", []), ctx, [{"result": result, "score": 0.5, "meta": {}}], 1.0)
            for side, result in (("current", span), ("candidate", wrong))]
    report = compare(runs, cases, {"project": 1, "time": "t", "verification": "v"})
    assert report["current"]["controls"]["label"]["per_class"]["LOC"] == 1.0
    assert report["candidate"]["controls"]["label"]["per_class"]["LOC"] == 0.0
    assert report["candidate"]["controls"]["label"]["per_class"]["PER"] == 0.0
    assert report["worsened"] == 1
