"""The flywheel's training schedule, picked from the data and the machine.

A fixed schedule is wrong at both ends: five epochs with an evaluation of the whole validation
split every 50 steps costs tens of minutes for a few hundred labels on 2 CPU cores, and batch 4
wastes a GPU. So the steps, the evaluation interval and the evaluation subset are sized from
the number of training records and the device:

* CPU: batch 8, at most 2 epochs and at most ``CPU_BUDGET_S`` of estimated training, evaluated
  3 times on at most 32 validation records (fp32);
* CUDA: batch 64, 1 epoch, bf16 where the GPU supports it (else fp16), evaluated 5 times on at
  most 256 validation records.

The time estimate (``Schedule.estimate_s``) is printed before training starts. Keys the flywheel
YAML sets explicitly win over the picked ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Device = Literal["cpu", "cuda"]

# Seconds per record, measured on SmolLM2-135M, batch 8, 2 CPU cores, with the search-intent
# template's compact prompt (~300 tokens, ~275 of them the system message a batch shares and runs
# once: train/shared_prefix.py; 35 steps in ~120 s): a train step's forward + backward per record,
# and an evaluation's forward pass per record.
TRAIN_S_PER_RECORD = {"cpu": 0.45, "cuda": 0.004}
EVAL_S_PER_RECORD = {"cpu": 0.15, "cuda": 0.01}
CPU_BUDGET_S = 10 * 60


@dataclass(frozen=True)
class Schedule:
    device: Device
    batch: int
    steps: int
    eval_steps: int
    eval_samples: int
    precision: str
    estimate_s: float

    def train_keys(self) -> dict[str, Any]:
        """The TrainConfig fields this schedule sets."""
        return {"per_device_train_batch_size": self.batch, "max_steps": self.steps, "eval_steps": self.eval_steps,
                "save_steps": self.eval_steps, "max_eval_samples": self.eval_samples, "precision": self.precision,
                "logging_steps": max(1, min(10, self.eval_steps))}

    def describe(self) -> str:
        minutes = self.estimate_s / 60
        return (f"{self.device}: {self.steps} steps of batch {self.batch} ({self.precision}), evaluated every "
                f"{self.eval_steps} steps on {self.eval_samples} records; about {minutes:.0f} min")


def pick_schedule(n_train: int, n_val: int, device: Device, bf16: bool = False) -> Schedule:
    """The schedule for ``n_train`` training and ``n_val`` validation records on ``device``."""
    if n_train < 1:
        raise ValueError("no training records")
    if device == "cuda":
        batch, epochs, evals, eval_cap = 64, 1.0, 5, 256
        precision = "bf16" if bf16 else "fp16"
        steps = max(1, math.ceil(epochs * n_train / batch))
    else:
        batch, epochs, evals, eval_cap = 8, 2.0, 3, 32
        precision = "fp32"
        budget_steps = max(1, int(CPU_BUDGET_S / (batch * TRAIN_S_PER_RECORD["cpu"])))
        steps = max(1, min(math.ceil(epochs * n_train / batch), budget_steps))
    eval_steps = max(1, math.ceil(steps / evals))
    eval_samples = max(1, min(n_val, eval_cap))
    n_evals = math.ceil(steps / eval_steps) + 1  # and once before the first step
    estimate = (steps * batch * TRAIN_S_PER_RECORD[device] + n_evals * eval_samples * EVAL_S_PER_RECORD[device])
    return Schedule(device, batch, steps, eval_steps, eval_samples, precision, round(estimate, 1))


def detect_device() -> tuple[Device, bool]:
    """(device, bf16 supported) of this machine."""
    import torch

    if torch.cuda.is_available():
        return "cuda", bool(torch.cuda.is_bf16_supported())
    return "cpu", False


def scheduled(train: dict[str, Any], schedule: Schedule, explicit: bool) -> dict[str, Any]:
    """The flywheel's ``train`` keys with the schedule's: over the local defaults, or (``explicit``,
    a user's YAML) only where it set none; evaluation and saving intervals go together."""
    picked = schedule.train_keys()
    if not explicit:
        return {**train, **picked}
    if {"eval_steps", "save_steps"} & train.keys():
        picked = {k: v for k, v in picked.items() if k not in ("eval_steps", "save_steps")}
    if {"max_steps", "num_train_epochs"} & train.keys():
        picked.pop("max_steps")
    return {**picked, **train}


def count_records(path: Path) -> int:
    """Records (non-empty lines) of an exported JSONL split; 0 when it does not exist."""
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
