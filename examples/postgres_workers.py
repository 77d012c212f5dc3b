"""Several worker processes of your own backend on one PostgreSQL, each with an ``Engine``.

Run one per process: ``python examples/postgres_workers.py postgresql://... worker-1`` (the
same database for all, a name each; Ctrl-C stops one). Each worker takes its agents' requests
through ``worker.engine`` (``execute``, ``set_channel_state``, ``ingest``...) on its own
thread, and calls ``worker.tick()`` every 100 ms or so on that same thread.

The rules it follows (docs/embedding.md, "Several processes on one PostgreSQL"):

* **One router.** Every worker starts as a follower; a PostgreSQL advisory lock
  (``LeaderLock``) elects one, which rebuilds the router from the store (``Engine.lead()``),
  follows what the others commit (``Engine.sync()``: the change feed) and runs the offer
  timeouts (``Engine.tick()``). When it dies, another takes the lock within about
  ``check_interval_s`` and does the same. Every routing decision is a versioned commit, so even
  the short overlap a lost lock allows never offers one interaction twice.
* **Mail from every worker.** Each claims due mail with a lease (``FOR UPDATE SKIP LOCKED``),
  so N workers drain one outbox and send nothing twice; a dead worker's claims are taken over
  when their lease ends.
* **Notifications from the leader.** The leader publishes every pending notification, in
  commit order, whoever committed it; a follower publishes none, so each is published once
  per leadership term. Across a failover, the batch the old leader published but had not yet
  marked is published again: at least once, in order.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable

from adapters.postgres import LeaderLock, PostgresStore
from interactions_core import Agent, Engine
from interactions_core.memory import RecordingNotifier, RecordingTransport
from interactions_core.ports import MailTransport, Notifier


class Worker:
    """One process's Engine on the shared store, and its part in the election."""

    def __init__(
        self,
        dsn: str,
        agents: Iterable[Agent],
        *,
        notifier: Notifier,
        transport: MailTransport,
        node_id: str,
        check_interval_s: float = 1.0,
    ) -> None:
        self.engine = Engine(
            store=PostgresStore(dsn, application_name=node_id),
            agents=agents,
            notifier=notifier,
            transport=transport,
        )
        self.engine.start(lead=False)  # a follower until elected
        # The election calls back on its own thread; the Engine is not thread-safe, so the
        # callbacks only say what is wanted, and tick() (on the engine's thread) acts on it.
        self._elected = threading.Event()
        self.lock = LeaderLock(
            dsn,
            on_elected=self._elected.set,
            on_deposed=self._elected.clear,
            application_name=node_id,
            node_id=node_id,
            check_interval_s=check_interval_s,
        )
        self.lock.start()

    def tick(self) -> None:
        """Follow the election, then do this worker's share of the background work."""
        engine = self.engine
        if self._elected.is_set() and not engine.leading:
            engine.lead()
        elif not self._elected.is_set() and engine.leading:
            engine.follow()
        if engine.leading:
            engine.sync()  # the others' commits, into the router; then route
            engine.tick()  # offer timeouts
            engine.pump()  # notifications (the leader's job) and mail
        elif engine.transport is not None:
            engine.mail_drain.run(engine.transport)  # mail only: claimed, so never twice

    def close(self) -> None:
        """Give up leadership (another worker takes over at once), then close the store."""
        self.lock.stop()
        self.engine.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} POSTGRESQL_URL WORKER_NAME", file=sys.stderr)
        return 2
    dsn, name = argv[1], argv[2]
    agents = [Agent(id="alice", mailboxes=("support@example.com",))]
    # Yours would publish to your push channel and hand mail to your relay.
    worker = Worker(
        dsn, agents, notifier=RecordingNotifier(), transport=RecordingTransport(), node_id=name
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.1):
            worker.tick()
            print(f"{name}: {'leader' if worker.engine.leading else 'follower'}", end="\r")
    finally:
        worker.close()
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
