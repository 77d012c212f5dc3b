"""Ports: what the core needs from the outside world, as ``typing.Protocol``.

Each is the minimum its user needs, and each method's docstring is its contract. Adapters
(``adapters.sqlite``, ``adapters.smtp``, ``adapters.cometd``...) implement them;
``interactions_core.memory`` holds in-memory implementations of every one, and
``interactions_core.testing.contracts`` the test suites that prove an implementation keeps
these contracts (``StoreContract``, ``AttachmentStoreContract``, ``MailTransportContract``,
``NotifierContract``...): subclass one with a factory for your adapter.

Every port with resources has an idempotent ``close()``: it releases them, a second call does
nothing, and nothing already committed or stored is lost by it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .model import Address, Attachment, Interaction

# CometD topics (seed: /me/interactions; GWS also names /me/channels and /me/workbins).
TOPIC_INTERACTIONS = "/me/interactions"
TOPIC_CHANNELS = "/me/channels"
TOPIC_WORKBINS = "/me/workbins"


# --------------------------------------------------------------------------- records


class Agent(BaseModel):
    """An agent as the core sees it: who, what they may handle, where they may send from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str = ""
    addresses: tuple[str, ...] = ()  # the agent's own e-mail addresses (never reply-all targets)
    skills: frozenset[str] = frozenset()
    mailboxes: tuple[str, ...] = ()  # mailbox addresses the agent may send from
    capacity: int = 5  # max concurrent e-mail interactions (issue: routing)


class OutgoingMail(BaseModel):
    """One mail to hand to the relay. Message-ID is fixed here, so a retry is the same message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interaction_id: str
    mailbox: str
    from_: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str = ""
    html: str = ""
    message_id: str
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    date: datetime
    attachments: tuple[Attachment, ...] = ()

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        """To, Cc and Bcc addresses, in that order: whom the mail is handed over for."""
        return tuple(a.addr for a in (*self.to, *self.cc, *self.bcc))


class WireMessage(Protocol):
    def to_wire(self) -> dict[str, Any]:
        """The message as JSON-compatible data (what a client receives)."""
        ...


class RawMessage(BaseModel):
    """A notification payload already in wire form (e.g. read back from storage)."""

    model_config = ConfigDict(frozen=True)

    data: dict[str, Any] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """``data``, as given."""
        return self.data


class StoredMessage:
    """A notification payload as a store read it back: its JSON text, decoded on first use.

    A store's outbox reader hands these out instead of decoding every row it reads: a
    notification goes to the agent's sessions on this process, and for an agent with none
    (or a drain that only marks it published) it is never decoded at all. Equal to a
    ``RawMessage`` or another ``StoredMessage`` of the same data. Immutable, as is the text;
    the decoded dict is shared by every caller of ``to_wire``, who must not change it.
    """

    __slots__ = ("_data", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._data: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            decoded = json.loads(self.text)
            if not isinstance(decoded, dict):
                raise ValueError("a stored notification payload is a JSON object")
            data = self._data = decoded
        return data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StoredMessage, RawMessage)):
            return self.to_wire() == other.to_wire()
        return NotImplemented

    def __hash__(self) -> int:
        # By the data, as equality goes (two texts of the same data are equal).
        return hash(json.dumps(self.to_wire(), sort_keys=True))

    def __repr__(self) -> str:
        return f"StoredMessage({self.text!r})"


class Notification(BaseModel):
    """A message for one agent on one topic, committed with the change that caused it.

    ``seq`` is 0 until the notification is committed; one read back from an ``OutboxReader``
    carries the positive ``seq`` the store gave it (see ``OutboxReader``).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    agent_id: str
    topic: str = TOPIC_INTERACTIONS
    payload: Any  # a WireMessage
    seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The payload in wire form: what the agent's client receives."""
        data: dict[str, Any] = self.payload.to_wire()
        return data


class NotificationBacklog(BaseModel):
    """What ``OutboxReader.notifications_since`` found: an agent's retained notifications after
    a seq, and whether they are all there were."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    notifications: list[Notification]
    """The agent's retained notifications with ``seq > after_seq``, in ``seq`` order, each with
    its ``seq``; at most ``limit`` (read on after the last one for more)."""
    complete: bool
    """``False`` when a notification of the agent with ``seq > after_seq`` is gone (purged), or
    ``after_seq`` is above every seq the store gave (a seq of another store): then the list is
    not the agent's whole history since ``after_seq``, and its client must re-read its state."""
    last_seq: int
    """The highest seq the store had given (to any entry) when it read: every notification
    committed later has a higher seq (0: none yet)."""


class ChannelState(BaseModel):
    """An agent's state on the e-mail channel, kept in the store so that every process sees
    it, and a restart remembers it (``routing``).

    ``since`` is when the agent last became Ready (the router's "idle since", before any
    offer); ``version`` is 0 for a state never stored, and each ``ChannelRepository.put``
    stores it at ``version + 1``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str
    ready: bool = False
    reason: str | None = None
    since: datetime | None = None
    version: int = 0


class Changes(BaseModel):
    """What ``ChangeFeed.changes_since`` found: the interactions and channel states changed
    by commits after a position, each as it is now, and the position to read on from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    interactions: list[Interaction]
    channels: list[ChannelState]
    position: int
    """Read on with ``changes_since(position)``: every change committed later is after it."""


class NotificationPage(BaseModel):
    """What ``ChangeFeed.notifications_of`` found: some agents' notifications after their
    positions, and the position every one of them is read up to."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    notifications: list[Notification]
    """In ``seq`` order, each with its ``seq``; at most ``limit``."""
    position: int
    """Every notification of the agents asked for with ``seq <= position`` (and above the
    agent's ``after``) is in this page or was before it: the snapshot's high-water mark
    (``feed_position``) when the page holds fewer than ``limit``, else its last seq."""
    more: bool
    """The page is full (``limit`` notifications): read on from ``position`` for the rest."""


class MailEntry(BaseModel):
    """A mail in the outbox with its delivery bookkeeping.

    ``queued_at`` is the store clock's time at commit, and so is the first ``next_attempt_at``;
    ``attempts`` counts the ``reschedule_mail`` calls, ``last_error`` holds the latest one's.
    """

    model_config = ConfigDict(frozen=True)

    seq: int
    mail: OutgoingMail
    queued_at: datetime
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None


# --------------------------------------------------------------------------- storage


class InteractionRepository(Protocol):
    """The interactions as one unit of work sees them.

    Every read sees what was committed before it plus this unit of work's own staged writes
    (read your writes), and nothing another unit of work has not committed yet. Lists are new
    lists: changing one changes nothing stored.
    """

    def get(self, interaction_id: str) -> Interaction | None:
        """The interaction with that id as this unit of work sees it, or ``None``."""
        ...

    def add(self, interaction: Interaction) -> Interaction:
        """Store a new interaction; returns it at version 1 (whatever version it had).

        Raises ``ConcurrencyConflict`` when the id exists already (committed, or added in this
        unit of work): at once, or at commit when another unit of work committed it since.
        """
        ...

    def update(self, interaction: Interaction) -> Interaction:
        """Store a change made to ``interaction`` as loaded; returns it at version + 1.

        Raises ``ConcurrencyConflict`` at commit (or earlier) when the stored version is no
        longer ``interaction.version``: never a lost update. Updates chain inside one unit of
        work (update the returned copy again); updating from a stale copy, or an interaction
        that does not exist, conflicts.
        """
        ...

    def expect(self, interaction: Interaction) -> None:
        """Commit only if ``interaction`` is still stored at its version, without writing it.

        For a transaction that depends on an interaction it does not change (a reply depends
        on its parent's state): a concurrent change of it makes the commit raise
        ``ConcurrencyConflict``, while the interaction itself keeps its version. Checked
        against this unit of work's own writes too: expecting a version it replaced conflicts.
        """
        ...

    def for_agent(self, agent_id: str) -> list[Interaction]:
        """Interactions owned by, or offered to, ``agent_id``, ordered by (received_at, id).

        Owned: ``owner == agent_id``; offered: ``offer.agent_id == agent_id``. Having handled
        one before (``last_agent``) is neither.
        """
        ...

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        """Interactions waiting in ``queue``, oldest first (the routing order).

        Waiting: ``current_queue == queue`` and ``state`` in ``lifecycle.WAITING_STATES``
        (nothing else, whatever its queue fields say). Ordered by (received_at, id); at most
        ``limit`` of them (``None``: all, 0: none).
        """
        ...

    def in_workbin(self, workbin: str) -> list[Interaction]:
        """Interactions whose ``workbin`` is ``workbin``, ordered by (received_at, id)."""
        ...

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        """The first stored interaction with that Message-ID (in ``mailbox`` when given).

        First stored: the earliest added (commit order; within one unit of work, the order of
        its ``add`` calls), not the earliest received. ``None`` when there is none.
        """
        ...


class ChannelRepository(Protocol):
    """The agents' channel states as one unit of work sees them (read your writes)."""

    def get(self, agent_id: str) -> ChannelState | None:
        """The agent's stored (or staged) state, or ``None`` when it never had one."""
        ...

    def put(self, state: ChannelState) -> ChannelState:
        """Store ``state`` (as loaded, changed); returns it at ``version + 1``.

        Raises ``ConcurrencyConflict`` at commit (or earlier) when the stored version is no
        longer ``state.version`` (0: the agent must have no stored state yet): two processes
        changing one agent's state at once never lose one of the changes silently.
        """
        ...

    def all(self) -> list[ChannelState]:
        """Every stored (or staged) state, ordered by agent id."""
        ...


class Outbox(Protocol):
    """What a unit of work queues, committed (or discarded) together with its interactions."""

    def add_notification(self, notification: Notification) -> None:
        """Queue a notification; it gets its ``seq`` at commit (a ``seq`` given is ignored)."""
        ...

    def add_mail(self, mail: OutgoingMail) -> None:
        """Queue a mail; at commit it gets its ``seq``, and ``queued_at`` = ``next_attempt_at``
        = the store clock's time."""
        ...


class UnitOfWork(Protocol):
    """One transaction: interactions changed, notifications and mail queued, all or nothing.

    Used by one thread at a time; any number may be open at once (optimistic concurrency: a
    conflict is found at commit, or earlier, and never written).
    """

    @property
    def interactions(self) -> InteractionRepository:
        """The interactions, as this unit of work sees them."""
        ...

    @property
    def outbox(self) -> Outbox:
        """Where this unit of work queues notifications and mail."""
        ...

    @property
    def channels(self) -> ChannelRepository:
        """The agents' channel states, committed together with everything else."""
        ...

    def __enter__(self) -> Self:
        """The unit of work itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed."""
        ...

    def commit(self) -> None:
        """Write everything staged at once, or nothing.

        Raises ``ConcurrencyConflict`` (and writes nothing: no interaction, no outbox entry)
        when an interaction added, updated or expected is no longer at the version it was
        staged against. After a commit the unit of work is empty and may be used again; a
        commit with nothing staged does nothing.
        """
        ...

    def rollback(self) -> None:
        """Discard everything staged; the unit of work may be used again."""
        ...


class OutboxReader(Protocol):
    """What the dispatchers read after commit, each entry marked done once handled.

    **seq.** Every outbox entry, notification or mail, gets its ``seq`` at commit: a positive
    integer (never 0), unique among all entries of the store, strictly increasing in commit
    order (within one commit: its notifications, then its mail, each in the order added), and
    never reused, not even once every entry before it is done or the store was reopened.

    Only committed entries are ever returned; an entry marked done is never returned again as
    pending. Marking is idempotent: a ``mark_*`` or ``reschedule_mail`` call on a seq that is
    unknown, of the other kind, or already done (sent, failed or published) is a no-op, never
    an error.

    **Retention.** A notification marked done (published) is kept, for the clients that were
    not connected when it was published to catch up (``notifications_since``), until
    ``purge_notifications`` deletes it; the store remembers, per agent, that something was
    purged, so a reader can tell a complete history from one with a gap.
    """

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        """Notifications not yet done with ``seq > after_seq``, in ``seq`` order, at most
        ``limit``.

        Each returned ``Notification`` MUST carry its own ``seq``. A drain reads the next
        batch after the last ``seq`` of the previous one and marks entries done by ``seq``: a
        reader that returns notifications with seq 0 (the default) would make a drain read the
        same batch forever, and is refused by ``outbox.NotificationDrain``
        (``OutboxContractError``).
        """
        ...

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        """These notifications were handed over (published): never return them again from
        ``pending_notifications``. They are kept, marked published at the store clock's now,
        for ``notifications_since``, until ``purge_notifications`` deletes them. Unknown seqs,
        mail seqs and seqs already done are ignored (a second call does not move the time they
        were published); an empty ``seqs`` does nothing."""
        ...

    def notifications_since(
        self, agent_id: str, after_seq: int, limit: int = 500
    ) -> NotificationBacklog:
        """``agent_id``'s retained notifications with ``seq > after_seq``, published or not, in
        ``seq`` order, at most ``limit`` (each with its ``seq``), with whether they are complete.

        ``complete`` is ``False`` exactly when a notification of ``agent_id`` with
        ``seq > after_seq`` was purged, or when ``after_seq`` is above ``last_seq`` (never
        given by this store); the limit does not make it ``False`` (read on after the last
        seq returned). ``last_seq`` is the highest seq given when the notifications were read,
        so a notification committed after the read has a higher one. Only committed entries;
        another agent's never; reading changes nothing.
        """
        ...

    def purge_notifications(self, published_before: datetime, limit: int = 1000) -> int:
        """Delete at most ``limit`` notifications published (marked done) before
        ``published_before`` (strictly); returns how many were deleted (fewer than ``limit``:
        none is left to purge). Pending notifications are never purged. Each purged seq is
        remembered for its agent (``notifications_since`` then reports ``complete=False`` for
        an ``after_seq`` below it). Seqs are never reused after a purge."""
        ...

    def pending_mail(self, due_before: datetime, limit: int = 100) -> list[MailEntry]:
        """Mail neither sent nor failed that is due, in ``seq`` order, at most ``limit``.

        Due: ``next_attempt_at <= due_before`` (inclusive; callers pass their clock's now). A
        new entry is due from its commit; a rescheduled one from its new ``next_attempt_at``.

        A store that several readers (processes) share may *claim* what it returns: then an
        entry returned to one reader is held back from the others until that reader marks or
        reschedules it, or its claim lapses (a reader that died). A reader is always offered
        again what it was given and has not marked: what one reader sees is as above.
        """
        ...

    def mark_mail_sent(self, seq: int) -> None:
        """The mail was handed over: done, never returned again. No-op when ``seq`` is unknown
        or already done (sent or failed)."""
        ...

    def reschedule_mail(self, seq: int, next_attempt_at: datetime, error: str) -> None:
        """An attempt failed, to be tried again: ``attempts`` + 1, ``next_attempt_at`` and
        ``last_error`` set (``queued_at`` kept). No-op when ``seq`` is unknown or done."""
        ...

    def mark_mail_failed(self, seq: int, error: str) -> None:
        """The mail will never be sent (``error`` says why): done, never returned again.
        No-op when ``seq`` is unknown or already done (sent or failed)."""
        ...


class Store(OutboxReader, Protocol):
    """Interactions and their outbox, read and written through units of work."""

    def unit_of_work(self) -> UnitOfWork:
        """A new, empty unit of work (a context manager rolling back what it did not commit).

        Safe to call from any thread; each unit of work is then used by one thread at a time.
        """
        ...

    def close(self) -> None:
        """Release the store's resources (connections, files, threads).

        Idempotent: a second call does nothing. Nothing committed is lost: a durable store
        opened again on the same data finds every committed interaction and outbox entry (done
        or pending, as marked; purged notifications excepted), and its seqs continue above
        every seq it ever gave. Call it once no unit of work is in flight; the store is not
        used after it (what it then does is the implementation's, e.g. raise).
        """
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """What a store shared by several processes offers them to follow each other's commits
    (``Engine.sync``, the server's notification tail). Optional: a store used by one process
    needs none of it.

    Positions are outbox seqs (``OutboxReader``): numbers the store gives in commit order, so
    a reader that moves its position to the last one it read never skips a later commit.
    """

    def feed_position(self) -> int:
        """The highest seq the store has given so far (0: none): a reader starting now reads
        on from it and misses nothing committed afterwards."""
        ...

    def notifications_after(self, after_seq: int, limit: int = 500) -> list[Notification]:
        """Every agent's retained notifications with ``seq > after_seq``, published or not,
        in ``seq`` order, at most ``limit``, each with its ``seq``."""
        ...

    def changes_since(self, after_seq: int, limit: int = 500) -> Changes:
        """The interactions and channel states written by commits after ``after_seq``, as
        they are now: each once, however often it changed, in the order of its last change,
        at most ``limit`` of them in all. ``position`` is the last one's change seq (read on
        from it for the rest), or ``after_seq`` when nothing changed."""
        ...

    def notifications_of(self, afters: Mapping[str, int], limit: int = 500) -> NotificationPage:
        """The retained notifications of the agents in ``afters``, each agent's with
        ``seq > afters[agent]``, published or not, in ``seq`` order, at most ``limit``, read in
        one snapshot with its high-water mark (``NotificationPage.position``).

        What a process delivering to its own sessions reads (``outbox.NotificationTail``):
        only its agents' rows, however many processes share the store. An empty ``afters``
        reads no rows and still gives the position. ``limit`` must be >= 1 (``ValueError``)."""
        ...

    def settle_notifications(self, through_seq: int, after_seq: int = 0) -> int:
        """Mark every pending notification with ``after_seq < seq <= through_seq`` published
        (their retention starts now, as with ``mark_notifications_done``); returns how many.
        Every agent's, read or not: the one process that leads settles what all have read up
        to a position. ``after_seq``: what an earlier call settled already (a range of the new
        rows alone). Idempotent."""
        ...


# --------------------------------------------------------------------------- the rest


class AttachmentStore(Protocol):
    """Attachment bytes, content-addressed: an id names exactly one sequence of bytes (an
    ``Attachment.blob``; the attachment's own identity is ``Attachment.id``)."""

    def put(self, data: bytes) -> str:
        """Store bytes; return their content id (the same bytes give the same id).

        Different bytes give different ids; storing bytes again is a no-op returning the same
        id. The id is a non-empty string of ASCII letters, digits, ``-``, ``_`` or ``.`` (it
        goes into URLs and file names). Any bytes are kept exactly, the empty ones included.
        Raises ``errors.TooLarge`` for data over the store's size limit, storing nothing.
        Returns once the bytes are stored (durably, for a durable store).
        """
        ...

    def get(self, content_id: str) -> bytes:
        """The bytes ``put`` stored under ``content_id``, exactly.

        Raises ``KeyError`` when unknown, for any string (a malformed id, or one naming a path,
        is unknown too: never another error).
        """
        ...

    def delete(self, content_id: str) -> None:
        """Remove the bytes stored under ``content_id``; ``get`` then raises ``KeyError`` until
        the same bytes are put again (stored anew, under the same id).

        Idempotent: an unknown id, for any string (a malformed one, or one naming a path, too),
        is a no-op, never an error. Every other id's bytes are untouched.

        The store does not know who refers to its bytes: attachments of any interaction (a
        forward's or a linked copy shares them), a raw message's ``raw_id``, pending mail. The
        core never calls it (removing an attachment keeps its blob: docs/storage.md); it is
        for a collector that has established that nothing refers to ``content_id`` any more —
        and that no ``put`` of it began since it looked (a put precedes the commit that
        refers to what it stored).
        """
        ...

    def close(self) -> None:
        """Release the store's resources. Idempotent; nothing stored is lost by it."""
        ...


class Notifier(Protocol):
    """Hands committed notifications to the agents' live clients (best effort, never blocking)."""

    def publish(self, notification: Notification) -> None:
        """Deliver ``notification.to_wire()`` on ``notification.topic`` to the live
        subscribers of ``notification.agent_id``, and to no other agent's.

        Never raises for an agent with no subscriber, and never waits for one (the
        notification is then dropped: the state is in the store, and a client reloads it
        after it connects). The order of the notifications published for one agent is the
        order they arrive in (for calls made one after the other, from any thread).
        ``notification.seq`` may serve as the message's id.
        """
        ...

    def close(self) -> None:
        """Release the notifier's resources; idempotent. It is not used after it."""
        ...


class MailTransport(Protocol):
    """Hands mail over to its next hop (a relay, a local mailbox), synchronously."""

    def send(self, mail: OutgoingMail) -> None:
        """Hand one mail to the relay. Raise ``TransientMailError`` or ``PermanentMailError``.

        Returns once the next hop took responsibility for the mail (a relay's 250 to DATA, a
        file written). The message carries exactly ``mail``'s From, To, Cc, Reply-To,
        Subject, Date, In-Reply-To, References and Message-ID (``mail.message_id``, never a
        new one: a retry of the same ``OutgoingMail`` is the same message), its text and HTML
        bodies and its attachments; its recipients are To, Cc and Bcc, and Bcc is in no
        header. Raises ``TransientMailError`` when it may succeed later (peer unreachable,
        timeout, 4xx) and ``PermanentMailError`` when it never will; the drains treat any
        other exception as transient, but a transport does not rely on that.
        """
        ...

    def close(self) -> None:
        """Release the transport's connections; idempotent. Nothing handed over is lost."""
        ...


class TransientMailError(Exception):
    """Try again later (connection refused, timeout, 4xx)."""


class PermanentMailError(Exception):
    """Will never succeed (5xx, every recipient refused)."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC for the core's own clocks)."""
        ...


class IdGenerator(Protocol):
    def interaction_id(self) -> str:
        """A new interaction id, never given before."""
        ...

    def message_id(self, domain: str) -> str:
        """A new RFC 5322 §3.6.4 msg-id, with its angle brackets."""
        ...


@runtime_checkable
class AgentDirectory(Protocol):
    def get(self, agent_id: str) -> Agent | None:
        """The agent with that id, or ``None`` when there is none."""
        ...

    def agents(self) -> Iterable[Agent]:
        """Every agent (each once, in no particular order)."""
        ...
