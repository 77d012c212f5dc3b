"""The API's documentation pages, served offline: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc).

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google), so
they are blank on a machine without internet. These load the same pages' assets from this
server: the files are those the ``fastapi-offline`` package ships (the published
``swagger-ui-dist`` and ``redoc`` bundles, kept current with their releases), read from the
installed package and served at ``/docs/assets/<digest>/<name>``. The digest is the file's
SHA-256 (its first 16 hex digits), so an asset's URL changes whenever its bytes do and each one
is cached for a year (``immutable``); the pages themselves are ``no-cache`` and carry a CSP that
lets them load nothing from another host. There is no OAuth2 redirect page: the API uses Basic.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

DOCS_PATH: Final = "/docs"
REDOC_PATH: Final = "/redoc"
ASSETS_PATH: Final = DOCS_PATH + "/assets"

ASSETS_PACKAGE: Final = "fastapi_offline"
"""The package whose ``static`` folder holds the files (see pyproject.toml for why this one)."""

MEDIA_TYPES: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
"""Every file served, with its Content-Type: nothing else from the package is."""

IMMUTABLE: Final = "public, max-age=31536000, immutable"

PAGE_CSP: Final = "; ".join(
    (
        "default-src 'self'",
        # The pages' one inline script starts Swagger UI; ReDoc and Swagger UI style inline.
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",  # ReDoc's search index runs in a worker made from a blob
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Nothing but this server: a page that tried another host would be refused by the browser."""


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    gzipped: bytes | None
    """The body gzipped, when that makes it smaller (the scripts and the stylesheet)."""
    digest: str
    media_type: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def read_asset(name: str) -> Asset:
    """One of ``MEDIA_TYPES``' files, read from the package (blocking)."""
    body = (files(ASSETS_PACKAGE) / "static" / name).read_bytes()
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Asset(
        name=name,
        body=body,
        gzipped=gzipped if len(gzipped) < len(body) * 0.9 else None,
        digest=hashlib.sha256(body).hexdigest()[:16],
        media_type=MEDIA_TYPES[name],
    )


_loaded: dict[str, Asset] = {}


async def asset(name: str) -> Asset:
    """``read_asset(name)``, once per process (on first use) and off the event loop: reading and
    compressing the bundles takes about 150 ms."""
    found = _loaded.get(name)
    if found is None:
        found = _loaded[name] = await run_in_threadpool(read_asset, name)
    return found


async def asset_url(root_path: str, name: str) -> str:
    return f"{root_path}{ASSETS_PATH}/{(await asset(name)).digest}/{name}"


def _accepts_gzip(request: Request) -> bool:
    """Whether ``Accept-Encoding`` names gzip with a non-zero quality (RFC 9110 12.5.3)."""
    for coding in request.headers.get("accept-encoding", "").split(","):
        token, *params = (part.strip() for part in coding.split(";"))
        if token.lower() != "gzip":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


async def serve_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in MEDIA_TYPES or request.path_params["digest"] != (await asset(name)).digest:
        # An unknown file, or one a page of an older install named: the page is never cached,
        # so a reload asks for the current digest.
        raise HTTPException(404, f"No such documentation asset: {request.url.path}")
    found = await asset(name)
    headers = {
        "Cache-Control": IMMUTABLE,
        "ETag": found.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if found.gzipped is not None and _accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=found.media_type, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def add_docs(app: FastAPI) -> None:
    """``/docs``, ``/redoc`` and their assets on ``app``, which must have been made with
    ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off) and an ``openapi_url``."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the documentation pages need the app's openapi_url")

    async def swagger_ui(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return _page(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=await asset_url(root, "swagger-ui-bundle.js"),
                swagger_css_url=await asset_url(root, "swagger-ui.css"),
                swagger_favicon_url=await asset_url(root, "favicon.png"),
                oauth2_redirect_url=None,
                # No badge from the online validator (another host) whatever the layout.
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )
        )

    async def redoc(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return _page(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=await asset_url(root, "redoc.standalone.js"),
                redoc_favicon_url=await asset_url(root, "favicon.png"),
                with_google_fonts=False,
            )
        )

    app.add_route(DOCS_PATH, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    app.add_route(ASSETS_PATH + "/{digest}/{name}", serve_asset, include_in_schema=False)
