"""Hostile input, round 2 (issue 27): model responses read as data, bounded work, blank secrets, URL tokens.

The response parser is fuzzed with hypothesis over the OpenAI chat-completions schema: every field
either well-formed or any JSON value at all. Whatever comes, ``read_response`` returns a response
whose every part can be used and encoded, or raises ``ResponseError``; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prelabel.label_config.answers import RegionLimits, check_answer, parse_answer
from prelabel.label_config.controls import AnswerError
from prelabel.label_config.schema import build_schema
from prelabel.logs import redact
from prelabel.lru import LRU
from prelabel.ml_backend.limits import LimitError, check_config, check_webhook
from prelabel.prediction.llm_response import MAX_TOP_LOGPROBS, ResponseError, read_response
from prelabel.settings import Settings

NER = ('<View><Text name="text" value="$text"/><Labels name="ent" toName="text">'
       '<Label value="PER"/><Label value="ORG"/></Labels></View>')

# --- model responses ---------------------------------------------------------------------------------
json_leaf = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
any_json = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A well-formed value most of the time, any JSON value otherwise (or the key left out)."""
    return st.one_of(good, good, good, any_json)


logprob = st.floats(min_value=-50, max_value=0) | st.floats(allow_nan=False) | st.integers(-(2**40), 2**40)
alternative = st.fixed_dictionaries({"token": either(st.text(max_size=5)), "logprob": either(logprob)})
token = st.fixed_dictionaries(
    {"token": either(st.text(max_size=5)), "logprob": either(logprob)},
    optional={"bytes": either(st.lists(st.integers(-5, 300), max_size=4)),
              "top_logprobs": either(st.lists(alternative, max_size=MAX_TOP_LOGPROBS + 3))})
choice = st.fixed_dictionaries(
    {"message": either(st.fixed_dictionaries({"content": either(st.text(max_size=40))}, optional={"role": any_json}))},
    optional={"logprobs": either(st.none() | st.fixed_dictionaries({"content": either(st.lists(token, max_size=4))})),
              "finish_reason": any_json, "index": any_json})
count = st.integers(-5, 2**64)
response = st.fixed_dictionaries(
    {"choices": either(st.lists(choice, min_size=1, max_size=2))},
    optional={"model": either(st.text(max_size=300)), "id": any_json, "object": any_json,
              "usage": either(st.fixed_dictionaries({}, optional={
                  "prompt_tokens": either(count), "completion_tokens": either(count), "total_tokens": either(count)}))})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response)
def test_any_response_shape_is_usable_or_a_response_error(body: dict[str, Any]) -> None:
    try:
        parsed = read_response(json.dumps(body).encode(), 1 << 20)
    except ResponseError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 200
        return
    assert isinstance(parsed.content, str)
    assert parsed.model is None or (isinstance(parsed.model, str) and len(parsed.model) <= 256)
    assert all(isinstance(v, int) and 0 <= v < 2**31 for v in parsed.usage_counts().values())
    for item in parsed.tokens or []:
        assert isinstance(item.token, str) and math.isfinite(item.logprob) and item.logprob <= 0
        assert len(item.top_logprobs or []) <= MAX_TOP_LOGPROBS
        assert all(math.isfinite(alt.logprob) and alt.logprob <= 0 for alt in item.top_logprobs or [])
    orjson.dumps({"content": parsed.content, "model": parsed.model, "usage": parsed.usage_counts()})


@pytest.mark.parametrize("body", [
    b'{"choices": [{"message": {"content": "x\\ud800"}}]}',  # a lone surrogate
    b"[" * 2000 + b"]" * 2000,
    b'{"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": 1000}]}}]}',
    b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1000000000000000000000000000000}}',
    b'{"choices": {"0": {"message": {"content": "x"}}}}',
    b'{"choices": [null]}',
    b'{"choices": [{"message": null}]}',
    b'{"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"logprob": -1}]}}]}',
    b"",
    b"null",
])
def test_the_probes_response_shapes_are_response_errors(body: bytes) -> None:
    with pytest.raises(ResponseError):
        read_response(body, 1 << 20)


def test_a_response_over_the_cap_is_not_parsed() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "x" * 5000}}]})
    with pytest.raises(ResponseError, match="exceeds"):
        read_response(body, 4096)
    assert read_response(body, len(body)).content == "x" * 5000


def test_an_answer_that_cannot_be_encoded_again_is_invalid_json() -> None:
    for content in ('{"time": "x\\ud800"}', '{"n": 123456789012345678901234567890}'):
        with pytest.raises(AnswerError) as info:
            parse_answer(content)
        assert info.value.reason == "invalid_json"


# --- regions per control and per task --------------------------------------------------------------------
def test_a_frequent_span_is_refused_before_its_regions_are_built() -> None:
    # a guideline that asks for every mention (span_occurrence: all) is where one span multiplies
    schema = build_schema(NER, occurrence="all")
    text = "a " * 2000 + "z"
    answer = {"ent": [{"text": "a", "label": "PER"}]}
    checked = check_answer(schema, [], answer, {"text": text}, RegionLimits(per_control=200, per_task=1000))
    assert checked.errors["ent"].reason == "too_many_regions" and not checked.regions
    # the same answer on a text where "a" occurs a few times as a word is labeled; the "a"s inside
    # words neither become regions nor count against the cap
    fine = check_answer(schema, [], answer, {"text": "a a Ada " + "banana " * 100},
                        RegionLimits(per_control=200, per_task=1000))
    assert fine.ok and len(fine.regions["ent"]) == 2
    # placed at its first occurrence only (the default), the same answer is one region
    first = check_answer(build_schema(NER), [], answer, {"text": text}, RegionLimits(per_control=200, per_task=1000))
    assert first.ok and len(first.regions["ent"]) == 1


def test_regions_per_task_add_up_over_controls() -> None:
    config = ('<View><Text name="text" value="$text"/>'
              '<Labels name="a" toName="text"><Label value="X"/></Labels>'
              '<Labels name="b" toName="text"><Label value="Y"/></Labels></View>')
    schema = build_schema(config, occurrence="all")
    answer = {"a": [{"text": "w", "label": "X"}], "b": [{"text": "w", "label": "Y"}]}
    checked = check_answer(schema, [], answer, {"text": "w " * 30}, RegionLimits(per_control=40, per_task=50))
    assert "a" in checked.regions and checked.errors["b"].reason == "too_many_regions"
    assert "max_regions_per_task=50" in checked.errors["b"].message


# --- configs and webhooks ---------------------------------------------------------------------------------
def test_config_and_webhook_caps() -> None:
    settings = Settings(max_controls=10, max_config_bytes=4096, max_webhook_task_ids=100)
    many = "<View>" + '<Choices name="c" toName="t"><Choice value="a"/></Choices>' * 11 + "</View>"
    for config, reason in ((many, "too_many_controls"), ("<View>" + " " * 5000 + "</View>", "config_too_large"),
                           ('<!DOCTYPE x [<!ENTITY a "b">]><View/>', "bad_config")):
        with pytest.raises(LimitError) as info:
            check_config(config, settings)
        assert info.value.reason == reason
    check_config(many.replace("<Choices", "<Choices", 10).rsplit("<Choices", 1)[0] + "</View>", settings)
    with pytest.raises(LimitError) as info:
        check_webhook({"action": "TASKS_CREATED", "tasks": [{"id": 1}] * 101}, settings)
    assert info.value.reason == "too_many_task_ids"
    check_webhook({"action": "TASKS_CREATED", "tasks": [{"id": 1}] * 100}, settings)


# --- secrets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["PRELABEL_WEBHOOK_SECRET", "PRELABEL_BASIC_AUTH_PASSWORD"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_a_blank_secret_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                        value: str) -> None:
    monkeypatch.setenv("PRELABEL_BASIC_AUTH_USER", "someone")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        Settings()


def test_a_basic_auth_user_without_a_password_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRELABEL_BASIC_AUTH_USER", "someone")
    monkeypatch.delenv("PRELABEL_BASIC_AUTH_PASSWORD", raising=False)
    with pytest.raises(ValidationError, match="PRELABEL_BASIC_AUTH_PASSWORD is not"):
        Settings()


def test_tokens_in_urls_are_masked_in_log_text() -> None:
    line = "Label Studio at 'http://u:pw-9@h:8080/x?access_token=tok-123&y=2#f' is not called; see https://d/?a=b"
    masked = redact(line, [])
    for secret in ("pw-9", "tok-123"):
        assert secret not in masked
    assert "http://***@h:8080/x?access_token=***&y=***#f" in masked
    assert redact("no url ?x=1 here", []) == "no url ?x=1 here"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_server_and_the_worker_refuse_to_start_with_a_blank_secret(tmp_path: Path, command: str) -> None:
    env = {**os.environ, "PRELABEL_WEBHOOK_SECRET": " ", "PRELABEL_DATA_DIR": str(tmp_path),
           "PRELABEL_CONFIG": ""}
    done = subprocess.run([sys.executable, "-m", "prelabel.cli", command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "PRELABEL_WEBHOOK_SECRET is set but empty" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_the_lru_is_bounded_in_weight_as_well_as_count() -> None:
    cache: LRU[str, str] = LRU(100, max_weight=1000, weigh=len)
    for i in range(10):
        cache.put(f"k{i}", "x" * 300)
    assert len(cache) == 3 and cache.weight == 900 and cache.get("k9") and cache.get("k6") is None
    cache.put("big", "x" * 5000)  # heavier than the whole budget: not kept, and nothing else is either
    assert len(cache) == 0 and cache.weight == 0
    cache.put("a", "x" * 10)
    cache.put("a", "x" * 20)
    assert cache.weight == 20
