"""The read side: what an agent sees of its interactions and workbins, as typed wire views.

Reads open a unit of work only to read (nothing is committed), and show an interaction exactly
as the agent's notifications do: the same ``InteractionMessage``, the same capabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .policy import personal_workbin, workbin_access
from .wire import InteractionMessage, WorkbinInfo

if TYPE_CHECKING:
    from .service import InteractionService


def interaction(s: InteractionService, agent_id: str, interaction_id: str) -> InteractionMessage:
    """``GET /me/interactions/{id}``: one interaction as the agent's notifications show it."""
    agent = s.agent(agent_id)
    with s.store.unit_of_work() as uow:
        found = s.load_visible(uow, agent, interaction_id)
    return s.view_for(agent.id, found).to_wire()


def interactions(s: InteractionService, agent_id: str) -> list[InteractionMessage]:
    """``GET /me/interactions``: the agent's current interactions, owned or offered to it,
    oldest first."""
    agent = s.agent(agent_id)
    with s.store.unit_of_work() as uow:
        found = uow.interactions.for_agent(agent.id)
    found.sort(key=lambda i: (i.received_at, i.id))
    return [s.view_for(agent.id, i).to_wire() for i in found]


def workbins(s: InteractionService, agent_id: str) -> list[WorkbinInfo]:
    """``GET /me/workbins``: the workbins this agent may use (GWS ``GetWorkbinTypesInfo``)."""
    agent = s.agent(agent_id)
    personal: list[WorkbinInfo] = [
        {"workbinId": personal_workbin(agent.id, n), "workbinName": n, "shared": False}
        for n in s.workbin_rules.personal
    ]
    shared: list[WorkbinInfo] = [
        {"workbinId": n, "workbinName": n, "shared": True}
        for n in s.workbin_rules.shared
        if workbin_access(s.workbin_rules, agent.id, n)
    ]
    return personal + shared


def workbin_content(
    s: InteractionService, agent_id: str, workbin_name: str
) -> list[InteractionMessage]:
    """The interactions in one of the agent's workbins, oldest first."""
    agent = s.agent(agent_id)
    workbin = s.resolve_workbin(agent.id, workbin_name)
    with s.store.unit_of_work() as uow:
        found = uow.interactions.in_workbin(workbin)
    return [s.view_for(agent.id, i).to_wire() for i in found]
