"""Parse an LLM's raw answer and tell it what was wrong; the checks live in ``label_config.answers``."""

from __future__ import annotations

import json
import re
from typing import Any

from prelabel.label_config.answers import CheckedAnswer, apply_constraints, check_answer
from prelabel.label_config.controls import AnswerError

__all__ = ["CheckedAnswer", "apply_constraints", "check_answer", "feedback", "parse_answer"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def parse_answer(content: str) -> tuple[dict[str, Any], int]:
    """The JSON object in ``content`` and where it starts; ``AnswerError`` when there is none.

    Tolerates what chat models wrap around JSON (whitespace, a Markdown fence) and raw control
    characters inside strings (a newline or tab the grammar let through: the text means the same,
    and every value is checked against its control afterwards), but not truncation or extra
    objects: the object must parse whole.
    """
    start = content.find("{")
    if start == -1:
        raise AnswerError(None, "invalid_json", f"no JSON object in the answer: {content[:80]!r}")
    try:
        answer, end = json.JSONDecoder(strict=False).raw_decode(content, start)
    except json.JSONDecodeError as exc:
        raise AnswerError(None, "invalid_json", f"answer is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit integer, arrays nested 100,000 deep
        raise AnswerError(None, "invalid_json", f"answer cannot be read: {type(exc).__name__}") from None
    trailing = _FENCE.sub("", content[end:]).strip()
    if trailing:
        raise AnswerError(None, "invalid_json", f"unexpected text after the JSON object: {trailing[:40]!r}")
    if not isinstance(answer, dict):
        raise AnswerError(None, "invalid_json", "answer must be a JSON object")
    return answer, start


def feedback(errors: dict[str, AnswerError] | list[AnswerError]) -> str:
    """The corrective message sent back to the model with its invalid answer."""
    items = errors.values() if isinstance(errors, dict) else errors
    lines = "\n".join(f"- {error}" for error in items)
    return (
        "Your answer was invalid:\n"
        f"{lines}\n"
        "Answer again with one corrected JSON object that follows the output format exactly."
    )
