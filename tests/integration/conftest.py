"""Shared fixtures of the integration tests: the real ``prelabel serve`` process (or the client)
against the local fault-injecting LLM server, no Label Studio, no model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_llm import FaultServer, running_fault_server


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    """One fault server per test module, answering at once (each test sets its own faults)."""
    with running_fault_server(latency_ms=0) as server:
        yield server
