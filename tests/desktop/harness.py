"""What the desktop's browser tests run: the real server as a process (``interactions serve``),
an aiosmtpd relay sink, a local HTTP server that records every request (a "tracking" host), and
headless Chromium from Debian driven by Selenium through ``/usr/bin/chromedriver`` (never a
driver or browser download: the Service is given the path, so Selenium Manager is not run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from adapters.server.agents import add_agent
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
# Every run takes its screenshots; they replace docs/desktop/*.png (what docs/desktop.md shows)
# only when INTERACTIONS_SCREENSHOTS=docs is set, so a test run leaves the tree as it was.
SHOTS = (
    ROOT / "docs" / "desktop"
    if os.environ.get("INTERACTIONS_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / "interactions-desktop-screenshots"
)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MAILBOX = "support@example.com"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------ mail


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Any:
        return message_from_bytes(self.raw, policy=policy.default)


class MailSink:
    """The relay: an aiosmtpd server in this process, keeping what it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self._received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 OK"

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, subject_part: str, timeout: float = 20.0) -> Received:
        def find() -> Received | None:
            for mail in self.received:
                if subject_part in str(mail.message["Subject"]):
                    return mail
            return None

        found: Received = wait_until(find, timeout, f"a relayed mail about {subject_part!r}")
        return found


def deliver(
    smtp_port: int,
    subject: str,
    *,
    text: str = "Hello,\n\nmy order has not arrived yet.\n\nCee",
    html: str | None = None,
    sender: str = "Cee Customer <customer@example.org>",
    cc: str | None = "colleague@example.org",
    message_id: str | None = None,
    attachments: Iterable[tuple[str, str, bytes]] = (),
    inline: Iterable[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    """A customer's mail, over real SMTP to the server's receiver. ``inline``: (content id,
    MIME type, bytes) images the HTML shows as ``cid:``; ``attachments``: (name, type, bytes)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = MAILBOX
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message["Message-ID"] = message_id or f"<{time.time_ns()}@example.org>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
        related = message.get_payload()[1]
        for cid, mimetype, data in inline:
            maintype, subtype = mimetype.split("/")
            related.add_related(data, maintype=maintype, subtype=subtype, cid=f"<{cid}>")
    for name, mimetype, data in attachments:
        maintype, subtype = mimetype.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)
    return message


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour (what a mail's inline logo is, for the tests)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------ tracking host


class TrackingServer:
    """An HTTP server on a loopback port that records every request it gets: what a
    remote image, stylesheet, form or frame of a hostile mail would call."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        lock = threading.Lock()
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                with lock:
                    recorded.append(f"{self.command} {self.path}")
                body = (
                    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01"
                    b"\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
                )
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TrackingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------------------ the server


@dataclass
class DesktopServer:
    """``interactions serve`` in a process, on fixed ports and a data directory that survive a
    restart (``stop`` then ``start``)."""

    root: Path
    relay_port: int
    settings: dict[str, Any] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    smtp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def write_config(self) -> Path:
        agents = self.root / "agents.json"
        if not agents.exists():
            add_agent(agents, "alice", PASSWORDS["alice"], name="Alice Agent", mailboxes=[MAILBOX])
            add_agent(
                agents, "bob", PASSWORDS["bob"], name="Bob Agent", mailboxes=[MAILBOX],
                skills=["billing"],
            )  # fmt: skip
        config = self.root / "config.json"
        settings: dict[str, Any] = {
            "data_dir": str(self.root / "data"),
            "http_port": self.http_port,
            "smtp_listen_port": self.smtp_port,
            "agents_file": str(agents),
            "mailboxes": {MAILBOX: "Support"},
            "message_id_domain": "desktop.example.com",
            "relay": {"host": "127.0.0.1", "port": self.relay_port, "security": "none"},
            "offer_timeout_seconds": 300,
            "shared_workbins": {"Team": []},
            "queue_skills": {"Billing": "billing"},
            **self.settings,
        }
        config.write_text(json.dumps(settings))
        return config

    def start(self) -> DesktopServer:
        config = self.write_config()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adapters.server.cli", "serve", "--config", str(config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def api(self, agent: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v2", auth=(agent, PASSWORDS[agent]), timeout=10
        )


# ------------------------------------------------------------------------------ the browser


def require_browser() -> None:
    """Chromium and its driver come from Debian (``make node-deps`` installs them)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(
            f"missing {', '.join(missing)}: run `make node-deps` (apt-get install chromium "
            "chromium-driver)"
        )


class Page:
    """One browser (its own profile: cookies, storage) on the desktop."""

    def __init__(self, server: DesktopServer, width: int = 1280, height: int = 1000) -> None:
        require_browser()
        options = Options()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--lang=en-US",
            "--font-render-hinting=none",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Its profile and its temporary files (Chromium's /tmp/org.chromium.Chromium.* dirs,
        # which it leaves behind) in a directory of its own, removed at close.
        self._scratch = Path(tempfile.mkdtemp(prefix="desktop-browser-"))
        options.add_argument(f"--user-data-dir={self._scratch / 'profile'}")
        env = {**os.environ, "TMPDIR": str(self._scratch)}
        self.server = server
        try:
            self.driver = webdriver.Chrome(
                service=Service(executable_path=str(CHROMEDRIVER), env=env), options=options
            )
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self.driver.set_script_timeout(20)
        self.logs: list[dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def open(self, query: str = "") -> Page:
        self.driver.get(self.server.url + "/" + query)
        return self

    # -- finding and waiting
    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The text of the first element matching ``css`` ("" for none), read again when a
        re-render replaced it meanwhile."""
        for _ in range(20):
            try:
                found = self.all(css)
                return str(found[0].text) if found else ""
            except StaleElementReferenceException:
                time.sleep(0.05)
        raise AssertionError(f"{css!r} keeps being replaced")

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, css: str, timeout: float = 15.0, text: str | None = None) -> WebElement:
        """The first visible element matching ``css`` (and containing ``text``)."""

        def found(_: Any) -> WebElement | bool:
            for element in self.all(css):
                try:
                    if element.is_displayed() and (text is None or text in element.text):
                        return element
                except Exception:
                    continue
            return False

        try:
            element: WebElement = WebDriverWait(self.driver, timeout).until(found)
        except TimeoutException:
            raise AssertionError(
                f"no visible {css!r}" + (f" with {text!r}" if text else "") + f"\n{self.status}"
            ) from None
        return element

    def wait_gone(self, css: str, timeout: float = 15.0) -> None:
        def gone(_: Any) -> bool:
            try:
                return not any(e.is_displayed() for e in self.all(css))
            except StaleElementReferenceException:
                return False

        WebDriverWait(self.driver, timeout).until(gone)

    def wait_text(self, css: str, text: str, timeout: float = 15.0) -> WebElement:
        return self.wait(css, timeout, text)

    @property
    def status(self) -> str:
        try:
            return self.text("#status")
        except Exception:
            return ""

    def click(self, css: str, text: str | None = None) -> None:
        """Click the element, found again if the page re-rendered it between the find and the
        click (a list refreshed by a notification: ``StaleElementReferenceException``)."""
        for _ in range(4):
            try:
                self.wait(css, text=text).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.1)
        self.wait(css, text=text).click()

    def button(self, capability: str) -> WebElement:
        return self.wait(f".toolbar button[data-capability={capability}]")

    def capabilities(self) -> list[str]:
        return [
            str(b.get_attribute("data-capability"))
            for b in self.all(".toolbar button[data-capability]")
        ]

    def type_into(self, css: str, text: str, clear: bool = True) -> None:
        element = self.wait(css)
        if clear:
            element.clear()
        element.send_keys(text)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # -- the desktop's own steps
    def login(self, agent: str, password: str | None = None) -> None:
        self.type_into("#login-agent", agent)
        self.type_into("#login-password", password or PASSWORDS[agent])
        self.click("#login-form button[type=submit]")
        self.wait("#desk")
        self.wait_text("#status", "up to date")

    def ready(self) -> None:
        self.click("#ready-btn")
        self.wait_text("#ready-state", "Ready")
        wait_until(lambda: self.find("#ready-state").text == "Ready", what="Ready")

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console(self) -> list[dict[str, Any]]:
        self.logs += self.driver.get_log("browser")
        return self.logs

    def errors(self, allowed: Iterable[str] = ()) -> list[str]:
        """Console errors of the page, but those containing one of ``allowed``."""
        allowed = tuple(allowed)
        return [
            str(e["message"])
            for e in self.console()
            if e["level"] == "SEVERE" and not any(a in str(e["message"]) for a in allowed)
        ]


def alice_and_bob(browser: Callable[..., Page]) -> tuple[Page, Page]:
    """Two browsers logged in: alice over websocket (the default), bob over long-polling."""
    alice = browser()
    alice.open()
    alice.login("alice")
    bob = browser()
    bob.open("?transport=long-polling")
    bob.login("bob")
    assert "long-polling" in bob.status
    return alice, bob
