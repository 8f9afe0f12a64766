"""The flywheel's schedule is picked from the data and the device (no training run here)."""

from __future__ import annotations

import math

import pytest

from prelabel.train.config import TrainConfig
from prelabel.train.schedule import CPU_BUDGET_S, pick_schedule, scheduled


def test_a_few_hundred_labels_train_in_minutes_on_cpu():
    s = pick_schedule(200, 40, "cpu")
    assert s.batch == 8 and s.precision == "fp32"
    assert s.steps == math.ceil(2 * 200 / 8)  # two epochs fit the budget
    assert s.eval_samples == 32 and s.eval_steps == math.ceil(s.steps / 3)
    assert s.estimate_s <= 15 * 60 and "min" in s.describe()


def test_many_labels_on_cpu_are_capped_by_the_time_budget():
    small, big = pick_schedule(2_000, 400, "cpu"), pick_schedule(20_000, 4_000, "cpu")
    assert small.steps == big.steps < math.ceil(2 * 2_000 / 8)
    assert big.estimate_s <= CPU_BUDGET_S + 120  # training within budget, 4 evaluations of 32 records


@pytest.mark.parametrize(("bf16", "precision"), [(True, "bf16"), (False, "fp16")])
def test_cuda_gets_gpu_sized_batches_one_epoch(bf16, precision):
    s = pick_schedule(13_000, 1_300, "cuda", bf16=bf16)
    assert (s.batch, s.steps, s.precision) == (64, math.ceil(13_000 / 64), precision)
    assert s.eval_samples == 256 and s.eval_steps == math.ceil(s.steps / 5)


def test_explicit_yaml_keys_win_and_the_result_is_a_valid_train_config():
    s = pick_schedule(300, 60, "cpu")
    local = scheduled({"eval_steps": 20, "save_steps": 20, "num_train_epochs": 2}, s, explicit=False)
    assert local["max_steps"] == s.steps and local["eval_steps"] == s.eval_steps == local["save_steps"]
    user = scheduled({"eval_steps": 7, "save_steps": 14, "num_train_epochs": 3}, s, explicit=True)
    assert (user["eval_steps"], user["save_steps"], user["num_train_epochs"]) == (7, 14, 3)
    assert "max_steps" not in user and user["max_eval_samples"] == 32
    for train in (local, user):
        TrainConfig.model_validate({**train, "model_name_or_path": "m", "dataset_dir": ".", "output_dir": "."})


def test_the_flywheel_announces_and_applies_the_schedule_before_training(tmp_path, embedded_redis):
    """pipeline._with_schedule: sized from the exported splits, stored in the run's status."""
    from rich.console import Console

    from prelabel.train.config import local_flywheel_config
    from prelabel.train.pipeline import Status, _with_schedule
    from prelabel.train.schedule import detect_device

    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.jsonl").write_text('{"x": 1}\n' * 240)
    (data / "val.jsonl").write_text('{"x": 1}\n' * 60)
    server = embedded_redis
    console = Console(record=True, width=200)
    config = _with_schedule(local_flywheel_config(tmp_path / "base.gguf"), data, explicit=False,
                            status=Status(server, "9", console), console=console)
    device, bf16 = detect_device()
    expected = pick_schedule(240, 60, device, bf16)
    assert config.train["max_steps"] == expected.steps and config.train["max_eval_samples"] == expected.eval_samples
    assert server.hget("prelabel:train:9", "schedule").decode() == expected.describe()
    assert f"schedule: {expected.describe()}" in console.export_text()
