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
    project_id_of_key,
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


def test_redis_keys_keep_their_names() -> None:
    assert contract.project_key(3) == "prelabel:project:3"
    assert contract.outcome_key(3) == "prelabel:outcome:3"
    assert contract.errored_key(3) == "prelabel:errored:3"
    assert contract.new_labels_key(3) == "prelabel:new_labels:3"
    assert contract.scanned_key(3) == "prelabel:reconcile:scanned:3"
    assert contract.handoff_key(3, 14) == "prelabel:handoff:3:14"
    assert contract.event_marker_key("ev-1") == "prelabel:event:ev-1"
    assert contract.calibration_key(3, "smollm2") == "prelabel:calibration:3:smollm2"
    assert contract.quality_key(3) == "prelabel:quality:3"
    assert contract.train_status_key(3) == "prelabel:train:3"
    assert contract.train_lock_key(3) == "prelabel:train:3:lock"
    assert contract.train_label_count_key(3) == "prelabel:train:3:new_labels"
    assert contract.prediction_cache_key("v1", "ab") == "prelabel:pred:v1:ab"
    assert contract.fewshot_keys(3) == ("prelabel:fewshot:3", "prelabel:fewshot:3:order", "prelabel:fewshot:3:tasks",
                                        "prelabel:fewshot:3:version")
    assert contract.active_model_keys(41) == ["prelabel:active_model:41", "prelabel:active_model"]
    assert contract.active_model_keys(None) == ["prelabel:active_model"]


def test_project_keys_round_trip_through_the_scan_pattern() -> None:
    pattern = contract.PROJECT_KEY_PATTERN.rstrip("*")
    for pid in (1, 12, 30500):
        key = contract.project_key(pid)
        assert key.startswith(pattern) and project_id_of_key(key.encode()) == pid
    # Keys the SCAN pattern also matches but that name no project.
    assert project_id_of_key("prelabel:projection:x") is None
    assert project_id_of_key("prelabel:project:3:extra") is None
    assert project_id_of_key("prelabel:project:") is None


def test_every_key_starts_with_the_prefix_and_no_two_collide() -> None:
    keys = [
        contract.project_key(1), contract.outcome_key(1), contract.errored_key(1), contract.new_labels_key(1),
        contract.scanned_key(1), contract.handoff_key(1, 1), contract.event_marker_key("1"),
        contract.calibration_key(1, "m"), contract.quality_key(1), contract.train_status_key(1),
        contract.train_lock_key(1), contract.train_label_count_key(1), contract.prediction_cache_key("v1", "1"),
        *contract.fewshot_keys(1), contract.active_model_key(1), contract.ACTIVE_MODEL_KEY,
        contract.TRAIN_DECISIONS_KEY, contract.CASCADE_STATS_KEY, contract.REUSE_STATS_KEY,
        contract.REVIEW_STATS_KEY, contract.REVIEWER_INDEPENDENCE_KEY,
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
