"""Few-shot example selection (prediction/fewshot.py)."""

from __future__ import annotations

import json

import pytest

from prelabel.label_config.guideline import parse_guideline
from prelabel.label_config.schema import build_schema
from prelabel.prediction.fewshot import FewShotPool, file_examples, guideline_examples
from prelabel.prediction.prompt import Example

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>"""

QUERIES = [
    "cheap flights to rome",
    "weather in paris tomorrow",
    "python course for beginners",
    "buy running shoes online",
    "funny cat videos",
    "how tall is the eiffel tower",
]


def pool(texts=QUERIES) -> FewShotPool:
    return FewShotPool([Example({"text": t}, {"intent": "a"}, source=f"s{i}") for i, t in enumerate(texts)])


def texts_of(examples):
    return [e.texts["text"] for e in examples]


def test_select_returns_the_most_similar_examples_most_similar_last():
    chosen = pool().select({"text": "cheap flights to paris"}, 2)
    assert len(chosen) == 2
    assert chosen[-1].texts["text"] == "cheap flights to rome"
    assert "weather in paris tomorrow" in texts_of(chosen)


def test_select_orders_by_similarity():
    chosen = pool().select({"text": "funny dog videos online"}, 3)
    assert chosen[-1].texts["text"] == "funny cat videos"
    assert len(set(texts_of(chosen))) == 3


def test_select_excludes_an_identical_text():
    chosen = pool().select({"text": "weather in paris tomorrow"}, 3)
    assert "weather in paris tomorrow" not in texts_of(chosen)
    assert len(chosen) == 3


def test_select_is_deterministic():
    query = {"text": "shoes"}
    assert texts_of(pool().select(query, 3)) == texts_of(pool().select(query, 3))


@pytest.mark.parametrize("k", [len(QUERIES), len(QUERIES) + 5])
def test_k_at_least_the_pool_returns_every_example(k):
    chosen = pool().select({"text": "learn python online"}, k)
    assert sorted(texts_of(chosen)) == sorted(QUERIES)


def test_k_larger_than_pool_still_ranks_most_similar_last():
    chosen = pool().select({"text": "cheap flights to paris"}, len(QUERIES) + 1)
    assert chosen[-1].texts["text"] == "cheap flights to rome"


@pytest.mark.parametrize("texts", [QUERIES, QUERIES[:1]], ids=["k-above-pool", "single-example-pool"])
def test_k_larger_than_pool_still_excludes_the_task_itself(texts):
    chosen = pool(texts).select({"text": texts[0]}, len(texts) + 3)
    assert texts[0] not in texts_of(chosen)


def test_k_zero_and_empty_pool():
    assert pool().select({"text": "x"}, 0) == []
    assert FewShotPool([]).select({"text": "x"}, 3) == []
    assert len(FewShotPool([])) == 0 and len(pool()) == len(QUERIES)


def test_multi_object_examples_use_all_their_texts():
    examples = [
        Example({"title": "Rome", "body": "flights and hotels"}, {}),
        Example({"title": "Cats", "body": "funny videos"}, {}),
        Example({"title": "Python", "body": "course for beginners"}, {}),
    ]
    chosen = FewShotPool(examples).select({"title": "Dogs", "body": "funny videos"}, 1)
    assert chosen[0].texts["title"] == "Cats"


# --- sources --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema():
    return build_schema(CONFIG)


def test_guideline_examples_take_the_object_texts(schema):
    guideline = parse_guideline({"examples": [
        {"data": {"text": "one", "extra": 1}, "answer": {"intent": "a"}},
        {"data": {"text": "two"}, "answer": {"intent": "b"}},
    ]})
    examples = guideline_examples(guideline, schema)
    assert [(e.texts, e.answer, e.source) for e in examples] == [
        ({"text": "one"}, {"intent": "a"}, "guideline:0"),
        ({"text": "two"}, {"intent": "b"}, "guideline:1"),
    ]


def test_file_examples_reads_jsonl_and_skips_blank_lines(schema, tmp_path):
    path = tmp_path / "shots.jsonl"
    lines = [
        json.dumps({"data": {"text": "first"}, "answer": {"intent": "a"}}),
        "",
        json.dumps({"data": {"text": "ünïcode"}, "answer": {"intent": "b"}}, ensure_ascii=False),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = file_examples(path, schema)
    assert [(e.texts["text"], e.answer["intent"], e.source) for e in examples] == [
        ("first", "a", "file:1"),
        ("ünïcode", "b", "file:3"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps({"answer": {"intent": "a"}}),
        json.dumps({"data": {"text": "x"}}),
        json.dumps({"data": {"body": "x"}, "answer": {}}),
        json.dumps({"data": {"text": 5}, "answer": {}}),
        json.dumps(["data", "answer"]),
        json.dumps({"data": "text", "answer": {}}),
    ],
    ids=["invalid-json", "no-data", "no-answer", "missing-object-key", "non-string-text", "not-an-object",
         "data-not-an-object"],
)
def test_file_examples_errors_name_the_line(schema, tmp_path, bad):
    path = tmp_path / "shots.jsonl"
    good = json.dumps({"data": {"text": "ok"}, "answer": {"intent": "a"}})
    path.write_text(f"{good}\n\n{good}\n{bad}\n{good}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"shots\.jsonl:4:"):
        file_examples(path, schema)
