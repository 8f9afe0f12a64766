"""Training on a batch's shared prompt once gives the plain forward pass's loss, gradients and
metrics (``train/shared_prefix.py``), on a tiny local Llama with LoRA; a model where the two ways
disagree is trained the plain way."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")
pytest.importorskip("peft", reason="needs the train extra (PRELABEL_EXTRAS=dev,train)")

from prelabel.train.data import IGNORE_INDEX  # noqa: E402
from prelabel.train.shared_prefix import (  # noqa: E402
    MIN_SHARED_TOKENS,
    shared_prefix_forward,
    shared_prefix_length,
)

SYSTEM = ("You label support messages . Rules : a message about money is billing ; a message about a broken "
          "device is hardware ; anything else is other . Answer with one JSON object and nothing else .")
MESSAGES = {"billing": ["my invoice is wrong", "refund my payment please", "why was I charged twice"],
            "hardware": ["the screen is cracked", "my laptop will not start", "the keyboard is broken"],
            "other": ["where is your office", "hello there", "what are your opening hours"]}


def _ids(*rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def test_the_shared_length_stops_at_the_first_difference_padding_or_label() -> None:
    common = list(range(1, 31))
    ids, mask = _ids(common + [40, 41, 42], common + [50, 51])
    labels = torch.full(ids.shape, IGNORE_INDEX)
    assert shared_prefix_length(ids, mask, labels) == 30
    labels[1, 24] = 7  # a label inside the common part: position 23 must predict it per row
    assert shared_prefix_length(ids, mask, labels) == 24
    short, short_mask = _ids(common[:20], common + [1])  # the first row ends (padding) at 20
    assert shared_prefix_length(short, short_mask, torch.full(short.shape, IGNORE_INDEX)) == 20
    few, few_mask = _ids(common[: MIN_SHARED_TOKENS - 1] + [90], common[: MIN_SHARED_TOKENS - 1] + [91])
    assert shared_prefix_length(few, few_mask, torch.full(few.shape, IGNORE_INDEX)) == 0
    one, one_mask = _ids(common)
    assert shared_prefix_length(one, one_mask, torch.full(one.shape, IGNORE_INDEX)) == 0


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        pad_token_id=0, tie_word_embeddings=False))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    return model


def _batch() -> dict[str, torch.Tensor]:
    prefix = [int(t) for t in torch.randint(3, 97, (40,), generator=torch.Generator().manual_seed(1))]
    ids, mask = _ids(prefix + [5, 6, 7, 8, 9, 10], prefix + [11, 12, 13], prefix + [14, 15, 16, 17])
    labels = ids.clone()
    labels[mask == 0] = IGNORE_INDEX
    labels[:, :42] = IGNORE_INDEX  # the prompt is not learned, the answers (the rows' tails) are
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("num_items", [None, 9])
def test_loss_gradients_and_predictions_equal_the_plain_pass(lora_model, num_items) -> None:
    batch = _batch()
    split = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert split == 40
    lora_model.train()
    lora_model.zero_grad()
    plain = lora_model(**batch, num_items_in_batch=num_items) if num_items else lora_model(**batch)
    plain.loss.backward()
    expected = _grads(lora_model)
    lora_model.zero_grad()
    shared = shared_prefix_forward(lora_model, split, **batch, num_items_in_batch=num_items)
    shared["loss"].backward()
    got = _grads(lora_model)

    assert torch.allclose(shared["loss"], plain.loss, rtol=1e-5), (shared["loss"], plain.loss)
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-7), name
    argmax = plain.logits.argmax(dim=-1)
    assert torch.equal(shared["logits"][:, split - 1:], argmax[:, split - 1:])


def _dataset(root: Path) -> Path:
    from tests.support.flywheel_data import write_dataset

    rows = [{"system": SYSTEM, "instruction": f"# Input\n{text}", "input": "", "output": label}
            for label, texts in MESSAGES.items() for text in texts]
    return write_dataset(root, {"train": rows * 2, "val": rows[::2], "test": rows[1::2]},
                         labels=list(MESSAGES))


def _train(tmp_path: Path, name: str, shared: bool):
    from prelabel.train.config import TrainConfig
    from prelabel.train.lora import train
    from tests.support.tiny_model import build_tiny_model

    texts = [SYSTEM, "# Input"] + [t for texts in MESSAGES.values() for t in texts] + list(MESSAGES)
    model_dir = build_tiny_model(tmp_path / "tiny", texts, hidden_size=128, layers=1)
    config = TrainConfig.model_validate({
        "model_name_or_path": str(model_dir), "dataset_dir": str(_dataset(tmp_path / "data")),
        "output_dir": str(tmp_path / name), "template": "default", "learning_rate": 5e-3, "max_steps": 4,
        "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 6,
        "per_device_eval_batch_size": 5, "lora_dropout": 0.0, "warmup_ratio": 0.0, "shared_prefix": shared})
    return train(config)


def test_training_the_shared_way_gives_the_plain_runs_metrics_and_adapter(tmp_path: Path) -> None:
    import safetensors.torch

    shared = _train(tmp_path, "shared", True)
    plain = _train(tmp_path, "plain", False)
    assert shared.record["shared_prefix_tokens"] > 0 and plain.record["shared_prefix_tokens"] == 0
    for key in ("eval_loss", "eval_accuracy", "eval_answer_token_accuracy"):
        assert shared.final_eval[key] == pytest.approx(plain.final_eval[key], rel=1e-4, abs=1e-6), key
    assert shared.initial_eval["eval_loss"] == pytest.approx(plain.initial_eval["eval_loss"], rel=1e-5)
    a = safetensors.torch.load_file(str(shared.adapter_dir / "adapter_model.safetensors"))
    b = safetensors.torch.load_file(str(plain.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_a_model_the_shared_way_gets_wrong_is_trained_the_plain_way(tmp_path: Path, monkeypatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import prelabel.train.shared_prefix as module

    real = module.shared_prefix_forward

    def off_by_one(model, split, **batch):
        out = real(model, split, **batch)
        return {**out, "loss": out["loss"] + 1.0}

    monkeypatch.setattr(module, "shared_prefix_forward", off_by_one)
    with caplog.at_level("WARNING", logger="prelabel.train.shared_prefix"):
        result = _train(tmp_path, "wrong", True)
    assert result.record["shared_prefix_tokens"] == 0
    assert "training the plain way" in caplog.text
