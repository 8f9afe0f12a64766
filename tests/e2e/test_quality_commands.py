"""``prelabel annotators`` and ``prelabel quality`` on a real Label Studio and Redis.

Screening: ten tasks carry a ground-truth annotation (the reference); alice labels like it on 9
of them, bob picks a wrong intent on 7. The screening must say so (reference and majority
agreement, per-class accuracy, flags), in its table, annotators.json and annotators.png.

Calibration: a project whose pre-annotations are overconfident (scores near 0.9, right about half
the time): ``prelabel quality`` says "uncalibrated" before any human label, then reports ECE and
AUROC before/after, writes the reliability diagram and stores a map the backend reads.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import redis as redis_lib

from prelabel.contract import calibration_key
from prelabel.stack.processes import child_env
from tests.servers import dev_bin
from tests.support.tenancy import project_ref

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config/templates/search_intent.xml").read_text()
TRUTH = [("facebook login", "navigational"), ("how tall is mount everest", "informational"),
         ("buy running shoes online", "transactional"), ("funny cat videos", "entertainment"),
         ("python tutorial for beginners", "educational"), ("asdfgh", "other"),
         ("netflix sign in", "navigational"), ("what is photosynthesis", "informational"),
         ("order pizza near me", "transactional"), ("learn spanish free", "educational")]
WRONG = {"navigational": "informational", "informational": "transactional", "transactional": "navigational",
         "entertainment": "other", "educational": "entertainment", "other": "educational"}


def region(label: str) -> list[dict]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def test_screening_flags_the_annotator_who_disagrees(label_studio, tmp_path) -> None:
    client = label_studio.sdk()
    users = {name: client.users.create(username=name, email=f"{name}@example.com", first_name=name).id
             for name in ("alice", "bob")}
    project = client.projects.create(title="annotator screening", label_config=CONFIG)
    tasks = []
    for i, (text, label) in enumerate(TRUTH):
        alice = label if i != 3 else WRONG[label]
        bob = WRONG[label] if i < 7 else label
        tasks.append({"data": {"text": text}, "annotations": [
            {"result": region(label), "ground_truth": True},
            {"result": region(alice), "completed_by": users["alice"]},
            {"result": region(bob), "completed_by": users["bob"]}]})
    client.projects.import_tasks(id=project.id, request=tasks)
    # Label Studio marks imported annotations as ground truth: only the reference stays so.
    for task in client.tasks.list(project=project.id, fields="all"):
        for annotation in task.annotations or []:
            who = annotation.get("completed_by") if isinstance(annotation, dict) else annotation.completed_by
            if who in users.values():
                client.annotations.update(id=annotation["id"] if isinstance(annotation, dict) else annotation.id,
                                          ground_truth=False)

    env = child_env(None, {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key})
    out = tmp_path / "screening"
    run = subprocess.run([dev_bin("prelabel"), "annotators", "--project", str(project.id), "--out", str(out),
                          "--bar", "0.8", "--min-tasks", "5"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)  # the screening table, for the record
    report = json.loads((out / "annotators.json").read_text())
    by_id = {a["annotator"]: a for a in report["annotators"]}
    alice = next(a for key, a in by_id.items() if str(users["alice"]) in key or "alice" in key)
    bob = next(a for key, a in by_id.items() if str(users["bob"]) in key or "bob" in key)
    assert alice["tasks"] == bob["tasks"] == 10
    assert alice["reference"] == pytest.approx(0.9) and alice["reference_n"] == 10
    assert bob["reference"] == pytest.approx(0.3)
    assert not [f for f in alice["flags"] if "agreement" in f]
    assert [f for f in bob["flags"] if "agreement" in f]
    assert bob["per_class"]["navigational"]["accuracy"] == 0.0 and alice["per_class"]["navigational"]["accuracy"] == 1.0
    assert "alice" in run.stdout or str(users["alice"]) in run.stdout
    png = out / "annotators.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_quality_reports_calibration_before_and_after_and_stores_the_map(label_studio, redis_url, tmp_path):
    client = label_studio.sdk()
    project = client.projects.create(title="calibration", label_config=CONFIG)
    rng = random.Random(3)
    labels = sorted(WRONG)
    rows = []
    for i in range(60):
        truth = labels[i % len(labels)]
        raw = round(rng.uniform(0.6, 0.99), 4)
        right = rng.random() < (raw - 0.55) * 1.5  # right far less often than the score says
        guess = truth if right else WRONG[truth]
        rows.append((f"query {i}", truth, guess, raw))
    client.projects.import_tasks(id=project.id, request=[{"text": text} for text, *_ in rows])
    tasks = sorted(client.tasks.list(project=project.id), key=lambda t: t.id)
    for task, (_, _, guess, raw) in zip(tasks, rows):
        result = [{**region(guess)[0], "prelabel": {"model": "smollm2", "raw_score": raw}}]
        client.predictions.create(task=task.id, result=result, score=raw, model_version="smollm2@p-test")
    env = child_env(None, {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key,
                           "REDIS_URL": redis_url})
    out = tmp_path / "quality"

    def quality() -> subprocess.CompletedProcess:
        run = subprocess.run([dev_bin("prelabel"), "quality", "--project", str(project.id), "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return run

    before = quality()
    assert "uncalibrated" in before.stdout
    for task, (_, truth, _, _) in zip(tasks, rows):
        client.annotations.create(id=task.id, result=region(truth), was_cancelled=False)
    after = quality()
    print(after.stdout)
    report = json.loads((out / "calibration.json").read_text())["models"][0]
    assert report["model"] == "smollm2" and report["n"] == 60 and report["status"] == "calibrated"
    assert report["after"]["ece"] < report["before"]["ece"]
    png = out / "reliability-smollm2.png"
    assert png.stat().st_size > 10_000
    key = calibration_key(project_ref(label_studio.url, project.id), "smollm2")
    stored = redis_lib.Redis.from_url(redis_url).get(key)
    assert stored and json.loads(stored)["id"] == report["map"]["id"]
