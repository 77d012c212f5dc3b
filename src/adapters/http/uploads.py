"""Attachment uploads, streamed: a ``multipart/form-data`` body to a temporary file, bounded.

The body is read here, not by FastAPI's form parsing (which spools a whole upload, however
large, before the route runs): a declared ``Content-Length`` over the limit plus
``ENVELOPE_BYTES`` is a 413 before a byte is read; otherwise the request stream is read chunk
by chunk through ``python_multipart``'s streaming parser, the ``attachment`` part written to a
temporary file as it arrives and counted: past the limit, reading stops with a 413 and the
file is removed. What stays in memory is one chunk of the request and the small form fields.

Form fields: ``attachment`` (required, once; its ``filename`` and ``Content-Type`` are the
attachment's name and type) and ``contentId`` (optional); others are read past and ignored.
"""

from __future__ import annotations

import codecs
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from interactions_core.errors import InvalidRequest, TooLarge

ENVELOPE_BYTES: Final = 64 * 1024
"""What a body may hold beyond the attachment's bytes: boundaries, part headers, ``contentId``."""

CONTENT_ID_MAX: Final = 1000
"""``contentId`` at most this many characters (the core then allows 250 of visible ASCII)."""

FIELD: Final = "attachment"
CONTENT_ID: Final = "contentId"

OPENAPI: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The file; its filename and Content-Type are the "
                            "attachment's name and type.",
                        },
                        CONTENT_ID: {
                            "type": "string",
                            "maxLength": CONTENT_ID_MAX,
                            "description": "For an image the draft's HTML shows as `<img src=\"cid:"
                            '...">`: one token of visible ASCII (brackets allowed).',
                        },
                    },
                    "required": [FIELD],
                }
            }
        },
    }
}
"""The route's request body in OpenAPI (what FastAPI would write for the two form fields)."""


@dataclass
class Upload:
    """The ``attachment`` part, in ``file`` (positioned at its start), and the form's
    ``contentId``."""

    file: IO[bytes]
    size: int
    filename: str | None
    content_type: str | None
    content_id: str | None

    def read(self) -> bytes:
        """The whole attachment (blocking: call it off the event loop)."""
        self.file.seek(0)
        return self.file.read()


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    value: bytearray = field(default_factory=bytearray)


class _Reader:
    """The parser's callbacks: the attachment's pieces to write, the fields' values."""

    def __init__(self, limit: int, charset: str) -> None:
        self.limit = limit
        self.charset = charset
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.pending: list[memoryview] = []  # the attachment's pieces of the current chunk
        self.size = 0
        self.attachment: _Part | None = None
        self.attachment_done = False
        self.content_id: str | None = None

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers.append((self.header_name.lower(), self.header_value))
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        headers = dict(self.part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in options:
            raise InvalidRequest('A multipart part has no Content-Disposition "name"')
        self.part.name = self._text(options[b"name"])
        if self.part.name != FIELD:
            return
        if self.attachment is not None:
            raise InvalidRequest(f"One upload per request: the form field {FIELD!r} is repeated")
        self.attachment = self.part
        if b"filename" in options:
            self.part.filename = self._text(options[b"filename"])
        if b"content-type" in headers:
            self.part.content_type = headers[b"content-type"].decode("latin-1").strip()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part is self.attachment:
            self.size += end - start
            if self.size > self.limit:
                raise TooLarge(f"attachment over {self.limit} bytes")
            self.pending.append(memoryview(data)[start:end])
        elif self.part.name == CONTENT_ID:
            self.part.value += data[start:end]
            if len(self.part.value) > 4 * CONTENT_ID_MAX:  # UTF-8: at most 4 bytes a character
                raise InvalidRequest(f"{CONTENT_ID} over {CONTENT_ID_MAX} characters")

    def on_part_end(self) -> None:
        if self.part is self.attachment:
            self.attachment_done = True
        elif self.part.name == CONTENT_ID:
            value = self._text(bytes(self.part.value))
            if len(value) > CONTENT_ID_MAX:
                raise InvalidRequest(f"{CONTENT_ID} over {CONTENT_ID_MAX} characters")
            self.content_id = value

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def _boundary_and_charset(request: Request) -> tuple[bytes, str]:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidRequest(
            f"The upload must be multipart/form-data (with a boundary), form field {FIELD!r}"
        )
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"
    return params[b"boundary"], charset


@asynccontextmanager
async def receive_upload(request: Request, limit: int) -> AsyncIterator[Upload]:
    """The request's ``attachment`` in a temporary file (removed when the block ends), or
    ``TooLarge`` (over ``limit`` bytes, or a body over ``limit + ENVELOPE_BYTES``: declared,
    or counted while reading) / ``InvalidRequest`` (not multipart, no or two ``attachment``
    parts, a truncated body, a ``contentId`` too long)."""
    most = limit + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise TooLarge(f"request body over {most} bytes (attachment limit {limit})")
    boundary, charset = _boundary_and_charset(request)
    reader = _Reader(limit, charset)
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": reader.on_part_begin,
                "on_header_field": reader.on_header_field,
                "on_header_value": reader.on_header_value,
                "on_header_end": reader.on_header_end,
                "on_headers_finished": reader.on_headers_finished,
                "on_part_data": reader.on_part_data,
                "on_part_end": reader.on_part_end,
            },
        )
    except FormParserError:
        raise InvalidRequest("The multipart boundary is too long") from None
    with tempfile.NamedTemporaryFile(prefix="upload-", suffix=".part") as file:
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                parser.write(chunk)  # first: an attachment past the limit says so
                if received > most:
                    raise TooLarge(f"request body over {most} bytes (attachment limit {limit})")
                if reader.pending:
                    await run_in_threadpool(file.writelines, reader.pending)
                    reader.pending.clear()
            parser.finalize()
        except FormParserError:
            raise InvalidRequest("Malformed multipart/form-data body") from None
        except ClientDisconnect:
            raise InvalidRequest("The client went away during the upload") from None
        found = reader.attachment
        if found is None:
            raise InvalidRequest(f"The multipart form field {FIELD!r} is required")
        if not reader.attachment_done:
            raise InvalidRequest("The multipart body ends inside the attachment")
        await run_in_threadpool(file.flush)
        yield Upload(file, reader.size, found.filename, found.content_type, reader.content_id)
