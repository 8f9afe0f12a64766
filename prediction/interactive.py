"""Interactive pre-annotation: what the annotator did on the labeling screen constrains the answer.

With an interactive backend and Auto-Annotation on, Label Studio 1.23 sends ``/predict`` for the
open task with ``params.context = {"result": [regions]}``: the regions of the kind the annotator
just drew or typed (docs/label-studio-protocol.md has the recorded shape). Three things in it
are used:

* **the annotator's prompt**: the entries of the ``<TextArea name="prompt">`` are added to the
  guideline prompt as the annotator's instruction (the guideline still wins where they clash);
* **selected spans**: a ``Labels`` region without a label means "label only this span": that
  control's answer is exactly those spans, each with the model's label, returned under the
  selection's region id so Label Studio replaces the selection in place;
* **given values**: labeled spans, chosen choices, ratings, numbers and (without a prompt) texts
  are the annotator's: kept as they are, generated first so the model fills the other controls
  consistent with them; for spans, the model adds the entities not marked yet.

What does not fit the config or the task (an unknown control, offsets outside the text, a label
not in the set, a context that is not an object) is ignored with a logged warning and counted in
``prelabel_interactive_context_total{part="ignored"}``; the answer is then the normal one.
Interactive answers run under ``PRELABEL_INTERACTIVE_BUDGET`` seconds, use the cache (keyed by
the context too), carry ``interactive: true`` and the context used in their provenance, and are
never recorded as the task's pre-annotation: Label Studio shows them as suggestions and stores
nothing, so no review job, outcome record or ranking refresh follows a keystroke.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prelabel.contract import Prediction
from prelabel.label_config.controls import AnswerError, ControlField, LabelsField, TextAreaField
from prelabel.label_config.schema import OutputSchema, TaskDataError
from prelabel.prediction import metrics
from prelabel.prediction.cascade import CalibratedCascade
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import Predictor, ProjectContext
from prelabel.prediction.prompt import Prompt

log = logging.getLogger(__name__)

PROMPT_MAX_CHARS = 4000
INSTRUCTION = """
# Annotator's instruction
The annotator working on this task asks:
\"\"\"
{prompt}
\"\"\"
Do what it asks in your answer where it does not contradict the guideline or the output format.
"""
DECIDED = ("\n# Already decided by the annotator\n{lines}\n"
           "Keep these exactly and make the rest of the answer consistent with them.\n")


class _Ignored(ValueError):
    """A part of the context that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Span:
    """A text span from the context: offsets into the object's text, its labels, its region id."""

    start: int
    end: int
    text: str
    labels: tuple[str, ...] = ()
    region_id: str | None = None

    def region(self, control: ControlField, labels: list[str] | None = None) -> dict[str, Any]:
        value = {"start": self.start, "end": self.end, "text": self.text, "labels": list(labels or self.labels)}
        region: dict[str, Any] = {"from_name": control.name, "to_name": control.to_name,
                                  "type": control.region_type, "value": value}
        if self.region_id:
            region["id"] = self.region_id
        return region

    def describe(self) -> str:
        return f"{json.dumps(self.text, ensure_ascii=False)} (characters {self.start}-{self.end})"


@dataclass
class Interaction:
    """The usable parts of one task's interactive context."""

    prompt: str | None = None
    selected: dict[str, list[Span]] = field(default_factory=dict)  # unlabeled spans: label only these
    given_spans: dict[str, list[Span]] = field(default_factory=dict)  # spans the annotator labeled
    given: dict[str, Any] = field(default_factory=dict)  # other controls' values the annotator set
    ignored: list[str] = field(default_factory=list)

    @property
    def constrains(self) -> bool:
        return bool(self.prompt or self.selected or self.given_spans or self.given)

    def key(self) -> str:
        """Everything of the interaction that shapes the answer, region ids included (the answer
        reuses them), canonically: part of the interactive prompt version and so of the cache key."""
        def spans(by_control: dict[str, list[Span]]) -> dict[str, list[tuple]]:
            return {name: [dataclasses.astuple(span) for span in items] for name, items in by_control.items()}

        canonical = json.dumps([self.prompt, spans(self.selected), spans(self.given_spans), self.given],
                               sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """Which context was used, for provenance: never the prompt's text, only its size."""
        return {
            "prompt": bool(self.prompt),
            "prompt_chars": len(self.prompt or ""),
            "selected_spans": {name: [[s.start, s.end] for s in spans] for name, spans in self.selected.items()},
            "given": sorted({*self.given, *self.given_spans}),
            "ignored": list(self.ignored),
        }


# --- reading the context ---------------------------------------------------------------------
def parse_context(raw: Any, schema: OutputSchema, texts: dict[str, str]) -> Interaction:
    """The usable parts of ``raw`` (``params.context``) for a task with these object texts."""
    interaction = Interaction()
    if not isinstance(raw, dict):
        interaction.ignored.append(f"context must be an object, got {type(raw).__name__}")
        return interaction
    regions = raw.get("result")
    if not isinstance(regions, list):
        interaction.ignored.append("context has no 'result' list of regions")
        return interaction
    prompts: list[str] = []
    for index, region in enumerate(regions):
        try:
            _read_region(region, schema, texts, interaction, prompts)
        except _Ignored as exc:
            interaction.ignored.append(f"result[{index}]: {exc}")
        except Exception as exc:
            interaction.ignored.append(f"result[{index}]: unreadable value ({type(exc).__name__})")
    prompt = "\n".join(prompts)
    if len(prompt) > PROMPT_MAX_CHARS:
        interaction.ignored.append(f"the prompt has {len(prompt)} characters > {PROMPT_MAX_CHARS}")
    elif prompt:
        interaction.prompt = prompt
        # A prompt asks for new text: the texts already there are what it rewrites, not givens.
        interaction.given = {name: value for name, value in interaction.given.items()
                             if not isinstance(schema.field(name), TextAreaField)}
    return interaction


def _read_region(region: Any, schema: OutputSchema, texts: dict[str, str], interaction: Interaction,
                 prompts: list[str]) -> None:
    if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
        raise _Ignored("not a region with a 'value' object")
    name, value = region.get("from_name"), region["value"]
    if region.get("origin") == "prediction":
        return  # the model's own earlier answer, untouched by the annotator: not a decision of theirs
    if schema.prompt_control is not None and name == schema.prompt_control:
        entries = value.get("text")
        entries = [entries] if isinstance(entries, str) else entries
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise _Ignored("the prompt's value.text must be a list of strings")
        prompts.extend(e.strip() for e in entries if e.strip())
        return
    control = next((c for c in schema.fields if c.name == name), None)
    if control is None:
        raise _Ignored(f"{_short(name)} is not a control the model fills in this config")
    if region.get("to_name") not in (None, control.to_name):
        raise _Ignored(f"{name}: to_name {_short(region.get('to_name'))} is not {control.to_name!r}")
    text = texts[control.object_name]
    if isinstance(control, LabelsField):
        span = _span(control, value, text, region.get("id"))
        target = interaction.given_spans if span.labels else interaction.selected
        target.setdefault(control.name, []).append(span)
        return
    answer = control.from_regions([{**region, "from_name": control.name}])
    if answer is None:
        raise _Ignored(f"{name}: no value")
    try:
        control.to_regions(answer, text)
    except AnswerError as exc:
        raise _Ignored(f"{name}: {exc.message}") from None
    interaction.given[control.name] = answer


def _span(control: LabelsField, value: dict[str, Any], text: str, region_id: Any) -> Span:
    start, end = value.get("start"), value.get("end")
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) or isinstance(end, bool):
        raise _Ignored(f"{control.name}: a span needs integer 'start' and 'end'")
    if not 0 <= start < end <= len(text):
        raise _Ignored(f"{control.name}: span [{start}, {end}) is outside the text ({len(text)} characters)")
    if "text" in value and value["text"] != text[start:end]:
        raise _Ignored(f"{control.name}: span text {_short(value['text'])} is not the text at [{start}, {end})")
    labels = value.get("labels") or []
    if not isinstance(labels, list):
        raise _Ignored(f"{control.name}: 'labels' must be a list")
    labels = [label for label in labels if label is not None]  # an empty label (allowEmpty) is none
    unknown = [label for label in labels if label not in control.label_values]
    if unknown:
        raise _Ignored(f"{control.name}: labels {unknown} are not in the config")
    return Span(start, end, text[start:end], tuple(labels), region_id if isinstance(region_id, str) else None)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- constrained controls --------------------------------------------------------------------
class _Constrained(ControlField):
    """A control whose answer an interaction constrains; the rest is the wrapped control's."""

    def __init__(self, inner: ControlField) -> None:
        super().__init__(inner.name, inner.to_name, inner.object_name, dict(inner.attrs), list(inner.labels))
        self.inner = inner
        self.tag = inner.tag  # type: ignore[misc]  # per instance: metrics and messages name the real tag
        self.region_type = inner.region_type  # type: ignore[misc]

    def json_schema(self) -> dict[str, Any]:
        return self.inner.json_schema()

    def describe(self) -> str:
        return self.inner.describe()

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        return self.inner.to_regions(value, text)

    def from_regions(self, regions: list[dict[str, Any]]) -> Any:
        return self.inner.from_regions(regions)

    def is_empty(self, value: Any) -> bool:
        return self.inner.is_empty(value)


class Given(_Constrained):
    """A value the annotator set: the model writes it first (the schema allows only it), and the
    regions come from the annotator's value whatever the model wrote."""

    def __init__(self, inner: ControlField, value: Any) -> None:
        super().__init__(inner)
        self.value = value

    def json_schema(self) -> dict[str, Any]:
        return pinned_schema(self.value)

    def describe(self) -> str:
        return f'"{self.name}": {json.dumps(self.value, ensure_ascii=False)} (set by the annotator: keep it)'

    def is_empty(self, value: Any) -> bool:
        return False

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        return self.inner.to_regions(self.value, text)


class SelectedSpans(_Constrained):
    """Label only the spans the annotator selected; the spans they labeled are kept."""

    def __init__(self, inner: ControlField, selected: list[Span], given: list[Span]) -> None:
        super().__init__(inner)
        self.selected, self.given = selected, given

    def json_schema(self) -> dict[str, Any]:
        texts = list(dict.fromkeys(span.text for span in self.selected))
        item = {"type": "object",
                "properties": {"text": {"type": "string", "enum": texts},
                               "label": {"type": "string", "enum": self.label_values}},
                "required": ["text", "label"]}
        return {"type": "array", "items": item, "minItems": len(self.selected), "maxItems": len(self.selected)}

    def describe(self) -> str:
        labels = ", ".join(f'"{value}"' for value in self.label_values)
        spans = "; ".join(span.describe() for span in self.selected)
        return (f'"{self.name}": one {{"text": <the selected span>, "label": one of {labels}}} per span the annotator '
                f"selected, in this order: {spans}. Label only these spans")

    def is_empty(self, value: Any) -> bool:
        return value is None

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or len(value) != len(self.selected):
            raise AnswerError(self.name, "schema",
                              f"expected one item per selected span ({len(self.selected)}), got {_short(value)}")
        regions = [span.region(self.inner) for span in self.given]
        for span, item in zip(self.selected, value):
            if not isinstance(item, dict) or str(item.get("text", span.text)).strip() != span.text.strip():
                raise AnswerError(self.name, "schema", f"{_short(item)} is not the selected span {span.text!r}")
            if item.get("label") not in self.label_values:
                raise AnswerError(self.name, "label_not_in_set",
                                  f"{item.get('label')!r} is not one of {self.label_values}")
            regions.append(span.region(self.inner, [item["label"]]))
        return regions


class GivenSpans(_Constrained):
    """The spans the annotator labeled are kept; the model adds the entities not marked yet."""

    def __init__(self, inner: ControlField, given: list[Span]) -> None:
        super().__init__(inner)
        self.given = given

    def describe(self) -> str:
        marked = "; ".join(f"{span.describe()} = {'/'.join(span.labels)}" for span in self.given)
        return f"{self.inner.describe()}. The annotator already marked {marked}: keep them and add the others"

    def to_regions(self, value: Any, text: str) -> list[dict[str, Any]]:
        taken = [(span.start, span.end) for span in self.given]
        found = [region for region in self.inner.to_regions(value, text)
                 if not any(region["value"]["start"] < end and start < region["value"]["end"]
                            for start, end in taken)]
        return [span.region(self.inner) for span in self.given] + found


def pinned_schema(value: Any) -> dict[str, Any]:
    """A JSON schema that admits only ``value`` (typed enums, which every structured-output
    backend supports, rather than ``const``)."""
    if isinstance(value, bool):
        return {"type": "boolean", "enum": [value]}
    if isinstance(value, int):
        return {"type": "integer", "enum": [value]}
    if isinstance(value, float):
        return {"type": "number", "enum": [value]}
    if isinstance(value, str):
        return {"type": "string", "enum": [value]}
    if isinstance(value, list):
        options = list({json.dumps(s, sort_keys=True): s for s in map(pinned_schema, value)}.values())
        items = options[0] if len(options) == 1 else {"anyOf": options}
        return {"type": "array", "items": items, "minItems": len(value), "maxItems": len(value)}
    if isinstance(value, dict):
        return {"type": "object", "properties": {k: pinned_schema(v) for k, v in value.items()},
                "required": list(value), "additionalProperties": False}
    return {"type": "null"}


def constrained_context(ctx: ProjectContext, interaction: Interaction) -> ProjectContext:
    """The project's context with the interaction's constraints, annotator-set controls first."""
    if not interaction.constrains:
        return ctx
    given: list[ControlField] = []
    spans: list[ControlField] = []
    rest: list[ControlField] = []
    for control in ctx.schema.fields:
        if control.name in interaction.given:
            given.append(Given(control, interaction.given[control.name]))
        elif control.name in interaction.selected:
            spans.append(SelectedSpans(control, interaction.selected[control.name],
                                       interaction.given_spans.get(control.name, [])))
        elif control.name in interaction.given_spans:
            spans.append(GivenSpans(control, interaction.given_spans[control.name]))
        else:
            rest.append(control)
    schema = dataclasses.replace(ctx.schema, fields=given + spans + rest)
    extra = INSTRUCTION.format(prompt=interaction.prompt) if interaction.prompt else ""
    decided = [control.describe() for control in given + spans if not isinstance(control, SelectedSpans)]
    if decided:
        extra += DECIDED.format(lines="\n".join(f"- {line}" for line in decided))
    shortlisted = ctx.prompt.shortlisted - set(interaction.given)
    prompt = InteractivePrompt(schema, ctx.guideline, shortlisted, extra=extra,
                               key=f"{ctx.prompt.version}\x00{interaction.key()}")
    # Few-shot answers were written without this instruction: they would pull the answer back.
    pool = FewShotPool([]) if interaction.prompt else ctx.pool
    return ProjectContext(schema, ctx.guideline, ctx.guideline_name, prompt, pool, shortlist_k=ctx.shortlist_k,
                          interactive=True)


@dataclass
class InteractivePrompt(Prompt):
    """The project's prompt plus the annotator's instruction and decisions, at every detail level
    (a long task may get a shorter label list, never a lost instruction). Its version names the
    interaction too (region ids included): the cache key of an interactive answer."""

    extra: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.system += self.extra
        self.version = "p-" + hashlib.sha256(f"{self.key}\x00{self.system}".encode()).hexdigest()[:10]

    def system_at(self, detail: str) -> str:
        return self.system if detail == "full" else super().system_at(detail) + self.extra


# --- answering ---------------------------------------------------------------------------------
def read_context(raw: Any, schema: OutputSchema, task: Any) -> Interaction:
    """``parse_context`` for one task, with every ignored part logged and counted."""
    try:
        texts = schema.object_texts(task.get("data") if isinstance(task, dict) else None)
    except TaskDataError:
        return Interaction()  # the prediction itself says what is wrong with the task
    interaction = parse_context(raw, schema, texts)
    task_id = task.get("id") if isinstance(task, dict) else None
    for message in interaction.ignored:
        log.warning("task %s: interactive context ignored: %s", task_id, message)
        metrics.INTERACTIVE_CONTEXT.labels("ignored").inc()
    for part, used in (("prompt", interaction.prompt), ("selected_span", interaction.selected),
                       ("given", interaction.given or interaction.given_spans)):
        if used:
            metrics.INTERACTIVE_CONTEXT.labels(part).inc()
    return interaction


async def predict_interactive(
    predictor: Predictor | CalibratedCascade, tasks: list[Any], ctx: ProjectContext, raw_context: Any,
    pool: FewShotPool | None, budget_s: float,
) -> list[Prediction]:
    """Predictions for tasks opened in the labeling screen, shaped by the screen's context."""
    return list(await asyncio.gather(*(
        _predict_one(predictor, task, ctx, raw_context, pool, budget_s) for task in tasks)))


async def _predict_one(
    predictor: Predictor | CalibratedCascade, task: Any, ctx: ProjectContext, raw_context: Any,
    pool: FewShotPool | None, budget_s: float,
) -> Prediction:
    started = time.perf_counter()
    try:
        interaction = read_context(raw_context, ctx.schema, task)
        derived = constrained_context(ctx, interaction)
    except Exception as exc:
        message = f"context unusable ({type(exc).__name__})"
        log.warning("task %s: interactive context ignored: %s", task.get("id") if isinstance(task, dict) else None,
                    message)
        metrics.INTERACTIVE_CONTEXT.labels("ignored").inc()
        interaction, derived = Interaction(ignored=[message]), ctx
    try:
        async with asyncio.timeout(budget_s):
            [prediction] = await predictor.predict([task], derived, None if interaction.prompt else pool)
    except TimeoutError:
        log.warning("task %s: no interactive answer within %.1f s", task.get("id") if isinstance(task, dict) else None,
                    budget_s)
        prediction = predictor.timed_out(derived, "interactive_timeout", f"no answer within {budget_s:.1f} s", started)
    return _stamped(prediction, ctx, derived, interaction)


def _stamped(prediction: Prediction, base: ProjectContext, derived: ProjectContext,
             interaction: Interaction) -> Prediction:
    """The prediction under the project's own prompt version (Label Studio groups by it), marked
    interactive with the context it used; the score leaves out the controls the annotator set."""
    old, new = derived.prompt.version, base.prompt.version
    prediction["model_version"] = prediction["model_version"].replace(old, new)
    record = prediction["meta"]["provenance"]
    record.update(prompt_version=new, interactive=True, interactive_prompt_version=old,
                  context=interaction.summary())
    for region in prediction["result"]:
        region.setdefault("prelabel", {}).update({"prompt_version": new, "interactive": True})
    scores = {name: score for name, score in (record.get("control_scores") or {}).items()
              if name not in interaction.given}
    if prediction["result"] and scores:
        prediction["score"] = round(min(scores.values()), 6)
    return prediction
