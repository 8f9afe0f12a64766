"""Export: verification, mapping per config family, ranking pairs, PII, dedupe, splits, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prelabel.export.dedupe import Deduper
from prelabel.export.mapping import Mapper, MappingError, ranking_pairs
from prelabel.export.pii import find_pii, redact
from prelabel.export.pipeline import ExportOptions, export_tasks
from prelabel.export.split import Splitter
from prelabel.export.verify import VerifyOptions, verified_label

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
INTENT = (TEMPLATES / "search_intent.xml").read_text()


def choice(label: str, name: str = "intent") -> list[dict]:
    return [{"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def ann(aid: int, who: int, result: list[dict], cancelled: bool = False, truth: bool = False) -> dict:
    return {"id": aid, "completed_by": who, "result": [] if cancelled else result, "was_cancelled": cancelled,
            "ground_truth": truth}


def task(tid: int, text: str, *annotations: dict, predictions: list | None = None) -> dict:
    return {"id": tid, "data": {"text": text}, "annotations": list(annotations), "predictions": predictions or []}


# --- verification -------------------------------------------------------------------------------
def test_predictions_never_count_skips_and_cancels_do_not_either() -> None:
    pre = [{"model_version": "m@p", "result": choice("other")}]
    assert verified_label(task(1, "x", predictions=pre), VerifyOptions()) == (None, "unlabeled")
    assert verified_label(task(1, "x", ann(1, 7, [], cancelled=True)), VerifyOptions()) == (None, "skipped")
    verified, why = verified_label(task(1, "x", ann(1, 7, [], cancelled=True), ann(2, 8, choice("other"))),
                                   VerifyOptions())
    assert why == "ok" and verified.result == choice("other") and verified.annotators == [8]


def test_agreement_across_annotators() -> None:
    two_agree = task(1, "x", ann(1, 7, choice("a")), ann(2, 8, choice("a")), ann(3, 9, choice("b")))
    verified, _ = verified_label(two_agree, VerifyOptions(min_annotators=3, min_agreement=0.6))
    assert verified.result == choice("a") and verified.agreement == pytest.approx(2 / 3)
    assert verified_label(two_agree, VerifyOptions(min_agreement=0.9))[1] == "disagreement"
    split = task(1, "x", ann(1, 7, choice("a")), ann(2, 8, choice("b")))
    assert verified_label(split, VerifyOptions())[1] == "disagreement"
    assert verified_label(task(1, "x", ann(1, 7, choice("a"))), VerifyOptions(min_annotators=2))[1] == \
        "too_few_annotators"
    truth = task(1, "x", ann(1, 7, choice("a")), ann(2, 8, choice("b"), truth=True))
    assert verified_label(truth, VerifyOptions(ground_truth_only=True))[0].result == choice("b")
    # an annotator's latest annotation is their vote
    changed = task(1, "x", ann(1, 7, choice("a")), ann(2, 7, choice("b")))
    assert verified_label(changed, VerifyOptions())[0].result == choice("b")


# --- mapping per config family ------------------------------------------------------------------
def test_classification_maps_to_the_backends_answer_and_prompt() -> None:
    mapper = Mapper(INTENT, "search_intent")
    record = mapper.record(task(5, "facebook login"), choice("navigational"))
    assert mapper.task_type == "classification" and mapper.labels[0] == "navigational"
    assert (record.input, record.output, record.label) == ("facebook login", '{"intent": "navigational"}',
                                                           "navigational")
    system, user = mapper.messages(record.texts)
    assert '"navigational"' in system["content"] and user["content"].endswith("facebook login")
    full = Mapper(INTENT, "search_intent", prompt_style="full").messages(record.texts)[0]["content"]
    assert "When unsure" in full and "When unsure" not in system["content"]


def test_multilabel_rating_extraction_and_ranking_families() -> None:
    multi = Mapper('<View><Text name="text" value="$text"/><Choices name="t" toName="text" choice="multiple">'
                   '<Choice value="a"/><Choice value="b"/></Choices></View>')
    assert multi.task_type == "multilabel"
    r = multi.record(task(1, "x"), [{"from_name": "t", "value": {"choices": ["b", "a"]}}])
    assert sorted(json.loads(r.output)["t"]) == ["a", "b"] and r.label == ["a", "b"]

    rating = Mapper('<View><Text name="text" value="$text"/><Rating name="r" toName="text" maxRating="7"/></View>')
    assert rating.task_type == "rating"
    assert rating.record(task(1, "x"), [{"from_name": "r", "value": {"rating": 6}}]).output == '{"r": 6}'

    ner = Mapper((TEMPLATES / "ner.xml").read_text(), "ner")
    assert ner.task_type == "extraction"
    text = "Angela Merkel visited Paris."
    spans = [{"from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start": 0, "end": 13, "text": "Angela Merkel", "labels": ["PER"]}}]
    out = json.loads(ner.record(task(1, text), spans).output)
    assert out == {"label": [{"label": "PER", "text": "Angela Merkel"}]}, "the backend's own answer format"

    ranking = Mapper((TEMPLATES / "output_ranking.xml").read_text(), "output_ranking")
    assert ranking.task_type == "ranking"
    data = {"prompt": "p", "outputs": [{"id": "o1", "body": "one"}, {"id": "o2", "body": "two"},
                                       {"id": "o3", "body": "three"}]}
    result = [{"from_name": "ranking", "to_name": "outputs", "type": "ranker", "value": {"ranker": {"ranking":
                                                                                                     ["o2", "o3", "o1"]}}}]
    record = ranking.record({"id": 1, "data": data}, result)
    assert record.input == "p" and record.output == "two"
    assert record.pairs == [("two", "three"), ("two", "one"), ("three", "one")]


def test_ranking_pairs_count_and_ties() -> None:
    items = {str(i): f"text {i}" for i in range(9)}
    assert len(ranking_pairs([str(i) for i in range(9)], items)) == 9 * 8 // 2
    assert ranking_pairs(["a", "b"], {"a": "same", "b": "same"}) == []


def test_unmappable_config_is_a_clear_error() -> None:
    with pytest.raises(MappingError, match="cannot be exported"):
        Mapper('<View><Image name="img" value="$image"/><RectangleLabels name="b" toName="img">'
               '<Label value="x"/></RectangleLabels></View>')


# --- cleaning -----------------------------------------------------------------------------------
def test_pii_found_and_redacted() -> None:
    text = "Mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111, ssn 123-45-6789."
    found = find_pii(text)
    assert found == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "SSN": 1}
    cleaned, _ = redact(text)
    assert "example.com" not in cleaned and "4111" not in cleaned and "[EMAIL]" in cleaned and "[CARD]" in cleaned
    assert find_pii("order 1234 5678 9012 3456").get("CARD") is None, "not a Luhn number"
    assert not find_pii("buy running shoes size 44")


@pytest.mark.parametrize("threshold, expect_dup", [(0.5, True), (0.95, False)])
def test_near_duplicate_threshold(threshold: float, expect_dup: bool) -> None:
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    similar = base.replace("today", "tonight")
    deduper = Deduper(near_threshold=threshold)
    assert deduper.check("1", base)[0] is None
    assert (deduper.check("2", similar)[0] == "near_duplicate") == expect_dup
    assert deduper.check("3", base.upper())[0] == "exact_duplicate"


def test_common_prefix_rule() -> None:
    deduper = Deduper(near_threshold=None, prefix_chars=20)
    assert deduper.check("1", "translate this text into french please: hello")[0] is None
    assert deduper.check("2", "translate this text into french please: goodbye")[0] == "common_prefix"


def test_splits_stratified_grouped_deterministic() -> None:
    splitter = Splitter(seed=1)
    got = [splitter.assign(label) for label in ["a"] * 100 + ["b"] * 50]
    assert got[:100].count("train") == 80 and got[:100].count("test") == 10
    assert got[100:].count("train") == 40
    grouped = Splitter(seed=1)
    splits = [grouped.assign("all", group=f"g{i % 7}", key=str(i)) for i in range(70)]
    for g in range(7):
        assert len({splits[i] for i in range(70) if i % 7 == g}) == 1
    assert [Splitter(seed=1).assign("x", key="k")] == [Splitter(seed=1).assign("x", key="k")]


# --- the pipeline -------------------------------------------------------------------------------
def _tasks(n: int) -> list[dict]:
    labels = ["navigational", "informational", "transactional"]
    out = []
    for i in range(n):
        out.append(task(i + 1, f"query number {i} about topic {i * 7919 % 1000}",
                        ann(i + 1, 1 + i % 2, choice(labels[i % 3]))))
    out.append(task(n + 1, "unlabeled one"))
    out.append(task(n + 2, "skipped one", ann(9999, 1, [], cancelled=True)))
    out.append(task(n + 3, "query number 0 about topic 0", ann(10000, 1, choice("navigational"))))  # exact dup
    out.append(task(n + 4, "write to bob@example.com", ann(10001, 2, choice("other"))))
    return out


def test_pipeline_files_manifest_and_counts(tmp_path: Path) -> None:
    out = export_tasks(_tasks(60), INTENT, tmp_path / "ds", ExportOptions(format="alpaca", min_per_class=5),
                       {"id": 3, "title": "intent"}, "search_intent")
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["tasks"] == 64 and counts["unlabeled"] == 1 and counts["skipped"] == 1
    assert counts["exact_duplicate"] == 1 and counts["pii_redacted"] == 1
    rows = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    assert sum(len(r) for r in rows.values()) == counts["written_rows"] == 61
    assert {s: len(r) for s, r in rows.items()} == {s: v["count"] for s, v in manifest["splits"].items()}
    inputs = [{r["data"]["text"] for r in rows[s]} for s in rows]
    assert not (inputs[0] & inputs[1] or inputs[0] & inputs[2] or inputs[1] & inputs[2])
    assert all(r["instruction"].endswith(r["data"]["text"]) for rs in rows.values() for r in rs)
    assert all("bob@example.com" not in json.dumps(r) for rs in rows.values() for r in rs)
    assert manifest["rare_classes"] == {"other": 1, "entertainment": 0, "educational": 0}
    assert set(manifest["files"]) == {"train.jsonl", "val.jsonl", "test.jsonl", "dataset_info.json"}
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["prelabel_train"]["file_name"] == "train.jsonl"
    assert len(manifest["annotators"]) == 2 and all(len(a) == 12 for a in manifest["annotators"])


def test_bad_input_leaves_no_partial_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="pairwise needs a ranking"):
        export_tasks(_tasks(5), INTENT, tmp_path / "ds", ExportOptions(format="pairwise"))

    def broken():
        yield from _tasks(5)
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        export_tasks(broken(), INTENT, tmp_path / "ds", ExportOptions())
    assert list(tmp_path.iterdir()) == [], "partial files left behind"
