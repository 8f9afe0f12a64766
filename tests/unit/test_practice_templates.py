"""The shipped templates follow the labeling practice of docs/seed-digest.md (its last section).

Each test pins one rule of the practice to what a model or an annotator actually gets: the
guideline text rendered into the prompt, the config Label Studio shows, the answers the
validator accepts, and what the predictor does with a task outside the practice.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from prelabel.label_config.answers import check_answer
from prelabel.label_config.guideline import load_guideline, template_path
from prelabel.label_config.schema import build_schema
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import Predictor
from prelabel.prediction.prompt import Prompt
from prelabel.settings import Settings


def template(name: str):
    schema = build_schema(template_path(name, ".xml").read_text(encoding="utf-8"))
    guideline = load_guideline(name)
    return schema, guideline, Prompt(schema, guideline).system


# --- search intent ----------------------------------------------------------------------------
def test_search_intent_price_checks_and_comparisons_are_informational() -> None:
    _, guideline, prompt = template("search_intent")
    assert not re.search(r"price comparisons?[^.]*are transactional", prompt, re.IGNORECASE), "the old, inverted rule"
    price_rules = [rule for rule in guideline.rules if "price" in rule.lower()]
    assert any(re.search(r"comparing prices[^.]*are informational, not transactional", r) for r in price_rules)
    assert all(rule in prompt for rule in price_rules)
    informational = guideline.labels["intent"]["informational"].examples
    assert any("price" in e for e in informational) and any("compare" in e for e in informational)
    assert not any("price" in e or "cheap" in e for e in guideline.labels["intent"]["transactional"].examples)
    price_shots = [e for e in guideline.examples if "price" in e.data["text"]]
    assert price_shots and all(e.answer["intent"] == "informational" for e in price_shots)


# --- ranking: ties, buckets, K = 4..9 -----------------------------------------------------------
def outputs(k: int) -> dict:
    outputs = [{"id": f"o{i}", "title": f"Output {i}", "body": f"answer {i}"} for i in range(k)]
    return {"prompt": "p", "outputs": outputs}


def test_ranking_template_uses_label_studio_buckets_and_allows_ties() -> None:
    schema, guideline, prompt = template("output_ranking")
    ranker = schema.field("ranking")
    assert ranker.buckets == [f"rank_{i}" for i in range(1, 10)]
    texts = schema.object_texts(outputs(4))
    checked = check_answer(schema, guideline.constraints, {"ranking": [["o2"], ["o0", "o3"], ["o1"]]}, texts)
    assert not checked.errors
    [region] = checked.regions["ranking"]
    assert region["value"] == {"ranker": {"rank_1": ["o2"], "rank_2": ["o0", "o3"], "rank_3": ["o1"]}}
    assert ranker.from_regions([region]) == [["o2"], ["o0", "o3"], ["o1"]]
    assert "tie" in prompt and "dictator" in prompt and "customer assistant" in prompt
    assert "toxicity first" in prompt


@pytest.mark.parametrize("answer, reason", [
    ([["o0"], ["o1"], ["o2"]], "schema"),  # o3 left out
    ([["o0", "o1"], ["o1", "o2", "o3"]], "schema"),  # o1 twice
    ([["o0"], [], ["o1", "o2", "o3"]], "schema"),  # an empty group
    (["o0", "o1", "o2", "o3"], "schema"),  # a flat order where groups are asked for
    ([["o0", "o1", "o2", "o3", "o9"]], "label_not_in_set"),
])
def test_invalid_bucketed_rankings_fail_closed(answer, reason) -> None:
    schema, _, _ = template("output_ranking")
    checked = check_answer(schema, [], {"ranking": answer}, schema.object_texts(outputs(4)))
    assert "ranking" not in checked.regions and checked.errors["ranking"].reason == reason


def test_more_groups_than_buckets_fail() -> None:
    schema = build_schema('<View><List name="l" value="$l"/><Ranker name="r" toName="l">'
                          '<Bucket name="good"/><Bucket name="bad"/></Ranker></View>')
    texts = schema.object_texts({"l": [{"id": "a"}, {"id": "b"}, {"id": "c"}]})
    assert check_answer(schema, [], {"r": [["a"], ["b"], ["c"]]}, texts).errors["r"].reason == "schema"
    assert check_answer(schema, [], {"r": [["a"], ["b", "c"]]}, texts).regions["r"][0]["value"] == {
        "ranker": {"good": ["a"], "bad": ["b", "c"]}}


@pytest.mark.parametrize("k, ok", [(3, False), (4, True), (9, True), (10, False)])
def test_ranking_tasks_outside_k_4_to_9_go_to_a_human_without_an_llm_call(k: int, ok: bool) -> None:
    schema, guideline, _ = template("output_ranking")
    problem = guideline.input_problem(outputs(k), schema)
    assert (problem is None) == ok
    if ok:
        return
    assert f"has {k} items" in problem and "4 to 9" in problem
    settings = Settings(llm_base_urls="http://127.0.0.1:9/v1", llm_max_retries=0)  # nothing listens there

    async def run() -> dict:
        llm = LLMClient(settings)
        try:
            predictor = Predictor(settings, llm, cache=None)
            ctx = predictor.context(template_path("output_ranking", ".xml").read_text(), "output_ranking")
            return await predictor.predict_task({"id": 1, "data": outputs(k)}, ctx)
        finally:
            await llm.aclose()

    prediction = asyncio.run(run())
    assert prediction["meta"]["status"] == "needs_human" and prediction["result"] == []
    assert prediction["meta"]["errors"]["task"].startswith("bad_task_data:"), "rejected before any LLM call"


def test_guideline_examples_outside_the_item_bounds_are_reported() -> None:
    schema, guideline, _ = template("output_ranking")
    bad = guideline.model_copy(deep=True)
    bad.examples[0].data["outputs"] = bad.examples[0].data["outputs"][:3]
    bad.examples[0].answer = {"ranking": [["o2"], ["o3"], ["o1"]]}
    errors, _ = bad.check_against(schema)
    assert any("has 3 items" in e for e in errors)


# --- instruction and output labels --------------------------------------------------------------
def test_instruction_labels_pii_is_conservative_with_public_figure_and_sensitive_flags() -> None:
    schema, guideline, prompt = template("instruction_labels")
    assert set(schema.field("pii_only_public_figures").label_values) == {"yes", "no", "not_applicable"}
    assert set(schema.field("pii_sensitive_context").label_values) == {"yes", "no", "not_applicable"}
    assert "public figures are fine" not in schema.config
    assert "full name always counts" in prompt.lower() or "full names always count" in prompt.lower()
    for phrase in ("famous historical", "Greek mythology", "partly masked", "real or fictional", "a band",
                   "school class year", "widely known facts about public figures are not sensitive"):
        assert phrase.lower() in prompt.lower(), phrase
    famous = [e for e in guideline.examples if "Marie Curie" in e.data["prompt"]]
    assert famous and famous[0].answer["pii"] == "certain" and famous[0].answer["pii_only_public_figures"] == "yes"
    assert "uncertain" in guideline.when_unsure and "certain no" in guideline.when_unsure


def test_output_rating_na_hallucination_boundaries_and_criteria_order() -> None:
    schema, _, prompt = template("output_rating")
    assert "not_applicable" in schema.field("inappropriate_for_customer_assistant").label_values
    for not_hallucination in ("wrong sentiment", "summary instead of keywords", "copied from the prompt",
                              "slightly requires", "extra examples", "empty output"):
        assert not_hallucination in prompt, not_hallucination
    assert "in training data helpfulness comes first" in prompt
    assert "in evaluation, truthfulness and harmlessness come first" in prompt
    assert "loans, medicine, law" in prompt


# --- toxicity -------------------------------------------------------------------------------
def test_toxicity_relative_to_expectation_and_continuity_anchors() -> None:
    schema, guideline, prompt = template("toxicity")
    relative = guideline.labels["relative_toxicity"]
    assert all("expect" in relative[v].definition for v in ("-1", "0", "1"))
    continuity = guideline.instructions["continuity"]
    assert re.search(r"1 = no reasonable continuation", continuity)
    assert re.search(r"4 = somewhat plausible[^;]*error that would surprise you a little", continuity)
    assert re.search(r"7 = a perfect", continuity)
    assert "toxicity first" in prompt and "then by continuity" in prompt
    assert "considered toxic by some" in guideline.labels["absolute_toxicity"]["1"].definition
    assert "expected" in schema.config


# --- demonstrations -------------------------------------------------------------------------
def test_demonstrations_template_asks_for_the_ideal_response() -> None:
    schema, guideline, _ = template("demonstrations")
    [field] = schema.fields
    assert field.tag == "TextArea" and field.attrs.get("required") == "true"
    assert guideline.examples and all(isinstance(e.answer["response"], str) for e in guideline.examples)


# --- flight slots ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flights():
    schema, guideline, prompt = template("flight_slots")
    return schema, guideline, prompt


def answer(**changes) -> dict:
    base = {"intent": "book_flight", "departure_city": "Paris", "arrival_city": "Rome", "date": "2025-05-01",
            "time": "10:00", "class": "economy", "passenger_count": 1}
    return {**base, **changes}


def test_flight_slots_class_keeps_its_name(flights) -> None:
    schema, _, _ = flights
    assert "class" in {f.name for f in schema.fields} and "cabin_class" not in {f.name for f in schema.fields}


@pytest.mark.parametrize("slot", ["departure_city", "arrival_city"])
def test_flight_slots_departure_and_arrival_are_required(flights, slot: str) -> None:
    schema, guideline, _ = flights
    texts = {"text": "a flight from Paris to Rome"}
    checked = check_answer(schema, guideline.constraints, answer(**{slot: ""}), texts)
    assert checked.errors[slot].reason == "empty" and slot not in checked.regions


@pytest.mark.parametrize("date, ok", [("2025-05-01", True), ("tomorrow", True), ("the day after tomorrow", True),
                                      ("next Friday", True), ("Tomorrow", True), ("2025-13-01", False),
                                      ("whenever", False), ("01/05/2025", False)])
def test_flight_slots_relative_dates_are_kept_as_written(flights, date: str, ok: bool) -> None:
    schema, guideline, prompt = flights
    checked = check_answer(schema, guideline.constraints, answer(date=date), {"text": f"Paris to Rome {date}"})
    assert ("date" in checked.regions) == ok, checked.errors
    assert '"tomorrow"' in prompt and "kept as written" in prompt


# --- prelabel predict input -------------------------------------------------------------------
def test_predict_reads_plain_text_one_item_per_line_and_json_forms() -> None:
    from prelabel.predict_cli import read_tasks

    assert read_tasks("facebook login\n\n  iphone price \n", "auto", "text") == [
        {"data": {"text": "facebook login"}}, {"data": {"text": "iphone price"}}]
    assert read_tasks('{"text": "a"}\n{"data": {"text": "b"}, "id": 3}\n', "auto", "text") == [
        {"data": {"text": "a"}}, {"data": {"text": "b"}, "id": 3}]
    assert read_tasks('[{"text": "a"}]', "auto", "text") == [{"data": {"text": "a"}}]
    assert read_tasks('{"not": "json"} but text', "text", "q") == [{"data": {"q": '{"not": "json"} but text'}}]
    with pytest.raises(ValueError, match="one text object"):
        read_tasks("a line", "auto", None)


# --- the guidelines against the seeds (issue 22) --------------------------------------------------
def test_search_intent_transactional_is_buying_booking_ordering_and_the_demo_data_follows_it() -> None:
    from tests.support.intent_data import queries

    _, guideline, _ = template("search_intent")
    transactional = guideline.labels["intent"]["transactional"]
    assert not re.search(r"download|subscribe|sign.?up", transactional.definition + " ".join(transactional.examples))
    assert not any(re.search(r"download|sign-up", rule) for rule in guideline.rules)
    for held_out in (False, True):
        rows = queries(40, held_out=held_out)
        price_checks = [r for r in rows if re.search(r"\b(price|cheap|deals?)\b", r["text"])]
        assert all(r["label"] != "transactional" for r in price_checks), price_checks


def test_instruction_labels_follow_the_seed() -> None:
    _, guideline, prompt = template("instruction_labels")
    flags = guideline.labels["content_flags"]
    for harm in ("abuse", "terrorism", "self-harm"):
        assert harm in flags["violent"].definition and harm in flags["encourages_violence"].definition
    for protected in ("age", "veteran status", "genetic information", "nationality"):
        assert protected in flags["denigrates_protected_class"].definition
    pii = guideline.labels["pii"]
    assert "first name, username, stage name or pseudonym that identifies someone" in pii["certain"].definition
    assert "biblical" in pii["uncertain"].definition
    assert "Only flag content that is in the instruction itself" not in prompt
    assert any("asks for" in rule and "violent" in rule for rule in guideline.rules)
    assert 'answer "no"' not in (guideline.when_unsure or "")


def test_output_rating_and_ranking_follow_the_seed() -> None:
    _, rating, rating_prompt = template("output_rating")
    assert "Independent of quality" in rating.labels["fails_to_follow_instruction"]["yes"].definition
    assert "reasonable prompt answered badly" not in rating_prompt
    assert not re.search(r"at most 5 overall|caps the overall|middle rating 4", rating_prompt)
    harm = rating.labels["harmful_advice"]["yes"].definition
    assert all(part in harm for part in ("psychological", "property", "environment", "institutions"))
    _, ranking, ranking_prompt = template("output_ranking")
    for prompt in (rating_prompt, ranking_prompt):
        assert "(a) it is much more helpful, (b) it is only slightly less truthful or harmless, and (c)" in prompt
    assert "ranks below any output that follows it" not in ranking_prompt
    assert "shorter" not in ranking_prompt
    assert "more likely to cause harm to the user" in ranking_prompt
    assert "declines" in ranking_prompt


def test_toxicity_rates_the_prompt_and_is_conservative_when_unsure() -> None:
    schema, guideline, _ = template("toxicity")
    assert schema.field("prompt_toxicity").label_values == ["0", "1", "2"]
    assert schema.field("prompt_toxicity").object_name == "prompt"
    assert "higher" in (guideline.when_unsure or "") and "Choose 0" not in (guideline.when_unsure or "")


def test_demonstrations_ask_for_clarification_and_rebut_false_premises() -> None:
    _, guideline, prompt = template("demonstrations")
    assert "ask for clarification" in (guideline.when_unsure or "") and "confusing" in (guideline.when_unsure or "")
    assert "international" in prompt and "false premise" in prompt


@pytest.mark.parametrize("date", ["明天", "后天", "mañana"])
def test_flight_slots_relative_dates_in_any_language(flights, date: str) -> None:
    schema, guideline, _ = flights
    checked = check_answer(schema, guideline.constraints, answer(date=date), {"text": f"{date} Paris Rome"})
    assert checked.ok, checked.errors


def test_flight_slots_fill_only_what_is_stated_and_allow_groups(flights) -> None:
    schema, guideline, _ = flights
    texts = {"text": "a flight from Paris to Rome"}
    unstated = answer(passenger_count="")
    assert check_answer(schema, guideline.constraints, unstated, texts).ok
    assert check_answer(schema, guideline.constraints, answer(passenger_count=12), texts).ok, "no cap at 9"
    assert not check_answer(schema, guideline.constraints, answer(passenger_count=0), texts).ok
    assert not any("when not stated, 1" in rule for rule in guideline.rules)
    no_count = [e for e in guideline.examples if "passenger_count" not in e.answer]
    assert no_count, "an example whose text states no count has no count"
