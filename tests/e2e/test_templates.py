"""Every shipped template: valid in real Label Studio and pre-annotated validly end to end.

For each ``label_config/templates/<name>.xml``: the project is created in Label Studio (which
validates the config), its guideline fits the config (``prelabel config check``), three sample
tasks are pre-annotated through the backend connected as the project's ML backend, and every
stored region is checked against its control: choices in the set (one for single choice),
ratings and numbers in range, spans equal to the text at their offsets, rankings a permutation of
the listed items. Each template must yield at least one valid region on its samples and no task
may end in ``error`` (an LLM outage or a bug); ``needs_human`` is allowed (an invalid answer left
for a human). SmolLM2-135M is tiny: this checks validity, never correctness.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from prelabel.stack.processes import ManagedProcess, child_env
from tests.servers import dev_bin
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TEMPLATES = Path(__file__).resolve().parents[2] / "label_config" / "templates"
NAMES = sorted(p.stem for p in TEMPLATES.glob("*.xml"))
TASKS_PER_TEMPLATE = 3


def test_every_template_has_a_guideline_and_samples() -> None:
    assert len(NAMES) >= 6, NAMES
    for name in NAMES:
        assert (TEMPLATES / f"{name}.yaml").is_file(), f"{name}: no guideline"
        samples = (TEMPLATES / f"{name}.sample.jsonl").read_text().splitlines()
        assert len(samples) >= 8, f"{name}: too few sample tasks"
        check = subprocess.run([dev_bin("prelabel"), "config", "check", str(TEMPLATES / f"{name}.xml"), "-g", name],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"


@pytest.fixture(scope="module")
def templates_backend(backend_factory, label_studio, redis_url):
    """The backend and a worker, as `prelabel up` runs them: on a busy machine /predict answers
    what it can before Label Studio's deadline and hands the rest to the worker."""
    backend = backend_factory.start(label_studio=label_studio, name="templates-backend",
                                    env={"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/14"})
    worker = ManagedProcess("templates-worker", [dev_bin("prelabel"), "worker"],
                            log_path=backend.workdir / "worker.log", env=child_env(None, backend.env),
                            cwd=backend.workdir).start()
    yield backend
    worker.stop()


def _problems(interface: LabelInterface, config: str, region: dict, data: dict) -> list[str]:
    problems = list(interface.validate_region(region, return_errors=True) or [])
    control = interface.get_control(region["from_name"])
    value = region["value"]
    if region["type"] == "choices":
        allowed = set(control.labels)
        if not set(value["choices"]) <= allowed:
            problems.append(f"{value['choices']} not in {sorted(allowed)}")
        if control.attr.get("choice", "single") != "multiple" and len(value["choices"]) != 1:
            problems.append(f"single choice with {value['choices']}")
    elif region["type"] == "rating":
        top = int(control.attr.get("maxRating", 5))
        if not 1 <= value["rating"] <= top:
            problems.append(f"rating {value['rating']} not in 1..{top}")
    elif region["type"] == "number":
        low, high = float(control.attr.get("min", "-inf")), float(control.attr.get("max", "inf"))
        if not low <= value["number"] <= high:
            problems.append(f"number {value['number']} not in {low}..{high}")
    elif region["type"] == "ranker":
        items = data[interface.get_object(region["to_name"]).value.lstrip("$")]
        buckets = [b.attrib["name"] for b in ET.fromstring(config).iter("Bucket")]
        # without buckets the order is under the control's name; with buckets each rank (a tie
        # group) is under its bucket's name
        keys = buckets or [region["from_name"]]
        if set(value["ranker"]) - set(keys):
            problems.append(f"ranking keys {sorted(value['ranker'])} are not {keys}")
        order = [item for key in keys for item in value["ranker"].get(key, [])]
        if sorted(order) != sorted(item["id"] for item in items) or len(set(order)) != len(order):
            problems.append(f"ranking {value['ranker']} is not a permutation of the items")
    elif region["type"] == "labels":
        text = data[interface.get_object(region["to_name"]).value.lstrip("$")]
        if text[value["start"]:value["end"]] != value["text"]:
            problems.append(f"span {value['start']}:{value['end']} is not {value['text']!r}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_template_pre_annotated_in_label_studio(name: str, label_studio, templates_backend) -> None:
    config = (TEMPLATES / f"{name}.xml").read_text()
    tasks = [json.loads(line) for line in (TEMPLATES / f"{name}.sample.jsonl").read_text().splitlines()]
    client = label_studio.sdk()
    project = client.projects.create(title=f"template {name}", label_config=config)
    client.projects.import_tasks(id=project.id, request=tasks[:TASKS_PER_TEMPLATE])
    client.ml.create(project=project.id, url=templates_backend.url, title="prelabel", is_interactive=False,
                     extra_params={"guideline": name})
    # Label Studio answers when /predict returns (it waits up to ML_TIMEOUT_PREDICT, 100 s): the
    # SDK's own 60 s must not cut that short on a busy machine.
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []}, request_options={"timeout_in_seconds": 150})
    predictions = wait_for(lambda: (p := list(client.predictions.list(project=project.id)))
                           and len(p) >= TASKS_PER_TEMPLATE and p, 300, f"{name}: predictions")
    stored = {t.id: t.data for t in client.tasks.list(project=project.id, fields="all")}
    interface = LabelInterface(config)
    regions = 0
    for prediction in predictions:
        data = prediction.model_dump()
        assert 0.0 <= data["score"] <= 1.0
        assert data["model_version"].partition("#")[2] in ("", "needs_human"), (name, data["model_version"])
        for region in data["result"]:
            regions += 1
            assert not _problems(interface, config, region, stored[data["task"]]), (name, region)
    statuses = [p.model_version.partition("#")[2] or "ok" for p in predictions]
    assert regions >= 1, f"{name}: no valid region on {len(predictions)} sample tasks (statuses {statuses})"
