"""The child process of the crash tests: real operations in a loop until it is killed.

Usage: ``python crash_writer.py STORE LOG RUN``. STORE names the store: ``sqlite:PATH`` (or a
plain path) for a ``SqliteStore``, a ``postgresql://`` DSN for a ``PostgresStore``
(``tests/store/test_sqlite_crash.py``, ``tests/postgres/test_postgres_crash.py``). Each
iteration runs, through the real ``InteractionService``, five operations, each its own
transaction: receive, offer, Accept, Reply, Send; every other iteration it also drains the
outbox. After each commit *returns* (and after each hand-over to the notifier or transport) it
appends one JSON line to LOG and fsyncs it: a line in the log is a promise that the database
must keep.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from adapters.sqlite import SqliteStore
from interactions_core.ids import SystemClock
from interactions_core.operations import parse_operation
from interactions_core.outbox import drain_mail, drain_notifications
from interactions_core.ports import Agent, MailEntry, Notification, OutgoingMail, Store
from interactions_core.service import InteractionService
from interactions_core.testing import (
    InMemoryAgentDirectory,
    InMemoryAttachmentStore,
    inbound_email,
)

MAX_ITERATIONS = 100_000  # a bound, in case the parent dies before killing us


class Log:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def __call__(self, **entry: Any) -> None:
        self._out.write(json.dumps(entry) + "\n")
        self._out.flush()
        os.fsync(self._out.fileno())


class RunIds:
    """Ids unique across runs (a restarted writer must not reuse its predecessor's)."""

    def __init__(self, run: int) -> None:
        self._run = run
        self._n = 0

    def interaction_id(self) -> str:
        self._n += 1
        return f"R{self._run}-{self._n:06d}"

    def message_id(self, domain: str) -> str:
        self._n += 1
        return f"<r{self._run}-{self._n:06d}@{domain}>"


class LoggingNotifier:
    def __init__(self, log: Log) -> None:
        self._log = log

    def publish(self, notification: Notification) -> None:
        wire = notification.to_wire()
        self._log(op="published", seq=notification.seq, id=wire["id"], state=wire["state"])

    def close(self) -> None:
        """Nothing to release."""


class LoggingTransport:
    def __init__(self, log: Log) -> None:
        self._log = log

    def send(self, mail: OutgoingMail) -> None:
        self._log(op="mailed", id=mail.interaction_id, message_id=mail.message_id)

    def close(self) -> None:
        """Nothing to release."""


def open_store(spec: str) -> Store:
    """The store STORE names: ``sqlite:PATH`` or a path, or a ``postgresql://`` DSN."""
    if spec.startswith(("postgresql://", "postgres://")):
        from adapters.postgres import PostgresStore

        return PostgresStore(spec)
    return SqliteStore(spec.removeprefix("sqlite:"))


def main(argv: list[str]) -> int:
    spec, log_path, run = argv[1], argv[2], int(argv[3])
    clock = SystemClock()
    store = open_store(spec)
    agents = InMemoryAgentDirectory([Agent(id="alice", mailboxes=("support@example.com",))])
    service = InteractionService(store, agents, InMemoryAttachmentStore(), clock, RunIds(run))
    accept = parse_operation({"operationName": "Accept"})
    reply = parse_operation({"operationName": "Reply"})
    send = parse_operation({"operationName": "Send"})

    def failed(entry: MailEntry, reason: str) -> None:
        raise AssertionError(f"no mail may fail here: {reason}")

    with open(log_path, "a", encoding="utf-8") as out:
        log = Log(out)
        notifier, transport = LoggingNotifier(log), LoggingTransport(log)
        log(op="start", run=run)
        for k in range(MAX_ITERATIONS):
            email = inbound_email(
                sender="Bob <bob@example.org>",
                to="support@example.com",
                subject=f"Run {run} mail {k}",
                text="It broke.\n" * 5,
                message_id=f"<c{run}-{k}@customer.example>",
            )
            inbound = service.receive(email, mailbox="support@example.com")
            log(op="receive", id=inbound.id)
            service.offer(inbound.id, "alice")
            log(op="offer", id=inbound.id)
            service.execute("alice", inbound.id, accept)
            log(op="accept", id=inbound.id)
            draft = service.execute("alice", inbound.id, reply).reply_interaction_id
            assert draft is not None
            log(op="reply", id=inbound.id, reply=draft)
            service.execute("alice", draft, send)
            log(op="send", id=draft)
            if k % 2 == 0:
                drain_notifications(store, notifier)
                drain_mail(store, transport, clock, failed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
