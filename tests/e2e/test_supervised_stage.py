"""Human labels -> the supervised stage -> new tasks pre-annotated without the LLM, end to end.

Real Label Studio, real Redis, real backend and worker processes, the real llama.cpp server:
120 labeled tasks are imported, one more label arrives through the SDK (Label Studio's
ANNOTATION_CREATED webhook -> the worker's refresh fits, measures and publishes the stage), then
new tasks are imported (TASKS_CREATED -> the worker pre-annotates them): the stage answers the
ones it is sure of (its stamp in Label Studio names it), the LLM the rest (a task unlike any
labeled one among them), and both shares are counted per project.
"""

from __future__ import annotations

import json

import pytest

from prelabel.contract import stage_answers_key, stage_scores_key, supervised_stage_key
from tests.e2e.test_review_pipeline import _own_db, new_project, project_state, start_stack, wait_for
from tests.support.intent_data import queries

pytestmark = pytest.mark.e2e


def _choice(label: str) -> list[dict]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def test_labels_through_webhooks_make_a_stage_that_answers_new_tasks(backend_factory, label_studio, llm_server,
                                                                      redis_url) -> None:
    stack = start_stack(backend_factory, label_studio, "supervised-stage", _own_db(redis_url), {})
    try:
        pid = new_project(label_studio, stack, "supervised stage e2e")
        ref = stack.project(pid)  # its Redis keys
        client = label_studio.sdk()
        labeled = queries(20, seed=0)
        client.projects.import_tasks(id=pid, request=[
            {"data": {"text": r["text"]}, "annotations": [{"result": _choice(r["label"])}]} for r in labeled])
        first = min(t.id for t in client.tasks.list(project=pid))
        client.annotations.create(id=first, result=_choice(labeled[0]["label"]))  # -> webhook -> refresh
        conn = stack.redis()
        wait_for(lambda: conn.hget(supervised_stage_key(ref), "version"), 300, "the supervised stage", stack)
        scores = json.loads(conn.get(stage_scores_key(ref)))
        assert scores["labels"] == len(labeled) and scores["routing"].startswith("supervised"), scores
        assert scores["stages"]["supervised"]["accuracy"] >= 0.8, scores

        seen = {r["text"] for r in labeled}  # new tasks of the same project: same kind of queries, none labeled
        new = [r for r in queries(4, seed=7) if r["text"] not in seen][:8]
        # and one task unlike anything labeled: the stage is unsure of it, so the LLM answers it
        unlike = "zzxq vvkj wwpf qqhd"
        known = set(project_state(label_studio, pid))
        before = {k.decode(): int(v) for k, v in conn.hgetall(stage_answers_key(ref)).items()}
        client.projects.import_tasks(id=pid, request=[{"text": r["text"]} for r in new] + [{"text": unlike}])

        def pre_annotated() -> dict | None:
            state = {tid: t for tid, t in project_state(label_studio, pid).items() if tid not in known}
            return state if len(state) == len(new) + 1 and all(t["pre"] for t in state.values()) else None

        state = wait_for(pre_annotated, 900, "the new tasks pre-annotated", stack)
        by_text = {r["text"]: r["label"] for r in new}
        supervised, right = 0, 0
        for task in state.values():
            [pre] = task["pre"]
            stamps = [region.get("prelabel", {}) for region in pre["result"]]
            if task["data"]["text"] == unlike:
                assert not stamps or stamps[0].get("stage") != "supervised", stamps  # deferred to the LLM
                assert pre["model_version"].startswith(f"{llm_server.model}@p-"), pre["model_version"]
                continue
            if stamps and stamps[0].get("stage") == "supervised":
                supervised += 1
                assert stamps[0]["model"] == conn.hget(supervised_stage_key(ref), "version").decode()
                assert pre["model_version"].startswith(f"{llm_server.model}@p-")  # one family with the LLM's
                right += pre["result"][0]["value"]["choices"] == [by_text[task["data"]["text"]]]
        assert supervised >= len(new) // 2, f"only {supervised} of {len(new)} answered by the stage: {scores}"
        assert right >= 0.75 * supervised
        after = {k.decode(): int(v) for k, v in conn.hgetall(stage_answers_key(ref)).items()}
        shares = {stage: n - before.get(stage, 0) for stage, n in after.items()}  # the new tasks' answers
        assert shares.get("supervised") == supervised and shares.get("llm", 0) == len(new) - supervised + 1, shares
    finally:
        stack.stop()
