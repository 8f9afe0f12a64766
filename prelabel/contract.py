"""The formats prelabel's processes share: Redis keys, statuses, ``model_version``, region stamps.

Why one module: the backend, the worker, the CLI commands and the training pipeline run as
separate processes and meet only through Redis and Label Studio. They agree on key names, status
words and the shape of what they store by this module alone, so a writer and its readers cannot
drift apart (a reader looking for a field no writer sets, a key spelled two ways). Nothing here
does I/O; each format has its writer and its parser side by side, and ``tests/unit/test_contract.py``
round-trips them. (The same idea as rq's ``JobStatus`` and key templates.)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple, NotRequired, Protocol, TypedDict

# --- queue -------------------------------------------------------------------------------------
QUEUE_NAME = "prelabel"  # the RQ queue the backend, the CLI and Label Studio events feed and the worker consumes
# Fine-tuning runs (the flywheel) have their own queue, so a deployment can give them to a worker on a GPU
# machine with the `train` extra (compose: the `trainer` service) while the other workers stay light.
TRAIN_QUEUE_NAME = "prelabel-train"
WORKER_QUEUES = (QUEUE_NAME, TRAIN_QUEUE_NAME)  # what `prelabel worker` consumes unless told otherwise


# --- Redis keys ------------------------------------------------------------------------------
# Every key prelabel writes starts with PREFIX, so `redis-cli --scan --pattern 'prelabel:*'`
# lists them all and nothing collides with RQ's own `rq:` keys on the same Redis.
PREFIX = "prelabel:"

ACTIVE_MODEL_KEY = PREFIX + "active_model"  # JSON record of the promoted model (global; see active_model_key)
TRAIN_DECISIONS_KEY = PREFIX + "train:decisions"  # list of promotion decisions, newest first
CASCADE_STATS_KEY = PREFIX + "stats:cascade"  # hash route (cheap | fallback | fallback_failed) -> count
REUSE_STATS_KEY = PREFIX + "stats:near_duplicates"  # hash outcome (reused | revalidated_individually) -> count
REVIEW_STATS_KEY = PREFIX + "stats:review"  # hash review status -> count
REVIEWER_INDEPENDENCE_KEY = PREFIX + "reviewer:independence"  # JSON: the last reviewer-vs-pre-annotator check
WEBHOOK_WIRING_KEY = PREFIX + "webhook_wiring"  # hash str(ProjectRef) -> JSON WiringState (backend wires its webhook)
TENANT_STAMPS_KEY = PREFIX + "tenant:stamps"  # hash "<id>.<created_at>" -> tenant of a project of a listed LS
MIGRATIONS_KEY = PREFIX + "migrations"  # hash migration name -> JSON of its run (prelabel.migrate)
WORKER_STATS_KEY = PREFIX + "stats:worker"  # hash "<metric>|<label=value,...>" -> count, added by workers
EVENT_PREFIX = PREFIX + "event:"  # + job id: the exactly-once marker of a webhook event
PROJECT_KEY_PATTERN = PREFIX + "project:*"  # SCAN pattern of project_key
ACTIVE_MODEL_PATTERN = ACTIVE_MODEL_KEY + "*"  # SCAN pattern of every active-model record


@dataclass(frozen=True, order=True)
class ProjectRef:
    """A project as prelabel keys it: the Label Studio it lives on (``tenant``) plus its id there.

    Why not the id alone: every Label Studio numbers its projects from 1, so two instances that
    call the same backend both have a project 4711. Keyed by the id alone they would share one
    record (host, token), one few-shot pool, one outcome table. The tenant is ``tenant_slug`` of the
    instance's normalised origin (``prelabel.studio.tenancy`` picks it per request); ``id`` stays
    the plain int Label Studio's API takes.
    """

    tenant: str
    id: int

    def __post_init__(self) -> None:
        if not _TENANT.fullmatch(self.tenant) or isinstance(self.id, bool) or not isinstance(self.id, int):
            raise ValueError(f"not a project reference: tenant={self.tenant!r} id={self.id!r}")

    def __str__(self) -> str:
        """The key segment (``<tenant>:<id>``) every project-scoped Redis key embeds."""
        return f"{self.tenant}:{self.id}"

    @property
    def slug(self) -> str:
        """``<tenant>-<id>``: the form for RQ job ids (letters, digits, ``-`` and ``_`` only)."""
        return f"{self.tenant}-{self.id}"

    @classmethod
    def parse(cls, text: bytes | str) -> ProjectRef | None:
        """The reference in ``str(ref)`` form, or None for anything else."""
        tenant, _, pid = as_text(text).partition(":")
        return cls(tenant, int(pid)) if _TENANT.fullmatch(tenant) and pid.isdigit() else None


TENANT_PREFIX = "ls"
_TENANT = re.compile(TENANT_PREFIX + r"[0-9a-f]{10}")


def tenant_slug(origin: str) -> str:
    """A short stable name of a Label Studio origin (``scheme://host[:port]``, normalised by the
    caller): safe in Redis keys and job ids, and no host name in plain sight in Redis."""
    return TENANT_PREFIX + hashlib.sha256(origin.encode()).hexdigest()[:10]


def project_key(project: ProjectRef) -> str:
    """JSON ``ProjectRecord`` (guideline, Label Studio host and token) that ``/setup`` stores."""
    return f"{PREFIX}project:{project}"


def task_fields_lock_key(project: ProjectRef) -> str:
    """Redis lock held while a task's ``prelabel_*`` fields are read, merged and written back."""
    return f"{PREFIX}task_fields:{project}:lock"


def as_text(value: bytes | str) -> str:
    """A key or value as Redis returns it (bytes, unless the client decodes) as text."""
    return value.decode() if isinstance(value, bytes) else value


def project_of_key(key: bytes | str) -> ProjectRef | None:
    """The project of a ``project_key``, or None for any other key the pattern may match."""
    head, _, tail = as_text(key).partition(":project:")
    return ProjectRef.parse(tail) if head + ":" == PREFIX else None


def outcome_key(project: ProjectRef) -> str:
    """Hash task id -> encoded ``Outcome`` of the task's latest pre-annotation."""
    return f"{PREFIX}outcome:{project}"


def errored_key(project: ProjectRef) -> str:
    """Set of task ids whose latest pre-annotation failed for an LLM error (reconcile retries them)."""
    return f"{PREFIX}errored:{project}"


def new_labels_key(project: ProjectRef) -> str:
    """Set of the annotation ids already counted (a label delivered twice counts once)."""
    return f"{PREFIX}new_labels:{project}"


def scanned_key(project: ProjectRef) -> str:
    """Marker (with a TTL) of the reconcile job's last full scan of a project."""
    return f"{PREFIX}reconcile:scanned:{project}"


def handoff_key(project: ProjectRef, task_id: int | str) -> str:
    """SET NX marker of a task the backend handed to the worker after its deadline."""
    return f"{PREFIX}handoff:{project}:{task_id}"


def aftercare_key(project: ProjectRef, task_id: int | str, model_version: str) -> str:
    """SET NX marker: the review and ranking of this task's prediction version were queued once."""
    return f"{PREFIX}aftercare:{project}:{task_id}:{model_version}"


def event_marker_key(job_id: str) -> str:
    """Exactly-once marker of one webhook event's job."""
    return EVENT_PREFIX + job_id


def calibration_key(project: ProjectRef, model: str) -> str:
    """JSON calibration map of one model's scores in one project."""
    return f"{PREFIX}calibration:{project}:{model}"


def quality_key(project: ProjectRef) -> str:
    """JSON per-class agreement of a project, recomputed after human labels."""
    return f"{PREFIX}quality:{project}"


def train_status_key(project: ProjectRef) -> str:
    """Hash with the state of a project's training pipeline."""
    return f"{PREFIX}train:{project}"


def train_lock_key(project: ProjectRef) -> str:
    """One training run per project: SET NX of the run id."""
    return train_status_key(project) + ":lock"


def train_label_count_key(project: ProjectRef) -> str:
    """Counter of human labels since the last training run was started."""
    return train_status_key(project) + ":new_labels"


def active_model_key(project: ProjectRef | None = None) -> str:
    """The promoted model of a project, or the global one without a project."""
    return f"{ACTIVE_MODEL_KEY}:{project}" if project else ACTIVE_MODEL_KEY


def active_model_keys(project: ProjectRef | None = None) -> list[str]:
    """Where to look for a project's promoted model, in order: its own record, then the global one."""
    return ([active_model_key(project)] if project else []) + [ACTIVE_MODEL_KEY]


def prediction_cache_key(cache_format: int | str, digest: str) -> str:
    """A cached valid prediction, under the hash of everything that decided it."""
    return f"{PREFIX}pred:{cache_format}:{digest}"


def job_config_key(config_hash: str) -> str:
    """A labeling config a webhook brought, by content hash: jobs carry the hash, not the config
    (one copy however many jobs name it; it expires with the jobs that need it)."""
    return f"{PREFIX}jobconfig:{config_hash}"


def guideline_key(guideline_hash: str) -> str:
    """JSON of a guideline, by its content hash (``prelabel prompts``: any version resolves to its text)."""
    return f"{PREFIX}guideline:{guideline_hash}"


def prompt_key(version: str) -> str:
    """JSON record of a prompt version (system text, input template, guideline hash, config hash)."""
    return f"{PREFIX}prompt:{version}"


def active_guideline_key(project: ProjectRef) -> str:
    """JSON of the guideline ``prelabel prompts use`` made a project's active one."""
    return f"{PREFIX}guideline:active:{project}"


def guideline_history_key(project: ProjectRef) -> str:
    """List of a project's guideline activations, oldest first."""
    return f"{PREFIX}guideline:history:{project}"


def prompt_scores_key(project: ProjectRef) -> str:
    """Hash model_version -> JSON evaluation summary of that prompt version on the project."""
    return f"{PREFIX}prompt:scores:{project}"


class FewShotKeys(NamedTuple):
    """The four keys of a project's few-shot pool."""

    pool: str  # hash text digest -> JSON {task, texts, answer}
    order: str  # sorted set digest -> time added (oldest evicted first)
    tasks: str  # hash task id -> digest (a task's own label is never shown to it)
    version: str  # counter, bumped on every change (readers reload when it moves)


def supervised_stage_key(project: ProjectRef) -> str:
    """The project's fitted supervised stage (a pickled ``prediction.supervised.SupervisedStage``)."""
    return f"{PREFIX}stage:supervised:{project}"


def stage_scores_key(project: ProjectRef) -> str:
    """JSON: each stage's accuracy on the project's rolling held-out slice, and the routing it chose."""
    return f"{PREFIX}stage:scores:{project}"


def stage_curve_key(project: ProjectRef) -> str:
    """List of JSON points (labels, stage, held-out accuracy), oldest first: the learning curve."""
    return f"{PREFIX}stage:curve:{project}"


def stage_answers_key(project: ProjectRef) -> str:
    """Hash stage (supervised | llm) -> tasks it answered for the project (backend and workers)."""
    return f"{PREFIX}stats:stage:{project}"


STAGE_ANSWERS_PATTERN = PREFIX + "stats:stage:*"  # SCAN pattern of stage_answers_key


def fewshot_keys(project: ProjectRef) -> FewShotKeys:
    base = f"{PREFIX}fewshot:{project}"
    return FewShotKeys(base, f"{base}:order", f"{base}:tasks", f"{base}:version")


# --- keys written before tenancy ---------------------------------------------------------------
# The project-scoped key families (what follows PREFIX, up to the project). Before projects carried
# their Label Studio, these keys held a bare id (``prelabel:outcome:4711``); such a key belongs to
# the configured Label Studio, and ``legacy_key_target`` names where it moves (``prelabel migrate``).
PROJECT_FAMILIES = ("project", "task_fields", "outcome", "errored", "new_labels", "reconcile:scanned", "handoff",
                    "aftercare", "calibration", "quality", "train", "active_model", "guideline:active",
                    "guideline:history", "prompt:scores", "fewshot", "stage:supervised", "stage:scores",
                    "stage:curve", "stats:stage")
_LEGACY_KEY = re.compile(rf"{re.escape(PREFIX)}({'|'.join(map(re.escape, PROJECT_FAMILIES))}):([0-9]+)((?::.*)?)",
                         re.DOTALL)


def legacy_key_target(key: bytes | str, tenant: str) -> str | None:
    """Where a key with a bare project id moves (the project of ``tenant``); None for any other key
    (a key already in the tenant format never matches: a tenant is not all digits)."""
    match = _LEGACY_KEY.fullmatch(as_text(key))
    if match is None:
        return None
    family, pid, rest = match.groups()
    return f"{PREFIX}{family}:{ProjectRef(tenant, int(pid))}{rest}"


# --- statuses ----------------------------------------------------------------------------------
class TaskStatus(StrEnum):
    """A pre-annotation's status (``meta.status``; the ``model_version`` suffix when not ok)."""

    OK = "ok"
    NEEDS_HUMAN = "needs_human"  # at least one control had no valid answer
    ERROR = "error"  # the LLM could not be reached or failed; empty result


class ReviewStatus(StrEnum):
    """The second model's verdict on a pre-annotation (always the review's ``model_version`` suffix)."""

    PASSED = "passed"
    REJECTED = "rejected"  # the correction is the review prediction's regions
    NEEDS_HUMAN = "needs_human"  # no usable verdict or correction
    REVIEW_ERROR = "review_error"  # the reviewer could not be reached; retried later


# --- model_version -----------------------------------------------------------------------------
# `[review:]<model>@<prompt version>[#<status>]`. Label Studio keeps only result, score and
# model_version of a prediction, and its Data Manager filters on model_version, so the status of a
# pre-annotation that is not ok, and every review's verdict, travel in the suffix. A cascade's
# model is `<cheap>><fallback>`.
REVIEW_PREFIX = "review:"
STATUS_SEP = "#"
CASCADE_SEP = ">"
_PREANNOTATION = re.compile(r"^[^:#]+@p-[0-9a-f]+")  # a prompt version is `p-<hex>`; reviews have a `:`


@dataclass(frozen=True)
class ModelVersion:
    """A parsed ``model_version``: who answered, with which prompt, and how it ended."""

    model: str
    prompt_version: str
    status: str = ""  # the suffix: "" for an ok pre-annotation, a TaskStatus or a ReviewStatus
    review: bool = False

    @property
    def family(self) -> str:
        """The version without its status: every prediction of this model and prompt shares it."""
        return f"{REVIEW_PREFIX if self.review else ''}{self.model}@{self.prompt_version}"

    def __str__(self) -> str:
        return with_status(self.family, self.status)

    @classmethod
    def parse(cls, text: str | None) -> ModelVersion:
        """Any ``model_version`` (a foreign one parses too: model = the text before ``@`` or all of it)."""
        text = text or ""
        review = text.startswith(REVIEW_PREFIX)
        base, _, status = text.removeprefix(REVIEW_PREFIX).partition(STATUS_SEP)
        model, at, prompt = base.rpartition("@")
        return cls(model, prompt, status, review) if at else cls(base, "", status, review)

    @property
    def task_status(self) -> str:
        """The status with ``ok`` for an unsuffixed pre-annotation."""
        return self.status or TaskStatus.OK


def cascade_model(cheap: str, fallback: str) -> str:
    """The model part of a cascade's ``model_version``: the cheap model first."""
    return f"{cheap}{CASCADE_SEP}{fallback}"


def with_status(family: str, status: str | None) -> str:
    """``family#status``; an ok pre-annotation (or no status) carries no suffix."""
    return family if not status or status == TaskStatus.OK else f"{family}{STATUS_SEP}{status}"


def status_of(model_version: str | None) -> str:
    """The ``#`` suffix of a ``model_version`` ("" when none)."""
    return (model_version or "").partition(STATUS_SEP)[2]


def is_review(model_version: str | None) -> bool:
    return (model_version or "").startswith(REVIEW_PREFIX)


def is_own_preannotation(model_version: str | None) -> bool:
    """A pre-annotation prelabel wrote (not a review, not another backend's prediction)."""
    return bool(_PREANNOTATION.match(model_version or ""))


# --- settings shared with the config handlers ----------------------------------------------------
REFERENCE_FIELD = "prelabel_reference"  # task data of a reference-set task (annotator screening's answer key)
SpanOccurrence = Literal["all", "first", "unique"]  # which occurrences of a repeated span are labelled


# --- webhooks ------------------------------------------------------------------------------------
WEBHOOK_HEADER = "X-Prelabel-Secret"  # the shared secret Label Studio's webhook sends
REVIEW_FIELD = "prelabel_review"  # task data field (Data Manager column): the review status of its prediction


# --- predictions and region stamps -------------------------------------------------------------
# Label Studio keeps extra keys inside a region verbatim, so every region of a prelabel
# prediction carries a `prelabel` stamp (its provenance and what the ranking and calibration read).
STAMP = "prelabel"


class ReviewStamp(TypedDict, total=False):
    """``prelabel.review`` of each region of a review prediction."""

    status: str  # ReviewStatus
    verdict: str | None  # "correct" | "incorrect" | None
    rationale: str
    reviewed: int  # id of the reviewed pre-annotation
    reviewed_model_version: str | None
    time: str
    confidence: float | None
    verdict_probs: dict[str, float] | None
    score_source: str  # "logprobs" | "none"
    independence: str  # "different_weights" | "same_weights" | "unknown"


class RegionStamp(TypedDict, total=False):
    """A region's ``prelabel`` record. Writers: the predictor (provenance, ``label_probs``),
    calibration (``raw_score``, ``calibration``), the cascade (``route``), near-duplicate reuse
    (``reused_from``), the review (``review``). Readers: ranking, quality, export, review."""

    model: str
    prompt_version: str
    guideline_hash: str
    config_hash: str
    time: str
    cached: bool
    score_source: str  # "label_probs" | "logprobs" | "none"
    raw_score: float | None  # the score before calibration
    calibration: str | None  # the calibration map's id, or "uncalibrated"
    status: str  # TaskStatus
    label_probs: dict[str, float]  # a Choices control: probability of every label
    label_probs_kind: str  # "distribution" (single choice) | "inclusion" (multiple choice)
    route: str  # cascade: "cheap" | "fallback" | "fallback_failed"
    reused_from: int  # near-duplicate reuse: the task whose answer this is
    interactive: bool  # a suggestion for the labeling screen (shaped by its context)
    review: ReviewStamp


# The provenance fields the predictor copies from `meta.provenance` into every region's stamp.
REGION_PROVENANCE = ("model", "prompt_version", "guideline_hash", "config_hash", "time", "cached", "score_source",
                     "raw_score", "calibration")


class Region(TypedDict):
    """One Label Studio result region as prelabel writes it."""

    from_name: str
    to_name: str
    type: str
    value: dict[str, Any]
    score: NotRequired[float]
    prelabel: NotRequired[RegionStamp]


class PredictionMeta(TypedDict):
    """Everything about a prediction that Label Studio would drop (for API and CLI callers)."""

    status: str  # TaskStatus
    errors: dict[str, str]  # control (or "task"/"llm") -> "reason: message"
    skipped_controls: list[str]
    provenance: dict[str, Any]
    raw_output: NotRequired[list[str]]


class Prediction(TypedDict):
    """What the predictor returns for one task (``meta`` never reaches Label Studio)."""

    result: list[Region]
    score: float
    model_version: str
    meta: PredictionMeta


def stamp_of(region: Any) -> RegionStamp:
    """A region's stamp, or an empty one (a region of another backend, a human's region)."""
    stamp = region.get(STAMP) if isinstance(region, dict) else None
    return stamp if isinstance(stamp, dict) else {}  # type: ignore[return-value]


# --- the active-model record ---------------------------------------------------------------------
# Written by promotion (prelabel.train.promote.apply_decision) under active_model_key; read by the
# backend's model router (which model pre-annotates a project), `prelabel up` (serves a promoted GGUF
# and points base_url at it), `prelabel train status` and `prompts eval`.


class CascadeFallback(TypedDict):
    """The cost cascade of a promotion: tasks under ``threshold`` go to the previous model."""

    threshold: float
    fallback_model: str | None
    fallback_base_url: str | None
    fallback_prompt_style: str | None
    fallback_fewshot_k: int | None


class ActiveModel(TypedDict):
    """The model that pre-annotates a project (or every project: the global record).

    Only ``model`` and ``base_url`` are always there (``current_model`` falls back to the configured
    LLM with just these); a promotion writes the rest. Predictions' ``model_version`` becomes
    ``<model>@<prompt>``; ``prompt_style``/``fewshot_k`` say how the model is prompted (as it was
    evaluated).
    """

    model: str
    base_url: str
    prompt_style: NotRequired[str | None]
    fewshot_k: NotRequired[int | None]
    model_path: NotRequired[str | None]
    project: NotRequired[str | None]
    report: NotRequired[str]  # path of the candidate's evaluation report
    primary_metric: NotRequired[str]
    primary_value: NotRequired[float]
    test_sha256: NotRequired[str]
    promoted_at: NotRequired[str]  # ISO 8601, UTC
    decision_id: NotRequired[str]
    cascade: NotRequired[CascadeFallback | None]
    previous: NotRequired[dict[str, Any] | None]  # the record it replaced, without that one's own `previous`
    gguf: NotRequired[str]  # a locally served model: the file `prelabel up` serves (prelabel.train.local_serving)
    served_by: NotRequired[str]  # who serves it: "llama.cpp" (`prelabel up`), "vllm-lora"


def as_active_model(value: Any) -> ActiveModel:
    """``value`` checked as an active-model record: a mapping with a string ``model`` and ``base_url``
    (ValueError otherwise; a record no reader could route to is refused, not half-used)."""
    if not isinstance(value, dict):
        raise ValueError(f"an active-model record is a JSON object, not {type(value).__name__}")
    missing = [k for k in ("model", "base_url") if not isinstance(value.get(k), str) or not value[k]]
    if missing:
        raise ValueError(f"an active-model record needs {' and '.join(missing)} (a non-empty string)")
    return value  # type: ignore[return-value]


def active_model_json(record: ActiveModel) -> str:
    """The record as stored under ``active_model_key``."""
    return json.dumps(as_active_model(record))


def parse_active_model(raw: str | bytes) -> ActiveModel:
    """The stored record (``active_model_json``); ValueError when it is not one."""
    return as_active_model(json.loads(raw))


class Predictor(Protocol):
    """What pre-annotates tasks: the plain LLM predictor, the calibrated cascade and the service's
    callers all speak this (``ctx`` is a ``prediction.predictor.ProjectContext``, ``pool`` a
    ``FewShotPool``; typed loosely here so the contract imports no subsystem)."""

    async def predict(self, tasks: list[Any], ctx: Any, pool: Any = None) -> list[Prediction]: ...

    async def predict_until(self, tasks: list[Any], ctx: Any, pool: Any, deadline: float
                            ) -> list[Prediction | None]: ...

    def model_version(self, ctx: Any) -> str: ...


@dataclass(frozen=True)
class ProjectRecord:
    """What ``/setup`` told the backend about a project, shared with the worker under ``project_key``.

    ``label_config`` is kept in the backend's memory only (Label Studio sends it with every
    request; the worker asks Label Studio); the token is never in a repr, a log or a job argument.
    """

    guideline: str | dict | None = None
    hostname: str | None = None
    access_token: str | None = None
    label_config: str | None = None

    def __repr__(self) -> str:  # the token must not reach logs through a repr
        return f"ProjectRecord(guideline={self.guideline!r}, hostname={self.hostname!r})"

    def encode(self) -> str:
        return json.dumps({"guideline": self.guideline, "hostname": self.hostname, "access_token": self.access_token})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ProjectRecord:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        return cls(data.get("guideline"), data.get("hostname"), data.get("access_token"))

    def size(self) -> int:
        """Roughly the bytes it holds (the backend's project cache is sized in bytes: a config may be 1 MB)."""
        guideline = json.dumps(self.guideline) if self.guideline else ""
        return len(self.label_config or "") + len(guideline) + len(self.hostname or "") + 256


@dataclass(frozen=True)
class Event:
    """What a job needs from one Label Studio webhook call (never the whole body: no task texts, no
    tokens); ``key`` makes the same event delivered twice one job (``jobs.events.parse_event``)."""

    action: str
    project_id: int
    key: str
    task_ids: list[int] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)
    label_config: str | None = None  # only in events parsed from a webhook; queued jobs carry config_hash
    dedupe_ttl: int | None = None
    config_hash: str | None = None  # the config stored under job_config_key (jobs.queue)
    stamp: str | None = None  # Label Studio's "<id>.<created_at>" of the project (studio.tenancy)
    tenant: str | None = None  # the project's Label Studio (set by the backend; None: the configured one)

    @property
    def job_id(self) -> str:
        """The event's job id: the same event delivered twice is one job, two instances' are two."""
        return f"event-{self.action.lower()}-{self.tenant or 'default'}-{self.project_id}-{self.key}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**data)


@dataclass(frozen=True)
class Outcome:
    """One task's pre-annotation (stored under ``outcome_key``): its status, why (when not ok) and
    whether it has valid regions."""

    status: str
    reason: str | None = None
    labeled: bool = False

    def encode(self) -> str:
        return ":".join(p for p in (self.status, self.reason, "labeled" if self.labeled else "") if p)

    @classmethod
    def decode(cls, raw: bytes | str) -> Outcome:
        text = as_text(raw)
        parts = text.split(":")
        labeled = parts[-1] == "labeled"
        if labeled:
            parts = parts[:-1]
        return cls(parts[0], ":".join(parts[1:]) or None, labeled or parts[0] == TaskStatus.OK)
