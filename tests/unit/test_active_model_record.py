"""The active-model record (``prelabel.contract.ActiveModel``): promotion writes it, the model router,
``prelabel up`` and the training CLI read it; writer and parser agree, and a record no reader could
route to is refused with a reason instead of being half-used."""

from __future__ import annotations

import json

import pytest

from prelabel.contract import ActiveModel, active_model_json, as_active_model, parse_active_model


def test_a_promotion_record_round_trips() -> None:
    record: ActiveModel = {
        "model": "prelabel-7-r2", "base_url": "http://127.0.0.1:8011/v1", "prompt_style": "compact", "fewshot_k": 0,
        "project": "7", "promoted_at": "2026-12-04T22:00:00+00:00", "decision_id": "abc123",
        "cascade": {"threshold": 0.8, "fallback_model": "smollm2", "fallback_base_url": "http://127.0.0.1:8000/v1",
                    "fallback_prompt_style": None, "fallback_fewshot_k": None},
        "previous": {"model": "smollm2", "base_url": "http://127.0.0.1:8000/v1"}, "gguf": "/m.gguf",
        "served_by": "llama.cpp"}
    assert parse_active_model(active_model_json(record)) == record
    assert parse_active_model(active_model_json(record).encode()) == record, "Redis returns bytes"


@pytest.mark.parametrize(("raw", "reason"), [
    ('["smollm2"]', "JSON object"),
    ('{"model": "smollm2"}', "base_url"),
    ('{"base_url": "http://x/v1", "model": ""}', "model"),
    ('{"model": 3, "base_url": "http://x/v1"}', "model"),
])
def test_a_record_no_reader_could_route_to_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_active_model(raw)


def test_the_writer_refuses_what_the_parser_would() -> None:
    with pytest.raises(ValueError, match="base_url"):
        active_model_json({"model": "m"})  # type: ignore[typeddict-item]
    assert json.loads(active_model_json(as_active_model({"model": "m", "base_url": "u"}))) == {"model": "m",
                                                                                            "base_url": "u"}
