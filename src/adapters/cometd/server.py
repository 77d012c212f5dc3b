"""The Bayeux engine: answers one batch of messages for a transport, holds connects, delivers.

Transports (``transports.py``) turn HTTP bodies and websocket frames into ``process`` calls;
the notifier (``notifier.py``) feeds ``deliver``. Everything runs on the event loop thread:
no locks, and no call here blocks.

Protocol behaviour follows the Bayeux 1.0 spec and, where the spec leaves room, CometD's Java
server (``BayeuxServerImpl``, ``ServerSessionImpl``, ``AbstractHttpTransport``), which the
official clients are written against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import secrets
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from interactions_core.ports import NotificationBacklog

from . import eager
from .config import CometdSettings, OverflowPolicy
from .notifier import CometdNotifier
from .policy import AGENT_CHANNELS, AgentPolicy, SecurityPolicy, is_agent_channel
from .protocol import (
    BAYEUX_VERSION,
    ERR_AGENT_MISMATCH,
    ERR_BAD_CHANNEL,
    ERR_BAD_CONNECTION_TYPE,
    ERR_BAD_ID,
    ERR_BAD_MESSAGE,
    ERR_BAD_SUBSCRIPTION,
    ERR_BAD_VERSION,
    ERR_BATCH_TOO_LARGE,
    ERR_HANDSHAKE_DENIED,
    ERR_META_DENIED,
    ERR_NO_DATA,
    ERR_PUBLISH_DENIED,
    ERR_UNKNOWN_CHANNEL,
    MAX_SUBSCRIPTIONS_PER_MESSAGE,
    META_CONNECT,
    META_DISCONNECT,
    META_HANDSHAKE,
    META_SUBSCRIBE,
    META_UNSUBSCRIBE,
    META_UNSUCCESSFUL,
    Message,
    Outgoing,
    SharedMessage,
    error_reply,
    is_meta,
    is_service,
    is_valid_channel,
    matches,
    valid_id,
)
from .sessions import HeldConnect, Link, Session, SessionRegistry, connect_reply

log = logging.getLogger("adapters.cometd")

_BROWSER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")

_TICK: Final = 0.05
"""Resolution (s) of the shared timer that expires held connects: one timer per tick that has
expiries, not one per held connect. A held connect is answered up to one tick after its
``timeout``."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What an authenticator may look at: the HTTP request and the handshake's ``ext``."""

    headers: Mapping[str, str]
    """Lower-cased header names (for a websocket: the upgrade request's headers)."""
    cookies: Mapping[str, str]
    client_host: str | None
    ext: Mapping[str, Any]


Authenticator = Callable[[AuthRequest], Awaitable[str | None]]
"""Returns the authenticated agent id, or ``None`` to refuse."""

Service = Callable[[str, Any], Any]
"""A ``/service/...`` handler: ``(agent_id, data) -> reply data`` (``None``: no reply)."""

ReplaySource = Callable[[str, int, int], Awaitable[NotificationBacklog]]
"""``(agent_id, after_seq, limit)``: the agent's retained notifications after ``after_seq``
(the store's ``OutboxReader.notifications_since``, run off the event loop). Given to
``BayeuxServer(replay=...)`` by the composition root: this adapter never sees the store."""

READ_STATE: Final = "ReadState"
"""``messageTypeName`` of the message telling a client to re-read its state (GET) because
what it missed cannot be replayed; ``data.reason`` is one of the ``REPLAY_*`` reasons."""
REPLAY_NO_POSITION: Final = "no-position"  # the handshake named no ``after``
REPLAY_EXPIRED: Final = "expired"  # some of it was purged (older than the retention)
REPLAY_UNKNOWN_POSITION: Final = "unknown-position"  # ``after`` is a seq the store never gave
REPLAY_TOO_MANY: Final = "too-many"  # more than ``replay_max_messages``
REPLAY_UNAVAILABLE: Final = "unavailable"  # the store could not be read
_MAX_SEQ: Final = 2**63 - 1


def notification_message(channel: str, data: Any, seq: int) -> Message:
    """A notification as delivered: its outbox ``seq`` as ``ext.seq`` (and as the ``id``)."""
    message: Message = {"channel": channel, "data": data}
    if seq:
        message["id"] = str(seq)
        message["ext"] = {"seq": seq}
    return message


def _seq_of(message: Mapping[str, Any]) -> int:
    ext = message.get("ext")
    seq = ext.get("seq", 0) if isinstance(ext, dict) else 0
    return seq if isinstance(seq, int) else 0


def _channels(topic: str) -> tuple[str, ...]:
    """The channels a notification on ``topic`` goes to: the topic and its ``/v2`` alias."""
    return (topic, "/v2" + topic) if topic.startswith("/me/") else (topic,)


def echo_service(agent_id: str, data: Any) -> Any:
    """``/service/echo``: send the data back, a request-reply round trip for clients to test."""
    return data


@dataclass(slots=True)
class RequestContext:
    """What the transport knows about the request that carried a batch."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    client_host: str | None
    connection_type: str
    link: Link | None = None
    """The websocket the batch came on (``None`` for long-polling)."""
    set_browser_cookie: str | None = None
    """Filled in by a handshake when the browser has no ``BAYEUX_BROWSER`` cookie yet."""


@dataclass(slots=True)
class Outcome:
    """Replies to send now, and possibly a held ``/meta/connect`` to wait for."""

    replies: list[Outgoing] = field(default_factory=list)
    """This session's own replies (dicts) and, after a connect reply, the delivered messages
    it carries (``SharedMessage``, encoded once for every session that sends them)."""
    held: HeldConnect | None = None


class _Refused(Exception):
    """A message that gets an error reply instead of being processed."""

    def __init__(self, reply: Message) -> None:
        super().__init__(reply.get("error"))
        self.reply = reply


class BayeuxServer:
    """Sessions, subscriptions and delivery for every transport of one process.

    ``notifier`` is the core's ``Notifier`` port; ``start``/``stop`` run the session sweeper and
    close held connections on shutdown. ``policy`` decides who may handshake, subscribe and
    publish where (``policy.py``; default: the product's ``AgentPolicy``); ``publish`` is
    the server's own broadcast to a channel's subscribers.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        settings: CometdSettings | None = None,
        *,
        services: Mapping[str, Service] | None = None,
        replay: ReplaySource | None = None,
        policy: SecurityPolicy | None = None,
    ) -> None:
        self.settings = settings or CometdSettings()
        self.policy: SecurityPolicy = policy if policy is not None else AgentPolicy()
        self._subscribers: dict[str, set[Session]] = {}
        """Recorded subscriptions, by pattern: whom a broadcast on a channel reaches."""
        self._replay_source = replay
        self._replays: set[asyncio.Task[None]] = set()
        self._authenticate_cb = authenticator
        self._services: dict[str, Service] = (
            {"/service/echo": echo_service} if services is None else dict(services)
        )
        self.sessions = SessionRegistry()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._links: set[Link] = set()
        self._expiries: dict[int, set[HeldConnect]] = {}
        """Held connects by the tick of the shared timer at which they expire."""
        self._to_flush: deque[Session] = deque()
        """Sessions with new messages, in order, answered ``settings.flush_batch`` per loop turn
        by one callback (a broadcast to 1,000 sessions schedules one callback, not 1,000)."""
        self._flush_scheduled = False
        self.notifier = CometdNotifier(self)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind to the running loop and start sweeping expired sessions."""
        self._bind_loop()
        self._stopping = False
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="cometd-sweeper")

    async def stop(self) -> None:
        """Stop sweeping, answer every held connect and close websockets (server shutdown).

        Held long-polls are answered at once so the HTTP server can drain its connections
        without waiting a whole ``timeout``; clients then reconnect, meet the restarted server
        and its ``402``, and re-handshake.
        """
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for task in list(self._replays):
            task.cancel()
        for session in self.sessions:
            held = session.held
            if held is not None:
                self.release(held, self._complete(session, held.connect_reply()))
        for link in list(self._links):
            closer = getattr(link, "close", None)
            if callable(closer):
                closer()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        return self._loop

    def on_loop_thread(self) -> bool:
        return self._loop_thread is None or self._loop_thread == threading.get_ident()

    def call_on_loop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the server's loop (used when publishing from another thread)."""
        if self._loop is None or self.on_loop_thread():
            callback()
        else:
            self._loop.call_soon_threadsafe(callback)

    # ------------------------------------------------------------------ links

    def link_opened(self, link: Link) -> None:
        self._links.add(link)

    def link_closed(self, link: Link) -> None:
        """A websocket went away: its sessions wait for a reconnect (or the sweeper)."""
        self._links.discard(link)
        loop = self._bind_loop()
        for session in self.sessions:
            if session.link is link:
                session.link = None
                session.last_seen = loop.time()
            held = session.held
            if held is not None and held.link is link:
                self.abandon(held)

    # ------------------------------------------------------------------ batches

    async def process(self, batch: list[Any], ctx: RequestContext) -> Outcome:
        """Handle one batch; never raises for anything a client can send."""
        self._bind_loop()
        limit = self.settings.max_batch_messages
        if len(batch) > limit:
            return Outcome(
                [
                    error_reply(m, _channel_of(m), ERR_BATCH_TOO_LARGE)
                    if isinstance(m, dict)
                    else error_reply(None, META_UNSUCCESSFUL, ERR_BATCH_TOO_LARGE)
                    for m in batch[:limit]
                ]
            )
        # Spec: other messages in the same request as a handshake MUST be ignored.
        for message in batch:
            if isinstance(message, dict) and message.get("channel") == META_HANDSHAKE:
                return Outcome([await self._handshake(message, ctx)])

        outcome = Outcome()
        for message in batch:
            try:
                self._check_envelope(message)
                await self._handle(message, ctx, outcome)
            except _Refused as refused:
                outcome.replies.append(refused.reply)
        return outcome

    @staticmethod
    def _check_envelope(message: object) -> None:
        if not isinstance(message, dict):
            raise _Refused(error_reply(None, META_UNSUCCESSFUL, ERR_BAD_MESSAGE))
        channel = message.get("channel")
        if not is_valid_channel(channel, allow_wildcard=False):
            raise _Refused(error_reply(message, META_UNSUCCESSFUL, ERR_BAD_CHANNEL))
        if "id" in message and not valid_id(message["id"]):
            bad = dict(message)
            del bad["id"]
            raise _Refused(error_reply(bad, str(channel), ERR_BAD_ID))

    async def _handle(self, message: Message, ctx: RequestContext, outcome: Outcome) -> None:
        channel: str = message["channel"]
        if channel == META_CONNECT:
            session = await self._session_for(message, ctx, unknown_advice=True)
            if outcome.held is not None:
                raise _Refused(error_reply(message, channel, "400::one connect per batch"))
            result = self._connect(message, session, ctx)
            if isinstance(result, HeldConnect):
                outcome.held = result
            else:
                outcome.replies.extend(result)
        elif channel == META_SUBSCRIBE:
            session = await self._session_for(message, ctx)
            outcome.replies.append(self._subscribe(message, session))
        elif channel == META_UNSUBSCRIBE:
            session = await self._session_for(message, ctx)
            outcome.replies.append(self._unsubscribe(message, session))
        elif channel == META_DISCONNECT:
            session = await self._session_for(message, ctx)
            outcome.replies.append(self._disconnect(message, session))
        elif is_meta(channel):
            raise _Refused(error_reply(message, channel, ERR_UNKNOWN_CHANNEL))
        else:
            session = await self._session_for(message, ctx)
            outcome.replies.append(self._publish(message, session))

    # ------------------------------------------------------------------ authentication

    async def _authenticate(self, request: AuthRequest) -> str | None:
        # The one place process() may wait: where a transport ran it eagerly (outside a task,
        # adapters.cometd.eager), the authenticator gets a task of its own (anyio needs one).
        await eager.in_task()
        try:
            agent = await self._authenticate_cb(request)
        except Exception:  # an authenticator bug must refuse, not crash the transport
            log.exception("cometd authenticator failed")
            return None
        return agent if isinstance(agent, str) and agent else None

    def _credential_key(self, ctx: RequestContext) -> str | None:
        """What identifies the credentials a request carries (``None``: it carries none)."""
        if ctx.link is not None:
            return None  # a websocket is bound to one agent at its first handshake
        authorization = ctx.headers.get("authorization")
        cookies = ctx.cookies
        names = self.settings.credential_cookies
        if authorization is None and not any(name in cookies for name in names):
            return None  # (the common case, a cookie-less or header-less client: no list built)
        parts = [authorization, *(cookies.get(name) for name in names)]
        return "\x00".join(part or "" for part in parts)

    async def _session_for(
        self, message: Message, ctx: RequestContext, *, unknown_advice: bool = False
    ) -> Session:
        channel: str = message["channel"]
        client_id = message.get("clientId")
        session = self.sessions.get(client_id) if isinstance(client_id, str) else None
        if session is None or session.closed:
            raise _Refused(self._unknown_session(message, channel, unknown_advice))
        if ctx.link is not None and ctx.link.agent_id not in (None, session.agent_id):
            raise _Refused(error_reply(message, channel, ERR_AGENT_MISMATCH))
        key = self._credential_key(ctx)
        if key is not None and key != session.credential_key:
            ext = message.get("ext")
            agent = await self._authenticate(
                AuthRequest(
                    ctx.headers, ctx.cookies, ctx.client_host, ext if isinstance(ext, dict) else {}
                )
            )
            if agent != session.agent_id:
                log.warning("cometd: clientId of %s used by %s", session.agent_id, agent)
                raise _Refused(error_reply(message, channel, ERR_AGENT_MISMATCH))
            session.credential_key = key
        return session

    def _unknown_session(self, message: Message, channel: str, advice: bool) -> Message:
        reply = error_reply(message, channel, self.settings.session_unknown_error)
        if advice:
            # CometD's BayeuxServerImpl.unknownSession advises a re-handshake; the random
            # interval spreads the re-handshakes of every client after a restart.
            spread = self.settings.unknown_session_interval_ms
            reply["advice"] = {
                "reconnect": "handshake",
                "interval": random.randint(0, spread) if spread > 0 else 0,
            }
        return reply

    # ------------------------------------------------------------------ meta channels

    def _advice(self, session: Session | None, multiple_clients: bool = False) -> Message:
        settings = self.settings
        timeout = settings.timeout_ms
        if session is not None and session.timeout_ms is not None:
            timeout = session.timeout_ms
        advice: Message = {
            "reconnect": "retry",
            "interval": settings.interval_ms,
            "timeout": timeout,
            "maxInterval": settings.max_interval_ms,
        }
        if multiple_clients:
            advice["multiple-clients"] = True
            if settings.multi_session_interval_ms > 0:
                advice["interval"] = settings.multi_session_interval_ms
            else:
                advice["reconnect"] = "none"
        return advice

    async def _handshake(self, message: Message, ctx: RequestContext) -> Message:
        channel = META_HANDSHAKE
        if "id" in message and not valid_id(message["id"]):
            message = {k: v for k, v in message.items() if k != "id"}
            return error_reply(message, channel, ERR_BAD_ID)
        version = message.get("version")
        if not isinstance(version, str) or not version.startswith("1"):
            return self._handshake_failure(message, ERR_BAD_VERSION)
        offered = message.get("supportedConnectionTypes")
        ours = self.settings.connection_types
        if (
            not isinstance(offered, list)
            or not any(t in ours for t in offered if isinstance(t, str))
            or ctx.connection_type not in ours
        ):
            failure = self._handshake_failure(message, ERR_BAD_CONNECTION_TYPE)
            failure["supportedConnectionTypes"] = ours
            return failure
        ext = message.get("ext")
        ext = ext if isinstance(ext, dict) else {}
        agent = await self._authenticate(
            AuthRequest(ctx.headers, ctx.cookies, ctx.client_host, ext)
        )
        if agent is None:
            return self._handshake_failure(message, ERR_HANDSHAKE_DENIED)
        refused = self.policy.can_handshake(agent)
        if refused is not None:
            return self._handshake_failure(message, refused)
        link = ctx.link
        if link is not None:
            if link.agent_id is not None and link.agent_id != agent:
                return self._handshake_failure(message, ERR_AGENT_MISMATCH)
            link.agent_id = agent
        browser_id = ctx.cookies.get(self.settings.browser_cookie)
        if link is None and (browser_id is None or not _BROWSER_ID.fullmatch(browser_id)):
            browser_id = secrets.token_urlsafe(18)
            ctx.set_browser_cookie = browser_id
        ack_field = ext.get("ack")
        ack = ack_field is True or (
            isinstance(ack_field, dict) and ack_field.get("enabled") is True
        )
        loop = self._bind_loop()
        session = Session(
            secrets.token_urlsafe(18),
            agent,
            browser_id=browser_id if link is None else None,
            credential_key=self._credential_key(ctx),
            ack=ack,
            now=loop.time(),
        )
        replay = ext.get("replay") if self._replay_source is not None else None
        if replay is True or isinstance(replay, dict):
            after = replay.get("after") if isinstance(replay, dict) else None
            if isinstance(after, int) and not isinstance(after, bool) and 0 <= after <= _MAX_SEQ:
                session.replay_after = after  # else -1: the client does not know its position
            session.floors = {}
        self.sessions.add(session)
        reply: Message = {
            "channel": channel,
            "version": BAYEUX_VERSION,
            "minimumVersion": BAYEUX_VERSION,
            "supportedConnectionTypes": ours,
            "clientId": session.client_id,
            "successful": True,
            # Always advise on the handshake reply: without it, older clients keep a stale
            # "handshake" advice and loop (cometd#722, aiocometd#1).
            "advice": self._advice(session),
        }
        if "id" in message:
            reply["id"] = message["id"]
        reply_ext: Message = {}
        if ack:
            reply_ext["ack"] = True
        if session.floors is not None:
            reply_ext["replay"] = True
        if reply_ext:
            reply["ext"] = reply_ext
        return reply

    def _handshake_failure(self, message: Message, error: str) -> Message:
        reply = error_reply(message, META_HANDSHAKE, error)
        reply.pop("clientId", None)
        # reconnect "none" must travel with successful:false or clients never hear (cometd#159).
        reply["advice"] = {"reconnect": "none", "interval": 0}
        return reply

    def _connect(
        self, message: Message, session: Session, ctx: RequestContext
    ) -> list[Outgoing] | HeldConnect:
        settings = self.settings
        connection_type = message.get("connectionType")
        if not isinstance(connection_type, str):
            raise _Refused(error_reply(message, META_CONNECT, ERR_BAD_MESSAGE))
        if connection_type not in settings.connection_types:
            raise _Refused(error_reply(message, META_CONNECT, ERR_BAD_CONNECTION_TYPE))
        loop = self._bind_loop()
        session.last_seen = loop.time()
        if session.held is not None:
            # One held connect per session: the newer one wins (spec; CometD cancels the old
            # one with a non-408 HTTP error).
            self.release(session.held, None)
        if session.ack:
            ext = message.get("ext")
            if isinstance(ext, dict):
                acked = ext.get("ack")
                if isinstance(acked, int) and not isinstance(acked, bool):
                    session.acknowledge(acked)
        immediate = not session.connected or self._stopping
        advice = message.get("advice")
        if isinstance(advice, dict):
            wanted = advice.get("timeout")
            if (
                isinstance(wanted, int | float)
                and not isinstance(wanted, bool)
                and 0 <= wanted < 2**53  # finite and an integer JavaScript can hold
            ):
                if wanted == 0:
                    immediate = True  # the client asks for an answer now (after an outage)
                else:
                    session.timeout_ms = min(int(wanted), settings.max_client_timeout_ms)
        link = ctx.link
        if link is not None:
            session.link = link
        elif session.link is not None:
            session.link = None  # moved to long-polling
        msg_id = message.get("id")
        timeout = settings.timeout_ms if session.timeout_ms is None else session.timeout_ms
        ready = bool(session.queue) and not session.replays_pending
        if immediate or ready or timeout <= 0:
            return self._complete(session, connect_reply(msg_id))
        # Held long-polls are counted per browser only when there is a limit to enforce.
        browser_id = session.browser_id if link is None else None
        if settings.max_sessions_per_browser < 0:
            browser_id = None
        elif (
            browser_id is not None
            and self.sessions.held_in_browser(browser_id) >= settings.max_sessions_per_browser
        ):
            return self._complete(session, connect_reply(msg_id), multiple_clients=True)
        held = HeldConnect(session, msg_id, browser_id, link)
        self._expire_at(held, loop.time() + timeout / 1000)
        session.held = held
        if browser_id is not None:
            self.sessions.browser_hold(browser_id, 1)
        return held

    def _complete(
        self, session: Session, reply: Message, *, multiple_clients: bool = False
    ) -> list[Outgoing]:
        """The connect reply (advice when it changed, ack batch id) and the queued messages.

        The reply is this session's own dict, encoded with its batch; the messages are shared
        (``SharedMessage``) and keep their bytes: nothing per session is added to them."""
        session.connected = True
        if self._loop is not None:
            session.last_seen = self._loop.time()
        advice = self._advice(session, multiple_clients)
        # Only the timeout and multiple-clients vary between replies (the rest is settings);
        # an int is the cheapest thing to keep per session.
        key = int(advice["timeout"]) * 2 + multiple_clients
        if key != session.advice_sent:
            reply["advice"] = advice
            session.advice_sent = key
        messages, batch = session.take()
        if batch is not None:
            reply["ext"] = {"ack": batch}
        return [reply, *messages]

    def release(self, held: HeldConnect, result: list[Outgoing] | None) -> None:
        """Answer a held connect once (``None``: cancelled by a newer connect)."""
        if held.tick is not None:
            expiring = self._expiries.get(held.tick)
            if expiring is not None:
                expiring.discard(held)
            held.tick = None
        session = held.session
        if session.held is held:
            session.held = None
            if held.browser_id is not None:
                self.sessions.browser_hold(held.browser_id, -1)
        if not held.future.done():
            held.future.set_result(result)

    def abandon(self, held: HeldConnect) -> None:
        """The request (or websocket) carrying ``held`` went away: nobody is left to answer.

        The session's messages wait in its queue for its next connect, and its
        ``maxInterval`` counts from now: it was not idle while its connect was held.
        """
        session = held.session
        if session.held is held:
            session.last_seen = self._bind_loop().time()
        self.release(held, None)

    def _expire_at(self, held: HeldConnect, when: float) -> None:
        """Answer ``held`` at the first tick of the shared timer at or after ``when``."""
        tick = math.ceil(when / _TICK)
        expiring = self._expiries.get(tick)
        if expiring is None:
            expiring = self._expiries[tick] = set()
            self._bind_loop().call_at(tick * _TICK, self._expire_tick, tick)
        expiring.add(held)
        held.tick = tick

    def _expire_tick(self, tick: int) -> None:
        for held in self._expiries.pop(tick, ()):
            held.tick = None
            if held.session.held is held:
                self.release(held, self._complete(held.session, held.connect_reply()))

    def _subscribe(self, message: Message, session: Session) -> Message:
        patterns = self._patterns(message)
        for pattern in patterns:
            error = (
                ERR_META_DENIED
                if is_meta(pattern)  # the protocol's own, whatever the policy
                else self.policy.can_subscribe(session.agent_id, pattern)
            )
            if error is not None:
                raise _Refused(self._subscription_reply(message, error))
        before = list(session.subscriptions)
        for pattern in patterns:
            if not is_service(pattern):  # spec: /service/** subscriptions are not recorded
                session.subscribe(pattern)
                self._subscribers.setdefault(pattern, set()).add(session)
        added = [p for p in dict.fromkeys(patterns) if not is_service(p) and p not in before]
        if added and session.floors is not None:
            self._start_replay(session, before, added)
        return self._subscription_reply(message, None)

    def _unsubscribe(self, message: Message, session: Session) -> Message:
        for pattern in self._patterns(message):
            session.unsubscribe(pattern)
            self._forget_subscription(session, pattern)
        return self._subscription_reply(message, None)

    def _forget_subscription(self, session: Session, pattern: str) -> None:
        subscribers = self._subscribers.get(pattern)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subscribers[pattern]

    def _patterns(self, message: Message) -> list[str]:
        value = message.get("subscription")
        patterns = [value] if isinstance(value, str) else value
        if (
            not isinstance(patterns, list)
            or not 0 < len(patterns) <= MAX_SUBSCRIPTIONS_PER_MESSAGE
            or not all(is_valid_channel(p, allow_wildcard=True) for p in patterns)
        ):
            raise _Refused(self._subscription_reply(message, ERR_BAD_SUBSCRIPTION))
        return patterns

    @staticmethod
    def _subscription_reply(message: Message, error: str | None) -> Message:
        channel: str = message["channel"]
        if error is None:
            reply: Message = {"channel": channel, "successful": True}
            if "id" in message:
                reply["id"] = message["id"]
            reply["clientId"] = message["clientId"]
        else:
            reply = error_reply(message, channel, error)
        subscription = message.get("subscription")
        if isinstance(subscription, str | list):
            reply["subscription"] = subscription
        return reply

    def _disconnect(self, message: Message, session: Session) -> Message:
        self._close(session, goodbye=True)
        reply: Message = {"channel": META_DISCONNECT, "successful": True}
        if "id" in message:
            reply["id"] = message["id"]
        reply["clientId"] = session.client_id
        return reply

    def _publish(self, message: Message, session: Session) -> Message:
        channel: str = message["channel"]
        if "data" not in message:
            raise _Refused(error_reply(message, channel, ERR_NO_DATA))
        refused = self.policy.can_publish(session.agent_id, channel, message["data"])
        if refused is not None:
            raise _Refused(error_reply(message, channel, refused))
        if not is_service(channel):
            if is_agent_channel(channel):  # per agent, whatever the policy says
                raise _Refused(error_reply(message, channel, ERR_PUBLISH_DENIED))
            self._broadcast(channel, message["data"])
            return _publish_reply(message)
        service = self._services.get(channel)
        if service is None:
            raise _Refused(error_reply(message, channel, ERR_UNKNOWN_CHANNEL))
        answer = service(session.agent_id, message["data"])
        if answer is not None:
            # Delivered like any event and without the request's id: aiocometd takes a
            # /service message with an id for the publish acknowledgement and swallows it.
            self._enqueue(session, SharedMessage({"channel": channel, "data": answer}))
        return _publish_reply(message)

    # ------------------------------------------------------------------ delivery

    def publish(self, channel: str, data: Any) -> None:
        """Broadcast ``data`` on ``channel`` to every session subscribed to it, by name or by a
        wildcard (``/a/*`` covers ``/a/b``; ``/a/**`` covers ``/a/b`` and ``/a/b/c``), each
        once. From any thread (handed to the loop). Refuses (``ValueError``) what is no
        broadcast channel: a wildcard, ``/meta/**``, ``/service/**`` and the agent channels
        (an agent's notifications go through ``deliver``, to that agent only)."""
        if (
            not is_valid_channel(channel, allow_wildcard=False)
            or is_meta(channel)
            or is_service(channel)
            or is_agent_channel(channel)
        ):
            raise ValueError(f"{channel!r} is not a broadcast channel")
        if self.on_loop_thread():
            self._broadcast(channel, data)
        else:

            def broadcast() -> None:
                self._broadcast(channel, data)

            self.call_on_loop(broadcast)

    def _broadcast(self, channel: str, data: Any) -> int:
        """On the loop: one message, queued for every subscriber once; how many. The same
        ``SharedMessage`` for all of them: it is encoded once, however many they are."""
        message = SharedMessage({"channel": channel, "data": data})
        reached: set[Session] = set()
        for pattern in _patterns_covering(channel):
            # A copy: a full queue may close its session (OverflowPolicy), which forgets it.
            for session in tuple(self._subscribers.get(pattern, ())):
                if session not in reached:
                    reached.add(session)
                    self._enqueue(session, message)
        return len(reached)

    def deliver(self, agent_id: str, topic: str, data: Any, seq: int = 0) -> int:
        """Queue ``data`` on ``topic`` (and its ``/v2`` alias) for the agent's subscribed sessions.

        ``data`` may be a callable returning it (``Notification.to_wire``): it is called once,
        when the first session that gets the message is found, and not at all for an agent
        none of whose sessions is subscribed (the payload read from the outbox stays undecoded).

        Returns the number of messages queued. Must run on the loop thread (the notifier
        makes sure of that). One ``SharedMessage`` per channel, shared by the agent's sessions
        subscribed to it (the ``/v2`` alias differs in ``channel``, so it is a message of its
        own); sessions differ only in whether they get it (``floors``), never in its content.
        """
        channels = _channels(topic)
        built: dict[str, SharedMessage] = {}
        count = 0
        for session in self.sessions.of_agent(agent_id):
            floors = session.floors
            for channel in channels:
                if session.is_subscribed(channel):
                    if floors is not None and seq:
                        if seq <= floors.get(channel, session.replay_after):
                            continue  # replayed already, or the client had it
                        floors[channel] = seq
                    message = built.get(channel)
                    if message is None:
                        if callable(data):
                            data = data()
                        message = built[channel] = SharedMessage(
                            notification_message(channel, data, seq)
                        )
                    self._enqueue(session, message)
                    count += 1
        return count

    def _enqueue(self, session: Session, message: SharedMessage) -> None:
        if session.closed:
            return
        session.queue.append(message)
        if self._overflowed(session):
            return
        self._schedule_flush(session)

    def _overflowed(self, session: Session) -> bool:
        """Apply the overflow policy to a session's queue; ``True`` when it closed the session."""
        limit = self.settings.max_queue
        if limit > 0:
            pending = session.pending()
            if pending > limit:
                if self.settings.overflow_policy is OverflowPolicy.CLOSE_SESSION:
                    log.warning(
                        "cometd: queue of %s (agent %s) full; session closed",
                        session.client_id,
                        session.agent_id,
                    )
                    self._close(session, goodbye=False)
                    return True
                session.drop_oldest(pending - limit)
        return False

    def _schedule_flush(self, session: Session) -> None:
        if not session.flush_pending:
            session.flush_pending = True
            self._to_flush.append(session)
            if not self._flush_scheduled:
                # Soon, not now: messages published in the same loop turn travel in one reply.
                self._flush_scheduled = True
                self._bind_loop().call_soon(self._flush_some)

    def _flush_some(self) -> None:
        """Answer the next ``flush_batch`` sessions; the rest in the next loop turn (a callback
        scheduled by a callback runs after the loop has polled its sockets again)."""
        waiting = self._to_flush
        for _ in range(min(len(waiting), self.settings.flush_batch)):
            self._flush(waiting.popleft())
        if waiting:
            self._bind_loop().call_soon(self._flush_some)
        else:
            self._flush_scheduled = False

    def _flush(self, session: Session) -> None:
        session.flush_pending = False
        if session.closed or not session.queue or session.replays_pending:
            return  # (held during a replay read: flushed once it is merged)
        if session.link is not None and not session.ack:
            # Websocket without ack: push at once, the held connect stays a heartbeat.
            messages = session.queue
            session.queue = []
            session.link.push(messages)
        elif session.held is not None:
            self.release(session.held, self._complete(session, session.held.connect_reply()))
        # otherwise the messages wait for the next /meta/connect

    def _close(self, session: Session, *, goodbye: bool) -> None:
        """Forget a session; a held connect is answered so its client learns at once."""
        self.sessions.remove(session)
        session.closed = True
        for pattern in list(session.subscriptions):
            self._forget_subscription(session, pattern)
        held = session.held
        if held is not None:
            reply = held.connect_reply()
            if goodbye:
                reply["advice"] = {"reconnect": "none", "interval": 0}
            else:
                reply = self._unknown_session(reply, META_CONNECT, True)
            self.release(held, [reply])
        session.queue = []
        session.unacked = []
        session.link = None

    # ------------------------------------------------------------------ replay

    def _start_replay(self, session: Session, before: list[str], added: list[str]) -> None:
        """Read what the channels ``added`` (and not covered by ``before``) carried since the
        client's position, and merge it into the queue, which is held until then."""
        session.replays_pending += 1
        floors = dict(session.floors or {})
        task = self._bind_loop().create_task(
            self._replay(session, tuple(before), tuple(added), floors), name="cometd-replay"
        )
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(
        self,
        session: Session,
        before: tuple[str, ...],
        added: tuple[str, ...],
        floors: dict[str, int],
    ) -> None:
        def covered(channel: str) -> bool:
            return any(matches(p, channel) for p in added) and not any(
                matches(p, channel) for p in before
            )

        after = session.replay_after
        limit = self.settings.replay_limit
        backlog: NotificationBacklog | None = None
        reason: str | None = None
        source = self._replay_source
        try:
            if source is not None:
                # Without a position, only the store's last seq is wanted (for ReadState).
                backlog = await source(
                    session.agent_id, max(after, 0), limit + 1 if after >= 0 else 0
                )
        except Exception:
            log.exception("cometd: replay read failed for %s", session.agent_id)
        finally:
            session.replays_pending -= 1
        if session.closed:
            return
        if backlog is None:
            reason = REPLAY_UNAVAILABLE
        elif after < 0:
            reason = REPLAY_NO_POSITION
        elif not backlog.complete:
            reason = REPLAY_EXPIRED if after <= backlog.last_seq else REPLAY_UNKNOWN_POSITION
        elif len(backlog.notifications) > limit:
            reason = REPLAY_TOO_MANY
        replayed: list[SharedMessage] = []
        touched = {ch for ch in AGENT_CHANNELS if covered(ch) and session.is_subscribed(ch)}
        if reason is None and backlog is not None:
            queued = {(m["channel"], _seq_of(m)) for m in session.queue}
            for n in backlog.notifications:
                data: Any = None
                for channel in _channels(n.topic):
                    if (
                        covered(channel)
                        and session.is_subscribed(channel)
                        and n.seq > floors.get(channel, after)
                        and (channel, n.seq) not in queued
                    ):
                        if data is None:
                            data = n.to_wire()
                        replayed.append(SharedMessage(notification_message(channel, data, n.seq)))
                        touched.add(channel)
        else:
            if backlog is not None:
                # What arrived live during the read and the re-read covers: the ReadState
                # replaces it (one message per seq and channel).
                last = backlog.last_seq
                session.queue = [
                    m
                    for m in session.queue
                    if not (m["channel"] in touched and 0 < _seq_of(m) <= last)
                ]
            for channel in sorted(touched):
                replayed.append(
                    SharedMessage(_read_state(channel, reason or REPLAY_UNAVAILABLE, backlog))
                )
        current = session.floors
        if backlog is not None and current is not None:
            if reason == REPLAY_UNKNOWN_POSITION:
                # Never given by this store: the client's position means nothing here.
                session.replay_after = after = backlog.last_seq
            for channel in touched:
                current[channel] = max(current.get(channel, after), backlog.last_seq)
        if replayed:
            # Live messages that arrived during the read wait in the queue: one order, by seq.
            session.queue = sorted([*session.queue, *replayed], key=_seq_of)
            if self._overflowed(session):
                return
        if session.queue and not session.replays_pending:
            self._schedule_flush(session)

    # ------------------------------------------------------------------ sweeping

    def sweep(self) -> int:
        """Remove sessions without a connect for ``interval + maxInterval``; returns how many."""
        loop = self._bind_loop()
        deadline = loop.time() - (self.settings.interval_ms + self.settings.max_interval_ms) / 1000
        swept = 0
        for session in self.sessions:
            if session.held is None and session.last_seen < deadline:
                self._close(session, goodbye=False)
                swept += 1
        return swept

    async def _sweep_forever(self) -> None:
        period = self.settings.sweep_period_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                self.sweep()
            except Exception:  # keep sweeping whatever one pass hit
                log.exception("cometd sweeper failed")


def _read_state(channel: str, reason: str, backlog: NotificationBacklog | None) -> Message:
    """Tells the client to re-read its state. Its ``ext.seq`` is the store's last seq at the
    read (what a re-read made after it covers); none when the store could not be read."""
    message: Message = {
        "channel": channel,
        "data": {"messageTypeName": READ_STATE, "reason": reason},
    }
    if backlog is not None and backlog.last_seq:
        message["ext"] = {"seq": backlog.last_seq}
    return message


def _publish_reply(message: Message) -> Message:
    reply: Message = {"channel": message["channel"], "successful": True}
    if "id" in message:
        reply["id"] = message["id"]
    return reply


def _patterns_covering(channel: str) -> list[str]:
    """Every subscription pattern that covers ``channel`` (Bayeux §3.3.2): the channel itself,
    ``*`` in place of its last segment, and ``**`` after each of its leading segments."""
    segments = channel.split("/")[1:]
    found = [channel, "/" + "/".join([*segments[:-1], "*"])]
    found.extend("/" + "/".join([*segments[:k], "**"]) for k in range(len(segments)))
    return found


def _channel_of(message: Message) -> str:
    channel = message.get("channel")
    return channel if isinstance(channel, str) and len(channel) < 256 else META_UNSUCCESSFUL


__all__ = [
    "AGENT_CHANNELS",
    "READ_STATE",
    "AuthRequest",
    "Authenticator",
    "BayeuxServer",
    "Outcome",
    "ReplaySource",
    "RequestContext",
    "SecurityPolicy",
    "Service",
    "echo_service",
    "notification_message",
]
