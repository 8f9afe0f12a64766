"""``python llama_main.py ARGS``: llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server ARGS``), with log-probabilities computed for the answer's tokens only.

Run by the llama.cpp virtualenv's interpreter, so it imports nothing of prelabel. With
``logprobs``, llama-cpp-python's non-streamed completion takes the log-softmax of the scores of
every token in the context, prompt included, and then keeps the answer's rows
(``Llama.logits_to_logprobs(self._scores)[token_offset:]``): for a 1,000-token prompt and
SmolLM2's 49,152-token vocabulary that is ~0.5 s of numpy per request on 2 cores, for ~20 rows
used. Here the log-softmax of a score matrix is taken lazily, for the rows that are read. Only
the versions it was checked against are patched (``PATCHED_VERSIONS``); any other runs as is.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from typing import Any

PATCHED_VERSIONS = frozenset({"0.3.36"})


class RowsOnDemand:
    """``log_softmax(logits)`` of a (tokens x vocabulary) matrix, each slice computed when read."""

    def __init__(self, full: Callable[..., Any], logits: Any, axis: int) -> None:
        self._full, self._logits, self._axis = full, logits, axis

    def __getitem__(self, rows: Any) -> Any:
        return self._full(self._logits[rows], axis=self._axis)

    def __len__(self) -> int:
        return len(self._logits)


def lazy_rows(full: Callable[..., Any]) -> Callable[..., Any]:
    """``full`` (``Llama.logits_to_logprobs``) answering a 2-D matrix with ``RowsOnDemand``."""

    def logits_to_logprobs(logits: Any, axis: int = -1) -> Any:
        if getattr(logits, "ndim", 0) == 2 and axis in (-1, 1):
            return RowsOnDemand(full, logits, axis)
        return full(logits, axis=axis)

    return logits_to_logprobs


def main() -> None:
    import llama_cpp

    llama = getattr(llama_cpp, "Llama", None)
    if llama is not None and getattr(llama_cpp, "__version__", None) in PATCHED_VERSIONS:
        llama.logits_to_logprobs = staticmethod(lazy_rows(llama.logits_to_logprobs))
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
