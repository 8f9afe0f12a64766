"""Start the project's own backend (``prelabel serve``) as a real subprocess.

``BackendFactory.start(env={...})`` runs::

    <venv-dev>/bin/prelabel serve --host 127.0.0.1 --port P

with a fresh ``PRELABEL_DATA_DIR`` and working directory per backend, the LLM / Redis env filled
in from the session servers (only started when the test did not pass its own
``OPENAI_BASE_URL`` / ``REDIS_URL``), waits for ``GET /health`` == 200 and returns a
``Backend`` (``.url``, ``.stop()``, ``.log_path``, ``.log_tail()``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, child_env

from . import dev_bin

DEFAULT_START_TIMEOUT = float(os.environ.get("PRELABEL_BACKEND_START_TIMEOUT", "60"))


@dataclass
class Backend:
    url: str
    port: int
    env: dict[str, str]
    data_dir: Path
    workdir: Path
    process: ManagedProcess

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self, grace: float = 10.0) -> None:
        self.process.stop(grace)

    def http(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)


@dataclass
class BackendFactory:
    """Makes backends. ``llm`` / ``redis_url`` / ``label_studio`` are *callables*, resolved only
    when a backend needs them, so a test that points the backend at a fault-injecting server
    never starts llama.cpp."""

    workdir: Path
    llm: Callable[[], object] | None = None  # -> object with .base_url .model .api_key
    redis_url: Callable[[], str] | None = None
    command: Sequence[str] | None = None  # override; "{host}" / "{port}" are substituted
    started: list[Backend] = field(default_factory=list)
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def default_command(self) -> list[str]:
        return [dev_bin("prelabel"), "serve", "--host", "{host}", "--port", "{port}"]

    def start(
        self,
        env: Mapping[str, str | None] | None = None,
        *,
        label_studio=None,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
        health_path: str = "/health",
        name: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Backend:
        """Start one backend. ``env`` entries override the defaults (``None`` unsets one);
        ``label_studio`` (the fixture object) adds ``LABEL_STUDIO_URL`` / ``_API_KEY``;
        ``args`` are appended to the command line; ``auth`` = basic-auth credentials for the
        readiness probe of a backend that requires them."""
        env = dict(env or {})
        with self._lock:
            n = next(self._counter)
        name = name or f"backend-{n}"
        workdir = self.workdir / name
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        host, port = "127.0.0.1", free_port()

        defaults: dict[str, str] = {"PRELABEL_DATA_DIR": str(data_dir)}
        if "OPENAI_BASE_URL" not in env and "PRELABEL_LLM_BASE_URLS" not in env and self.llm:
            llm = self.llm()
            defaults.update(
                OPENAI_BASE_URL=llm.base_url,
                OPENAI_API_KEY=llm.api_key,
                PRELABEL_LLM_MODEL=llm.model,
            )
            structured = getattr(llm, "structured_output", None)
            if structured:
                defaults["PRELABEL_STRUCTURED_OUTPUT"] = structured
            window = getattr(llm, "context_window", None)
            if window:
                defaults["PRELABEL_LLM_CONTEXT_WINDOW"] = str(window)
        if "REDIS_URL" not in env and "PRELABEL_REDIS_URL" not in env and self.redis_url:
            defaults["REDIS_URL"] = self.redis_url()
        if label_studio is not None:
            defaults.update(
                LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.api_key
            )
        merged = {**defaults, **env}
        # A developer's shell settings must not leak into the backend under test.
        scrub = {
            k: None
            for k in os.environ
            if (
                k.startswith("PRELABEL_")
                or k
                in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")
            )
            and k not in merged
            and not k.startswith("PRELABEL_TEST_")
        }
        full_env = child_env(None, {**scrub, **merged})

        template = list(command or self.command or self.default_command()) + list(args)
        argv = [str(a).replace("{host}", host).replace("{port}", str(port)) for a in template]
        proc = ManagedProcess(
            name, argv, log_path=workdir / f"{name}.log", env=full_env, cwd=workdir
        ).start()
        url = f"http://{host}:{port}"
        backend = Backend(
            url=url,
            port=port,
            env={k: v for k, v in merged.items() if v is not None},
            data_dir=data_dir,
            workdir=workdir,
            process=proc,
        )
        try:
            proc.wait_until(
                lambda: httpx.get(f"{url}{health_path}", timeout=2, auth=auth).status_code == 200,
                timeout=timeout,
                what=f"answering GET {health_path} with 200",
            )
        except BaseException:
            proc.stop()
            raise
        with self._lock:
            self.started.append(backend)
        return backend

    __call__ = start

    def stop_all(self, backends: Sequence[Backend] | None = None) -> None:
        with self._lock:
            targets = list(backends) if backends is not None else list(self.started)
        for b in reversed(targets):
            b.stop()
            with self._lock:
                if b in self.started:
                    self.started.remove(b)
