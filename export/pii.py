"""Personal information in training text: found by pattern, then redacted or the record dropped.

Patterns for what leaks most often into labeled text: e-mail addresses, phone numbers, payment
card numbers (Luhn-checked, so order numbers are not mistaken for cards), IBANs and US social
security numbers. Redaction replaces each with a typed placeholder (``[EMAIL]``...).
"""

from __future__ import annotations

import re
from collections import Counter

PATTERNS: dict[str, re.Pattern[str]] = {
    "EMAIL": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "CARD": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "IBAN": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
    "SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "PHONE": re.compile(r"(?<![\w+])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?(?:[ .-]?\d{2,4}){2,3}\b"),
}


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str) -> Counter[str]:
    """What ``redact`` would replace (each span counted once, by the first pattern that takes it)."""
    return redact(text)[1]


def redact(text: str) -> tuple[str, Counter[str]]:
    found: Counter[str] = Counter()

    def replace(kind: str):
        def sub(match: re.Match[str]) -> str:
            if kind == "CARD" and not _luhn(re.sub(r"\D", "", match.group())):
                return match.group()
            found[kind] += 1
            return f"[{kind}]"
        return sub

    for kind, pattern in PATTERNS.items():
        text = pattern.sub(replace(kind), text)
    return text, found
