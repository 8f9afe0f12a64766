"""LLaMA-Factory YAMLs: mapped, ignored with one warning, or refused; the YAML written beside a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from prelabel.train import llamafactory
from prelabel.train.config import ConfigError, FlywheelConfig, TrainConfig, load_yaml
from prelabel.train.data import load_dataset
from prelabel.train.lora import Prepared
from tests.support.flywheel_data import spam_dataset

LF_RUN = """
### model
model_name_or_path: {model}
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: q_proj,v_proj
### dataset
dataset: prelabel_train
eval_dataset: prelabel_val
dataset_dir: {data}
template: qwen
cutoff_len: 512
overwrite_cache: true
preprocessing_num_workers: 16
val_size: 0.1
### output
output_dir: {out}
logging_steps: 10
save_steps: 100
plot_loss: true
overwrite_output_dir: true
report_to: wandb
### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine_with_restarts
warmup_ratio: 0.1
bf16: true
### eval
eval_strategy: steps
eval_steps: 50
load_best_model_at_end: true
metric_for_best_model: eval_loss
greater_is_better: false
"""


def lf_yaml(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(LF_RUN.format(model=tmp_path / "model", data=tmp_path / "ds", out=tmp_path / "out"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_llamafactory_yaml_is_accepted_and_mapped(tmp_path: Path, caplog) -> None:
    llamafactory._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="prelabel.train.llamafactory"):
        config = load_yaml(lf_yaml(tmp_path), TrainConfig)
        load_yaml(lf_yaml(tmp_path), TrainConfig)  # the same keys again: no second warning
    assert config.precision == "bf16" and config.metric_for_best_model == "loss"
    assert config.lr_scheduler_type == "cosine_with_restarts"
    assert (config.lora_rank, config.lora_target, config.cutoff_len) == (16, ["q_proj", "v_proj"], 512)
    assert config.template == "default" and config.llamafactory_template == "qwen"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    for key in ("overwrite_cache", "plot_loss", "preprocessing_num_workers", "report_to", "val_size"):
        assert key in warnings[0]


@pytest.mark.parametrize("change, message", [
    ({"stage": "dpo"}, "stage: 'dpo' is not supported"),
    ({"finetuning_type": "full"}, "finetuning_type: 'full'"),
    ({"dataset": "alpaca_en_demo"}, "export's train split"),
    ({"template": "alpaca"}, "template: 'alpaca' formats prompts differently"),
    ({"template": "default"}, "template: 'default' formats prompts differently"),
    ({"load_best_model_at_end": False}, "always keeps the best checkpoint"),
    ({"greater_is_better": True}, "greater_is_better: True contradicts metric_for_best_model: loss"),
    ({"fp16": True}, "fp16 and bf16 are both true"),
    ({"packing": True}, "does not pack"),
    ({"warmup_steps": 100}, "use warmup_ratio"),
    ({"lora_rnak": 8}, r"lora_rnak: unknown key \(did you mean 'lora_rank'\?\)"),
])
def test_what_would_change_the_result_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_yaml(lf_yaml(tmp_path, **change), TrainConfig)


def test_own_configs_are_unchanged_and_flywheel_accepts_llamafactory_keys(tmp_path: Path) -> None:
    own = TrainConfig.model_validate({"model_name_or_path": "m", "dataset_dir": ".", "output_dir": ".",
                                      "template": "default"})
    assert own.template == "default" and own.llamafactory_template is None
    flywheel = FlywheelConfig.model_validate({"train": {"model_name_or_path": "m", "fp16": True, "stage": "sft"},
                                              "serve": {"base_url": "http://x/v1"}})
    assert flywheel.train_config(tmp_path, tmp_path / "o").precision == "fp16"


def test_the_llamafactory_run_written_beside_a_run_repeats_it(tmp_path: Path) -> None:
    data = spam_dataset(tmp_path / "ds")
    config = load_yaml(lf_yaml(tmp_path, bf16=None, lr_scheduler_kwargs={"num_cycles": 2}), TrainConfig)
    dataset = load_dataset(data, ("train", "val"))
    folder = llamafactory.write_run(Prepared(config, dataset, None, "fp32", "loss", None))  # type: ignore[arg-type]
    run = yaml.safe_load((folder / "train.yaml").read_text())
    info = json.loads((folder / "dataset_info.json").read_text())
    assert run["stage"] == "sft" and run["finetuning_type"] == "lora" and run["template"] == "qwen"
    assert run["dataset"] == "prelabel_train" and run["eval_dataset"] == "prelabel_val"
    assert Path(run["dataset_dir"]) == folder and set(info) == {"prelabel_train", "prelabel_val"}
    assert run["lr_scheduler_kwargs"] == {"num_cycles": 2}
    assert not run["bf16"] and not run["fp16"] and run["metric_for_best_model"] == "eval_loss"
    # read back by our own LLaMA-Factory reader, the YAML is the same run
    again = TrainConfig.model_validate({**run, "output_dir": str(tmp_path / "out")})
    assert again.fingerprint() == {**config.fingerprint(), "dataset_dir": str(folder)}
    rows = [json.loads(line) for line in (folder / info["prelabel_train"]["file_name"]).read_text().splitlines()]
    assert len(rows) == len(dataset.splits["train"])
    first = dataset.splits["train"][0]
    assert rows[0]["messages"] == first.messages() + [{"role": "assistant", "content": first.output}]


def test_llamafactory_defaults_apply_and_unused_trainer_arguments_are_warned_about(tmp_path: Path, caplog) -> None:
    """LLaMA-Factory's own default dataset_dir (data) applies, and Trainer arguments it passes
    through that prelabel does not use (disable_tqdm, logging_strategy) are ignored with a warning."""
    llamafactory._WARNED.clear()
    path = lf_yaml(tmp_path, dataset_dir=None, disable_tqdm=True, logging_strategy="steps")
    with caplog.at_level(logging.WARNING, logger="prelabel.train.llamafactory"):
        config = load_yaml(path, TrainConfig)
    assert str(config.dataset_dir) == "data"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "Trainer arguments disable_tqdm, logging_strategy" in warning
    with pytest.raises(ConfigError, match=r"not_a_trainer_key: unknown key"):
        load_yaml(lf_yaml(tmp_path, not_a_trainer_key=1), TrainConfig)
