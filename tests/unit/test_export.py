"""Export: verification, mapping per config family, ranking pairs, PII, dedupe, splits, manifest."""

from __future__ import annotations

import json
from collections import Counter
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
    assert "When unsure" in full and "When unsure" in system["content"], "a written rule, in both prompt styles"
    assert "## Labels for" in full and "## Labels for" not in system["content"]


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
                                       {"id": "o3", "body": "three"}, {"id": "o4", "body": "four"}]}
    result = [{"from_name": "ranking", "to_name": "outputs", "type": "ranker",
               "value": {"ranker": {"rank_1": ["o2"], "rank_2": ["o3", "o1"], "rank_4": ["o4"]}}}]
    record = ranking.record({"id": 1, "data": data}, result)
    assert record.input == "p" and record.output == "two"
    assert record.pairs == [("two", "three"), ("two", "one"), ("two", "four"), ("three", "four"), ("one", "four")]


def test_ranking_pairs_count_and_ties() -> None:
    items = {str(i): f"text {i}" for i in range(9)}
    assert len(ranking_pairs([str(i) for i in range(9)], items)) == 9 * 8 // 2
    assert ranking_pairs(["a", "b"], {"a": "same", "b": "same"}) == []
    # a tie (one bucket) gives no pair; the K*(K-1)/2 pairs lose exactly the tied ones
    tied = ranking_pairs([["0"], ["1", "2"], ["3", "4", "5"], ["6"], ["7", "8"]], items)
    assert len(tied) == 9 * 8 // 2 - (1 + 3 + 1)
    assert ("text 1", "text 2") not in tied and ("text 2", "text 1") not in tied
    assert ranking_pairs([["0", "1", "2", "3"]], items) == []


def test_ranking_outside_k_4_to_9_or_partial_is_not_exported() -> None:
    ranking = Mapper((TEMPLATES / "output_ranking.xml").read_text(), "output_ranking")

    def outputs(k: int) -> dict:
        return {"prompt": "p", "outputs": [{"id": f"o{i}", "body": f"answer {i}"} for i in range(k)]}

    def buckets(k: int) -> list[dict]:
        return [{"from_name": "ranking", "to_name": "outputs", "type": "ranker",
                 "value": {"ranker": {f"rank_{i + 1}": [f"o{i}"] for i in range(k)}}}]

    for k in (4, 9):
        assert ranking.checked_record({"id": 1, "data": outputs(k)}, buckets(k))[1] == "ok"
    for k in (3, 10):
        assert ranking.checked_record({"id": 1, "data": outputs(k)}, buckets(min(k, 9))) == (None, "bad_task_data")
    partial = buckets(4)
    partial[0]["value"]["ranker"] = {"rank_1": ["o0"], "rank_2": ["o1"], "_": ["o2", "o3"]}  # two left unranked
    assert ranking.checked_record({"id": 1, "data": outputs(4)}, partial) == (None, "invalid_label")


def test_demonstrations_export_plain_instruction_response_pairs(tmp_path: Path) -> None:
    config = (TEMPLATES / "demonstrations.xml").read_text()
    mapper = Mapper(config, "demonstrations")
    assert mapper.task_type == "generation"
    response = "Danke schoen.\nOr simply: Danke."
    labeled = {"id": 4, "data": {"prompt": "Say thank you in German."}, "predictions": [],
               "annotations": [ann(1, 7, [{"from_name": "response", "to_name": "prompt", "type": "textarea",
                                           "value": {"text": [response]}}])]}
    out = export_tasks([labeled], config, tmp_path / "sft", ExportOptions(format="alpaca", ratios=(1, 0, 0)),
                       guideline="demonstrations")
    [row] = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert row == {"instruction": "Say thank you in German.", "input": "", "output": response, "system": ""}
    sharegpt = export_tasks([labeled], config, tmp_path / "sft2", ExportOptions(format="sharegpt", ratios=(1, 0, 0)),
                            guideline="demonstrations")
    [row] = [json.loads(line) for line in (sharegpt / "train.jsonl").read_text().splitlines()]
    assert row["conversations"] == [{"from": "human", "value": "Say thank you in German."},
                                    {"from": "gpt", "value": response}]


def test_unmappable_config_is_a_clear_error() -> None:
    with pytest.raises(MappingError, match="cannot be exported"):
        Mapper('<View><Image name="img" value="$image"/><RectangleLabels name="b" toName="img">'
               '<Label value="x"/></RectangleLabels></View>')


# --- cleaning -----------------------------------------------------------------------------------
def test_pii_found_and_redacted() -> None:
    text = "Mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111, ssn 123-45-6789."
    cleaned, found = redact(text)
    assert cleaned == "Mail [EMAIL] or call [PHONE], card [CARD], ssn [SSN]."
    assert found == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "SSN": 1}
    # what the seeds call PII: names, street addresses, IPs, birth dates
    assert redact("My name is Laura Bennett, I live at 12 Elm Road and was born on 12 March 1984; "
                  "my IP is 203.0.113.54.")[0] == \
        "My name is [NAME], I live at [ADDRESS] and was born on [BIRTH_DATE]; my IP is [IP]."
    # and what they do not: dates, times, order numbers, ISBNs, a company's hotline
    for clean in ("Book a flight from Boston to Denver on 2025-03-14 at 10:30.",
                  "What's the status of order 4155552671?", "Order #1234 5678 9012 3456 has not arrived.",
                  "Is ISBN 978-3-16-148410-0 the hardcover edition?",
                  "Call our customer service hotline at 1-800-555-0199 for help.",
                  "buy running shoes size 44", "Upgrade to version 1.2.3.4 before Monday."):
        assert find_pii(clean) == {}, clean


def test_pii_search_never_enters_structured_answer_fields(tmp_path: Path) -> None:
    """Flight slots: the date slot keeps its date, the name in the text is redacted, and a text slot
    that quotes a redacted string gets the same placeholder (it must not leak through the answer)."""
    config = (TEMPLATES / "flight_slots.xml").read_text()
    text = "This is Mr. Tom Baker, call me on 415-555-2671: fly me from Boston to Denver on 2025-03-14 at 10:30"

    def slot(name: str, value: str) -> dict:
        return {"from_name": name, "to_name": "text", "type": "textarea", "value": {"text": [value]}}

    result = [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["book_flight"]}},
              slot("departure_city", "Boston"), slot("arrival_city", "Denver"), slot("date", "2025-03-14"),
              slot("time", "10:30"),
              {"from_name": "class", "to_name": "text", "type": "choices", "value": {"choices": ["unspecified"]}}]
    ghost = [*result[:1], slot("departure_city", "Tom Baker"), *result[2:]]  # a slot quoting the name
    out = export_tasks([task(1, text, ann(1, 1, result)), task(2, text.replace("Denver", "Austin"),
                                                                 ann(2, 1, ghost))],
                       config, tmp_path / "ds", ExportOptions(near_threshold=None, min_per_class=0, seed=1),
                       guideline="flight_slots")
    rows = [json.loads(line) for s in ("train", "val", "test")
            for line in (out / f"{s}.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        answer = json.loads(row["output"])
        assert answer["date"] == "2025-03-14" and answer["time"] == "10:30", "structured slots are not searched"
        assert "Tom Baker" not in json.dumps(row) and "415-555-2671" not in json.dumps(row)
        assert "[NAME]" in row["data"]["text"] and "2025-03-14 at 10:30" in row["data"]["text"]
    assert {json.loads(r["output"])["departure_city"] for r in rows} == {"Boston", "[NAME]"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pii_found"] == {"NAME": 2, "PHONE": 2} and manifest["counts"]["pii_redacted"] == 2


def test_one_text_labelled_differently_is_resolved_or_dropped_never_kept_twice(tmp_path: Path) -> None:
    texts = [f"query {i} about subject {i * 7919 % 997}" for i in range(40)]
    tasks, tid = [], 0
    for i, text in enumerate(texts):
        labels = ["navigational", "informational"] if i % 2 else ["informational", "navigational", "informational"]
        for label in labels:  # odd: a 1:1 tie (dropped); even: 2 of 3 say informational (resolved)
            tid += 1
            tasks.append(task(tid, text, ann(tid, 1 + tid % 3, choice(label))))
    out = export_tasks(tasks, INTENT, tmp_path / "ds", ExportOptions(near_threshold=None, min_per_class=0))
    rows = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    seen = Counter(r["data"]["text"] for rs in rows.values() for r in rs)
    assert set(seen) == set(texts[0::2]) and set(seen.values()) == {1}, "one copy of each resolved text, no tie"
    assert all(json.loads(r["output"])["intent"] == "informational" for rs in rows.values() for r in rs)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["conflict_resolved"] == 20 and counts["conflict_dropped"] == 20
    assert counts["written_tasks"] == counts["written_rows"] == 20
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    assert len(lineage) == 20 and all("_text" not in t for t in lineage)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["splits"][s]["label_distribution"].get("informational", 0) for s in rows) == 20
    assert not any(manifest["splits"][s]["label_distribution"].get("navigational") for s in rows)


def test_a_label_outvoted_later_is_replaced_in_the_first_copys_split(tmp_path: Path) -> None:
    first = task(1, "cheap flights to rome", ann(1, 1, choice("transactional")))
    later = [task(i, "cheap flights to rome", ann(i, i, choice("informational"))) for i in (2, 3)]
    out = export_tasks([first, *later, *_tasks(20)[:20]], INTENT, tmp_path / "ds",
                       ExportOptions(near_threshold=None, min_per_class=0))
    lines = {s: (out / f"{s}.jsonl").read_text() for s in ("train", "val", "test")}
    rome = [s for s, text in lines.items() for line in text.splitlines() if "cheap flights to rome" in line]
    assert len(rome) == 1
    row = next(json.loads(line) for line in lines[rome[0]].splitlines() if "rome" in line)
    assert json.loads(row["output"]) == {"intent": "informational"}


def test_reference_tasks_are_not_training_data_unless_asked(tmp_path: Path) -> None:
    reference = {"id": 99, "data": {"text": "the answer key", "prelabel_reference": "set-1"},
                 "annotations": [ann(1, 1, choice("informational"), truth=True)], "predictions": []}
    tasks = [reference, *_tasks(10)[:10]]
    out = export_tasks(tasks, INTENT, tmp_path / "ds", ExportOptions(near_threshold=None, min_per_class=0))
    everything = "".join((out / f"{s}.jsonl").read_text() for s in ("train", "val", "test"))
    assert "the answer key" not in everything
    assert json.loads((out / "manifest.json").read_text())["counts"]["reference_task"] == 1
    asked = export_tasks(tasks, INTENT, tmp_path / "ds2",
                         ExportOptions(near_threshold=None, min_per_class=0, include_reference=True))
    assert "the answer key" in "".join((asked / f"{s}.jsonl").read_text() for s in ("train", "val", "test"))


def test_preference_pairs_carry_the_user_prompt_as_instruction(tmp_path: Path) -> None:
    config = (TEMPLATES / "output_ranking.xml").read_text()
    data = {"prompt": "Explain photosynthesis to a child.",
            "outputs": [{"id": f"o{i}", "body": f"answer number {i}"} for i in range(4)]}
    result = [{"from_name": "ranking", "to_name": "outputs", "type": "ranker",
               "value": {"ranker": {f"rank_{i + 1}": [f"o{i}"] for i in range(4)}}}]
    out = export_tasks([{"id": 1, "data": data, "annotations": [ann(1, 1, result)]}], config, tmp_path / "ds",
                       ExportOptions(format="pairwise", near_threshold=None, min_per_class=0, ratios=(1, 0, 0)),
                       guideline="output_ranking")
    pairs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(pairs) == 6
    assert {p["instruction"] for p in pairs} == {"Explain photosynthesis to a child."}
    assert pairs[0]["chosen"] == "answer number 0" and pairs[0]["rejected"] == "answer number 1"


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
    splits = [grouped.assign("all", group=f"g{i % 7}") for i in range(70)]
    for g in range(7):
        assert len({splits[i] for i in range(70) if i % 7 == g}) == 1
    assert [Splitter(seed=1).assign("x") for _ in range(30)] == [Splitter(seed=1).assign("x") for _ in range(30)]


def test_split_seeds_differ_and_arrival_order_does_not_decide() -> None:
    def splits(seed: int, n: int = 100) -> list[str]:
        splitter = Splitter(seed=seed)
        return [splitter.assign("a") for _ in range(n)]

    assert splits(0) != splits(1), "a different seed must give a different split"
    assert splits(0) == splits(0)
    # Over many seeds every arrival position is held out about 20% of the time: no position
    # (e.g. every 10th task by labeling order) is always val or test.
    held_out = Counter(i for seed in range(300) for i, split in enumerate(splits(seed, 20)) if split != "train")
    assert all(35 <= held_out[i] <= 90 for i in range(20)), held_out


def test_class_sorted_input_gives_balanced_stratified_splits(tmp_path: Path) -> None:
    labels = ["navigational", "informational", "transactional"]
    tasks = [task(i + 1, f"query {i} about {labels[i // 100]} topic {i * 7919 % 997}",
                  ann(i + 1, 1, choice(labels[i // 100])))
             for i in range(300)]  # sorted by class: 100 of each, one after another
    out = export_tasks(tasks, INTENT, tmp_path / "ds", ExportOptions(near_threshold=None, seed=5))
    manifest = json.loads((out / "manifest.json").read_text())
    for label in labels:
        per_split = [manifest["splits"][s]["label_distribution"][label] for s in ("train", "val", "test")]
        assert per_split == [80, 10, 10], (label, per_split)
    other = export_tasks(tasks, INTENT, tmp_path / "ds2", ExportOptions(near_threshold=None, seed=6))
    assert (out / "val.jsonl").read_text() != (other / "val.jsonl").read_text()


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
    out = export_tasks(_tasks(60), INTENT, tmp_path / "ds",
                       ExportOptions(format="alpaca", min_per_class=5, rare_classes="report"),
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
    assert set(manifest["files"]) == {"train.jsonl", "val.jsonl", "test.jsonl", "dataset_info.json", "lineage.jsonl"}
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


# --- rare classes, augmentation, caps, filters, lineage ----------------------------------------
def _labeled(labels: list[str], **data) -> list[dict]:
    words = ["alpha", "bravo", "delta", "echo", "golf", "hotel", "india", "kilo", "lima", "oscar"]
    return [{"id": i + 1, "data": {"text": f"{label} query {words[i % 10]} {i} {words[i * 7 % 10]}", **data},
             "annotations": [ann(i + 1, 1, choice(label))], "predictions": []} for i, label in enumerate(labels)]


def _rows_of(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def _label(row: dict) -> str:
    """The intent a row teaches: its output is the backend's JSON answer (one prompt)."""
    return json.loads(row["output"])["intent"]


def _text(row: dict) -> str:
    """The task text of a row: its prompt ends with it, and its data carries it."""
    assert row["instruction"].endswith(row["data"]["text"])
    return row["data"]["text"]


def test_rare_classes_are_dropped_from_every_split_by_default_or_only_reported(tmp_path: Path) -> None:
    tasks = _labeled(["navigational"] * 30 + ["informational"] * 30 + ["other"] * 9)
    out = export_tasks(tasks, INTENT, tmp_path / "drop", ExportOptions(near_threshold=None))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped_classes"] == {"other": 9, "transactional": 0, "entertainment": 0, "educational": 0}
    assert manifest["counts"]["rare_class_dropped"] == 9 and manifest["counts"]["written_rows"] == 60
    assert manifest["labels"] == ["navigational", "informational"]
    assert all(_label(r) != "other" for s in ("train", "val", "test") for r in _rows_of(out, s))
    report_only = ExportOptions(near_threshold=None, rare_classes="report")
    reported = export_tasks(tasks, INTENT, tmp_path / "report", report_only)
    manifest = json.loads((reported / "manifest.json").read_text())
    assert manifest["dropped_classes"] == {} and manifest["rare_classes"]["other"] == 9
    assert manifest["counts"]["written_rows"] == 69


def test_augmentation_adds_marked_synthetic_examples_to_train_only(tmp_path: Path) -> None:
    tasks = _labeled(["navigational"] * 70 + ["transactional"] * 20)  # 56 navigational in train: not augmented
    for i, t in enumerate(tasks[70:]):
        t["data"]["text"] = f"buy cheap shoes online fast number {i}"
    out = export_tasks(tasks, INTENT, tmp_path / "aug", ExportOptions(near_threshold=None, augment_below=50, seed=2))
    manifest = json.loads((out / "manifest.json").read_text())
    train = _rows_of(out, "train")
    synthetic = [r for r in train if r.get("synthetic")]
    assert synthetic and all(_label(r) == "transactional" for r in synthetic)
    human_train = manifest["splits"]["train"]["label_distribution"]["transactional"]
    assert len(synthetic) == 50 - human_train == manifest["counts"]["synthetic"]
    assert manifest["splits"]["train"]["synthetic_distribution"] == {"transactional": len(synthetic)}
    assert manifest["splits"]["train"]["count"] == len(train)
    originals = {_text(r) for r in train if not r.get("synthetic")}
    for row in synthetic:
        assert _text(row) not in originals and _text(row).split()[-1].isdigit()
    assert not any(r.get("synthetic") for s in ("val", "test") for r in _rows_of(out, s))
    held_out = {_text(r).lower() for s in ("val", "test") for r in _rows_of(out, s)}
    assert not held_out & {_text(r).lower() for r in synthetic}
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    assert sum(1 for t in lineage if t["synthetic"]) == len(synthetic)
    with pytest.raises(MappingError, match="classification"):
        export_tasks(tasks, (TEMPLATES / "ner.xml").read_text(), tmp_path / "x", ExportOptions(augment_below=50))


def test_synonym_substitution_replaces_about_a_third_of_the_words() -> None:
    import random

    from prelabel.export.augment import load_synonyms, synonym_variant

    table = load_synonyms()
    text = "buy cheap shoes online fast today please"
    variant = synonym_variant(text, table, random.Random(0))
    replaced = [word for word in text.split() if word not in variant.split()]
    assert variant != text and len(replaced) == round(0.3 * 7), (variant, replaced)
    assert synonym_variant("zzz qqq", table, random.Random(0)) == "zzz qqq"


def test_per_user_cap_and_split_by_user(tmp_path: Path) -> None:
    tasks = _labeled(["navigational", "informational"] * 150)
    for i, t in enumerate(tasks):
        t["data"]["submitter"] = "heavy" if i < 250 else f"user{i % 10}"
    out = export_tasks(tasks, INTENT, tmp_path / "cap", ExportOptions(near_threshold=None, user_field="submitter"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["over_user_cap"] == 50, "default cap: 200 per user"
    assert manifest["options"]["group_by"] == "data:submitter"
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    splits_of_user: dict[str, set[str]] = {}
    for trace in lineage:
        splits_of_user.setdefault(trace["user"], set()).add(trace["split"])
    assert all(len(s) == 1 for s in splits_of_user.values()), "a user's records span two splits"
    small = export_tasks(tasks, INTENT, tmp_path / "cap2",
                         ExportOptions(near_threshold=None, user_field="submitter", max_per_user=10))
    assert json.loads((small / "manifest.json").read_text())["counts"]["written_tasks"] == 10 + 5 * 10


def test_empty_texts_and_labels_outside_the_config_are_not_exported(tmp_path: Path) -> None:
    tasks = _labeled(["navigational"] * 12)
    tasks.append(task(100, "   ", ann(100, 1, choice("navigational"))))
    tasks.append(task(101, "a query with a retired label", ann(101, 1, choice("shopping"))))
    out = export_tasks(tasks, INTENT, tmp_path / "f", ExportOptions(near_threshold=None, rare_classes="report"))
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["empty_text"] == 1 and counts["invalid_label"] == 1 and counts["written_tasks"] == 12


def test_lineage_traces_every_row_to_its_task_and_pre_annotation(tmp_path: Path) -> None:
    tasks = _labeled(["navigational", "informational"] * 10)
    tasks[0]["predictions"] = [
        {"id": 5, "model_version": "qwen-14b@p-abc123", "result": choice("navigational")},
        {"id": 6, "model_version": "review:judge@p-def#passed", "result": choice("navigational")},
    ]
    tasks[1]["predictions"] = [{"id": 7, "model_version": "qwen-14b@p-abc123#needs_human", "result": []}]
    out = export_tasks(tasks, INTENT, tmp_path / "l", ExportOptions(near_threshold=None, rare_classes="report"))
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    assert len(lineage) == json.loads((out / "manifest.json").read_text())["counts"]["written_rows"]
    for trace in lineage:  # the trace points at its row
        row = _rows_of(out, trace["split"])[trace["line"] - 1]
        assert _text(row) == tasks[trace["task_id"] - 1]["data"]["text"]
    by_task = {t["task_id"]: t for t in lineage}
    assert by_task[1]["pre_annotation"] == {"prediction_id": 5, "model_version": "qwen-14b@p-abc123",
                                            "model": "qwen-14b", "prompt_version": "p-abc123", "status": "ok"}
    assert by_task[2]["pre_annotation"]["status"] == "needs_human"
    assert by_task[3]["pre_annotation"] is None
    assert all("task_id" not in r for r in _rows_of(out, "train")), "training files stay plain alpaca"
