"""Parsing LLM answers and checking them control by control (label_config/answers.py)."""

from __future__ import annotations

import pytest

from prelabel.label_config.answers import answer_from_regions, check_answer, feedback, parse_answer
from prelabel.label_config.constraints import Constraint
from prelabel.label_config.controls import AnswerError
from prelabel.label_config.schema import build_schema

# --- parse_answer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"intent": "book"}',
        '  \n{"intent": "book"}\n\n',
        '```json\n{"intent": "book"}\n```',
        '```\n{"intent": "book"}\n```\n',
        '```json{"intent": "book"}```',
    ],
    ids=["plain", "whitespace", "json-fence", "bare-fence", "tight-fence"],
)
def test_parse_answer_tolerates_whitespace_and_fences(content):
    answer, start = parse_answer(content)
    assert answer == {"intent": "book"}
    assert content[start] == "{"


def test_parse_answer_keeps_nested_values_and_unicode():
    answer, _ = parse_answer('{"ner": [{"text": "São Paulo", "label": "LOC"}], "n": 2.5, "t": "a\\"b"}')
    assert answer == {"ner": [{"text": "São Paulo", "label": "LOC"}], "n": 2.5, "t": 'a"b'}


def test_parse_answer_reads_raw_control_characters_inside_strings():
    """Small models under a JSON grammar emit a raw newline or tab inside a string (seen from
    Gemma 3 270M as the reviewer): the same text, not a broken answer."""
    answer, _ = parse_answer('{"verdict": "pass", "rationale": "fits\nthe rule\t2"}')
    assert answer == {"verdict": "pass", "rationale": "fits\nthe rule\t2"}


@pytest.mark.parametrize(
    "content",
    [
        '{"intent": "book"',
        '{"intent": "bo',
        '```json\n{"intent": ',
        '{"intent": "book"} and that is my answer',
        '{"intent": "book"}{"intent": "other"}',
        '{"intent": "book"}\n```\nExplanation: it is a booking.',
        '["book"]',
        '[{"intent": "book"}]',
        "42",
        '"book"',
        "null",
        "",
        "I cannot help with that.",
        "{'intent': 'book'}",
    ],
    ids=["truncated", "truncated-string", "truncated-fence", "trailing-text", "two-objects", "text-after-fence",
         "array", "array-of-object", "number", "string", "null", "empty", "prose", "python-dict"],
)
def test_parse_answer_rejects_anything_but_one_whole_object(content):
    with pytest.raises(AnswerError) as info:
        parse_answer(content)
    assert info.value.reason == "invalid_json"
    assert info.value.control is None


# --- check_answer ---------------------------------------------------------------------------


CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="book"/><Choice value="other"/></Choices>
<Labels name="ner" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>
<TextArea name="departure" toName="text"/>
<TextArea name="arrival" toName="text"/>
<TextArea name="note" toName="text" required="true"/>
<Rating name="urgency" toName="text" maxRating="3"/>
<Number name="seats" toName="text" min="1" max="9"/>
</View>"""
TEXT = "Anna wants to fly from Oslo to Rome with 2 friends."
GOOD = {
    "intent": "book",
    "ner": [{"text": "Anna", "label": "PER"}, {"text": "Oslo", "label": "LOC"}, {"text": "Rome", "label": "LOC"}],
    "departure": "Oslo",
    "arrival": "Rome",
    "note": "group trip",
    "urgency": 2,
    "seats": 3,
}


@pytest.fixture(scope="module")
def schema():
    return build_schema(CONFIG)


def check(schema, answer, constraints=()):
    return check_answer(schema, list(constraints), answer, {"text": TEXT})


def test_a_good_answer_gives_regions_for_every_control(schema):
    checked = check(schema, GOOD)
    assert checked.ok and checked.errors == {}
    assert set(checked.regions) == set(GOOD)
    for region in checked.regions["ner"]:
        value = region["value"]
        assert TEXT[value["start"]:value["end"]] == value["text"]
    assert checked.regions["seats"][0]["value"] == {"number": 3}


@pytest.mark.parametrize(
    ("control", "bad", "reason"),
    [
        ("intent", "refund", "label_not_in_set"),
        ("intent", 3, "schema"),
        ("ner", [{"text": "Berlin", "label": "LOC"}], "span_not_found"),
        ("ner", [{"text": "Oslo", "label": "CITY"}], "label_not_in_set"),
        ("urgency", 4, "out_of_range"),
        ("seats", 2.5, "schema"),
        ("seats", True, "schema"),
        ("departure", ["Oslo"], "schema"),
        ("note", "   ", "empty"),
        ("note", None, "empty"),
        ("intent", None, "empty"),
    ],
)
def test_only_the_failing_control_is_dropped(schema, control, bad, reason):
    checked = check(schema, {**GOOD, control: bad})
    assert not checked.ok
    assert list(checked.errors) == [control]
    assert checked.errors[control].reason == reason
    assert control not in checked.regions
    assert set(checked.regions) == set(GOOD) - {control}


def test_missing_required_controls_error_and_optional_ones_do_not(schema):
    checked = check(schema, {"ner": []})
    assert {name: e.reason for name, e in checked.errors.items()} == {"intent": "empty", "note": "empty"}
    assert checked.regions == {"ner": []}


def test_empty_optional_textarea_is_no_region_and_no_error(schema):
    checked = check(schema, {**GOOD, "departure": "", "arrival": "  "})
    assert checked.ok
    assert "departure" not in checked.regions and "arrival" not in checked.regions


def test_several_failures_are_all_reported(schema):
    checked = check(schema, {**GOOD, "intent": "nope", "urgency": 0, "seats": 10})
    assert set(checked.errors) == {"intent", "urgency", "seats"}
    assert set(checked.regions) == {"ner", "departure", "arrival", "note"}


def test_distinct_violation_removes_the_involved_controls_only(schema):
    rule = Constraint.model_validate({"distinct": ["departure", "arrival"], "message": "must differ"})
    checked = check(schema, {**GOOD, "arrival": "oslo"}, [rule])
    assert set(checked.errors) == {"departure", "arrival"}
    assert {e.reason for e in checked.errors.values()} == {"constraint"}
    assert set(checked.regions) == set(GOOD) - {"departure", "arrival"}
    assert check(schema, GOOD, [rule]).ok


def test_pattern_violation_on_spans_removes_the_span_control(schema):
    rule = Constraint.model_validate({"pattern": {"field": "ner.LOC", "regex": "[A-Z]{3}"}})
    checked = check(schema, GOOD, [rule])
    assert list(checked.errors) == ["ner"] and checked.errors["ner"].reason == "constraint"
    assert "ner" not in checked.regions and "intent" in checked.regions


def test_a_control_failing_its_own_check_keeps_its_own_error(schema):
    rule = Constraint.model_validate({"distinct": ["departure", "arrival"]})
    checked = check(schema, {**GOOD, "departure": ["Rome"], "arrival": "Rome"}, [rule])
    assert "departure" in checked.errors and "arrival" in checked.errors
    assert "arrival" not in checked.regions


def test_extra_keys_do_not_become_regions(schema):
    checked = check(schema, {**GOOD, "sentiment": "positive"})
    assert checked.ok and "sentiment" not in checked.regions


# --- feedback -------------------------------------------------------------------------------


def test_feedback_lists_every_error(schema):
    checked = check(schema, {**GOOD, "intent": "refund", "urgency": 7})
    message = feedback(checked.errors)
    assert "intent: " in message and "'refund'" in message
    assert "urgency: " in message and "7" in message
    assert message.count("\n- ") == 2
    assert "JSON" in message
    assert feedback(list(checked.errors.values())) == message


def test_feedback_for_unparseable_answer():
    with pytest.raises(AnswerError) as info:
        parse_answer('{"intent": ')
    message = feedback([info.value])
    assert "not valid JSON" in message


def test_regions_turn_back_into_the_answer_they_came_from(schema):
    regions = [r for rs in check(schema, GOOD).regions.values() for r in rs]
    assert answer_from_regions(schema, regions) == GOOD
    assert answer_from_regions(schema, regions, complete=False) == GOOD


def test_a_human_answer_missing_a_required_control_is_none_and_optional_ones_get_their_empty_value(schema):
    regions = [r for rs in check(schema, GOOD).regions.values() for r in rs]
    without_arrival = [r for r in regions if r["from_name"] != "arrival"]
    assert answer_from_regions(schema, without_arrival)["arrival"] == ""  # optional TextArea
    assert "arrival" not in answer_from_regions(schema, without_arrival, complete=False)  # review: left out
    without_note = [r for r in regions if r["from_name"] != "note"]  # required="true"
    assert answer_from_regions(schema, without_note) is None
    assert answer_from_regions(schema, without_note, complete=False) == {k: v for k, v in GOOD.items() if k != "note"}
    without_intent = [r for r in regions if r["from_name"] != "intent"]  # a Choices control is always required
    assert answer_from_regions(schema, without_intent) is None
