"""`prelabel up` / `status` / `down`: the README's run command, end to end, and its failures.

Runs the real command in a temporary data directory (real Label Studio, llama.cpp, embedded
Redis, backend, worker), checks through the Label Studio API that the sample project was
pre-annotated by the backend and that a human annotation reaches the worker, stops it with
`prelabel down`, starts it again on the same data (no duplicates), and checks that the usual
mistakes end with a clear message and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from label_studio_sdk.client import LabelStudio

from prelabel.jobs.reconcile import is_own_preannotation
from prelabel.pids import pid_alive as _alive
from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.support.switch_proxy import SwitchProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

FAKE_LLAMA = Path(__file__).resolve().parents[1] / "support" / "fake_llama"


class Up:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {"--ls-port": free_port(), "--backend-port": free_port(), "--llm-port": free_port()}
        self.env = child_env(None, {"PRELABEL_DATA_DIR": str(data_dir), "OPENAI_BASE_URL": None,
                                    "PRELABEL_LLM_BASE_URLS": None, "REDIS_URL": None})
        self.proc: ManagedProcess | None = None
        self.runs = 0

    def start(self) -> ManagedProcess:
        self.runs += 1
        args = [a for pair in self.ports.items() for a in (pair[0], str(pair[1]))]
        self.proc = ManagedProcess(f"up-{self.runs}", [dev_bin("prelabel"), "up", *args],
                                   log_path=self.data_dir.parent / f"up-{self.runs}.log", env=self.env).start()
        return self.proc

    def output(self) -> str:
        return self.proc.log_path.read_text(errors="replace") if self.proc else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dev_bin("prelabel"), *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def record(self) -> dict:
        return json.loads((self.data_dir / "stack" / "stack.json").read_text())

    def client(self) -> LabelStudio:
        _, _, token = self.record()["ls_credentials"]
        return LabelStudio(base_url=f"http://127.0.0.1:{self.ports['--ls-port']}", api_key=token)

    def ready(self) -> bool:
        return "tasks pre-annotated" in self.output() and "Ctrl-C" in self.output()


@pytest.fixture()
def up(tmp_path: Path) -> Iterator[Up]:
    stack = Up(tmp_path / "data")
    yield stack
    stack.cli("down")
    if stack.proc is not None:
        stack.proc.stop()


@pytest.mark.timeout(1200)  # three `up`s: the first, one on the same data, one after a SIGKILL of `up`
def test_up_annotate_down_and_up_again(up: Up) -> None:
    up.start()
    wait_for(up.ready, 600, "`prelabel up` to report the sample project", context=up.output)
    status = json.loads(up.cli("status", "--json").stdout)
    assert status["running"] and status["label_studio_health"] and status["backend_health"], status
    assert all(status["processes"].values()), status

    client = up.client()
    [project] = [p for p in client.projects.list() if p.title == "Search intent (prelabel sample)"]
    tasks = list(client.tasks.list(project=project.id))
    predictions = [p for p in client.predictions.list(project=project.id)
                   if not p.model_version.startswith("review:")]
    assert tasks and {p.task for p in predictions} == {t.id for t in tasks}, "every sample task pre-annotated"
    assert all(p.model_version.startswith("smollm2@p-") for p in predictions)

    annotation = client.annotations.create(id=tasks[0].id, result=[{
        "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}])
    worker_log = up.data_dir / "stack" / "logs" / "worker.log"
    wait_for(lambda: f"ANNOTATION_CREATED project {project.id}" in worker_log.read_text(), 300,
             "the annotation webhook to reach the worker", context=lambda: worker_log.read_text()[-3000:])
    assert annotation.id

    record = up.record()
    pids = [record["pid"], *record["children"].values()]
    assert _alive(record["children"]["redis"]), "the embedded Redis is recorded in stack.json"
    down = up.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every process of the stack to exit")
    assert up.proc.popen.wait(10) == 0, up.output()[-2000:]
    leftovers = subprocess.run(["pgrep", "-f", str(up.data_dir)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"processes left behind: {leftovers}"
    assert up.cli("status").returncode == 3

    up.start()
    wait_for(up.ready, 300, "the second `prelabel up`", context=up.output)
    client = up.client()
    projects = [p for p in client.projects.list() if p.title == "Search intent (prelabel sample)"]
    assert [p.id for p in projects] == [project.id], "a second project was created"
    assert len(list(client.tasks.list(project=project.id))) == len(tasks), "tasks were imported again"
    assert len(list(client.ml.list(project=project.id))) == 1, "the backend was connected twice"
    hooks = [h for h in client.webhooks.list(project=project.id) if h.url.endswith("/webhook")]
    assert len(hooks) == 1 and hooks[0].headers.get("X-Prelabel-Secret"), hooks
    assert "reused" in up.output()

    # `up` killed outright (nothing of it runs): the next `up` stops what it left, the embedded Redis included
    record = up.record()
    orphans = [*record["children"].values()]
    assert "redis" in record["children"] and all(_alive(pid) for pid in orphans), record["children"]
    up.proc.popen.kill()
    up.proc.popen.wait(10)
    up.start()
    wait_for(lambda: "starting embedded Redis" in up.output(), 120, "the next `prelabel up` past its checks",
             context=up.output)
    assert not [pid for pid in orphans if _alive(pid)], "processes of the killed `up` outlived the next one"
    wait_for(lambda: "redis" in up.record()["children"], 60, "the next `up` to record its Redis")
    # `down` while this `up` is still starting: it may have to kill it (exit 1 after 60 s); either way
    # every process the stack started so far, the embedded Redis included, must be gone.
    started = [*up.record()["children"].values()]
    up.cli("down")
    up.proc.popen.wait(90)
    pids = {*started, *up.record()["children"].values()}  # a killed `up` leaves its record as it was
    wait_for(lambda: not any(_alive(pid) for pid in pids), 60, "every process of the stack to exit")


def test_port_in_use_is_a_clear_error(up: Up) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", up.ports["--backend-port"]))
        busy.listen()
        proc = up.start()
        code = proc.popen.wait(60)
    assert code == 2
    out = up.output()
    assert f"port {up.ports['--backend-port']} (backend) is already in use" in out
    assert "Traceback" not in out


def test_missing_model_and_unreachable_llm_are_clear_errors(up: Up, tmp_path: Path) -> None:
    up.env["PRELABEL_LLAMA_VENV"] = str(tmp_path / "no-such-venv")
    code = up.start().popen.wait(60)
    assert code == 2 and "local model missing" in up.output() and "Traceback" not in up.output()

    del up.env["PRELABEL_LLAMA_VENV"]
    up.env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    code = up.start().popen.wait(60)
    out = up.output()
    assert code == 2 and "is unreachable" in out and "Traceback" not in out
    assert os.environ.get("OPENAI_API_KEY", "\0") not in out


def broken_llama_venv(root: Path) -> Path:
    """A real venv whose llama_cpp server lists its models, then dies with SIGSEGV on a completion."""
    venv = root / "broken-llama"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = list((venv / "lib").glob("python*/site-packages"))
    shutil.copytree(FAKE_LLAMA / "llama_cpp", site / "llama_cpp")
    (root / "model.gguf").write_bytes(b"GGUF")
    (venv / "model.path").write_text(str(root / "model.gguf"))
    (venv / ".ok").write_text("test")
    return venv


def test_llm_server_that_dies_on_its_first_completion_is_named(up: Up, tmp_path: Path) -> None:
    up.env["PRELABEL_LLAMA_VENV"] = str(broken_llama_venv(tmp_path))
    code = up.start().popen.wait(180)
    out = up.output()
    assert code != 0, out
    assert "llama-cpp-server listed its models but gave no real answer" in out, out
    assert "killed by SIGSEGV" in out and "llama-server.log" in out, out
    assert "pre-annotated" not in out and "Traceback" not in out, out


def test_llm_outage_during_import_heals_every_task_without_duplicates(up: Up, llm_server) -> None:
    """The LLM goes away while the sample is imported: `up` says plainly that nothing was labeled,
    and once the LLM answers again the worker's reconcile job labels every task exactly once,
    except the one a human annotated meanwhile."""
    host, port = llm_server.base_url.split("//")[1].split("/")[0].split(":")
    with SwitchProxy(host, int(port)) as proxy:
        up.env.update({"OPENAI_BASE_URL": proxy.base_url, "PRELABEL_LLM_MODEL": llm_server.model,
                       "PRELABEL_STRUCTURED_OUTPUT": "json_object", "PRELABEL_RECONCILE_INTERVAL": "3",
                       "PRELABEL_LLM_MAX_RETRIES": "1", "PRELABEL_JOB_RETRY_BACKOFF": "2"})
        up.start()
        wait_for(lambda: "starting embedded Redis" in up.output(), 120, "the preflight completion",
                 context=up.output)
        proxy.switch(False)
        wait_for(lambda: "tasks pre-annotated" in up.output(), 600, "the first count", context=up.output)
        out = up.output()
        assert "0/8 tasks pre-annotated; 8 error: llm_connection_error" in out, out
        assert "no task got a valid label" in out

        client = up.client()
        [project] = [p for p in client.projects.list() if p.title == "Search intent (prelabel sample)"]
        tasks = sorted(t.id for t in client.tasks.list(project=project.id))
        human = tasks[0]
        client.annotations.create(id=human, result=[{
            "from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["other"]}}])

        proxy.switch(True)

        def own(task_id: int) -> list:
            return [p for p in client.predictions.list(task=task_id) if is_own_preannotation(p.model_version)]

        def healed() -> bool:
            return all(any(p.result for p in own(t)) for t in tasks[1:])

        wait_for(healed, 300, "every unannotated task pre-annotated after the outage",
                 context=lambda: up.output()[-3000:])
        wait_for(lambda: "7/8 tasks pre-annotated" in up.output(), 60, "`up` to report the healed tasks",
                 context=up.output)
        for task_id in tasks:
            predictions = own(task_id)
            assert len(predictions) == 1, f"task {task_id}: {[p.model_version for p in predictions]}"
            if task_id == human:
                assert predictions[0].model_version.endswith("#error") and not predictions[0].result
            else:
                assert predictions[0].model_version.startswith(f"{llm_server.model}@p-")
                assert "#error" not in predictions[0].model_version
        worker_log = (up.data_dir / "stack" / "logs" / "worker.log").read_text()
        assert "reconcile pre-annotated 7 task(s) again" in worker_log, worker_log[-3000:]
