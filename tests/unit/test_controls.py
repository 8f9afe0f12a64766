"""Per-control validation of answers and conversion to/from Label Studio regions."""

from __future__ import annotations

import math

import pytest

from prelabel.label_config.controls import (
    AnswerError,
    ChoicesField,
    LabelInfo,
    LabelsField,
    NumberField,
    RatingField,
    TextAreaField,
)


def labels(*values: str) -> list[LabelInfo]:
    return [LabelInfo(v) for v in values]


def choices(multiple: bool = False) -> ChoicesField:
    return ChoicesField("sentiment", "text", "text", labels=labels("pos", "neg", "neutral"), multiple=multiple)


def spans(occurrence: str = "all") -> LabelsField:
    return LabelsField("ner", "text", "text", labels=labels("PER", "LOC", "ORG"), occurrence=occurrence)


def number(**attrs: str) -> NumberField:
    return NumberField("n", "text", "text", attrs=attrs)


def reason_of(control, value, text: str = "some text") -> str:
    with pytest.raises(AnswerError) as info:
        control.to_regions(value, text)
    assert info.value.control == control.name
    return info.value.reason


# --- Choices --------------------------------------------------------------------------------


def test_choice_in_set_becomes_one_choices_region():
    assert choices().to_regions("neg", "txt") == [
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["neg"]}}
    ]


@pytest.mark.parametrize("value", ["positive", "Pos", " pos", "", "other"])
def test_choice_not_in_set_is_label_not_in_set_never_coerced(value):
    assert reason_of(choices(), value) == "label_not_in_set"


@pytest.mark.parametrize("value", [1, None, True, {"choice": "pos"}, ["pos"]])
def test_single_choice_of_wrong_type_is_a_schema_error(value):
    assert reason_of(choices(), value) == "schema"


def test_multiple_choices_keep_the_order_given():
    regions = choices(multiple=True).to_regions(["neutral", "pos"], "txt")
    assert [r["value"] for r in regions] == [{"choices": ["neutral", "pos"]}]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["pos", "pos"], "schema"),
        ([], "schema"),
        ("pos", "schema"),
        (["pos", "bad"], "label_not_in_set"),
        (["pos", 3], "schema"),
    ],
    ids=["duplicates", "empty", "not-a-list", "one-not-in-set", "non-string"],
)
def test_multiple_choices_errors(value, reason):
    assert reason_of(choices(multiple=True), value) == reason


def test_answer_error_str_names_the_control():
    with pytest.raises(AnswerError) as info:
        choices().to_regions("bad", "x")
    assert str(info.value).startswith("sentiment: ")
    with pytest.raises(AssertionError):
        AnswerError("c", "not-a-known-reason", "x")


# --- Labels (spans) ----------------------------------------------------------------------


TEXT = "Anna flew from Paris to Rome. Later Anna met Bob in Paris."


def offsets(regions):
    return sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in regions)


def test_span_offsets_always_slice_back_to_the_span():
    regions = spans().to_regions(
        [{"text": "Anna", "label": "PER"}, {"text": "Paris", "label": "LOC"}, {"text": "Bob", "label": "PER"}],
        TEXT,
    )
    assert regions, "no regions"
    for region in regions:
        value = region["value"]
        assert TEXT[value["start"]:value["end"]] == value["text"]
        assert region["type"] == "labels" and region["from_name"] == "ner" and region["to_name"] == "text"
        assert region["id"]
    assert len({r["id"] for r in regions}) == len(regions)


def test_span_offsets_count_characters_not_bytes():
    text = "Zoë and Jürgen visited São Paulo 🙂 and München."
    regions = spans().to_regions([{"text": "München", "label": "LOC"}, {"text": "São Paulo", "label": "LOC"}], text)
    for region in regions:
        value = region["value"]
        assert text[value["start"]:value["end"]] == value["text"]
    assert offsets(regions)[-1][0] == text.index("München")


def test_every_occurrence_when_the_guideline_asks_for_all():
    regions = spans("all").to_regions([{"text": "Paris", "label": "LOC"}], TEXT)
    assert offsets(regions) == [(15, 20, "LOC"), (52, 57, "LOC")]


def test_spans_sit_on_word_boundaries_first_whole_word_match_by_default():
    text = "Parisian cafes are nothing like Paris itself"
    regions = LabelsField("ner", "text", "text", labels=labels("LOC")).to_regions(
        [{"text": "Paris", "label": "LOC"}], text)
    assert offsets(regions) == [(32, 37, "LOC")]
    assert offsets(spans("all").to_regions([{"text": "Paris", "label": "LOC"}], text)) == [(32, 37, "LOC")]
    assert reason_of(spans(), [{"text": "Paris", "label": "LOC"}], "Parisian cafes") == "span_not_found"
    # scripts written without spaces have a boundary between any two characters
    assert offsets(spans().to_regions([{"text": "北京", "label": "LOC"}], "我明天去北京出差")) == [(4, 6, "LOC")]


def test_the_occurrence_the_model_names_gets_the_region():
    second = spans("all").to_regions([{"text": "Paris", "label": "LOC", "occurrence": 2}], TEXT)
    assert offsets(second) == [(52, 57, "LOC")]
    by_context = spans("all").to_regions([{"text": "Anna", "label": "PER", "context": "Later Anna met"}], TEXT)
    assert offsets(by_context) == [(36, 40, "PER")]
    assert reason_of(spans(), [{"text": "Paris", "label": "LOC", "occurrence": 3}], TEXT) == "span_not_found"
    assert reason_of(spans(), [{"text": "Anna", "label": "PER", "context": "Anna swam"}], TEXT) == "span_not_found"


def test_first_occurrence_policy():
    regions = spans("first").to_regions([{"text": "Paris", "label": "LOC"}, {"text": "Bob", "label": "PER"}], TEXT)
    assert offsets(regions) == [(15, 20, "LOC"), (45, 48, "PER")]


def test_unique_policy_accepts_a_single_occurrence_and_rejects_a_repeated_one():
    assert offsets(spans("unique").to_regions([{"text": "Rome", "label": "LOC"}], TEXT)) == [(24, 28, "LOC")]
    assert reason_of(spans("unique"), [{"text": "Paris", "label": "LOC"}], TEXT) == "span_ambiguous"


@pytest.mark.parametrize("span", ["Berlin", "paris", "Anna  flew", "Paris, Rome"])
def test_span_not_in_text_is_span_not_found(span):
    assert reason_of(spans(), [{"text": span, "label": "LOC"}], TEXT) == "span_not_found"


def test_span_whitespace_is_stripped_before_matching():
    regions = spans("first").to_regions([{"text": "  Rome\n", "label": "LOC"}], TEXT)
    assert [r["value"]["text"] for r in regions] == ["Rome"]
    assert offsets(regions) == [(24, 28, "LOC")]


def test_whitespace_only_span_is_empty():
    assert reason_of(spans(), [{"text": "   ", "label": "LOC"}], TEXT) == "empty"


def test_duplicate_spans_are_deduplicated_but_different_labels_kept():
    regions = spans().to_regions(
        [
            {"text": "Rome", "label": "LOC"},
            {"text": " Rome ", "label": "LOC"},
            {"text": "Rome", "label": "ORG"},
        ],
        TEXT,
    )
    assert offsets(regions) == [(24, 28, "LOC"), (24, 28, "ORG")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Paris", "schema"),
        ({"text": "Paris", "label": "LOC"}, "schema"),
        (["Paris"], "schema"),
        ([{"label": "LOC"}], "schema"),
        ([{"text": 5, "label": "LOC"}], "schema"),
        ([{"text": "Paris", "label": "CITY"}], "label_not_in_set"),
        ([{"text": "Paris"}], "label_not_in_set"),
    ],
)
def test_bad_span_answers(value, reason):
    assert reason_of(spans(), value, TEXT) == reason


def test_no_entities_is_an_empty_region_list():
    assert spans().to_regions([], TEXT) == []
    assert not spans().is_empty([])
    assert spans().is_empty(None)


def test_region_ids_are_deterministic():
    value = [{"text": "Paris", "label": "LOC"}]
    assert spans().to_regions(value, TEXT) == spans().to_regions(value, TEXT)


# --- TextArea -----------------------------------------------------------------------------


def test_textarea_strips_and_wraps_text():
    control = TextAreaField("summary", "text", "text")
    assert control.to_regions("  a short summary \n", "t") == [
        {"from_name": "summary", "to_name": "text", "type": "textarea", "value": {"text": ["a short summary"]}}
    ]


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_textarea_empty_is_empty(value):
    control = TextAreaField("summary", "text", "text")
    assert control.is_empty(value)
    assert reason_of(control, value) == "empty"


@pytest.mark.parametrize("value", [1, ["a"], {"text": "a"}, True])
def test_textarea_non_string_is_schema(value):
    assert reason_of(TextAreaField("summary", "text", "text"), value) == "schema"


# --- Rating -------------------------------------------------------------------------------


def test_rating_range_follows_max_rating():
    control = RatingField("r", "text", "text", attrs={"maxRating": "10"})
    assert control.to_regions(10, "t")[0]["value"] == {"rating": 10}
    assert control.to_regions(1, "t")[0]["value"] == {"rating": 1}
    assert reason_of(control, 11) == "out_of_range"
    assert reason_of(control, 0) == "out_of_range"
    assert reason_of(RatingField("d", "text", "text"), 6) == "out_of_range"  # default max 5


@pytest.mark.parametrize("value", [True, False, 3.0, 2.5, "3", None])
def test_rating_must_be_a_real_integer(value):
    assert reason_of(RatingField("r", "text", "text"), value) == "schema"


# --- Number -------------------------------------------------------------------------------


def test_number_range():
    control = number(min="1", max="9")
    assert control.to_regions(1, "t")[0]["value"] == {"number": 1}
    assert control.to_regions(9, "t")[0]["value"] == {"number": 9}
    assert reason_of(control, 0) == "out_of_range"
    assert reason_of(control, 10) == "out_of_range"
    assert number(min="-5").to_regions(-5, "t")[0]["value"] == {"number": -5}


def test_number_integer_step_rejects_fractions_and_normalises_whole_floats():
    for control in (number(), number(step="1"), number(step="2")):
        assert reason_of(control, 2.5) == "schema"
        region = control.to_regions(3.0, "t")[0]
        assert region["value"] == {"number": 3} and isinstance(region["value"]["number"], int)


def test_number_fractional_step_accepts_fractions():
    control = number(min="0", max="1", step="0.1")
    assert control.to_regions(0.5, "t")[0]["value"] == {"number": 0.5}
    assert reason_of(control, 1.5) == "out_of_range"


@pytest.mark.parametrize("value", [True, False, "3", None, [3], math.nan, math.inf, -math.inf])
def test_number_rejects_booleans_strings_and_non_finite(value):
    assert reason_of(number(), value) == "schema"


def test_number_huge_integer_is_an_answer_error_not_a_crash():
    # json.loads('{"n": 1000...0}') gives a Python int too large for a float.
    assert reason_of(number(min="0", max="100"), 10**400) in ("out_of_range", "schema")


def test_integer_number_schema_bounds_agree_with_validation():
    control = number(min="0.5", max="9.5")
    schema = control.json_schema()
    assert schema["type"] == "integer"
    for value in (schema["minimum"], schema["maximum"]):
        control.to_regions(value, "t")  # the schema's own bounds must be valid answers


# --- from_regions round trips -----------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "value"),
    [
        (choices(), "neutral"),
        (choices(multiple=True), ["neg", "pos"]),
        (spans(), [{"text": "Anna", "label": "PER"}, {"text": "Paris", "label": "LOC"}]),
        (spans("first"), [{"text": "Bob", "label": "PER"}]),
        (spans(), []),
        (TextAreaField("summary", "text", "text"), "Anna travels."),
        (RatingField("r", "text", "text", attrs={"maxRating": "10"}), 7),
        (number(min="0", max="100"), 42),
        (number(step="0.5"), 2.5),
    ],
    ids=["choice", "choices", "spans", "spans-first", "no-spans", "textarea", "rating", "number", "float"],
)
def test_from_regions_round_trips_to_regions(control, value):
    regions = control.to_regions(value, TEXT)
    foreign = {"from_name": "someone_else", "to_name": "text", "type": "choices", "value": {"choices": ["x"]}}
    back = control.from_regions([foreign, *regions])
    # Regions rebuilt from the recovered answer are the same regions.
    assert control.to_regions(back, TEXT) == regions
    if not isinstance(control, LabelsField):
        assert back == value
    else:
        assert {(s["text"], s["label"]) for s in back} == {(s["text"], s["label"]) for s in value}


@pytest.mark.parametrize(
    "control",
    [choices(), choices(multiple=True), TextAreaField("t", "text", "text"), RatingField("r", "text", "text"), number()],
)
def test_from_regions_without_own_regions_is_none(control):
    other = {"from_name": "other", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}
    assert control.from_regions([other]) is None
    assert control.from_regions([]) is None


def test_textarea_from_regions_joins_several_texts():
    control = TextAreaField("t", "text", "text")
    region = {"from_name": "t", "to_name": "text", "type": "textarea", "value": {"text": ["one", "two"]}}
    assert control.from_regions([region]) == "one\ntwo"


def test_labels_from_regions_reads_human_spans():
    region = {
        "from_name": "ner", "to_name": "text", "type": "labels",
        "value": {"start": 0, "end": 4, "text": "Anna", "labels": ["PER"]},
    }
    assert spans().from_regions([region]) == [{"text": "Anna", "label": "PER"}]
