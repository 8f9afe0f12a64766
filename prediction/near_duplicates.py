"""Near-duplicate reuse: one LLM answer for a group of near-identical tasks.

Imports often hold the same text many times with small edits (case, punctuation, a word). The
tasks of one batch are grouped by MinHash (character 4-grams of the normalised text, LSH for the
candidates, then the exact Jaccard similarity against ``threshold``). Only each group's first
task, its representative, goes to the model; every other member reuses the representative's
answer *after validating it against its own text* (span offsets are recomputed in that text, a
span that does not occur there fails), and says so: ``meta.provenance.reused_from`` (the
representative's task id), ``similarity``, ``llm_calls: 0``, and ``reused_from`` in each
region's stamp. A member whose reused answer fails validation, or whose representative got no
valid answer, is predicted individually. Both outcomes are counted
(``prelabel_near_duplicate_tasks_total``).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from datasketch import MinHash, MinHashLSH

from prelabel.contract import REUSE_STATS_KEY, Prediction, TaskStatus, stamp_of
from prelabel.label_config.answers import check_answer
from prelabel.label_config.schema import TaskDataError
from prelabel.prediction.fewshot import FewShotPool
from prelabel.prediction.predictor import ProjectContext
from prelabel.prediction.shared_counters import count
from prelabel.text import normalise

NUM_PERM = 128
GRAM = 4
Predict = Callable[[list[Any], ProjectContext, FewShotPool | None], Awaitable[list[Prediction]]]


def shingles(text: str) -> set[str]:
    norm = normalise(text)
    return {norm[i:i + GRAM] for i in range(max(1, len(norm) - GRAM + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def group(texts: list[str | None], threshold: float) -> list[tuple[int, float]]:
    """For each text: (index of its group's representative, similarity to it). ``None`` texts
    (unusable task data) are their own group."""
    # LSH only proposes candidates (set a little below the threshold for recall); the exact
    # Jaccard similarity decides.
    lsh = MinHashLSH(threshold=min(0.9, max(0.1, threshold - 0.1)), num_perm=NUM_PERM)
    grams: dict[int, set[str]] = {}
    out: list[tuple[int, float]] = []
    for i, text in enumerate(texts):
        if text is None:
            out.append((i, 1.0))
            continue
        grams[i] = shingles(text)
        signature = MinHash(num_perm=NUM_PERM, seed=1)
        for gram in grams[i]:
            signature.update(gram.encode())
        best = max(((jaccard(grams[i], grams[j]), j) for j in lsh.query(signature)), default=(0.0, i))
        if best[0] >= threshold:
            out.append((best[1], round(best[0], 4)))
        else:
            lsh.insert(i, signature)
            out.append((i, 1.0))
    return out


def reused_prediction(ctx: ProjectContext, task: Any, rep_id: Any, rep: Prediction,
                      similarity: float) -> Prediction | None:
    """The representative's answer as this task's prediction, or None when it does not hold here."""
    if rep["meta"]["status"] != TaskStatus.OK or not rep["result"] or not isinstance(task, dict):
        return None
    try:
        texts = ctx.schema.object_texts(task.get("data"))
    except TaskDataError:
        return None
    answer = {}
    rep_regions: list[Any] = rep["result"]
    for control in ctx.schema.fields:
        value = control.from_regions([r for r in rep_regions if r.get("from_name") == control.name])
        if value is not None:
            answer[control.name] = value
    checked = check_answer(ctx.schema, ctx.guideline.constraints, answer, texts)
    if checked.errors:
        return None
    prediction = copy.deepcopy(rep)
    stamps: dict[str, Any] = {r.get("from_name"): r for r in rep_regions}
    result: list[Any] = []
    prediction["result"] = result
    for control in ctx.schema.fields:
        source = stamps.get(control.name, {})
        for region in checked.regions.get(control.name, []):
            stamp = {**stamp_of(source), "reused_from": rep_id, "cached": False}
            extra = {"score": source["score"]} if "score" in source else {}
            result.append({**region, **extra, "prelabel": stamp})
    prediction["meta"]["provenance"].update(reused_from=rep_id, similarity=similarity, llm_calls=0,
                                            llm_attempts=0, usage={}, cached=False)
    return prediction


async def predict_with_reuse(predict: Predict, tasks: list[Any], ctx: ProjectContext, pool: FewShotPool | None,
                             threshold: float, cache: Any = None) -> list[Prediction]:
    texts: list[str | None] = []
    for task in tasks:
        try:
            texts.append("\n".join(ctx.schema.object_texts(task.get("data") if isinstance(task, dict) else None)
                                   .values()))
        except TaskDataError:
            texts.append(None)
    groups = group(texts, threshold)
    reps = sorted({rep for rep, _ in groups})
    answers = dict(zip(reps, await predict([tasks[i] for i in reps], ctx, pool)))
    results: list[Prediction | None] = [answers.get(i) for i in range(len(tasks))]
    alone = []
    for i, (rep, similarity) in enumerate(groups):
        if rep == i:
            continue
        rep_id = tasks[rep].get("id") if isinstance(tasks[rep], dict) else rep
        results[i] = reused_prediction(ctx, tasks[i], rep_id, answers[rep], similarity)
        if results[i] is None:
            alone.append(i)
    if alone:
        for i, prediction in zip(alone, await predict([tasks[i] for i in alone], ctx, pool)):
            results[i] = prediction
    client = cache.client if cache is not None else None
    await count(client, REUSE_STATS_KEY, "reused", len(tasks) - len(reps) - len(alone))
    await count(client, REUSE_STATS_KEY, "revalidated_individually", len(alone))
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
