"""Near-duplicate reuse, annotator screening, reviewer independence, the shared few-shot pool's rules."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.label_config.answers import check_answer
from prelabel.label_config.schema import build_schema
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.model_identity import DIFFERENT, SAME, UNKNOWN, ServerIdentity, compare
from prelabel.prediction.near_duplicates import group, reused_prediction
from prelabel.prediction.predictor import ContextBuilder
from prelabel.prediction.prompt import Example
from prelabel.quality.annotators import pair_agreement, screen
from prelabel.ranking.uncertainty import inclusion_uncertainty
from prelabel.settings import Settings

NER = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="book"/><Choice value="other"/></Choices>
<Labels name="ents" toName="text"><Label value="CITY"/></Labels></View>"""


# --- near-duplicate grouping and reuse -------------------------------------------------------
def test_near_duplicates_group_under_their_first_member_and_others_stay_alone():
    texts = ["Cheap flights from Paris to Rome next Friday", "cheap flights from paris to rome next friday!",
             "weather tomorrow in Oslo", "Cheap flights from Paris to Rome next Friday please", None,
             "how do vaccines work"]
    groups = group(texts, 0.7)
    assert [rep for rep, _ in groups] == [0, 0, 2, 0, 4, 5]
    assert groups[1][1] == 1.0  # case and punctuation do not count
    assert 0.7 <= groups[3][1] < 1.0
    assert [rep for rep, _ in group(texts, 0.99)] == [0, 0, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def ctx():
    return ContextBuilder(Settings()).context(NER)


def rep_prediction(ctx, text: str, answer: dict) -> dict:
    checked = check_answer(ctx.schema, [], answer, {"text": text})
    regions = [{**r, "score": 0.8, "prelabel": {"model": "m", "label_probs": {"book": 0.8, "other": 0.2}}}
               for rs in checked.regions.values() for r in rs]
    return {"result": regions, "score": 0.8, "model_version": "m@p",
            "meta": {"status": "ok", "provenance": {"model": "m", "llm_calls": 1, "cached": False}}}


def test_reused_answer_is_revalidated_against_the_members_own_text(ctx):
    rep = rep_prediction(ctx, "book Paris now", {"intent": "book", "ents": [{"text": "Paris", "label": "CITY"}]})
    reused = reused_prediction(ctx, {"id": 9, "data": {"text": "please book Paris now"}}, 3, rep, 0.8)
    assert reused["meta"]["provenance"]["reused_from"] == 3 and reused["meta"]["provenance"]["llm_calls"] == 0
    span = next(r for r in reused["result"] if r["from_name"] == "ents")
    assert (span["value"]["start"], span["value"]["end"]) == (12, 17)  # offsets in the member's own text
    assert "please book Paris now"[12:17] == "Paris"
    assert all(r["prelabel"]["reused_from"] == 3 for r in reused["result"])
    assert rep["result"][1]["value"]["start"] == 5, "the representative's prediction is not modified"
    # The span is not in the member's text: no reuse, the member is asked individually.
    assert reused_prediction(ctx, {"id": 10, "data": {"text": "please book Rome now"}}, 3, rep, 0.8) is None
    failed = {**rep, "meta": {**rep["meta"], "status": "needs_human"}}
    assert reused_prediction(ctx, {"id": 11, "data": {"text": "book Paris now"}}, 3, failed, 1.0) is None


# --- few-shot pool: never the task itself ------------------------------------------------------
def test_pool_never_shows_a_task_its_own_example():
    pool = FewShotPool([Example({"text": "cheap flights to rome"}, {"intent": "book"}, "task:5"),
                        Example({"text": "cheap flight to rome"}, {"intent": "book"}, "task:6"),
                        Example({"text": "weather"}, {"intent": "other"}, "task:7")])
    chosen = pool.select({"text": "cheap flights to rome!"}, 3, exclude="task:5")
    assert "task:5" not in [e.source for e in chosen] and len(chosen) == 2
    assert "task:5" in [e.source for e in pool.select({"text": "cheap flights to rome!"}, 3, exclude="task:6")]


# --- multiple-choice uncertainty -------------------------------------------------------------
def test_inclusion_uncertainty_is_the_least_settled_decision():
    rows = np.array([[0.99, 0.01, 0.02], [0.95, 0.5, 0.0], [1.0, 0.0, 0.3]])
    assert inclusion_uncertainty(rows) == pytest.approx([0.04, 1.0, 0.6])


# --- annotator screening -----------------------------------------------------------------------
CHOICES = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="book"/><Choice value="other"/></Choices></View>"""


def ann(who: str, label: str, ground_truth: bool = False) -> dict:
    return {"completed_by": who, "ground_truth": ground_truth, "was_cancelled": False,
            "result": [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}


def test_screening_scores_reference_majority_and_per_class_and_flags_the_outlier():
    schema = build_schema(CHOICES)
    truth = ["book", "other", "book", "other", "book", "book"]
    tasks = []
    for i, label in enumerate(truth):
        wrong = "other" if label == "book" else "book"
        tasks.append({"id": i, "data": {"text": f"t{i}"}, "annotations": [
            ann("lead", label, ground_truth=True), ann("good", label), ann("ok", label),
            ann("bad", wrong if i % 3 else label)]})
    report = screen(tasks, schema, bar=0.8, min_tasks=3)
    by = {a.annotator: a for a in report.annotators}
    assert by["good"].reference == 1.0 and by["good"].tasks == 6 and not by["good"].flags
    assert by["bad"].reference == pytest.approx(2 / 6)
    assert any("agreement" in f for f in by["bad"].flags)
    assert by["bad"].per_class["book"] == [1, 4] and by["bad"].per_class["other"] == [1, 2]
    # Majority of the others: good, ok and lead agree, so bad disagrees with them 4 times of 6.
    assert by["bad"].majority == pytest.approx(2 / 6) and by["good"].majority == 1.0


def test_ranking_agreement_counts_pairs_in_the_same_order():
    assert pair_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert pair_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0
    assert pair_agreement([1, 2, 3], [2, 1, 3]) == pytest.approx(2 / 3)


# --- reviewer independence ---------------------------------------------------------------------
def ident(endpoint: str, model: str, probe=None, weights=None) -> ServerIdentity:
    return ServerIdentity(endpoint, model, [model], weights, probe)


def test_same_weights_under_two_names_are_found_by_the_probe():
    probe = [[("Paris", -0.1), ("Paris", -0.1), ("London", -3.0)], [(".", -0.5), (".", -0.5), ("!", -1.2)]]
    noisy = [[("Paris", -0.105), ("Paris", -0.105), ("London", -2.99)], [(".", -0.5), (".", -0.5), ("!", -1.2)]]
    verdict, evidence = compare(ident("h:1", "smollm2", probe), ident("h:2", "smollm2-reviewer", noisy))
    assert verdict == SAME and "same weights" in evidence
    other = [[("Paris", -0.4), ("Paris", -0.4), ("Lyon", -2.0)], [(".", -0.5), (".", -0.5), ("!", -1.2)]]
    assert compare(ident("h:1", "a", probe), ident("h:2", "b", other))[0] == DIFFERENT


def test_a_probe_without_alternatives_is_compared_on_the_emitted_tokens():
    """A server that returns logprobs but no top_logprobs alternatives: no ZeroDivisionError, the
    emitted tokens' own log-probabilities decide."""
    bare = [[("Paris", -0.1)], [(".", -0.5)]]
    assert compare(ident("h:1", "a", bare), ident("h:2", "b", [[("Paris", -0.1)], [(".", -0.5)]]))[0] == SAME
    assert compare(ident("h:1", "a", bare), ident("h:2", "b", [[("Paris", -1.4)], [(".", -0.5)]]))[0] == DIFFERENT


def test_reported_weights_decide_before_the_probe_and_nothing_known_is_unknown():
    a, b = ident("h:1", "a", weights="/m/x.gguf"), ident("h:2", "b", weights="/m/x.gguf")
    assert compare(a, b)[0] == SAME
    assert compare(a, ident("h:2", "b", weights="Qwen/Qwen2.5-7B"))[0] == DIFFERENT
    assert compare(ident("h:1", "a"), ident("h:2", "b"))[0] == UNKNOWN


def test_predict_with_reuse_asks_one_task_per_group_and_the_failed_revalidations_alone(ctx):
    import asyncio

    from prelabel.prediction.near_duplicates import predict_with_reuse

    asked: list[list[int]] = []

    async def predict(batch, c, pool):  # the model: labels each task from its own text
        asked.append([t["id"] for t in batch])
        out = []
        for t in batch:
            city = "Paris" if "Paris" in t["data"]["text"] else "Rome"
            out.append(rep_prediction(ctx, t["data"]["text"], {"intent": "book",
                                                               "ents": [{"text": city, "label": "CITY"}]}))
        return out

    tasks = [{"id": 1, "data": {"text": "book a flight to Paris on Friday"}},
             {"id": 2, "data": {"text": "Book a flight to Paris on Friday!"}},
             {"id": 3, "data": {"text": "book a flight to Pariz on Friday"}},  # near, but no "Paris" in it
             {"id": 4, "data": {"text": "what is the weather in Rome today"}}]
    results = asyncio.run(predict_with_reuse(predict, tasks, ctx, None, 0.7))
    assert asked == [[1, 4], [3]], "one call per group, then the member whose reuse failed validation"
    assert results[1]["meta"]["provenance"]["reused_from"] == 1
    assert "reused_from" not in results[2]["meta"]["provenance"]
    assert [r["meta"]["provenance"]["llm_calls"] for r in results] == [1, 0, 1, 1]


def test_ground_truths_that_disagree_give_no_reference():
    schema = build_schema(CHOICES)
    tasks = [{"id": 1, "data": {"text": "t"}, "annotations": [
        ann("lead", "book", ground_truth=True), ann("second", "other", ground_truth=True), ann("x", "book")]}]
    by = {a.annotator: a for a in screen(tasks, schema, min_tasks=1).annotators}
    assert by["x"].reference_n == 0 and by["x"].majority_n == 0  # a tie among the others: no majority either
    assert by["lead"].reference == 0.0 and by["lead"].reference_n == 1  # its one other ground truth disagrees


def test_qualification_scores_only_the_reference_set_and_says_who_qualifies(tmp_path):
    import json

    from prelabel.quality.annotators import REFERENCE_FIELD, reference_tasks

    schema = build_schema(CHOICES)
    refs = tmp_path / "refs.jsonl"
    refs.write_text("\n".join(json.dumps({"data": {"text": f"r{i}"}, "answer": {"intent": label}})
                              for i, label in enumerate(["book", "other", "book", "book", "other"])))
    records = reference_tasks(refs, schema, "ref-1")
    assert [r["data"][REFERENCE_FIELD] for r in records] == ["ref-1"] * 5
    assert records[1]["result"][0]["value"] == {"choices": ["other"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"data": {"text": "x"}, "answer": {"intent": "shopping"}}))
    with pytest.raises(ValueError, match="does not fit"):
        reference_tasks(bad, schema, "ref-2")

    tasks = []
    for i, record in enumerate(records):
        label = record["result"][0]["value"]["choices"][0]
        tasks.append({"id": i, "data": record["data"], "annotations": [
            {**ann("lead", label, ground_truth=True)}, ann("new", label), ann("careless", "book")]})
    tasks.append({"id": 99, "data": {"text": "ordinary"}, "annotations": [ann("new", "other"), ann("x", "book")]})
    by = {a.annotator: a for a in screen(tasks, schema, bar=0.8, min_tasks=5, qualification=True).annotators}
    assert by["new"].tasks == 5 and by["new"].flags == ["qualified"]
    assert by["careless"].reference == pytest.approx(3 / 5) and "qualified" not in by["careless"].flags
    assert "x" not in by  # only the reference set counts


def test_prefix_cache_noise_of_one_llama_server_still_reads_as_the_same_weights():
    """Measured: SmolLM2 on llama.cpp, the same probe on a fresh prompt vs a cached one."""
    fresh = [[("The", -1.98785), ("The", -1.98785), ("Paris", -2.26919), ("I", -3.27950), ("A", -3.56146)],
             [(" of", -0.04073), (" of", -0.04073), (" is", -3.76089), (",", -5.80886), (" city", -5.83540)],
             [(" France", -0.15846), (" France", -0.15846), (" the", -3.54290), (" Spain", -4.59966)]]
    cached = [[("The", -1.93941), ("The", -1.93941), ("Paris", -2.35127), ("I", -3.22167), ("A", -3.49902)],
              [(" of", -0.03499), (" of", -0.03499), (" is", -3.90162), (",", -5.91200), (" city", -5.92951)],
              [(" France", -0.16839), (" France", -0.16839), (" the", -3.35083), (" Spain", -4.59679)]]
    assert compare(ident("h:1", "smollm2", fresh), ident("h:1", "smollm2-reviewer", cached))[0] == SAME
