"""The flywheel on the local stack, as a user runs it: `prelabel up`, a labeled project,
`prelabel train flywheel --project N`, and new tasks pre-annotated by the promoted model.

Everything is real: Label Studio, embedded Redis, llama.cpp serving the packaged SmolLM2-135M
(the base pre-annotator) and then the fine-tuned model converted to GGUF, the backend and the
worker. The labeled data is the offline search-intent set (``tests/support/intent_data.py``); the
new tasks use held-out slot values. The same held-out tasks go to a second project that keeps the
base model, so both accuracies are measured through the backend on the same texts.

30 labeled queries per intent is the size measured to promote on the CPU schedule; half of it, 15 per
intent (68 train rows, 17 LoRA steps) reached 0.375 validation accuracy and was kept (0.20 vs 0.10
on 10 test rows, one class dropped). ``PRELABEL_FLYWHEEL_LABELED_PER_INTENT`` changes it for an
experiment; ``benchmarks/flywheel_local.sh`` runs this test and keeps its output (the README's figures).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")

from prelabel.train.gguf import converter_dir
from tests.e2e.test_stack_up import Up
from tests.servers import dev_bin
from tests.support.intent_data import LABELS, labeled_tasks, queries
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CONFIG = (Path(__file__).resolve().parents[2] / "label_config" / "templates" / "search_intent.xml").read_text()
# 180 labeled tasks -> ~139 train / 17 val / 18 test after the export
LABELED_PER_INTENT = int(os.environ.get("PRELABEL_FLYWHEEL_LABELED_PER_INTENT", "30"))
NEW_PER_INTENT = 3  # 18 new tasks with held-out slot values


@pytest.fixture()
def up(tmp_path: Path) -> Iterator[Up]:
    if not (converter_dir() / ".ok").is_file():
        pytest.fail(f"llama.cpp's GGUF converter is not provisioned at {converter_dir()} (scripts/provision.sh)")
    stack = Up(tmp_path / "data")
    # The flywheel is under test, not the reviewer: the second local model (Gemma 3 270M, a 262k
    # vocabulary under a JSON grammar) would review the sample on the same 2 cores as the training.
    stack.env["PRELABEL_REVIEWER_MODEL"] = "smollm2-reviewer"
    stack.env.pop("PRELABEL_TRAIN_CONFIG", None)  # the README's CPU defaults, whatever the shell says
    yield stack
    stack.cli("down")
    if stack.proc is not None:
        stack.proc.stop()


def _predictions(client, project: int) -> dict[str, str]:
    """text -> model_version of the project's pre-annotations (reviews excluded)."""
    texts = {t.id: t.data["text"] for t in client.tasks.list(project=project)}
    return {texts[p.task]: p for p in client.predictions.list(project=project)
            if not p.model_version.startswith("review:")}


def _label(prediction) -> str | None:
    regions = [r for r in prediction.result or [] if r.get("from_name") == "intent"]
    return regions[0]["value"]["choices"][0] if regions else None


@pytest.mark.timeout(3600)  # 36 LoRA steps on CPU (2 epochs), two evaluations, two pre-annotation rounds;
# with a second pytest-xdist worker on the same 2 cores the flywheel alone took 29 min (17 s -> 45 s a step)
def test_flywheel_promotes_and_the_promoted_model_preannotates(up: Up, tmp_path: Path) -> None:
    from prelabel.studio.project_setup import ensure_project

    up.start()
    wait_for(up.ready, 600, "`prelabel up` to report the sample project", context=up.output)
    client = up.client()

    # 1. a project whose tasks people labeled (imported with their annotations)
    labeled = client.projects.create(title="intents (labeled)", label_config=CONFIG)
    client.projects.import_tasks(id=labeled.id, request=labeled_tasks(queries(LABELED_PER_INTENT)))

    # 2. the flywheel: the README's command, next to the running stack, on its CPU defaults
    # (LOCAL_TRAIN: 2 epochs of ~144 train records, batch 8: 36 LoRA steps on the packaged SmolLM2)
    run = subprocess.run([dev_bin("prelabel"), "train", "flywheel", "--project", str(labeled.id)],
                         env=up.env, capture_output=True, text=True, timeout=3000, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads(run.stdout[run.stdout.index("{\n"):])
    assert result["promoted"], result
    record = result["active_record"]
    model = record["model"]
    assert model == f"prelabel-{labeled.id}-{result['run_id']}".lower()
    assert Path(record["gguf"]).is_file() and record["fewshot_k"] == 0 and record["prompt_style"] == "compact"
    assert "[flywheel] gguf" in run.stderr and "[flywheel] eval" in run.stderr, "stages not shown"
    report = Path(result["report"]).read_text()
    assert "PROMOTED" in report and model in report
    candidate = json.loads(Path(result["candidate_report"]).read_text())
    current = json.loads(Path(result["current_report"]).read_text())
    assert candidate["engine"]["engine"] == current["engine"]["engine"] == "backend"
    assert candidate["dataset"]["test_sha256"] == current["dataset"]["test_sha256"]
    assert candidate["accuracy"] > current["accuracy"], (candidate["accuracy"], current["accuracy"])
    print(f"eval through the backend on {candidate.get('n')} test rows: "
          f"fine-tuned accuracy {candidate['accuracy']:.3f}, "
          f"macro-F1 {candidate.get('macro_f1')}; base accuracy {current['accuracy']:.3f}, "
          f"macro-F1 {current.get('macro_f1')}")  # for the README

    # 3. `up` serves the promoted model itself (the flywheel's own server is gone) and says so
    served_at = result["served_at"]
    assert served_at and candidate["engine"]["endpoint"] not in served_at, (served_at, candidate["engine"])
    status = json.loads(up.cli("status", "--json").stdout)
    assert status["models"][str(labeled.id)].startswith(f"{model} at {served_at}"), status["models"]
    assert status["processes"][f"llm-{model}"], status["processes"]
    assert f"pre-annotated by the promoted model {model}" in up.output()

    # 4. new tasks: the labeled project's go to the promoted model, a twin project keeps the base model
    record_file = up.record()
    new = [{"data": {"text": row["text"]}} for row in queries(NEW_PER_INTENT, held_out=True)]
    gold = {row["text"]: row["label"] for row in queries(NEW_PER_INTENT, held_out=True)}
    backend_url = f"http://127.0.0.1:{up.ports['--backend-port']}"
    for title, tasks in (("intents (labeled)", []), ("intents (base model)", new)):
        ensure_project(client, title=title, label_config=CONFIG, tasks=tasks, backend_url=backend_url,
                       webhook_secret=record_file["webhook_secret"], basic_auth=tuple(record_file["basic_auth"]),
                       guideline="search_intent")
    client.projects.import_tasks(id=labeled.id, request=new)
    [base] = [p for p in client.projects.list() if p.title == "intents (base model)"]

    def all_predicted() -> bool:
        return all(set(gold) <= set(_predictions(client, pid)) for pid in (labeled.id, base.id))

    wait_for(all_predicted, 900, "the new tasks of both projects to be pre-annotated",
             context=lambda: (up.data_dir / "stack" / "logs" / "worker.log").read_text()[-3000:])
    tuned = {text: p for text, p in _predictions(client, labeled.id).items() if text in gold}
    baseline = {text: p for text, p in _predictions(client, base.id).items() if text in gold}
    assert all(p.model_version.startswith(f"{model}@p-") for p in tuned.values()), \
        {p.model_version for p in tuned.values()}
    assert all(r["prelabel"]["model"] == model for p in tuned.values() for r in p.result)
    assert all(p.model_version.startswith("smollm2@p-") for p in baseline.values())
    tuned_acc = sum(_label(p) == gold[t] for t, p in tuned.items()) / len(gold)
    base_acc = sum(_label(p) == gold[t] for t, p in baseline.items()) / len(gold)
    assert {_label(p) for p in tuned.values()} <= set(LABELS) | {None}
    assert tuned_acc > base_acc, f"promoted {tuned_acc:.2f} vs base {base_acc:.2f} on {len(gold)} held-out tasks"
    print(f"new held-out tasks: promoted {tuned_acc:.2f}, base {base_acc:.2f} ({len(gold)} tasks)")  # for the README
    # a later `up` serving the promoted GGUF again on a new port: tests/e2e/test_promoted_serving.py
