"""The whole agent flow through the page, in headless Chromium, on the real server (with CSRF
protection on): log in, go Ready, a mail arrives over SMTP, the invitation toast, Accept, read
it (HTML with an inline cid: image, an attachment to download), comment, ReplyAll, edit, attach
files (upload, remove, and the original's), Send; the relay gets the reply with the right
headers, the quote and the attachments. Then StopProcessing, a new e-mail with an error shown
as the API's errorDescription, Not ready with a reason, log out. Each step is a screenshot in
docs/desktop/ (docs/desktop.md). Also: the page's weight as the browser measures it, and the
page at 200 % zoom."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from selenium.webdriver.common.action_chains import ActionChains

from .harness import MAILBOX, DesktopServer, MailSink, Page, deliver, png, wait_until

SERVER_SETTINGS = {"csrf": True}
HTML = (
    "<p>Hello,</p><p>my order <b>42</b> has not arrived yet. Here is our logo:</p>"
    '<p><img src="cid:logo@example.org" alt="logo"></p><p>Cee</p>'
)
INVOICE = b"%PDF-1.4\n% invoice 42\n"
# Console errors a page may log on purpose: a wrong password's 401, and the 400 of the
# invalid address tried below.
EXPECTED = ("401 (Unauthorized)", "400 (Bad Request)")


def test_the_agent_works_a_mail_end_to_end(
    desktop: DesktopServer, sink: MailSink, browser: Callable[..., Page], tmp_path: Path
) -> None:
    page = browser()
    page.open()
    page.wait("#login-agent")
    page.shot("01-login")

    page.type_into("#login-agent", "alice")
    page.type_into("#login-password", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_text("#login-error", "")
    wait_until(lambda: page.text("#login-error"), what="the login error")
    assert page.find("#desk").is_displayed() is False

    page.login("alice")
    assert "websocket" in page.status
    page.shot("02-logged-in")
    page.ready()

    original = deliver(
        desktop.smtp_port,
        "Order 42 has not arrived",
        text="Hello,\n\nmy order 42 has not arrived yet. Our logo is attached.\n\nCee",
        html=HTML,
        inline=[("logo@example.org", "image/png", png(160, 48, (11, 87, 208)))],
        attachments=[("invoice-42.pdf", "application/pdf", INVOICE)],
    )
    toast = page.wait(".toast")
    assert toast.get_attribute("role") == "alert"
    assert "Order 42 has not arrived" in toast.text
    page.wait_text(".toast .countdown", "s to answer")
    page.shot("03-invitation")
    page.click(".toast button.primary", "Accept")
    page.wait_gone(".toast")

    page.wait(".mail-frame")
    page.wait_text(".reader-head .meta", "Jan 5, 2026")
    assert page.capabilities() == [
        "Transfer",
        "Reply",
        "ReplyAll",
        "Forward",
        "StopProcessing",
        "PlaceInQueue",
        "PlaceInWorkbin",
        "UpdateProperties",
    ]
    head = page.text(".reader-head")
    assert "Cee Customer <customer@example.org>" in head and "colleague@example.org" in head
    frame = page.find(".mail-frame")
    page.driver.switch_to.frame(frame)
    wait_until(
        lambda: (
            page.js(
                "const i = document.querySelector('img'); return i && i.complete && i.naturalWidth"
            )
            == 160
        ),
        what="the inline cid: image shown",
    )
    assert "has not arrived yet" in page.text("body")
    page.driver.switch_to.default_content()
    link = page.wait(".attachments a", text="invoice-42.pdf")
    downloaded = page.driver.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done)",
        link.get_attribute("href"),
    )
    assert downloaded == INVOICE.decode()
    page.shot("04-reading")

    page.button("UpdateProperties").click()
    page.type_into("dialog textarea[name=comment]", "VIP customer, ships today")
    page.click("dialog button[type=submit]")
    page.wait_text(".properties .comment", "VIP customer")

    page.button("ReplyAll").click()
    body = page.wait("#compose-body")
    assert page.find("#compose-to").get_attribute("value") == "Cee Customer <customer@example.org>"
    assert page.find("#compose-cc").get_attribute("value") == "colleague@example.org"
    subject = page.find("#compose-subject").get_attribute("value")
    assert subject == "Re: Order 42 has not arrived"
    assert "> my order 42 has not arrived yet." in (body.get_attribute("value") or "")
    assert page.capabilities() == [
        "Cancel",
        "Send",
        "PlaceInWorkbin",
        "UpdateProperties",
        "LinkAttachment",
    ]
    # The draft opens with the caret in the body, above the quote: the agent just types.
    assert page.js("return document.activeElement.id") == "compose-body"
    assert page.js("return document.activeElement.selectionStart") == 0
    ActionChains(page.driver).send_keys("It ships today, with tracking number TN-42.\n").perform()
    page.type_into("#compose-bcc", "audit@example.org")
    page.type_into("#compose-subject", subject + " [ticket 42]")

    notes = tmp_path / "tracking-notes.txt"
    notes.write_text("TN-42 ships from Lyon\n")
    stray = tmp_path / "wrong-file.txt"
    stray.write_text("not this one\n")
    page.find("#compose-files").send_keys(str(notes))
    page.wait(".attachments a", text="tracking-notes.txt")
    page.find("#compose-files").send_keys(str(stray))
    page.wait(".attachments a", text="wrong-file.txt")
    page.click('.attachments button[aria-label="Remove wrong-file.txt"]')
    # The draft also carries the logo its quoted HTML shows (inline): the stray file alone goes.
    wait_until(
        lambda: "wrong-file.txt" not in page.text(".attachments"),
        what="the stray file removed",
    )
    assert "tracking-notes.txt" in page.text(".attachments")
    page.button("LinkAttachment").click()
    page.click("dialog button[type=submit]", "Attach")
    page.wait(".attachments a", text="invoice-42.pdf")
    page.shot("05-reply-all")

    page.button("Send").click()
    page.wait_text("#status", "Sent")
    reply = sink.wait_for("[ticket 42]")
    mail = reply.message
    assert mail["Subject"] == "Re: Order 42 has not arrived [ticket 42]"
    assert mail["From"] == MAILBOX
    assert mail["To"] == "Cee Customer <customer@example.org>"
    assert mail["Cc"] == "colleague@example.org"
    assert mail["Bcc"] is None and "audit@example.org" in reply.rcpt_tos
    assert sorted(reply.rcpt_tos) == sorted(
        ["customer@example.org", "colleague@example.org", "audit@example.org"]
    )
    assert mail["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in mail["References"]
    text = mail.get_body(("plain",)).get_content()
    assert text.startswith("It ships today, with tracking number TN-42.")
    assert "> my order 42 has not arrived yet." in text
    files = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert {"tracking-notes.txt", "invoice-42.pdf"} <= files.keys()
    assert "wrong-file.txt" not in files
    assert files["tracking-notes.txt"] == "TN-42 ships from Lyon\n"
    assert files["invoice-42.pdf"] == INVOICE

    # Back on the original (selected after Send): done with it.
    page.wait(".toolbar button[data-capability=StopProcessing]")
    assert page.text(".reader-head h2") == "Order 42 has not arrived"
    page.button("StopProcessing").click()
    wait_until(lambda: not page.all("#mine li"), what="the list empty after StopProcessing")
    page.wait_text(".reader-state", "Completed")
    page.shot("06-done")

    # A new e-mail; the API's error is shown as its errorDescription.
    page.click("#new-email")
    page.wait("#compose-to")
    page.type_into("#compose-to", "not an address")
    page.type_into("#compose-subject", "Your invoice")
    page.find("#compose-body").send_keys("Please find your invoice attached.")
    page.button("Send").click()
    error = page.wait("#errors .error")
    assert "is not a valid e-mail address" in error.text, error.text  # the API's own words
    page.shot("07-error")
    page.type_into("#compose-to", "partner@example.net")
    page.button("Send").click()
    created = sink.wait_for("Your invoice")
    assert created.message["To"] == "partner@example.net"
    assert created.message.get_body(("plain",)).get_content().startswith("Please find")

    page.type_into("#reason", "Lunch")
    page.click("#notready-btn")
    page.wait_text("#ready-state", "Not ready (Lunch)")
    page.click("#logout-btn")
    page.wait("#login-agent")
    assert page.text("#login-error") == "Logged out."
    assert not page.errors(allowed=EXPECTED), page.errors(allowed=EXPECTED)


def test_the_page_loads_under_150_kb_and_reads_at_200_percent_zoom(
    desktop: DesktopServer, browser: Callable[..., Page]
) -> None:
    page = browser()
    page.open()
    page.wait("#login-agent")
    loaded = page.js(
        "return [performance.getEntriesByType('navigation')[0],"
        " ...performance.getEntriesByType('resource')]"
        ".map(e => [e.name, e.transferSize, e.encodedBodySize, e.decodedBodySize])"
    )
    total = sum(entry[1] for entry in loaded)
    decoded = sum(entry[3] for entry in loaded)
    print(f"page: {len(loaded)} requests, {total} bytes transferred ({decoded} decoded)")
    assert len(loaded) >= 10 and total < 150_000, loaded

    page.login("bob")
    # 200 % zoom of a 1280 x 860 window: a 640 x 430 CSS-pixel viewport at a device scale of 2.
    page.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 640, "height": 430, "deviceScaleFactor": 2, "mobile": False},
    )
    page.ready()
    deliver(page.server.smtp_port, "Zoomed: where is my parcel?", cc=None)
    page.click(".toast button.primary", "Accept")
    page.wait(".toolbar button[data-capability=Reply]")
    time.sleep(0.3)
    width = page.js("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal scrolling at 200 %: {width}"
    for css in ("#ready-btn", ".toolbar button", "#mine li"):
        box = page.js(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right]",
            page.find(css),
        )
        assert box[0] >= 0 and box[1] <= width[1] + 1, (css, box)
    page.js("document.querySelector('#reader').scrollIntoView()")
    page.shot("10-zoom-200")
    page.button("StopProcessing").click()
    wait_until(lambda: not page.all("#mine li"), what="done")
