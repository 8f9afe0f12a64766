"""Inference engines for evaluation: vLLM (GPU, offline batch), any OpenAI-compatible endpoint,
and transformers (the CPU fallback). All take the same chat messages and answer greedily; ``make_engine``
also builds the ``backend`` engine (``train/backend_engine.py``), which pre-annotates task data instead.

* ``vllm``: guided decoding to the label set (``choice``) or a JSON schema, prefix caching (the
  instruction is shared by every test item). Imported lazily: it is the ``gpu`` extra.
* ``openai``: the model behind a server (vLLM, llama.cpp, a hosted API): what the backend calls.
  A request that fails after the client's retries aborts the evaluation: a comparison where one
  side's server was down must not decide a promotion.
* ``transformers``: local model directory, GGUF file, or base + LoRA adapter; batched greedy
  generation with left padding.

Each answer carries a confidence (the probability of the generated sequence) when the engine
exposes token log-probabilities, for the cost-cascade analysis.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prelabel.logs import redact
from prelabel.train.backend_engine import BackendEngine
from prelabel.train.engine_types import AnswerFormat, Engine, EngineError, Generation

log = logging.getLogger(__name__)


def _probability(logprobs: list[float]) -> float | None:
    return math.exp(sum(logprobs)) if logprobs else None


class TransformersEngine:
    name = "transformers"
    latency_mode = "batch"

    def __init__(self, model: str | Path, *, adapter: str | Path | None = None, max_new_tokens: int = 64,
                 batch_size: int = 16, template: str = "default") -> None:
        from prelabel.train.models import (
            ModelRef,
            load_model,
            load_tokenizer,
            resolve_model,
            resolve_precision,
        )

        ref = resolve_model(model)
        self.model = str(ref.path) + (f"+{adapter}" if adapter else "")
        self.tokenizer = load_tokenizer(ModelRef(Path(adapter)) if adapter else ref, template)
        self.tokenizer.padding_side = "left"
        self.dtype = resolve_precision("auto")  # bf16/fp16 on a GPU, fp32 on CPU
        self.lm = load_model(ref, self.dtype)
        if adapter:
            from peft import PeftModel

            self.lm = PeftModel.from_pretrained(self.lm, str(adapter))
        self.lm.eval()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy", "guided": False, "dtype": self.dtype}

    def generate(self, conversations: list[list[dict[str, str]]], fmt: AnswerFormat | None) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            results.extend(self._batch(conversations[start : start + self.batch_size]))
        return results

    def _batch(self, conversations: list[list[dict[str, str]]]) -> list[Generation]:
        import torch

        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in conversations]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {key: value.to(self.lm.device) for key, value in batch.items()}
        started = time.perf_counter()
        with torch.no_grad():
            out = self.lm.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                return_dict_in_generate=True, output_scores=True,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - started
        width = batch["input_ids"].shape[1]
        new = out.sequences[:, width:]
        scores = self.lm.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        results = []
        for row in range(new.shape[0]):
            ids, logprobs = [], []
            for token, logprob in zip(new[row].tolist(), scores[row].tolist()):
                if token == self.tokenizer.eos_token_id:
                    logprobs.append(logprob)
                    break
                ids.append(token)
                logprobs.append(logprob)
            results.append(Generation(
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                latency_s=elapsed,
                prompt_tokens=int(batch["attention_mask"][row].sum()),
                completion_tokens=len(logprobs),
                confidence=_probability(logprobs),
            ))
        return results

    def close(self) -> None:
        del self.lm


class OpenAIEngine:
    name = "openai"
    latency_mode = "per_request"

    def __init__(self, model: str, *, base_url: str, api_key: str = "not-needed", max_new_tokens: int = 64,
                 concurrency: int = 8, timeout: float = 120.0) -> None:
        import openai

        self.model = model
        self.base_url = base_url.rstrip("/")
        self._secrets = [api_key]
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=3)
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency
        self.logprobs = True

    def describe(self) -> dict[str, Any]:
        host = self.base_url.split("://", 1)[-1].rsplit("@", 1)[-1]  # never credentials in a URL
        return {"engine": self.name, "model": self.model, "endpoint": host, "max_new_tokens": self.max_new_tokens,
                "decoding": "temperature 0", "guided": False, "concurrency": self.concurrency}

    def generate(self, conversations: list[list[dict[str, str]]], fmt: AnswerFormat | None) -> list[Generation]:
        if conversations:
            first = self._one(conversations[0])  # settles whether the server gives logprobs
            with ThreadPoolExecutor(self.concurrency) as pool:
                return [first, *pool.map(self._one, conversations[1:])]
        return []

    def _one(self, messages: list[dict[str, str]]) -> Generation:
        import openai

        started = time.perf_counter()
        try:
            try:
                response = self._create(messages)
            except openai.BadRequestError:
                if not self.logprobs:
                    raise
                self.logprobs = False  # a server without logprobs support: ask without, remember
                response = self._create(messages)
        except openai.OpenAIError as exc:
            raise EngineError(redact(f"{self.describe()['endpoint']}: {type(exc).__name__}: {exc}",
                                     self._secrets)) from None
        choice = response.choices[0]
        tokens = getattr(getattr(choice, "logprobs", None), "content", None) or []
        usage = response.usage
        return Generation(
            text=choice.message.content or "",
            latency_s=time.perf_counter() - started,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            confidence=_probability([t.logprob for t in tokens]),
        )

    def _create(self, messages: list[dict[str, str]]) -> Any:
        # One request dict, as prediction/llm_client.py sends: logprobs are left out (not sent as false)
        # once a server refused them, and the openai releases we allow (1.x to 3.x) spell "left out"
        # differently in their typed parameters (NOT_GIVEN, omit).
        request: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0.0,
                                   "max_tokens": self.max_new_tokens}
        if self.logprobs:
            request.update(logprobs=True, top_logprobs=1)
        return self.client.chat.completions.create(**request)

    def close(self) -> None:
        self.client.close()


class VLLMEngine:
    name = "vllm"
    latency_mode = "batch"

    def __init__(self, model: str | Path, *, max_new_tokens: int = 64, max_model_len: int = 4096,
                 gpu_memory_utilization: float = 0.85, dtype: str = "auto") -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise EngineError("engine vllm needs the vllm package (pip install 'prelabel[gpu]')") from None
        from prelabel.train.models import cuda_available

        if not cuda_available():
            raise EngineError("engine vllm needs a CUDA GPU; use --engine transformers on CPU")
        self.model = str(model)
        self.max_new_tokens = max_new_tokens
        self.llm = LLM(model=self.model, dtype=dtype, enable_prefix_caching=True, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, seed=0)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy", "guided": True, "prefix_caching": True}

    def generate(self, conversations: list[list[dict[str, str]]], fmt: AnswerFormat | None) -> list[Generation]:
        params = self._sampling(fmt)
        started = time.perf_counter()
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        results = []
        for output in outputs:
            completion = output.outputs[0]
            logprob = completion.cumulative_logprob
            results.append(Generation(
                text=completion.text,
                latency_s=elapsed,
                prompt_tokens=len(output.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids),
                confidence=math.exp(logprob) if logprob is not None else None,
            ))
        return results

    def _sampling(self, fmt: AnswerFormat | None) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {"temperature": 0.0, "max_tokens": self.max_new_tokens, "logprobs": 1}
        if fmt is not None and (fmt.choices or fmt.json_schema):
            # guided decoding to the label set or the answer's JSON schema (the `gpu` extra's vLLM)
            from vllm.sampling_params import StructuredOutputsParams

            spec = {"choice": list(fmt.choices)} if fmt.choices else {"json": fmt.json_schema}
            kwargs["structured_outputs"] = StructuredOutputsParams(**spec)
        return SamplingParams(**kwargs)

    def close(self) -> None:
        del self.llm


def vllm_usable() -> bool:
    import importlib.util

    from prelabel.train.models import cuda_available

    return importlib.util.find_spec("vllm") is not None and cuda_available()


def make_engine(
    engine: str, model: str, *, base_url: str | None = None, api_key: str | None = None,
    adapter: str | None = None, max_new_tokens: int = 64, batch_size: int = 16, concurrency: int = 8,
) -> Engine:
    """Build an engine; ``auto`` = vllm when installed with a GPU, else transformers."""
    if engine == "auto":
        engine = "openai" if base_url else ("vllm" if vllm_usable() else "transformers")
    if engine == "openai":
        if not base_url:
            raise EngineError("engine openai needs --base-url (the OpenAI-compatible endpoint)")
        return OpenAIEngine(model, base_url=base_url, api_key=api_key or "not-needed",
                            max_new_tokens=max_new_tokens, concurrency=concurrency)
    if engine == "vllm":
        if adapter:
            raise EngineError("engine vllm evaluates merged models; run `prelabel train merge` first")
        return VLLMEngine(model, max_new_tokens=max_new_tokens)
    if engine == "transformers":
        return TransformersEngine(model, adapter=adapter, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if engine == "backend":
        if not base_url:
            raise EngineError("engine backend needs --base-url (the server the backend would call)")
        return BackendEngine(model, base_url=base_url, concurrency=concurrency)
    raise EngineError(f"unknown engine {engine!r} (vllm, openai, transformers, backend)")
