"""The flywheel of the compose deployment: the promoted model is a LoRA adapter served by vLLM.

With ``serve.adapter_dir`` the run trains (a tiny model on CPU here: the model is not the point),
writes the adapter to ``<adapter_dir>/<served name>/`` (the folder vLLM's filesystem resolver loads
adapters from), evaluates the candidate *through the served endpoint* under that name and the
current model, both with the backend's own code, and promotes: the record names the adapter, the
server and the compact prompt it was trained on. The fault server stands in for vLLM (no GPU here);
the current model fails on it (bad labels), so the comparison is decided by that fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch", reason="needs the train extra (torch)")
pytest.importorskip("peft", reason="needs the train extra (peft)")

from prelabel.export.pipeline import ExportOptions, export_tasks
from prelabel.settings import Settings
from tests.support.fault_llm import FaultServer
from tests.support.intent_data import LABELS, labeled_tasks, queries
from tests.support.tiny_model import build_tiny_model

CONFIG = ('<View><Text name="text" value="$text"/><Choices name="intent" toName="text">'
          + "".join(f'<Choice value="{label}"/>' for label in LABELS) + "</Choices></View>")
TRAIN = {"template": "default", "lora_rank": 4, "lora_alpha": 8, "learning_rate": 2e-3, "max_steps": 2,
         "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "cutoff_len": 256,
         "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "warmup_ratio": 0.0}


def test_flywheel_serves_the_adapter_on_the_running_vllm(fault: FaultServer, redis_url: str, tmp_path: Path) -> None:
    import redis

    from prelabel.contract import active_model_key, train_lock_key, train_status_key
    from prelabel.studio.tenancy import configured
    from prelabel.train.pipeline import read_status, run_flywheel
    from prelabel.train.promote import active_model

    tasks = [{"id": i + 1, **task} for i, task in enumerate(labeled_tasks(queries(12)))]
    data = export_tasks(tasks, CONFIG, tmp_path / "dataset", ExportOptions(min_per_class=1))
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["prompt_style"] == "compact" and manifest["label_config"] == CONFIG
    model = build_tiny_model(tmp_path / "tiny", [row["text"] for row in queries(12)] + list(LABELS))
    adapters = tmp_path / "adapters"
    config = tmp_path / "flywheel.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"model_name_or_path": str(model), **TRAIN},
        "eval": {"concurrency": 2},
        "promotion": {"margin": 0.0, "max_class_drop": 1.0},
        "serve": {"base_url": fault.base_url, "adapter_dir": str(adapters)},
    }))
    settings = Settings(_env_file=None, llm_base_urls=[fault.base_url], llm_model="pre-annotator", llm_max_retries=0,
                        redis_url=redis_url, data_dir=tmp_path / "data")
    client = redis.Redis.from_url(redis_url)
    project = configured(settings, 31)  # what `prelabel train flywheel --project 31` runs
    client.delete(active_model_key(project), train_status_key(project), train_lock_key(project))
    test_items = manifest["splits"]["test"]["count"]
    fault.reset()
    # the candidate answers (one call per test task), then the current model fails on every call
    fault.set_script(["ok"] * test_items + ["bad_label"] * (4 * test_items))
    try:
        result = run_flywheel("31", config_path=str(config), dataset_dir=str(data), run_id="r1", settings=settings)
    finally:
        fault.reset()

    status = read_status(client, project)
    assert status["state"] == "finished" and "merge_started" not in status  # an adapter: nothing merged
    served = adapters / "prelabel-31-r1"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in served.iterdir()}
    assert status["adapter"] == str(served)
    candidate = json.loads((Path(result["run_dir"]) / "eval-candidate" / "report.json").read_text())
    assert candidate["engine"]["engine"] == "backend"  # the served name through the backend's own client
    assert candidate["engine"]["model"] == "prelabel-31-r1" and candidate["invalid_rate"] == 0.0
    assert result["promoted"], result["reasons"]
    record = active_model(client, project)
    assert record["model"] == "prelabel-31-r1" and record["base_url"] == fault.base_url
    assert (record["served_by"], record["adapter"]) == ("vllm-lora", str(served))
    assert (record["prompt_style"], record["fewshot_k"]) == ("compact", 0)
    client.delete(active_model_key(project))
