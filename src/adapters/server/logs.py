"""``serve --log-format json``: one JSON object per line, for log shippers.

Every line has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``node``, ``logger`` and
``message`` (the text the text format writes after the logger's name), then the record's
structured fields (what the caller gave as ``extra``: ``operation``, ``agent``, ``interaction``,
``result``, ``ms``... of ``adapters.operation_log``, ``from``, ``mailbox``, ``message_id``... of
the mail lines), and ``exception`` (the formatted traceback) when there is one. A value JSON
cannot hold is written as its ``str``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# The attributes every LogRecord has (and what formatting adds): not structured fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "node", "color_message", "taskName"}
)
_FIRST = ("time", "level", "node", "logger", "message")


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": getattr(record, "node", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _FIRST and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)
