"""Threads per local llama.cpp server: PRELABEL_LLM_THREADS, else the machine's cores."""

from __future__ import annotations

import os

import pytest

from prelabel.stack.llm_server import THREADS_ENV, threads
from prelabel.stack.processes import StartupError


def test_the_variable_sets_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "1")
    assert threads() == 1
    monkeypatch.setenv(THREADS_ENV, "0")
    assert threads() == 1  # never fewer than one


def test_without_it_every_core_or_all_but_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    for cores, expected in ((1, 1), (2, 2), (8, 7)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert threads() == expected


def test_a_value_that_is_no_number_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(StartupError, match="PRELABEL_LLM_THREADS='two' is not a whole number"):
        threads()
