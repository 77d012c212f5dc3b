"""Settings of the Bayeux server, with the reference server's defaults where they are sane.

Defaults follow CometD's Java server (``java_server_configuration`` in the CometD docs) except
``timeout``: 25 s instead of 30 s, to stay under the 30 s idle limit some proxies and browsers
apply to a request (see docs/cometd.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .protocol import ERR_SESSION_UNKNOWN


class OverflowPolicy(StrEnum):
    """What happens when a session's queue (pending + unacknowledged) is full."""

    CLOSE_SESSION = "close-session"
    """Drop the session: its next message gets ``402`` and the client re-handshakes, so the
    application knows to reload its state. Nothing is ever silently skipped (the default)."""

    DROP_OLDEST = "drop-oldest"
    """Keep the session, discard the oldest pending message(s). Lossy: only for feeds where the
    newest message supersedes the older ones."""


@dataclass(frozen=True, slots=True)
class CometdSettings:
    """Timing, limits and naming of the Bayeux server. All durations in milliseconds."""

    timeout_ms: int = 25_000
    """How long a ``/meta/connect`` is held when nothing is queued."""
    max_client_timeout_ms: int = 25_000
    """Upper bound on a client's own ``advice.timeout`` (clients may only ask for shorter)."""
    interval_ms: int = 0
    """Advised pause between the end of a connect and the next one."""
    max_interval_ms: int = 10_000
    """A session with no connect for ``interval + maxInterval`` is swept."""
    sweep_period_ms: int = 1_000
    unknown_session_interval_ms: int = 2_000
    """``402`` replies advise a re-handshake after a random 0..this wait, so a restart does not
    make every client handshake in the same millisecond."""
    max_sessions_per_browser: int = 1
    """Held long-polls per ``BAYEUX_BROWSER`` cookie; extra ones get ``multiple-clients``."""
    multi_session_interval_ms: int = 2_000
    """Polling interval advised to the extra sessions of one browser (<= 0: ``reconnect:none``)."""
    max_queue: int = 1_000
    """Messages a session may hold (pending + awaiting ack); ``<= 0`` means unbounded."""
    overflow_policy: OverflowPolicy = OverflowPolicy.CLOSE_SESSION
    max_body_bytes: int = 512 * 1024
    """Larger HTTP bodies get ``413``; larger websocket frames close the socket (1009)."""
    max_batch_messages: int = 100
    """Larger batches are refused message by message with ``413::...``."""
    duplicate_connect_status: int = 409
    """HTTP status of a held connect cancelled by a newer one (never 408: browsers retry it)."""
    browser_cookie: str = "BAYEUX_BROWSER"
    browser_cookie_secure: bool = False
    credential_cookies: tuple[str, ...] = ()
    """Cookies that carry credentials: when present on a request they are checked against the
    agent the session belongs to, like the ``Authorization`` header."""
    session_unknown_error: str = ERR_SESSION_UNKNOWN
    """The 402 text differs between CometD releases; configurable so it can copy GWS exactly."""
    websocket: bool = True
    long_polling: bool = True
    replay_max_messages: int = 500
    """With a replay source (``BayeuxServer(replay=...)``): the most notifications one
    subscribe replays; a longer backlog is answered with a ``ReadState`` message instead (the
    client re-reads its state). Capped at half of ``max_queue``, so a replay never overflows
    the queue."""

    flush_batch: int = 64
    """Sessions answered per event-loop turn when messages are delivered. A broadcast to 1,000
    subscribers answers their held connects over 16 turns, with the loop's I/O polled between
    them, instead of in one: a request that arrives meanwhile (a publish, a handshake, an HTTP
    API call on the same loop) waits behind at most this many replies, not behind every one
    (docs/performance.md, "the publish stalls")."""

    def __post_init__(self) -> None:
        if self.duplicate_connect_status < 400 or self.duplicate_connect_status == 408:
            raise ValueError("duplicate_connect_status must be >= 400 and not 408")
        if self.timeout_ms < 0 or self.max_client_timeout_ms < 0 or self.interval_ms < 0:
            raise ValueError("timeouts and intervals must not be negative")
        if self.max_interval_ms <= 0 or self.sweep_period_ms <= 0:
            raise ValueError("max_interval_ms and sweep_period_ms must be positive")
        if self.max_batch_messages <= 0 or self.max_body_bytes <= 0:
            raise ValueError("max_batch_messages and max_body_bytes must be positive")
        if not (self.websocket or self.long_polling):
            raise ValueError("enable at least one transport")
        if self.flush_batch <= 0:
            raise ValueError("flush_batch must be positive")
        if self.replay_max_messages < 0:
            raise ValueError("replay_max_messages must not be negative")

    @property
    def replay_limit(self) -> int:
        """``replay_max_messages``, at most half of a bounded ``max_queue``."""
        if self.max_queue > 0:
            return min(self.replay_max_messages, self.max_queue // 2)
        return self.replay_max_messages

    @property
    def connection_types(self) -> list[str]:
        types = []
        if self.websocket:
            types.append("websocket")
        if self.long_polling:
            types.append("long-polling")
        return types
