"""Confidence from token logprobs (prediction/confidence.py)."""

from __future__ import annotations

import json
import math
import re

import pytest

from prelabel.label_config.controls import (
    ChoicesField,
    LabelInfo,
    LabelsField,
    NumberField,
    RatingField,
    TextAreaField,
)
from prelabel.prediction.confidence import TokenMap, answer_confidences, span_confidences, value_spans
from prelabel.prediction.llm_client import TokenLogprob

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


def tokenize(content: str, logprobs: dict[str, float] | None = None, default: float = -0.001) -> list[TokenLogprob]:
    """Split like a tokenizer would (words, spaces, punctuation), one logprob per token text."""
    logprobs = logprobs or {}
    return [TokenLogprob(len(t.encode()), logprobs.get(t, default)) for t in _TOKEN.findall(content)]


def choices(multiple: bool = False) -> ChoicesField:
    return ChoicesField("intent", "text", "text", labels=[LabelInfo(v) for v in ("book", "other", "refund")],
                        multiple=multiple)


def spans() -> LabelsField:
    return LabelsField("ner", "text", "text", labels=[LabelInfo("PER"), LabelInfo("LOC")])


# --- value_spans ----------------------------------------------------------------------------


DOC = ('{"a": {"b": [1, "x\\"y", "café", {"é": "ü✓"}]}, "c" :true,"d":null, '
       '"e": -1.5e3, "f": [], "g": {}, "h": "\\u00e9"}')


def test_value_spans_cover_every_value_on_nested_json():
    spans_ = value_spans(DOC)
    raw = {path: DOC[start:end] for path, (start, end) in spans_.items()}
    assert raw[("a", "b", 0)] == "1"
    assert raw[("a", "b", 1)] == 'x\\"y'  # raw characters between the quotes, escapes included
    assert raw[("a", "b", 2)] == "café"
    assert raw[("a", "b", 3, "é")] == "ü✓"
    assert raw[("c",)] == "true" and raw[("d",)] == "null" and raw[("e",)] == "-1.5e3"
    assert raw[("f",)] == "[]" and raw[("g",)] == "{}"
    assert raw[("h",)] == "\\u00e9"
    assert raw[("a", "b")].startswith("[1,") and raw[("a", "b")].endswith("}]")
    assert raw[()] == DOC
    # Every string span decodes to the parsed value.
    parsed = json.loads(DOC)
    assert json.loads('"' + raw[("a", "b", 1)] + '"') == parsed["a"]["b"][1]
    assert json.loads('"' + raw[("h",)] + '"') == parsed["h"]


def test_value_spans_offset_points_into_a_larger_content():
    doc = '{"intent": "book"}'
    content = "Sure! ```json\n" + doc + "\n```"
    start = content.index("{")
    spans_ = value_spans(content, start)
    begin, end = spans_[("intent",)]
    assert content[begin:end] == "book"


@pytest.mark.parametrize("bad", ['{"a": tru}', '{"a": 1', '{"a": @}'])
def test_value_spans_raise_on_broken_json(bad):
    with pytest.raises((ValueError, IndexError)):
        value_spans(bad)


# --- TokenMap -------------------------------------------------------------------------------


def test_token_map_aligns_on_utf8_bytes():
    content = '{"city": "São Paulo 🙂"}'
    tokens = tokenize(content)
    assert TokenMap(content, tokens).aligned
    # Counting characters instead of bytes would not line up.
    by_chars = [TokenLogprob(len(t), -0.1) for t in _TOKEN.findall(content)]
    assert not TokenMap(content, by_chars).aligned
    assert not TokenMap(content, tokens[:-1]).aligned
    assert not TokenMap(content, tokens + [TokenLogprob(1, -0.1)]).aligned


def test_token_map_logprobs_select_the_tokens_of_a_span_after_multibyte_text():
    content = '{"a": "ééé", "b": "xyz"}'
    tokens = tokenize(content, {"ééé": -1.0, "xyz": -2.0})
    spans_ = value_spans(content)
    token_map = TokenMap(content, tokens)
    assert token_map.logprobs(spans_[("a",)]) == [-1.0]
    assert token_map.logprobs(spans_[("b",)]) == [-2.0]


def test_token_map_empty_span_is_the_next_token():
    content = '{"a": ""}'
    tokens = [TokenLogprob(len(t.encode()), -float(i)) for i, t in enumerate(['{"', "a", '":', " ", '"', '"}'])]
    spans_ = value_spans(content)
    assert spans_[("a",)][0] == spans_[("a",)][1]
    assert TokenMap(content, tokens).logprobs(spans_[("a",)]) == [-5.0]


def test_token_split_inside_a_multibyte_character_still_counts():
    content = '{"a": "é"}'
    raw = content.encode()
    at = raw.index("é".encode())
    # Byte-level tokens: the two bytes of "é" are separate tokens.
    pieces = [at, 1, 1, len(raw) - at - 2]
    tokens = [TokenLogprob(n, lp) for n, lp in zip(pieces, (-0.01, -0.5, -0.7, -0.01))]
    token_map = TokenMap(content, tokens)
    assert token_map.aligned
    assert token_map.logprobs(value_spans(content)[("a",)]) == [-0.5, -0.7]


# --- per control ----------------------------------------------------------------------------


def confidences(content: str, controls, logprobs: dict[str, float], default: float = -0.001):
    answer = json.loads(content)
    return answer_confidences(content, 0, tokenize(content, logprobs, default), controls, answer)


def test_likely_label_scores_higher_than_unlikely_label():
    content = '{"intent": "book"}'
    sure = confidences(content, [choices()], {"book": math.log(0.95)})
    unsure = confidences(content, [choices()], {"book": math.log(0.3)})
    assert sure["intent"] > unsure["intent"]
    assert sure["intent"] == pytest.approx(0.95, abs=0.01)
    assert unsure["intent"] == pytest.approx(0.3, abs=0.01)


def test_choice_confidence_is_joint_over_its_tokens():
    content = '{"intent": "refund"}'
    pieces = ['{"', "intent", '":', ' "', "ref", "u", "nd", '"}']
    assert "".join(pieces) == content
    probs = {"ref": 0.9, "u": 0.5, "nd": 0.8}
    tokens = [TokenLogprob(len(p.encode()), math.log(probs.get(p, 1.0))) for p in pieces]
    result = answer_confidences(content, 0, tokens, [choices()], {"intent": "refund"})
    assert result["intent"] == pytest.approx(0.9 * 0.5 * 0.8, rel=0.01)


def test_multiple_choices_take_the_least_likely_choice():
    content = '{"intent": ["book", "refund"]}'
    result = confidences(content, [choices(multiple=True)], {"book": math.log(0.9), "refund": math.log(0.2)})
    assert result["intent"] == pytest.approx(0.2, abs=0.01)


def test_spans_take_the_least_confident_span():
    content = '{"ner": [{"text": "Anna", "label": "PER"}, {"text": "Oslo", "label": "LOC"}]}'
    logprobs = {"Anna": -0.01, "PER": -0.01, "Oslo": math.log(0.25), "LOC": math.log(0.25)}
    result = confidences(content, [spans()], logprobs)
    assert result["ner"] == pytest.approx(0.25, abs=0.01)


def test_each_span_region_gets_its_own_tokens_score():
    content = '{"ner": [{"text": "Anna", "label": "PER"}, {"text": "Oslo", "label": "LOC"}]}'
    logprobs = {"Anna": -0.01, "PER": -0.01, "Oslo": math.log(0.25), "LOC": math.log(0.25)}
    answer = json.loads(content)
    own = span_confidences(content, 0, tokenize(content, logprobs), [spans()], answer)["ner"]
    assert own[("Anna", "PER")] == pytest.approx(0.99, abs=0.01)
    assert own[("Oslo", "LOC")] == pytest.approx(0.25, abs=0.01)
    assert span_confidences(content, 0, None, [spans()], answer) == {}  # no logprobs: no region scores


def test_empty_span_list_scores_the_empty_list():
    content = '{"ner": []}'
    brackets = {"[": math.log(0.6), "]": math.log(0.9)}
    assert confidences(content, [spans()], brackets)["ner"] == pytest.approx(0.54, abs=0.01)


def test_textarea_uses_the_geometric_mean():
    content = '{"summary": "a b"}'
    control = TextAreaField("summary", "text", "text")
    result = confidences(content, [control], {"a": math.log(0.5), " ": math.log(1.0), "b": math.log(0.5)})
    assert result["summary"] == pytest.approx((0.5 * 1.0 * 0.5) ** (1 / 3), rel=0.01)


def test_rating_and_number_use_their_value_tokens():
    content = '{"r": 4, "n": 12}'
    controls = [RatingField("r", "text", "text"), NumberField("n", "text", "text")]
    result = confidences(content, controls, {"4": math.log(0.7), "12": math.log(0.4)})
    assert result == {"r": pytest.approx(0.7, abs=0.01), "n": pytest.approx(0.4, abs=0.01)}


def test_each_control_scored_independently_in_one_answer():
    content = '{"intent": "refund", "ner": [{"text": "Anna", "label": "PER"}], "r": 2}'
    controls = [choices(), spans(), RatingField("r", "text", "text")]
    result = confidences(content, controls, {"refund": math.log(0.4), "Anna": math.log(0.9), "2": math.log(0.8)})
    assert set(result) == {"intent", "ner", "r"}
    assert result["intent"] < result["r"] < 1.0


def test_scores_are_clamped_to_probabilities():
    content = '{"intent": "book"}'
    assert confidences(content, [choices()], {"book": 0.5})["intent"] == 1.0


def test_json_after_a_prefix_is_located():
    content = 'Here you go:\n```json\n{"intent": "other"}\n```'
    tokens = tokenize(content, {"other": math.log(0.6)})
    result = answer_confidences(content, content.index("{"), tokens, [choices()], {"intent": "other"})
    assert result["intent"] == pytest.approx(0.6, abs=0.01)


# --- missing / unusable logprobs -> None ---------------------------------------------


def test_no_logprobs_gives_none():
    content = '{"intent": "book"}'
    assert answer_confidences(content, 0, None, [choices()], {"intent": "book"}) is None
    assert answer_confidences(content, 0, [], [choices()], {"intent": "book"}) is None


def test_misaligned_logprobs_give_none():
    content = '{"intent": "böök"}'
    by_chars = [TokenLogprob(len(t), -0.1) for t in _TOKEN.findall(content)]
    assert answer_confidences(content, 0, by_chars, [choices()], {"intent": "böök"}) is None


def test_unparseable_content_gives_none():
    content = '{"intent": bo}'
    assert answer_confidences(content, 0, tokenize(content), [choices()], {}) is None


def test_control_missing_from_the_answer_has_no_confidence():
    content = '{"intent": "book"}'
    result = confidences(content, [choices(), TextAreaField("summary", "text", "text")], {})
    assert set(result) == {"intent"}
