"""LoRA / QLoRA fine-tuning with peft + transformers' Trainer on an exported dataset.

* Loss only on the answer tokens (prompt labels are masked).
* Checkpoints every ``save_steps``; the best one by a task metric is kept and loaded at the end.
  The metric needs no generation: under greedy decoding a model produces exactly the gold
  answer (EOS included) iff, with the gold prefix fed in, its arg-max token is right at every
  answer position. So ``accuracy`` / ``exact_match`` on the validation split come from the same
  forward pass that gives the loss, and equal what greedy generation would score. Ties (common
  on small validation sets) are broken by the share of answer tokens predicted right:
  ``selection_score = accuracy + answer_token_accuracy / 1000``.
* Progress on the console (rich) and every logged metric in ``train_log.jsonl``.
* An interrupted run started again with the same config resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.train.config import ConfigError, TrainConfig
from prelabel.train.data import IGNORE_INDEX, Dataset, load_dataset, tokenize
from prelabel.train.llamafactory import write_run as write_llamafactory_run
from prelabel.train.models import (
    ModelRef,
    check_quantization,
    load_model,
    load_tokenizer,
    resolve_model,
    resolve_precision,
)

log = logging.getLogger(__name__)

RECORD_NAME = "prelabel_train.json"
RUN_CONFIG = "run_config.json"
LOG_NAME = "train_log.jsonl"
SELECTION = "selection_score"


@dataclass
class TrainResult:
    adapter_dir: Path
    best_checkpoint: str | None
    best_metric: float | None
    metric: str
    initial_eval: dict[str, float]
    final_eval: dict[str, float]
    global_step: int
    resumed_from: str | None
    record: dict[str, Any] = field(repr=False)


@dataclass
class Prepared:
    """Everything checked and resolved before a model is loaded."""

    config: TrainConfig
    dataset: Dataset
    ref: ModelRef
    precision: str
    metric: str
    resume: str | None


def task_metric(config: TrainConfig, task_type: str) -> str:
    if config.metric_for_best_model != "auto":
        return config.metric_for_best_model
    return "accuracy" if task_type in ("classification", "rating") else "exact_match"


def prepare(config: TrainConfig) -> Prepared:
    """Validate dataset, model path, hardware options and resume state; load nothing heavy."""
    dataset = load_dataset(config.dataset_dir, ("train", "val"))
    ref = resolve_model(config.model_name_or_path)
    check_quantization(config.quantization_bit, ref)
    precision = resolve_precision(config.precision)
    return Prepared(config, dataset, ref, precision, task_metric(config, dataset.manifest.task_type),
                    _resume_point(config))


def _resume_point(config: TrainConfig) -> str | None:
    """The checkpoint to resume from; refuses to mix two different runs in one output_dir."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.output_dir)
    saved = out / RUN_CONFIG
    if saved.is_file():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if previous != config.fingerprint():
            changed = sorted(k for k in set(previous) | set(config.fingerprint())
                             if previous.get(k) != config.fingerprint().get(k))
            raise ConfigError(
                f"{out} holds a run with a different config (changed: {', '.join(changed)}); "
                "use a new output_dir"
            )
    choice = config.resume_from_checkpoint
    if choice == "none":
        return None
    if choice == "auto":
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(choice).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {choice} is not a checkpoint directory")
    return choice


def exact_match_metrics(metric: str) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics``: the share of examples whose every answer token is the arg-max, the
    share of answer tokens that are, and the checkpoint selection score made of both."""
    import numpy as np

    def compute(prediction: Any) -> dict[str, float]:
        preds, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        width = min(preds.shape[1], labels.shape[1])
        preds, labels = preds[:, : width - 1], labels[:, 1:width]  # logits at t predict token t+1
        mask = labels != IGNORE_INDEX
        hits = (preds == labels) & mask
        correct = (hits | ~mask).all(axis=1) & mask.any(axis=1)
        exact = float(correct.mean()) if len(correct) else 0.0
        tokens = float(hits.sum() / mask.sum()) if mask.any() else 0.0
        return {metric: exact, "answer_token_accuracy": tokens, SELECTION: exact + tokens / 1000}

    return compute


def argmax_logits(logits: Any, labels: Any) -> Any:
    """Keep only the arg-max ids, not the full vocabulary logits, between eval batches (the
    shared-prefix pass hands over ids already)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1) if logits.is_floating_point() else logits


class _Reporter:
    """Console progress and JSONL metric log, as a Trainer callback."""

    def __init__(self, log_path: Path, console: Any | None) -> None:
        from transformers import TrainerCallback

        self.log_path = log_path
        self.console = console
        self.progress: Any = None
        self.task: Any = None
        self.history: list[dict[str, Any]] = []
        reporter = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                reporter.start(state.max_steps, state.global_step)

            def on_step_end(self, args, state, control, **kwargs):
                reporter.advance(state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                reporter.record(state.global_step, state.epoch, logs or {})

            def on_train_end(self, args, state, control, **kwargs):
                reporter.stop()

        self.callback = Callback()

    def start(self, total: int, done: int) -> None:
        if self.console is None:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def record(self, step: int, epoch: float | None, logs: dict[str, Any]) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "step": step,
                 "epoch": round(epoch, 4) if epoch is not None else None, **logs}
        self.history.append(entry)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        text = " ".join(f"{k}={_fmt(v)}" for k, v in logs.items())
        if self.console is not None:
            self.console.log(f"step {step}: {text}")
        else:
            log.info("step %s: %s", step, text)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def train(
    config: TrainConfig, *, console: Any | None = None, callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run (or resume) one LoRA training; returns where the best adapter was saved."""
    prepared = prepare(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_CONFIG).write_text(json.dumps(config.fingerprint(), indent=2), encoding="utf-8")
    write_llamafactory_run(prepared)  # the same run, repeatable with llamafactory-cli
    started = time.time()

    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, set_seed

    from prelabel.train.shared_prefix import SharedPrefixTrainer

    set_seed(config.seed)
    tokenizer = load_tokenizer(prepared.ref, config.template)
    tokenizer.padding_side = "right"
    train_set = _tokenized(prepared.dataset.splits["train"][: config.max_samples], tokenizer, config.cutoff_len)
    val_set = _tokenized(prepared.dataset.splits["val"][: config.max_eval_samples], tokenizer, config.cutoff_len)
    metric = prepared.metric
    best_key = "eval_loss" if metric == "loss" else f"eval_{SELECTION}"
    reporter = _Reporter(out / LOG_NAME, console)
    trainer = (SharedPrefixTrainer if config.shared_prefix else Trainer)(
        model=_lora_model(prepared, config),
        args=_training_arguments(config, prepared, out, best_key),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True),
        processing_class=tokenizer,
        compute_metrics=exact_match_metrics(metric if metric != "loss" else "exact_match"),
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=[reporter.callback, *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # the reporter prints; no raw dicts on stdout
    if prepared.resume:
        log.info("resuming from %s", prepared.resume)
    try:
        trainer.train(resume_from_checkpoint=prepared.resume)
    finally:
        reporter.stop()
    final_eval = trainer.evaluate()
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    history = _read_log(out / LOG_NAME)
    initial = next((e for e in history if e.get("step") == 0 and "eval_loss" in e), {})
    record = {
        **_adapter_provenance(config, prepared),
        "metric_for_best_model": metric,
        "selection": best_key,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": final_eval.get("eval_loss" if metric == "loss" else f"eval_{metric}"),
        "initial_eval": _evals(initial),
        "final_eval": _evals(final_eval),
        "global_step": trainer.state.global_step,
        "resumed_from": prepared.resume,
        "train_seconds": round(time.time() - started, 1),
        "shared_prefix_tokens": getattr(trainer, "shared_tokens", 0),  # tokens run once instead of per row
        "row_tokens": getattr(trainer, "row_tokens", 0),
        "versions": _versions(),
    }
    (adapter_dir / RECORD_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return TrainResult(adapter_dir, record["best_checkpoint"], record["best_metric"], metric,
                       record["initial_eval"], record["final_eval"], record["global_step"], prepared.resume,
                       record)


def _lora_model(prepared: Prepared, config: TrainConfig) -> Any:
    """The base model (quantized when ``quantization_bit`` says so) with fresh LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    load_dtype = "fp32" if prepared.precision == "fp32" else prepared.precision
    model = load_model(prepared.ref, load_dtype, config.quantization_bit)
    if config.quantization_bit:
        model = prepare_model_for_kbit_training(model)
    target = "all-linear" if config.lora_target == ["all"] else config.lora_target
    model = get_peft_model(model, LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=target, task_type="CAUSAL_LM",
    ))
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable of %s parameters (%.3f%%)", trainable, total, 100 * trainable / total)
    return model


def _training_arguments(config: TrainConfig, prepared: Prepared, out: Path, best_key: str) -> Any:
    """The Trainer's arguments: the config's schedule, evaluation and checkpoints every few steps,
    the best checkpoint (by ``best_key``) loaded at the end."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        lr_scheduler_kwargs=config.lr_scheduler_kwargs,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        bf16=prepared.precision == "bf16",
        fp16=prepared.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=prepared.resume is None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=best_key,
        greater_is_better=prepared.metric != "loss",
        optim="adamw_torch",
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _adapter_provenance(config: TrainConfig, prepared: Prepared) -> dict[str, Any]:
    """What the adapter was trained from: base model, dataset (by hash), configuration."""
    return {
        "kind": "prelabel.lora",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": str(prepared.ref.path),
        "base_dir": str(prepared.ref.directory),
        "gguf_file": prepared.ref.gguf_file,
        "template": config.template,
        "dataset_dir": str(Path(config.dataset_dir).resolve()),
        "manifest_sha256": prepared.dataset.manifest.sha256,
        "task_type": prepared.dataset.manifest.task_type,
        "labels": prepared.dataset.manifest.labels,
        "train_sha256": prepared.dataset.split_sha256("train"),
        "config": config.model_dump(mode="json"),
        "precision": prepared.precision,
    }


def _tokenized(records: list[Any], tokenizer: Any, cutoff_len: int) -> list[dict[str, list[int]]]:
    """Rows the collator pads; a plain list is a valid map-style dataset for the Trainer."""
    rows = []
    for record in records:
        item = tokenize(record, tokenizer, cutoff_len)
        rows.append({"input_ids": item.input_ids, "attention_mask": [1] * len(item.input_ids),
                     "labels": item.labels})
    return rows


def _evals(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if k.startswith("eval_") and isinstance(v, int | float) and math.isfinite(v)
            and not k.endswith(("_runtime", "_per_second"))}


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "prelabel"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def read_record(adapter_dir: Path) -> dict[str, Any]:
    """The training record an adapter was saved with (base model, dataset, settings)."""
    path = Path(adapter_dir) / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"{adapter_dir} is not an adapter written by `prelabel train lora` (no {RECORD_NAME})")
    return json.loads(path.read_text(encoding="utf-8"))
