"""Evaluation through the backend itself: the test split pre-annotated as Label Studio tasks are.

The ``backend`` engine gives each test record's task data to the backend's ``Predictor``, so a
model is judged on what it will really do as the pre-annotator: the project's prompt (with the
few-shot turns the backend adds for that model, none for a fine-tuned one), the LLM client
(grammar-constrained JSON, logprobs, retries), validation with the one corrective retry, and the
prediction's score as the confidence. A task the backend leaves without a valid region counts as
an invalid answer; an LLM outage aborts the evaluation (a comparison where one side's server was
down must not decide a promotion). Needs a dataset written by the export (``data`` per record,
``label_config`` in the manifest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prelabel.contract import Prediction, TaskStatus
from prelabel.settings import Settings, get_settings
from prelabel.train.data import Manifest, Record
from prelabel.train.engine_types import AnswerFormat, EngineError, Generation


class BackendEngine:
    name = "backend"
    latency_mode = "per_request"

    def __init__(self, model: str, *, base_url: str, settings: Settings | None = None,
                 fewshot_k: int | None = None, prompt_style: str | None = None, concurrency: int = 4,
                 console: Any | None = None) -> None:
        base = settings or get_settings()
        update: dict[str, Any] = {"llm_model": model, "llm_base_urls": [base_url], "llm_concurrency": concurrency}
        if fewshot_k is not None:
            update["fewshot_k"] = fewshot_k
        if prompt_style is not None:
            update["prompt_style"] = prompt_style
        self.settings = base.model_copy(update=update)
        self.model = model
        self.base_url = base_url
        self.console = console  # a progress bar there while the test split is pre-annotated

    def describe(self) -> dict[str, Any]:
        host = self.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        return {"engine": self.name, "model": self.model, "endpoint": host, "decoding": "the backend's",
                "guided": self.settings.structured_output != "none", "fewshot_k": self.settings.fewshot_k,
                "prompt_style": self.settings.prompt_style,
                "concurrency": self.settings.llm_concurrency}

    def generate(self, conversations: list[list[dict[str, str]]], fmt: AnswerFormat | None) -> list[Generation]:
        raise EngineError("the backend engine pre-annotates task data, not chat messages "
                          "(evaluate an exported dataset)")

    def generate_records(self, records: list[Record], manifest: Manifest) -> list[Generation]:
        config = manifest.raw.get("label_config")
        if not config or any(record.data is None for record in records):
            raise EngineError("the backend engine needs a dataset from `prelabel export` (label_config in "
                              "manifest.json, data in every record); re-export the project")
        return asyncio.run(self._predict(records, config, manifest.raw.get("guideline")))

    async def _predict(self, records: list[Record], config: str, guideline: str | None) -> list[Generation]:
        from prelabel.prediction.llm_client import LLMClient
        from prelabel.prediction.predictor import Predictor
        from prelabel.prediction.prompt import render_answer

        llm = LLMClient(self.settings)
        predictor = Predictor(self.settings, llm, cache=None)  # every answer asked for, none cached
        try:
            ctx = predictor.context(config, None if guideline in (None, "default") else guideline)
            with _progress(self.console, f"eval {self.model}", len(records)) as advance:
                async def one(index: int, record: Record) -> Prediction:
                    [prediction] = await predictor.predict([{"id": index, "data": record.data}], ctx)
                    advance()
                    return prediction

                predictions = await asyncio.gather(*(one(i, r) for i, r in enumerate(records)))
        finally:
            await llm.aclose()
        generations = []
        for prediction in predictions:
            meta = prediction["meta"]
            if meta["status"] == TaskStatus.ERROR:
                raise EngineError(f"{self.describe()['endpoint']}: the backend got no answer from the model: "
                                  + "; ".join(meta["errors"].values()))
            answer = {}
            regions: list[Any] = prediction["result"]
            for control in ctx.schema.fields:
                value = control.from_regions([r for r in regions if r.get("from_name") == control.name])
                if value is not None:
                    answer[control.name] = value
            usage = meta["provenance"].get("usage") or {}
            generations.append(Generation(
                text=render_answer(answer) if prediction["result"] else "",
                latency_s=meta["provenance"]["latency_ms"] / 1000,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                confidence=prediction["score"] if prediction["result"] else None,
            ))
        return generations

    def close(self) -> None:
        """Nothing held between calls: each evaluation opens and closes its own client."""


@contextmanager
def _progress(console: Any | None, what: str, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on ``console`` (nothing without one); yields the advance function."""
    if console is None:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)
