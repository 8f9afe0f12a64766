"""The flywheel on the local stack: serve the candidate with llama.cpp, hand it over to ``up``.

After the merge, the candidate is converted to GGUF and served by the same llama.cpp server the
local stack runs (so the backend gets grammar-constrained JSON and logprobs from it as from the
base model), evaluated through the backend, and, when promoted, its record names the GGUF:
``prelabel up`` serves every promoted GGUF and rewrites the record's ``base_url`` to its server
(``prelabel.stack.promoted``). The flywheel keeps its own server running until ``up`` has taken
over, so the backend never routes to a stopped server while the stack runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prelabel.contract import parse_active_model

# The active model record's fields for a locally served model (besides model/base_url/...).
SERVED_BY = "llama.cpp"
FINE_TUNED_FEWSHOT_K = 0  # trained on the backend's prompt without few-shot turns: served the same way


def serve_candidate(gguf: Path, model_name: str, workdir: Path) -> Any:
    """A llama.cpp server for the candidate GGUF; ready once it gave a real (JSON, logprobs) answer."""
    from prelabel.stack.llm_server import start_llm_server

    return start_llm_server(workdir, gguf=gguf, alias=model_name, name=f"llama-cpp-{model_name}")


def record_extra(gguf: Path) -> dict[str, Any]:
    """What the active model record carries so that ``up`` can serve it (how it is prompted, every
    record carries: ``prelabel.train.promote.served_prompt``)."""
    return {"gguf": str(Path(gguf).resolve()), "served_by": SERVED_BY}


def wait_for_takeover(client: Any, key: str, candidate_url: str, stack_running: bool,
                      timeout: float = 300.0) -> str | None:
    """Wait until ``up`` serves the promoted model (the record's base_url changed); its URL, or None.

    Without a running stack nothing can take over: the record keeps the GGUF and ``prelabel up``
    serves it when it starts.
    """
    if not stack_running:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = client.get(key)
        record = parse_active_model(raw) if raw else None
        if record is not None and record["base_url"] != candidate_url:
            return record["base_url"]
        time.sleep(1.0)
    return None


def markdown_report(result: dict[str, Any], timings: dict[str, float], candidate: dict[str, Any],
                    current: dict[str, Any], extra: dict[str, Any]) -> str:
    """The run in one page: stages and their time, the two evaluations side by side, the decision."""
    def row(name: str, key: str, fmt: str = "{:.4f}") -> str:
        values = [report.get(key) for report in (candidate, current)]
        cells = [fmt.format(v) if isinstance(v, int | float) else "-" for v in values]
        return f"| {name} | {cells[0]} | {cells[1]} |"

    perf = [report.get("performance", {}).get("latency_s", {}).get("p50") for report in (candidate, current)]
    lines = [
        f"# Flywheel run {result['run_id']} (project {result['project']})",
        "",
        f"**Decision: {'PROMOTED' if result['promoted'] else 'kept the current model'}** - "
        + "; ".join(result["reasons"]),
        "",
        "| stage | seconds |", "|---|---|",
        *[f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()],
        "",
        (f"Test split: {candidate.get('n')} items (sha256 `{candidate['dataset']['test_sha256'][:12]}`), "
         "both models pre-annotating through the backend (its prompt, grammar-constrained JSON, validation)."),
        "",
        f"| metric | candidate `{candidate.get('model')}` | current `{current.get('model')}` |",
        "|---|---|---|",
        row("accuracy" if "accuracy" in candidate else candidate.get("primary_metric", "primary"), "primary_value"),
        row("macro F1", "macro_f1"),
        row("invalid outputs", "invalid_rate"),
        f"| latency p50 (s) | {perf[0] if perf[0] is not None else '-'} | {perf[1] if perf[1] is not None else '-'} |",
        "",
    ]
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"
