"""Access policy: who may see an interaction, who may act on it, who may use a workbin.

Pure functions of the interaction and the workbin configuration: no store, no clock. The
service asks them before anything else, and answers an agent who may not see an interaction
exactly as for an unknown id (ids leak nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .errors import NotFound
from .lifecycle import State
from .model import Interaction

PERSONAL_WORKBIN_PREFIX = "agent:"


@dataclass(frozen=True)
class Workbins:
    """The workbins of a deployment: every agent's personal ones, and shared ones by name."""

    personal: tuple[str, ...] = ("Personal",)
    # Shared workbins: name -> agent ids allowed (an empty set = every agent).
    shared: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.personal:
            raise ValueError("at least one personal workbin is needed (the default target)")


def personal_workbin(agent_id: str, name: str) -> str:
    """The key of an agent's personal workbin: ``agent:<id>/<name>``."""
    return f"{PERSONAL_WORKBIN_PREFIX}{agent_id}/{name}"


def workbin_access(workbins: Workbins, agent_id: str, workbin: str) -> bool:
    """An agent uses its own personal workbins, and the shared ones it is a member of."""
    if workbin.startswith(PERSONAL_WORKBIN_PREFIX):
        return workbin.startswith(f"{PERSONAL_WORKBIN_PREFIX}{agent_id}/")
    members = workbins.shared.get(workbin)
    return members is not None and (not members or agent_id in members)


def visible(workbins: Workbins, agent_id: str, i: Interaction) -> bool:
    """The agent owns it, handled it last, is invited to it, or can open its workbin."""
    return (
        i.owner == agent_id
        or i.last_agent == agent_id
        or (i.offer is not None and i.offer.agent_id == agent_id)
        or (i.workbin is not None and workbin_access(workbins, agent_id, i.workbin))
    )


def entitled(workbins: Workbins, agent_id: str, i: Interaction) -> bool:
    """The one agent (or the workbin's members) whose capabilities are not empty: the invitee
    while ``Invited``, the workbin's members while ``InWorkbin``, else the owner."""
    if i.state == State.INVITED:
        return i.offer is not None and i.offer.agent_id == agent_id
    if i.state == State.IN_WORKBIN:
        return i.workbin is not None and workbin_access(workbins, agent_id, i.workbin)
    return i.owner == agent_id


def resolve_workbin(workbins: Workbins, agent_id: str, name: str | None) -> str:
    """A workbin name as the agent gives it -> its key; ``NotFound`` for one the agent may
    not use (the same answer as for an unknown one)."""
    name = name or workbins.personal[0]
    if name in workbins.personal:
        return personal_workbin(agent_id, name)
    if name in workbins.shared and workbin_access(workbins, agent_id, name):
        return name
    raise NotFound("Workbin", name)


def workbin_audience(
    workbins: Workbins, workbin: str, every_agent: Callable[[], Iterable[str]]
) -> list[str]:
    """Who is told that ``workbin``'s content changed: its owner, or its members (everyone
    for a shared workbin open to all)."""
    if workbin.startswith(PERSONAL_WORKBIN_PREFIX):
        return [workbin[len(PERSONAL_WORKBIN_PREFIX) :].split("/", 1)[0]]
    members = workbins.shared.get(workbin, frozenset())
    return sorted(members) if members else list(every_agent())
