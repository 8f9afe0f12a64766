"""Labeling config -> answer JSON schema (label_config/schema.py)."""

from __future__ import annotations

import logging

import pytest

from prelabel.label_config.controls import (
    ChoicesField,
    LabelsField,
    NumberField,
    RatingField,
    TextAreaField,
)
from prelabel.label_config.schema import (
    ConfigError,
    TaskDataError,
    build_schema,
    config_hash,
    required,
    unsupported_once,
)


def view(*body: str, objects: str = '<Text name="text" value="$text"/>') -> str:
    return "<View>" + objects + "".join(body) + "</View>"


# --- one control at a time ------------------------------------------------------------------


def test_choices_single_is_an_enum_of_its_values():
    schema = build_schema(view(
        '<Choices name="intent" toName="text" choice="single-radio">'
        '<Choice value="nav"/><Choice value="info"/><Choice value="other"/></Choices>'
    ))
    (control,) = schema.fields
    assert isinstance(control, ChoicesField) and not control.multiple
    assert control.name == "intent" and control.to_name == "text" and control.object_name == "text"
    assert schema.json_schema()["properties"]["intent"] == {"type": "string", "enum": ["nav", "info", "other"]}


def test_choices_multiple_is_a_non_empty_unique_array():
    schema = build_schema(view(
        '<Choices name="topics" toName="text" choice="multiple">'
        '<Choice value="sport"/><Choice value="politics"/></Choices>'
    ))
    control = schema.field("topics")
    assert isinstance(control, ChoicesField) and control.multiple
    assert control.json_schema() == {
        "type": "array",
        "items": {"type": "string", "enum": ["sport", "politics"]},
        "uniqueItems": True,
        "minItems": 1,
    }


def test_choice_alias_is_the_value_stored_and_asked_for():
    # LS stores a Choice's alias (not its display value) in results: the schema must ask for it.
    schema = build_schema(view(
        '<Choices name="s" toName="text">'
        '<Choice value="Positive" alias="pos" hint="good"/><Choice value="Negative" alias="neg"/>'
        "</Choices>"
    ))
    control = schema.field("s")
    assert control.label_values == ["pos", "neg"]
    assert control.labels[0].hint == "good"
    assert schema.json_schema()["properties"]["s"]["enum"] == ["pos", "neg"]
    assert control.to_regions("pos", "x")[0]["value"] == {"choices": ["pos"]}


def test_labels_on_text_is_a_list_of_text_label_objects():
    schema = build_schema(view(
        '<Labels name="ner" toName="text"><Label value="PER" hint="a person"/><Label value="LOC"/></Labels>'
    ))
    control = schema.field("ner")
    assert isinstance(control, LabelsField)
    assert control.labels[0].hint == "a person" and control.labels[1].hint is None
    item = control.json_schema()["items"]
    assert control.json_schema()["type"] == "array"
    assert item["properties"]["label"] == {"type": "string", "enum": ["PER", "LOC"]}
    assert item["properties"]["text"]["type"] == "string"
    assert set(item["required"]) == {"text", "label"}


def test_labels_occurrence_policy_is_passed_to_the_field():
    schema = build_schema(view('<Labels name="ner" toName="text"><Label value="A"/></Labels>'), occurrence="unique")
    assert schema.field("ner").occurrence == "unique"


def test_textarea_is_a_string_with_optional_max_length():
    schema = build_schema(view(
        '<TextArea name="summary" toName="text"/>', '<TextArea name="short" toName="text" maxLength="20"/>'
    ))
    assert isinstance(schema.field("summary"), TextAreaField)
    assert schema.field("summary").json_schema() == {"type": "string"}
    assert schema.field("short").json_schema() == {"type": "string", "maxLength": 20}


def test_rating_uses_max_rating():
    schema = build_schema(view('<Rating name="r" toName="text" maxRating="10"/>', '<Rating name="d" toName="text"/>'))
    assert isinstance(schema.field("r"), RatingField)
    assert schema.field("r").json_schema() == {"type": "integer", "minimum": 1, "maximum": 10}
    assert schema.field("d").json_schema() == {"type": "integer", "minimum": 1, "maximum": 5}


def test_number_min_max_step():
    schema = build_schema(view(
        '<Number name="count" toName="text" min="1" max="9"/>',
        '<Number name="score" toName="text" min="0" max="1" step="0.1"/>',
        '<Number name="open" toName="text"/>',
    ))
    assert isinstance(schema.field("count"), NumberField)
    assert schema.field("count").json_schema() == {"type": "integer", "minimum": 1, "maximum": 9}
    assert schema.field("score").json_schema() == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert schema.field("open").json_schema() == {"type": "integer"}


# --- whole configs ---------------------------------------------------------------------------


def test_several_controls_give_one_required_property_each():
    schema = build_schema(view(
        '<Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices>',
        '<Labels name="l" toName="text"><Label value="X"/></Labels>',
        '<TextArea name="t" toName="text"/>',
        '<Rating name="r" toName="text"/>',
        '<Number name="n" toName="text"/>',
    ))
    answer = schema.json_schema()
    assert answer["type"] == "object"
    assert list(answer["properties"]) == ["c", "l", "t", "r", "n"]
    assert answer["required"] == ["c", "l", "t", "r", "n"]
    assert answer["additionalProperties"] is False
    assert schema.unsupported == []
    with pytest.raises(KeyError):
        schema.field("nope")


@pytest.mark.parametrize(
    ("extra", "objects", "name", "tag", "reason_part"),
    [
        (
            '<RectangleLabels name="box" toName="img"><Label value="Car"/></RectangleLabels>',
            '<Image name="img" value="$image"/>',
            "box", "RectangleLabels", "not supported",
        ),
        ('<Squiggle name="sq" toName="text"/>', "", "sq", "Squiggle", "not supported"),
        (
            '<Labels name="hl" toName="html"><Label value="A"/></Labels>',
            '<HyperText name="html" value="$html"/>',
            "hl", "Labels", "HyperText",
        ),
        ('<Choices name="empty" toName="text"></Choices>', "", "empty", "Choices", "no labels"),
    ],
    ids=["rectangle-on-image", "unknown-tag", "labels-on-hypertext", "choices-without-labels"],
)
def test_unsupported_controls_are_listed_with_a_reason_and_skipped(extra, objects, name, tag, reason_part):
    config = view(
        '<Choices name="ok" toName="text"><Choice value="a"/></Choices>', extra,
        objects='<Text name="text" value="$text"/>' + objects,
    )
    schema = build_schema(config)
    assert [c.name for c in schema.fields] == ["ok"]
    assert [(u.name, u.tag) for u in schema.unsupported] == [(name, tag)]
    assert reason_part in schema.unsupported[0].reason
    assert name not in schema.json_schema()["properties"]
    # The skipped control's object is not needed to pre-annotate a task.
    assert schema.object_texts({"text": "hello"}) == {"text": "hello"}


def test_nothing_fillable_raises_config_error_naming_the_skipped_controls():
    config = (
        '<View><Image name="img" value="$image"/>'
        '<RectangleLabels name="box" toName="img"><Label value="Car"/></RectangleLabels></View>'
    )
    with pytest.raises(ConfigError, match="box"):
        build_schema(config)


@pytest.mark.parametrize(
    "config",
    ['<View><Text name="text" value="$text"></View>', "<View><Text", "not xml at all <", "", "   "],
    ids=["mismatched-tag", "truncated", "garbage", "empty", "blank"],
)
def test_invalid_config_raises_config_error(config):
    with pytest.raises(ConfigError):
        build_schema(config)


def test_config_hash_ignores_surrounding_whitespace_only():
    config = view('<Choices name="c" toName="text"><Choice value="a"/></Choices>')
    assert config_hash(config) == config_hash("\n  " + config + "\n")
    assert config_hash(config) != config_hash(config.replace('"a"', '"b"'))
    assert build_schema(config).config_hash == config_hash(config)


def test_required_choices_always_other_controls_by_attribute():
    schema = build_schema(view(
        '<Choices name="c" toName="text"><Choice value="a"/></Choices>',
        '<TextArea name="free" toName="text"/>',
        '<TextArea name="must" toName="text" required="true"/>',
    ))
    assert required(schema.field("c"))
    assert not required(schema.field("free"))
    assert required(schema.field("must"))


def test_unsupported_controls_are_logged_once_per_config(caplog):
    config = view(
        '<Choices name="c" toName="text"><Choice value="a"/></Choices>',
        '<Squiggle name="once_only_test" toName="text"/>',
    )
    schema = build_schema(config)
    with caplog.at_level(logging.WARNING, logger="prelabel.label_config.schema"):
        first = unsupported_once(schema)
        second = unsupported_once(build_schema(config))
    assert [u.name for u in first] == [u.name for u in second] == ["once_only_test"]
    assert sum("once_only_test" in r.getMessage() for r in caplog.records) == 1


# --- task data -> object texts -------------------------------------------------------------


CHOICES_ON_TEXT = view('<Choices name="c" toName="text"><Choice value="a"/></Choices>')


def test_object_texts_reads_the_value_key():
    schema = build_schema(CHOICES_ON_TEXT)
    assert schema.object_texts({"text": "héllo", "other": 1}) == {"text": "héllo"}


def test_object_texts_missing_key_names_it():
    schema = build_schema(CHOICES_ON_TEXT)
    with pytest.raises(TaskDataError, match="'text'"):
        schema.object_texts({"txt": "hello"})


@pytest.mark.parametrize("raw", [42, None, ["a", "b"], {"a": 1}, 1.5])
def test_object_texts_non_string_is_rejected(raw):
    schema = build_schema(CHOICES_ON_TEXT)
    with pytest.raises(TaskDataError):
        schema.object_texts({"text": raw})


@pytest.mark.parametrize("data", [None, "text", ["text"]])
def test_object_texts_data_must_be_an_object(data):
    with pytest.raises(TaskDataError):
        build_schema(CHOICES_ON_TEXT).object_texts(data)


def test_object_texts_one_entry_per_object_even_with_several_controls():
    schema = build_schema(view(
        '<Choices name="c" toName="text"><Choice value="a"/></Choices>',
        '<TextArea name="s" toName="title"/>', '<Rating name="r" toName="text"/>',
        objects='<Text name="text" value="$body"/><Text name="title" value="$title"/>',
    ))
    assert schema.object_texts({"body": "B", "title": "T"}) == {"text": "B", "title": "T"}
    with pytest.raises(TaskDataError, match="title"):
        schema.object_texts({"body": "B"})


PARAGRAPHS = (
    '<View><Paragraphs name="dialog" value="$dialogue" layout="dialogue"/>'
    '<Choices name="c" toName="dialog"><Choice value="a"/></Choices></View>'
)


def test_paragraphs_are_rendered_one_line_per_utterance_with_speaker():
    schema = build_schema(PARAGRAPHS)
    data = {"dialogue": [
        {"author": "Alice", "text": "Hi there"},
        {"speaker": "Bob", "text": "Hello"},
        {"text": "anonymous line"},
    ]}
    assert schema.object_texts(data) == {"dialog": "Alice: Hi there\nBob: Hello\nanonymous line"}
    assert schema.object_texts({"dialogue": "already text"}) == {"dialog": "already text"}


def test_paragraphs_items_must_be_objects():
    with pytest.raises(TaskDataError):
        build_schema(PARAGRAPHS).object_texts({"dialogue": ["plain string"]})


def test_lists_are_not_text_for_a_plain_text_object():
    with pytest.raises(TaskDataError):
        build_schema(CHOICES_ON_TEXT).object_texts({"text": [{"author": "A", "text": "x"}]})
