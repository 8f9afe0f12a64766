"""The shared formats of ``prelabel.contract``: each writer's output parses back to what was written,
and the strings stay the ones Label Studio projects and Redis databases already hold."""

from __future__ import annotations

import json
import typing

import pytest

from prelabel import contract
from prelabel.contract import (
    ModelVersion,
    Prediction,
    RegionStamp,
    ReviewStatus,
    TaskStatus,
    cascade_model,
    is_own_preannotation,
    is_review,
    project_of_key,
    stamp_of,
    status_of,
    with_status,
)

VERSIONS = [
    ModelVersion("smollm2", "p-56db983854"),
    ModelVersion("smollm2", "p-56db983854", TaskStatus.NEEDS_HUMAN),
    ModelVersion("smollm2", "p-56db983854", TaskStatus.ERROR),
    ModelVersion(cascade_model("small-ft", "smollm2"), "p-0a1b", TaskStatus.NEEDS_HUMAN),
    ModelVersion("gemma3-reviewer", "p-56db983854", ReviewStatus.REJECTED, review=True),
    ModelVersion("org/model@rev2", "p-1f", ReviewStatus.REVIEW_ERROR, review=True),
]


@pytest.mark.parametrize("version", VERSIONS, ids=str)
def test_model_version_round_trips(version: ModelVersion) -> None:
    text = str(version)
    assert ModelVersion.parse(text) == version
    assert status_of(text) == version.status
    assert is_review(text) is version.review
    assert is_own_preannotation(text) is not version.review


def test_model_version_keeps_the_strings_label_studio_holds() -> None:
    assert str(VERSIONS[0]) == "smollm2@p-56db983854"  # ok: no suffix
    assert str(VERSIONS[1]) == "smollm2@p-56db983854#needs_human"
    assert str(VERSIONS[3]) == "small-ft>smollm2@p-0a1b#needs_human"
    assert str(VERSIONS[4]) == "review:gemma3-reviewer@p-56db983854#rejected"
    assert with_status("m@p-1", TaskStatus.OK) == "m@p-1"
    assert with_status("review:m@p-1", ReviewStatus.PASSED) == "review:m@p-1#passed"
    assert ModelVersion.parse("smollm2@p-1").task_status == "ok"
    assert ModelVersion.parse("smollm2@p-1#error").task_status == "error"


def test_foreign_model_versions_are_neither_reviews_nor_own() -> None:
    foreign = ModelVersion.parse("my-imported-model-v2")
    assert (foreign.model, foreign.prompt_version, foreign.status) == ("my-imported-model-v2", "", "")
    assert not foreign.review
    assert not is_own_preannotation("my-imported-model-v2")
    assert not is_own_preannotation(None)
    assert status_of(None) == "" and not is_review(None)


def test_statuses_are_the_stored_words() -> None:
    assert [s.value for s in TaskStatus] == ["ok", "needs_human", "error"]
    assert [s.value for s in ReviewStatus] == ["passed", "rejected", "needs_human", "review_error"]
    # A status read back from Redis or JSON is a plain str and must compare and hash as the member.
    assert json.loads(json.dumps({"status": ReviewStatus.REJECTED}))["status"] == ReviewStatus.REJECTED
    assert {"error": 1}[TaskStatus.ERROR] == 1 and f"{TaskStatus.NEEDS_HUMAN}" == "needs_human"


T = contract.tenant_slug("http://ls.example:8080")
P3 = contract.ProjectRef(T, 3)


def test_redis_keys_carry_the_tenant_and_the_id() -> None:
    assert T.startswith("ls") and len(T) == 12 and contract.tenant_slug("http://ls.example:8081") != T
    assert contract.project_key(P3) == f"prelabel:project:{T}:3"
    assert contract.outcome_key(P3) == f"prelabel:outcome:{T}:3"
    assert contract.errored_key(P3) == f"prelabel:errored:{T}:3"
    assert contract.new_labels_key(P3) == f"prelabel:new_labels:{T}:3"
    assert contract.scanned_key(P3) == f"prelabel:reconcile:scanned:{T}:3"
    assert contract.handoff_key(P3, 14) == f"prelabel:handoff:{T}:3:14"
    assert contract.event_marker_key("ev-1") == "prelabel:event:ev-1"
    assert contract.calibration_key(P3, "smollm2") == f"prelabel:calibration:{T}:3:smollm2"
    assert contract.quality_key(P3) == f"prelabel:quality:{T}:3"
    assert contract.train_status_key(P3) == f"prelabel:train:{T}:3"
    assert contract.train_lock_key(P3) == f"prelabel:train:{T}:3:lock"
    assert contract.train_label_count_key(P3) == f"prelabel:train:{T}:3:new_labels"
    assert contract.prediction_cache_key("v1", "ab") == "prelabel:pred:v1:ab"
    base = f"prelabel:fewshot:{T}:3"
    assert contract.fewshot_keys(P3) == (base, f"{base}:order", f"{base}:tasks", f"{base}:version")
    assert contract.active_model_keys(P3) == [f"prelabel:active_model:{T}:3", "prelabel:active_model"]
    assert contract.active_model_keys(None) == ["prelabel:active_model"]


def test_two_instances_projects_with_one_id_have_distinct_keys() -> None:
    other = contract.ProjectRef(contract.tenant_slug("http://other.example"), 3)
    for key in PROJECT_KEYS:
        assert key(P3) != key(other)


def test_project_refs_parse_back_and_refuse_what_is_not_one() -> None:
    assert contract.ProjectRef.parse(str(P3)) == P3 and contract.ProjectRef.parse(str(P3).encode()) == P3
    assert P3.slug == f"{T}-3"
    for text in ("3", f"{T}:", f"{T}:x", "ls:3", f"{T}:3:4", f"{T.upper()}:3"):
        assert contract.ProjectRef.parse(text) is None, text
    for tenant, pid in (("", 3), ("ls12", 3), (T, "3"), (T, True)):
        with pytest.raises(ValueError):
            contract.ProjectRef(tenant, pid)  # type: ignore[arg-type]


def test_project_keys_round_trip_through_the_scan_pattern() -> None:
    pattern = contract.PROJECT_KEY_PATTERN.rstrip("*")
    for pid in (1, 12, 30500):
        key = contract.project_key(contract.ProjectRef(T, pid))
        assert key.startswith(pattern) and project_of_key(key.encode()) == contract.ProjectRef(T, pid)
    # Keys the SCAN pattern also matches but that name no project (a bare id: before tenancy).
    assert project_of_key("prelabel:projection:x") is None
    assert project_of_key("prelabel:project:3") is None
    assert project_of_key(f"prelabel:project:{T}:3:extra") is None
    assert project_of_key("prelabel:project:") is None


# Every project-scoped key function, as a function of the project alone.
PROJECT_KEYS = [
    contract.project_key, contract.task_fields_lock_key, contract.outcome_key, contract.errored_key,
    contract.new_labels_key, contract.scanned_key, lambda p: contract.handoff_key(p, 14),
    lambda p: contract.aftercare_key(p, 14, "m@p-1"), lambda p: contract.calibration_key(p, "m"),
    contract.quality_key, contract.train_status_key, contract.train_lock_key, contract.train_label_count_key,
    contract.active_model_key, contract.active_guideline_key, contract.guideline_history_key,
    contract.prompt_scores_key, contract.supervised_stage_key, contract.stage_scores_key, contract.stage_curve_key,
    contract.stage_answers_key, *(lambda p, i=i: contract.fewshot_keys(p)[i] for i in range(4)),
]


def test_every_key_of_the_format_before_tenancy_has_a_target() -> None:
    """The migration's table covers every project-scoped key: the bare-id form of each (what older
    versions wrote) moves to exactly the key today's code reads; today's keys never match."""
    for key in PROJECT_KEYS:
        new = key(P3)
        old = new.replace(f"{T}:", "", 1)
        assert contract.legacy_key_target(old, T) == new, old
        assert contract.legacy_key_target(old.encode(), T) == new
        assert contract.legacy_key_target(new, T) is None, new
    for other in ("prelabel:active_model", "prelabel:train:decisions", "prelabel:guideline:123456",
                  "prelabel:prompt:p-12", "prelabel:stats:cascade", "prelabel:pred:1:ab", "prelabel:event:x",
                  "rq:job:3", "prelabel:outcomes:3", "prelabel:outcome:3x"):
        assert contract.legacy_key_target(other, T) is None, other


def test_every_key_starts_with_the_prefix_and_no_two_collide() -> None:
    keys = [
        *(key(P3) for key in PROJECT_KEYS), contract.event_marker_key("1"), contract.prediction_cache_key("v1", "1"),
        contract.ACTIVE_MODEL_KEY, contract.TRAIN_DECISIONS_KEY, contract.CASCADE_STATS_KEY, contract.REUSE_STATS_KEY,
        contract.REVIEW_STATS_KEY, contract.REVIEWER_INDEPENDENCE_KEY, contract.TENANT_STAMPS_KEY,
        contract.MIGRATIONS_KEY, contract.WEBHOOK_WIRING_KEY,
    ]
    assert all(key.startswith(contract.PREFIX) for key in keys)
    assert len(set(keys)) == len(keys)


def test_region_stamp_declares_what_the_predictor_copies_and_the_readers_read() -> None:
    declared = set(typing.get_type_hints(RegionStamp))
    assert set(contract.REGION_PROVENANCE) | {"status"} <= declared
    # What ranking (label_probs), calibration (raw_score, model) and review (review) read.
    assert {"label_probs", "label_probs_kind", "raw_score", "model", "review", "route", "reused_from"} <= declared
    assert set(typing.get_type_hints(Prediction)) == {"result", "score", "model_version", "meta"}


def test_stamp_of_tolerates_foreign_regions() -> None:
    assert stamp_of({"from_name": "intent", "prelabel": {"label_probs": {"a": 1.0}}}) == {"label_probs": {"a": 1.0}}
    assert stamp_of({"from_name": "intent"}) == {}
    assert stamp_of({"prelabel": "not a stamp"}) == {}
    assert stamp_of(None) == {}


def test_webhook_header_and_queue_keep_their_names() -> None:
    assert contract.WEBHOOK_HEADER == "X-Prelabel-Secret"  # what Label Studio's webhook is told to send
    assert contract.QUEUE_NAME == "prelabel"  # what running workers listen on
