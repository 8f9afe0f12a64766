"""Retrieve Predictions through real Label Studio with a model too slow for Label Studio's deadline.

Label Studio sends all selected tasks in one /predict and stores nothing when the answer takes
longer than ML_TIMEOUT_PREDICT. The backend answers before its deadline with the predictions that
are ready, hands the rest to the worker (RQ on the real Redis), which writes them through the SDK:
every task ends with exactly one prediction, whatever the user clicks in between.

The slow model is the fault server with one slot (400 ms a request, so 40 tasks need 16 s) and
the backend's deadline is set to 6 s (PRELABEL_PREDICT_TIMEOUT; Label Studio's own is 100 s, too
long for a test): the same situation as 1,000 tasks on a one-slot llama.cpp.
"""

from __future__ import annotations

import time

import pytest

from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.support.fault_llm import running_fault_server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)
TASKS = 40


def retrieve(client, project_id: int) -> float:
    started = time.perf_counter()
    client.actions.create(id="retrieve_tasks_predictions", project=project_id,
                          selected_items={"all": True, "excluded": []})
    return time.perf_counter() - started


def test_slow_model_loses_nothing_and_duplicates_nothing(backend, label_studio, redis_url) -> None:
    with running_fault_server(latency_ms=400, slots=1, model="slow") as fault:
        env = {"OPENAI_BASE_URL": fault.base_url, "PRELABEL_LLM_MODEL": "slow",
               "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/13",
               "PRELABEL_PREDICT_TIMEOUT": "6", "PRELABEL_PREDICT_MARGIN": "1"}
        b = backend(env=env, label_studio=label_studio)
        worker = ManagedProcess("worker-deadline", [dev_bin("prelabel"), "worker"], log_path=b.workdir / "worker.log",
                                env=child_env(None, b.env), cwd=b.workdir).start()
        client = label_studio.sdk()
        project = client.projects.create(title="e2e deadline", label_config=CONFIG)
        try:
            client.projects.import_tasks(id=project.id, request=[{"text": f"slow task {i}"} for i in range(TASKS)])
            client.ml.create(project=project.id, url=b.url, title="prelabel", is_interactive=False)

            first = retrieve(client, project.id)
            in_time = len(list(client.predictions.list(project=project.id)))
            assert first < 11, f"/predict must answer before the deadline (took {first:.1f}s)"
            assert 0 < in_time < TASKS, in_time  # some answered in time, the rest handed off

            second = retrieve(client, project.id)  # clicked again while the worker is busy
            assert second < 5, "tasks already handed off are not predicted a second time"

            predictions = wait_for(
                lambda: (p := list(client.predictions.list(project=project.id))) and len(p) >= TASKS and p,
                timeout=240, what=f"{TASKS} predictions", context=lambda: worker.log_tail(40))
            time.sleep(2)  # anything late (a duplicate) would land now
            retrieve(client, project.id)  # and once more when all are done: nothing new
            predictions = [p.model_dump() for p in client.predictions.list(project=project.id)]
            per_task: dict[int, int] = {}
            for prediction in predictions:
                per_task[prediction["task"]] = per_task.get(prediction["task"], 0) + 1
                assert prediction["model_version"].startswith("slow@") and "#" not in prediction["model_version"]
                assert prediction["result"][0]["value"]["choices"][0] in ("a", "b")
            assert len(per_task) == TASKS and set(per_task.values()) == {1}, per_task
            # each task was sent to the model once, plus at most the calls cut off at the deadline
            assert fault.stats()["requests"] <= TASKS + 4, fault.stats()
            assert "handed to the worker" in b.log_text()
        finally:
            worker.stop()
            client.projects.delete(id=project.id)
