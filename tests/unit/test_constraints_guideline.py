"""Domain constraints (label_config/constraints.py) and guidelines (label_config/guideline.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prelabel.label_config.constraints import Constraint, ref_values
from prelabel.label_config.guideline import (
    Guideline,
    GuidelineError,
    default_guideline,
    load_guideline,
    parse_guideline,
    shipped_templates,
    template_path,
)
from prelabel.label_config.schema import build_schema

SLOTS = """<View><Text name="text" value="$text"/>
<TextArea name="departure_city" toName="text"/>
<TextArea name="arrival_city" toName="text"/>
<TextArea name="time" toName="text"/>
<Labels name="slots" toName="text"><Label value="FROM"/><Label value="TO"/></Labels>
<Choices name="intent" toName="text"><Choice value="book"/><Choice value="other"/></Choices>
</View>"""


@pytest.fixture(scope="module")
def slots_schema():
    return build_schema(SLOTS)


def distinct(*refs: str, message: str | None = None) -> Constraint:
    return Constraint.model_validate({"distinct": list(refs), "message": message})


def pattern(field: str, regex: str) -> Constraint:
    return Constraint.model_validate({"pattern": {"field": field, "regex": regex}})


# --- distinct -------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"),
                         [("Paris", "Paris"), ("Paris", "paris"), ("  PARIS ", "paris"), ("Straße", "STRASSE")])
def test_distinct_is_case_insensitive_and_blames_both_controls(a, b):
    errors = distinct("departure_city", "arrival_city").violations({"departure_city": a, "arrival_city": b})
    assert [e.control for e in errors] == ["departure_city", "arrival_city"]
    assert {e.reason for e in errors} == {"constraint"}


def test_distinct_different_values_absent_or_empty_values_pass():
    rule = distinct("departure_city", "arrival_city")
    assert rule.violations({"departure_city": "Paris", "arrival_city": "Rome"}) == []
    assert rule.violations({"departure_city": "Paris"}) == []
    assert rule.violations({"departure_city": "Paris", "arrival_city": None}) == []
    assert rule.violations({"departure_city": "", "arrival_city": " "}) == []


def test_distinct_uses_the_custom_message():
    errors = distinct("departure_city", "arrival_city", message="cities must differ").violations(
        {"departure_city": "Oslo", "arrival_city": "oslo"}
    )
    assert errors and all(e.message == "cities must differ" for e in errors)


def test_distinct_on_span_labels_of_one_control():
    rule = distinct("slots.FROM", "slots.TO")
    same = {"slots": [{"text": "Paris", "label": "FROM"}, {"text": "paris", "label": "TO"}]}
    different = {"slots": [{"text": "Paris", "label": "FROM"}, {"text": "Rome", "label": "TO"}]}
    only_from = {"slots": [{"text": "Paris", "label": "FROM"}, {"text": "Lyon", "label": "FROM"}]}
    errors = rule.violations(same)
    assert [e.control for e in errors] == ["slots"]  # one error per involved control
    assert rule.violations(different) == []
    assert rule.violations(only_from) == []


def test_distinct_between_a_span_label_and_a_text_control():
    rule = distinct("slots.FROM", "arrival_city")
    errors = rule.violations({"slots": [{"text": "Rome", "label": "FROM"}], "arrival_city": "ROME"})
    assert [e.control for e in errors] == ["slots", "arrival_city"]


def test_ref_values():
    answer = {
        "slots": [{"text": "Paris", "label": "FROM"}, {"text": "Rome", "label": "TO"}],
        "intent": "book",
        "multi": ["a", "b"],
        "count": 3,
    }
    assert ref_values(answer, "slots.FROM") == ["Paris"]
    assert ref_values(answer, "slots") == ["Paris", "Rome"]
    assert ref_values(answer, "intent") == ["book"]
    assert ref_values(answer, "intent.book") == []
    assert ref_values(answer, "multi") == ["a", "b"]
    assert ref_values(answer, "count") == ["3"]
    assert ref_values(answer, "missing") == []


# --- pattern --------------------------------------------------------------------------------


TIME = r"([01]\d|2[0-3]):[0-5]\d"


@pytest.mark.parametrize("value", ["09:30", "23:59", " 00:00 "])
def test_pattern_matching_values_pass(value):
    assert pattern("time", TIME).violations({"time": value}) == []


@pytest.mark.parametrize("value", ["9:30", "24:00", "09:30pm", "at 09:30", "09:30\n10:00"])
def test_pattern_must_match_the_whole_value(value):
    errors = pattern("time", TIME).violations({"time": value})
    assert [(e.control, e.reason) for e in errors] == [("time", "constraint")]


def test_pattern_applies_to_every_span_of_a_label():
    rule = pattern("slots.FROM", "[A-Z][a-z]+")
    assert rule.violations({"slots": [{"text": "Paris", "label": "FROM"}, {"text": "rome", "label": "TO"}]}) == []
    errors = rule.violations({"slots": [{"text": "Paris", "label": "FROM"}, {"text": "lyon", "label": "FROM"}]})
    assert [e.control for e in errors] == ["slots"]


def test_pattern_ignores_an_absent_value():
    assert pattern("time", TIME).violations({}) == []


# --- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"pattern": {"field": "time", "regex": "([01]\\d"}},
        {"pattern": {"field": "time", "regex": "*"}},
        {},
        {"message": "only a message"},
        {"distinct": ["a", "b"], "pattern": {"field": "time", "regex": "x"}},
        {"distinct": ["a"]},
        {"distinct": ["a", "b"], "unknown": 1},
        {"pattern": {"field": "time", "regex": "x", "flags": "i"}},
    ],
    ids=["unbalanced-regex", "bad-regex", "no-kind", "message-only", "both-kinds", "one-field", "extra-key",
         "extra-pattern-key"],
)
def test_invalid_constraints_are_rejected_at_load(raw):
    with pytest.raises(ValidationError):
        Constraint.model_validate(raw)
    with pytest.raises(GuidelineError):
        parse_guideline({"constraints": [raw]})


def test_check_refs_reports_unknown_controls_and_labels(slots_schema):
    controls = {c.name: c for c in slots_schema.fields}
    assert distinct("departure_city", "arrival_city").check_refs(controls) == []
    assert distinct("slots.FROM", "slots.TO").check_refs(controls) == []
    errors = distinct("departure", "slots.VIA").check_refs(controls)
    assert len(errors) == 2
    assert "departure" in errors[0] and "slots.VIA" in errors[1]
    assert pattern("clock", TIME).check_refs(controls) == ["constraint refers to unknown control 'clock'"]


# --- guidelines: loading --------------------------------------------------------------------


def test_shipped_templates_include_the_documented_ones():
    names = shipped_templates()
    assert {"search_intent", "ner"} <= set(names)
    assert names == sorted(names)


def test_load_shipped_template_by_name():
    intent = load_guideline("search_intent")
    assert intent.name == "search-intent"
    assert set(intent.labels["intent"]) >= {"navigational", "informational", "transactional", "other"}
    assert intent.when_unsure and intent.rules and intent.examples
    ner = load_guideline("ner")
    assert set(ner.labels["label"]) == {"PER", "ORG", "LOC", "MISC"}


def test_load_by_path_equals_load_by_name():
    assert load_guideline(template_path("ner", ".yaml")) == load_guideline("ner")
    assert load_guideline(str(template_path("ner", ".yaml"))).hash == load_guideline("ner").hash


def test_unknown_template_name_lists_what_exists():
    with pytest.raises(GuidelineError, match="search_intent"):
        load_guideline("no_such_template")


def test_missing_file(tmp_path):
    with pytest.raises(GuidelineError, match="not found"):
        load_guideline(tmp_path / "missing.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("labels: {intent: [unclosed\n  rules: - - :\n", encoding="utf-8")
    with pytest.raises(GuidelineError, match="YAML"):
        load_guideline(path)


@pytest.mark.parametrize(
    "text",
    [
        "- just\n- a list\n",
        "just a string\n",
        "",
        "name: x\nlabelz: {}\n",
        "labels: {intent: {nav: {definition: x, colour: red}}}\n",
        "examples: [{data: {text: q}}]\n",
        "rules: not-a-list\n",
    ],
    ids=["list", "string", "empty", "unknown-key", "unknown-label-key", "example-without-answer", "rules-type"],
)
def test_invalid_guideline_content(tmp_path, text):
    path = tmp_path / "g.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GuidelineError):
        load_guideline(path)


# --- guidelines: hash -----------------------------------------------------------------------


BASE = {
    "name": "g",
    "task": "Classify.",
    "labels": {"intent": {"book": {"definition": "Wants to book.", "examples": ["book a flight"]}}},
    "rules": ["Rule one."],
    "when_unsure": "Choose other.",
    "instructions": {"departure_city": "As written."},
    "examples": [{"data": {"text": "book a flight"}, "answer": {"intent": "book"}}],
    "constraints": [{"distinct": ["departure_city", "arrival_city"], "message": "differ"}],
}


def _changed(path: tuple, value) -> dict:
    import copy

    raw = copy.deepcopy(BASE)
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "h"),
        (("role",), "You are someone else."),
        (("task",), "Classify carefully."),
        (("labels", "intent", "book", "definition"), "Wants to book!"),
        (("labels", "intent", "book", "examples"), ["book a train"]),
        (("rules",), ["Rule one!"]),
        (("when_unsure",), "Choose other, always."),
        (("instructions", "departure_city"), "Verbatim."),
        (("examples", 0, "answer", "intent"), "other"),
        (("constraints", 0, "message"), "must differ"),
    ],
)
def test_hash_changes_when_any_text_changes(path, value):
    base = parse_guideline(BASE)
    assert parse_guideline(_changed(path, value)).hash != base.hash


def test_hash_is_stable_for_equal_content():
    import copy

    assert parse_guideline(BASE).hash == parse_guideline(copy.deepcopy(BASE)).hash
    assert len(parse_guideline(BASE).hash) == 12


# --- guidelines vs config -------------------------------------------------------------------


def test_check_against_flags_labels_not_in_the_config(slots_schema):
    guideline = parse_guideline({
        "labels": {"intent": {"book": {}, "other": {}, "refund": {}}, "ghost": {"x": {}}},
    })
    errors, warnings = guideline.check_against(slots_schema)
    assert any("'refund'" in e for e in errors)
    assert any("'ghost'" in e for e in errors)
    assert len(errors) == 2
    # Labels without definitions are warnings, not errors.
    assert any("slots" in w and "FROM" in w for w in warnings)


def test_check_against_flags_invalid_examples(slots_schema):
    guideline = parse_guideline({
        "examples": [
            {"data": {"text": "fly to Rome"}, "answer": {
                "departure_city": "Oslo", "arrival_city": "Rome", "time": "10:00",
                "slots": [{"text": "Rome", "label": "TO"}], "intent": "book",
            }},
            {"data": {"text": "fly to Rome"}, "answer": {
                "departure_city": "Oslo", "arrival_city": "Rome", "time": "10:00",
                "slots": [{"text": "Berlin", "label": "TO"}], "intent": "travel",
            }},
            {"data": {"body": "fly to Rome"}, "answer": {}},
            {"data": {"text": "fly to Rome"}, "answer": {"arrival_city": "Rome"}},
            {"data": {"text": "fly to Rome"}, "answer": {
                "departure_city": "rome", "arrival_city": "Rome", "intent": "book", "time": "10am",
            }},
        ],
        "constraints": [
            {"distinct": ["departure_city", "arrival_city"]},
            {"pattern": {"field": "time", "regex": "([01]\\d|2[0-3]):[0-5]\\d"}},
            {"distinct": ["departure_city", "nowhere"]},
        ],
    })
    errors, _ = guideline.check_against(slots_schema)
    assert not any(e.startswith("example 0") for e in errors)
    example1 = [e for e in errors if e.startswith("example 1")]
    assert any("Berlin" in e for e in example1) and any("travel" in e for e in example1)
    assert any(e.startswith("example 2") and "'text'" in e for e in errors)
    # A missing required control (Choices) is an error; missing optional ones are not.
    example3 = [e for e in errors if e.startswith("example 3")]
    assert len(example3) == 1 and "intent" in example3[0]
    # Examples obey the guideline's own constraints too.
    example4 = [e for e in errors if e.startswith("example 4")]
    assert any("time" in e for e in example4) and any("departure_city" in e for e in example4)
    assert any("unknown control 'nowhere'" in e for e in errors)


def test_check_against_accepts_an_empty_optional_textarea(slots_schema):
    guideline = parse_guideline({"examples": [{"data": {"text": "fly to Rome"}, "answer": {
        "departure_city": "", "arrival_city": "Rome", "time": "",
        "slots": [], "intent": "book",
    }}]})
    errors, _ = guideline.check_against(slots_schema)
    assert errors == []


def test_default_guideline_uses_hints():
    schema = build_schema(
        '<View><Text name="text" value="$text"/>'
        '<Choices name="c" toName="text"><Choice value="a" hint="Alpha things."/><Choice value="b"/></Choices>'
        '<TextArea name="t" toName="text"/></View>'
    )
    guideline = default_guideline(schema)
    assert guideline.labels["c"]["a"].definition == "Alpha things."
    assert guideline.labels["c"]["b"].definition == ""
    assert "t" not in guideline.labels
    assert guideline.check_against(schema) == ([], [])


@pytest.mark.parametrize("name", shipped_templates())
def test_every_shipped_guideline_fits_its_config(name):
    schema = build_schema(template_path(name, ".xml").read_text(encoding="utf-8"))
    guideline = load_guideline(name)
    errors, warnings = guideline.check_against(schema)
    assert errors == []
    assert warnings == []  # shipped guidelines define every label
    assert guideline.when_unsure, "a shipped guideline must say what to do when unsure"


def test_guideline_model_rejects_unknown_fields_directly():
    with pytest.raises(ValidationError):
        Guideline.model_validate({"nmae": "typo"})
