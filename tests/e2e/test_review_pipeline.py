"""Webhooks -> RQ worker -> pre-annotation, second-model review, human labels; and its faults.

Real Label Studio, real Redis, real worker and backend processes. The happy path uses the real
llama.cpp server as both pre-annotator and reviewer (two model names); the fault tests use the
local fault-injecting server so that latency and outages can be controlled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from prelabel.contract import ProjectRef, fewshot_keys, new_labels_key, quality_key, train_status_key
from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.servers.redis_server import redis_server_binary
from tests.support.fault_llm import running_fault_server
from tests.support.tenancy import project_ref
from tests.support.waiting import wait_for as wait_until

pytestmark = pytest.mark.e2e

SECRET = "whsec-e2e-review-1b2c"
AUTH = ("prelabel", "basic-e2e-pass")
CONFIG = (Path(__file__).resolve().parents[2] / "label_config" / "templates" / "search_intent.xml").read_text()
LABELS = {"navigational", "informational", "transactional", "entertainment", "educational", "other"}
STATUSES = {"passed", "rejected", "needs_human", "review_error"}
QUERIES = ["facebook login", "how tall is mount everest", "buy running shoes online", "funny cat videos",
           "python tutorial for beginners", "cheap flights to rome", "weather tomorrow", "netflix sign in",
           "what is photosynthesis", "order pizza near me", "taylor swift new song", "learn spanish free"]


# --- the stack: backend + worker on one Redis database ------------------------------------------
@dataclass
class Stack:
    backend: Any
    redis_url: str
    workers: list[ManagedProcess] = field(default_factory=list)

    def start_worker(self) -> ManagedProcess:
        n = len(self.workers) + 1
        proc = ManagedProcess(
            f"worker-{n}", [dev_bin("prelabel"), "worker", "--maintenance-interval", "5"],
            log_path=self.backend.workdir / f"worker-{n}.log", env=child_env(None, self.backend.env),
            cwd=self.backend.workdir,
        ).start()
        self.workers.append(proc)
        return proc

    def redis(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.redis_url)

    def project(self, pid: int) -> ProjectRef:
        """Label Studio project ``pid`` as this stack keys it in Redis (its LABEL_STUDIO_URL's tenant)."""
        return project_ref(self.backend.env.get("LABEL_STUDIO_URL"), pid)

    def webhook(self, body: dict, secret: str | None = SECRET) -> httpx.Response:
        headers = {"X-Prelabel-Secret": secret} if secret else {}
        return httpx.post(self.backend.url + "/webhook", json=body, headers=headers, timeout=10)

    def jobs(self) -> dict:
        out = subprocess.run([dev_bin("prelabel"), "jobs", "--json"], env=child_env(None, self.backend.env),
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)

    def logs(self) -> str:
        parts = [self.backend.log_tail(40)] + [w.log_tail(60) for w in self.workers]
        return "\n-----\n".join(parts)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


_DB = iter(range(1, 16))


def _own_db(url: str) -> str:
    """A Redis database of its own per stack: workers of one stack never take another's jobs."""
    return url.rsplit("/", 1)[0] + f"/{next(_DB)}"


def start_stack(backend_factory, label_studio, name: str, redis_url: str, env: dict[str, str]) -> Stack:
    """Backend (webhook secret + basic auth, as a deployment would run it) and one worker."""
    backend = backend_factory.start(
        env={"REDIS_URL": redis_url, "PRELABEL_WEBHOOK_SECRET": SECRET, "PRELABEL_JOB_RETRY_BACKOFF": "2",
             "PRELABEL_BASIC_AUTH_USER": AUTH[0], "PRELABEL_BASIC_AUTH_PASSWORD": AUTH[1], **env},
        label_studio=label_studio, name=name, auth=AUTH,
    )
    stack = Stack(backend, redis_url)
    stack.start_worker()
    return stack


def new_project(label_studio, stack: Stack, title: str) -> int:
    """A project connected to the stack's backend, its webhook signed with the shared secret."""
    client = label_studio.sdk()
    project = client.projects.create(title=title, label_config=CONFIG)
    # Basic auth: Label Studio sends it on /health, /setup, /predict and START_TRAINING; the event
    # webhooks carry no credentials, so they are signed with the shared secret instead.
    client.ml.create(project=project.id, url=stack.backend.url, title="prelabel", is_interactive=False,
                     auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    hooks = [h for h in client.webhooks.list(project=project.id) if h.url.startswith(stack.backend.url)]
    assert hooks, "Label Studio did not create the backend's webhook"
    for hook in hooks:
        client.webhooks.update(id=hook.id, url=hook.url, headers={"X-Prelabel-Secret": SECRET})
    return project.id


def import_tasks(label_studio, pid: int, texts: list[str]) -> None:
    label_studio.sdk().projects.import_tasks(id=pid, request=[{"text": t} for t in texts])


def project_state(label_studio, pid: int) -> dict[int, dict]:
    """task id -> {data, pre: [predictions], review: [predictions]} as Label Studio stores them."""
    client = label_studio.sdk()
    state = {t.id: {"data": t.data, "pre": [], "review": []} for t in client.tasks.list(project=pid, fields="all")}
    for p in client.predictions.list(project=pid):
        data = p.model_dump()
        kind = "review" if data["model_version"].startswith("review:") else "pre"
        state[data["task"]][kind].append(data)
    return state


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, stack: Stack | None = None) -> Any:
    return wait_until(predicate, timeout, what, context=stack.logs if stack else None)


def all_reviewed(label_studio, pid: int, n: int, final: bool = False) -> Callable[[], dict | None]:
    def check() -> dict | None:
        state = project_state(label_studio, pid)
        statuses = [t["data"].get("prelabel_review") for t in state.values()]
        done = len(state) == n and all(s in STATUSES for s in statuses)
        if final:
            done = done and "review_error" not in statuses
        return state if done else None
    return check


def assert_one_each(state: dict[int, dict]) -> None:
    for tid, task in state.items():
        assert len(task["pre"]) == 1, f"task {tid}: {len(task['pre'])} pre-annotations"
        assert len(task["review"]) == 1, f"task {tid}: {len(task['review'])} reviews"


# --- happy path: real llama.cpp as pre-annotator and reviewer --------------------------------------
@pytest.fixture(scope="module")
def real_stack(backend_factory, label_studio, llm_server, redis_url) -> Iterator[Stack]:
    stack = start_stack(backend_factory, label_studio, "review-real", _own_db(redis_url),
                        {"PRELABEL_REVIEWER_MODEL": "smollm2-reviewer"})
    yield stack
    stack.stop()


def test_import_annotate_review_rank_through_label_studio(label_studio, llm_server, real_stack: Stack) -> None:
    pid = new_project(label_studio, real_stack, "review e2e")
    texts = QUERIES[:3]
    import_tasks(label_studio, pid, texts)
    state = wait_for(all_reviewed(label_studio, pid, len(texts)), 300, "3 reviewed tasks", real_stack)
    assert_one_each(state)
    for task in state.values():
        [pre], [review] = task["pre"], task["review"]
        assert pre["model_version"].startswith(f"{llm_server.model}@p-")
        family, _, status = review["model_version"].partition("#")
        assert family.startswith("review:smollm2-reviewer@p-"), review["model_version"]
        assert status == task["data"]["prelabel_review"], "the Data Manager field and the review disagree"
        assert 0.0 <= review["score"] <= 1.0
        for region in review["result"]:
            assert set(region["value"]["choices"]) <= LABELS
            stamp = region["prelabel"]["review"]
            assert stamp["status"] == status and stamp["reviewed"] == pre["id"]
            assert len(stamp["rationale"]) <= 50
            # Same SmolLM2 weights under another name: the servers say so, whatever the names say.
            assert stamp["independence"] == "same_weights"
            if status in ("passed", "rejected"):  # the reviewer's own confidence, from its logprobs
                assert stamp["score_source"] == "logprobs" and review["score"] == stamp["confidence"]
                assert set(stamp["verdict_probs"]) == {"correct", "incorrect"}

    # the same delivery again (Label Studio already sent it): one job, no second prediction
    replay = {"action": "TASKS_CREATED", "project": {"id": pid}, "tasks": [{"id": t} for t in state]}
    assert real_stack.webhook(replay).json()["status"] == "duplicate"
    assert real_stack.webhook(replay, secret="wrong").status_code == 401

    # a human label through the SDK -> ANNOTATION_CREATED -> worker
    tid = min(state)
    client = label_studio.sdk()
    annotation = client.annotations.create(id=tid, result=[{
        "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["navigational"]}}])
    key = new_labels_key(real_stack.project(pid))
    wait_for(lambda: real_stack.redis().sismember(key, annotation.id), 60, "the annotation reaching the worker",
             real_stack)
    # ... and the project's shared few-shot pool, which /predict and the worker read on their next batch
    assert real_stack.redis().hexists(fewshot_keys(real_stack.project(pid)).tasks, tid)
    wait_for(lambda: real_stack.jobs()["running"] == 0 and real_stack.jobs()["queued"] == 0, 120,
             "the queue to drain", real_stack)
    jobs = real_stack.jobs()
    assert jobs["failed"] == 0, jobs["failed_jobs"]
    state = project_state(label_studio, pid)
    assert_one_each(state)

    # ranking and quality refreshed after the human label: priorities on the unlabeled tasks,
    # the Data Manager view that sorts by them, agreement stats for the worker's metrics
    priorities = {t: task["data"].get("prelabel_priority") for t, task in state.items() if t != tid}
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in priorities.values()), priorities
    views = [v.model_dump() for v in client.views.list(project=pid)]
    [view] = [v for v in views if v["data"].get("title") == "prelabel: priority"]
    assert view["data"]["ordering"] == ["-tasks:data.prelabel_priority"]
    quality = json.loads(real_stack.redis().get(quality_key(real_stack.project(pid))))
    assert quality["compared"] == 1 and quality["classes"][0]["label"] == "navigational"

    # "Start training" in Label Studio reaches the worker, which queues this project's flywheel and
    # records a visible status; the run then goes as far as the data allows: one verified label
    # makes a dataset of one class, so it stops in its export stage and says so (any other
    # failure, a crash or a wrong project, fails this test)
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from prelabel.contract import TRAIN_QUEUE_NAME

    redis = real_stack.redis()
    key = train_status_key(real_stack.project(pid))
    assert not redis.hgetall(key), "no flywheel before the click"
    client.ml.train(id=client.ml.list(project=pid)[0].id)
    final = wait_for(lambda: (s := redis.hgetall(key)).get(b"state") in (b"finished", b"failed") and s, 600,
                     "the flywheel run to end", real_stack)
    assert final[b"state"] == b"failed", final
    error = final[b"error"].decode()
    assert error.startswith("export: DatasetError") and "a classification dataset needs at least two labels" in error
    # the training queue's failed registry; other tests' projects share this Redis, so only this project's
    # runs are compared: exactly one, the flywheel
    failed = [Job.fetch(i, connection=redis)
              for i in FailedJobRegistry(TRAIN_QUEUE_NAME, connection=redis).get_job_ids()]
    mine = [(j.func_name, j.args) for j in failed if j.args and j.args[0] == real_stack.project(pid)]
    assert mine == [("prelabel.train.pipeline.run_flywheel", (real_stack.project(pid),))]


# --- faults: worker killed, reviewer down, Redis restarted -------------------------------------------
@pytest.fixture()
def fault_llm() -> Iterator[Any]:
    with running_fault_server(latency_ms=0) as server:
        yield server


def fault_env(llm, reviewer_url: str | None = None, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "x", "PRELABEL_LLM_MODEL": "fault-llm",
            "PRELABEL_REVIEWER_MODEL": "fault-reviewer", "PRELABEL_REVIEWER_BASE_URLS": reviewer_url or llm.base_url,
            "PRELABEL_STRUCTURED_OUTPUT": "json_schema", **extra}


def test_worker_killed_mid_job_reruns_without_duplicates(backend_factory, label_studio, redis_url,
                                                         fault_llm) -> None:
    fault_llm.set_latency(400)
    stack = start_stack(backend_factory, label_studio, "review-kill", _own_db(redis_url),
                        fault_env(fault_llm, PRELABEL_LLM_CONCURRENCY="2"))
    try:
        pid = new_project(label_studio, stack, "worker killed")
        import_tasks(label_studio, pid, QUERIES)
        wait_for(lambda: sum(bool(t["pre"]) for t in project_state(label_studio, pid).values()) >= 2, 60,
                 "the first pre-annotations", stack)
        assert stack.jobs()["running"] == 1
        os.killpg(stack.workers[0].pid, signal.SIGKILL)  # no warm shutdown: the job dies mid-way
        stack.workers[0].popen.wait(10)  # reaped, as init/systemd/docker would
        partial = sum(bool(t["pre"]) for t in project_state(label_studio, pid).values())
        assert partial < len(QUERIES), "the job finished before the worker was killed: nothing tested"

        replacement = stack.start_worker()
        state = wait_for(all_reviewed(label_studio, pid, len(QUERIES)), 120, "all tasks reviewed", stack)
        assert_one_each(state)
        assert "job(s) of dead workers" in replacement.log_path.read_text()
    finally:
        stack.stop()


def test_a_human_label_overtakes_a_long_review(backend_factory, label_studio, redis_url, fault_llm) -> None:
    """The review of an import runs in slices (``PRELABEL_JOB_SLICE_S``) and an annotation's
    webhook is queued at the front: the annotator's label is handled while the review still has
    tasks left (not after all of it), and the review still ends with one review per task. Tasks
    imported with a person's annotation are left alone."""
    fault_llm.set_latency(700)
    stack = start_stack(backend_factory, label_studio, "review-slices", _own_db(redis_url),
                        fault_env(fault_llm, PRELABEL_LLM_CONCURRENCY="1", PRELABEL_JOB_SLICE_S="1"))
    try:
        pid = new_project(label_studio, stack, "review slices")
        labeled = ["already labeled: netflix login", "already labeled: cheap laptops"]
        label_studio.sdk().projects.import_tasks(id=pid, request=[
            {"data": {"text": text}, "annotations": [{"result": [{
                "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}]}]}
            for text in labeled])
        import_tasks(label_studio, pid, QUERIES)
        state = wait_for(lambda: (s := project_state(label_studio, pid)) and any(t["review"] for t in s.values())
                         and s, 120, "the first review", stack)
        task_id = min(tid for tid, task in state.items() if task["data"]["text"] in QUERIES)
        label_studio.sdk().annotations.create(id=task_id, result=[{
            "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}])
        log = stack.workers[0].log_path
        wait_for(lambda: f"ANNOTATION_CREATED project {pid}" in log.read_text(), 60,
                 "the annotation webhook to be handled", stack)
        waiting = [tid for tid, task in project_state(label_studio, pid).items() if not task["review"]]
        assert waiting, "the annotation was handled only after the whole review"

        def unlabeled_reviewed() -> dict | None:
            state = project_state(label_studio, pid)
            rest = {tid: task for tid, task in state.items() if task["data"]["text"] not in labeled}
            done = len(rest) == len(QUERIES) and all(t["data"].get("prelabel_review") in STATUSES
                                                     for t in rest.values())
            return state if done and "review_error" not in str(rest) else None

        state = wait_for(unlabeled_reviewed, 180, "every task reviewed", stack)
        people = {tid: task for tid, task in state.items() if task["data"]["text"] in labeled}
        assert_one_each({tid: task for tid, task in state.items() if tid not in people})
        # imported with a person's annotation: neither pre-annotated nor reviewed (no LLM call spent)
        assert len(people) == 2 and all(not t["pre"] and not t["review"] for t in people.values()), people
        assert "left for the next job" in log.read_text()
        assert "2 labeled by a person (left alone)" in log.read_text()
    finally:
        stack.stop()


def test_reviewer_down_marks_review_error_then_retries(backend_factory, label_studio, redis_url,
                                                       fault_llm) -> None:
    port = free_port()
    reviewer_url = f"http://127.0.0.1:{port}/v1"
    stack = start_stack(backend_factory, label_studio, "review-down", _own_db(redis_url),
                        fault_env(fault_llm, reviewer_url, PRELABEL_LLM_MAX_RETRIES="0",
                                  PRELABEL_JOB_RETRY_BACKOFF="4"))
    try:
        pid = new_project(label_studio, stack, "reviewer down")
        import_tasks(label_studio, pid, QUERIES[:3])
        state = wait_for(all_reviewed(label_studio, pid, 3), 60, "review_error on every task", stack)
        for task in state.values():
            assert task["data"]["prelabel_review"] == "review_error"
            assert task["review"][0]["model_version"].endswith("#review_error")
            assert len(task["pre"]) == 1
        assert stack.jobs()["scheduled"] >= 1, "the review job is not waiting for a retry"

        with running_fault_server(latency_ms=0, port=port, model="fault-reviewer"):
            state = wait_for(all_reviewed(label_studio, pid, 3, final=True), 120, "a successful retry", stack)
        assert_one_each(state)
        assert stack.redis().hget("prelabel:stats:review", "review_error") == b"3"
    finally:
        stack.stop()


def test_redis_restart_is_survived(backend_factory, label_studio, tmp_path, fault_llm) -> None:
    port = free_port()
    argv = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
            "--appendonly", "yes", "--save", "", "--protected-mode", "no"]

    def start_redis() -> ManagedProcess:
        proc = ManagedProcess("redis-restart", argv, log_path=tmp_path / "redis.log", env=child_env(),
                              cwd=tmp_path).start()
        url = f"redis://127.0.0.1:{port}/0"
        proc.wait_until(lambda: _pings(url), timeout=20, what="PING")
        return proc

    server = start_redis()
    stack = start_stack(backend_factory, label_studio, "review-redis", f"redis://127.0.0.1:{port}/0",
                        fault_env(fault_llm))
    try:
        pid = new_project(label_studio, stack, "redis restart")
        import_tasks(label_studio, pid, QUERIES[:2])
        wait_for(all_reviewed(label_studio, pid, 2, final=True), 60, "the first batch", stack)

        server.stop()
        down = stack.webhook({"action": "TASKS_CREATED", "project": {"id": pid}, "tasks": [{"id": 999999}]})
        assert down.status_code == 503 and down.json()["reason"] == "queue_unavailable"
        server = start_redis()

        import_tasks(label_studio, pid, QUERIES[2:4])
        state = wait_for(all_reviewed(label_studio, pid, 4, final=True), 90, "the batch after the restart", stack)
        assert_one_each(state)
        assert stack.backend.alive() and stack.workers[0].alive()
    finally:
        stack.stop()
        server.stop()


def _pings(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis_lib.RedisError:
        return False
