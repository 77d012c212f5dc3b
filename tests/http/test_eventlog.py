"""The event lines (``adapters.eventlog``) and the JSON log format (``serve --log-format json``)
on their own: what a client chose stays on one line, the fields reach the JSON members, and a
failing operation is logged and still raised. (The lines of a running server are checked in
tests/e2e/test_walkthrough_script.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from adapters.eventlog import event, logged
from adapters.server.cli import logging_config
from interactions_core.errors import NotFound
from interactions_core.results import Result


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """``serve``'s logging, JSON format, into a string; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logging.config.dictConfig(logging_config("node7", "info", "json"))
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    yield out
    root.handlers[:], root.level = saved


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_hostile_value_stays_on_one_line_in_the_text() -> None:
    logger = logging.getLogger("test.eventlog.text")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        event(logger, logging.INFO, "mail in", {"from": "a@b\nINFO forged", "size": 3, "x": None})
    finally:
        logger.removeHandler(handler)
    (record,) = seen
    assert record.getMessage() == 'mail in: from="a@b\\nINFO forged" size=3'
    assert "\n" not in record.getMessage()
    assert record.__dict__["from"] == "a@b\nINFO forged" and not hasattr(record, "x")


def test_json_lines_carry_the_fields(stream: io.StringIO) -> None:
    async def answer() -> Result:
        return Result(status="ok", replyInteractionId="R1")

    body = {"operationName": "ReplyAll"}
    asyncio.run(logged(answer(), "alice", body, interaction_id="I1"))

    async def refuse() -> Result:
        return Result.failed(NotFound("Interaction", "I2"))

    asyncio.run(logged(refuse(), "bob", {"operationName": "Accept"}, interaction_id="I2"))
    logging.getLogger("adapters.other").info("plain %s", "line")
    first, second, plain = records(stream)
    assert first["level"] == "INFO" and first["node"] == "node7"
    assert first["logger"] == "adapters.eventlog"
    assert {k: first[k] for k in ("operation", "agent", "interaction", "result", "reply")} == {
        "operation": "ReplyAll",
        "agent": "alice",
        "interaction": "I1",
        "result": "ok",
        "reply": "R1",
    }
    assert isinstance(first["ms"], float)
    assert str(first["time"]).endswith("+00:00")
    assert second["result"] == "not_found" and "I2" in str(second["error"])
    assert plain["message"] == "plain line"
    assert set(plain) == {"time", "level", "node", "logger", "message"}


def test_an_operation_that_raises_is_an_error_line_and_still_raises(
    stream: io.StringIO,
) -> None:
    async def broken() -> Result:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        asyncio.run(logged(broken(), "alice", {"operationName": "Send"}, interaction_id="I3"))
    (line,) = records(stream)
    assert line["level"] == "ERROR"
    assert (line["result"], line["error"], line["operation"]) == (
        "exception",
        "RuntimeError",
        "Send",
    )


def test_an_exception_is_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logging.getLogger("adapters.x").exception("it failed")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = records(stream)
    assert "ValueError: multi\nline" in str(line["exception"])
