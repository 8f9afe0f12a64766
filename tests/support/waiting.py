"""Polling for an outcome in another process (Label Studio, a worker), with a useful failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
             context: Callable[[], str] | None = None) -> Any:
    """The first truthy value of ``predicate()``; AssertionError (with ``context()``) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{context()}" if context else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
