"""The reviewer's answer -> status: verdicts, corrections validated like predictions, never a default."""

from __future__ import annotations

import json

import pytest

from prelabel.contract import ReviewStatus
from prelabel.jobs.reviewer_independence import check_reviewer
from prelabel.label_config.controls import AnswerError
from prelabel.prediction.predictor import ContextBuilder
from prelabel.prediction.review import (
    Review,
    judge,
    proposed_answer,
    review_messages,
    review_prediction,
    review_schema,
)
from prelabel.settings import Settings

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="navigational"/><Choice value="informational"/>
<Choice value="other"/></Choices>
<Labels name="ents" toName="text"><Label value="CITY"/></Labels></View>"""
TEXT = "weather in Paris"
TEXTS = {"text": TEXT}


@pytest.fixture(scope="module")
def ctx():
    return ContextBuilder(Settings()).context(CONFIG)


def regions_for(ctx, answer: dict) -> list[dict]:
    from prelabel.label_config.answers import check_answer

    checked = check_answer(ctx.schema, [], answer, TEXTS)
    assert not checked.errors
    return [r for rs in checked.regions.values() for r in rs]


PROPOSED = {"intent": "navigational", "ents": [{"text": "Paris", "label": "CITY"}]}


def test_proposed_answer_round_trips_regions(ctx) -> None:
    answer = proposed_answer(ctx, regions_for(ctx, PROPOSED))
    assert answer["intent"] == "navigational"
    assert [(e["text"], e["label"]) for e in answer["ents"]] == [("Paris", "CITY")]


def test_correct_verdict_passes(ctx) -> None:
    review = judge(ctx, json.dumps({"verdict": "correct", "rationale": "fits"}), TEXTS, PROPOSED)
    assert (review.status, review.rationale, review.corrected) == (ReviewStatus.PASSED, "fits", None)


def test_incorrect_with_valid_correction_is_rejected_with_regions(ctx) -> None:
    corrected = {"intent": "informational", "ents": [{"text": "Paris", "label": "CITY"}]}
    review = judge(ctx, json.dumps({"verdict": "incorrect", "rationale": "x" * 80, "corrected": corrected}),
                   TEXTS, PROPOSED)
    assert review.status == ReviewStatus.REJECTED
    assert len(review.rationale) == 50, "the rationale is capped at 50 characters"
    values = [r["value"] for r in review.corrected.regions["intent"]]
    assert values == [{"choices": ["informational"]}]


@pytest.mark.parametrize("answer, reason", [
    ({"verdict": "maybe", "rationale": ""}, "label_not_in_set"),
    ({"verdict": "incorrect", "rationale": "no fix"}, "empty"),
    ({"verdict": "incorrect", "rationale": "", "corrected": {"intent": "shopping", "ents": []}}, "label_not_in_set"),
    ({"verdict": "incorrect", "rationale": "",
      "corrected": {"intent": "other", "ents": [{"text": "Lyon", "label": "CITY"}]}}, "span_not_found"),
])
def test_unusable_review_raises_never_a_default(ctx, answer: dict, reason: str) -> None:
    with pytest.raises(AnswerError) as info:
        judge(ctx, json.dumps(answer), TEXTS, PROPOSED)
    assert info.value.reason == reason


def test_broken_json_raises(ctx) -> None:
    with pytest.raises(AnswerError):
        judge(ctx, '{"verdict": "correct", ', TEXTS, PROPOSED)


def test_incorrect_but_same_answer_needs_human(ctx) -> None:
    answer = proposed_answer(ctx, regions_for(ctx, PROPOSED))
    review = judge(ctx, json.dumps({"verdict": "incorrect", "rationale": "?", "corrected": answer}), TEXTS, answer)
    assert review.status == ReviewStatus.NEEDS_HUMAN


def test_schema_and_messages_carry_guideline_input_and_proposal(ctx) -> None:
    schema = review_schema(ctx)
    assert schema["properties"]["verdict"]["enum"] == ["correct", "incorrect"]
    assert schema["properties"]["corrected"] == ctx.schema.json_schema()
    messages = review_messages(ctx, TEXTS, PROPOSED)
    assert ctx.prompt.system in messages[0]["content"]
    assert TEXT in messages[1]["content"] and '"navigational"' in messages[1]["content"]


def test_review_prediction_carries_verdict_in_version_and_regions(ctx) -> None:
    pre = {"id": 41, "model_version": "m@p-1", "score": 0.8, "result": regions_for(ctx, PROPOSED)}
    passed = review_prediction("review:r@p-1", pre, Review(ReviewStatus.PASSED, "ok", "correct", confidence=0.93))
    # The reviewer's own confidence, never the pre-annotation's score or a constant.
    assert passed["model_version"] == "review:r@p-1#passed" and passed["score"] == 0.93
    no_logprobs = review_prediction("review:r@p-1", pre, Review(ReviewStatus.PASSED, "ok", "correct"))
    assert no_logprobs["score"] == 0.5 and no_logprobs["result"][0]["prelabel"]["review"]["score_source"] == "none"
    assert all(r["prelabel"]["review"]["reviewed"] == 41 for r in passed["result"])
    assert [r["value"] for r in passed["result"]] == [r["value"] for r in pre["result"]]

    corrected = judge(ctx, json.dumps({"verdict": "incorrect", "rationale": "info", "corrected": {
        "intent": "informational", "ents": [{"text": "Paris", "label": "CITY"}]}}), TEXTS, PROPOSED)
    corrected.confidence, corrected.corrected_scores = 0.61, {"intent": 0.61, "ents": 0.9}
    rejected = review_prediction("review:r@p-1", pre, corrected, "different_weights")
    assert rejected["model_version"].endswith("#rejected") and rejected["score"] == 0.61
    assert {r["from_name"]: r["score"] for r in rejected["result"]} == {"intent": 0.61, "ents": 0.9}
    assert rejected["result"][0]["prelabel"]["review"]["independence"] == "different_weights"
    assert {"choices": ["informational"]} in [r["value"] for r in rejected["result"]]
    human = review_prediction("review:r@p-1", pre, Review(ReviewStatus.NEEDS_HUMAN))
    assert human["score"] == 0.0


def test_reviewer_must_differ_from_pre_annotator() -> None:
    with pytest.raises(ValueError, match="differ"):
        check_reviewer(Settings(llm_model="a"))
    check_reviewer(Settings(llm_model="a", reviewer_model="b"))
    check_reviewer(Settings(llm_model="a", reviewer_base_urls=["http://other:1/v1"]))


def _tokens(pieces: list[str], alternatives: dict[int, dict[str, float]]):
    import math

    from prelabel.prediction.llm_client import TokenLogprob

    return [TokenLogprob(len(p.encode()), math.log(alternatives.get(i, {}).get(p, 0.999)),
                         tuple((t, math.log(q)) for t, q in alternatives.get(i, {}).items()))
            for i, p in enumerate(pieces)]


def test_reviewer_confidence_comes_from_its_own_verdict_and_correction_logprobs(ctx) -> None:
    from prelabel.prediction.llm_client import Completion
    from prelabel.prediction.review import add_confidence

    pieces = ['{"', "verdict", '":', ' "', "inc", "orrect", '",', ' "', "rationale", '":', ' "', "info", '",',
              ' "', "corrected", '":', ' {"', "intent", '":', ' "', "inform", "ational", '",', ' "', "ents", '":',
              ' [{"', "text", '":', ' "', "Paris", '",', ' "', "label", '":', ' "', "CITY", '"}]}}']
    content = "".join(pieces)
    tokens = _tokens(pieces, {4: {"inc": 0.7, "correct": 0.3}, 20: {"inform": 0.8, "nav": 0.15, "other": 0.05}})
    completion = Completion(content, tokens, "r", "h:1", 1, 0.1, "json_object")
    review = judge(ctx, content, TEXTS, PROPOSED)
    add_confidence(ctx, completion, review)
    assert review.verdict_probs == pytest.approx({"correct": 0.3, "incorrect": 0.7}, abs=0.01)
    assert review.corrected_label_probs["intent"]["informational"] == pytest.approx(0.8, abs=0.01)
    assert review.corrected_scores["intent"] == pytest.approx(0.8, abs=0.01)
    assert review.confidence == pytest.approx(0.7, abs=0.01)  # the least sure part: the verdict

    unsure = _tokens(pieces, {4: {"inc": 0.9, "correct": 0.1}, 20: {"inform": 0.4, "nav": 0.6}})
    review = judge(ctx, content, TEXTS, PROPOSED)
    add_confidence(ctx, Completion(content, unsure, "r", "h:1", 1, 0.1, "json_object"), review)
    assert review.confidence == pytest.approx(0.4, abs=0.01)  # now the correction is the weak part

    review = judge(ctx, content, TEXTS, PROPOSED)
    add_confidence(ctx, Completion(content, None, "r", "h:1", 1, 0.1, "json_object"), review)
    assert review.confidence is None
