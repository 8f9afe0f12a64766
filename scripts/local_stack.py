"""Interim local stack (until `prelabel up` lands): real Label Studio + llama.cpp + the backend on
embedded Redis, a sample project pre-annotated, then wait for Ctrl-C and stop everything.

Run through `bash scripts/run.sh` (which provisions the cached virtualenvs first).
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import processes  # noqa: E402
from tests.harness.backend import BackendFactory  # noqa: E402
from tests.harness.label_studio import start_label_studio  # noqa: E402
from tests.harness.llm_server import start_llm_server  # noqa: E402

TEMPLATE = ROOT / "label_config" / "templates" / "search_intent"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="prelabel-stack-"))
    print(f"[run] working directory {work}", flush=True)
    try:
        print("[run] starting Label Studio (about 40 s) and the local LLM server ...", flush=True)
        llm = start_llm_server(work / "llm")
        ls = start_label_studio(work / "label-studio")
        factory = BackendFactory(workdir=work / "backends", llm=lambda: llm)
        backend = factory.start(label_studio=ls, name="backend", env={"PRELABEL_LOG_LEVEL": "INFO"})
        client = ls.sdk()
        project = client.projects.create(title="Search intent (prelabel sample)",
                                         label_config=TEMPLATE.with_suffix(".xml").read_text())
        tasks = [json.loads(line) for line in TEMPLATE.with_suffix(".sample.jsonl").read_text().splitlines()]
        client.projects.import_tasks(id=project.id, request=tasks)
        client.ml.create(project=project.id, url=backend.url, title="prelabel", is_interactive=False)
        client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                              selected_items={"all": True, "excluded": []})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            predictions = list(client.predictions.list(project=project.id))
            if len(predictions) >= len(tasks):
                break
            time.sleep(2)
        print(f"[run] {len(predictions)}/{len(tasks)} tasks pre-annotated", flush=True)
        print(f"[run] Label Studio: {ls.url}/projects/{project.id}/data", flush=True)
        print(f"[run] login: {ls.username} / {ls.password}", flush=True)
        print(f"[run] backend: {backend.url} (metrics at {backend.url}/metrics); Ctrl-C stops everything",
              flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1):
            pass
    finally:
        processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
