"""`prelabel predict` as a batch job: plain-text input, progress, label distribution, a truthful
summary (only tasks with a region count as pre-annotated), raw output of failed tasks, exit codes.

The happy path runs against the real llama.cpp server (SmolLM2: wiring, not accuracy); the
failures come from the fault-injecting server (answers outside the label set) and from an
endpoint where nothing listens.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from prelabel.stack.processes import child_env
from tests.servers import dev_bin
from tests.support.fault_llm import running_fault_server

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).resolve().parents[2] / "label_config" / "templates" / "search_intent.xml"
QUERIES = ["facebook login", "iphone 15 price", "buy running shoes", "funny cat videos", "learn python"]


def predict(tmp_path: Path, llm: dict[str, str], redis_url: str, *args: str) -> subprocess.CompletedProcess:
    scrub = {k: None for k in os.environ if k.startswith("PRELABEL_") or k.startswith("OPENAI_")}
    env = child_env(None, {**scrub, "REDIS_URL": redis_url, "PRELABEL_DATA_DIR": str(tmp_path / "data"), **llm})
    return subprocess.run([dev_bin("prelabel"), "predict", "-c", str(CONFIG), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)


def test_plain_text_progress_distribution_and_summary(tmp_path: Path, llm_server, redis_url) -> None:
    (tmp_path / "queries.txt").write_text("\n".join(QUERIES) + "\n\n", encoding="utf-8")
    llm = {"OPENAI_BASE_URL": llm_server.base_url, "OPENAI_API_KEY": llm_server.api_key,
           "PRELABEL_LLM_MODEL": llm_server.model, "PRELABEL_STRUCTURED_OUTPUT": llm_server.structured_output}
    done = predict(tmp_path, llm, redis_url, "-t", "queries.txt", "-o", "out.jsonl", "--progress-every", "2")
    predictions = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(predictions) == len(QUERIES), done.stderr
    progress = re.findall(r"\[predict\] (\d+) done", done.stderr)
    assert progress == ["2", "4", "5"], done.stderr
    with_region = [p for p in predictions if p["result"]]
    summary = re.search(r"done: 5 tasks; (\d+) pre-annotated", done.stderr)
    assert summary and int(summary.group(1)) == len(with_region), done.stderr
    assert done.returncode == (1 if not with_region else 0)
    labels: dict[str, int] = {}
    for p in with_region:
        label = p["result"][0]["value"]["choices"][0]
        labels[label] = labels.get(label, 0) + 1
    for label, count in labels.items():  # the distribution table: label, count, %
        assert re.search(rf"{label}\s*│\s*{count}\s*│\s*{100 * count / len(with_region):.1f}", done.stderr), label
    for p in predictions:
        assert ("raw_output" in p["meta"]) == (p["meta"]["status"] != "ok")


def test_failed_tasks_keep_raw_output_and_are_counted_apart_with_their_reason(tmp_path: Path, redis_url) -> None:
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"text": q}) + "\n" for q in QUERIES[:3]))
    with running_fault_server() as fault:
        fault.set_script(["bad_label"] * 6)  # each task: first answer and the corrective retry
        done = predict(tmp_path, {"OPENAI_BASE_URL": fault.base_url, "PRELABEL_LLM_MODEL": fault.model},
                       redis_url, "-t", "q.jsonl", "-o", "out.jsonl")
    assert done.returncode == 1, "every task failed: non-zero exit"
    assert "done: 3 tasks; 0 pre-annotated; 3 needs_human: label_not_in_set" in done.stderr, done.stderr
    predictions = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for p in predictions:
        raw = p["meta"]["raw_output"]
        assert len(raw) == 2 and all("__not_in_label_set__" in answer and len(answer) <= 1000 for answer in raw)


def test_an_unreachable_llm_is_an_error_with_its_reason(tmp_path: Path, redis_url) -> None:
    (tmp_path / "q.txt").write_text("\n".join(QUERIES[:2]))
    done = predict(tmp_path, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "PRELABEL_LLM_MAX_RETRIES": "0"},
                   redis_url, "-t", "q.txt")
    assert done.returncode == 1
    assert "done: 2 tasks; 0 pre-annotated; 2 error: llm_connection_error" in done.stderr, done.stderr
    assert len(done.stdout.splitlines()) == 2
