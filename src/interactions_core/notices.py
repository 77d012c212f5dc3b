"""Notification building: what each agent is told about a change, on which topic.

Every notice is queued in the unit of work of the change that caused it (the outbox), so it is
published if and only if the change committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Interaction, InteractionView, build
from .ports import TOPIC_WORKBINS, Notification, RawMessage, UnitOfWork
from .wire import WorkbinContentChanged


def interaction_notice(
    agent_id: str, interaction: Interaction, capabilities: tuple[str, ...], state: str | None
) -> Notification:
    """``InteractionStateMessage`` on ``/me/interactions``. With ``state``, the event the agent
    is told about (``Rejected``, ``Revoked``) and no capabilities."""
    view = InteractionView(interaction, () if state is not None else capabilities, state)
    return build(Notification, agent_id=agent_id, payload=view)


def workbin_content_changed(workbin: str, i: Interaction, change: str) -> WorkbinContentChanged:
    return {
        "messageTypeName": "WorkbinContentChanged",
        "workbinId": workbin,
        "change": change,
        "interactionId": i.id,
        "state": i.state,
    }


def queue_workbin_notices(
    uow: UnitOfWork, audience: Iterable[str], workbin: str, i: Interaction, change: str
) -> None:
    """``/me/workbins``: every agent in ``audience`` learns the workbin's content changed."""
    data = dict(workbin_content_changed(workbin, i, change))
    for agent_id in audience:
        uow.outbox.add_notification(
            Notification(agent_id=agent_id, topic=TOPIC_WORKBINS, payload=RawMessage(data=data))
        )
