"""The local flywheel's hand-over to `prelabel up` and its report (the serving itself: e2e)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from prelabel.settings import Settings
from prelabel.train.local_serving import markdown_report, record_extra, wait_for_takeover


@pytest.fixture()
def client(tmp_path: Path):
    import redis

    from prelabel.redis_conn import redis_url

    connection = redis.Redis.from_url(redis_url(Settings(data_dir=tmp_path, redis_url=None)))
    yield connection
    connection.close()


def test_takeover_waits_until_up_points_the_record_elsewhere(client) -> None:
    key = "prelabel:active_model:4"
    client.set(key, json.dumps({"model": "m", "base_url": "http://127.0.0.1:1111/v1", "gguf": "/x.gguf"}))

    def up_takes_over() -> None:
        time.sleep(1.5)
        client.set(key, json.dumps({"model": "m", "base_url": "http://127.0.0.1:2222/v1", "gguf": "/x.gguf"}))

    threading.Thread(target=up_takes_over).start()
    started = time.monotonic()
    assert wait_for_takeover(client, key, "http://127.0.0.1:1111/v1", True, timeout=30) == "http://127.0.0.1:2222/v1"
    assert time.monotonic() - started >= 1.0, "returned before the record changed"
    # no stack running: nothing to wait for; nobody taking over: gives up after the timeout
    assert wait_for_takeover(client, key, "http://127.0.0.1:2222/v1", False) is None
    assert wait_for_takeover(client, key, "http://127.0.0.1:2222/v1", True, timeout=1.5) is None


def test_record_extra_says_how_to_serve(tmp_path: Path) -> None:
    extra = record_extra(tmp_path / "m.gguf")  # how to prompt it: every record (promote.served_prompt)
    assert extra == {"gguf": str((tmp_path / "m.gguf").resolve()), "served_by": "llama.cpp"}


def test_markdown_report_has_both_models_and_the_decision() -> None:
    def report(model: str, accuracy: float) -> dict:
        return {"model": model, "n": 14, "primary_metric": "accuracy", "primary_value": accuracy,
                "accuracy": accuracy, "macro_f1": accuracy / 2, "invalid_rate": 0.0,
                "dataset": {"test_sha256": "ab" * 32}, "performance": {"latency_s": {"p50": 0.4}}}

    text = markdown_report({"run_id": "r1", "project": "4", "promoted": True, "reasons": ["accuracy improves by +0.5"]},
                           {"export": 1.0, "train": 120.0}, report("cand", 0.9), report("base", 0.4), {"GGUF": "x"})
    assert "**Decision: PROMOTED**" in text and "| accuracy | 0.9000 | 0.4000 |" in text
    assert "| train | 120.0 |" in text and "`cand`" in text and "`base`" in text and "- GGUF: x" in text


def test_commands_next_to_a_running_up_use_its_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from prelabel.stack.record import StackRecord, record_path
    from prelabel.stack.up import stack_settings

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "OPENAI_BASE_URL", "PRELABEL_WEBHOOK_SECRET",
                 "PRELABEL_BASIC_AUTH_USER", "PRELABEL_BASIC_AUTH_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(data_dir=tmp_path)
    record = StackRecord(pid=os.getpid(), ls_port=8123, backend_port=9345, ls_credentials=["u", "p", "tok"],
                         webhook_secret="whs", basic_auth=["prelabel", "pw"], children={"llm": os.getpid()},
                         llm_base_url="http://127.0.0.1:8555/v1")
    record.save(record_path(settings))
    ours = stack_settings(settings)
    assert ours.label_studio_url == "http://127.0.0.1:8123" and ours.label_studio_api_key.get_secret_value() == "tok"
    assert ours.webhook_secret.get_secret_value() == "whs" and ours.port == 9345
    assert (ours.basic_auth_user, ours.basic_auth_password.get_secret_value()) == ("prelabel", "pw")
    assert ours.llm_base_urls == ["http://127.0.0.1:8555/v1"] and ours.llm_model == "smollm2"
    # what the environment names wins; a stack that is not running changes nothing
    mine = stack_settings(Settings(data_dir=tmp_path, webhook_secret="mine", label_studio_url="http://ls:1"))
    assert mine.webhook_secret.get_secret_value() == "mine" and mine.label_studio_url == "http://ls:1"
    StackRecord(pid=0).save(record_path(settings))
    assert stack_settings(settings) == settings
