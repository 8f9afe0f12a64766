"""A promotion in the compose deployment changes the project's model and the prompt it gets.

The backend runs as ``docker compose --profile gpu`` configures it: its environment is taken from the
rendered compose file (the real Compose v2 CLI), with the compose host names rewritten to local
ports. The fault server stands in for the vLLM service (no GPU in CI). ``prelabel train promote``
runs with the same environment, as in the trainer container; the candidate was evaluated on a dataset
exported with the compact prompt (what fine-tuned models are trained on). After the promotion the
backend, without a restart, sends the project's next task to the promoted model with the compact
prompt and no few-shot turns; before, it sent the configured model the full prompt.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from prelabel.prediction.predictor import ContextBuilder
from prelabel.settings import Settings
from prelabel.stack.processes import child_env
from prelabel.train.data import load_manifest
from prelabel.train.evaluate import EvalRun, Item
from prelabel.train.report import write_report
from tests.servers import dev_bin
from tests.support.backend_proc import BackendClient, start_backend, unique_text
from tests.support.compose import ROOT, deployment, render
from tests.support.fault_llm import FaultServer
from tests.support.flywheel_data import spam_dataset

CONFIG = ('<View><Text name="text" value="$text"/>'
          '<Choices name="intent" toName="text"><Choice value="book"/><Choice value="cancel"/>'
          '<Choice value="other"/></Choices></View>')
PROJECT = "5"


def compose_env(service: str, fault: FaultServer, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment compose gives ``service`` in the gpu profile, host names mapped to local ports."""
    rendered = render(deployment(tmp_path / "deployment"), "gpu")
    env = {key: str(value) for key, value in rendered["services"][service]["environment"].items()}
    hosts = {"http://vllm:8000": fault.url, "http://vllm-reviewer:8000": fault.url, "redis://redis:6379/0": redis_url,
             "http://label-studio:8080": "http://127.0.0.1:9"}
    for key, value in env.items():
        for compose_host, local in hosts.items():
            value = value.replace(compose_host, local)
        env[key] = value
    assert env["OPENAI_BASE_URL"] == fault.base_url and env["REDIS_URL"] == redis_url  # wired to vLLM, Redis
    assert env["PRELABEL_DATA_DIR"] == "/data"
    env["PRELABEL_DATA_DIR"] = str(tmp_path / "data")  # the prelabel-data volume
    env["PRELABEL_TRAIN_CONFIG"] = str(ROOT / "deploy" / "flywheel.yaml")
    return env


def eval_reports(tmp_path: Path) -> tuple[Path, Path]:
    """Reports of the candidate (fine-tuned on the compact prompt) and of the current model on one split."""
    data = spam_dataset(tmp_path / "dataset")
    manifest_path = data / "manifest.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "prompt_style": "compact"}))
    manifest = load_manifest(data)
    gold = ["junk", "legit", "junk", "legit", "junk", "legit"]
    folders = []
    for name, answers in (("candidate", gold), ("current", ["junk"] * 6)):
        items = [Item(i, f"text {i}", g, a, a, True, a == g, 0.9, 0.1, 10, 2)
                 for i, (g, a) in enumerate(zip(gold, answers))]
        run = EvalRun(items, manifest, data / "test.jsonl", "sha-of-test", 1.0,
                      {"engine": "transformers", "model": name}, "batch")
        write_report(run, tmp_path / name)
        folders.append(tmp_path / name)
    return folders[0], folders[1]


def prompts(style: str):
    return ContextBuilder(Settings(_env_file=None, prompt_style=style)).context(CONFIG).prompt


def test_promotion_under_compose_switches_model_and_prompt(fault: FaultServer, redis_url: str,
                                                           tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the evaluation report draws its figures")
    env = compose_env("backend", fault, redis_url, tmp_path)
    auth = (env["PRELABEL_BASIC_AUTH_USER"], env["PRELABEL_BASIC_AUTH_PASSWORD"])
    backend = start_backend(tmp_path, env, auth=auth)
    try:
        client = BackendClient(backend, auth=auth)
        before = client.predict_ok([{"id": 1, "data": {"text": unique_text("compose before")}}],
                                   label_config=CONFIG, project=PROJECT)[0]
        asked = httpx.get(f"{fault.url}/_last_request", timeout=5).json()
        assert before["model_version"] == f"{env['PRELABEL_LLM_MODEL']}@{prompts('full').version}"
        assert asked["model"] == "pre-annotator" and asked["messages"][0]["content"] == prompts("full").system

        candidate, current = eval_reports(tmp_path)
        worker_env = compose_env("trainer", fault, redis_url, tmp_path)
        promote = subprocess.run(
            [dev_bin("prelabel"), "train", "promote", "--candidate", str(candidate), "--current", str(current),
             "--model", "prelabel-5-r1", "--base-url", worker_env["OPENAI_BASE_URL"], "--project", PROJECT],
            env=child_env(None, worker_env), capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert promote.returncode == 0, promote.stderr
        status = subprocess.run([dev_bin("prelabel"), "train", "status", PROJECT], env=child_env(None, worker_env),
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        record = json.loads(status.stdout)["active_model"]
        assert (record["model"], record["prompt_style"], record["fewshot_k"]) == ("prelabel-5-r1", "compact", 0)
        assert (Path(worker_env["PRELABEL_DATA_DIR"]) / "train" / "decisions.jsonl").is_file()  # on the volume

        after = client.predict_ok([{"id": 2, "data": {"text": unique_text("compose after")}}],
                                  label_config=CONFIG, project=PROJECT)[0]
        asked = httpx.get(f"{fault.url}/_last_request", timeout=5).json()
        assert after["model_version"] == f"prelabel-5-r1@{prompts('compact').version}"
        assert asked["model"] == "prelabel-5-r1"
        assert [m["role"] for m in asked["messages"]] == ["system", "user"]  # no few-shot turns
        assert asked["messages"][0]["content"] == prompts("compact").system
    finally:
        backend.process.stop()
