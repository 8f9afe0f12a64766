"""Settings from the environment / YAML (prelabel/settings.py) and log redaction (prelabel/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from prelabel.logs import REDACTED, JsonFormatter, RedactSecrets, configure_logging
from prelabel.settings import Settings

ENV_PREFIXES = ("PRELABEL_", "OPENAI_", "LABEL_STUDIO_", "REDIS_URL")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment and a working directory without a .env file."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# --- settings -------------------------------------------------------------------------------


def test_defaults(env):
    settings = Settings()
    assert settings.llm_base_urls == ["http://127.0.0.1:8000/v1"]
    assert settings.secret_values() == []  # the placeholder key is no secret


def test_openai_base_url_and_key_accept_comma_separated_lists(env):
    env.setenv("OPENAI_BASE_URL", "http://a:8000/v1, http://b:8001/v1,,")
    env.setenv("OPENAI_API_KEY", "sk-one,sk-two")
    settings = Settings()
    assert settings.llm_base_urls == ["http://a:8000/v1", "http://b:8001/v1"]
    assert [k.get_secret_value() for k in settings.llm_api_keys] == ["sk-one", "sk-two"]
    assert "sk-one" not in repr(settings) and "sk-two" not in str(settings.model_dump())


def test_single_values_and_prelabel_names(env):
    env.setenv("PRELABEL_LLM_BASE_URLS", "http://only:1/v1")
    env.setenv("PRELABEL_LLM_API_KEYS", "sk-solo")
    settings = Settings()
    assert settings.llm_base_urls == ["http://only:1/v1"]
    assert [k.get_secret_value() for k in settings.llm_api_keys] == ["sk-solo"]


def test_prelabel_config_yaml_is_read_and_env_wins(env, tmp_path):
    config = tmp_path / "prelabel.yaml"
    config.write_text(
        "llm_model: from-yaml\n"
        "fewshot_k: 7\n"
        "llm_base_urls: [http://y1/v1, http://y2/v1]\n"
        "span_occurrence: unique\n"
        "basic_auth_password: yaml-password\n",
        encoding="utf-8",
    )
    env.setenv("PRELABEL_CONFIG", str(config))
    settings = Settings()
    assert settings.llm_model == "from-yaml"
    assert settings.fewshot_k == 7
    assert settings.llm_base_urls == ["http://y1/v1", "http://y2/v1"]
    assert settings.span_occurrence == "unique"
    assert "yaml-password" in settings.secret_values()

    env.setenv("PRELABEL_LLM_MODEL", "from-env")
    env.setenv("OPENAI_BASE_URL", "http://e/v1")
    settings = Settings()
    assert settings.llm_model == "from-env" and settings.llm_base_urls == ["http://e/v1"]
    assert settings.fewshot_k == 7


def test_invalid_values_are_rejected(env):
    env.setenv("PRELABEL_SPAN_OCCURRENCE", "sometimes")
    with pytest.raises(ValueError):
        Settings()


def test_secret_values_lists_every_configured_secret(env):
    env.setenv("OPENAI_API_KEY", "sk-aaaa,sk-bbbb")
    env.setenv("PRELABEL_BASIC_AUTH_PASSWORD", "hunter22")
    env.setenv("LABEL_STUDIO_API_KEY", "ls-token-1234")
    assert sorted(Settings().secret_values()) == sorted(["sk-aaaa", "sk-bbbb", "hunter22", "ls-token-1234"])


# --- redaction ------------------------------------------------------------------------------


@pytest.fixture
def logger():
    """A private logger writing formatted records to a buffer; call ``attach(filter, formatter)``."""
    log = logging.getLogger("prelabel.test.redaction")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    buffer = io.StringIO()

    def attach(secrets, formatter=None):
        handler = logging.StreamHandler(buffer)
        handler.addFilter(RedactSecrets(secrets))
        handler.setFormatter(formatter or logging.Formatter("%(levelname)s %(message)s"))
        log.handlers[:] = [handler]
        return buffer

    yield log, attach
    log.handlers[:] = []


def test_secret_in_percent_args_is_redacted(logger):
    log, attach = logger
    out = attach(["sk-live-SECRET"])
    log.info("calling %s with key=%s (attempt %d)", "http://llm/v1", "sk-live-SECRET", 2)
    text = out.getvalue()
    assert "sk-live-SECRET" not in text
    assert f"key={REDACTED}" in text and "http://llm/v1" in text and "attempt 2" in text


def test_secret_in_message_and_in_object_args_is_redacted(logger):
    log, attach = logger
    out = attach(["hunter22", "tok-ABCDEF"])
    log.warning("password hunter22 rejected")
    log.warning("headers: %r", {"Authorization": "Token tok-ABCDEF"})
    assert "hunter22" not in out.getvalue() and "tok-ABCDEF" not in out.getvalue()
    assert out.getvalue().count(REDACTED) == 2


def test_longest_secret_first_and_short_values_ignored(logger):
    log, attach = logger
    out = attach(["abc", "sk-1234", "sk-1234-extended"])
    log.info("k1=%s k2=%s word=abc", "sk-1234-extended", "sk-1234")
    text = out.getvalue()
    assert "k1=*** k2=***" in text and "-extended" not in text
    assert "word=abc" in text  # too short to redact without mangling logs


def test_no_secrets_leaves_records_alone(logger):
    log, attach = logger
    out = attach([])
    log.info("value %s", "plain")
    assert "value plain" in out.getvalue()


@pytest.mark.parametrize("json_logs", [False, True], ids=["plain", "json"])
def test_secret_in_exception_traceback_is_redacted(logger, json_logs):
    log, attach = logger
    out = attach(["sk-live-SECRET"], JsonFormatter() if json_logs else None)
    try:
        raise RuntimeError("401 from http://llm/v1 with key sk-live-SECRET")
    except RuntimeError:
        log.exception("LLM call failed")
    assert "LLM call failed" in out.getvalue()
    assert "sk-live-SECRET" not in out.getvalue()


def test_a_malformed_log_call_does_not_raise(logger):
    log, attach = logger
    attach(["sk-live-SECRET"])
    log.info("two placeholders %s %s", "only-one")  # the point of the test


# --- JSON logs ------------------------------------------------------------------------------


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "openai")})
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_json_logs_are_valid_json_lines_with_secrets_redacted(root_logging, capsys):
    configure_logging("debug", json_logs=True, secrets=["sk-live-SECRET"])
    log = logging.getLogger("prelabel.test.json")
    log.info("key %s", "sk-live-SECRET")
    log.warning('multi\nline "quoted" ünïcode')
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.exception("boom")
    logging.getLogger("openai").info("noisy library debug")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3, err
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR"]
    assert all(r["logger"] == "prelabel.test.json" and r["time"].endswith("+00:00") for r in records)
    assert records[0]["message"] == f"key {REDACTED}"
    assert records[1]["message"] == 'multi\nline "quoted" ünïcode'
    assert "ZeroDivisionError" in records[2]["exception"]
    assert "sk-live-SECRET" not in err


def test_plain_logs_redact_too(root_logging, capsys):
    configure_logging("INFO", json_logs=False, secrets=["sk-live-SECRET"])
    logging.getLogger("prelabel.test.plain").warning("using %s", "sk-live-SECRET")
    logging.getLogger("prelabel.test.plain").debug("hidden at INFO")
    err = capsys.readouterr().err
    assert "using ***" in err and "sk-live-SECRET" not in err and "hidden" not in err
