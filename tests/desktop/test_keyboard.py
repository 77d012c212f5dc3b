"""The flow with the keyboard alone: log in, Ready, accept two invitations (a), move between
interactions (j / k), reply to all (Shift+R), type, send (Ctrl+Enter), the help overlay (?),
and StopProcessing reached with Tab."""

from __future__ import annotations

from collections.abc import Callable

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from .harness import DesktopServer, MailSink, Page, deliver, wait_until


def keys(page: Page, *sequence: str) -> None:
    ActionChains(page.driver).send_keys(*sequence).perform()


def chord(page: Page, modifier: str, key: str) -> None:
    ActionChains(page.driver).key_down(modifier).send_keys(key).key_up(modifier).perform()


def tab_to(page: Page, script: str, limit: int = 80) -> None:
    """Tab until ``script`` (about ``document.activeElement``) is true."""
    for _ in range(limit):
        if page.js(f"const e = document.activeElement; return Boolean({script})"):
            return
        keys(page, Keys.TAB)
    raise AssertionError(f"Tab never reached {script}")


def selected(page: Page) -> str:
    return page.text("#mine li[aria-selected=true] .item-subject")


def test_the_flow_by_keyboard_only(
    desktop: DesktopServer, sink: MailSink, browser: Callable[..., Page]
) -> None:
    page = browser()
    page.open()
    page.wait("#login-agent")
    assert page.js("return document.activeElement.id") == "login-agent"
    keys(page, "bob", Keys.TAB, "bob-pw", Keys.ENTER)
    page.wait_text("#status", "up to date")
    tab_to(page, "e.id === 'ready-btn'")
    keys(page, Keys.ENTER)
    page.wait_text("#ready-state", "Ready")

    deliver(desktop.smtp_port, "Keyboard one", cc="colleague@example.org")
    page.wait(".toast", text="Keyboard one")
    deliver(desktop.smtp_port, "Keyboard two", cc=None)
    wait_until(lambda: len(page.all(".toast")) == 2, what="two invitations")
    keys(page, "a")
    wait_until(lambda: len(page.all(".toast")) == 1, what="the first accepted")
    keys(page, "a")
    wait_until(lambda: not page.all(".toast"), what="both accepted")
    page.wait_text(".reader-state", "Accepted")

    keys(page, "k")
    wait_until(lambda: selected(page) == "Keyboard one", what="k: the previous one")
    keys(page, "j")
    wait_until(lambda: selected(page) == "Keyboard two", what="j: the next one")
    keys(page, "k")
    wait_until(lambda: selected(page) == "Keyboard one", what="k again")

    chord(page, Keys.SHIFT, "r")
    page.wait("#compose-body")
    wait_until(lambda: page.js("return document.activeElement.id") == "compose-body",
               what="the body focused")  # fmt: skip
    keys(page, "Typed without a mouse.", Keys.ENTER)
    chord(page, Keys.CONTROL, Keys.ENTER)
    mail = sink.wait_for("Re: Keyboard one").message
    assert mail["Cc"] == "colleague@example.org"
    assert mail.get_body(("plain",)).get_content().startswith("Typed without a mouse.")

    keys(page, "?")
    help_dialog = page.wait("#help")
    assert "Reply all" in help_dialog.text and "Ctrl" in help_dialog.text
    page.shot("13-shortcuts")
    keys(page, Keys.ESCAPE)
    page.wait_gone("#help")

    wait_until(lambda: page.text(".reader-head h2") == "Keyboard one", what="back on the original")
    tab_to(page, "e.dataset.capability === 'StopProcessing'")
    keys(page, Keys.ENTER)
    wait_until(lambda: len(page.all("#mine li")) == 1, what="one left")

    # Forward (f) opens a draft with no recipient; Cancel it from the toolbar with Tab.
    keys(page, "j")
    wait_until(lambda: selected(page) == "Keyboard two", what="the other one selected")
    keys(page, "f")
    page.wait("#compose-to")
    assert page.find("#compose-to").get_attribute("value") == ""
    assert page.find("#compose-subject").get_attribute("value") == "Fwd: Keyboard two"
    tab_to(page, "e.dataset.capability === 'Cancel'")
    keys(page, Keys.ENTER)
    page.wait_text(".reader-state", "Cancelled")
    wait_until(lambda: len(page.all("#mine li")) == 1, what="the forward cancelled")
    assert not page.errors(), page.errors()
