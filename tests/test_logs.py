"""keystead.logs: one JSON object a line, fields from ``extra``, exceptions by type only."""

from __future__ import annotations

import json
import logging

import pytest

from keystead.logs import FORMAT_ENV, JsonFormatter, formatter


def _record(msg: str, *args: object, exc: BaseException | None = None, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("keystead.rotation", logging.WARNING, __file__, 1, msg, args,
                               (type(exc), exc, None) if exc else None)
    if fields:
        record.keystead = fields
    return record


def test_a_line_is_one_json_object_with_the_record_fields() -> None:
    line = JsonFormatter().format(_record("rotation.%s key=%s", "rewrap", "local:main", key="local:main",
                                          rewrapped=7, message="not this", level="nor this"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "rotation.rewrap key=local:main"  # a field never overrides the base four
    assert doc["level"] == "warning" and doc["logger"] == "keystead.rotation"
    assert doc["time"].endswith("Z") and doc["key"] == "local:main" and doc["rewrapped"] == 7


def test_an_exception_is_named_by_type_only() -> None:
    try:
        raise ValueError("the secret is hunter2")
    except ValueError as exc:
        doc = json.loads(JsonFormatter().format(_record("failed", exc=exc)))
    assert doc["exception"] == "ValueError"
    assert "hunter2" not in json.dumps(doc)


def test_values_that_are_not_json_are_written_as_text() -> None:
    doc = json.loads(JsonFormatter().format(_record("x", held={"1": 3}, when=object())))
    assert doc["held"] == {"1": 3} and doc["when"].startswith("<object")


@pytest.mark.parametrize(("value", "kind"), [("json", JsonFormatter), ("JSON", JsonFormatter),
                                             ("text", logging.Formatter), ("", logging.Formatter)])
def test_the_environment_chooses_the_format(monkeypatch: pytest.MonkeyPatch, value: str, kind: type) -> None:
    monkeypatch.setenv(FORMAT_ENV, value)
    assert type(formatter("%(message)s")) is kind
