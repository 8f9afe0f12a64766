"""Run configuration for LoRA training, with the knob names people know from LLaMA-Factory.

Every model here forbids unknown keys: a typo such as ``lora_rnak`` must stop the run before a
model is loaded, not silently train with the default. ``load_yaml`` turns pydantic's errors into
one readable message with "did you mean" hints. A LLaMA-Factory training YAML is accepted as it
is (``train.llamafactory.translate``: mapped, ignored with one warning, or refused with a reason).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prelabel.errors import ConfigError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
MergeDtype = Literal["auto", "float32", "bfloat16", "float16"]
EngineName = Literal["auto", "transformers", "vllm", "openai", "backend"]
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class TrainConfig(_Strict):
    """``prelabel train lora --config run.yaml``: one LoRA (or QLoRA) run on an exported dataset."""

    model_name_or_path: str = Field(description="Base model: a Hugging Face model directory or a .gguf file.")
    template: Literal["default", "chatml"] = Field(
        "default", description="Chat format: the tokenizer's own chat template, or ChatML for models without one."
    )
    dataset_dir: Path = Field(description="Exported dataset: train/val/test.jsonl + manifest.json.")
    output_dir: Path = Field(description="Checkpoints, logs and the final adapter go here.")
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj", "o_proj"],
        description="Module names to adapt (list or comma-separated); 'all' = every linear layer.",
    )
    quantization_bit: Literal[4, 8] | None = Field(
        None, description="QLoRA: load the base in 4/8 bit (needs bitsandbytes and a CUDA GPU)."
    )
    learning_rate: float = Field(2e-4, gt=0)
    num_train_epochs: float = Field(5.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides num_train_epochs.")
    lr_scheduler_type: Literal["cosine", "cosine_with_restarts", "linear", "polynomial", "constant",
                               "constant_with_warmup"] = "cosine"
    lr_scheduler_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the scheduler, e.g. {num_cycles: 2} for cosine_with_restarts."
    )
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    per_device_train_batch_size: int = Field(4, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    cutoff_len: int = Field(1024, ge=16, description="Max tokens per example (prompt is cut from the left).")
    max_samples: int | None = Field(None, ge=1, description="Use at most this many training records.")
    max_eval_samples: int | None = Field(
        None, ge=1, description="Evaluate on at most this many validation records (the flywheel's schedule sets it)."
    )
    precision: Precision = Field("auto", description="auto: bf16 on GPUs that support it, else fp16; fp32 on CPU.")
    logging_steps: int = Field(10, ge=1)
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(3, ge=1)
    metric_for_best_model: Literal["auto", "accuracy", "exact_match", "loss"] = Field(
        "auto", description="auto: accuracy for classification/rating, exact_match otherwise."
    )
    resume_from_checkpoint: str = Field(
        "auto", description="auto: the last checkpoint in output_dir; 'none'; or a checkpoint path."
    )
    seed: int = 42
    shared_prefix: bool = Field(
        True, description="Run the prompt all records of a batch share once per batch (same loss and gradients, "
                          "several times faster on prompt-heavy records); false: the plain forward pass."
    )
    llamafactory_template: str | None = Field(
        None, description="Set from a LLaMA-Factory config's model-family template; used in the LLaMA-Factory "
                          "YAML written beside the run."
    )

    @model_validator(mode="before")
    @classmethod
    def _llamafactory(cls, data: Any) -> Any:
        from prelabel.train.llamafactory import translate

        return translate(data, ValueError, set(cls.model_fields)) if isinstance(data, dict) else data

    @field_validator("lora_target", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}): "
                "the best checkpoint is chosen among evaluated ones"
            )
        if not self.lora_target:
            raise ValueError("lora_target is empty")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What makes two runs the same run (a resumed run must match it)."""
        return self.model_dump(mode="json", exclude={"resume_from_checkpoint", "output_dir", "llamafactory_template",
                                                        "shared_prefix"})  # exact either way


class EvalConfig(_Strict):
    """How a model is evaluated on the test split."""

    engine: EngineName = Field("auto", description="auto: vllm when installed and a GPU is present, else transformers.")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    concurrency: int = Field(8, ge=1, description="openai engine: requests in flight.")
    max_samples: int | None = Field(None, ge=1)


class PromotionPolicy(_Strict):
    """When a candidate replaces the current pre-annotator."""

    margin: float = Field(0.01, ge=0.0, description="Primary metric must beat the current one by at least this.")
    max_class_drop: float = Field(
        0.05, ge=0.0, description="No class (field) may lose more than this in F1 (accuracy)."
    )
    cascade_threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Cost cascade: the new model labels, the previous one takes tasks under this confidence.",
    )


class ServeConfig(_Strict):
    """Where the promoted model will be served.

    Without ``base_url`` (the local stack), the merged model is converted to GGUF and served by
    llama.cpp, evaluated there, and ``prelabel up`` serves it once promoted. With ``base_url`` and
    ``adapter_dir`` (compose's gpu profile), the LoRA adapter is served by the running vLLM of the
    base model: written to ``<adapter_dir>/<model_name>/``, the folder vLLM's filesystem LoRA resolver
    reads (``VLLM_LORA_RESOLVER_CACHE_DIR``), it is loaded on the first request that names it (after
    a vLLM restart too); no merge, no second server. With ``base_url`` alone, someone serves the
    merged directory there (e.g. ``vllm serve MERGED --served-model-name NAME``).
    """

    base_url: str | None = Field(None, description="OpenAI-compatible URL serving the promoted model; "
                                                   "none: GGUF + the local llama.cpp server.")
    adapter_dir: Path | None = Field(None, description="vLLM's LoRA resolver folder (VLLM_LORA_RESOLVER_CACHE_DIR "
                                                       "as this process sees it): serve the adapter on base_url.")
    model_name: str | None = Field(None, description="Served model name; default prelabel-<project>-<run>.")
    gguf_outtype: Literal["f32", "f16", "bf16", "q8_0"] = Field("f16", description="GGUF weights (local serving).")

    @model_validator(mode="after")
    def _adapter_needs_a_server(self) -> ServeConfig:
        if self.adapter_dir is not None and self.base_url is None:
            raise ValueError("adapter_dir needs base_url (the vLLM server that reads it)")
        return self


class FlywheelConfig(_Strict):
    """``PRELABEL_TRAIN_CONFIG``: the export -> train -> merge -> eval -> promote pipeline."""

    train: dict[str, Any] = Field(
        description="TrainConfig fields except dataset_dir/output_dir, which the pipeline sets per run."
    )
    merge_dtype: MergeDtype = "auto"
    eval: EvalConfig = Field(default_factory=EvalConfig)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    export: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the export.")

    @field_validator("train")
    @classmethod
    def _train_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("dataset_dir", "output_dir"):
            if key in value:
                raise ValueError(f"train.{key} is set by the pipeline for each run; remove it")
        TrainConfig.model_validate({**value, "dataset_dir": ".", "output_dir": "."})
        return value

    def train_config(self, dataset_dir: Path, output_dir: Path) -> TrainConfig:
        return TrainConfig.model_validate({**self.train, "dataset_dir": dataset_dir, "output_dir": output_dir})


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    """Pydantic errors as one line each, with a suggestion for misspelt keys."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, error["loc"])
            guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            lines.append(f"{where}: unknown key{hint}")
        else:
            lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif part == "train":
            model = TrainConfig
    return list(model.model_fields)


def load_yaml(path: Path, model: type[M]) -> M:
    """Read and validate a YAML config; every problem becomes a ``ConfigError``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate(data, model, source=str(path))


def validate(data: dict[str, Any], model: type[M], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc, model)}") from None


# The flywheel on the local stack without a config: the packaged SmolLM2-135M fine-tuned on CPU.
# Sized for 2 cores (records use the compact prompt, ~110 tokens): a few hundred labeled tasks
# train in minutes.
LOCAL_TRAIN: dict[str, Any] = {
    "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target": "all", "learning_rate": 2e-3,
    "num_train_epochs": 2, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
    "cutoff_len": 512, "logging_steps": 5, "eval_steps": 20, "save_steps": 20, "warmup_ratio": 0.05,
}


def local_flywheel_config(base_gguf: Path, **train: Any) -> FlywheelConfig:
    """The local stack's flywheel: fine-tune ``base_gguf``, serve the result with llama.cpp."""
    return FlywheelConfig(train={"model_name_or_path": str(base_gguf), **LOCAL_TRAIN, **train}, merge_dtype="float32")
