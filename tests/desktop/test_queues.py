"""Reject, Transfer to a queue and to a skill, and PlaceInQueue, through the page.

alice rejects an invitation while bob is Ready too: it goes to bob (the router offers it again
to an agent who refused only when nobody else can take it). bob accepts, transfers it to the
Billing queue (which routes to the billing skill: bob's), accepts it again, transfers it to the
billing skill, accepts; both go NotReady (bob with a reason) and bob places it in the Support
queue, where it waits: nobody Ready. Where each step left the interaction is read
from the server's SQLite file (read-only), the store's truth, not from the page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from selenium.webdriver.support.ui import Select

from .harness import DesktopServer, Page, alice_and_bob, deliver, wait_until

SUBJECT = "Where is parcel 77"


def stored(desktop: DesktopServer, interaction_id: str) -> tuple[str, str, str | None]:
    """(state, current queue, owner) of the interaction, from the server's database file."""
    path = desktop.root / "data" / "interactions.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT state, current_queue, owner FROM interactions WHERE id = ?", (interaction_id,)
        ).fetchone()
    assert row is not None, interaction_id
    return str(row[0]), str(row[1]), row[2]


def channel(desktop: DesktopServer, agent: str) -> str:
    """The agent's stored channel state (its JSON), from the server's database file."""
    path = desktop.root / "data" / "interactions.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        query = "SELECT data FROM agent_channels WHERE agent_id = ?"
        row = conn.execute(query, (agent,)).fetchone()
    return "" if row is None else str(row[0])


def accept_toast(page: Page) -> str:
    """Accept the invitation for SUBJECT; the interaction's id (from its list item)."""
    toast = page.wait(".toast", text=SUBJECT)
    toast.find_element("css selector", "button.primary").click()
    page.wait_text(".reader-state", "Accepted")
    selected = page.wait("#mine li", text=SUBJECT)
    interaction_id = selected.get_attribute("data-id")
    assert interaction_id, selected.get_attribute("outerHTML")
    return interaction_id


def transfer(page: Page, kind: str, target: str) -> None:
    page.button("Transfer").click()
    page.wait("dialog[open]")
    page.click(f"dialog input[type=radio][value={kind}]")
    Select(page.find(f"dialog select[name={kind}]")).select_by_value(target)
    page.click("dialog button[type=submit]", "Transfer")


def test_reject_transfer_to_a_queue_and_a_skill_and_place_in_queue(
    desktop: DesktopServer, browser: Callable[..., Page]
) -> None:
    alice, bob = alice_and_bob(browser)

    alice.ready()
    deliver(desktop.smtp_port, SUBJECT, cc=None)
    alice.wait_text(".toast .countdown", "s to answer")
    bob.ready()  # after the offer to alice: only she was Ready then
    alice.click(".toast button:not(.primary)", "Reject")
    alice.wait_gone(".toast")
    assert not alice.all("#mine li")

    iid = accept_toast(bob)
    assert stored(desktop, iid) == ("Accepted", "Support", "bob")

    transfer(bob, "queueName", "Billing")
    # Billing routes to the billing skill, which bob has: offered to him again.
    iid_again = accept_toast(bob)
    assert iid_again == iid
    assert stored(desktop, iid)[1:] == ("Billing", "bob")

    transfer(bob, "skill", "billing")
    accept_toast(bob)
    assert stored(desktop, iid)[2] == "bob"

    alice.click("#notready-btn")
    alice.wait_text("#ready-state", "Not ready")
    bob.type_into("#reason", "Lunch")
    bob.click("#notready-btn")
    bob.wait_text("#ready-state", "Not ready")
    wait_until(lambda: "Lunch" in channel(desktop, "bob"), what="bob NotReady, for Lunch")
    bob.button("PlaceInQueue").click()
    Select(bob.wait("dialog select[name=queueName]")).select_by_value("Support")
    bob.click("dialog button[type=submit]", "Place in queue")
    wait_until(lambda: not bob.all("#mine li"), what="bob's list empty after PlaceInQueue")
    wait_until(
        lambda: stored(desktop, iid) == ("Queued", "Support", None),
        what=f"queued in Support, owned by nobody: {stored(desktop, iid)}",
    )
    assert not alice.all(".toast")
    for page in (alice, bob):
        assert not page.errors(), page.errors()
