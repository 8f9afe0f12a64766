"""Text normalisation shared by the backend (few-shot pool keys, near-duplicate reuse) and the
export (exact and near-duplicate removal), so both call the same two texts the same."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower-case words separated by single spaces (punctuation and spacing do not count)."""
    return " ".join(_WORD.findall(text.lower()))
