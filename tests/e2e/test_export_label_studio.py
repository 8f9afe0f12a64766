"""`prelabel export` against a real Label Studio project: only human-verified tasks, clean splits.

The project has tasks annotated by one or two annotators (agreeing and not), a skipped
(cancelled) task, an unannotated task with only a prediction, near-duplicate texts and personal
information. The exported dataset must contain exactly the verified tasks, have disjoint splits
(near-duplicates grouped into one split), a manifest whose counts match the files, and load with
the `datasets` library. Bad project, bad token and an unmappable config fail cleanly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prelabel.stack.processes import child_env
from tests.servers import dev_bin

pytestmark = pytest.mark.e2e

CONFIG = (Path(__file__).resolve().parents[2] / "label_config" / "templates" / "search_intent.xml").read_text()
LABELS = ["navigational", "informational", "transactional", "entertainment", "educational", "other"]


def result(label: str) -> list[dict]:
    return [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def run_export(label_studio, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = child_env(None, {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": token or label_studio.api_key})
    return subprocess.run([dev_bin("prelabel"), "export", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def project(label_studio):
    client = label_studio.sdk()
    project = client.projects.create(title="export e2e", label_config=CONFIG)
    texts = [f"{verb} {thing} {i}" for i, (verb, thing) in enumerate(
        [("buy", "running shoes"), ("how tall is", "mount everest"), ("watch", "funny cat videos"),
         ("learn", "python course"), ("open", "gmail inbox"), ("book", "hotel in rome")] * 5)]
    texts += ["contact me at jane.doe@example.com about the flat", "cheap flights from london to rome tonight",
              "cheap flights from london to rome tonight!", "skipped query", "never labeled query"]
    client.projects.import_tasks(id=project.id, request=[{"text": t} for t in texts])
    tasks = {t.data["text"]: t.id for t in client.tasks.list(project=project.id)}
    second = client.users.create(username="annotator2", email="annotator2@example.com", first_name="Second").id
    for i, text in enumerate(texts[:30]):
        label = LABELS[i % 6]
        client.annotations.create(id=tasks[text], result=result(label))
        if i % 5 == 0:  # two annotators on some tasks; they disagree on every other one
            second_label = label if i % 10 == 0 else "other"
            client.annotations.create(id=tasks[text], result=result(second_label), completed_by=second)
    for text in texts[30:33]:
        client.annotations.create(id=tasks[text], result=result("transactional"))
    client.annotations.create(id=tasks["skipped query"], result=[], was_cancelled=True)
    client.predictions.create(task=tasks["never labeled query"], result=result("other"), model_version="m@p-1")
    return project.id


def test_export_only_verified_disjoint_splits_manifest_and_datasets(label_studio, project, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    done = run_export(label_studio, "--project", str(project), "--format", "alpaca", "--out", str(out),
                      "--group-by", "near_duplicate", "--keep-near-duplicates", "--near-threshold", "0.5",
                      # five tasks per class: under the default of 10, and only a 3:1:1 block of five gives
                      # every class a val and a test task (8:1:1 fills its 10-slot blocks at random)
                      "--rare-classes", "report", "--ratios", "0.6,0.2,0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["tasks"] == 35 and counts["skipped"] == 1 and counts["unlabeled"] == 1
    assert counts["disagreement"] == 2, "two annotators who disagree (tasks 15 and 25): not verified"
    assert len(manifest["annotators"]) == 2 and all(len(a) == 12 for a in manifest["annotators"])
    rows = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    assert {s: len(r) for s, r in rows.items()} == {s: m["count"] for s, m in manifest["splits"].items()}
    assert sum(len(r) for r in rows.values()) == counts["written_rows"]
    inputs = {s: {r["data"]["text"] for r in rs} for s, rs in rows.items()}
    everything = set().union(*inputs.values())
    assert "skipped query" not in everything and "never labeled query" not in everything
    assert all("jane.doe@example.com" not in i for i in everything), "PII not redacted"
    assert not (inputs["train"] & inputs["val"] or inputs["train"] & inputs["test"] or inputs["val"] & inputs["test"])
    near = [s for s, i in inputs.items() if any(x.startswith("cheap flights from london") for x in i)]
    assert len(near) == 1, f"near-duplicates split across {near}"
    assert all(json.loads(r["output"])["intent"] in LABELS for rs in rows.values() for r in rs)
    assert "m@p-1" in manifest["pre_annotation_model_versions"]
    for name, digest in manifest["files"].items():
        import hashlib

        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    text = "\n".join(p.read_text() for p in out.iterdir())
    assert label_studio.api_key not in text, "a token leaked into the export"

    import datasets

    loaded = datasets.load_dataset("json", data_files={s: str(out / f"{s}.jsonl") for s in ("train", "val", "test")})
    assert loaded["train"].num_rows == manifest["splits"]["train"]["count"]
    assert set(loaded["train"].column_names) == {"instruction", "input", "output", "system", "data"}


def test_export_errors_leave_nothing(label_studio, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    unknown = run_export(label_studio, "--project", "99999", "--out", str(out))
    assert unknown.returncode == 2 and "no project 99999" in unknown.stderr
    bad = run_export(label_studio, "--project", "1", "--out", str(out), token="bad-token-xyz")
    assert bad.returncode == 2 and "refused the token" in bad.stderr and "bad-token-xyz" not in bad.stdout + bad.stderr
    client = label_studio.sdk()
    boxes = client.projects.create(title="unmappable", label_config='<View><Image name="img" value="$image"/>'
                                   '<RectangleLabels name="b" toName="img"><Label value="x"/></RectangleLabels></View>')
    unmappable = run_export(label_studio, "--project", str(boxes.id), "--out", str(out))
    assert unmappable.returncode == 2 and "cannot be exported" in unmappable.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    for r in (unknown, bad, unmappable):
        assert "Traceback" not in r.stdout + r.stderr


def test_ranking_ties_in_label_studio_buckets_give_no_preference_pair(label_studio, tmp_path: Path) -> None:
    """The bucketed Ranker template in the real Label Studio: a human ranking with a tie is stored
    as buckets, and the export's pairs skip the tied outputs (K = 4: 6 pairs, 1 tied -> 5)."""
    templates = Path(__file__).resolve().parents[2] / "label_config" / "templates"
    client = label_studio.sdk()
    project = client.projects.create(title="ranking ties", label_config=(templates / "output_ranking.xml").read_text())
    outputs = [{"id": f"o{i}", "title": f"Output {i}", "body": body} for i, body in
               enumerate(["Paris.", "Paris is the capital.", "Lyon.", "Marseille."])]
    client.projects.import_tasks(id=project.id, request=[{"prompt": "Capital of France?", "outputs": outputs},
                                                         {"prompt": "Too few outputs", "outputs": outputs[:3]}])
    tasks = list(client.tasks.list(project=project.id))
    ranking = {"rank_1": ["o1"], "rank_2": ["o0"], "rank_3": ["o2", "o3"]}  # Lyon and Marseille: equally wrong
    for t in tasks:
        client.annotations.create(id=t.id, result=[{"from_name": "ranking", "to_name": "outputs", "type": "ranker",
                                                    "value": {"ranker": ranking if len(t.data["outputs"]) == 4 else
                                                              {"rank_1": ["o0", "o1", "o2"]}}}])
    stored = next(t for t in client.tasks.list(project=project.id, fields="all") if len(t.data["outputs"]) == 4)
    assert stored.annotations[0]["result"][0]["value"]["ranker"] == ranking, "Label Studio keeps the buckets"
    out = tmp_path / "pairs"
    done = run_export(label_studio, "--project", str(project.id), "--format", "pairwise", "--out", str(out),
                      "--ratios", "1,0,0")
    assert done.returncode == 0, done.stdout + done.stderr
    pairs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(pairs) == 5
    assert {"Lyon.", "Marseille."} != {pairs[0]["chosen"], pairs[0]["rejected"]}
    assert not any({p["chosen"], p["rejected"]} == {"Lyon.", "Marseille."} for p in pairs)
    assert all(p["chosen"] != "Lyon." and p["chosen"] != "Marseille." for p in pairs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["bad_task_data"] == 1, "K = 3 is outside the practice's 4..9"


def test_flight_slots_template_with_class_and_required_cities_is_valid_in_label_studio(label_studio) -> None:
    templates = Path(__file__).resolve().parents[2] / "label_config" / "templates"
    client = label_studio.sdk()
    project = client.projects.create(title="flight slots", label_config=(templates / "flight_slots.xml").read_text())
    client.projects.import_tasks(id=project.id, request=[{"text": "Fly me from Madrid to Paris tomorrow"}])
    task = next(iter(client.tasks.list(project=project.id)))
    result = [{"from_name": "class", "to_name": "text", "type": "choices", "value": {"choices": ["economy"]}},
              {"from_name": "date", "to_name": "text", "type": "textarea", "value": {"text": ["tomorrow"]}}]
    client.annotations.create(id=task.id, result=result)
    stored = client.tasks.get(id=task.id)
    assert {r["from_name"] for r in stored.annotations[0]["result"]} == {"class", "date"}
