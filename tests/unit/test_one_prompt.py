"""One prompt: exported training records, evaluation and the backend render the prompt alike.

The export writes each record through the backend's own rendering; training and the engines use
``Record.messages()``; the backend builds its messages in ``Predictor``. These tests put a labeled
task through all of them and require the very same chat messages, and require the record's answer
to be one the backend accepts as the human's label. Any drift (a template change in
``prediction/prompt.py`` that the export does not follow, an instruction that asks for another
answer format than the output has) fails here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from prelabel.export.pipeline import ExportOptions, export_tasks
from prelabel.prediction.llm_client import Completion, LLMClient
from prelabel.prediction.predictor import Predictor
from prelabel.settings import Settings
from prelabel.train.data import load_dataset
from prelabel.train.evaluate import parse

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"


class RecordingLLM(LLMClient):
    """The backend's LLM client with its network call replaced: records the messages it is sent,
    answers a given text."""

    def __init__(self, settings: Settings, answer: str) -> None:
        super().__init__(settings)
        self.answer = answer
        self.sent: list[list[dict[str, str]]] = []

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], **_: Any) -> Completion:
        self.sent.append(messages)
        return Completion(self.answer, None, self.model, "recorder", 1, 0.0, "json_object")


def _choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def _slots() -> list[dict[str, Any]]:
    return [
        {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["book_flight"]}},
        {"from_name": "departure_city", "to_name": "text", "type": "textarea", "value": {"text": ["Paris"]}},
        {"from_name": "arrival_city", "to_name": "text", "type": "textarea", "value": {"text": ["Oslo"]}},
        {"from_name": "date", "to_name": "text", "type": "textarea", "value": {"text": ["2025-06-01"]}},
        {"from_name": "time", "to_name": "text", "type": "textarea", "value": {"text": ["14:30"]}},
        {"from_name": "class", "to_name": "text", "type": "choices", "value": {"choices": ["economy"]}},
        {"from_name": "passenger_count", "to_name": "text", "type": "number", "value": {"number": 2}},
    ]


CASES = {  # a classification dataset needs two labels
    "search_intent": [("cheap flights to rome", _choice("informational")),
                      ("rome airport website", _choice("navigational"))],
    "flight_slots": [("2 economy seats from Paris to Oslo on 2025-06-01 at 14:30", _slots())],
}


def _export(tmp_path: Path, template: str, style: str) -> tuple[str, Any]:
    config = (TEMPLATES / f"{template}.xml").read_text()
    cases = CASES[template]
    tasks = [{"id": i, "data": {"text": f"{cases[i % len(cases)][0]} {i}"},
              "annotations": [{"id": i, "completed_by": 1, "result": cases[i % len(cases)][1]}]}
             for i in range(1, 21)]
    out = export_tasks(tasks, config, tmp_path / f"{template}-{style}", ExportOptions(
        near_threshold=None, min_per_class=0, prompt_style=style, pii="keep"), {"id": 1}, template)
    return config, load_dataset(out)


@pytest.mark.parametrize("template", sorted(CASES))
@pytest.mark.parametrize("style", ["compact", "full"])
def test_records_are_the_backends_prompt_and_answer(tmp_path: Path, template: str, style: str) -> None:
    config, dataset = _export(tmp_path, template, style)
    manifest = dataset.manifest
    assert manifest.raw["prompt_style"] == style and manifest.raw["answer_format"] == "json"
    records = [r for split in dataset.splits.values() for r in split]
    assert records and all(r.data for r in records)
    for record in records:
        # the backend as it serves a model trained on this export: its prompt style, no few-shot turns
        settings = Settings(prompt_style=style, fewshot_k=0)
        llm = RecordingLLM(settings, record.output)
        predictor = Predictor(settings, llm, cache=None)  # type: ignore[arg-type]
        ctx = predictor.context(config, template)
        prediction = asyncio.run(predictor.predict_task({"id": 1, "data": record.data}, ctx))
        assert llm.sent == [record.messages()], "training/eval messages differ from what the backend sends"
        # the record's answer is one the backend takes as a valid label (status ok, every control filled)
        assert prediction["meta"]["status"] == "ok", prediction["meta"]
        assert len(prediction["result"]) == len(ctx.schema.fields)
        value, valid = parse(record.output, manifest)
        assert valid and value is not None


def test_system_prompt_asks_for_the_answer_format_the_records_give(tmp_path: Path) -> None:
    _, dataset = _export(tmp_path, "search_intent", "compact")
    record = next(r for r in dataset.splits["train"] if "cheap flights" in r.instruction)
    assert "Answer with a single JSON object" in record.system
    assert "exactly one label" not in record.instruction  # the old, contradicting instruction
    assert json.loads(record.output) == {"intent": "informational"}
    assert parse(record.output, dataset.manifest) == ("informational", True)
    assert parse("informational", dataset.manifest) == (None, False), "a bare label is not the backend's answer"


def test_compact_prompt_is_short_and_keeps_the_answer_keys(tmp_path: Path) -> None:
    _, full = _export(tmp_path, "search_intent", "full")
    _, compact = _export(tmp_path, "search_intent", "compact")
    long, short = full.splits["train"][0].system, compact.splits["train"][0].system
    assert len(short) * 2 < len(long), "no label definitions, examples or schema"
    assert '"intent": exactly one of "navigational"' in short and "JSON schema" in long
    # the rules and "when unsure, choose other" are told to the model (seed A), fine-tuned or not
    assert "## Boundary rules" in short and 'Choose "other" when no definition clearly applies' in short
