"""`prelabel export --augment --augment-method llm`: paraphrases from the real llama.cpp server.

SmolLM2 is tiny: this checks the wiring (the configured endpoint is asked, answers are validated,
kept paraphrases are marked synthetic, train only, counted; the rest counted as a shortfall),
never paraphrase quality.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from prelabel.stack.processes import child_env
from tests.servers import dev_bin

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).resolve().parents[2] / "label_config" / "templates" / "search_intent.xml"


def test_llm_paraphrases_are_marked_synthetic_train_only_and_counted(tmp_path: Path, llm_server) -> None:
    tasks = []
    for i in range(40):
        label, text = ("navigational", f"open my bank account page number {i}") if i < 30 else (
            "transactional", f"buy a new phone case for model {i}")
        tasks.append({"id": i + 1, "data": {"text": text}, "predictions": [],
                      "annotations": [{"id": i + 1, "completed_by": 1, "was_cancelled": False, "result": [
                          {"from_name": "intent", "to_name": "text", "type": "choices",
                           "value": {"choices": [label]}}]}]})
    (tmp_path / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    scrub = {k: None for k in os.environ if k.startswith("PRELABEL_") or k.startswith("OPENAI_")}
    env = child_env(None, {**scrub, "OPENAI_BASE_URL": llm_server.base_url, "OPENAI_API_KEY": llm_server.api_key,
                           "PRELABEL_LLM_MODEL": llm_server.model, "PRELABEL_LLM_TEMPERATURE": "0.7",
                           "PRELABEL_STRUCTURED_OUTPUT": llm_server.structured_output})
    done = subprocess.run([dev_bin("prelabel"), "export", "--from-file", "tasks.json", "-c", str(CONFIG), "--out", "ds",
                           "--near-threshold", "0", "--rare-classes", "report", "--augment", "--augment-below", "12",
                           "--augment-method", "llm"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "ds"
    manifest = json.loads((out / "manifest.json").read_text())
    human_train = manifest["splits"]["train"]["label_distribution"]["transactional"]
    needed = 12 - human_train
    made = manifest["counts"].get("synthetic", 0)
    assert made + manifest["counts"].get("augment_shortfall", 0) == needed
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    synthetic = [r for r in train if r.get("synthetic")]
    # records carry the backend's prompt and its JSON answer (one prompt for training, eval and serving)
    assert len(synthetic) == made and all(json.loads(r["output"]) == {"intent": "transactional"} for r in synthetic)
    assert made > 0, "the LLM produced no usable paraphrase at all"
    originals = {r["data"]["text"].lower() for r in train if not r.get("synthetic")}
    assert not originals & {r["data"]["text"].lower() for r in synthetic}
    assert all(r["data"]["text"] in r["instruction"] for r in synthetic)
    for split in ("val", "test"):
        assert not any(json.loads(line).get("synthetic") for line in (out / f"{split}.jsonl").read_text().splitlines())
