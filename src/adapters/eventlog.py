"""The server's INFO lines about what happens, one per event: each operation an agent executes,
each mail in (the SMTP receiver) and out (the mail dispatcher).

A line's fields are both in its text (``key=value``, greppable; a value that is not a plain
token is quoted as a JSON string, so a line is one line whatever a client sent) and on the
record (``extra``: ``serve --log-format json`` writes them as members). ``event`` writes one:

    INFO [node1] adapters.eventlog: operation=Accept agent=alice interaction=3PA7 result=ok ms=2.9
    INFO [node1] adapters.smtp.receiver: mail in: from=customer@example.org mailbox=...

**Operations.** The HTTP adapter wraps each call into the engine with ``logged`` (``POST
/me/interactions/{id}``, ``POST /me/interactions``, ``POST /me/channels/{channel}``): logger
``adapters.eventlog``, at INFO, WARNING when the store was unavailable (503), ERROR when the
call raised (the exception goes on; its traceback is the server's to log). Fields:
``operation``, ``agent``, ``interaction`` (or ``channel``), ``result`` (``ok``, the error's kind:
``invalid``, ``not_found``, ``not_allowed``, ``conflict``, ``too_large``, ``unavailable``; or
``exception``), then ``reply`` (the interaction an operation created) or ``error`` (the
``errorDescription``) when there is one, and ``ms``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from interactions_core.results import Result

log = logging.getLogger(__name__)

_MAX_NAME = 64
_PLAIN = re.compile(r"[!#-<>-~]+")


def value_text(value: object) -> str:
    """A field's value in a line's text: as it is when it is a plain token (printable ASCII
    but space, ``"`` and ``=``), else quoted."""
    text = value if isinstance(value, str) else str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def event(logger: logging.Logger, level: int, what: str | None, fields: Mapping[str, Any]) -> None:
    """Log ``what: key=value ...`` (``key=value ...`` without ``what``) at ``level``, with
    ``fields`` on the record. A field whose value is None is left out."""
    if not logger.isEnabledFor(level):
        return
    given = {key: value for key, value in fields.items() if value is not None}
    text = " ".join(f"{key}={value_text(value)}" for key, value in given.items())
    if what is None:
        logger.log(level, "%s", text, extra=given)
    else:
        logger.log(level, "%s: %s", what, text, extra=given)


def _name(body: Any) -> str:
    """The operation's name from the request body, bounded (a client chose it)."""
    name = body.get("operationName") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return "-"
    return name[:_MAX_NAME]


async def logged(
    call: Awaitable[Result],
    agent_id: str,
    body: Any,
    *,
    interaction_id: str | None = None,
    channel: str | None = None,
) -> Result:
    """Await ``call`` (an engine operation through the core runner) and log its line."""
    fields: dict[str, Any] = {"operation": _name(body), "agent": agent_id}
    if channel is not None:
        fields["channel"] = channel
    else:
        fields["interaction"] = interaction_id or "-"
    start = time.perf_counter()
    try:
        result = await call
    except BaseException as exc:
        fields["result"] = "exception"
        fields["error"] = type(exc).__name__
        fields["ms"] = _ms(start)
        event(log, logging.ERROR, None, fields)
        raise
    if result.ok:
        fields["result"] = "ok"
        fields["reply"] = result.reply_interaction_id
    else:
        fields["result"] = result.kind or "error"
        fields["error"] = result.description or ""
    fields["ms"] = _ms(start)
    level = logging.WARNING if result.kind == "unavailable" else logging.INFO
    event(log, level, None, fields)
    return result


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
