"""Two agents, each in a browser of their own (alice on websocket, bob on long-polling): alice
transfers a mail to bob, picked from the agents list the API serves; bob accepts it and files
it in the shared workbin; alice finds it there and pulls it back."""

from __future__ import annotations

from collections.abc import Callable

from selenium.webdriver.support.ui import Select

from .harness import DesktopServer, Page, alice_and_bob, deliver, wait_until


def test_transfer_to_another_agent_then_a_workbin_pull(
    desktop: DesktopServer, browser: Callable[..., Page]
) -> None:
    alice, bob = alice_and_bob(browser)

    alice.ready()
    deliver(desktop.smtp_port, "Billing question about invoice 9", cc=None)
    alice.click(".toast button.primary", "Accept")
    alice.button("Transfer").click()
    dialog = alice.wait("dialog[open]")
    assert "Transfer" in dialog.text
    agents = Select(alice.find("dialog select[name=agentId]"))
    assert [o.get_attribute("value") for o in agents.options] == ["bob"]
    assert "Bob Agent" in agents.options[0].text
    queues = [
        o.get_attribute("value")
        for o in Select(alice.find("dialog select[name=queueName]")).options
    ]
    assert "Billing" in queues and "Support" in queues
    skills = [
        o.get_attribute("value") for o in Select(alice.find("dialog select[name=skill]")).options
    ]
    assert skills == ["billing"]
    alice.shot("09-transfer-dialog")
    alice.click("dialog button[type=submit]", "Transfer")
    wait_until(lambda: not alice.all("#mine li"), what="alice's list empty after the transfer")

    toast = bob.wait(".toast")
    assert "Billing question about invoice 9" in toast.text
    bob.click(".toast button.primary", "Accept")
    bob.wait(".toolbar button[data-capability=PlaceInWorkbin]").click()
    workbins = Select(bob.wait("dialog select[name=workbinName]"))
    workbins.select_by_value("Team")
    bob.click("dialog button[type=submit]", "Place in workbin")
    wait_until(lambda: not bob.all("#mine li"), what="bob's list empty after PlaceInWorkbin")
    bob.wait("#workbin li", text="Billing question")

    Select(alice.find("#workbin-select")).select_by_value("Team")
    alice.click("#workbin li", "Billing question")
    alice.wait_text(".reader-state", "InWorkbin")
    assert alice.capabilities() == ["PlaceInQueue", "Pull"]
    alice.shot("09-workbin")
    alice.button("Pull").click()
    alice.wait("#mine li", text="Billing question")
    alice.wait_text(".reader-state", "Accepted")
    wait_until(lambda: not bob.all("#workbin li"), what="the workbin empty for bob too")
    alice.button("StopProcessing").click()
    wait_until(lambda: not alice.all("#mine li"), what="done")
    for page in (alice, bob):
        assert not page.errors(), page.errors()
