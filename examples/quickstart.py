"""Drive the core end to end on the in-memory ports, exactly as a unit test of yours would.

Run: ``.venv/bin/python examples/quickstart.py``. A customer's mail arrives, is offered to
alice, who accepts it, replies to all with a quote, sends, and stops processing. Every wire
request, response and notification is printed as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from interactions_core.ports import Agent
from interactions_core.testing import Harness, inbound_email


def show(title: str, data: Any) -> None:
    print(f"--- {title}")
    print(json.dumps(data, indent=2, ensure_ascii=False))


def main() -> None:
    h = Harness(
        agents=[
            Agent(
                id="alice",
                name="Alice",
                addresses=("alice@agents.example",),
                mailboxes=("support@example.com",),
            )
        ]
    )
    mail = inbound_email(
        sender='"Cee Customer" <customer@example.org>',
        to="support@example.com",
        cc="colleague@example.org",
        subject="Re: AW: Order 42 is late",
        text="Hello,\nwhere is my order?\n\nCee",
        message_id="<order-42@example.org>",
    )
    iid = h.deliver(mail, offer_to="alice")
    show("notification (new interaction offered)", h.last_notification("alice"))

    for body in (
        {"operationName": "Accept"},
        {"operationName": "ReplyAll", "queueName": "Drafts"},
    ):
        show(f"POST /me/interactions/{iid} {body}", h.execute("alice", iid, body))
        show("notification", h.last_notification("alice"))

    draft = h.last_notification("alice")
    send = {
        "operationName": "Send",
        "queueName": "Sent",
        "email_object": {"text": "It ships today.\n" + draft["email_object"]["Text"]},
    }
    show(f"POST /me/interactions/{draft['id']} Send", h.execute("alice", draft["id"], send))
    show("notification", h.last_notification("alice"))
    show("mail handed to the transport", h.sent_mail[0].model_dump(mode="json"))
    show(
        f"POST /me/interactions/{iid} StopProcessing",
        h.execute("alice", iid, {"operationName": "StopProcessing"}),
    )
    show("notification", h.last_notification("alice"))


if __name__ == "__main__":
    main()
