"""The Engine: the one public object that runs the core.

It owns the service (operations, ingestion, reads), the router (readiness, offers, offer
timeouts) and the outbox drains (notifications to a notifier, mail to a transport), and has one
method per thing a backend does. The ``Harness`` (tests), the server's asyncio runtime
(``adapters.runtime``) and an embedder's own backend all drive this object, so routing, draining
and failure handling are written once::

    engine = Engine(store=SqliteStore("app.db"), agents=[Agent(id="alice", ...)],
                    notifier=my_notifier, transport=my_transport)
    engine.start()                                   # routing indexes rebuilt from the store
    engine.set_channel_state("alice", {"operationName": "Ready"})
    engine.ingest(raw_bytes)                         # a mail arrives: queued, then offered
    engine.execute("alice", iid, {"operationName": "Accept"})
    engine.pump()                                    # route, publish, send: until nothing is left
    engine.tick()                                    # on a timer: offer timeouts

An Engine is not thread-safe: call it from one thread at a time (the server runs every call
on one core thread). Every call that changes something commits before it returns; ``pump``
then delivers what the commits queued, and a crash between the two loses nothing (the outbox
is in the store).

**Several engines on one store** (processes sharing a database). Exactly one of them may
route and run the offer timeouts: the *leader*. ``start()`` makes an engine the leader; an
engine started with ``start(lead=False)`` is a *follower*: it serves operations, ingestion,
channel states and reads (all in the store), and never offers nor revokes. Who leads is
decided outside the core (``adapters.postgres.LeaderLock`` in the server): call ``lead()``
when this engine becomes the leader (its router is rebuilt from the store) and ``follow()``
when it stops. A leader calls ``sync()`` when other processes may have committed (on a
wake-up, and on a timer): it reads the store's change feed (``ports.ChangeFeed``) into its
router and routes. The store's version checks keep decisions safe even if two engines briefly
both think they lead: an interaction is offered once, a second offer of it conflicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .ids import RandomIds, SystemClock
from .ingest import Envelope
from .intake import IngestResult
from .lifecycle import Lifecycle
from .memory import InMemoryAgentDirectory, InMemoryAttachmentStore, InMemoryStore
from .model import Attachment, EmailContent, Interaction
from .outbox import MailDrain, NotificationDrain, Outcome, RetryPolicy
from .ports import (
    Agent,
    AgentDirectory,
    AttachmentStore,
    ChangeFeed,
    Clock,
    IdGenerator,
    MailEntry,
    MailTransport,
    Notifier,
    Store,
)
from .registry import OperationRegistry, OperationSpec
from .results import Result
from .routing import CHANNEL, Router, RoutingConfig
from .service import InteractionService, ServiceConfig
from .wire import AgentState, InteractionMessage, WorkbinInfo

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PumpReport:
    """What one ``pump`` did."""

    offered: int = 0
    published: int = 0
    sent: int = 0
    retried: int = 0  # transient failures, rescheduled
    failed: int = 0  # permanent failures: the draft went back to its agent as Failed

    def __add__(self, other: PumpReport) -> PumpReport:
        return PumpReport(
            self.offered + other.offered,
            self.published + other.published,
            self.sent + other.sent,
            self.retried + other.retried,
            self.failed + other.failed,
        )


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one ``sync`` did: changes read from the change feed, offers made after them."""

    changes: int = 0
    offered: int = 0


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one ``tick`` did: offers revoked for their timeout, new offers made."""

    revoked: int = 0
    offered: int = 0


def _close(port: object) -> None:
    close = getattr(port, "close", None)
    if callable(close):
        close()


class Engine:
    """Service + router + outbox draining + timers, constructed from ports.

    Every port has a default where one is sensible: an in-memory store and attachment store,
    the system clock, random ids, an agent directory from a list of ``Agent``. ``notifier``
    and ``transport`` have none: without a notifier ``pump`` leaves notifications in the outbox
    (for a driver of your own, e.g. an asyncio dispatcher, to publish with
    ``notification_drain``), and without a transport it leaves mail there likewise
    (``mail_drain`` has the delivery rules for an asynchronous transport).
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        agents: AgentDirectory | Iterable[Agent] = (),
        attachments: AttachmentStore | None = None,
        notifier: Notifier | None = None,
        transport: MailTransport | None = None,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
        config: ServiceConfig | None = None,
        routing: RoutingConfig | None = None,
        retry_policy: RetryPolicy | None = None,
        operations: Iterable[OperationSpec[Any]] = (),
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.store: Store = store if store is not None else InMemoryStore(self.clock)
        self.directory: AgentDirectory = (
            agents if isinstance(agents, AgentDirectory) else InMemoryAgentDirectory(agents)
        )
        self.attachments: AttachmentStore = (
            attachments if attachments is not None else InMemoryAttachmentStore()
        )
        self.notifier = notifier
        self.transport = transport
        self.ids: IdGenerator = ids or RandomIds()
        self.service = InteractionService(
            self.store, self.directory, self.attachments, self.clock, self.ids, config
        )
        self.router = Router(self.service, routing)
        self.mail_drain = MailDrain(self.store, self.clock, self._mail_failed, retry_policy)
        self._notifications = (
            NotificationDrain(self.store, notifier) if notifier is not None else None
        )
        self._closed = False
        self._leading = True
        self._queues: frozenset[str] = frozenset()
        self._feed_position = 0
        for spec in operations:
            self.register_operation(spec)

    # ------------------------------------------------------------------ set-up

    @property
    def config(self) -> ServiceConfig:
        return self.service.config

    @property
    def registry(self) -> OperationRegistry:
        return self.service.registry

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle this engine runs: the seed's plus registered operations' transitions
        (``lifecycle.to_mermaid()`` draws it)."""
        return self.service.registry.lifecycle

    def register_operation(self, spec: OperationSpec[Any]) -> None:
        """Add a custom operation: from now on it is parsed, appears in the capabilities of the
        states its transitions leave, and runs its handler in one atomic commit."""
        self.service.registry = self.service.registry.with_(spec)

    def start(self, queues: Iterable[str] = (), *, lead: bool = True) -> None:
        """Call once, before serving. ``lead`` (the default): become the leader, rebuilding
        the router's indexes from the store (channel states, what is offered or owned, what
        waits in the configured queues and ``queues``). ``lead=False``: a follower, until
        ``lead()``."""
        c = self.config
        known = {*c.mailbox_queues.values(), c.default_queue, *(c.queues or ()), *queues}
        known |= set(self.router.config.queue_skills)
        self._queues = frozenset(known)
        if lead:
            self.lead()
        else:
            self.follow()

    @property
    def leading(self) -> bool:
        """Whether this engine routes and runs the offer timeouts."""
        return self._leading

    def lead(self) -> int:
        """Become the leader: rebuild the router from the store, then route. Returns how many
        offers that made. The change feed is read from the position taken before the rebuild,
        so a commit made meanwhile is followed too (again, harmlessly)."""
        store = self.store
        self._feed_position = store.feed_position() if isinstance(store, ChangeFeed) else 0
        self.router.load(self._queues)
        self._leading = True
        return self.router.route()

    def follow(self) -> None:
        """Stop routing (another engine leads): the router's indexes are dropped; what this
        engine commits is routed by the leader, which reads it from the change feed."""
        self._leading = False
        self.router.clear()

    def sync(self, limit: int = 500) -> SyncReport:
        """Leader: read what was committed since the last ``sync`` (by any engine on the
        store) into the router, then route. A follower, or a store without a change feed
        (one process alone), reads nothing."""
        store = self.store
        if not self._leading or not isinstance(store, ChangeFeed):
            return SyncReport()
        total = 0
        while True:
            changes = store.changes_since(self._feed_position, limit)
            self._feed_position = changes.position
            count = len(changes.interactions) + len(changes.channels)
            self.router.apply(changes.interactions, changes.channels)
            total += count
            if count < limit:
                break
        return SyncReport(total, self.router.route())

    def _route(self) -> int:
        return self.router.route() if self._leading else 0

    def notification_drain(self, notifier: Notifier, limit: int = 500) -> NotificationDrain:
        """The notification rules for a driver of one's own (``take``, ``publish``, ``ack``)."""
        return NotificationDrain(self.store, notifier, limit)

    # ------------------------------------------------------------------ what agents do

    def execute(self, agent_id: str, interaction_id: str | None, body: Any) -> Result:
        """``POST /me/interactions/{id}`` (``interaction_id`` None: ``POST /me/interactions``,
        CreateEmail only) with a wire body; then route. The seed's response, never raising for
        a domain error (the error's kind is ``result.kind``)."""
        result = self.service.execute_wire(agent_id, interaction_id, body)
        if result.ok:
            self._route()
        return result

    def create_email(self, agent_id: str, body: Mapping[str, Any] | None = None) -> Result:
        """CreateEmail: a new outbound draft (``replyInteractionId`` names it)."""
        return self.execute(agent_id, None, {"operationName": "CreateEmail", **(body or {})})

    def set_channel_state(self, agent_id: str, body: Any, channel: str = CHANNEL) -> Result:
        """``POST /me/channels/{channel}``: ``{"operationName": "Ready" | "NotReady",
        "reason": ...}``; a Ready agent with capacity is offered what waits at once (by the
        leader: at once when this engine leads, else at the leader's next ``sync``)."""
        result = self.router.set_channel_state(agent_id, channel, body)
        if result.ok:
            self._route()
        return result

    def add_attachment(
        self,
        agent_id: str,
        interaction_id: str,
        name: str,
        mimetype: str,
        data: bytes,
        content_id: str | None = None,
    ) -> Attachment:
        """Upload to a draft (raises typed errors)."""
        return self.service.add_attachment(
            agent_id, interaction_id, name, mimetype, data, content_id
        )

    def get_attachment(
        self, agent_id: str, interaction_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes]:
        return self.service.get_attachment(agent_id, interaction_id, attachment_id)

    def remove_attachment(self, agent_id: str, interaction_id: str, attachment_id: str) -> None:
        self.service.remove_attachment(agent_id, interaction_id, attachment_id)

    # ------------------------------------------------------------------ what agents read

    def interactions(self, agent_id: str) -> list[InteractionMessage]:
        """``GET /me/interactions``."""
        return self.service.list_interactions(agent_id)

    def interaction(self, agent_id: str, interaction_id: str) -> InteractionMessage:
        """``GET /me/interactions/{id}`` (``InteractionNotFound`` for one the agent may not
        see, exactly as for an unknown id)."""
        return self.service.get_interaction(agent_id, interaction_id)

    def workbins(self, agent_id: str) -> list[WorkbinInfo]:
        """``GET /me/workbins``."""
        return self.service.workbins(agent_id)

    def workbin_content(self, agent_id: str, workbin: str) -> list[InteractionMessage]:
        return self.service.workbin_content(agent_id, workbin)

    def agent_state(self, agent_id: str) -> AgentState:
        """``GET /me``: the agent, its load and its channel states (the load as this engine
        routes on it while it leads, else as the store has it)."""
        return self.router.agent_state(agent_id, indexed_load=self._leading)

    # ------------------------------------------------------------------ mail in

    def ingest(
        self, raw: bytes, *, envelope: Envelope | None = None, mailbox: str | None = None
    ) -> IngestResult:
        """An inbound RFC 5322 message (as the SMTP receiver got it): stored, parsed, queued
        in its mailbox's queue, then routed. Raises ``MessageRefused`` for what is not a mail
        or is over the size limit."""
        result = self.service.ingest(raw, envelope=envelope, mailbox=mailbox)
        self._route()
        return result

    def receive(
        self, email: EmailContent, *, mailbox: str, queue: str | None = None
    ) -> Interaction:
        """An inbound mail already parsed (``EmailContent``), queued and routed."""
        created = self.service.receive(email, mailbox=mailbox, queue=queue)
        self._route()
        return created

    # ------------------------------------------------------------------ the loop

    def tick(self, now: datetime | None = None) -> TickReport:
        """Run the timers: revoke offers whose timeout passed at ``now`` (default: the clock's
        now), then route. Call it on a timer (``next_deadline`` says when it matters). A
        follower does nothing (the leader runs the timeouts)."""
        if not self._leading:
            return TickReport()
        revoked, offered = self.router.tick(now)
        return TickReport(revoked, offered)

    def next_deadline(self) -> datetime | None:
        """When the next offer times out (None: no offer outstanding)."""
        return self.router.next_deadline()

    def pump(self, max_rounds: int = 1000) -> PumpReport:
        """Route, publish notifications, send due mail, and again, until a round does
        nothing (a failed Send's notification, an offer freed by a delivery...). Returns the
        totals. ``max_rounds`` bounds it against a notifier or transport that keeps making
        work; reaching it is logged."""
        total = PumpReport()
        for _ in range(max_rounds):
            offered = self._route()
            published = self._notifications.run() if self._notifications else 0
            mail = self.mail_drain.run(self.transport) if self.transport is not None else None
            round_ = PumpReport(offered, published)
            if mail:
                round_ = PumpReport(
                    offered,
                    published,
                    mail[Outcome.SENT],
                    mail[Outcome.RETRY],
                    mail[Outcome.FAILED],
                )
            total += round_
            if round_ == PumpReport():
                return total
        _log.warning("Engine.pump stopped after %d rounds with work left", max_rounds)
        return total

    def purge_notifications(self, retention: timedelta, limit: int = 1000) -> int:
        """Delete at most ``limit`` notifications published more than ``retention`` ago;
        returns how many (``limit``: call again). Published notifications are kept until then,
        for clients that were away to catch up (``store.notifications_since``); call this on a
        timer (the server does, every ``notification_retention_seconds / 5``, at most 60 s)."""
        return self.store.purge_notifications(self.clock.now() - retention, limit)

    def _mail_failed(self, entry: MailEntry, reason: str) -> None:
        self.service.mail_failed(entry.mail.interaction_id, reason)

    def close(self) -> None:
        """Close every port that has a ``close`` (store, attachments, notifier, transport).
        Idempotent. Nothing committed is lost: undelivered notifications and mail stay in the
        store's outbox for the next start."""
        if self._closed:
            return
        self._closed = True
        for port in (self.transport, self.notifier, self.attachments, self.store):
            if port is not None:
                _close(port)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
