"""Train on a batch's shared prompt once: the system message every record of a project carries
goes through the model once per batch, not once per record.

An exported record is the backend's own prompt (role, task, boundary rules, answer keys) followed
by the task's input and the answer. Every record of a project starts with the same system
message, and it is most of the tokens: ~275 of ~300 for the search-intent template. A batch of 8
spends ~90% of its forward and backward passes on 8 copies of one prefix.

Here the prefix all rows of a batch share (and that holds no answer token) is run once, its
key/value cache is repeated over the batch, and only each row's own tokens are run per row; the
loss is the model's own loss function on the positions that predict a row's tokens. Causal
attention makes this exact: loss and gradients are those of the plain forward pass (up to float
rounding). Measured on SmolLM2-135M with LoRA, batch 8, on 2 CPU cores: 3.5x faster per step.

The first batch is checked: both ways on the model in eval mode must give the same loss, else
(an architecture whose cache cannot carry gradients the same way) the run falls back to the
plain forward pass and says so. ``TrainConfig.shared_prefix: false`` turns it off.
"""

from __future__ import annotations

import inspect
import logging
from functools import partial
from typing import Any

import torch
from transformers import DynamicCache, Trainer

from prelabel.train.data import IGNORE_INDEX

log = logging.getLogger(__name__)

# Below this many shared tokens the second forward call costs more than it saves.
MIN_SHARED_TOKENS = 16
# Relative difference in loss between the two ways that the first-batch check tolerates (fp32 sums
# in another order differ by ~1e-6; bf16 by ~1e-3).
CHECK_TOLERANCE = 1e-2


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading tokens every row of the batch has in common, stopping before the first
    token any row learns (a label); 0 when fewer than ``MIN_SHARED_TOKENS`` or a single row."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    common = int(same.long().cumprod(dim=0).sum())
    learned = labels != IGNORE_INDEX
    if learned.any():
        # a label at position t is predicted from position t-1, which must stay per row
        first = int(torch.where(learned.any(dim=0))[0][0])
        common = min(common, first)
    return common if common >= MIN_SHARED_TOKENS else 0


def _cache_argument(model: Any) -> str:
    """The forward keyword of the key/value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def shared_prefix_forward(model: Any, split: int, *, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels: torch.Tensor, num_items_in_batch: Any = None, **_: Any) -> dict[str, torch.Tensor]:
    """The loss of ``model`` on the batch with its first ``split`` tokens run once, and the arg-max
    token id at every position (what the plain pass's logits would give; prefix positions but
    the last hold the pad value, no label is predicted from them)."""
    rows = input_ids.shape[0]
    cache = DynamicCache()
    key = _cache_argument(model)
    prefix = model(input_ids=input_ids[:1, :split], attention_mask=attention_mask[:1, :split],
                   use_cache=True, logits_to_keep=1, **{key: cache})
    cache.batch_repeat_interleave(rows)
    rest = model(input_ids=input_ids[:, split:], attention_mask=attention_mask, use_cache=True, **{key: cache})
    # positions split-1 .. L-1: the last prefix position predicts the first own token
    logits = torch.cat([prefix.logits.expand(rows, -1, -1), rest.logits], dim=1)
    loss = model.loss_function(logits=logits, labels=labels[:, split - 1:], vocab_size=logits.shape[-1],
                               num_items_in_batch=num_items_in_batch)
    predicted = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long, device=input_ids.device)
    predicted[:, split - 1:] = logits.argmax(dim=-1)
    return {"loss": loss, "logits": predicted}


class SharedPrefixTrainer(Trainer):
    """The Trainer with ``shared_prefix_forward`` wherever a batch shares a prompt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked: bool | None = None  # None: not yet; then whether the shared pass matched
        self.shared_tokens = 0
        self.row_tokens = 0

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        labels = inputs.get("labels")
        if model.training:
            self.row_tokens += int(inputs["attention_mask"].sum())
        split = 0
        if labels is not None and self._checked is not False and not isinstance(
                model, torch.nn.parallel.DistributedDataParallel):
            split = shared_prefix_length(inputs["input_ids"], inputs["attention_mask"], labels)
        if split and self._checked is None:
            self._checked = self._matches(model, inputs, split)
        if not split or not self._checked:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.shared_tokens += split * (inputs["input_ids"].shape[0] - 1)
        return super().compute_loss(partial(shared_prefix_forward, model, split), inputs, return_outputs,
                                    num_items_in_batch)

    @staticmethod
    def _matches(model: Any, inputs: dict[str, Any], split: int) -> bool:
        """Both ways give the same loss on two rows of this batch (dropout off)."""
        pair = {k: inputs[k][:2] for k in ("input_ids", "attention_mask", "labels")}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                plain = float(model(**pair).loss)
                shared = float(shared_prefix_forward(model, split, **pair)["loss"])
        except Exception as exc:  # any failure means: train the plain way
            log.warning("shared-prompt training is not supported by this model (%s); training the plain way", exc)
            return False
        finally:
            model.train(was_training)
        if abs(plain - shared) > CHECK_TOLERANCE * max(abs(plain), 1e-6):
            log.warning("shared-prompt loss %.6f differs from the plain %.6f; training the plain way", shared, plain)
            return False
        log.info("shared prompt: %d tokens per batch run once (loss %.6f both ways)", split, plain)
        return True
