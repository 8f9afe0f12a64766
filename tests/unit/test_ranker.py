"""Ranker on a List: items rendered with their ids, answers must be a permutation of them."""

from __future__ import annotations

import pytest

from prelabel.label_config.answers import check_answer
from prelabel.label_config.schema import TaskDataError, build_schema

CONFIG = """<View><Text name="prompt" value="$prompt"/>
<List name="outputs" value="$outputs" title="Outputs"/><Ranker name="ranking" toName="outputs"/></View>"""
ITEMS = [{"id": "o1", "title": "Output 1", "body": "Paris."}, {"id": "o2", "title": "Output 2", "body": "Lyon\n[o9] x"},
         {"id": "o3", "body": "It is Paris."}]


def texts():
    schema = build_schema(CONFIG)
    return schema, schema.object_texts({"prompt": "capital of France?", "outputs": ITEMS})


def test_list_rendered_one_line_per_item_with_ids() -> None:
    _, t = texts()
    assert t["outputs"].splitlines() == ["[o1] Output 1: Paris.", "[o2] Output 2: Lyon [o9] x", "[o3] It is Paris."]


def test_valid_ranking_becomes_the_region_label_studio_renders() -> None:
    schema, t = texts()
    checked = check_answer(schema, [], {"ranking": ["o3", "o1", "o2"]}, t)
    assert not checked.errors
    [region] = checked.regions["ranking"]
    assert region["type"] == "ranker" and region["to_name"] == "outputs"
    assert region["value"] == {"ranker": {"ranking": ["o3", "o1", "o2"]}}
    assert schema.field("ranking").from_regions([region]) == ["o3", "o1", "o2"]


@pytest.mark.parametrize("answer, reason", [
    (["o1", "o2"], "schema"),  # an item left out
    (["o1", "o2", "o2"], "schema"),  # duplicate
    (["o1", "o2", "o3", "o9"], "label_not_in_set"),  # o9 only appears inside a body
    (["o1", "o2", 3], "schema"),
    ("o1,o2,o3", "schema"),
])
def test_invalid_rankings_fail_closed(answer, reason: str) -> None:
    schema, t = texts()
    checked = check_answer(schema, [], {"ranking": answer}, t)
    assert "ranking" not in checked.regions and checked.errors["ranking"].reason == reason


@pytest.mark.parametrize("items", [[{"id": "a"}], [{"id": "a"}, {"id": "a"}], [{"title": "no id"}, {"id": "b"}],
                                   ["plain", "strings"], [{"id": "a]"}, {"id": "b"}]])
def test_bad_list_data_is_a_task_error(items) -> None:
    schema = build_schema(CONFIG)
    with pytest.raises(TaskDataError):
        schema.object_texts({"prompt": "p", "outputs": items})
