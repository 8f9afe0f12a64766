"""Interactive context: what the labeling screen sends becomes constraints on one answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from prelabel.label_config.answers import check_answer
from prelabel.label_config.guideline import load_guideline
from prelabel.label_config.schema import build_schema
from prelabel.prediction.interactive import (
    Given,
    GivenSpans,
    SelectedSpans,
    constrained_context,
    parse_context,
    pinned_schema,
)
from prelabel.prediction.llm_client import LLMClient
from prelabel.prediction.predictor import ContextBuilder, Predictor
from prelabel.settings import Settings

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
PROMPT_CONFIG = (TEMPLATES / "interactive_prompt.xml").read_text()
NER_CONFIG = (TEMPLATES / "ner.xml").read_text()
NER_TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."
MESSAGE = "The parcel arrived today but the lamp inside is broken in two pieces."


def context(config: str, guideline: str):
    return ContextBuilder(Settings()).context(config, guideline)


def textarea(name: str, *texts: str, region_id: str = "r1") -> dict:
    return {"id": region_id, "from_name": name, "to_name": "text", "type": "textarea", "origin": "manual",
            "value": {"text": list(texts)}}


def span(start: int, end: int, labels: list, region_id: str = "s1", text: str | None = None) -> dict:
    return {"id": region_id, "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
            "value": {"start": start, "end": end, "text": NER_TEXT[start:end] if text is None else text,
                      "labels": labels}}


def test_prompt_textarea_is_input_not_an_answer_field():
    schema = build_schema(PROMPT_CONFIG)
    assert schema.prompt_control == "prompt"
    assert [c.name for c in schema.fields] == ["answer", "category"]
    assert "prompt" not in schema.json_schema()["properties"]
    assert not schema.unsupported  # not "skipped" either: it is read from the context


def test_prompt_is_read_and_other_texts_are_not_pinned_under_a_prompt():
    schema = build_schema(PROMPT_CONFIG)
    raw = {"result": [textarea("prompt", "draft a reply", "in French"),
                      textarea("answer", "an old draft", region_id="r2")]}
    interaction = parse_context(raw, schema, {"text": MESSAGE})
    assert interaction.prompt == "draft a reply\nin French"
    assert interaction.given == {}  # the old answer is what the prompt rewrites
    assert interaction.ignored == []
    # without a prompt, an annotator's text is theirs
    alone = parse_context({"result": [textarea("answer", "my own summary")]}, schema, {"text": MESSAGE})
    assert alone.given == {"answer": "my own summary"} and alone.prompt is None


def test_instruction_reaches_the_system_prompt_and_changes_the_version():
    ctx = context(PROMPT_CONFIG, "interactive_prompt")
    raw = {"result": [textarea("prompt", "Answer in exactly three words.")]}
    interaction = parse_context(raw, ctx.schema, {"text": MESSAGE})
    derived = constrained_context(ctx, interaction)
    assert "# Annotator's instruction" in derived.prompt.system
    assert "Answer in exactly three words." in derived.prompt.system
    assert ctx.prompt.system in derived.prompt.system  # the guideline prompt stays whole
    assert derived.prompt.version != ctx.prompt.version
    assert len(derived.pool) == 0 and len(ctx.pool) > 0  # few-shot answers ignore the instruction
    other = constrained_context(ctx, parse_context({"result": [textarea("prompt", "Translate to German.")]},
                                                   ctx.schema, {"text": MESSAGE}))
    assert other.prompt.version not in (derived.prompt.version, ctx.prompt.version)
    # no usable context: the project's own context, untouched
    assert constrained_context(ctx, parse_context({"result": []}, ctx.schema, {"text": MESSAGE})) is ctx


def test_chosen_choice_is_given_first_and_kept_whatever_the_model_says():
    ctx = context(PROMPT_CONFIG, "interactive_prompt")
    raw = {"result": [{"id": "c1", "from_name": "category", "to_name": "text", "type": "choices",
                       "value": {"choices": ["billing"]}}]}
    interaction = parse_context(raw, ctx.schema, {"text": MESSAGE})
    assert interaction.given == {"category": "billing"}
    derived = constrained_context(ctx, interaction)
    first = derived.schema.fields[0]
    assert isinstance(first, Given) and first.name == "category" and first.tag == "Choices"
    assert list(derived.schema.json_schema()["properties"]) == ["category", "answer"]
    assert derived.schema.json_schema()["properties"]["category"] == {"type": "string", "enum": ["billing"]}
    assert "Already decided by the annotator" in derived.prompt.system
    checked = check_answer(derived.schema, [], {"category": "shipping", "answer": "A broken lamp."},
                           {"text": MESSAGE})
    assert checked.ok
    assert checked.regions["category"][0]["value"] == {"choices": ["billing"]}


def test_selected_span_is_the_only_span_labeled_and_keeps_its_region_id():
    ctx = context(NER_CONFIG, "ner")
    raw = {"result": [span(37, 42, [], region_id="sel-1")]}  # "Paris", no label yet (allowEmpty)
    interaction = parse_context(raw, ctx.schema, {"text": NER_TEXT})
    derived = constrained_context(ctx, interaction)
    [field] = derived.schema.fields
    assert isinstance(field, SelectedSpans)
    schema = derived.schema.json_schema()["properties"]["label"]
    assert schema["minItems"] == schema["maxItems"] == 1
    assert schema["items"]["properties"]["text"]["enum"] == ["Paris"]
    assert "Label only these spans" in derived.prompt.system and '"Paris" (characters 37-42)' in derived.prompt.system
    # the model names other entities too: only the selected span gets a region
    answer = {"label": [{"text": "Paris", "label": "LOC"}]}
    checked = check_answer(derived.schema, [], answer, {"text": NER_TEXT})
    [region] = checked.regions["label"]
    assert region["id"] == "sel-1"
    assert region["value"] == {"start": 37, "end": 42, "text": "Paris", "labels": ["LOC"]}
    wrong = check_answer(derived.schema, [], {"label": [{"text": "Paris", "label": "CITY"}]}, {"text": NER_TEXT})
    assert wrong.errors["label"].reason == "label_not_in_set"
    extra = check_answer(derived.schema, [], {"label": [{"text": "Paris", "label": "LOC"},
                                                        {"text": "Angela Merkel", "label": "PER"}]},
                         {"text": NER_TEXT})
    assert extra.errors["label"].reason == "schema"


def test_labeled_spans_are_kept_and_the_model_adds_the_others():
    ctx = context(NER_CONFIG, "ner")
    interaction = parse_context({"result": [span(0, 13, ["PER"], region_id="mine")]}, ctx.schema, {"text": NER_TEXT})
    derived = constrained_context(ctx, interaction)
    [field] = derived.schema.fields
    assert isinstance(field, GivenSpans)
    answer = {"label": [{"text": "Merkel", "label": "ORG"}, {"text": "Paris", "label": "LOC"}]}
    checked = check_answer(derived.schema, [], answer, {"text": NER_TEXT})
    spans = [(r.get("id"), r["value"]["text"], r["value"]["labels"]) for r in checked.regions["label"]]
    # the annotator's span stays as it is; the model's overlapping "Merkel" is dropped
    assert spans[0] == ("mine", "Angela Merkel", ["PER"])
    assert [s[1:] for s in spans[1:]] == [("Paris", ["LOC"])]


@pytest.mark.parametrize(("raw", "why"), [
    ("free text", "context must be an object"),
    ({"result": "x"}, "no 'result' list"),
    ({"result": [42]}, "not a region"),
    ({"result": [{"from_name": "nope", "value": {"choices": ["a"]}}]}, "not a control the model fills"),
    ({"result": [span(40, 999, [])]}, "outside the text"),
    ({"result": [span(0, 5, [], text="Bobby")]}, "is not the text at"),
    ({"result": [span(0, 5, ["CITY"])]}, "not in the config"),
    ({"result": [span(0, 5, [], text="Angel") | {"value": {"start": "0", "end": 5}}]}, "integer 'start' and 'end'"),
    ({"result": [{"from_name": "label", "to_name": "elsewhere", "value": {"start": 0, "end": 5}}]}, "to_name"),
])
def test_malformed_context_is_ignored_with_a_reason(raw, why):
    schema = build_schema(NER_CONFIG)
    interaction = parse_context(raw, schema, {"text": NER_TEXT})
    assert not interaction.constrains
    assert len(interaction.ignored) == 1 and why in interaction.ignored[0], interaction.ignored


@pytest.mark.parametrize("value", [{"text": 5}, {"text": [1]}, {"text": [None]}, {"text": ["ok", {"x": 1}]},
                                   {"choices": 5}, {"choices": [[1]]}])
def test_value_of_an_unexpected_shape_is_ignored_not_raised(value):
    """The controls' readers raise TypeError on such values; a context must never cost a 5xx."""
    ctx = context(PROMPT_CONFIG, "interactive_prompt")
    raw = {"result": [{"from_name": name, "to_name": "text", "origin": "manual", "value": value}
                      for name in ("answer", "category")] + [textarea("prompt", "summarise it")]}
    interaction = parse_context(raw, ctx.schema, {"text": MESSAGE})
    assert interaction.prompt == "summarise it" and interaction.given == {}
    assert len(interaction.ignored) == 2
    assert all("unreadable value" in m or "no value" in m or "answer:" in m or "category:" in m
               for m in interaction.ignored), interaction.ignored
    constrained_context(ctx, interaction)  # builds


def test_invalid_given_value_is_ignored_but_the_rest_is_used():
    schema = build_schema(PROMPT_CONFIG)
    raw = {"result": [{"from_name": "category", "to_name": "text", "value": {"choices": ["refunds"]}},
                      textarea("prompt", "summarise in five words")]}
    interaction = parse_context(raw, schema, {"text": MESSAGE})
    assert interaction.prompt == "summarise in five words" and interaction.given == {}
    assert "category" in interaction.ignored[0] and "refunds" in interaction.ignored[0]


def test_too_long_prompt_is_ignored():
    schema = build_schema(PROMPT_CONFIG)
    interaction = parse_context({"result": [textarea("prompt", "x" * 5000)]}, schema, {"text": MESSAGE})
    assert interaction.prompt is None and "5000 characters" in interaction.ignored[0]


def test_region_ids_are_part_of_the_interactive_version():
    """The answer reuses the selection's id: a cached answer for another selection must not be reused."""
    ctx = context(NER_CONFIG, "ner")
    first = constrained_context(ctx, parse_context({"result": [span(37, 42, [], "a")]}, ctx.schema, {"text": NER_TEXT}))
    parsed = parse_context({"result": [span(37, 42, [], "b")]}, ctx.schema, {"text": NER_TEXT})
    second = constrained_context(ctx, parsed)
    assert first.prompt.version != second.prompt.version


def test_pinned_schema_admits_only_the_value():
    assert pinned_schema("a") == {"type": "string", "enum": ["a"]}
    assert pinned_schema(3) == {"type": "integer", "enum": [3]}
    assert pinned_schema(["a", "b"]) == {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "anyOf": [{"type": "string", "enum": ["a"]}, {"type": "string", "enum": ["b"]}]}}
    assert pinned_schema({"text": "x"})["required"] == ["text"]
    assert load_guideline("interactive_prompt").instructions["answer"]


def test_timed_out_answer_is_an_error_under_the_cascade_family():
    """An interactive answer cut by the budget: an error under the model version Label Studio
    groups the project's predictions by (the cascade's ``cheap>fallback@prompt`` too)."""
    from types import SimpleNamespace

    from prelabel.prediction.cascade import CalibratedCascade

    def predictor(model: str) -> Predictor:
        made = Predictor(Settings(), LLMClient(Settings()), cache=None)
        made.llm = SimpleNamespace(model=model)  # type: ignore[assignment]
        return made

    ctx = context(PROMPT_CONFIG, "interactive_prompt")
    cheap = predictor("cheap")
    single = cheap.timed_out(ctx, "interactive_timeout", "no answer within 1.0 s", 0.0)
    assert single["model_version"] == f"cheap@{ctx.prompt.version}#error"
    assert single["meta"]["status"] == "error" and single["result"] == []
    assert single["meta"]["errors"] == {"task": "interactive_timeout: no answer within 1.0 s"}
    cascade = CalibratedCascade(cheap, fallback=predictor("big"), threshold=0.5)
    assert cascade.timed_out(ctx, "interactive_timeout", "x", 0.0)["model_version"] == \
        f"cheap>big@{ctx.prompt.version}#error"
