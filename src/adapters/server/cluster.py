"""Several server processes on one PostgreSQL database: what each process runs to be one of
them (docs/deployment.md).

* **Leadership.** ``adapters.postgres.LeaderLock``: exactly one process holds the advisory
  lock; it routes and runs the offer timeouts and the notification purge
  (``Engine.lead``). The others follow (``Engine.follow``): they serve every request, take
  mail in and send mail out, and their commits reach the leader through the change feed.
* **The notification tail.** ``adapters.runtime.ClusterTail``: each process delivers the
  committed notifications of the agents with a CometD session on it, in commit order, to
  those sessions (it reads no other agent's); the leader also marks everything up to its
  position published and follows the change feed into its router (``Engine.sync``).
* **Wake-ups.** ``adapters.postgres.wakeups.Wakeups``: LISTEN/NOTIFY wakes the tail at once
  after a commit of another process that concerns it (the leader: every one; a follower: one
  with notifications for its agents); the tail also polls every ``poll_seconds``.

A SQLite store is one process: it leads from the start and uses none of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interactions_core.engine import Engine
from interactions_core.outbox import NotificationTail
from interactions_core.ports import ChangeFeed, Notifier, Store

from ..runtime import ClusterTail, CoreRunner
from .node import NodeStatus

if TYPE_CHECKING:  # psycopg is an optional dependency: imported where a cluster is built
    from ..postgres.wake import WakeUp

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
    audience: Callable[[], Collection[str]] | None = None
    """The agents with a session on this process (``None``: every agent's notifications)."""
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
            wanted=self._wanted,
        )
        origin = getattr(self.engine.store, "origin", None)
        self._origin: str | None = origin if isinstance(origin, str) else None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _wanted(self, wake: WakeUp) -> bool:
        """On the listener's thread: does this commit concern this process's tail?"""
        if wake.by is not None and wake.by == self._origin:
            return False  # its own: the tail was woken at its commit (``core.on_change``)
        if self.engine.leading or wake.agents is None or self.audience is None:
            return True
        # ``in`` on the registry's dict is one atomic lookup (no iteration across threads).
        here = self.audience()
        return any(agent in here for agent in wake.agents)

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
        audience: Callable[[], Collection[str]] | None = None,
    ) -> Cluster:
        """``audience``: the agents ``notifier`` delivers to on this process, called on the
        event loop and (for ``in`` alone) on the wake-up listener's thread; ``None`` when the
        notifier is not per agent, and then every notification is read."""
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
            audience=audience,
        )
        return cls(
            engine,
            core,
            node,
            tail,
            dsn,
            audience,
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
