"""Merge a LoRA adapter into its base model (``merge_and_unload``) and save it for serving.

The output is a plain Hugging Face model directory (safetensors + tokenizer with the chat
template used in training) that vLLM, transformers or a GGUF converter can load, plus
``prelabel_merge.json``: the base, the adapter, the dataset manifest hash, the settings, and a
self-check that the merged model's logits equal base+adapter's on fixed inputs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.errors import UserError
from prelabel.train.config import ConfigError
from prelabel.train.data import sha256_file
from prelabel.train.lora import read_record
from prelabel.train.models import (
    ModelRef,
    load_model,
    load_tokenizer,
    resolve_model,
    saved_dtype,
    torch_dtype,
)

log = logging.getLogger(__name__)

RECORD_NAME = "prelabel_merge.json"
# Inputs the merged model is checked on; fixed so any two merges of one adapter compare alike.
PROBES = (
    "Classify the search query: cheap flights to rome",
    "Extract the fields as JSON: two adults from Paris to Oslo on 3 May",
    "Label the sentiment of: the update broke my favourite feature",
)
FP32_TOLERANCE = 1e-3
# float32 rounding of W + BA grows with the adapter's effect: a well-trained adapter that moves the
# logits by ~10 leaves ~2e-3 of noise. So the merged logits must match base+adapter within
# max(FP32_TOLERANCE, RELATIVE_TOLERANCE * the adapter's effect); a merge that lost (part of) the
# adapter misses by the order of the effect itself and still fails.
RELATIVE_TOLERANCE = 1e-3


class MergeError(UserError, RuntimeError):
    """The merged model does not reproduce base+adapter."""


@dataclass
class MergeResult:
    out_dir: Path
    dtype: str
    max_abs_diff: float
    record: dict[str, Any]


def merge(
    adapter_dir: Path, out_dir: Path, *, dtype: str = "auto", base: str | None = None,
    tolerance: float = FP32_TOLERANCE,
) -> MergeResult:
    """Merge ``adapter_dir`` into its base (or ``base``) and save to ``out_dir`` in ``dtype``."""
    import torch
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    record = read_record(adapter_dir)
    ref = resolve_model(base or record["base_model"])
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not empty; choose a new directory")
    target = saved_dtype(ref) if dtype == "auto" else dtype
    tokenizer = load_tokenizer(ModelRef(adapter_dir), "default")  # carries the training chat template
    model = PeftModel.from_pretrained(load_model(ref, "fp32"), str(adapter_dir))
    model.eval()
    probes = _probe_batch(tokenizer, model.device)
    with torch.no_grad():
        expected = model(**probes).logits.float()
        with model.disable_adapter():
            effect = float((model(**probes).logits.float() - expected).abs().max())
        merged = model.merge_and_unload()
        got = merged(**probes).logits.float()
    diff = float((expected - got).abs().max())
    allowed = max(tolerance, RELATIVE_TOLERANCE * effect)
    if diff > allowed:
        raise MergeError(f"merged logits differ from base+adapter by {diff:.3g} (> {allowed:.3g}; the adapter "
                         f"moves them by {effect:.3g})")
    merged = merged.to(torch_dtype(target))
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    merge_record = {
        "kind": "prelabel.merge",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": str(ref.path),
        "adapter_dir": str(adapter_dir.resolve()),
        "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors"),
        "dataset_dir": record.get("dataset_dir"),
        "manifest_sha256": record.get("manifest_sha256"),
        "task_type": record.get("task_type"),
        "labels": record.get("labels"),
        "dtype": target,
        "train_config": record.get("config"),
        "best_checkpoint": record.get("best_checkpoint"),
        "best_metric": record.get("best_metric"),
        "check": {"probes": list(PROBES), "max_abs_logit_diff": diff, "tolerance": allowed,
                  "adapter_effect": effect, "computed_in": "float32"},
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(merge_record, indent=2), encoding="utf-8")
    log.info("merged %s into %s -> %s (%s, max |logit diff| %.2e)", adapter_dir, ref.path, out_dir, target, diff)
    return MergeResult(out_dir, target, diff, merge_record)


def _probe_batch(tokenizer: Any, device: Any) -> dict[str, Any]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in PROBES]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {key: value.to(device) for key, value in batch.items()}
