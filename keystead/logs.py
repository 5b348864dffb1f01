"""Log lines as text or as JSON, one object a line, for ``--log-format``.

:class:`JsonFormatter` is a stdlib :class:`logging.Formatter`: each record
becomes one JSON object with ``time`` (UTC, ISO 8601, milliseconds),
``level``, ``logger`` and ``message``, plus the fields a caller passed as
``extra={"keystead": {...}}`` (the rotation engine passes its event: ``event``,
``key``, ``result``, ``rotation``, ``rewrapped``...; the worker passes each key's
``outcome``). A field never overrides the four above.

Nothing here adds data to a record: what a line says is what the code logged,
and keystead never logs a secret value or key material. An exception is
given by its type only (``exception``): its message or traceback may quote
data.

The format is chosen per process by :data:`FORMAT_ENV` so that processes
spawned by a command (rewrap lanes) log like their parent: :func:`formatter`.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

FORMAT_ENV = "KEYSTEAD_LOG_FORMAT"
"""``json`` or ``text`` (the default): set by ``--log-format``, inherited by child processes."""
FORMATS = ("text", "json")
FIELDS_ATTR = "keystead"
"""The ``extra`` key whose dict of fields a JSON line carries."""
_BASE = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's keystead fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            doc.update((k, v) for k, v in fields.items() if k not in _BASE)
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, default=str, separators=(",", ":"))


def chosen() -> str:
    """The format of this process: :data:`FORMAT_ENV`, ``text`` unless it says ``json``."""
    return "json" if os.environ.get(FORMAT_ENV, "").strip().lower() == "json" else "text"


def formatter(text_format: str, datefmt: str | None = None) -> logging.Formatter:
    """The formatter for this process's log lines: JSON, or ``text_format``."""
    if chosen() == "json":
        return JsonFormatter()
    return logging.Formatter(text_format, datefmt)
