"""Is the reviewer really a different model? Asked of the servers, not of the names we gave them.

A reviewer is only independent if its weights differ from the pre-annotator's. Names prove
nothing (llama.cpp serves any GGUF under any ``--model_alias``), so each server is asked:

* what it serves: ``GET /v1/models`` ids, and the weights it reports where it reports them
  (vLLM's ``root``: the model path or hub id; llama.cpp's native server's ``/props``
  ``model_path``; an id that is itself a ``.gguf`` path when no alias was given);
* how it answers: a fixed greedy probe with ``top_logprobs`` (asked twice, the second answer
  kept, so both servers have the prompt cached alike). The same weights give the same tokens and
  the same alternatives with nearly the same log-probabilities (``TOLERANCE_*`` absorb batching
  noise); different models do not. A very light fine-tune of the same base may be
  indistinguishable by the probe: ``same_weights`` then means "answers like the same weights".
  This works for every OpenAI-compatible server that returns logprobs, llama-cpp-python
  included, which reports nothing about its weights.

``compare`` gives ``different_weights``, ``same_weights`` or ``unknown`` (neither reports weights
nor logprobs) with the evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

PROBE = [{"role": "user", "content": "Complete with one word. The capital of France is"}]
PROBE_TOKENS = 4
# Same weights, same server build: the numbers still move a little with how much of the prompt
# the server had cached (llama.cpp evaluates a cached prefix in other batches: up to ~0.2 on one
# alternative of a Q4 model, measured). Different models differ in the alternatives themselves.
TOLERANCE_MEAN = 0.1  # mean |logprob difference| over all compared alternatives
TOLERANCE_MAX = 0.4  # and no single one further apart than this
SAME, DIFFERENT, UNKNOWN = "same_weights", "different_weights", "unknown"


@dataclass
class ServerIdentity:
    endpoint: str  # host:port, never credentials
    model: str  # the name we send
    served: list[str] = field(default_factory=list)  # ids the server lists
    weights: str | None = None  # what it reports about its weights, when it does
    probe: list[list[tuple[str, float]]] | None = None  # per probe token: its top alternatives
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host(base_url: str) -> str:
    return base_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def _weights(models: list[dict[str, Any]], model: str, props: dict[str, Any] | None) -> str | None:
    entry = next((m for m in models if m.get("id") == model), models[0] if len(models) == 1 else None)
    if props and props.get("model_path"):
        return str(props["model_path"])
    if entry is None:
        return None
    if entry.get("root"):
        return str(entry["root"])
    if str(entry.get("id", "")).endswith(".gguf"):
        return str(entry["id"])
    return None


def identify(base_url: str, api_key: str, model: str, timeout: float = 60.0) -> ServerIdentity:
    """Ask one server what it serves and how it answers the probe (blocking)."""
    base = base_url.rstrip("/")
    identity = ServerIdentity(_host(base), model)
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(timeout=timeout, headers=headers) as http:
            listed = http.get(f"{base}/models")
            models = listed.json().get("data", []) if listed.status_code == 200 else []
            identity.served = [str(m.get("id")) for m in models]
            props = None
            root = base.removesuffix("/v1")
            answer = http.get(f"{root}/props")
            if answer.status_code == 200 and "json" in answer.headers.get("content-type", ""):
                props = answer.json()
            identity.weights = _weights(models, model, props)
            request = {"model": model, "messages": PROBE, "temperature": 0.0, "max_tokens": PROBE_TOKENS,
                       "logprobs": True, "top_logprobs": 5, "seed": 0}
            # A base (not chat-tuned) model may end its turn at once: then ask for JSON, which
            # grammar-constrained servers make it write.
            for extra in ({}, {"response_format": {"type": "json_object"}}):
                http.post(f"{base}/chat/completions", json=request | extra)  # warm-up: the prompt cached
                reply = http.post(f"{base}/chat/completions", json=request | extra)
                if reply.status_code != 200:
                    continue
                content = ((reply.json().get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
                identity.probe = [[(str(t["token"]), float(t["logprob"]))]
                                  + [(str(a["token"]), float(a["logprob"])) for a in t.get("top_logprobs") or []]
                                  for t in content] or None
                if identity.probe:
                    break
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        identity.error = f"{type(exc).__name__}: {str(exc)[:120]}"
    return identity


def _same_probe(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> bool:
    """Same emitted tokens, same alternatives (as sets: near-equal ones may swap places), and
    log-probabilities within the tolerances: the emitted tokens' own, and the alternatives' (a
    server may send none: then the emitted tokens' decide)."""
    if len(a) != len(b) or not a:
        return False
    gaps: list[float] = []
    for left, right in zip(a, b):
        if left[0][0] != right[0][0]:
            return False
        mine, theirs = dict(left[1:]), dict(right[1:])
        if set(mine) != set(theirs):
            return False
        gaps += [abs(left[0][1] - right[0][1])] + [abs(mine[t] - theirs[t]) for t in mine]
    return sum(gaps) / len(gaps) <= TOLERANCE_MEAN and max(gaps) <= TOLERANCE_MAX


def compare(a: ServerIdentity, b: ServerIdentity) -> tuple[str, str]:
    """(verdict, evidence) for two servers."""
    if a.weights and b.weights:
        if a.weights == b.weights:
            return SAME, f"both servers report the weights {a.weights}"
        return DIFFERENT, f"the servers report different weights ({a.weights} vs {b.weights})"
    if a.probe and b.probe:
        if _same_probe(a.probe, b.probe):
            return SAME, (f"{a.endpoint} ({a.model}) and {b.endpoint} ({b.model}) answer a greedy probe with "
                          f"the same tokens and log-probabilities: the same weights under two names")
        return DIFFERENT, "the two servers answer a greedy probe differently (tokens or log-probabilities)"
    missing = [i.endpoint + (f" ({i.error})" if i.error else "") for i in (a, b) if not (i.weights or i.probe)]
    return UNKNOWN, "no weights reported and no probe logprobs from " + ", ".join(missing)
