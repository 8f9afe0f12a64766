"""Label distributions of Choices controls from the answer's token alternatives (prediction/distribution.py)."""

from __future__ import annotations

import json
import math

import pytest

from prelabel.label_config.controls import ChoicesField, LabelInfo, TextAreaField
from prelabel.prediction.distribution import (
    INCLUSION,
    SINGLE,
    answer_label_probs,
    distribution_score,
    kind_of,
)
from prelabel.prediction.llm_client import TokenLogprob

LABELS = ("navigational", "informational", "transactional", "other")


def control(multiple: bool = False, labels: tuple[str, ...] = LABELS) -> ChoicesField:
    return ChoicesField("intent", "text", "text", labels=[LabelInfo(v) for v in labels], multiple=multiple)


def tokens_of(pieces: list[str], alternatives: dict[int, dict[str, float]] | None = None,
              chosen: dict[int, float] | None = None) -> list[TokenLogprob]:
    """Tokens with the given texts; ``alternatives[i]``: {token text: probability} at token i
    (the emitted token included when listed), ``chosen[i]``: the emitted token's probability."""
    alternatives, chosen = alternatives or {}, chosen or {}
    out = []
    for i, piece in enumerate(pieces):
        top = tuple((text, math.log(p)) for text, p in alternatives.get(i, {}).items())
        p = chosen.get(i, alternatives.get(i, {}).get(piece, 0.999))
        out.append(TokenLogprob(len(piece.encode()), math.log(p), top))
    return out


def probs(pieces, alternatives, field=None, chosen=None):
    content = "".join(pieces)
    field = field or control()
    answer = json.loads(content)
    return answer_label_probs(content, 0, tokens_of(pieces, alternatives, chosen), [field], answer).get(field.name)


# --- single choice ---------------------------------------------------------------------------


def test_distribution_follows_the_first_token_alternatives_and_sums_to_one():
    pieces = ['{"', "intent", '":', ' "', "inform", "ational", '"}']
    result = probs(pieces, {4: {"inform": 0.55, "nav": 0.3, "trans": 0.08, "xyz": 0.02}})
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-5)
    # "xyz" begins no label: dropped. "other" was not among the alternatives: it gets the unseen
    # mass (0.05), capped at the smallest alternative shown (0.02).
    total = 0.55 + 0.3 + 0.08 + 0.02
    assert result["informational"] == pytest.approx(0.55 / total, abs=0.005)
    assert result["navigational"] == pytest.approx(0.3 / total, abs=0.005)
    assert result["transactional"] == pytest.approx(0.08 / total, abs=0.005)
    assert result["other"] == pytest.approx(0.02 / total, abs=0.005)


def test_a_label_written_as_one_token_keeps_its_whole_mass():
    """The chosen label is a single token: nothing after it may zero its probability."""
    pieces = ['{"', "intent", '":', ' "', "other", '"}']
    result = probs(pieces, {4: {"other": 0.7, "nav": 0.2, "inform": 0.1}})
    assert result["other"] == pytest.approx(0.7, abs=0.01)
    assert max(result, key=result.get) == "other"


def test_a_token_that_runs_past_the_closing_quote_still_names_its_label():
    pieces = ['{"', "intent", '":', ' "', 'other"}']
    result = probs(pieces, {4: {'other"}': 0.5, "trans": 0.5}})
    assert result["other"] == pytest.approx(result["transactional"], abs=0.01)


def test_quote_merged_into_the_label_token_is_handled():
    """Tokenizers often glue the opening quote to the label: the lead is stripped from alternatives."""
    pieces = ['{"', "intent", '":', ' "nav', "igational", '"}']
    result = probs(pieces, {3: {' "nav': 0.4, ' "inform': 0.4, ' "other': 0.2}})
    assert result["navigational"] == pytest.approx(0.4, abs=0.01)
    assert result["informational"] == pytest.approx(0.4, abs=0.01)
    assert result["other"] == pytest.approx(0.2, abs=0.01)


def test_labels_sharing_a_first_token_split_by_the_chosen_labels_remaining_tokens():
    labels = ("book_flight", "book_hotel", "other")
    pieces = ['{"', "intent", '":', ' "', "book", "_hotel", '"}']
    result = probs(pieces, {4: {"book": 0.8, "other": 0.2}, 5: {"_hotel": 0.75, "_flight": 0.25}},
                   field=control(labels=labels))
    assert result["book_hotel"] == pytest.approx(0.8 * 0.75, abs=0.01)
    assert result["book_flight"] == pytest.approx(0.8 * 0.25, abs=0.01)
    assert result["other"] == pytest.approx(0.2, abs=0.01)


def test_emitted_token_missing_from_the_alternatives_counts_with_its_own_probability():
    pieces = ['{"', "intent", '":', ' "', "other", '"}']
    result = probs(pieces, {4: {"nav": 0.3}}, chosen={4: 0.6})
    # informational and transactional share the unseen 0.1
    assert result == pytest.approx({"other": 0.6, "navigational": 0.3, "informational": 0.05, "transactional": 0.05},
                                   abs=0.01)


def test_no_alternatives_no_distribution():
    pieces = ['{"', "intent", '":', ' "', "other", '"}']
    assert probs(pieces, {}) is None
    content = "".join(pieces)
    assert answer_label_probs(content, 0, None, [control()], {"intent": "other"}) == {}


def test_other_controls_get_no_distribution():
    content = '{"summary": "abc"}'
    tokens = tokens_of(['{"', "summary", '":', ' "', "abc", '"}'], {4: {"abc": 0.5, "x": 0.5}})
    assert answer_label_probs(content, 0, tokens, [TextAreaField("summary", "text", "text")], {"summary": "abc"}) == {}


def test_answer_nested_under_a_root_is_found():
    """The reviewer's correction sits under "corrected": its distribution is read from there."""
    pieces = ['{"', "verdict", '":', ' "', "incorrect", '",', ' "', "corrected", '":', ' {"', "intent", '":', ' "',
              "other", '"}}']
    content = "".join(pieces)
    tokens = tokens_of(pieces, {13: {"other": 0.9, "nav": 0.1}})
    result = answer_label_probs(content, 0, tokens, [control()], {"intent": "other"}, root=("corrected",))
    assert result["intent"]["other"] == pytest.approx(0.9, abs=0.01)


# --- multiple choice -------------------------------------------------------------------------


def test_multiple_choice_gives_inclusion_probabilities():
    field = control(multiple=True)
    pieces = ['{"', "intent", '":', ' ["', "nav", "igational", '",', ' "', "other", '"]}']
    alternatives = {
        4: {"nav": 0.9, "other": 0.1},           # first item
        6: {'",': 0.6, '"]}': 0.4},               # go on after the first item?
        8: {"other": 0.5, "trans": 0.5},          # second item, among the labels not written yet
        9: {'"]}': 0.95, '",': 0.05},             # go on after the second item?
    }
    result = probs(pieces, alternatives, field=field)
    assert kind_of(field) == INCLUSION and kind_of(control()) == SINGLE
    assert result["navigational"] == pytest.approx(0.9, abs=0.02)
    # other: 0.1 at the first position, 0.6 * 0.5 at the second, then a little more
    assert result["other"] == pytest.approx(1 - (1 - 0.1) * (1 - 0.6 * 0.5), abs=0.03)
    assert result["transactional"] > result["informational"]
    assert result["informational"] < 0.05
    assert all(0.0 <= p <= 1.0 for p in result.values())


def test_multiple_choice_without_the_separator_alternatives_has_no_distribution():
    field = control(multiple=True)
    pieces = ['{"', "intent", '":', ' ["', "other", '"]}']
    assert probs(pieces, {4: {"other": 0.9, "nav": 0.1}}, field=field) is None


def test_a_label_written_twice_has_no_distribution_and_raises_nothing():
    # ["other", "other"]: at the second item "other" is no longer among the labels left to write
    field = control(multiple=True)
    pieces = ['{"', "intent", '":', ' ["', "other", '",', ' "', "other", '"]}']
    alternatives = {4: {"other": 0.9, "nav": 0.1}, 5: {'",': 0.6, '"]}': 0.4},
                    7: {"other": 0.5, "trans": 0.5}, 8: {'"]}': 0.95, '",': 0.05}}
    assert probs(pieces, alternatives, field=field) is None


# --- score from the distribution -------------------------------------------------------------


def test_score_of_a_single_choice_is_the_chosen_labels_probability():
    assert distribution_score(control(), "other", {"other": 0.7, "navigational": 0.3}) == 0.7


def test_score_of_a_multiple_choice_is_its_shakiest_decision():
    field = control(multiple=True)
    p = {"navigational": 0.9, "other": 0.6, "transactional": 0.3, "informational": 0.01}
    assert distribution_score(field, ["navigational", "other"], p) == pytest.approx(0.6)
    p["transactional"] = 0.55  # left out, but the model nearly put it in
    assert distribution_score(field, ["navigational", "other"], p) == pytest.approx(0.45)
