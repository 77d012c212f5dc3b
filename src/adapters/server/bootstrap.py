"""The composition root: the one place that wires the core to real adapters.

``build(settings)`` returns a ``Server`` whose FastAPI app serves the HTTP API and CometD on one
port and whose lifespan runs, in order: the Bayeux sweeper, the engine's router (rebuilt from
the store), the notification and mail dispatchers, the router timer, the notification purge
timer and the inbound SMTP receiver. Shutdown runs in reverse: no new mail is accepted, timers
stop, in-flight sends finish, what was committed is published, the engine closes its ports.
Nothing committed is lost: the outbox is durable, and published notifications are kept
``notification_retention_seconds`` for CometD clients to catch up (the Bayeux server's
``replay`` reads them from the store).

``build`` takes parts: a ``store``, ``attachments``, agent ``directory``, ``notifier`` or mail
``transport`` given is used as it is; anything not given is built from the settings (the
``database`` setting: SQLite and attachment files, or PostgreSQL for both, see ``database``;
the agents file or demo agents, the CometD server, a relay or the Maildir). A database that
cannot be opened raises ``CannotOpenDatabase``, one line naming the setting.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from interactions_core.engine import Engine
from interactions_core.ids import RandomIds, SystemClock
from interactions_core.ingest import Envelope, IngestLimits
from interactions_core.intake import IngestResult
from interactions_core.lifecycle import State
from interactions_core.model import Interaction
from interactions_core.outbox import RetryPolicy
from interactions_core.ports import (
    AttachmentStore,
    ChangeFeed,
    MailEntry,
    NotificationBacklog,
    Notifier,
    Store,
)
from interactions_core.registry import OperationSpec
from interactions_core.routing import Router, RoutingConfig
from interactions_core.service import InteractionService, ServiceConfig

from ..cometd import AuthRequest, BayeuxServer, CometdApp, CometdSettings
from ..http.app import Api, ApiApp, create_app
from ..http.auth import AuthError, HttpAuth
from ..http.sessions import LoginLimits, SessionStore
from ..runtime import CoreRunner, NotificationDispatcher, NotificationPurger, RouterTimer
from ..smtp import (
    AsyncMailTransport,
    MaildirTransport,
    MailDispatcher,
    ReceiverConfig,
    RelayConfig,
    SmtpReceiver,
    SmtpTransport,
)
from .agents import AgentRecord, FileAgentDirectory, PasswordDirectory, hash_password
from .cluster import Cluster
from .database import attachment_limit, open_attachments, open_store
from .health import database_check
from .node import NodeStatus
from .settings import Settings

_log = logging.getLogger(__name__)
NOTIFICATIONS_PATH = "/api/v2/notifications"


@dataclass
class Server:
    settings: Settings
    engine: Engine
    directory: PasswordDirectory
    core: CoreRunner
    auth: HttpAuth
    cometd: BayeuxServer
    notifications: NotificationDispatcher
    mail: MailDispatcher
    receiver: SmtpReceiver
    timer: RouterTimer
    purger: NotificationPurger
    ingest: Callable[[bytes, Envelope, str], IngestResult]
    node: NodeStatus  # this process in a cluster: id, role, notification tail (GET /health)
    app: ApiApp = field(init=False)  # the HTTP API (what TestClient and OpenAPI see)
    asgi: ASGIApp = field(init=False)  # what uvicorn serves: CometD in front of ``app``
    demo_passwords: dict[str, str] = field(default_factory=dict)
    # Several processes on one PostgreSQL: leadership, the notification tail, wake-ups
    # (adapters.server.cluster). None: this process alone (SQLite), leading from the start.
    cluster: Cluster | None = None

    @property
    def store(self) -> Store:
        return self.engine.store

    @property
    def attachments(self) -> AttachmentStore:
        return self.engine.attachments

    @property
    def service(self) -> InteractionService:
        return self.engine.service

    @property
    def router(self) -> Router:
        return self.engine.router

    def _wake_mail_on_send(self, changed: Sequence[Interaction]) -> None:
        if any(i.state == State.SENT for i in changed):
            self.mail.wake()  # from the loop or the core's thread alike

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.cometd.start()
        cluster = self.cluster
        if cluster is None:
            await self.core.offload(self.engine.start)  # rebuilds from the store: off the loop
            self.node.role = "leader"
            self.core.on_change(self.notifications.wake)
        else:
            await self.core.offload(partial(self.engine.start, lead=False))
        # Mail is queued only by Send: wake the mail dispatcher for those commits alone (it
        # also polls), instead of after every call into the core.
        self.service.subscribe(self._wake_mail_on_send)
        if cluster is None:
            await self.notifications.start()
        else:
            await cluster.start()
        await self.mail.start()
        await self.timer.start()
        await self.purger.start()
        await self.receiver.start()
        # Everything built at start-up lives as long as the process: keep it out of the
        # collector's way (shorter pauses, a better tail latency).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if cluster is not None:
                await cluster.step_down()  # another process takes over while this one ends
            await self.receiver.stop()
            await self.purger.stop()
            await self.timer.stop()
            await self.mail.stop()
            await self.mail.transport.close()
            if cluster is None:
                await self.notifications.stop()
            else:
                await cluster.stop()
            await self.cometd.stop()
            self.core.shutdown()
            self.engine.close()


def demo_agents(settings: Settings) -> tuple[list[AgentRecord], dict[str, str]]:
    """Two demo agents for the zero-set-up main job, with fresh random passwords."""
    mailboxes = list(settings.mailboxes) or ["support@example.com"]
    records, passwords = [], {}
    for agent_id, name in (("alice", "Alice Demo"), ("bob", "Bob Demo")):
        password = secrets.token_urlsafe(9)
        passwords[agent_id] = password
        records.append(
            AgentRecord(
                id=agent_id,
                name=name,
                password_hash=hash_password(password),
                mailboxes=mailboxes,
                addresses=[f"{agent_id}@agents.example"],
                capacity=5,
            )
        )
    return records, passwords


def _directory(
    settings: Settings, demo_passwords: dict[str, str] | None
) -> tuple[FileAgentDirectory, dict[str, str]]:
    """The agents file, or (none configured) the two demo agents with their passwords."""
    if settings.agents_file is not None:
        return FileAgentDirectory(settings.agents_file), {}
    records, passwords = demo_agents(settings)
    if demo_passwords:
        passwords = demo_passwords
        records = [
            r.model_copy(update={"password_hash": hash_password(passwords[r.id])}) for r in records
        ]
    return FileAgentDirectory(None, records), passwords


def _is_sqlite(store: Store) -> bool:
    from ..sqlite import SqliteStore

    return isinstance(store, SqliteStore)


def _session_storage(
    settings: Settings, store: Store
) -> tuple[SessionStore | None, LoginLimits | None]:
    """HttpAuth's ``sessions`` and ``login_limits``: in the store's database, so that every
    process on it shares them (docs/http.md, where sessions live), or (None, None) for this
    process's memory. ``http_sessions="auto"``: the database, with PostgreSQL and SQLite alike
    (sessions then survive a restart: an agent's open desktop stays logged in); a store of
    another kind (given by a test) leaves them in memory."""
    from ..sqlite import SqliteStore

    mode = settings.http_sessions
    if mode == "memory":
        return None, None
    if isinstance(store, SqliteStore):
        from ..sqlite.sessions import SqliteLoginLimits, SqliteSessions

        return SqliteSessions(store), SqliteLoginLimits(store)
    if settings.database_url is not None:
        from ..postgres import PostgresStore
        from ..postgres.sessions import PostgresLoginLimits, PostgresSessions

        if isinstance(store, PostgresStore):
            return PostgresSessions.of(store), PostgresLoginLimits.of(store)
    return None, None


def build(
    settings: Settings,
    *,
    store: Store | None = None,
    attachments: AttachmentStore | None = None,
    directory: PasswordDirectory | None = None,
    notifier: Notifier | None = None,
    transport: AsyncMailTransport | None = None,
    operations: Iterable[OperationSpec[Any]] = (),
    demo_passwords: dict[str, str] | None = None,
) -> Server:
    """The server, from ``settings``; each part given is used as is, the rest is built.

    ``notifier`` replaces the CometD server as the destination of notifications (the CometD
    endpoint is still served); ``transport`` replaces the relay or the Maildir. At shutdown the
    server closes the store, the attachment store and the transport, given or built.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    passwords: dict[str, str] = {}
    if directory is None:  # first: a bad agents file then opens no database connection
        directory, passwords = _directory(settings, demo_passwords)
    built: list[Store | AttachmentStore] = []
    try:
        if store is None:
            store = open_store(settings, clock)
            built.append(store)
        if attachments is None:
            attachments = open_attachments(settings, max_size=attachment_limit(settings))
    except BaseException:
        for part in built:  # the store's pool, when the attachment store then failed
            part.close()
        raise
    config = ServiceConfig(
        message_id_domain=settings.message_id_domain,
        mailbox_queues=settings.mailboxes,
        shared_workbins={k: frozenset(v) for k, v in settings.shared_workbins.items()},
        ingest_limits=IngestLimits(max_message_bytes=settings.smtp_max_message_bytes),
    )
    engine = Engine(
        store=store,
        agents=directory,
        attachments=attachments,
        clock=clock,
        ids=RandomIds(),
        config=config,
        routing=RoutingConfig(
            offer_timeout=timedelta(seconds=settings.offer_timeout_seconds),
            queue_skills=settings.queue_skills,
        ),
        operations=operations,
    )
    # On SQLite a unit of work is microseconds of C: the core runs on the event loop, no thread
    # hop (adapters.runtime.CoreRunner, docs/performance.md); PostgreSQL waits on a network.
    core = CoreRunner(inline=_is_sqlite(store))
    sessions, login_limits = _session_storage(settings, store)
    auth = HttpAuth(
        directory.verify,
        csrf=settings.csrf,
        max_failures=settings.login_max_failures,
        window=settings.login_window_seconds,
        backoff=settings.login_backoff_seconds,
        backoff_max=settings.login_backoff_max_seconds,
        address_max_failures=settings.login_address_max_failures,
        max_concurrent_verifications=settings.login_max_concurrent_verifications,
        trusted_proxies=settings.trusted_proxies,
        sessions=sessions,
        login_limits=login_limits,
    )

    async def authenticate(request: AuthRequest) -> str | None:
        """The HTTP API's credentials: session cookie or Basic header; a websocket client that
        cannot set headers may put the Basic value in the handshake's ``ext.authorization``."""
        headers = dict(request.headers)
        given = request.ext.get("authorization")
        if "authorization" not in headers and isinstance(given, str):
            headers["authorization"] = given
        try:
            # The peer; HttpAuth takes the client from X-Forwarded-For if it is a trusted proxy.
            result = await auth.authenticate(
                headers, request.cookies, request.client_host, open_session=False
            )
        except AuthError:
            return None
        return result.agent_id

    async def replay(agent_id: str, after_seq: int, limit: int) -> NotificationBacklog:
        """What a (re)handshaking CometD client missed: read on the core thread, like the
        dispatchers' reads (docs/cometd.md, replay)."""
        return await core.run_quiet(store.notifications_since, agent_id, after_seq, limit)

    c = settings.cometd
    cometd = BayeuxServer(
        authenticate,
        CometdSettings(
            timeout_ms=c.timeout_ms,
            max_client_timeout_ms=c.timeout_ms,
            interval_ms=c.interval_ms,
            max_interval_ms=c.max_interval_ms,
            max_queue=c.max_queue,
            credential_cookies=("JSESSIONID",),
        ),
        replay=replay,
    )
    if transport is None and settings.relay is not None:
        r = settings.relay
        transport = SmtpTransport(
            RelayConfig(
                host=r.host,
                port=r.port,
                security=r.security,
                username=r.username,
                password=r.password,
                connect_timeout=r.timeout_seconds,
                pool_size=r.connections,
            ),
            attachments,
        )
    elif transport is None:
        transport = MaildirTransport(settings.maildir_path, attachments)
    notifications = NotificationDispatcher(
        core, engine.notification_drain(notifier if notifier is not None else cometd.notifier)
    )

    def ingest(raw: bytes, envelope: Envelope, mailbox: str) -> IngestResult:
        """The receiver's callable (from a worker thread): ingest and route, on the core."""
        return core.run_blocking(engine.ingest, raw, envelope=envelope, mailbox=mailbox)

    def mail_failed(entry: MailEntry, reason: str) -> None:
        core.run_blocking(engine.service.mail_failed, entry.mail.interaction_id, reason)

    recipients = {m: m for m in settings.mailboxes} | dict(settings.catch_all)
    node = NodeStatus(settings.node_id)
    server = Server(
        settings=settings,
        engine=engine,
        directory=directory,
        core=core,
        auth=auth,
        cometd=cometd,
        notifications=notifications,
        mail=MailDispatcher(store, transport, clock, mail_failed, RetryPolicy()),
        receiver=SmtpReceiver(
            ReceiverConfig(
                host=settings.smtp_listen_host,
                port=settings.smtp_listen_port,
                recipients=recipients,
                max_message_size=settings.smtp_max_message_bytes,
            ),
            ingest,
        ),
        timer=RouterTimer(core, engine),
        purger=NotificationPurger(
            core,
            engine,
            timedelta(seconds=settings.notification_retention_seconds),
            active=lambda: engine.leading,  # in a cluster, the leader purges
        ),
        ingest=ingest,
        node=node,
        demo_passwords=passwords,
    )
    api = Api(
        core,
        engine,
        auth,
        max_body_bytes=settings.max_body_bytes,
        max_attachment_bytes=settings.max_attachment_bytes,
        node=node,
        check_database=database_check(store),
    )
    if settings.database_url is not None and isinstance(store, ChangeFeed):
        server.cluster = Cluster.build(
            engine,
            core,
            node,
            notifier if notifier is not None else cometd.notifier,
            settings.database_url.secret(),
            application_name=settings.database_application_name,
            connect_timeout_s=settings.database_connect_timeout_seconds,
            check_interval_s=settings.leader_check_interval_seconds,
            # The tail reads only the agents with a CometD session here (a notifier given by
            # the embedder may deliver anyone's: then it reads every notification).
            audience=cometd.sessions.agents if notifier is None else None,
        )
    server.app = create_app(api, lifespan=server.lifespan)
    from ..desktop import install_desktop  # the agent desktop at / (docs/desktop.md)

    install_desktop(server.app, api)
    # CometD in front of the app, not mounted inside it: a held long-poll then keeps one small
    # frame suspended instead of the app's middleware and router (docs/performance.md, CometD).
    server.asgi = CometdApp(cometd, server.app, NOTIFICATIONS_PATH)
    return server
