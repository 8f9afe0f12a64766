"""Promoted fine-tuned models on the local stack: one llama.cpp server per promoted GGUF.

``prelabel up`` calls ``PromotedModels.sync`` before the backend starts and every few seconds
after: each active model record (``prelabel:active_model:<tenant>:<project>``, or the global one) that
names a ``gguf`` (written by ``prelabel train flywheel`` on the local stack) gets a llama.cpp
server for that file, judged ready only by a real JSON + logprobs answer, and the record's
``base_url`` is rewritten to it. Ports change between runs, so the record always points at the
server this ``up`` started. A newer promotion gets a new server and the old one is stopped. The
backend reads the record per request: the project's new tasks go to the promoted model at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prelabel.contract import ACTIVE_MODEL_PATTERN, as_text
from prelabel.stack.processes import ManagedProcess, StartupError, started


@dataclass
class Served:
    key: str
    gguf: str
    model: str
    project: str | None
    base_url: str
    process: ManagedProcess


class PromotedModels:
    def __init__(self, client: Any, workdir: Path, say: Callable[[str], None]) -> None:
        self.client, self.workdir, self.say = client, workdir, say
        self.served: dict[str, Served] = {}
        self._failed: dict[str, dict[str, Any]] = {}  # key -> the record that could not be served (said once)

    def sync(self) -> None:
        """Serve every promoted GGUF that is not served yet; point its record at the server."""
        # The records' format: prelabel.train.promote.
        for raw_key in sorted(self.client.scan_iter(ACTIVE_MODEL_PATTERN)):
            key = as_text(raw_key)
            raw = self.client.get(key)
            record = json.loads(raw) if raw else {}
            gguf = record.get("gguf")
            if not gguf or self._failed.get(key, {}).get("gguf") == gguf:
                continue
            served = self.served.get(key)
            if served is None or served.gguf != gguf:
                served = self._start(key, record, gguf)
                if served is None:
                    continue
            if record.get("base_url") != served.base_url:
                self._point(key, gguf, served.base_url)

    def _start(self, key: str, record: dict[str, Any], gguf: str) -> Served | None:
        from prelabel.stack.llm_server import start_llm_server

        project = record.get("project")
        where = f"project {project}" if project else "all projects"
        if not Path(gguf).is_file():
            self._fail(key, record, where, f"{gguf} is missing")
            return None
        try:
            server = start_llm_server(self.workdir / str(record["model"]), gguf=Path(gguf), alias=str(record["model"]),
                                      name=f"llm-{record['model']}")
        except (StartupError, FileNotFoundError) as exc:  # no answer / no llama.cpp venv
            self._fail(key, record, where, str(exc))
            return None
        self._failed.pop(key, None)
        old = self.served.get(key)
        served = Served(key, gguf, str(record["model"]), project, server.base_url,
                        started(server.process, f"llm-{record['model']}"))
        self.served[key] = served
        if old is not None:
            old.process.stop()
        self.say(f"{where}: pre-annotated by the promoted model {served.model} (llama.cpp at {served.base_url})")
        return served

    def _fail(self, key: str, record: dict[str, Any], where: str, why: str) -> None:
        """Say it once; stop serving the model this record replaced (the project's requests go to
        the record's model and fail with a reason there, never silently to an older model)."""
        self._failed[key] = {"gguf": record.get("gguf"), "model": record.get("model"), "project": record.get("project"),
                             "error": why}
        old = self.served.pop(key, None)
        if old is not None:
            old.process.stop()
        self.say(f"[red]{where}: promoted model {record.get('model')} not served: {why}[/red]")

    def _point(self, key: str, gguf: str, base_url: str) -> None:
        """Rewrite the record's base_url, unless a newer promotion replaced the record meanwhile
        (then the next ``sync`` serves that one)."""
        import redis

        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                record = json.loads(raw) if raw else {}
                if record.get("gguf") != gguf:
                    return
                pipe.multi()
                pipe.set(key, json.dumps({**record, "base_url": base_url}))
                pipe.execute()
            except redis.WatchError:
                return

    def processes(self) -> dict[str, ManagedProcess]:
        return {f"llm-{s.model}": s.process for s in self.served.values()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """Which model serves which project, for ``prelabel status`` (and which could not be served, why)."""
        failed = {f["project"] or "*": {"model": f["model"], "gguf": f["gguf"], "error": f["error"]}
                  for f in self._failed.values()}
        return failed | {s.project or "*": {"model": s.model, "base_url": s.base_url, "gguf": s.gguf}
                         for s in self.served.values()}
