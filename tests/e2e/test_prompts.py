"""``prelabel prompts``: guideline versions judged on a real Label Studio project's human labels with
the local model, activated without restarting the backend, resolved from any ``p-<hash>``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from prelabel.label_config.guideline import load_guideline
from tests.servers import dev_bin
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config" / "templates" / "search_intent.xml").read_text()
LABELED = [json.loads(line) for line in (ROOT / "tests/data/search_intent_labeled.jsonl").read_text().splitlines()]
HUMAN = [LABELED[i] for i in (0, 5, 10, 15, 20, 25)]  # one query per intent
VARIANT_RULE = "A query that names a streaming service together with a title is entertainment."


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> Path:
    """The shipped guideline with one more boundary rule and a stricter when-unsure rule: a new version."""
    guideline = load_guideline("search_intent").model_dump(mode="json")
    guideline["rules"].append(VARIANT_RULE)
    guideline["when_unsure"] = 'Choose "other" whenever two definitions could apply.'
    path = tmp_path_factory.mktemp("guidelines") / "search_intent_v2.yaml"
    path.write_text(yaml.safe_dump(guideline, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def env(label_studio, llm_server, redis_url, tmp_path_factory) -> dict[str, str]:
    scrub = {k for k in os.environ if k.startswith(("PRELABEL_", "OPENAI_", "LABEL_STUDIO_")) or k == "REDIS_URL"}
    return {**{k: v for k, v in os.environ.items() if k not in scrub},
            "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.api_key,
            "OPENAI_BASE_URL": llm_server.base_url, "OPENAI_API_KEY": llm_server.api_key,
            "PRELABEL_LLM_MODEL": llm_server.model, "PRELABEL_STRUCTURED_OUTPUT": llm_server.structured_output,
            "REDIS_URL": redis_url, "PRELABEL_DATA_DIR": str(tmp_path_factory.mktemp("prompts-data"))}


def prompts(env: dict[str, str], *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dev_bin("prelabel"), "prompts", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def labeled_project(label_studio, rows: list[dict]) -> int:
    """A search-intent project whose tasks a human (the admin) labeled in Label Studio."""
    client = label_studio.sdk()
    project = client.projects.create(title=f"prompts-{uuid.uuid4().hex[:8]}", label_config=CONFIG)
    ids = client.projects.import_tasks(id=project.id, request=[{"text": r["text"]} for r in rows],
                                       return_task_ids=True).task_ids
    for task_id, row in zip(ids, rows):
        if row.get("label"):
            client.annotations.create(id=task_id, result=[{"from_name": "intent", "to_name": "text", "type": "choices",
                                                           "value": {"choices": [row["label"]]}}])
    return project.id


def test_two_guideline_versions_evaluated_on_human_labels(label_studio, env, variant, tmp_path) -> None:
    project = labeled_project(label_studio, HUMAN + [{"text": "weather in paris tomorrow"}])  # last: unlabeled
    out = tmp_path / "eval"
    done = prompts(env, "eval", "--project", str(project), "--guideline", str(variant), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    current, candidate = report["current"], report["candidate"]
    assert report["tasks"] and len(report["tasks"]) == len(HUMAN) == current["n"] == candidate["n"]
    assert report["skipped"] == {"unlabeled": 1}
    shipped, changed = load_guideline("search_intent"), load_guideline(variant)
    assert current["guideline_hash"] == shipped.hash and candidate["guideline_hash"] == changed.hash
    assert current["prompt_version"] != candidate["prompt_version"]
    for side in (current, candidate):
        for key in ("exact_match", "macro_f1", "invalid_rate", "needs_human_rate", "error_rate"):
            assert 0.0 <= side[key] <= 1.0, (key, side[key])
        assert side["error_rate"] == 0.0  # the local model answered every task
        assert side["tokens_per_task"] > 0 and side["seconds_per_task"] > 0
        assert set(side["controls"]["intent"]["per_class"]) == set(shipped.labels["intent"])
        assert (out / side["controls"]["intent"]["confusion_png"]).read_bytes().startswith(b"\x89PNG")
        assert side["controls"]["intent"]["accuracy"] == pytest.approx(side["exact_match"])  # one control
    humans = {r["text"]: r["label"] for r in HUMAN}
    for row in report["changed"]:
        assert row["current"] != row["candidate"]
        assert row["human"] == {"intent": humans[row["text"]]}
        assert row["current_correct"] == (row["current"] == row["human"])
    assert report["changed_count"] == len(report["changed"])
    assert "macro-F1" in done.stdout and f"{len(HUMAN)} human-verified tasks" in done.stdout
    assert "| exact match |" in (out / "report.md").read_text()

    listed = prompts(env, "history", "--project", str(project))
    assert listed.returncode == 0, listed.stderr
    assert current["model_version"] in listed.stdout and candidate["model_version"] in listed.stdout

    shown = prompts(env, "show", candidate["prompt_version"])
    assert shown.returncode == 0, shown.stderr
    assert VARIANT_RULE in shown.stdout and changed.hash in shown.stdout


def test_switching_the_active_version_changes_new_predictions(label_studio, backend_factory, env, variant) -> None:
    backend = backend_factory.start(label_studio=label_studio, name="prompts-backend",
                                    env={"REDIS_URL": env["REDIS_URL"]})
    client = label_studio.sdk()
    project = labeled_project(label_studio, [{"text": "netflix stranger things"}])
    client.ml.create(project=project, url=backend.url, title="prelabel", is_interactive=False,
                     extra_params={"guideline": "search_intent"})

    def retrieve() -> list:
        client.actions.create(id="retrieve_tasks_predictions", project=project,
                              selected_items={"all": True, "excluded": []})
        return sorted(client.predictions.list(project=project), key=lambda p: p.id)

    [before] = wait_for(retrieve, 120, "the first pre-annotation")
    used = prompts(env, "use", "--project", str(project), "--guideline", str(variant))
    assert used.returncode == 0, used.stderr
    new_version = re.search(r"prompt version (p-[0-9a-f]{10})", used.stdout).group(1)
    assert new_version not in before.model_version

    # no restart: Label Studio's next retrieve runs /setup and /predict, which read the active version
    predictions = wait_for(lambda: (p := retrieve()) and len(p) == 2 and p, 120, "a pre-annotation of the new version")
    after = predictions[-1]
    assert after.model_version.split("#")[0] == f"{env['PRELABEL_LLM_MODEL']}@{new_version}"
    variant_hash = load_guideline(variant).hash
    assert all(r["prelabel"]["guideline_hash"] == variant_hash for r in after.result)
    shown = prompts(env, "show", new_version)
    assert VARIANT_RULE in shown.stdout  # the model_version resolves to the exact prompt

    history = prompts(env, "history", "--project", str(project))
    assert new_version in history.stdout and "(active)" in history.stdout
    back = prompts(env, "use", "--project", str(project), "--guideline", before.model_version.split("@")[1])
    assert back.returncode == 0 and "was search-intent" in back.stdout, back.stdout + back.stderr


def test_unknown_project_or_no_verified_tasks_is_a_clear_error(label_studio, env) -> None:
    missing = prompts(env, "eval", "--project", "987654")
    assert missing.returncode == 2 and "Label Studio has no project 987654" in missing.stderr, missing.stderr
    unlabeled = labeled_project(label_studio, [{"text": "facebook login"}, {"text": "youtube"}])
    empty = prompts(env, "eval", "--project", str(unlabeled))
    assert empty.returncode == 2
    assert f"project {unlabeled} has no human-verified tasks to evaluate on (2 tasks: 2 unlabeled)" in \
        " ".join(empty.stderr.split()), empty.stderr
    assert prompts(env, "use", "--project", "987654", "--guideline", "search_intent").returncode == 2
    unknown = prompts(env, "show", "p-0000000000")
    assert unknown.returncode == 1 and "is not stored here" in unknown.stderr
