"""Logging setup: plain or JSON lines, with every configured secret redacted from every record and
control characters escaped, so request input can neither leak a secret nor forge a line."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

REDACTED = "***"


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (longest first, 4+ characters) replaced by ``***``, and the
    credentials any URL in it carries (user-info, query values) masked: a token a request put in
    a URL is a secret this process was never told about."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _URL.sub(_masked_url, text) if "://" in text else text


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s'\"<>]+")
_USERINFO = re.compile(r"^([^/?#]*://)[^/?#@]*@")
_QUERY_VALUE = re.compile(r"([?&;][^=&#;]*=)[^&#;]*")


def _masked_url(match: re.Match[str]) -> str:
    url = _USERINFO.sub(rf"\1{REDACTED}@", match.group())
    head, sep, tail = url.partition("?")
    return head + (_QUERY_VALUE.sub(rf"\1{REDACTED}", sep + tail) if sep else "")


class RedactSecrets(logging.Filter):
    """Replace known secret values (API keys, tokens, passwords) wherever they appear: the
    message, its arguments, a traceback and a stack trace."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed log call: keep it, but never raise
            message = f"{record.msg} (unformattable arguments: {record.args!r})"
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


# C0 and C1 control characters, DEL and the Unicode line/paragraph separators: anything a
# terminal or a log shipper could take as a line break or an escape sequence.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode()), text)


class PlainFormatter(logging.Formatter):
    """One log record = one line that starts at column 0.

    Messages carry request input (project ids, guideline names, hostnames), so their control
    characters are escaped: a newline in a project id cannot forge a log line. A traceback keeps
    its lines but each is indented, so none of them can pass for a record either.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        lines = [self.formatMessage(record)]
        if record.exc_info and not record.exc_text:  # cached unindented, as logging does
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            lines.append(_indented(record.exc_text))
        if record.stack_info:
            lines.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            payload["exception"] = record.exc_text or self.formatException(record.exc_info or (None, None, None))
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: str = "INFO", json_logs: bool = False, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else PlainFormatter())
    handler.addFilter(RedactSecrets(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
