"""The agent desktop: a web page, served at ``/``, where a person works their e-mail.

It is plain ES modules and CSS in ``static/`` (no build step), shipped in the wheel, on the
official CometD JavaScript client vendored as its published files (``static/vendor/``), and it
uses nothing but the public HTTP API and CometD (docs/desktop.md). ``install_desktop`` adds
the page, its assets and the few API endpoints it needs (``adapters.http.desktop_api``) to the
API's app, and lets the page's own requests get a 401 without a Basic challenge
(``challenge``), so that the browser opens no password dialog of its own.
"""

from __future__ import annotations

from fastapi import FastAPI

from ..http.app import Api
from ..http.desktop_api import add_desktop_api
from .challenge import NoChallengeForScripts
from .static_files import ASSETS_PREFIX, Bundle

__all__ = ["Bundle", "install_desktop"]


def install_desktop(app: FastAPI, api: Api, bundle: Bundle | None = None) -> Bundle:
    """Serve the desktop from ``app``: ``/``, ``/desktop/<version>/...`` and the desktop's API
    endpoints. Returns the bundle (its ``version`` names the asset URLs)."""
    bundle = bundle or Bundle()
    add_desktop_api(app, api)
    app.add_middleware(NoChallengeForScripts)
    app.router.add_route("/", bundle.page_endpoint, methods=["GET"], include_in_schema=False)
    app.router.add_route(
        ASSETS_PREFIX + "/{version}/{path:path}",
        bundle.asset_endpoint,
        methods=["GET"],
        include_in_schema=False,
    )
    return bundle
