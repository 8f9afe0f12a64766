"""Task fields and the few-shot pool against a real Label Studio and Redis.

Two writers close together: the ranking refresh (``data.prelabel_priority``) and a review
(``ProjectClient.set_fields``: ``data.prelabel_review``), each working from tasks it read before
the other wrote, as the jobs do. Label Studio replaces a task's data whole on update, so a writer
that writes back its earlier read erases the other's field; both fields must survive.

A deleted annotation: the label leaves the project's few-shot pool (ANNOTATIONS_DELETED names only
annotation ids).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis as redis_lib

from prelabel.contract import ProjectRecord
from prelabel.jobs.learning import forget_deleted_labels, learn_examples
from prelabel.jobs.project_job import ProjectJob
from prelabel.prediction.fewshot_store import pool_answers
from prelabel.quality.project import spotcheck_project
from prelabel.ranking.project import PRIORITY_FIELD, refresh_ranking
from prelabel.settings import Settings
from prelabel.studio.client import ProjectClient
from tests.support.tenancy import project_ref

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config/templates/search_intent.xml").read_text()
QUERIES = ["facebook login", "how tall is mount everest", "buy running shoes online", "funny cat videos",
           "python tutorial for beginners", "asdfgh", "netflix sign in", "what is photosynthesis"]


def region(label: str) -> list[dict]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def test_two_writers_close_together_keep_each_others_fields(label_studio, redis_url) -> None:
    client = label_studio.sdk()
    project = client.projects.create(title="two writers", label_config=CONFIG)
    client.projects.import_tasks(id=project.id, request=[{"text": q, "source": "import"} for q in QUERIES])
    for task in client.tasks.list(project=project.id):  # pre-annotated, so the spot check can sample them
        client.predictions.create(task=task.id, result=region("informational"), score=0.5,
                                  model_version="smollm2@p-test")
    conn = redis_lib.Redis.from_url(redis_url)
    ref = project_ref(None, project.id)  # a job's reference: these writers are called directly, no backend
    reviewer = ProjectClient(label_studio.sdk(), ref, conn)
    stale = list(reviewer.tasks())  # the review job's earlier read
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def rank() -> None:
        start.wait()
        try:
            refresh_ranking(label_studio.sdk(), ref, conn)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def review() -> None:
        start.wait()
        try:
            for task in stale:
                reviewer.set_fields(task, {"prelabel_review": "passed"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rank), threading.Thread(target=review)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    tasks = list(ProjectClient(client, ref).tasks())
    assert len(tasks) == len(QUERIES)
    for task in tasks:
        data = task["data"]
        assert data.get("prelabel_review") == "passed", data
        assert isinstance(data.get(PRIORITY_FIELD), float), data
        assert data["source"] == "import" and data["text"] in QUERIES, "the task's own fields are kept"
    # the spot check, a third writer, tags a sample and keeps both fields
    batch, chosen = spotcheck_project(label_studio.sdk(), ref, n=3, conn=conn)
    after = {t["id"]: t["data"] for t in ProjectClient(client, ref).tasks()}
    assert len(chosen.ids) == 3 and all(after[i].get("prelabel_spotcheck") == batch for i in chosen.ids)
    assert all(d.get("prelabel_review") == "passed" and PRIORITY_FIELD in d for d in after.values())


def test_a_deleted_label_leaves_the_few_shot_pool(label_studio, redis_url) -> None:
    client = label_studio.sdk()
    project = client.projects.create(title="deleted label", label_config=CONFIG)
    labels = ["navigational", "informational", "transactional"]
    client.projects.import_tasks(id=project.id, request=[
        {"data": {"text": q}, "annotations": [{"result": region(label)}]} for q, label in zip(QUERIES, labels)])
    settings = Settings(redis_url=redis_url)
    conn = redis_lib.Redis.from_url(redis_url)
    ref = project_ref(None, project.id)
    job = ProjectJob(settings, conn, ref, ProjectRecord(guideline="search_intent"), ProjectClient(client, ref, conn))
    tasks = sorted(job.ls.tasks(), key=lambda t: t["id"])
    assert learn_examples(job, [t["id"] for t in tasks], CONFIG) == 3
    assert sorted(pool_answers(conn, ref)) == [t["id"] for t in tasks]
    gone = tasks[1]
    client.annotations.delete(id=gone["annotations"][0]["id"])
    assert forget_deleted_labels(job, CONFIG) == 1
    pool = pool_answers(conn, ref)
    assert sorted(pool) == [tasks[0]["id"], tasks[2]["id"]]
    assert pool[tasks[0]["id"]] == {"intent": "navigational"}
    assert forget_deleted_labels(job, CONFIG) == 0, "nothing else changed"
