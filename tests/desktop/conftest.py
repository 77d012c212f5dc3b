"""Fixtures of the desktop's browser tests: one server process and one relay sink per test
module (a module may set ``SERVER_SETTINGS``), and ``browser()`` opening headless Chromium
pages that are closed after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .harness import DesktopServer, MailSink, Page, require_browser


@pytest.fixture(scope="module")
def sink() -> Iterator[MailSink]:
    relay = MailSink().start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def desktop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sink: MailSink
) -> Iterator[DesktopServer]:
    require_browser()
    settings: dict[str, Any] = getattr(request.module, "SERVER_SETTINGS", {})
    server = DesktopServer(tmp_path_factory.mktemp("desktop"), sink.port, dict(settings))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(desktop: DesktopServer) -> Iterator[Callable[..., Page]]:
    opened: list[Page] = []

    def open_page(**options: Any) -> Page:
        page = Page(desktop, **options)
        opened.append(page)
        return page

    try:
        yield open_page
    finally:
        for page in opened:
            page.close()
