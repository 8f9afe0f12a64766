"""The trained adapter is the best checkpoint by the validation metric, not the last one.

Real transformers/peft training of a tiny local model; after step 4 a callback wrecks the LoRA
weights (a fault injected into the run), so the evaluations at steps 6 and 8 are far worse than
the earlier ones and the best checkpoint is an earlier one than the last. The adapter saved as the
run's result must hold the best checkpoint's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")
pytest.importorskip("peft", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")
safetensors = pytest.importorskip("safetensors.torch")


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return safetensors.load_file(str(directory / "adapter_model.safetensors"))


def test_the_adapter_is_the_best_checkpoint_not_the_last(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from prelabel.train.config import TrainConfig
    from prelabel.train.lora import train
    from tests.support.flywheel_data import INSTRUCTION, classification_records, spam_dataset
    from tests.support.tiny_model import build_tiny_model

    data = spam_dataset(tmp_path / "dataset")
    texts = [INSTRUCTION] + [r["input"] + " " + r["output"] for r in classification_records(60)]
    model_dir = build_tiny_model(tmp_path / "tiny", texts, layers=1)

    class WreckAfterStep4(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step > 4:
                generator = torch.Generator().manual_seed(state.global_step)
                with torch.no_grad():
                    for parameter in model.parameters():
                        if parameter.requires_grad:  # the LoRA weights
                            parameter.add_(torch.randn(parameter.shape, generator=generator) * 5)

    out = tmp_path / "lora"
    config = TrainConfig.model_validate({
        "model_name_or_path": str(model_dir), "dataset_dir": str(data), "output_dir": str(out),
        "template": "default", "learning_rate": 2e-3, "max_steps": 8, "eval_steps": 2, "save_steps": 2,
        "save_total_limit": 8, "logging_steps": 1, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 6, "cutoff_len": 96, "warmup_ratio": 0.0, "metric_for_best_model": "loss"})
    result = train(config, callbacks=[WreckAfterStep4()])

    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals: dict[int, float] = {}
    for entry in log:  # the evaluations during training (the final one, after loading the best, is logged last)
        if "eval_loss" in entry and entry["step"] > 0:
            evals.setdefault(entry["step"], entry["eval_loss"])
    assert set(evals) == {2, 4, 6, 8}
    best_step = min(evals, key=evals.get)
    assert best_step in (2, 4) and evals[8] > evals[best_step], evals
    assert result.best_checkpoint == str(out / f"checkpoint-{best_step}")
    assert result.final_eval["eval_loss"] == pytest.approx(evals[best_step], rel=1e-4), "the best model is loaded"
    saved, best, last = _weights(out / "adapter"), _weights(out / f"checkpoint-{best_step}"), \
        _weights(out / "checkpoint-8")
    assert saved.keys() == best.keys()
    assert all(torch.equal(saved[k], best[k]) for k in saved), "the adapter is the best checkpoint"
    assert not all(torch.equal(saved[k], last[k]) for k in saved), "and not the last one"
