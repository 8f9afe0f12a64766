"""`prelabel train flywheel --enqueue` reaches a worker started the documented way.

A real Redis server, the CLI puts the job on the queue, and `prelabel worker --burst` (the
documented worker command, same REDIS_URL) must pick it up and run it. The flywheel config names
a model that does not exist, so the run stops at its model check, quickly and on purpose: the
recorded failure proves that the worker ran the job (a job nobody consumes stays "queued").
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from prelabel.stack.processes import child_env
from tests.servers import dev_bin
from tests.support.flywheel_data import spam_dataset

pytestmark = pytest.mark.e2e


def test_enqueued_flywheel_is_run_by_prelabel_worker(redis_server, tmp_path: Path) -> None:
    data = spam_dataset(tmp_path / "dataset")
    config = tmp_path / "flywheel.yaml"
    config.write_text(yaml.safe_dump({"train": {"model_name_or_path": str(tmp_path / "no-such-model")},
                                      "serve": {"base_url": "http://127.0.0.1:9/v1"}}), encoding="utf-8")
    env = child_env(None, {"REDIS_URL": redis_server.url, "PRELABEL_DATA_DIR": str(tmp_path / "data"),
                           "PRELABEL_TRAIN_CONFIG": None})
    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([dev_bin("prelabel"), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=timeout, check=False)

    queued = run("train", "flywheel", "41", "--config", str(config), "--dataset-dir", str(data), "--enqueue")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job_id = re.search(r"queued job (\S+)", queued.stderr).group(1)
    status = json.loads(run("train", "status", "41").stdout)["status"]
    assert status["state"] == "queued"

    worker = run("worker", "--burst", timeout=400)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    status = json.loads(run("train", "status", "41").stdout)["status"]
    assert status["state"] == "failed", status
    assert "no-such-model" in status["error"] and status["dataset_dir"] == str(data)
    from rq.job import Job

    job = Job.fetch(job_id, connection=redis_server.client())
    assert job.get_status() == "failed" and "no-such-model" in (job.latest_result().exc_string or "")
