"""Context budget, label shortlist and prompt layout, without servers.

The token counts here come from the conservative estimate (no tokenizer endpoint reachable);
the server-counted path runs against llama.cpp in tests/e2e/test_large_label_sets.py.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

from prelabel.label_config.guideline import default_guideline, load_guideline
from prelabel.label_config.schema import build_schema
from prelabel.prediction.context_budget import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    ContextBudget,
    Fitted,
    TokenCounter,
    TooLong,
    answer_budget,
    estimate,
)
from prelabel.prediction.fewshot import FewShotPool, guideline_examples
from prelabel.prediction.predictor import _declined
from prelabel.prediction.prompt import NONE_OF_THESE, Example, Prompt, answer_schema
from prelabel.prediction.shortlist import Shortlister

ROOT = Path(__file__).resolve().parents[2]
BANKING = ROOT / "benchmarks" / "datasets" / "banking77"
TEMPLATES = ROOT / "label_config" / "templates"


def banking_schema():
    return build_schema((BANKING / "config.xml").read_text())


def unreachable_counter() -> TokenCounter:
    return TokenCounter("http://127.0.0.1:9/v1", "", "m")  # port 9: nothing listens


# --- answer budget ---------------------------------------------------------------------------------
def test_answer_budget_is_sized_from_the_schema() -> None:
    schema = banking_schema()
    longest = max(len(label) for label in schema.fields[0].label_values)
    single = answer_budget(schema, {"text": "x"}, 512)
    assert longest < single <= 2 * (longest + 20) + 32  # one label in JSON, not 512
    shortlisted = answer_budget(schema, {"text": "x"}, 512, {"intent": ["card_arrival", "top_up_failed"]})
    assert shortlisted < single
    ner = build_schema((TEMPLATES / "ner.xml").read_text())
    assert answer_budget(ner, {"text": "x"}, 512) == 512  # spans are open-ended: the configured cap


# --- fitting -----------------------------------------------------------------------------------------
def fit(prompt: Prompt, texts: dict, ranked: list[Example], window: int, answer: int = 50) -> Fitted | TooLong:
    budget = ContextBudget(unreachable_counter(), window)
    return asyncio.run(budget.fit(prompt, texts, ranked, answer))


def estimated(messages: list[dict[str, str]]) -> int:
    return sum(estimate(m["content"]) + MESSAGE_OVERHEAD for m in messages) + REPLY_OVERHEAD


def test_fit_drops_examples_then_detail_then_gives_up() -> None:
    schema = build_schema((TEMPLATES / "search_intent.xml").read_text())
    guideline = load_guideline("search_intent")
    prompt = Prompt(schema, guideline)
    ranked = guideline_examples(guideline, schema)
    texts = {"text": "cheap flights to rome"}
    roomy = fit(prompt, texts, ranked, 8192)
    assert isinstance(roomy, Fitted) and roomy.detail == "full" and roomy.dropped_examples == 0
    assert roomy.exact is False  # no tokenizer reachable: the conservative estimate
    full = estimated(prompt.messages(texts, ranked))
    tighter = fit(prompt, texts, ranked, full + 50 - 1)
    assert isinstance(tighter, Fitted) and tighter.detail == "full" and tighter.dropped_examples >= 1
    assert tighter.examples == ranked[tighter.dropped_examples:]  # the least similar went first
    smallest = estimated(prompt.messages(texts, []))
    compacted = fit(prompt, texts, ranked, smallest + 50 - 1)
    # no room for the full label text even without examples: shorter label text, examples back
    assert isinstance(compacted, Fitted) and compacted.detail != "full"
    assert compacted.prompt_tokens + 50 <= smallest + 50 - 1
    too_long = fit(prompt, {"text": "word " * 5000}, ranked, 2048)
    assert isinstance(too_long, TooLong) and too_long.prompt_tokens + 50 > 2048
    assert "context window 2048" in str(too_long)


def test_examples_are_shown_in_pool_order_for_a_shared_prefix() -> None:
    schema = build_schema((TEMPLATES / "search_intent.xml").read_text())
    guideline = load_guideline("search_intent")
    pool = FewShotPool(guideline_examples(guideline, schema))
    order = {id(e): i for i, e in enumerate(pool.examples)}
    budget = ContextBudget(unreachable_counter(), None)
    prompts = []
    for text in ("facebook login", "buy running shoes", "how tall is everest"):
        ranked = pool.select({"text": text}, len(pool.examples))  # the same examples, ranked differently
        fitted = asyncio.run(budget.fit(Prompt(schema, guideline), {"text": text}, ranked, 50, order=order))
        prompts.append(fitted.messages)
    assert prompts[0][:-1] == prompts[1][:-1] == prompts[2][:-1]  # everything but the task's own input


# --- shortlist ---------------------------------------------------------------------------------------
def test_shortlist_finds_the_label_of_similar_labeled_tasks() -> None:
    schema = banking_schema()
    control = schema.fields[0]
    with (BANKING / "train_sample.csv").open(encoding="utf-8") as handle:
        human = [Example({"text": r["text"]}, {"intent": r["category"]}) for r in csv.DictReader(handle)]
    shortlister = Shortlister(control, default_guideline(schema), human, 15)
    candidates = shortlister.candidates("My new card still has not arrived, when will it come?")
    assert len(candidates) == 15 and "card_arrival" in candidates[:3]
    assert set(candidates) <= set(control.label_values)


def test_shortlisted_prompt_lists_only_the_candidates_and_none_of_these() -> None:
    schema = banking_schema()
    prompt = Prompt(schema, default_guideline(schema), frozenset({"intent"}))
    assert "card_arrival" not in prompt.system  # 77 labels are not in the shared part
    candidates = {"intent": ["card_arrival", "lost_or_stolen_card"]}
    user = prompt.messages({"text": "where is my card"}, candidates=candidates)[-1]["content"]
    assert "- card_arrival" in user and f"- {NONE_OF_THESE}" in user and "top_up_failed" not in user
    enum = answer_schema(schema, candidates)["properties"]["intent"]["enum"]
    assert enum == ["card_arrival", "lost_or_stolen_card", NONE_OF_THESE]
    answer, declined = _declined({"intent": NONE_OF_THESE}, candidates)
    assert answer == {} and declined["intent"].reason == "not_in_shortlist"
    kept, none = _declined({"intent": "card_arrival"}, candidates)
    assert kept == {"intent": "card_arrival"} and not none


def test_compact_prompt_names_each_label_once() -> None:
    schema = banking_schema()
    prompt = Prompt(schema, default_guideline(schema))
    compact = prompt.system_at("compact")
    assert compact.count('"card_arrival"') == 1 and len(compact) < len(prompt.system) / 2
    json.loads(compact.rsplit("JSON schema of the answer:\n", 1)[1])  # still a valid schema
