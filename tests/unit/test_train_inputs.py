"""Bad input to training fails with a clear error before any model is loaded; the answer-only loss mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prelabel.train.config import ConfigError, FlywheelConfig, TrainConfig, load_yaml
from prelabel.train.data import IGNORE_INDEX, DatasetError, Record, load_dataset
from tests.support.flywheel_data import classification_records, spam_dataset, write_dataset


def _config(tmp_path: Path, **overrides) -> dict:
    return {"model_name_or_path": str(tmp_path / "model"), "dataset_dir": str(tmp_path / "ds"),
            "output_dir": str(tmp_path / "out"), **overrides}


def _yaml(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_config_typo_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lora_rnak: unknown key \(did you mean 'lora_rank'\?\)"):
        load_yaml(_yaml(tmp_path, _config(tmp_path, lora_rnak=8)), TrainConfig)


def test_config_defaults_and_csv_targets(tmp_path: Path) -> None:
    config = load_yaml(_yaml(tmp_path, _config(tmp_path, lora_target="q_proj, k_proj")), TrainConfig)
    assert config.lora_target == ["q_proj", "k_proj"]
    assert (config.lora_rank, config.lora_alpha, config.lora_dropout, config.learning_rate) == (8, 16, 0.05, 2e-4)
    assert config.lr_scheduler_type == "cosine"
    assert TrainConfig.model_validate(_config(tmp_path)).lora_target == ["q_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"save_steps": 30, "eval_steps": 20}, "save_steps .* multiple of eval_steps"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"precision": "fp8"}, "precision"),
    ({"quantization_bit": 3}, "quantization_bit"),
])
def test_config_values_are_checked(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_yaml(_yaml(tmp_path, _config(tmp_path, **overrides)), TrainConfig)


def test_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_yaml(tmp_path / "nope.yaml", TrainConfig)
    (tmp_path / "bad.yaml").write_text("a: [1, 2", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml", TrainConfig)
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(_yaml(tmp_path, ["x"]), TrainConfig)


def test_flywheel_config_checks_nested_keys(tmp_path: Path) -> None:
    base = {"train": {"model_name_or_path": "m"}, "serve": {"base_url": "http://x/v1"}}
    assert load_yaml(_yaml(tmp_path, base), FlywheelConfig).promotion.margin == 0.01
    with pytest.raises(ConfigError, match=r"eval.max_new_token: unknown key \(did you mean 'max_new_tokens'\?\)"):
        load_yaml(_yaml(tmp_path, {**base, "eval": {"max_new_token": 8}}), FlywheelConfig)
    with pytest.raises(ConfigError, match="set by the pipeline"):
        load_yaml(_yaml(tmp_path, {**base, "train": {"model_name_or_path": "m", "output_dir": "x"}}), FlywheelConfig)
    with pytest.raises(ConfigError, match="lora_rnak"):
        load_yaml(_yaml(tmp_path, {**base, "train": {"model_name_or_path": "m", "lora_rnak": 4}}), FlywheelConfig)


def test_dataset_loads_and_builds_messages(tmp_path: Path) -> None:
    dataset = load_dataset(spam_dataset(tmp_path / "ds"))
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [24, 6, 6]
    assert dataset.manifest.labels == ["junk", "legit"]
    record = Record("Classify.", "hello", "legit", system="Be terse.")
    assert record.messages() == [{"role": "system", "content": "Be terse."},
                                 {"role": "user", "content": "Classify.\n\nhello"}]
    assert Record("Classify: hi", "", "legit").messages() == [{"role": "user", "content": "Classify: hi"}]


def _rewrite(root: Path, split: str, lines: list[str]) -> None:
    (root / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"][split] = {"path": f"{split}.jsonl"}  # no count / sha256 to check
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_dataset_errors_say_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        load_dataset(tmp_path / "empty")
    root = spam_dataset(tmp_path / "ds")
    (root / "val.jsonl").unlink()
    with pytest.raises(DatasetError, match="split file is missing: .*val.jsonl"):
        load_dataset(root)

    root = spam_dataset(tmp_path / "ds2")
    _rewrite(root, "train", [json.dumps({"prompt": "x", "completion": "junk"})])
    missing = r"train.jsonl:1: missing column\(s\) instruction, input, output.*found completion, prompt"
    with pytest.raises(DatasetError, match=missing):
        load_dataset(root)
    _rewrite(root, "train", [json.dumps({"instruction": "x", "input": 3, "output": "junk"})])
    with pytest.raises(DatasetError, match="column 'input' must be a string"):
        load_dataset(root)
    _rewrite(root, "train", [json.dumps({"instruction": "x", "input": "y", "output": "maybe"})])
    with pytest.raises(DatasetError, match="'maybe' is not one of the manifest labels"):
        load_dataset(root)
    _rewrite(root, "train", ["{not json"])
    with pytest.raises(DatasetError, match="train.jsonl:1: not JSON"):
        load_dataset(root)


def test_dataset_must_match_its_manifest(tmp_path: Path) -> None:
    root = spam_dataset(tmp_path / "ds")
    with (root / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"instruction": "x", "input": "y", "output": "junk"}) + "\n")
    with pytest.raises(DatasetError, match="25 records but manifest.json says 24"):
        load_dataset(root)
    root = spam_dataset(tmp_path / "ds2")
    text = (root / "test.jsonl").read_text().replace("legit", "junk")
    (root / "test.jsonl").write_text(text)
    with pytest.raises(DatasetError, match="changed after export"):
        load_dataset(root)


def test_manifest_task_and_extraction_answers(tmp_path: Path) -> None:
    rows = [{"instruction": "x", "input": "y", "output": "not json"}]
    write_dataset(tmp_path / "ex", {"train": rows, "val": rows, "test": rows}, task_type="extraction", labels=[])
    with pytest.raises(DatasetError, match="JSON object string"):
        load_dataset(tmp_path / "ex")
    write_dataset(tmp_path / "bad", {"train": rows}, task_type="summary", labels=[])
    with pytest.raises(DatasetError, match="task_type must be one of"):
        load_dataset(tmp_path / "bad", ("train",))


# --- needs the train extra ------------------------------------------------------------------

def test_prepare_fails_before_loading_anything(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs the train extra")
    from prelabel.train.lora import prepare
    from prelabel.train.models import ModelError

    spam_dataset(tmp_path / "ds")
    with pytest.raises(ModelError, match="model path does not exist"):
        prepare(TrainConfig.model_validate(_config(tmp_path)))
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        prepare(TrainConfig.model_validate(_config(tmp_path)))
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="bf16 needs a CUDA GPU|QLoRA"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CPU-only check")
        prepare(TrainConfig.model_validate(_config(tmp_path, precision="bf16")))
    with pytest.raises(DatasetError, match="does not exist"):
        prepare(TrainConfig.model_validate(_config(tmp_path, dataset_dir=str(tmp_path / "nope"))))
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"lora_rank": 4}))
    with pytest.raises(ConfigError, match="different config .*lora_rank"):
        prepare(TrainConfig.model_validate(_config(tmp_path)))


def test_cli_reports_bad_config_without_training(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs the train extra")
    from typer.testing import CliRunner

    from prelabel.cli import app

    path = _yaml(tmp_path, _config(tmp_path, lerning_rate=1e-4))
    result = CliRunner().invoke(app, ["train", "lora", "--config", str(path)])
    assert result.exit_code == 2
    assert "lerning_rate: unknown key (did you mean 'learning_rate'?)" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_only_answer_tokens_carry_loss(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs the train extra")
    from prelabel.train.data import tokenize
    from prelabel.train.models import load_tokenizer, resolve_model
    from tests.support.tiny_model import build_tiny_model

    records = [Record(**r) for r in classification_records(4)]
    build_tiny_model(tmp_path / "tiny", [r.instruction + " " + r.input + " " + r.output for r in records], layers=1)
    tokenizer = load_tokenizer(resolve_model(tmp_path / "tiny"))
    item = tokenize(records[0], tokenizer, cutoff_len=64)
    answer = [label for label in item.labels if label != IGNORE_INDEX]
    assert tokenizer.decode(answer[:-1]) == records[0].output and answer[-1] == tokenizer.eos_token_id
    assert item.labels[: len(item.labels) - len(answer)] == [IGNORE_INDEX] * (len(item.labels) - len(answer))
    short = tokenize(records[0], tokenizer, cutoff_len=6)  # the prompt is cut from the left
    assert len(short.input_ids) == 6 and short.input_ids[-len(answer):] == answer
