"""Benchmark: assembling the replies of 1,000 sessions that receive one notification.

Run: ``.venv/bin/python benchmarks/cometd/bench_encode.py`` (a few seconds).

Each session's reply batch is its own ``/meta/connect`` reply (its id, the ``ack`` batch id, the
advice on some) followed by the same notification: an ``InteractionStateMessage`` of about 2 KB
of JSON, delivered to 1,000 sessions (a broadcast, or one agent's many sessions).

* old (the baseline, measured in the same run): every session's batch encoded whole, one
  ``to_json([reply, notification])`` per session, as ``protocol.encode`` used to;
* new: ``protocol.encode`` with the notification as a ``SharedMessage``, created afresh each
  round so the round pays its one encoding; every session encodes only its own reply and
  joins it with the shared bytes.

Old and new rounds alternate; the figures are medians over the rounds. Both sides are checked
to produce the same bytes for every session. A third figure, encoding the per-session replies
alone, is the floor the new way approaches: what is left is the join with the shared bytes.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from pydantic_core import to_json

from adapters.cometd.protocol import Message, SharedMessage, encode
from adapters.cometd.server import notification_message
from interactions_core.model import InteractionStateMessage

SESSIONS = 1_000
ROUNDS = 15
TARGET_BYTES = 2_048


def notification_data() -> dict[str, Any]:
    """A typical ``InteractionStateMessage`` (its wire form), the body padded to ~2 KB."""

    def wire(text: str) -> dict[str, Any]:
        return InteractionStateMessage.model_validate(
            {
                "id": "0001KaG3Q2Y8Zr7b",
                "state": "Invited",
                "interactionType": "Email",
                "interactionSubType": "InboundNew",
                "currentQueue": "support-inbound",
                "inQueues": ["support-inbound"],
                "outQueues": ["support-outbound", "support-archive"],
                "receivedAt": "2024-05-17T09:41:07.123Z",
                "capabilities": ["Accept", "Reject", "Transfer", "Reply", "Forward"],
                "agentId": "agent-0042",
                "userData": {"Priority": 3, "Segment": "Gold", "Language": "de-DE"},
                "email_object": {
                    "FromAddress": "Jürgen Müller <j.mueller@example.de>",
                    "ToAddress": "Support <support@example.com>",
                    "CCAddresses": "",
                    "Subject": "Rückfrage zu Bestellung #4711 – Lieferung verzögert",
                    "Text": text,
                    "MimeType": "text/plain",
                    "ContactID": "c-99812",
                    "MessageId": "<20240517094107.1234@mail.example.de>",
                    "Mailbox": "support@example.com",
                },
            }
        ).to_wire()

    line = "Sehr geehrte Damen und Herren, meine Bestellung ist noch nicht angekommen. "
    text = ""
    while len(to_json(wire(text))) < TARGET_BYTES:
        text += line
    return wire(text)


def connect_replies() -> list[Message]:
    """Every session's own ``/meta/connect`` reply: id, ack batch id, the advice on some."""
    replies: list[Message] = []
    for index in range(SESSIONS):
        reply: Message = {"channel": "/meta/connect", "successful": True, "id": str(index + 2)}
        if index % 10 == 0:
            reply["advice"] = {
                "reconnect": "retry",
                "interval": 0,
                "timeout": 25_000,
                "maxInterval": 10_000,
            }
        reply["ext"] = {"ack": index % 50 + 1}
        replies.append(reply)
    return replies


def old_round(replies: list[Message], message: Message) -> list[bytes]:
    return [to_json([reply, message]) for reply in replies]


def new_round(replies: list[Message], message: Message) -> list[bytes]:
    shared = SharedMessage(message)  # fresh: this round pays the one encoding
    return [encode([reply, shared]) for reply in replies]


def replies_round(replies: list[Message], message: Message) -> list[bytes]:
    return [to_json(reply) for reply in replies]


def timed(fn: Any, *args: Any) -> tuple[float, list[bytes]]:
    gc.collect()
    start = time.perf_counter()
    bodies: list[bytes] = fn(*args)
    return time.perf_counter() - start, bodies


def main() -> None:
    data = notification_data()
    message = notification_message("/me/interactions", data, 123_456)
    size = len(to_json(message))
    replies = connect_replies()
    assert new_round(replies, message) == old_round(replies, message), "bytes differ"

    old_times: list[float] = []
    new_times: list[float] = []
    floor_times: list[float] = []
    for _ in range(ROUNDS):
        seconds, _bodies = timed(old_round, replies, message)
        old_times.append(seconds)
        seconds, _bodies = timed(new_round, replies, message)
        new_times.append(seconds)
        seconds, _bodies = timed(replies_round, replies, message)
        floor_times.append(seconds)
    old_ms = statistics.median(old_times) * 1000
    new_ms = statistics.median(new_times) * 1000
    floor_ms = statistics.median(floor_times) * 1000
    print(
        f"bench_encode: {SESSIONS:,} sessions x 1 notification ({size:,} B of JSON), "
        f"medians of {ROUNDS} rounds"
    )
    print(
        f"  baseline, whole batch to_json per session: {old_ms:7.2f} ms/round "
        f"({old_ms * 1000 / SESSIONS:5.2f} us/session)"
    )
    print(
        f"  shared bytes + per-session reply:          {new_ms:7.2f} ms/round "
        f"({new_ms * 1000 / SESSIONS:5.2f} us/session)"
    )
    print(
        f"  (floor: the per-session replies alone:    {floor_ms:7.2f} ms/round "
        f"({floor_ms * 1000 / SESSIONS:5.2f} us/session))"
    )
    print(f"  ratio (baseline / shared): {old_ms / new_ms:.1f}x   (same bytes: checked)")


if __name__ == "__main__":
    main()
