"""The desktop's static files, served from the package: read once, gzip-compressed once, under a
versioned path with long cache headers, the page itself under a strict Content-Security-Policy.

* ``/`` is ``static/index.html`` (``no-cache``: always revalidated, so a new version is picked
  up at the next load). The file names its assets as ``{{assets}}/...``, replaced here by the
  versioned prefix.
* ``/desktop/<version>/<path>`` is every other file of ``static/``; ``<version>`` is a hash of
  all the files, so an asset's URL changes whenever any file does and may be cached for a year
  (``immutable``). Another version answers 404.
* A client that accepts gzip gets the compressed bytes (``Vary: Accept-Encoding``); ``ETag`` and
  ``If-None-Match`` answer 304.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

STATIC: Final = Path(__file__).resolve().parent / "static"
ASSETS_PREFIX: Final = "/desktop"
PLACEHOLDER: Final = "{{assets}}"

TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; object-src 'none'; worker-src blob:; "
    "require-trusted-types-for 'script'; trusted-types default"
)
"""No inline script or style, no eval, no request anywhere but this origin (the API and CometD,
over HTTP and websocket), frames from this origin only (the sanitised mail), images from this
origin, ``data:`` and ``blob:``; DOM-XSS sinks (``innerHTML``...) refused by Trusted Types. The
one script URL the page makes is the CometD client's timer worker (a ``blob:`` of its own code,
so that its timers are not throttled in a background tab): the page's ``default`` policy
(``js/live.js``) lets only ``blob:`` URLs of this origin through, and ``worker-src`` only those."""

SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
PAGE_HEADERS: Final = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS: Final = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}


@dataclass(frozen=True)
class File:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def _file(body: bytes, media_type: str) -> File:
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    return File(body, packed, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class Bundle:
    """Every file of ``root``, in memory, with the version its URLs carry."""

    def __init__(self, root: Path = STATIC) -> None:
        paths = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        raw = {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}
        digest = hashlib.sha256()
        for name, body in raw.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
        self.version = digest.hexdigest()[:12]
        self.prefix = f"{ASSETS_PREFIX}/{self.version}"
        page = raw.pop("index.html").decode("utf-8").replace(PLACEHOLDER, self.prefix)
        self.page = _file(page.encode("utf-8"), TYPES[".html"])
        self.files: Mapping[str, File] = {
            name: _file(body, TYPES.get(Path(name).suffix, "application/octet-stream"))
            for name, body in raw.items()
        }

    def url(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def respond(self, request: Request, found: File, headers: Mapping[str, str]) -> Response:
        common = {**headers, "ETag": found.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=common)
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            return Response(
                found.gzipped,
                media_type=found.media_type,
                headers={**common, "Content-Encoding": "gzip"},
            )
        return Response(found.body, media_type=found.media_type, headers=common)

    async def page_endpoint(self, request: Request) -> Response:
        return self.respond(request, self.page, PAGE_HEADERS)

    async def asset_endpoint(self, request: Request) -> Response:
        version = request.path_params["version"]
        found = self.files.get(request.path_params["path"]) if version == self.version else None
        if found is None:
            return JSONResponse(
                {"status": "error", "errorDescription": "No such desktop file"},
                status_code=404,
                headers={"Cache-Control": "no-store"},
            )
        return self.respond(request, found, ASSET_HEADERS)
