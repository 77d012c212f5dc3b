"""Several server processes on one PostgreSQL database: what each process runs to be one of
them (docs/deployment.md).

* **Leadership.** ``adapters.postgres.LeaderLock``: exactly one process holds the advisory
  lock; it routes and runs the offer timeouts and the notification purge
  (``Engine.lead``). The others follow (``Engine.follow``): they serve every request, take
  mail in and send mail out, and their commits reach the leader through the change feed.
* **The notification tail.** ``adapters.runtime.ClusterTail``: each process delivers every
  committed notification, in commit order, to the CometD sessions it holds; the leader also
  follows the change feed into its router (``Engine.sync``).
* **Wake-ups.** ``adapters.postgres.wakeups.Wakeups``: LISTEN/NOTIFY wakes the tail at once
  after a commit anywhere; the tail also polls every ``poll_seconds``.

A SQLite store is one process: it leads from the start and uses none of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from interactions_core.engine import Engine
from interactions_core.outbox import NotificationTail
from interactions_core.ports import ChangeFeed, Notifier, Store

from ..runtime import ClusterTail, CoreRunner
from .node import NodeStatus

_log = logging.getLogger(__name__)


@dataclass
class Cluster:
    """The parts above, for one process; ``start()`` in the server's lifespan, ``stop()`` at
    its end (leadership first: another process takes over while this one finishes)."""

    engine: Engine
    core: CoreRunner
    node: NodeStatus
    tail: ClusterTail
    dsn: str
    application_name: str = "interactions"
    connect_timeout_s: float = 10.0
    check_interval_s: float = 1.0

    def __post_init__(self) -> None:
        from ..postgres import LeaderLock
        from ..postgres.wakeups import Wakeups

        self.lock = LeaderLock(
            self.dsn,
            on_elected=self._elected,
            on_deposed=self._deposed,
            application_name=self.application_name,
            connect_timeout_s=self.connect_timeout_s,
            check_interval_s=self.check_interval_s,
            node_id=self.node.node_id,
        )
        self.wakeups = Wakeups(
            self.dsn,
            self.tail.wake_threadsafe,
            application_name=self.application_name,
            connect_timeout_s=self.connect_timeout_s,
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def build(
        cls,
        engine: Engine,
        core: CoreRunner,
        node: NodeStatus,
        notifier: Notifier,
        dsn: str,
        *,
        application_name: str = "interactions",
        connect_timeout_s: float = 10.0,
        check_interval_s: float = 1.0,
        poll_seconds: float = 1.0,
    ) -> Cluster:
        store: Store = engine.store
        if not isinstance(store, ChangeFeed):
            raise TypeError(f"{type(store).__name__} has no change feed: it cannot be shared")

        def progress(position: int, lag: int) -> None:
            node.tail_position = position
            node.tail_lag = lag
            node.tail_read_at = time.monotonic()

        tail = ClusterTail(
            core,
            engine,
            NotificationTail(store, store, notifier),
            poll=poll_seconds,
            on_progress=progress,
        )
        return cls(
            engine,
            core,
            node,
            tail,
            dsn,
            application_name=application_name,
            connect_timeout_s=connect_timeout_s,
            check_interval_s=check_interval_s,
        )

    # -- the election's callbacks (on the election thread)

    def _elected(self) -> None:
        offered = self.core.run_blocking(self.engine.lead)
        self.node.role = "leader"
        _log.info(
            "node %s leads: router rebuilt from the store, %d offers", self.node.node_id, offered
        )
        self.tail.wake_threadsafe()

    def _deposed(self) -> None:
        self.core.run_blocking(self.engine.follow)
        if self.node.role == "stopping":  # stepped down at shutdown: as planned
            _log.info("node %s stepped down", self.node.node_id)
            return
        if self.node.role == "leader":
            self.node.role = "follower"
        _log.warning("node %s no longer leads", self.node.node_id)

    # -- the lifespan

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.tail.start()
        self.core.on_change(self.tail.wake)
        self.wakeups.start()
        self.node.role = "follower"
        self.lock.start()

    async def step_down(self) -> None:
        """Leave the election (``on_deposed`` runs if this process leads): first thing at
        shutdown, so that another process takes over while this one finishes its work."""
        self.node.role = "stopping"
        await asyncio.to_thread(self.lock.stop)

    async def stop(self) -> None:
        await self.step_down()  # idempotent
        await asyncio.to_thread(self.wakeups.stop)
        await self.tail.stop()
