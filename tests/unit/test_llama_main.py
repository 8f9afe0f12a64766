"""The llama.cpp server's launcher takes log-probabilities of the rows read, not of the whole
context (``stack/llama_main.py``); the values are those of the full computation."""

from __future__ import annotations

import numpy as np

from prelabel.stack.llama_main import RowsOnDemand, lazy_rows


def log_softmax(logits, axis=-1):  # what llama-cpp-python's Llama.logits_to_logprobs computes
    shifted = logits - np.amax(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def test_rows_read_equal_the_full_computation_and_only_they_are_computed() -> None:
    scores = np.random.default_rng(0).normal(size=(300, 50)).astype(np.single)
    seen: list[int] = []

    def full(logits, axis=-1):
        seen.append(len(logits))
        return log_softmax(logits, axis)

    lazy = lazy_rows(full)(scores)
    assert isinstance(lazy, RowsOnDemand) and len(lazy) == 300 and seen == []
    answer = lazy[280:]  # the non-streamed completion reads the answer's rows
    assert seen == [20]
    np.testing.assert_allclose(answer, log_softmax(scores)[280:], rtol=1e-6, atol=1e-6)


def test_one_row_is_computed_at_once_as_before() -> None:
    row = np.random.default_rng(1).normal(size=50).astype(np.single)
    out = lazy_rows(log_softmax)(row)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, log_softmax(row), rtol=1e-6)
