"""`prelabel up`'s serving of promoted GGUFs (``stack.promoted``), on a real llama.cpp server.

What a second `up` does after a local flywheel promoted a model, without Label Studio: the
active model record names a GGUF and a ``base_url`` of a server that is gone; ``sync`` serves the
GGUF (ready only on a real JSON + logprobs answer under the promoted model's name) and points the
record at it. A later ``sync`` leaves a served model alone; a newer promotion gets a new server
and the old one is stopped; a missing GGUF is said once and not retried. The packaged SmolLM2
GGUF stands in for the fine-tuned file (the flywheel e2e test serves a really fine-tuned one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prelabel.settings import Settings
from prelabel.stack.llm_server import find_gguf
from prelabel.stack.llm_smoke import check_completion
from prelabel.stack.processes import stop_all
from prelabel.stack.promoted import PromotedModels

pytestmark = pytest.mark.e2e

KEY = "prelabel:active_model:7"


@pytest.fixture()
def client(tmp_path: Path) -> Iterator:
    import redis

    from prelabel.redis_conn import redis_url

    connection = redis.Redis.from_url(redis_url(Settings(data_dir=tmp_path, redis_url=None)))
    yield connection
    connection.close()


@pytest.fixture()
def started() -> Iterator[list[PromotedModels]]:
    """The `PromotedModels` a test makes; their servers (only theirs: the session's Label Studio
    and LLM servers live in the same process registry) are stopped afterwards."""
    made: list[PromotedModels] = []
    yield made
    for promoted in made:
        stop_all(promoted.processes().values())


def _promote(client, model: str, gguf: Path | str, base_url: str = "http://127.0.0.1:9/v1") -> None:
    client.set(KEY, json.dumps({"model": model, "base_url": base_url, "project": "7", "gguf": str(gguf),
                                "fewshot_k": 0, "prompt_style": "compact"}))


def _record(client) -> dict:
    return json.loads(client.get(KEY))


@pytest.mark.timeout(600)
def test_up_serves_the_promoted_gguf_and_follows_newer_promotions(client, started, tmp_path: Path) -> None:
    said: list[str] = []
    gguf = find_gguf()
    _promote(client, "prelabel-7-r1", gguf)  # the flywheel's own server (port 9 here) is gone

    first = PromotedModels(client, tmp_path / "up1", said.append)
    started.append(first)
    first.sync()
    served = _record(client)["base_url"]
    assert served != "http://127.0.0.1:9/v1" and served == first.describe()["7"]["base_url"]
    assert check_completion(served, "prelabel-7-r1").startswith("answered"), "the served model gives no real answer"
    assert [m["id"] for m in httpx.get(f"{served}/models", timeout=10).json()["data"]] == ["prelabel-7-r1"]
    assert set(first.processes()) == {"llm-prelabel-7-r1"}
    assert any("project 7: pre-annotated by the promoted model prelabel-7-r1" in line for line in said), said
    process = first.processes()["llm-prelabel-7-r1"]
    first.sync()  # nothing new: the same server, the record untouched
    assert first.processes()["llm-prelabel-7-r1"] is process and _record(client)["base_url"] == served

    # the next `up`: the record still names the old port; it is served again and re-pointed
    process.stop()
    second = PromotedModels(client, tmp_path / "up2", said.append)
    started.append(second)
    second.sync()
    again = _record(client)["base_url"]
    assert again != served and check_completion(again, "prelabel-7-r1").startswith("answered")

    # a newer promotion (another file): a new server, the old one stopped
    newer = tmp_path / "r2.gguf"
    newer.symlink_to(gguf)
    old = second.processes()["llm-prelabel-7-r1"]
    _promote(client, "prelabel-7-r2", newer)
    second.sync()
    assert not old.alive() and set(second.processes()) == {"llm-prelabel-7-r2"}
    assert _record(client)["base_url"] == second.describe()["7"]["base_url"] != again
    assert second.describe()["7"]["model"] == "prelabel-7-r2"

    # a promoted file that is gone: said once, the running server and the record left as they are
    _promote(client, "prelabel-7-r3", tmp_path / "missing.gguf", base_url="http://127.0.0.1:9/v1")
    before = len(said)
    second.sync()
    second.sync()
    problems = [line for line in said[before:] if "not served" in line]
    assert len(problems) == 1 and "missing.gguf is missing" in problems[0], said[before:]
    assert _record(client)["base_url"] == "http://127.0.0.1:9/v1"
