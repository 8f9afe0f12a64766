"""LLaMA-Factory configs in, LLaMA-Factory configs out.

In: ``translate`` maps a LLaMA-Factory training YAML onto ``TrainConfig``. Keys we implement are
mapped (``fp16``/``bf16`` -> ``precision``, ``metric_for_best_model: eval_loss`` -> ``loss``, a
model family ``template`` -> the tokenizer's own chat template); keys that cannot change the
trained weights (logging, hub, workers) are ignored with one warning; keys whose meaning we do
not implement and that would change the result (another ``stage``, full fine-tuning, packing, a
prompt template that formats differently, keeping the last instead of the best checkpoint, ...)
are refused with a ``ConfigError`` that says why.

Out: ``write_run`` writes ``<output_dir>/llamafactory/`` beside every ``prelabel train lora`` run:
``train.yaml`` (the same run's settings in LLaMA-Factory's keys), ``dataset_info.json`` and the
train/val records as chat messages, exactly the conversations prelabel trained on, so
``llamafactory-cli train <output_dir>/llamafactory/train.yaml`` repeats the run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# LLaMA-Factory templates that format a conversation as the model family's own chat template does.
FAMILY_TEMPLATES = {"qwen", "qwen2_vl", "qwen3", "llama2", "llama3", "llama4", "mistral", "gemma", "gemma3", "phi",
                    "phi4", "glm4", "chatglm3", "deepseek", "deepseek3", "deepseekr1", "yi", "baichuan2",
                    "internlm2", "internlm3", "cohere", "olmo", "granite3", "exaone", "falcon", "starchat", "zephyr"}
# Keys that only organise a run (logging, hub, workers, caching): ignored, with one warning.
IGNORED = {"report_to", "run_name", "logging_dir", "plot_loss", "overwrite_output_dir", "overwrite_cache",
           "preprocessing_num_workers", "dataloader_num_workers", "ddp_timeout", "ddp_find_unused_parameters",
           "trust_remote_code", "flash_attn", "deepspeed", "gradient_checkpointing", "push_to_hub", "hub_model_id",
           "cache_dir", "tokenized_path", "streaming", "val_size", "do_eval", "do_predict", "compute_accuracy",
           "predict_with_generate", "include_num_input_tokens_seen", "disable_gradient_checkpointing",
           "use_fast_tokenizer", "resize_vocab", "export_dir", "save_only_model", "logging_first_step",
           "bf16_full_eval", "fp16_full_eval", "infer_backend", "mask_history"}
# Keys whose only accepted value is LLaMA-Factory's default, i.e. what prelabel does anyway.
ONLY = {"stage": ("sft",), "do_train": (True,), "finetuning_type": ("lora",), "eval_strategy": ("steps",),
        "evaluation_strategy": ("steps",), "save_strategy": ("steps",), "load_best_model_at_end": (True,),
        "optim": ("adamw_torch",), "packing": (False, None), "neat_packing": (False,),
        "train_on_prompt": (False,), "use_rslora": (False,), "use_dora": (False,), "pissa_init": (False,),
        "pure_bf16": (False,), "warmup_steps": (0,), "weight_decay": (0, 0.0), "max_grad_norm": (1.0, 1),
        "dataset": ("prelabel_train",), "eval_dataset": ("prelabel_val",)}
WHY = {"stage": "prelabel trains supervised fine-tuning (sft) only",
       "do_train": "this config does not train",
       "finetuning_type": "prelabel trains LoRA adapters only",
       "eval_strategy": "the best checkpoint is chosen among step evaluations",
       "evaluation_strategy": "the best checkpoint is chosen among step evaluations",
       "save_strategy": "checkpoints are saved every save_steps",
       "load_best_model_at_end": "prelabel always keeps the best checkpoint by the task metric",
       "optim": "prelabel trains with adamw_torch",
       "packing": "prelabel does not pack sequences", "neat_packing": "prelabel does not pack sequences",
       "train_on_prompt": "the loss covers only the answer tokens",
       "use_rslora": "not implemented", "use_dora": "not implemented", "pissa_init": "not implemented",
       "pure_bf16": "not implemented", "warmup_steps": "use warmup_ratio",
       "weight_decay": "prelabel trains without weight decay", "max_grad_norm": "prelabel clips at 1.0",
       "dataset": "prelabel trains on the export's train split (prelabel_train in its dataset_info.json)",
       "eval_dataset": "prelabel evaluates on the export's val split (prelabel_val)"}
LF_KEYS = set(IGNORED) | set(ONLY) | {"fp16", "bf16", "greater_is_better", "template"}
_WARNED: set[tuple[str, ...]] = set()


def is_llamafactory(data: dict[str, Any]) -> bool:
    """A mapping written for LLaMA-Factory (it has keys only LLaMA-Factory uses)."""
    return bool((set(data) - {"template"}) & LF_KEYS)


def _trainer_arguments() -> set[str]:
    """The Hugging Face Trainer's own argument names (LLaMA-Factory passes them through)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    return {f.name for f in fields(TrainingArguments)}


def translate(data: dict[str, Any], error: type[Exception], own: set[str] | None = None) -> dict[str, Any]:
    """``data`` with LLaMA-Factory keys mapped to TrainConfig's; raises ``error`` for refused keys.

    LLaMA-Factory's own defaults apply where the YAML leaves a key out (``dataset_dir: data``).
    Keys outside ``own`` (TrainConfig's fields) that are Hugging Face Trainer arguments, which
    LLaMA-Factory passes through (``disable_tqdm``, ``logging_strategy``...), are not used by
    prelabel's training: ignored with a warning that says so; any other key stays, and validation
    names it as unknown (a typo).
    """
    if not is_llamafactory(data):
        return data
    out = dict(data)
    out.setdefault("dataset_dir", "data")  # LLaMA-Factory's default
    refused: list[str] = []
    ignored = sorted(k for k in out if k in IGNORED)
    unused: list[str] = []
    if own is not None and any(k not in own and k not in LF_KEYS for k in out):
        trainer = _trainer_arguments() - own
        unused = sorted(k for k in out if k in trainer and k not in LF_KEYS)
    for key in ignored + unused:
        out.pop(key)
    for key, allowed in ONLY.items():
        if key in out:
            value = out.pop(key)
            if value not in allowed:
                refused.append(f"{key}: {value!r} is not supported ({WHY[key]})")
    fp16, bf16 = bool(out.pop("fp16", False)), bool(out.pop("bf16", False))
    if fp16 and bf16:
        refused.append("fp16 and bf16 are both true")
    elif fp16 or bf16:
        wanted = "fp16" if fp16 else "bf16"
        if out.get("precision", wanted) not in (wanted, "auto"):
            refused.append(f"{wanted}: true contradicts precision: {out['precision']}")
        out["precision"] = wanted
    metric = out.get("metric_for_best_model")
    if isinstance(metric, str) and metric.startswith("eval_"):
        out["metric_for_best_model"] = metric = metric[len("eval_"):]
    if "greater_is_better" in out:
        greater = out.pop("greater_is_better")
        if greater != (metric != "loss"):
            refused.append(f"greater_is_better: {greater} contradicts metric_for_best_model: {metric or 'auto'} "
                           f"({'lower' if metric == 'loss' else 'higher'} is better)")
    template = out.get("template")
    if template is not None and template != "chatml":
        if template in FAMILY_TEMPLATES:
            out["template"] = "default"
            out["llamafactory_template"] = template
        else:
            refused.append(f"template: {template!r} formats prompts differently from the model's own chat "
                           "template that prelabel uses; name the model family's template (e.g. qwen, llama3) "
                           "or chatml")
    if refused:
        raise error("LLaMA-Factory config: " + "; ".join(refused))
    if ignored and tuple(ignored) not in _WARNED:
        _WARNED.add(tuple(ignored))
        log.warning("LLaMA-Factory config: ignoring %s (they do not change what prelabel trains)",
                    ", ".join(ignored))
    if unused and ("trainer", *unused) not in _WARNED:
        _WARNED.add(("trainer", *unused))
        log.warning("LLaMA-Factory config: ignoring the Trainer arguments %s (prelabel's training does not use "
                    "them)", ", ".join(unused))
    return out


def lf_template(config: Any, model_dir: Path | None) -> str:
    """The LLaMA-Factory template for a run: the one its config named, chatml, or a guess from the
    tokenizer's chat template (``chatml`` for ``<|im_start|>`` formats)."""
    if config.template == "chatml":
        return "chatml"
    if config.llamafactory_template:
        return config.llamafactory_template
    chat = ""
    if model_dir is not None and (model_dir / "tokenizer_config.json").is_file():
        chat = str(json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get(
            "chat_template") or "")
    for marker, name in (("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"), ("[INST]", "mistral"),
                         ("<|im_start|>", "chatml")):
        if marker in chat:
            return name
    return "chatml"


def write_run(prepared: Any) -> Path:
    """Write ``<output_dir>/llamafactory/`` (train.yaml, dataset_info.json, train/val.jsonl)."""
    config = prepared.config
    folder = Path(config.output_dir).resolve() / "llamafactory"
    folder.mkdir(parents=True, exist_ok=True)
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    info = {}
    for split in ("train", "val"):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for record in prepared.dataset.splits[split]:
                messages = record.messages() + [{"role": "assistant", "content": record.output}]
                handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
        info[f"prelabel_{split}"] = {"file_name": f"{split}.jsonl", "formatting": "sharegpt",
                                     "columns": {"messages": "messages"}, "tags": tags}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    local = Path(config.model_name_or_path)
    model_dir = local if local.is_dir() else None  # a hub id has no folder to read the chat template from
    metric = prepared.metric
    run = {
        "model_name_or_path": str(config.model_name_or_path),
        "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "lora_target": ",".join(config.lora_target),
        **({"quantization_bit": config.quantization_bit} if config.quantization_bit else {}),
        "dataset_dir": str(folder), "dataset": "prelabel_train", "eval_dataset": "prelabel_val",
        "template": lf_template(config, model_dir), "cutoff_len": config.cutoff_len,
        **({"max_samples": config.max_samples} if config.max_samples else {}),
        "output_dir": str(folder / "run"), "logging_steps": config.logging_steps,
        "save_steps": config.save_steps, "save_total_limit": config.save_total_limit,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate, "num_train_epochs": config.num_train_epochs,
        **({"max_steps": config.max_steps} if config.max_steps > 0 else {}),
        "lr_scheduler_type": config.lr_scheduler_type,
        **({"lr_scheduler_kwargs": config.lr_scheduler_kwargs} if config.lr_scheduler_kwargs else {}),
        "warmup_ratio": config.warmup_ratio,
        "bf16": prepared.precision == "bf16", "fp16": prepared.precision == "fp16",
        "eval_strategy": "steps", "eval_steps": config.eval_steps, "save_strategy": "steps",
        "load_best_model_at_end": True,
        # LLaMA-Factory's accuracy is per answer token, prelabel's per example: the closest it has.
        "compute_accuracy": metric != "loss",
        "metric_for_best_model": "eval_loss" if metric == "loss" else "eval_accuracy",
        "greater_is_better": metric != "loss",
        "seed": config.seed, "report_to": "none",
    }
    header = (f"# Written by `prelabel train lora` for {config.output_dir}: the same run for LLaMA-Factory.\n"
              f"# llamafactory-cli train {folder / 'train.yaml'}\n"
              + ("# LLaMA-Factory needs a Hugging Face model directory, not a .gguf file.\n"
                 if str(config.model_name_or_path).endswith(".gguf") else ""))
    (folder / "train.yaml").write_text(header + yaml.safe_dump(run, sort_keys=False), encoding="utf-8")
    return folder
