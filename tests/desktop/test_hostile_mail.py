"""Hostile mail, over real SMTP, read in the real browser: a <script>, onerror= handlers,
javascript: links, CSS expressions and url(), an SVG with script (inline and as a cid: image),
a remote tracking pixel, a stylesheet, a frame, a refresh and a <form>, all pointing at a local
HTTP server that records every request. No script runs (no flag set, no alert, nothing in the
console), no request reaches the tracking server until the agent asks for the images (and then
only the image), and the text is readable."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from selenium.common.exceptions import NoAlertPresentException

from .harness import DesktopServer, Page, TrackingServer, deliver, wait_until

EVIL_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="parent.parent.pwned=\'svg-img\'">'
    b"<script>parent.parent.pwned='svg-script'; alert('svg')</script>"
    b'<image href="http://127.0.0.1:1/svg-image.png" width="10" height="10"/></svg>'
)


def hostile(track: str) -> str:
    return f"""
<html><head>
<meta http-equiv="refresh" content="0;url={track}/refresh">
<link rel="stylesheet" href="{track}/style.css">
<style>@import url({track}/import.css); body {{ background: url({track}/body-bg.png) }}</style>
<base href="{track}/">
<script>parent.pwned = 'script'; top.pwned = 'script'; alert('script');
console.log('pwned by script')</script>
</head><body onload="parent.pwned = 'onload'">
<p>Dear support, please refund order 77. My address is 5 Rue de la Paix.</p>
<img src="x" onerror="parent.pwned = 'onerror'; alert('onerror')">
<p><a href="javascript:parent.pwned = 'link'">Click to see your parcel</a>
and <a href="https://example.net/parcel/77">the carrier's page</a></p>
<div style="width: expression(alert('css')); color: #a00;
  background-image: url({track}/css-bg.png)">Styled text stays readable.</div>
<svg onload="parent.pwned = 'svg'"><script>parent.pwned = 'svg-script'</script>
<image href="{track}/svg-inline.png"/></svg>
<img src="cid:evil-svg@example.org" alt="an svg">
<img src="{track}/pixel.gif" width="1" height="1" alt="">
<form action="{track}/steal" method="post"><p>Confirm your password:
<input name="password" type="password"><button type="submit">Confirm</button></p></form>
<iframe src="{track}/frame"></iframe><object data="{track}/object"></object>
<embed src="{track}/embed"><video src="{track}/video" autoplay></video>
<a href="{track}/visit" id="tracked">a tracked link</a>
</body></html>"""


@pytest.fixture
def tracking() -> TrackingServer:
    server = TrackingServer().start()
    yield server
    server.stop()


def test_a_hostile_mail_runs_nothing_and_calls_nobody(
    desktop: DesktopServer, browser: Callable[..., Page], tracking: TrackingServer
) -> None:
    page = browser()
    page.open()
    page.login("alice")
    page.ready()
    deliver(
        desktop.smtp_port,
        "Refund for order 77",
        text="Dear support, please refund order 77.",
        html=hostile(tracking.base),
        inline=[("evil-svg@example.org", "image/svg+xml", EVIL_SVG)],
    )
    page.click(".toast button.primary", "Accept")
    frame = page.wait(".mail-frame")
    sandbox = str(frame.get_attribute("sandbox"))
    assert "allow-scripts" not in sandbox and "allow-forms" not in sandbox
    page.wait(".images-note", text="1 remote image is blocked")
    wait_until(lambda: page.js("return arguments[0].contentDocument?.readyState", frame)
               == "complete", what="the mail document loaded")  # fmt: skip
    time.sleep(1.5)  # whatever the mail could make the browser fetch would be on its way now

    assert tracking.requests == [], tracking.requests
    assert page.js("return window.pwned === undefined && window.top.pwned === undefined")
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert.text  # noqa: B018

    page.driver.switch_to.frame(frame)
    text = page.text("body")
    assert "please refund order 77" in text and "Styled text stays readable." in text
    assert "Click to see your parcel" in text
    for tag in ("script", "svg", "form", "input", "iframe", "object", "embed", "video", "style",
                "link", "meta", "base"):  # fmt: skip
        assert not page.all(f"body {tag}"), tag
    head = page.js("return [...document.head.children].map(e => e.outerHTML.slice(0, 40))")
    assert len(head) == 5 and "refresh" not in str(head) and "href" not in str(head), head
    active = page.js(
        "return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]"
        ".filter(a => a.name.startsWith('on') || /javascript:|expression|url\\(/i.test(a.value))"
        ".map(a => e.tagName + ' ' + a.name + '=' + a.value))"
    )
    assert active == [], active
    links = page.js(
        "return [...document.querySelectorAll('a')].map(a => [a.getAttribute('href'),"
        " a.target, a.rel])"
    )
    assert [href for href, _, _ in links if href] == [
        "https://example.net/parcel/77",
        f"{tracking.base}/visit",
    ]
    assert all(target == "_blank" and "noopener" in rel for _, target, rel in links), links
    assert page.js("return window.pwned === undefined")
    svg = page.js("const i = document.querySelector('img[alt=\"an svg\"]'); return i && i.src")
    assert svg and "/attachments/" in svg  # the cid: SVG, shown as an image: its script is inert
    page.driver.switch_to.default_content()
    page.shot("08-hostile-mail")

    # Asked for, the remote image (and only it) is fetched.
    page.click(".images-note button", "Show images")
    wait_until(lambda: tracking.requests, what="the remote image requested")
    time.sleep(1.0)
    assert tracking.requests == ["GET /pixel.gif"], tracking.requests
    assert page.js("return window.pwned === undefined")
    logged = " ".join(str(entry["message"]) for entry in page.console())
    assert "pwned" not in logged and "svg-script" not in logged, logged
    page.button("StopProcessing").click()
    wait_until(lambda: not page.all("#mine li"), what="done")
