"""Logs are JSON lines (or text) with secrets masked, whatever part of a record carries them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.telemetry import MASK, RedactingFilter, redact, run_id_var, secret_env_values, setup_logging

OPENAI_KEY = "sk-proj-AbCdEf0123456789abcdefGHIJ"
GATEWAY_TOKEN = "tt-tok-5f2b9c0e7d1a4b3c9e8f"
REDIS_PASSWORD = "0f1e2d3c4b5a69788796a5b4"


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("TT_API_TOKENS", f"{GATEWAY_TOKEN}=alice,other-token-0123456789=bob")
    monkeypatch.setenv("REDIS_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("TT_LOG_LEVEL", "DEBUG")


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def emit(capsys: pytest.CaptureFixture[str], fmt: str, *args: Any, **kwargs: Any) -> str:
    setup_logging("gateway", fmt, "DEBUG")
    logging.getLogger("tickertape.test").info(*args, **kwargs)
    return capsys.readouterr().err


@pytest.mark.usefixtures("root_logging", "secret_env")
class TestSetupLogging:
    def test_json_line_has_the_fields(self, capsys: pytest.CaptureFixture[str]) -> None:
        token = run_id_var.set("run-123")
        try:
            err = emit(capsys, "json", "step %s done", "market", extra={"step": "market"})
        finally:
            run_id_var.reset(token)
        (line,) = json_lines(err)
        assert line["level"] == "info" and line["service"] == "gateway"
        assert line["event"] == "step market done"
        assert line["run_id"] == "run-123" and line["step"] == "market"

    def test_bearer_token_in_the_message(self, capsys: pytest.CaptureFixture[str]) -> None:
        err = emit(capsys, "json", "got header Authorization: Bearer %s", "abcdefghijklmnop1234")
        assert "abcdefghijklmnop1234" not in err
        assert MASK in json_lines(err)[0]["event"]

    def test_env_secret_values_anywhere(self, capsys: pytest.CaptureFixture[str]) -> None:
        err = emit(
            capsys,
            "json",
            "calling with %s and %s",
            OPENAI_KEY,
            GATEWAY_TOKEN,
            extra={"note": f"pw={REDIS_PASSWORD}", "nested": {"x": OPENAI_KEY}},
        )
        for secret in (OPENAI_KEY, GATEWAY_TOKEN, REDIS_PASSWORD):
            assert secret not in err
        assert err.count(MASK) >= 4

    def test_secret_named_fields_are_masked_others_kept(self, capsys: pytest.CaptureFixture[str]) -> None:
        extra = {
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "accept": "text/event-stream"},
            "api_key": "short",
            "session_token": "abc",
            "prompt_tokens": 1234,
            "idempotency_key": "k-1",
        }
        (line,) = json_lines(emit(capsys, "json", "request", extra=extra))
        assert line["headers"] == {"Authorization": MASK, "accept": "text/event-stream"}
        assert line["api_key"] == MASK and line["session_token"] == MASK
        assert line["prompt_tokens"] == 1234 and line["idempotency_key"] == "k-1"

    def test_traceback_is_redacted(self, capsys: pytest.CaptureFixture[str]) -> None:
        setup_logging("runner", "json", "INFO")
        try:
            raise RuntimeError(f"upstream refused key {OPENAI_KEY}")
        except RuntimeError:
            logging.getLogger("tickertape.test").exception("llm call failed")
        (line,) = json_lines(capsys.readouterr().err)
        assert OPENAI_KEY not in line["exc"] and "RuntimeError" in line["exc"]

    def test_text_format_is_redacted_too(self, capsys: pytest.CaptureFixture[str]) -> None:
        err = emit(capsys, "text", "connecting to redis://:%s@redis:6379/0", REDIS_PASSWORD)
        assert REDIS_PASSWORD not in err
        assert f"redis://:{MASK}@redis:6379/0" in err
        assert "gateway" in err and "INFO" in err

    def test_propagated_child_loggers_are_covered(self, capsys: pytest.CaptureFixture[str]) -> None:
        setup_logging("projector", "json", "INFO")
        logging.getLogger("uvicorn.error").warning("token %s", OPENAI_KEY)
        assert OPENAI_KEY not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl", "eyJzdWIiOiIx"),
        ('{"authorization": "Token abcdef123456"}', "abcdef123456"),
        ("key sk-or-v1-0123456789abcdef0123 rejected", "0123456789abcdef0123"),
        ("xai-ABCDEFGHIJKLMNOPQRSTUV failed", "ABCDEFGHIJKLMNOP"),
        ("GET /api/trading/runs/r1/events?token=s3cr3tvalue&after=0", "s3cr3tvalue"),
        ("https://user:hunter2hunter2@llm.internal/v1", "hunter2hunter2"),
    ],
)
def test_patterns(text: str, leak: str) -> None:
    cleaned = redact(text)
    assert leak not in cleaned and MASK in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "run 01J9ZK started on runner-abc step market 3/7",
        "tokens=1234 cost_usd=0.02 model=offline",
        "XAUTOCLAIM tt:queue runners reclaimed 2 entries",
        "authorization failed for user alice",
    ],
)
def test_ordinary_lines_are_untouched(text: str) -> None:
    assert redact(text) == text


def test_secret_env_values_pick_names_and_list_items() -> None:
    env = {
        "XAI_API_KEY": "xai-0123456789abcdef",
        "TT_API_TOKENS": "aaaaaaaaaaaaaaaa=alice;bbbbbbbbbbbbbbbb=bob",
        "TT_LOG_LEVEL": "DEBUG",
        "SHORT_TOKEN": "abc",
        "HOME": "/root/very/long/path/value",
    }
    values = secret_env_values(env)
    assert "xai-0123456789abcdef" in values
    assert {"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"} <= set(values)
    assert "DEBUG" not in values and "abc" not in values
    assert "/root/very/long/path/value" not in values
    assert "alice" not in values


def test_filter_reads_the_given_environment() -> None:
    record = logging.makeLogRecord({"msg": "pw is %s", "args": ("correct-horse-battery",)})
    assert RedactingFilter({"DB_PASSWORD": "correct-horse-battery"}).filter(record)
    assert record.getMessage() == f"pw is {MASK}"
