"""A payload read back from the outbox is decoded only when a session gets it."""

from __future__ import annotations

import json

import pytest

from adapters.cometd import BasicAuthenticator, BayeuxServer
from interactions_core.ports import Notification, RawMessage, StoredMessage


def test_stored_message_decodes_once_and_equals_its_data() -> None:
    text = json.dumps({"messageTypeName": "InteractionStateMessage", "n": 1, "s": "Grüße"})
    stored = StoredMessage(text)
    assert stored._data is None  # nothing decoded yet
    wire = stored.to_wire()
    assert wire == json.loads(text)
    assert stored.to_wire() is wire  # decoded once
    assert stored == RawMessage(data=json.loads(text)) == StoredMessage(text)
    assert stored != StoredMessage('{"n": 2}')
    note = Notification(agent_id="a", payload=stored, seq=3)
    assert note.to_wire() == wire


def test_a_stored_payload_that_is_not_an_object_is_refused_when_read() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        StoredMessage("[1, 2]").to_wire()


def test_deliver_decodes_nothing_for_an_agent_without_sessions() -> None:
    server = BayeuxServer(BasicAuthenticator({"alice": "pw"}))
    calls = []

    def data() -> dict[str, object]:
        calls.append(1)
        return {"n": 1}

    assert server.deliver("alice", "/me/interactions", data, seq=1) == 0
    assert calls == []  # never decoded: nobody would have received it
    assert server.notifier is not None
