"""The interaction lifecycle: one ``transitions`` machine for the whole process.

Why one machine: ``Machine.add_model`` is O(models) and costs ~12 KB a model, and pydantic
models cannot be ``transitions`` models. So the machine is built once, holds no models, and each
operation fires a trigger on a throw-away ``_Holder`` carrying just the state (and the two facts
the conditional transitions look at). Nothing is retained between calls. A bare internal
transition (Reply, ReplyAll...: no state change, no condition, no callback) is answered from the
machine's definition without running the trigger; a test holds ``fire`` equal to the machine.

Capabilities are *derived from the machine*: the agent triggers that leave the given state.
There is no second hand-kept list; a test proves it for every state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Final

from transitions import Machine, MachineError

from .errors import OperationNotAllowed


class State:
    """State names, as GWS spells them on the wire (seed: Invited, Accepted, ReplyCreated...)."""

    NEW: Final = "New"
    QUEUED: Final = "Queued"
    INVITED: Final = "Invited"
    ACCEPTED: Final = "Accepted"
    REJECTED: Final = "Rejected"
    REVOKED: Final = "Revoked"
    TRANSFERRED: Final = "Transferred"
    IN_WORKBIN: Final = "InWorkbin"
    COMPLETED: Final = "Completed"
    REPLY_CREATED: Final = "ReplyCreated"
    SENT: Final = "Sent"
    FAILED: Final = "Failed"
    CANCELLED: Final = "Cancelled"


STATES: Final = (
    State.NEW,
    State.QUEUED,
    State.INVITED,
    State.ACCEPTED,
    State.REJECTED,
    State.REVOKED,
    State.TRANSFERRED,
    State.IN_WORKBIN,
    State.COMPLETED,
    State.REPLY_CREATED,
    State.SENT,
    State.FAILED,
    State.CANCELLED,
)

# States in which an interaction waits in a queue for the router.
WAITING_STATES: Final = frozenset({State.QUEUED, State.REJECTED, State.REVOKED, State.TRANSFERRED})

# Agent operations, in the order capabilities are listed (seed order first).
AGENT_OPERATIONS: Final = (
    "Accept",
    "Reject",
    "Transfer",
    "Reply",
    "ReplyAll",
    "Forward",
    "StopProcessing",
    "PlaceInQueue",
    "Cancel",
    "Send",
    "PlaceInWorkbin",
    "Pull",
    "UpdateProperties",
    "LinkAttachment",
)

# Triggers only the system fires (ingestion, router, timers, mail dispatcher).
SYSTEM_TRIGGERS: Final = ("Ingest", "Compose", "Offer", "Revoke", "DeliveryFailed")

_OWNED_INBOUND = State.ACCEPTED
_DRAFT_STATES: list[Any] = [State.REPLY_CREATED, State.FAILED]

# (trigger, sources, dest, condition) — dest None = internal transition (state unchanged).
TRANSITIONS: Final[tuple[tuple[str, list[Any], str | None, str | None], ...]] = (
    ("Ingest", [State.NEW], State.QUEUED, None),
    ("Compose", [State.NEW], State.REPLY_CREATED, None),
    (
        "Offer",
        [State.QUEUED, State.REJECTED, State.REVOKED, State.TRANSFERRED],
        State.INVITED,
        None,
    ),
    ("Accept", [State.INVITED], State.ACCEPTED, None),
    # A refused transfer offer goes back to the agent who transferred it.
    ("Reject", [State.INVITED], State.ACCEPTED, "returning"),
    ("Reject", [State.INVITED], State.REJECTED, None),
    ("Revoke", [State.INVITED], State.ACCEPTED, "returning"),
    ("Revoke", [State.INVITED], State.REVOKED, None),
    ("Reply", [_OWNED_INBOUND], None, None),
    ("ReplyAll", [_OWNED_INBOUND], None, None),
    ("Forward", [_OWNED_INBOUND], None, None),
    ("Transfer", [_OWNED_INBOUND], State.TRANSFERRED, None),
    ("StopProcessing", [_OWNED_INBOUND], State.COMPLETED, None),
    ("PlaceInQueue", [_OWNED_INBOUND, State.IN_WORKBIN], State.QUEUED, None),
    ("PlaceInWorkbin", [_OWNED_INBOUND, *_DRAFT_STATES], State.IN_WORKBIN, None),
    ("Pull", [State.IN_WORKBIN], State.REPLY_CREATED, "outbound"),
    ("Pull", [State.IN_WORKBIN], State.ACCEPTED, None),
    ("UpdateProperties", [_OWNED_INBOUND, *_DRAFT_STATES], None, None),
    ("LinkAttachment", _DRAFT_STATES, None, None),
    ("Cancel", _DRAFT_STATES, State.CANCELLED, None),
    ("Send", _DRAFT_STATES, State.SENT, None),
    ("DeliveryFailed", [State.SENT], State.FAILED, None),
)


# A transition as users write one: (trigger, sources, destination or None, condition or None).
TransitionRow = tuple[str, Sequence[str], str | None, str | None]
# The facts a conditional transition may look at (the ``_Holder``'s two condition methods).
CONDITIONS: Final = frozenset({"outbound", "returning"})
FINAL_STATES: Final = (State.COMPLETED, State.SENT, State.CANCELLED)


class _Holder:
    """The state holder a trigger runs on: lives for one call, never registered."""

    __slots__ = ("_outbound", "_returning", "state")

    def __init__(self, state: str, outbound: bool, returning: bool) -> None:
        self.state = state
        self._outbound = outbound
        self._returning = returning

    def outbound(self) -> bool:
        return self._outbound

    def returning(self) -> bool:
        return self._returning


def _bare_internal(transition: Any) -> bool:
    return transition.dest is None and not (
        transition.conditions or transition.prepare or transition.before or transition.after
    )


class Lifecycle:
    """One ``transitions`` machine and what is derived from it: ``fire``, the capabilities of
    each state, the Mermaid diagram.

    ``DEFAULT`` is the seed's lifecycle. ``extended`` gives a new one with more transitions
    and agent operations (a custom operation, see ``registry``): the default is never
    mutated, so two engines in one process may run different lifecycles.
    """

    def __init__(
        self,
        transitions: Iterable[TransitionRow] = TRANSITIONS,
        agent_operations: Sequence[str] = AGENT_OPERATIONS,
        system_triggers: Sequence[str] = SYSTEM_TRIGGERS,
        states: Sequence[str] = STATES,
    ) -> None:
        self.transitions: tuple[TransitionRow, ...] = tuple(
            (t, tuple(src), dest, cond) for t, src, dest, cond in transitions
        )
        self.agent_operations = tuple(agent_operations)
        self.system_triggers = tuple(system_triggers)
        self.states = tuple(states)
        self._check()
        self.machine = self._build()
        self._events = self.machine.events
        self._inert = self._find_inert()
        # Cached per state by C-level caches: a hit costs no Python frame (the hot path asks
        # twice per operation). A state's answers never change: the lifecycle is immutable.
        self.triggers = lru_cache(maxsize=None)(self._triggers_of)
        self.capabilities = lru_cache(maxsize=None)(self._capabilities_of)

    def _check(self) -> None:
        known = set(self.states)
        for trigger, sources, dest, condition in self.transitions:
            unknown = [s for s in (*sources, *([dest] if dest else [])) if s not in known]
            if unknown:
                raise ValueError(f"transition {trigger!r} names unknown states {unknown}")
            if condition is not None and condition not in CONDITIONS:
                raise ValueError(
                    f"transition {trigger!r}: condition {condition!r} is not one of "
                    f"{sorted(CONDITIONS)}"
                )
        overlap = set(self.agent_operations) & set(self.system_triggers)
        if overlap:
            raise ValueError(f"{sorted(overlap)} cannot be both agent and system triggers")

    def _build(self) -> Machine:
        machine = Machine(
            model=None,
            states=list(self.states),
            initial=State.NEW,
            auto_transitions=False,
            send_event=False,
        )
        for trigger, sources, dest, condition in self.transitions:
            machine.add_transition(
                trigger, list(sources), dest, conditions=[condition] if condition else None
            )
        return machine

    def _find_inert(self) -> frozenset[tuple[str, str]]:
        """(trigger, state) pairs whose only transition is internal and bare: no destination,
        no condition, no callback. Firing one changes nothing; ``transitions`` would only walk
        its empty callback lists, so ``fire`` answers those from the definition directly."""
        machine = self.machine
        machine_hooks = (
            machine.prepare_event,
            machine.before_state_change,
            machine.after_state_change,
            machine.finalize_event,
        )
        if any(machine_hooks):
            return frozenset()
        inert: set[tuple[str, str]] = set()
        for trigger, event in machine.events.items():
            for source, options in event.transitions.items():
                if len(options) == 1 and _bare_internal(options[0]):
                    inert.add((trigger, source))
        return frozenset(inert)

    def extended(
        self, transitions: Iterable[TransitionRow], agent_operations: Sequence[str] = ()
    ) -> Lifecycle:
        """This lifecycle plus ``transitions``; ``agent_operations`` join the capabilities."""
        ops = (
            *self.agent_operations,
            *(o for o in agent_operations if o not in self.agent_operations),
        )
        return Lifecycle((*self.transitions, *transitions), ops, self.system_triggers, self.states)

    def fire(
        self, trigger: str, state: str, *, outbound: bool = False, returning: bool = False
    ) -> str:
        """Apply ``trigger`` to ``state``; the new state, or ``OperationNotAllowed``."""
        if (trigger, state) in self._inert:
            return state
        event = self._events.get(trigger)
        if event is None:
            raise OperationNotAllowed(trigger, state, self.capabilities(state))
        holder = _Holder(state, outbound, returning)
        try:
            done = event.trigger(holder)
        except (MachineError, ValueError):
            done = False
        if not done:
            raise OperationNotAllowed(trigger, state, self.capabilities(state))
        return holder.state

    def _triggers_of(self, state: str) -> frozenset[str]:
        """Every trigger (agent or system) the machine accepts in ``state`` (``triggers``)."""
        return frozenset(self.machine.get_triggers(state))

    def _capabilities_of(self, state: str) -> tuple[str, ...]:
        """The agent operations the machine allows in ``state``: the seed's ``capabilities``
        (``capabilities``)."""
        allowed = self.triggers(state)
        return tuple(op for op in self.agent_operations if op in allowed)

    def is_allowed(self, trigger: str, state: str) -> bool:
        return trigger in self.triggers(state)

    def to_mermaid(self) -> str:
        """The machine as a Mermaid ``stateDiagram-v2`` (system triggers in italics)."""
        lines = ["stateDiagram-v2", f"    [*] --> {State.NEW}"]
        seen: set[tuple[str, str, str]] = set()
        for trigger, sources, dest, condition in self.transitions:
            label = f"<i>{trigger}</i>" if trigger in self.system_triggers else trigger
            if condition:
                label += f" [{condition}]"
            for source in sources:
                target = dest or source
                key = (source, target, label)
                if key in seen:
                    continue
                seen.add(key)
                lines.append(f"    {source} --> {target}: {label}")
        for final in FINAL_STATES:
            lines.append(f"    {final} --> [*]")
        return "\n".join(lines) + "\n"


DEFAULT: Final = Lifecycle()
MACHINE: Final = DEFAULT.machine
_INERT: Final = DEFAULT._inert


def fire(trigger: str, state: str, *, outbound: bool = False, returning: bool = False) -> str:
    """``DEFAULT.fire``: apply ``trigger`` to ``state`` or raise ``OperationNotAllowed``."""
    return DEFAULT.fire(trigger, state, outbound=outbound, returning=returning)


def triggers(state: str) -> frozenset[str]:
    return DEFAULT.triggers(state)


def capabilities(state: str) -> tuple[str, ...]:
    """The agent operations the default lifecycle allows in ``state``."""
    return DEFAULT.capabilities(state)


def is_allowed(trigger: str, state: str) -> bool:
    return DEFAULT.is_allowed(trigger, state)


def to_mermaid() -> str:
    """The default lifecycle as a Mermaid ``stateDiagram-v2``."""
    return DEFAULT.to_mermaid()
