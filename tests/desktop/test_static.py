"""The desktop as files and endpoints, without a browser: the headers it is served with, the
vendored CometD client equal to the npm package's files, the page's weight, the sanitiser, and
the desktop API's isolation between agents (404 for another agent's interaction)."""

from __future__ import annotations

import gzip
import re
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.desktop.static_files import STATIC, Bundle
from adapters.http import mail_html
from adapters.server.bootstrap import Server, build
from adapters.server.settings import load_settings

from .harness import ROOT, wait_until

VENDOR = STATIC / "vendor" / "cometd-9.0.0"
NPM = ROOT / "tests" / "cometd" / "js"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
PAGE_BUDGET = 150_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield build(
        load_settings(data_dir=tmp_path_factory.mktemp("static"), smtp_listen_port=0),
        demo_passwords=PASSWORDS,
    )


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/desktop/[^"]+)"', page)


def test_the_page_has_a_strict_csp_and_the_assets_long_cache_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-src 'self'",
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-cache"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    urls = asset_urls(page.text)
    assert len(urls) >= 10
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        again = client.get(url, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
    version = urls[0].split("/")[2]
    gone = client.get(urls[0].replace(version, "000000000000"))
    assert gone.status_code == 404 and gone.json()["status"] == "error"


def test_every_module_the_page_imports_is_served_and_preloaded(client: TestClient) -> None:
    """The page's module graph, walked from app.js: each import is a file of the bundle and
    is preloaded by the page (no request waterfall)."""
    page = client.get("/").text
    preloaded = {url.split("/", 3)[3] for url in asset_urls(page)}
    bundle = Bundle()
    seen: set[str] = set()
    todo = ["js/app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = bundle.files[name].body.decode()
        for found in re.findall(r'^\s*(?:import|export)\s[^;]*?from\s+"(\.[^"]+)"', source, re.M):
            target = (Path(name).parent / found).as_posix()
            target = str(Path("/" + target).resolve())[1:]
            assert target in bundle.files, (name, found)
            todo.append(target)
    assert seen <= preloaded, seen - preloaded


def ensure_node_modules() -> None:
    if not (NPM / "node_modules" / "cometd").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NPM,
            check=True,
            timeout=300,
        )


def test_the_vendored_cometd_client_is_the_npm_package_byte_for_byte() -> None:
    ensure_node_modules()
    package = NPM / "node_modules" / "cometd"
    pinned = (NPM / "package.json").read_text()
    assert '"cometd": "9.0.0"' in pinned
    assert '"version": "9.0.0"' in (VENDOR / "package.json").read_text()
    vendored = sorted(p.name for p in VENDOR.iterdir())
    assert {"LICENSE", "package.json", "Client.js", "AckExtension.js"} <= set(vendored)
    for name in vendored:
        assert (VENDOR / name).read_bytes() == (package / name).read_bytes(), name
    # Every module the vendored files import is vendored too.
    for name in vendored:
        if name.endswith(".js"):
            for imported in re.findall(r'from\s+"\./([^"]+)"', (VENDOR / name).read_text()):
                assert imported in vendored, (name, imported)


def test_the_page_weighs_less_than_150_kb_transferred(client: TestClient) -> None:
    """Everything the page loads before the first API call (it, its stylesheet and every
    module, preloaded), as the server sends it to a browser (gzip)."""
    headers = {"Accept-Encoding": "gzip"}
    page = client.get("/", headers=headers)
    total = len(gzip.compress(page.content, mtime=0))  # TestClient hands back decoded bodies
    for url in asset_urls(page.text):
        asset = client.get(url, headers=headers)
        assert asset.headers["content-encoding"] == "gzip"
        total += int(asset.headers["content-length"])
    print(f"desktop page weight: {total} bytes gzip-compressed")
    assert total < PAGE_BUDGET


# ------------------------------------------------------------------------------ sanitiser

HOSTILE = """
<script>parent.pwned = 1</script><p onclick="x()">Please <b>refund</b> order 77.</p>
<img src="x" onerror="parent.pwned = 2"><a href="javascript:parent.pwned = 3">click</a>
<a href="https://example.net/track?u=1">a link</a><a href="/api/v2/me/logout">relative</a>
<div style="width: expression(alert(4)); color: red; background: url(http://t.example/c.png)">css</div>
<svg onload="parent.pwned = 5"><script>parent.pwned = 6</script></svg>
<img src="http://t.example/pixel.gif" width="1" height="1"><img src="cid:logo@x">
<form action="http://t.example/steal"><input name="password"><button>Log in</button></form>
<iframe src="http://t.example/frame"></iframe><object data="http://t.example/o"></object>
<style>@import url(http://t.example/i.css);</style><link rel="stylesheet" href="http://t.example/s.css">
<meta http-equiv="refresh" content="0;url=http://t.example/r"><base href="http://t.example/">
<img src="data:image/svg+xml,%3Csvg onload='alert(1)'%3E">
"""


def test_the_sanitiser_keeps_the_text_and_drops_everything_active() -> None:
    safe = mail_html.sanitize(HOSTILE, "i1", {"logo@x": "a1"})
    body = safe.body.lower()
    assert "refund" in body and "order 77" in body and "a link" in body
    for gone in (
        "<script",
        "onerror",
        "onclick",
        "onload",
        "javascript:",
        "expression",
        "url(",
        "<svg",
        "<form",
        "<input",
        "<iframe",
        "<object",
        "<style",
        "<link",
        "<meta",
        "<base",
        "t.example/pixel",
        "t.example/steal",
        "/logout",
        "data:image/svg",
    ):
        assert gone not in body, gone
    assert 'src="/api/v2/me/interactions/i1/attachments/a1"' in safe.body
    assert 'href="https://example.net/track?u=1"' in safe.body
    assert safe.body.count('target="_blank"') == safe.body.count("<a ")
    assert safe.body.count('rel="noopener noreferrer"') == safe.body.count("<a ")
    assert safe.remote_images == 1
    shown = mail_html.sanitize(HOSTILE, "i1", {}, remote_images=True)
    assert 'src="http://t.example/pixel.gif"' in shown.body
    assert "<script" not in shown.body.lower()


def test_the_mail_document_is_served_under_its_own_csp() -> None:
    headers = mail_html.document_headers(remote_images=False)
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src 'self' data:;" in csp
    assert "script-src" not in csp and "allow-scripts" not in csp and "sandbox " in csp
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "http:" in mail_html.document_headers(remote_images=True)["Content-Security-Policy"]


# ------------------------------------------------------------------------------ the API


def deliver(server: Server, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = "support@example.com"
    message["Subject"] = subject
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content("Where is my order?")
    message.add_alternative("<p>Where is <img src='http://t.example/p.gif'> my order?</p>", "html")
    with smtplib.SMTP("127.0.0.1", server.receiver.port, timeout=10) as smtp:
        smtp.send_message(message)


def test_the_desktop_endpoints_show_an_agent_only_its_own(
    client: TestClient, server: Server
) -> None:
    alice, bob = ("alice", PASSWORDS["alice"]), ("bob", PASSWORDS["bob"])
    assert client.post("/api/v2/me/channels/email", json={"operationName": "Ready"}, auth=alice)
    deliver(server, "Isolation")

    def invited() -> str | None:
        found = client.get("/api/v2/me/interactions", auth=alice).json()["interactions"]
        return next((i["id"] for i in found if i["state"] == "Invited"), None)

    iid: str = wait_until(invited, what="an invitation for alice")
    content = client.get(f"/api/v2/me/interactions/{iid}/content", auth=alice).json()
    assert content["status"] == "ok"
    assert content["content"]["html"] is True and content["content"]["remoteImages"] == 1
    assert 0 < content["content"]["offerExpiresInSeconds"] <= 60
    assert content["content"]["date"].startswith("2026-01-05T09:00:00")
    page = client.get(f"/api/v2/me/interactions/{iid}/content/html", auth=alice)
    assert page.status_code == 200 and "Where is" in page.text and "t.example" not in page.text
    assert "sandbox" in page.headers["content-security-policy"]
    shown = client.get(f"/api/v2/me/interactions/{iid}/content/html?images=show", auth=alice)
    assert "t.example/p.gif" in shown.text
    unknown = client.get("/api/v2/me/interactions/nope/content", auth=bob)
    for path in ("/content", "/content/html", "/content/html?images=show"):
        other = client.get(f"/api/v2/me/interactions/{iid}{path}", auth=bob)
        assert other.status_code == 404
        assert other.json() == {
            "status": "error",
            "errorDescription": f"Interaction {iid!r} not found",
        }
    assert unknown.status_code == 404
    client.cookies.clear()
    assert client.get(f"/api/v2/me/interactions/{iid}/content").status_code == 401

    targets = client.get("/api/v2/me/transfer-targets", auth=alice).json()
    assert targets["status"] == "ok"
    assert [a["id"] for a in targets["agents"]] == ["bob"]
    assert "Support" in targets["queues"] and "Sent" not in targets["queues"]
    client.cookies.clear()
    assert client.get("/api/v2/me/transfer-targets").status_code == 401
