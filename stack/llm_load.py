"""The backend's LLM load control as ``prelabel status`` shows it (from the backend's ``GET /load``).

Per endpoint: the adaptive concurrency limit (and its upper bound), calls in flight, the base
latency, the queueing delay inside the server; per client: calls waiting for a permit and the
retry budget left.
"""

from __future__ import annotations

from typing import Any

import httpx


def fetch_llm_load(backend_url: str, auth: tuple[str, str] | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """``{"llm": [...]}`` from a running backend, or ``{"error": ...}`` when it cannot be read."""
    try:
        response = httpx.get(backend_url.rstrip("/") + "/load", auth=auth, timeout=timeout)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def format_llm_load(load: dict[str, Any]) -> list[str]:
    """One line per LLM endpoint (and the retry budget) for a terminal."""
    if "error" in load:
        return [f"llm load: unavailable ({load['error']})"]
    lines = []
    for client in load.get("llm", []):
        budget = client["retry_budget"]
        for row in client["endpoints"]:
            base = "-" if row["base_rtt_s"] is None else f"{row['base_rtt_s']:.2f}s"
            lines.append(
                f"llm {client['model']} @ {row['endpoint']}: limit {row['limit']}/{row['max_limit']}"
                f"{'' if row['adaptive'] else ' (fixed)'}, in flight {row['in_flight']}, waiting {client['waiting']}, "
                f"base latency {base}, queueing {row['queue_delay_s']:.2f}s, "
                f"output {row['structured_output']}{'+logprobs' if row['logprobs'] else ''}")
        lines.append(f"llm {client['model']} retry budget: {budget['available']} left "
                     f"({budget['retries_in_window']} retries / {budget['calls_in_window']} calls in "
                     f"{budget['window_s']:g}s, {budget['denied_total']} denied)")
    return lines


def format_webhooks(load: dict[str, Any]) -> list[str]:
    """One line per project whose webhook the backend could not wire, with the manual step."""
    return [f"project {project}: webhook not wired ({state.get('reason')}): {state.get('step')}"
            for project, state in sorted((load.get("webhooks") or {}).items()) if state.get("state") == "unwired"]
