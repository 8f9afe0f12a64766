"""Personal information in training text: found in the free text, then redacted or the record dropped.

What counts follows the seeds (seed 001 and the instruction-labels guideline): a private person's
name, street address, e-mail address, phone number, IP address and birth date are PII, and so are
payment cards (Luhn-checked), IBANs (mod-97-checked) and US social security numbers. Dates and
times in general, order / booking / invoice numbers, ISBNs and a company's own contact lines
(hotlines, toll-free numbers: "company contact data is not PII") are not, so a flight request's
"2025-03-14 at 10:30" stays as it is.

Why not a library for everything: the offline candidates either need model weights fetched at run
time (Presidio and spaCy pipelines, GLiNER) or only cover e-mails, phones and cards with regular
expressions. Phone numbers use Google's libphonenumber (``phonenumbers``: numbering plans of every
country, so dates and order numbers do not parse as phones, and a number's type tells a toll-free
company line); names, street addresses and birth dates, which no rule set finds in general, are
taken where the text says what they are ("my name is", "Mr.", "born on", a house number before a
street type). ``benchmarks/pii_eval.py`` measures precision and recall per kind on the labelled
sample in ``tests/data/pii_sample.jsonl``.

Field-aware: ``redact`` works on one free text; ``export.pipeline`` calls it on a task's input
texts and on free-text answers only, never on a structured answer field the config defines (a
choice, a rating, a number, a date slot), which only get the same replacements as the input text
they were copied from (a span or slot that quotes a redacted name does not leak it).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

import phonenumbers

DEFAULT_REGION = "US"  # how a phone number written without a country code is read
_WORD_BEFORE = 40  # characters before a match in which a cue ("hotline", "order", "born") counts

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
ISBN = re.compile(r"\bISBN(?:-1[03])?:?\s*(?:97[89][- ]?)?\d{1,5}[- ]?\d{1,7}[- ]?\d{1,7}[- ]?[\dX]\b"
                  r"|\b97[89]-\d{1,5}-\d{1,7}-\d{1,7}-\d\b")
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
DATE = re.compile(rf"\b(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}|"
                  rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+"
                  rf"\d{{4}})\b", re.IGNORECASE)
YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
BIRTH_CUE = re.compile(r"\b(?:born(?:\s+(?:on|in))?|birthday(?:\s+is)?|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?)"
                       r"\W{0,3}$", re.IGNORECASE)
NOT_PHONE_CUE = re.compile(r"(?:\b(?:orders?|invoice|tracking|booking|confirmation|reference|ref|ticket|"
                           r"account|acct|serial|sku|isbn|item|case|flight|code|no)\b\W*|#\s*)$", re.IGNORECASE)
VERSION_CUE = re.compile(r"\b(?:version|v|release|build|firmware)\W*$", re.IGNORECASE)
COMPANY_CUE = re.compile(r"\b(?:hotline|helpline|help\s+line|customer\s+(?:service|support|care)|support|"
                         r"call\s+cent(?:er|re)|switchboard|reception|head\s+office|toll[- ]free)\b",
                         re.IGNORECASE)
_COMPANY_TYPES = {phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
                  phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN}
_CAP = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_NAME = rf"{_CAP}(?:\s+(?:[A-Z]\.\s*)?{_CAP}){{0,2}}"
NAME = re.compile(
    rf"(?:\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof)\.?\s+(?P<titled>{_NAME})"
    rf"|\b(?i:my\s+name\s+is|my\s+name's|name:|named|signed,?|regards,|dear|i'm|i\s+am|(?:the\s+)?(?:patient|applicant|"
    rf"tenant|employee|candidate|student|guest|passenger)|my\s+(?:wife|husband|son|daughter|"
    rf"mother|father|mom|dad|brother|sister|friend|neighbou?r|colleague|boss|doctor|patient|client)(?:'s\s+name\s+is)?)"
    rf"\s+(?:(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof)\.?\s+)?(?P<cued>{_NAME}))")
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|"
           r"Crescent|Close|Square|Sq|Highway|Hwy|Parkway|Pkwy)\.?")
ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_CAP}\s+){{0,3}}{_STREET}(?:,?\s+(?:Apt|Apartment|Suite|Unit)\.?\s*\w+)?"
    rf"(?:,\s+{_CAP}(?:\s+{_CAP})?)?(?:,?\s+[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?"
    rf"|\b{_CAP}(?:stra(?:ss|ß)e|weg|gasse|platz|allee)\s+\d{{1,4}}[a-z]?\b")
_NOT_NAMES = {"The", "A", "An", "This", "That", "It", "I", "We", "You", "He", "She", "They", "Sir", "Madam",
              "Customer", "Team", "All", "Everyone", "Support", "Sales", "Hiring", "Manager", "Friend"}


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    code = raw.replace(" ", "")
    moved = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _isbn_ok(raw: str) -> bool:
    digits = re.sub(r"[^\dX]", "", raw.upper().removeprefix("ISBN-13").removeprefix("ISBN-10").removeprefix("ISBN"))
    if len(digits) == 13 and digits.isdigit():
        return sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0
    if len(digits) == 10 and digits[:9].isdigit():
        return sum((10 - i) * (10 if d == "X" else int(d)) for i, d in enumerate(digits)) % 11 == 0
    return False


def _ip_ok(raw: str) -> bool:
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return False
    return not (address.is_unspecified or (address.version == 6 and raw.count(":") < 3))


def _before(text: str, start: int) -> str:
    return text[max(0, start - _WORD_BEFORE):start]


def _name_span(match: re.Match[str], group: str) -> tuple[int, int] | None:
    """The name a cue introduces, without trailing words that are not part of it ("Dear Support Team")."""
    words = list(re.finditer(r"\S+", match.group(group)))
    while words and words[-1].group() in _NOT_NAMES:
        words.pop()
    if not words or words[0].group() in _NOT_NAMES:
        return None
    return match.start(group), match.start(group) + words[-1].end()


def detect(text: str, region: str = DEFAULT_REGION) -> list[Finding]:
    """Every piece of personal information in ``text``, left to right, without overlaps."""
    found: list[Finding] = []
    protected: list[tuple[int, int]] = [m.span() for m in ISBN.finditer(text) if _isbn_ok(m.group())]
    for match in DATE.finditer(text):
        if BIRTH_CUE.search(_before(text, match.start())):
            found.append(Finding("BIRTH_DATE", *match.span()))
        protected.append(match.span())  # a date is never a phone or card number
    found += [Finding("BIRTH_DATE", *m.span()) for m in YEAR.finditer(text)
              if BIRTH_CUE.search(_before(text, m.start())) and not any(f.start <= m.start() < f.end for f in found)]
    for pattern, kind, valid in ((EMAIL, "EMAIL", None), (SSN, "SSN", None), (IBAN, "IBAN", _iban_ok),
                                 (IPV4, "IP", _ip_ok), (IPV6, "IP", _ip_ok)):
        found += [Finding(kind, *m.span()) for m in pattern.finditer(text) if valid is None or valid(m.group())
                  if kind != "IP" or not VERSION_CUE.search(_before(text, m.start()))]
    for match in CARD.finditer(text):
        if _luhn(re.sub(r"\D", "", match.group())) and not NOT_PHONE_CUE.search(_before(text, match.start())):
            found.append(Finding("CARD", *match.span()))
    for phone in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        before = _before(text, phone.start)
        if NOT_PHONE_CUE.search(before) or COMPANY_CUE.search(before):
            continue
        if phonenumbers.number_type(phone.number) in _COMPANY_TYPES:
            continue
        found.append(Finding("PHONE", phone.start, phone.end))
    for match in NAME.finditer(text):
        span = _name_span(match, "titled" if match.group("titled") else "cued")
        if span:
            found.append(Finding("NAME", *span))
    found += [Finding("ADDRESS", *m.span()) for m in ADDRESS.finditer(text)]
    return _without_overlaps(found, protected)


def _without_overlaps(found: list[Finding], protected: list[tuple[int, int]]) -> list[Finding]:
    """Findings left to right, the longer first where two overlap; none inside a protected span
    (ISBNs, dates) except the birth dates found there."""
    kept: list[Finding] = []
    for item in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if item.kind != "BIRTH_DATE" and any(s < item.end and item.start < e for s, e in protected):
            continue
        if kept and item.start < kept[-1].end:
            continue
        kept.append(item)
    return kept


def find_pii(text: str) -> Counter[str]:
    """How many pieces of each kind ``redact`` would replace."""
    return Counter(f.kind for f in detect(text))


def redact(text: str) -> tuple[str, Counter[str]]:
    """``text`` with each piece of personal information replaced by its kind (``[EMAIL]``...)."""
    return redact_findings(text, detect(text))


def redact_findings(text: str, findings: list[Finding]) -> tuple[str, Counter[str]]:
    out: list[str] = []
    at = 0
    for item in findings:
        out += [text[at:item.start], f"[{item.kind}]"]
        at = item.end
    out.append(text[at:])
    return "".join(out), Counter(f.kind for f in findings)


def replacements(text: str) -> dict[str, str]:
    """Each personal string of ``text`` -> its placeholder: applied to answer values copied from it."""
    return {text[f.start:f.end]: f"[{f.kind}]" for f in detect(text)}
