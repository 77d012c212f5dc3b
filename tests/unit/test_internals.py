"""The library internals the core's fast paths read, checked so that a new pydantic or
transitions release that changes them fails here, loudly, instead of corrupting records or
capabilities (pyproject.toml bounds both; this is what the bounds protect)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pydantic
import transitions

from interactions_core.lifecycle import DEFAULT, STATES, _Holder
from interactions_core.model import Address, EmailContent, Interaction, Offer, build, evolve


def test_pydantic_instances_are_the_four_slots_build_and_evolve_fill() -> None:
    slots = set(pydantic.BaseModel.__slots__)
    assert {
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    } <= slots, (
        f"pydantic {pydantic.VERSION} changed BaseModel's slots ({sorted(slots)}): "
        "model.build/evolve must be revised"
    )


def test_built_and_evolved_records_equal_validated_ones() -> None:
    when = datetime(2026, 1, 5, 9, tzinfo=UTC)
    values = {
        "id": "I1",
        "state": "Queued",
        "email": EmailContent(from_=Address(addr="bob@example.org"), subject="Hi"),
        "received_at": when,
        "offer": Offer(agent_id="alice", offered_at=when),
        "user_data": {"n": 1},
    }
    validated = Interaction.model_validate(values)
    built = build(Interaction, **values)
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert json.loads(built.model_dump_json()) == json.loads(validated.model_dump_json())
    changed = evolve(built, state="Invited")
    assert changed == validated.model_copy(update={"state": "Invited"})
    assert changed.model_copy(update={"version": 2}).version == 2
    assert Interaction.model_validate(changed.model_dump()) == changed


def test_transitions_event_tables_are_what_fire_reads() -> None:
    machine = DEFAULT.machine
    for name in ("prepare_event", "before_state_change", "after_state_change", "finalize_event"):
        assert isinstance(getattr(machine, name), list), (
            f"transitions {transitions.__version__}: Machine.{name} changed"
        )
    for event in machine.events.values():
        for options in event.transitions.values():
            for t in options:
                for attribute in ("dest", "conditions", "prepare", "before", "after"):
                    assert hasattr(t, attribute), (
                        f"transitions {transitions.__version__}: Transition.{attribute} is gone"
                    )


def test_fire_equals_the_machine_for_every_trigger_and_state() -> None:
    for trigger, event in DEFAULT.machine.events.items():
        for state in STATES:
            for outbound in (False, True):
                for returning in (False, True):
                    holder = _Holder(state, outbound, returning)
                    try:
                        done = event.trigger(holder)
                    except transitions.MachineError:
                        done = False
                    try:
                        got = DEFAULT.fire(trigger, state, outbound=outbound, returning=returning)
                    except Exception:
                        got = None
                    assert got == (holder.state if done else None), (trigger, state)
