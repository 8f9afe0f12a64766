"""The unit-level guards behind the hostile-input corpus: bounded caches, escaped logs, numeric
config attributes, linear-time patterns, bounded guideline references, project ids."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prelabel.cli import app
from prelabel.label_config.constraints import Constraint
from prelabel.label_config.guideline import GuidelineError, guideline_ref
from prelabel.label_config.schema import ConfigError, build_schema, metric_tag
from prelabel.logs import PlainFormatter, escape_controls
from prelabel.lru import LRU, Once
from prelabel.ml_backend.protocol import RequestError, project_id
from prelabel.prediction.llm_client import LLMClient, LLMError
from prelabel.prediction.predictor import ContextBuilder
from prelabel.settings import Settings

OPEN = '<View><Text name="text" value="$text"/>'


def test_lru_keeps_the_most_recent() -> None:
    cache: LRU[int, str] = LRU(2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert 2 not in cache and 1 in cache and 3 in cache and len(cache) == 2
    seen = Once(2)
    assert [seen.first(k) for k in ("x", "x", "y", "z", "x")] == [True, False, True, True, True]


def test_contexts_are_bounded() -> None:
    predictor = ContextBuilder(Settings(context_cache_size=3))
    configs = [f'{OPEN}<Choices name="c{i}" toName="text"><Choice value="a"/></Choices></View>' for i in range(10)]
    first = predictor.context(configs[0])
    assert predictor.context(configs[0]) is first  # reused
    for config in configs:
        predictor.context(config)
    assert len(predictor) == 3
    assert predictor.cached_context(configs[0]) is None and predictor.cached_context(configs[-1]) is not None


def test_plain_log_lines_cannot_be_forged() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PlainFormatter())
    log = logging.getLogger("test.forge")
    log.addHandler(handler)
    try:
        log.warning("project %s", "5\n2026-01-01 00:00:00 INFO admin logged in\x1b[2J\u2028x")
        try:
            raise ValueError("boom\nFORGED")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("project 5\\n2026-01-01 00:00:00 INFO admin logged in\\x1b[2J\\u2028x")
    records = [line for line in lines if not line.startswith("    ")]
    assert len(records) == 2, lines  # the traceback (with its forged line) is indented under its record
    assert escape_controls("tab\there") == "tab\\there"


@pytest.mark.parametrize("control, problem", [
    ('<Rating name="r" toName="text" maxRating="abc"/>', "maxRating"),
    ('<Rating name="r" toName="text" maxRating="0"/>', "maxRating"),
    ('<Number name="n" toName="text" min="inf"/>', "finite"),
    ('<Number name="n" toName="text" min="nan" step="0.5"/>', "finite"),
    ('<Number name="n" toName="text" max="1e400"/>', "finite"),
    ('<Number name="n" toName="text" min="x"/>', "not a number"),
    ('<Number name="n" toName="text" min="5" max="1"/>', "greater than max"),
    ('<Number name="n" toName="text" step="0"/>', "step"),
    ('<Number name="n" toName="text" min="1.2" max="1.8"/>', "no integer"),
    ('<TextArea name="t" toName="text" maxLength="-1"/>', "maxLength"),
])
def test_numeric_attributes_are_validated(control: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_schema(f"{OPEN}{control}</View>")
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_valid_numeric_attributes_pass() -> None:
    schema = build_schema(f'{OPEN}<Number name="n" toName="text" min="-1.5" max="2.5" step="0.5"/></View>')
    assert schema.json_schema()["properties"]["n"] == {"type": "number", "minimum": -1.5, "maximum": 2.5}


def test_dtds_are_refused() -> None:
    with pytest.raises(ConfigError, match="DTD"):
        build_schema('<!DOCTYPE v [<!ENTITY a "aaaa">]>' + f'{OPEN}<Choices name="c" toName="text">'
                     '<Choice value="&a;"/></Choices></View>')


def test_metric_tags_are_a_closed_set() -> None:
    assert metric_tag("RectangleLabels") == "RectangleLabels"
    assert metric_tag("rectanglelabels") == "RectangleLabels"
    assert metric_tag("Foo") == metric_tag("x" * 5000) == "other"


def test_patterns_run_in_linear_time_or_are_refused() -> None:
    rule = Constraint.model_validate({"pattern": {"field": "t", "regex": "(a+)+$"}})
    started = time.perf_counter()
    assert rule.violations({"t": "a" * 50_000 + "!"})  # no match, found without backtracking
    assert time.perf_counter() - started < 0.5
    for regex in (r"(a)\1", "(?=a)a", "(?<=a)b", "a++", "(a{1000}){1000}", "x" * 1001, "["):
        with pytest.raises(ValueError):
            Constraint.model_validate({"pattern": {"field": "t", "regex": regex}})


def test_guideline_references_are_bounded() -> None:
    assert guideline_ref(None) is None and guideline_ref("") is None
    assert guideline_ref("search_intent") == "search_intent"
    nested: dict = {"x": 1}
    for _ in range(1000):
        nested = {"labels": nested}
    for bad in ("g" * 5000, "../etc/passwd", "a\nb", 5, ["x"], nested):
        with pytest.raises(GuidelineError):
            guideline_ref(bad)


@pytest.mark.parametrize("raw", ["", ".x", ".", "-1", -1, "5\nx", "1e5", "\u0661", "5.x", "5.", True, "1" * 19])
def test_malformed_project_ids_are_rejected(raw: object) -> None:
    with pytest.raises(RequestError) as info:
        project_id(raw)  # type: ignore[arg-type]
    assert info.value.status == 422 and info.value.reason == "bad_project"


def test_project_ids() -> None:
    assert project_id("12.1795520286") == "12" and project_id(7) == "7" and project_id("007") == "7"
    assert project_id(None) is None


def test_config_check_refuses_unsafe_patterns_and_bad_numbers(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "c.xml"
    config.write_text(f'{OPEN}<TextArea name="time" toName="text"/></View>')
    guideline = tmp_path / "g.yaml"
    guideline.write_text("constraints:\n  - pattern: {field: time, regex: '(a)\\1'}\n")
    result = runner.invoke(app, ["config", "check", str(config), "-g", str(guideline)])
    assert result.exit_code == 2 and "RE2" in result.output
    guideline.write_text("constraints:\n  - pattern: {field: time, regex: '(a+)+$'}\n")
    assert runner.invoke(app, ["config", "check", str(config), "-g", str(guideline)]).exit_code == 0
    config.write_text(f'{OPEN}<Number name="n" toName="text" min="nan"/></View>')
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2 and "min" in result.output


def test_unserialisable_request_is_a_local_error_never_retried() -> None:
    """A NaN in a schema (a config that slipped past validation) fails once, locally: it is not an
    LLM failure, so it is neither sent nor retried (the endpoint here would refuse connections,
    which would be retried with backoff and give ``connection_error``)."""
    client = LLMClient(Settings(llm_base_urls=["http://127.0.0.1:9/v1"], llm_max_retries=3))
    started = time.perf_counter()
    try:
        with pytest.raises(LLMError) as info:
            asyncio.run(client.complete([{"role": "user", "content": "x"}], {"type": "number", "minimum": math.nan}))
    finally:
        asyncio.run(client.aclose())
    assert info.value.kind == "local_error"
    assert time.perf_counter() - started < 1
