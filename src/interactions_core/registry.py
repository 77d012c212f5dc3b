"""The operations an engine knows: built-in and custom, each one request model, the lifecycle
transitions it adds, and its handler.

A custom operation (a helpdesk's ``Escalate``, say) is an ``OperationSpec``. Registered with
``Engine.register_operation``, it is parsed from the wire like the built-in ones, appears in
the capabilities of the states its transitions leave, in the Mermaid diagram and in the HTTP
API's OpenAPI schema, and its handler runs in the executor's one atomic commit::

    class Escalate(OperationModel):
        operation_name: Literal["Escalate"] = Field("Escalate", alias="operationName")
        reason: str = Field(min_length=1, max_length=500)

    def escalate(ctx: Context, i: Interaction, op: Escalate) -> None:
        ctx.save(i, state=ctx.state, owner=None, required_skill="tier2",
                 user_data={**i.user_data, "EscalationReason": op.reason})

    engine.register_operation(OperationSpec(
        Escalate, escalate, transitions=[([State.ACCEPTED], State.TRANSFERRED)]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import Field

from .handlers import HANDLERS, Context, Handler
from .lifecycle import DEFAULT, Lifecycle, TransitionRow
from .model import Interaction
from .operations import (
    BUILTIN_MODELS,
    CreateEmail,
    OperationModel,
    parse_with,
    spellings,
)

OpT = TypeVar("OpT", bound=OperationModel)

# (sources, destination) or (sources, destination, condition); destination None = the state
# does not change (an internal transition, like UpdateProperties).
TransitionSpec = tuple[Sequence[str], str | None] | tuple[Sequence[str], str | None, str | None]


@dataclass(frozen=True)
class OperationSpec(Generic[OpT]):
    """One custom operation: its request model, its handler, the transitions it adds."""

    model: type[OpT]
    handler: Callable[[Context, Interaction, OpT], str | None]
    transitions: Sequence[TransitionSpec] = ()
    # The request shown in the OpenAPI page (default: just the operationName).
    example: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.model.canonical

    def rows(self) -> list[TransitionRow]:
        rows: list[TransitionRow] = []
        for t in self.transitions:
            condition = t[2] if len(t) == 3 else None
            rows.append((self.name, tuple(t[0]), t[1], condition))
        return rows


class OperationRegistry:
    """Spelling -> model, model -> handler, and the lifecycle they imply. Immutable: ``with_``
    returns a new registry, so an engine's set of operations never changes under a caller."""

    def __init__(
        self,
        models: Mapping[str, type[OperationModel]],
        handlers: Mapping[type[OperationModel], Handler],
        lifecycle: Lifecycle,
        examples: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.models = dict(models)
        self.handlers = dict(handlers)
        self.lifecycle = lifecycle
        self.examples = dict(examples or {})

    def with_(self, spec: OperationSpec[Any]) -> OperationRegistry:
        """This registry plus ``spec``; ``ValueError`` for a name or spelling already taken."""
        model = spec.model
        if not (isinstance(model, type) and issubclass(model, OperationModel)):
            raise TypeError("OperationSpec.model must be a subclass of OperationModel")
        names = spellings(model)
        if getattr(model, "canonical", None) not in names:
            raise ValueError(f"{model.__name__}.canonical must be one of its spellings {names}")
        taken = [n for n in names if n in self.models]
        if taken or model.canonical in self.lifecycle.agent_operations:
            raise ValueError(f"operationName {taken or [model.canonical]} is already registered")
        if model.canonical in self.lifecycle.system_triggers:
            raise ValueError(f"{model.canonical!r} is a system trigger")
        if not spec.transitions:
            raise ValueError(
                f"{model.canonical} needs at least one transition: the states it is allowed in"
            )
        lifecycle = self.lifecycle.extended(spec.rows(), [model.canonical])
        examples = dict(self.examples)
        examples[model.canonical] = dict(spec.example or {"operationName": names[0]})
        return OperationRegistry(
            {**self.models, **dict.fromkeys(names, model)},
            {**self.handlers, model: spec.handler},
            lifecycle,
            examples,
        )

    def parse(self, body: Any) -> OperationModel:
        """A wire body -> its operation model, or ``InvalidRequest`` listing every problem."""
        return parse_with(self.models, body)

    def handler(self, operation: OperationModel) -> Handler:
        found = self.handlers.get(type(operation))
        if found is None:  # CreateEmail, or a model registered without a handler
            raise LookupError(f"no handler for {type(operation).__name__}")
        return found

    def on_an_interaction(self) -> list[type[OperationModel]]:
        """The request models of ``POST /me/interactions/{id}``, in registration order."""
        seen: list[type[OperationModel]] = []
        for model in self.models.values():
            if model not in seen and model is not CreateEmail:
                seen.append(model)
        return seen

    def union(self) -> Any:
        """The discriminated union of ``on_an_interaction`` (for schemas: OpenAPI)."""
        members = tuple(self.on_an_interaction())
        return Annotated[Union[members], Field(discriminator="operation_name")]  # noqa: UP007


DEFAULT_REGISTRY = OperationRegistry(BUILTIN_MODELS, HANDLERS, DEFAULT)
"""The seed's operations on the seed's lifecycle."""
