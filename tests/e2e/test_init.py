"""`prelabel init --template NAME`: one command from a template to a wired project; idempotent."""

from __future__ import annotations

import subprocess

import pytest

from prelabel.stack.ports import free_port
from prelabel.stack.processes import child_env
from tests.servers import dev_bin

pytestmark = pytest.mark.e2e

SECRET = "whsec-init-test"


def run_init(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dev_bin("prelabel"), "init", *args], env=child_env(None, env), capture_output=True,
                          text=True, timeout=120, check=False)


def test_init_twice_creates_one_wired_project(label_studio, backend_factory) -> None:
    backend = backend_factory.start(label_studio=label_studio, env={"PRELABEL_WEBHOOK_SECRET": SECRET},
                                    name="init-backend")
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key,
           "PRELABEL_WEBHOOK_SECRET": SECRET}
    args = ("--template", "search_intent", "--title", "init check", "--backend-url", backend.url)
    first = run_init(env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created" in first.stdout and "8 task(s) imported" in first.stdout
    second = run_init(env, *args)
    assert second.returncode == 0 and "reused" in second.stdout and "0 task(s) imported" in second.stdout

    client = label_studio.sdk()
    [project] = [p for p in client.projects.list() if p.title == "init check"]
    assert len(list(client.tasks.list(project=project.id))) == 8
    [ml] = list(client.ml.list(project=project.id))
    assert ml.url.rstrip("/") == backend.url
    hooks = [h for h in client.webhooks.list(project=project.id) if h.url == backend.url + "/webhook"]
    assert len(hooks) == 1 and hooks[0].headers == {"X-Prelabel-Secret": SECRET}


def test_init_errors_are_one_clear_line(label_studio) -> None:
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key,
           "PRELABEL_WEBHOOK_SECRET": SECRET}
    unknown = run_init(env, "--template", "no_such_template")
    assert unknown.returncode == 2 and "unknown template" in unknown.stderr
    traversal = run_init(env, "--template", "../../pyproject")
    assert traversal.returncode == 2 and "unknown template" in traversal.stderr
    down = run_init({**env, "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}"}, "--template", "ner")
    assert down.returncode == 1 and "Label Studio at" in down.stdout
    bad = run_init({**env, "LABEL_STUDIO_API_KEY": "not-a-token-123"}, "--template", "ner")
    assert bad.returncode == 1 and "not-a-token-123" not in bad.stdout + bad.stderr
    for result in (unknown, traversal, down, bad):
        assert "Traceback" not in result.stdout + result.stderr
    no_secret = run_init({k: v for k, v in env.items() if k != "PRELABEL_WEBHOOK_SECRET"}, "--template", "ner")
    assert no_secret.returncode == 2 and "PRELABEL_WEBHOOK_SECRET" in no_secret.stderr
