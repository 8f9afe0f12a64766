"""Second-model review: a different model judges each pre-annotation.

The reviewer sees the same guideline and input as the pre-annotator, plus the proposed answer,
and returns a verdict, a rationale of at most 50 characters and, when it disagrees, its own
answer. That answer goes through the same validation as any prediction: a correction that is not
valid for the config is never written as a label (the task becomes ``needs_human``).

Statuses: ``passed`` (reviewer agrees), ``rejected`` (reviewer disagrees and gave a valid
correction), ``needs_human`` (no usable verdict or correction, or nothing to review),
``review_error`` (the reviewer could not be reached; the job retries later).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from prelabel.contract import ReviewStatus, stamp_of, with_status
from prelabel.label_config.answers import CheckedAnswer, answer_from_regions, check_answer, feedback, parse_answer
from prelabel.label_config.controls import AnswerError
from prelabel.prediction.confidence import FALLBACK_SCORE, answer_confidences, locate
from prelabel.prediction.distribution import answer_label_probs, distribution_score, position_distribution
from prelabel.prediction.llm_client import Completion, LLMClient, LLMError
from prelabel.prediction.predictor import ProjectContext

RATIONALE_MAX = 50

REVIEW_INSTRUCTIONS = """You are the reviewer: a second, independent annotator checking another model's \
annotation of the input against the guideline below.
Answer with one JSON object and nothing else:
- "verdict": "correct" if the proposed annotation follows the guideline, else "incorrect".
- "rationale": why, in at most 50 characters.
- "corrected": only when the verdict is "incorrect": the right annotation, in exactly the answer \
format the guideline's output section describes.

The guideline given to the annotator:
"""


@dataclass
class Review:
    status: str
    rationale: str = ""
    verdict: str | None = None
    corrected: CheckedAnswer | None = None
    errors: list[str] = field(default_factory=list)
    model: str | None = None
    # The reviewer's own confidence, from its token logprobs (None: the server gave none).
    confidence: float | None = None
    verdict_probs: dict[str, float] | None = None
    corrected_scores: dict[str, float] = field(default_factory=dict)  # per control of the correction
    corrected_label_probs: dict[str, dict[str, float]] = field(default_factory=dict)


def review_schema(ctx: ProjectContext) -> dict[str, Any]:
    """JSON schema of the reviewer's answer (guided decoding where the server supports it)."""
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
            "rationale": {"type": "string", "maxLength": RATIONALE_MAX},
            "corrected": ctx.schema.json_schema(),
        },
        "required": ["verdict", "rationale"],
        "additionalProperties": False,
    }


def review_messages(ctx: ProjectContext, texts: dict[str, str], proposed: dict[str, Any]) -> list[dict[str, str]]:
    user = (
        ctx.prompt.render_input(texts)
        + "\n\n# Proposed annotation\n" + json.dumps(proposed, ensure_ascii=False)
    )
    return [
        {"role": "system", "content": REVIEW_INSTRUCTIONS + ctx.prompt.system},
        {"role": "user", "content": user},
    ]


def proposed_answer(ctx: ProjectContext, regions: list[dict[str, Any]]) -> dict[str, Any]:
    """The pre-annotation's answer, rebuilt from its stored regions (controls without one left out)."""
    return answer_from_regions(ctx.schema, regions, complete=False) or {}


def judge(ctx: ProjectContext, content: str, texts: dict[str, str], proposed: dict[str, Any]) -> Review:
    """Turn one reviewer answer into a Review; raises AnswerError when the answer is unusable."""
    data, _ = parse_answer(content)
    verdict = data.get("verdict")
    if verdict not in ("correct", "incorrect"):
        raise AnswerError("verdict", "label_not_in_set", f"verdict must be 'correct' or 'incorrect', got {verdict!r}")
    rationale = str(data.get("rationale") or "").strip()[:RATIONALE_MAX]
    if verdict == "correct":
        return Review(ReviewStatus.PASSED, rationale, verdict)
    corrected = data.get("corrected")
    if not isinstance(corrected, dict) or not corrected:
        raise AnswerError("corrected", "empty", "verdict is 'incorrect' but no 'corrected' annotation was given")
    checked = check_answer(ctx.schema, ctx.guideline.constraints, corrected, texts)
    if checked.errors:
        first = next(iter(checked.errors.values()))
        raise AnswerError("corrected", first.reason, "corrected: " + "; ".join(str(e) for e in checked.errors.values()))
    if checked.answer == proposed:
        # "Incorrect" with the very same answer is no disagreement we can act on.
        return Review(ReviewStatus.NEEDS_HUMAN, rationale, verdict, errors=["correction equals the proposal"])
    return Review(ReviewStatus.REJECTED, rationale, verdict, corrected=checked)


async def review_one(
    llm: LLMClient, ctx: ProjectContext, texts: dict[str, str], proposed: dict[str, Any]
) -> Review:
    """Ask the reviewer, with one corrective retry on an unusable answer (like pre-annotation)."""
    messages = review_messages(ctx, texts, proposed)
    errors: list[str] = []
    for _ in range(2):
        try:
            completion = await llm.complete(messages, review_schema(ctx))
        except LLMError as exc:
            return Review(ReviewStatus.REVIEW_ERROR, errors=[f"{exc.kind}: {exc}"], model=llm.model)
        try:
            review = judge(ctx, completion.content, texts, proposed)
            review.model = llm.model
            add_confidence(ctx, completion, review)
            return review
        except AnswerError as exc:
            errors.append(str(exc))
            messages = messages + [
                {"role": "assistant", "content": completion.content},
                {"role": "user", "content": feedback([exc])},
            ]
    return Review(ReviewStatus.NEEDS_HUMAN, errors=errors, model=llm.model)


VERDICTS = ("correct", "incorrect")


def add_confidence(ctx: ProjectContext, completion: Completion, review: Review) -> None:
    """The reviewer's confidence in what it said, from its own token alternatives.

    The verdict's probability is read like a label distribution over ("correct", "incorrect")
    (``distribution.position_distribution``). A passed review's confidence is P(correct). A
    rejection is only as sure as its weakest part: min(P(incorrect), the correction's per-control
    scores, each from its label distribution where it has one, else its tokens' logprobs). Left
    None when the server returned no logprobs: the caller says so instead of inventing a number.
    """
    _, start = parse_answer(completion.content)
    located = locate(completion.content, start, completion.tokens)
    if located is None:
        return
    tokens, spans = located
    span = spans.get(("verdict",))
    if span is None or review.verdict not in VERDICTS:
        return
    review.verdict_probs = position_distribution(VERDICTS, review.verdict, span, tokens)
    if review.verdict_probs is None:
        return
    sure = review.verdict_probs[review.verdict]
    if review.corrected is not None:
        answer, root = review.corrected.answer, ("corrected",)
        scores = answer_confidences(completion.content, start, completion.tokens, ctx.schema.fields, answer, root) or {}
        review.corrected_label_probs = answer_label_probs(completion.content, start, completion.tokens,
                                                          ctx.schema.fields, answer, root)
        for control in ctx.schema.fields:
            probs = review.corrected_label_probs.get(control.name)
            score = distribution_score(control, answer.get(control.name), probs) if probs else None
            if score is not None:
                scores[control.name] = round(score, 6)
        review.corrected_scores = {k: v for k, v in scores.items() if k in review.corrected.regions}
        sure = min([sure, *review.corrected_scores.values()])
    review.confidence = round(sure, 6)


def review_prediction(family: str, pre: dict[str, Any], review: Review, independence: str = "unknown"
                      ) -> dict[str, Any]:
    """The reviewer's prediction: its correction when it rejected, else the reviewed regions.

    Label Studio keeps only result/score/model_version, so the verdict travels in the
    ``model_version`` suffix and in every region's ``prelabel.review``. The score is the
    reviewer's own confidence (``review.add_confidence``); a reviewer that returned no logprobs
    gets the explicit fallback (``score_source: "none"``); a review with no answer scores 0.
    """
    stamp = {"status": review.status, "verdict": review.verdict, "rationale": review.rationale,
             "reviewed": pre["id"], "reviewed_model_version": pre.get("model_version"), "time": _now(),
             "confidence": review.confidence, "verdict_probs": review.verdict_probs,
             "score_source": "none" if review.confidence is None else "logprobs", "independence": independence}
    if review.status not in (ReviewStatus.PASSED, ReviewStatus.REJECTED):
        score = 0.0
    else:
        score = review.confidence if review.confidence is not None else FALLBACK_SCORE
    if review.corrected is not None:
        source = []
        for name, regions in review.corrected.regions.items():
            extra = {"score": review.corrected_scores[name]} if name in review.corrected_scores else {}
            own = {"label_probs": review.corrected_label_probs[name]} if name in review.corrected_label_probs else {}
            source += [{**region, **extra, "prelabel": own} for region in regions]
    else:
        source = [{k: v for k, v in r.items() if k != "id"} for r in pre.get("result") or []]
    result = [{**region, "prelabel": {**stamp_of(region), "review": stamp}} for region in source]
    return {"result": result, "score": score, "model_version": with_status(family, review.status)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
