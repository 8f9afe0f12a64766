"""Synthetic training examples for rare classes, train split only, always marked synthetic.

The practice: classes with fewer than ~50 training examples may get extra examples made by
substituting about 30% of the words with synonyms. ``synonym_variants`` does that offline with a
word-group table (``synonyms.txt`` shipped here, or a project's own); ``llm_paraphrases`` asks the
configured OpenAI-compatible endpoint for paraphrases instead. A variant equal to an existing
text is discarded, so a text without substitutable words yields nothing rather than a copy.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from importlib import resources
from pathlib import Path

from prelabel.errors import UserError
from prelabel.text import normalise

METHODS = ("synonyms", "llm")
SHARE = 0.3  # share of a text's words replaced
_TOKENS = re.compile(r"(\w[\w'-]*)")


class AugmentError(UserError, ValueError):
    """Augmentation cannot run (unreadable synonym table, unknown method)."""


def load_synonyms(path: Path | None = None) -> dict[str, list[str]]:
    """word -> the other words of its groups (lower case)."""
    try:
        text = Path(path).read_text(encoding="utf-8") if path else (
            resources.files("prelabel.export") / "synonyms.txt").read_text(encoding="utf-8")
    except OSError as exc:
        raise AugmentError(f"cannot read synonym table {path}: {exc.strerror or exc}") from None
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = [w.strip().lower() for w in line.split(",") if w.strip()]
        if line.lstrip().startswith("#") or len(words) < 2:
            continue
        for word in words:
            table.setdefault(word, [])
            table[word] += [other for other in words if other != word and other not in table[word]]
    if not table:
        raise AugmentError(f"synonym table {path or 'synonyms.txt'} has no groups of two or more words")
    return table


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def synonym_variant(text: str, table: dict[str, list[str]], rng: random.Random, share: float = SHARE) -> str:
    """``text`` with about ``share`` of its words replaced by synonyms (fewer when fewer have one)."""
    parts = _TOKENS.split(text)
    words = [i for i in range(1, len(parts), 2)]
    candidates = [i for i in words if parts[i].lower() in table]
    if not candidates:
        return text
    k = min(len(candidates), max(1, round(share * len(words))))
    for i in rng.sample(candidates, k):
        parts[i] = _cased(rng.choice(table[parts[i].lower()]), parts[i])
    return "".join(parts)


def synonym_variants(sources: list[str], needed: int, table: dict[str, list[str]], rng: random.Random,
                     taken: set[str]) -> list[tuple[int, str]]:
    """Up to ``needed`` (source index, variant) pairs, cycling over ``sources``; ``taken`` holds
    the normalised texts (``dedupe.normalise``: words only) that already exist (updated), so no
    variant repeats one, not even with other punctuation or case."""
    out: list[tuple[int, str]] = []
    for attempt in range(needed * 10):
        if len(out) >= needed or not sources:
            break
        index = attempt % len(sources)
        variant = synonym_variant(sources[index], table, rng)
        key = normalise(variant)
        if key not in taken:
            taken.add(key)
            out.append((index, variant))
    return out


PARAPHRASE_SCHEMA = {"type": "object", "properties": {"paraphrase": {"type": "string", "minLength": 1}},
                     "required": ["paraphrase"], "additionalProperties": False}


def llm_paraphrases(sources: list[str], needed: int, taken: set[str], settings: object) -> list[tuple[int, str]]:
    """Up to ``needed`` paraphrases from the configured LLM endpoint (same settings as the backend).

    Answers that are not the requested JSON, are empty, repeat an existing text or are far longer
    than their source are discarded (never repaired).
    """
    from prelabel.prediction.llm_client import LLMClient

    async def run() -> list[tuple[int, str]]:
        llm = LLMClient(settings)  # type: ignore[arg-type]
        try:
            jobs = [(i % len(sources), sources[i % len(sources)]) for i in range(needed)] if sources else []
            answers = await asyncio.gather(*(llm.complete(_paraphrase_prompt(text), PARAPHRASE_SCHEMA)
                                             for _, text in jobs), return_exceptions=True)
        finally:
            await llm.aclose()
        out = []
        for (index, source), answer in zip(jobs, answers):
            if isinstance(answer, BaseException):  # LLMError after retries, or a transport error
                continue
            variant = _paraphrase(answer.content, source)
            key = normalise(variant or "")
            if variant and key not in taken:
                taken.add(key)
                out.append((index, variant))
        return out

    return asyncio.run(run())


def _paraphrase_prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You rewrite text with different words and the same meaning. "
                                          'Answer only with JSON: {"paraphrase": "..."}'},
            {"role": "user", "content": f"Paraphrase: {text}"}]


def _paraphrase(content: str, source: str) -> str | None:
    try:
        value = json.loads(content[content.find("{"):]) if "{" in content else None
    except ValueError:
        return None
    text = value.get("paraphrase") if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > 3 * len(source) + 20:
        return None
    return " ".join(text.split())
