"""Publishing an adapter for vLLM's filesystem LoRA resolver, and a base model named by its Hugging
Face id resolved from the local cache (the one the vLLM service filled) without any download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prelabel.train.adapter_serving import AdapterError, publish_adapter
from prelabel.train.models import ModelError, resolve_model


def _adapter(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "marker": marker}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights-" + marker.encode())
    (folder / "checkpoint-2").mkdir()  # training leftovers stay in the run folder
    return folder


def test_publish_replaces_the_served_folder_whole(tmp_path: Path) -> None:
    resolver = tmp_path / "adapters"
    first = publish_adapter(_adapter(tmp_path / "run1", "one"), resolver, "prelabel-3-r1")
    assert first == resolver / "prelabel-3-r1" and not (first / "checkpoint-2").exists()
    again = publish_adapter(_adapter(tmp_path / "run2", "two"), resolver, "prelabel-3-r1")
    assert (again / "adapter_model.safetensors").read_bytes() == b"weights-two"
    assert sorted(p.name for p in resolver.iterdir()) == ["prelabel-3-r1"]  # no staging folder left


def test_publish_refuses_what_vllm_could_not_load(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        publish_adapter(tmp_path, tmp_path / "adapters", "x")
    with pytest.raises(AdapterError, match="one folder name"):
        publish_adapter(_adapter(tmp_path / "run", "one"), tmp_path / "adapters", "../escape")


def test_a_hub_id_resolves_to_its_cached_snapshot_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("Qwen/Qwen2.5-7B-Instruct")  # not in the cache: an error, never a download
    repo = tmp_path / "models--Qwen--Qwen2.5-7B-Instruct"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").path == snapshot.resolve()
